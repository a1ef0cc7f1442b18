//! `deploy/kubernetes/` as `kubectl kustomize` renders it (offline): the objects a cluster would
//! receive, checked against what rotor needs of them and against the config they carry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::deploy;
use crate::support::require_program;

const KUBECTL_INSTALL: &str = "see https://kubernetes.io/docs/tasks/tools/install-kubectl-linux/ \
     (one static binary in PATH; `kubectl kustomize` needs no cluster)";

/// Every object `kubectl kustomize deploy/kubernetes` renders.
pub(super) fn rendered() -> Vec<Value> {
    render("kubernetes")
}

/// Every object `kubectl kustomize deploy/FOLDER` renders.
fn render(folder: &str) -> Vec<Value> {
    let kubectl = require_program("kubectl", KUBECTL_INSTALL);
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(deploy(folder))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize deploy/{folder}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yaml = String::from_utf8(out.stdout).unwrap();
    serde_saphyr::from_multiple(&yaml).expect("kustomize renders YAML documents")
}

fn of_kind<'a>(objects: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> {
    objects.iter().filter(move |o| o["kind"] == kind)
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

/// The one Deployment: rotor.
pub(super) fn deployment(objects: &[Value]) -> &Value {
    let all: Vec<_> = of_kind(objects, "Deployment").collect();
    assert_eq!(all.len(), 1, "one Deployment: {all:#?}");
    all[0]
}

pub(super) fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The pod's volume a container's mount names.
fn volume_of<'a>(pod: &'a Value, mount: &Value) -> &'a Value {
    pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume for the mount {mount}"))
}

/// The folder a ConfigMap volume shows the pod, laid out as the kubelet writes it: the files
/// in a hidden timestamped folder, a hidden `..data` link to it, and a link per file.
fn as_the_kubelet_mounts(config_map: &Value, at: &Path) {
    let stamp = "..2026_12_04_00_00_00.000000001";
    std::fs::create_dir_all(at.join(stamp)).unwrap();
    std::os::unix::fs::symlink(stamp, at.join("..data")).unwrap();
    for (name, text) in config_map["data"].as_object().unwrap() {
        std::fs::write(at.join(stamp).join(name), text.as_str().unwrap()).unwrap();
        std::os::unix::fs::symlink(format!("..data/{name}"), at.join(name)).unwrap();
    }
}

