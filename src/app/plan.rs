//! Plan (`rotor plan`): when each configured credential rotates next, and why. Reads the
//! store but writes nothing: a changed schedule shows the time a reload would compute.
//!
//! The store is read a page at a time; each credential's plan is kept as a few bytes (times,
//! its index in the config, its reason's number) until all are sorted, and its printed form is
//! made only as it is printed. A million credentials cost about 24 MB beyond their config.

use std::collections::HashMap;

use serde::Serialize;

use crate::clock::{rfc3339, to_datetime};
use crate::config::{Config, Credential};
use crate::store::{CredentialRow, RunRow, Store, StoreError};

/// Rows read at a time.
const PAGE: i64 = 1000;

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

/// Every configured credential's next rotation, soonest first, those never due last (ties in
/// id order): an iterator of [`PlanEntry`].
pub struct Plan<'a> {
    config: &'a Config,
    planned: std::vec::IntoIter<Planned>,
    /// Each distinct reason once; `Planned::reason` indexes it.
    reasons: Vec<String>,
}

/// One credential's plan, small: a million are held at once.
struct Planned {
    /// When it is due; `None`: never by itself.
    due: Option<i64>,
    max_age_deadline: Option<i64>,
    /// Its index in `Config::credentials`.
    credential: u32,
    reason: u16,
}

/// Plans every configured credential at `now` (ms).
pub async fn plan<'a>(store: &Store, config: &'a Config, now: i64) -> Result<Plan<'a>, StoreError> {
    let live = store.live_runs_by_credential().await?;
    let mut reasons = Reasons::default();
    let mut planned = Vec::with_capacity(config.credentials.len());
    let mut in_store = vec![false; config.credentials.len()];
    let mut pages = store.credential_pages(PAGE);
    while let Some(rows) = pages.next().await? {
        for row in &rows {
            // A row of a credential no longer configured is not planned.
            let Some(index) = config.index_of(&row.id) else {
                continue;
            };
            in_store[index] = true;
            planned.push(plan_one(config, index, Some(row), &live, now, &mut reasons));
        }
    }
    for (index, _) in in_store.iter().enumerate().filter(|(_, found)| !**found) {
        planned.push(plan_one(config, index, None, &live, now, &mut reasons));
    }
    let id = |p: &Planned| config.credentials[p.credential as usize].id.as_str();
    planned.sort_by(|a, b| (a.due.is_none(), a.due, id(a)).cmp(&(b.due.is_none(), b.due, id(b))));
    Ok(Plan {
        config,
        planned: planned.into_iter(),
        reasons: reasons.names,
    })
}

impl Iterator for Plan<'_> {
    type Item = PlanEntry;

    fn next(&mut self) -> Option<PlanEntry> {
        let p = self.planned.next()?;
        let c = &self.config.credentials[p.credential as usize];
        Some(PlanEntry {
            id: c.id.clone(),
            next_due_at: p.due.map(rfc3339),
            reason: self.reasons[usize::from(p.reason)].clone(),
            rotation: if c.by_hand().is_some() {
                "by_hand"
            } else {
                "automatic"
            },
            max_age: c.schedule.max_age.map(|m| m.to_string()),
            max_age_deadline: p.max_age_deadline.map(rfc3339),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.planned.size_hint()
    }
}

/// The distinct reasons, numbered: there are a handful (`schedule`, `overdue`, `rotating
/// (verifying)`...), so a million plans keep a number each, not a string.
#[derive(Default)]
struct Reasons {
    names: Vec<String>,
    numbers: HashMap<String, u16>,
}

impl Reasons {
    fn number(&mut self, reason: String) -> u16 {
        if let Some(&n) = self.numbers.get(&reason) {
            return n;
        }
        let n = u16::try_from(self.names.len()).expect("fewer than 65,536 distinct reasons");
        self.names.push(reason.clone());
        self.numbers.insert(reason, n);
        n
    }
}

fn plan_one(
    config: &Config,
    index: usize,
    row: Option<&CredentialRow>,
    live: &HashMap<String, RunRow>,
    now: i64,
    reasons: &mut Reasons,
) -> Planned {
    let c = &config.credentials[index];
    let (due, reason) = match c.by_hand() {
        Some(_) => by_hand(c, row, now),
        None => automatic(c, row, live.get(&c.id), now),
    };
    Planned {
        due,
        max_age_deadline: super::status::max_age_deadline(c, row),
        credential: u32::try_from(index).expect("fewer than 4 billion credentials"),
        reason: reasons.number(reason),
    }
}

/// A credential people rotate: its deadline. Not yet in the store (never reconciled), only a
/// configured expiry is known.
fn by_hand(c: &Credential, row: Option<&CredentialRow>, now: i64) -> (Option<i64>, String) {
    let due = match row {
        Some(r) => crate::scheduler::by_hand::deadline(c, r),
        None => c.by_hand().and_then(|m| m.expires_at_ms()),
    };
    let reason = match due {
        Some(at) if at <= now => "by_hand_overdue",
        _ => "by_hand",
    };
    (due, reason.into())
}

/// A credential rotor rotates: the stored due time, or the one a reload would compute for a
/// changed schedule.
fn automatic(
    c: &Credential,
    row: Option<&CredentialRow>,
    live: Option<&RunRow>,
    now: i64,
) -> (Option<i64>, String) {
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
    (due, reason)
}
