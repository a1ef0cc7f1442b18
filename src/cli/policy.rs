//! `rotor policy ID`: the least privilege rotor needs to rotate a credential: at the provider
//! (from the rotator) and in the vault, each in its own policy language, ready to apply.

use super::{CliResult, Context, Exit};
use crate::vault::PolicyScope;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id.
    pub id: String,
}

pub fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let credential = ctx.credential(&config, &args.id)?;
    let vault = &config.vaults[&credential.vault];
    println!(
        "{}",
        credential
            .rotator
            .settings()
            .least_privilege(&credential.id)
    );
    let scope = PolicyScope {
        credential: &credential.id,
        vault: &credential.vault,
        path: &credential.vault_path,
    };
    print!("{}", vault.settings().least_privilege(&scope));
    Ok(Exit::Ok)
}
