//! rotor: a credential rotation scheduler and dual-credential rollover worker.
//!
//! `config` turns schedules into a validated model, `store` persists credentials, runs and the
//! audit log, `vault` is where consumers read credentials, `engine` drives one rotation through
//! its state machine, `scheduler` decides what is due and runs the daemon loop, `cli` is the
//! command line.

pub mod config;
pub mod scheduler;
