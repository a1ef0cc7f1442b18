//! `redis_acl_password` through the binary, against the harness's Redis: the `default` user
//! is refused by config validation, a missing ACL user is named by preflight and by the failed
//! step, and `rotor policy` prints the admin rule the fixtures use.

use crate::providers::{Provider, redis, setup};
use crate::support::{Rotor, generated_config};

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
