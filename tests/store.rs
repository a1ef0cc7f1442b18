//! The store suite, run against both backends: SQLite in a temp folder and a real PostgreSQL
//! started on loopback by the harness (one server for this test binary).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};

use rotor::engine::state::RunState;
use rotor::store::outbox::Channel;
use rotor::store::{
    AuditEntry, DesiredCredential, Durability, NewRun, Pause, ReconcileChange, RunRow, StepEnd,
    Store, StoreError, Then,
};

static NEXT_DB: AtomicUsize = AtomicUsize::new(0);

/// Opens a store with this file's integrity key (a PostgreSQL store has none of its own).
async fn connect(url: &str) -> Result<Store, StoreError> {
    let key = rotor::store::integrity::IntegrityKey::from_bytes(&[42; 32]).unwrap();
    Store::open(url, None, Some(key), false).await
}

/// A fresh store of each kind: (label, url, folder kept alive for SQLite).
fn backends() -> Vec<(&'static str, String, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite://{}", dir.path().join("rotor.db").display());
    let name = format!(
        "store_{}_{}",
        std::process::id(),
        NEXT_DB.fetch_add(1, Ordering::SeqCst)
    );
    let pg = support::postgres::shared().database(&name);
    vec![("sqlite", sqlite, Some(dir)), ("postgres", pg, None)]
}

fn desired(id: &str, hash: &str) -> DesiredCredential<'static> {
    DesiredCredential {
        id: id.to_owned().into(),
        provider: "generated",
        vault: "local".into(),
        vault_path: id.to_owned().into(),
        schedule_hash: hash.to_owned().into(),
    }
}

fn run_for(credential: &str, n: usize) -> NewRun {
    NewRun {
        id: format!("run_{credential}_{n}"),
        credential_id: credential.into(),
        token: format!("token_{credential}_{n}"),
        reason: "schedule".into(),
        emergency: false,
        grace_ms: 1000,
        not_before: 0,
        drill: None,
    }
}

#[tokio::test]
async fn claims_take_expired_leases_first_then_the_oldest_due() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let ids = ["a", "b", "c"];
        let desired: Vec<_> = ids.iter().map(|id| desired(id, "h")).collect();
        store
            .reconcile(&desired, 0, |_, _| (Some(0), "initial"))
            .await
            .unwrap();
        let runs: Vec<NewRun> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| NewRun {
                not_before: i as i64 + 1,
                ..run_for(id, 1)
            })
            .collect();
        assert_eq!(store.insert_runs(&runs, 1).await.unwrap(), 3, "{label}");
        let claimed = |worker: &'static str, now: i64, limit: i64| {
            let store = store.clone();
            async move {
                let mut ids: Vec<String> = store
                    .claim(worker, now, now + 10, limit)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                ids.sort();
                ids
            }
        };
        assert_eq!(
            claimed("w1", 10, 1).await,
            ["run_a_1"],
            "{label}: oldest due"
        );
        assert_eq!(
            claimed("w2", 30, 1).await,
            ["run_a_1"],
            "{label}: the expired lease (a run half done) before runs due longer ago"
        );
        assert_eq!(
            claimed("w3", 30, 5).await,
            ["run_b_1", "run_c_1"],
            "{label}: then the rest; a live lease is not taken"
        );
        assert_eq!(
            store.next_wakeup(30).await.unwrap(),
            Some(40),
            "{label}: the earliest lease expiry"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn reconcile_adds_recomputes_marks_removed_and_restores() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let due = |_: &str, since: Option<i64>| (Some(since.unwrap_or(0) + 100), "schedule");
        let changes = store
            .reconcile(&[desired("a", "h1"), desired("b", "h1")], 10, due)
            .await
            .unwrap();
        assert_eq!(changes.len(), 2, "{label}");
        assert!(
            store
                .reconcile(&[desired("a", "h1"), desired("b", "h1")], 11, due)
                .await
                .unwrap()
                .is_empty(),
            "{label}: unchanged config changes nothing"
        );
        let changes = store
            .reconcile(&[desired("a", "h2")], 12, due)
            .await
            .unwrap();
        assert_eq!(
            changes,
            vec![
                ReconcileChange::ScheduleChanged {
                    id: "a".into(),
                    next_due_at: Some(100)
                },
                ReconcileChange::Removed { id: "b".into() }
            ],
            "{label}"
        );
        let b = store.credential("b").await.unwrap().unwrap();
        assert_eq!(
            b.removed_at,
            Some(12),
            "{label}: removed is marked, not deleted"
        );
        let changes = store
            .reconcile(&[desired("a", "h2"), desired("b", "h1")], 13, due)
            .await
            .unwrap();
        assert_eq!(
            changes,
            vec![ReconcileChange::Restored { id: "b".into() }],
            "{label}"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn one_live_run_per_credential_and_each_claim_goes_to_one_worker() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let ids: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
        let desired: Vec<_> = ids.iter().map(|id| desired(id, "h")).collect();
        store
            .reconcile(&desired, 0, |_, _| (Some(0), "initial"))
            .await
            .unwrap();
        let runs: Vec<NewRun> = ids.iter().map(|id| run_for(id, 1)).collect();
        assert_eq!(store.insert_runs(&runs, 1).await.unwrap(), 40, "{label}");
        let again: Vec<NewRun> = ids.iter().map(|id| run_for(id, 2)).collect();
        assert_eq!(
            store.insert_runs(&again, 1).await.unwrap(),
            0,
            "{label}: a second live run is refused"
        );
        assert!(
            store.due_credentials(5, 100).await.unwrap().is_empty(),
            "{label}: credentials with a live run are not due"
        );

        // Four workers claim at once; every run ends up with exactly one of them.
        let mut handles = Vec::new();
        for w in 0..4 {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim(&format!("w{w}"), 10, 10_000, 3).await.unwrap();
                    if got.is_empty() {
                        break mine;
                    }
                    mine.extend(got.into_iter().map(|r| r.id));
                }
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap());
        }
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(
            (before, all.len()),
            (40, 40),
            "{label}: each run claimed exactly once"
        );

        // After the lease expires another worker reclaims; the old owner is fenced off.
        let run = store.run("run_c0_1").await.unwrap().unwrap();
        let old_owner = run.lease_owner.clone().unwrap();
        assert!(
            store
                .claim("late", 10_001, 20_000, 100)
                .await
                .unwrap()
                .len()
                == 40,
            "{label}: expired leases are reclaimed"
        );
        let mut stale = run.clone();
        stale.set_state(RunState::PendingStored);
        let err = store
            .save_run(
                &stale,
                RunState::Planned,
                &old_owner,
                None,
                None,
                &AuditEntry::new("t", "step"),
                10_002,
                Then::begin("apply"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseLost { .. }),
            "{label}: {err}"
        );
        let err = store
            .begin_step(&run, "mint", &old_owner, 10_002, Durability::Synced)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::LeaseLost { .. }),
            "{label}: a step does not begin under a lost lease: {err}"
        );
        assert_eq!(
            store.run("run_c0_1").await.unwrap().unwrap().state(),
            RunState::Planned,
            "{label}: fenced save wrote nothing"
        );
        store
            .save_run(
                &stale,
                RunState::Planned,
                "late",
                None,
                None,
                &AuditEntry::new("t", "step"),
                10_003,
                Then::begin("apply"),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .steps("run_c0_1")
                .await
                .unwrap()
                .iter()
                .map(|s| (s.step.as_str(), s.outcome.as_str()))
                .collect::<Vec<_>>(),
            [("apply", "running")],
            "{label}: the next step begins in the save's transaction, and only when it lands"
        );
        assert_eq!(
            store.run("run_c0_1").await.unwrap().unwrap().state(),
            RunState::PendingStored,
            "{label}"
        );
        assert!(
            store.verify_audit().await.unwrap().is_ok(),
            "{label}: the audit chain holds across fenced and accepted saves"
        );
        store.close().await;
    }
}

