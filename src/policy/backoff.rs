//! The one backoff every retry in rotor takes: a run's failed step, a credential rolled back,
//! an alert or notification that did not arrive, a daemon that lost its store, a new key the
//! provider has not propagated yet (the type lives in `rotor_rotators::backoff`, which the
//! rotators share). Exponential
//! from `initial`, doubling per failure, capped at `max`; the delay is the step half fixed and
//! half random, so it never exceeds the cap (an operator who writes `max = "4s"` waits at most
//! four seconds) and many retries of one cause spread out instead of arriving together.
//!
//! Not backon: its exponential backoff adds jitter on top of the step (up to the step again),
//! so a delay can reach twice the cap, and it is an iterator that must be replayed from the
//! first attempt, while rotor persists a failure count and asks for the delay of failure N
//! after a restart. The arithmetic is three lines; its guarantees are tested beside it.

use std::time::Duration;

pub use rotor_rotators::backoff::{Backoff, jittered};

/// An alert or notification that did not arrive: 2 s, 4 s, 8 s ... 5 minutes.
pub const OUTBOX: Backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));

/// A daemon that lost its store, or the store's work notifications that lost their connection:
/// 0.5 s, 1 s, 2 s ... 10 s, until it answers again.
pub const STORE_LOST: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
