//! Notifications: telling consumers that a credential changed, so that a rotation ends when the
//! applications use the new credential, not when the vault holds it.
//!
//! The engine queues an event per hook when a run promotes (`promoted`) and when it retires
//! the old credential (`retired`), idempotently, in the store's outbox. Delivery happens
//! outside the run: a hook that fails is retried with backoff, alerted (`notify_failed`) and
//! shown in `status`, and never rolls a promoted credential back. With `retire_after =
//! "notified"` a run's grace ends as soon as every hook took the `promoted` event (and at the
//! end of `grace` at the latest).

mod deliver;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::alert::{Alert, Alerter, Condition};
use crate::config::{Config, Credential, Duration, SecretRef};
use crate::store::notify::DROPPED;
use crate::store::{Store, StoreError};
use crate::vault::Vaults;

/// A hook, tagged by `kind`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum HookConfig {
    /// POST the event as JSON, signed with HMAC-SHA256 (`X-Rotor-Signature`).
    Webhook(WebhookHook),
    /// Run a program with the event as JSON on stdin (e.g. `systemctl reload app`).
    Command(CommandHook),
    /// Patch a Deployment's pod-template annotation so that it rolls out (like `kubectl
    /// rollout restart`), through the Kubernetes API with the pod's service account.
    KubernetesRollout(KubernetesRolloutHook),
}

/// `webhook`: a signed JSON event per change.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookHook {
    pub url: String,
    /// The HMAC key: `X-Rotor-Signature: sha256=HEX(HMAC-SHA256(secret, body))`. Required, so
    /// that a receiver can tell rotor from anyone else who can reach it.
    pub secret: SecretRef,
    /// How long one attempt may take. Default "10s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// `command`: a program run without a shell, with a clean environment.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandHook {
    /// The program and its arguments, e.g. `["/usr/bin/systemctl", "reload", "payments-api"]`.
    pub command: Vec<String>,
    /// Killed (with its process group) after this long. Default "30s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Extra environment variables (not secrets: a config file holds none). rotor's own
    /// environment is not passed on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// `kubernetes_rollout`: a strategic-merge PATCH of
/// `/apis/apps/v1/namespaces/NAMESPACE/deployments/DEPLOYMENT`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KubernetesRolloutHook {
    pub namespace: String,
    pub deployment: String,
    /// The API server. Default: in-cluster, from `KUBERNETES_SERVICE_HOST` and `_PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The bearer token, read at each delivery (the kubelet rotates it). Default: the
    /// service account's token file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// The API server's CA bundle. Default: the service account's `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// The pod-template annotation set to the new version. Default
    /// `rotor.dev/rotated-CREDENTIAL` (the id with `/` as `.`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// How long one attempt may take. Default "10s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// The in-cluster service account, as Kubernetes mounts it into every pod.
