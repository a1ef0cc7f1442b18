//! `postgres_password` through the binary, against the harness's PostgreSQL: preflight finds
//! missing roles and grant drift by name, `verify_query` catches lost privileges before
//! consumers see the new password, `single` rotates in place, `rotor policy` prints the
//! admin role the fixtures use, and a refused admin login says what to do without leaking.

use crate::providers::{Fixture, Provider, current, pg, setup};
use crate::support::{Rotor, assert_secrets_absent};
use rotor_rotators::Credential;
use secrecy::ExposeSecret;

fn rotor_for(unique: &str) -> (Rotor, Fixture) {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Postgres, unique, rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    (rotor, fixture)
}

#[test]
fn validate_online_names_missing_roles_and_grant_drift() {
    let (rotor, fixture) = rotor_for("drift");
    let out = rotor.ok(&["validate", "--online"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: app/key0 (postgres_password)"),
        "{out:?}"
    );

    let b = &fixture.accounts[1];
    pg::server().psql(
        pg::DATABASE,
        &format!("GRANT INSERT ON app.orders TO {b}; ALTER ROLE {b} CONNECTION LIMIT 3"),
    );
    let out = rotor.run(&["validate", "--online"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{b} has `relation app.orders: INSERT` but {} has not",
            fixture.accounts[0]
        )),
        "{stdout}"
    );
    assert!(stdout.contains("connection limit 3"), "{stdout}");

    std::fs::write(
        &rotor.config,
        fixture
            .config("0s", rotor.dir.path())
            .replace(&format!("\"{b}\""), "\"drift_missing\""),
    )
    .unwrap();
    let out = rotor.run(&["validate", "--online"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("role drift_missing does not exist"),
        "{out:?}"
    );
}

#[test]
fn lost_privileges_fail_verification_and_roll_back() {
    let (rotor, fixture) = rotor_for("privdrift");
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    assert_eq!(
        first.get("username").unwrap().expose_secret(),
        &fixture.accounts[0]
    );

    // The next rotation uses the second role, which has lost its group membership.
    let b = &fixture.accounts[1];
    pg::server().psql(pg::DATABASE, &format!("REVOKE app_group FROM {b}"));
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");
    let error = rotor.step_error("app/key0", "verify");
    assert!(
        error.contains("verify_query")
            && error.contains(b.as_str())
            && error.contains("permission denied"),
        "{error}"
    );

    // Consumers still hold a working credential, and the candidate's role has no password.
    assert_eq!(current(&rotor).fingerprint(), first.fingerprint());
    fixture.check_rotated(
        &first,
        &rotor_rotators::Credential::new()
            .with("username", b.clone().into())
            .with("password", "not-the-password".to_owned().into()),
    );
}

#[test]
fn single_strategy_rotates_in_place() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Postgres, "single", rotor.dir.path());
    let a = fixture.accounts[0].clone();
    let rotator = fixture
        .rotator
        .replace("strategy = \"alternating\"", "strategy = \"single\"")
        .replace(
            &format!("users = [\"{a}\", \"{}\"]", fixture.accounts[1]),
            &format!("users = [\"{a}\"]"),
        );
    let fixture = Fixture {
        rotator,
        accounts: vec![a.clone()],
        ..fixture
    };
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    let second = current(&rotor);
    assert_eq!(second.get("username").unwrap().expose_secret(), &a);
    assert_ne!(first.fingerprint(), second.fingerprint());
    fixture.check_rotated(&second, &first);
}

