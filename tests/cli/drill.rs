//! `rotor drill`: a dry run over every provider against the real servers leaves what consumers
//! read unchanged and nothing behind at the provider; each injected fault gives its documented
//! outcome, its alert reaches the sink, and the exit code says whether the drill passed; Ctrl-C
//! leaves the run resumable; the Markdown report of a known drill matches its snapshot.

use std::process::Command;
use std::time::Duration;

use crate::alerts::Receiver;
use crate::generated_config;
use crate::providers::{self, Provider, current_at as current};
use crate::support::{Rotor, postgres::free_port, spawn_until};

const PROVIDERS: [(Provider, &str); 10] = [
    (Provider::Postgres, "drill/postgres"),
    (Provider::Mysql, "drill/mysql"),
    (Provider::Redis, "drill/redis"),
    (Provider::RedisAlternating, "drill/redis-alternating"),
    (Provider::Iam, "drill/iam"),
    (Provider::Http, "drill/http"),
    (Provider::GithubDeployKey, "drill/deploy-key"),
    (Provider::GithubWebhook, "drill/webhook"),
    (Provider::GithubAppToken, "drill/app-token"),
    (Provider::Ssh, "drill/ssh"),
];

#[test]
fn a_dry_run_over_every_provider_changes_nothing_consumers_read_and_leaves_nothing_behind() {
    let rotor = Rotor::new("");
    let dir = rotor.dir.path();
    // One schedule with a credential per provider, like an operator's.
    let mut text = String::new();
    let mut fixtures = Vec::new();
    for (i, (provider, id)) in PROVIDERS.iter().enumerate() {
        let fixture = providers::setup(*provider, &format!("drill_{i}"), dir);
        let config = fixture.config("0s", dir).replace("app/key0", id);
        if text.is_empty() {
            text = config;
        } else {
            let at = config.find("[[credential]]").unwrap();
            text.push_str(&config[at..]);
        }
        fixtures.push((fixture, *id));
    }
    std::fs::write(&rotor.config, text).unwrap();
    let mut before = Vec::new();
    for (_, id) in &fixtures {
        rotor.ok(&["rotate", id]);
        let old = current(&rotor, id);
        rotor.ok(&["rotate", id]);
        before.push((old, current(&rotor, id)));
    }

    let out = rotor.run(&["drill", "--dry-run", "--report", "drill.md"]);
    let report = std::fs::read_to_string(rotor.path("drill.md")).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report}\n{out:?}");
    assert!(report.contains("- Outcome: **passed**"), "{report}");
    for ((fixture, id), (old, was)) in fixtures.iter().zip(&before) {
        assert!(
            report.contains(&format!(
                "| {id} | {} | dry run | passed | discarded (dry run) |",
                fixture_kind(fixture.provider)
            )),
            "{id}:\n{report}"
        );
        let now = current(&rotor, id);
        assert_eq!(
            now.fingerprint(),
            was.fingerprint(),
            "{id}: a dry run leaves the current version as it was"
        );
        // The current credential works, the old one stays retired, and the dry run's
        // candidate is gone from the provider.
        fixture.check_rotated(&now, old);
    }
    let status = rotor.json(&["status", "--json"]);
    for s in status.as_array().unwrap() {
        assert_eq!(s["last_drill_outcome"], "passed", "{s}");
        assert!(s["last_drill_at"].is_string(), "{s}");
        assert_eq!(s["state"], "idle", "{s}");
    }
    // A dry run is not a rotation: it counts in no rotation outcome.
    let history = rotor.json(&["history", "drill/redis", "--json"]);
    assert_eq!(history[0]["reason"], "drill");
}

fn fixture_kind(provider: Provider) -> &'static str {
    match provider {
        Provider::Postgres => "postgres_password",
        Provider::Redis | Provider::RedisAlternating => "redis_acl_password",
        Provider::Mysql => "mysql_password",
        Provider::Iam => "aws_iam_access_key",
        Provider::Http => "http",
        Provider::GithubDeployKey => "github_deploy_key",
        Provider::GithubWebhook => "github_webhook_secret",
        Provider::GithubAppToken => "github_app_installation_token",
        Provider::Ssh => "ssh_authorized_key",
    }
}

/// One generated credential, already rotated once, whose alerts go to `url`.
fn alerting(url: &str) -> Rotor {
    let rotor = Rotor::new(
        &(generated_config(1, "0s").replace("alerts = [\"log\"]", "alerts = [\"oncall\"]")
            + &format!(
                "\n[alerts.oncall]\nkind = \"webhook\"\nurl = \"{url}\"\nunsigned = true\n"
            )),
    );
    let absolute = std::fs::read_to_string(&rotor.config)
        .unwrap()
        .replace(
            "dir = \"vault\"",
            &format!("dir = \"{}/vault\"", rotor.dir.path().display()),
        )
        .replace(
            "file = \"vault.key\"",
            &format!("file = \"{}/vault.key\"", rotor.dir.path().display()),
        );
    std::fs::write(&rotor.config, absolute).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    rotor
}

