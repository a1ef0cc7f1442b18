//! Alerts: telling people that a rotation failed, and that it recovered.
//!
//! Raising writes the alert to the store (deduplicated per credential and condition) with one
//! outbox row per sink, in one transaction; delivery reads the outbox, sends, and retries a sink
//! that is down with backoff, so an alert survives a restart. The next success resolves every
//! condition of the credential. Alertmanager forgets an alert that is not repeated, so active
//! alerts are re-sent to it periodically (`refresh`).

mod sink;

pub use sink::{signature, standard_headers};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use rotor_rotators::kinds::Settings;

pub use sink::{
    AlertmanagerAlertConfig, LogAlertConfig, PagerdutyAlertConfig, SlackAlertConfig,
    WebhookAlertConfig,
};

rotor_rotators::kinds! {
    /// An alert sink, tagged by `kind`.
    pub enum AlertConfig: AlertSettings {
        /// POST a JSON event to a URL, optionally signed with HMAC-SHA256.
        "webhook" => Webhook(WebhookAlertConfig),
        /// A Slack incoming webhook.
        "slack" => Slack(SlackAlertConfig),
        /// Prometheus Alertmanager, API v2 (`POST /api/v2/alerts`).
        "alertmanager" => Alertmanager(AlertmanagerAlertConfig),
        /// PagerDuty Events API v2 (trigger and resolve with a dedup key).
        "pagerduty" => Pagerduty(PagerdutyAlertConfig),
        /// Write alerts to rotor's own log at error level (and resolutions at info level).
        "log" => Log(LogAlertConfig),
    }
}

/// What every alert sink's settings say about themselves: what serde cannot check and the
/// secret references they read. Sinks need no privilege of rotor's to grant.
pub trait AlertSettings: Settings {}
use crate::outbox::{self, Attempt, Failed};
use crate::store::outbox::{Channel as Table, Message};
use crate::store::{Store, StoreError};
use crate::vault::Vaults;

/// What went wrong, for whom, and what to do. Never carries secret material: `cause` is a
/// rotor error message, which by construction names paths and steps, not values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub credential_id: String,
    pub provider: String,
    pub condition: Condition,
    pub step: String,
    pub attempt: i64,
    pub run_id: String,
    pub cause: String,
    pub action: String,
    /// When it was first raised (RFC 3339).
    #[serde(default)]
    pub raised_at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// A failure before promotion: the candidate was removed, the current credential kept.
    RolledBack,
    /// Transient failures went on until the retry budget ran out.
    RetriesExhausted,
    /// A failure after promotion, or a rollback that could not finish: a person must act.
    Stuck,
    /// A step after promotion (or of a rollback) keeps failing on a transient cause past its
    /// retry budget: rotor keeps retrying at the capped backoff and resolves this by itself
    /// when the run completes. A person may fix the cause sooner.
    Retrying,
    /// Someone changed the provider or vault out of band.
    Conflict,
    /// The current credential is older than its `max_age`.
    TooOld,
    /// The credential was due over an hour ago and no rotation has started: its window was
    /// missed (no replica running, or runs that cannot start).
    Overdue,
    /// No drill for longer than `[drill] every`: only a drill resolves it.
    DrillOverdue,
    /// A credential rotated by hand is due soon (`remind_before` its deadline).
    ManualDue,
    /// A credential rotated by hand is past its deadline.
    ManualOverdue,
    /// A `notify` hook keeps failing: consumers may still use the previous credential.
    NotifyFailed,
    /// Grace ended (`retire_when = "unused"`) while the provider still saw the replaced
    /// credential in use: the alert names who. The run's completion resolves it.
    StillUsed,
}

impl Condition {
    /// Every condition, in the order the metrics list them.
    pub const ALL: [Condition; 12] = [
        Condition::RolledBack,
        Condition::RetriesExhausted,
        Condition::Stuck,
        Condition::Retrying,
        Condition::Conflict,
        Condition::TooOld,
        Condition::Overdue,
        Condition::DrillOverdue,
        Condition::ManualDue,
        Condition::ManualOverdue,
        Condition::NotifyFailed,
        Condition::StillUsed,
    ];