/// Many workers saving at once (either backend writes them as groups in one transaction): each write
/// keeps its own compare-and-swap, a fenced one among them costs the others nothing, audit rows
/// written meanwhile by other statements keep the chain whole, and every step's `seq` goes
/// back to the worker that asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saves_arriving_together_keep_their_own_fences_and_one_audit_chain() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let ids: Vec<String> = (0..60).map(|i| format!("g{i}")).collect();
        let desired: Vec<_> = ids.iter().map(|id| desired(id, "h")).collect();
        store
            .reconcile(&desired, 0, |_, _| (Some(0), "initial"))
            .await
            .unwrap();
        let runs: Vec<NewRun> = ids[..40].iter().map(|id| run_for(id, 1)).collect();
        store.insert_runs(&runs, 1).await.unwrap();
        let claimed = store.claim("w", 10, 100_000, 100).await.unwrap();
        assert_eq!(claimed.len(), 40, "{label}");
        let before = store.verify_audit().await.unwrap().unwrap();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(claimed.len() + 1));
        let mut tasks = Vec::new();
        for (i, run) in claimed.into_iter().enumerate() {
            let (store, start) = (store.clone(), start.clone());
            // Every fourth run is saved by a worker that does not hold it.
            let worker = if i % 4 == 0 { "intruder" } else { "w" };
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let begun = store
                    .begin_step(&run, "mint", worker, 20, Durability::Synced)
                    .await;
                let seq = match begun {
                    Ok(begun) => begun.seq,
                    Err(e) => return (run.id, worker, Err(e)),
                };
                let mut saved = run.clone();
                saved.set_state(RunState::PendingStored);
                let end = StepEnd {
                    seq,
                    outcome: "ok",
                    error: None,
                };
                let audit = AuditEntry::new(worker, "mint").run(&run.id).detail("test");
                let outcome = store
                    .save_run(
                        &saved,
                        RunState::Planned,
                        worker,
                        Some(&end),
                        None,
                        &audit,
                        30,
                        Then::begin("apply"),
                    )
                    .await
                    .map(|next| (seq, next.map(|b| b.seq)));
                (run.id, worker, outcome)
            }));
        }
        // Audit rows written by other statements while the saves are in flight.
        let planner = {
            let (store, start) = (store.clone(), start.clone());
            let later: Vec<NewRun> = ids[40..].iter().map(|id| run_for(id, 1)).collect();
            tokio::spawn(async move {
                start.wait().await;
                for run in later {
                    store.insert_runs(&[run], 25).await.unwrap();
                }
            })
        };
        for task in tasks {
            let (id, worker, outcome) = task.await.unwrap();
            match (worker, outcome) {
                ("w", Ok((seq, next))) => {
                    assert_eq!(
                        (seq, next),
                        (1, Some(2)),
                        "{label}: {id}'s own step numbers"
                    );
                    let steps = store.steps(&id).await.unwrap();
                    assert_eq!(
                        steps
                            .iter()
                            .map(|s| (s.step.as_str(), s.outcome.as_str()))
                            .collect::<Vec<_>>(),
                        [("mint", "ok"), ("apply", "running")],
                        "{label}: {id}"
                    );
                    assert_eq!(
                        store.run(&id).await.unwrap().unwrap().state(),
                        RunState::PendingStored
                    );
                }
                ("intruder", Err(StoreError::LeaseLost { run_id, .. })) => {
                    assert_eq!(run_id, id, "{label}");
                    assert!(
                        store.steps(&id).await.unwrap().is_empty(),
                        "{label}: {id}: fenced, nothing written"
                    );
                    assert_eq!(
                        store.run(&id).await.unwrap().unwrap().state(),
                        RunState::Planned
                    );
                }
                (worker, outcome) => panic!("{label}: {id} by {worker}: {outcome:?}"),
            }
        }
        planner.await.unwrap();
        // 20 runs planned meanwhile, 30 saves.
        assert_eq!(
            store.verify_audit().await.unwrap(),
            Ok(before + 50),
            "{label}: one whole chain"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn an_edited_or_deleted_audit_row_is_found_and_named() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        for i in 0..5 {
            store
                .audit(
                    &AuditEntry::new("test", "cli").detail(format!("action {i}")),
                    i,
                )
                .await
                .unwrap();
        }
        assert_eq!(store.verify_audit().await.unwrap(), Ok(5), "{label}");
        tamper(&url, "UPDATE audit SET detail = 'action X' WHERE seq = 3").await;
        let problem = store.verify_audit().await.unwrap().unwrap_err();
        assert!(problem.contains("row 3 was modified"), "{label}: {problem}");
        tamper(&url, "UPDATE audit SET detail = 'action 2' WHERE seq = 3").await;
        assert_eq!(
            store.verify_audit().await.unwrap(),
            Ok(5),
            "{label}: restoring the row restores the chain"
        );
        tamper(&url, "DELETE FROM audit WHERE seq = 2").await;
        let problem = store.verify_audit().await.unwrap().unwrap_err();
        assert!(problem.contains("row 2 is missing"), "{label}: {problem}");
        store.close().await;
    }
}

