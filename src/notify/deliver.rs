//! One attempt at each kind of hook. Errors name the hook and what it answered, never a URL
//! or token that is itself a secret, and never the hook program's output (it might print a
//! credential it read for itself).

use std::process::Stdio;
use std::time::Duration;

use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;

use rotor_rotators::SecretRef;

use super::hook::{SERVICE_ACCOUNT, default_annotation};
use super::{
    CommandHook, Event, Failed, HookConfig, KubernetesRolloutHook, Outcome, WebhookHook,
    delivery_id,
};
use crate::vault::{Vaults, resolve};

/// The only `PATH` a command hook sees: rotor's environment is not passed on.
const COMMAND_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub async fn send(
    client: &reqwest::Client,
    vaults: &Vaults,
    name: &str,
    hook: &HookConfig,
    event: &Event,
) -> Result<Outcome, Failed> {
    let timeout = hook.timeout();
    match hook {
        HookConfig::Webhook(h) => webhook(client, vaults, name, h, event, timeout).await,
        HookConfig::Command(h) => command(name, h, event, timeout).await,
        HookConfig::KubernetesRollout(h) => rollout(vaults, name, h, event, timeout).await,
    }
}

fn failed(outcome: impl Into<String>, error: impl Into<String>) -> Failed {
    Failed {
        outcome: outcome.into(),
        error: error.into(),
    }
}

async fn secret(
    vaults: &Vaults,
    name: &str,
    reference: &SecretRef,
) -> Result<secrecy::SecretString, Failed> {
    resolve(reference, vaults)
        .await
        .map_err(|e| failed("no secret", format!("hook `{name}`: {e}")))
}

/// The answer of an HTTP hook: 2xx is delivered, anything else is retried.
async fn answer(
    name: &str,
    kind: &str,
    response: Result<reqwest::Response, reqwest::Error>,
    timeout: Duration,
) -> Result<Outcome, Failed> {
    let response = response.map_err(|e| {
        if e.is_timeout() {
            failed(
                "timed out",
                format!("hook `{name}` ({kind}) did not answer within {timeout:?}"),
            )
        } else {
            failed(
                "unreachable",
                format!("hook `{name}` ({kind}) is unreachable: {}", e.without_url()),
            )
        }
    })?;
    let status = response.status();
    let outcome = format!("HTTP {}", status.as_u16());
    if status.is_success() {
        Ok(outcome)
    } else {
        Err(failed(
            outcome,
            format!("hook `{name}` ({kind}) answered {status}"),
        ))
    }
}

async fn webhook(
    client: &reqwest::Client,
    vaults: &Vaults,
    name: &str,
    h: &WebhookHook,
    event: &Event,
    timeout: Duration,
) -> Result<Outcome, Failed> {
    let body = serde_json::to_vec(&event.body(name)).expect("JSON");
    let key = secret(vaults, name, &h.secret).await?;
    let delivery = delivery_id(&event.run_id, event.event, name);
    let standard = crate::alert::standard_headers(
        key.expose_secret(),
        &delivery,
        chrono::Utc::now().timestamp_millis(),
        &body,
    );
    let mut request = client.post(&h.url);
    for (header, value) in standard {
        request = request.header(header, value);
    }
    let response = request
        .timeout(timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            "X-Rotor-Signature",
            crate::alert::signature(key.expose_secret().as_bytes(), &body),
        )
        .header(
            "X-Rotor-Event",
            format!("credential.{}", event.event.as_str()),
        )
        .header("X-Rotor-Delivery", delivery)
        .body(body)
        .send()
        .await;
    answer(name, "webhook", response, timeout).await
}

/// The fixed variables a command hook gets, beside the event on stdin.
fn command_env(name: &str, event: &Event) -> Vec<(&'static str, String)> {
    let or_empty = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("ROTOR_EVENT", event.event.as_str().to_owned()),
        ("ROTOR_HOOK", name.to_owned()),
        (
            "ROTOR_DELIVERY_ID",
            delivery_id(&event.run_id, event.event, name),
        ),
        ("ROTOR_CREDENTIAL_ID", event.credential_id.clone()),
        ("ROTOR_PROVIDER", event.provider.clone()),
        ("ROTOR_VAULT", event.vault.clone()),
        ("ROTOR_VAULT_PATH", event.vault_path.clone()),
        ("ROTOR_VERSION", or_empty(&event.version)),
        ("ROTOR_FINGERPRINT", or_empty(&event.fingerprint)),
        ("ROTOR_PREVIOUS_VERSION", or_empty(&event.previous_version)),
        ("ROTOR_RUN_ID", event.run_id.clone()),
    ]
}