    /// What a completed rotation (or a confirmed one by hand) puts right: everything but an
    /// overdue drill, which only a drill resolves, and a failing hook, which only its
    /// delivery resolves.
    pub const RESOLVED_BY_ROTATION: &'static [Condition] = &[
        Condition::RolledBack,
        Condition::RetriesExhausted,
        Condition::Stuck,
        Condition::Retrying,
        Condition::Conflict,
        Condition::TooOld,
        Condition::Overdue,
        Condition::ManualDue,
        Condition::ManualOverdue,
        Condition::StillUsed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Condition::RolledBack => "rolled_back",
            Condition::RetriesExhausted => "retries_exhausted",
            Condition::Stuck => "stuck",
            Condition::Retrying => "retrying",
            Condition::Conflict => "conflict",
            Condition::TooOld => "too_old",
            Condition::Overdue => "overdue",
            Condition::DrillOverdue => "drill_overdue",
            Condition::ManualDue => "manual_due",
            Condition::ManualOverdue => "manual_overdue",
            Condition::NotifyFailed => "notify_failed",
            Condition::StillUsed => "still_used",
        }
    }

    /// The alert's name in Alertmanager and the Prometheus rules.
    pub fn alertname(self) -> &'static str {
        match self {
            Condition::RolledBack | Condition::RetriesExhausted | Condition::Conflict => {
                "RotorRotationFailed"
            }
            Condition::Stuck => "RotorStuckRun",
            Condition::Retrying => "RotorRunRetrying",
            Condition::TooOld => "RotorCredentialTooOld",
            Condition::Overdue => "RotorRotationOverdue",
            Condition::DrillOverdue => "RotorDrillOverdue",
            Condition::ManualDue => "RotorManualRotationDue",
            Condition::ManualOverdue => "RotorManualRotationOverdue",
            Condition::NotifyFailed => "RotorNotifyFailed",
            Condition::StillUsed => "RotorPreviousCredentialStillUsed",
        }
    }

    pub fn summary(self) -> &'static str {
        match self {
            Condition::RolledBack => "rotation failed and was rolled back",
            Condition::RetriesExhausted => "rotation failed: retries exhausted, rolled back",
            Condition::Stuck => "rotation is stuck and needs a person",
            Condition::Retrying => {
                "rotation keeps failing on a transient cause; rotor keeps retrying"
            }
            Condition::Conflict => "rotation stopped: the credential was changed outside rotor",
            Condition::TooOld => "credential is older than its max_age",
            Condition::Overdue => "rotation window missed: due over an hour ago, not started",
            Condition::DrillOverdue => "no rotation drill within `[drill] every`",
            Condition::ManualDue => "must be rotated by hand soon",
            Condition::ManualOverdue => "is past due: it must be rotated by hand now",
            Condition::NotifyFailed => "rotated, but a consumer hook keeps failing",
            Condition::StillUsed => "grace is over and the replaced credential is still in use",
        }
    }
}

/// Raises, resolves and delivers alerts for one config.
#[derive(Clone)]
pub struct Alerter {
    sinks: BTreeMap<String, AlertConfig>,
    vaults: Arc<Vaults>,
    client: reqwest::Client,
    /// The clients of sinks that name a `ca_file`, by sink name.
    own_clients: BTreeMap<String, reqwest::Client>,
}

impl std::fmt::Debug for Alerter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerter")
            .field("sinks", &self.sinks.keys())
            .finish()
    }
}

/// The sinks an alert goes to: the credential's routes, or `log` when it has none (a failure
/// must never pass in silence).
fn sinks_for(routes: &[String]) -> Vec<String> {
    if routes.is_empty() {
        vec![DEFAULT_SINK.to_owned()]
    } else {
        routes.to_vec()
    }
}

/// The implicit sink of credentials without routes: rotor's log.
const DEFAULT_SINK: &str = "(log)";

/// One delivery attempt may take this long before the sink counts as down.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// A client for alert deliveries: trusting the system roots, or only the CAs in a sink's
/// `ca_file`. A CA file that cannot be read leaves that sink a client that trusts nothing,
/// so its deliveries fail (and are retried) rather than trust more than was configured.
fn delivery_client(ca: Option<(&str, &std::path::Path)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .timeout(DELIVERY_TIMEOUT)
        .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
        .redirect(rotor_rotators::net::same_origin_redirects());
    if let Some((sink, file)) = ca {
        let certs = rotor_rotators::net::ca_bundle(file).unwrap_or_else(|e| {
                tracing::error!(sink, file = %file.display(), error = %e, "the alert sink's ca_file is unusable: its deliveries will fail until it is fixed");
                Vec::new()
            });
        builder = builder.tls_certs_only(certs);
    }
    builder.build().expect("the HTTP client builds")
}

impl Alerter {
    /// An alerter for these sinks.
    pub fn new(sinks: BTreeMap<String, AlertConfig>, vaults: Arc<Vaults>) -> Self {
        let client = delivery_client(None);
        let own_clients = sinks
            .iter()
            .filter_map(|(name, config)| {
                let file = match config {
                    AlertConfig::Webhook(c) => c.ca_file.as_deref(),
                    AlertConfig::Alertmanager(c) => c.ca_file.as_deref(),
                    _ => None,
                }?;
                Some((name.clone(), delivery_client(Some((name, file)))))
            })
            .collect();
        Self {
            sinks,
            vaults,
            client,
            own_clients,
        }
    }

