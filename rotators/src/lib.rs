//! rotor's provider plug-ins: the [`Rotator`] contract every provider keeps, the credential
//! types they exchange with the engine, and one module per provider behind a Cargo feature.
//!
//! This crate cannot see the store, the vault or the scheduler: a rotator only talks to its
//! provider. The engine decides when each step runs and persists what happened.

pub mod credential;
pub mod error;
#[cfg(feature = "generated")]
pub mod generated;

use std::future::Future;

pub use credential::{Credential, Fingerprint};
pub use error::{ErrorClass, RotatorError};

/// Where a new credential's secret comes from; it decides how `mint` can be made crash-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// rotor generates the secret and the provider accepts it (`apply`): the vault gets the
    /// value before the provider does, so a crash can never lose it.
    Local,
    /// The provider generates the secret and shows it once (an IAM access key): the engine
    /// records the intent first and recovery deletes orphans no vault stage knows.
    Provider,
}

/// A credential that exists at the provider, as `list_live` reports it. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCredential {
    /// The provider's own identifier (an access key id, a deploy key id...).
    pub provider_id: String,
}

/// The contract every provider keeps. Every method must be idempotent: the engine calls a step
/// again after a crash, with the same arguments, and "already done" is success.
pub trait Rotator: Send + Sync {
    /// The `kind` string of this rotator in config (also its module and feature name).
    fn kind(&self) -> &'static str;

    fn origin(&self) -> Origin;

    /// Produces a new candidate credential. For [`Origin::Local`] this has no side effect.
    fn mint(&self) -> impl Future<Output = Result<Credential, RotatorError>> + Send;

    /// Installs a locally generated candidate at the provider while `current` keeps working.
    fn apply(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> impl Future<Output = Result<(), RotatorError>> + Send;

    /// Proves that `candidate` (as read back from the vault) authenticates and is authorised.
    fn verify(
        &self,
        candidate: &Credential,
    ) -> impl Future<Output = Result<(), RotatorError>> + Send;

    /// Invalidates a credential that has been replaced. "Already gone" is success.
    fn retire(&self, old: &Credential) -> impl Future<Output = Result<(), RotatorError>> + Send;

    /// Undoes `apply` of a candidate that will not be promoted, leaving `current` working.
    fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> impl Future<Output = Result<(), RotatorError>> + Send;

    /// The credentials that exist at the provider, for orphan detection after a crash.
    fn list_live(&self) -> impl Future<Output = Result<Vec<LiveCredential>, RotatorError>> + Send;

    /// Checks reachability and permissions without changing anything.
    fn preflight(&self) -> impl Future<Output = Result<(), RotatorError>> + Send;
}

/// The rotator section of a `[[credential]]`, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RotatorConfig {
    /// A random secret rotor generates itself: webhook signing keys, API keys of your own services.
    #[cfg(feature = "generated")]
    Generated(generated::GeneratedConfig),
}

impl RotatorConfig {
    /// Every `kind` this build knows, for error messages.
    pub const KINDS: &'static [&'static str] = &[
        #[cfg(feature = "generated")]
        "generated",
    ];

    pub fn kind(&self) -> &'static str {
        match self {
            #[cfg(feature = "generated")]
            RotatorConfig::Generated(_) => "generated",
        }
    }

    /// Deserializes the fields of the rotator whose kind is `kind` (the `kind` key removed), so
    /// that error positions come from the caller's deserializer and stay exact.
    pub fn deserialize_kind<'de, D>(kind: &str, fields: D) -> Result<Option<Self>, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        use serde::Deserialize;
        Ok(Some(match kind {
            #[cfg(feature = "generated")]
            "generated" => {
                RotatorConfig::Generated(generated::GeneratedConfig::deserialize(fields)?)
            }
            _ => return Ok(None),
        }))
    }
}

/// A built rotator of any kind: the closed set of providers, dispatched by `match`.
pub enum AnyRotator {
    #[cfg(feature = "generated")]
    Generated(generated::Generated),
}

impl AnyRotator {
    pub fn build(config: &RotatorConfig) -> Result<Self, RotatorError> {
        Ok(match config {
            #[cfg(feature = "generated")]
            RotatorConfig::Generated(c) => {
                AnyRotator::Generated(generated::Generated::new(c.clone()))
            }
        })
    }
}

macro_rules! dispatch {
    ($self:ident, $r:ident => $body:expr) => {
        match $self {
            #[cfg(feature = "generated")]
            AnyRotator::Generated($r) => $body,
        }
    };
}

impl Rotator for AnyRotator {
    fn kind(&self) -> &'static str {
        dispatch!(self, r => r.kind())
    }
    fn origin(&self) -> Origin {
        dispatch!(self, r => r.origin())
    }
    async fn mint(&self) -> Result<Credential, RotatorError> {
        dispatch!(self, r => r.mint().await)
    }
    async fn apply(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        dispatch!(self, r => r.apply(candidate, current).await)
    }
    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        dispatch!(self, r => r.verify(candidate).await)
    }
    async fn retire(&self, old: &Credential) -> Result<(), RotatorError> {
        dispatch!(self, r => r.retire(old).await)
    }
    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        dispatch!(self, r => r.rollback(candidate, current).await)
    }
    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        dispatch!(self, r => r.list_live().await)
    }
    async fn preflight(&self) -> Result<(), RotatorError> {
        dispatch!(self, r => r.preflight().await)
    }
}