async fn command(
    name: &str,
    h: &CommandHook,
    event: &Event,
    timeout: Duration,
) -> Result<Outcome, Failed> {
    let program = &h.command[0];
    let mut child = tokio::process::Command::new(program)
        .args(&h.command[1..])
        .env_clear()
        .env("PATH", COMMAND_PATH)
        .envs(&h.env)
        .envs(command_env(name, event))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            failed(
                "not started",
                format!("hook `{name}` (command): cannot start {program}: {e}"),
            )
        })?;
    let pid = child.id();
    let mut body = serde_json::to_vec(&event.body(name)).expect("JSON");
    body.push(b'\n');
    let stdin = child.stdin.take();
    let run = async {
        if let Some(mut stdin) = stdin {
            // A program need not read its stdin: a closed pipe is not a failure.
            let _ = stdin.write_all(&body).await;
        }
        child.wait().await
    };
    match tokio::time::timeout(timeout, run).await {
        Ok(Ok(status)) if status.success() => Ok("exit 0".into()),
        Ok(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            let outcome = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "failed".into(),
            };
            Err(failed(
                outcome.clone(),
                format!("hook `{name}` (command {program}) failed: {outcome}"),
            ))
        }
        Ok(Err(e)) => Err(failed(
            "lost",
            format!("hook `{name}` (command {program}): waiting for it failed: {e}"),
        )),
        Err(_) => {
            if let Some(group) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
            let _ = child.kill().await;
            Err(failed(
                format!("timed out after {}s", timeout.as_secs()),
                format!(
                    "hook `{name}` (command {program}) did not finish within {timeout:?}; it was killed"
                ),
            ))
        }
    }
}

/// The API server of the cluster rotor runs in, as Kubernetes tells every pod.
fn in_cluster_api() -> Option<String> {
    let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
    let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
    Some(if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    })
}

/// The strategic-merge patch that rolls a Deployment: a pod-template annotation set to the
/// version consumers must read. Patching the same version again changes nothing, so a retried
/// delivery never rolls the pods twice.
pub fn rollout_patch(annotation: &str, event: &Event) -> serde_json::Value {
    serde_json::json!({
        "spec": {"template": {"metadata": {"annotations": {
            annotation: event.version.clone().unwrap_or_else(|| event.run_id.clone()),
        }}}}
    })
}

async fn rollout(
    vaults: &Vaults,
    name: &str,
    h: &KubernetesRolloutHook,
    event: &Event,
    timeout: Duration,
) -> Result<Outcome, Failed> {
    let api = match &h.api_url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => in_cluster_api().ok_or_else(|| {
            failed(
                "no cluster",
                format!("hook `{name}` (kubernetes_rollout): KUBERNETES_SERVICE_HOST is not set (rotor is not in a pod); set `api_url`"),
            )
        })?,
    };
    let token_ref = h.token.clone().unwrap_or_else(|| SecretRef::File {
        file: format!("{SERVICE_ACCOUNT}/token").into(),
    });
    let token = secret(vaults, name, &token_ref).await?;
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")))
        .redirect(rotor_rotators::net::same_origin_redirects())
        .timeout(timeout);
    let ca_file = h.ca_file.clone().or_else(|| {
        h.api_url
            .is_none()
            .then(|| format!("{SERVICE_ACCOUNT}/ca.crt").into())
    });
    if let Some(ca_file) = ca_file {
        let certs = rotor_rotators::net::ca_bundle(&ca_file)
            .map_err(|e| failed("no CA", format!("hook `{name}` (kubernetes_rollout): {e}")))?;
        builder = builder.tls_certs_only(certs);
    }
    let client = builder.build().map_err(|e| {
        failed(
            "no client",
            format!("hook `{name}` (kubernetes_rollout): {e}"),
        )
    })?;
    let annotation = h
        .annotation
        .clone()
        .unwrap_or_else(|| default_annotation(&event.credential_id));
    let url = format!(
        "{api}/apis/apps/v1/namespaces/{}/deployments/{}",
        h.namespace, h.deployment
    );
    let response = client
        .patch(url)
        .bearer_auth(token.expose_secret())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/strategic-merge-patch+json",
        )
        .header(reqwest::header::ACCEPT, "application/json")
        .body(serde_json::to_vec(&rollout_patch(&annotation, event)).expect("JSON"))
        .send()
        .await;
    let outcome = answer(name, "kubernetes_rollout", response, timeout).await;
    outcome.map_err(|mut f| {
        match f.outcome.as_str() {
            "HTTP 401" => f.error.push_str(": the service account token was refused"),
            "HTTP 403" => f.error.push_str(&format!(
                ": the service account may not patch deployments in {}; grant `patch` on `deployments` there with a Role and RoleBinding (deploy/kubernetes/rollout-payments/)",
                h.namespace
            )),
            "HTTP 404" => f.error.push_str(&format!(
                ": there is no Deployment {}/{}",
                h.namespace, h.deployment
            )),
            _ => {}
        }
        f
    })
}