const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl HookConfig {
    pub const KINDS: &'static [&'static str] = &["webhook", "command", "kubernetes_rollout"];

    pub fn kind(&self) -> &'static str {
        match self {
            HookConfig::Webhook(_) => "webhook",
            HookConfig::Command(_) => "command",
            HookConfig::KubernetesRollout(_) => "kubernetes_rollout",
        }
    }

    pub fn deserialize_kind<'de, D: serde::Deserializer<'de>>(
        kind: &str,
        fields: D,
    ) -> Result<Option<Self>, D::Error> {
        Ok(Some(match kind {
            "webhook" => HookConfig::Webhook(WebhookHook::deserialize(fields)?),
            "command" => HookConfig::Command(CommandHook::deserialize(fields)?),
            "kubernetes_rollout" => {
                HookConfig::KubernetesRollout(KubernetesRolloutHook::deserialize(fields)?)
            }
            _ => return Ok(None),
        }))
    }

    /// How long one attempt may take.
    pub fn timeout(&self) -> StdDuration {
        let (set, default) = match self {
            HookConfig::Webhook(h) => (h.timeout, 10),
            HookConfig::Command(h) => (h.timeout, 30),
            HookConfig::KubernetesRollout(h) => (h.timeout, 10),
        };
        set.map_or(StdDuration::from_secs(default), |d| d.as_std())
    }

    /// Whether this hook hears of `event`. A rollout only follows a promotion: the retirement
    /// changes nothing pods read.
    pub fn wants(&self, event: EventKind) -> bool {
        !matches!(
            (self, event),
            (HookConfig::KubernetesRollout(_), EventKind::Retired)
        )
    }

    /// The secret references it reads (checked against declared vaults).
    pub fn secret_refs(&self) -> Vec<&SecretRef> {
        match self {
            HookConfig::Webhook(h) => vec![&h.secret],
            HookConfig::Command(_) => vec![],
            HookConfig::KubernetesRollout(h) => h.token.iter().collect(),
        }
    }

    /// What serde cannot check.
    pub fn problem(&self) -> Option<String> {
        match self {
            HookConfig::Webhook(h) => url_problem("url", &h.url, false),
            HookConfig::Command(h) => match h.command.first() {
                None => Some("`command` is empty; give the program and its arguments".into()),
                Some(program) if program.is_empty() => Some("`command` names no program".into()),
                Some(_) => h
                    .env
                    .keys()
                    .find(|k| k.is_empty() || k.contains('=') || k.starts_with("ROTOR_"))
                    .map(|k| {
                        format!(
                            "`env` key {k:?} is not allowed (empty, `=`, or rotor's own ROTOR_*)"
                        )
                    }),
            },
            HookConfig::KubernetesRollout(h) => {
                if let Some(problem) = [("namespace", &h.namespace), ("deployment", &h.deployment)]
                    .into_iter()
                    .find_map(|(field, name)| dns_label_problem(field, name))
                {
                    return Some(problem);
                }
                if let Some(a) = &h.annotation
                    && let Some(problem) = annotation_problem(a)
                {
                    return Some(problem);
                }
                h.api_url
                    .as_deref()
                    .and_then(|u| url_problem("api_url", u, true))
            }
        }
    }
}

/// A URL that parses, holds no credentials, and is https; http is allowed for a webhook, and
/// with `https_only` (a bearer token travels) only for a server on loopback.
fn url_problem(field: &str, url: &str, https_only: bool) -> Option<String> {
    match reqwest::Url::parse(url) {
        Err(e) => Some(format!("`{field}` {url:?} is not a URL: {e}")),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => Some(format!(
            "`{field}` holds credentials; a config file holds no secrets"
        )),
        Ok(u) if u.scheme() == "https" => None,
        Ok(u) if u.scheme() == "http" && !https_only => None,
        Ok(u) if u.scheme() == "http" && is_loopback(&u) => None,
        Ok(u) => Some(format!(
            "`{field}` must be https (http only for a server on loopback), not {}",
            u.scheme()
        )),
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Namespaces and Deployment names are DNS labels / subdomains: lowercase, digits, `-`, `.`.
fn dns_label_problem(field: &str, name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !name.starts_with(['-', '.'])
        && !name.ends_with(['-', '.']);
    (!ok).then(|| {
        format!("`{field}` {name:?} is not a Kubernetes object name (lowercase letters, digits, `-`, `.`)")
    })
}

/// An annotation key: an optional DNS prefix and `/`, then a name of at most 63 characters.
fn annotation_problem(key: &str) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or(key);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && key.matches('/').count() <= 1;
    (!ok).then(|| format!("`annotation` {key:?} is not a Kubernetes annotation key"))
}

/// The default annotation of a credential: `rotor.dev/rotated-ID`, the id made a valid name.
pub fn default_annotation(credential_id: &str) -> String {
    let name: String = format!("rotated-{credential_id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '.'
            }
        })
        .take(63)
        .collect();
    format!(
        "rotor.dev/{}",
        name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
    )
}

/// When a run's grace ends.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RetireAfter {
    /// After `grace`.
    #[default]
    Grace,
    /// As soon as every `notify` hook took the `promoted` event, and after `grace` at the
    /// latest.
    Notified,
}

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The new version is current; the previous one still works (grace).
    Promoted,
    /// The previous version was retired at the provider and dropped from the vault.
    Retired,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Promoted => "promoted",
            EventKind::Retired => "retired",
        }
    }
}

/// One change of a credential, as hooks receive it. Versions and fingerprints identify the
/// secret; the secret itself is never in an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event: EventKind,
    pub credential_id: String,
    pub provider: String,
    pub vault: String,
    pub vault_path: String,
    /// The version consumers read now.
    pub version: Option<String>,
    /// `sha256:HEX` of the current version.
    pub fingerprint: Option<String>,
    /// The version this run replaced (still valid after `promoted`, gone after `retired`).
    pub previous_version: Option<String>,
    pub previous_fingerprint: Option<String>,
    pub run_id: String,
    /// When it happened (RFC 3339).
    pub occurred_at: String,
}

