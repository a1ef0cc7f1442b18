//! The engine drives one run through the rotation state machine (`state`): each step is
//! recorded before it runs, performed idempotently (keyed by the run token), and saved with a
//! compare-and-swap on the run's state and lease owner. A process killed anywhere resumes
//! from the last saved state; repeating a step is harmless.

pub mod disturbance;
mod panicked;
pub use crate::model::state;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::FutureExt;
use rotor_rotators::{
    AnyRotator, Credential, ErrorClass, MintContext, Retired, Rotator, RotatorError,
};
use thiserror::Error;
use tracing::Instrument;

use crate::alert::{Alert, Alerter, Condition};
use crate::clock::Clock;
use crate::config::{Config, Credential as CredentialConfig};
use crate::failpoint;
use crate::notify::{Event, EventKind, Notifier, RetireAfter};
use crate::store::{AuditEntry, CredentialUpdate, RunRow, StepEnd, Store, StoreError, Then};
use crate::vault::{
    AnyVault, Held, Previous, StoredVersion, Vault, VaultError, VaultSecrets, Vaults,
};
use disturbance::{Disturbance, Target};
use state::{RunState, Step};

/// Why a step failed, classified for the state machine. Messages name the credential's
/// vault path and the step, never secret values.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    /// The provider said when to come back (a rate limit's reset).
    pub retry_after: Option<std::time::Duration>,
    /// This worker must stop driving the run and save nothing: rotor's own store went away
    /// mid-step (not the credential's failure, so it spends none of its retries), or its lease
    /// lapsed. The run is resumed from this step by whoever claims it next.
    pub abandon: Option<Box<StoreError>>,
}

impl From<RotatorError> for StepError {
    fn from(e: RotatorError) -> Self {
        StepError {
            class: e.class,
            message: format!("provider: {}", e.message),
            retry_after: e.retry_after,
            abandon: None,
        }
    }
}

impl From<VaultError> for StepError {
    fn from(e: VaultError) -> Self {
        StepError {
            class: e.class,
            message: e.to_string(),
            retry_after: None,
            abandon: None,
        }
    }
}

impl StepError {
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
            abandon: None,
        }
    }

    fn conflict(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Conflict,
            message: message.into(),
            retry_after: None,
            abandon: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
            abandon: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential {0} of this run is not in the config (removed?); its run is left as it is")]
    NotConfigured(String),
    #[error("vault {vault} of credential {credential} is not configured")]
    NoVault { credential: String, vault: String },
    /// A configured vault could not be opened: its key file, CA bundle or address is unusable.
    #[error("cannot open the vaults: {0}")]
    OpenVaults(#[source] VaultError),
    #[error("cannot build the rotator of {credential}: {source}")]
    Rotator {
        credential: String,
        #[source]
        source: RotatorError,
    },
    /// Test-only: the worker "died" at a crash point without saving.
    #[error("simulated crash at {0}")]
    Crashed(String),
    /// A step panicked and the run could not be recorded as failed by this worker (its lease
    /// had gone); whoever claims it next resumes it.
    #[error("run {run_id} of {credential} panicked and was left to its next claim: {message}")]
    Panicked {
        credential: String,
        run_id: String,
        message: String,
    },
}

/// How far `drive` got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driven {
    /// The run reached a terminal state or `stuck`.
    Finished(RunState),
    /// The run waits for a timer (grace or a retry backoff) until this time (ms).
    Waiting(i64),
    /// Shutdown was requested: the lease was released between steps.
    Stopped,
}

/// Everything built from one config: rotators and vaults. Replaced whole on reload.
pub struct Runtime {
    pub config: Config,
    pub vaults: Arc<Vaults>,
    pub rotators: HashMap<String, AnyRotator>,
    pub alerter: Alerter,
    pub notifier: Notifier,
}

impl Runtime {
    /// Tells consumers what is due (of one credential with `only`); see `Notifier`.
    pub async fn notify_due(
        &self,
        store: &Store,
        now: impl Fn() -> i64,
        only: Option<&str>,
    ) -> Result<crate::notify::Pass, StoreError> {
        self.notifier
            .deliver_due(store, &self.config, &self.alerter, now, only)
            .await
    }

    pub async fn build(config: Config) -> Result<Runtime, EngineError> {
        let vaults = Arc::new(
            Vaults::open(&config)
                .await
                .map_err(EngineError::OpenVaults)?,
        );
        let secrets: rotor_rotators::Secrets = Arc::new(VaultSecrets(vaults.clone()));
        let mut rotators = HashMap::new();
        for c in &config.credentials {
            let r = AnyRotator::build(&c.rotator, secrets.clone()).map_err(|source| {
                EngineError::Rotator {
                    credential: c.id.clone(),
                    source,
                }
            })?;
            rotators.insert(c.id.clone(), r);
        }
        let alerter = Alerter::new(&config, vaults.clone());
        let notifier = Notifier::new(&config, vaults.clone());
        Ok(Runtime {
            config,
            vaults,
            rotators,
            alerter,
            notifier,
        })
    }
}

