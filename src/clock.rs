//! Time as the engine and scheduler see it: injected, so tests move it instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + test_offset_ms()
    }
}

/// The test seam of the binary's clock: with `ROTOR_TEST_CLOCK_OFFSET_MS=N` the process lives
/// N ms in the future, so that a test moves past a grace period, a lease or a backoff by
/// starting its next process later on the clock instead of sleeping. Compiled only with the
/// `failpoints` feature, never in a release build.
#[cfg(feature = "failpoints")]
fn test_offset_ms() -> i64 {
    use std::sync::OnceLock;
    static OFFSET: OnceLock<i64> = OnceLock::new();
    *OFFSET.get_or_init(|| {
        std::env::var("ROTOR_TEST_CLOCK_OFFSET_MS")
            .ok()
            .map(|v| {
                v.parse().unwrap_or_else(|_| {
                    panic!("ROTOR_TEST_CLOCK_OFFSET_MS={v:?} is not a whole number of milliseconds")
                })
            })
            .unwrap_or(0)
    })
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn test_offset_ms() -> i64 {
    0
}

/// A clock that only moves when told to.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub fn to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// RFC 3339 UTC with second precision, the format of every time rotor prints.
pub fn rfc3339(ms: i64) -> String {
    to_datetime(ms).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}
