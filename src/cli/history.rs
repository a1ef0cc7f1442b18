//! `rotor history [ID] [--json]`: past runs, newest first, with their steps.

use serde::Serialize;

use super::{CliResult, Context, Exit, print_json};
use crate::clock::rfc3339;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only runs of this credential.
    pub id: Option<String>,
    /// At most this many runs.
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Print JSON (a stable interface) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct RunHistory {
    pub run_id: String,
    pub id: String,
    pub state: String,
    pub reason: String,
    pub emergency: bool,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub attempts: i64,
    pub error: Option<String>,
    pub steps: Vec<StepHistory>,
    /// Under `retire_when = "unused"`: what the provider told of the replaced credential's
    /// use during the run's grace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_usage: Option<crate::app::status::PreviousUsageStatus>,
}

#[derive(Debug, Serialize)]
pub struct StepHistory {
    pub step: String,
    pub attempt: i64,
    pub worker: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub outcome: String,
    pub error: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    let runs = store.runs(args.id.as_deref(), args.limit).await?;
    let mut history = Vec::with_capacity(runs.len());
    for run in runs {
        let steps = store.steps(&run.id).await?;
        let previous_usage = run
            .previous_usage
            .is_some()
            .then(|| previous_usage_of(&run));
        history.push(RunHistory {
            previous_usage,
            attempts: steps.len() as i64,
            run_id: run.id,
            id: run.credential_id,
            state: run.state.to_string(),
            reason: run.reason,
            emergency: run.emergency != 0,
            started_at: rfc3339(run.created_at),
            finished_at: run.finished_at.map(rfc3339),
            error: run.last_error,
            steps: steps
                .into_iter()
                .map(|s| StepHistory {
                    step: s.step,
                    attempt: s.attempt,
                    worker: s.worker,
                    started_at: rfc3339(s.started_at),
                    finished_at: s.finished_at.map(rfc3339),
                    outcome: s.outcome,
                    error: s.error,
                })
                .collect(),
        });
    }
    store.close().await;
    if args.json {
        print_json(&history)?;
        return Ok(Exit::Ok);
    }
    for run in &history {
        println!(
            "{}  {}  {}  started {}{}",
            run.run_id,
            run.id,
            run.state,
            run.started_at,
            run.finished_at
                .as_ref()
                .map(|f| format!(", finished {f}"))
                .unwrap_or_default()
        );
        if let Some(u) = &run.previous_usage {
            let seen = match (&u.last_seen_at, &u.by) {
                (Some(at), Some(by)) => format!("last seen in use {at}: {by}"),
                _ => format!(
                    "{} (the provider's last answer)",
                    u.evidence.as_deref().unwrap_or("not asked")
                ),
            };
            println!("    old credential: {seen}");
        }
        for s in &run.steps {
            println!(
                "    {:<9} attempt {}  {:<8} {}{}",
                s.step,
                s.attempt,
                s.outcome,
                s.started_at,
                s.error
                    .as_ref()
                    .map(|e| format!("  {e}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(Exit::Ok)
}

fn previous_usage_of(run: &crate::store::RunRow) -> crate::app::status::PreviousUsageStatus {
    crate::engine::PreviousUsage::of(run).into()
}
