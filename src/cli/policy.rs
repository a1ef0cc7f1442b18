//! `rotor policy ID`: the least privilege rotor needs to rotate a credential: at the provider
//! (from the rotator) and in the vault, each in its own policy language, ready to apply; and
//! what the rotator's verification proves and cannot, and what evidence of use it has.
//! `rotor policy --store ROLE`: the grants of a PostgreSQL store's runtime role, which may
//! append audit rows but never change or delete one.

use super::{CliResult, Context, Exit};
use crate::vault::PolicyScope;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id.
    #[arg(required_unless_present = "store")]
    pub id: Option<String>,
    /// Print instead the grants of ROLE, the role `rotor run` connects to a PostgreSQL store
    /// as, once the store's owner has run the migrations (any rotor command does).
    #[arg(long, value_name = "ROLE", conflicts_with = "id")]
    pub store: Option<String>,
}

/// What a PostgreSQL store's runtime role needs: every table's rows, but the audit log's only
/// to read and append, so that a leaked runtime password cannot rewrite history.
pub fn store_grants(role: &str) -> String {
    let role = format!("\"{}\"", role.replace('"', "\"\""));
    format!(
        "-- PostgreSQL: run as the store's owner, in the store's database.\n\
         GRANT USAGE ON SCHEMA public TO {role};\n\
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role};\n\
         REVOKE UPDATE, DELETE, TRUNCATE ON audit FROM {role};\n\
         GRANT SELECT, INSERT ON audit TO {role};\n\
         -- Migrations stay with the owner: after an upgrade run a command that opens the store\n\
         -- (`rotor status`) as the owner, then start the replicas as {role}.\n"
    )
}

pub fn run(ctx: &Context, args: Args) -> CliResult {
    if let Some(role) = &args.store {
        print!("{}", store_grants(role));
        return Ok(Exit::Ok);
    }
    let config = ctx.load_config()?;
    let id = args.id.expect("clap requires an id without --store");
    let credential = ctx.credential(&config, &id)?;
    let vault = &config.vaults[&credential.vault];
    let settings = credential.rotator.settings();
    println!("{}", settings.least_privilege(&credential.id));
    let verification = settings.verification();
    println!(
        "# What `verify` proves before the new credential is promoted: {}.\n\
         # What it cannot prove: {}.\n\
         # Evidence of use, for `retire_when = \"unused\"`: {}.\n",
        verification.proves,
        verification.cannot,
        settings
            .usage_evidence()
            .unwrap_or("none (retirement waits out `grace`)")
    );
    let scope = PolicyScope {
        credential: &credential.id,
        vault: &credential.vault,
        path: &credential.vault_path,
    };
    print!("{}", vault.settings().least_privilege(&scope));
    Ok(Exit::Ok)
}
