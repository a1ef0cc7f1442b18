//! Crash at every step, on every vault: a real `rotor run` is paused at a failpoint (between two
//! steps, between a step's side effect and its save, or between two vault operations of one
//! step), SIGKILLed, and restarted. Afterwards exactly one current credential exists, it
//! verifies, the previous one was retired only after grace, no pending version is orphaned, and
//! the run completed. With no grace, a `generated` credential's promoted document goes without
//! the previous version (`Previous::Omitted`): the same, on every vault.

#[cfg(not(feature = "failpoints"))]
#[test]
fn crash_tests_need_the_failpoints_feature() {
    panic!("the crash tests need the worker's failpoints: run `cargo test --features failpoints`");
}

#[cfg(feature = "failpoints")]
mod with_failpoints {
    use std::time::Duration;

    use rotor::store::Store;
    use rotor::vault::{Vault, Vaults};
    use rotor_rotators::Credential;
    use secrecy::ExposeSecret;

    use crate::generated_config;
    use crate::providers::{self, Fixture, Provider};
    use crate::support::{Rotor, spawn_until};

    const GRACE_MS: i64 = 2000;

    #[derive(Clone, Copy, Debug)]
    enum Backend {
        File,
        /// The file vault, and a webhook hook told of each change.
        FileNotifying,
        OpenBao,
        Aws,
        /// Google Cloud Secret Manager, on the fake of its REST API.
        Gcp,
        /// A real provider's rotator, with the file vault.
        Provider(Provider),
        /// A real provider's rotator whose grace ends by evidence: `retire_when = "unused"`,
        /// `unused_for` = `UNUSED_FOR_MS`.
        Gated(Provider),
    }

    const UNUSED_FOR_MS: i64 = 1000;

    /// What consumers read, through rotor's own vault code.
    struct Seen {
        version: String,
        current: Credential,
        previous: Option<Credential>,
    }

    impl Seen {
        fn fingerprint(&self) -> String {
            self.current.fingerprint().to_hex()
        }
    }

    fn config(
        backend: Backend,
        grace: &str,
        rotor_dir: &std::path::Path,
        unique: &str,
    ) -> (String, Option<Fixture>) {
        // Absolute paths: the test process opens the same vaults to look at them.
        let absolute = |text: String| {
            text.replace(
                "dir = \"vault\"",
                &format!("dir = \"{}/vault\"", rotor_dir.display()),
            )
            .replace(
                "file = \"vault.key\"",
                &format!("file = \"{}/vault.key\"", rotor_dir.display()),
            )
        };
        let base = absolute(generated_config(1, grace));
        let credential_only =
            |vault: &str| base.replace("name = \"local\"", &format!("name = \"{vault}\""));
        // The temporary directory's name tells apart the runs that share one server.
        let dir_name = rotor_dir.file_name().unwrap().to_string_lossy();
        let text = match backend {
            Backend::File | Backend::FileNotifying => base.clone(),
            Backend::Provider(provider) => {
                let fixture = providers::setup(provider, unique, rotor_dir);
                return (fixture.config(grace, rotor_dir), Some(fixture));
            }
            Backend::Gated(provider) => {
                let fixture = providers::setup(provider, unique, rotor_dir);
                let gated = fixture.config(grace, rotor_dir).replace(
                    "[credential.rotator]",
                    &format!(
                        "retire_when = \"unused\"\nunused_for = \"{}s\"\n[credential.rotator]",
                        UNUSED_FOR_MS / 1000
                    ),
                );
                return (gated, Some(fixture));
            }
            Backend::OpenBao => {
                let server = crate::support::openbao::shared();
                let mount = format!("crash{}", dir_name.replace(['.', '-'], ""));
                server.kv_mount(&mount, 2);
                std::fs::write(
                    rotor_dir.join("bao-token"),
                    crate::support::openbao::ROOT_TOKEN,
                )
                .unwrap();
                format!(
                    "{}\n[vaults.bao]\nkind = \"openbao\"\naddress = \"{}\"\nmount = \"{mount}\"\nauth = {{ method = \"token\", token = {{ file = \"{}\" }} }}\n",
                    credential_only("bao"),
                    server.address,
                    rotor_dir.join("bao-token").display()
                )
            }
            Backend::Aws => {
                let moto = crate::support::moto::shared();
                let unique = dir_name.replace('.', "");
                format!(
                    "{}\n[vaults.aws]\nkind = \"aws_secrets_manager\"\nregion = \"eu-west-1\"\nendpoint = \"{}\"\n",
                    credential_only("aws")
                        .replace("path = \"app/key0\"", &format!("path = \"crash/{unique}\"")),
                    moto.endpoint
                )
            }
            Backend::Gcp => {
                let fake = crate::support::gcp::shared();
                let unique = dir_name.replace('.', "");
                format!(
                    "{}\n{}",
                    credential_only("gcp")
                        .replace("path = \"app/key0\"", &format!("path = \"crash-{unique}\"")),
                    fake.vault_toml("gcp", "")
                )
            }
        };
        (text, None)
    }

