//! Configuration: the TOML files operators write (`schedules/`), turned into a validated model.
//! Parsing keeps source positions so that every problem is reported as `path:line:col`.

mod diagnostic;
mod duration;
mod load;
mod secret_ref;

use std::collections::BTreeMap;
use std::path::PathBuf;

use rotor_rotators::RotatorConfig;
use serde::{Deserialize, Serialize};
use toml::Spanned;

pub use crate::policy::schedule::{
    CronExpr, DaySet, ScheduleConfig, TimeOfDay, TimeZone, Timestamp, WindowConfig,
};
pub use diagnostic::{Diagnostic, Diagnostics, SourceFile};
pub use duration::{Duration, MaxAge};
pub use load::{load, load_text, schema};
pub use secret_ref::SecretRef;

use crate::alert::AlertConfig;
use crate::notify::{RetireAfter, Subscribers};
use crate::policy::{RetryPolicy, Schedule};
use crate::vault::VaultConfig;

/// The store URL used when no `[store]` table and no `--database` flag give one.
pub const DEFAULT_STORE_URL: &str = "sqlite://rotor.db";

/// The shape of one config file. Tables may be spread over several files; each name is
/// declared once.
#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// Where rotor keeps its schedule, runs and audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<StoreConfig>,
    /// Values every `[[credential]]` inherits unless it sets its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub defaults: Option<DefaultsConfig>,
    /// Named vaults credentials are written to.
    #[serde(default)]
    pub vaults: BTreeMap<String, VaultConfig>,
    /// Named alert sinks.
    #[serde(default)]
    pub alerts: BTreeMap<String, AlertConfig>,
    /// Named hooks that tell consumers a credential changed (`notify` of a credential).
    #[serde(default)]
    pub hooks: BTreeMap<String, crate::notify::HookConfig>,
    /// The credentials rotor rotates.
    #[serde(default)]
    pub credential: Vec<CredentialConfig>,
    /// Rotation drills: how often each credential must be drilled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drill: Option<DrillConfig>,
    /// How much work every replica together may do at once, and how fast, per provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsConfig>,
    /// What `/metrics` reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricsConfig>,
}

/// `[metrics]`: the series `/metrics` reports.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Up to this many credentials, `/metrics` reports each credential's own series; above it,
    /// one set per provider kind, aggregated (default 10000; 0: always per provider). A
    /// credential has about 40 series, and a Prometheus keeps every one of them.
    #[serde(default = "default_per_credential_up_to")]
    pub per_credential_up_to: usize,
}

fn default_per_credential_up_to() -> usize {
    10_000
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            per_credential_up_to: default_per_credential_up_to(),
        }
    }
}

/// `[limits]`: bounds that hold across every replica sharing the store (they are counted in
/// the store), so that three replicas do not triple the calls to a provider.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Runs driven at once by all replicas together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Per provider kind (`[limits.provider.aws_iam_access_key]`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provider: BTreeMap<String, ProviderLimits>,
}

/// The limits of one provider kind, across every replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderLimits {
    /// Runs of this provider driven at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Steps that call the provider, started per second (a token bucket in the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// How many such steps may start at once after a quiet spell. Default: `per_second`,
    /// rounded up (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

impl ProviderLimits {
    pub fn burst(&self) -> f64 {
        match (self.burst, self.per_second) {
            (Some(b), _) => f64::from(b.max(1)),
            (None, Some(rate)) => rate.ceil().max(1.0),
            (None, None) => 1.0,
        }
    }
}

/// `[drill]`: operators prove every credential can still be rotated by drilling it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// A credential not drilled for this long raises a `drill_overdue` alert ("90d").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<Duration>,
}

/// The state store.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (embedded, one process) or `postgres://USER@HOST/DB` (replicas share the
    /// work). The URL must not contain a password: use `password`. Default: `sqlite://rotor.db`.
    #[serde(default = "default_store_url")]
    pub url: String,
    /// Password for a PostgreSQL store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<SecretRef>,
    /// The integrity key that keys the audit chain (`env` or `file`, at least 32 bytes), kept
    /// where the store's writers cannot read it. Required for a PostgreSQL store (its replicas
    /// share it); a SQLite store without one keeps its own beside it (`rotor.db.key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<SecretRef>,
    /// Where `rotor run` (every `anchor_every`) and `rotor audit anchor` append the audit
    /// chain's head, for `rotor audit verify` to check the log against later: ship it off this
    /// machine (the anchors are also logged). Without it anchors are only logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_file: Option<std::path::PathBuf>,
    /// How often `rotor run` takes an anchor. Default "1h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anchor_every: Option<Duration>,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

