//! `rotor audit verify|anchor`: checks the keyed hash chain of the audit log against anchors
//! kept outside the store, and takes such an anchor.

use std::path::{Path, PathBuf};

use super::{CliError, CliResult, Context, Exit};
use crate::store::audit::Anchor;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify that no audit row was edited, deleted or cut from the end: the keyed chain, and
    /// each anchor given (or, with none given, each in `[store] anchor_file`).
    Verify {
        /// An anchor taken earlier, `SEQ:HASH` as `rotor audit anchor` printed it. Repeatable.
        #[arg(long = "anchor", value_name = "SEQ:HASH")]
        anchors: Vec<String>,
        /// A file of anchors, one per line (its first word), as `[store] anchor_file` is kept.
        #[arg(long, value_name = "FILE")]
        anchors_from: Option<PathBuf>,
    },
    /// Print the chain's head as an anchor (`SEQ:HASH`) to keep outside the store, and append
    /// it to `[store] anchor_file` when one is configured.
    Anchor,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    match args.command {
        AuditCommand::Verify {
            anchors,
            anchors_from,
        } => {
            let mut kept: Vec<Anchor> = anchors
                .iter()
                .map(|a| a.parse().map_err(CliError::usage))
                .collect::<Result<_, _>>()?;
            let file = anchors_from.or_else(|| {
                kept.is_empty()
                    .then(|| config.store.anchor_file.clone())
                    .flatten()
            });
            if let Some(file) = &file {
                kept.extend(read_anchors(file)?);
            }
            let store = ctx.open_store(&config).await?;
            let verified = store.verify_audit_against(&kept).await?;
            store.close().await;
            match verified {
                Ok(rows) => {
                    println!(
                        "ok: audit log intact ({rows} rows, keyed chain{})",
                        match kept.len() {
                            0 => ", no anchor given: a cut tail or a replaced log needs one"
                                .to_owned(),
                            n => format!(", {n} anchor(s) hold"),
                        }
                    );
                    Ok(Exit::Ok)
                }
                Err(problem) => Err(CliError::Failed(anyhow::anyhow!(
                    "audit log broken: {problem}"
                ))),
            }
        }
        AuditCommand::Anchor => {
            let store = ctx.open_store(&config).await?;
            let anchor = store.audit_anchor().await?;
            store.close().await;
            if let Some(file) = &config.store.anchor_file {
                crate::store::anchor::append(file, &anchor).map_err(|e| {
                    CliError::Internal(anyhow::anyhow!(
                        "appending the anchor to {}: {e}",
                        file.display()
                    ))
                })?;
            }
            println!("{anchor}");
            Ok(Exit::Ok)
        }
    }
}

/// Every anchor in `file`, one per line (the first word of each; `#` lines and blank lines
/// skipped).
fn read_anchors(file: &Path) -> Result<Vec<Anchor>, CliError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        CliError::usage(format_args!("reading anchors from {}: {e}", file.display()))
    })?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(i, l)| {
            l.split_whitespace()
                .next()
                .unwrap_or_default()
                .parse()
                .map_err(|e| CliError::usage(format_args!("{}:{}: {e}", file.display(), i + 1)))
        })
        .collect()
}
