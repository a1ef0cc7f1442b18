//! `deploy/container/Containerfile`. No image is built here: the development machines run no
//! container engine and reach no image registry (deploy/README.md). What holds without one is
//! checked: the build stage's toolchain and command, the user the Deployment requires, and the
//! ENTRYPOINT with the Deployment's arguments as a command line rotor accepts.

use std::process::Command;

use super::deploy;
use super::kubernetes::{container, deployment, rendered};

/// The JSON array of an exec-form instruction (`ENTRYPOINT ["..."]`).
fn exec_form(containerfile: &str, instruction: &str) -> Vec<String> {
    let line = containerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{instruction} ")))
        .unwrap_or_else(|| panic!("the Containerfile has no {instruction}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{instruction} in exec form: {e}"))
}

#[test]
fn the_image_builds_this_crate_as_the_quickstart_does_and_runs_the_deployments_command() {
    let containerfile = std::fs::read_to_string(deploy("container/Containerfile")).unwrap();
    let rust = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("FROM docker.io/library/rust:"))
        .and_then(|tag| tag.split('-').next())
        .expect("a build stage FROM the official Rust image");
    assert_eq!(
        rust,
        env!("CARGO_PKG_RUST_VERSION"),
        "the build stage's Rust is the crate's rust-version"
    );
    let build = containerfile
        .lines()
        .find(|l| l.starts_with("RUN cargo build"))
        .expect("RUN cargo build");
    for flag in ["--release", "--locked"] {
        assert!(
            build.contains(flag),
            "{build}: {flag}, as scripts/quickstart builds"
        );
    }

    let objects = rendered();
    let pod = &deployment(&objects)["spec"]["template"]["spec"];
    let user = containerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    assert_eq!(
        user,
        format!(
            "{0}:{1}",
            pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
        ),
        "the image's user is the one the Deployment runs as"
    );
    // The Deployment's `args` replace CMD after the ENTRYPOINT; `--help` at the end makes rotor
    // parse the whole line and stop before it does anything.
    let entrypoint = exec_form(&containerfile, "ENTRYPOINT");
    assert!(entrypoint[0].ends_with("/rotor"), "{entrypoint:?}");
    let args: Vec<String> = container(deployment(&objects))["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .collect();
    for line in [args, exec_form(&containerfile, "CMD")] {
        let out = Command::new(env!("CARGO_BIN_EXE_rotor"))
            .args(&entrypoint[1..])
            .args(&line)
            .arg("--help")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "rotor {:?} {line:?}: {}",
            &entrypoint[1..],
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let config = entrypoint
        .iter()
        .position(|a| a == "--config")
        .map(|i| entrypoint[i + 1].as_str())
        .expect("the ENTRYPOINT names the schedules");
    let mounted = container(deployment(&objects))["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == config);
    assert!(mounted, "the Deployment mounts the schedules at {config}");
}
