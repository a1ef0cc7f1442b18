//! The outbox: one table of what rotor tells the outside world, alerts to sinks and change
//! events to consumer hooks, each row retried until its target takes it. A row is claimed for
//! one attempt by moving its due time past the attempt (a compare-and-swap), so two replicas
//! never send the same row at once; a row waits behind older undelivered rows of the same
//! channel, credential, target and condition, so a target hears of them in order.

use super::BeginWrite;
use super::sql;
use super::{Pool, Store, StoreError};

/// Which kind of row: what rotor tells, and to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Alerts to sinks (`store::alerts`).
    Alert,
    /// Change events to consumer hooks (`store::notify`).
    Notify,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Alert => "alert",
            Channel::Notify => "notify",
        }
    }
}

/// The outcome recorded for a row given up without an attempt (its target left the config,
/// or its payload cannot be read).
pub const DROPPED: &str = "dropped";

/// One row to deliver.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Message {
    pub id: i64,
    /// `alert` or `notify`.
    pub channel: String,
    pub credential_id: String,
    /// The alert sink or the notify hook.
    pub target: String,
    /// The alert's condition; empty for notifications.
    pub condition: String,
    /// The run a notification tells of; empty for alerts.
    pub run_id: String,
    /// `trigger` or `resolve` (alerts), `promoted` or `retired` (notifications).
    pub event: String,
    /// JSON that names versions and fingerprints, never a secret.
    pub payload: String,
    pub attempts: i64,
    pub failures: i64,
    pub next_attempt_at: i64,
}

impl Store {
    /// Rows of `channel` due now (of one credential with `only`), oldest first, each only when
    /// no older row to the same target about the same thing still waits.
    pub async fn due_messages(
        &self,
        channel: Channel,
        now: i64,
        limit: i64,
        only: Option<&str>,
    ) -> Result<Vec<Message>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::DUE_MESSAGES)
                .bind(channel.as_str())
                .bind(now)
                .bind(limit)
                .bind(only.unwrap_or(""))
                .fetch_all(pool)
                .await?)
        })
    }

    /// Claims a due row for one attempt until `until`; false when another process claimed
    /// (or delivered) it first.
    pub async fn claim_message(&self, message: &Message, until: i64) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let done = sqlx::query(sql::CLAIM_MESSAGE)
                .bind(message.id)
                .bind(message.next_attempt_at)
                .bind(until)
                .execute(pool)
                .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Records a delivered (or dropped) row. With `wake`, a run waiting out its grace for its
    /// hooks (`retire_after = "notified"`) is made ready when this was its last `promoted`
    /// notification; returns whether it was.
    pub async fn message_delivered(
        &self,
        message: &Message,
        outcome: &str,
        wake: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(sql::MESSAGE_DELIVERED)
                .bind(message.id)
                .bind(now)
                .bind(outcome)
                .execute(&mut *tx)
                .await?;
            let mut woken = false;
            if wake && message.channel == Channel::Notify.as_str() && message.event == "promoted" {
                let done = sqlx::query(sql::WAKE_NOTIFIED_RUN)
                    .bind(&message.run_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                woken = done.rows_affected() == 1;
            }
            tx.commit().await?;
            Ok(woken)
        })
    }

    /// Records a failed attempt; the row is tried again at `next_attempt_at`.
    pub async fn message_failed(
        &self,
        message: &Message,
        outcome: &str,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(sql::MESSAGE_FAILED)
                .bind(message.id)
                .bind(next_attempt_at)
                .bind(outcome)
                .bind(error)
                .execute(pool)
                .await?;
            Ok(())
        })
    }

    /// When the next undelivered row of `channel` is due, if any.
    pub async fn next_message_at(&self, channel: Channel) -> Result<Option<i64>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar(sql::NEXT_MESSAGE_AT)
                .bind(channel.as_str())
                .fetch_one(pool)
                .await?)
        })
    }
}
