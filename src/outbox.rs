//! Delivering the outbox: the one loop that sends alerts to sinks and events to consumer hooks.
//!
//! Each channel says how to send one row and what follows its outcome; everything else is
//! the same for both and written once here: which rows are due (`Store::due_messages`, in
//! order per target), the claim that keeps two replicas from sending one row, the record of
//! each attempt, and the backoff of a row that failed (`policy::backoff::OUTBOX`).

use std::future::Future;
use std::time::Duration;

use crate::store::outbox::{Channel as Table, DROPPED, Message};
use crate::store::{Store, StoreError};

/// What one attempt came to, for the outbox and `status`: `HTTP 200`, `exit 0` ...
pub type Outcome = String;

/// A failed attempt: its outcome and what to do about it.
#[derive(Debug)]
pub struct Failed {
    pub outcome: Outcome,
    pub error: String,
}

/// One attempt at one row.
#[derive(Debug)]
pub enum Attempt {
    /// The target took it.
    Delivered(Outcome),
    /// It will never be delivered, and waiting would hold up the rows behind it: why.
    Dropped(String),
    /// Try again after the backoff.
    Failed(Failed),
}

/// How one kind of row is sent, and what follows.
pub trait Channel: Sync {
    /// Which rows of the outbox are this channel's.
    const TABLE: Table;

    /// How long one attempt at `target` may take; the claim outlasts it, so a process that
    /// died mid-attempt holds the row no longer than that.
    fn attempt_timeout(&self, target: &str) -> Duration;

    /// Sends one row; `now` is the clock's reading for what the row's body carries.
    fn send(&self, message: &Message, now: i64) -> impl Future<Output = Attempt> + Send;

    /// Whether delivering `message` may end its run's grace (`retire_after = "notified"`).
    fn wakes_run(&self, _message: &Message) -> bool {
        false
    }

    /// What follows an attempt, once it is recorded: `failures` counts the row's failures so
    /// far, this attempt included. Nothing, unless the channel says.
    fn after(
        &self,
        store: &Store,
        message: &Message,
        attempt: &Attempt,
        failures: i64,
        now: i64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send {
        let _ = (store, message, attempt, failures, now);
        async { Ok(()) }
    }
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass {
    /// Delivered, or dropped.
    pub delivered: usize,
    pub failed: usize,
    /// Runs made ready because their hooks were all notified.
    pub woken: usize,
}

/// Rows read at a time.
const BATCH: i64 = 100;

/// Rounds of one pass: each may free the next row to a target that just took the one before.
const MAX_BATCHES: usize = 8;

/// Sends every row of `channel` that is due (of one credential with `only`). A row that fails
/// is tried again after the backoff; a row another process claimed is left to it.
pub async fn deliver_due<C: Channel>(
    store: &Store,
    channel: &C,
    now: &(dyn Fn() -> i64 + Sync),
    only: Option<&str>,
) -> Result<Pass, StoreError> {
    let mut pass = Pass::default();
    for _ in 0..MAX_BATCHES {
        let batch = store.due_messages(C::TABLE, now(), BATCH, only).await?;
        let before = pass.delivered;
        for message in batch {
            deliver_one(store, channel, now, &message, &mut pass).await?;
        }
        if pass.delivered == before {
            break;
        }
    }
    Ok(pass)
}

async fn deliver_one<C: Channel>(
    store: &Store,
    channel: &C,
    now: &(dyn Fn() -> i64 + Sync),
    message: &Message,
    pass: &mut Pass,
) -> Result<(), StoreError> {
    const CLAIM_SLACK: Duration = Duration::from_secs(5);
    let claimed_until =
        now() + (channel.attempt_timeout(&message.target) + CLAIM_SLACK).as_millis() as i64;
    if !store.claim_message(message, claimed_until).await? {
        return Ok(());
    }
    let attempt = channel.send(message, now()).await;
    let mut failures = message.failures;
    match &attempt {
        Attempt::Delivered(outcome) => {
            let wake = channel.wakes_run(message);
            if store
                .message_delivered(message, outcome, wake, now())
                .await?
            {
                pass.woken += 1;
            }
            pass.delivered += 1;
        }
        Attempt::Dropped(why) => {
            tracing::warn!(channel = %message.channel, target = %message.target, credential = %message.credential_id, event = %message.event, why = %why, "outbox row dropped");
            let wake = channel.wakes_run(message);
            if store
                .message_delivered(message, DROPPED, wake, now())
                .await?
            {
                pass.woken += 1;
            }
            pass.delivered += 1;
        }
        Attempt::Failed(failed) => {
            failures += 1;
            let backoff = crate::policy::backoff::OUTBOX.delay_ms(failures);
            tracing::warn!(channel = %message.channel, target = %message.target, credential = %message.credential_id, event = %message.event, outcome = %failed.outcome, failures, retry_in_ms = backoff, error = %failed.error, "delivery failed; will retry");
            store
                .message_failed(message, &failed.outcome, &failed.error, now() + backoff)
                .await?;
            pass.failed += 1;
        }
    }
    channel
        .after(store, message, &attempt, failures, now())
        .await
}