impl Event {
    /// The stage change in the vault's words.
    fn stage_change(&self) -> serde_json::Value {
        match self.event {
            EventKind::Promoted => serde_json::json!({
                "current": self.version, "previous": self.previous_version,
            }),
            EventKind::Retired => serde_json::json!({
                "current": self.version, "retired": self.previous_version,
            }),
        }
    }

    /// The JSON hooks receive: the event, its stage change, and a delivery id that stays the
    /// same across retries (receivers deduplicate on it).
    pub fn body(&self, hook: &str) -> serde_json::Value {
        serde_json::json!({
            "type": format!("credential.{}", self.event.as_str()),
            "delivery_id": delivery_id(&self.run_id, self.event, hook),
            "hook": hook,
            "credential_id": self.credential_id,
            "provider": self.provider,
            "vault": self.vault,
            "vault_path": self.vault_path,
            "stage_change": self.stage_change(),
            "version": self.version,
            "fingerprint": self.fingerprint,
            "previous_version": self.previous_version,
            "previous_fingerprint": self.previous_fingerprint,
            "run_id": self.run_id,
            "occurred_at": self.occurred_at,
        })
    }
}

pub fn delivery_id(run_id: &str, event: EventKind, hook: &str) -> String {
    format!("{run_id}/{}/{hook}", event.as_str())
}

/// Rounds of one delivery pass (each may free the next event of a credential to a hook).
const MAX_BATCHES: usize = 8;

/// A failing hook is alerted once it failed this many times in a row (a blip is not a page).
const ALERT_AFTER_FAILURES: i64 = 3;

/// What one attempt came to, for the outbox and `status`: `HTTP 200`, `exit 0` ...
pub type Outcome = String;

/// A failed attempt: its outcome and what to do about it.
#[derive(Debug)]
pub struct Failed {
    pub outcome: Outcome,
    pub error: String,
}

/// Queues and delivers notifications for one config.
#[derive(Clone)]
pub struct Notifier {
    hooks: Arc<BTreeMap<String, HookConfig>>,
    vaults: Arc<Vaults>,
    client: reqwest::Client,
    /// Signalled when notifications were queued, so that the outbox delivers them at once.
    queued: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("hooks", &self.hooks.keys())
            .finish()
    }
}

/// What one delivery pass did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pass {
    /// Delivered, or dropped because the hook is gone.
    pub delivered: usize,
    pub failed: usize,
    /// Runs made ready because their hooks were all notified.
    pub woken: usize,
}

