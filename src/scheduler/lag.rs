//! How late the scheduler claims what is due, as a histogram the metrics endpoint reads.

use prometheus_client::metrics::histogram::Histogram;

/// Scheduler lag (due time to claim) of this process, in seconds.
#[derive(Debug, Clone)]
pub struct Lag(pub(crate) Histogram);

const LAG_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0, 120.0];

impl Default for Lag {
    fn default() -> Self {
        Lag(Histogram::new(LAG_BUCKETS))
    }
}

impl Lag {
    pub fn record(&self, lag_ms: i64) {
        self.0.observe(lag_ms.max(0) as f64 / 1000.0);
    }
}