    /// Versions of `secret` in the Secret Manager fake that are still enabled.
    fn gcp_enabled(secret: &str) -> usize {
        crate::support::gcp::shared()
            .states(secret)
            .iter()
            .filter(|s| **s == "ENABLED")
            .count()
    }

    use providers::block_on;

    fn read(rotor: &Rotor) -> (Option<Seen>, bool) {
        let config = rotor::config::load(std::slice::from_ref(&rotor.config)).unwrap();
        let credential = config.credential("app/key0").unwrap().clone();
        block_on(async {
            let vaults = Vaults::open(&config.vaults).await.unwrap();
            let vault = vaults.get(&credential.vault).unwrap();
            let doc = vault.read_current(&credential.vault_path).await.unwrap();
            let pending = vault
                .read_pending(&credential.vault_path)
                .await
                .unwrap()
                .is_some();
            let seen = doc.map(|d| Seen {
                version: d.current.version,
                current: d.current.credential,
                previous: d.previous.map(|p| p.credential),
            });
            (seen, pending)
        })
    }

    fn crash_at(backend: Backend, grace_ms: i64, point: &str) {
        let rotor = Rotor::new("");
        let gated = if let Backend::Gated(_) = backend {
            "gated_"
        } else {
            ""
        };
        let unique = format!("crash_{gated}{}", point.replace(':', "_"));
        let grace = format!("{}s", grace_ms / 1000);
        let (mut text, fixture) = config(backend, &grace, rotor.dir.path(), &unique);
        let receiver = matches!(backend, Backend::FileNotifying).then(|| {
            let receiver = crate::alerts::Receiver::start(200);
            std::fs::write(rotor.path("hook.key"), "crash-hook-key").unwrap();
            text = text.replace(
                "rotator = { kind = \"generated\"",
                "notify = [\"consumer\"]\nrotator = { kind = \"generated\"",
            ) + &format!(
                "\n[hooks.consumer]\nkind = \"webhook\"\nurl = \"{}/events\"\nsecret = {{ file = \"{}\" }}\n",
                receiver.server.uri(),
                rotor.path("hook.key").display()
            );
            receiver
        });
        std::fs::write(&rotor.config, text).unwrap();
        rotor.ok(&["rotate", "app/key0", "--emergency"]);
        let first = read(&rotor).0.expect("a first version");
        rotor.ok(&["rotate", "app/key0", "--no-wait"]);

        // Points after promotion are reached once grace has elapsed: run, with the clock
        // past the grace, until one is.
        let mut child = None;
        for _ in 0..4 {
            let mut cmd = rotor.command(&["run", "--once", "--lease", "1s"]);
            cmd.env("ROTOR_FAILPOINT", point);
            match spawn_until(cmd, &format!("FAILPOINT {point}"), Duration::from_secs(60)) {
                Ok((c, _)) => {
                    child = Some(c);
                    break;
                }
                Err(_) => rotor.advance(Duration::from_millis(grace_ms as u64 + 1000)),
            }
        }
        let mut child = child.unwrap_or_else(|| panic!("{backend:?} {point} was never reached"));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();

        // Right after the crash consumers read a verified credential: the old one, or the new
        // one (with the old one beside it until retirement, if there is a grace).
        let seen = read(&rotor).0.expect("a current version");
        if seen.fingerprint() != first.fingerprint() && grace_ms > 0 {
            assert!(
                seen.previous.as_ref().map(|p| p.fingerprint().to_hex())
                    == Some(first.fingerprint())
                    || point.contains("retire"),
                "{backend:?} {point}: the old credential is kept beside the new one during grace"
            );
        }
        if grace_ms == 0 && matches!(backend, Backend::File | Backend::Aws | Backend::Gcp) {
            // The pending version was written without the current one beside it; only
            // OpenBao's promotion, resumed by a drive that reads back, may add it (retired).
            assert!(
                seen.previous.is_none(),
                "{backend:?} {point}: with no grace the promoted document has no previous version"
            );
        }
        if let Some(fixture) = &fixture {
            // A webhook keeps signing with the previous secret through grace; receivers
            // accept both.
            let previous_honoured = fixture.switches_after_grace()
                && seen.previous.as_ref().is_some_and(|p| fixture.accepts(p));
            assert!(
                previous_honoured || fixture.accepts(&seen.current),
                "{backend:?} {point}: what consumers read authenticates, even right after the crash"
            );
        }

        // The killed worker's lease, then the grace, run out on the clock of the next
        // processes.
        let mut state = String::new();
        for _ in 0..6 {
            rotor.advance(Duration::from_millis(grace_ms as u64 + 1000));
            rotor.ok(&["run", "--once", "--lease", "1s"]);
            let history = rotor.json(&["history", "app/key0", "--json"]);
            state = history[0]["state"].as_str().unwrap().to_owned();
            if state == "completed" {
                break;
            }
        }
        assert_eq!(
            state, "completed",
            "{backend:?} {point}: the run resumes and completes"
        );

        let (seen, pending) = read(&rotor);
        let seen = seen.expect("a current version");
        assert_ne!(seen.version, first.version, "{backend:?} {point}");
        assert_ne!(
            seen.fingerprint(),
            first.fingerprint(),
            "{backend:?} {point}: a new credential is current"
        );
        match &fixture {
            Some(fixture) => fixture.check_rotated(&seen.current, &first.current),
            None => {
                let value = seen.current.get("value").unwrap().expose_secret();
                assert!(
                    value.len() == 40 && value.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{backend:?} {point}: current verifies"
                );
            }
        }
        assert!(
            seen.previous.is_none(),
            "{backend:?} {point}: previous retired"
        );
        assert!(!pending, "{backend:?} {point}: no orphaned pending version");
        if let Backend::Gcp = backend {
            let config = rotor::config::load(std::slice::from_ref(&rotor.config)).unwrap();
            let secret = &config.credential("app/key0").unwrap().vault_path;
            assert_eq!(
                gcp_enabled(secret),
                1,
                "{point}: only `current` is enabled: no version added twice, none left holding a retired or discarded credential: {:?}",
                crate::support::gcp::shared().states(secret)
            );
        }

        let fingerprint = rotor.shown_fingerprint(&seen.current.fingerprint());
        let status = rotor.json(&["status", "--json"]);
        assert_eq!(
            status[0]["current_fingerprint"], fingerprint,
            "{backend:?} {point}"
        );
        assert_eq!(
            status[0]["current_version"],
            seen.version.as_str(),
            "{backend:?} {point}: the store knows the vault's version"
        );
        assert_eq!(status[0]["state"], "idle", "{backend:?} {point}");

        let url = rotor.store_url();
        let steps = block_on(async {
            let store = Store::connect(&url, None).await.unwrap();
            let run = store.runs(Some("app/key0"), 1).await.unwrap().remove(0);
            store.steps(&run.id).await.unwrap()
        });
        let promoted: Vec<_> = steps
            .iter()
            .filter(|s| s.step == "promote" && s.outcome == "ok")
            .collect();
        assert_eq!(promoted.len(), 1, "{backend:?} {point}: promoted once");
        let retire_started = steps
            .iter()
            .filter(|s| s.step == "retire")
            .map(|s| s.started_at)
            .min()
            .unwrap();
        let promoted_at = promoted[0].finished_at.unwrap();
        // Evidence ends grace early, once the old credential went unused for `unused_for`.
        let earliest = match backend {
            Backend::Gated(_) => UNUSED_FOR_MS,
            _ => grace_ms,
        };
        assert!(
            retire_started >= promoted_at + earliest - 5,
            "{backend:?} {point}: retired {}ms after promotion, no earlier than {earliest}ms",
            retire_started - promoted_at
        );
        if let Backend::Gated(_) = backend {
            let history = rotor.json(&["history", "app/key0", "--json"]);
            assert_eq!(
                history[0]["previous_usage"]["evidence"], "unseen",
                "{backend:?} {point}: what the provider said survived the crash: {}",
                history[0]
            );
        }
        rotor.ok(&["audit", "verify"]);

        if let Some(receiver) = receiver {
            // Each change reaches the hook, however the worker died: at least once, with a
            // delivery id that stays the same across a repeat (receivers deduplicate on it).
            let runs = rotor.json(&["history", "app/key0", "--json"]);
            let (second, first) = (
                runs[0]["run_id"].as_str().unwrap().to_owned(),
                runs[1]["run_id"].as_str().unwrap().to_owned(),
            );
            let expected: std::collections::BTreeSet<String> = [
                format!("{first}/promoted/consumer"),
                format!("{second}/promoted/consumer"),
                format!("{second}/retired/consumer"),
            ]
            .into();
            let mut received = std::collections::BTreeSet::new();
            for _ in 0..120 {
                received = receiver
                    .bodies()
                    .iter()
                    .map(|b| b["delivery_id"].as_str().unwrap().to_owned())
                    .collect();
                if received == expected {
                    break;
                }
                rotor.advance(Duration::from_millis(500));
                rotor.ok(&["run", "--once", "--lease", "1s"]);
                std::thread::sleep(Duration::from_millis(50));
            }
            assert_eq!(
                received, expected,
                "{point}: every event, of these runs only"
            );
            let promoted = receiver
                .bodies()
                .into_iter()
                .find(|b| b["delivery_id"] == format!("{second}/promoted/consumer"))
                .unwrap();
            assert_eq!(promoted["fingerprint"], fingerprint);
        }
    }

