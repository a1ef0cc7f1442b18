//! Rotation drills (`rotor drill`): prove, every quarter, that each credential can still be
//! rotated, that its consumers survive it and that a failure reaches the on-call person.
//!
//! A drill is made of ordinary runs, marked as drill runs in the store: they take the store's
//! lease like any other (a daemon and a drill never rotate one credential at once), are
//! crash-safe like any other, and a daemon resumes one a stopped drill left behind. A dry run
//! stops after verify and discards the candidate; an injected fault makes this process's worker
//! fail (or die) at the chosen point, and the drill checks that the documented outcome followed:
//! the run rolled back or resumed, the current credential still works, and the alert reached
//! every configured sink.

mod fault;
pub mod progress;
pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rotor_rotators::Rotator;

pub use fault::Fault;
use progress::Progress;
use report::{AlertDelivery, CredentialReport, StepReport};

use crate::alert::Condition;
use crate::clock::Clock;
use crate::config::{Config, Credential};
use crate::engine::state::RunState;
use crate::engine::{DRY_RUN, Driven, Engine, EngineError, Runtime};
use crate::scheduler::daemon;
use crate::store::{Store, StoreError};
use crate::vault::Vault;

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// Id globs, provider kinds or vault names; empty: every credential rotor rotates.
    pub select: Vec<String>,
    pub dry_run: bool,
    /// One scenario per fault; none: one clean rotation.
    pub faults: Vec<Fault>,
    /// Grace of the drill's rotations instead of each credential's own.
    pub grace: Option<Duration>,
}

/// How long a drill waits for a credential's live run to get past promotion.
const LIVE_RUN_WAIT: Duration = Duration::from_secs(60);

/// What a credential's live run means for its drill.
enum LiveRun {
    None,
    /// Promoted and in grace or retiring: it proves the credential.
    Promoted(Box<crate::store::RunRow>),
    /// Stuck, or not past promotion in time: the drill reports it.
    InTheWay,
}

/// How long a drill worker's claim lasts: a worker that dies (`crash@`) is replaced this soon.
const DRILL_LEASE: Duration = Duration::from_secs(10);

/// Whether `pattern` selects `credential`: its id matches the glob (`*`, `?`), or it names the
/// credential's provider kind or vault.
pub fn selects(pattern: &str, credential: &Credential) -> bool {
    glob(pattern.as_bytes(), credential.id.as_bytes())
        || pattern == credential.provider()
        || pattern == credential.vault
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match (pattern.first(), text.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob(&pattern[1..], text) || (!text.is_empty() && glob(pattern, &text[1..]))
        }
        (Some(b'?'), Some(_)) => glob(&pattern[1..], &text[1..]),
        (Some(p), Some(t)) if p == t => glob(&pattern[1..], &text[1..]),
        _ => false,
    }
}

/// The credentials a drill covers, and those it cannot (rotated by hand), in config order.
pub fn select<'a>(
    config: &'a Config,
    patterns: &[String],
) -> (Vec<&'a Credential>, Vec<&'a Credential>) {
    config
        .credentials
        .iter()
        .filter(|c| patterns.is_empty() || patterns.iter().any(|p| selects(p, c)))
        .partition(|c| c.by_hand().is_none())
}

/// Drives drills for one config and store.
pub struct Driller {
    pub store: Store,
    pub runtime: Arc<Runtime>,
    pub clock: Arc<dyn Clock>,
    pub actor: String,
    /// Set by Ctrl-C: the run in hand stops after its step and is left resumable.
    pub stopping: Arc<AtomicBool>,
    pub progress: Arc<dyn Progress>,
}