/// A run's fence for its rotator: is the run still this worker's?
struct RunFence<'a> {
    store: &'a Store,
    clock: &'a dyn Clock,
    run_id: &'a str,
    worker: &'a str,
    margin_ms: i64,
    /// Whether the fence said no: the rotator's error is then the fence's, not the step's.
    refused: AtomicBool,
}

impl rotor_rotators::Fence for RunFence<'_> {
    fn still_owned(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        // A store that cannot answer is not a yes: the rotator stops, and the run is
        // abandoned to be resumed at this step (see `refused`).
        Box::pin(async move {
            let owned = self
                .store
                .lease_held(
                    self.run_id,
                    self.worker,
                    self.clock.now_ms() + self.margin_ms,
                )
                .await
                .unwrap_or(false);
            if !owned {
                self.refused.store(true, Ordering::SeqCst);
            }
            owned
        })
    }
}

/// How far before its claimed expiry a lease is checked in the store before a side effect,
/// and at most how long it must have left then (see `Ctx::lease_margin_ms`).
const LEASE_MARGIN_MS: i64 = 5_000;

/// `runs.drill` of a dry-run drill.
pub const DRY_RUN: &str = "dry_run";

/// What a step's side effect came to.
enum Performed {
    /// Done; the credential's row changes like this in the same commit as the run.
    Done(Option<CredentialUpdate>),
    /// Not finished: the same step runs again at this time (ms), from the durable timer.
    WaitUntil(i64),
}

/// What a drive of a run holds from its own earlier steps: the candidate it stored, the
/// version that candidate replaces and, once promoted, the candidate's version. A provider's
/// apply, verify, promotion and retire in the same drive use them instead of asking the vault
/// again (nothing else writes the path while the run is live, and the vault's check-and-set
/// catches anyone who did); a drive resumed after a crash or a wait reads them back.
struct Known {
    candidate: Credential,
    replaced: Option<StoredVersion>,
    promoted: Option<String>,
}

/// Drives runs for one worker identity.
pub struct Engine {
    pub store: Store,
    pub clock: Arc<dyn Clock>,
    pub worker: String,
    /// Set on shutdown: the run in hand stops after its current step.
    pub stopping: Arc<AtomicBool>,
    /// What disturbs this worker's runs on purpose (a drill's fault, a test's crash point);
    /// see `disturbance`.
    pub disturbance: Option<Arc<dyn Disturbance>>,
}

struct Ctx<'a> {
    credential: &'a CredentialConfig,
    rotator: &'a AnyRotator,
    vault: &'a AnyVault,
    runtime: &'a Runtime,
    /// A side effect starts only while the lease has this long left in the store: a worker
    /// that lost it unawares (its heartbeats failed) then has this long to finish writing
    /// before another may claim the run. A quarter of the lease: heartbeats keep two thirds.
    lease_margin_ms: i64,
}

