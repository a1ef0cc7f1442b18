//! `redis_acl_password` through the binary, against the harness's Redis: the `default` user
//! is refused by config validation, a missing ACL user is named by preflight and by the failed
//! step, `rotor policy` prints the admin rules the fixtures use, and the alternating strategy
//! takes turns between two users, holds retirement while a connection of the old one is
//! open (`CLIENT LIST`), and names rule drift between the two.

use crate::providers::{Fixture, Provider, current, field, redis, setup};
use crate::support::{Rotor, generated_config};
use rotor_rotators::Credential;

#[test]
fn the_default_user_is_a_config_error() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Redis, "refuse_default", rotor.dir.path());
    let config = fixture
        .config("0s", rotor.dir.path())
        .replace("user = \"refuse_default\"", "user = \"default\"");
    std::fs::write(&rotor.config, config).unwrap();
    let out = rotor.run(&["validate"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rotor.toml:") && stderr.contains("refusing to rotate the `default` user"),
        "{stderr}"
    );
}

#[test]
fn a_missing_acl_user_is_named_and_nothing_is_created() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Redis, "present", rotor.dir.path());
    let config = fixture
        .config("0s", rotor.dir.path())
        .replace("user = \"present\"", "user = \"absent_user\"");
    std::fs::write(&rotor.config, config).unwrap();
    let out = rotor.run(&["validate", "--online"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ACL user absent_user does not exist"),
        "{out:?}"
    );
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");
    // ACL SETUSER would have created a disabled user: rotor checks first and creates nothing.
    assert_eq!(
        redis::server().ok(&["ACL", "GETUSER", "absent_user"]),
        "",
        "no user was created"
    );
}

#[test]
fn policy_prints_the_admin_rule_the_tests_use() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Redis, "policy", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let out = rotor.ok(&["policy", "app/key0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "ACL SETUSER rotor on >ADMIN_PASSWORD {}",
            redis::ADMIN_RULE.trim_start_matches("on ")
        )),
        "{text}"
    );
}

/// `rediss://` to a server whose certificate a private CA signed: rotor verifies it against
/// `ca_file` and rotates; without `ca_file` the same server is refused (unknown issuer), so
/// the certificate really is checked.
#[test]
fn a_rotation_over_tls_verifies_the_server_against_the_operators_ca() {
    let rotor = Rotor::new("");
    let certs = rotor.path("tls");
    std::fs::create_dir(&certs).unwrap();
    let (server, tls_port) = crate::support::redis::start_tls(&certs);
    let mut admin = vec!["ACL", "SETUSER", "rotor"];
    admin.extend(redis::ADMIN_RULE.split(' '));
    let password = format!(">{}", redis::ADMIN_PASSWORD);
    admin.push(&password);
    server.ok(&admin);
    server.ok(&[
        "ACL",
        "SETUSER",
        "tlsapp",
        "on",
        "~tlsapp:*",
        "+get",
        "+ping",
        "+acl|whoami",
    ]);
    std::fs::write(rotor.path("redis-admin"), redis::ADMIN_PASSWORD).unwrap();
    let rotator = format!(
        "rotator = {{ kind = \"redis_acl_password\", url = \"rediss://127.0.0.1:{tls_port}\", user = \"tlsapp\", admin_user = \"rotor\", admin = {{ file = \"{}\" }}, ca_file = \"{}\" }}",
        rotor.path("redis-admin").display(),
        certs.join("ca.pem").display()
    );
    let config = generated_config(1, "0s").replace(
        "rotator = { kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }",
        &rotator,
    );
    std::fs::write(&rotor.config, &config).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let doc = crate::rotation::read_document(&rotor, "app/key0");
    let password = doc["password"].as_str().expect("a password in the vault");
    assert_eq!(
        server.cli(Some(("tlsapp", password)), &["ACL", "WHOAMI"]),
        Ok("tlsapp".to_owned()),
        "the rotated password logs in"
    );

    let unverified = config.replace(
        &format!(", ca_file = \"{}\"", certs.join("ca.pem").display()),
        "",
    );
    std::fs::write(&rotor.config, unverified).unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("certificate") || stderr.contains("UnknownIssuer"),
        "the refusal names the certificate: {stderr}"
    );
}

