//! `rotor rotate --emergency` in every state of a live run, against the real providers, with a
//! daemon running on the same store: when it exits 0, a fresh verified credential is current
//! and neither the credential it replaced nor the one before authenticates or is in the vault.

use std::time::{Duration, Instant};

use crate::providers::{self, Provider, current};
use crate::rotation::read_document;
use crate::support::{Rotor, spawn_until};

/// A daemon on the rotor's store until dropped (SIGTERM, then waited for).
pub struct Daemon(std::process::Child);

impl Daemon {
    /// A daemon the test spawned itself.
    pub fn from_child(child: std::process::Child) -> Daemon {
        Daemon(child)
    }

    pub fn start(rotor: &Rotor) -> Daemon {
        let cmd = rotor.command(&["run", "--poll", "1s"]);
        let (child, _) =
            spawn_until(cmd, "rotor started", Duration::from_secs(30)).expect("the daemon starts");
        Daemon(child)
    }
}

impl Drop for Daemon {
    /// SIGTERM, then SIGKILL if it has not exited within 20 s: a daemon whose drive is paused
    /// at a failpoint finishes that step only when the pause ends, which is never.
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Rotates `provider`'s fixture twice (the second rotation in its hour of grace), then as an
/// emergency with a daemon beside; checks the provider and the vault.
fn emergency_in_grace(provider: Provider, unique: &str) {
    let rotor = Rotor::new("");
    let fixture = providers::setup(provider, unique, rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("1h", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0"]);
    let second = current(&rotor);
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "grace");
    let daemon = Daemon::start(&rotor);

    let started = Instant::now();
    let out = rotor.run(&[
        "rotate",
        "app/key0",
        "--emergency",
        "--reason",
        "found in a public repo",
    ]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stdout.contains("no older credential authenticates"),
        "{stdout}"
    );
    eprintln!("{provider:?}: rotate --emergency in grace took {took:?}");
    drop(daemon);

    let fresh = current(&rotor);
    fixture.check_rotated(&fresh, &second);
    if !fixture.switches_after_grace() {
        assert!(
            !fixture.accepts(&first),
            "the credential before the last still works"
        );
    }
    let doc = read_document(&rotor, "app/key0");
    assert!(
        doc.get("previous").is_none(),
        "previous left in the vault: {doc}"
    );
    assert!(!rotor.path("vault/app/key0.age.pending").exists());
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");
    // Audited: who, why, and each retired value by fingerprint.
    let audit = audit_text(&rotor);
    // Both the interruption of the run in grace and the emergency's own run say why.
    assert!(audit.contains("interrupt emergency: "), "{audit}");
    assert!(
        audit.contains(" emergency found in a public repo"),
        "{audit}"
    );
    for old in [&first, &second] {
        let fingerprint = rotor.shown_fingerprint(&old.fingerprint());
        assert!(audit.contains(&format!("retired {fingerprint}")), "{audit}");
    }
}

#[test]
fn an_emergency_in_grace_retires_both_postgres_passwords() {
    emergency_in_grace(Provider::Postgres, "emergency_pg");
}

#[test]
fn an_emergency_in_grace_locks_both_old_mariadb_accounts() {
    emergency_in_grace(Provider::Mysql, "emergency_mysql");
}

#[test]
fn an_emergency_in_grace_leaves_only_the_fresh_ssh_key_on_the_host() {
    emergency_in_grace(Provider::Ssh, "emergency_ssh");
}

#[test]
fn an_emergency_in_grace_leaves_the_redis_user_one_password() {
    emergency_in_grace(Provider::Redis, "emergency_redis");
}

#[test]
fn an_emergency_in_grace_leaves_neither_alternating_redis_user_the_old_password() {
    emergency_in_grace(Provider::RedisAlternating, "emergency_redis_alt");
}

#[test]
fn an_emergency_in_grace_deletes_the_iam_key_at_once() {
    emergency_in_grace(Provider::Iam, "emergency_iam");
}

#[test]
fn an_emergency_in_grace_of_a_saas_api_key() {
    emergency_in_grace(Provider::Http, "emergency_http");
}

#[test]
fn an_emergency_in_grace_of_each_github_kind() {
    for provider in [
        Provider::GithubDeployKey,
        Provider::GithubWebhook,
        Provider::GithubAppToken,
    ] {
        emergency_in_grace(provider, "emergency_gh");
    }
}

/// Every audit row as `actor action detail` lines, read from the store.
pub fn audit_text(rotor: &Rotor) -> String {
    use sqlx::Connection;
    providers::block_on(async {
        let mut db = sqlx::SqliteConnection::connect(&rotor.store_url())
            .await
            .unwrap();
        let rows: Vec<(String, String, String)> =
            sqlx::query_as("SELECT actor, action, detail FROM audit ORDER BY seq")
                .fetch_all(&mut db)
                .await
                .unwrap();
        rows.iter()
            .map(|(actor, action, detail)| format!("{actor} {action} {detail}\n"))
            .collect()
    })
}

/// A daemon whose verify hangs (paused at a failpoint, its heartbeat still renewing its
/// lease) is preempted: the interruption stops its heartbeats, its lease runs out, and the
/// emergency rolls its candidate back and rotates.
#[cfg(feature = "failpoints")]
#[test]
fn an_emergency_preempts_a_daemon_hung_in_verify() {
    let rotor = Rotor::new("");
    let fixture = providers::setup(Provider::Postgres, "emergency_hung", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("1h", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let first = current(&rotor);
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    let mut cmd = rotor.command(&["run", "--poll", "1s", "--lease", "3s"]);
    cmd.env("ROTOR_FAILPOINT", "verify:before");
    let (hung, _) = spawn_until(cmd, "FAILPOINT verify:before", Duration::from_secs(30))
        .expect("the daemon reaches verify");
    let hung = Daemon(hung);

    let started = Instant::now();
    let out = rotor.run(&["rotate", "app/key0", "--emergency", "--reason", "leak"]);
    eprintln!(
        "rotate --emergency past a hung verify took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rolled_back first"), "{stdout}");
    drop(hung);

    let fresh = current(&rotor);
    fixture.check_rotated(&fresh, &first);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let states: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        ["completed", "rolled_back", "completed"],
        "{history}"
    );
}

/// `rotate --emergency --select` over idle credentials starts their runs a batch at a time,
/// in one transaction for many; the credential whose run is live has that run interrupted
/// first, on its own. Every one ends on a fresh version with nothing older in the vault, and
/// the audit chain holds.
#[test]
fn an_emergency_over_idle_credentials_starts_them_together_and_interrupts_the_live_one() {
    let rotor = Rotor::new(&crate::support::generated_config(10, "1h"));
    rotor.ok(&["run", "--once"]);
    let value = |i: usize| {
        read_document(&rotor, &format!("app/key{i}"))["value"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let exposed: Vec<String> = (0..10).map(value).collect();
    // Planned and not driven (no daemon): a live run in the emergency's way.
    rotor.ok(&["rotate", "app/key3", "--no-wait"]);

    let out = rotor.run(&[
        "rotate",
        "--select",
        "app/*",
        "--emergency",
        "--parallel",
        "4",
        "--reason",
        "leaked in a public repository",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{out:?}");
    assert!(stdout.contains("10 of 10 credentials rotated"), "{stdout}");
    for (i, old) in exposed.iter().enumerate() {
        let id = format!("app/key{i}");
        let document = read_document(&rotor, &id);
        assert_ne!(document["value"].as_str(), Some(old.as_str()), "{id}");
        assert!(document.get("previous").is_none(), "{id}: {document}");
        let history = rotor.json(&["history", &id, "--json"]);
        let runs = history.as_array().unwrap();
        assert_eq!(runs[0]["reason"], "emergency", "{id}");
        assert_eq!(runs[0]["state"], "completed", "{id}");
        let interrupted = runs.iter().filter(|r| r["state"] == "rolled_back").count();
        assert_eq!(interrupted, usize::from(i == 3), "{id}: {history}");
    }
    rotor.ok(&["audit", "verify"]);
}
