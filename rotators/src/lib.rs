//! rotor's provider plug-ins: the [`Rotator`] contract every provider keeps, the credential
//! types they exchange with the engine, and one module per provider behind a Cargo feature.
//!
//! This crate cannot see the store, the vault or the scheduler: a rotator only talks to its
//! provider. The engine decides when each step runs and persists what happened.

#[cfg(any(
    feature = "postgres_password",
    feature = "mysql_password",
    feature = "redis_acl_password"
))]
pub mod alternating;
#[cfg(feature = "aws_iam_access_key")]
pub mod aws_iam;
pub mod backoff;
pub mod credential;
pub mod duration;
pub mod error;
#[cfg(feature = "generated")]
pub mod generated;
#[cfg(any(
    feature = "github_deploy_key",
    feature = "github_webhook_secret",
    feature = "github_app_installation_token"
))]
pub mod github;
#[cfg(feature = "http")]
pub mod http;
pub mod kinds;
#[cfg(feature = "manual")]
pub mod manual;
#[cfg(feature = "mysql_password")]
pub mod mysql;
pub mod net;
pub mod password;
#[cfg(feature = "postgres_password")]
pub mod postgres;
#[cfg(feature = "redis_acl_password")]
pub mod redis;
pub mod secret_ref;
#[cfg(feature = "ssh_authorized_key")]
pub mod ssh;
#[cfg(any(
    feature = "github_deploy_key",
    feature = "github_webhook_secret",
    feature = "github_app_installation_token",
    feature = "ssh_authorized_key"
))]
pub mod sshkey;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use credential::{Credential, Fingerprint};
pub use error::{ErrorClass, RotatorError};
use secrecy::SecretString;
pub use secret_ref::SecretRef;

/// Where a new credential's secret comes from; it decides how `mint` can be made crash-safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// rotor generates the secret and the provider accepts it (`apply`): the vault gets the
    /// value before the provider does, so a crash can never lose it.
    Local,
    /// The provider generates the secret and shows it once (an IAM access key): `mint` must
    /// find and remove what an earlier, interrupted `mint` of the same run token left behind.
    Provider,
}

/// A credential that exists at the provider, as `list_live` reports it. Never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveCredential {
    /// The provider's own identifier (an access key id, a role name, a deploy key id...).
    pub provider_id: String,
    /// Whether the provider still accepts it.
    pub active: bool,
}

/// What `mint` knows about the rotation it serves.
#[derive(Clone, Copy)]
pub struct MintContext<'a> {
    /// The run's token: the same on every attempt of this run, different for every run.
    pub token: &'a str,
    /// The credential consumers use now, if there is one.
    pub current: Option<&'a Credential>,
    /// Whether the run is still this worker's, asked before `mint` destroys anything (what an
    /// interrupted attempt of the run left): a worker paused past its lease must not remove
    /// what the worker that took over made.
    pub fence: Option<&'a dyn Fence>,
}

impl std::fmt::Debug for MintContext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MintContext")
            .field("token", &self.token)
            .field("current", &self.current)
            .field("fenced", &self.fence.is_some())
            .finish()
    }
}

impl MintContext<'_> {
    /// Fails with a conflict when another worker took the run over.
    pub async fn still_owned(&self) -> Result<(), RotatorError> {
        match self.fence {
            Some(fence) if !fence.still_owned().await => Err(RotatorError::conflict(
                "another worker took this run over; this worker stops before changing anything",
            )),
            _ => Ok(()),
        }
    }
}

/// The engine's answer to "is this run still mine?".
pub trait Fence: Send + Sync {
    fn still_owned(&self) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>;
}

/// How far `retire` got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    /// The old credential no longer authenticates and nothing is left to do.
    Done,
    /// Disabled, with a second stage due later (an IAM key is deactivated, then deleted):
    /// call `retire` again after this long.
    Again(Duration),
}