impl Driller {
    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Drills one credential under one scenario.
    pub async fn drill(
        &self,
        credential: &Credential,
        options: &DrillOptions,
        fault: Option<&Fault>,
    ) -> Result<CredentialReport, StoreError> {
        let started = self.now();
        let mut report = CredentialReport::new(credential, options.dry_run, fault);
        let scenario = report.scenario.clone();
        let runtime = &self.runtime;
        let rotator = runtime.rotator(&credential.id);
        let vault = runtime
            .vaults
            .get(&credential.vault)
            .expect("config validation: the vault exists");
        let bar = self.progress.start(&credential.id, &scenario);

        // A pause is a person's word that the provider is not to be touched now.
        if let Some(row) = self.store.credential(&credential.id).await?
            && row.is_paused(started)
        {
            report.problem(format!(
                "paused by {} ({}): not drilled; `rotor resume {}` when it may be touched, then drill it",
                row.paused_by.unwrap_or_default(),
                row.paused_reason.unwrap_or_default(),
                credential.id
            ));
            return Ok(self.finish(report, started, &bar));
        }
        bar.step("preflight");
        if let Err(e) = rotator.preflight().await {
            report.problem(format!(
                "preflight failed: {e}; fix access to the provider (`rotor validate --online`, `rotor policy {}`)",
                credential.id
            ));
            return Ok(self.finish(report, started, &bar));
        }
        let before = match vault.read_current(&credential.vault_path).await {
            Ok(doc) => doc.map(|d| d.current.fingerprint),
            Err(e) => {
                report.problem(format!("cannot read the current version: {e}"));
                return Ok(self.finish(report, started, &bar));
            }
        };
        match self
            .live_run_in_the_way(credential, &mut report, &bar)
            .await?
        {
            LiveRun::None => {}
            LiveRun::Promoted(live) => {
                self.prove_through(credential, &live, fault, &mut report)
                    .await?;
                return Ok(self.finish(report, started, &bar));
            }
            LiveRun::InTheWay => return Ok(self.finish(report, started, &bar)),
        }
        let grace = options.grace.unwrap_or(credential.grace.as_std());
        let mut run = daemon::new_run(&credential.id, "drill", false, grace, self.now());
        run.drill = Some(if options.dry_run { DRY_RUN } else { "live" });
        match self
            .store
            .request_rotation(&run, &format!("{} (drill)", self.actor), self.now())
            .await
        {
            Ok(_) => {}
            Err(StoreError::RunInFlight(_)) => {
                report.problem(
                    "another rotation of this credential started just now; drill again once it finished"
                        .to_owned(),
                );
                return Ok(self.finish(report, started, &bar));
            }
            Err(e) => return Err(e),
        }
        report.run_id = Some(run.id.clone());

        let final_state = self
            .drive(credential, &run.id, fault, &mut report, &bar)
            .await?;
        let row = self
            .store
            .run(&run.id)
            .await?
            .expect("the drill's run exists");
        report.final_state = match final_state {
            Some(RunState::RolledBack) if options.dry_run && row.last_error.is_none() => {
                "discarded (dry run)".into()
            }
            _ => row.state.to_string(),
        };
        for step in self.store.steps(&run.id).await? {
            report.steps.push(StepReport::from(&step));
        }
        if row.previous_usage.is_some() {
            report.previous_used = Some(crate::engine::PreviousUsage::of(&row).describe());
        }

        bar.step("checking");
        let after = vault.read_current(&credential.vault_path).await;
        let after = match after {
            Ok(doc) => doc,
            Err(e) => {
                report.problem(format!(
                    "cannot read the current version after the drill: {e}"
                ));
                None
            }
        };
        let changed = after.as_ref().map(|d| &d.current.fingerprint) != before.as_ref();
        report.rotated = changed;
        match &after {
            Some(doc) => match rotator.verify(&doc.current.credential).await {
                Ok(()) => report.current_verifies = true,
                Err(e) => report.problem(format!(
                    "the current credential does not authenticate after the drill: {e}; consumers may be failing: rotate it (`rotor rotate {}`)",
                    credential.id
                )),
            },
            None => report.problem(format!(
                "there is no current version to check: `rotor rotate {}` (or `rotor run`) mints the first one",
                credential.id
            )),
        }
        self.expect(
            credential,
            options,
            fault,
            final_state,
            changed,
            &row,
            &mut report,
        );
        self.check_alerts(credential, fault, started, &mut report)
            .await?;
        Ok(self.finish(report, started, &bar))
    }

