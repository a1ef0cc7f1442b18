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
pub mod hook;

pub use hook::{CommandHook, HookConfig, HookSettings, KubernetesRolloutHook, WebhookHook};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::Instrument;

use crate::alert::{Alert, Alerter, Condition};
use crate::outbox::{self, Attempt};
use crate::store::outbox::{Channel as Table, Message};
use crate::store::{Store, StoreError};
use crate::vault::Vaults;

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
    /// `hmac-sha256:HEX` of the current version: its keyed fingerprint (`crate::fingerprint`).
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

/// A failing hook is alerted once it failed this many times in a row (a blip is not a page).
const ALERT_AFTER_FAILURES: i64 = 3;

pub use crate::outbox::{Failed, Outcome, Pass};

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

/// What the notifier needs to know of the credentials it notifies for (the config answers).
pub trait Subscribers: Sync {
    /// Whether the credential's grace ends once its hooks took the `promoted` event
    /// (`retire_after = "notified"`).
    fn retires_when_notified(&self, credential: &str) -> bool;

    /// The credential's provider kind; `None` when it is no longer configured.
    fn provider(&self, credential: &str) -> Option<&str>;

    /// Where the credential's alerts go.
    fn alert_routes(&self, credential: &str) -> &[String];
}

impl Notifier {
    pub fn new(hooks: BTreeMap<String, HookConfig>, vaults: Arc<Vaults>) -> Self {
        let client = reqwest::Client::builder()
            .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
            .redirect(rotor_rotators::net::same_origin_redirects())
            .build()
            .expect("the HTTP client builds");
        Self {
            hooks: Arc::new(hooks),
            vaults,
            client,
            queued: Arc::default(),
        }
    }

    /// Completes when notifications were queued since the last time it completed.
    pub async fn queued(&self) {
        self.queued.notified().await
    }

    /// Queues `event` for each of the credential's hooks (`notify`) that wants it. Idempotent.
    pub async fn queue(
        &self,
        store: &Store,
        notify: &[String],
        event: &Event,
        now: i64,
    ) -> Result<(), StoreError> {
        let hooks: Vec<String> = notify
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
                &event.credential_id,
                event.event.as_str(),
                &hooks,
                &payload,
                now,
            )
            .await?;
        self.queued.notify_one();
        tracing::debug!(credential = %event.credential_id, event = event.event.as_str(), hooks = ?hooks, "notifications queued");
        Ok(())
    }

    /// Delivers every notification that is due (of one credential with `only`). A failure is
    /// retried later with backoff and, when it persists, alerted.
    pub async fn deliver_due(
        &self,
        store: &Store,
        subscribers: &dyn Subscribers,
        alerter: &Alerter,
        now: &(dyn Fn() -> i64 + Sync),
        only: Option<&str>,
    ) -> Result<Pass, StoreError> {
        let channel = Hooks {
            notifier: self,
            subscribers,
            alerter,
        };
        outbox::deliver_due(store, &channel, now, only).await
    }
}

/// Notifications are the outbox's `notify` rows: one per run, event and hook.
struct Hooks<'a> {
    notifier: &'a Notifier,
    subscribers: &'a dyn Subscribers,
    alerter: &'a Alerter,
}

impl outbox::Channel for Hooks<'_> {
    const TABLE: Table = Table::Notify;

    fn attempt_timeout(&self, hook: &str) -> Duration {
        self.notifier
            .hooks
            .get(hook)
            .map_or(Duration::ZERO, HookConfig::timeout)
    }

    async fn send(&self, n: &Message, _now: i64) -> Attempt {
        let Some(hook) = self.notifier.hooks.get(&n.target) else {
            return Attempt::Dropped(format!("hook `{}` is no longer configured", n.target));
        };
        let event: Event = match serde_json::from_str(&n.payload) {
            Ok(e) => e,
            Err(e) => return Attempt::Dropped(format!("undecodable event: {e}")),
        };
        let span = tracing::info_span!(
            "notify",
            credential = %n.credential_id,
            hook = %n.target,
            kind = hook.kind(),
            event = %n.event,
            run = %n.run_id,
            attempt = n.attempts + 1,
        );
        let sent = deliver::send(
            &self.notifier.client,
            &self.notifier.vaults,
            &n.target,
            hook,
            &event,
        )
        .instrument(span.clone())
        .await;
        match sent {
            Ok(outcome) => {
                span.in_scope(|| tracing::info!(outcome = %outcome, "consumer notified"));
                Attempt::Delivered(outcome)
            }
            Err(failed) => Attempt::Failed(failed),
        }
    }

    fn wakes_run(&self, n: &Message) -> bool {
        self.subscribers.retires_when_notified(&n.credential_id)
    }

    /// A hook that keeps failing is alerted (`notify_failed`); the alert is resolved once
    /// nothing of the credential's fails any more.
    async fn after(
        &self,
        store: &Store,
        n: &Message,
        attempt: &Attempt,
        failures: i64,
        now: i64,
    ) -> Result<(), StoreError> {
        let id = &n.credential_id;
        let routes = self.subscribers.alert_routes(id);
        let Attempt::Failed(failed) = attempt else {
            if !store.notifications_failing(id).await? {
                self.alerter
                    .resolve(store, id, &[Condition::NotifyFailed], routes, now)
                    .await?;
            }
            return Ok(());
        };
        let Some(provider) = self.subscribers.provider(id) else {
            return Ok(());
        };
        if failures < ALERT_AFTER_FAILURES {
            return Ok(());
        }
        let kind = self
            .notifier
            .hooks
            .get(&n.target)
            .map_or("?", HookConfig::kind);
        let alert = Alert {
            credential_id: id.clone(),
            provider: provider.to_owned(),
            condition: Condition::NotifyFailed,
            step: format!("notify:{}", n.event),
            attempt: failures,
            run_id: n.run_id.clone(),
            cause: format!("hook `{}` ({kind}): {}", n.target, failed.error),
            action: format!(
                "the new credential stays current; fix hook `{}` (rotor retries it, see `rotor status {id}`), or make its consumers reload by hand",
                n.target
            ),
            raised_at: String::new(),
        };
        self.alerter.raise(store, &alert, routes, now).await?;
        Ok(())
    }
}
