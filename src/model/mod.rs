//! The words the engine and the store share: a run's states and steps. The store persists
//! them and the engine drives them, and neither imports the other for it.

pub mod state;
