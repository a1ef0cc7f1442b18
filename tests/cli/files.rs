//! Files rotor makes are its user's alone, whatever the umask; a link planted where rotor
//! writes is never followed; processes starting together on an empty vault folder share one
//! identity, so every file they write stays readable.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

use crate::generated_config;
use crate::rotation::read_document;
use crate::support::Rotor;

/// `rotor ARGS` in the rotor's folder under umask 000.
fn under_umask_000(rotor: &Rotor, args: &[&str]) -> Output {
    Command::new("sh")
        .current_dir(rotor.dir.path())
        .args(["-c", "umask 000 && exec \"$@\"", "sh"])
        .arg(env!("CARGO_BIN_EXE_rotor"))
        .arg("--config")
        .arg(&rotor.config)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("ROTOR_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn mode(rotor: &Rotor, rel: &str) -> u32 {
    std::fs::metadata(rotor.path(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn under_umask_000_the_store_vault_identity_and_report_are_private() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    let out = under_umask_000(&rotor, &["rotate", "app/key0"]);
    assert!(out.status.success(), "{out:?}");
    let out = under_umask_000(&rotor, &["drill", "--dry-run", "--report", "drill.md"]);
    assert!(out.status.success(), "{out:?}");
    for (file, wanted) in [
        ("vault", 0o700),
        ("vault/app", 0o700),
        ("vault/app/key0.age", 0o600),
        ("vault.key", 0o600),
        ("rotor.db", 0o600),
        ("drill.md", 0o600),
    ] {
        assert_eq!(
            mode(&rotor, file),
            wanted,
            "{file}: {:o}",
            mode(&rotor, file)
        );
    }
    for optional in ["rotor.db-wal", "rotor.db-shm"] {
        if rotor.path(optional).exists() {
            assert_eq!(mode(&rotor, optional), 0o600, "{optional}");
        }
    }
}

#[test]
fn a_link_planted_at_a_temporary_file_name_is_not_followed() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    rotor.ok(&["rotate", "app/key0"]);
    let victim = rotor.path("victim.txt");
    std::fs::write(&victim, "unrelated file").unwrap();
    // The reproduction: links at the names the next processes used to write through.
    let next = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .unwrap_or(std::process::id());
    for pid in next + 1..next + 400 {
        let link = rotor.path(&format!("vault/app/.key0.age.tmp-{pid}"));
        std::os::unix::fs::symlink(&victim, link).unwrap();
    }
    rotor.ok(&["rotate", "app/key0"]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "unrelated file");
    assert!(
        std::fs::symlink_metadata(rotor.path("vault/app/key0.age"))
            .unwrap()
            .file_type()
            .is_file(),
        "the vault file is a file, not a link"
    );
    assert_eq!(read_document(&rotor, "app/key0")["_rotor"]["version"], "2");
}

#[test]
fn processes_starting_together_on_an_empty_vault_share_one_identity() {
    for round in 0..10 {
        let rotor = Rotor::new(&generated_config(3, "0s"));
        let children: Vec<_> = (0..3)
            .map(|_| {
                rotor
                    .command(&["run", "--once"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for id in ["app/key0", "app/key1", "app/key2"] {
            // Decrypts with the identity left on disk, or panics naming age's error.
            let doc = read_document(&rotor, id);
            assert!(doc["value"].is_string(), "round {round}: {id}");
        }
    }
}

#[test]
fn an_empty_or_foreign_store_file_is_refused_with_exit_5_and_left_as_it_is() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    let store = rotor.path("rotor.db");
    std::fs::write(&store, b"").unwrap();
    let out = rotor.run(&["status"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("an empty file (0 bytes)") && stderr.contains("--init"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::metadata(&store).unwrap().len(),
        0,
        "nothing written"
    );
    rotor.ok(&["--init", "status"]);
    assert!(std::fs::metadata(&store).unwrap().len() > 0, "a new store");

    let foreign = "this is somebody's notes, not a database\n".repeat(200);
    std::fs::write(&store, &foreign).unwrap();
    for wal in ["rotor.db-wal", "rotor.db-shm"] {
        let _ = std::fs::remove_file(rotor.path(wal));
    }
    let out = rotor.run(&["status"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a SQLite database") && stderr.contains("Restore it from a backup"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(&store).unwrap(),
        foreign,
        "left as it is"
    );
}
