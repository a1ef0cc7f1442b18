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
        host_ms() + test_offset_ms()
    }
}

/// This host's clock, which may be wrong (see `StoreClock`).
fn host_ms() -> i64 {
    Utc::now().timestamp_millis() + test_host_skew_ms()
}

/// The store's time: this host's clock corrected by its measured difference from the
/// database's. Replicas sharing a PostgreSQL store time their leases, due times and grace
/// periods by one clock, the database's; a replica whose own clock runs ahead would otherwise
/// take over runs whose leases have not run out, and act beside the worker that holds them.
#[derive(Debug, Clone, Default)]
pub struct StoreClock {
    /// The database's clock minus this host's, in ms (0 for a SQLite store: one host).
    offset_ms: Arc<AtomicI64>,
}

impl StoreClock {
    /// Records a reading of the database's clock, `db_ms`, taken between `sent_ms` and
    /// `received_ms` on this host (`StoreClock::host_now`): the reading is taken to be from
    /// the middle of the round trip. Returns the offset.
    pub fn observe(&self, sent_ms: i64, db_ms: i64, received_ms: i64) -> i64 {
        let offset = db_ms - (sent_ms + received_ms) / 2;
        self.offset_ms.store(offset, Ordering::SeqCst);
        offset
    }

    /// This host's clock as `observe` wants it.
    pub fn host_now() -> i64 {
        host_ms()
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for StoreClock {
    fn now_ms(&self) -> i64 {
        host_ms() + self.offset_ms() + test_offset_ms()
    }
}

/// The test seam of the binary's clock: with `ROTOR_TEST_CLOCK_OFFSET_MS=N` the process lives
/// N ms in the future, so that a test moves past a grace period, a lease or a backoff by
/// starting its next process later on the clock instead of sleeping. Compiled only with the
/// `failpoints` feature, never in a release build.
#[cfg(feature = "failpoints")]
fn test_offset_ms() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| test_ms_from_env("ROTOR_TEST_CLOCK_OFFSET_MS"))
}

/// The test seam of a wrong host clock: `ROTOR_TEST_HOST_CLOCK_SKEW_MS=N` makes this host's
/// clock read N ms ahead of the truth, which a `StoreClock` on PostgreSQL measures away (the
/// offset above is time passing for everyone and is not). Only with `failpoints`.
#[cfg(feature = "failpoints")]
fn test_host_skew_ms() -> i64 {
    static SKEW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *SKEW.get_or_init(|| test_ms_from_env("ROTOR_TEST_HOST_CLOCK_SKEW_MS"))
}

/// A whole number of milliseconds from the environment variable `name`, 0 when unset.
#[cfg(feature = "failpoints")]
fn test_ms_from_env(name: &str) -> i64 {
    std::env::var(name).ok().map_or(0, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number of milliseconds"))
    })
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn test_offset_ms() -> i64 {
    0
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
fn test_host_skew_ms() -> i64 {
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
