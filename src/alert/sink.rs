//! The wire formats of the alert sinks, each as its service documents it.

use hmac::{Hmac, KeyInit, Mac};
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::Sha256;

use super::{Alert, Condition};
use rotor_rotators::SecretRef;
use rotor_rotators::kinds::Settings;
use serde::{Deserialize, Serialize};

use super::{AlertConfig, AlertSettings};
use crate::outbox::{Failed, Outcome};
use crate::vault::{Vaults, resolve};

/// `webhook`: a JSON event per alert and resolution.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookAlertConfig {
    /// Where the event is POSTed (http or https, no credentials in it).
    pub url: String,
    /// Signs each body: Standard Webhooks headers (`webhook-id`, `webhook-timestamp`,
    /// `webhook-signature`; a `whsec_` secret is what their libraries take) and
    /// `X-Rotor-Signature: sha256=HEX(HMAC-SHA256(secret, body))`. Required unless `unsigned`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// Send alerts unsigned: a receiver then cannot tell rotor from anyone who can reach it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsigned: bool,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
    /// PEM bundle of the CA(s) that sign the receiver's certificate, replacing the system
    /// roots: for a receiver behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Settings for WebhookAlertConfig {
    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        rotor_rotators::net::endpoint("url", Some(self.url.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        if self.secret.is_none() && !self.unsigned {
            return Err(
                "`secret` is required, so that receivers can tell rotor's alerts from anyone else's; \
                 write `unsigned = true` to send them unsigned"
                    .into(),
            );
        }
        url_problem(&self.url)
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.secret.iter().collect()
    }
}

impl AlertSettings for WebhookAlertConfig {}

/// `slack`: the incoming-webhook URL is itself a secret.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SlackAlertConfig {
    /// The incoming webhook's URL, by reference: whoever has it can post to the channel.
    pub webhook_url: SecretRef,
}

impl Settings for SlackAlertConfig {
    fn secret_refs(&self) -> Vec<&SecretRef> {
        vec![&self.webhook_url]
    }
}

impl AlertSettings for SlackAlertConfig {}

/// `alertmanager`: the base URL (`http://alertmanager:9093`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerAlertConfig {
    /// Alertmanager's base URL; alerts go to `URL/api/v2/alerts`.
    pub url: String,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
    /// PEM bundle of the CA(s) that sign Alertmanager's certificate, replacing the system
    /// roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

