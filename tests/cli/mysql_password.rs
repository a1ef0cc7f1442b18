//! `mysql_password` through the binary, against the harness's MariaDB: preflight names a
//! missing account and grant drift, `verify_query` catches lost privileges before consumers see
//! the new password, `single` rotates in place, `rotor policy` prints the admin grants the
//! fixtures use, a refused admin login says what to do without leaking, the plaintext never
//! reaches the server's general log, and an open connection of the old account holds a grace
//! that ends by evidence.

use std::process::{Child, Command, Stdio};

use crate::providers::{Fixture, Provider, current, field, mysql, setup};
use crate::support::{Rotor, assert_secrets_absent};
use rotor_rotators::Credential;
use secrecy::ExposeSecret;

fn rotor_for(unique: &str) -> (Rotor, Fixture) {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Mysql, unique, rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    (rotor, fixture)
}

#[test]
fn validate_online_names_a_missing_account_and_grant_drift() {
    let (rotor, fixture) = rotor_for("my_drift");
    let out = rotor.ok(&["validate", "--online"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ok: app/key0 (mysql_password)"),
        "{out:?}"
    );
    let b = &fixture.accounts[1];
    mysql::server().ok(&format!("GRANT DELETE ON app.my_drift TO '{b}'@'%'"));
    let out = rotor.run(&["validate", "--online"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{b} has `GRANT SELECT, INSERT, DELETE ON `app`.`my_drift` TO ACCOUNT` but {} has not",
            fixture.accounts[0]
        )),
        "{stdout}"
    );
    std::fs::write(
        &rotor.config,
        fixture
            .config("0s", rotor.dir.path())
            .replace(&format!("\"{b}\""), "\"my_drift_missing\""),
    )
    .unwrap();
    let out = rotor.run(&["validate", "--online"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("'my_drift_missing'@'%' does not exist"),
        "{out:?}"
    );
}

#[test]
fn lost_privileges_fail_verification_and_roll_back() {
    let (rotor, fixture) = rotor_for("my_privdrift");
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    assert_eq!(field(&first, "username"), fixture.accounts[0]);
    // The next rotation uses the second account, which lost the grant `verify_query` needs.
    let b = &fixture.accounts[1];
    mysql::server().ok(&format!("REVOKE SELECT ON app.my_privdrift FROM '{b}'@'%'"));
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");
    let error = rotor.step_error("app/key0", "verify");
    assert!(
        error.contains("verify_query") && error.contains(b.as_str()) && error.contains("denied"),
        "{error}"
    );
    // Consumers still hold a working credential, and the candidate's account is locked again.
    assert_eq!(current(&rotor).fingerprint(), first.fingerprint());
    fixture.check_rotated(
        &first,
        &Credential::new()
            .with("username", b.clone().into())
            .with("password", "not-the-password".to_owned().into()),
    );
}

#[test]
fn single_strategy_rotates_in_place() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Mysql, "my_single", rotor.dir.path());
    let a = fixture.accounts[0].clone();
    let rotator = fixture.rotator.replace(
        &format!("users = [\"{a}\", \"{}\"]", fixture.accounts[1]),
        &format!("strategy = \"single\"\nusers = [\"{a}\"]"),
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
    assert_eq!(field(&second, "username"), a);
    assert_ne!(first.fingerprint(), second.fingerprint());
    fixture.check_rotated(&second, &first);
}

