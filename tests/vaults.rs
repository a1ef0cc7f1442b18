//! Vault backends against real servers: the same rollover contract for each (file, OpenBao
//! KV v2), plus what only a server can do wrong: out-of-band writes, deleted and destroyed
//! versions, a KV v1 mount, AppRole tokens that expire.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use rotor::config::SecretRef;
use rotor::store::integrity::IntegrityKey;
use rotor::vault::file::FileVault;
use rotor::vault::file::FileVaultConfig;
use rotor::vault::openbao::{OpenbaoAuthConfig, OpenbaoVault, OpenbaoVaultConfig};
use rotor::vault::{AnyVault, Held, Previous, Vault, Verified};
use rotor_rotators::{Credential, ErrorClass};
use secrecy::{ExposeSecret, SecretString};
use support::moto;
use support::openbao::{self, ROOT_TOKEN};

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::SeqCst))
}

/// A run token of the length rotor uses (AWS wants 32 to 64 characters).
fn tok(name: &str) -> String {
    format!("{name:0>32}")
}

fn cred(value: &str) -> Credential {
    Credential::new().with("value", SecretString::from(value))
}

/// The value consumers read now.
async fn current_value(vault: &AnyVault, path: &str) -> String {
    let doc = vault
        .read_current(path)
        .await
        .unwrap()
        .expect("a current version");
    value(&doc.current.credential).to_owned()
}

fn value(c: &Credential) -> &str {
    c.get("value").unwrap().expose_secret()
}

fn bao_config(mount: &str, auth: OpenbaoAuthConfig) -> OpenbaoVaultConfig {
    OpenbaoVaultConfig {
        address: openbao::shared().address.clone(),
        mount: mount.into(),
        auth,
        tls: None,
        namespace: None,
        pending_prefix: "_rotor/pending".into(),
        timeout: rotor::config::Duration::from_secs(5),
        insecure_transport: false,
    }
}

fn root_auth() -> OpenbaoAuthConfig {
    // The token comes from a file, as an operator's would: config never holds the value.
    let dir = tempfile::tempdir().unwrap().keep();
    let file = dir.join("token");
    std::fs::write(&file, format!("{ROOT_TOKEN}\n")).unwrap();
    OpenbaoAuthConfig::Token {
        token: SecretRef::File { file },
    }
}

/// A fresh KV v2 mount on the shared server and a vault on it.
fn bao_vault() -> (String, AnyVault) {
    let mount = unique("kv");
    openbao::shared().kv_mount(&mount, 2);
    let vault = OpenbaoVault::open("bao", &bao_config(&mount, root_auth())).unwrap();
    (mount, AnyVault::Openbao(Box::new(vault)))
}

async fn file_vault() -> (tempfile::TempDir, AnyVault) {
    let dir = tempfile::tempdir().unwrap();
    let config = FileVaultConfig {
        dir: dir.path().join("v"),
        identity: SecretRef::File {
            file: dir.path().join("key"),
        },
    };
    let vault = FileVault::open("local", &config).await.unwrap();
    (dir, AnyVault::File(vault))
}

/// `path` as a vault of this kind can name it: Secret Manager's secret ids hold no `/`.
fn at(vault: &AnyVault, path: &str) -> String {
    match vault {
        AnyVault::GcpSecretManager(_) => path.replace('/', "-"),
        _ => path.to_owned(),
    }
}