    /// The credential's live run, waited for while it is on its way to promotion (a daemon
    /// drives it; a drill on a busy day lets it pass). A promoted one is not waited for: it
    /// holds its run slot through the whole grace, and it proves the credential itself.
    async fn live_run_in_the_way(
        &self,
        credential: &Credential,
        report: &mut CredentialReport,
        bar: &Arc<dyn progress::Bar>,
    ) -> Result<LiveRun, StoreError> {
        let deadline = tokio::time::Instant::now() + LIVE_RUN_WAIT;
        loop {
            let Some(live) = self.store.live_run(&credential.id).await? else {
                return Ok(LiveRun::None);
            };
            let state = live.state();
            if state.is_promoted() && live.drill.is_none() {
                return Ok(LiveRun::Promoted(Box::new(live)));
            }
            let waited_out = tokio::time::Instant::now() >= deadline;
            if state == RunState::Stuck || waited_out || self.stopping.load(Ordering::SeqCst) {
                report.problem(format!(
                    "run {} of this credential is {state}{}; `rotor status {}` says what it waits for, then drill again",
                    live.id,
                    if waited_out { " and did not move on within a minute" } else { "" },
                    credential.id
                ));
                return Ok(LiveRun::InTheWay);
            }
            bar.state(&format!("waiting for run {} ({state})", live.id));
            self.pause(Duration::from_millis(250)).await;
        }
    }

    /// A credential whose live run is promoted and in grace (or retiring) was just rotated:
    /// that run's own verify step proved the new credential, and the drill checks that the
    /// current credential authenticates now. It starts no run of its own: the slot is taken
    /// and the provider holds both credentials until the old one retires.
    async fn prove_through(
        &self,
        credential: &Credential,
        live: &crate::store::RunRow,
        fault: Option<&Fault>,
        report: &mut CredentialReport,
    ) -> Result<(), StoreError> {
        let steps = self.store.steps(&live.id).await?;
        let verified = steps
            .iter()
            .rev()
            .find(|s| s.step == "verify" && s.outcome == "ok");
        report.run_id = Some(live.id.clone());
        report.final_state = format!("proven by run {} ({})", live.id, live.state);
        report.steps = steps.iter().map(StepReport::from).collect();
        match verified.and_then(|s| s.finished_at) {
            Some(at) => report.note(format!(
                "run {} rotated this credential: its verify proved the new credential at {}; it is {} until {}, so the drill started no rotation of its own",
                live.id,
                crate::clock::rfc3339(at),
                live.state,
                live.grace_until.map_or("its retirement".into(), crate::clock::rfc3339),
            )),
            None => report.problem(format!(
                "run {} was promoted without a recorded verify; `rotor history {}` shows its steps",
                live.id, credential.id
            )),
        }
        if let Some(fault) = fault {
            report.note(format!(
                "`{fault}` was not injected: the provider holds the old and the new credential until run {} retires the old one; drill this scenario after that",
                live.id
            ));
        }
        let vault = self
            .runtime
            .vaults
            .get(&credential.vault)
            .expect("config validation: the vault exists");
        let rotator = self.runtime.rotator(&credential.id);
        match vault.read_current(&credential.vault_path).await {
            Ok(Some(doc)) => match rotator.verify(&doc.current.credential).await {
                Ok(()) => report.current_verifies = true,
                Err(e) => report.problem(format!(
                    "the current credential does not authenticate: {e}; consumers may be failing: `rotor rotate {} --emergency`",
                    credential.id
                )),
            },
            Ok(None) => report.problem("the vault holds no current version although a run promoted one".to_owned()),
            Err(e) => report.problem(format!("cannot read the current version: {e}")),
        }
        Ok(())
    }

