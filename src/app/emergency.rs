//! `rotor rotate ID --emergency`: a credential's value is presumed exposed, and with it the
//! previous one. When this returns `Done`, a fresh, verified credential is current and nothing
//! older authenticates at the provider or remains in the vault.
//!
//! Whatever run the credential has live gets out of the way first, through the store, fenced
//! like any step (`store::incident`): before promotion it rolls back, in grace or retiring it
//! retires the old credential now and at once, stuck it resumes. Then a run with no grace
//! replaces the current credential too, planned and claimed by this process in one write (a
//! daemon beside it takes that run over only once this process's lease runs out). A daemon may
//! be driving the interrupted run (it claims what is ready like any worker); this process then
//! waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::Clock;
use crate::config::Config;
use crate::engine::state::RunState;
use crate::engine::{Driven, Engine, Runtime};
use crate::scheduler::daemon;
use crate::store::incident::EmergencyStart;
use crate::store::{RunRow, Store, StoreError};

use super::rotate::RotateError;
use super::settle::{LEASE_MS, drive_once, settle};

/// A run a daemon planned between the interruption and the emergency's own request is
/// interrupted in turn: this many interruptions and requests at most.
const ATTEMPTS: usize = 6;

/// What an emergency rotation came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emergency {
    /// A fresh credential is current and verified; every older one is retired.
    Done {
        run_id: String,
        /// The live run that was in the way, and how it ended.
        interrupted: Option<(String, RunState)>,
    },
    /// Something presumed exposed may still authenticate.
    Exposed(Exposure),
    /// Ctrl-C: the run in hand is left resumable; the emergency is not over.
    Stopped { run_id: String },
}

/// What still authenticates after an emergency that could not finish, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exposure {
    pub run_id: String,
    pub state: RunState,
    pub error: Option<String>,
    /// Which credential values may still work, by version and fingerprint.
    pub live: String,
    pub action: String,
}

/// Who asks, and how they stop it.
pub struct Asking<'a> {
    pub actor: &'a str,
    pub reason: &'a str,
    pub clock: Arc<dyn Clock>,
    pub stopping: Arc<AtomicBool>,
}

/// Rotates `id` as an emergency. `runtime` is built once for a whole `--all`.
pub async fn rotate(
    store: &Store,
    runtime: &Runtime,
    id: &str,
    asking: &Asking<'_>,
) -> Result<Emergency, RotateError> {
    rotate_started(store, runtime, id, asking, daemon::worker_id(), None).await
}

