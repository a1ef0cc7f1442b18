//! `rotor plan [--json]`: when each configured credential rotates next, and why (see
//! `app::plan`).

use std::io::Write;

use super::{CliError, CliResult, Context, Exit, print_json_each};
use crate::app::plan;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (a stable interface) instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    let entries = plan::plan(&store, &config, store.clock().now_ms()).await?;
    store.close().await;
    if args.json {
        print_json_each(entries)?;
        return Ok(Exit::Ok);
    }
    println!(
        "{:<40} {:<22} {:<10} {:<22} REASON",
        "ID", "NEXT DUE", "ROTATION", "MAX AGE BY"
    );
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for e in entries {
        writeln!(
            out,
            "{:<40} {:<22} {:<10} {:<22} {}",
            e.id,
            e.next_due_at.as_deref().unwrap_or("-"),
            e.rotation,
            e.max_age_deadline.as_deref().unwrap_or(match e.max_age {
                Some(_) => "-",
                None => "none",
            }),
            e.reason
        )
        .map_err(|e| CliError::Internal(e.into()))?;
    }
    out.flush().map_err(|e| CliError::Internal(e.into()))?;
    Ok(Exit::Ok)
}
