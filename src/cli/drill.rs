//! `rotor drill`: the quarterly proof that every credential can still be rotated, that its
//! consumers survive it and that a failure reaches the on-call person.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{CliError, CliResult, Context, Exit, actor, print_json};
use crate::alert::Condition;
use crate::clock::{Clock, SystemClock};
use crate::drill::report::Report;
use crate::drill::{DrillOptions, Driller, Fault, progress, select};
use crate::engine::Runtime;
use crate::scheduler::daemon;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credentials to drill: an id glob (`payments/*`), a provider kind or a vault name
    /// (repeatable; default: every credential rotor rotates).
    #[arg(long = "select", value_name = "PATTERN")]
    pub select: Vec<String>,
    /// Prove the path without changing what consumers read: preflight, mint, apply (where it
    /// does not touch the credential in use), verify, then discard the candidate.
    #[arg(long)]
    pub dry_run: bool,
    /// Prove an unhappy path, one scenario per fault: verify-fail, vault-down,
    /// provider-timeout, crash@STEP[:before|effect|after] (repeatable).
    #[arg(long = "inject", value_name = "FAULT", value_parser = parse_fault)]
    pub inject: Vec<Fault>,
    /// Grace of the drill's rotations instead of each credential's own (e.g. 1m).
    #[arg(long, value_parser = super::run::parse_duration)]
    pub grace: Option<Duration>,
    /// Write the report to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The report as JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

fn parse_fault(text: &str) -> Result<Fault, String> {
    text.parse()
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let options = DrillOptions {
        select: args.select,
        dry_run: args.dry_run,
        faults: args.inject,
        grace: args.grace,
    };
    let (selected, by_hand) = select(&config, &options.select);
    if selected.is_empty() && by_hand.is_empty() {
        return Err(CliError::Usage(anyhow::anyhow!(
            "no credential matches {:?} (an id glob, a provider kind or a vault name)",
            options.select
        )));
    }
    let selected: Vec<_> = selected.into_iter().cloned().collect();
    let by_hand: Vec<String> = by_hand.into_iter().map(|c| c.id.clone()).collect();
    let store = ctx.open_store(&config).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    daemon::reconcile(&store, &config, clock.as_ref()).await?;
    let runtime = Arc::new(Runtime::build(config).await?);
    let drill_id = format!("drill_{}", daemon::random_hex(6));
    let actor = actor();
    let started = clock.now_ms();
    let described = serde_json::json!({
        "select": options.select,
        "dry_run": options.dry_run,
        "inject": options.faults.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "grace_seconds": options.grace.map(|g| g.as_secs()),
    })
    .to_string();
    store
        .start_drill(&drill_id, &actor, &described, started)
        .await?;

    let stopping = Arc::new(AtomicBool::new(false));
    let flag = stopping.clone();
    let ctrl_c = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("stopping after the step in flight; the drill's runs stay resumable");
            flag.store(true, Ordering::SeqCst);
        }
    });
    let driller = Driller {
        store: store.clone(),
        runtime: runtime.clone(),
        clock: clock.clone(),
        actor: actor.clone(),
        stopping: stopping.clone(),
        progress: progress::for_stderr(),
    };
    let scenarios: Vec<Option<&Fault>> = if options.faults.is_empty() {
        vec![None]
    } else {
        options.faults.iter().map(Some).collect()
    };
    let mut reports = Vec::new();
    'credentials: for credential in &selected {
        for fault in &scenarios {
            if stopping.load(Ordering::SeqCst) {
                break 'credentials;
            }
            reports.push(driller.drill(credential, &options, *fault).await?);
        }
    }
    ctrl_c.abort();

    // A credential passed its drill when every scenario of it did.
    let mut outcomes: BTreeMap<String, bool> = BTreeMap::new();
    for r in &reports {
        *outcomes.entry(r.credential_id.clone()).or_insert(true) &= r.passed;
    }
    let finished = clock.now_ms();
    let interrupted = stopping.load(Ordering::SeqCst);
    let report = Report::new(
        drill_id.clone(),
        actor.clone(),
        started,
        finished,
        &options,
        reports,
        by_hand,
    );
    let passed = report.passed && !interrupted;
    let json = serde_json::to_string_pretty(&report).map_err(|e| CliError::Internal(e.into()))?;
    let results: Vec<(String, bool)> = outcomes.into_iter().collect();
    store
        .finish_drill(
            &drill_id,
            &actor,
            if passed { "passed" } else { "failed" },
            &json,
            &results,
            finished,
        )
        .await?;
    for (id, ok) in &results {
        if *ok && let Some(c) = runtime.config.credential(id) {
            runtime
                .alerter
                .resolve(&store, id, &[Condition::DrillOverdue], &c.alerts, finished)
                .await?;
        }
    }
    store.close().await;

    let text = if args.json { json } else { report.markdown() };
    match &args.report {
        Some(path) => {
            std::fs::write(path, &text).map_err(|e| {
                CliError::Internal(anyhow::anyhow!(
                    "cannot write the report to {}: {e}",
                    path.display()
                ))
            })?;
            eprintln!("drill {drill_id}: report written to {}", path.display());
        }
        None if args.json => print_json(&report)?,
        None => print!("{text}"),
    }
    Ok(if passed {
        Exit::Ok
    } else {
        Exit::RotationFailed
    })
}