fn alternating(unique: &str, grace: &str, settings: &str) -> (Rotor, Fixture, Credential) {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::RedisAlternating, unique, rotor.dir.path());
    let config = fixture.config(grace, rotor.dir.path()).replace(
        "[credential.rotator]",
        &format!("{settings}\n[credential.rotator]"),
    );
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let first = current(&rotor);
    (rotor, fixture, first)
}

/// A consumer logged in with `credential`, holding its connection open.
fn consumer(credential: &Credential) -> ::redis::Connection {
    use ::redis::IntoConnectionInfo;
    let info = redis::server().url().into_connection_info().unwrap();
    let settings = info
        .redis_settings()
        .clone()
        .set_username(field(credential, "username"))
        .set_password(field(credential, "password"))
        .set_skip_set_lib_name();
    let mut conn = ::redis::Client::open(info.set_redis_settings(settings))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: String = ::redis::cmd("PING").query(&mut conn).unwrap();
    conn
}

#[test]
fn alternating_users_take_turns_and_an_open_connection_of_the_old_one_holds_retirement() {
    let (rotor, fixture, old) = alternating(
        "evidence_redis",
        "1h",
        "retire_when = \"unused\"\nunused_for = \"2s\"",
    );
    let old_user = field(&old, "username");
    assert_eq!(old_user, "evidence_redis_a");
    let held = consumer(&old);
    rotor.ok(&["rotate", "app/key0"]);
    let new = current(&rotor);
    assert_eq!(
        field(&new, "username"),
        "evidence_redis_b",
        "the users take turns"
    );
    let status = &rotor.json(&["status", "app/key0", "--json"])[0];
    assert_eq!(status["state"], "grace", "{status}");
    assert_eq!(status["previous_usage"]["evidence"], "seen", "{status}");
    let by = status["previous_usage"]["by"].as_str().unwrap();
    assert!(
        by.contains(&format!(
            "1 connection(s) of ACL user {old_user}: 127.0.0.1:"
        )) && by.contains("idle"),
        "{by}"
    );
    // Past `unused_for`, but the connection is still open: the old user keeps its password.
    std::thread::sleep(std::time::Duration::from_millis(2_200));
    rotor.ok(&["run", "--once"]);
    assert_eq!(
        rotor.json(&["history", "app/key0", "--json"])[0]["state"],
        "promoted"
    );
    assert!(redis::accepts(&old), "the old password still works");
    drop(held);
    // Gone: retired once unused for two seconds, long before the hour of grace.
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(500)),
        "completed"
    );
    fixture.check_rotated(&current(&rotor), &old);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(
        history[0]["previous_usage"]["evidence"], "unseen",
        "{history}"
    );
    assert!(
        history[0]["previous_usage"]["by"]
            .as_str()
            .unwrap()
            .contains(&old_user),
        "who was seen before stays on the run: {history}"
    );
}

#[test]
fn alternating_users_whose_rules_differ_are_named_by_preflight() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::RedisAlternating, "drift_redis", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["validate", "--online"]);
    redis::server().ok(&["ACL", "SETUSER", "drift_redis_b", "+del"]);
    let out = rotor.run(&["validate", "--online"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("drift_redis_b has `commands")
            && stdout.contains("+del")
            && stdout.contains("but drift_redis_a has not"),
        "{stdout}"
    );
}

#[test]
fn policy_prints_the_alternating_admin_rule_the_tests_use() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::RedisAlternating, "policy_alt", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let out = rotor.ok(&["policy", "app/key0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!(
            "ACL SETUSER rotor_alternating on >ADMIN_PASSWORD {}",
            redis::ALTERNATING_ADMIN_RULE.trim_start_matches("on ")
        )) && text.contains("policy_alt_a")
            && text.contains("policy_alt_b"),
        "{text}"
    );
}

#[test]
fn a_drill_reports_the_connections_of_the_previous_user_during_its_grace() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::RedisAlternating, "drill_alt", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let old = current(&rotor);
    let _held = consumer(&old);
    let out = rotor.run(&["drill", "--grace", "1s", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &report["credentials"][0];
    assert!(
        c["usage_evidence"]
            .as_str()
            .unwrap()
            .contains("CLIENT LIST"),
        "{c:#}"
    );
    assert!(
        c["previous_used"]
            .as_str()
            .unwrap()
            .contains("1 connection(s) of ACL user drill_alt_a"),
        "{c:#}"
    );
}