    macro_rules! crash_points {
        ($backend:expr; $($name:ident => $point:literal,)*) => {
            crash_points! { $backend, GRACE_MS; $($name => $point,)* }
        };
        ($backend:expr, $grace_ms:expr; $($name:ident => $point:literal,)*) => {$(
            #[test]
            fn $name() {
                crash_at($backend, $grace_ms, $point);
            }
        )*};
    }

    /// Between steps, and between each step's side effect and its save.
    macro_rules! step_points {
        ($module:ident, $backend:expr) => {
            step_points!($module, $backend, GRACE_MS);
        };
        ($module:ident, $backend:expr, $grace_ms:expr) => {
            mod $module {
                use super::*;
                crash_points! { $backend, $grace_ms;
                    mint_before => "mint:before",
                    mint_effect => "mint:effect",
                    mint_after => "mint:after",
                    apply_before => "apply:before",
                    apply_effect => "apply:effect",
                    apply_after => "apply:after",
                    verify_before => "verify:before",
                    verify_effect => "verify:effect",
                    verify_after => "verify:after",
                    promote_before => "promote:before",
                    promote_effect => "promote:effect",
                    promote_after => "promote:after",
                    grace_before => "grace:before",
                    grace_effect => "grace:effect",
                    grace_after => "grace:after",
                    retire_before => "retire:before",
                    retire_effect => "retire:effect",
                    retire_after => "retire:after",
                }
            }
        };
    }

