//! `rotor pause` / `rotor resume`: a paused credential is not scheduled, its live run waits
//! after the step in flight, status and metrics say who paused it, why and until when, a
//! pause past `max_age` still raises `too_old`, and a pause with an end lifts by itself.

use std::time::Duration;

use crate::emergency::{Daemon, audit_text};
use crate::generated_config;
use crate::recovery::alerts;
use crate::support::{Rotor, http_get, postgres::free_port};

const DAY: Duration = Duration::from_secs(86_400);

fn status(rotor: &Rotor) -> serde_json::Value {
    rotor.json(&["status", "--json"])[0].clone()
}

/// `/metrics` of a daemon started on the rotor's store for one scrape.
fn scrape(rotor: &Rotor) -> String {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut daemon = rotor
        .command(&["run", "--listen", &addr, "--poll", "1h"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let body = loop {
        if let Some((200, body)) = http_get(&format!("http://{addr}/metrics")) {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "no /metrics");
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    body
}

#[cfg(feature = "failpoints")]
#[test]
fn a_paused_due_credential_is_not_rotated_until_resumed() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    rotor.ok(&["rotate", "app/key0"]);
    let first = status(&rotor)["current_version"].clone();
    rotor.advance(31 * DAY);
    let out = rotor.ok(&["pause", "app/key0", "--reason", "provider maintenance"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused app/key0 until `rotor resume`"));

    rotor.ok(&["run", "--once"]);
    let paused = status(&rotor);
    assert_eq!(paused["current_version"], first, "not rotated while paused");
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["paused"]["reason"], "provider maintenance");
    assert!(
        paused["paused"]["by"]
            .as_str()
            .is_some_and(|by| !by.is_empty())
    );
    assert!(paused["paused"]["until"].is_null());
    assert!(
        paused["next_action"]
            .as_str()
            .unwrap()
            .contains("rotor resume app/key0"),
        "{paused:#}"
    );
    let table = String::from_utf8_lossy(&rotor.ok(&["status"]).stdout).into_owned();
    assert!(
        table.contains("[paused by") && table.contains("provider maintenance"),
        "{table}"
    );
    let metrics = scrape(&rotor);
    assert!(
        metrics
            .contains("rotor_credential_paused{credential=\"app/key0\",provider=\"generated\"} 1"),
        "{metrics}"
    );

    // A rotation asked by hand is refused with the way out; an emergency is not.
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is paused") && stderr.contains("rotor resume app/key0"),
        "{stderr}"
    );

    let out = rotor.ok(&["resume", "app/key0"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resumed app/key0"));
    rotor.ok(&["run", "--once"]);
    let resumed = status(&rotor);
    assert_ne!(resumed["current_version"], first, "rotated once resumed");
    assert_eq!(resumed["state"], "idle");
    assert!(resumed["paused"].is_null());
    let audit = audit_text(&rotor);
    assert!(
        audit.contains("pause paused until `rotor resume`; provider maintenance")
            && audit.contains(" resume resumed"),
        "{audit}"
    );
}

#[test]
fn a_live_run_waits_while_paused_and_goes_on_when_resumed() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    rotor.ok(&["rotate", "app/key0"]);
    let first = status(&rotor)["current_version"].clone();
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    rotor.ok(&["pause", "app/key0", "--reason", "migration"]);
    rotor.ok(&["run", "--once"]);
    let paused = status(&rotor);
    assert_eq!(paused["current_version"], first);
    assert!(paused["run_id"].is_string(), "the run is still live");
    let next = paused["next_action"].as_str().unwrap();
    assert!(next.contains("waits before mint"), "{next}");
    assert!(audit_text(&rotor).contains("paused planned: waits before mint"));

    rotor.ok(&["resume", "app/key0"]);
    rotor.ok(&["run", "--once"]);
    let done = status(&rotor);
    assert_ne!(done["current_version"], first);
    assert_eq!(done["state"], "idle");

    // An emergency goes through a pause, past a run the pause holds; the pause stays.
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    rotor.ok(&["pause", "app/key0", "--reason", "migration"]);
    rotor.ok(&["run", "--once"]);
    rotor.ok(&[
        "rotate",
        "app/key0",
        "--emergency",
        "--reason",
        "found in a paste",
    ]);
    let after = status(&rotor);
    assert_ne!(after["current_version"], done["current_version"]);
    assert_eq!(after["state"], "paused");
    assert!(after["run_id"].is_null(), "{after:#}");
}

#[cfg(feature = "failpoints")]
#[test]
fn a_pause_past_max_age_still_alerts_and_a_pause_with_an_end_lifts_by_itself() {
    let config = generated_config(1, "0s").replace(
        "schedule = { every = \"30d\" }",
        "schedule = { every = \"30d\" }\nmax_age = \"40d\"",
    );
    let rotor = Rotor::new(&config);
    rotor.ok(&["rotate", "app/key0"]);
    let first = status(&rotor)["current_version"].clone();
    rotor.ok(&[
        "pause",
        "app/key0",
        "--until",
        "60d",
        "--reason",
        "vendor freeze",
    ]);
    assert!(status(&rotor)["paused"]["until"].is_string());

    // The age check runs in the daemon's loop, not in `run --once`.
    rotor.advance(45 * DAY);
    {
        let _daemon = Daemon::start(&rotor);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !alerts(&rotor).contains(&("too_old".to_owned(), 1)) {
            assert!(
                std::time::Instant::now() < deadline,
                "a pause must not hide an aging credential: {:?}",
                alerts(&rotor)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert_eq!(status(&rotor)["current_version"], first, "still paused");
    assert!(
        !alerts(&rotor).iter().any(|(c, _)| c == "overdue"),
        "a paused credential is not overdue: {:?}",
        alerts(&rotor)
    );

    rotor.advance(16 * DAY);
    rotor.ok(&["run", "--once"]);
    let after = status(&rotor);
    assert_ne!(after["current_version"], first, "the pause ended by itself");
    assert!(after["paused"].is_null());
    assert!(alerts(&rotor).contains(&("too_old".to_owned(), 0)));
}

#[test]
fn until_must_be_a_future_time_or_a_duration() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    for bad in ["yesterday", "2020-01-01T00:00:00Z"] {
        let out = rotor.run(&["pause", "app/key0", "--until", bad, "--reason", "x"]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--until"));
    }
}

#[test]
fn a_drill_reports_a_paused_credential_as_not_drilled() {
    let rotor = Rotor::new(&generated_config(2, "0s"));
    rotor.ok(&["rotate", "app/key0"]);
    rotor.ok(&["rotate", "app/key1"]);
    rotor.ok(&["pause", "app/key0", "--reason", "provider maintenance"]);
    let out = rotor.run(&["drill", "--dry-run"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("paused by")
            && text.contains("provider maintenance")
            && text.contains("not drilled"),
        "{text}"
    );
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert!(
        history
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["reason"] != "drill"),
        "no drill run for the paused credential: {history:#}"
    );
}
