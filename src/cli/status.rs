//! `rotor status [ID] [--json]`: each credential's state, current version, age and last error
//! (see `app::status`), as a table or JSON.

use super::{CliError, CliResult, Context, Exit, print_json};
use crate::app::status;

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
    let statuses = status::status(&store, &config, args.id.as_deref(), now).await?;
    store.close().await;
    let Some(statuses) = statuses else {
        return Err(CliError::usage(format!(
            "no credential `{}` in the store",
            args.id.unwrap_or_default()
        )));
    };
    if args.json {
        print_json(&statuses)?;
        return Ok(Exit::Ok);
    }
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
    for s in &statuses {
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
    // What rotor does next is in the table's NEXT DUE for an idle credential; the others
    // say it in words, and a stuck one what a person must do.
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
        for s in &statuses {
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
    Ok(Exit::Ok)
}

pub fn human_age(seconds: i64) -> String {
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}
