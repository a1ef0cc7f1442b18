//! How a rotator reports failure: a class the engine acts on and a message a person can act on.

use thiserror::Error;

/// What the engine does with a failed step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying with backoff: a timeout, a 5xx, eventual consistency.
    Transient,
    /// Retrying will not help: bad permissions, a refused credential, a missing user.
    Permanent,
    /// Someone changed the system out of band: stop, alert, never overwrite their change.
    Conflict,
}

impl ErrorClass {
    /// The name a run's `error_class` is stored under.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Conflict => "conflict",
        }
    }
}

/// A provider failure. The message must never contain secret material: rotators describe
/// what failed and what to do, not the values involved.
#[derive(Debug, Error)]
#[error("{message}")]
pub struct RotatorError {
    pub class: ErrorClass,
    pub message: String,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
    /// For a transient error: the provider said when to come back (a rate limit's reset).
    pub retry_after: Option<std::time::Duration>,
}

impl RotatorError {
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Transient,
            message: message.into(),
            source: None,
            retry_after: None,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Permanent,
            message: message.into(),
            source: None,
            retry_after: None,
        }
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self {
            class: ErrorClass::Conflict,
            message: message.into(),
            source: None,
            retry_after: None,
        }
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
}
