//! The use cases: what an operator asks of rotor, with typed outcomes, between the face (the
//! command line) and the scheduler and engine. The CLI parses arguments, calls one of these and
//! prints what it returns; it decides nothing about runs itself.

pub mod cancel;
pub mod confirm;
pub mod drill;
pub mod emergency;
pub mod identify;
pub mod pause;
pub mod plan;
pub mod rotate;
pub mod run;
pub mod settle;
pub mod status;