    /// The client that delivers to sink `name`: its own when it names a `ca_file`.
    fn client_for(&self, name: &str) -> &reqwest::Client {
        self.own_clients.get(name).unwrap_or(&self.client)
    }

    /// Raises `alert` on the credential's routes (once per credential and condition until it
    /// is resolved), then tries to deliver at once. Returns whether it was newly raised.
    pub async fn raise(
        &self,
        store: &Store,
        alert: &Alert,
        routes: &[String],
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut alert = alert.clone();
        alert.raised_at = crate::clock::rfc3339(now);
        let payload = serde_json::to_string(&alert).expect("an alert serializes");
        let raised = store
            .raise_alert(
                &alert.credential_id,
                alert.condition.as_str(),
                &payload,
                &sinks_for(routes),
                now,
            )
            .await?;
        if raised {
            self.deliver_due(store, now).await?;
        } else {
            tracing::debug!(credential = %alert.credential_id, condition = alert.condition.as_str(), "alert already raised");
        }
        Ok(raised)
    }

    /// Resolves those of `conditions` raised for the credential, then tries to deliver.
    pub async fn resolve(
        &self,
        store: &Store,
        credential_id: &str,
        conditions: &[Condition],
        routes: &[String],
        now: i64,
    ) -> Result<(), StoreError> {
        let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
        let resolved = store
            .resolve_alerts(credential_id, &names, &sinks_for(routes), now)
            .await?;
        if !resolved.is_empty() {
            tracing::info!(credential = credential_id, conditions = ?resolved, "alerts resolved");
            self.deliver_due(store, now).await?;
        }
        Ok(())
    }

    /// Sends every alert delivery that is due; a sink that fails is retried later with backoff.
    pub async fn deliver_due(&self, store: &Store, now: i64) -> Result<outbox::Pass, StoreError> {
        outbox::deliver_due(store, self, &|| now, None).await
    }

    /// Re-sends raised alerts to Alertmanager sinks, which drop alerts that are not repeated.
    /// `routes` gives a credential's routes (the config's, which this module does not import).
    pub async fn refresh<'c>(
        &self,
        store: &Store,
        routes: impl Fn(&str) -> &'c [String],
        now: i64,
    ) -> Result<(), StoreError> {
        for active in store.active_alerts().await? {
            let Ok(alert) = serde_json::from_str::<Alert>(&active.payload) else {
                continue;
            };
            for name in routes(&active.credential_id) {
                if let Some(config @ AlertConfig::Alertmanager(_)) = self.sinks.get(name)
                    && let Err(failed) = sink::send(
                        self.client_for(name),
                        &self.vaults,
                        name,
                        config,
                        &alert,
                        false,
                        now,
                    )
                    .await
                {
                    tracing::warn!(sink = %name, error = %failed.error, "could not remind Alertmanager");
                }
            }
        }
        Ok(())
    }
}

/// Alerts are the outbox's `alert` rows: one per raise or resolve and sink.
impl outbox::Channel for Alerter {
    const TABLE: Table = Table::Alert;

    fn attempt_timeout(&self, _sink: &str) -> Duration {
        DELIVERY_TIMEOUT
    }

    async fn send(&self, delivery: &Message, now: i64) -> Attempt {
        let alert: Alert = match serde_json::from_str(&delivery.payload) {
            Ok(alert) => alert,
            Err(e) => return Attempt::Dropped(format!("undecodable alert: {e}")),
        };
        let resolve = delivery.event == "resolve";
        if delivery.target == DEFAULT_SINK {
            sink::log(&delivery.target, &alert, resolve);
            return Attempt::Delivered("logged".to_owned());
        }
        let Some(config) = self.sinks.get(&delivery.target) else {
            // An alert is never dropped: the sink may come back with the next reload.
            return Attempt::Failed(Failed {
                outcome: "no such sink".to_owned(),
                error: format!(
                    "alert sink `{}` is no longer configured; add it back or the delivery waits",
                    delivery.target
                ),
            });
        };
        let client = self.client_for(&delivery.target);
        match sink::send(
            client,
            &self.vaults,
            &delivery.target,
            config,
            &alert,
            resolve,
            now,
        )
        .await
        {
            Ok(outcome) => Attempt::Delivered(outcome),
            Err(failed) => Attempt::Failed(failed),
        }
    }
}
