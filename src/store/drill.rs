//! Drills in the store: each drill with its report, each credential's last drill, and the
//! alert deliveries a drill looks at to tell whether its alerts reached the sinks.

use super::BeginWrite;
use super::sql;
use super::{AuditEntry, Pool, Store, StoreError, audit};

/// One delivery of an alert to a sink, as a drill reports it.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct SinkDelivery {
    pub sink: String,
    pub condition: String,
    /// `trigger` or `resolve`.
    pub event: String,
    pub attempts: i64,
    pub delivered_at: Option<i64>,
    pub last_error: Option<String>,
}

/// A drill as recorded.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DrillRow {
    pub id: String,
    pub actor: String,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub options: String,
    pub outcome: Option<String>,
    pub report: Option<String>,
}

impl Store {
    pub async fn start_drill(
        &self,
        id: &str,
        actor: &str,
        options: &str,
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(sql::START_DRILL)
                .bind(id)
                .bind(actor)
                .bind(now)
                .bind(options)
                .execute(&mut *tx)
                .await?;
            append_audit!(&self.key, tx, now, &AuditEntry::new(actor, "drill_started").detail(format!("{id}: {options}")));
            tx.commit().await?;
            Ok(())
        })
    }

    /// Records a drill's end and report, and each drilled credential's outcome. Only a drill
    /// that passed moves `last_drill_at` (what `[drill] every` counts from).
    pub async fn finish_drill(
        &self,
        id: &str,
        actor: &str,
        outcome: &str,
        report: &str,
        credentials: &[(String, bool)],
        now: i64,
    ) -> Result<(), StoreError> {
        with_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(sql::FINISH_DRILL)
                .bind(id)
                .bind(now)
                .bind(outcome)
                .bind(report)
                .execute(&mut *tx)
                .await?;
            for (credential, passed) in credentials {
                sqlx::query(sql::RECORD_DRILL_OUTCOME,
                )
                .bind(credential)
                .bind(if *passed { "passed" } else { "failed" })
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            append_audit!(&self.key, tx, now, &AuditEntry::new(actor, "drill_finished").detail(format!("{id}: {outcome}")));
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn last_drill(&self) -> Result<Option<DrillRow>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::LAST_DRILL)
                .fetch_optional(pool)
                .await?)
        })
    }

    /// The alert deliveries queued for a credential since `since` (ms).
    pub async fn deliveries_since(
        &self,
        credential_id: &str,
        since: i64,
    ) -> Result<Vec<SinkDelivery>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::DELIVERIES_SINCE,
            )
            .bind(credential_id)
            .bind(since)
            .fetch_all(pool)
            .await?)
        })
    }
}
