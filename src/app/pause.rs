//! Pausing credentials (`rotor pause`, `rotor resume`): a paused credential is not scheduled,
//! and its live run, if any, waits once the step in flight is done (`engine::drive`). An
//! emergency rotation goes through a pause, and a pause past `max_age` still raises `too_old`:
//! a pause holds rotor back, it never hides an aging credential.

use crate::clock::Clock;
use crate::config::Config;
use crate::scheduler::daemon;
use crate::store::{Store, StoreError};

/// One credential after `pause`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paused {
    pub id: String,
    /// The live run that now waits, with its state.
    pub run: Option<(String, String)>,
}

/// Pauses each of `ids` until `until` (ms; `None`: until `resume`), by `actor` for `reason`.
pub async fn pause(
    store: &Store,
    config: &Config,
    clock: &dyn Clock,
    ids: &[String],
    until: Option<i64>,
    actor: &str,
    reason: &str,
) -> Result<Vec<Paused>, StoreError> {
    // A credential added to the config a moment ago is not in the store yet.
    daemon::reconcile(store, config, clock).await?;
    let mut paused = Vec::with_capacity(ids.len());
    for id in ids {
        if !store
            .pause(id, until, actor, reason, clock.now_ms())
            .await?
        {
            return Err(StoreError::UnknownCredential(id.clone()));
        }
        let run = store
            .live_run(id)
            .await?
            .map(|r| (r.id.clone(), r.state().to_string()));
        paused.push(Paused {
            id: id.clone(),
            run,
        });
    }
    Ok(paused)
}

/// Ends the pause of each of `ids`; returns those that were paused.
pub async fn resume(
    store: &Store,
    clock: &dyn Clock,
    ids: &[String],
    actor: &str,
) -> Result<Vec<String>, StoreError> {
    let mut resumed = Vec::new();
    for id in ids {
        if store.resume(id, actor, clock.now_ms()).await? {
            resumed.push(id.clone());
        }
    }
    Ok(resumed)
}
