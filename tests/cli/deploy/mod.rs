//! The operators' files in `deploy/`, checked by the tools that consume them: the Prometheus
//! rules pass `promtool check rules` and their unit tests, and every metric the rules and the
//! Grafana dashboard name is one rotor exports (here); the Kubernetes files as `kubectl
//! kustomize` renders them, the systemd unit and the Containerfile (in the modules below).

mod container;
mod kubernetes;
mod systemd;

use std::collections::BTreeSet;
use std::path::Path;

use crate::generated_config;
use crate::support::{Rotor, require_program};

pub(crate) fn deploy(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let promtool = require_program("promtool", "apt-get install -y prometheus");
    for args in [
        vec!["check", "rules", "alerts.yml"],
        vec!["test", "rules", "alerts.test.yml"],
    ] {
        let out = std::process::Command::new(&promtool)
            .args(&args)
            .current_dir(deploy("prometheus"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The metric names rotor exports, as a query names them (histograms with their suffixes),
/// with series per credential and per provider kind (`[metrics] per_credential_up_to`).
fn exported() -> BTreeSet<String> {
    let per_credential = generated_config(1, "1h");
    let per_provider = format!("{per_credential}\n[metrics]\nper_credential_up_to = 0\n");
    let mut names = BTreeSet::new();
    for config in [per_credential, per_provider] {
        names.extend(exported_by(&config));
    }
    names
}

fn exported_by(config: &str) -> BTreeSet<String> {
    let rotor = Rotor::new(config);
    let config = rotor::config::load(std::slice::from_ref(&rotor.config)).unwrap();
    let text = crate::providers::block_on(async {
        let store = rotor::store::Store::connect(&rotor.store_url(), None)
            .await
            .unwrap();
        rotor::telemetry::metrics::render(
            &store,
            &config,
            &Default::default(),
            0,
            rotor::telemetry::metrics::Format::OpenMetrics,
        )
        .await
        .unwrap()
    });
    let mut names = BTreeSet::new();
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line.split(' ').skip(2);
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        // OpenMetrics names a counter's family without the `_total` its samples carry.
        if kind == "counter" {
            names.insert(format!("{name}_total"));
            continue;
        }
        names.insert(name.to_owned());
        if kind == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        }
    }
    names
}

fn rotor_metrics_in(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("rotor_") {
        let start = i + at;
        let before = start.checked_sub(1).map(|b| bytes[b] as char);
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        // Skip words that merely contain "rotor_" (e.g. an identifier in prose).
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            found.insert(text[start..end].to_owned());
        }
        i = end;
    }
    found
}

#[test]
fn every_metric_the_rules_and_the_dashboard_name_is_exported() {
    let exported = exported();
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/rotor.json")).unwrap())
            .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    if (k == "expr" || k == "query") && v.is_string() {
                        out.push(v.as_str().unwrap().to_owned());
                    } else {
                        collect(v, out);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    collect(&dashboard, &mut exprs);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let mut named = BTreeSet::new();
    for text in exprs.iter().chain(std::iter::once(&rules)) {
        named.extend(rotor_metrics_in(text));
    }
    assert!(named.len() >= 8, "{named:?}");
    let missing: Vec<_> = named.difference(&exported).collect();
    assert!(missing.is_empty(), "named but not exported: {missing:?}");
    for alert in [
        "RotorRotationFailed",
        "RotorCredentialTooOld",
        "RotorRotationOverdue",
        "RotorDrillOverdue",
        "RotorDown",
        "RotorStuckRun",
        "RotorRunRetrying",
        "RotorPreviousCredentialStillUsed",
        "RotorCredentialPaused",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}