/// A store whose chain was written before the chain was keyed is rehashed under the key once,
/// when first opened with it, and says so in a row of its own; after that, a chain recomputed
/// without the key (all anyone who can write the database can do) is found.
#[tokio::test]
async fn an_unkeyed_chain_is_keyed_once_and_then_cannot_be_recomputed_without_the_key() {
    use rotor::store::audit::{GENESIS, unkeyed_row_hash};
    let entry = |i: i64| AuditEntry::new("test", "cli").detail(format!("action {i}"));
    // The statements that turn rows 1..=n into the unkeyed chain an older rotor wrote, the
    // row `forged` (if any) saying "forged" instead.
    let unkeyed = |n: i64, forged: Option<i64>| {
        let mut prev = GENESIS.to_owned();
        let mut sql = String::new();
        for i in 1..=n {
            let mut e = entry(i - 1);
            if forged == Some(i) {
                e = e.detail("forged");
            }
            let hash = unkeyed_row_hash(&prev, i, i - 1, &e);
            sql.push_str(&format!(
                "UPDATE audit SET detail = '{}', prev_hash = '{prev}', hash = '{hash}' WHERE seq = {i};\n",
                e.detail
            ));
            prev = hash;
        }
        sql.push_str(&format!(
            "UPDATE audit_head SET hash = '{prev}', keyed = 0 WHERE id = 1;"
        ));
        sql
    };
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        for i in 0..5 {
            store.audit(&entry(i), i).await.unwrap();
        }
        store.close().await;
        tamper(&url, &unkeyed(5, None)).await;

        let store = connect(&url).await.unwrap();
        assert_eq!(
            store.verify_audit().await.unwrap(),
            Ok(6),
            "{label}: five rows and the keying"
        );
        store.close().await;
        let store = connect(&url).await.unwrap();
        assert_eq!(
            store.verify_audit().await.unwrap(),
            Ok(6),
            "{label}: keyed once"
        );

        // Row 3 forged and the chain recomputed as the unkeyed chain was: no longer accepted.
        tamper(&url, &unkeyed(6, Some(3)).replace("keyed = 0", "keyed = 1")).await;
        let problem = store.verify_audit().await.unwrap().unwrap_err();
        assert!(problem.contains("row 1 was modified"), "{label}: {problem}");
        store.close().await;
    }
}

/// A store written before fingerprints were keyed holds SHA-256 digests: the first open with
/// a key rewrites each (credentials, runs, value fingerprints, notification payloads) as its
/// keyed form, once, says so in the audit log, and leaves what is not a digest as it was.
#[tokio::test]
async fn a_store_s_fingerprints_are_keyed_once_where_it_holds_digests() {
    use rotor_rotators::Fingerprint;
    let digest = |v: &str| Fingerprint::of_value(v.as_bytes());
    let (current, pending, value) = (digest("one"), digest("two"), digest("two-field"));
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let key = store.fingerprint_key().clone();
        store
            .reconcile(&[desired("a", "h"), desired("b", "h")], 0, |_, _| {
                (Some(0), "initial")
            })
            .await
            .unwrap();
        store.insert_runs(&[run_for("a", 1)], 1).await.unwrap();
        store
            .record_minted("a", "run_a_1", &[("value", "placeholder".into())], 2)
            .await
            .unwrap();
        store.close().await;
        // As an older rotor left it: digests everywhere, not yet keyed.
        let payload = serde_json::json!({
            "event": "promoted",
            "fingerprint": format!("sha256:{}", pending.to_hex()),
            "previous_fingerprint": format!("sha256:{}", current.to_hex()),
        });
        tamper(
            &url,
            &format!(
                "UPDATE credentials SET current_fingerprint = '{c}' WHERE id = 'a';
                 UPDATE credentials SET current_fingerprint = 'not-a-digest' WHERE id = 'b';
                 UPDATE runs SET pending_fingerprint = '{p}', replaced_fingerprint = '{c}';
                 UPDATE value_fingerprints SET fingerprint = '{v}';
                 INSERT INTO outbox (channel, run_id, credential_id, target, event, payload, created_at, next_attempt_at)
                     VALUES ('notify', 'run_a_1', 'a', 'consumer', 'promoted', '{payload}', 3, 3);
                 UPDATE audit_head SET fingerprints_keyed = 0 WHERE id = 1;",
                c = current.to_hex(),
                p = pending.to_hex(),
                v = value.to_hex(),
            ),
        )
        .await;

        for open in ["first open", "second open"] {
            let store = connect(&url).await.unwrap();
            let a = store.credential("a").await.unwrap().unwrap();
            assert_eq!(
                a.current_fingerprint,
                Some(key.of(&current)),
                "{label} {open}"
            );
            let b = store.credential("b").await.unwrap().unwrap();
            assert_eq!(
                b.current_fingerprint.as_deref(),
                Some("not-a-digest"),
                "{label}"
            );
            let run = store.run("run_a_1").await.unwrap().unwrap();
            assert_eq!(
                run.pending_fingerprint,
                Some(key.of(&pending)),
                "{label} {open}"
            );
            assert_eq!(run.replaced_fingerprint, Some(key.of(&current)), "{label}");
            assert_eq!(
                store.minted(&key.of(&value)).await.unwrap().len(),
                1,
                "{label}"
            );
            assert!(
                store.minted(&value.to_hex()).await.unwrap().is_empty(),
                "{label}"
            );
            let payload: serde_json::Value =
                serde_json::from_str(&fetch_text(&url, "SELECT payload FROM outbox").await[0])
                    .unwrap();
            assert_eq!(
                payload["fingerprint"],
                format!("hmac-sha256:{}", key.of(&pending)),
                "{label} {open}"
            );
            let keyings = fetch_text(
                &url,
                "SELECT detail FROM audit WHERE action = 'fingerprints_keyed'",
            )
            .await;
            assert_eq!(keyings.len(), 1, "{label} {open}: keyed once, {keyings:?}");
            assert!(
                keyings[0].contains("1 credentials.current_fingerprint")
                    && keyings[0].contains("1 notification payloads")
                    && keyings[0].contains("1 were not SHA-256 digests"),
                "{label}: {}",
                keyings[0]
            );
            assert!(store.verify_audit().await.unwrap().is_ok(), "{label}");
            store.close().await;
        }
        // No digest is left anywhere in the store but the audit row's own count.
        for (table, column) in [
            ("credentials", "current_fingerprint"),
            ("runs", "pending_fingerprint"),
            ("runs", "replaced_fingerprint"),
            ("value_fingerprints", "fingerprint"),
            ("outbox", "payload"),
        ] {
            for text in fetch_text(
                &url,
                &format!("SELECT {column} FROM {table} WHERE {column} IS NOT NULL"),
            )
            .await
            {
                for d in [&current, &pending, &value] {
                    assert!(
                        !text.contains(&d.to_hex()),
                        "{label}: {table}.{column} = {text}"
                    );
                }
            }
        }
    }
}

/// The first column of every row `sql` returns, as text.
async fn fetch_text(url: &str, sql: &str) -> Vec<String> {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if url.starts_with("sqlite:") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_scalar(sql).fetch_all(&mut c).await.unwrap()
    }
}

#[tokio::test]
async fn a_store_at_a_newer_schema_is_refused_and_left_unchanged() {
    for (label, url, _keep) in backends() {
        connect(&url).await.unwrap().close().await;
        tamper(
            &url,
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (9999, 'from the future', true, '\\x00', 1)",
        )
        .await;
        let err = connect(&url).await.err().expect("newer schema refused");
        let shown = err.to_string();
        assert!(
            matches!(err, StoreError::SchemaTooNew { found: 9999, .. }),
            "{label}: {shown}"
        );
        assert!(shown.contains("upgrade rotor"), "{label}: {shown}");
    }
}