#[test]
fn policy_prints_the_admin_grants_the_tests_use() {
    let (rotor, _fixture) = rotor_for("my_policy");
    let out = rotor.ok(&["policy", "app/key0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for grant in mysql::ADMIN_GRANTS {
        assert!(text.contains(&format!("{grant};")), "{grant}:\n{text}");
    }
}

#[test]
fn a_refused_admin_login_says_what_to_do_and_leaks_nothing() {
    let (rotor, _fixture) = rotor_for("my_badadmin");
    let wrong = "wrong-admin-password-7f3a9c";
    std::fs::write(rotor.path("mariadb-admin-password"), wrong).unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let error = rotor.step_error("app/key0", "apply");
    assert!(
        error.contains("admin account rotor_admin")
            && error.contains("Access denied")
            && error.contains("check the account and its password"),
        "{error}"
    );
    std::fs::remove_file(rotor.path("mariadb-admin-password")).unwrap();
    let mut output = out.stdout.clone();
    output.extend_from_slice(&out.stderr);
    assert_secrets_absent(&[wrong], &output, rotor.dir.path());
}

/// rotor sends the server the password's hash, never the password: the server's general log,
/// which records every statement and login, holds neither the old nor the new plaintext.
#[test]
fn the_plaintext_never_reaches_the_servers_general_log() {
    let (rotor, _fixture) = rotor_for("my_genlog");
    let server = mysql::server();
    let log = server.dir.join("general-my_genlog.log");
    server.ok(&format!(
        "SET GLOBAL general_log_file = '{}'; SET GLOBAL general_log = 1",
        log.display()
    ));
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    let second = current(&rotor);
    server.ok("SET GLOBAL general_log = 0");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("ALTER USER") && text.contains(&field(&second, "username")),
        "the log recorded rotor's statements: {text}"
    );
    for c in [&first, &second] {
        let password = c.get("password").unwrap().expose_secret();
        assert!(
            !text.contains(password),
            "a plaintext password is in the general log"
        );
    }
}

/// A consumer logged in with `credential`, holding its connection open until killed.
fn consumer(credential: &Credential) -> Child {
    let server = mysql::server();
    Command::new("mariadb")
        .args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &server.port.to_string(),
        ])
        .args(["-u", &field(credential, "username"), "--skip-ssl", "app"])
        .args(["-e", "SELECT SLEEP(600)"])
        .env("MYSQL_PWD", field(credential, "password"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn an_open_connection_of_the_old_account_holds_a_grace_that_ends_by_evidence() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Mysql, "my_evidence", rotor.dir.path());
    let config = fixture.config("1h", rotor.dir.path()).replace(
        "[credential.rotator]",
        "retire_when = \"unused\"\nunused_for = \"2s\"\n[credential.rotator]",
    );
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let old = current(&rotor);
    let mut held = consumer(&old);
    // Logged in before the rotation starts sampling.
    let server = mysql::server();
    let old_user = field(&old, "username");
    for _ in 0..100 {
        let n = server.ok(&format!(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = '{old_user}'"
        ));
        if n == "1" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    rotor.ok(&["rotate", "app/key0"]);
    let status = &rotor.json(&["status", "app/key0", "--json"])[0];
    assert_eq!(status["state"], "grace", "{status}");
    assert_eq!(status["previous_usage"]["evidence"], "seen", "{status}");
    let by = status["previous_usage"]["by"].as_str().unwrap();
    assert!(
        by.contains(&format!("1 connection(s) of '{old_user}'@'%': 127.0.0.1:"))
            && by.contains("database app"),
        "{by}"
    );
    std::thread::sleep(std::time::Duration::from_millis(2_200));
    rotor.ok(&["run", "--once"]);
    assert_eq!(
        rotor.json(&["history", "app/key0", "--json"])[0]["state"],
        "promoted"
    );
    assert!(mysql::accepts(&old), "the old password still works");
    held.kill().unwrap();
    held.wait().unwrap();
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(500)),
        "completed"
    );
    fixture.check_rotated(&current(&rotor), &old);
}

/// The rotator's connections over TLS verified against the operator's CA
/// (`ssl-mode=verify_identity` with `ssl-ca` in `dsn`): a whole rotation, the new password
/// verified over the same TLS; without the CA the server is refused, nothing is applied, and
/// the run waits to be retried with an error that names the certificate.
#[test]
fn a_rotation_over_tls_verifies_the_server_against_the_operators_ca() {
    let (rotor, _fixture) = rotor_for("my_tls");
    let server = mysql::server();
    let plain = server.url("rotor_admin");
    let config = std::fs::read_to_string(&rotor.config).unwrap();
    assert!(config.contains(&format!("dsn = \"{plain}\"")), "{config}");
    let with = |query: String| {
        config.replace(
            &format!("dsn = \"{plain}\""),
            &format!("dsn = \"{plain}?{query}\""),
        )
    };
    std::fs::write(
        &rotor.config,
        with(format!(
            "ssl-mode=verify_identity&ssl-ca={}",
            server.ca().display()
        )),
    )
    .unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "completed", "{history}");

    std::fs::write(&rotor.config, with("ssl-mode=verify_identity".into())).unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "pending_stored", "{history}");
    assert!(
        history[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("TLS certificate was refused")),
        "{history}"
    );
}
