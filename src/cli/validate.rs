//! `rotor validate PATH...`: every problem of the given config, with positions; exit 3 if any.

use std::path::PathBuf;

use super::{CliResult, Context, Exit};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or folders to check together (default: --config).
    pub paths: Vec<PathBuf>,
}

pub fn run(ctx: &Context, args: Args) -> CliResult {
    let paths = if args.paths.is_empty() {
        ctx.config_paths.clone()
    } else {
        args.paths
    };
    let config = crate::config::load(&paths)?;
    println!(
        "ok: {} credential{} in {} file{}",
        config.credentials.len(),
        if config.credentials.len() == 1 {
            ""
        } else {
            "s"
        },
        config.sources.len(),
        if config.sources.len() == 1 { "" } else { "s" }
    );
    Ok(Exit::Ok)
}
