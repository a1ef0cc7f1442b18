//! Adopting a credential retires what was there before: the first rotation of a provider
//! credential removes every secret rotor did not issue (a Redis password, an IAM key, the
//! partner role's PostgreSQL password), after a grace where consumers may still use it. On
//! real Redis, PostgreSQL and moto.

use std::time::Duration;

use crate::providers::{self, Provider, current, field};
use crate::support::Rotor;

fn rotor_for(provider: Provider, unique: &str, grace: &str) -> (Rotor, providers::Fixture) {
    let rotor = Rotor::new("");
    let fixture = providers::setup(provider, unique, rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config(grace, rotor.dir.path())).unwrap();
    (rotor, fixture)
}

#[test]
fn a_redis_password_set_before_rotor_is_retired_after_the_first_grace() {
    let (rotor, fixture) = rotor_for(Provider::Redis, "adopted_redis", "1s");
    let server = providers::redis::server();
    let user = &fixture.accounts[0];
    let before = "password-set-by-hand-before-rotor";
    server.ok(&["ACL", "SETUSER", user, &format!(">{before}")]);
    let works =
        |password: &str| server.cli(Some((user, password)), &["ACL", "WHOAMI"]) == Ok(user.clone());

    rotor.ok(&["rotate", "app/key0"]);
    assert_eq!(
        rotor.json(&["status", "--json"])[0]["state"],
        "grace",
        "the first version keeps its grace: consumers may use the old password"
    );
    let first = current(&rotor);
    assert!(works(before) && fixture.accepts(&first));

    std::thread::sleep(Duration::from_millis(1100));
    rotor.ok(&["run", "--once"]);
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");
    assert!(!works(before), "the password rotor did not issue is gone");
    assert!(fixture.accepts(&first));
    let acl = server.ok(&["ACL", "GETUSER", user]);
    let hashes = acl.lines().filter(|l| l.len() == 64).count();
    assert_eq!(hashes, 1, "one password left: {acl}");
}

#[test]
fn the_partner_roles_postgres_password_set_before_rotor_is_removed() {
    let (rotor, fixture) = rotor_for(Provider::Postgres, "adopted_pg", "1h");
    let server = providers::pg::server();
    let partner = &fixture.accounts[1];
    server.psql(
        providers::pg::DATABASE,
        &format!("ALTER ROLE {partner} PASSWORD 'set-by-hand-before-rotor'"),
    );
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    assert_ne!(field(&first, "username"), *partner);
    let with_password = server.psql(
        providers::pg::DATABASE,
        &format!(
            "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_authid WHERE rolname IN ('{}') AND rolpassword IS NOT NULL",
            fixture.accounts.join("','")
        ),
    );
    assert_eq!(
        with_password,
        field(&first, "username"),
        "only rotor's role has a password"
    );
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");
}

#[test]
fn an_iam_key_made_before_rotor_is_retired_after_the_first_grace() {
    let (rotor, fixture) = rotor_for(Provider::Iam, "adopted-iam", "1s");
    let user = fixture.accounts[0].clone();
    let before = providers::block_on(async {
        providers::iam::server()
            .iam()
            .create_access_key()
            .user_name(&user)
            .send()
            .await
            .unwrap()
            .access_key()
            .unwrap()
            .access_key_id()
            .to_owned()
    });
    rotor.ok(&["rotate", "app/key0"]);
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "grace");
    let first = current(&rotor);
    std::thread::sleep(Duration::from_millis(1100));
    rotor.ok(&["run", "--once"]);
    let keys = providers::block_on(providers::iam::keys(&user));
    assert_eq!(
        keys,
        [(field(&first, "access_key_id"), true)],
        "the key made before rotor ({before}) is deleted (delete_after 0s)"
    );
}

/// The adoption check before promotion reads the candidate back: a worker that promoted a
/// first version in the vault and died before its save left it current, not pending, and
/// the worker that resumes must find it there and complete, not roll back.
#[cfg(feature = "failpoints")]
#[test]
fn a_first_version_promoted_by_a_worker_that_died_before_saving_completes() {
    use crate::support::spawn_until;
    let (rotor, fixture) = rotor_for(Provider::Http, "first_promote", "0s");
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    let mut cmd = rotor.command(&["run", "--once", "--lease", "1s"]);
    cmd.env("ROTOR_FAILPOINT", "promote:effect");
    let (mut child, _) = spawn_until(cmd, "FAILPOINT promote:effect", Duration::from_secs(60))
        .expect("the worker reaches promote:effect");
    child.kill().unwrap();
    child.wait().unwrap();
    rotor.advance(Duration::from_secs(5));
    rotor.ok(&["run", "--once"]);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "completed", "{history:#}");
    let steps: Vec<&str> = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert!(!steps.contains(&"rollback"), "{steps:?}");
    assert!(fixture.accepts(&current(&rotor)));
}
