//! Credentials rotated by hand (`manual` rotator) through the binary: rotor never rotates them,
//! `rotor confirm` records who rotated one (audited) and restarts its age, and `plan` and
//! `status` tell which credentials rotate automatically and which by hand.

use crate::generated_config;
use crate::support::Rotor;

fn config() -> String {
    generated_config(1, "0s")
        + r#"
[[credential]]
id = "github/pat"
description = "A personal access token; GitHub has no API to rotate it"
schedule = { manual = true }
max_age = "90d"
vault = { name = "local", path = "github/pat" }
rotator = { kind = "manual", remind_before = "14d", instructions = "https://github.com/settings/tokens" }
"#
}

#[test]
fn confirm_records_a_rotation_by_hand_and_the_inventory_shows_it() {
    let rotor = Rotor::new(&config());
    rotor.ok(&["run", "--once"]);
    let plan = rotor.json(&["plan", "--json"]);
    let entry = |id: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(entry("github/pat")["rotation"], "by_hand");
    assert_eq!(entry("github/pat")["reason"], "by_hand");
    assert!(entry("github/pat")["next_due_at"].is_string(), "{plan}");
    assert_eq!(entry("app/key0")["rotation"], "automatic");
    // The daemon rotated the generated one and left the manual one alone.
    assert!(rotor.path("vault/app/key0.age").exists());
    assert!(!rotor.path("vault/github/pat.age").exists());

    let out = rotor.run(&["rotate", "github/pat"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rotor confirm github/pat"),
        "{out:?}"
    );
    let out = rotor.run(&["confirm", "app/key0"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");

    let out = rotor.ok_with_env(
        &[
            "confirm",
            "github/pat",
            "--expires-at",
            "2099-01-01T00:00:00Z",
            "--note",
            "CHG-1234",
        ],
        &[("USER", "alice"), ("SUDO_USER", "")],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("expires at 2099-01-01T00:00:00Z"),
        "{out:?}"
    );
    let status = rotor.json(&["status", "github/pat", "--json"]);
    assert_eq!(status[0]["rotation"], "by_hand");
    assert_eq!(status[0]["next_due_at"], "2099-01-01T00:00:00Z");
    assert!(status[0]["age_seconds"].as_i64().unwrap() < 60);
    let text = String::from_utf8_lossy(&rotor.ok(&["status"]).stdout).to_string();
    assert!(
        text.contains("by_hand") && text.contains("automatic"),
        "{text}"
    );
    rotor.ok(&["audit", "verify"]);
    let db = std::fs::read(rotor.path("rotor.db")).unwrap();
    let db = String::from_utf8_lossy(&db);
    assert!(
        db.contains("confirmed by cli:") && db.contains("CHG-1234"),
        "the audit log keeps who confirmed it"
    );
    // The name comes from the environment; the uid beside it from the kernel.
    let uid = format!("(uid {})", rustix::process::getuid().as_raw());
    assert!(db.contains(&uid), "the audit log names the real uid");

    let out = rotor.run(&[
        "confirm",
        "github/pat",
        "--expires-at",
        "2001-01-01T00:00:00Z",
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an expiry in the past is refused: {out:?}"
    );
}

#[test]
fn a_manual_credential_needs_a_manual_schedule_and_a_deadline() {
    let rotor = Rotor::new(&config().replace(
        "schedule = { manual = true }",
        "schedule = { every = \"30d\" }",
    ));
    let out = rotor.run(&["validate"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("write `schedule = { manual = true }`"),
        "{out:?}"
    );
    let rotor = Rotor::new(&config().replace("max_age = \"90d\"\n", ""));
    let out = rotor.run(&["validate"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("neither `max_age` nor `rotator.expires_at`"),
        "{out:?}"
    );
}
