//! Status (`rotor status`): each credential's state, current version, age, next rotation,
//! last drill and last error, and the latest notification to each of its hooks.

use std::collections::HashMap;

use serde::Serialize;

use crate::clock::rfc3339;
use crate::config::{Config, Credential};
use crate::model::state::RunState;
use crate::store::notify::{HookState, SUPERSEDED};
use crate::store::outbox::DROPPED;
use crate::store::{CredentialPages, CredentialRow, RunRow, Store, StoreError};

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
    /// What rotor does next for this credential, in words (`stuck`: what a person must do).
    pub next_action: String,
    /// When it does that, if it waits for a time.
    pub next_action_at: Option<String>,
    /// Set while the credential is paused (`rotor pause`).
    pub paused: Option<PauseStatus>,
    /// Its maximum age ("60d"; `None`: opted out with `max_age = "none"`).
    pub max_age: Option<String>,
    /// When the current version reaches it: `too_old` is raised from then on.
    pub max_age_deadline: Option<String>,
    /// During grace under `retire_when = "unused"`: what the provider told of the replaced
    /// credential's use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_usage: Option<PreviousUsageStatus>,
}

/// What the provider told of the replaced credential's use (`status --json`).
#[derive(Debug, Serialize)]
pub struct PreviousUsageStatus {
    /// `seen`, `unseen` or `unknown`, as of the last question; `None` before the first.
    pub evidence: Option<String>,
    /// When it was last seen in use, and by whom (in the provider's words).
    pub last_seen_at: Option<String>,
    pub by: Option<String>,
    /// When rotor last asked, and why that failed if it did.
    pub checked_at: Option<String>,
    pub error: Option<String>,
}

impl From<crate::engine::PreviousUsage> for PreviousUsageStatus {
    fn from(u: crate::engine::PreviousUsage) -> Self {
        PreviousUsageStatus {
            evidence: u.evidence,
            last_seen_at: u.last_seen.map(rfc3339),
            by: u.by,
            checked_at: u.checked_at.map(rfc3339),
            error: u.error,
        }
    }
}

/// Who paused a credential, why, since and until when.
#[derive(Debug, Serialize)]
pub struct PauseStatus {
    pub by: String,
    pub reason: String,
    pub since: String,
    /// `None`: until `rotor resume`.
    pub until: Option<String>,
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

/// What an operator calls the state a credential is in at `now`.
pub fn state_name(row: &CredentialRow, live: Option<&RunRow>, now: i64) -> &'static str {
    if row.removed_at.is_some() {
        return "removed";
    }
    if row.is_paused(now) {
        return "paused";
    }
    if live.is_some_and(is_retrying) {
        return "retrying";
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

/// When a credential's current version reaches its maximum age (for one rotated by hand, its
/// deadline). Before its first version, counted from when rotor began managing it.
pub fn max_age_deadline(credential: &Credential, row: Option<&CredentialRow>) -> Option<i64> {
    if credential.by_hand().is_some() {
        return row.and_then(|r| crate::scheduler::by_hand::deadline(credential, r));
    }
    let since = row.map(|r| r.current_since.unwrap_or(r.created_at))?;
    credential
        .schedule
        .max_age
        .map(|max_age| since + max_age.as_secs() as i64 * 1000)
}

/// A run waiting to try a step again after a transient failure: it heals by itself, unlike a
/// stuck one.
pub fn is_retrying(run: &RunRow) -> bool {
    !run.state().is_at_rest() && run.attempts > 0 && run.error_class.as_deref() == Some("transient")
}

/// What rotor does next for a credential, and when: the `next_action` of status.
fn next_action(
    config: &Config,
    row: &CredentialRow,
    run: Option<&RunRow>,
    now: i64,
) -> (String, Option<i64>) {
    let id = &row.id;
    if row.removed_at.is_some() {
        return ("nothing: removed from the config".into(), None);
    }
    let run = run.filter(|r| !r.state().is_terminal());
    let step = |r: &RunRow| {
        crate::engine::next_step(r).map_or_else(|| r.state().to_string(), |s| s.to_string())
    };
    if row.is_paused(now) {
        let waits = match run {
            Some(r) if !r.state().is_at_rest() => {
                format!("; run {} waits before {}", r.id, step(r))
            }
            _ => String::new(),
        };
        let until = match row.paused_until {
            Some(at) => format!("resumes at {}", rfc3339(at)),
            None => format!("not scheduled until `rotor resume {id}`"),
        };
        return (format!("paused: {until}{waits}"), row.paused_until);
    }
    match run {
        Some(r) if r.state() == RunState::Stuck => (
            format!(
                "waits for a person: fix the cause, then `rotor rotate {id}` resumes it from {}; or `rotor cancel {id} --resolved-by-hand --reason TEXT` after repairing it by hand",
                r.stuck_from
                    .map_or("where it stopped".into(), |s| s.to_string())
            ),
            None,
        ),
        Some(r) if is_retrying(r) => (
            format!(
                "retries {} by itself (attempt {} failed on a transient cause)",
                step(r),
                r.attempts
            ),
            Some(r.not_before.max(now)),
        ),
        Some(r) if r.state() == RunState::Promoted && r.previous_usage.is_some() => {
            let usage = crate::engine::PreviousUsage::of(r);
            (
                format!(
                    "retires the previous credential once unused (old credential {}), when the grace ends at the latest",
                    usage.describe()
                ),
                Some(r.not_before.max(now)),
            )
        }
        Some(r) if r.state() == RunState::Promoted => (
            "retires the previous credential when the grace ends".into(),
            r.grace_until.or(Some(r.not_before)).map(|t| t.max(now)),
        ),
        Some(r) => (
            format!("{} (run {})", step(r), r.id),
            Some(r.not_before.max(now)),
        ),
        None => match config.credential(id) {
            Some(c) if c.by_hand().is_some() => (
                "a person rotates it, then `rotor confirm`".into(),
                crate::scheduler::by_hand::deadline(c, row),
            ),
            _ => match row.next_due_at {
                Some(at) => ("rotates on schedule".into(), Some(at.max(now))),
                None => (
                    "nothing scheduled: `rotor rotate` starts a rotation".into(),
                    None,
                ),
            },
        },
    }
}

/// How many credentials a page of `Statuses` holds.
const PAGE: i64 = 1_000;

/// The status of the credentials at `now` (ms), read a page at a time in id order: what a
/// listing holds does not grow with the credentials (the live runs and the hook states it
/// joins are read once; they are as many as the runs in flight and the hooks' deliveries).
pub struct Statuses<'a> {
    store: &'a Store,
    config: &'a Config,
    now: i64,
    live: HashMap<String, RunRow>,
    hooks: HashMap<String, Vec<HookStatus>>,
    pages: CredentialPages<'a>,
}

impl<'a> Statuses<'a> {
    pub async fn read(store: &'a Store, config: &'a Config, now: i64) -> Result<Self, StoreError> {
        let live = store.live_runs_by_credential().await?;
        let mut hooks: HashMap<String, Vec<HookStatus>> = HashMap::new();
        for h in store.hook_states().await? {
            hooks
                .entry(h.credential_id.clone())
                .or_default()
                .push(h.into());
        }
        Ok(Statuses {
            store,
            config,
            now,
            live,
            hooks,
            pages: store.credential_pages(PAGE),
        })
    }