#[tokio::test]
async fn an_unreachable_store_is_a_clear_error() {
    let port = support::postgres::free_port();
    let err = connect(&format!("postgres://rotor@127.0.0.1:{port}/x"))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert!(err.to_string().contains("unavailable"), "{err}");
}

/// Runs raw SQL against a store, as an attacker or a careless person would.
async fn tamper(url: &str, sql: &str) {
    use sqlx::Connection;
    if url.starts_with("sqlite:") {
        let sql = sql.replace("'\\x00'", "x'00'").replace("true", "1");
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut c)
            .await
            .unwrap();
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn alerts_are_deduplicated_resolved_and_retried_from_the_outbox() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let sinks = vec!["hook".to_owned(), "pager".to_owned()];
        assert!(
            store
                .raise_alert("app/a", "rolled_back", "{}", &sinks, 1_000)
                .await
                .unwrap(),
            "{label}"
        );
        assert!(
            !store
                .raise_alert("app/a", "rolled_back", "{}", &sinks, 2_000)
                .await
                .unwrap(),
            "{label}: raised once until resolved"
        );
        assert!(
            store
                .raise_alert("app/a", "too_old", "{}", &sinks, 2_000)
                .await
                .unwrap()
        );
        let due = store
            .due_messages(Channel::Alert, 2_000, 100, None)
            .await
            .unwrap();
        assert_eq!(due.len(), 4, "{label}: one delivery per sink and condition");
        assert_eq!(store.active_alerts().await.unwrap().len(), 2);

        // One claim per attempt: a second replica finds it taken.
        assert!(store.claim_message(&due[0], 50_000).await.unwrap());
        assert!(!store.claim_message(&due[0], 50_000).await.unwrap());
        // A sink that failed waits for its backoff; one that took it is done.
        store
            .message_failed(&due[0], "HTTP 503", "sink down", 10_000)
            .await
            .unwrap();
        for d in &due[1..] {
            store
                .message_delivered(d, "HTTP 200", false, 2_000)
                .await
                .unwrap();
        }
        let due_at = |t| store.due_messages(Channel::Alert, t, 100, None);
        assert!(due_at(9_999).await.unwrap().is_empty());
        let retry = due_at(10_000).await.unwrap();
        assert_eq!(retry.len(), 1, "{label}");
        assert_eq!((retry[0].attempts, retry[0].failures), (1, 1));
        assert_eq!(
            store.next_message_at(Channel::Alert).await.unwrap(),
            Some(10_000)
        );

        let resolved = store
            .resolve_alerts("app/a", &["rolled_back", "too_old"], &sinks, 20_000)
            .await
            .unwrap();
        assert_eq!(resolved.len(), 2, "{label}");
        assert!(store.active_alerts().await.unwrap().is_empty());
        // A sink hears a condition's resolve only after its trigger: the one whose trigger
        // still waits gets the trigger first.
        let due = due_at(20_000).await.unwrap();
        let events = |due: &[rotor::store::outbox::Message]| {
            due.iter()
                .map(|d| format!("{} {} {}", d.target, d.condition, d.event))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            events(&due),
            [
                "hook rolled_back trigger",
                "pager rolled_back resolve",
                "hook too_old resolve",
                "pager too_old resolve"
            ],
            "{label}"
        );
        store
            .message_delivered(&due[0], "HTTP 200", false, 20_000)
            .await
            .unwrap();
        assert_eq!(
            events(&due_at(20_000).await.unwrap()),
            [
                "hook rolled_back resolve",
                "pager rolled_back resolve",
                "hook too_old resolve",
                "pager too_old resolve"
            ],
            "{label}"
        );
        // The notifications' rows are another channel's.
        assert!(
            store
                .due_messages(Channel::Notify, 20_000, 100, None)
                .await
                .unwrap()
                .is_empty()
        );
        // Raised again after resolution: a new incident.
        assert!(
            store
                .raise_alert("app/a", "rolled_back", "{}", &sinks, 30_000)
                .await
                .unwrap()
        );
        store.close().await;
    }
}

#[tokio::test]
async fn notifications_queue_once_in_order_are_claimed_once_and_superseded() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let hooks = vec!["hook".to_owned(), "rollout".to_owned()];
        for _ in 0..2 {
            // A step repeated after a crash queues nothing twice.
            store
                .queue_notifications("run_1", "app/a", "promoted", &hooks, "{}", 1_000)
                .await
                .unwrap();
        }
        store
            .queue_notifications("run_1", "app/a", "retired", &hooks[..1], "{}", 1_000)
            .await
            .unwrap();
        let due = store
            .due_messages(Channel::Notify, 1_000, 100, None)
            .await
            .unwrap();
        assert_eq!(
            due.iter()
                .map(|n| (&*n.target, &*n.event))
                .collect::<Vec<_>>(),
            [("hook", "promoted"), ("rollout", "promoted")],
            "{label}: `retired` waits for `promoted` to the same hook"
        );
        assert!(
            !store
                .notifications_settled("run_1", "promoted")
                .await
                .unwrap()
        );

        // One claim per attempt: a second process finds it taken.
        assert!(store.claim_message(&due[0], 50_000).await.unwrap());
        assert!(!store.claim_message(&due[0], 50_000).await.unwrap());
        store
            .message_failed(&due[0], "HTTP 503", "hook down", 3_000)
            .await
            .unwrap();
        assert!(
            store.notifications_failing("app/a").await.unwrap(),
            "{label}"
        );
        assert!(store.claim_message(&due[1], 50_000).await.unwrap());
        store
            .message_delivered(&due[1], "HTTP 200", true, 2_000)
            .await
            .unwrap();
        let retry = store
            .due_messages(Channel::Notify, 3_000, 100, None)
            .await
            .unwrap();
        assert_eq!(retry.len(), 1, "{label}");
        assert_eq!((retry[0].failures, retry[0].attempts), (1, 1));

        // A newer run supersedes what the older one could not deliver.
        store
            .queue_notifications("run_2", "app/a", "promoted", &hooks[..1], "{}", 4_000)
            .await
            .unwrap();
        let due = store
            .due_messages(Channel::Notify, 4_000, 100, Some("app/a"))
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{label}");
        assert!(
            store
                .due_messages(Channel::Notify, 4_000, 100, Some("app/b"))
                .await
                .unwrap()
                .is_empty(),
            "{label}: only the credential asked for"
        );
        assert_eq!(due[0].run_id, "run_2");
        assert!(!store.notifications_failing("app/a").await.unwrap());
        let states = store.hook_states().await.unwrap();
        let hook = states.iter().find(|s| s.hook == "hook").unwrap();
        assert_eq!((hook.run_id.as_str(), hook.undelivered), ("run_2", 1));

        // Its last hook took it: the run's `promoted` notifications are settled.
        store.claim_message(&due[0], 50_000).await.unwrap();
        store
            .message_delivered(&due[0], "HTTP 200", true, 5_000)
            .await
            .unwrap();
        assert!(
            store
                .notifications_settled("run_2", "promoted")
                .await
                .unwrap()
        );
        let counts = store.hook_counts().await.unwrap();
        let hook = counts.iter().find(|c| c.hook == "hook").unwrap();
        assert_eq!((hook.succeeded, hook.failed), (1, 1), "{label}");
        let rollout = counts.iter().find(|c| c.hook == "rollout").unwrap();
        assert_eq!((rollout.succeeded, rollout.failed), (1, 0), "{label}");
        assert_eq!(store.next_message_at(Channel::Notify).await.unwrap(), None);
        store.close().await;
    }
}

