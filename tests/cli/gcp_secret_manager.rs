//! The `gcp_secret_manager` vault through the CLI, on the fake of Secret Manager's REST API
//! (tests/support/gcp.rs): rotations as consumers see them, a vault down during retirement, the
//! permissions `rotor policy` prints against the calls rotor made, and no secret anywhere but the
//! vault.

use std::time::Duration;

use crate::generated_config;
use crate::support::gcp::Gcp;
use crate::support::{Rotor, assert_secrets_absent};

fn rotor_with_gcp() -> (Rotor, std::sync::Arc<Gcp>) {
    let rotor = Rotor::new("");
    let fake = Gcp::start(rotor.dir.path());
    let text = generated_config(1, "1s")
        .replace("name = \"local\"", "name = \"gcp\"")
        .replace("path = \"app/key0\"", "path = \"app-key0\"")
        + "\n"
        + &fake.vault_toml("gcp", "");
    std::fs::write(&rotor.config, text).unwrap();
    (rotor, fake)
}

fn value(fake: &Gcp, which: &str) -> Option<String> {
    fake.payload("app-key0", which)
        .map(|doc| doc["value"].as_str().unwrap().to_owned())
}

/// The IAM permission each Secret Manager call needs, as Google's reference names it.
fn permission(request: &str) -> &'static str {
    let (method, path) = request.split_once(' ').unwrap();
    match (method, path) {
        ("POST", p) if p.ends_with("/secrets") => "secretmanager.secrets.create",
        ("POST", p) if p.ends_with(":addVersion") => "secretmanager.versions.add",
        ("POST", p) if p.ends_with(":disable") => "secretmanager.versions.disable",
        ("POST", p) if p.ends_with(":destroy") => "secretmanager.versions.destroy",
        ("GET", p) if p.ends_with(":access") => "secretmanager.versions.access",
        ("GET", p) if p.ends_with("/versions") => "secretmanager.versions.list",
        ("GET", _) => "secretmanager.secrets.get",
        ("PATCH", _) => "secretmanager.secrets.update",
        _ => panic!("a call rotor should not make: {request}"),
    }
}

#[test]
fn rotations_keep_current_apart_heal_an_outage_and_need_only_what_policy_prints() {
    let (rotor, fake) = rotor_with_gcp();
    let mut output = Vec::new();
    let mut record = |out: std::process::Output| {
        output.extend(out.stdout);
        output.extend(out.stderr);
    };
    record(rotor.ok(&["--log", "trace", "rotate", "app/key0", "--emergency"]));
    let first = value(&fake, "current").expect("a first version");
    record(rotor.ok(&["--log", "trace", "rotate", "app/key0", "--no-wait"]));
    record(rotor.ok(&["--log", "trace", "run", "--once"]));
    let second = value(&fake, "current").unwrap();
    assert_ne!(first, second);
    let during = fake.payload("app-key0", "current").unwrap();
    assert_eq!(
        during["previous"]["value"],
        first.as_str(),
        "both during grace"
    );

    // Secret Manager is down when grace ends: retirement fails as transient, is retried, and
    // the run completes once it is back; nothing is left enabled but `current`.
    fake.state.lock().unwrap().unavailable = true;
    std::thread::sleep(Duration::from_millis(1100));
    record(rotor.run(&["--log", "trace", "run", "--once"]));
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_ne!(history[0]["state"], "completed", "{}", history[0]);
    let error = rotor.step_error("app/key0", "retire");
    assert!(
        error.contains("503") && error.contains("UNAVAILABLE"),
        "{error}"
    );
    fake.state.lock().unwrap().unavailable = false;
    assert_eq!(
        rotor.run_until_completed("app/key0", Duration::from_millis(1100)),
        "completed"
    );
    let after = fake.payload("app-key0", "current").unwrap();
    assert_eq!(after["value"], second.as_str());
    assert!(after.get("previous").is_none(), "retired");
    let states = fake.states("app-key0");
    assert_eq!(
        states.iter().filter(|s| **s == "ENABLED").count(),
        1,
        "{states:?}"
    );
    let status = rotor.json(&["status", "--json"]);
    let aliased = fake.state.lock().unwrap().secrets["app-key0"].aliases["current"];
    assert_eq!(status[0]["current_version"], aliased.to_string());

    // Every call rotor made needs a permission `rotor policy` prints.
    let policy = String::from_utf8_lossy(&rotor.ok(&["policy", "app/key0"]).stdout).into_owned();
    let requests = fake.state.lock().unwrap().requests.clone();
    let mut needed: Vec<_> = requests.iter().map(|r| permission(r)).collect();
    needed.sort();
    needed.dedup();
    assert!(needed.len() >= 6, "{needed:?}");
    for permission in needed {
        assert!(
            policy.contains(permission),
            "{permission} missing from:\n{policy}"
        );
    }

    for args in [
        vec!["status"],
        vec!["history", "--json"],
        vec!["plan", "--json"],
    ] {
        record(rotor.run(&args));
    }
    let key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fake.key_file).unwrap()).unwrap();
    let key_body = key["private_key"]
        .as_str()
        .unwrap()
        .lines()
        .nth(1)
        .unwrap()
        .to_owned();
    // The folder also holds the fake's key files: the store alone is searched.
    let store_dir = tempfile::tempdir().unwrap();
    for name in ["rotor.db", "rotor.db-wal", "rotor.db-shm"] {
        if let Ok(bytes) = std::fs::read(rotor.path(name)) {
            std::fs::write(store_dir.path().join(name), bytes).unwrap();
        }
    }
    assert_secrets_absent(
        &[&first, &second, &key_body, "ya29.fake-"],
        &output,
        store_dir.path(),
    );
}
