//! `rotor validate`: every broken schedule in the corpus gives its exact position and exit 3.

use std::path::PathBuf;

use crate::support::Rotor;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn each_broken_schedule_names_file_line_column_and_exits_3() {
    let rotor = Rotor::new("");
    let files = fixtures();
    assert!(files.len() >= 15, "the corpus covers every error class");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        let out = rotor.run(&["validate", file.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{}: {stderr}", file.display());
        for e in &expected {
            let line = format!("{}:{e}", file.display());
            assert!(
                stderr.contains(&line),
                "{}: expected {line:?} in:\n{stderr}",
                file.display()
            );
        }
        assert_eq!(
            stderr
                .lines()
                .filter(|l| l.starts_with(&*file.to_string_lossy()))
                .count(),
            expected.len().max(if file.ends_with("syntax-error.toml") {
                2
            } else {
                0
            }),
            "{}: exactly the expected problems:\n{stderr}",
            file.display()
        );
        assert!(
            stderr.contains(" | ") && stderr.contains('^'),
            "source line and caret shown:\n{stderr}"
        );
        assert!(
            !stderr.contains("LITERALSECRETDONOTPRINT"),
            "a literal secret is never echoed:\n{stderr}"
        );
    }
}

#[test]
fn the_repository_schedules_validate_and_the_schema_is_json() {
    let rotor = Rotor::new("");
    let schedules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schedules");
    let out = rotor.ok(&["validate", schedules.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    let schema = rotor.json(&["schema"]);
    assert!(
        schema
            .pointer("/$defs/CredentialConfig/properties/rotator")
            .is_some()
    );
    assert!(schema.pointer("/properties/credential").is_some());
}

#[test]
fn a_missing_config_is_a_config_error() {
    let rotor = Rotor::new("");
    let out = rotor.run(&["validate", "/nonexistent/rotor.toml"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("/nonexistent/rotor.toml:1:1: cannot read config file")
    );
}

#[test]
fn a_credential_without_a_maximum_age_is_warned_of_and_every_other_has_a_deadline() {
    let config = crate::generated_config(2, "1h").replacen(
        "schedule = { every = \"30d\" }",
        "schedule = { every = \"30d\" }\nmax_age = \"none\"\nmax_age_reason = \"break-glass key kept offline\"",
        1,
    );
    let rotor = Rotor::new(&config);
    let out = rotor.ok(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("`app/key0` has no maximum age")
            && stderr.contains("break-glass key kept offline"),
        "{stderr}"
    );
    rotor.ok(&["rotate", "app/key1"]);
    let plan = rotor.json(&["plan", "--json"]);
    let entry = |id: &str| {
        plan.as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == id)
            .unwrap()
            .clone()
    };
    assert!(entry("app/key0")["max_age"].is_null());
    assert!(entry("app/key0")["max_age_deadline"].is_null());
    // The default: twice the schedule's period, counted from the current version.
    assert_eq!(entry("app/key1")["max_age"], "60d");
    let status = rotor.json(&["status", "app/key1", "--json"]);
    let since =
        chrono::DateTime::parse_from_rfc3339(status[0]["last_success_at"].as_str().unwrap())
            .unwrap();
    let deadline = chrono::DateTime::parse_from_rfc3339(
        entry("app/key1")["max_age_deadline"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!((deadline - since).num_days(), 60);
    assert_eq!(
        status[0]["max_age_deadline"],
        entry("app/key1")["max_age_deadline"]
    );
}

#[test]
fn a_fifo_is_refused_not_read_forever() {
    let rotor = Rotor::new(&crate::generated_config(1, "1h"));
    let fifo = rotor.path("schedules.toml");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let mut child = rotor
        .command(&["validate", fifo.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("validate hangs on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

#[test]
fn a_store_url_with_a_password_is_refused_on_the_command_line_and_in_the_environment() {
    let rotor = Rotor::new(&crate::generated_config(1, "1h"));
    let url = "postgres://rotor:hunter2-secret@127.0.0.1:1/rotor";
    let flag = rotor.run(&["--database", url, "status"]);
    let env = rotor
        .command(&["status"])
        .env("ROTOR_DATABASE_URL", url)
        .output()
        .unwrap();
    for out in [flag, env] {
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("holds a password"), "{stderr}");
        assert!(!stderr.contains("hunter2"), "{stderr}");
    }
}

#[test]
fn an_insecure_transport_written_on_its_block_is_allowed_with_a_warning() {
    let config = crate::generated_config(1, "1h").replace(
        "rotator = { kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }",
        "rotator = { kind = \"redis_acl_password\", url = \"redis://cache.internal:6379\", user = \"app\", insecure_transport = true }",
    );
    let rotor = Rotor::new(&config);
    let out = rotor.ok(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: ")
            && stderr.contains("`url` plaintext redis://: use rediss:// (TLS); allowed by insecure_transport = true"),
        "{stderr}"
    );
    let without = config.replace(", insecure_transport = true", "");
    std::fs::write(&rotor.config, without).unwrap();
    let out = rotor.run(&["validate"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("or write `insecure_transport = true`"));
}

#[test]
fn a_store_url_without_verified_tls_is_refused_on_the_command_line() {
    let rotor = Rotor::new(&crate::generated_config(1, "1h"));
    let out = rotor.run(&[
        "--database",
        "postgres://rotor@db.example:5432/rotor",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no sslmode") && stderr.contains("insecure_transport"),
        "{stderr}"
    );
}

/// Finds the 1-based line and column of `needle` in `text`, as the loader reports positions.
fn position_of(text: &str, needle: &str) -> String {
    let at = text.find(needle).expect("needle in config");
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |n| n + 1) + 1;
    format!("{line}:{column}")
}

#[test]
fn a_plaintext_url_is_reported_at_the_value_not_at_its_table() {
    let config = crate::generated_config(1, "1h")
        .replace(
            "[alerts.log]\nkind = \"log\"",
            "[alerts.log]\nkind = \"log\"\n\n[alerts.pager]\nkind = \"webhook\"\nunsigned = true\nurl = \"http://alerts.example/hook\"",
        )
        .replace(
            "rotator = { kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }",
            "rotator = { kind = \"redis_acl_password\", user = \"app\", url = \"redis://cache.internal:6379\" }",
        );
    let rotor = Rotor::new(&config);
    let out = rotor.run(&["validate"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for value in [
        "\"http://alerts.example/hook\"",
        "\"redis://cache.internal:6379\"",
    ] {
        let at = format!("rotor.toml:{}", position_of(&config, value));
        assert!(
            stderr.contains(&at),
            "expected an error at {at} ({value}):\n{stderr}"
        );
    }
}

#[test]
fn a_grace_shorter_than_twice_the_external_secrets_refresh_is_warned_of_where_it_is_declared() {
    let declared = |grace: &str| {
        crate::generated_config(1, grace).replacen(
            "schedule = { every = \"30d\" }",
            "schedule = { every = \"30d\" }\nconsumers = \"external-secrets\"\nrefresh_interval = \"1h\"",
            1,
        )
    };
    let rotor = Rotor::new(&declared("90m"));
    let out = rotor.ok(&["validate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:18:13: `app/key0`: the External Secrets Operator copies it every 1h, but its grace is 1h30m", rotor.config.display()))
            && stderr.contains("make grace at least 2h"),
        "{stderr}"
    );
    let rotor = Rotor::new(&declared("2h"));
    let out = rotor.ok(&["validate"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("External Secrets"),
        "{out:?}"
    );
}

/// `rotor policy ID` says what each rotator's `verify` proves and cannot, and the README's
/// table says the same: every kind in the repository's schedules is checked against it.
#[test]
fn policy_and_readme_say_the_same_of_what_verify_proves() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let config = rotor::config::load(&[root.join("schedules")]).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for credential in &config.credentials {
        let settings = credential.rotator.settings();
        let v = settings.verification();
        let row = format!("| {} | {} |", v.proves, v.cannot);
        assert!(
            readme.contains(&row),
            "{}: the README's verify table lacks {row}",
            credential.id
        );
        kinds.insert(credential.rotator.kind());
    }
    let all: std::collections::BTreeSet<_> =
        <rotor_rotators::RotatorConfig as rotor_rotators::kinds::Kinds>::KINDS
            .iter()
            .copied()
            .collect();
    assert_eq!(
        kinds, all,
        "the schedules hold an example of every rotator kind"
    );

    let mut rotor = Rotor::new("");
    rotor.config = root.join("schedules");
    let out = rotor.ok(&["policy", "cache/sessions"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("# What `verify` proves before the new credential is promoted: `AUTH` as the user with the new password")
            && text.contains("# Evidence of use, for `retire_when = \"unused\"`: connections of the old ACL user in CLIENT LIST"),
        "{text}"
    );
}
