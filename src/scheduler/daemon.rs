//! The daemon loop of `rotor run`: plan due credentials into runs, claim ready runs with a
//! lease, drive them with bounded concurrency while a heartbeat extends the leases, and react
//! to SIGTERM (finish the step in flight, release leases, exit) and SIGHUP (reload config).

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinSet;

use crate::clock::{Clock, to_datetime};
use crate::config::Config;
use crate::engine::{Driven, Engine, EngineError, Runtime};
use crate::notify::Subscribers;
use crate::store::{DesiredCredential, NewRun, ReconcileChange, Store, StoreError};

/// How the daemon paces itself.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// Runs driven at once by this process.
    pub concurrency: usize,
    /// How long a claim is valid without a heartbeat; a dead worker's runs are taken over
    /// after this.
    pub lease: Duration,
    /// How often the store is asked for new due work when nothing wakes the loop.
    pub poll: Duration,
    /// Do all due work, then exit.
    pub once: bool,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(60),
            poll: Duration::from_secs(5),
            once: false,
        }
    }
}

/// A fresh identity for this process's leases.
pub fn worker_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let suffix: u32 = rand::rng().random();
    format!("{}-{}-{suffix:08x}", host.trim(), std::process::id())
}

pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(&mut buf[..]);
    hex::encode(buf)
}

/// Writes config into the store (see `Store::reconcile`) and logs what changed.
pub async fn reconcile(
    store: &Store,
    config: &Config,
    clock: &dyn Clock,
) -> Result<Vec<ReconcileChange>, StoreError> {
    let now = clock.now_ms();
    let desired: Vec<DesiredCredential> = config
        .credentials
        .iter()
        .map(|c| DesiredCredential {
            id: c.id.as_str().into(),
            provider: c.provider(),
            vault: c.vault.as_str().into(),
            vault_path: c.vault_path.as_str().into(),
            schedule_hash: c.schedule_hash.as_str().into(),
        })
        .collect();
    let changes = store
        .reconcile(&desired, now, |id, since| {
            let c = config
                .credential(id)
                .expect("desired credentials come from config");
            if c.by_hand().is_some() {
                // People rotate it; rotor only reminds them.
                return (None, "by_hand");
            }
            let due = c
                .schedule
                .next_due(id, since.map(to_datetime), to_datetime(now));
            (
                due.map(|d| d.at.timestamp_millis()),
                due.map_or("manual", |d| d.reason.as_str()),
            )
        })
        .await?;
    // Per kind of change, the first `CHANGES_LOGGED` a line each and one line for the rest.
    let mut seen = [0usize; 4];
    for change in &changes {
        let kind = match change {
            ReconcileChange::Added { .. } => 0,
            ReconcileChange::ScheduleChanged { .. } => 1,
            ReconcileChange::Removed { .. } => 2,
            ReconcileChange::Restored { .. } => 3,
        };
        seen[kind] += 1;
        if seen[kind] > CHANGES_LOGGED {
            continue;
        }
        match change {
            ReconcileChange::Added { id } => tracing::info!(credential = %id, "credential added"),
            ReconcileChange::ScheduleChanged { id, next_due_at } => tracing::info!(
                credential = %id,
                next_due_at = %next_due_at.map_or("never (manual)".into(), crate::clock::rfc3339),
                "schedule changed; next rotation recomputed"
            ),
            ReconcileChange::Removed { id } => {
                tracing::warn!(credential = %id, "credential is no longer in config; marked removed (history kept)")
            }
            ReconcileChange::Restored { id } => {
                tracing::info!(credential = %id, "credential is back in config")
            }
        }
    }
    const MORE: [&str; 4] = [
        "and more credentials added (`rotor status` lists them)",
        "and more schedules changed (`rotor plan` lists the next rotations)",
        "and more credentials no longer in config; marked removed (history kept)",
        "and more credentials back in config",
    ];
    for (kind, message) in MORE.into_iter().enumerate() {
        let more = seen[kind].saturating_sub(CHANGES_LOGGED);
        match (more, kind) {
            (0, _) => {}
            (_, 2) => tracing::warn!(more, "{message}"),
            _ => tracing::info!(more, "{message}"),
        }
    }
    Ok(changes)
}