    /// Drives the drill's run to its end: through retries and grace, and through a worker that
    /// died as injected (another worker takes over once its lease expires).
    async fn drive(
        &self,
        credential: &Credential,
        run_id: &str,
        fault: Option<&Fault>,
        report: &mut CredentialReport,
        bar: &Arc<dyn progress::Bar>,
    ) -> Result<Option<RunState>, StoreError> {
        let mut engine = self.engine(fault.cloned());
        loop {
            if let Some(row) = self.store.run(run_id).await?
                && (row.state().is_terminal() || row.state() == RunState::Stuck)
            {
                return Ok(Some(row.state()));
            }
            if self.stopping.load(Ordering::SeqCst) {
                report.interrupted = true;
                report.problem(format!(
                    "interrupted: run {run_id} is left as it is; `rotor run` (or `rotor rotate {}`) resumes it",
                    credential.id
                ));
                return Ok(None);
            }
            let now = self.now();
            let claimed = self
                .store
                .claim_run(
                    run_id,
                    &engine.worker,
                    now,
                    now + DRILL_LEASE.as_millis() as i64,
                )
                .await?;
            let Some(run) = claimed else {
                // Waiting for a timer, or another worker holds it (a dead one's lease, or a
                // daemon that picked it up): look again shortly.
                bar.state(
                    self.store
                        .run(run_id)
                        .await?
                        .map_or("", |r| r.state.as_str()),
                );
                self.pause(Duration::from_millis(250)).await;
                continue;
            };
            bar.state(run.state.as_str());
            let watch = self.watch(run_id, &engine.worker, bar);
            let driven = engine.drive(&self.runtime, run).await;
            watch.abort();
            self.notify(credential).await?;
            match driven {
                Ok(Driven::Finished(state)) => return Ok(Some(state)),
                Ok(Driven::Waiting(until)) => {
                    let row = self.store.run(run_id).await?;
                    let why = match row.as_ref().map(|r| r.state()) {
                        Some(RunState::Promoted) => "grace",
                        _ => "retry",
                    };
                    bar.waiting(why, until);
                    let wait = (until - self.now()).max(0) as u64;
                    self.pause(Duration::from_millis(wait)).await;
                }
                Ok(Driven::Stopped) => {}
                Err(EngineError::Crashed(point)) => {
                    report.note(format!(
                        "the worker died at {point} as injected; another worker resumed the run after its lease ({}s)",
                        DRILL_LEASE.as_secs()
                    ));
                    bar.step(&format!("worker died at {point}; waiting for its lease"));
                    engine = self.engine(None);
                }
                Err(e) => {
                    report.problem(format!("the run could not be driven: {e}"));
                    return Ok(None);
                }
            }
        }
    }

    fn engine(&self, fault: Option<Fault>) -> Engine {
        let mut engine = Engine::new(
            self.store.clone(),
            self.clock.clone(),
            format!("drill-{}", daemon::worker_id()),
        );
        engine.disturbance =
            fault.map(|f| Arc::new(f) as Arc<dyn crate::engine::disturbance::Disturbance>);
        engine.stopping = self.stopping.clone();
        engine
    }

    /// Sleeps, waking early on Ctrl-C.
    async fn pause(&self, total: Duration) {
        let end = tokio::time::Instant::now() + total;
        while tokio::time::Instant::now() < end && !self.stopping.load(Ordering::SeqCst) {
            let left = end - tokio::time::Instant::now();
            tokio::time::sleep(left.min(Duration::from_millis(200))).await;
        }
    }

