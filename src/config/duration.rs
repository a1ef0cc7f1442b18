//! Durations in config ("90s", "15m", "12h", "7d", "4w"); shared with the rotators crate.

pub use rotor_rotators::duration::Duration;
