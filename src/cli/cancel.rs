//! `rotor cancel ID [--retire-now | --resolved-by-hand] [--reason TEXT]`: see `app::cancel`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::rotate::cli_error;
use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::cancel::{self, Cancel, Cancelled, Found, Seen};
use crate::app::emergency::Asking;
use crate::clock::rfc3339;
use crate::engine::state::RunState;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id.
    pub id: String,
    /// Why, kept in the audit log with who asked.
    #[arg(long)]
    pub reason: Option<String>,
    /// A run past promotion: end its grace now and retire the old credential.
    #[arg(long, conflicts_with = "resolved_by_hand")]
    pub retire_now: bool,
    /// A stuck run a person repaired by hand: check the provider and the vault, print what is
    /// there, and close the run.
    #[arg(long, requires = "reason")]
    pub resolved_by_hand: bool,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let id = ctx.credential(&config, &args.id)?.id.clone();
    let store = ctx.open_store(&config).await?;
    let actor = actor();
    let how = if args.resolved_by_hand {
        Cancel::ResolvedByHand
    } else if args.retire_now {
        Cancel::RetireNow
    } else {
        Cancel::BeforePromotion
    };
    let asking = Asking {
        actor: &actor,
        reason: args.reason.as_deref().unwrap_or("no reason given"),
        clock: store.clock(),
        stopping: Arc::new(AtomicBool::new(false)),
    };
    let cancelled = cancel::cancel(&store, config, &id, how, &asking)
        .await
        .map_err(cli_error)?;
    store.close().await;
    match cancelled {
        Cancelled::NoLiveRun => Err(CliError::usage(format_args!(
            "{id} has no live run: nothing to cancel (`rotor status {id}`)"
        ))),
        Cancelled::RolledBack { run_id } => {
            println!(
                "cancelled run {run_id} of {id}: rolled back; the current credential is the one before it"
            );
            Ok(Exit::Ok)
        }
        Cancelled::Completed { run_id } => {
            println!(
                "run {run_id} of {id} completed now: grace ended and the previous credential retired"
            );
            Ok(Exit::Ok)
        }
        Cancelled::Promoted(run) => Err(CliError::usage(promoted_choices(&id, &run))),
        Cancelled::NotStuck(run) => Err(CliError::usage(format_args!(
            "run {} of {id} is {}, neither stuck nor retrying: `--resolved-by-hand` closes only a run that waits for a person or keeps failing; `rotor cancel {id}` (or `--retire-now`) stops a live one",
            run.id, run.state
        ))),
        Cancelled::Ended(run) => Err(CliError::Failed(anyhow::anyhow!(
            "run {} of {id} ended {}: {}; `rotor status {id}` says what it waits for",
            run.id,
            run.state,
            run.last_error.as_deref().unwrap_or("see `rotor history`")
        ))),
        Cancelled::Stopped { run_id } => {
            eprintln!("stopped: run {run_id} of {id} is left resumable");
            Ok(Exit::RotationFailed)
        }
        Cancelled::Closed { run, found } => {
            print!("{}", described(&found));
            println!(
                "closed run {} of {id} by hand as {}; the store records the vault's current version",
                run.id, run.state
            );
            Ok(Exit::Ok)
        }
    }
}

/// Why a promoted run is not cancelled, and what the person can do instead.
fn promoted_choices(id: &str, run: &crate::store::RunRow) -> String {
    if run.state() == RunState::Stuck {
        return format!(
            "run {} of {id} is stuck after promotion ({}): the new credential is current. Choices: fix the cause and `rotor rotate {id}` resumes it; `rotor cancel {id} --retire-now` resumes it and retires the old credential now; repaired by hand: `rotor cancel {id} --resolved-by-hand --reason TEXT`",
            run.id,
            run.last_error.as_deref().unwrap_or("no error recorded")
        );
    }
    let until = run.grace_until.map_or("its retirement".to_owned(), rfc3339);
    format!(
        "run {} of {id} is {}: consumers read the new credential already, so it is not rolled back. Choices: `rotor cancel {id} --retire-now` ends the grace now and retires the old credential; `rotor rotate {id} --emergency` if the old one may be exposed; or let it finish at {until}",
        run.id, run.state
    )
}

/// What the provider and the vault hold, for the person who repaired the credential.
fn described(found: &Found) -> String {
    let seen = |what: &str, s: &Option<Seen>| match s {
        Some(s) => format!(
            "  vault {what}: version {} {}{}\n",
            s.version,
            crate::fingerprint::shown(&s.fingerprint),
            s.provider_id
                .as_deref()
                .map(|p| format!(" (provider id {p})"))
                .unwrap_or_default()
        ),
        None => format!("  vault {what}: none\n"),
    };
    let mut out = String::from("found:\n");
    out.push_str(&seen("current", &found.current));
    out.push_str(&seen("previous", &found.previous));
    out.push_str(&seen("pending", &found.pending));
    if let Some(e) = &found.vault_error {
        out.push_str(&format!("  vault: could not be read: {e}\n"));
    }
    match &found.at_provider {
        Ok(live) if live.is_empty() => out.push_str("  provider: lists nothing\n"),
        Ok(live) => {
            for l in live {
                out.push_str(&format!(
                    "  provider: {} ({})\n",
                    l.provider_id,
                    if l.active { "active" } else { "inactive" }
                ));
            }
        }
        Err(e) => out.push_str(&format!("  provider: could not list: {e}\n")),
    }
    out
}