impl Engine {
    pub fn new(store: Store, clock: Arc<dyn Clock>, worker: String) -> Self {
        Engine {
            store,
            clock,
            worker,
            stopping: Arc::new(AtomicBool::new(false)),
            #[cfg(not(feature = "bench-unverified"))]
            disturbance: None,
            #[cfg(feature = "bench-unverified")]
            disturbance: disturbance::UnverifiedBench::from_env(),
        }
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// A crash point: the worker dies here when its disturbance says so, and a process
    /// built for the crash tests pauses here when `ROTOR_FAILPOINT` names it.
    async fn point(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        step: Step,
        when: &str,
    ) -> Result<(), EngineError> {
        let name = format!("{step}:{when}");
        if let Some(disturbance) = &self.disturbance
            && disturbance.dies_at(&target(ctx, run), &name)
        {
            tracing::warn!(point = %name, "this worker dies here, as injected");
            return Err(EngineError::Crashed(name));
        }
        failpoint::pause_if_armed(&name).await;
        Ok(())
    }

    /// Drives a run this worker has claimed as far as it can go now.
    pub async fn drive(&self, runtime: &Runtime, run: RunRow) -> Result<Driven, EngineError> {
        let credential = runtime
            .config
            .credential(&run.credential_id)
            .ok_or_else(|| EngineError::NotConfigured(run.credential_id.clone()))?;
        let vault = runtime
            .vaults
            .get(&credential.vault)
            .ok_or_else(|| EngineError::NoVault {
                credential: credential.id.clone(),
                vault: credential.vault.clone(),
            })?;
        let rotator = &runtime.rotators[&credential.id];
        let lease_margin_ms = run.lease_until.map_or(0, |until| {
            ((until - self.now()) / 4).clamp(0, LEASE_MARGIN_MS)
        });
        let ctx = Ctx {
            credential,
            rotator,
            vault,
            runtime,
            lease_margin_ms,
        };
        let span = tracing::info_span!("run", credential = %credential.id, run = %run.id);
        let run_id = run.id.clone();
        let mut run = run;
        // A panic in a step (a bug in rotor or in a provider's library) fails that run alone:
        // it is recorded like a permanent error and the drive goes on with the rollback, if
        // any. Each panic moves the run on (to rolling back, then to stuck), so a run that
        // panics again is never retried in a loop.
        loop {
            let driven = AssertUnwindSafe(self.drive_steps(&ctx, run))
                .catch_unwind()
                .instrument(span.clone())
                .await;
            match driven {
                Ok(result) => return result,
                Err(payload) => {
                    match self
                        .after_panic(&ctx, &run_id, panicked::message(payload.as_ref()))
                        .instrument(span.clone())
                        .await?
                    {
                        panicked::Then::Drive(failed) => run = *failed,
                        panicked::Then::Stop(driven) => return Ok(driven),
                    }
                }
            }
        }
    }

    async fn drive_steps(&self, ctx: &Ctx<'_>, mut run: RunRow) -> Result<Driven, EngineError> {
        // A step whose start was already recorded by the previous step's save.
        let mut begun: Option<(Step, i64)> = None;
        let mut known: Option<Known> = None;
        loop {
            let state = run.state();
            let Some(transition) = next_transition(&run, state) else {
                // The save that ended the run gave its lease up already.
                if run.lease_owner.is_some() {
                    self.store.release(&run.id, &self.worker).await?;
                }
                return Ok(Driven::Finished(state));
            };
            if self.stopping.load(Ordering::SeqCst) {
                self.store.release(&run.id, &self.worker).await?;
                return Ok(Driven::Stopped);
            }
            let now = self.now();
            let notified = || async {
                Ok::<_, StoreError>(
                    ctx.credential.retire_after == RetireAfter::Notified
                        && self
                            .store
                            .notifications_settled(&run.id, EventKind::Promoted.as_str())
                            .await?,
                )
            };
            if transition.step == Step::Grace
                && let Some(until) = run.grace_until.filter(|&until| until > now)
                && !notified().await?
            {
                // The durable timer: the wake-up time is in the store, not in this process.
                run.not_before = until;
                run.lease_owner = None;
                run.lease_until = None;
                let audit = self
                    .audit(&run, "grace_wait")
                    .detail(format!("grace until {}", crate::clock::rfc3339(until)));
                self.store
                    .save_run(
                        &run,
                        state,
                        &self.worker,
                        None,
                        None,
                        &audit,
                        now,
                        Then::default(),
                    )
                    .await?;
                // The last hook may have succeeded between the check and the save, and its
                // wake-up found the run still leased: look once more, now that it is saved.
                if notified().await? && self.store.wake_promoted_run(&run.id, now).await? {
                    return Ok(Driven::Waiting(now));
                }
                return Ok(Driven::Waiting(until));
            }
            let seq = match begun.take() {
                Some((step, seq)) if step == transition.step => seq,
                _ => {
                    self.store
                        .begin_step(&run, transition.step.as_str(), &self.worker, now)
                        .await?
                }
            };
            self.point(ctx, &run, transition.step, "before").await?;
            self.rate_limit(ctx, transition.step).await?;
            // A worker that was paused past its lease must not act on a run another took over
            // (its save would be refused, but a side effect would not).
            if !self.holds_lease(ctx, &run).await? {
                return Err(EngineError::Store(StoreError::LeaseLost {
                    run_id: run.id.clone(),
                    expected: state.as_str(),
                }));
            }
            tracing::debug!(step = %transition.step, attempt = run.attempts + 1, "step starts");
            let span = tracing::info_span!(
                "step",
                step = %transition.step,
                attempt = run.attempts + 1,
                credential = %ctx.credential.id,
                run = %run.id,
                provider = ctx.credential.provider(),
            );
            let mut passed_step = None;
            let result = self
                .perform(ctx, transition.step, &mut run, &mut known)
                .instrument(span)
                .await;
            self.point(ctx, &run, transition.step, "effect").await?;
            let now = self.now();
            match result {
                Ok(Performed::WaitUntil(until)) => {
                    run.not_before = until;
                    run.lease_owner = None;
                    run.lease_until = None;
                    let audit = self.audit(&run, transition.step.as_str()).detail(format!(
                        "{state}: again at {}",
                        crate::clock::rfc3339(until)
                    ));
                    let end = StepEnd {
                        seq,
                        outcome: "waiting",
                        error: None,
                    };
                    self.store
                        .save_run(
                            &run,
                            state,
                            &self.worker,
                            Some(&end),
                            None,
                            &audit,
                            now,
                            Then::default(),
                        )
                        .await?;
                    tracing::info!(step = %transition.step, until = %crate::clock::rfc3339(until), "step waits");
                    return Ok(Driven::Waiting(until));
                }
                Ok(Performed::Done(update)) => {
                    run.set_state(transition.to);
                    run.attempts = 0;
                    run.last_error = None;
                    run.error_class = None;
                    // Begin the next step in the same commit when it runs right away: not a
                    // grace that waits for its timer or for hooks, not when the worker stops.
                    let grace_over = run.grace_until.is_some_and(|until| until <= now)
                        && ctx.credential.retire_after != RetireAfter::Notified;
                    let runs_now = |t: &state::Transition| {
                        (t.step != Step::Grace || grace_over)
                            && !self.stopping.load(Ordering::SeqCst)
                    };
                    let mut next = next_transition(&run, transition.to).filter(runs_now);
                    // A next step with nothing to do passes in this commit too, and the one
                    // after it begins there.
                    let passed = next.filter(|t| nothing_to_do(ctx, &run, t.step));
                    let mut detail = format!("{state} -> {}", transition.to);
                    if let Some(p) = passed {
                        run.set_state(p.to);
                        next = next_transition(&run, p.to).filter(runs_now);
                        detail.push_str(&format!(", {} (nothing to do) -> {}", p.step, p.to));
                    }
                    if run.state().is_terminal() {
                        run.finished_at = Some(now);
                        run.lease_owner = None;
                        run.lease_until = None;
                    }
                    let audit = self.audit(&run, transition.step.as_str()).detail(detail);
                    let end = StepEnd {
                        seq,
                        outcome: "ok",
                        error: None,
                    };
                    let then = Then {
                        passed: passed.map(|p| p.step.as_str()),
                        begin: next.map(|t| t.step.as_str()),
                    };
                    let next_seq = self
                        .store
                        .save_run(
                            &run,
                            state,
                            &self.worker,
                            Some(&end),
                            update.as_ref(),
                            &audit,
                            now,
                            then,
                        )
                        .await?;
                    begun = next.zip(next_seq).map(|(t, seq)| (t.step, seq));
                    tracing::info!(step = %transition.step, state = %transition.to, "step done");
                    if let Some(p) = passed {
                        tracing::info!(step = %p.step, state = %p.to, "step done: nothing to do");
                        passed_step = Some(p.step);
                    }
                }
                Err(StepError {
                    abandon: Some(e), ..
                }) => {
                    tracing::warn!(step = %transition.step, error = %e, "run abandoned mid-step; it resumes from this step when claimed again");
                    return Err(EngineError::Store(*e));
                }
                Err(error) => {
                    if let Some(driven) = self
                        .fail(ctx, &mut run, state, transition.step, seq, error, now)
                        .await?
                    {
                        return Ok(driven);
                    }
                }
            }
            self.point(ctx, &run, transition.step, "after").await?;
            // Crash points stay where a step runs, though a passed step's record was saved
            // with the step before it: a crash at any of them is one right after that save.
            if let Some(step) = passed_step {
                for when in ["before", "effect", "after"] {
                    self.point(ctx, &run, step, when).await?;
                }
            }
        }
    }

    /// Handles a failed step: retry later, or move to the failure state and alert. Returns
    /// `Some` when the run must stop being driven now.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        ctx: &Ctx<'_>,
        run: &mut RunRow,
        state: RunState,
        step: Step,
        seq: i64,
        error: StepError,
        now: i64,
    ) -> Result<Option<Driven>, EngineError> {
        let attempt = run.attempts + 1;
        let message = format!("{step} failed (attempt {attempt}): {}", error.message);
        // Never sooner than the provider asked (a rate limit's reset).
        let retry_in = match error.class {
            ErrorClass::Transient => ctx
                .credential
                .retry
                .delay(attempt as u32)
                .map(|d| d.max(error.retry_after.unwrap_or_default())),
            _ => None,
        };
        run.last_error = Some(message.clone());
        run.error_class = Some(error.class.as_str().to_owned());
        if let Some(delay) = retry_in {
            run.attempts = attempt;
            run.not_before = now + delay.as_millis() as i64;
            run.lease_owner = None;
            run.lease_until = None;
            tracing::warn!(step = %step, attempt, retry_in_ms = delay.as_millis() as u64, error = %error.message, "step failed; will retry");
            let audit = self
                .audit(run, step.as_str())
                .detail(format!("retry: {message}"));
            let end = StepEnd {
                seq,
                outcome: "retry",
                error: Some(message),
            };
            self.store
                .save_run(
                    run,
                    state,
                    &self.worker,
                    Some(&end),
                    None,
                    &audit,
                    now,
                    Then::default(),
                )
                .await?;
            return Ok(Some(Driven::Waiting(run.not_before)));
        }
        let to = state.on_failure();
        let exhausted = error.class == ErrorClass::Transient;
        // A drill's failure is the drill's, not the credential's.
        let mut credential_update = CredentialUpdate {
            last_error: run.drill.is_none().then(|| Some(message.clone())),
            ..Default::default()
        };
        run.set_state(to);
        run.attempts = 0;
        if to == RunState::Stuck {
            run.stuck_from = Some(state);
            run.lease_owner = None;
            run.lease_until = None;
            credential_update.failure = Some(true);
        }
        tracing::error!(step = %step, state = %to, error = %error.message, exhausted, "step failed");
        let audit = self
            .audit(run, step.as_str())
            .detail(format!("{state} -> {to}: {message}"));
        let end = StepEnd {
            seq,
            outcome: "failed",
            error: Some(message.clone()),
        };
        self.store
            .save_run(
                run,
                state,
                &self.worker,
                Some(&end),
                Some(&credential_update),
                &audit,
                now,
                Then::default(),
            )
            .await?;
        let condition = match (error.class, to) {
            (ErrorClass::Conflict, _) => Condition::Conflict,
            (_, RunState::Stuck) => Condition::Stuck,
            (ErrorClass::Transient, _) => Condition::RetriesExhausted,
            _ => Condition::RolledBack,
        };
        let action = match to {
            RunState::Stuck if state == RunState::RollingBack => format!(
                "the rollback could not finish: consumers still read the current credential, but the \
                 candidate may still be installed at the provider; fix the cause, then `rotor rotate {}` \
                 resumes the rollback",
                ctx.credential.id
            ),
            RunState::Stuck => format!(
                "the new credential is live; fix the cause, then `rotor rotate {}` resumes the run from {state}",
                ctx.credential.id
            ),
            _ => "the current credential is untouched and the candidate is being removed; fix the cause, \
                  the next scheduled attempt (or `rotor rotate`) tries again"
                .to_owned(),
        };
        let alert = Alert {
            credential_id: ctx.credential.id.clone(),
            provider: ctx.credential.provider().to_owned(),
            condition,
            step: step.as_str().to_owned(),
            attempt,
            run_id: run.id.clone(),
            cause: message,
            action,
            raised_at: String::new(),
        };
        ctx.runtime
            .alerter
            .raise(&self.store, &alert, &ctx.credential.alerts, self.now())
            .await?;
        self.store
            .audit(
                &self
                    .audit(run, "alert")
                    .detail(format!("{} at {step}", condition.as_str())),
                self.now(),
            )
            .await?;
        if to == RunState::Stuck {
            return Ok(Some(Driven::Finished(RunState::Stuck)));
        }
        Ok(None)
    }

