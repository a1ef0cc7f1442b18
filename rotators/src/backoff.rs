//! A capped exponential backoff, the one every retry in rotor and its rotators takes (the
//! policy and its reasons: rotor's `policy::backoff`). Here because the rotators wait with it
//! too (a new key that the provider has not propagated yet) and see nothing of rotor.

use std::time::Duration;

/// A new credential the provider refuses while it propagates, tried again: 250 ms, 500 ms,
/// 1 s ... 5 s, within the rotator's `verify_within`.
pub const PROPAGATION: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));

/// Calls `attempt` until it succeeds. An error `propagating` says may be the provider still
/// propagating a new credential is tried again after the `PROPAGATION` backoff, for as long as
/// `within`; any other error ends it at once. The error comes back with whether `within` ran
/// out (the refusal lasted) or not (it was not one to wait out).
#[cfg(any(feature = "http", feature = "aws_iam_access_key"))]
pub async fn while_propagating<T, E, Attempt>(
    within: Duration,
    mut attempt: impl FnMut() -> Attempt,
    propagating: impl Fn(&E) -> bool,
) -> Result<T, (E, bool)>
where
    Attempt: std::future::Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut refusals = 0;
    loop {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(e) if !propagating(&e) => return Err((e, false)),
            Err(e) => {
                refusals += 1;
                let wait = PROPAGATION.delay(refusals);
                if tokio::time::Instant::now() + wait > deadline {
                    return Err((e, true));
                }
                tokio::time::sleep(wait).await;
            }
        }
    }
}

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
pub fn jittered(step: Duration) -> Duration {
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
