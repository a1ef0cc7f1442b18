//! No secret leaks: every generated value is absent from trace-level logs, from every byte of
//! the store (database, WAL, shared memory), from CLI output and from error messages.

use crate::generated_config;
use crate::rotation::read_document;
use crate::support::{Rotor, all_bytes, contains};

#[test]
fn generated_secrets_appear_only_in_the_vault() {
    let rotor = Rotor::new(&generated_config(2, "1s"));
    let mut output = Vec::new();
    let mut secrets = Vec::new();
    let record = |out: std::process::Output, output: &mut Vec<u8>| {
        output.extend(out.stdout);
        output.extend(out.stderr);
    };
    record(rotor.ok(&["--log", "trace", "run", "--once"]), &mut output);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    record(rotor.ok(&["--log", "trace", "run", "--once"]), &mut output);
    for _ in 0..3 {
        for i in 0..2 {
            secrets.push(
                read_document(&rotor, &format!("app/key{i}"))["value"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
            record(
                rotor.ok(&[
                    "--log",
                    "trace",
                    "rotate",
                    &format!("app/key{i}"),
                    "--emergency",
                ]),
                &mut output,
            );
        }
    }
    // One rotation left in grace: the previous value sits beside the current one.
    record(
        rotor.ok(&["--log", "trace", "rotate", "app/key1"]),
        &mut output,
    );
    let doc = read_document(&rotor, "app/key1");
    secrets.push(doc["value"].as_str().unwrap().to_owned());
    secrets.push(doc["previous"]["value"].as_str().unwrap().to_owned());
    // A failure too: its error message must not carry the value either.
    std::fs::write(rotor.path("vault/app/key0.age"), b"garbage").unwrap();
    record(
        rotor.run(&["--log", "trace", "rotate", "app/key0"]),
        &mut output,
    );
    for args in [
        vec!["status"],
        vec!["status", "--json"],
        vec!["history"],
        vec!["history", "--json"],
        vec!["plan", "--json"],
        vec!["audit", "verify"],
    ] {
        record(rotor.run(&args), &mut output);
    }
    secrets.sort();
    secrets.dedup();
    assert!(
        secrets.len() >= 6,
        "rotations produced distinct secrets: {}",
        secrets.len()
    );
    assert!(
        String::from_utf8_lossy(&output).contains("TRACE")
            || String::from_utf8_lossy(&output).contains("DEBUG")
    );
    // Nor a plain digest of one, which would let whoever reads it test guesses offline:
    // every fingerprint shown or stored is keyed.
    for secret in &secrets {
        let value = rotor_rotators::Fingerprint::of_value(secret.as_bytes()).to_hex();
        let credential = rotor_rotators::Credential::new()
            .with("value", secrecy::SecretString::from(secret.clone()))
            .fingerprint()
            .to_hex();
        for digest in [value, credential] {
            assert!(
                !contains(&output, digest.as_bytes()),
                "a digest in the output"
            );
            for (path, bytes) in all_bytes(rotor.dir.path()) {
                assert!(
                    !contains(&bytes, digest.as_bytes()),
                    "a plain digest of a value is in {}",
                    path.display()
                );
            }
        }
    }
    for secret in &secrets {
        assert!(
            !contains(&output, secret.as_bytes()),
            "a secret value appears in logs or CLI output"
        );
        for (path, bytes) in all_bytes(rotor.dir.path()) {
            let name = path.to_string_lossy();
            if name.contains("/vault/") || name.ends_with("vault.key") {
                continue; // encrypted vault files and the identity
            }
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret value appears in {name}"
            );
        }
        // The vault files are encrypted: the value is not there in clear either.
        for (path, bytes) in all_bytes(&rotor.path("vault")) {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret value is in clear in {}",
                path.display()
            );
        }
    }
}

/// Every provider rotator, at trace level (its SDK's and HTTP client's logs included): the
/// secret fields of every credential it made are absent from logs, CLI output and the store.
fn provider_secrets_stay_in_the_vault(provider: crate::providers::Provider) {
    use crate::providers::setup;
    use secrecy::ExposeSecret;

    let rotor = Rotor::new("");
    let fixture = setup(provider, "leaks", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let mut output = Vec::new();
    let mut secrets = Vec::new();
    let read = || {
        crate::providers::current(&rotor)
            .fields()
            .filter(|(name, _)| {
                // Identifiers, not secrets: user names, key ids, public keys, expiry.
                ![
                    "username",
                    "access_key_id",
                    "id",
                    "public_key",
                    "expires_at",
                ]
                .contains(name)
            })
            .map(|(_, value)| value.expose_secret().to_owned())
            .collect::<Vec<_>>()
    };
    for _ in 0..2 {
        let out = rotor.ok(&["--log", "trace", "rotate", "app/key0"]);
        output.extend(out.stdout);
        output.extend(out.stderr);
        secrets.extend(read());
    }
    for args in [
        vec!["status", "--json"],
        vec!["history", "--json"],
        vec!["--log", "trace", "validate", "--online"],
    ] {
        let out = rotor.run(&args);
        output.extend(out.stdout);
        output.extend(out.stderr);
    }
    assert!(secrets.len() >= 2, "{provider:?}: {}", secrets.len());
    let logs = String::from_utf8_lossy(&output);
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "{provider:?}: the most detailed logs were captured"
    );
    for secret in &secrets {
        assert!(
            !contains(&output, secret.as_bytes()),
            "{provider:?}: a secret value appears in logs or CLI output"
        );
        for (path, bytes) in all_bytes(rotor.dir.path()) {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{provider:?}: a secret value is in {}",
                path.display()
            );
        }
    }
}

mod providers {
    use crate::providers::Provider;

    #[test]
    fn postgres_password() {
        super::provider_secrets_stay_in_the_vault(Provider::Postgres);
    }

    #[test]
    fn mysql_password() {
        super::provider_secrets_stay_in_the_vault(Provider::Mysql);
    }

    #[test]
    fn redis_acl_password() {
        super::provider_secrets_stay_in_the_vault(Provider::Redis);
    }

    #[test]
    fn redis_acl_password_alternating() {
        super::provider_secrets_stay_in_the_vault(Provider::RedisAlternating);
    }

    #[test]
    fn ssh_authorized_key() {
        super::provider_secrets_stay_in_the_vault(Provider::Ssh);
    }

    #[test]
    fn aws_iam_access_key() {
        super::provider_secrets_stay_in_the_vault(Provider::Iam);
    }

    #[test]
    fn http() {
        super::provider_secrets_stay_in_the_vault(Provider::Http);
    }

    #[test]
    fn github_deploy_key() {
        super::provider_secrets_stay_in_the_vault(Provider::GithubDeployKey);
    }

    #[test]
    fn github_webhook_secret() {
        super::provider_secrets_stay_in_the_vault(Provider::GithubWebhook);
    }

    #[test]
    fn github_app_installation_token() {
        super::provider_secrets_stay_in_the_vault(Provider::GithubAppToken);
    }
}
