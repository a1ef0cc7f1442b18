//! `rotor confirm ID [--expires-at TIME]`: a person rotated a `manual` credential (see
//! `app::confirm`).

use super::{CliError, CliResult, Context, Exit, actor};
use crate::app::confirm::{self, ConfirmError, Confirmation};
use crate::clock::rfc3339;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Credential id (one with a `manual` rotator).
    pub id: String,
    /// When the new credential expires (RFC 3339), if its provider set an expiry.
    #[arg(long)]
    pub expires_at: Option<String>,
    /// Why, for the audit log (a ticket, a change number).
    #[arg(long)]
    pub note: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> CliResult {
    let config = ctx.load_config()?;
    let id = ctx.credential(&config, &args.id)?.id.clone();
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|e| {
                    CliError::usage(format!(
                        "--expires-at {t:?} is not an RFC 3339 time such as 2027-03-01T00:00:00Z: {e}"
                    ))
                })
        })
        .transpose()?;
    let store = ctx.open_store(&config).await?;
    let actor = actor();
    let confirmation = Confirmation {
        id: &id,
        expires_at,
        note: args.note.as_deref(),
        actor: &actor,
    };
    let at = confirm::confirm(&store, config, store.clock().as_ref(), confirmation)
        .await
        .map_err(|e| match e {
            ConfirmError::NotByHand { .. } | ConfirmError::ExpiryPast => CliError::usage(e),
            ConfirmError::Store(e) => CliError::Store(e),
            ConfirmError::Engine(e) => CliError::Engine(e),
        })?;
    store.close().await;
    println!(
        "confirmed {id}: rotated by hand at {}{}",
        rfc3339(at),
        expires_at
            .map(|at| format!(", expires at {}", rfc3339(at)))
            .unwrap_or_default()
    );
    Ok(Exit::Ok)
}