/// `rotate`, as `worker`, from the emergency's own run when `started` (planned and claimed
/// for `worker` by `Store::start_emergencies`).
async fn rotate_started(
    store: &Store,
    runtime: &Runtime,
    id: &str,
    asking: &Asking<'_>,
    worker: String,
    mut started: Option<RunRow>,
) -> Result<Emergency, RotateError> {
    let Some(credential) = runtime.config.credential(id) else {
        return Err(StoreError::UnknownCredential(id.to_owned()).into());
    };
    if credential.by_hand().is_some() {
        return Err(RotateError::ByHand(id.to_owned()));
    }
    let clock = asking.clock.as_ref();
    let mut engine = Engine::new(store.clone(), asking.clock.clone(), worker);
    engine.stopping = asking.stopping.clone();
    let mut interrupted = None;
    for _ in 0..ATTEMPTS {
        let start = match started.take() {
            Some(claimed) => Ok(EmergencyStart::Planned(claimed)),
            None => {
                let now = clock.now_ms();
                let run = daemon::new_run(id, "emergency", true, Duration::ZERO, now);
                let (actor, reason, worker) = (asking.actor, asking.reason, &engine.worker);
                let lease_until = now + LEASE_MS;
                store
                    .start_emergency(&run, actor, reason, worker, lease_until, now)
                    .await
            }
        };
        let claimed = match start {
            Ok(EmergencyStart::Planned(claimed)) => claimed,
            Ok(EmergencyStart::Interrupted(live)) => {
                let end = settle(store, runtime, &engine, &live.id, &asking.stopping).await?;
                match end.state() {
                    RunState::Completed | RunState::RolledBack => {
                        interrupted = Some((live.id, end.state()));
                        continue;
                    }
                    _ if asking.stopping.load(Ordering::SeqCst) => {
                        return Ok(Emergency::Stopped { run_id: live.id });
                    }
                    _ => return Ok(Emergency::Exposed(exposure(&end))),
                }
            }
            // A daemon planned a scheduled run just now: it is interrupted in turn.
            Err(StoreError::RunInFlight(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let run_id = claimed.id.clone();
        // The usual end needs no second look at the store.
        let driven = drive_once(store, runtime, &engine, claimed).await?;
        if driven == Driven::Finished(RunState::Completed) {
            return Ok(Emergency::Done {
                run_id,
                interrupted,
            });
        }
        let end = settle(store, runtime, &engine, &run_id, &asking.stopping).await?;
        return Ok(match end.state() {
            RunState::Completed => Emergency::Done {
                run_id,
                interrupted,
            },
            _ if asking.stopping.load(Ordering::SeqCst) => Emergency::Stopped { run_id },
            _ => Emergency::Exposed(exposure(&end)),
        });
    }
    Err(StoreError::RunInFlight(id.to_owned()).into())
}

/// What may still authenticate when a run ended somewhere other than where an emergency needs.
fn exposure(run: &RunRow) -> Exposure {
    let id = &run.credential_id;
    let version = |v: &Option<String>, f: &Option<String>| {
        format!(
            "version {} ({})",
            v.as_deref().unwrap_or("?"),
            f.as_deref()
                .map_or_else(|| "?".to_owned(), crate::fingerprint::shown)
        )
    };
    let replaced = version(&run.replaced_version, &run.replaced_fingerprint);
    let candidate = version(&run.pending_version, &run.pending_fingerprint);
    // A run that keeps retrying heals by itself; a stuck one waits for a person.
    let retrying = run.state() != RunState::Stuck;
    let from = if retrying {
        Some(run.state())
    } else {
        run.stuck_from
    };
    let (live, mut action) = match from {
        Some(RunState::RollingBack) => (
            format!(
                "the current credential, {replaced}, still authenticates; the candidate {candidate} may still be installed at the provider"
            ),
            format!(
                "fix the cause, then `rotor rotate {id} --emergency` again; or remove the candidate at the provider by hand and close the run with `rotor cancel {id} --resolved-by-hand --reason TEXT`"
            ),
        ),
        _ => (
            format!(
                "the previous credential, {replaced}, may still authenticate at the provider and remain in the vault beside the new one"
            ),
            format!(
                "fix the cause, then `rotor rotate {id} --emergency` again; or revoke it at the provider by hand, drop `previous` from the vault and `rotor cancel {id} --resolved-by-hand --reason TEXT`"
            ),
        ),
    };
    if retrying {
        action = format!(
            "rotor keeps retrying it on its own and finishes the emergency once the cause is gone (`rotor status {id}` says when it tries next); or {action}"
        );
    }
    Exposure {
        run_id: run.id.clone(),
        state: run.state(),
        error: run.last_error.clone(),
        live,
        action,
    }
}

/// The emergency for one credential, from its config.
pub async fn rotate_one(
    store: &Store,
    config: Config,
    id: &str,
    asking: &Asking<'_>,
) -> Result<Emergency, RotateError> {
    daemon::reconcile(store, &config, asking.clock.as_ref()).await?;
    let runtime = Runtime::build(config).await?;
    rotate(store, &runtime, id, asking).await
}

/// Starts the emergencies of `ids` in one transaction (`Store::start_emergencies`), each
/// claimed for `worker`: its run where it was started, `None` where `rotate_started` is to
/// start it alone (a live run to interrupt first, a credential rotated by hand or unknown).
/// Should the shared transaction fail, every one is started alone, and says its own error.
async fn start_together(
    store: &Store,
    runtime: &Runtime,
    ids: &[&String],
    asking: &Asking<'_>,
    worker: &str,
) -> Vec<Option<RunRow>> {
    let now = asking.clock.now_ms();
    // Those rotor rotates on its own; the others are `rotate_started`'s to refuse.
    let automatic: Vec<bool> = ids
        .iter()
        .map(|id| {
            runtime
                .config
                .credential(id)
                .is_some_and(|c| c.by_hand().is_none())
        })
        .collect();
    let runs: Vec<_> = ids
        .iter()
        .zip(&automatic)
        .filter(|(_, automatic)| **automatic)
        .map(|(id, _)| daemon::new_run(id, "emergency", true, Duration::ZERO, now))
        .collect();
    if runs.is_empty() {
        return vec![None; ids.len()];
    }
    let (actor, reason) = (asking.actor, asking.reason);
    let started = store.start_emergencies(&runs, actor, reason, worker, now + LEASE_MS, now);
    let mut started = match started.await {
        Ok(started) => started.into_iter(),
        Err(e) => {
            tracing::debug!(error = %e, credentials = runs.len(), "could not start the emergencies together; starting each alone");
            Vec::new().into_iter()
        }
    };
    // `started` holds one entry for each automatic credential, in `ids`' order.
    automatic
        .into_iter()
        .map(|automatic| automatic.then(|| started.next().flatten()).flatten())
        .collect()
}

/// One credential's outcome in an emergency over many.
pub type EachOutcome = (String, Result<Emergency, RotateError>);

/// The emergency over every credential in `ids` ("rotate everything the attacker may have
/// seen"), `parallel` at a time, each reported to `progress` as it goes. Credentials rotated
/// by hand are the caller's to list: they are not in `ids`.
///
/// Each credential is a task of its own: the vault's file writes block the thread they run
/// on, so emergencies polled together in one task waited on each other's writes (10,000
/// credentials took ~45 s whatever `parallel` was), and spread over the runtime's threads
/// they share the vault's flushes. Their runs are started a batch at a time, in one
/// transaction (`start_together`): on PostgreSQL a drain of 10,000 took 16.7 s with a
/// transaction a credential and 11.7 s with batches.
pub async fn rotate_all(
    store: &Store,
    config: Config,
    ids: &[String],
    asking: &Asking<'_>,
    progress: &Arc<dyn crate::drill::progress::Progress>,
    parallel: usize,
) -> Result<Vec<EachOutcome>, RotateError> {
    daemon::reconcile(store, &config, asking.clock.as_ref()).await?;
    let runtime = Arc::new(Runtime::build(config).await?);
    let (actor, reason): (Arc<str>, Arc<str>) = (asking.actor.into(), asking.reason.into());
    // One worker for the whole emergency: the runs started together are claimed for it.
    let worker = daemon::worker_id();
    let parallel = parallel.max(1);
    let mut running = tokio::task::JoinSet::new();
    let mut by_task = std::collections::HashMap::new();
    let mut waiting = ids.iter();
    let mut outcomes = Vec::with_capacity(ids.len());
    loop {
        // Refilled a quarter of `parallel` or more at a time, so that the starts share their
        // transactions (`start_together`).
        if parallel - running.len() >= (parallel / 4).max(1) {
            let next: Vec<&String> = waiting.by_ref().take(parallel - running.len()).collect();
            let started = start_together(store, &runtime, &next, asking, &worker).await;
            for (id, started) in next.into_iter().zip(started) {
                let (store, runtime, progress, name) =
                    (store.clone(), runtime.clone(), progress.clone(), id.clone());
                let (actor, reason, worker) = (actor.clone(), reason.clone(), worker.clone());
                let (clock, stopping) = (asking.clock.clone(), asking.stopping.clone());
                let task = running.spawn(async move {
                    let asking = Asking {
                        actor: &actor,
                        reason: &reason,
                        clock,
                        stopping,
                    };
                    let bar = progress.start(&name, "emergency");
                    bar.step("interrupting the live run, if any");
                    let outcome =
                        rotate_started(&store, &runtime, &name, &asking, worker, started).await;
                    let (passed, summary) = match &outcome {
                        Ok(Emergency::Done { run_id, .. }) => {
                            (true, format!("run {run_id} completed"))
                        }
                        Ok(Emergency::Exposed(e)) => (false, format!("EXPOSED: {}", e.live)),
                        Ok(Emergency::Stopped { run_id }) => {
                            (false, format!("stopped at run {run_id}"))
                        }
                        Err(e) => (false, e.to_string()),
                    };
                    bar.done(passed, &summary);
                    (name, outcome)
                });
                by_task.insert(task.id(), id.clone());
            }
        }
        let Some(joined) = running.join_next_with_id().await else {
            break;
        };
        match joined {
            Ok((task, outcome)) => {
                by_task.remove(&task);
                outcomes.push(outcome);
            }
            // A task that panicked still names its credential, whose run the store keeps for
            // the next attempt.
            Err(e) => {
                let id = by_task.remove(&e.id()).unwrap_or_default();
                outcomes.push((id, Err(RotateError::Panicked(e.to_string()))));
            }
        }
    }
    Ok(outcomes)
}