/// How many changes of each kind reconcile logs a line each: a first start on a million
/// credentials logged a million "credential added" lines.
const CHANGES_LOGGED: usize = 100;

/// Whether the daemon claims with `in_flight` of its `concurrency` slots taken. Planning and
/// claiming cost a few statements whatever their size, and one loop does them: under load it
/// waits until a quarter of the slots are free and fills them at once, rather than one run per
/// finished one.
fn time_to_claim(concurrency: usize, in_flight: usize) -> bool {
    let free = concurrency.saturating_sub(in_flight);
    free > 0 && (free >= concurrency.div_ceil(4) || in_flight == 0)
}

/// The concurrency limits of `[limits]`, which every replica's claims respect together.
pub fn claim_limits(config: &Config) -> crate::store::limits::ClaimLimits {
    crate::store::limits::ClaimLimits {
        global: config.limits.concurrency.map(i64::from),
        per_provider: config
            .limits
            .provider
            .iter()
            .filter_map(|(kind, l)| l.concurrency.map(|c| (kind.clone(), i64::from(c))))
            .collect(),
    }
}

/// Due credentials turned into runs per store round trip.
const PLAN_BATCH: i64 = 1000;

/// Turns due credentials into planned runs. Returns how many due credentials it found (at
/// most `limit`: more may be waiting).
pub async fn plan_due(
    store: &Store,
    config: &Config,
    now: i64,
    limit: i64,
) -> Result<usize, StoreError> {
    let due = store.due_credentials(now, limit).await?;
    let found = due.len();
    let runs: Vec<NewRun> = due
        .into_iter()
        .filter_map(|(id, reason, due_at)| {
            let c = config.credential(&id)?;
            Some(new_run(
                &id,
                &reason,
                false,
                c.grace.as_std(),
                // Ready since it was due: claim order and lag are measured from the due time.
                due_at.min(now),
            ))
        })
        .collect();
    if !runs.is_empty() {
        store.insert_runs(&runs, now).await?;
    }
    Ok(found)
}

/// A run's id: the wall clock's milliseconds, then randomness. Runs planned together sort
/// together, so the inserts of their step history and the lookups by id touch a few index
/// pages at the right-hand edge instead of one random page each (run_steps is keyed by
/// run id).
pub fn new_run_id() -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    format!("run_{ms:012x}{}", random_hex(4))
}

/// A run to plan. Its grace is fixed here, the one place it is converted: the credential's
/// (or a drill's), none for an emergency rotation.
pub fn new_run(
    credential_id: &str,
    reason: &str,
    emergency: bool,
    grace: std::time::Duration,
    now: i64,
) -> NewRun {
    NewRun {
        id: new_run_id(),
        credential_id: credential_id.to_owned(),
        token: random_hex(16),
        reason: reason.to_owned(),
        emergency,
        grace_ms: if emergency {
            0
        } else {
            grace.as_millis() as i64
        },
        not_before: now,
        drill: None,
    }
}

pub struct Daemon {
    pub engine: Arc<Engine>,
    pub runtime: Arc<Runtime>,
    pub options: DaemonOptions,
    /// Where the current runtime is published (to the metrics server and the alert loop).
    pub published: tokio::sync::watch::Sender<Arc<Runtime>>,
    /// Scheduler lag of this process, for `/metrics`.
    pub lag: Arc<super::lag::Lag>,
}

/// What the daemon loop was asked to do from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Stop,
    Reload,
}