    fn audit(&self, run: &RunRow, action: &str) -> AuditEntry {
        AuditEntry::new(&self.worker, action)
            .credential(&run.credential_id)
            .run(&run.id)
    }

    /// The side effect of one step. Every branch is idempotent for the run's token.
    async fn perform(
        &self,
        ctx: &Ctx<'_>,
        step: Step,
        run: &mut RunRow,
        known: &mut Option<Known>,
    ) -> Result<Performed, StepError> {
        let path = ctx.credential.vault_path.as_str();
        if let Some(disturbance) = &self.disturbance
            && let Some(failure) = disturbance.replaces(&target(ctx, run), step)
        {
            return Err(failure);
        }
        if run.drill.as_deref() == Some(DRY_RUN)
            && matches!(step, Step::Apply | Step::Verify)
            && ctx.rotator.apply_disturbs_current()
        {
            tracing::info!(step = %step, "dry run: skipped, applying would change what consumers use");
            return Ok(Performed::Done(None));
        }
        match step {
            Step::Mint => {
                let current = ctx.vault.read_current(path).await?;
                let recorded_version = self
                    .store
                    .current_version(&ctx.credential.id)
                    .await
                    .map_err(store_step_error)?;
                let found = current.as_ref().map(|d| d.current.version.clone());
                if found != recorded_version {
                    return Err(StepError::conflict(format!(
                        "vault {} path {path} holds version {} but rotor last promoted {}: it was changed \
                         outside rotor. Nothing is overwritten; reconcile by hand, then `rotor rotate {}`",
                        ctx.vault.name(),
                        found.as_deref().unwrap_or("(none)"),
                        recorded_version.as_deref().unwrap_or("(none)"),
                        ctx.credential.id
                    )));
                }
                // A credential the provider makes must not be made twice: a run resumed after
                // a crash takes the one it stored. One rotor makes is made again at no cost,
                // and `write_pending` keeps the version this run stored before, so the vault
                // is not asked twice.
                let stored_before = if ctx.rotator.origin() == rotor_rotators::Origin::Provider {
                    ctx.vault.read_pending(path).await?
                } else {
                    None
                };
                let pending = match stored_before {
                    Some(p) if p.token.as_deref() == Some(run.token.as_str()) => p,
                    _ => {
                        let fence = RunFence {
                            store: &self.store,
                            clock: self.clock.as_ref(),
                            run_id: &run.id,
                            worker: &self.worker,
                            margin_ms: ctx.lease_margin_ms,
                            refused: AtomicBool::new(false),
                        };
                        let context = MintContext {
                            token: &run.token,
                            current: current.as_ref().map(|d| &d.current.credential),
                            fence: Some(&fence),
                        };
                        let candidate = match ctx.rotator.mint(context).await {
                            Ok(candidate) => candidate,
                            // The rotator stopped at the fence: the lease lapsed, or the store
                            // could not say (a database restart). Neither is the credential's
                            // failure, so nothing is saved and nothing rolled back: the run
                            // resumes at mint under whoever claims it next.
                            Err(e) if fence.refused.load(Ordering::SeqCst) => {
                                return Err(abandoned_at_mint(run, e.into()));
                            }
                            Err(e) => return Err(e.into()),
                        };
                        // A provider-made secret exists only in this process until stored.
                        failpoint::pause_if_armed("mint:minted").await;
                        // A worker paused past its lease (a stopped process, a long GC, a
                        // partition) must not write over the pending version of the worker
                        // that took the run over.
                        if !self.holds_lease(ctx, run).await.map_err(store_step_error)? {
                            // What this worker just made is its own (the vault never saw it):
                            // it undoes it rather than leave it orphaned at the provider.
                            let current = current.as_ref().map(|d| &d.current.credential);
                            if ctx.rotator.origin() == rotor_rotators::Origin::Provider
                                && let Err(e) = ctx.rotator.rollback(&candidate, current).await
                            {
                                tracing::warn!(error = %e, "could not remove the credential minted after the run was taken over");
                            }
                            // Nothing is saved: the run resumes at mint under its next owner
                            // (perhaps this worker again), never rolled back for this.
                            return Err(abandoned_at_mint(
                                run,
                                StepError::conflict(format!(
                                    "the lease on run {} lapsed while this worker minted",
                                    run.id
                                )),
                            ));
                        }
                        ctx.vault
                            .write_pending(path, &run.token, &candidate, previous_kept(ctx, run))
                            .await?
                    }
                };
                if !ctx.rotator.vault_only() {
                    *known = Some(Known {
                        candidate: pending.credential.clone(),
                        replaced: current.as_ref().map(|d| d.current.clone()),
                        promoted: None,
                    });
                }
                run.pending_version = Some(pending.version);
                run.pending_fingerprint = Some(pending.fingerprint);
                run.replaced_version = current.as_ref().map(|d| d.current.version.clone());
                run.replaced_fingerprint = current.map(|d| d.current.fingerprint);
                Ok(Performed::Done(None))
            }
            Step::Apply if ctx.rotator.vault_only() => Ok(Performed::Done(None)),
            Step::Apply => {
                if known.is_none() {
                    *known = Some(Known {
                        candidate: self.own_pending(ctx, run).await?,
                        replaced: ctx.vault.read_current(path).await?.map(|d| d.current),
                        promoted: None,
                    });
                }
                let held = known.as_ref().expect("set above");
                let replaced = held.replaced.as_ref().map(|r| &r.credential);
                ctx.rotator.apply(&held.candidate, replaced).await?;
                Ok(Performed::Done(None))
            }
            Step::Verify => {
                // A vault-only credential's check is of what the vault gives back; a provider's
                // is a login with what this drive stored, or with what a resumed one reads.
                let read_back;
                let candidate = match known.as_ref() {
                    Some(held) => &held.candidate,
                    None => {
                        read_back = self.own_pending(ctx, run).await?;
                        &read_back
                    }
                };
                let fingerprint = candidate.fingerprint().to_hex();
                if Some(&fingerprint) != run.pending_fingerprint.as_ref() {
                    return Err(StepError::permanent(format!(
                        "the pending version read back from vault {} path {path} is not the one rotor stored \
                         (fingerprint differs)",
                        ctx.vault.name()
                    )));
                }
                if !self
                    .disturbance
                    .as_ref()
                    .is_some_and(|d| d.skips_verification())
                {
                    ctx.rotator.verify(candidate).await?;
                }
                Ok(Performed::Done(None))
            }
            Step::Promote => {
                // The drive that verified promotes the candidate it holds, which is the one it
                // verified (a worker fenced off before this drive's claim finished its side
                // effects inside its lease margin, so nothing it wrote follows). A resumed drive
                // promotes the pending version only if it is still the one verified (a
                // fenced-off worker could have written over it): the vault checks as it
                // promotes.
                let version = match known.as_mut() {
                    Some(held) => {
                        let version = ctx
                            .vault
                            .promote_held(
                                path,
                                &run.token,
                                Some(&run.id),
                                run.replaced_version.as_deref(),
                                Held {
                                    candidate: &held.candidate,
                                    replaced: held.replaced.as_ref(),
                                    previous: previous_kept(ctx, run),
                                },
                            )
                            .await?;
                        held.promoted = Some(version.clone());
                        version
                    }
                    None => {
                        ctx.vault
                            .promote_run(
                                path,
                                &run.token,
                                Some(&run.id),
                                run.replaced_version.as_deref(),
                                run.pending_fingerprint.as_deref(),
                            )
                            .await?
                    }
                };
                let now = self.now();
                let event = self.event(ctx, run, EventKind::Promoted, Some(version.clone()), now);
                ctx.runtime
                    .notifier
                    .queue(&self.store, ctx.credential, &event, now)
                    .await
                    .map_err(store_step_error)?;
                run.grace_until = Some(now + grace_ms(run));
                // The next rotation counts from this promotion; the scheduler does not start it
                // while this run is live, so it can never begin before retirement.
                let due = ctx.credential.schedule.next_due(
                    &ctx.credential.id,
                    Some(crate::clock::to_datetime(now)),
                    crate::clock::to_datetime(now),
                );
                Ok(Performed::Done(Some(CredentialUpdate {
                    current_version: Some(version),
                    current_fingerprint: run.pending_fingerprint.clone(),
                    current_since: Some(now),
                    next_due_at: Some(due.map(|d| d.at.timestamp_millis())),
                    due_reason: Some(due.map_or("manual", |d| d.reason.as_str()).to_owned()),
                    ..Default::default()
                })))
            }
            Step::Grace => Ok(Performed::Done(None)),
            Step::Retire => {
                // Nothing at a provider to switch or retire: no need to read what the vault holds.
                // In the drive that promoted, the current credential is the candidate and the
                // previous one the credential it replaced.
                let held = known.take();
                let promoted = held.as_ref().and_then(|h| h.promoted.clone());
                let doc = if ctx.rotator.vault_only() {
                    None
                } else {
                    match held {
                        Some(held) => Some((held.candidate, held.replaced.map(|r| r.credential))),
                        None => ctx
                            .vault
                            .read_current(path)
                            .await?
                            .map(|d| (d.current.credential, d.previous.map(|p| p.credential))),
                    }
                };
                if let Some((current, _)) = &doc {
                    ctx.rotator.switch_over(current).await?;
                }
                if let Some((current, Some(previous))) = &doc
                    && let Retired::Again(after) =
                        ctx.rotator.retire(previous, Some(current)).await?
                {
                    // A second stage is due later (an IAM key is deleted after
                    // `delete_after`): the previous version stays until it is done.
                    return Ok(Performed::WaitUntil(self.now() + after.as_millis() as i64));
                }
                // A versioned vault writes a new version without `previous`: record it, or the
                // next rotation would take it for an out-of-band change.
                let current_version =
                    if let (Some(promoted), Some((current, _))) = (&promoted, &doc) {
                        ctx.vault
                            .drop_previous_held(path, &run.token, promoted, current)
                            .await?
                    } else if doc.is_some() || ctx.rotator.vault_only() {
                        ctx.vault.drop_previous(path, &run.token).await?
                    } else {
                        None
                    };
                let now = self.now();
                // A first version replaced nothing: there is no retirement to tell of.
                if run.replaced_version.is_some() && !ctx.credential.notify.is_empty() {
                    let version = match &current_version {
                        Some(v) => Some(v.clone()),
                        None => self
                            .store
                            .credential(&ctx.credential.id)
                            .await
                            .map_err(store_step_error)?
                            .and_then(|c| c.current_version),
                    };
                    let event = self.event(ctx, run, EventKind::Retired, version, now);
                    ctx.runtime
                        .notifier
                        .queue(&self.store, ctx.credential, &event, now)
                        .await
                        .map_err(store_step_error)?;
                }
                ctx.runtime
                    .alerter
                    .resolve(
                        &self.store,
                        &ctx.credential.id,
                        Condition::RESOLVED_BY_ROTATION,
                        &ctx.credential.alerts,
                        now,
                    )
                    .await
                    .map_err(store_step_error)?;
                Ok(Performed::Done(Some(CredentialUpdate {
                    current_version,
                    last_success_at: Some(now),
                    last_error: Some(None),
                    failure: Some(false),
                    ..Default::default()
                })))
            }
            Step::Rollback => {
                if let Some(pending) = ctx.vault.read_pending(path).await?
                    && pending.token.as_deref() == Some(run.token.as_str())
                {
                    let current = ctx.vault.read_current(path).await?;
                    ctx.rotator
                        .rollback(
                            &pending.credential,
                            current.as_ref().map(|d| &d.current.credential),
                        )
                        .await?;
                    ctx.vault.discard_pending(path, &run.token).await?;
                }
                let now = self.now();
                let recorded = self
                    .store
                    .credential(&ctx.credential.id)
                    .await
                    .map_err(store_step_error)?;
                if run.drill.is_some() {
                    // A drill's run is not the credential's failure: its schedule stands.
                    let since = recorded.and_then(|c| c.current_since);
                    let due = ctx.credential.schedule.next_due(
                        &ctx.credential.id,
                        since.map(crate::clock::to_datetime),
                        crate::clock::to_datetime(now),
                    );
                    return Ok(Performed::Done(Some(CredentialUpdate {
                        next_due_at: Some(due.map(|d| d.at.timestamp_millis())),
                        due_reason: Some(due.map_or("manual", |d| d.reason.as_str()).to_owned()),
                        ..Default::default()
                    })));
                }
                let failures = recorded.map_or(0, |c| c.consecutive_failures) + 1;
                // Try again later, backing off with the failures, but never wait past a day.
                let backoff =
                    ctx.credential.retry.max.as_millis() as i64 * (1i64 << failures.min(10));
                let retry_at = now + backoff.clamp(60_000, 86_400_000);
                Ok(Performed::Done(Some(CredentialUpdate {
                    failure: Some(true),
                    next_due_at: Some(Some(retry_at)),
                    due_reason: Some("schedule".into()),
                    ..Default::default()
                })))
            }
        }
    }

