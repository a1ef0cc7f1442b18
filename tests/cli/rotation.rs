//! Whole rotations through the binary on the embedded default: SQLite store, file vault,
//! `generated` rotator. Vault files are read back with the stock `age` tool.

use std::process::Command;
use std::time::Duration;

use crate::generated_config;
use crate::support::{Rotor, require_program};

/// The document consumers read, decrypted by the stock `age` tool with the vault's identity.
pub fn read_document(rotor: &Rotor, path: &str) -> serde_json::Value {
    let age = require_program("age", "apt-get install -y age");
    let out = Command::new(age)
        .args(["-d", "-i"])
        .arg(rotor.path("vault.key"))
        .arg(rotor.path(&format!("vault/{path}.age")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "age -d failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the document is JSON")
}

fn status_of<'a>(status: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    status
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap()
}

/// `rotor status` reads the store a page of 1,000 credentials at a time: every credential is
/// listed once, in id order, across the pages' edges.
#[test]
fn status_lists_every_credential_once_in_id_order_across_pages() {
    let rotor = Rotor::new(&generated_config(2_001, "1s"));
    // Pausing them all puts them in the store without rotating any.
    rotor.ok(&["pause", "--select", "app/*", "--reason", "listing"]);
    let status = rotor.json(&["status", "--json"]);
    let ids: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    let mut expected: Vec<String> = (0..2_001).map(|i| format!("app/key{i}")).collect();
    expected.sort();
    assert_eq!(ids, expected);
    assert_eq!(status[2_000]["paused"]["reason"], "listing");

    let out = rotor.ok(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let rows = table.lines().filter(|l| l.starts_with("app/key")).count();
    // Each row of the table, and each paused credential again under NEXT.
    assert_eq!(rows, 2 * 2_001, "{table}");
}

#[test]
fn plan_lists_every_configured_credential_once_soonest_first_across_pages() {
    let rotor = Rotor::new(&generated_config(2_001, "1s"));
    // Into the store without rotating: each is due now, its first version not yet minted.
    rotor.ok(&["pause", "--select", "app/*", "--reason", "listing"]);
    rotor.ok(&["resume", "app/key3"]);
    rotor.ok(&["rotate", "app/key3"]);
    // Then app/key7 leaves the config (its row stays) and app/new joins it (no row yet).
    let config = generated_config(2_001, "1s").replace(
        "id = \"app/key7\"\nschedule = { every = \"30d\" }\nvault = { name = \"local\", path = \"app/key7\" }",
        "id = \"app/new\"\nschedule = { every = \"30d\" }\nvault = { name = \"local\", path = \"app/new\" }",
    );
    std::fs::write(&rotor.config, config).unwrap();

    let plan = rotor.json(&["plan", "--json"]);
    let entries = plan.as_array().unwrap();
    let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut expected: Vec<String> = (0..2_001)
        .filter(|&i| i != 7)
        .map(|i| format!("app/key{i}"))
        .chain(["app/new".to_owned()])
        .collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    expected.sort();
    assert_eq!(sorted_ids, expected, "each configured credential once");
    let due = |e: &serde_json::Value| {
        let at = e["next_due_at"].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(at).unwrap()
    };
    for pair in entries.windows(2) {
        let key = |e: &serde_json::Value| (due(e), e["id"].as_str().unwrap().to_owned());
        assert!(
            key(&pair[0]) <= key(&pair[1]),
            "{} before {}",
            pair[0],
            pair[1]
        );
    }
    // The one rotated is due in 30 days, after all those waiting for their first version.
    assert_eq!(ids.last(), Some(&"app/key3"));
    assert!(due(&entries[2_000]) > due(&entries[0]) + chrono::Duration::days(29));

    let out = rotor.ok(&["plan"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(rows, ids, "the table lists in the same order");
}

#[test]
fn first_run_mints_then_rotations_overlap_and_retire_after_grace() {
    let rotor = Rotor::new(&generated_config(3, "1s"));
    rotor.ok(&["run", "--once"]);
    let status = rotor.json(&["status", "--json"]);
    for i in 0..3 {
        let s = status_of(&status, &format!("app/key{i}"));
        // A first version replaced nothing: its run completes at promotion, no grace held.
        assert_eq!(s["state"], "idle", "{s}");
        assert_eq!(s["current_version"], "1");
        assert!(
            s["current_fingerprint"]
                .as_str()
                .unwrap()
                .starts_with("hmac-sha256:")
        );
    }
    let first = read_document(&rotor, "app/key0");
    let v1 = first["value"].as_str().unwrap().to_owned();
    assert_eq!(v1.len(), 40);
    assert!(v1.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(first["_rotor"]["version"], "1");
    assert!(!rotor.path("vault/app/key0.age.pending").exists());

    std::thread::sleep(Duration::from_millis(1100));
    rotor.ok(&["run", "--once"]);
    let status = rotor.json(&["status", "--json"]);
    assert_eq!(status_of(&status, "app/key0")["state"], "idle");

    // A manual rotation: the new value is current, the old one stays beside it during grace.
    let out = rotor.ok(&["rotate", "app/key0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("promoted"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let during = read_document(&rotor, "app/key0");
    let v2 = during["value"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    assert_eq!(during["previous"]["value"], v1.as_str());
    assert_eq!(during["_rotor"]["version"], "2");
    assert_eq!(
        status_of(&rotor.json(&["status", "--json"]), "app/key0")["state"],
        "grace"
    );

    // Not yet: grace has not elapsed, so the previous credential is still there.
    rotor.ok(&["run", "--once"]);
    assert_eq!(
        read_document(&rotor, "app/key0")["previous"]["value"],
        v1.as_str()
    );
    std::thread::sleep(Duration::from_millis(1100));
    rotor.ok(&["run", "--once"]);
    let after = read_document(&rotor, "app/key0");
    assert_eq!(after["value"], v2.as_str());
    assert!(
        after.get("previous").is_none(),
        "previous retired after grace: {after}"
    );

    let history = rotor.json(&["history", "app/key0", "--json"]);
    let runs = history.as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["state"], "completed");
    assert_eq!(runs[0]["reason"], "manual");
    let steps: Vec<&str> = runs[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["mint", "apply", "verify", "promote", "grace", "retire"]
    );
    rotor.ok(&["audit", "verify"]);
}

#[test]
fn emergency_rotation_retires_the_old_credential_at_once() {
    let rotor = Rotor::new(&generated_config(1, "24h"));
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let v1 = read_document(&rotor, "app/key0")["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = rotor.ok(&["rotate", "app/key0", "--emergency"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("completed"));
    let doc = read_document(&rotor, "app/key0");
    assert_ne!(doc["value"], v1.as_str());
    assert!(doc.get("previous").is_none(), "{doc}");
    // A second rotation while one is live is refused with a usage error.
    let rotor = Rotor::new(&generated_config(1, "24h"));
    rotor.ok(&["rotate", "app/key0", "--no-wait"]);
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("has a live run already"));
}

#[test]
fn a_corrupt_vault_file_rolls_back_with_a_clear_error_and_is_left_alone() {
    let rotor = Rotor::new(&generated_config(1, "1s"));
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let file = rotor.path("vault/app/key0.age");
    std::fs::write(&file, b"age-encryption.org/v1\n-> garbage\n").unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("corrupt or was encrypted to another identity"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        b"age-encryption.org/v1\n-> garbage\n",
        "the file is untouched"
    );
    let status = rotor.json(&["status", "--json"]);
    assert!(
        status[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("mint failed"),
        "{status}"
    );
    let history = rotor.json(&["history", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back");
    assert!(!rotor.path("vault/app/key0.age.pending").exists());
}

/// Writes `document` as the vault file of `path`, encrypted by the stock `age` tool to the
/// vault's identity: what an operator editing the vault by hand would do.
fn write_document(rotor: &Rotor, path: &str, document: &serde_json::Value) {
    let keygen = require_program("age-keygen", "apt-get install -y age");
    let recipient = Command::new(keygen)
        .arg("-y")
        .arg(rotor.path("vault.key"))
        .output()
        .unwrap();
    assert!(recipient.status.success());
    let recipient = String::from_utf8(recipient.stdout).unwrap();
    let file = rotor.path(&format!("vault/{path}.age"));
    let plain = rotor.path("hand-edit.json");
    std::fs::write(&plain, document.to_string()).unwrap();
    let age = require_program("age", "apt-get install -y age");
    let out = Command::new(age)
        .args(["-e", "-r", recipient.trim(), "-o"])
        .arg(&file)
        .arg(&plain)
        .output()
        .unwrap();
    std::fs::remove_file(&plain).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_value_edited_by_hand_under_rotors_version_label_is_not_overwritten() {
    let rotor = Rotor::new(&generated_config(1, "1s"));
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let mut document = read_document(&rotor, "app/key0");
    document["value"] = "set-by-hand-during-an-outage".into();
    // The edit copies rotor's own label along, so the version alone says nothing changed.
    write_document(&rotor, "app/key0", &document);
    let file = rotor.path("vault/app/key0.age");
    let edited = std::fs::read(&file).unwrap();

    let out = rotor.run(&["rotate", "app/key0"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("holds version 1 with another value than the one rotor promoted"),
        "{stderr}"
    );
    assert!(stderr.contains("reconcile by hand"), "{stderr}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        edited,
        "the file is untouched"
    );
    assert_eq!(
        read_document(&rotor, "app/key0")["value"],
        "set-by-hand-during-an-outage"
    );
    assert_eq!(
        rotor.json(&["history", "--json"])[0]["state"],
        "rolled_back"
    );
}

#[test]
fn store_problems_exit_5_and_change_nothing() {
    let mut rotor = Rotor::new(&generated_config(1, "1s"));
    let port = crate::support::postgres::free_port();
    let url = format!("postgres://rotor@127.0.0.1:{port}/rotor");
    // Without the integrity key a PostgreSQL store needs, the config is what to fix (exit 3).
    let out = rotor.run(&["--database", &url, "status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[store] key = { file"));
    rotor.use_postgres(url);
    let out = rotor.run(&["status"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is unavailable"));
    rotor.database = None;

    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let db = rotor.path("rotor.db");
    sqlite(
        &db,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', 1, x'00', 1)",
    );
    let vault_before = std::fs::read(rotor.path("vault/app/key0.age")).unwrap();
    let out = rotor.run(&["run", "--once"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{stderr}");
    assert!(
        stderr.contains("schema version 9999") && stderr.contains("upgrade rotor"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(rotor.path("vault/app/key0.age")).unwrap(),
        vault_before
    );
}

#[test]
fn audit_verify_names_an_edited_row() {
    let rotor = Rotor::new(&generated_config(1, "1s"));
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    rotor.ok(&["audit", "verify"]);
    sqlite(
        &rotor.path("rotor.db"),
        "UPDATE audit SET actor = 'mallory' WHERE seq = 4",
    );
    let out = rotor.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit row 4 was modified"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs SQL on a SQLite store file with the sqlx driver rotor uses.
pub fn sqlite(db: &std::path::Path, sql: &str) {
    let url = format!("sqlite://{}", db.display());
    let sql = sql.to_owned();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async move {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut c)
                .await
                .unwrap();
        });
}

#[test]
fn a_transient_vault_error_is_retried_with_backoff_then_succeeds() {
    let rotor = Rotor::new(&generated_config(1, "0s"));
    // The pending file's place is taken by a folder: every write of it fails (a transient I/O
    // error, as a full disk would be).
    std::fs::create_dir_all(rotor.path("vault/app/key0.age.pending/blocked")).unwrap();
    rotor.ok(&["run", "--once"]);
    let history = rotor.json(&["history", "--json"]);
    assert_eq!(history[0]["state"], "planned", "{history}");
    assert_eq!(history[0]["steps"][0]["outcome"], "retry");
    assert!(
        history[0]["error"]
            .as_str()
            .unwrap()
            .contains("mint failed (attempt 1)"),
        "{history}"
    );
    let status = rotor.json(&["status", "--json"]);
    assert_eq!(status[0]["state"], "retrying");
    assert!(
        status[0]["next_action"]
            .as_str()
            .unwrap()
            .contains("retries mint by itself"),
        "{status}"
    );

    // The cause goes away; the persisted backoff (1-2 s here) passes; the run completes.
    std::fs::remove_dir_all(rotor.path("vault/app/key0.age.pending")).unwrap();
    let mut state = String::new();
    for _ in 0..40 {
        rotor.ok(&["run", "--once"]);
        state = rotor.json(&["history", "--json"])[0]["state"]
            .as_str()
            .unwrap()
            .to_owned();
        if state == "completed" {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(state, "completed");
    assert_eq!(read_document(&rotor, "app/key0")["_rotor"]["version"], "1");
}

#[test]
fn credentials_rotate_into_openbao_and_consumers_read_them_there() {
    let server = crate::support::openbao::shared();
    let mount = format!("cli{}", std::process::id());
    server.kv_mount(&mount, 2);
    let config = format!(
        r#"
[defaults]
grace = "1s"
[vaults.bao]
kind = "openbao"
address = "{address}"
mount = "{mount}"
auth = {{ method = "token", token = {{ env = "ROTOR_TEST_BAO_TOKEN" }} }}
[[credential]]
id = "payments/webhook"
schedule = {{ every = "30d" }}
vault = {{ name = "bao", path = "payments/webhook" }}
rotator = {{ kind = "generated", length = 40 }}
"#,
        address = server.address
    );
    let rotor = Rotor::new(&config);
    // rotor runs with exactly the policy `rotor policy` prints, not as root.
    let policy = rotor.ok(&["policy", "payments/webhook"]).stdout;
    std::fs::write(rotor.path("policy.hcl"), &policy).unwrap();
    let name = format!("rotor-{mount}");
    server.ok(&[
        "policy",
        "write",
        &name,
        rotor.path("policy.hcl").to_str().unwrap(),
    ]);
    let token = server.ok(&[
        "token", "create", "-policy", &name, "-ttl", "10m", "-field", "token",
    ]);
    let token = token.trim().to_owned();
    let run = |args: &[&str]| rotor.ok_with_env(args, &[("ROTOR_TEST_BAO_TOKEN", &token)]);
    let mut logs = Vec::new();
    logs.extend(run(&["--log", "trace", "run", "--once"]).stderr);
    let v1 = server.kv_get(&mount, "payments/webhook")["data"]["data"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    std::thread::sleep(Duration::from_millis(1100));
    logs.extend(run(&["--log", "trace", "run", "--once"]).stderr);
    logs.extend(run(&["--log", "trace", "rotate", "payments/webhook"]).stderr);
    let during = server.kv_get(&mount, "payments/webhook");
    let v2 = during["data"]["data"]["value"].as_str().unwrap().to_owned();
    assert_ne!(v1, v2);
    assert_eq!(
        during["data"]["data"]["previous"]["value"],
        v1.as_str(),
        "both secrets during grace"
    );
    std::thread::sleep(Duration::from_millis(1100));
    logs.extend(run(&["--log", "trace", "run", "--once"]).stderr);
    let after = server.kv_get(&mount, "payments/webhook");
    assert_eq!(after["data"]["data"]["value"], v2.as_str());
    let custom = &after["data"]["metadata"]["custom_metadata"];
    assert!(
        custom["rotor_run"]
            .as_str()
            .is_some_and(|r| r.starts_with("run_")),
        "the run id is recorded: {custom}"
    );
    assert_eq!(custom["rotor_stage"], "current");
    assert!(
        after["data"]["data"].get("previous").is_none(),
        "previous dropped after grace: {after}"
    );
    let status: serde_json::Value =
        serde_json::from_slice(&run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(
        status[0]["current_version"],
        after["data"]["metadata"]["version"].to_string().as_str(),
        "{status}"
    );
    assert_eq!(status[0]["state"], "idle");
    crate::support::assert_secrets_absent(&[v1.as_str(), v2.as_str()], &logs, rotor.dir.path());
}

#[test]
fn the_printed_openbao_policy_grants_nothing_beyond_the_credential() {
    let server = crate::support::openbao::shared();
    let mount = format!("pol{}", std::process::id());
    server.kv_mount(&mount, 2);
    server.ok(&[
        "kv",
        "put",
        &format!("-mount={mount}"),
        "payments/other",
        "value=not-rotors",
    ]);
    let config = format!(
        "[vaults.bao]\nkind = \"openbao\"\naddress = \"{}\"\nmount = \"{mount}\"\nauth = {{ method = \"token\", token = {{ env = \"T\" }} }}\n\
         [[credential]]\nid = \"payments/webhook\"\nschedule = {{ every = \"30d\" }}\nvault = {{ name = \"bao\", path = \"payments/webhook\" }}\nrotator = {{ kind = \"generated\" }}\n",
        server.address
    );
    let rotor = Rotor::new(&config);
    let policy = String::from_utf8(rotor.ok(&["policy", "payments/webhook"]).stdout).unwrap();
    assert!(
        policy.contains(&format!("path \"{mount}/data/payments/webhook\"")),
        "{policy}"
    );
    assert!(
        !policy.contains('*') && !policy.contains("+"),
        "no wildcard paths: {policy}"
    );
    std::fs::write(rotor.path("policy.hcl"), &policy).unwrap();
    let name = format!("rotor-narrow-{mount}");
    server.ok(&[
        "policy",
        "write",
        &name,
        rotor.path("policy.hcl").to_str().unwrap(),
    ]);
    let token = server.ok(&["token", "create", "-policy", &name, "-field", "token"]);
    let other = std::process::Command::new("bao")
        .args(["kv", "get", &format!("-mount={mount}"), "payments/other"])
        .env("BAO_ADDR", &server.address)
        .env("BAO_TOKEN", token.trim())
        .output()
        .unwrap();
    assert!(
        !other.status.success(),
        "the policy must not reach another credential's path"
    );
}

#[test]
fn credentials_rotate_into_aws_secrets_manager_with_native_labels() {
    let moto = crate::support::moto::shared();
    let config = format!(
        "[defaults]\ngrace = \"1s\"\n[vaults.aws]\nkind = \"aws_secrets_manager\"\nregion = \"eu-west-1\"\nendpoint = \"{}\"\n\
         [[credential]]\nid = \"ci/hook\"\nschedule = {{ every = \"30d\" }}\nvault = {{ name = \"aws\", path = \"ci/hook-{}\" }}\nrotator = {{ kind = \"generated\", length = 40 }}\n",
        moto.endpoint,
        std::process::id()
    );
    let rotor = Rotor::new(&config);
    let aws = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ];
    let run = |args: &[&str]| rotor.ok_with_env(args, &aws);
    let policy: String = String::from_utf8(run(&["policy", "ci/hook"]).stdout).unwrap();
    assert!(
        policy.contains("secretsmanager:UpdateSecretVersionStage")
            && policy.contains(&format!("secret:ci/hook-{}-??????", std::process::id())),
        "{policy}"
    );
    let mut logs = Vec::new();
    logs.extend(run(&["--log", "trace", "rotate", "ci/hook", "--emergency"]).stderr);
    logs.extend(run(&["--log", "trace", "rotate", "ci/hook"]).stderr);
    let secret_id = format!("ci/hook-{}", std::process::id());
    let (current, previous) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = moto.client().await;
            let get = |stage: &'static str| {
                client
                    .get_secret_value()
                    .secret_id(&secret_id)
                    .version_stage(stage)
                    .send()
            };
            let current = get("AWSCURRENT").await.unwrap();
            let previous = get("AWSPREVIOUS").await.unwrap();
            (
                current.secret_string().unwrap().to_owned(),
                previous.secret_string().unwrap().to_owned(),
            )
        });
    let current: serde_json::Value = serde_json::from_str(&current).unwrap();
    let previous: serde_json::Value = serde_json::from_str(&previous).unwrap();
    let (v2, v1) = (
        current["value"].as_str().unwrap(),
        previous["value"].as_str().unwrap(),
    );
    assert_ne!(v1, v2);
    assert_eq!(
        current["previous"]["value"], v1,
        "during grace AWSCURRENT carries the previous fields"
    );
    crate::support::assert_secrets_absent(&[v1, v2], &logs, rotor.dir.path());
    std::thread::sleep(Duration::from_millis(1100));
    run(&["run", "--once"]);
    let status: serde_json::Value =
        serde_json::from_slice(&run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(status[0]["state"], "idle", "{status}");
}