#[test]
fn each_injected_fault_gives_its_documented_outcome_and_its_alert_arrives() {
    let sink = Receiver::start(200);
    let rotor = alerting(&format!("{}/alerts", sink.server.uri()));
    let before = current(&rotor, "app/key0").fingerprint();
    let out = rotor.run(&[
        "drill",
        "--inject",
        "verify-fail",
        "--inject",
        "vault-down",
        "--inject",
        "provider-timeout",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["passed"], true);
    let scenarios = report["credentials"].as_array().unwrap();
    for (scenario, condition, failed_step) in [
        ("verify-fail", "rolled_back", "verify"),
        ("vault-down", "retries_exhausted", "mint"),
        ("provider-timeout", "retries_exhausted", "apply"),
    ] {
        let s = scenarios
            .iter()
            .find(|s| s["scenario"] == scenario)
            .unwrap();
        assert_eq!(s["passed"], true, "{s:#}");
        assert_eq!(s["final_state"], "rolled_back", "{s:#}");
        assert_eq!(s["rotated"], false, "{scenario}: consumers untouched");
        assert_eq!(s["current_verifies"], true);
        let steps: Vec<(&str, &str)> = s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|st| {
                (
                    st["step"].as_str().unwrap(),
                    st["outcome"].as_str().unwrap(),
                )
            })
            .collect();
        assert!(
            steps.contains(&(failed_step, "failed")),
            "{scenario}: {steps:?}"
        );
        assert_eq!(steps.last(), Some(&("rollback", "ok")), "{scenario}");
        if condition == "retries_exhausted" {
            // The credential's retry policy: 3 attempts.
            assert_eq!(
                steps
                    .iter()
                    .filter(|(st, o)| *st == failed_step && *o == "retry")
                    .count(),
                2,
                "{scenario}: {steps:?}"
            );
        }
        let alerts: Vec<(&str, &str, bool)> = s["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["condition"].as_str().unwrap(),
                    a["event"].as_str().unwrap(),
                    a["delivered"].as_bool().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            alerts,
            [(condition, "trigger", true), (condition, "resolve", true)],
            "{scenario}: the alert reached the sink, then the drill resolved it"
        );
    }
    assert_eq!(current(&rotor, "app/key0").fingerprint(), before);
    let received: Vec<(String, String)> = sink
        .bodies()
        .iter()
        .map(|b| {
            (
                b["event"].as_str().unwrap().to_owned(),
                b["condition"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(received.len(), 6, "{received:?}");
    // The drill's failures are not the credential's.
    let status = &rotor.json(&["status", "--json"])[0];
    assert_eq!(status["last_error"], serde_json::Value::Null);
    assert_eq!(status["last_drill_outcome"], "passed");
}

#[test]
fn a_crash_mid_rotation_is_resumed_by_another_worker() {
    let sink = Receiver::start(200);
    let rotor = alerting(&format!("{}/alerts", sink.server.uri()));
    let before = current(&rotor, "app/key0").fingerprint();
    let out = rotor.run(&[
        "drill",
        "--inject",
        "crash@promote",
        "--grace",
        "1s",
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let s = &report["credentials"][0];
    assert_eq!(s["scenario"], "crash@promote:effect");
    assert_eq!(s["final_state"], "completed");
    assert_eq!(s["rotated"], true);
    let workers: std::collections::BTreeSet<&str> = s["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|st| st["worker"].as_str().unwrap())
        .collect();
    assert_eq!(workers.len(), 2, "a second worker finished the run: {s:#}");
    assert_ne!(current(&rotor, "app/key0").fingerprint(), before);
    assert!(
        sink.bodies().is_empty(),
        "a crash that is resumed alerts nobody"
    );
}

#[test]
fn an_alert_that_reaches_no_one_fails_the_drill_and_says_what_to_fix() {
    let rotor = alerting(&format!("http://127.0.0.1:{}/alerts", free_port()));
    let out = rotor.run(&["drill", "--inject", "verify-fail"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{report}");
    assert!(report.contains("- Outcome: **FAILED**"), "{report}");
    assert!(
        report.contains("the rolled_back alert did not reach sink `oncall`"),
        "{report}"
    );
    assert!(
        report.contains("fix the sink (`[alerts.oncall]`)"),
        "{report}"
    );
    assert_eq!(
        rotor.json(&["status", "--json"])[0]["last_drill_outcome"],
        "failed"
    );
}

/// Replaces what differs between two runs of the same drill (ids, times, durations, ports).
fn normalized(report: &str, rotor: &Rotor) -> String {
    let mut out = String::new();
    for line in report.lines() {
        let mut line = line.to_owned();
        for (prefix, name) in [
            ("drill_", "drill_ID"),
            ("run_", "run_ID"),
            ("drill-", "WORKER"),
        ] {
            while let Some(at) = line.find(prefix) {
                let end = line[at..]
                    .find([' ', '|', ')', ','])
                    .map_or(line.len(), |e| at + e);
                if line[at..end] == *name {
                    break;
                }
                line.replace_range(at..end, name);
            }
        }
        let words: Vec<String> = line
            .split(' ')
            .map(|w| {
                if w.len() == 20 && w.ends_with('Z') && w.as_bytes()[4] == b'-' {
                    "TIME".to_owned()
                } else {
                    w.to_owned()
                }
            })
            .collect();
        let mut line = words.join(" ");
        // Durations: "| 12 ms |" becomes "| N ms |".
        while let Some(at) = line.find(" ms |") {
            let start = line[..at].rfind("| ").unwrap() + 2;
            if &line[start..at] == "N" {
                break;
            }
            line.replace_range(start..at, "N");
        }
        let uid = format!("(uid {})", rustix::process::getuid().as_raw());
        out.push_str(
            &line
                .replace(&rotor.dir.path().display().to_string(), "DIR")
                .replace(&uid, "(uid N)"),
        );
        out.push('\n');
    }
    out
}

#[test]
fn the_markdown_report_of_a_known_drill_matches_its_snapshot() {
    let sink = Receiver::start(200);
    let rotor = alerting(&format!("{}/alerts", sink.server.uri()));
    let out = rotor
        .command(&["drill", "--inject", "verify-fail", "--select", "app/*"])
        .env("USER", "oncall-lead")
        .env_remove("SUDO_USER")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let actual = normalized(&String::from_utf8_lossy(&out.stdout), &rotor);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots/drill-verify-fail.md");
    if std::env::var_os("ROTOR_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "the report differs from {} (ROTOR_UPDATE_SNAPSHOTS=1 rewrites it)",
        path.display()
    );
}

#[test]
fn ctrl_c_stops_the_drill_and_leaves_its_run_resumable() {
    let rotor = alerting("http://127.0.0.1:9/unused");
    let mut cmd = rotor.command(&["drill", "--grace", "4s", "--report", "drill.md"]);
    cmd.stdout(std::process::Stdio::null());
    let (mut drill, _) = spawn_until(cmd, "grace: waiting until", Duration::from_secs(30))
        .expect("the drill reaches grace");
    let interrupted = Command::new("kill")
        .args(["-INT", &drill.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = drill.wait().unwrap();
    assert_eq!(status.code(), Some(4), "an interrupted drill did not pass");
    let report = std::fs::read_to_string(rotor.path("drill.md")).unwrap();
    assert!(report.contains("interrupted: run run_"), "{report}");
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "grace");

    // The daemon finishes what the drill left.
    std::thread::sleep(Duration::from_secs(4));
    rotor.ok(&["run", "--once"]);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["reason"], "drill");
    assert_eq!(history[0]["state"], "completed");
}

#[test]
fn the_quickstart_schedule_drills_and_its_log_only_alerts_page_nobody() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules/quickstart.toml"),
    )
    .unwrap();
    let rotor = Rotor::new(&text);
    let ids = [
        "quickstart/webhook-signing",
        "quickstart/api-key",
        "quickstart/break-glass",
    ];
    for id in ids {
        rotor.ok(&["rotate", id, "--emergency"]);
    }
    let before: Vec<String> = ids
        .iter()
        .map(|id| rotor.json(&["status", id, "--json"])[0]["current_fingerprint"].to_string())
        .collect();
    let out = rotor.run(&["drill", "--dry-run", "--select", "quickstart/*"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    for id in ids {
        assert!(
            report.contains(&format!("| {id} | generated | dry run | passed |")),
            "{report}"
        );
    }
    let after: Vec<String> = ids
        .iter()
        .map(|id| rotor.json(&["status", id, "--json"])[0]["current_fingerprint"].to_string())
        .collect();
    assert_eq!(before, after, "a dry run changes no current version");

    // Its alerts go to rotor's log only: a drill of a failure says nobody would be paged.
    let out = rotor.run(&["drill", "--inject", "verify-fail", "--select", "generated"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{report}");
    assert!(
        report.contains("rolled_back was raised, but only rotor's log heard of it"),
        "{report}"
    );
}

#[test]
fn a_drill_right_after_onboarding_and_during_a_grace_passes() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schedules/quickstart.toml"),
    )
    .unwrap();
    let rotor = Rotor::new(&text);
    // Onboarding: every first version replaced nothing, so no run holds a grace.
    rotor.ok(&["run", "--once"]);
    for credential in rotor.json(&["status", "--json"]).as_array().unwrap() {
        assert_eq!(credential["state"], "idle", "{credential}");
    }
    let out = rotor.run(&["drill", "--dry-run", "--select", "quickstart/*"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");

    // A rotation in its grace (24 h by default) proves the credential itself.
    let id = "quickstart/api-key";
    rotor.ok(&["rotate", id]);
    assert_eq!(rotor.json(&["status", id, "--json"])[0]["state"], "grace");
    let out = rotor.run(&["drill", "--dry-run", "--select", id]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{report}");
    assert!(report.contains("| proven by run run_"), "{report}");
    assert!(
        report.contains("its verify proved the new credential at"),
        "{report}"
    );
    assert_eq!(
        rotor.json(&["status", id, "--json"])[0]["state"],
        "grace",
        "the drill leaves the live run alone"
    );
}