    /// Whether another worker could have taken the run over by now. The lease this worker
    /// claimed lasts at least until `run.lease_until` (a save never shortens it, a heartbeat
    /// only extends it), and no other worker claims it before then: before that, minus a margin
    /// for clocks that disagree, asking the store is not needed.
    fn lease_may_have_lapsed(&self, run: &RunRow) -> bool {
        run.lease_until
            .is_none_or(|until| self.now() + LEASE_MARGIN_MS >= until)
    }

    /// Whether this worker may still make a side effect for the run: its lease cannot have
    /// lapsed yet, or the store says it holds it with `ctx.lease_margin_ms` still to run.
    async fn holds_lease(&self, ctx: &Ctx<'_>, run: &RunRow) -> Result<bool, StoreError> {
        Ok(!self.lease_may_have_lapsed(run)
            || self
                .store
                .lease_held(&run.id, &self.worker, self.now() + ctx.lease_margin_ms)
                .await?)
    }

    /// Waits for a token of the provider's rate limit (`[limits.provider.KIND] per_second`,
    /// shared by every replica through the store) before a step that calls the provider.
    async fn rate_limit(&self, ctx: &Ctx<'_>, step: Step) -> Result<(), EngineError> {
        let provider = ctx.credential.provider();
        let Some(limits) = ctx.runtime.config.limits.provider.get(provider) else {
            return Ok(());
        };
        let Some(per_second) = limits.per_second else {
            return Ok(());
        };
        let calls_provider = match step {
            Step::Mint => ctx.rotator.origin() == rotor_rotators::Origin::Provider,
            Step::Apply | Step::Verify | Step::Retire | Step::Rollback => true,
            Step::Promote | Step::Grace => false,
        };
        if !calls_provider {
            return Ok(());
        }
        while let Some(wait) = self
            .store
            .take_token(provider, per_second, limits.burst(), self.now())
            .await?
        {
            tokio::time::sleep(std::time::Duration::from_millis(wait.clamp(5, 1000) as u64)).await;
        }
        Ok(())
    }

