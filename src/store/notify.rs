//! Notifications to consumers in the store: rows of the outbox (`store::outbox`), one per
//! run, event and hook. Queueing is idempotent (a unique index), so a step repeated after a
//! crash never notifies twice; a newer run's event supersedes what an older one could not
//! deliver yet.

use super::BeginWrite;
use super::sql;
use super::{Pool, Store, StoreError};

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
    /// `message_delivered`: the engine calls this after it saved the wait, so one of the
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

    /// `hook_counts` of the credentials with ids in (`after`, `through`] (`run_totals_in`).
    pub async fn hook_counts_in(
        &self,
        after: &str,
        through: &str,
    ) -> Result<Vec<HookCounts>, StoreError> {
        self.of_page(sql::HOOK_COUNTS_IN, after, through).await
    }
}
