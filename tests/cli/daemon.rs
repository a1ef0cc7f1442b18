//! The daemon as a service manager runs it: SIGTERM finishes the step in flight, releases
//! leases and exits 0; SIGHUP reloads config; a PostgreSQL store works like SQLite.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::generated_config;
use crate::rotation::read_document;
use crate::support::{Rotor, spawn_until};

fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "rotor did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_cleanly_and_sighup_reloads_config() {
    let rotor = Rotor::new(&generated_config(1, "1h"));
    let cmd = rotor.command(&["run", "--poll", "1s"]);
    let (mut child, _) =
        spawn_until(cmd, "step=promote", Duration::from_secs(60)).expect("first rotation");

    // A new credential appears in config: SIGHUP makes the running daemon rotate it.
    std::fs::write(&rotor.config, generated_config(2, "1h")).unwrap();
    signal(&child, "HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !rotor.path("vault/app/key1.age").exists() {
        assert!(
            Instant::now() < deadline,
            "the reloaded credential was not rotated"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(read_document(&rotor, "app/key1")["value"].is_string());

    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    // Both were first versions: they replaced nothing, so their runs completed at promotion
    // and nothing is left leased or live.
    let url = rotor.store_url();
    let runs = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = rotor::store::Store::connect(&url, None).await.unwrap();
            store.live_runs().await.unwrap()
        });
    assert!(runs.is_empty(), "{runs:?}");
    for id in ["app/key0", "app/key1"] {
        assert_eq!(
            rotor.json(&["history", id, "--json"])[0]["state"],
            "completed"
        );
    }
}

#[test]
fn the_same_rotation_works_on_a_postgresql_store() {
    let mut rotor = Rotor::new(&generated_config(2, "1s"));
    let name = format!("cli_{}", std::process::id());
    rotor.use_postgres(crate::support::postgres::shared().database(&name));
    rotor.ok(&["run", "--once"]);
    std::thread::sleep(Duration::from_millis(1100));
    rotor.ok(&["run", "--once"]);
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let status = rotor.json(&["status", "--json"]);
    let versions: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["current_version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["2", "1"]);
    assert!(
        status
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "idle"),
        "{status}"
    );
    assert_eq!(read_document(&rotor, "app/key0")["_rotor"]["version"], "2");
    rotor.ok(&["audit", "verify"]);
    let history = rotor.json(&["history", "--json"]);
    assert_eq!(history.as_array().unwrap().len(), 3);
}

#[test]
fn an_idle_replica_on_postgresql_is_woken_by_a_requested_rotation() {
    let mut rotor = Rotor::new(&generated_config(1, "0s"));
    let name = format!("wake_{}", std::process::id());
    rotor.use_postgres(crate::support::postgres::shared().database(&name));
    rotor.ok(&["run", "--once"]);
    // Nothing is due for 30 days and the daemon polls every 10 minutes: only the NOTIFY that
    // `rotor rotate --no-wait` sends can make it rotate within the deadline below.
    let (mut child, _) = spawn_until(
        rotor.command(&["run", "--poll", "10m"]),
        "rotor started",
        Duration::from_secs(30),
    )
    .expect("the daemon starts");
    std::thread::sleep(Duration::from_millis(500));
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let history = rotor.json(&["history", "app/key0", "--json"]);
        if history.as_array().unwrap().len() == 2 && history[0]["state"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the idle daemon was not woken: {history}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}

/// The store over TLS verified against the operator's CA (`sslmode=verify-full` with
/// `sslrootcert`): rotor works; the same URL without the CA is refused (exit 5), so the
/// server's certificate really is checked.
#[test]
fn a_postgresql_store_over_tls_is_verified_against_the_operators_ca() {
    let (server, ca) = crate::support::postgres::dedicated_tls();
    let mut rotor = Rotor::new(&generated_config(1, "0s"));
    let plain = server.database("tls_store");
    let verified = format!("{plain}?sslmode=verify-full&sslrootcert={}", ca.display());
    rotor.use_postgres(verified);
    rotor.ok(&["rotate", "app/key0"]);
    rotor.ok(&["audit", "verify"]);
    rotor.database = Some(format!("{plain}?sslmode=verify-full"));
    let out = rotor.run(&["status"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.to_lowercase().contains("certificate") || stderr.contains("UnknownIssuer"),
        "{stderr}"
    );
}