    /// The event hooks hear of a run's promotion or retirement.
    fn event(
        &self,
        ctx: &Ctx<'_>,
        run: &RunRow,
        kind: EventKind,
        version: Option<String>,
        now: i64,
    ) -> Event {
        let fingerprint = |f: &Option<String>| f.as_ref().map(|f| format!("sha256:{f}"));
        Event {
            event: kind,
            credential_id: ctx.credential.id.clone(),
            provider: ctx.credential.provider().to_owned(),
            vault: ctx.credential.vault.clone(),
            vault_path: ctx.credential.vault_path.clone(),
            version,
            fingerprint: fingerprint(&run.pending_fingerprint),
            previous_version: run.replaced_version.clone(),
            previous_fingerprint: fingerprint(&run.replaced_fingerprint),
            run_id: run.id.clone(),
            occurred_at: crate::clock::rfc3339(now),
        }
    }

    /// The pending version this run stored, read back from the vault.
    async fn own_pending(&self, ctx: &Ctx<'_>, run: &RunRow) -> Result<Credential, StepError> {
        match ctx.vault.read_pending(&ctx.credential.vault_path).await? {
            Some(p) if p.token.as_deref() == Some(run.token.as_str()) => Ok(p.credential),
            _ => Err(StepError::permanent(format!(
                "the pending version of this run is gone from vault {} path {}; the run rolls back",
                ctx.vault.name(),
                ctx.credential.vault_path
            ))),
        }
    }
}