/// The rendered schedules as the pod reads them, through rotor's own loader.
fn mounted_config(objects: &[Value], dir: &Path) -> (PathBuf, rotor::config::Config) {
    let pod = &deployment(objects)["spec"]["template"]["spec"];
    let mount = container(deployment(objects))["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["mountPath"] == "/etc/rotor/schedules")
        .expect("the schedules are mounted where the image's ENTRYPOINT reads them");
    let name = str_at(volume_of(pod, mount), "/configMap/name");
    let config_map = of_kind(objects, "ConfigMap")
        .find(|c| c["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the schedules' ConfigMap {name} is rendered"));
    let at = dir.join("schedules");
    as_the_kubelet_mounts(config_map, &at);
    let config = rotor::config::load(std::slice::from_ref(&at))
        .unwrap_or_else(|e| panic!("the rendered schedules load as the pod would read them:\n{e}"));
    (at, config)
}

#[test]
fn every_rollout_hook_may_patch_its_deployment_in_that_deployments_namespace() {
    let objects = rendered();
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = mounted_config(&objects, dir.path());
    let rotor = deployment(&objects);
    let namespace = str_at(rotor, "/metadata/namespace");
    let account = str_at(rotor, "/spec/template/spec/serviceAccountName");
    assert!(
        of_kind(&objects, "ServiceAccount")
            .any(|a| a["metadata"]["name"] == account && a["metadata"]["namespace"] == namespace),
        "the service account {namespace}/{account} is rendered"
    );
    let hooks: Vec<_> = config
        .hooks
        .values()
        .filter_map(|h| match h {
            rotor::notify::HookConfig::KubernetesRollout(h) => Some(h),
            _ => None,
        })
        .collect();
    assert!(!hooks.is_empty(), "the example config rolls a Deployment");
    for hook in hooks {
        let grants = |role: &Value| {
            role["rules"].as_array().unwrap().iter().any(|rule| {
                let has = |key: &str, want: &str| {
                    rule[key]
                        .as_array()
                        .is_some_and(|items| items.iter().any(|i| i == want))
                };
                has("apiGroups", "apps")
                    && has("resources", "deployments")
                    && has("verbs", "patch")
                    && has("resourceNames", &hook.deployment)
            })
        };
        let roles: BTreeSet<&str> = of_kind(&objects, "Role")
            .filter(|r| r["metadata"]["namespace"] == hook.namespace.as_str() && grants(r))
            .map(|r| str_at(r, "/metadata/name"))
            .collect();
        assert!(
            !roles.is_empty(),
            "no Role in namespace {} grants patch on deployment {}: the hook would get 403",
            hook.namespace,
            hook.deployment
        );
        let bound = of_kind(&objects, "RoleBinding").any(|b| {
            b["metadata"]["namespace"] == hook.namespace.as_str()
                && b["roleRef"]["kind"] == "Role"
                && roles.contains(str_at(b, "/roleRef/name"))
                && b["subjects"].as_array().unwrap().iter().any(|s| {
                    s["kind"] == "ServiceAccount"
                        && s["name"] == account
                        && s["namespace"] == namespace
                })
        });
        assert!(
            bound,
            "no RoleBinding in {} gives {namespace}/{account} the Role that may patch {}",
            hook.namespace, hook.deployment
        );
    }
}

/// The Secrets and ConfigMaps deploy/README.md tells the operator to create, with their keys.
fn created_by_the_operator() -> Vec<(String, String, BTreeSet<String>)> {
    let readme = std::fs::read_to_string(deploy("README.md")).unwrap();
    let mut created = Vec::new();
    for line in readme.lines().map(str::trim) {
        let Some(rest) = line.strip_prefix("kubectl -n rotor create ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let (kind, name) = match words.as_slice() {
            ["secret", "generic", name, ..] => ("Secret", *name),
            ["configmap", name, ..] => ("ConfigMap", *name),
            _ => panic!("an unexpected create command in deploy/README.md: {line}"),
        };
        let keys = words
            .iter()
            .filter_map(|w| w.strip_prefix("--from-file="))
            .map(|f| f.split('=').next().unwrap().to_owned())
            .collect();
        created.push((kind.to_owned(), name.to_owned(), keys));
    }
    assert!(created.len() >= 2, "{created:?}");
    created
}

#[test]
fn every_file_the_config_reads_is_mounted_from_an_object_that_exists() {
    let objects = rendered();
    let dir = tempfile::tempdir().unwrap();
    let (at, _) = mounted_config(&objects, dir.path());
    let rotor = deployment(&objects);
    let created = created_by_the_operator();
    let pod = &rotor["spec"]["template"]["spec"];
    // Each mounted volume: where, and which keys it shows.
    let mut mounts: Vec<(String, String, BTreeSet<String>)> = Vec::new();
    for mount in container(rotor)["volumeMounts"].as_array().unwrap() {
        let volume = volume_of(pod, mount);
        let (kind, name) = if let Some(name) = volume.pointer("/secret/secretName") {
            ("Secret", name.as_str().unwrap())
        } else if let Some(name) = volume.pointer("/configMap/name") {
            ("ConfigMap", name.as_str().unwrap())
        } else {
            continue;
        };
        let keys = if let Some(object) = of_kind(&objects, kind).find(|o| {
            o["metadata"]["name"] == name
                && o["metadata"]["namespace"] == rotor["metadata"]["namespace"]
        }) {
            object["data"]
                .as_object()
                .unwrap()
                .keys()
                .cloned()
                .collect()
        } else {
            let (_, _, keys) = created
                .iter()
                .find(|(k, n, _)| k == kind && n == name)
                .unwrap_or_else(|| {
                    panic!("the pod mounts {kind} {name}, which is neither rendered nor created by a command in deploy/README.md")
                });
            keys.clone()
        };
        mounts.push((
            str_at(mount, "/mountPath").to_owned(),
            name.to_owned(),
            keys,
        ));
    }
    // The files the config names: secret references and the store's CA.
    let text = std::fs::read_to_string(at.join("rotor.toml")).unwrap();
    let mut files: Vec<&str> = text
        .split("file = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    files.extend(
        text.split("sslrootcert=")
            .skip(1)
            .map(|rest| rest.split(['"', '&']).next().unwrap()),
    );
    assert!(files.len() >= 5, "{files:?}");
    for file in files {
        let (folder, key) = file.rsplit_once('/').unwrap();
        let (_, name, keys) = mounts
            .iter()
            .find(|(path, _, _)| path == folder)
            .unwrap_or_else(|| {
                panic!("the config reads {file}, but nothing is mounted at {folder}")
            });
        assert!(
            keys.contains(key),
            "the config reads {file}, but {name} mounted at {folder} has no key {key} (it has {keys:?})"
        );
    }
}

#[test]
fn the_pod_is_probed_limited_and_runs_the_published_image_of_this_version() {
    let objects = rendered();
    let rotor = container(deployment(&objects));
    let port_named = |probe: &str| {
        let name = str_at(rotor, &format!("/{probe}/httpGet/port"));
        rotor["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("{probe} names port {name}, which the container has not"))
    };
    // The paths rotor serves (tests/cli/metrics.rs gets 200 from both on a running daemon),
    // on the port it listens on.
    assert_eq!(str_at(rotor, "/livenessProbe/httpGet/path"), "/healthz");
    assert_eq!(str_at(rotor, "/readinessProbe/httpGet/path"), "/readyz");
    let args: Vec<&str> = rotor["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let listen = args
        .iter()
        .position(|a| *a == "--listen")
        .map(|i| args[i + 1])
        .expect("rotor run --listen");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert!(
            listen.ends_with(&format!(":{}", port_named(probe))),
            "{probe} probes a port rotor does not listen on ({listen})"
        );
    }
    for pointer in [
        "/resources/requests/cpu",
        "/resources/requests/memory",
        "/resources/limits/memory",
    ] {
        str_at(rotor, pointer);
    }
    let image = str_at(rotor, "/image");
    assert_eq!(
        image,
        format!("ghcr.io/your-org/rotor:{}", env!("CARGO_PKG_VERSION")),
        "the image is the published name at this crate's version"
    );
    let security = &rotor["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
}

/// An ExternalSecret's `refreshInterval` ("90m", "1h", "2h30m") in seconds.
fn interval_secs(text: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number
            .parse()
            .unwrap_or_else(|_| panic!("bad interval {text}"));
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => panic!("bad interval {text}"),
        };
    }
    assert!(number.is_empty(), "bad interval {text}");
    total
}

#[test]
fn each_external_secret_reads_a_credential_declared_for_it_within_half_its_grace() {
    let dir = tempfile::tempdir().unwrap();
    let (_, config) = mounted_config(&rendered(), dir.path());
    let objects = render("kubernetes/external-secrets");
    let stores: Vec<_> = of_kind(&objects, "SecretStore").collect();
    let secrets: Vec<_> = of_kind(&objects, "ExternalSecret").collect();
    assert!(secrets.len() >= 3, "{objects:#?}");
    for es in secrets {
        let name = str_at(es, "/metadata/name");
        assert_eq!(str_at(es, "/metadata/namespace"), "payments", "{name}");
        let keys: BTreeSet<&str> = es["spec"]["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| str_at(d, "/remoteRef/key"))
            .chain(
                es["spec"]["dataFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|d| str_at(d, "/extract/key")),
            )
            .collect();
        assert_eq!(keys.len(), 1, "{name} reads one document: {keys:?}");
        let key = keys.into_iter().next().unwrap();
        let credential = config
            .credentials
            .iter()
            .find(|c| c.vault_path == key)
            .unwrap_or_else(|| {
                panic!("{name} reads `{key}`, which no credential of rotor.toml writes")
            });
        // Read from the store that is that credential's vault.
        let store_name = str_at(es, "/spec/secretStoreRef/name");
        let store = stores
            .iter()
            .find(|s| s["metadata"]["name"] == store_name)
            .unwrap_or_else(|| panic!("{name}: no SecretStore {store_name}"));
        let provider = match &config.vaults[&credential.vault] {
            rotor::vault::VaultConfig::Openbao(_) => "vault",
            rotor::vault::VaultConfig::AwsSecretsManager(_) => "aws",
            rotor::vault::VaultConfig::GcpSecretManager(gcp) => {
                // `latest` is the version being verified: only the alias rotor moves at
                // promotion is safe to read.
                for d in es["spec"]["data"].as_array().into_iter().flatten() {
                    assert_eq!(
                        d["remoteRef"]["version"].as_str(),
                        Some(gcp.current_alias.as_str()),
                        "{name}: reads `versions/{}`, rotor's current alias",
                        gcp.current_alias
                    );
                }
                "gcpsm"
            }
            other => panic!("{name}: the operator cannot read a {} vault", other.kind()),
        };
        assert!(
            store["spec"]["provider"].get(provider).is_some(),
            "{name}: {store_name} is not the `{provider}` store of `{}`",
            credential.vault
        );
        // The timing rule, declared on both sides.
        let interval = interval_secs(str_at(es, "/spec/refreshInterval"));
        assert_eq!(
            credential
                .external_secrets_refresh
                .map(|d| d.as_std().as_secs()),
            Some(interval),
            "{name}: `{}` must say consumers = \"external-secrets\" with refresh_interval = {interval}s",
            credential.id
        );
        assert!(
            interval * 2 <= credential.grace.as_std().as_secs(),
            "{name}: refreshInterval {interval}s is more than half the grace of `{}`",
            credential.id
        );
    }
}
