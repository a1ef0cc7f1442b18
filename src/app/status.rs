//! Status (`rotor status`): each credential's state, current version, age, next rotation,
//! last drill and last error, and the latest notification to each of its hooks.

use std::collections::HashMap;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::model::state::RunState;
use crate::store::notify::{DROPPED, HookState, SUPERSEDED};
use crate::store::{CredentialRow, RunRow, Store, StoreError};

/// One credential in `status --json`. Field names are a stable interface.
#[derive(Debug, Serialize)]
pub struct CredentialStatus {
    pub id: String,
    pub provider: String,
    pub vault: String,
    pub state: String,
    pub current_version: Option<String>,
    pub current_fingerprint: Option<String>,
    pub age_seconds: Option<i64>,
    pub next_due_at: Option<String>,
    pub last_success_at: Option<String>,
    pub last_error: Option<String>,
    /// When the credential last passed a drill.
    pub last_drill_at: Option<String>,
    /// `passed` or `failed`: the latest drill of the credential.
    pub last_drill_outcome: Option<String>,
    pub run_id: Option<String>,
    /// `automatic`, or `by_hand` for a `manual` credential (then `next_due_at` is its deadline).
    pub rotation: &'static str,
    /// The latest notification to each of its hooks.
    pub hooks: Vec<HookStatus>,
}

/// The latest notification of a credential to one hook.
#[derive(Debug, Serialize)]
pub struct HookStatus {
    pub hook: String,
    /// `promoted` or `retired`.
    pub event: String,
    pub run_id: String,
    /// `delivered`, `superseded` (a newer run's event replaced it), `dropped` (its hook left
    /// the config), `retrying` after a failure, or `queued`.
    pub state: &'static str,
    pub attempts: i64,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub delivered_at: Option<String>,
    pub next_attempt_at: Option<String>,
    /// Notifications to this hook still waiting.
    pub undelivered: i64,
}

impl From<HookState> for HookStatus {
    fn from(h: HookState) -> Self {
        let delivered = h.delivered_at.is_some();
        HookStatus {
            state: match (delivered, h.last_error.is_some()) {
                (true, _) if h.last_outcome.as_deref() == Some(SUPERSEDED) => "superseded",
                (true, _) if h.last_outcome.as_deref() == Some(DROPPED) => "dropped",
                (true, _) => "delivered",
                (false, true) => "retrying",
                (false, false) => "queued",
            },
            hook: h.hook,
            event: h.event,
            run_id: h.run_id,
            attempts: h.attempts,
            last_outcome: h.last_outcome,
            last_error: h.last_error,
            delivered_at: h.delivered_at.map(rfc3339),
            next_attempt_at: (!delivered).then(|| rfc3339(h.next_attempt_at)),
            undelivered: h.undelivered,
        }
    }
}

/// What an operator calls the state a credential is in.
pub fn state_name(row: &CredentialRow, live: Option<&RunRow>) -> &'static str {
    if row.removed_at.is_some() {
        return "removed";
    }
    match live.map(RunRow::state) {
        None => "idle",
        Some(
            RunState::Planned | RunState::PendingStored | RunState::Applied | RunState::Verified,
        ) => "rotating",
        Some(RunState::Promoted) => "grace",
        Some(RunState::Retiring) => "retiring",
        Some(RunState::RollingBack) => "rolling_back",
        Some(RunState::Stuck) => "stuck",
        Some(RunState::Completed | RunState::RolledBack) => "idle",
    }
}

/// The status of every credential in the store (of one with `only`; `None` when it is not
/// there) at `now` (ms).
pub async fn status(
    store: &Store,
    config: &Config,
    only: Option<&str>,
    now: i64,
) -> Result<Option<Vec<CredentialStatus>>, StoreError> {
    let live = store.live_runs_by_credential().await?;
    let mut hooks: HashMap<String, Vec<HookStatus>> = HashMap::new();
    for h in store.hook_states().await? {
        hooks
            .entry(h.credential_id.clone())
            .or_default()
            .push(h.into());
    }
    let mut rows = store.credentials().await?;
    if let Some(id) = only {
        rows.retain(|r| r.id == id);
        if rows.is_empty() {
            return Ok(None);
        }
    }
    let statuses = rows
        .iter()
        .map(|row| {
            let run = live.get(&row.id);
            let by_hand = config
                .credential(&row.id)
                .filter(|c| c.by_hand().is_some())
                .map(|c| crate::scheduler::by_hand::deadline(c, row));
            CredentialStatus {
                id: row.id.clone(),
                provider: row.provider.clone(),
                vault: row.vault.clone(),
                state: state_name(row, run).into(),
                current_version: row.current_version.clone(),
                current_fingerprint: row
                    .current_fingerprint
                    .as_ref()
                    .map(|f| format!("sha256:{f}")),
                age_seconds: row.current_since.map(|s| (now - s) / 1000),
                next_due_at: match by_hand {
                    Some(deadline) => deadline.map(rfc3339),
                    None => row.next_due_at.map(rfc3339),
                },
                last_success_at: row.last_success_at.map(rfc3339),
                last_error: row
                    .last_error
                    .clone()
                    .or_else(|| run.and_then(|r| r.last_error.clone())),
                last_drill_at: row.last_drill_at.map(rfc3339),
                last_drill_outcome: row.last_drill_outcome.clone(),
                run_id: run.map(|r| r.id.clone()),
                rotation: if by_hand.is_some() {
                    "by_hand"
                } else {
                    "automatic"
                },
                hooks: hooks.remove(&row.id).unwrap_or_default(),
            }
        })
        .collect();
    Ok(Some(statuses))
}