/// Reads the secrets a rotator's config refers to (an admin password, a private key), at the
/// moment it needs them, so that a reference to a credential rotor itself rotates stays fresh.
pub trait SecretSource: Send + Sync {
    /// The value behind `reference`; the error says which reference and why, never a value.
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<SecretString, String>> + Send + 'a>>;
}

/// A source for rotators whose config holds no references, and for tests.
pub struct NoSecrets;

impl SecretSource for NoSecrets {
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
    ) -> Pin<Box<dyn Future<Output = Result<SecretString, String>> + Send + 'a>> {
        Box::pin(async move { Err(format!("{reference}: no secret source is configured")) })
    }
}

/// The secrets a rotator was built with.
pub type Secrets = Arc<dyn SecretSource>;

/// Resolves `reference` for a rotator, as a permanent error naming what was being read.
#[cfg(any(
    feature = "postgres_password",
    feature = "redis_acl_password",
    feature = "mysql_password",
    feature = "ssh_authorized_key",
    feature = "aws_iam_access_key",
    feature = "http",
    feature = "github_deploy_key",
    feature = "github_webhook_secret",
    feature = "github_app_installation_token"
))]
pub(crate) async fn resolve_secret(
    secrets: &Secrets,
    reference: &SecretRef,
    purpose: &str,
) -> Result<SecretString, RotatorError> {
    secrets.resolve(reference).await.map_err(|e| {
        RotatorError::permanent(format!(
            "cannot read {purpose} ({e}); fix the reference or the secret it points to"
        ))
    })
}

/// The contract every provider keeps. Every method must be idempotent: the engine calls a step
/// again after a crash, with the same arguments, and "already done" is success.
pub trait Rotator: Send + Sync {
    /// The `kind` string of this rotator in config (also its module and feature name).
    fn kind(&self) -> &'static str;

    fn origin(&self) -> Origin;

    /// Produces a new candidate credential. For [`Origin::Local`] this has no side effect; for
    /// [`Origin::Provider`] a second call with the same token leaves one credential, not two.
    fn mint(
        &self,
        context: MintContext<'_>,
    ) -> impl Future<Output = Result<Credential, RotatorError>> + Send;

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

    /// Makes the provider use `current` once grace is over, before `retire`. For providers that
    /// hold a single secret and must switch only after every consumer knows the new one (a
    /// webhook signs with one secret; receivers accept both during grace). Most do nothing.
    fn switch_over(
        &self,
        current: &Credential,
    ) -> impl Future<Output = Result<(), RotatorError>> + Send {
        let _ = current;
        async { Ok(()) }
    }

    /// Invalidates `old`, which `current` has replaced. "Already gone" is success.
    fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> impl Future<Output = Result<Retired, RotatorError>> + Send;

