//! Scheduling: what is due when (`policy`), and the daemon loop that claims and runs it.

pub mod by_hand;
pub mod daemon;
pub mod lag;
