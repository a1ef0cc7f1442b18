//! The one seam through which a run is disturbed on purpose: a drill's injected faults, a
//! test's crash points and the benchmark that leaves out verification all enter the engine
//! here, and nowhere else. An engine without a disturbance asks nothing of it.
//!
//! The engine does not know who disturbs it: `drill::Fault` implements this trait, the crash
//! tests and the panic tests implement it, and so does the benchmark build's switch.

use super::StepError;
use super::state::Step;

/// What a step is about to act on, as a disturbance sees it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub credential: &'a str,
    pub provider: &'a str,
    pub vault: &'a str,
    /// The run is a drill's.
    pub drill: bool,
}

pub trait Disturbance: Send + Sync {
    /// At the crash point `STEP:WHEN` (`WHEN` is `before`, `effect` or `after`): whether this
    /// worker dies here, saving nothing (`EngineError::Crashed`).
    fn dies_at(&self, _target: &Target<'_>, _point: &str) -> bool {
        false
    }

    /// Before the side effect of `step`: the failure that replaces it, if any.
    fn replaces(&self, _target: &Target<'_>, _step: Step) -> Option<StepError> {
        None
    }

    /// Whether the verify step leaves the provider out. Only the benchmark build's switch says
    /// yes: rotor never promotes what it has not verified.
    fn skips_verification(&self) -> bool {
        false
    }
}

/// Benchmark builds only (`--features bench-unverified`): with `ROTOR_BENCH_UNVERIFIED=1` the
/// verify step does not ask the provider, so that `benches/postgres-ceiling.sh` can measure
/// rotations doing the work a peer that never verifies does. Release builds have no such type.
#[cfg(feature = "bench-unverified")]
pub struct UnverifiedBench;

#[cfg(feature = "bench-unverified")]
impl UnverifiedBench {
    /// The switch, when the environment turns it on.
    pub fn from_env() -> Option<std::sync::Arc<dyn Disturbance>> {
        if std::env::var("ROTOR_BENCH_UNVERIFIED").is_ok_and(|v| v == "1") {
            tracing::warn!(
                "ROTOR_BENCH_UNVERIFIED=1: new credentials are NOT verified (benchmark build)"
            );
            return Some(std::sync::Arc::new(UnverifiedBench));
        }
        None
    }
}

#[cfg(feature = "bench-unverified")]
impl Disturbance for UnverifiedBench {
    fn skips_verification(&self) -> bool {
        true
    }
}
