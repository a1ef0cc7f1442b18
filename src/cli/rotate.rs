//! `rotor rotate ID`: rotate one credential now, in this process (see `app::rotate`), and say
//! how far it got. `--emergency` is `cli::emergency`.

use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::rotate::{self, Requested, RotateError, Rotated};
use crate::clock::rfc3339;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id.
    #[arg(required_unless_present_any = ["all", "select"])]
    pub id: Option<String>,
    /// Suspected leak: the current and the previous credential are presumed exposed. Whatever
    /// run is live is stopped (rolled back before promotion, retired at once after it), then a
    /// new credential replaces the current one with no grace. Exit 0 means nothing older
    /// authenticates.
    #[arg(long)]
    pub emergency: bool,
    /// Why, kept in the audit log with who asked.
    #[arg(long, requires = "emergency")]
    pub reason: Option<String>,
    /// Every credential rotor rotates (with --emergency).
    #[arg(long, requires = "emergency", conflicts_with_all = ["id", "select"])]
    pub all: bool,
    /// Credentials whose id matches this glob, or of this provider kind or vault (repeatable;
    /// with --emergency).
    #[arg(long, requires = "emergency", conflicts_with = "id")]
    pub select: Vec<String>,
    /// How many credentials an emergency over many rotates at once.
    #[arg(long, default_value_t = 8, requires = "emergency")]
    pub parallel: usize,
    /// Only plan the run; a running daemon drives it.
    #[arg(long, conflicts_with = "emergency")]
    pub no_wait: bool,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    if args.emergency {
        return super::emergency::run(ctx, args).await;
    }
    let config = ctx.load_config()?;
    let id = args.id.as_deref().expect("clap: an id without --emergency");
    let id = &ctx.credential(&config, id)?.id.clone();
    let store = ctx.open_store(&config).await?;
    let clock = store.clock();
    let requested = rotate::request(&store, &config, clock.as_ref(), id, &actor())
        .await
        .map_err(cli_error)?;
    match &requested {
        Requested::Resumed { run_id, from } => {
            eprintln!("resuming stuck run {run_id} of {id} from {from}")
        }
        Requested::Planned { run_id } => eprintln!("planned run {run_id} of {id}"),
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

pub(super) fn cli_error(e: RotateError) -> CliError {
    match e {
        RotateError::ByHand(_) | RotateError::Paused { .. } => CliError::usage(e),
        RotateError::Store(e) => CliError::Store(e),
        RotateError::Engine(e) => CliError::Engine(e),
        RotateError::Vanished { .. } | RotateError::Panicked(_) => CliError::Internal(e.into()),
    }
}
