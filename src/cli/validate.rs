//! `rotor validate PATH... [--online]`: every problem of the given config, with positions;
//! with `--online`, also every rotator's preflight against its provider. Exit 3 if anything
//! is wrong.

use std::path::PathBuf;

use rotor_rotators::Rotator;

use super::{CliError, CliResult, Context, Exit};
use crate::engine::Runtime;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders to check together (default: --config).
    pub paths: Vec<PathBuf>,
    /// Also contact every provider and vault: reachability, permissions, and what each
    /// rotator needs (both alternating roles present with the same grants...). Changes nothing.
    #[arg(long)]
    pub online: bool,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let paths = if args.paths.is_empty() {
        ctx.config_paths.clone()
    } else {
        args.paths
    };
    let config = crate::config::load(&paths)?;
    for warning in &config.warnings {
        eprintln!("warning: {warning}\n");
    }
    let (credentials, files) = (config.credentials.len(), config.sources.len());
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    if args.online {
        let runtime = Runtime::build(config).await?;
        let mut failed = 0;
        for credential in &runtime.config.credentials {
            let rotator = runtime.rotator(&credential.id);
            match rotator.preflight().await {
                Ok(()) => println!("ok: {} ({})", credential.id, rotator.kind()),
                Err(e) => {
                    failed += 1;
                    println!("FAILED: {} ({}): {e}", credential.id, rotator.kind());
                }
            }
        }
        if failed > 0 {
            return Err(CliError::Invalid(anyhow::anyhow!(
                "preflight failed for {failed} of {credentials} credential{}",
                plural(credentials)
            )));
        }
    }
    println!(
        "ok: {credentials} credential{} in {files} file{}{}",
        plural(credentials),
        plural(files),
        if args.online {
            ", every provider reachable and ready"
        } else {
            ""
        }
    );
    Ok(Exit::Ok)
}