#[tokio::test]
async fn limited_claims_respect_provider_concurrency_and_buckets_refill() {
    use rotor::store::limits::ClaimLimits;
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let desired: Vec<DesiredCredential> =
            (0..5).map(|i| desired(&format!("c{i}"), "h")).collect();
        store
            .reconcile(&desired, 0, |_, _| (Some(0), "schedule"))
            .await
            .unwrap();
        let runs: Vec<NewRun> = (0..5).map(|i| run_for(&format!("c{i}"), 0)).collect();
        store.insert_runs(&runs, 0).await.unwrap();
        let limits = ClaimLimits {
            global: None,
            per_provider: [("generated".to_owned(), 2)].into(),
        };
        let first = store
            .claim_within("w1", 10, 10_000, 5, &limits)
            .await
            .unwrap();
        assert_eq!(first.len(), 2, "{label}: the provider's limit");
        let second = store
            .claim_within("w2", 10, 10_000, 5, &limits)
            .await
            .unwrap();
        assert!(second.is_empty(), "{label}: counted across workers");
        assert!(store.lease_held(&first[0].id, "w1", 9_000).await.unwrap());
        assert!(!store.lease_held(&first[0].id, "w2", 9_000).await.unwrap());
        assert!(
            !store.lease_held(&first[0].id, "w1", 10_001).await.unwrap(),
            "{label}: a lease ending before the time asked is not held"
        );
        // Expired leases free their slots.
        let third = store
            .claim_within("w2", 20_000, 30_000, 5, &limits)
            .await
            .unwrap();
        assert_eq!(third.len(), 2, "{label}");

        // A bucket of 2, refilled at 10 per second.
        assert_eq!(store.take_token("p", 10.0, 2.0, 1_000).await.unwrap(), None);
        assert_eq!(store.take_token("p", 10.0, 2.0, 1_000).await.unwrap(), None);
        let wait = store.take_token("p", 10.0, 2.0, 1_000).await.unwrap();
        assert_eq!(wait, Some(100), "{label}");
        assert_eq!(store.take_token("p", 10.0, 2.0, 1_100).await.unwrap(), None);
        store.close().await;
    }
}

/// A store with one credential, `a`, whose planned run worker `w` claimed at 10 with a lease
/// until `lease_until`.
async fn one_claimed_run(url: &str, lease_until: i64) -> (Store, RunRow) {
    let store = connect(url).await.unwrap();
    store
        .reconcile(&[desired("a", "h")], 0, |_, _| (Some(0), "schedule"))
        .await
        .unwrap();
    store.insert_runs(&[run_for("a", 0)], 0).await.unwrap();
    let run = store
        .claim("w", 10, lease_until, 1)
        .await
        .unwrap()
        .remove(0);
    (store, run)
}

#[tokio::test]
async fn a_save_never_shortens_a_lease_the_heartbeat_extended() {
    for (label, url, _keep) in backends() {
        let (store, mut run) = one_claimed_run(&url, 1_000).await;
        assert_eq!(
            store
                .heartbeat("w", std::slice::from_ref(&run.id), 50_000)
                .await
                .unwrap(),
            1
        );
        run.set_state(RunState::PendingStored);
        store
            .save_run(
                &run,
                RunState::Planned,
                "w",
                None,
                None,
                &AuditEntry::new("w", "mint"),
                20,
                Then::default(),
            )
            .await
            .unwrap();
        let saved = store.run(&run.id).await.unwrap().unwrap();
        assert_eq!(saved.lease_until, Some(50_000), "{label}");
        store.close().await;
    }
}

/// The pages of `credential_pages` (`credentials_after`; on SQLite, read through the store's own read-only
/// connections) hold every credential once, in id order, each row as `credentials` reads it.
#[tokio::test]
async fn credentials_page_by_page_are_the_credentials_in_id_order() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let wanted: Vec<DesiredCredential> =
            (0..7).map(|i| desired(&format!("c{i}"), "h")).collect();
        store
            .reconcile(&wanted, 5, |_, _| (Some(100), "schedule"))
            .await
            .unwrap();
        assert!(
            store
                .pause("c3", Some(900), "ops", "why", 10)
                .await
                .unwrap()
        );
        let mut paged = Vec::new();
        let mut pages = store.credential_pages(3);
        while let Some(page) = pages.next().await.unwrap() {
            assert!(page.len() <= 3, "{label}");
            paged.extend(page);
        }
        let all = store.credentials().await.unwrap();
        assert_eq!(paged.len(), 7, "{label}");
        assert_eq!(format!("{paged:?}"), format!("{all:?}"), "{label}");
        let c3 = paged.iter().find(|c| c.id == "c3").unwrap();
        assert_eq!((c3.paused_until, c3.next_due_at), (Some(900), Some(100)));
        assert_eq!(c3.paused_reason.as_deref(), Some("why"), "{label}");
        store.close().await;
    }
}