fn default_store_url() -> String {
    DEFAULT_STORE_URL.into()
}

/// Defaults for every credential.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsConfig {
    /// How long the previous credential stays valid after promotion. Default "24h".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Duration>,
    /// No credential may get older than this. Without it, each credential's default is twice
    /// the longest interval its schedule allows between rotations. `"none"` is refused here: a
    /// credential opts out on its own, with a reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Spanned<MaxAge>>,
    /// Random delay (deterministic per credential) added to each due time, to spread load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// Alert sinks (names of `[alerts.*]`) that hear of failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<String>>")]
    pub alerts: Option<Vec<Spanned<String>>>,
    /// How failed steps are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<RetryConfig>")]
    pub retry: Option<Spanned<RetryConfig>>,
}

/// Retry of a failed step: exponential backoff with jitter, capped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts of one step before the run rolls back (or is marked stuck after promotion).
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial: Duration,
    /// Longest delay between retries.
    pub max: Duration,
}

/// Where a credential is written.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VaultRefConfig {
    /// Name of a `[vaults.NAME]` table.
    #[schemars(with = "String")]
    pub name: Spanned<String>,
    /// Path of the credential's document in that vault: letters, digits, `_ - .` and `/`.
    #[schemars(with = "String")]
    pub path: Spanned<String>,
}

/// One managed credential.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    /// Unique id, e.g. "payments/db": letters, digits, `_ - .` and `/`.
    #[schemars(with = "String")]
    pub id: Spanned<String>,
    /// When it rotates.
    #[schemars(with = "ScheduleConfig")]
    pub schedule: Spanned<ScheduleConfig>,
    /// Where consumers read it.
    pub vault: VaultRefConfig,
    // `rotator`, the provider that mints, applies, verifies and retires it (a table tagged
    // by `kind`), is read by the loader beside this struct (see `load`'s module comment).
    /// Overrides `defaults.grace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace: Option<Duration>,
    /// Overrides `defaults.max_age`. `"none"` opts out of a maximum age; it needs
    /// `max_age_reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub max_age: Option<Spanned<MaxAge>>,
    /// Why a credential with `max_age = "none"` may grow old without bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_reason: Option<String>,
    /// Overrides `defaults.jitter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<Duration>,
    /// Overrides `defaults.alerts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<String>>")]
    pub alerts: Option<Vec<Spanned<String>>>,
    /// Overrides `defaults.retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<RetryConfig>")]
    pub retry: Option<Spanned<RetryConfig>>,
    /// Hooks (names of `[hooks.*]`) told after promotion and after retirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Vec<String>>")]
    pub notify: Option<Vec<Spanned<String>>>,
    /// `grace` (default) or `notified`: retire as soon as every `notify` hook took the
    /// promotion, after `grace` at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::notify::RetireAfter>")]
    pub retire_after: Option<Spanned<crate::notify::RetireAfter>>,
    /// `grace` (default) or `unused`: retire the replaced credential once the provider shows
    /// it unused for `unused_for` after promotion, at the end of `grace` at the latest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<crate::policy::usage::RetireWhen>")]
    pub retire_when: Option<Spanned<crate::policy::usage::RetireWhen>>,
    /// With `retire_when = "unused"`: how long the replaced credential must go unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused_for: Option<Duration>,
    /// With `retire_when = "unused"`: `retire` (default) or `wait` when grace ends while the
    /// replaced credential is still in use. Either way an alert names who uses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_still_used: Option<crate::policy::usage::OnStillUsed>,
    /// `"external-secrets"` when the External Secrets Operator copies the credential into
    /// Kubernetes Secrets: `rotor validate` warns when `grace` is shorter than twice its
    /// `refresh_interval`, so that consumers hold the new credential before the old one goes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<Consumers>")]
    pub consumers: Option<Spanned<Consumers>>,
    /// With `consumers = "external-secrets"`: the ExternalSecret's `refreshInterval` (default
    /// "1h", the operator's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_interval: Option<Duration>,
    /// Free text for people: what uses this credential, who owns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// Who reads a credential from its vault, where rotor can check the timing for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum Consumers {
    /// The External Secrets Operator, which copies it into Kubernetes Secrets.
    #[serde(rename = "external-secrets")]
    ExternalSecrets,
}

