//! rotor: a credential rotation scheduler and dual-credential rollover worker.
//!
//! `config` turns schedules into a validated model, `model` names a run's states and steps,
//! `store` persists credentials, runs and the audit log, `fingerprint` keys what identifies a
//! value, `vault` is where consumers read credentials, `engine` drives one rotation through
//! its state machine, `scheduler` decides what is due and runs the daemon loop, `alert` and
//! `notify` tell people and consumers through the one delivery loop of `outbox`, `cli` is the
//! command line.

pub mod alert;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod drill;
pub mod engine;
pub mod failpoint;
pub mod fingerprint;
pub mod model;
pub mod notify;
pub mod outbox;
pub mod policy;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod vault;
