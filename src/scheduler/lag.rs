//! How late the scheduler claims what is due, as a histogram the metrics endpoint reads.

use std::sync::atomic::{AtomicU64, Ordering};

/// Scheduler lag (due time to claim) of this process, as a histogram.
#[derive(Debug, Default)]
pub struct Lag {
    pub(crate) buckets: [AtomicU64; LAG_BUCKETS.len()],
    pub(crate) count: AtomicU64,
    pub(crate) sum_ms: AtomicU64,
}

pub(crate) const LAG_BUCKETS: [f64; 10] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 120.0];

impl Lag {
    pub fn record(&self, lag_ms: i64) {
        let lag_ms = lag_ms.max(0) as u64;
        let seconds = lag_ms as f64 / 1000.0;
        for (bucket, le) in self.buckets.iter().zip(LAG_BUCKETS) {
            if seconds <= le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(lag_ms, Ordering::Relaxed);
    }
}
