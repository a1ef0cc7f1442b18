//! `rotor status [ID] [--json]`: each credential's state, current version, age and last error
//! (see `app::status`), as a table or JSON.

use std::io::Write;

use super::{CliError, CliResult, Context, Exit, print_json};
use crate::app::status::{self, CredentialStatus};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this credential.
    pub id: Option<String>,
    /// Print JSON (a stable interface) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    let now = store.clock().now_ms();
    let mut statuses = status::Statuses::read(&store, &config, now).await?;
    let printed = match &args.id {
        Some(id) => match statuses.one(id).await? {
            Some(one) if args.json => print_json(&[one]),
            Some(one) => {
                print_table(vec![one]);
                Ok(())
            }
            None => Err(CliError::usage(format!(
                "no credential `{id}` in the store"
            ))),
        },
        None if args.json => print_json_pages(&mut statuses).await,
        None => print_table_pages(&mut statuses).await,
    };
    store.close().await;
    printed.map(|()| Exit::Ok)
}

/// Every credential's status as one JSON array, written a page at a time (the same text as
/// `print_json` of the whole list).
async fn print_json_pages(statuses: &mut status::Statuses<'_>) -> Result<(), CliError> {
    use serde::ser::{SerializeSeq, Serializer};
    let internal = |e: serde_json::Error| CliError::Internal(e.into());
    let mut json = serde_json::Serializer::pretty(std::io::BufWriter::new(std::io::stdout()));
    let mut array = (&mut json).serialize_seq(None).map_err(internal)?;
    while let Some(page) = statuses.next_page().await? {
        for s in &page {
            array.serialize_element(s).map_err(internal)?;
        }
    }
    array.end().map_err(internal)?;
    let mut out = json.into_inner();
    writeln!(out)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Internal(e.into()))
}

/// Every credential's row of the table, a page at a time; then what the busy ones do next
/// and the hooks' deliveries, from the few credentials that have either.
async fn print_table_pages(statuses: &mut status::Statuses<'_>) -> Result<(), CliError> {
    print_header();
    let mut kept = Vec::new();
    while let Some(page) = statuses.next_page().await? {
        for s in page {
            print_row(&s);
            if s.state != "idle" || !s.hooks.is_empty() {
                kept.push(s);
            }
        }
    }
    print_after_rows(&kept);
    Ok(())
}

fn print_table(statuses: Vec<CredentialStatus>) {
    print_header();
    statuses.iter().for_each(print_row);
    print_after_rows(&statuses);
}

fn print_header() {
    println!(
        "{:<32} {:<10} {:<9} {:<12} {:>8} {:>10}  {:<20}  {:<20}  {:<12}  LAST ERROR",
        "ID",
        "PROVIDER",
        "ROTATION",
        "STATE",
        "VERSION",
        "AGE",
        "NEXT DUE",
        "MAX AGE BY",
        "LAST DRILL"
    );
}

fn print_row(s: &CredentialStatus) {
    let drill = match (&s.last_drill_outcome, &s.last_drill_at) {
        (None, _) => "-".to_owned(),
        (Some(outcome), Some(at)) if outcome == "passed" => format!("passed {}", &at[..10]),
        (Some(outcome), _) => outcome.clone(),
    };
    println!(
        "{:<32} {:<10} {:<9} {:<12} {:>8} {:>10}  {:<20}  {:<20}  {:<12}  {}",
        s.id,
        s.provider,
        s.rotation,
        s.state,
        s.current_version.as_deref().unwrap_or("-"),
        s.age_seconds.map_or("-".into(), human_age),
        s.next_due_at
            .as_deref()
            .unwrap_or(if s.run_id.is_some() { "-" } else { "manual" }),
        s.max_age_deadline.as_deref().unwrap_or(match s.max_age {
            Some(_) => "-",
            None => "none",
        }),
        drill,
        s.last_error.as_deref().unwrap_or("")
    );
}

/// What rotor does next is in the table's NEXT DUE for an idle credential; the others say it
/// in words, and a stuck one what a person must do. Then each hook's latest delivery.
fn print_after_rows(statuses: &[CredentialStatus]) {
    let busy: Vec<_> = statuses.iter().filter(|s| s.state != "idle").collect();
    if !busy.is_empty() {
        println!("\n{:<32} NEXT", "ID");
        for s in busy {
            let at = s
                .next_action_at
                .as_deref()
                .map_or(String::new(), |at| format!(" (at {at})"));
            let paused = s.paused.as_ref().map_or(String::new(), |p| {
                format!(" [paused by {} since {}: {}]", p.by, p.since, p.reason)
            });
            println!("{:<32} {}{at}{paused}", s.id, s.next_action);
        }
    }
    if statuses.iter().any(|s| !s.hooks.is_empty()) {
        println!(
            "\n{:<32} {:<20} {:<9} {:<10} {:>8} {:>7}  LAST ERROR",
            "NOTIFIED", "HOOK", "EVENT", "STATE", "OUTCOME", "WAITING"
        );
        for s in statuses {
            for h in &s.hooks {
                println!(
                    "{:<32} {:<20} {:<9} {:<10} {:>8} {:>7}  {}",
                    s.id,
                    h.hook,
                    h.event,
                    h.state,
                    h.last_outcome.as_deref().unwrap_or("-"),
                    h.undelivered,
                    h.last_error.as_deref().unwrap_or("")
                );
            }
        }
    }
}

pub fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