    step_points!(file, Backend::File);
    step_points!(file_no_grace, Backend::File, 0);
    step_points!(file_notifying, Backend::FileNotifying);
    step_points!(openbao, Backend::OpenBao);
    step_points!(aws, Backend::Aws);
    step_points!(gcp, Backend::Gcp);
    step_points!(postgres_password, Backend::Provider(Provider::Postgres));
    step_points!(mysql_password, Backend::Provider(Provider::Mysql));
    step_points!(redis_acl_password, Backend::Provider(Provider::Redis));
    step_points!(
        redis_acl_password_alternating,
        Backend::Provider(Provider::RedisAlternating)
    );
    step_points!(aws_iam_access_key, Backend::Provider(Provider::Iam));
    step_points!(ssh_authorized_key, Backend::Provider(Provider::Ssh));
    step_points!(http, Backend::Provider(Provider::Http));
    step_points!(
        github_deploy_key,
        Backend::Provider(Provider::GithubDeployKey)
    );
    step_points!(
        github_webhook_secret,
        Backend::Provider(Provider::GithubWebhook)
    );
    step_points!(
        github_app_installation_token,
        Backend::Provider(Provider::GithubAppToken)
    );

    // Grace that ends by evidence: killed while it samples the old user's connections, the
    // next process asks again and still retires no earlier than `unused_for`.
    crash_points! { Backend::Gated(Provider::RedisAlternating);
        gated_promote_after => "promote:after",
        gated_grace_before => "grace:before",
        gated_grace_effect => "grace:effect",
        gated_grace_after => "grace:after",
        gated_retire_before => "retire:before",
        gated_retire_effect => "retire:effect",
        gated_retire_after => "retire:after",
    }