    /// The next page of statuses; `None` after the last.
    pub async fn next_page(&mut self) -> Result<Option<Vec<CredentialStatus>>, StoreError> {
        let Some(rows) = self.pages.next().await? else {
            return Ok(None);
        };
        Ok(Some(rows.iter().map(|row| self.status_of(row)).collect()))
    }

    /// One credential's status; `None` when the store does not have it.
    pub async fn one(&mut self, id: &str) -> Result<Option<CredentialStatus>, StoreError> {
        Ok(self
            .store
            .credential(id)
            .await?
            .map(|row| self.status_of(&row)))
    }

    fn status_of(&mut self, row: &CredentialRow) -> CredentialStatus {
        let (config, now) = (self.config, self.now);
        let run = self.live.get(&row.id);
        let (next_action, next_action_at) = next_action(config, row, run, now);
        let by_hand = config
            .credential(&row.id)
            .filter(|c| c.by_hand().is_some())
            .map(|c| crate::scheduler::by_hand::deadline(c, row));
        CredentialStatus {
            id: row.id.clone(),
            provider: row.provider.clone(),
            vault: row.vault.clone(),
            state: state_name(row, run, now).into(),
            current_version: row.current_version.clone(),
            current_fingerprint: row
                .current_fingerprint
                .as_deref()
                .map(crate::fingerprint::shown),
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
            hooks: self.hooks.remove(&row.id).unwrap_or_default(),
            next_action,
            next_action_at: next_action_at.map(rfc3339),
            max_age: config
                .credential(&row.id)
                .and_then(|c| c.schedule.max_age)
                .map(|m| m.to_string()),
            max_age_deadline: config
                .credential(&row.id)
                .and_then(|c| max_age_deadline(c, Some(row)))
                .map(rfc3339),
            previous_usage: run
                .filter(|r| r.previous_usage.is_some())
                .map(|r| crate::engine::PreviousUsage::of(r).into()),
            paused: row.is_paused(now).then(|| PauseStatus {
                by: row.paused_by.clone().unwrap_or_default(),
                reason: row.paused_reason.clone().unwrap_or_default(),
                since: rfc3339(row.paused_at.unwrap_or_default()),
                until: row.paused_until.map(rfc3339),
            }),
        }
    }
}
