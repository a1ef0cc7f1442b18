//! `rotor cancel`: before promotion the run rolls back and the credential consumers read stays
//! and works; after promotion nothing changes unless `--retire-now`; a stuck run repaired by
//! hand is closed after rotor printed what the provider and the vault hold. Against a real
//! PostgreSQL role pair, and a cancel before promotion on a real sshd too.

use crate::emergency::audit_text;
use crate::providers::{self, Provider, current};
use crate::rotation::read_document;
use crate::support::Rotor;

fn rotor_with(unique: &str) -> (Rotor, providers::Fixture) {
    rotor_of(Provider::Postgres, unique)
}

fn rotor_of(provider: Provider, unique: &str) -> (Rotor, providers::Fixture) {
    let rotor = Rotor::new("");
    let fixture = providers::setup(provider, unique, rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("1h", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    (rotor, fixture)
}

#[test]
fn cancel_after_promotion_names_the_choices_and_retires_now_only_when_asked() {
    let (rotor, fixture) = rotor_with("cancel_promoted");
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    let second = current(&rotor);

    let out = rotor.run(&["cancel", "app/key0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        stderr.contains("is promoted") && stderr.contains("--retire-now"),
        "{stderr}"
    );
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "grace");
    assert!(
        fixture.accepts(&first) && fixture.accepts(&second),
        "nothing changed"
    );

    let out = rotor.ok(&[
        "cancel",
        "app/key0",
        "--retire-now",
        "--reason",
        "migration done",
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed now"));
    fixture.check_rotated(&second, &first);
    assert!(read_document(&rotor, "app/key0").get("previous").is_none());
    assert!(audit_text(&rotor).contains("retire_now"));
}

#[cfg(feature = "failpoints")]
#[test]
fn cancel_before_promotion_rolls_back_past_a_hung_daemon() {
    cancel_before_promotion(Provider::Postgres, "cancel_before");
}

/// The SSH rotator's candidate is a line in a file on a host: the rollback removes it there.
#[cfg(feature = "failpoints")]
#[test]
fn cancel_before_promotion_of_an_ssh_key_rolls_back_past_a_hung_daemon() {
    cancel_before_promotion(Provider::Ssh, "cancel_before_ssh");
}

#[cfg(feature = "failpoints")]
fn cancel_before_promotion(provider: Provider, unique: &str) {
    use crate::support::spawn_until;
    use std::time::Duration;
    let (rotor, fixture) = rotor_of(provider, unique);
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    let mut cmd = rotor.command(&["run", "--poll", "1s", "--lease", "3s"]);
    cmd.env("ROTOR_FAILPOINT", "verify:before");
    let (mut hung, _) = spawn_until(cmd, "FAILPOINT verify:before", Duration::from_secs(30))
        .expect("the daemon reaches verify");

    let out = rotor.run(&["cancel", "app/key0", "--reason", "wrong window"]);
    let _ = hung.kill();
    let _ = hung.wait();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("rolled back"));
    assert_eq!(current(&rotor).fingerprint(), first.fingerprint());
    assert!(
        fixture.accepts(&first),
        "the credential consumers read still works"
    );
    assert!(!rotor.path("vault/app/key0.age.pending").exists());
    if let Some(sshd) = &fixture.sshd {
        let rotor_lines = sshd.lines().into_iter().filter(|l| l.contains(" rotor:"));
        assert_eq!(
            rotor_lines.count(),
            1,
            "the candidate's line is gone: {:?}",
            sshd.lines()
        );
    }
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");
    // Cancelled, not failed: no failure counted, the schedule stands.
    let status = &rotor.json(&["status", "--json"])[0];
    assert_eq!(status["state"], "idle", "{status}");
    assert!(status["last_error"].is_null(), "{status}");
}

#[test]
fn a_stuck_run_repaired_by_hand_is_closed_after_rotor_shows_what_is_live() {
    let (rotor, _fixture) = rotor_with("cancel_by_hand");
    rotor.ok(&["rotate", "app/key0"]);
    let second = current(&rotor);
    // As a retire that failed for good leaves it.
    providers::block_on(async {
        use sqlx::Connection;
        let mut db = sqlx::SqliteConnection::connect(&rotor.store_url())
            .await
            .unwrap();
        sqlx::query(
            "UPDATE runs SET state = 'stuck', stuck_from = 'retiring', last_error = 'retire failed: permission denied' WHERE state = 'promoted'",
        )
        .execute(&mut db)
        .await
        .unwrap();
    });
    let out = rotor.run(&["cancel", "app/key0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resolved-by-hand"));
    let out = rotor.run(&["cancel", "app/key0", "--resolved-by-hand"]);
    assert_eq!(out.status.code(), Some(2), "a reason is required: {out:?}");

    let out = rotor.ok(&[
        "cancel",
        "app/key0",
        "--resolved-by-hand",
        "--reason",
        "dropped the old role's password by hand",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fingerprint = rotor.shown_fingerprint(&second.fingerprint());
    assert!(
        stdout.contains(&format!("vault current: version 2 {fingerprint}")),
        "{stdout}"
    );
    assert!(stdout.contains("vault previous: version 1"), "{stdout}");
    assert!(stdout.contains("provider: cancel_by_hand_a"), "{stdout}");
    assert!(stdout.contains("closed run"), "{stdout}");
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");
    assert!(audit_text(&rotor).contains("dropped the old role's password by hand"));
}