    /// `retire` in an emergency: `old` is presumed exposed, so a second stage that would wait
    /// (an IAM key's `delete_after`) happens now. Most providers retire in one stage anyway.
    fn retire_at_once(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> impl Future<Output = Result<Retired, RotatorError>> + Send {
        self.retire(old, current)
    }

    /// How many secrets the provider holds for this credential, besides `current`, that rotor
    /// did not issue: what was there when rotor adopted the credential (a password or key set
    /// by hand), possibly leaked, which a first version must retire like a previous one.
    fn unissued(
        &self,
        current: &Credential,
    ) -> impl Future<Output = Result<usize, RotatorError>> + Send {
        let _ = current;
        async { Ok(0) }
    }

    /// Retires every secret `unissued` counts, after the first version's grace, as `retire`
    /// retires a previous one (`at_once`: as `retire_at_once`). "Already gone" is success.
    fn retire_unissued(
        &self,
        current: &Credential,
        at_once: bool,
    ) -> impl Future<Output = Result<Retired, RotatorError>> + Send {
        let _ = (current, at_once);
        async { Ok(Retired::Done) }
    }

    /// Undoes `apply` of a candidate that will not be promoted, leaving `current` working.
    fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> impl Future<Output = Result<(), RotatorError>> + Send;

    /// The credentials that exist at the provider, for orphan detection after a crash.
    fn list_live(&self) -> impl Future<Output = Result<Vec<LiveCredential>, RotatorError>> + Send;

    /// The provider's identifier of `credential` (what `list_live` reports), if it has one.
    fn provider_id(&self, credential: &Credential) -> Option<String>;

    /// Checks reachability and permissions without changing anything.
    fn preflight(&self) -> impl Future<Output = Result<(), RotatorError>> + Send;

    /// Whether anyone still uses `old`, as far as the provider can tell: asked during grace
    /// to retire by evidence (`retire_when = "unused"`). A provider that cannot tell answers
    /// `Usage::Unknown` (the default), and retirement falls back to the timer.
    fn last_used(
        &self,
        old: &Credential,
    ) -> impl Future<Output = Result<Usage, RotatorError>> + Send {
        let _ = old;
        async { Ok(Usage::Unknown) }
    }

    /// Whether `apply` changes what consumers of the current credential use (a single role
    /// re-passworded in place). A dry-run drill then stops after minting.
    fn apply_disturbs_current(&self) -> bool {
        false
    }

    /// Whether the credential lives only in the vault (a generated secret): `apply`,
    /// `switch_over` and `retire` then have nothing to do, and the engine skips reading the
    /// vault for them.
    fn vault_only(&self) -> bool {
        false
    }
}

/// What a rotator's `verify` proves before a new credential is promoted, and what it cannot,
/// in the words of the README's table (a test holds the two together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verification {
    pub proves: &'static str,
    pub cannot: &'static str,
}

/// What every rotator's config section can say about itself without contacting anything.
pub trait RotatorSettings: kinds::Settings {
    /// The least privilege rotor needs at the provider, in the provider's own language, for
    /// `rotor policy ID`.
    fn least_privilege(&self, credential_id: &str) -> String;

    /// What `verify` proves and cannot prove, for `rotor policy ID`. Every rotator says it.
    fn verification(&self) -> Verification;

    /// What the provider tells of a credential's use (`Rotator::last_used`), for `rotor
    /// validate` and the drill report; `None` when it tells nothing.
    fn usage_evidence(&self) -> Option<&'static str> {
        None
    }
}

