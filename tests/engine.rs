//! The engine in-process, under a clock the test moves: proptest picks sequences of crash
//! points (the worker "dies" there without saving) and checks that every sequence ends with
//! exactly one verified current credential, the old one retired only after grace, and nothing
//! orphaned.

#[cfg(not(feature = "failpoints"))]
#[test]
fn engine_crash_tests_need_the_failpoints_feature() {
    panic!(
        "the in-process crash tests need the failpoints feature: run `cargo test --features failpoints`"
    );
}

#[cfg(feature = "failpoints")]
mod support;

// The provider fixtures of the CLI tests; this binary uses only some of what they offer.
#[cfg(feature = "failpoints")]
#[path = "cli/providers.rs"]
#[allow(dead_code)]
mod providers;

#[cfg(feature = "failpoints")]
use support::generated_config;

#[cfg(feature = "failpoints")]
mod with_failpoints {
    use std::sync::Arc;

    use crate::providers;
    use proptest::prelude::*;
    use rotor::app::emergency::{self, Asking, Emergency};
    use rotor::clock::ManualClock;
    use rotor::engine::disturbance::{Disturbance, Target};
    use rotor::engine::state::RunState;
    use rotor::engine::{Driven, Engine, EngineError, Runtime};
    use rotor::scheduler::daemon;
    use rotor::store::Store;
    use rotor::vault::{Previous, Vault};

    const POINTS: [&str; 18] = [
        "mint:before",
        "mint:effect",
        "mint:after",
        "apply:before",
        "apply:effect",
        "apply:after",
        "verify:before",
        "verify:effect",
        "verify:after",
        "promote:before",
        "promote:effect",
        "promote:after",
        "grace:before",
        "grace:effect",
        "grace:after",
        "retire:before",
        "retire:effect",
        "retire:after",
    ];
    const GRACE_MS: i64 = 10_000;
    const LEASE_MS: i64 = 5_000;

    /// The worker dies the first time it reaches this point.
    struct CrashAt(std::sync::Mutex<Option<String>>);

    impl Disturbance for CrashAt {
        fn dies_at(&self, _target: &Target<'_>, point: &str) -> bool {
            let mut armed = self.0.lock().unwrap();
            if armed.as_deref() == Some(point) {
                *armed = None;
                return true;
            }
            false
        }
    }

    /// Where the world's credential lives.
    #[derive(Debug, Clone, Copy)]
    enum VaultKind {
        File,
        /// A KV v2 mount of its own on the shared OpenBao dev server.
        OpenBao,
        /// A secret of its own on the shared moto server (AWS Secrets Manager).
        Aws,
        /// A secret of its own on the shared fake of Google Cloud Secret Manager.
        Gcp,
    }

