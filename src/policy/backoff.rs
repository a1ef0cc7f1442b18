//! The one backoff every retry in rotor takes: a run's failed step, a credential rolled back,
//! an alert or notification that did not arrive, a daemon that lost its store. Exponential
//! from `initial`, doubling per failure, capped at `max`; the delay is the step half fixed and
//! half random, so it never exceeds the cap (an operator who writes `max = "4s"` waits at most
//! four seconds) and many retries of one cause spread out instead of arriving together.
//!
//! Not backon: its exponential backoff adds jitter on top of the step (up to the step again),
//! so a delay can reach twice the cap, and it is an iterator that must be replayed from the
//! first attempt, while rotor persists a failure count and asks for the delay of failure N
//! after a restart. The arithmetic here is three lines; the guarantees are tested below.

use std::time::Duration;

/// An alert or notification that did not arrive: 2 s, 4 s, 8 s ... 5 minutes.
pub const OUTBOX: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));

/// A daemon that lost its store: 0.5 s, 1 s, 2 s ... 10 s, until it answers again.
pub const STORE_LOST: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));

/// A capped exponential backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The step after the first failure.
    pub initial: Duration,
    /// No step is longer.
    pub max: Duration,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Backoff { initial, max }
    }

    /// The step after `failures` failures (1 = the first), before jitter: `initial`,
    /// doubled for each further failure, capped at `max`.
    pub fn step(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(30);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// How long to wait after `failures` failures: `step`, half fixed and half random.
    pub fn delay(&self, failures: u32) -> Duration {
        jittered(self.step(failures))
    }

    /// `delay` in milliseconds, for a failure count as the store keeps it: what an outbox adds
    /// to the clock for its next attempt.
    pub fn delay_ms(&self, failures: i64) -> i64 {
        let failures = failures.clamp(0, i64::from(u32::MAX)) as u32;
        self.delay(failures).as_millis() as i64
    }
}

/// `step`, half of it fixed and half random: never longer than `step`.
pub(super) fn jittered(step: Duration) -> Duration {
    use rand::Rng;
    let half = step / 2;
    let spread = (step - half).as_millis() as u64;
    half + Duration::from_millis(rand::rng().random_range(0..=spread))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_and_delays_stay_within_their_step() {
        let b = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
        let steps: Vec<u64> = (1..=10).map(|n| b.step(n).as_secs()).collect();
        assert_eq!(steps, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(b.step(u32::MAX), Duration::from_secs(300));
        for n in 1..=12 {
            for _ in 0..50 {
                let d = b.delay(n);
                assert!(d <= b.step(n) && d >= b.step(n) / 2, "{n}: {d:?}");
            }
        }
    }
}
