//! The audit log against a writer of the store: anchors kept outside it find a cut tail and a
//! wiped log; on PostgreSQL, rotor runs with a role that may append audit rows and nothing
//! more. (A chain recomputed without the key: `tests/store.rs`.)

use crate::rotation::sqlite;
use crate::support::{Rotor, generated_config};

fn anchored_config() -> String {
    format!(
        "{}\n[store]\nanchor_file = \"anchors\"\n",
        generated_config(1, "0s")
    )
}

#[test]
fn anchors_kept_outside_the_store_find_a_cut_tail_and_a_wiped_log() {
    let rotor = Rotor::new(&anchored_config());
    for _ in 0..3 {
        rotor.ok(&["rotate", "app/key0"]);
    }
    let out = rotor.ok(&["audit", "anchor"]);
    let anchor = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let (seq, _) = anchor.split_once(':').expect("SEQ:HASH");
    let seq: i64 = seq.parse().unwrap();
    assert!(seq > 5, "{anchor}");
    let kept = std::fs::read_to_string(rotor.path("anchors")).unwrap();
    assert!(kept.starts_with(&format!("{anchor} ")), "{kept}");
    let out = rotor.ok(&["audit", "verify"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 anchor(s) hold"),
        "{out:?}"
    );
    let db = rotor.path("rotor.db");
    let saved = std::fs::read(&db).unwrap();

    // The last rows deleted and the head moved back onto the row before them: the chain is
    // whole, the anchor finds the cut.
    let hash_of = |seq: i64| {
        let out = std::process::Command::new("sqlite3")
            .arg(&db)
            .arg(format!("SELECT hash FROM audit WHERE seq = {seq}"))
            .output()
            .expect("sqlite3 (apt-get install -y sqlite3)");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let back = seq - 3;
    let back_hash = hash_of(back);
    sqlite(
        &db,
        &format!(
            "DELETE FROM audit WHERE seq > {back}; UPDATE audit_head SET seq = {back}, hash = '{back_hash}'"
        ),
    );
    let out = rotor.run(&[
        "audit",
        "verify",
        "--anchor",
        "1:0000000000000000000000000000000000000000000000000000000000000000",
    ]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "a wrong anchor is found too: {out:?}"
    );
    let plain = rotor.run(&["audit", "verify"]);
    assert_eq!(plain.status.code(), Some(4), "{plain:?}");
    let stderr = String::from_utf8_lossy(&plain.stderr);
    assert!(
        stderr.contains("rows were removed from the end"),
        "{stderr}"
    );

    // The whole log wiped and the head reset to the start.
    std::fs::write(&db, &saved).unwrap();
    for side in ["rotor.db-wal", "rotor.db-shm"] {
        let _ = std::fs::remove_file(rotor.path(side));
    }
    rotor.ok(&["audit", "verify"]);
    sqlite(
        &db,
        "DELETE FROM audit; UPDATE audit_head SET seq = 0, hash = '0000000000000000000000000000000000000000000000000000000000000000'",
    );
    let wiped = rotor.run(&[
        "audit",
        "verify",
        "--anchors-from",
        rotor.path("anchors").to_str().unwrap(),
    ]);
    assert_eq!(wiped.status.code(), Some(4), "{wiped:?}");
    assert!(
        String::from_utf8_lossy(&wiped.stderr).contains("ends at row 0"),
        "{wiped:?}"
    );
}

/// rotor's replicas run as a role with exactly the grants `rotor policy --store` prints: they
/// rotate and verify the log, and that role cannot change or delete an audit row.
#[test]
fn on_postgresql_the_runtime_role_appends_audit_rows_and_cannot_change_them() {
    let server = crate::support::postgres::shared();
    let db = format!("grants_{}", std::process::id());
    let mut rotor = Rotor::new(&generated_config(1, "0s"));
    let owner_url = server.database(&db);
    rotor.use_postgres(owner_url.clone());
    rotor.ok(&["status"]); // the owner migrates

    let role = format!("rotor_runtime_{}", std::process::id());
    let password = format!("pw-{}", hex::encode(rand::random::<[u8; 12]>()));
    server.psql(
        &db,
        &format!("CREATE ROLE {role} LOGIN PASSWORD '{password}'"),
    );
    let grants = rotor.ok(&["policy", "--store", &role]);
    server.psql(&db, &String::from_utf8_lossy(&grants.stdout));
    std::fs::write(rotor.path("runtime-password"), &password).unwrap();
    let mut config = std::fs::read_to_string(&rotor.config).unwrap();
    config.push_str(&format!(
        "password = {{ file = \"{}\" }}\n",
        rotor.path("runtime-password").display()
    ));
    std::fs::write(&rotor.config, config).unwrap();
    rotor.database = Some(owner_url.replace("postgres://rotor@", &format!("postgres://{role}@")));

    rotor.ok(&["rotate", "app/key0"]);
    rotor.ok(&["rotate", "app/key0"]);
    rotor.ok(&["run", "--once"]);
    rotor.ok(&["audit", "verify"]);

    let as_runtime = |sql: &str| {
        std::process::Command::new("psql")
            .env("PGPASSWORD", &password)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &server.port.to_string(),
                "-U",
                &role,
                "-d",
                &db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
            .output()
            .unwrap()
    };
    assert!(as_runtime("SELECT COUNT(*) FROM audit").status.success());
    for sql in [
        "UPDATE audit SET detail = 'rewritten' WHERE seq = 1",
        "DELETE FROM audit WHERE seq = 1",
        "TRUNCATE audit",
    ] {
        let out = as_runtime(sql);
        assert!(!out.status.success(), "{sql} was allowed");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("permission denied"),
            "{sql}: {out:?}"
        );
    }
}