/// The rollover contract every vault keeps.
async fn rollover_contract(vault: &AnyVault) {
    let path = &at(vault, "team/app/key");
    assert!(vault.read_current(path).await.unwrap().is_none());
    let p1 = vault
        .write_pending(path, &tok("t1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    assert!(
        vault.read_current(path).await.unwrap().is_none(),
        "pending is not what consumers read"
    );
    assert_eq!(
        vault
            .read_pending(path)
            .await
            .unwrap()
            .unwrap()
            .token
            .as_deref(),
        Some(tok("t1").as_str())
    );
    let v1 = vault.promote(path, &tok("t1"), None).await.unwrap();
    assert_eq!(
        vault.promote(path, &tok("t1"), None).await.unwrap(),
        v1,
        "promote is idempotent"
    );
    assert!(vault.read_pending(path).await.unwrap().is_none());
    assert_eq!(p1.fingerprint, cred("one").fingerprint().to_hex());

    vault
        .write_pending(path, &tok("t2"), &cred("two"), Previous::Kept)
        .await
        .unwrap();
    let again = vault
        .write_pending(path, &tok("t2"), &cred("other"), Previous::Kept)
        .await
        .unwrap();
    assert_eq!(
        value(&again.credential),
        "two",
        "a retried mint keeps the first value"
    );
    // A pending version other than the one the run verified (a worker that lost the run wrote
    // over it) is refused, and nothing moves.
    // What a resumed drive knows: the keyed fingerprint the store recorded.
    let key = IntegrityKey::from_bytes(&[9; 32])
        .unwrap()
        .fingerprint_key();
    let other = key.of(&cred("other").fingerprint());
    let recorded = |keyed| Verified::Recorded { keyed, key: &key };
    let refused = vault
        .promote_run(path, &tok("t2"), None, Some(&v1), Some(recorded(&other)))
        .await
        .unwrap_err();
    assert_eq!(refused.class, ErrorClass::Permanent, "{refused}");
    assert!(
        refused.to_string().contains("not the one verified"),
        "{refused}"
    );
    assert_eq!(current_value(vault, path).await, "one", "nothing promoted");
    let verified = key.of(&cred("two").fingerprint());
    let v2 = vault
        .promote_run(path, &tok("t2"), None, Some(&v1), Some(recorded(&verified)))
        .await
        .unwrap();
    assert_eq!(
        vault.promote(path, &tok("t2"), Some(&v1)).await.unwrap(),
        v2,
        "promote is idempotent"
    );
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert_eq!(value(&doc.current.credential), "two");
    assert_eq!(doc.current.token.as_deref(), Some(tok("t2").as_str()));
    assert_eq!(
        value(&doc.previous.as_ref().unwrap().credential),
        "one",
        "the previous version rides along during grace"
    );

    let after = vault
        .drop_previous(path, &tok("t2"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        vault
            .drop_previous(path, &tok("t2"))
            .await
            .unwrap()
            .unwrap(),
        after,
        "drop_previous is idempotent"
    );
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert!(doc.previous.is_none());
    assert_eq!(doc.current.version, after);
    assert_eq!(value(&doc.current.credential), "two");

    // A run that is rolled back leaves nothing behind.
    vault
        .write_pending(path, &tok("t3"), &cred("three"), Previous::Kept)
        .await
        .unwrap();
    vault.discard_pending(path, &tok("t3")).await.unwrap();
    vault.discard_pending(path, &tok("t3")).await.unwrap();
    assert!(vault.read_pending(path).await.unwrap().is_none());
    assert_eq!(current_value(vault, path).await, "two");
    // Values round-trip byte for byte, whatever they hold.
    let odd = "quote\" back\\slash\nnewline\ttab ünïcødé 🔑 {\"json\": true} ";
    vault
        .write_pending(path, &tok("t4"), &cred(odd), Previous::Kept)
        .await
        .unwrap();
    assert_eq!(
        value(&vault.read_pending(path).await.unwrap().unwrap().credential),
        odd
    );
    // A promotion that expects another current version is a conflict and changes nothing.
    let err = vault
        .promote(path, &tok("t4"), Some("999"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    assert!(
        !err.to_string().contains(odd) && !err.to_string().contains("two"),
        "no secret in errors: {err}"
    );
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert_eq!(value(&doc.current.credential), "two");
    let v3 = vault
        .promote(path, &tok("t4"), Some(&doc.current.version))
        .await
        .unwrap();
    assert_ne!(v3, doc.current.version);
    assert_eq!(current_value(vault, path).await, odd);
    vault.drop_previous(path, &tok("t4")).await.unwrap();
}

/// Promotion and retirement by the drive that holds what it stored: the same documents as
/// the reading path's; retried after their write landed, the same answers.
async fn held_contract(vault: &AnyVault) {
    let path = &at(vault, "team/app/held");
    vault
        .write_pending(path, &tok("t1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    let first = Held {
        candidate: &cred("one"),
        replaced: None,
        previous: Previous::Kept,
    };
    let v1 = vault
        .promote_held(path, &tok("t1"), Some("run-1"), None, first)
        .await
        .unwrap();
    assert_eq!(
        vault
            .promote_held(path, &tok("t1"), Some("run-1"), None, first)
            .await
            .unwrap(),
        v1,
        "a retried held promotion answers the version it wrote"
    );
    assert!(vault.read_pending(path).await.unwrap().is_none());
    let one = vault.read_current(path).await.unwrap().unwrap().current;
    assert_eq!(value(&one.credential), "one");
    assert_eq!(one.token.as_deref(), Some(tok("t1").as_str()));

    vault
        .write_pending(path, &tok("t2"), &cred("two"), Previous::Kept)
        .await
        .unwrap();
    let second = Held {
        candidate: &cred("two"),
        replaced: Some(&one),
        previous: Previous::Kept,
    };
    let v2 = vault
        .promote_held(path, &tok("t2"), Some("run-2"), Some(&v1), second)
        .await
        .unwrap();
    assert_eq!(
        vault
            .promote_held(path, &tok("t2"), Some("run-2"), Some(&v1), second)
            .await
            .unwrap(),
        v2
    );
    assert!(vault.read_pending(path).await.unwrap().is_none());
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert_eq!(value(&doc.current.credential), "two");
    assert_eq!(doc.current.version, v2);
    assert_eq!(doc.current.token.as_deref(), Some(tok("t2").as_str()));
    let previous = doc.previous.expect("the previous version during grace");
    assert_eq!(value(&previous.credential), "one");

    let after = vault
        .drop_previous_held(path, &tok("t2"), &v2, &cred("two"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        vault
            .drop_previous_held(path, &tok("t2"), &v2, &cred("two"))
            .await
            .unwrap()
            .unwrap(),
        after,
        "a retried held retirement answers the version it wrote"
    );
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert!(doc.previous.is_none());
    assert_eq!(doc.current.version, after);
    assert_eq!(value(&doc.current.credential), "two");
    // The next rotation's reading path takes what the held one recorded for its own.
    vault
        .write_pending(path, &tok("t3"), &cred("three"), Previous::Kept)
        .await
        .unwrap();
    vault.promote(path, &tok("t3"), Some(&after)).await.unwrap();
    assert_eq!(current_value(vault, path).await, "three");
}

/// A credential only the vault holds, retired as soon as it is promoted: its promoted
/// document goes without the version it replaces, and retirement then has nothing to write
/// (the version stays the promoted one). A promotion resumed by another drive may keep it;
/// retirement drops it then, and the next rotation, with a grace, keeps its own.
async fn omitted_previous_contract(vault: &AnyVault) {
    let path = &at(vault, "team/app/omitted");
    let t = |n: &str| tok(&format!("o{n}"));
    vault
        .write_pending(path, &t("1"), &cred("one"), Previous::Omitted)
        .await
        .unwrap();
    let v1 = vault.promote(path, &t("1"), None).await.unwrap();
    assert_eq!(
        vault.drop_previous(path, &t("1")).await.unwrap(),
        Some(v1.clone())
    );
    let one = vault.read_current(path).await.unwrap().unwrap().current;

    vault
        .write_pending(path, &t("2"), &cred("two"), Previous::Omitted)
        .await
        .unwrap();
    let held = Held {
        candidate: &cred("two"),
        replaced: Some(&one),
        previous: Previous::Omitted,
    };
    let v2 = vault
        .promote_held(path, &t("2"), Some("run-2"), Some(&v1), held)
        .await
        .unwrap();
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert_eq!(value(&doc.current.credential), "two");
    assert_eq!(doc.current.version, v2);
    assert!(
        doc.previous.is_none(),
        "{}: the promoted document goes without the version it replaced",
        vault.name()
    );
    // The engine retires a credential only the vault holds without holding the document.
    for _ in 0..2 {
        assert_eq!(
            vault.drop_previous(path, &t("2")).await.unwrap(),
            Some(v2.clone()),
            "{}: retirement writes nothing",
            vault.name()
        );
    }
    assert_eq!(
        vault
            .read_current(path)
            .await
            .unwrap()
            .unwrap()
            .current
            .version,
        v2
    );

    // Promoted by a drive that resumed the run: it reads pending and current back.
    vault
        .write_pending(path, &t("3"), &cred("three"), Previous::Omitted)
        .await
        .unwrap();
    let v3 = vault.promote(path, &t("3"), Some(&v2)).await.unwrap();
    let after = vault.drop_previous(path, &t("3")).await.unwrap().unwrap();
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert_eq!(value(&doc.current.credential), "three");
    assert!(doc.previous.is_none(), "{}: retired", vault.name());
    assert_eq!(doc.current.version, after);

    vault
        .write_pending(path, &t("4"), &cred("four"), Previous::Kept)
        .await
        .unwrap();
    vault.promote(path, &t("4"), Some(&after)).await.unwrap();
    let doc = vault.read_current(path).await.unwrap().unwrap();
    assert_eq!(value(&doc.current.credential), "four");
    let previous = doc.previous.expect("the previous version during grace");
    assert_eq!(value(&previous.credential), "three");
    assert!(v3 != v2);
}

#[tokio::test]
async fn file_vault_keeps_the_rollover_contract() {
    let (_dir, vault) = file_vault().await;
    rollover_contract(&vault).await;
    held_contract(&vault).await;
    omitted_previous_contract(&vault).await;
}

#[tokio::test]
async fn openbao_keeps_the_rollover_contract_and_records_custom_metadata() {
    let (mount, vault) = bao_vault();
    rollover_contract(&vault).await;
    held_contract(&vault).await;
    omitted_previous_contract(&vault).await;
    let server = openbao::shared();
    let got = server.kv_get(&mount, "team/app/key");
    assert!(
        got["data"]["data"]["value"]
            .as_str()
            .unwrap()
            .starts_with("quote\""),
        "{got}"
    );
    let custom = &got["data"]["metadata"]["custom_metadata"];
    assert_eq!(custom["rotor_stage"], "current");
    // No fingerprint in metadata, which a policy may let more people read than the data.
    assert!(
        custom.get("rotor_fingerprint").is_none_or(|v| v.is_null()),
        "{custom}"
    );
    assert!(
        custom
            .get("rotor_previous_version")
            .is_none_or(|v| v.is_null()),
        "{custom}"
    );
    // The pending versions were removed with their history.
    let pending = server.bao(&[
        "kv",
        "metadata",
        "get",
        &format!("-mount={mount}"),
        "_rotor/pending/team/app/key",
    ]);
    assert!(!pending.status.success(), "no pending key remains");
}

#[tokio::test]
async fn an_out_of_band_write_is_a_conflict_and_survives() {
    let (mount, vault) = bao_vault();
    let server = openbao::shared();
    vault
        .write_pending("db", "t1", &cred("one"), Previous::Kept)
        .await
        .unwrap();
    let v1 = vault.promote("db", "t1", None).await.unwrap();
    vault
        .write_pending("db", "t2", &cred("two"), Previous::Kept)
        .await
        .unwrap();
    server.ok(&[
        "kv",
        "put",
        &format!("-mount={mount}"),
        "db",
        "value=by-hand",
    ]);
    let err = vault.promote("db", "t2", Some(&v1)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    assert!(err.to_string().contains("changed outside rotor"), "{err}");
    assert_eq!(
        server.kv_get(&mount, "db")["data"]["data"]["value"],
        "by-hand",
        "the human's write is kept"
    );
    assert!(
        !err.to_string().contains("by-hand") && !err.to_string().contains("two"),
        "no secret in the error: {err}"
    );
}

/// The held path writes without reading first: its check-and-set is what keeps a human's
/// write, at promotion and at retirement.
#[tokio::test]
async fn an_out_of_band_write_is_a_conflict_for_a_held_promotion_and_retirement() {
    let (mount, vault) = bao_vault();
    let server = openbao::shared();
    let by_hand = |value: &str| {
        server.ok(&[
            "kv",
            "put",
            &format!("-mount={mount}"),
            "db",
            &format!("value={value}"),
        ])
    };
    vault
        .write_pending("db", "t1", &cred("one"), Previous::Kept)
        .await
        .unwrap();
    let v1 = vault.promote("db", "t1", None).await.unwrap();
    let one = vault.read_current("db").await.unwrap().unwrap().current;
    vault
        .write_pending("db", "t2", &cred("two"), Previous::Kept)
        .await
        .unwrap();
    by_hand("by-hand");
    let held = Held {
        candidate: &cred("two"),
        replaced: Some(&one),
        previous: Previous::Kept,
    };
    let err = vault
        .promote_held("db", "t2", None, Some(&v1), held)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    assert_eq!(
        server.kv_get(&mount, "db")["data"]["data"]["value"],
        "by-hand",
        "the human's write is kept"
    );

    let now = vault.read_current("db").await.unwrap().unwrap().current;
    vault
        .write_pending("db", "t3", &cred("three"), Previous::Kept)
        .await
        .unwrap();
    let held = Held {
        candidate: &cred("three"),
        replaced: Some(&now),
        previous: Previous::Kept,
    };
    let v3 = vault
        .promote_held("db", "t3", None, Some(&now.version), held)
        .await
        .unwrap();
    by_hand("again");
    let err = vault
        .drop_previous_held("db", "t3", &v3, &cred("three"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    assert_eq!(
        server.kv_get(&mount, "db")["data"]["data"]["value"],
        "again",
        "the human's write is kept"
    );
    assert!(
        !err.to_string().contains("again") && !err.to_string().contains("three"),
        "no secret in the error: {err}"
    );
}

#[tokio::test]
async fn a_deleted_or_destroyed_latest_version_is_a_conflict() {
    let (mount, vault) = bao_vault();
    let server = openbao::shared();
    vault
        .write_pending("a", "t1", &cred("one"), Previous::Kept)
        .await
        .unwrap();
    vault.promote("a", "t1", None).await.unwrap();
    server.ok(&["kv", "delete", &format!("-mount={mount}"), "a"]);
    let err = vault.read_current("a").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict);
    assert!(
        err.to_string().contains("was deleted outside rotor"),
        "{err}"
    );
    server.ok(&[
        "kv",
        "undelete",
        &format!("-mount={mount}"),
        "-versions=1",
        "a",
    ]);
    assert!(vault.read_current("a").await.unwrap().is_some());
    server.ok(&[
        "kv",
        "destroy",
        &format!("-mount={mount}"),
        "-versions=1",
        "a",
    ]);
    let err = vault.read_current("a").await.unwrap_err();
    assert!(
        err.to_string().contains("was destroyed outside rotor"),
        "{err}"
    );
}

#[tokio::test]
async fn a_kv_version_1_mount_is_refused_with_a_clear_error() {
    let mount = unique("kvone");
    openbao::shared().kv_mount(&mount, 1);
    let vault = OpenbaoVault::open("bao", &bao_config(&mount, root_auth())).unwrap();
    let err = vault.read_current("x").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(err.to_string().contains("not KV version 2"), "{err}");
}

#[tokio::test]
async fn approle_tokens_are_renewed_and_replaced_when_they_expire() {
    let server = openbao::shared();
    let mount = unique("kvrole");
    server.kv_mount(&mount, 2);
    let policy = unique("rotor");
    let rules = format!(
        "path \"{mount}/*\" {{ capabilities = [\"create\", \"read\", \"update\", \"patch\", \"delete\", \"list\"] }}\n\
         path \"sys/internal/ui/mounts/{mount}\" {{ capabilities = [\"read\"] }}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.hcl"), rules).unwrap();
    server.ok(&[
        "policy",
        "write",
        &policy,
        dir.path().join("policy.hcl").to_str().unwrap(),
    ]);
    let _ = server.bao(&["auth", "enable", "approle"]);
    let role = unique("role");
    // Tokens live 2 s and may not be renewed past 3 s: the test outlives several of them.
    server.ok(&[
        "write",
        &format!("auth/approle/role/{role}"),
        &format!("token_policies={policy}"),
        "token_ttl=2s",
        "token_max_ttl=3s",
    ]);
    let role_id = server.ok(&[
        "read",
        "-field=role_id",
        &format!("auth/approle/role/{role}/role-id"),
    ]);
    let secret_id = server.ok(&[
        "write",
        "-f",
        "-field=secret_id",
        &format!("auth/approle/role/{role}/secret-id"),
    ]);
    std::fs::write(dir.path().join("role_id"), role_id.trim()).unwrap();
    std::fs::write(dir.path().join("secret_id"), secret_id.trim()).unwrap();
    let auth = OpenbaoAuthConfig::Approle {
        role_id: SecretRef::File {
            file: dir.path().join("role_id"),
        },
        secret_id: SecretRef::File {
            file: dir.path().join("secret_id"),
        },
        mount: "approle".into(),
    };
    let vault = AnyVault::Openbao(Box::new(
        OpenbaoVault::open("bao", &bao_config(&mount, auth)).unwrap(),
    ));
    let mut expected = None;
    for i in 0..5 {
        let token = format!("t{i}");
        vault
            .write_pending("svc", &token, &cred(&format!("v{i}")), Previous::Kept)
            .await
            .unwrap();
        expected = Some(
            vault
                .promote("svc", &token, expected.as_deref())
                .await
                .unwrap(),
        );
        tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    }
    assert_eq!(current_value(&vault, "svc").await, "v4");

    // A wrong secret id is a clear, permanent error.
    std::fs::write(dir.path().join("secret_id"), "not-the-secret-id").unwrap();
    let auth = OpenbaoAuthConfig::Approle {
        role_id: SecretRef::File {
            file: dir.path().join("role_id"),
        },
        secret_id: SecretRef::File {
            file: dir.path().join("secret_id"),
        },
        mount: "approle".into(),
    };
    let vault = OpenbaoVault::open("bao", &bao_config(&mount, auth)).unwrap();
    let err = vault.read_current("svc").await.unwrap_err();
    assert!(
        err.to_string().contains("AppRole login") && !err.to_string().contains("not-the-secret-id"),
        "{err}"
    );
}

#[tokio::test]
async fn openbao_over_mutual_tls_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server, https) = openbao::start_mtls(dir.path());
    server.kv_mount("tlskv", 2);
    let tls = |client: bool| rotor::vault::openbao::TlsConfig {
        ca_file: Some(dir.path().join("ca.pem")),
        client_cert_file: client.then(|| dir.path().join("client.pem")),
        client_key_file: client.then(|| dir.path().join("client.key")),
    };
    let mut config = bao_config("tlskv", root_auth());
    config.address = https.clone();
    config.tls = Some(tls(true));
    let vault = AnyVault::Openbao(Box::new(OpenbaoVault::open("bao", &config).unwrap()));
    rollover_contract(&vault).await;

    // Without the client certificate the server refuses the handshake: a clear, retryable error.
    config.tls = Some(tls(false));
    let vault = OpenbaoVault::open("bao", &config).unwrap();
    let err = vault.read_current("x").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(
        err.to_string().contains(&format!("cannot reach {https}")),
        "{err}"
    );

    // Without the private CA the server's certificate is not trusted.
    config.tls = None;
    let vault = OpenbaoVault::open("bao", &config).unwrap();
    let err = vault.read_current("x").await.unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
}

// moto 5.2.5 quirks met here (besides the two DEPENDENCIES.md lists): after PutSecretValue with
// VersionStages = [AWSCURRENT], GetSecretValue(AWSCURRENT) still returned the version before, so
// rotor moves AWSCURRENT with UpdateSecretVersionStage; and, as on AWS, a secret's first version
// is AWSCURRENT whatever labels the put names, which is why rotor creates an empty first version.
async fn aws_vault() -> AnyVault {
    let config = rotor::vault::aws_secrets_manager::AwsSecretsManagerConfig {
        region: "eu-west-1".into(),
        endpoint: Some(moto::shared().endpoint.clone()),
        insecure_transport: false,
    };
    AnyVault::AwsSecretsManager(Box::new(
        rotor::vault::aws_secrets_manager::AwsSecretsManager::open("aws", &config).await,
    ))
}

#[tokio::test]
async fn aws_secrets_manager_keeps_the_rollover_contract_with_native_labels() {
    let vault = aws_vault().await;
    rollover_contract(&vault).await;
    held_contract(&vault).await;
    omitted_previous_contract(&vault).await;
    // What AWS-native consumers see: AWSCURRENT is the document, no AWSPENDING is left.
    let client = moto::shared().client().await;
    let current = client
        .get_secret_value()
        .secret_id("team/app/key")
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    assert!(
        current.secret_string().unwrap().contains("quote"),
        "AWSCURRENT holds the last promoted value"
    );
    let pending = client
        .get_secret_value()
        .secret_id("team/app/key")
        .version_stage("AWSPENDING")
        .send()
        .await;
    assert!(pending.is_err(), "no AWSPENDING remains");
}

#[tokio::test]
async fn aws_promotion_moves_awscurrent_and_awsprevious_follows() {
    let vault = aws_vault().await;
    let client = moto::shared().client().await;
    let path = "svc/labels";
    vault
        .write_pending(path, &tok("a1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    let v1 = vault.promote(path, &tok("a1"), None).await.unwrap();
    vault
        .write_pending(path, &tok("a2"), &cred("two"), Previous::Kept)
        .await
        .unwrap();
    // Pending is AWSPENDING on the run's own version; AWSCURRENT has not moved.
    let pending = client
        .get_secret_value()
        .secret_id(path)
        .version_stage("AWSPENDING")
        .send()
        .await
        .unwrap();
    assert_eq!(pending.version_id(), Some(tok("a2").as_str()));
    let v2 = vault.promote(path, &tok("a2"), Some(&v1)).await.unwrap();
    let previous = client
        .get_secret_value()
        .secret_id(path)
        .version_stage("AWSPREVIOUS")
        .send()
        .await
        .unwrap();
    assert_eq!(
        previous.version_id(),
        Some(v1.as_str()),
        "AWS moved AWSPREVIOUS to the old version"
    );
    let current = client
        .get_secret_value()
        .secret_id(path)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap();
    assert_eq!(current.version_id(), Some(v2.as_str()));
    let doc: serde_json::Value = serde_json::from_str(current.secret_string().unwrap()).unwrap();
    assert_eq!(doc["value"], "two");
    assert_eq!(
        doc["previous"]["value"], "one",
        "during grace the document carries the previous fields"
    );
}

#[tokio::test]
async fn a_stale_awspending_of_someone_else_is_a_conflict_and_is_left_alone() {
    let vault = aws_vault().await;
    let client = moto::shared().client().await;
    let path = "svc/stale";
    vault
        .write_pending(path, &tok("s1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    vault.promote(path, &tok("s1"), None).await.unwrap();
    let foreign = "11111111-2222-3333-4444-555555555555";
    client
        .put_secret_value()
        .secret_id(path)
        .client_request_token(foreign)
        .secret_string("{\"value\":\"someone else's\"}")
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let err = vault
        .write_pending(path, &tok("s2"), &cred("two"), Previous::Kept)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    assert!(
        err.to_string()
            .contains("a previous rotation isn't complete")
            && err.to_string().contains(foreign),
        "{err}"
    );
    assert!(
        !err.to_string().contains("someone else's"),
        "no secret in the error: {err}"
    );
    let pending = client
        .get_secret_value()
        .secret_id(path)
        .version_stage("AWSPENDING")
        .send()
        .await
        .unwrap();
    assert_eq!(
        pending.version_id(),
        Some(foreign),
        "the foreign AWSPENDING is untouched"
    );
}

#[tokio::test]
async fn openbao_namespaces_are_honoured() {
    let server = openbao::shared();
    let namespace = unique("team");
    server.ok(&["namespace", "create", &namespace]);
    server.ok(&[
        "secrets",
        "enable",
        &format!("-namespace={namespace}"),
        "-version=2",
        "-path=kv",
        "kv",
    ]);
    let mut config = bao_config("kv", root_auth());
    config.namespace = Some(namespace.clone());
    let vault = AnyVault::Openbao(Box::new(OpenbaoVault::open("bao", &config).unwrap()));
    rollover_contract(&vault).await;
    // The document lives in the namespace, not at the root.
    let inside = server.bao(&[
        "kv",
        "get",
        &format!("-namespace={namespace}"),
        "-mount=kv",
        "team/app/key",
    ]);
    assert!(
        inside.status.success(),
        "{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let root = server.bao(&["kv", "get", "-mount=kv", "team/app/key"]);
    assert!(
        !root.status.success(),
        "nothing was written outside the namespace"
    );
}

/// A fresh fake of its own: the tests below count its tokens and versions.
fn gcp_fake() -> (tempfile::TempDir, std::sync::Arc<support::gcp::Gcp>) {
    let dir = tempfile::tempdir().unwrap();
    let fake = support::gcp::Gcp::start(dir.path());
    (dir, fake)
}

fn gcp_config(
    fake: &support::gcp::Gcp,
    auth: rotor::vault::gcp_secret_manager::GcpAuthConfig,
    retired: rotor::vault::gcp_secret_manager::RetiredVersions,
) -> rotor::vault::gcp_secret_manager::GcpSecretManagerConfig {
    let text = format!(
        "project = \"{}\"\nendpoint = \"{}\"\nauth = {{ method = \"metadata\" }}\n",
        support::gcp::PROJECT,
        fake.server.uri()
    );
    let mut config: rotor::vault::gcp_secret_manager::GcpSecretManagerConfig =
        toml::from_str(&text).unwrap();
    config.auth = auth;
    config.retired_versions = retired;
    config
}

fn gcp_key_auth(fake: &support::gcp::Gcp) -> rotor::vault::gcp_secret_manager::GcpAuthConfig {
    rotor::vault::gcp_secret_manager::GcpAuthConfig::ServiceAccountKey {
        key: SecretRef::File {
            file: fake.key_file.clone(),
        },
    }
}

fn gcp_vault(
    fake: &support::gcp::Gcp,
    retired: rotor::vault::gcp_secret_manager::RetiredVersions,
) -> AnyVault {
    let config = gcp_config(fake, gcp_key_auth(fake), retired);
    AnyVault::GcpSecretManager(Box::new(
        rotor::vault::gcp_secret_manager::GcpSecretManager::open("gcp", &config).unwrap(),
    ))
}

#[tokio::test]
async fn gcp_secret_manager_keeps_the_rollover_contract_with_version_aliases() {
    use rotor::vault::gcp_secret_manager::RetiredVersions;
    let (_dir, fake) = gcp_fake();
    let vault = gcp_vault(&fake, RetiredVersions::Disable);
    rollover_contract(&vault).await;
    held_contract(&vault).await;
    omitted_previous_contract(&vault).await;
    // What consumers read: `versions/current` holds the last promoted value, no pending alias is
    // left, and every older version (each holds a retired credential) is disabled.
    let current = fake.payload("team-app-key", "current").unwrap();
    assert!(
        current["value"].as_str().unwrap().contains("quote"),
        "{current}"
    );
    let state = fake.state.lock().unwrap();
    let secret = &state.secrets["team-app-key"];
    assert_eq!(secret.aliases.keys().collect::<Vec<_>>(), ["current"]);
    let current_n = secret.aliases["current"] as usize;
    for (i, version) in secret.versions.iter().enumerate() {
        let expected = if i + 1 == current_n {
            "ENABLED"
        } else {
            "DISABLED"
        };
        assert_eq!(version.state, expected, "version {}", i + 1);
    }
    assert_eq!(
        secret.labels.get("managed-by").map(String::as_str),
        Some("rotor")
    );
    assert_eq!(state.issued, ["jwt"], "one token, reused for every call");
}

#[tokio::test]
async fn gcp_pending_is_apart_from_current_and_retired_versions_are_destroyed_when_asked() {
    use rotor::vault::gcp_secret_manager::RetiredVersions;
    let (_dir, fake) = gcp_fake();
    let vault = gcp_vault(&fake, RetiredVersions::Destroy);
    let path = "svc-aliases";
    vault
        .write_pending(path, &tok("g1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    assert!(
        fake.payload(path, "current").is_none(),
        "an unverified version is never `current`"
    );
    let v1 = vault.promote(path, &tok("g1"), None).await.unwrap();
    vault
        .write_pending(path, &tok("g2"), &cred("two"), Previous::Kept)
        .await
        .unwrap();
    assert_eq!(fake.payload(path, "current").unwrap()["value"], "one");
    assert_eq!(fake.payload(path, "pending").unwrap()["value"], "two");
    assert_eq!(
        fake.payload(path, "latest").unwrap()["value"],
        "two",
        "`latest` is the pending version: why consumers read `current`"
    );
    let v2 = vault.promote(path, &tok("g2"), Some(&v1)).await.unwrap();
    let during = fake.payload(path, "current").unwrap();
    assert_eq!(during["value"], "two");
    assert_eq!(during["previous"]["value"], "one", "both during grace");
    assert!(fake.payload(path, "pending").is_none());
    let after = vault
        .drop_previous(path, &tok("g2"))
        .await
        .unwrap()
        .unwrap();
    assert_ne!(after, v2);
    let doc = fake.payload(path, "current").unwrap();
    assert_eq!(doc["value"], "two");
    assert!(doc.get("previous").is_none());
    assert_eq!(
        fake.states(path),
        ["DESTROYED", "DESTROYED", "ENABLED"],
        "the retired credential's version and the one that carried it during grace are destroyed"
    );
}

#[tokio::test]
async fn gcp_a_version_added_before_a_crash_is_adopted_not_added_twice() {
    use rotor::vault::gcp_secret_manager::RetiredVersions;
    let (_dir, fake) = gcp_fake();
    let vault = gcp_vault(&fake, RetiredVersions::Disable);
    let path = "svc-adopt";
    vault
        .write_pending(path, &tok("c1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    let v1 = vault.promote(path, &tok("c1"), None).await.unwrap();
    // Someone moves an alias between rotor's read of the secret and its patch: the etag no
    // longer matches, the patch fails, and nothing is aliased.
    fake.state.lock().unwrap().bump_etag_after_next_read = true;
    let raced = vault
        .write_pending(path, &tok("c2"), &cred("two"), Previous::Kept)
        .await
        .unwrap_err();
    assert_eq!(raced.class, ErrorClass::Transient, "{raced}");
    assert!(raced.to_string().contains("changed while"), "{raced}");
    assert!(fake.payload(path, "pending").is_none());
    let versions = fake.states(path).len();
    // The retry finds the version it added by its run token: the first value, no new version.
    let again = vault
        .write_pending(path, &tok("c2"), &cred("other"), Previous::Kept)
        .await
        .unwrap();
    assert_eq!(value(&again.credential), "two");
    assert_eq!(
        fake.states(path).len(),
        versions,
        "adopted, not added again"
    );
    assert_eq!(fake.payload(path, "pending").unwrap()["value"], "two");
    // A run rolled back after such a crash leaves no enabled copy of its secret.
    fake.state.lock().unwrap().bump_etag_after_next_read = true;
    vault
        .write_pending(path, &tok("c3"), &cred("three"), Previous::Kept)
        .await
        .unwrap_err();
    vault.discard_pending(path, &tok("c2")).await.unwrap();
    vault.discard_pending(path, &tok("c3")).await.unwrap();
    vault.discard_pending(path, &tok("c3")).await.unwrap();
    assert!(vault.read_pending(path).await.unwrap().is_none());
    let states = fake.states(path);
    assert_eq!(
        states.iter().filter(|s| **s == "ENABLED").count(),
        1,
        "only `current` is enabled: {states:?}"
    );
    assert_eq!(
        vault
            .read_current(path)
            .await
            .unwrap()
            .unwrap()
            .current
            .version,
        v1
    );
}

#[tokio::test]
async fn gcp_a_stale_pending_alias_of_someone_else_is_a_conflict_and_is_left_alone() {
    use rotor::vault::gcp_secret_manager::RetiredVersions;
    let (_dir, fake) = gcp_fake();
    let vault = gcp_vault(&fake, RetiredVersions::Disable);
    let path = "svc-stale";
    vault
        .write_pending(path, &tok("s1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    vault.promote(path, &tok("s1"), None).await.unwrap();
    {
        let mut state = fake.state.lock().unwrap();
        let secret = state.secrets.get_mut(path).unwrap();
        secret.versions.push(support::gcp::Version {
            state: "ENABLED",
            payload: Some(br#"{"value":"someone else's"}"#.to_vec()),
        });
        let n = secret.versions.len() as u64;
        secret.aliases.insert("pending".into(), n);
    }
    let err = vault
        .write_pending(path, &tok("s2"), &cred("two"), Previous::Kept)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    assert!(
        err.to_string()
            .contains("a previous rotation isn't complete")
            && err.to_string().contains("--remove-version-aliases=pending"),
        "{err}"
    );
    assert!(!err.to_string().contains("someone else's"), "{err}");
    assert_eq!(
        fake.payload(path, "pending").unwrap()["value"],
        "someone else's",
        "left alone"
    );
    // A promotion that expects another current version is refused the same way.
    let err = vault
        .promote(path, &tok("s2"), Some("99"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
}

#[tokio::test]
async fn gcp_tokens_come_from_the_metadata_server_and_are_fetched_again_when_refused() {
    use rotor::vault::gcp_secret_manager::{GcpAuthConfig, GcpSecretManager, RetiredVersions};
    let (_dir, fake) = gcp_fake();
    let auth = GcpAuthConfig::Metadata {
        endpoint: fake.server.uri(),
    };
    let config = gcp_config(&fake, auth, RetiredVersions::Keep);
    let vault =
        AnyVault::GcpSecretManager(Box::new(GcpSecretManager::open("gcp", &config).unwrap()));
    let path = "svc-metadata";
    vault
        .write_pending(path, &tok("m1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();
    // The token is revoked: a 401 drops it, and a new one is fetched once.
    fake.state.lock().unwrap().forget_tokens();
    vault.promote(path, &tok("m1"), None).await.unwrap();
    assert_eq!(fake.state.lock().unwrap().issued, ["metadata", "metadata"]);
    assert_eq!(current_value(&vault, path).await, "one");
    // With `keep`, retirement leaves older versions enabled.
    vault
        .write_pending(path, &tok("m2"), &cred("two"), Previous::Kept)
        .await
        .unwrap();
    let v = vault
        .read_current(path)
        .await
        .unwrap()
        .unwrap()
        .current
        .version;
    vault.promote(path, &tok("m2"), Some(&v)).await.unwrap();
    vault.drop_previous(path, &tok("m2")).await.unwrap();
    assert!(fake.states(path).iter().all(|s| *s == "ENABLED"));
}

#[tokio::test]
async fn gcp_an_outage_is_transient_and_a_refused_key_is_permanent_without_secrets() {
    use rotor::vault::gcp_secret_manager::{GcpSecretManager, RetiredVersions};
    let (_dir, fake) = gcp_fake();
    let vault = gcp_vault(&fake, RetiredVersions::Disable);
    fake.state.lock().unwrap().unavailable = true;
    let err = vault
        .write_pending("svc-outage", &tok("u1"), &cred("one"), Previous::Kept)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient, "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    fake.state.lock().unwrap().unavailable = false;
    vault
        .write_pending("svc-outage", &tok("u1"), &cred("one"), Previous::Kept)
        .await
        .unwrap();

    // A key whose token_uri would send the signed assertion over plaintext to another host.
    let dir = tempfile::tempdir().unwrap();
    let mut key: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&fake.key_file).unwrap()).unwrap();
    key["token_uri"] = "http://oauth2.example.com/token".into();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, key.to_string()).unwrap();
    let mut config = gcp_config(&fake, gcp_key_auth(&fake), RetiredVersions::Disable);
    config.auth = rotor::vault::gcp_secret_manager::GcpAuthConfig::ServiceAccountKey {
        key: SecretRef::File { file: bad },
    };
    let vault =
        AnyVault::GcpSecretManager(Box::new(GcpSecretManager::open("gcp", &config).unwrap()));
    let err = vault.read_current("svc-outage").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    assert!(err.to_string().contains("unprotected"), "{err}");
    let private = key["private_key"].as_str().unwrap();
    let body = private.lines().nth(1).unwrap();
    assert!(!err.to_string().contains(body), "no key in the error");
}

#[tokio::test]
async fn gcp_an_answer_that_is_not_the_metadata_servers_is_refused() {
    use rotor::vault::gcp_secret_manager::{GcpAuthConfig, GcpSecretManager, RetiredVersions};
    use wiremock::{Mock, MockServer, ResponseTemplate, matchers};
    let (_dir, fake) = gcp_fake();
    // Something else on the metadata address: a token-shaped answer, without the header.
    let impostor = MockServer::start().await;
    Mock::given(matchers::path(
        "/computeMetadata/v1/instance/service-accounts/default/token",
    ))
    .respond_with(
        ResponseTemplate::new(200).set_body_json(
            serde_json::json!({"access_token": "ya29.impostor", "expires_in": 3599}),
        ),
    )
    .mount(&impostor)
    .await;
    let auth = GcpAuthConfig::Metadata {
        endpoint: impostor.uri(),
    };
    let config = gcp_config(&fake, auth, RetiredVersions::Disable);
    let vault =
        AnyVault::GcpSecretManager(Box::new(GcpSecretManager::open("gcp", &config).unwrap()));
    let err = vault.read_current("svc-impostor").await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    assert!(err.to_string().contains("not the metadata server"), "{err}");
    assert!(
        fake.state.lock().unwrap().requests.is_empty(),
        "the impostor's token was never presented to Secret Manager"
    );
}