/// Declares the closed set of providers: the tagged config enum (the plug-in shape every
/// family shares, see `kinds`), the built rotator enum and their `match` dispatch, each
/// variant behind its Cargo feature.
macro_rules! providers {
    ($( $kind:literal $variant:ident $config:ty => $rotator:ty, $doc:literal; )*) => {
        crate::kinds! {
            /// The rotator section of a `[[credential]]`, tagged by `kind`.
            #[derive(PartialEq)]
            pub enum RotatorConfig: RotatorSettings {
                $(
                    #[doc = $doc]
                    #[cfg(feature = $kind)]
                    $kind => $variant($config),
                )*
            }
        }

        /// A built rotator of any kind, dispatched by `match`.
        pub enum AnyRotator {
            $( #[cfg(feature = $kind)] $variant(Box<$rotator>), )*
        }

        impl AnyRotator {
            pub fn build(config: &RotatorConfig, secrets: Secrets) -> Result<Self, RotatorError> {
                let _ = &secrets;
                Ok(match config {
                    $( #[cfg(feature = $kind)] RotatorConfig::$variant(c) => AnyRotator::$variant(Box::new(<$rotator>::build(c.as_ref().clone(), secrets)?)), )*
                })
            }
        }

        macro_rules! dispatch {
            ($self_:ident, $r:ident => $body:expr) => {
                match $self_ {
                    $( #[cfg(feature = $kind)] AnyRotator::$variant($r) => $body, )*
                }
            };
        }
    };
}

providers! {
    "generated" Generated generated::GeneratedConfig => generated::Generated,
        "A random secret rotor generates itself: webhook signing keys, API keys of your own services.";
    "postgres_password" PostgresPassword postgres::PostgresConfig => postgres::PostgresPassword,
        "A PostgreSQL role's password, rotated across two alternating roles or in place.";
    "aws_iam_access_key" AwsIamAccessKey aws_iam::AwsIamConfig => aws_iam::AwsIamAccessKey,
        "An AWS IAM user's access key: a second key beside the old one, verified with STS.";
    "github_deploy_key" GithubDeployKey github::DeployKeyConfig => github::GithubDeployKey,
        "A repository deploy key: an ed25519 key pair made by rotor, registered at GitHub.";
    "github_webhook_secret" GithubWebhookSecret github::WebhookConfig => github::GithubWebhookSecret,
        "A repository or organisation webhook's secret; receivers accept the old and new one during grace.";
    "github_app_installation_token" GithubAppInstallationToken github::InstallationTokenConfig => github::GithubAppInstallationToken,
        "A GitHub App installation token (valid one hour), minted from the App's private key.";
    "http" Http http::HttpConfig => http::HttpRotator,
        "A generic provider driven by configured HTTP calls (SaaS API keys, in-house services).";
    "manual" Manual manual::ManualConfig => manual::Manual,
        "A credential people rotate by hand; rotor tracks its age or expiry and reminds them.";
    "redis_acl_password" RedisAclPassword redis::RedisConfig => redis::RedisAclPassword,
        "A Redis ACL user's password: one user holds the old and the new one through grace, or two users take turns.";
    "mysql_password" MysqlPassword mysql::MysqlConfig => mysql::MysqlPassword,
        "A MariaDB account's password, rotated across two alternating accounts or in place.";
    "ssh_authorized_key" SshAuthorizedKey ssh::SshConfig => ssh::SshAuthorizedKey,
        "An Ed25519 key pair that logs in as a user on each listed host, through its authorized_keys.";
}

impl Rotator for AnyRotator {
    fn kind(&self) -> &'static str {
        dispatch!(self, r => r.kind())
    }
    fn origin(&self) -> Origin {
        dispatch!(self, r => r.origin())
    }
    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        dispatch!(self, r => r.mint(context).await)
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
    async fn switch_over(&self, current: &Credential) -> Result<(), RotatorError> {
        dispatch!(self, r => r.switch_over(current).await)
    }
    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        dispatch!(self, r => r.retire(old, current).await)
    }
    async fn retire_at_once(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        dispatch!(self, r => r.retire_at_once(old, current).await)
    }
    async fn unissued(&self, current: &Credential) -> Result<usize, RotatorError> {
        dispatch!(self, r => r.unissued(current).await)
    }
    async fn retire_unissued(
        &self,
        current: &Credential,
        at_once: bool,
    ) -> Result<Retired, RotatorError> {
        dispatch!(self, r => r.retire_unissued(current, at_once).await)
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
    fn provider_id(&self, credential: &Credential) -> Option<String> {
        dispatch!(self, r => r.provider_id(credential))
    }
    async fn preflight(&self) -> Result<(), RotatorError> {
        dispatch!(self, r => r.preflight().await)
    }
    fn apply_disturbs_current(&self) -> bool {
        dispatch!(self, r => r.apply_disturbs_current())
    }
    fn vault_only(&self) -> bool {
        dispatch!(self, r => r.vault_only())
    }
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        dispatch!(self, r => r.last_used(old).await)
    }
}

/// What a provider can tell of a credential's use (`Rotator::last_used`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Usage {
    /// The provider cannot tell (one user holding both passwords does not say which one a
    /// client used).
    Unknown,
    /// Not seen in use: no session now, or never used.
    Unseen,
    /// Seen in use at `at` (ms since the epoch; `None`: now, a session open now) by `by`:
    /// who, in the provider's words (address, application, service). Never a secret.
    Seen { at: Option<i64>, by: String },
}
