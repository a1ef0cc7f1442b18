//! `redis_acl_password` through the binary, against the harness's Redis: the `default` user
//! is refused by config validation, a missing ACL user is named by preflight and by the failed
//! step, and `rotor policy` prints the admin rule the fixtures use.

use crate::providers::{Provider, redis, setup};
use crate::support::Rotor;

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
