//! `rotor rotate ID [--emergency]`: rotate one credential now, in this process (see
//! `app::rotate`), and say how far it got.

use std::sync::Arc;

use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::rotate::{self, Requested, RotateError, Rotated};
use crate::clock::{SystemClock, rfc3339};

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
    let id = &ctx.credential(&config, &args.id)?.id.clone();
    let store = ctx.open_store(&config).await?;
    let clock = Arc::new(SystemClock);
    let requested = rotate::request(
        &store,
        &config,
        clock.as_ref(),
        id,
        args.emergency,
        &actor(),
    )
    .await
    .map_err(cli_error)?;
    match &requested {
        Requested::Resumed { run_id, from } => {
            eprintln!("resuming stuck run {run_id} of {id} from {from}")
        }
        Requested::Planned { run_id } => eprintln!(
            "planned run {run_id} of {id}{}",
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
    let run_id = requested.run_id();
    let outcome = rotate::drive(&store, config, clock, id, run_id)
        .await
        .map_err(cli_error)?;
    store.close().await;
    if outcome.hook_failed {
        eprintln!("a notify hook of {id} failed; `rotor run` retries it (see `rotor status {id}`)");
    }
    match outcome.rotated {
        Rotated::Completed => println!("rotated {id}: run {run_id} completed"),
        Rotated::Promoted { retire_at } => println!(
            "rotated {id}: new credential promoted; the previous one is retired after grace, at {} (by `rotor run`)",
            rfc3339(retire_at)
        ),
        Rotated::Disabled { remove_at } => println!(
            "rotated {id}: new credential promoted, the previous one disabled; it is removed at {} (by `rotor run`)",
            rfc3339(remove_at)
        ),
        Rotated::Retrying { at, error } => {
            println!(
                "run {run_id} of {id} waits to retry at {}: {error}",
                rfc3339(at)
            );
            return Ok(Exit::RotationFailed);
        }
        Rotated::Failed { state, error } => {
            return Err(CliError::Failed(anyhow::anyhow!(
                "rotation of {id} ended {state}: {}",
                error.as_deref().unwrap_or("see `rotor history`")
            )));
        }
        Rotated::DrivenElsewhere => {
            eprintln!("run {run_id} is being driven by another rotor process")
        }
        Rotated::Stopped => {}
    }
    Ok(Exit::Ok)
}

fn cli_error(e: RotateError) -> CliError {
    match e {
        RotateError::ByHand(_) => CliError::usage(e),
        RotateError::Store(e) => CliError::Store(e),
        RotateError::Engine(e) => CliError::Engine(e),
        RotateError::Vanished { .. } => CliError::Internal(e.into()),
    }
}
