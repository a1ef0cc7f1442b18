//! Plan (`rotor plan`): when each configured credential rotates next, and why. Reads the
//! store but writes nothing: a changed schedule shows the time a reload would compute.

use serde::Serialize;

use crate::clock::{rfc3339, to_datetime};
use crate::config::{Config, Credential};
use crate::store::{CredentialRow, RunRow, Store, StoreError};

#[derive(Debug, Serialize)]
pub struct PlanEntry {
    pub id: String,
    pub next_due_at: Option<String>,
    pub reason: String,
    /// `automatic` (rotor rotates it) or `by_hand` (people do; rotor reminds them): the
    /// inventory auditors ask for.
    pub rotation: &'static str,
    /// Its maximum age ("60d"; `None`: opted out with `max_age = "none"`).
    pub max_age: Option<String>,
    /// When the current version reaches it (for one rotated by hand, its deadline).
    pub max_age_deadline: Option<String>,
}

/// Every configured credential's next rotation at `now` (ms), soonest first, those never due
/// last.
pub async fn plan(store: &Store, config: &Config, now: i64) -> Result<Vec<PlanEntry>, StoreError> {
    let rows = store.credentials_by_id().await?;
    let live = store.live_runs_by_credential().await?;
    let mut entries: Vec<PlanEntry> = config
        .credentials
        .iter()
        .map(|c| {
            let mut entry = match c.by_hand() {
                Some(_) => by_hand(c, rows.get(&c.id), now),
                None => automatic(c, rows.get(&c.id), live.get(&c.id), now),
            };
            entry.max_age = c.schedule.max_age.map(|m| m.to_string());
            entry.max_age_deadline =
                super::status::max_age_deadline(c, rows.get(&c.id)).map(rfc3339);
            entry
        })
        .collect();
    entries.sort_by(|a, b| {
        (a.next_due_at.is_none(), &a.next_due_at, &a.id).cmp(&(
            b.next_due_at.is_none(),
            &b.next_due_at,
            &b.id,
        ))
    });
    Ok(entries)
}

/// A credential people rotate: its deadline. Not yet in the store (never reconciled), only a
/// configured expiry is known.
fn by_hand(c: &Credential, row: Option<&CredentialRow>, now: i64) -> PlanEntry {
    let due = match row {
        Some(r) => crate::scheduler::by_hand::deadline(c, r),
        None => c.by_hand().and_then(|m| m.expires_at_ms()),
    };
    PlanEntry {
        id: c.id.clone(),
        next_due_at: due.map(rfc3339),
        reason: match due {
            Some(at) if at <= now => "by_hand_overdue".into(),
            _ => "by_hand".into(),
        },
        rotation: "by_hand",
        max_age: None,
        max_age_deadline: None,
    }
}

/// A credential rotor rotates: the stored due time, or the one a reload would compute for a
/// changed schedule.
fn automatic(
    c: &Credential,
    row: Option<&CredentialRow>,
    live: Option<&RunRow>,
    now: i64,
) -> PlanEntry {
    let (due, reason) = match row {
        Some(r) if r.schedule_hash == c.schedule_hash => {
            (r.next_due_at, r.due_reason.clone().unwrap_or_default())
        }
        _ => {
            let since = row.and_then(|r| r.current_since).map(to_datetime);
            let due = c.schedule.next_due(&c.id, since, to_datetime(now));
            (
                due.map(|d| d.at.timestamp_millis()),
                due.map_or("manual".into(), |d| d.reason.as_str().into()),
            )
        }
    };
    let reason = match (live, due) {
        (Some(run), _) => format!("rotating ({})", run.state),
        (None, None) => "manual".into(),
        (None, Some(at)) if at <= now && reason == "schedule" => "overdue".into(),
        _ => reason,
    };
    PlanEntry {
        id: c.id.clone(),
        next_due_at: due.map(rfc3339),
        reason,
        rotation: "automatic",
        max_age: None,
        max_age_deadline: None,
    }
}