impl Settings for AlertmanagerAlertConfig {
    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        rotor_rotators::net::endpoint("url", Some(self.url.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        url_problem(&self.url)
    }
}

impl AlertSettings for AlertmanagerAlertConfig {}

/// `pagerduty`: an Events API v2 integration.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PagerdutyAlertConfig {
    /// The integration's routing key.
    pub routing_key: SecretRef,
    /// The Events API endpoint. Default: PagerDuty's own.
    #[serde(default = "default_pagerduty_url")]
    pub url: String,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

fn default_pagerduty_url() -> String {
    "https://events.pagerduty.com/v2/enqueue".into()
}

impl Settings for PagerdutyAlertConfig {
    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        rotor_rotators::net::endpoint("url", Some(self.url.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        url_problem(&self.url)
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        vec![&self.routing_key]
    }
}

impl AlertSettings for PagerdutyAlertConfig {}

/// The `log` alert sink has no settings.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogAlertConfig {}

impl Settings for LogAlertConfig {}

impl AlertSettings for LogAlertConfig {}

/// A sink URL must parse, be http or https and hold no credentials.
fn url_problem(url: &str) -> Result<(), String> {
    match reqwest::Url::parse(url) {
        Err(e) => Err(format!("`url` {url:?} is not a URL: {e}")),
        Ok(u) if !u.username().is_empty() || u.password().is_some() => {
            Err("`url` holds credentials; a config file holds no secrets".into())
        }
        Ok(u) if !["http", "https"].contains(&u.scheme()) => {
            Err(format!("`url` must be http or https, not {}", u.scheme()))
        }
        Ok(_) => Ok(()),
    }
}

/// The key a sink deduplicates on: one incident per credential and condition.
pub fn dedup_key(alert: &Alert) -> String {
    format!("rotor/{}/{}", alert.credential_id, alert.condition.as_str())
}

fn severity(condition: Condition) -> &'static str {
    match condition {
        Condition::TooOld | Condition::Overdue | Condition::ManualDue | Condition::NotifyFailed => {
            "warning"
        }
        Condition::DrillOverdue => "info",
        _ => "critical",
    }
}

pub fn log(sink: &str, a: &Alert, resolve: bool) {
    if resolve {
        tracing::info!(sink, credential = %a.credential_id, condition = a.condition.as_str(), "alert resolved: rotation succeeded");
        return;
    }
    tracing::error!(
        sink,
        credential = %a.credential_id,
        provider = %a.provider,
        condition = a.condition.as_str(),
        step = %a.step,
        attempt = a.attempt,
        run = %a.run_id,
        cause = %a.cause,
        action = %a.action,
        "ALERT: {}",
        a.condition.summary()
    );
}

/// The `webhook` body: the alert's fields, what happened, and when.
pub fn webhook_body(a: &Alert, resolve: bool, now: i64) -> serde_json::Value {
    json!({
        "event": if resolve { "alert.resolved" } else { "alert.raised" },
        "dedup_key": dedup_key(a),
        "credential_id": a.credential_id,
        "provider": a.provider,
        "condition": a.condition.as_str(),
        "summary": a.condition.summary(),
        "step": a.step,
        "attempt": a.attempt,
        "run_id": a.run_id,
        "cause": a.cause,
        "action": a.action,
        "raised_at": a.raised_at,
        "sent_at": crate::clock::rfc3339(now),
    })
}

/// Slack's incoming-webhook format: `text` (the fallback) and `blocks`.
pub fn slack_body(a: &Alert, resolve: bool) -> serde_json::Value {
    let text = if resolve {
        format!(
            ":white_check_mark: rotor: `{}` rotated successfully; {} is resolved",
            a.credential_id,
            a.condition.as_str()
        )
    } else {
        format!(
            ":rotating_light: rotor: `{}` ({}): {} at step {} (attempt {}, run {})",
            a.credential_id,
            a.provider,
            a.condition.summary(),
            a.step,
            a.attempt,
            a.run_id
        )
    };
    let mut blocks = vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": text}})];
    if !resolve {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*Cause:* {}\n*What to do:* {}", a.cause, a.action)}}));
    }
    json!({ "text": text, "blocks": blocks })
}

/// Alertmanager API v2: a list of postable alerts; `endsAt` in the past resolves.
pub fn alertmanager_body(a: &Alert, resolve: bool, now: i64) -> serde_json::Value {
    let mut alert = json!({
        "labels": {
            "alertname": a.condition.alertname(),
            "service": "rotor",
            "credential": a.credential_id,
            "provider": a.provider,
            "condition": a.condition.as_str(),
            "severity": severity(a.condition),
        },
        "annotations": {
            "summary": format!("{}: {}", a.credential_id, a.condition.summary()),
            "description": a.cause,
            "action": a.action,
            "run_id": a.run_id,
            "step": a.step,
            "attempt": a.attempt.to_string(),
        },
        "startsAt": a.raised_at,
    });
    if resolve {
        alert["endsAt"] = json!(crate::clock::rfc3339(now));
    }
    json!([alert])
}

/// PagerDuty Events API v2: trigger with a dedup key, resolve with the same key.
pub fn pagerduty_body(a: &Alert, resolve: bool, routing_key: &str) -> serde_json::Value {
    if resolve {
        return json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup_key(a),
        });
    }
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(a),
        "payload": {
            "summary": format!("rotor: {}: {}", a.credential_id, a.condition.summary()),
            "source": "rotor",
            "severity": severity(a.condition),
            "timestamp": a.raised_at,
            "component": a.credential_id,
            "group": a.provider,
            "class": a.condition.as_str(),
            "custom_details": {
                "cause": a.cause,
                "action": a.action,
                "step": a.step,
                "attempt": a.attempt,
                "run_id": a.run_id,
            }
        }
    })
}