/// A scrape reads the run totals, alerts and hook counts of one page of credentials at a time
/// (ids after the last page's, through this page's last): the pages together read each row
/// once, in whatever order the database's collation puts the ids.
#[tokio::test]
async fn a_page_s_totals_alerts_and_hook_counts_are_the_whole_table_s_once() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        // Case, punctuation and digits: orders a locale collation and bytes disagree on.
        let ids: Vec<String> = (0..23)
            .map(|i| {
                ["app/a", "App/b", "app-c", "app_d", "app/E"][i % 5].to_owned() + &i.to_string()
            })
            .collect();
        let wanted: Vec<DesiredCredential> = ids.iter().map(|id| desired(id, "h")).collect();
        store
            .reconcile(&wanted, 0, |_, _| (Some(0), "initial"))
            .await
            .unwrap();
        let mut sql = String::new();
        for (n, id) in ids.iter().enumerate().filter(|(n, _)| n % 3 == 0) {
            sql += &format!(
                "INSERT INTO runs (id, credential_id, token, state, reason, grace_ms, not_before, \
                 created_at, finished_at, updated_at) VALUES ('r{n}', '{id}', 't{n}', 'completed', \
                 'schedule', 0, 0, 0, 5000, 0);"
            );
        }
        tamper(&url, &sql).await;
        let hooks = vec!["hook".to_owned()];
        for id in ids.iter().step_by(4) {
            store
                .raise_alert(id, "rolled_back", "{}", &hooks, 1_000)
                .await
                .unwrap();
            store
                .queue_notifications(&format!("run {id}"), id, "promoted", &hooks, "{}", 1_000)
                .await
                .unwrap();
        }

        let (mut totals, mut alerts, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        let mut pages = store.credential_pages(4);
        let mut after = String::new();
        while let Some(page) = pages.next().await.unwrap() {
            let through = page.last().unwrap().id.clone();
            let on_page = |id: &str| page.iter().any(|row| row.id == id);
            let read = store.run_totals_in(&after, &through).await.unwrap();
            assert!(read.iter().all(|t| on_page(&t.credential_id)), "{label}");
            totals.extend(
                read.into_iter()
                    .map(|t| format!("{} {} {}", t.credential_id, t.state, t.runs)),
            );
            let read = store.active_alerts_in(&after, &through).await.unwrap();
            assert!(read.iter().all(|a| on_page(&a.credential_id)), "{label}");
            alerts.extend(
                read.into_iter()
                    .map(|a| format!("{} {}", a.credential_id, a.condition)),
            );
            let read = store.hook_counts_in(&after, &through).await.unwrap();
            assert!(read.iter().all(|c| on_page(&c.credential_id)), "{label}");
            counts.extend(
                read.into_iter()
                    .map(|c| format!("{} {} {}", c.credential_id, c.hook, c.failed)),
            );
            after = through;
        }
        let whole = |mut lines: Vec<String>| {
            lines.sort();
            lines
        };
        assert_eq!(totals.len(), 8, "{label}: every third of 23 completed once");
        assert_eq!(alerts.len(), 6, "{label}: every fourth of 23 raised");
        assert_eq!(counts.len(), 6, "{label}");
        let all_totals = store.run_totals().await.unwrap();
        assert_eq!(
            whole(totals),
            whole(
                all_totals
                    .into_iter()
                    .map(|t| format!("{} {} {}", t.credential_id, t.state, t.runs))
                    .collect()
            ),
            "{label}"
        );
        let all_alerts = store.active_alerts().await.unwrap();
        assert_eq!(
            whole(alerts),
            whole(
                all_alerts
                    .into_iter()
                    .map(|a| format!("{} {}", a.credential_id, a.condition))
                    .collect()
            ),
            "{label}"
        );
        let all_counts = store.hook_counts().await.unwrap();
        assert_eq!(
            whole(counts),
            whole(
                all_counts
                    .into_iter()
                    .map(|c| format!("{} {} {}", c.credential_id, c.hook, c.failed))
                    .collect()
            ),
            "{label}"
        );
        store.close().await;
    }
}

/// The emergencies started together: those without a live run are planned, cleared of their
/// due time, claimed for the worker and audited; one with a live run, and one the store does
/// not have, are left as they were (`None`) for the start of their own, and break nothing.
#[tokio::test]
async fn emergencies_started_together_claim_the_idle_and_leave_the_rest_alone() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        let wanted: Vec<DesiredCredential> =
            ["a", "b", "c"].iter().map(|id| desired(id, "h")).collect();
        store
            .reconcile(&wanted, 0, |_, _| (Some(5_000), "initial"))
            .await
            .unwrap();
        assert_eq!(store.insert_runs(&[run_for("b", 1)], 1).await.unwrap(), 1);
        let emergency = |credential: &str| NewRun {
            reason: "emergency".into(),
            emergency: true,
            grace_ms: 0,
            ..run_for(credential, 9)
        };
        let runs = [
            emergency("a"),
            emergency("b"),
            emergency("gone"),
            emergency("c"),
        ];
        let b_due = store.credential("b").await.unwrap().unwrap().next_due_at;
        let audited = store.verify_audit().await.unwrap().unwrap();
        let started = store
            .start_emergencies(&runs, "ops", "leaked", "w1", 60_000, 1_000)
            .await
            .unwrap();
        let claimed: Vec<Option<&str>> = started
            .iter()
            .map(|r| r.as_ref().map(|r| r.credential_id.as_str()))
            .collect();
        assert_eq!(claimed, [Some("a"), None, None, Some("c")], "{label}");
        for run in started.iter().flatten() {
            assert_eq!(run.state(), RunState::Planned, "{label}");
            assert_eq!(run.lease_owner.as_deref(), Some("w1"), "{label}");
            assert_eq!(run.lease_until, Some(60_000), "{label}");
            let credential = store.credential(&run.credential_id).await.unwrap().unwrap();
            assert_eq!(
                credential.next_due_at, None,
                "{label}: the emergency replaces the schedule"
            );
        }
        let b = store.live_run("b").await.unwrap().unwrap();
        assert_eq!(
            (b.id.as_str(), b.lease_owner.as_deref()),
            ("run_b_1", None),
            "{label}: b's run untouched"
        );
        assert_eq!(
            store.credential("b").await.unwrap().unwrap().next_due_at,
            b_due,
            "{label}"
        );
        assert!(store.run("run_gone_9").await.unwrap().is_none(), "{label}");
        assert_eq!(
            store.verify_audit().await.unwrap(),
            Ok(audited + 4),
            "{label}: two rows for each started, in one unbroken chain"
        );
        store.close().await;
    }
}

/// A run learns of `rotor pause` from the write that begins its next step: both ways of
/// beginning one (a step start of its own, and the save of the step before) report the
/// credential's pause as their transaction saw it.
#[tokio::test]
async fn the_write_that_begins_a_step_reports_the_credentials_pause() {
    for (label, url, _keep) in backends() {
        let (store, mut run) = one_claimed_run(&url, 60_000).await;
        let mint = store
            .begin_step(&run, "mint", "w", 20, Durability::Deferred)
            .await
            .unwrap();
        assert_eq!(mint.pause, Pause::default(), "{label}: not paused");

        assert!(
            store
                .pause("a", Some(90_000), "ops", "maintenance", 25)
                .await
                .unwrap()
        );
        run.set_state(RunState::PendingStored);
        let end = StepEnd {
            seq: mint.seq,
            outcome: "ok",
            error: None,
        };
        let apply = store
            .save_run(
                &run,
                RunState::Planned,
                "w",
                Some(&end),
                None,
                &AuditEntry::new("w", "mint"),
                30,
                Then::begin("apply"),
            )
            .await
            .unwrap()
            .expect("the save began apply");
        let paused = Pause {
            paused_at: Some(25),
            paused_until: Some(90_000),
        };
        assert_eq!(apply.pause, paused, "{label}: the save saw the pause");
        assert!(apply.pause.is_paused(30) && !apply.pause.is_paused(90_000));

        assert!(store.resume("a", "ops", 40).await.unwrap());
        let again = store
            .begin_step(&run, "apply", "w", 45, Durability::Deferred)
            .await
            .unwrap();
        assert_eq!(again.seq, apply.seq + 1, "{label}");
        assert_eq!(again.pause, Pause::default(), "{label}: resumed");
        store.close().await;
    }
}

