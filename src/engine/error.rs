//! How a step fails (`StepError`, classified for the state machine) and how a drive fails
//! (`EngineError`, for the caller).

use rotor_rotators::{ErrorClass, RotatorError};
use thiserror::Error;

use crate::model::state::RunState;
use crate::store::{RunRow, StoreError};
use crate::vault::VaultError;

/// Why a step failed, classified for the state machine. Messages name the credential's
/// vault path and the step, never secret values.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    /// The provider said when to come back (a rate limit's reset).
    pub retry_after: Option<std::time::Duration>,
    /// This worker must stop driving the run and save nothing: rotor's own store went away
    /// mid-step (not the credential's failure, so it spends none of its retries), or its lease
    /// lapsed. The run is resumed from this step by whoever claims it next.
    pub abandon: Option<Box<StoreError>>,
}

impl From<RotatorError> for StepError {
    fn from(e: RotatorError) -> Self {
        StepError {
            class: e.class,
            message: format!("provider: {}", e.message),
            retry_after: e.retry_after,
            abandon: None,
        }
    }
}

impl From<VaultError> for StepError {
    fn from(e: VaultError) -> Self {
        StepError {
            class: e.class,
            message: e.to_string(),
            retry_after: None,
            abandon: None,
        }
    }
}

impl StepError {
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Permanent,
            message: message.into(),
            retry_after: None,
            abandon: None,
        }
    }

    pub(super) fn conflict(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Conflict,
            message: message.into(),
            retry_after: None,
            abandon: None,
        }
    }

    pub fn transient(message: impl Into<String>) -> Self {
        StepError {
            class: ErrorClass::Transient,
            message: message.into(),
            retry_after: None,
            abandon: None,
        }
    }
}

/// A store error met inside a step: transient for the run, or the run is abandoned to its next
/// claim when the store itself is out.
pub(super) fn store_step_error(e: StoreError) -> StepError {
    StepError {
        class: ErrorClass::Transient,
        message: e.to_string(),
        retry_after: None,
        abandon: e.is_outage().then(|| Box::new(e)),
    }
}

/// `error`, made to abandon the run: this worker lost it (or could not tell) during mint, so
/// it saves nothing and the run resumes at mint under whoever claims it next.
pub(super) fn abandoned_at_mint(run: &RunRow, error: StepError) -> StepError {
    StepError {
        abandon: Some(Box::new(StoreError::LeaseLost {
            run_id: run.id.clone(),
            expected: RunState::Planned.as_str(),
        })),
        ..error
    }
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("credential {0} of this run is not in the config (removed?); its run is left as it is")]
    NotConfigured(String),
    #[error("vault {vault} of credential {credential} is not configured")]
    NoVault { credential: String, vault: String },
    /// A configured vault could not be opened: its key file, CA bundle or address is unusable.
    #[error("cannot open the vaults: {0}")]
    OpenVaults(#[source] VaultError),
    #[error("cannot build the rotator of {credential}: {source}")]
    Rotator {
        credential: String,
        #[source]
        source: RotatorError,
    },
    /// Test-only: the worker "died" at a crash point without saving.
    #[error("simulated crash at {0}")]
    Crashed(String),
    /// A step panicked and the run could not be recorded as failed by this worker (its lease
    /// had gone); whoever claims it next resumes it.
    #[error("run {run_id} of {credential} panicked and was left to its next claim: {message}")]
    Panicked {
        credential: String,
        run_id: String,
        message: String,
    },
}
