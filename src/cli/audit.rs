//! `rotor audit verify`: checks the hash chain of the audit log.

use super::{CliError, CliResult, Context, Exit};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: AuditCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Verify that no audit row was edited or deleted.
    Verify,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let AuditCommand::Verify = args.command;
    let config = ctx.load_config()?;
    let store = ctx.open_store(&config).await?;
    match store.verify_audit().await? {
        Ok(rows) => {
            println!("ok: audit log intact ({rows} rows)");
            Ok(Exit::Ok)
        }
        Err(problem) => Err(CliError::Failed(anyhow::anyhow!(
            "audit log broken: {problem}"
        ))),
    }
}