#[tokio::test]
async fn a_passed_step_is_recorded_started_and_finished_between_the_saved_step_and_the_next() {
    for (label, url, _keep) in backends() {
        let (store, mut run) = one_claimed_run(&url, 60_000).await;
        let mint = store
            .begin_step(&run, "mint", "w", 20, Durability::Deferred)
            .await
            .unwrap()
            .seq;
        run.set_state(RunState::Applied);
        let end = StepEnd {
            seq: mint,
            outcome: "ok",
            error: None,
        };
        let verify = store
            .save_run(
                &run,
                RunState::Planned,
                "w",
                Some(&end),
                None,
                &AuditEntry::new("w", "mint"),
                30,
                Then {
                    passed: Some("apply"),
                    begin: Some("verify"),
                    durability: Durability::Synced,
                },
            )
            .await
            .unwrap();
        assert_eq!(verify.map(|b| b.seq), Some(mint + 2), "{label}");
        let steps = store.steps(&run.id).await.unwrap();
        let seen: Vec<_> = steps
            .iter()
            .map(|s| {
                (
                    s.step.as_str(),
                    s.outcome.as_str(),
                    s.started_at,
                    s.finished_at,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("mint", "ok", 20, Some(30)),
                ("apply", "ok", 30, Some(30)),
                ("verify", "running", 30, None),
            ],
            "{label}"
        );
        assert_eq!(
            store.run(&run.id).await.unwrap().unwrap().state(),
            RunState::Applied,
            "{label}"
        );
        store.close().await;
    }
}

/// A replica idles on its work notifications: when the database restarts under it, it must
/// listen again, and look for work once, since what was announced before it was back is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_work_listener_comes_back_after_a_database_restart_and_wakes_its_replica() {
    let server = std::sync::Arc::new(support::postgres::dedicated());
    let url = server.database("listener");
    let store = connect(&url).await.unwrap();
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let listening = store.listen_for_work(wake.clone()).await.unwrap().unwrap();
    let within = |secs| tokio::time::timeout(std::time::Duration::from_secs(secs), wake.notified());

    let announcer = connect(&url).await.unwrap();
    announcer.announce_work().await.unwrap();
    within(10)
        .await
        .expect("an announcement wakes the listener");
    drop(announcer);

    let restarting = server.clone();
    tokio::task::spawn_blocking(move || restarting.restart(std::time::Duration::from_secs(2)))
        .await
        .unwrap();
    within(60)
        .await
        .expect("the listener wakes its replica once it is back, with nothing announced");
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(1), wake.notified())
            .await
            .is_err(),
        "one wake for one reconnection"
    );

    let announcer = connect(&url).await.unwrap();
    announcer.announce_work().await.unwrap();
    within(10)
        .await
        .expect("announcements after the restart arrive: the listener listens again");
    listening.abort();
}

#[tokio::test]
async fn a_run_in_a_state_this_rotor_does_not_know_is_an_error_not_stuck() {
    for (label, url, _keep) in backends() {
        let (store, run) = one_claimed_run(&url, 1_000).await;
        assert_eq!(run.state, RunState::Planned, "{label}");
        tamper(
            &url,
            &format!("UPDATE runs SET state = 'paused' WHERE id = '{}'", run.id),
        )
        .await;
        let err = store
            .run(&run.id)
            .await
            .expect_err("an unknown state is refused");
        let shown = err.to_string();
        assert!(
            shown.contains("unknown run state \"paused\""),
            "{label}: {shown}"
        );
        // The live-run listing, which `status` and the scheduler read, refuses it too.
        assert!(store.live_runs().await.is_err(), "{label}");
        store.close().await;
    }
}

/// The totals /metrics reads, against the count over every run they summarise.
async fn totals_and_recount(store: &Store, url: &str) -> (Vec<String>, Vec<String>) {
    let mut kept: Vec<String> = store
        .run_totals()
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.runs != 0)
        .map(|t| {
            let buckets: Vec<String> = t.buckets().iter().map(|(_, n)| n.to_string()).collect();
            format!(
                "{} {} {} {} {} {}",
                t.credential_id,
                t.state,
                t.runs,
                t.timed,
                t.duration_ms,
                buckets.join(",")
            )
        })
        .collect();
    kept.sort();
    let bounds = rotor::store::totals::DURATION_BUCKETS
        .map(|le| format!("COUNT(CASE WHEN state = 'completed' AND finished_at - created_at <= {} THEN 1 END)", le * 1000))
        .join(" || ',' || ");
    let timed = "state = 'completed' AND finished_at IS NOT NULL";
    let mut recount = fetch_text(
        url,
        &format!(
            "SELECT credential_id || ' ' || state || ' ' || COUNT(*) || ' ' \
             || COUNT(CASE WHEN {timed} THEN 1 END) || ' ' \
             || COALESCE(SUM(CASE WHEN {timed} THEN finished_at - created_at END), 0) || ' ' || {bounds} \
             FROM runs WHERE state IN ('completed', 'rolled_back', 'stuck') \
             AND (drill IS NULL OR drill <> 'dry_run') GROUP BY credential_id, state"
        ),
    )
    .await;
    recount.sort();
    (kept, recount)
}