    // Between IAM's CreateAccessKey, which shows the secret once, and the vault write.
    crash_points! { Backend::Provider(Provider::Iam);
        aws_iam_mint_minted => "mint:minted",
    }
    crash_points! { Backend::Provider(Provider::Http);
        http_mint_minted => "mint:minted",
    }

    // Between two vault operations of one step.
    crash_points! { Backend::File;
        file_vault_promote_written => "vault:promote:written",
    }
    crash_points! { Backend::OpenBao;
        openbao_vault_promote_written => "vault:promote:written",
        openbao_vault_promote_labelled => "vault:promote:labelled",
        openbao_vault_retire_written => "vault:retire:written",
    }
    crash_points! { Backend::Aws;
        aws_vault_promote_written => "vault:promote:written",
        aws_vault_retire_written => "vault:retire:written",
        aws_vault_retire_labelled => "vault:retire:labelled",
    }

    crash_points! { Backend::Gcp;
        gcp_vault_pending_added => "vault:pending:added",
        gcp_vault_promote_written => "vault:promote:written",
        gcp_vault_retire_written => "vault:retire:written",
        gcp_vault_retire_labelled => "vault:retire:labelled",
    }

    // With no grace the promoted document goes without the previous version: around the
    // promotion and the retirement that no longer writes, on the other vaults.
    macro_rules! no_grace_points {
        ($module:ident, $backend:expr) => {
            mod $module {
                use super::*;
                crash_points! { $backend, 0;
                    mint_after => "mint:after",
                    promote_before => "promote:before",
                    promote_effect => "promote:effect",
                    vault_promote_written => "vault:promote:written",
                    promote_after => "promote:after",
                    retire_before => "retire:before",
                    retire_effect => "retire:effect",
                }
            }
        };
    }
    no_grace_points!(openbao_no_grace, Backend::OpenBao);
    no_grace_points!(aws_no_grace, Backend::Aws);
    no_grace_points!(gcp_no_grace, Backend::Gcp);
    crash_points! { Backend::OpenBao, 0;
        openbao_no_grace_vault_promote_labelled => "vault:promote:labelled",
    }
}
