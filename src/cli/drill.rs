//! `rotor drill`: the quarterly proof that every credential can still be rotated, that its
//! consumers survive it and that a failure reaches the on-call person.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{CliError, CliResult, Context, Exit, actor, print_json};
use crate::app::drill::{self, DrillError, Drilled, Drilling};
use crate::clock::SystemClock;
use crate::drill::{DrillOptions, Fault, progress};

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
    let store = ctx.open_store(&config).await?;
    let (stopping, ctrl_c) =
        super::stop_on_ctrl_c("stopping after the step in flight; the drill's runs stay resumable");
    let drilling = Drilling {
        actor: actor(),
        clock: Arc::new(SystemClock),
        stopping,
        progress: progress::for_stderr(),
    };
    let drilled = drill::run(&store, config, &options, drilling).await;
    ctrl_c.abort();
    let Drilled { report, passed } = drilled.map_err(|e| match e {
        DrillError::NothingSelected(_) => CliError::usage(e),
        DrillError::Store(e) => CliError::Store(e),
        DrillError::Engine(e) => CliError::Engine(e),
    })?;
    store.close().await;

    let text = if args.json {
        serde_json::to_string_pretty(&report).map_err(|e| CliError::Internal(e.into()))?
    } else {
        report.markdown()
    };
    match &args.report {
        Some(path) => {
            write_private(path, text.as_bytes()).map_err(|e| {
                CliError::Internal(anyhow::anyhow!(
                    "cannot write the report to {}: {e}",
                    path.display()
                ))
            })?;
            eprintln!(
                "drill {}: report written to {}",
                report.drill_id,
                path.display()
            );
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

/// A drill report names credentials, runs and what failed: its reader is the operator alone
/// (0600 when created; an existing file keeps its mode, and a link there is not followed).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(path)?
        .write_all(bytes)
}