/// The Standard Webhooks headers (standardwebhooks.com) for one delivery: `webhook-id` (the
/// same on every retry, for receivers to drop replays), `webhook-timestamp` (seconds, now:
/// receivers refuse old ones) and `webhook-signature`, `v1,` and the base64 HMAC-SHA256 of
/// `ID.TIMESTAMP.BODY`. The key is the secret's bytes, or, for a `whsec_` secret (the form the
/// Standard Webhooks libraries take), its base64-decoded rest.
pub fn standard_headers(
    secret: &str,
    id: &str,
    now_ms: i64,
    body: &[u8],
) -> [(&'static str, String); 3] {
    use base64::Engine;
    let engine = base64::engine::general_purpose::STANDARD;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b64| engine.decode(b64).ok())
        .map(zeroize::Zeroizing::new)
        .unwrap_or_else(|| zeroize::Zeroizing::new(secret.as_bytes().to_vec()));
    let timestamp = (now_ms / 1000).to_string();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let signature = format!("v1,{}", engine.encode(mac.finalize().into_bytes()));
    [
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", timestamp),
        ("webhook-signature", signature),
    ]
}

/// `sha256=HEX` of HMAC-SHA256 over the body, as the `X-Rotor-Signature` header carries it.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Sends one alert (or its resolution) to one sink. The error names the sink and the cause,
/// never a URL that is itself a secret.
pub async fn send(
    client: &reqwest::Client,
    vaults: &Vaults,
    name: &str,
    config: &AlertConfig,
    alert: &Alert,
    resolve: bool,
    now: i64,
) -> Result<Outcome, Failed> {
    let secret = |reference| async move {
        self::resolve(reference, vaults).await.map_err(|e| Failed {
            outcome: "no secret".to_owned(),
            error: format!("alert sink `{name}`: {e}"),
        })
    };
    let request = match config {
        AlertConfig::Log(_) => {
            log(name, alert, resolve);
            return Ok("logged".to_owned());
        }
        AlertConfig::Webhook(c) => {
            let body = serde_json::to_vec(&webhook_body(alert, resolve, now)).expect("JSON");
            let mut request = client
                .post(&c.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if let Some(reference) = &c.secret {
                let key = secret(reference).await?;
                request = request.header(
                    "X-Rotor-Signature",
                    signature(key.expose_secret().as_bytes(), &body),
                );
                let id = format!(
                    "alert-{}-{}-{}",
                    alert.run_id,
                    alert.condition.as_str(),
                    if resolve { "resolved" } else { "raised" }
                );
                for (name, value) in standard_headers(key.expose_secret(), &id, now, &body) {
                    request = request.header(name, value);
                }
            }
            request.body(body)
        }
        AlertConfig::Slack(c) => {
            let url = secret(&c.webhook_url).await?;
            client
                .post(url.expose_secret())
                .json(&slack_body(alert, resolve))
        }
        AlertConfig::Alertmanager(c) => client
            .post(format!("{}/api/v2/alerts", c.url.trim_end_matches('/')))
            .json(&alertmanager_body(alert, resolve, now)),
        AlertConfig::Pagerduty(c) => {
            let key = secret(&c.routing_key).await?;
            client
                .post(&c.url)
                .json(&pagerduty_body(alert, resolve, key.expose_secret()))
        }
    };
    let response = request.send().await.map_err(|e| Failed {
        outcome: if e.is_timeout() {
            "timed out"
        } else {
            "unreachable"
        }
        .to_owned(),
        error: format!(
            "alert sink `{name}` ({}) is unreachable: {}",
            config.kind(),
            e.without_url()
        ),
    })?;
    let status = response.status();
    let outcome = format!("HTTP {}", status.as_u16());
    if status.is_success() {
        tracing::info!(sink = name, kind = config.kind(), credential = %alert.credential_id, condition = alert.condition.as_str(), resolve, "alert delivered");
        Ok(outcome)
    } else {
        Err(Failed {
            outcome,
            error: format!("alert sink `{name}` ({}) answered {status}", config.kind()),
        })
    }
}