impl Daemon {
    /// Runs until stopped (or, with `once`, until no due work is left). `signals` delivers
    /// SIGTERM/SIGHUP; `reload` builds a new runtime from config on SIGHUP.
    pub async fn run<R, F>(
        mut self,
        mut signals: tokio::sync::mpsc::Receiver<Signal>,
        reload: R,
    ) -> Result<RunSummary, EngineError>
    where
        R: Fn() -> F,
        F: Future<Output = Result<Runtime, String>>,
    {
        let store = self.engine.store.clone();
        let in_flight: Arc<Mutex<HashSet<String>>> = Arc::default();
        let heartbeat = spawn_heartbeat(self.engine.clone(), in_flight.clone(), self.options.lease);
        self.published.send_replace(self.runtime.clone());
        // Idle replicas sleep until due work or `poll`; a NOTIFY from `rotor rotate` or another
        // replica wakes them at once (PostgreSQL only).
        let wake = Arc::new(tokio::sync::Notify::new());
        let listener = match store.listen_for_work(wake.clone()).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for work notifications; polling only");
                None
            }
        };
        // Alerts and notifications are delivered beside the runs; a notification queued by a
        // run wakes the loop so that its hooks hear of it at once.
        let (stop_outbox, outbox_stopping) = tokio::sync::watch::channel(false);
        let outbox = spawn_outbox_loop(
            self.engine.clone(),
            self.published.subscribe(),
            wake.clone(),
            outbox_stopping,
            self.options.once,
        );
        let mut tasks = Tasks::default();
        let mut summary = RunSummary::default();
        // A daemon outlives a store that goes away (a restart, a failover): it waits and tries
        // again, while runs in flight keep or lose their leases. `--once` reports the error.
        let tolerant = !self.options.once;
        let stopping = self.engine.stopping.clone();
        let mut store_failures: u32 = 0;
        macro_rules! or_retry {
            ($result:expr) => {
                match $result {
                    Ok(value) => {
                        store_failures = 0;
                        value
                    }
                    Err(e) if tolerant && !stopping.load(Ordering::SeqCst) => {
                        store_failures += 1;
                        let wait = crate::policy::backoff::STORE_LOST.delay(store_failures);
                        tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "store unavailable; waiting, then trying again");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    Err(e) => break Err(e.into()),
                }
            };
        }
        let result = loop {
            // Runs that ended since the last turn free their slots (and their ids) first.
            while let Some(done) = tasks.set.try_join_next_with_id() {
                summary.task_ended(done, &in_flight, &mut tasks);
            }
            let now = self.engine.clock.now_ms();
            let mut planned_all = None;
            let free = self.options.concurrency.saturating_sub(tasks.set.len());
            if time_to_claim(self.options.concurrency, tasks.set.len())
                && !self.engine.stopping.load(Ordering::SeqCst)
            {
                let found =
                    or_retry!(plan_due(&store, &self.runtime.config, now, PLAN_BATCH).await);
                planned_all = Some(found < PLAN_BATCH as usize);
                let lease_until = now + self.options.lease.as_millis() as i64;
                let claimed = or_retry!(
                    store
                        .claim_within(
                            &self.engine.worker,
                            now,
                            lease_until,
                            free as i64,
                            &claim_limits(&self.runtime.config),
                        )
                        .await
                );
                // A run starts once its claim is committed: planning and claiming, which wait
                // for the store, count in its lag.
                let started = self.engine.clock.now_ms();
                for run in claimed {
                    if self.runtime.config.credential(&run.credential_id).is_none() {
                        tracing::warn!(credential = %run.credential_id, run = %run.id, "run of a credential not in config; left alone");
                        let _ = store.release(&run.id, &self.engine.worker).await;
                        continue;
                    }
                    // A run this process still drives comes back when its lease ran out while
                    // the store was away: the claim renewed the lease for the task driving it.
                    // A second task would share this worker's name, which the store's fences
                    // cannot tell apart, and both would mint.
                    // Unless a person interrupted it meanwhile (`rotor rotate --emergency`,
                    // `rotor cancel`): the lease ran out because the interruption fenced the
                    // task off while its step hung, and renewing it would keep the run from
                    // everyone forever. That drive is dropped and the run driven afresh.
                    if !in_flight
                        .lock()
                        .expect("in-flight lock")
                        .insert(run.id.clone())
                    {
                        if run.interrupt.is_none() || !tasks.abandon(&run.id) {
                            tracing::info!(run = %run.id, "lease renewed for a run still driven here");
                            continue;
                        }
                        tracing::warn!(run = %run.id, "the run was interrupted while its drive here hung; that drive is dropped and the run driven afresh");
                    }
                    summary.claimed += 1;
                    let lag = started - run.not_before;
                    summary.lag_ms.push(lag.max(0));
                    self.lag.record(lag);
                    let (engine, runtime) = (self.engine.clone(), self.runtime.clone());
                    let run_id = run.id.clone();
                    let task = tasks.set.spawn(async move {
                        let id = run.id.clone();
                        (id, engine.drive(&runtime, run).await)
                    });
                    tasks.runs.insert(task.id(), (run_id, task));
                }
            }
            if self.options.once && tasks.set.is_empty() {
                let ready = match store.runs_ready_before(now).await {
                    Ok(n) => n,
                    Err(e) => break Err(e.into()),
                };
                let due = match store.due_credentials(now, 1).await {
                    Ok(d) => d.len(),
                    Err(e) => break Err(e.into()),
                };
                // Runs of credentials missing from config can never be driven here: not work.
                if due == 0 && (ready == 0 || summary.claimed_nothing_twice()) {
                    break Ok(());
                }
            }
            if self.engine.stopping.load(Ordering::SeqCst) && tasks.set.is_empty() {
                break Ok(());
            }
            let poll = if self.options.once {
                Duration::from_millis(20)
            } else if !time_to_claim(self.options.concurrency, tasks.set.len()) {
                // Nothing to claim before a run ends, so when the next work is due does not
                // matter yet: no `NEXT_WAKEUP` after a claim that filled the slots.
                self.options.poll
            } else if planned_all == Some(false) {
                Duration::ZERO
            } else {
                let wake = or_retry!(store.next_wakeup(now).await);
                wake.map_or(self.options.poll, |t| {
                    Duration::from_millis((t - now).clamp(1, i64::MAX) as u64)
                        .min(self.options.poll)
                })
            };
            tokio::select! {
                Some(done) = tasks.set.join_next_with_id() => {
                    summary.task_ended(done, &in_flight, &mut tasks);
                }
                Some(signal) = signals.recv() => match signal {
                    Signal::Stop => {
                        tracing::info!(in_flight = tasks.set.len(), "stopping: finishing the steps in flight");
                        self.engine.stopping.store(true, Ordering::SeqCst);
                    }
                    Signal::Reload => match reload().await {
                        Ok(runtime) => {
                            match reconcile(&store, &runtime.config, self.engine.clock.as_ref()).await {
                                Ok(_) => {
                                    self.runtime = Arc::new(runtime);
                                    self.published.send_replace(self.runtime.clone());
                                    tracing::info!("config reloaded");
                                    // New or rescheduled credentials may be due: wake the others.
                                    if let Err(e) = store.announce_work().await {
                                        tracing::warn!(error = %e, "could not wake the other replicas");
                                    }
                                }
                                Err(e) => tracing::error!(error = %e, "config reload failed; keeping the previous config"),
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "config reload failed; keeping the previous config"),
                    },
                },
                _ = tokio::time::sleep(poll) => { summary.idle_polls += 1; }
                _ = wake.notified() => { tracing::debug!("woken by a work notification"); }
            }
        };
        while let Some(done) = tasks.set.join_next_with_id().await {
            summary.task_ended(done, &in_flight, &mut tasks);
        }
        heartbeat.abort();
        if let Some(listener) = listener {
            listener.abort();
        }
        // Let a delivery in flight finish (its claim would otherwise hold it back for a while).
        let _ = stop_outbox.send(true);
        let _ = outbox.await;
        // What could not be delivered yet gets one more try before exit; the rest waits in
        // the outbox for the next start.
        let runtime = &self.runtime;
        let clock = self.engine.clock.clone();
        if let Err(e) = runtime.notify_due(&store, || clock.now_ms(), None).await {
            tracing::warn!(error = %e, "could not deliver pending notifications");
        }
        if let Err(e) = runtime.alerter.deliver_due(&store, clock.now_ms()).await {
            tracing::warn!(error = %e, "could not deliver pending alerts");
        }
        result.map(|()| summary)
    }
}

