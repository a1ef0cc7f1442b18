//! A run driven to rest by a command (`rotate --emergency`, `cancel`): here, under this
//! process's lease, or, when a daemon claimed it first, by waiting for that daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::engine::{Driven, Engine, Runtime};
use crate::store::{RunRow, Store};

use super::rotate::RotateError;

/// How long this process's claim on a run lasts; a daemon may take the run over after it.
pub const LEASE_MS: i64 = 60_000;

/// How often a run driven elsewhere, or leased by a worker that is losing it, is looked at.
const POLL: Duration = Duration::from_millis(200);

/// Drives the run until it is at rest (over, or stuck), retries past its budget (it heals by
/// itself, at the capped backoff, which a command must not wait out) or `stopping` is set. A step that failed
/// on a transient cause is retried after its backoff, as the daemon would; a worker that lost
/// the run to an interruption keeps it until its lease runs out. Returns the run as it ended.
pub async fn settle(
    store: &Store,
    runtime: &Runtime,
    engine: &Engine,
    run_id: &str,
    stopping: &Arc<AtomicBool>,
) -> Result<RunRow, RotateError> {
    let clock = engine.clock.clone();
    loop {
        let run = store
            .run(run_id)
            .await?
            .ok_or_else(|| RotateError::Vanished {
                credential: String::new(),
                run_id: run_id.to_owned(),
            })?;
        if run.state().is_at_rest()
            || keeps_retrying_unattended(runtime, &run)
            || stopping.load(Ordering::SeqCst)
        {
            return Ok(run);
        }
        let now = clock.now_ms();
        let Some(claimed) = store
            .claim_run(run_id, &engine.worker, now, now + LEASE_MS)
            .await?
        else {
            tokio::time::sleep(POLL).await;
            continue;
        };
        drive_once(store, runtime, engine, claimed).await?;
    }
}

/// Drives a claimed run as far as it goes now, delivers what it left for the hooks, and waits
/// out a short timer it stopped at.
pub async fn drive_once(
    store: &Store,
    runtime: &Runtime,
    engine: &Engine,
    claimed: RunRow,
) -> Result<Driven, RotateError> {
    let clock = engine.clock.clone();
    let credential = claimed.credential_id.clone();
    let driven = engine.drive(runtime, claimed).await?;
    runtime
        .notify_due(store, || clock.now_ms(), Some(&credential))
        .await?;
    if let Driven::Waiting(until) = driven {
        let wait = (until - clock.now_ms()).clamp(0, POLL.as_millis() as i64 * 5);
        tokio::time::sleep(Duration::from_millis(wait as u64)).await;
    }
    Ok(driven)
}

/// A run past its retry budget that keeps retrying on a transient cause (after promotion or in
/// a rollback): it waits minutes between attempts and heals once the cause is gone.
fn keeps_retrying_unattended(runtime: &Runtime, run: &RunRow) -> bool {
    let budget = runtime
        .config
        .credential(&run.credential_id)
        .map_or(0, |c| c.retry.max_attempts as i64);
    super::status::is_retrying(run) && run.attempts >= budget
}
