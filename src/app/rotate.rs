//! Rotate one credential now (`rotor rotate ID`; an emergency is `app::emergency`): ask the store for a run (or
//! resume a stuck one), then drive it in this process under the store's lease, so that a
//! running daemon never rotates the same credential at once.

use std::sync::Arc;

use thiserror::Error;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::state::RunState;
use crate::engine::{Driven, Engine, EngineError, Runtime};
use crate::scheduler::daemon;
use crate::store::{Store, StoreError};

/// How long this process's lease on the run lasts before a daemon may take it over.
const LEASE_MS: i64 = 60_000;

#[derive(Debug, Error)]
pub enum RotateError {
    #[error(
        "`{0}` is rotated by hand (`manual` rotator): rotate it at its provider, then `rotor confirm {0}`"
    )]
    ByHand(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("run {run_id} of {credential} is gone from the store")]
    Vanished { credential: String, run_id: String },
    #[error(
        "the emergency stopped on a bug in rotor ({0}); its run is kept in the store: run the emergency again"
    )]
    Panicked(String),
    #[error(
        "`{id}` is paused by {by} {until}: {reason}; `rotor resume {id}` first, or `rotor rotate {id} --emergency --reason TEXT` if it is exposed"
    )]
    Paused {
        id: String,
        by: String,
        reason: String,
        until: String,
    },
}

/// What the store recorded for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requested {
    /// A new run, planned now.
    Planned { run_id: String },
    /// A stuck run, resumed from the state it stopped in.
    Resumed { run_id: String, from: RunState },
}

impl Requested {
    pub fn run_id(&self) -> &str {
        match self {
            Requested::Planned { run_id } | Requested::Resumed { run_id, .. } => run_id,
        }
    }
}

/// How far the rotation got in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotated {
    /// Retired the old credential: the run is over.
    Completed,
    /// The new credential is current; the daemon retires the old one at `retire_at` (ms).
    Promoted { retire_at: i64 },
    /// The new credential is current and the old one disabled; the daemon removes it at
    /// `remove_at` (ms).
    Disabled { remove_at: i64 },
    /// A step failed and is retried at `at` (ms).
    Retrying { at: i64, error: String },
    /// The run ended in `state` (rolled back, or stuck).
    Failed {
        state: RunState,
        error: Option<String>,
    },
    /// Another rotor process holds the run and drives it.
    DrivenElsewhere,
    /// This process was asked to stop between two steps.
    Stopped,
}

/// What driving the run came to, and whether a consumer hook failed on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub rotated: Rotated,
    pub hook_failed: bool,
}

/// Asks the store for a rotation of `id` now.
pub async fn request(
    store: &Store,
    config: &Config,
    clock: &dyn Clock,
    id: &str,
    actor: &str,
) -> Result<Requested, RotateError> {
    let Some(credential) = config.credential(id) else {
        return Err(StoreError::UnknownCredential(id.to_owned()).into());
    };
    if credential.by_hand().is_some() {
        return Err(RotateError::ByHand(id.to_owned()));
    }
    daemon::reconcile(store, config, clock).await?;
    let now = clock.now_ms();
    if let Some(row) = store.credential(id).await?
        && row.is_paused(now)
    {
        return Err(RotateError::Paused {
            id: id.to_owned(),
            by: row.paused_by.unwrap_or_default(),
            reason: row.paused_reason.unwrap_or_default(),
            until: row.paused_until.map_or("until resumed".to_owned(), |at| {
                format!("until {}", crate::clock::rfc3339(at))
            }),
        });
    }
    let run = daemon::new_run(id, "manual", false, credential.grace.as_std(), now);
    let outcome = store.request_rotation(&run, actor, now).await?;
    let live = store
        .live_run(id)
        .await?
        .ok_or_else(|| RotateError::Vanished {
            credential: id.to_owned(),
            run_id: run.id.clone(),
        })?;
    Ok(match outcome {
        "stuck" => Requested::Resumed {
            run_id: live.id,
            from: live.state,
        },
        _ => Requested::Planned { run_id: live.id },
    })
}

/// Drives the requested run as far as it goes now, telling consumers as it goes. With
/// `retire_after = "notified"` a run whose hooks all took the promotion goes on to retire.
pub async fn drive(
    store: &Store,
    config: Config,
    clock: Arc<dyn Clock>,
    id: &str,
    run_id: &str,
) -> Result<Outcome, RotateError> {
    let runtime = Runtime::build(config).await?;
    let engine = Engine::new(store.clone(), clock.clone(), daemon::worker_id());
    let lease_until = clock.now_ms() + LEASE_MS;
    let Some(mut claimed) = store
        .claim_run(run_id, &engine.worker, clock.now_ms(), lease_until)
        .await?
    else {
        return Ok(Outcome {
            rotated: Rotated::DrivenElsewhere,
            hook_failed: false,
        });
    };
    let mut hook_failed = false;
    let driven = loop {
        let driven = engine.drive(&runtime, claimed).await?;
        // Consumers hear of the change now; the daemon retries whatever fails.
        let pass = runtime
            .notify_due(store, || clock.now_ms(), Some(id))
            .await?;
        hook_failed |= pass.failed > 0;
        // `retire_after = "notified"`: every hook took the promotion, so grace is over.
        let notified =
            pass.woken > 0 || matches!(driven, Driven::Waiting(at) if at <= clock.now_ms());
        if !notified {
            break driven;
        }
        match store
            .claim_run(run_id, &engine.worker, clock.now_ms(), lease_until)
            .await?
        {
            Some(run) if run.state() == RunState::Promoted => claimed = run,
            Some(_) => {
                store.release(run_id, &engine.worker).await?;
                break driven;
            }
            None => break driven,
        }
    };
    let after = store
        .run(run_id)
        .await?
        .ok_or_else(|| RotateError::Vanished {
            credential: id.to_owned(),
            run_id: run_id.to_owned(),
        })?;
    let rotated = match driven {
        Driven::Finished(RunState::Completed) => Rotated::Completed,
        Driven::Waiting(until) if after.state() == RunState::Promoted => {
            Rotated::Promoted { retire_at: until }
        }
        Driven::Waiting(until)
            if after.state() == RunState::Retiring && after.last_error.is_none() =>
        {
            Rotated::Disabled { remove_at: until }
        }
        Driven::Waiting(until) => Rotated::Retrying {
            at: until,
            error: after.last_error.unwrap_or_default(),
        },
        Driven::Finished(state) => Rotated::Failed {
            state,
            error: after.last_error,
        },
        Driven::Stopped => Rotated::Stopped,
    };
    Ok(Outcome {
        rotated,
        hook_failed,
    })
}