#[test]
fn policy_prints_the_admin_role_the_tests_use() {
    let (rotor, fixture) = rotor_for("policy");
    let out = rotor.ok(&["policy", "app/key0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("CREATE ROLE \"rotor_admin\" LOGIN CREATEROLE;"),
        "{text}"
    );
    for role in &fixture.accounts {
        assert!(
            text.contains(&format!(
                "GRANT \"{role}\" TO \"rotor_admin\" WITH ADMIN OPTION"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("file vault"),
        "the vault part follows: {text}"
    );
}

#[test]
fn a_refused_admin_login_says_what_to_do_and_leaks_nothing() {
    let (rotor, _fixture) = rotor_for("badadmin");
    let wrong = "wrong-admin-password-7f3a9c";
    std::fs::write(rotor.path("pg-admin-password"), wrong).unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let error = rotor.step_error("app/key0", "apply");
    assert!(
        error.contains("admin role rotor_admin")
            && error.contains("password authentication failed")
            && error.contains("check the role and its password"),
        "{error}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("app/key0"), "{stderr}");
    std::fs::remove_file(rotor.path("pg-admin-password")).unwrap();
    let mut output = out.stdout.clone();
    output.extend_from_slice(&out.stderr);
    assert_secrets_absent(&[wrong], &output, rotor.dir.path());
}

/// The rotator's connection over TLS verified against the operator's CA (`sslmode=verify-full`
/// with `sslrootcert` in `dsn`): a whole rotation, the new password verified by logging in over
/// the same TLS; without the CA the server is refused, nothing is applied, and the run is
/// retried with an error that names the certificate.
#[test]
fn a_rotation_over_tls_verifies_the_server_against_the_operators_ca() {
    let (server, ca) = crate::support::postgres::dedicated_tls();
    pg::prepare(&server);
    let rotor = Rotor::new("");
    let fixture = pg::setup_on(&server, "tlspg", rotor.dir.path());
    let plain_dsn = format!(
        "postgres://rotor_admin@127.0.0.1:{}/{}",
        server.port,
        pg::DATABASE
    );
    let verified = format!(
        "{plain_dsn}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    let config = fixture.config("0s", rotor.dir.path());
    assert!(
        config.contains(&format!("dsn = \"{plain_dsn}\"")),
        "{config}"
    );
    std::fs::write(
        &rotor.config,
        config.replace(
            &format!("dsn = \"{plain_dsn}\""),
            &format!("dsn = \"{verified}\""),
        ),
    )
    .unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "completed", "{history}");

    let unverified = format!("{plain_dsn}?sslmode=verify-full");
    std::fs::write(
        &rotor.config,
        config.replace(
            &format!("dsn = \"{plain_dsn}\""),
            &format!("dsn = \"{unverified}\""),
        ),
    )
    .unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("certificate") || stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
    // Nothing was applied; the run waits to be retried, its error naming the certificate.
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "pending_stored", "{history}");
    assert!(
        history[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS certificate was refused")),
        "{history}"
    );
}

/// A role pair `unique_a`/`unique_b` as `app/key0` with `retire_when = "unused"` and these
/// settings, its first version minted: the credential that becomes the old one next.
fn retiring_when_unused(unique: &str, grace: &str, settings: &str) -> (Rotor, Fixture, Credential) {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Postgres, unique, rotor.dir.path());
    let config = fixture.config(grace, rotor.dir.path()).replace(
        "[credential.rotator]",
        &format!("retire_when = \"unused\"\n{settings}\n[credential.rotator]"),
    );
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let first = current(&rotor);
    (rotor, fixture, first)
}

fn run_state(rotor: &Rotor) -> String {
    rotor.json(&["history", "app/key0", "--json"])[0]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn a_session_of_the_old_role_holds_retirement_until_it_is_gone_for_unused_for() {
    let (rotor, fixture, old) = retiring_when_unused("evidence", "1h", "unused_for = \"2s\"");
    let old_role = crate::providers::field(&old, "username");
    crate::providers::block_on(async {
        // A consumer nobody remembered, still logged in with the credential about to be old.
        let mut consumer = pg::login(&old).await.unwrap();
        sqlx::raw_sql("SET application_name = 'billing-cron'")
            .execute(&mut consumer)
            .await
            .unwrap();
        rotor.ok(&["rotate", "app/key0"]);
        let status = &rotor.json(&["status", "app/key0", "--json"])[0];
        assert_eq!(status["state"], "grace", "{status}");
        let usage = &status["previous_usage"];
        assert_eq!(usage["evidence"], "seen", "{status}");
        let by = usage["by"].as_str().unwrap();
        assert!(
            by.contains(&format!("1 session(s) of role {old_role}"))
                && by.contains("application billing-cron"),
            "{by}"
        );
        assert!(
            status["next_action"]
                .as_str()
                .unwrap()
                .contains("once unused"),
            "{status}"
        );
        // Past `unused_for`, but the session is still there: the old role keeps its password.
        std::thread::sleep(std::time::Duration::from_millis(2_200));
        rotor.ok(&["run", "--once"]);
        assert_eq!(run_state(&rotor), "promoted");
        assert!(
            pg::login(&old).await.is_ok(),
            "the old password still works"
        );
        use sqlx::Connection;
        consumer.close().await.unwrap();
    });
    // Gone: retired once it has been unused for two seconds, long before the hour of grace.
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(500)),
        "completed"
    );
    fixture.check_rotated(&current(&rotor), &old);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert!(history[0].to_string().contains("unseen"), "{}", history[0]);
}

#[test]
fn still_used_when_grace_ends_alerts_and_waits_until_a_person_retires_it() {
    let (rotor, fixture, old) = retiring_when_unused(
        "stillused",
        "2s",
        "unused_for = \"1h\"\non_still_used = \"wait\"",
    );
    crate::providers::block_on(async {
        let _consumer = pg::login(&old).await.unwrap();
        rotor.ok(&["rotate", "app/key0"]);
        std::thread::sleep(std::time::Duration::from_millis(2_200));
        let out = rotor.ok(&["run", "--once"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("grace is over and the old credential is still in use")
                && stderr.contains("still_used"),
            "{stderr}"
        );
        // Kept: the operator chose to wait for its users to move.
        assert_eq!(run_state(&rotor), "promoted");
        assert!(
            pg::login(&old).await.is_ok(),
            "the old password still works"
        );
    });
    // Monitoring sees it too: when it was last seen in use, and the raised condition.
    let addr = format!("127.0.0.1:{}", crate::support::postgres::free_port());
    let mut daemon = rotor
        .command(&["run", "--listen", &addr, "--poll", "1s"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut metrics = String::new();
    for _ in 0..100 {
        if let Some((200, body)) = crate::support::http_get(&format!("http://{addr}/metrics")) {
            metrics = body;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Stopped as an operator would (SIGTERM): it gives its leases back.
    std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status()
        .unwrap();
    daemon.wait().unwrap();
    assert!(
        metrics.contains("rotor_previous_credential_last_used_timestamp_seconds{credential=\"app/key0\",provider=\"postgres_password\"} ")
            && metrics.contains("rotor_grace_end_timestamp_seconds{credential=\"app/key0\",provider=\"postgres_password\"} ")
            && metrics.contains("rotor_alerts_active{credential=\"app/key0\",provider=\"postgres_password\",condition=\"still_used\"} 1"),
        "{metrics}"
    );
    // A person ends it: `--retire-now` is not held by the evidence.
    let out = rotor.ok(&["cancel", "app/key0", "--retire-now", "--reason", "moved"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("completed now"),
        "{out:?}"
    );
    fixture.check_rotated(&current(&rotor), &old);
}

#[test]
fn an_emergency_is_not_held_by_a_session_of_the_old_role() {
    let (rotor, _fixture, old) = retiring_when_unused(
        "evidence_emergency",
        "1h",
        "unused_for = \"1h\"\non_still_used = \"wait\"",
    );
    crate::providers::block_on(async {
        let _consumer = pg::login(&old).await.unwrap();
        rotor.ok(&["rotate", "app/key0"]);
        assert_eq!(run_state(&rotor), "promoted");
        // The key leaked: whoever still uses the old password must stop now.
        let out = rotor.run(&["rotate", "app/key0", "--emergency", "--reason", "leaked"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        assert!(
            pg::login(&old).await.is_err(),
            "the old password is refused"
        );
    });
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");
}

#[test]
fn a_drill_reports_who_used_the_previous_credential_during_its_grace() {
    let (rotor, _fixture) = rotor_for("drill_evidence");
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let old = current(&rotor);
    let old_role = crate::providers::field(&old, "username");
    let report: serde_json::Value = crate::providers::block_on(async {
        let mut consumer = pg::login(&old).await.unwrap();
        sqlx::raw_sql("SET application_name = 'nightly-report'")
            .execute(&mut consumer)
            .await
            .unwrap();
        let out = rotor.run(&["drill", "--grace", "1s", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    });
    let c = &report["credentials"][0];
    assert!(
        c["usage_evidence"]
            .as_str()
            .unwrap()
            .contains("pg_stat_activity"),
        "{c:#}"
    );
    let used = c["previous_used"].as_str().unwrap();
    assert!(
        used.contains(&format!("1 session(s) of role {old_role}"))
            && used.contains("application nightly-report"),
        "{used}"
    );
}

#[test]
fn still_used_when_grace_ends_is_retired_by_default_and_alerted_with_who() {
    let (rotor, fixture, old) = retiring_when_unused("stillretire", "2s", "unused_for = \"1h\"");
    let old_role = crate::providers::field(&old, "username");
    let stderr = crate::providers::block_on(async {
        let _consumer = pg::login(&old).await.unwrap();
        rotor.ok(&["rotate", "app/key0"]);
        std::thread::sleep(std::time::Duration::from_millis(2_200));
        let out = rotor.ok(&["run", "--once"]);
        String::from_utf8_lossy(&out.stderr).into_owned()
    });
    // Retired anyway (`on_still_used = "retire"` is the default), and the alert says who.
    assert_eq!(run_state(&rotor), "completed");
    fixture.check_rotated(&current(&rotor), &old);
    assert!(
        stderr.contains("condition=\"still_used\"")
            && stderr.contains(&format!("1 session(s) of role {old_role}")),
        "{stderr}"
    );
    // The completion does not resolve it: whoever used the old credential is failing now.
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(
        history[0]["previous_usage"]["evidence"], "seen",
        "{history}"
    );
    assert!(
        !stderr.contains("alert resolved"),
        "the still_used alert stays raised: {stderr}"
    );
    // The next rotation that retires with nobody on the old credential resolves it.
    let out = rotor.ok(&["rotate", "app/key0", "--emergency"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("alert resolved"),
        "{out:?}"
    );
}

#[test]
fn a_pause_holds_a_run_waiting_on_evidence_and_a_drill_leaves_it_alone() {
    let (rotor, fixture, old) = retiring_when_unused("evidence_pause", "1h", "unused_for = \"1s\"");
    crate::providers::block_on(async {
        let _consumer = pg::login(&old).await.unwrap();
        rotor.ok(&["rotate", "app/key0"]);
    });
    // A drill finds the credential in its (evidence-held) grace and starts no run of its own.
    let out = rotor.run(&["drill", "--grace", "1s", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        rotor
            .json(&["history", "app/key0", "--json"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["reason"] == "drill")
            .count(),
        0,
        "{report:#}"
    );
    // The consumer is gone, so the next look would retire the old role; a pause holds it.
    rotor.ok(&["pause", "app/key0", "--reason", "migration"]);
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    rotor.ok(&["run", "--once"]);
    assert_eq!(run_state(&rotor), "promoted", "paused: not retired");
    assert!(crate::providers::block_on(pg::login(&old)).is_ok());
    rotor.ok(&["resume", "app/key0"]);
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(300)),
        "completed"
    );
    fixture.check_rotated(&current(&rotor), &old);
}
