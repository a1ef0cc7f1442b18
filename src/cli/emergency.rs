//! `rotor rotate ID|--all|--select PATTERN --emergency [--reason TEXT]`: see `app::emergency`.
//! Exit 0 only when every selected credential has a fresh verified value and nothing older
//! authenticates; 4 names what may still work and what to do.

use super::rotate::{Args, cli_error};
use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::emergency::{self, Asking, Emergency};
use crate::drill::{progress, select};

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    let actor = actor();
    let reason = args.reason.as_deref().unwrap_or("no reason given");
    let (stopping, ctrl_c) = super::stop_on_ctrl_c(
        "stopping after the step in flight; the emergency is NOT over: run it again",
    );
    let asking = Asking {
        actor: &actor,
        reason,
        clock: store.clock(),
        stopping,
    };
    let exit = match &args.id {
        Some(id) => {
            let id = ctx.credential(&config, id)?.id.clone();
            let outcome = emergency::rotate_one(&store, config, &id, &asking)
                .await
                .map_err(cli_error)?;
            report_one(&id, &outcome)
        }
        None => {
            let patterns = if args.all { Vec::new() } else { args.select };
            let (selected, by_hand) = select(&config, &patterns);
            if selected.is_empty() {
                return Err(CliError::usage(format_args!(
                    "no credential rotor rotates matches {patterns:?} (an id glob, a provider kind or a vault name)"
                )));
            }
            let ids: Vec<String> = selected.iter().map(|c| c.id.clone()).collect();
            let by_hand: Vec<String> = by_hand.iter().map(|c| c.id.clone()).collect();
            let outcomes = emergency::rotate_all(
                &store,
                config,
                &ids,
                &asking,
                &progress::for_stderr(),
                args.parallel,
            )
            .await
            .map_err(cli_error)?;
            report_many(&outcomes, &by_hand)
        }
    };
    ctrl_c.abort();
    store.close().await;
    Ok(exit)
}

/// One line per credential: what happened, or what may still authenticate and what to do.
fn line(id: &str, outcome: &Emergency) -> (bool, String) {
    match outcome {
        Emergency::Done {
            run_id,
            interrupted,
        } => {
            let before = match interrupted {
                Some((run, state)) => format!("live run {run} {state} first; "),
                None => String::new(),
            };
            (
                true,
                format!(
                    "rotated {id} (emergency): {before}run {run_id} completed; no older credential authenticates or remains in the vault"
                ),
            )
        }
        Emergency::Exposed(e) => (
            false,
            format!(
                "EXPOSED {id}: run {} ended {}{}; {}. What to do: {}",
                e.run_id,
                e.state,
                e.error
                    .as_deref()
                    .map(|error| format!(" ({error})"))
                    .unwrap_or_default(),
                e.live,
                e.action
            ),
        ),
        Emergency::Stopped { run_id } => (
            false,
            format!(
                "STOPPED {id}: run {run_id} is left resumable; `rotor rotate {id} --emergency` finishes the emergency"
            ),
        ),
    }
}

pub(super) fn report_one(id: &str, outcome: &Emergency) -> Exit {
    let (done, text) = line(id, outcome);
    if done {
        println!("{text}");
        Exit::Ok
    } else {
        eprintln!("{text}");
        Exit::RotationFailed
    }
}

fn report_many(outcomes: &[emergency::EachOutcome], by_hand: &[String]) -> Exit {
    let mut rotated = 0;
    for (id, outcome) in outcomes {
        let (done, text) = match outcome {
            Ok(outcome) => line(id, outcome),
            Err(e) => (false, format!("FAILED {id}: {e}")),
        };
        rotated += usize::from(done);
        println!("{text}");
    }
    if !by_hand.is_empty() {
        println!(
            "NOT ROTATED (rotated by hand; rotate each at its provider, then `rotor confirm ID`): {}",
            by_hand.join(", ")
        );
    }
    let left = outcomes.len() - rotated;
    println!(
        "{rotated} of {} credentials rotated; {left} may still have an exposed value live",
        outcomes.len()
    );
    if left == 0 && by_hand.is_empty() {
        Exit::Ok
    } else {
        Exit::RotationFailed
    }
}