    /// A name no other world of this process uses.
    fn unique() -> String {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        format!(
            "engine{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        )
    }

    /// The `[vaults.local]` table of `kind`, its files under `dir`, and the credential's path
    /// in it.
    fn vault_table(kind: VaultKind, dir: &std::path::Path) -> (String, String) {
        let table = match kind {
            VaultKind::File => format!(
                "kind = \"file\"\ndir = \"{d}/vault\"\nidentity = {{ file = \"{d}/vault.key\" }}\n",
                d = dir.display()
            ),
            VaultKind::OpenBao => {
                let server = crate::support::openbao::shared();
                let mount = unique();
                server.kv_mount(&mount, 2);
                let token = dir.join("bao-token");
                std::fs::write(&token, crate::support::openbao::ROOT_TOKEN).unwrap();
                format!(
                    "kind = \"openbao\"\naddress = \"{}\"\nmount = \"{mount}\"\nauth = {{ method = \"token\", token = {{ file = \"{}\" }} }}\n",
                    server.address,
                    token.display()
                )
            }
            VaultKind::Aws => {
                let moto = crate::support::moto::shared();
                let path = format!("{}/key", unique());
                return (
                    format!(
                        "kind = \"aws_secrets_manager\"\nregion = \"eu-west-1\"\nendpoint = \"{}\"\n",
                        moto.endpoint
                    ),
                    path,
                );
            }
            VaultKind::Gcp => {
                let fake = crate::support::gcp::shared();
                let table = fake.vault_toml("local", "");
                let table = table.split_once('\n').unwrap().1.to_owned();
                return (table, unique());
            }
        };
        (table, "app/key".to_owned())
    }

    struct World {
        _dir: tempfile::TempDir,
        store: Store,
        runtime: Runtime,
        clock: ManualClock,
        workers: usize,
        /// The credential's id, and its path in its vault.
        id: String,
        path: String,
        /// The provider the credential lives at, when it is not only in the vault.
        fixture: Option<providers::Fixture>,
    }

    impl World {
        async fn new() -> World {
            World::with_vault(VaultKind::File).await
        }

        /// `app/key0` of a provider's fixture, in a file vault.
        async fn with_provider(provider: providers::Provider) -> World {
            let dir = tempfile::tempdir().unwrap();
            let unique = unique();
            let fixture = std::thread::scope(|s| {
                s.spawn(|| providers::setup(provider, &unique, dir.path()))
                    .join()
                    .unwrap()
            });
            let text = fixture.config("10s", dir.path());
            World::from_text(dir, &text, "app/key0", "app/key0", Some(fixture)).await
        }

        async fn with_vault(kind: VaultKind) -> World {
            let dir = tempfile::tempdir().unwrap();
            let (table, path) = vault_table(kind, dir.path());
            let config = format!(
                r#"
[defaults]
grace = "10s"
retry = {{ max_attempts = 3, initial = "1s", max = "2s" }}
[drill]
every = "90d"
[vaults.local]
{vault}
[[credential]]
id = "app/key"
schedule = {{ every = "30d" }}
max_age = "45d"
vault = {{ name = "local", path = "{path}" }}
rotator = {{ kind = "generated", length = 24 }}
"#,
                vault = table
            );
            World::from_text(dir, &config, "app/key", &path, None).await
        }

        async fn from_text(
            dir: tempfile::TempDir,
            config: &str,
            id: &str,
            path: &str,
            fixture: Option<providers::Fixture>,
        ) -> World {
            let file = dir.path().join("rotor.toml");
            std::fs::write(&file, config).unwrap();
            let config = rotor::config::load(&[file]).unwrap();
            let store =
                Store::connect(&format!("sqlite://{}/rotor.db", dir.path().display()), None)
                    .await
                    .unwrap();
            let clock = ManualClock::new(1_800_000_000_000);
            daemon::reconcile(&store, &config, &clock).await.unwrap();
            let runtime = Runtime::build(config).await.unwrap();
            World {
                _dir: dir,
                store,
                runtime,
                clock,
                workers: 0,
                id: id.to_owned(),
                path: path.to_owned(),
                fixture,
            }
        }

        fn engine(&mut self, crash_at: Option<&str>) -> Engine {
            self.workers += 1;
            let mut engine = Engine::new(
                self.store.clone(),
                Arc::new(self.clock.clone()),
                format!("worker{}", self.workers),
            );
            engine.disturbance = crash_at.map(|point| {
                Arc::new(CrashAt(std::sync::Mutex::new(Some(point.to_owned()))))
                    as Arc<dyn Disturbance>
            });
            engine
        }

        /// One worker's life: claim what is ready and drive it, dying at `crash_at` if reached.
        async fn work(&mut self, crash_at: Option<&str>) -> Option<Result<Driven, EngineError>> {
            use rotor::clock::Clock;
            let now = self.clock.now_ms();
            daemon::plan_due(&self.store, &self.runtime.config, now, 10)
                .await
                .unwrap();
            let engine = self.engine(crash_at);
            let mut claimed = self
                .store
                .claim(&engine.worker, now, now + LEASE_MS, 10)
                .await
                .unwrap();
            let run = claimed.pop()?;
            Some(engine.drive(&self.runtime, run).await)
        }

        /// Work until the live run completes, moving the clock past leases and timers.
        async fn finish(&mut self) {
            for _ in 0..50 {
                // A worker that died right after saving the last step leaves nothing to do.
                let planned = self
                    .store
                    .credential(&self.id)
                    .await
                    .unwrap()
                    .unwrap()
                    .current_version
                    .is_some();
                if planned && self.store.live_run(&self.id).await.unwrap().is_none() {
                    let last = self.store.runs(Some(&self.id), 1).await.unwrap().remove(0);
                    assert_eq!(last.state(), RunState::Completed);
                    return;
                }
                match self.work(None).await {
                    Some(Ok(Driven::Finished(RunState::Completed))) => return,
                    Some(Ok(Driven::Finished(state))) => panic!("run ended {state}"),
                    Some(Err(e)) => panic!("drive failed: {e}"),
                    _ => self.clock.advance_ms(LEASE_MS + 1),
                }
            }
            panic!("the run did not complete");
        }

        async fn current(&self) -> rotor::vault::Document {
            self.runtime
                .vaults
                .get("local")
                .unwrap()
                .read_current(&self.path)
                .await
                .unwrap()
                .expect("a current version")
        }
    }

    fn value(doc: &rotor::vault::StoredVersion) -> String {
        use secrecy::ExposeSecret;
        doc.credential
            .get("value")
            .unwrap()
            .expose_secret()
            .to_owned()
    }

    async fn scenario(points: Vec<&'static str>) {
        scenario_in(VaultKind::File, points, false).await;
    }

    /// Rotates once, then again while the worker dies at each of `points` in turn, and checks
    /// the one invariant: consumers always read a verified credential (the old one, or the new
    /// one with the old as previous), and in the end exactly one new version is current, the
    /// old one retired after grace, nothing pending left, the store agreeing with the vault.
    /// With `until_hit`, workers are started (the clock moved past each wait) until each point
    /// is reached or the run is over. Returns how many workers died.
    async fn scenario_in(kind: VaultKind, points: Vec<&'static str>, until_hit: bool) -> usize {
        scenario_with(World::with_vault(kind).await, points, until_hit).await
    }

    async fn scenario_with(mut world: World, points: Vec<&'static str>, until_hit: bool) -> usize {
        world.finish().await;
        world.clock.advance_ms(GRACE_MS + 1);
        let first = world.current().await.current;
        let v1 = first.fingerprint.clone();
        use rotor::clock::Clock;
        let run = daemon::new_run(
            &world.id,
            "manual",
            false,
            std::time::Duration::from_millis(GRACE_MS as u64),
            world.clock.now_ms(),
        );
        world
            .store
            .request_rotation(&run, "test", world.clock.now_ms())
            .await
            .unwrap();

        let mut deaths = 0;
        let mut over = false;
        for point in points {
            for _ in 0..if until_hit { 10 } else { 1 } {
                match world.work(Some(point)).await {
                    Some(Err(EngineError::Crashed(_))) => {
                        deaths += 1;
                        break;
                    }
                    Some(Ok(Driven::Finished(RunState::Completed))) => {
                        over = true;
                        break;
                    }
                    Some(Ok(Driven::Waiting(until))) => {
                        let now = world.clock.now_ms();
                        world.clock.advance_ms((until - now).max(0) + 1);
                    }
                    Some(Ok(_)) | None => world.clock.advance_ms(LEASE_MS + 1),
                    Some(Err(e)) => panic!("{point}: {e}"),
                }
            }
            // Whatever happened, consumers read a verified credential.
            let doc = world.current().await;
            let current = doc.current.fingerprint.clone();
            if current == v1 {
                assert_eq!(doc.current.version, first.version, "{point}");
            } else if let Some(previous) = &doc.previous {
                assert_eq!(
                    previous.fingerprint, v1,
                    "{point}: the previous credential is the old one"
                );
            }
            // A dead worker's lease expires before anyone else may take the run.
            world.clock.advance_ms(LEASE_MS + 1);
            if over {
                break;
            }
        }
        world.finish().await;

        let doc = world.current().await;
        assert_ne!(doc.current.fingerprint, v1, "a new version is current");
        assert!(doc.previous.is_none(), "previous retired");
        let vault = world.runtime.vaults.get("local").unwrap();
        assert!(
            vault.read_pending(&world.path).await.unwrap().is_none(),
            "no orphaned pending version"
        );
        let row = world.store.credential(&world.id).await.unwrap().unwrap();
        assert_eq!(
            row.current_fingerprint,
            world
                .store
                .fingerprint_key()
                .of_hex(&doc.current.fingerprint),
            "the store records the vault's current version, keyed"
        );
        assert_eq!(
            row.current_version.as_deref(),
            Some(doc.current.version.as_str())
        );
        let last = world
            .store
            .runs(Some(&world.id), 1)
            .await
            .unwrap()
            .remove(0);
        assert_eq!(last.state(), RunState::Completed);
        let steps = world.store.steps(&last.id).await.unwrap();
        let promoted: Vec<_> = steps
            .iter()
            .filter(|s| s.step == "promote" && s.outcome == "ok")
            .collect();
        assert_eq!(promoted.len(), 1);
        let retire_start = steps
            .iter()
            .filter(|s| s.step == "retire")
            .map(|s| s.started_at)
            .min()
            .unwrap();
        assert!(
            retire_start >= promoted[0].finished_at.unwrap() + GRACE_MS,
            "retired before grace elapsed"
        );
        assert_eq!(
            world.store.verify_audit().await.unwrap().map(|_| ()),
            Ok(())
        );
        if let Some(fixture) = &world.fixture {
            // At the provider: the new credential works, the old one is refused, nothing else
            // this account owns is live.
            std::thread::scope(|s| {
                s.spawn(|| fixture.check_rotated(&doc.current.credential, &first.credential))
                    .join()
                    .unwrap()
            });
        }
        // A fixture may own a runtime of its own, which must not be dropped in this one.
        if let Some(fixture) = world.fixture.take() {
            std::thread::spawn(move || drop(fixture)).join().unwrap();
        }
        deaths
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
        #[test]
        fn any_sequence_of_crashes_ends_with_one_verified_current(points in prop::collection::vec(prop::sample::select(POINTS.to_vec()), 0..5)) {
            tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(scenario(points));
        }
    }

    /// Every crash point of every step, on a real OpenBao: the same invariant as the file
    /// vault's proptest, in-process, against the server rotor talks to in production.
    #[tokio::test]
    async fn every_crash_point_on_openbao_ends_with_one_verified_current() {
        for point in POINTS {
            let deaths = scenario_in(VaultKind::OpenBao, vec![point], true).await;
            assert_eq!(deaths, 1, "the worker never reached {point}");
        }
        // Two deaths in one rotation, either side of promotion.
        for points in [
            vec!["verify:effect", "promote:effect"],
            vec!["promote:after", "retire:effect"],
        ] {
            let deaths = scenario_in(VaultKind::OpenBao, points.clone(), true).await;
            assert_eq!(deaths, 2, "{points:?}");
        }
    }

    /// The same on AWS Secrets Manager (moto), where the stages are labels on versions.
    #[tokio::test]
    async fn every_crash_point_on_aws_secrets_manager_ends_with_one_verified_current() {
        for point in POINTS {
            let deaths = scenario_in(VaultKind::Aws, vec![point], true).await;
            assert_eq!(deaths, 1, "the worker never reached {point}");
        }
    }

    /// The same on Google Cloud Secret Manager (its REST API's fake), where pending and
    /// current are version aliases.
    #[tokio::test]
    async fn every_crash_point_on_gcp_secret_manager_ends_with_one_verified_current() {
        for point in POINTS {
            let deaths = scenario_in(VaultKind::Gcp, vec![point], true).await;
            assert_eq!(deaths, 1, "the worker never reached {point}");
        }
    }

    /// Every crash point of every step for each provider, in-process against its real server
    /// (or its documented HTTP fake), checked at the provider afterwards.
    #[tokio::test]
    async fn every_crash_point_of_every_provider_ends_with_one_verified_current() {
        use providers::Provider;
        for provider in [
            Provider::Postgres,
            Provider::Mysql,
            Provider::Redis,
            Provider::RedisAlternating,
            Provider::Iam,
            Provider::Http,
            Provider::GithubDeployKey,
            Provider::GithubWebhook,
            Provider::GithubAppToken,
            Provider::Ssh,
        ] {
            for point in POINTS {
                let deaths =
                    scenario_with(World::with_provider(provider).await, vec![point], true).await;
                assert_eq!(deaths, 1, "{provider:?}: the worker never reached {point}");
            }
        }
    }

    #[tokio::test]
    async fn an_old_credential_and_a_missed_window_are_alerted_once_until_rotated() {
        use rotor::clock::Clock;
        let mut world = World::new().await;
        world.finish().await;
        world.clock.advance_ms(GRACE_MS + 1);
        world.finish().await;
        let engine = world.engine(None);
        daemon::check_ages(&engine, &world.runtime, world.clock.now_ms())
            .await
            .unwrap();
        assert!(world.store.active_alerts().await.unwrap().is_empty());

        // 46 days later nothing has rotated it: older than max_age, and due 16 days ago.
        world.clock.advance_ms(46 * 86_400_000);
        for _ in 0..2 {
            daemon::check_ages(&engine, &world.runtime, world.clock.now_ms())
                .await
                .unwrap();
        }
        let active: Vec<String> = world
            .store
            .active_alerts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.condition)
            .collect();
        assert_eq!(active, ["overdue", "too_old"]);

        // The next rotation (planned now: it is due) resolves both.
        world.work(None).await;
        world.finish().await;
        world.clock.advance_ms(GRACE_MS + 1);
        world.finish().await;
        assert!(world.store.active_alerts().await.unwrap().is_empty());

        // Never drilled in 90 days: only a drill resolves that, not a rotation.
        world.clock.advance_ms(45 * 86_400_000);
        daemon::check_ages(&engine, &world.runtime, world.clock.now_ms())
            .await
            .unwrap();
        let active = world.store.active_alerts().await.unwrap();
        let drill = active
            .iter()
            .find(|a| a.condition == "drill_overdue")
            .expect("drill_overdue is raised");
        assert!(drill.payload.contains("never drilled"), "{}", drill.payload);
        world.work(None).await;
        world.finish().await;
        world.clock.advance_ms(GRACE_MS + 1);
        world.finish().await;
        let active: Vec<String> = world
            .store
            .active_alerts()
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.condition)
            .collect();
        assert_eq!(active, ["drill_overdue"]);
    }

    /// An engine on a SQLite store in `dir` for the config `text`, reconciled under a clock
    /// the test moves.
    async fn engine_for(
        dir: &std::path::Path,
        text: &str,
    ) -> (Store, ManualClock, Runtime, Engine) {
        let path = dir.join("rotor.toml");
        std::fs::write(&path, text).unwrap();
        let config = rotor::config::load(&[path]).unwrap();
        let store = Store::connect(&format!("sqlite://{}/rotor.db", dir.display()), None)
            .await
            .unwrap();
        let clock = ManualClock::new(1_800_000_000_000);
        daemon::reconcile(&store, &config, &clock).await.unwrap();
        let runtime = Runtime::build(config).await.unwrap();
        let engine = Engine::new(store.clone(), Arc::new(clock.clone()), "w".into());
        (store, clock, runtime, engine)
    }

    #[tokio::test]
    async fn a_credential_rotated_by_hand_is_reminded_then_overdue_until_confirmed() {
        use rotor::clock::Clock;
        let dir = tempfile::tempdir().unwrap();
        let (store, clock, runtime, engine) = engine_for(
            dir.path(),
            &format!(
                r#"
[vaults.local]
kind = "file"
dir = "{dir}/vault"
identity = {{ file = "{dir}/vault.key" }}
[[credential]]
id = "vendor/console-key"
schedule = {{ manual = true }}
max_age = "90d"
vault = {{ name = "local", path = "vendor/console-key" }}
rotator = {{ kind = "manual", remind_before = "14d", instructions = "https://console.vendor.example/keys" }}
"#,
                dir = dir.path().display()
            ),
        )
        .await;
        let active = || async {
            store
                .active_alerts()
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.condition)
                .collect::<Vec<_>>()
        };
        // Never planned: rotor does not rotate it.
        assert!(
            daemon::plan_due(&store, &runtime.config, clock.now_ms(), 10)
                .await
                .unwrap()
                == 0
        );

        clock.advance_ms(75 * 86_400_000);
        daemon::check_ages(&engine, &runtime, clock.now_ms())
            .await
            .unwrap();
        assert!(
            active().await.is_empty(),
            "15 days before the deadline: quiet"
        );
        clock.advance_ms(2 * 86_400_000);
        daemon::check_ages(&engine, &runtime, clock.now_ms())
            .await
            .unwrap();
        assert_eq!(active().await, ["manual_due"], "13 days before: a reminder");
        clock.advance_ms(14 * 86_400_000);
        daemon::check_ages(&engine, &runtime, clock.now_ms())
            .await
            .unwrap();
        daemon::check_ages(&engine, &runtime, clock.now_ms())
            .await
            .unwrap();
        assert_eq!(active().await, ["manual_due", "manual_overdue"]);
        let overdue = store.active_alerts().await.unwrap().remove(1);
        assert!(
            overdue.payload.contains("console.vendor.example"),
            "{}",
            overdue.payload
        );

        // Confirmed: the age starts again and the alerts resolve.
        let now = clock.now_ms();
        let audit = rotor::store::AuditEntry::new("cli:alice", "confirm")
            .credential("vendor/console-key")
            .detail("rotated by hand");
        store
            .confirm_manual("vendor/console-key", None, &audit, now)
            .await
            .unwrap();
        runtime
            .alerter
            .resolve(
                &store,
                "vendor/console-key",
                rotor::alert::Condition::RESOLVED_BY_ROTATION,
                &[],
                now,
            )
            .await
            .unwrap();
        assert!(active().await.is_empty());
        let row = store
            .credential("vendor/console-key")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(row.current_since, Some(now));
        clock.advance_ms(60 * 86_400_000);
        daemon::check_ages(&engine, &runtime, clock.now_ms())
            .await
            .unwrap();
        assert!(
            active().await.is_empty(),
            "60 days after confirmation: quiet"
        );
        assert!(store.run_totals().await.unwrap().is_empty(), "no run ever");
    }

    #[tokio::test]
    async fn the_age_check_reaches_every_credential_past_its_first_page() {
        use rotor::clock::Clock;
        let dir = tempfile::tempdir().unwrap();
        // One more than a page of the age check.
        let count = 1_001;
        let mut text = format!(
            "[vaults.local]\nkind = \"file\"\ndir = \"{dir}/vault\"\nidentity = {{ file = \"{dir}/vault.key\" }}\n",
            dir = dir.path().display()
        );
        for i in 0..count {
            text.push_str(&format!(
                "[[credential]]\nid = \"app/key{i:04}\"\nschedule = {{ every = \"30d\" }}\n\
                 vault = {{ name = \"local\", path = \"app/key{i:04}\" }}\nrotator = {{ kind = \"generated\", length = 32 }}\n"
            ));
        }
        let (store, clock, runtime, engine) = engine_for(dir.path(), &text).await;

        // Due now, and no replica plans them: two hours later every one has missed its window.
        clock.advance_ms(2 * 3_600_000);
        daemon::check_ages(&engine, &runtime, clock.now_ms())
            .await
            .unwrap();
        let mut overdue: Vec<String> = store
            .active_alerts()
            .await
            .unwrap()
            .into_iter()
            .filter(|a| a.condition == "overdue")
            .map(|a| a.credential_id)
            .collect();
        overdue.sort();
        assert_eq!(overdue.len(), count, "one overdue alert a credential");
        let expected: Vec<String> = (0..count).map(|i| format!("app/key{i:04}")).collect();
        assert_eq!(overdue, expected);
    }

    #[tokio::test]
    async fn a_candidate_that_fails_verification_is_rolled_back_and_current_is_untouched() {
        use rotor::clock::Clock;
        let mut world = World::new().await;
        world.finish().await;
        world.clock.advance_ms(GRACE_MS + 1);
        let v1 = world.current().await;
        let run = daemon::new_run(
            "app/key",
            "manual",
            false,
            std::time::Duration::from_millis(GRACE_MS as u64),
            world.clock.now_ms(),
        );
        world
            .store
            .request_rotation(&run, "test", world.clock.now_ms())
            .await
            .unwrap();
        // Die after apply, then swap the pending version for another value under the same token:
        // the vault now returns something other than what rotor stored.
        assert!(matches!(
            world.work(Some("apply:after")).await,
            Some(Err(EngineError::Crashed(_)))
        ));
        let vault = world.runtime.vaults.get("local").unwrap();
        let pending = vault.read_pending("app/key").await.unwrap().unwrap();
        let token = pending.token.clone().unwrap();
        std::fs::remove_file(world._dir.path().join("vault/app/key.age.pending")).unwrap();
        let other = rotor_rotators::Credential::new()
            .with("value", secrecy::SecretString::from("X".repeat(24)));
        vault
            .write_pending("app/key", &token, &other, Previous::Kept)
            .await
            .unwrap();
        world.clock.advance_ms(LEASE_MS + 1);
        let driven = world.work(None).await.unwrap().unwrap();
        assert_eq!(driven, Driven::Finished(RunState::RolledBack));
        let after = world.current().await;
        assert_eq!(after.current.version, v1.current.version);
        assert_eq!(value(&after.current), value(&v1.current));
        let vault = world.runtime.vaults.get("local").unwrap();
        assert!(
            vault.read_pending("app/key").await.unwrap().is_none(),
            "the candidate is removed"
        );
        let row = world.store.credential("app/key").await.unwrap().unwrap();
        assert!(row.last_error.unwrap().contains("verify failed"));
        assert_eq!(row.consecutive_failures, 1);
        assert!(
            row.next_due_at.unwrap() > world.clock.now_ms(),
            "retried later, not in a hot loop"
        );
    }

    /// A rotator with a bug: its step panics for one credential.
    struct PanicsIn {
        credential: &'static str,
        steps: Vec<rotor::engine::state::Step>,
        panics: std::sync::atomic::AtomicUsize,
    }

    impl Disturbance for PanicsIn {
        fn replaces(
            &self,
            target: &Target<'_>,
            step: rotor::engine::state::Step,
        ) -> Option<rotor::engine::StepError> {
            if target.credential == self.credential && self.steps.contains(&step) {
                self.panics
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                panic!("the {} rotator's {step} has a bug", target.provider);
            }
            None
        }
    }

    /// Two credentials due at once; `buggy` panics in `steps`. One pass of `rotor run --once`
    /// in-process, then another.
    async fn daemon_with_a_panicking_rotator(
        steps: Vec<rotor::engine::state::Step>,
    ) -> (
        tempfile::TempDir,
        Store,
        Arc<PanicsIn>,
        [daemon::RunSummary; 2],
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut text = format!(
            "[defaults]\ngrace = \"0s\"\n[vaults.local]\nkind = \"file\"\ndir = \"{dir}/vault\"\nidentity = {{ file = \"{dir}/vault.key\" }}\n",
            dir = dir.path().display()
        );
        for id in ["app/buggy", "app/sound"] {
            text.push_str(&format!(
                "[[credential]]\nid = \"{id}\"\nschedule = {{ every = \"30d\" }}\n\
                 vault = {{ name = \"local\", path = \"{id}\" }}\nrotator = {{ kind = \"generated\", length = 32 }}\n"
            ));
        }
        let (store, _clock, runtime, mut engine) = engine_for(dir.path(), &text).await;
        let panicking = Arc::new(PanicsIn {
            credential: "app/buggy",
            steps,
            panics: Default::default(),
        });
        engine.disturbance = Some(panicking.clone());
        let (engine, runtime) = (Arc::new(engine), Arc::new(runtime));
        let mut summaries = Vec::new();
        for _ in 0..2 {
            let (published, _) = tokio::sync::watch::channel(runtime.clone());
            let (_signal, signals) = tokio::sync::mpsc::channel(1);
            let summary = daemon::Daemon {
                engine: engine.clone(),
                runtime: runtime.clone(),
                options: daemon::DaemonOptions {
                    once: true,
                    ..Default::default()
                },
                published,
                lag: Default::default(),
            }
            .run(signals, || async { Err("no reload here".to_owned()) })
            .await
            .expect("the daemon outlives a panicking rotator");
            summaries.push(summary);
        }
        let summaries: [daemon::RunSummary; 2] = summaries.try_into().unwrap();
        (dir, store, panicking, summaries)
    }

    async fn last_run(store: &Store, credential: &str) -> rotor::store::RunRow {
        store.runs(Some(credential), 1).await.unwrap().remove(0)
    }

    #[tokio::test]
    async fn a_panicking_rotator_rolls_its_run_back_and_the_daemon_rotates_the_others() {
        use rotor::engine::state::Step;
        let (_dir, store, panicking, [first, second]) =
            daemon_with_a_panicking_rotator(vec![Step::Verify]).await;
        assert_eq!((first.completed, first.rolled_back), (1, 1), "{first:?}");
        assert_eq!(
            last_run(&store, "app/sound").await.state,
            RunState::Completed
        );
        let buggy = last_run(&store, "app/buggy").await;
        assert_eq!(buggy.state, RunState::RolledBack);
        let steps = store.steps(&buggy.id).await.unwrap();
        let verify = steps.iter().find(|s| s.step == "verify").unwrap();
        assert_eq!(verify.outcome, "failed");
        assert!(
            verify
                .error
                .as_deref()
                .unwrap()
                .contains("rotor panicked (the generated rotator's verify has a bug)"),
            "{verify:?}"
        );
        assert!(
            steps
                .iter()
                .any(|s| s.step == "rollback" && s.outcome == "ok")
        );
        let alerts = store.active_alerts().await.unwrap();
        assert!(
            alerts
                .iter()
                .any(|a| a.credential_id == "app/buggy" && a.condition == "rolled_back"),
            "an alert names the credential: {:?}",
            alerts
                .iter()
                .map(|a| (&a.credential_id, &a.condition))
                .collect::<Vec<_>>()
        );
        // Rolled back is over: the next pass has nothing of it to do.
        assert_eq!(second.claimed, 0, "{second:?}");
        assert_eq!(
            panicking.panics.load(std::sync::atomic::Ordering::SeqCst),
            1
        );
    }

    #[tokio::test]
    async fn a_run_whose_rollback_panics_too_is_stuck_not_retried_in_a_loop() {
        use rotor::engine::state::Step;
        let (_dir, store, panicking, [first, second]) =
            daemon_with_a_panicking_rotator(vec![Step::Verify, Step::Rollback]).await;
        assert_eq!((first.completed, first.stuck), (1, 1), "{first:?}");
        let buggy = last_run(&store, "app/buggy").await;
        assert_eq!(buggy.state, RunState::Stuck);
        assert_eq!(buggy.stuck_from, Some(RunState::RollingBack));
        let alerts = store.active_alerts().await.unwrap();
        assert!(
            alerts
                .iter()
                .any(|a| a.credential_id == "app/buggy" && a.condition == "stuck"),
            "{:?}",
            alerts
                .iter()
                .map(|a| (&a.credential_id, &a.condition))
                .collect::<Vec<_>>()
        );
        // A stuck run waits for a person: the next pass does not drive it again.
        assert_eq!(second.claimed, 0, "{second:?}");
        assert_eq!(
            panicking.panics.load(std::sync::atomic::Ordering::SeqCst),
            2
        );
    }

    /// The world's credential rotated once (a first version, no grace), then again, that
    /// second run left waiting in its grace.
    async fn into_grace(world: &mut World) {
        use rotor::clock::Clock;
        world.finish().await;
        let run = daemon::new_run(
            &world.id,
            "manual",
            false,
            std::time::Duration::from_millis(GRACE_MS as u64),
            world.clock.now_ms(),
        );
        world
            .store
            .request_rotation(&run, "test", world.clock.now_ms())
            .await
            .unwrap();
        let driven = world.work(None).await;
        assert!(matches!(driven, Some(Ok(Driven::Waiting(_)))), "{driven:?}");
    }

    fn asking(world: &World) -> Asking<'static> {
        Asking {
            actor: "test",
            reason: "found in a public repository",
            clock: Arc::new(world.clock.clone()),
            stopping: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// After an emergency: one version in the vault, none of `exposed`, nothing pending, the
    /// store agreeing, no live run.
    async fn only_fresh(world: &World, exposed: &[String]) {
        let doc = world.current().await;
        assert!(doc.previous.is_none(), "a previous version is left");
        assert!(
            !exposed.contains(&value(&doc.current)),
            "an exposed value is current"
        );
        let vault = world.runtime.vaults.get("local").unwrap();
        assert!(vault.read_pending(&world.path).await.unwrap().is_none());
        assert!(world.store.live_run(&world.id).await.unwrap().is_none());
        let recorded = world.store.credential(&world.id).await.unwrap().unwrap();
        assert_eq!(
            recorded.current_fingerprint,
            world
                .store
                .fingerprint_key()
                .of_hex(&doc.current.fingerprint)
        );
    }

    /// The emergency completes the live run (its grace cut short), then replaces the current
    /// credential: only a fresh version is left.
    async fn replaced_after_completing(world: &World, exposed: &[String], case: &str) {
        let out = emergency::rotate(&world.store, &world.runtime, &world.id, &asking(world))
            .await
            .unwrap();
        assert!(
            matches!(
                &out,
                Emergency::Done {
                    interrupted: Some((_, RunState::Completed)),
                    ..
                }
            ),
            "{case}: {out:?}"
        );
        only_fresh(world, exposed).await;
    }

    #[tokio::test]
    async fn an_emergency_in_grace_leaves_one_fresh_version_in_every_vault() {
        for kind in [
            VaultKind::File,
            VaultKind::OpenBao,
            VaultKind::Aws,
            VaultKind::Gcp,
        ] {
            let mut world = World::with_vault(kind).await;
            into_grace(&mut world).await;
            let before = world.current().await;
            let previous = before
                .previous
                .as_ref()
                .expect("grace keeps the previous version");
            let exposed = [value(&before.current), value(previous)];
            replaced_after_completing(&world, &exposed, &format!("{kind:?}")).await;
        }
    }

    /// A worker that died mid-verify (its lease still running) is fenced off: the emergency
    /// waits out its lease, rolls its candidate back, then rotates; the dead worker's late
    /// save is refused.
    #[tokio::test]
    async fn an_emergency_before_promotion_rolls_the_live_run_back_past_a_hung_worker() {
        use rotor::clock::Clock;
        let mut world = World::new().await;
        world.finish().await;
        let exposed = [value(&world.current().await.current)];
        let run = daemon::new_run(
            &world.id,
            "manual",
            false,
            std::time::Duration::ZERO,
            world.clock.now_ms(),
        );
        world
            .store
            .request_rotation(&run, "test", world.clock.now_ms())
            .await
            .unwrap();
        let died = world.work(Some("verify:before")).await;
        assert!(
            matches!(died, Some(Err(EngineError::Crashed(_)))),
            "{died:?}"
        );
        let hung = world.store.run(&run.id).await.unwrap().unwrap();
        assert_eq!(hung.state(), RunState::Applied);
        assert!(
            hung.lease_until.unwrap() > world.clock.now_ms(),
            "the hung worker's lease runs"
        );

        let asking = asking(&world);
        let emergency = {
            let (store, runtime, id) = (world.store.clone(), &world.runtime, world.id.clone());
            async move { emergency::rotate(&store, runtime, &id, &asking).await }
        };
        let clock = world.clock.clone();
        let lease_passes = async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            clock.advance_ms(LEASE_MS + 1);
        };
        let (out, ()) = tokio::join!(emergency, lease_passes);
        let out = out.unwrap();
        assert!(
            matches!(&out, Emergency::Done { interrupted: Some((id, RunState::RolledBack)), .. } if *id == run.id),
            "{out:?}"
        );
        only_fresh(&world, &exposed).await;
        // The hung worker wakes up and tries to go on: its lease is gone.
        let engine = world.engine(None);
        let late = engine.drive(&world.runtime, hung).await;
        assert!(
            late.is_err(),
            "a fenced-off worker's step went on: {late:?}"
        );
    }

    /// A run stuck after promotion resumes under the emergency, then the fresh rotation.
    #[tokio::test]
    async fn an_emergency_resumes_a_stuck_run_first() {
        let mut world = World::new().await;
        into_grace(&mut world).await;
        let before = world.current().await;
        let exposed = [
            value(&before.current),
            value(before.previous.as_ref().unwrap()),
        ];
        let live = world.store.live_run(&world.id).await.unwrap().unwrap();
        // As a retire that failed for good leaves it.
        {
            use sqlx::Connection;
            let url = format!("sqlite://{}/rotor.db", world._dir.path().display());
            let mut db = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query(
                "UPDATE runs SET state = 'stuck', stuck_from = 'promoted', last_error = 'retire failed' WHERE id = $1",
            )
            .bind(&live.id)
            .execute(&mut db)
            .await
            .unwrap();
        }
        replaced_after_completing(&world, &exposed, "stuck").await;
    }
}
