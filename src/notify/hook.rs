//! Hooks: how consumers hear of a promotion or a retirement. Each kind's settings, checked
//! as the config is loaded; `deliver` sends one notification to one hook.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use rotor_rotators::SecretRef;
use rotor_rotators::duration::Duration;
use rotor_rotators::kinds::Settings;
use serde::{Deserialize, Serialize};

use super::EventKind;

rotor_rotators::kinds! {
    /// A hook, tagged by `kind`.
    pub enum HookConfig: HookSettings {
        /// POST the event as JSON, signed with HMAC-SHA256 (`X-Rotor-Signature`).
        "webhook" => Webhook(WebhookHook),
        /// Run a program with the event as JSON on stdin (e.g. `systemctl reload app`).
        "command" => Command(CommandHook),
        /// Patch a Deployment's pod-template annotation so that it rolls out (like `kubectl
        /// rollout restart`), through the Kubernetes API with the pod's service account.
        "kubernetes_rollout" => KubernetesRollout(KubernetesRolloutHook),
    }
}

/// What every hook kind's settings say about themselves: what serde cannot check and the
/// secret references they read.
pub trait HookSettings: Settings {}

/// `webhook`: a signed JSON event per change.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookHook {
    /// Where the event is POSTed: https, or http to a receiver you trust the path to.
    pub url: String,
    /// The HMAC key: `X-Rotor-Signature: sha256=HEX(HMAC-SHA256(secret, body))`. Required, so
    /// that a receiver can tell rotor from anyone else who can reach it.
    pub secret: SecretRef,
    /// How long one attempt may take. Default "10s".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
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
    /// The Deployment's namespace.
    pub namespace: String,
    /// The Deployment whose pods read the credential.
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
pub(super) const SERVICE_ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl HookConfig {
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
}

impl Settings for WebhookHook {
    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        rotor_rotators::net::endpoint("url", Some(self.url.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        url_problem("url", &self.url, false).map_or(Ok(()), Err)
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        vec![&self.secret]
    }
}

impl HookSettings for WebhookHook {}

impl Settings for CommandHook {
    fn validate(&self) -> Result<(), String> {
        match self.command.first() {
            None => Err("`command` is empty; give the program and its arguments".into()),
            Some(program) if program.is_empty() => Err("`command` names no program".into()),
            Some(_) => match self
                .env
                .keys()
                .find(|k| k.is_empty() || k.contains('=') || k.starts_with("ROTOR_"))
            {
                Some(k) => Err(format!(
                    "`env` key {k:?} is not allowed (empty, `=`, or rotor's own ROTOR_*)"
                )),
                None => Ok(()),
            },
        }
    }
}

impl HookSettings for CommandHook {}

impl Settings for KubernetesRolloutHook {
    fn validate(&self) -> Result<(), String> {
        let problem = [
            ("namespace", &self.namespace),
            ("deployment", &self.deployment),
        ]
        .into_iter()
        .find_map(|(field, name)| dns_label_problem(field, name))
        .or_else(|| self.annotation.as_deref().and_then(annotation_problem))
        .or_else(|| {
            self.api_url
                .as_deref()
                .and_then(|u| url_problem("api_url", u, true))
        });
        problem.map_or(Ok(()), Err)
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.token.iter().collect()
    }
}

impl HookSettings for KubernetesRolloutHook {}

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
