//! Confirm (`rotor confirm ID`): a person rotated a `manual` credential. Its age starts again
//! (or its recorded expiry is replaced), its reminders are resolved, and the audit log keeps
//! who confirmed it and when.

use thiserror::Error;

use crate::alert::Condition;
use crate::clock::{Clock, rfc3339};
use crate::config::Config;
use crate::engine::{EngineError, Runtime};
use crate::scheduler::daemon;
use crate::store::{AuditEntry, Store, StoreError};

#[derive(Debug, Error)]
pub enum ConfirmError {
    #[error(
        "`{id}` is rotated by rotor ({provider}); `rotor confirm` is for credentials with a `manual` rotator: use `rotor rotate {id}`"
    )]
    NotByHand { id: String, provider: String },
    #[error("--expires-at is in the past: the new credential would be overdue at once")]
    ExpiryPast,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// What a person says they did.
pub struct Confirmation<'a> {
    pub id: &'a str,
    /// When the new credential expires (ms), if its provider set an expiry.
    pub expires_at: Option<i64>,
    /// Why, for the audit log (a ticket, a change number).
    pub note: Option<&'a str>,
    pub actor: &'a str,
}

/// Records the confirmation; returns when it was recorded (ms).
pub async fn confirm(
    store: &Store,
    config: Config,
    clock: &dyn Clock,
    confirmation: Confirmation<'_>,
) -> Result<i64, ConfirmError> {
    let Confirmation {
        id,
        expires_at,
        note,
        actor,
    } = confirmation;
    let Some(credential) = config.credential(id) else {
        return Err(StoreError::UnknownCredential(id.to_owned()).into());
    };
    if credential.by_hand().is_none() {
        return Err(ConfirmError::NotByHand {
            id: id.to_owned(),
            provider: credential.provider().to_owned(),
        });
    }
    let routes = credential.alerts.clone();
    let now = clock.now_ms();
    if expires_at.is_some_and(|at| at <= now) {
        return Err(ConfirmError::ExpiryPast);
    }
    daemon::reconcile(store, &config, clock).await?;
    let mut detail = format!("rotated by hand, confirmed by {actor}");
    if let Some(at) = expires_at {
        detail.push_str(&format!("; expires at {}", rfc3339(at)));
    }
    if let Some(note) = note {
        detail.push_str(&format!("; note: {note}"));
    }
    let audit = AuditEntry::new(actor, "confirm")
        .credential(id)
        .detail(detail);
    store.confirm_manual(id, expires_at, &audit, now).await?;
    let runtime = Runtime::build(config).await?;
    runtime
        .alerter
        .resolve(store, id, Condition::RESOLVED_BY_ROTATION, &routes, now)
        .await?;
    Ok(now)
}
