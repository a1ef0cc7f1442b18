//! Limits that hold across every replica sharing the store: claims that respect a global and a
//! per-provider concurrency (counted from live leases, under one lock so that two replicas
//! cannot both take the last slot), and per-provider token buckets for the rate of provider
//! calls.

use super::BeginWrite;
use std::collections::HashMap;

use super::{AuditEntry, Backend, Pool, RunRow, Store, StoreError, audit, sql};

/// What a claim may take, beyond its own free slots.
#[derive(Debug, Clone, Default)]
pub struct ClaimLimits {
    /// Runs held by all replicas together.
    pub global: Option<i64>,
    /// Runs held per provider kind, by all replicas together.
    pub per_provider: HashMap<String, i64>,
}

impl ClaimLimits {
    pub fn is_empty(&self) -> bool {
        self.global.is_none() && self.per_provider.is_empty()
    }
}

/// Serialises limited claims across PostgreSQL replicas (an arbitrary, fixed key).
const CLAIM_LOCK: i64 = 0x726f_746f_725f_6c6d;

/// Ready runs looked at per limited claim: enough to find work of a provider with free slots
/// behind runs of one that has none.
const SCAN: i64 = 1000;

impl Store {
    /// Claims up to `limit` ready runs for `worker` without exceeding `limits`.
    pub async fn claim_within(
        &self,
        worker: &str,
        now: i64,
        lease_until: i64,
        limit: i64,
        limits: &ClaimLimits,
    ) -> Result<Vec<RunRow>, StoreError> {
        if limits.is_empty() {
            return self.claim(worker, now, lease_until, limit).await;
        }
        let postgres = self.backend() == Backend::Postgres;
        with_pool!(self, p => {
            let mut tx = p.begin_write().await?;
            if postgres {
                sqlx::query(sql::ADVISORY_LOCK)
                    .bind(CLAIM_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let held: Vec<(String, i64)> = sqlx::query_as(sql::IN_FLIGHT_BY_PROVIDER)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
            let mut held: HashMap<String, i64> = held.into_iter().collect();
            let mut total: i64 = held.values().sum();
            let ready: Vec<(String, String)> = sqlx::query_as(sql::READY_WITH_PROVIDER)
                .bind(now)
                .bind(SCAN)
                .fetch_all(&mut *tx)
                .await?;
            let mut chosen = Vec::new();
            for (id, provider) in ready {
                if chosen.len() as i64 >= limit || limits.global.is_some_and(|g| total >= g) {
                    break;
                }
                let mine = held.entry(provider.clone()).or_default();
                if limits.per_provider.get(&provider).is_some_and(|&cap| *mine >= cap) {
                    continue;
                }
                *mine += 1;
                total += 1;
                chosen.push(id);
            }
            let mut claimed = Vec::with_capacity(chosen.len());
            for id in &chosen {
                let run: Option<RunRow> = sqlx::query_as(sql::CLAIM_WITHIN,
                )
                .bind(worker)
                .bind(lease_until)
                .bind(id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                claimed.extend(run);
            }
            let entries: Vec<AuditEntry> = claimed.iter().map(|run| super::claim_entry(worker, run)).collect();
            append_audits!(&self.key, tx, now, &entries);
            tx.commit().await?;
            Ok(claimed)
        })
    }

    /// Takes one token of `provider`'s bucket (refilled at `per_second` up to `burst`). `None`
    /// when taken; otherwise how long (ms) until one is there.
    pub async fn take_token(
        &self,
        provider: &str,
        per_second: f64,
        burst: f64,
        now: i64,
    ) -> Result<Option<i64>, StoreError> {
        let take = match self.backend() {
            Backend::Sqlite => sql::TAKE_TOKEN_SQLITE,
            Backend::Postgres => sql::TAKE_TOKEN_POSTGRES,
        };
        with_pool!(self, p => {
            sqlx::query(sql::UPSERT_BUCKET,
            )
            .bind(provider)
            .bind(burst)
            .bind(now)
            .execute(p)
            .await?;
            let taken: Option<(f64,)> = sqlx::query_as(take)
                .bind(provider)
                .bind(per_second)
                .bind(burst)
                .bind(now)
                .fetch_optional(p)
                .await?;
            if taken.is_some() {
                return Ok(None);
            }
            let (tokens, updated_at): (f64, i64) = sqlx::query_as(sql::BUCKET,
            )
            .bind(provider)
            .fetch_one(p)
            .await?;
            let refilled = (tokens + (now - updated_at).max(0) as f64 * per_second / 1000.0).min(burst);
            Ok(Some((((1.0 - refilled) / per_second * 1000.0).ceil() as i64).max(1)))
        })
    }
}