impl Notifier {
    pub fn new(config: &Config, vaults: Arc<Vaults>) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client builds");
        Self {
            hooks: Arc::new(config.hooks.clone()),
            vaults,
            client,
            queued: Arc::default(),
        }
    }

    /// Completes when notifications were queued since the last time it completed.
    pub async fn queued(&self) {
        self.queued.notified().await
    }

    /// Queues `event` for each of the credential's hooks that wants it. Idempotent.
    pub async fn queue(
        &self,
        store: &Store,
        credential: &Credential,
        event: &Event,
        now: i64,
    ) -> Result<(), StoreError> {
        let hooks: Vec<String> = credential
            .notify
            .iter()
            .filter(|name| self.hooks.get(*name).is_some_and(|h| h.wants(event.event)))
            .cloned()
            .collect();
        if hooks.is_empty() {
            return Ok(());
        }
        let payload = serde_json::to_string(event).expect("an event serializes");
        store
            .queue_notifications(
                &event.run_id,
                &credential.id,
                event.event.as_str(),
                &hooks,
                &payload,
                now,
            )
            .await?;
        self.queued.notify_one();
        tracing::debug!(credential = %credential.id, event = event.event.as_str(), hooks = ?hooks, "notifications queued");
        Ok(())
    }

    /// Delivers every notification that is due (of one credential with `only`). A failure is
    /// retried later with backoff and, when it persists, alerted.
    pub async fn deliver_due(
        &self,
        store: &Store,
        config: &Config,
        alerter: &Alerter,
        now: impl Fn() -> i64,
        only: Option<&str>,
    ) -> Result<Pass, StoreError> {
        let mut pass = Pass::default();
        // A hook hears of a credential's changes in order, so the next event of one may
        // become due only when this batch delivered the one before it: fetch again then.
        for _ in 0..MAX_BATCHES {
            let batch = store.due_notifications(now(), 100).await?;
            let before = pass;
            for n in batch {
                self.deliver_one(store, config, alerter, &now, only, n, &mut pass)
                    .await?;
            }
            if pass.delivered == before.delivered {
                break;
            }
        }
        Ok(pass)
    }

    #[allow(clippy::too_many_arguments)]
    async fn deliver_one(
        &self,
        store: &Store,
        config: &Config,
        alerter: &Alerter,
        now: &impl Fn() -> i64,
        only: Option<&str>,
        n: crate::store::notify::Notification,
        pass: &mut Pass,
    ) -> Result<(), StoreError> {
        {
            if only.is_some_and(|id| id != n.credential_id) {
                return Ok(());
            }
            let Some(hook) = self.hooks.get(&n.hook) else {
                tracing::warn!(hook = %n.hook, credential = %n.credential_id, run = %n.run_id, "hook is no longer configured; its notification is dropped");
                store
                    .notification_delivered(&n, DROPPED, true, now())
                    .await?;
                pass.delivered += 1;
                return Ok(());
            };
            // Past the attempt's own timeout: a process that died mid-attempt holds it no longer.
            let claimed_until = now() + hook.timeout().as_millis() as i64 + 5_000;
            if !store.claim_notification(&n, claimed_until).await? {
                return Ok(());
            }
            let event: Event = match serde_json::from_str(&n.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(id = n.id, error = %e, "undecodable event in the outbox; dropped");
                    store
                        .notification_delivered(&n, DROPPED, true, now())
                        .await?;
                    pass.delivered += 1;
                    return Ok(());
                }
            };
            let span = tracing::info_span!(
                "notify",
                credential = %n.credential_id,
                hook = %n.hook,
                kind = hook.kind(),
                event = %n.event,
                run = %n.run_id,
                attempt = n.attempts + 1,
            );
            let result = deliver::send(&self.client, &self.vaults, &n.hook, hook, &event)
                .instrument(span.clone())
                .await;
            let credential = config.credential(&n.credential_id);
            match result {
                Ok(outcome) => {
                    let wake = credential.is_some_and(|c| c.retire_after == RetireAfter::Notified);
                    if store
                        .notification_delivered(&n, &outcome, wake, now())
                        .await?
                    {
                        pass.woken += 1;
                    }
                    pass.delivered += 1;
                    span.in_scope(|| tracing::info!(outcome = %outcome, "consumer notified"));
                    if !store.notifications_failing(&n.credential_id).await? {
                        let routes = credential.map(|c| c.alerts.as_slice()).unwrap_or(&[]);
                        alerter
                            .resolve(
                                store,
                                &n.credential_id,
                                &[Condition::NotifyFailed],
                                routes,
                                now(),
                            )
                            .await?;
                    }
                }
                Err(failed) => {
                    pass.failed += 1;
                    let failures = n.failures + 1;
                    // 2 s, 4 s, 8 s ... capped at 5 minutes.
                    let backoff = (1_000i64 << failures.min(9) as u32).min(300_000);
                    span.in_scope(|| tracing::warn!(outcome = %failed.outcome, failures, retry_in_ms = backoff, error = %failed.error, "notification failed; will retry"));
                    store
                        .notification_failed(&n, &failed.outcome, &failed.error, now() + backoff)
                        .await?;
                    if failures >= ALERT_AFTER_FAILURES
                        && let Some(c) = credential
                    {
                        let alert = Alert {
                            credential_id: c.id.clone(),
                            provider: c.provider().to_owned(),
                            condition: Condition::NotifyFailed,
                            step: format!("notify:{}", n.event),
                            attempt: failures,
                            run_id: n.run_id.clone(),
                            cause: format!("hook `{}` ({}): {}", n.hook, hook.kind(), failed.error),
                            action: format!(
                                "the new credential stays current; fix hook `{}` (rotor retries it, see `rotor status {}`), or make its consumers reload by hand",
                                n.hook, c.id
                            ),
                            raised_at: String::new(),
                        };
                        alerter.raise(store, &alert, &c.alerts, now()).await?;
                    }
                }
            }
        }
        Ok(())
    }
}
