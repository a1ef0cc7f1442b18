//! Alerts in the store: which conditions are raised (deduplicated per credential and
//! condition, resolved by the next success), each raise and resolve queued in the outbox
//! (`store::outbox`) once per sink in the same transaction. An alert raised just before a
//! crash is delivered after the restart.

use super::BeginWrite;
use super::sql;
use super::{Pool, Store, StoreError};

/// Queues one delivery inside transaction `$tx` (a macro: the same text for both backends).
macro_rules! queue {
    ($tx:expr, $sink:expr, $credential:expr, $condition:expr, $event:expr, $payload:expr, $now:expr) => {
        sqlx::query(sql::QUEUE_ALERT)
            .bind($sink)
            .bind($credential)
            .bind($condition)
            .bind($event)
            .bind($payload)
            .bind($now)
            .execute(&mut *$tx)
            .await?
    };
}

/// A condition that is raised now.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ActiveAlert {
    pub credential_id: String,
    pub condition: String,
    pub raised_at: i64,
    pub payload: String,
}

impl Store {
    /// Raises `condition` for a credential and queues a delivery to each sink, unless it is
    /// already raised (then nothing is queued: one page per problem, not per attempt).
    /// Returns whether it was newly raised.
    pub async fn raise_alert(
        &self,
        credential_id: &str,
        condition: &str,
        payload: &str,
        sinks: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let active: Option<i64> = sqlx::query_scalar(sql::ALERT_ACTIVE,
            )
            .bind(credential_id)
            .bind(condition)
            .fetch_optional(&mut *tx)
            .await?;
            if active == Some(1) {
                tx.commit().await?;
                return Ok(false);
            }
            sqlx::query(sql::RAISE_ALERT,
            )
            .bind(credential_id)
            .bind(condition)
            .bind(now)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
            for sink in sinks {
                queue!(tx, sink, credential_id, condition, "trigger", payload, now);
            }
            tx.commit().await?;
            Ok(true)
        })
    }

    /// Resolves those of `conditions` that are raised for a credential, queueing a `resolve`
    /// delivery to each sink. Returns the conditions resolved.
    pub async fn resolve_alerts(
        &self,
        credential_id: &str,
        conditions: &[&str],
        sinks: &[String],
        now: i64,
    ) -> Result<Vec<String>, StoreError> {
        // Nearly every successful rotation has nothing to resolve: one read, no transaction.
        let any = match &self.reads {
            Some(reads) => reads.any_active_alert(credential_id)?,
            None => with_pool!(self, pool => sqlx::query_scalar::<_, i64>(sql::ACTIVE_ALERT_COUNT,
            )
            .bind(credential_id)
            .fetch_one(pool)
            .await? > 0),
        };
        if !any {
            return Ok(Vec::new());
        }
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let raised: Vec<(String, String)> = sqlx::query_as(sql::CREDENTIAL_ACTIVE_ALERTS,
            )
            .bind(credential_id)
            .fetch_all(&mut *tx)
            .await?;
            let mut resolved = Vec::new();
            for (cond, payload) in raised {
                if !conditions.contains(&cond.as_str()) {
                    continue;
                }
                sqlx::query(sql::RESOLVE_ALERT,
                )
                .bind(credential_id)
                .bind(&cond)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                for sink in sinks {
                    queue!(tx, sink, credential_id, &cond, "resolve", &payload, now);
                }
                resolved.push(cond);
            }
            tx.commit().await?;
            Ok(resolved)
        })
    }

    /// The conditions raised now, for sinks that must be reminded (Alertmanager) and status.
    pub async fn active_alerts(&self) -> Result<Vec<ActiveAlert>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::ACTIVE_ALERTS,
            )
            .fetch_all(pool)
            .await?)
        })
    }

    /// `active_alerts` of the credentials with ids in (`after`, `through`] (`run_totals_in`).
    pub async fn active_alerts_in(
        &self,
        after: &str,
        through: &str,
    ) -> Result<Vec<ActiveAlert>, StoreError> {
        self.of_page(sql::ACTIVE_ALERTS_IN, after, through).await
    }
}
