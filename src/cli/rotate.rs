//! `rotor rotate ID [--emergency]`: rotate one credential now, in this process, sharing the
//! store's lease so that a running daemon never rotates the same credential at once.

use std::sync::Arc;

use super::{CliError, CliResult, Context, Exit, actor};
use crate::clock::{Clock, SystemClock, rfc3339};
use crate::engine::state::RunState;
use crate::engine::{Driven, Engine, Runtime};
use crate::scheduler::daemon;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id.
    pub id: String,
    /// Suspected leak: no grace period, the old credential is retired right after promotion.
    #[arg(long)]
    pub emergency: bool,
    /// Only plan the run; a running daemon drives it.
    #[arg(long)]
    pub no_wait: bool,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let credential = ctx.credential(&config, &args.id)?.clone();
    if credential.by_hand().is_some() {
        return Err(CliError::Usage(anyhow::anyhow!(
            "`{}` is rotated by hand (`manual` rotator): rotate it at its provider, then `rotor confirm {}`",
            args.id,
            args.id
        )));
    }
    let store = ctx.open_store(&config).await?;
    let clock = Arc::new(SystemClock);
    daemon::reconcile(&store, &config, clock.as_ref()).await?;
    let now = clock.now_ms();
    let run = daemon::new_run(
        &args.id,
        "manual",
        args.emergency,
        credential.grace.as_secs() as i64 * 1000,
        now,
    );
    let outcome = store.request_rotation(&run, &actor(), now).await?;
    let live = store
        .live_run(&args.id)
        .await?
        .ok_or_else(|| CliError::Internal(anyhow::anyhow!("run vanished")))?;
    match outcome {
        "stuck" => eprintln!(
            "resuming stuck run {} of {} from {}",
            live.id, args.id, live.state
        ),
        _ => eprintln!(
            "planned run {} of {}{}",
            live.id,
            args.id,
            if args.emergency {
                " (emergency: grace 0)"
            } else {
                ""
            }
        ),
    }
    if args.no_wait {
        return Ok(Exit::Ok);
    }
    let runtime = Runtime::build(config).await?;
    let engine = Engine::new(store.clone(), clock.clone(), daemon::worker_id());
    let lease_until = clock.now_ms() + 60_000;
    let Some(claimed) = store
        .claim_run(&live.id, &engine.worker, clock.now_ms(), lease_until)
        .await?
    else {
        eprintln!("run {} is being driven by another rotor process", live.id);
        return Ok(Exit::Ok);
    };
    let mut claimed = claimed;
    let driven = loop {
        let driven = engine
            .drive(&runtime, claimed)
            .await
            .map_err(|e| CliError::Internal(e.into()))?;
        // Consumers hear of the change now; the daemon retries whatever fails.
        let pass = runtime
            .notify_due(&store, || clock.now_ms(), Some(&args.id))
            .await?;
        if pass.failed > 0 {
            eprintln!(
                "a notify hook of {} failed; `rotor run` retries it (see `rotor status {}`)",
                args.id, args.id
            );
        }
        // `retire_after = "notified"`: every hook took the promotion, so grace is over.
        let notified =
            pass.woken > 0 || matches!(driven, Driven::Waiting(at) if at <= clock.now_ms());
        if !notified {
            break driven;
        }
        match store
            .claim_run(&live.id, &engine.worker, clock.now_ms(), lease_until)
            .await?
        {
            Some(run) if run.state() == RunState::Promoted => claimed = run,
            Some(_) => {
                store.release(&live.id, &engine.worker).await?;
                break driven;
            }
            None => break driven,
        }
    };
    let after = store
        .run(&live.id)
        .await?
        .ok_or_else(|| CliError::Internal(anyhow::anyhow!("run vanished")))?;
    store.close().await;
    match driven {
        Driven::Finished(RunState::Completed) => {
            println!("rotated {}: run {} completed", args.id, after.id);
            Ok(Exit::Ok)
        }
        Driven::Waiting(until) if after.state() == RunState::Promoted => {
            println!(
                "rotated {}: new credential promoted; the previous one is retired after grace, at {} (by `rotor run`)",
                args.id,
                rfc3339(until)
            );
            Ok(Exit::Ok)
        }
        Driven::Waiting(until)
            if after.state() == RunState::Retiring && after.last_error.is_none() =>
        {
            println!(
                "rotated {}: new credential promoted, the previous one disabled; it is removed at {} (by `rotor run`)",
                args.id,
                rfc3339(until)
            );
            Ok(Exit::Ok)
        }
        Driven::Waiting(until) => {
            println!(
                "run {} of {} waits to retry at {}: {}",
                after.id,
                args.id,
                rfc3339(until),
                after.last_error.as_deref().unwrap_or("")
            );
            Ok(Exit::RotationFailed)
        }
        Driven::Finished(state) => Err(CliError::Failed(anyhow::anyhow!(
            "rotation of {} ended {state}: {}",
            args.id,
            after.last_error.as_deref().unwrap_or("see `rotor history`")
        ))),
        Driven::Stopped => Ok(Exit::Ok),
    }
}