    /// Shows the run's state as the engine moves it, step by step, and keeps the worker's
    /// lease alive while it drives (a slow provider step must not lose it).
    fn watch(
        &self,
        run_id: &str,
        worker: &str,
        bar: &Arc<dyn progress::Bar>,
    ) -> tokio::task::JoinHandle<()> {
        let (store, run_id, worker, bar) = (
            self.store.clone(),
            run_id.to_owned(),
            worker.to_owned(),
            bar.clone(),
        );
        let clock = self.clock.clone();
        tokio::spawn(async move {
            let mut beat = tokio::time::Instant::now();
            loop {
                if let Ok(Some(run)) = store.run(&run_id).await {
                    bar.state(run.state.as_str());
                }
                if beat.elapsed() >= DRILL_LEASE / 3 {
                    beat = tokio::time::Instant::now();
                    let until = clock.now_ms() + DRILL_LEASE.as_millis() as i64;
                    if let Err(e) = store
                        .heartbeat(&worker, std::slice::from_ref(&run_id), until)
                        .await
                    {
                        tracing::warn!(error = %e, "drill heartbeat failed; the lease may expire");
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    }

    /// Tells the credential's consumers, as the daemon would.
    async fn notify(&self, credential: &Credential) -> Result<(), StoreError> {
        let runtime = &self.runtime;
        runtime
            .notify_due(&self.store, || self.now(), Some(&credential.id))
            .await
            .map(drop)
    }

    /// Compares what happened with what the scenario documents.
    #[allow(clippy::too_many_arguments)]
    fn expect(
        &self,
        credential: &Credential,
        options: &DrillOptions,
        fault: Option<&Fault>,
        state: Option<RunState>,
        changed: bool,
        run: &crate::store::RunRow,
        report: &mut CredentialReport,
    ) {
        let Some(state) = state else { return };
        let cause = run.last_error.as_deref().unwrap_or("see `rotor history`");
        let rolls_back = matches!(
            fault,
            Some(Fault::VerifyFail | Fault::VaultDown | Fault::ProviderTimeout)
        );
        if state == RunState::Stuck {
            report.problem(format!(
                "the run is stuck: {cause}; fix the cause, then `rotor rotate {}` resumes it",
                credential.id
            ));
            return;
        }
        if rolls_back {
            if state != RunState::RolledBack {
                report.problem(format!(
                    "the injected {} should have rolled the run back, but it ended {state}",
                    fault.expect("a fault")
                ));
            }
            if changed {
                report
                    .problem("what consumers read changed although the run rolled back".to_owned());
            }
            return;
        }
        if options.dry_run {
            if state != RunState::RolledBack || run.last_error.is_some() {
                report.problem(format!(
                    "the dry run did not get through verify: {cause}; fix it before the next rotation is due"
                ));
            }
            if changed {
                report.problem("a dry run changed what consumers read".to_owned());
            }
            if rotor_rotators::AnyRotator::apply_disturbs_current(
                self.runtime.rotator(&credential.id),
            ) {
                report.note(
                    "apply and verify were skipped: this rotator changes the credential consumers use in place".to_owned(),
                );
            }
        } else {
            if state != RunState::Completed {
                report.problem(format!(
                    "the rotation ended {state}: {cause}; fix it before the next rotation is due"
                ));
            }
            if !changed {
                report.problem(
                    "the rotation completed but the current version did not change".to_owned(),
                );
            }
        }
    }

    /// Collects the alerts raised since the drill began and whether each reached its sink;
    /// an injected failure must have reached every sink. The drill then resolves what it raised.
    async fn check_alerts(
        &self,
        credential: &Credential,
        fault: Option<&Fault>,
        since: i64,
        report: &mut CredentialReport,
    ) -> Result<(), StoreError> {
        let alerter = &self.runtime.alerter;
        let expected = match fault {
            Some(Fault::VerifyFail) => Some(Condition::RolledBack),
            Some(Fault::VaultDown | Fault::ProviderTimeout) => Some(Condition::RetriesExhausted),
            _ => None,
        };
        // A sink that was down when the alert was raised gets one more try.
        alerter.deliver_due(&self.store, self.now()).await?;
        let deliveries = self.store.deliveries_since(&credential.id, since).await?;
        if let Some(condition) = expected {
            let pages = credential.alerts.iter().any(|name| {
                self.runtime
                    .config
                    .alerts
                    .get(name)
                    .is_some_and(|sink| sink.kind() != "log")
            });
            if !pages {
                report.problem(format!(
                    "{} was raised, but only rotor's log heard of it: route the credential to a sink that reaches people (`alerts = [...]` naming a webhook, slack, alertmanager or pagerduty sink)",
                    condition.as_str()
                ));
            }
            for sink in &credential.alerts {
                let delivered = deliveries.iter().any(|d| {
                    &d.sink == sink
                        && d.condition == condition.as_str()
                        && d.event == "trigger"
                        && d.delivered_at.is_some()
                });
                if !delivered {
                    let error = deliveries
                        .iter()
                        .filter(|d| &d.sink == sink)
                        .find_map(|d| d.last_error.clone())
                        .unwrap_or_else(|| "no alert was raised".into());
                    report.problem(format!(
                        "the {} alert did not reach sink `{sink}`: {error}; fix the sink (`[alerts.{sink}]`)",
                        condition.as_str()
                    ));
                }
            }
            alerter
                .resolve(
                    &self.store,
                    &credential.id,
                    &[condition],
                    &credential.alerts,
                    self.now(),
                )
                .await?;
        }
        for d in self.store.deliveries_since(&credential.id, since).await? {
            report.alerts.push(AlertDelivery::from(d));
        }
        Ok(())
    }

    fn finish(
        &self,
        mut report: CredentialReport,
        started: i64,
        bar: &Arc<dyn progress::Bar>,
    ) -> CredentialReport {
        report.duration_ms = self.now() - started;
        bar.done(report.passed(), &report.summary());
        report
    }
}
