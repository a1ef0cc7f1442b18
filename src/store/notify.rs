//! Notifications to consumers in the store: a durable outbox with one row per run, event and
//! hook. Queueing is idempotent (the unique key), so a step repeated after a crash never
//! notifies twice; a delivery is claimed by moving its due time past the attempt (a
//! compare-and-swap), so two replicas never send the same row at once.

use super::BeginWrite;
use super::sql;
use super::{Pool, Store, StoreError};

/// One notification to send.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    pub id: i64,
    pub run_id: String,
    pub credential_id: String,
    pub hook: String,
    /// `promoted` or `retired`.
    pub event: String,
    /// The event as JSON (versions and fingerprints, never a secret).
    pub payload: String,
    pub attempts: i64,
    pub failures: i64,
    pub next_attempt_at: i64,
}

/// What the last notification of one credential to one hook came to, for `status`.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct HookState {
    pub credential_id: String,
    pub hook: String,
    pub event: String,
    pub run_id: String,
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub next_attempt_at: i64,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    /// Notifications to this hook still waiting (this one included, if it is).
    pub undelivered: i64,
}

/// Attempts by outcome, per credential and hook: the `rotor_notifications_total` counter.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HookCounts {
    pub credential_id: String,
    pub hook: String,
    pub succeeded: i64,
    pub failed: i64,
}

/// The outcome recorded for a delivery given up because its hook left the config.
pub const DROPPED: &str = "dropped";
/// The outcome recorded for a delivery given up because a newer run's event replaced it.
pub const SUPERSEDED: &str = "superseded";

impl Store {
    /// Queues `event` of a run for each hook; a row already queued is left as it is. What an
    /// earlier run queued and could not deliver yet is superseded: a consumer must not hear of
    /// a version that a newer one already replaced (nor roll its pods twice).
    pub async fn queue_notifications(
        &self,
        run_id: &str,
        credential_id: &str,
        event: &str,
        hooks: &[String],
        payload: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for hook in hooks {
                sqlx::query(sql::SUPERSEDE_NOTIFICATIONS,
                )
                .bind(credential_id)
                .bind(hook)
                .bind(run_id)
                .bind(now)
                .bind(SUPERSEDED)
                .execute(&mut *tx)
                .await?;
                sqlx::query(sql::QUEUE_NOTIFICATION,
                )
                .bind(run_id)
                .bind(credential_id)
                .bind(hook)
                .bind(event)
                .bind(payload)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// Notifications due now, oldest first, each only when no older one of the same credential
    /// to the same hook is still waiting: a hook hears of a credential's changes in order.
    pub async fn due_notifications(
        &self,
        now: i64,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::DUE_NOTIFICATIONS,
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?)
        })
    }

    /// Claims a due notification for one attempt until `until`; false when another process
    /// claimed (or delivered) it first.
    pub async fn claim_notification(
        &self,
        n: &Notification,
        until: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let done = sqlx::query(sql::CLAIM_NOTIFICATION,
            )
            .bind(n.id)
            .bind(n.next_attempt_at)
            .bind(until)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Records a delivered notification. With `wake`, a run waiting out its grace for its
    /// hooks (`retire_after = "notified"`) is made ready when this was its last one.
    pub async fn notification_delivered(
        &self,
        n: &Notification,
        outcome: &str,
        wake: bool,
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(sql::NOTIFICATION_DELIVERED,
            )
            .bind(n.id)
            .bind(now)
            .bind(outcome)
            .execute(&mut *tx)
            .await?;
            let mut woken = false;
            if wake && n.event == "promoted" {
                let done = sqlx::query(sql::WAKE_NOTIFIED_RUN,
                )
                .bind(&n.run_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                woken = done.rows_affected() == 1;
            }
            tx.commit().await?;
            Ok(woken)
        })
    }

    /// Records a failed attempt; the notification is tried again at `next_attempt_at`.
    pub async fn notification_failed(
        &self,
        n: &Notification,
        outcome: &str,
        error: &str,
        next_attempt_at: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            sqlx::query(sql::NOTIFICATION_FAILED,
            )
            .bind(n.id)
            .bind(next_attempt_at)
            .bind(outcome)
            .bind(error)
            .execute(pool)
            .await?;
            Ok(())
        })
    }

    /// Whether every `event` notification of a run has been delivered (true when it has none).
    pub async fn notifications_settled(
        &self,
        run_id: &str,
        event: &str,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let waiting: i64 = sqlx::query_scalar(sql::NOTIFICATIONS_SETTLED,
            )
            .bind(run_id)
            .bind(event)
            .fetch_one(pool)
            .await?;
            Ok(waiting == 0)
        })
    }

    /// Makes a run waiting out its grace ready now, if it still waits (see
    /// `notification_delivered`: the engine calls this after it saved the wait, so one of the
    /// two always sees the other's write).
    pub async fn wake_promoted_run(&self, run_id: &str, now: i64) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let done = sqlx::query(sql::WAKE_PROMOTED_RUN,
            )
            .bind(run_id)
            .bind(now)
            .execute(pool)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    /// Whether a credential has a notification that failed and is still waiting.
    pub async fn notifications_failing(&self, credential_id: &str) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let failing: i64 = sqlx::query_scalar(sql::NOTIFICATIONS_FAILING,
            )
            .bind(credential_id)
            .fetch_one(pool)
            .await?;
            Ok(failing > 0)
        })
    }

    /// The latest notification of each credential to each hook, with how many wait.
    pub async fn hook_states(&self) -> Result<Vec<HookState>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::HOOK_STATES,
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// Attempts per credential, hook and outcome since the store began.
    pub async fn hook_counts(&self) -> Result<Vec<HookCounts>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::HOOK_COUNTS,
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// When the next undelivered notification is due, if any.
    pub async fn next_notification_at(&self) -> Result<Option<i64>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_scalar(sql::NEXT_NOTIFICATION_AT,
            )
            .fetch_one(pool)
            .await?)
        })
    }
}