/// How often the outbox is retried, and how often raised alerts are re-sent to Alertmanager and
/// credential ages are checked.
const DELIVERY_EVERY: Duration = Duration::from_secs(5);
const REMIND_EVERY: Duration = Duration::from_secs(60);

/// Delivers queued notifications and alerts, wakes the daemon loop when a run's hooks were all
/// notified, and (unless `once`) reminds Alertmanager of raised alerts and raises `too_old` for
/// a credential older than its `max_age`, in the background of the daemon.
fn spawn_outbox_loop(
    engine: Arc<Engine>,
    runtime: tokio::sync::watch::Receiver<Arc<Runtime>>,
    wake: Arc<tokio::sync::Notify>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
    once: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last_remind = None::<tokio::time::Instant>;
        while !*stopping.borrow() {
            let runtime = runtime.borrow().clone();
            let clock = engine.clock.clone();
            match runtime
                .notify_due(&engine.store, || clock.now_ms(), None)
                .await
            {
                Ok(pass) if pass.woken > 0 => wake.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "notification pass failed"),
            }
            let now = engine.clock.now_ms();
            if let Err(e) = runtime.alerter.deliver_due(&engine.store, now).await {
                tracing::warn!(error = %e, "alert delivery pass failed");
            }
            if !once && last_remind.is_none_or(|at| at.elapsed() >= REMIND_EVERY) {
                last_remind = Some(tokio::time::Instant::now());
                if let Err(e) = check_ages(&engine, &runtime, now).await {
                    tracing::warn!(error = %e, "credential age check failed");
                }
                if let Err(e) = runtime
                    .alerter
                    .refresh(&engine.store, |id| runtime.config.alert_routes(id), now)
                    .await
                {
                    tracing::warn!(error = %e, "alert reminder pass failed");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(DELIVERY_EVERY) => {}
                _ = runtime.notifier.queued() => {}
                _ = stopping.changed() => {}
            }
        }
    })
}