/// What a disturbance sees of the step about to run.
fn target<'a>(ctx: &Ctx<'a>, run: &RunRow) -> Target<'a> {
    Target {
        credential: &ctx.credential.id,
        provider: ctx.credential.provider(),
        vault: ctx.vault.name(),
        drill: run.drill.is_some(),
    }
}

/// Whether `step` would do nothing at all in this run, so that it passes in the save of the
/// step before it (`Then::passed`): a vault-only credential's apply (nothing at a provider) and
/// a grace already over (its timer elapsed, nothing to wait for). A drill's run performs each
/// step, so that a fault it injects hits the step it names.
fn nothing_to_do(ctx: &Ctx<'_>, run: &RunRow, step: Step) -> bool {
    run.drill.is_none()
        && match step {
            Step::Apply => ctx.rotator.vault_only(),
            Step::Grace => true,
            _ => false,
        }
}

/// The run's grace: none for an emergency rotation.
fn grace_ms(run: &RunRow) -> i64 {
    if run.emergency != 0 { 0 } else { run.grace_ms }
}

/// Whether the document this run promotes keeps the version it replaces as `previous`. It
/// does, unless the credential lives only in the vault and is retired as soon as it is
/// promoted (no grace, no hooks to wait for): then nobody reads it, and dropping it at
/// retirement would rewrite the document a moment after promotion wrote it. A provider's
/// credential keeps it even so: a retirement resumed after a crash reads the old credential
/// there to retire it at the provider.
fn previous_kept(ctx: &Ctx<'_>, run: &RunRow) -> Previous {
    if ctx.rotator.vault_only()
        && grace_ms(run) == 0
        && ctx.credential.retire_after != RetireAfter::Notified
    {
        Previous::Omitted
    } else {
        Previous::Kept
    }
}

/// The step that leaves `state` for this run: the state machine's, except that a dry-run
/// drill discards the verified candidate instead of promoting it.
fn next_transition(run: &RunRow, state: RunState) -> Option<state::Transition> {
    match state.next() {
        Some(t) if t.step == Step::Promote && run.drill.as_deref() == Some(DRY_RUN) => {
            Some(state::Transition {
                from: state,
                step: Step::Rollback,
                to: RunState::RolledBack,
            })
        }
        other => other,
    }
}

/// `error`, made to abandon the run: this worker lost it (or could not tell) during mint, so
/// it saves nothing and the run resumes at mint under whoever claims it next.
fn abandoned_at_mint(run: &RunRow, error: StepError) -> StepError {
    StepError {
        abandon: Some(Box::new(StoreError::LeaseLost {
            run_id: run.id.clone(),
            expected: RunState::Planned.as_str(),
        })),
        ..error
    }
}

fn store_step_error(e: StoreError) -> StepError {
    StepError {
        class: ErrorClass::Transient,
        message: e.to_string(),
        retry_after: None,
        abandon: e.is_outage().then(|| Box::new(e)),
    }
}
