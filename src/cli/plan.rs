//! `rotor plan [--json]`: when each configured credential rotates next, and why. Reads the
//! store but writes nothing: a changed schedule shows the time a reload would compute.

use std::collections::HashMap;

use serde::Serialize;

use super::{CliResult, Context, Exit, print_json};
use crate::clock::{Clock, SystemClock, rfc3339, to_datetime};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (a stable interface) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct PlanEntry {
    pub id: String,
    pub next_due_at: Option<String>,
    pub reason: String,
    /// `automatic` (rotor rotates it) or `by_hand` (people do; rotor reminds them): the
    /// inventory auditors ask for.
    pub rotation: &'static str,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    let now = SystemClock.now_ms();
    let rows: HashMap<String, _> = store
        .credentials()
        .await?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let live: HashMap<String, _> = store
        .live_runs()
        .await?
        .into_iter()
        .map(|r| (r.credential_id.clone(), r))
        .collect();
    store.close().await;
    let mut entries: Vec<PlanEntry> = config
        .credentials
        .iter()
        .map(|c| {
            let row = rows.get(&c.id);
            if c.by_hand().is_some() {
                // Not yet in the store (never reconciled): only a configured expiry is known.
                let due = match row {
                    Some(r) => crate::scheduler::by_hand::deadline(c, r),
                    None => c.by_hand().and_then(|m| m.expires_at_ms()),
                };
                return PlanEntry {
                    id: c.id.clone(),
                    next_due_at: due.map(rfc3339),
                    reason: match due {
                        Some(at) if at <= now => "by_hand_overdue".into(),
                        _ => "by_hand".into(),
                    },
                    rotation: "by_hand",
                };
            }
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
            let reason = match (live.get(&c.id), due) {
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
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        (a.next_due_at.is_none(), &a.next_due_at, &a.id).cmp(&(
            b.next_due_at.is_none(),
            &b.next_due_at,
            &b.id,
        ))
    });
    if args.json {
        print_json(&entries)?;
        return Ok(Exit::Ok);
    }
    println!("{:<40} {:<22} {:<10} REASON", "ID", "NEXT DUE", "ROTATION");
    for e in &entries {
        println!(
            "{:<40} {:<22} {:<10} {}",
            e.id,
            e.next_due_at.as_deref().unwrap_or("-"),
            e.rotation,
            e.reason
        );
    }
    Ok(Exit::Ok)
}
