//! Self-recovery: a step after promotion that fails on a transient cause keeps retrying at the
//! capped backoff with its alert firing, and heals without a person once the cause is gone.
//! Against a real PostgreSQL of the test's own, stopped and started again.

use std::time::{Duration, Instant};

use crate::emergency::{Daemon, audit_text};
use crate::providers::{current, field, pg};
use crate::support::{Rotor, postgres};

/// `(condition, active)` of the credential's alerts, as the store keeps them.
pub fn alerts(rotor: &Rotor) -> Vec<(String, i64)> {
    use sqlx::Connection;
    crate::providers::block_on(async {
        let mut db = sqlx::SqliteConnection::connect(&rotor.store_url())
            .await
            .unwrap();
        sqlx::query_as("SELECT condition, active FROM alert_state ORDER BY condition")
            .fetch_all(&mut db)
            .await
            .unwrap()
    })
}

/// Polls `status --json` of the one credential until `done` holds; panics after `within`.
fn wait_for_status(
    rotor: &Rotor,
    within: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let status = rotor.json(&["status", "--json"])[0].clone();
        if done(&status) {
            return status;
        }
        assert!(Instant::now() < deadline, "still {status:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_retire_that_fails_while_the_provider_is_down_heals_when_it_is_back() {
    let server = postgres::dedicated();
    pg::prepare(&server);
    let rotor = Rotor::new("");
    let fixture = pg::setup_on(&server, "heal", rotor.dir.path());
    // Three attempts 1-2 s apart (generated_config), then retries at the 2 s cap.
    std::fs::write(&rotor.config, fixture.config("3s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let _daemon = Daemon::start(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    let second = current(&rotor);
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "grace");

    // The provider goes down during the grace: the retire fails, past its budget it keeps
    // retrying, with its alert raised.
    server.stop();
    let retrying = wait_for_status(&rotor, Duration::from_secs(60), |s| {
        s["state"] == "retrying" && audit_text(&rotor).contains("alert retrying at retire")
    });
    let next = retrying["next_action"].as_str().unwrap();
    assert!(next.contains("retries retire by itself"), "{next}");
    assert!(retrying["next_action_at"].is_string(), "{retrying:#}");
    assert!(
        alerts(&rotor).contains(&("retrying".to_owned(), 1)),
        "{:?}",
        alerts(&rotor)
    );
    // Still retrying a few attempts later: nothing gave up into `stuck`.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "retrying");

    // Back: the next attempt (at most the 2 s cap away) retires the old password, no person.
    server.start_again();
    let back = Instant::now();
    wait_for_status(&rotor, Duration::from_secs(30), |s| s["state"] == "idle");
    eprintln!("healed {:?} after the provider came back", back.elapsed());
    assert!(
        alerts(&rotor).contains(&("retrying".to_owned(), 0)),
        "the alert resolved itself: {:?}",
        alerts(&rotor)
    );
    let with_password = server.psql(
        pg::DATABASE,
        "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_authid WHERE rolname IN ('heal_a', 'heal_b') AND rolpassword IS NOT NULL",
    );
    assert_eq!(
        with_password,
        field(&second, "username"),
        "only the current role has a password: the old one was retired"
    );
}

/// A vault behind a relay that answers 503 from the start: rotor's first contact (OpenBao's
/// token lookup and mount check, AWS's first call) fails transiently, the mint is retried, and
/// once the relay passes requests through again the next attempt gets through: no rollback, no
/// person. `vault` is the `[vaults.v]` table without its address; `env` what rotor needs.
fn a_vault_down_at_first_contact_recovers(
    upstream: &str,
    vault: &str,
    env: &[(&str, &str)],
    read_back: impl Fn() -> bool,
) {
    use crate::support::outage::Outage;
    let outage = Outage::start(upstream.trim_start_matches("http://"));
    let config = format!(
        r#"
[defaults]
grace = "0s"
retry = {{ max_attempts = 6, initial = "2s", max = "4s" }}
[vaults.v]
{vault}
{address}
[[credential]]
id = "payments/webhook"
schedule = {{ every = "30d" }}
vault = {{ name = "v", path = "payments/webhook-{pid}" }}
rotator = {{ kind = "generated", length = 40 }}
"#,
        address = if vault.contains("openbao") {
            format!("address = \"{}\"", outage.address)
        } else {
            format!("endpoint = \"{}\"", outage.address)
        },
        pid = std::process::id()
    );
    let rotor = Rotor::new(&config);
    let mut cmd = rotor.command(&["run", "--poll", "1s"]);
    cmd.envs(env.iter().copied());
    let (daemon, _) = crate::support::spawn_until(cmd, "rotor started", Duration::from_secs(30))
        .expect("the daemon starts");
    let _daemon = crate::emergency::Daemon::from_child(daemon);

    // The first attempt meets the outage and is set to retry.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = rotor.json(&["history", "--json"]);
        if history[0]["steps"][0]["outcome"] == "retry" {
            break;
        }
        assert!(Instant::now() < deadline, "no retry recorded: {history:#}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(outage.refused() > 0, "rotor reached the relay");

    outage.set_down(false);
    let back = Instant::now();
    let done = wait_for_status(&rotor, Duration::from_secs(30), |s| {
        s["state"] == "idle" && s["current_version"].is_string()
    });
    eprintln!(
        "{}: recovered {:?} after the vault came back (retry initial 2s, max 4s)",
        vault.lines().next().unwrap_or_default(),
        back.elapsed()
    );
    assert!(done["current_version"].is_string());
    let history = rotor.json(&["history", "--json"]);
    assert_eq!(history[0]["state"], "completed", "{history:#}");
    let steps: Vec<&str> = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(
        !steps.contains(&"rollback"),
        "transient at first contact: retried, never rolled back: {steps:?}"
    );
    assert!(read_back(), "the value is in the vault");
}

#[test]
fn openbao_down_at_first_contact_recovers_at_the_next_attempt_after_it_is_back() {
    use crate::support::openbao::{self, ROOT_TOKEN};
    let server = openbao::shared();
    let mount = format!("outage{}", std::process::id());
    server.kv_mount(&mount, 2);
    a_vault_down_at_first_contact_recovers(
        &server.address,
        &format!(
            "kind = \"openbao\"\nmount = \"{mount}\"\nauth = {{ method = \"token\", token = {{ env = \"ROTOR_TEST_BAO_TOKEN\" }} }}"
        ),
        &[("ROTOR_TEST_BAO_TOKEN", ROOT_TOKEN)],
        || {
            server.kv_get(&mount, &format!("payments/webhook-{}", std::process::id()))["data"]["data"]
                ["value"]
                .is_string()
        },
    );
}

#[test]
fn aws_secrets_manager_down_at_first_contact_recovers_at_the_next_attempt_after_it_is_back() {
    let moto = crate::support::moto::shared();
    a_vault_down_at_first_contact_recovers(
        &moto.endpoint,
        "kind = \"aws_secrets_manager\"\nregion = \"eu-west-1\"",
        &[
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
        ],
        || {
            crate::support::moto::block_on(async {
                moto.client()
                    .await
                    .get_secret_value()
                    .secret_id(format!("payments/webhook-{}", std::process::id()))
                    .send()
                    .await
                    .is_ok()
            })
        },
    );
}

/// A run that keeps retrying a retire at a provider that is down can be closed by a person who
/// retired the old credential by hand: rotor prints what it could see, closes the run and
/// resolves the alert.
#[test]
fn a_retrying_run_is_closed_by_hand_when_a_person_repaired_it() {
    let server = postgres::dedicated();
    pg::prepare(&server);
    let rotor = Rotor::new("");
    let fixture = pg::setup_on(&server, "byhand", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("2s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let _daemon = Daemon::start(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    server.stop();
    wait_for_status(&rotor, Duration::from_secs(60), |s| {
        s["state"] == "retrying" && audit_text(&rotor).contains("alert retrying at retire")
    });
    let out = rotor.ok(&[
        "cancel",
        "app/key0",
        "--resolved-by-hand",
        "--reason",
        "old password revoked by the DBA",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(stdout.contains("closed"), "{stdout}");
    let status = rotor.json(&["status", "--json"])[0].clone();
    assert_eq!(status["state"], "idle", "{status:#}");
    assert!(
        alerts(&rotor).contains(&("retrying".to_owned(), 0)),
        "{:?}",
        alerts(&rotor)
    );
    assert!(audit_text(&rotor).contains("old password revoked by the DBA"));
}

/// A leak reported while a run keeps retrying its retirement (the provider was down and is
/// back, its next attempt minutes away): the emergency takes the retrying run over at once,
/// ends it, and replaces the credential, without waiting for the backoff.
#[test]
fn an_emergency_takes_over_a_retrying_run_at_once() {
    let server = postgres::dedicated();
    pg::prepare(&server);
    let rotor = Rotor::new("");
    let fixture = pg::setup_on(&server, "emretry", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("2s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let daemon = Daemon::start(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    server.stop();
    wait_for_status(&rotor, Duration::from_secs(60), |s| {
        s["state"] == "retrying"
    });
    server.start_again();
    let before = current(&rotor);
    let out = rotor.run(&["rotate", "app/key0", "--emergency", "--reason", "leaked"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    drop(daemon);
    let after = current(&rotor);
    assert_ne!(
        field(&after, "password"),
        field(&before, "password"),
        "the emergency replaced the current credential"
    );
    let status = rotor.json(&["status", "--json"])[0].clone();
    assert_eq!(status["state"], "idle", "{status:#}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let runs: Vec<(&str, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["state"].as_str().unwrap(),
                r["emergency"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(runs[0], ("completed", true), "{history:#}");
    assert!(
        runs[1..].iter().all(|(state, _)| *state == "completed"),
        "the retrying run was ended, not left live: {history:#}"
    );
    assert!(audit_text(&rotor).contains("leaked"));
}

/// A credential paused while its run keeps retrying (the provider was down when it came to
/// apply): when the retry comes due, the provider back by then, the run waits for the pause
/// instead of acting; resumed, it finishes.
#[test]
fn a_retrying_run_waits_while_paused_and_finishes_when_resumed() {
    let server = postgres::dedicated();
    pg::prepare(&server);
    let rotor = Rotor::new("");
    let fixture = pg::setup_on(&server, "pauseretry", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    server.stop();
    rotor.run(&["run", "--once"]);
    let retrying = rotor.json(&["status", "--json"])[0].clone();
    assert_eq!(retrying["state"], "retrying", "{retrying:#}");

    rotor.ok(&["pause", "app/key0", "--reason", "database maintenance"]);
    server.start_again();
    rotor.advance(Duration::from_secs(3600));
    rotor.ok(&["run", "--once"]);
    let paused = rotor.json(&["status", "--json"])[0].clone();
    assert!(
        paused["run_id"].is_string(),
        "the run is still live: {paused:#}"
    );
    let next = paused["next_action"].as_str().unwrap_or_default();
    assert!(next.contains("waits before apply"), "{paused:#}");
    assert!(
        audit_text(&rotor).contains("waits before apply"),
        "{}",
        audit_text(&rotor)
    );

    rotor.ok(&["resume", "app/key0"]);
    rotor.ok(&["run", "--once"]);
    let done = rotor.json(&["status", "--json"])[0].clone();
    assert_eq!(done["state"], "idle", "{done:#}");
    assert!(done["run_id"].is_null(), "{done:#}");
}
