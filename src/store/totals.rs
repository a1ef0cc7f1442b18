//! How the runs that came to rest ended, per credential and state, with the completed runs'
//! durations as histogram buckets: kept by triggers on `runs` (migration 0013) in the
//! transaction that ends each run, so reading them costs one row per credential and state
//! however many runs the history holds.

use super::sql;
use super::{Pool, Store, StoreError};

/// The upper bounds (seconds) of the duration buckets, as the migration's `le_N` columns.
pub const DURATION_BUCKETS: [u64; 10] = [1, 10, 60, 300, 1800, 3600, 21600, 86400, 259200, 604800];

/// One credential's runs in one state at rest.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RunTotals {
    pub credential_id: String,
    /// `completed`, `rolled_back` or `stuck`.
    pub state: String,
    pub runs: i64,
    /// The completed runs with a finish time: the duration histogram's count.
    pub timed: i64,
    pub duration_ms: i64,
    le_1: i64,
    le_10: i64,
    le_60: i64,
    le_300: i64,
    le_1800: i64,
    le_3600: i64,
    le_21600: i64,
    le_86400: i64,
    le_259200: i64,
    le_604800: i64,
}

impl RunTotals {
    /// (upper bound in seconds, runs that took at most that long), cumulative, in the order of
    /// `DURATION_BUCKETS`.
    pub fn buckets(&self) -> [(u64, i64); 10] {
        let counts = [
            self.le_1,
            self.le_10,
            self.le_60,
            self.le_300,
            self.le_1800,
            self.le_3600,
            self.le_21600,
            self.le_86400,
            self.le_259200,
            self.le_604800,
        ];
        std::array::from_fn(|i| (DURATION_BUCKETS[i], counts[i]))
    }
}

impl Store {
    /// Every credential's totals, one row per state at rest it has seen.
    pub async fn run_totals(&self) -> Result<Vec<RunTotals>, StoreError> {
        with_pool!(self, pool => {
            Ok(sqlx::query_as(sql::RUN_TOTALS).fetch_all(pool).await?)
        })
    }

    /// `run_totals` of the credentials with ids in (`after`, `through`]: those of one page of
    /// `Store::credential_pages`, so that a pass over a million credentials holds a page's.
    pub async fn run_totals_in(
        &self,
        after: &str,
        through: &str,
    ) -> Result<Vec<RunTotals>, StoreError> {
        self.of_page(sql::RUN_TOTALS_IN, after, through).await
    }
}
