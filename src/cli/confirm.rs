//! `rotor confirm ID [--expires-at TIME]`: a person rotated a `manual` credential. Its age
//! starts again (or its recorded expiry is replaced), its reminders are resolved, and the audit
//! log keeps who confirmed it and when.

use super::{CliError, CliResult, Context, Exit, actor};
use crate::clock::{Clock, SystemClock, rfc3339};
use crate::engine::Runtime;
use crate::scheduler::daemon;
use crate::store::AuditEntry;

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
    let credential = ctx.credential(&config, &args.id)?.clone();
    if credential.by_hand().is_none() {
        return Err(CliError::Usage(anyhow::anyhow!(
            "`{}` is rotated by rotor ({}); `rotor confirm` is for credentials with a `manual` rotator: use `rotor rotate {}`",
            args.id,
            credential.provider(),
            args.id
        )));
    }
    let expires_at = args
        .expires_at
        .as_deref()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|d| d.timestamp_millis())
                .map_err(|e| {
                    CliError::Usage(anyhow::anyhow!(
                            "--expires-at {t:?} is not an RFC 3339 time such as 2027-03-01T00:00:00Z: {e}"
                        ),
                    )
                })
        })
        .transpose()?;
    let clock = SystemClock;
    let now = clock.now_ms();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(CliError::Usage(anyhow::anyhow!(
            "--expires-at is in the past: the new credential would be overdue at once"
        )));
    }
    let store = ctx.open_store(&config).await?;
    daemon::reconcile(&store, &config, &clock).await?;
    let who = actor();
    let mut detail = format!("rotated by hand, confirmed by {who}");
    if let Some(at) = expires_at {
        detail.push_str(&format!("; expires at {}", rfc3339(at)));
    }
    if let Some(note) = &args.note {
        detail.push_str(&format!("; note: {note}"));
    }
    let audit = AuditEntry::new(&who, "confirm")
        .credential(&args.id)
        .detail(detail);
    store
        .confirm_manual(&args.id, expires_at, &audit, now)
        .await?;
    let runtime = Runtime::build(config).await?;
    runtime
        .alerter
        .resolve(
            &store,
            &args.id,
            crate::alert::Condition::RESOLVED_BY_ROTATION,
            &credential.alerts,
            now,
        )
        .await?;
    store.close().await;
    println!(
        "confirmed {}: rotated by hand at {}{}",
        args.id,
        rfc3339(now),
        expires_at
            .map(|at| format!(", expires at {}", rfc3339(at)))
            .unwrap_or_default()
    );
    Ok(Exit::Ok)
}