/// A credential due longer ago than this without a run is `overdue` (its window was missed).
const OVERDUE_AFTER_MS: i64 = 3_600_000;

/// Raises `too_old` for every credential whose current version is older than its `max_age`,
/// `overdue` for one due over an hour ago that has no run, and `drill_overdue` for one not
/// drilled within `[drill] every`.
pub async fn check_ages(engine: &Engine, runtime: &Runtime, now: i64) -> Result<(), StoreError> {
    let live: HashSet<String> = engine
        .store
        .live_runs()
        .await?
        .into_iter()
        .map(|r| r.credential_id)
        .collect();
    let mut pages = engine.store.credential_pages(AGE_CHECK_PAGE);
    while let Some(page) = pages.next().await? {
        for row in &page {
            check_age(engine, runtime, &live, row, now).await?;
        }
        // This pass runs every minute beside the claims: between pages the runtime's threads
        // serve them. At 100,000 credentials, one query for the whole table held a thread
        // for long enough to put 300 ms into the due-to-claimed lag.
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Rows a page of the age check reads at a time.
const AGE_CHECK_PAGE: i64 = 1_000;

/// `check_ages` for one credential.
async fn check_age(
    engine: &Engine,
    runtime: &Runtime,
    live: &HashSet<String>,
    row: &crate::store::CredentialRow,
    now: i64,
) -> Result<(), StoreError> {
    let Some(credential) = runtime.config.credential(&row.id) else {
        return Ok(());
    };
    if let Some(manual) = credential.by_hand() {
        check_by_hand(engine, runtime, credential, manual, row, now).await?;
        return Ok(());
    }
    if let Some(every) = runtime.config.drill.every {
        let since = row.last_drill_at.unwrap_or(row.created_at);
        if now - since > every.as_secs() as i64 * 1000 {
            let cause = match row.last_drill_at {
                Some(at) => format!(
                    "last drilled at {}; [drill] every is {every}",
                    crate::clock::rfc3339(at)
                ),
                None => format!(
                    "never drilled since rotor began managing it at {}; [drill] every is {every}",
                    crate::clock::rfc3339(row.created_at)
                ),
            };
            let action = format!("run `rotor drill --select {}`", row.id);
            let condition = crate::alert::Condition::DrillOverdue;
            raise_found(
                engine, runtime, credential, condition, "drill", cause, action, now,
            )
            .await?;
        }
    }
    // A paused credential is late on purpose; its max_age below still counts.
    if let Some(due) = row.next_due_at
        && now - due > OVERDUE_AFTER_MS
        && !live.contains(&row.id)
        && !row.is_paused(now)
    {
        raise_found(
            engine,
            runtime,
            credential,
            crate::alert::Condition::Overdue,
            "schedule",
            format!(
                "due at {} and no rotation has started",
                crate::clock::rfc3339(due)
            ),
            format!(
                "check that a rotor replica is running and claiming work (`rotor plan`), or `rotor rotate {}`",
                row.id
            ),
            now,
        )
        .await?;
    }
    let (Some(max_age), Some(since)) = (credential.schedule.max_age, row.current_since) else {
        return Ok(());
    };
    let age = now - since;
    if age > max_age.as_secs() as i64 * 1000 {
        raise_found(
            engine,
            runtime,
            credential,
            crate::alert::Condition::TooOld,
            "schedule",
            format!(
                "the current version is {} old; max_age is {max_age}",
                crate::config::Duration::from_secs((age / 1000) as u64)
            ),
            format!(
                "find out why it has not rotated (`rotor history {}`), then `rotor rotate {}`",
                row.id, row.id
            ),
            now,
        )
        .await?;
    }
    Ok(())
}

/// Raises a condition found by looking at the schedule, not at a run.
#[allow(clippy::too_many_arguments)]
async fn raise_found(
    engine: &Engine,
    runtime: &Runtime,
    credential: &crate::config::Credential,
    condition: crate::alert::Condition,
    step: &str,
    cause: String,
    action: String,
    now: i64,
) -> Result<(), StoreError> {
    let alert = crate::alert::Alert {
        credential_id: credential.id.clone(),
        provider: credential.provider().to_owned(),
        condition,
        step: step.to_owned(),
        attempt: 0,
        run_id: String::new(),
        cause,
        action,
        raised_at: String::new(),
    };
    runtime
        .alerter
        .raise(&engine.store, &alert, &credential.alerts, now)
        .await
        .map(drop)
}

/// Reminds people of a credential they rotate by hand: `manual_due` from `remind_before` its
/// deadline, `manual_overdue` past it. `rotor confirm` resolves both.
async fn check_by_hand(
    engine: &Engine,
    runtime: &Runtime,
    credential: &crate::config::Credential,
    manual: &rotor_rotators::manual::ManualConfig,
    row: &crate::store::CredentialRow,
    now: i64,
) -> Result<(), StoreError> {
    use super::by_hand::{deadline, reminder};
    let (Some(deadline), Some(remind)) = (deadline(credential, row), reminder(credential, row))
    else {
        return Ok(());
    };
    let condition = if now >= deadline {
        crate::alert::Condition::ManualOverdue
    } else if now >= remind {
        crate::alert::Condition::ManualDue
    } else {
        return Ok(());
    };
    let how = manual
        .instructions
        .as_deref()
        .map(|i| format!(" ({i})"))
        .unwrap_or_default();
    let cause = format!("due by {}", crate::clock::rfc3339(deadline));
    let action = format!(
        "rotate it at its provider{how}, store the new value, then `rotor confirm {} [--expires-at TIME]`",
        row.id
    );
    raise_found(
        engine, runtime, credential, condition, "by_hand", cause, action, now,
    )
    .await?;
    Ok(())
}

fn spawn_heartbeat(
    engine: Arc<Engine>,
    in_flight: Arc<Mutex<HashSet<String>>>,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = (lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = in_flight
                .lock()
                .expect("in-flight lock")
                .iter()
                .cloned()
                .collect();
            if ids.is_empty() {
                continue;
            }
            let until = engine.clock.now_ms() + lease.as_millis() as i64;
            match engine.store.heartbeat(&engine.worker, &ids, until).await {
                Ok(held) if (held as usize) < ids.len() => {
                    tracing::warn!(
                        lost = ids.len() - held as usize,
                        "leases lost; their runs belong to another worker now"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; leases may expire"),
            }
        }
    })
}

type Driving = (String, Result<Driven, EngineError>);
type Ended = Result<(tokio::task::Id, Driving), tokio::task::JoinError>;

/// The drive tasks in flight, and which run each drives (a task that fails says only its id).
#[derive(Default)]
struct Tasks {
    set: JoinSet<Driving>,
    runs: std::collections::HashMap<tokio::task::Id, (String, tokio::task::AbortHandle)>,
}

impl Tasks {
    /// Aborts the task driving `run_id`, forgetting it: its end frees nothing, since the
    /// run's slot passes to the task that drives it afresh. Whether there was one.
    fn abandon(&mut self, run_id: &str) -> bool {
        let stale: Vec<tokio::task::Id> = self
            .runs
            .iter()
            .filter(|(_, (id, _))| id == run_id)
            .map(|(task, _)| *task)
            .collect();
        for task in &stale {
            if let Some((_, handle)) = self.runs.remove(task) {
                handle.abort();
            }
        }
        !stale.is_empty()
    }
}

/// What a daemon run did, for `--once` output and the benchmark.
#[derive(Debug, Default)]
pub struct RunSummary {
    pub claimed: usize,
    pub completed: usize,
    pub rolled_back: usize,
    pub stuck: usize,
    pub waiting: usize,
    pub errors: usize,
    pub idle_polls: usize,
    /// Due (or ready) to claimed, per claim, in ms.
    pub lag_ms: Vec<i64>,
}

impl RunSummary {
    /// A drive task ended: its run leaves `in_flight` (freeing its slot, and its id for a
    /// later claim) and its outcome is counted.
    fn task_ended(&mut self, done: Ended, in_flight: &Mutex<HashSet<String>>, tasks: &mut Tasks) {
        let (run_id, result) = match done {
            Ok((task, (run_id, result))) => {
                if tasks.runs.remove(&task).is_none() {
                    // Abandoned (`Tasks::abandon`) but finished before the abort took: the
                    // run belongs to the task driving it afresh.
                    return;
                }
                (run_id, result)
            }
            // The engine catches a step's panic; one outside it (in this loop's own code
            // around the drive) still frees the run's slot and is counted, and the lease
            // left behind lets the run be claimed again.
            Err(e) => {
                let Some((run_id, _)) = tasks.runs.remove(&e.id()) else {
                    // Abandoned: the run belongs to the task driving it afresh.
                    return;
                };
                tracing::error!(run = %run_id, error = %e, "a run's task ended abnormally");
                self.errors += 1;
                in_flight.lock().expect("in-flight lock").remove(&run_id);
                return;
            }
        };
        in_flight.lock().expect("in-flight lock").remove(&run_id);
        self.record(&run_id, result);
    }

    fn record(&mut self, run_id: &str, result: Result<Driven, EngineError>) {
        use crate::engine::state::RunState;
        match result {
            Ok(Driven::Finished(RunState::Completed)) => self.completed += 1,
            Ok(Driven::Finished(RunState::RolledBack)) => self.rolled_back += 1,
            Ok(Driven::Finished(RunState::Stuck)) => self.stuck += 1,
            Ok(Driven::Finished(_)) | Ok(Driven::Stopped) => {}
            Ok(Driven::Waiting(_)) => self.waiting += 1,
            Err(e) => {
                self.errors += 1;
                tracing::error!(run = run_id, error = %e, "run could not be driven");
            }
        }
    }

    fn claimed_nothing_twice(&self) -> bool {
        self.idle_polls >= 2
    }
}

#[cfg(test)]
mod tests {
    use super::time_to_claim;

    #[test]
    fn claims_wait_for_a_quarter_of_the_slots_or_an_idle_daemon() {
        assert!(time_to_claim(64, 0));
        assert!(time_to_claim(64, 48), "16 of 64 free");
        assert!(!time_to_claim(64, 49), "15 of 64 free");
        assert!(!time_to_claim(64, 64));
        assert!(time_to_claim(1, 0));
        assert!(!time_to_claim(1, 1));
        assert!(time_to_claim(3, 2), "a quarter of 3 rounds up to one slot");
    }
}