#[tokio::test]
async fn run_totals_follow_every_run_to_rest_and_are_rebuilt_from_history() {
    for (label, url, _keep) in backends() {
        let store = connect(&url).await.unwrap();
        store
            .reconcile(&[desired("a", "h"), desired("b", "h")], 0, |_, _| {
                (Some(0), "initial")
            })
            .await
            .unwrap();
        let run = |id: &str,
                   credential: &str,
                   state: &str,
                   created: i64,
                   finished: &str,
                   drill: &str| {
            format!(
                "INSERT INTO runs (id, credential_id, token, state, reason, grace_ms, not_before, \
                 created_at, finished_at, updated_at, drill) VALUES ('{id}', '{credential}', \
                 'token_{id}', '{state}', 'schedule', 0, 0, {created}, {finished}, 0, {drill});"
            )
        };
        // Completed in 5 s and in 2 h, one rolled back, a dry-run drill (not a rotation), and
        // one still live: what each process's transaction writes as a run comes to rest.
        let mut sql = String::new();
        sql += &run("r1", "a", "completed", 0, "5000", "NULL");
        sql += &run("r2", "a", "completed", 0, "7200000", "'live'");
        sql += &run("r3", "a", "rolled_back", 0, "10", "NULL");
        sql += &run("r4", "b", "completed", 0, "1", "'dry_run'");
        sql += &run("r5", "b", "minting", 0, "NULL", "NULL");
        tamper(&url, &sql).await;
        let (kept, recount) = totals_and_recount(&store, &url).await;
        assert_eq!(kept, recount, "{label}");
        assert_eq!(kept.len(), 2, "{label}: {kept:?}");
        assert!(
            kept[0].starts_with("a completed 2 2 7205000 0,1,1,1,1,1,2,2,2,2"),
            "{label}: {kept:?}"
        );

        // The live run gets stuck, then a person resolves it: it moves between totals.
        tamper(&url, "UPDATE runs SET state = 'verifying' WHERE id = 'r5'").await;
        tamper(&url, "UPDATE runs SET state = 'stuck' WHERE id = 'r5'").await;
        let (kept, recount) = totals_and_recount(&store, &url).await;
        assert_eq!(kept, recount, "{label}");
        assert!(
            kept.iter().any(|k| k.starts_with("b stuck 1 ")),
            "{label}: {kept:?}"
        );
        tamper(
            &url,
            "UPDATE runs SET state = 'rolled_back', finished_at = 90 WHERE id = 'r5'",
        )
        .await;
        let (kept, recount) = totals_and_recount(&store, &url).await;
        assert_eq!(kept, recount, "{label}");
        assert!(
            !kept.iter().any(|k| k.contains(" stuck ")),
            "{label}: {kept:?}"
        );

        // A store migrated with history already in it: the totals are counted from it once.
        store.close().await;
        let undo = if url.starts_with("sqlite:") {
            "DROP TRIGGER run_totals_insert; DROP TRIGGER run_totals_update; DROP TABLE run_totals; \
             DELETE FROM _sqlx_migrations WHERE version = 13;"
        } else {
            "DROP TRIGGER run_totals_insert ON runs; DROP TRIGGER run_totals_update ON runs; \
             DROP FUNCTION run_totals_count(); DROP TABLE run_totals; \
             DELETE FROM _sqlx_migrations WHERE version = 13;"
        };
        tamper(&url, undo).await;
        let store = connect(&url).await.unwrap();
        let (rebuilt, recount) = totals_and_recount(&store, &url).await;
        assert_eq!(rebuilt, recount, "{label}");
        assert_eq!(
            rebuilt, kept,
            "{label}: the migration counts what the triggers counted"
        );
        store.close().await;
    }
}

#[tokio::test]
async fn the_alert_and_notify_outboxes_of_an_older_store_become_one_outbox() {
    for (label, url, _keep) in backends() {
        connect(&url).await.unwrap().close().await;
        // As a store before migration 14 held them: a delivered and a waiting alert, two
        // notifications of which the first waits.
        let serial = if url.starts_with("sqlite:") {
            "INTEGER PRIMARY KEY AUTOINCREMENT"
        } else {
            "BIGSERIAL PRIMARY KEY"
        };
        tamper(
            &url,
            &format!(
                "DROP TABLE outbox; DELETE FROM _sqlx_migrations WHERE version = 14;
                 CREATE TABLE alert_outbox (id {serial}, sink TEXT NOT NULL, credential_id TEXT NOT NULL,
                     condition TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL,
                     created_at BIGINT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0,
                     next_attempt_at BIGINT NOT NULL, delivered_at BIGINT, last_error TEXT);
                 CREATE TABLE notify_outbox (id {serial}, run_id TEXT NOT NULL, credential_id TEXT NOT NULL,
                     hook TEXT NOT NULL, event TEXT NOT NULL, payload TEXT NOT NULL,
                     created_at BIGINT NOT NULL, attempts BIGINT NOT NULL DEFAULT 0,
                     failures BIGINT NOT NULL DEFAULT 0, next_attempt_at BIGINT NOT NULL,
                     delivered_at BIGINT, last_outcome TEXT, last_error TEXT,
                     UNIQUE (run_id, event, hook));
                 INSERT INTO alert_outbox (sink, credential_id, condition, event, payload, created_at,
                     attempts, next_attempt_at, delivered_at, last_error) VALUES
                     ('pager', 'app/a', 'rolled_back', 'trigger', '{{}}', 1, 3, 1, 5, NULL),
                     ('pager', 'app/a', 'rolled_back', 'resolve', '{{}}', 6, 2, 9000, NULL, 'sink down');
                 INSERT INTO notify_outbox (run_id, credential_id, hook, event, payload, created_at,
                     attempts, failures, next_attempt_at, delivered_at, last_outcome) VALUES
                     ('run_1', 'app/a', 'consumer', 'promoted', '{{}}', 2, 1, 1, 8000, NULL, 'HTTP 503'),
                     ('run_1', 'app/a', 'consumer', 'retired', '{{}}', 3, 0, 0, 3, NULL, NULL);"
            ),
        )
        .await;
        let store = connect(&url).await.unwrap();
        let rows = fetch_text(
            &url,
            "SELECT CAST(id AS TEXT) || ' ' || channel || ' ' || target || ' ' || event || ' ' \
             || CAST(attempts AS TEXT) || ' ' || CAST(failures AS TEXT) FROM outbox ORDER BY id",
        )
        .await;
        assert_eq!(
            rows,
            [
                "1 notify consumer promoted 1 1",
                "2 notify consumer retired 0 0",
                "3 alert pager trigger 3 2",
                "4 alert pager resolve 2 2",
            ],
            "{label}"
        );
        // Each channel's rows wait in their old order; the ids go on after the copied ones.
        let due = store
            .due_messages(Channel::Notify, 9_000, 100, None)
            .await
            .unwrap();
        assert_eq!(due.len(), 1, "{label}: `retired` waits behind `promoted`");
        assert_eq!(due[0].event, "promoted");
        let due = store
            .due_messages(Channel::Alert, 9_000, 100, None)
            .await
            .unwrap();
        assert_eq!(
            (due.len(), due[0].event.as_str()),
            (1, "resolve"),
            "{label}"
        );
        store
            .queue_notifications("run_2", "app/a", "promoted", &["consumer".into()], "{}", 10)
            .await
            .unwrap();
        let ids = fetch_text(
            &url,
            "SELECT CAST(id AS TEXT) FROM outbox WHERE run_id = 'run_2'",
        )
        .await;
        assert_eq!(ids, ["5"], "{label}");
        for table in ["alert_outbox", "notify_outbox"] {
            let left = fetch_text(
                &url,
                &format!(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM {} WHERE name = '{table}'",
                    if url.starts_with("sqlite:") {
                        "sqlite_master"
                    } else {
                        "(SELECT tablename AS name FROM pg_tables) t"
                    }
                ),
            )
            .await;
            assert_eq!(left, ["0"], "{label}: {table} is gone");
        }
        store.close().await;
    }
}
