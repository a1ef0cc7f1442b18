//! The engine drives one run through the rotation state machine (`crate::model::state`):
//! each step is begun in the store before it runs, performed idempotently (keyed by the run
//! token), and committed with a compare-and-swap on the run's state and lease owner. A
//! process killed anywhere resumes from the last saved state; repeating a step is harmless.
//!
//! - `drive`: the loop over the steps, and the one `commit` by which an outcome is saved;
//! - `step/`: one file per step (mint, apply, verify, promote, retire, roll back);
//! - `fail`: retry with backoff, or the failure state and its alert;
//! - `lease`: whether this worker may still act for the run;
//! - `disturbance`: the one seam for injected faults (drills, crash tests, the bench);
//! - `panicked`: a panicking step fails its run, not the process.

pub mod disturbance;
mod drive;
mod error;
mod fail;
mod lease;
mod panicked;
mod runtime;
mod step;
mod usage;

pub use usage::PreviousUsage;

pub use crate::model::state;
pub use drive::next_step;
pub use error::{EngineError, StepError};
pub use runtime::Runtime;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures_util::FutureExt;
use rotor_rotators::{AnyRotator, Origin, Rotator};
use tracing::Instrument;

use crate::clock::Clock;
use crate::config::Credential as CredentialConfig;
use crate::failpoint;
use crate::store::{AuditEntry, Durability, RunRow, Store};
use crate::vault::{AnyVault, Vault};
use disturbance::{Disturbance, Target};
use lease::LEASE_MARGIN_MS;
use state::{RunState, Step};

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

/// `runs.drill` of a dry-run drill.
pub const DRY_RUN: &str = "dry_run";

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

/// What a step does at the credential's provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtProvider {
    Nothing,
    Reads,
    Changes,
}

impl Ctx<'_> {
    /// What `step` does at the provider: what its rate limit counts, and what must be on disk
    /// before it starts.
    fn at_provider(&self, step: Step) -> AtProvider {
        match step {
            Step::Mint if self.rotator.origin() == Origin::Provider => AtProvider::Changes,
            Step::Apply | Step::Retire | Step::Rollback => AtProvider::Changes,
            Step::Verify => AtProvider::Reads,
            Step::Mint | Step::Promote | Step::Grace => AtProvider::Nothing,
        }
    }

    /// How soon the record that `step` starts must be on disk: before a step that changes
    /// something at the provider, synced, so that no power loss forgets it was about to.
    fn durability_before(&self, step: Step) -> Durability {
        if !self.rotator.vault_only() && self.at_provider(step) == AtProvider::Changes {
            Durability::Synced
        } else {
            Durability::Deferred
        }
    }
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
            && disturbance.dies_at(&Target::of(ctx, run), &name)
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
        let rotator = runtime.rotator(&credential.id);
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

    fn audit(&self, run: &RunRow, action: &str) -> AuditEntry {
        AuditEntry::new(&self.worker, action)
            .credential(&run.credential_id)
            .run(&run.id)
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
        if ctx.at_provider(step) == AtProvider::Nothing {
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
}

impl<'a> Target<'a> {
    /// What a disturbance sees of the step about to run.
    fn of(ctx: &Ctx<'a>, run: &RunRow) -> Self {
        Target {
            credential: &ctx.credential.id,
            provider: ctx.credential.provider(),
            vault: ctx.vault.name(),
            drill: run.drill.is_some(),
        }
    }
}
