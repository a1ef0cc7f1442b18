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