/// A validated configuration: every reference resolved, every default applied.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreConfig,
    pub vaults: BTreeMap<String, VaultConfig>,
    pub alerts: BTreeMap<String, AlertConfig>,
    pub hooks: BTreeMap<String, crate::notify::HookConfig>,
    pub credentials: Vec<Credential>,
    pub sources: Vec<PathBuf>,
    /// `[drill]`, if any file declares it.
    pub drill: DrillConfig,
    /// `[limits]`, if any file declares it.
    pub limits: LimitsConfig,
    /// `[metrics]`, if any file declares it.
    pub metrics: MetricsConfig,
    /// What is allowed but deserves a look (a credential without a maximum age).
    pub warnings: Vec<Diagnostic>,
    /// Position of each credential in `credentials`, by id: lookups are on every hot path.
    /// Positions in `credentials`, in id order: a lookup is a binary search. A map keyed by
    /// the ids would copy each (some 70 bytes a credential; 70 MB at a million).
    by_id: Vec<u32>,
}

/// One credential as the engine and scheduler see it.
#[derive(Debug, Clone)]
pub struct Credential {
    pub id: String,
    pub rotator: RotatorConfig,
    pub vault: String,
    pub vault_path: String,
    pub schedule: Schedule,
    pub grace: Duration,
    pub alerts: Vec<String>,
    /// Hooks told of its changes.
    pub notify: Vec<String>,
    pub retire_after: crate::notify::RetireAfter,
    /// `retire_when = "unused"`: retire by the provider's evidence of use.
    pub usage_gate: Option<crate::policy::usage::Gate>,
    /// `consumers = "external-secrets"`: how often the operator copies it (`refresh_interval`).
    pub external_secrets_refresh: Option<Duration>,
    pub retry: RetryPolicy,
    /// SHA-256 of the settings that decide when it is due: a change recomputes `next_due_at`.
    pub schedule_hash: String,
}

impl Credential {
    pub fn provider(&self) -> &'static str {
        self.rotator.kind()
    }

    /// The settings of a credential people rotate by hand (`manual` rotator).
    pub fn by_hand(&self) -> Option<&rotor_rotators::manual::ManualConfig> {
        match &self.rotator {
            RotatorConfig::Manual(m) => Some(m.as_ref()),
            _ => None,
        }
    }
}

impl Config {
    pub fn new(
        store: StoreConfig,
        vaults: BTreeMap<String, VaultConfig>,
        alerts: BTreeMap<String, AlertConfig>,
        credentials: Vec<Credential>,
        sources: Vec<PathBuf>,
    ) -> Self {
        let count = u32::try_from(credentials.len()).expect("fewer than 4 billion credentials");
        let mut by_id: Vec<u32> = (0..count).collect();
        by_id
            .sort_unstable_by(|&a, &b| credentials[a as usize].id.cmp(&credentials[b as usize].id));
        Config {
            store,
            vaults,
            alerts,
            hooks: BTreeMap::new(),
            credentials,
            sources,
            drill: DrillConfig::default(),
            limits: LimitsConfig::default(),
            metrics: MetricsConfig::default(),
            warnings: Vec::new(),
            by_id,
        }
    }

    pub fn credential(&self, id: &str) -> Option<&Credential> {
        self.index_of(id).map(|i| &self.credentials[i])
    }

    /// Where credential `id` is in `credentials`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        let found = self
            .by_id
            .binary_search_by(|&i| self.credentials[i as usize].id.as_str().cmp(id));
        found.ok().map(|k| self.by_id[k] as usize)
    }
}

impl Subscribers for Config {
    fn retires_when_notified(&self, credential: &str) -> bool {
        self.credential(credential)
            .is_some_and(|c| c.retire_after == RetireAfter::Notified)
    }

    fn provider(&self, credential: &str) -> Option<&str> {
        self.credential(credential).map(|c| c.provider())
    }

    fn alert_routes(&self, credential: &str) -> &[String] {
        self.credential(credential)
            .map_or(&[], |c| c.alerts.as_slice())
    }
}

/// Default grace when neither the credential nor `[defaults]` sets one.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);

/// The External Secrets Operator's default `refreshInterval`.
pub const DEFAULT_EXTERNAL_SECRETS_REFRESH: Duration = Duration::from_secs(3600);
