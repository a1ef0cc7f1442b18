//! The `openbao` vault (alias `vault`): OpenBao or HashiCorp Vault, KV version 2, over HTTPS
//! with rustls.
//!
//! Consumers read `MOUNT/data/PATH`: only promoted (verified) versions are ever written there,
//! during grace with the previous version's fields under `previous`. A version being rotated in
//! lives at `MOUNT/data/PENDING_PREFIX/PATH`, where consumers' policies do not reach, with the
//! run token under `_rotor`. Promotion writes with check-and-set on the version rotor last saw,
//! so a version written by someone else is never overwritten (a `Conflict`); the key's
//! `custom_metadata` records rotor's token, stage and version, never a fingerprint (policies
//! often let more people read metadata than data). Pending versions are removed with all their
//! history (metadata delete), so no unused secret lingers.
//!
//! ## Why not `vaultrs`
//! Read at vaultrs 0.8.0, it covers the API rotor calls (KV v2 read, write with `cas`,
//! metadata, delete; AppRole login; token lookup and renewal; namespaces; client certificates),
//! but using it would lose these, each tested here:
//! - **Redirects.** `VaultClient::new` builds its own reqwest client with the default policy:
//!   up to 10 redirects, https to http allowed, `X-Vault-Token` and 307/308 bodies carried
//!   along. rotor follows none to another origin and refuses a standby's redirect with an error
//!   naming `api_addr` (tests/cli/redirects.rs). A `Client` of our own over its `rustify`
//!   layer could supply our client, but then the one part worth taking is the request structs.
//! - **Bounded replies.** rustify reads a whole body; rotor stops at 4 MiB
//!   (`an_oversized_reply_is_refused_after_the_limit`).
//! - **The token in types.** It is a plain `String` in `VaultClientSettings` and in the
//!   endpoint middleware, both deriving `Debug`, so a debug print of the client shows it; here
//!   it is a `SecretString`, redacted in `Debug` and zeroized when dropped.
//! - **Environment defaults.** Unset settings come from `VAULT_ADDR`, `VAULT_TOKEN`,
//!   `VAULT_SKIP_VERIFY`, `VAULT_CACERT`: a stray `VAULT_SKIP_VERIFY` in a unit file would turn
//!   verification off with a warning in a log. rotor's config names every input and verifies TLS
//!   unless `insecure_transport` is written.
//! - **Metadata merge.** Removing a key from `custom_metadata` (the `rotor_fingerprint` older
//!   rotors wrote) needs a JSON merge-patch of the metadata; vaultrs offers only the full write,
//!   which would replace custom metadata other tools keep there.
//!
//! What remains here is one HTTP exchange of about 80 lines (`send`) and the KV v2 and auth
//! calls rotor makes, tested against a real `bao server -dev` (tests/vaults.rs, tests/cli).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use rotor_rotators::{Credential, ErrorClass};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::wire::{WireDocument, to_zeroized_json};
use super::{Document, Held, Previous, Reply, StoredVersion, Vault, VaultError, error_chain};
use rotor_rotators::SecretRef;
use rotor_rotators::duration::Duration as ConfigDuration;
use rotor_rotators::kinds::Settings;

use super::{PolicyScope, VaultSettings};

impl Settings for OpenbaoVaultConfig {
    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        rotor_rotators::net::endpoint(
            "address",
            Some(self.address.as_str()),
            self.insecure_transport,
        )
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        match &self.auth {
            OpenbaoAuthConfig::Token { token } => vec![token],
            OpenbaoAuthConfig::Approle {
                role_id, secret_id, ..
            } => vec![role_id, secret_id],
        }
    }
}

impl VaultSettings for OpenbaoVaultConfig {
    fn least_privilege(&self, scope: &PolicyScope<'_>) -> String {
        let PolicyScope {
            credential,
            vault,
            path,
        } = *scope;
        let (mount, pending) = (
            self.mount.trim_matches('/'),
            self.pending_prefix.trim_matches('/'),
        );
        format!(
            "# rotor: least privilege for credential \"{credential}\" in vault \"{vault}\" (KV v2 mount \"{mount}\").\n\
             # Apply with: bao policy write rotor-{policy} FILE\n\
             # What consumers read: promoted versions only.\n\
             path \"{mount}/data/{path}\" {{\n  capabilities = [\"create\", \"read\", \"update\"]\n}}\n\
             # rotor's bookkeeping in custom_metadata.\n\
             path \"{mount}/metadata/{path}\" {{\n  capabilities = [\"read\", \"patch\"]\n}}\n\
             # The version being rotated in; consumers need no access here.\n\
             path \"{mount}/data/{pending}/{path}\" {{\n  capabilities = [\"create\", \"read\", \"update\"]\n}}\n\
             # Removing a pending version with its history.\n\
             path \"{mount}/metadata/{pending}/{path}\" {{\n  capabilities = [\"delete\"]\n}}\n\
             # Checking that the mount is KV version 2.\n\
             path \"sys/internal/ui/mounts/{mount}\" {{\n  capabilities = [\"read\"]\n}}\n",
            policy = credential.replace('/', "-"),
        )
    }
}

/// An OpenBao / HashiCorp Vault KV v2 mount.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenbaoVaultConfig {
    /// Base address of the server, e.g. "https://bao.internal:8200".
    pub address: String,
    /// Path of the KV version 2 mount.
    #[serde(default = "default_mount")]
    pub mount: String,
    /// How rotor logs in.
    pub auth: OpenbaoAuthConfig,
    /// TLS settings for a private CA and client certificates (mTLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
    /// Namespace (Vault Enterprise / OpenBao namespaces), sent as X-Vault-Namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Where pending versions live inside the mount: give consumers no access below it.
    #[serde(default = "default_pending_prefix")]
    pub pending_prefix: String,
    /// Timeout of each HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

/// The most of a reply rotor reads: a KV document or a token lookup is a few KiB.
const MAX_REPLY: usize = 4 << 20;

/// How an HTTP status that is not success is handled, the same for every call: the server
/// down, overloaded or rate limiting is transient (retried with backoff); anything else says
/// something about the request or its rights, and retrying will not change it.
fn class_of(status: StatusCode) -> ErrorClass {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

fn default_mount() -> String {
    "secret".into()
}

fn default_pending_prefix() -> String {
    "_rotor/pending".into()
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

/// Login method, tagged by `method`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpenbaoAuthConfig {
    /// A token (renewed before it expires when it is renewable).
    Token {
        /// The token.
        token: SecretRef,
    },
    /// AppRole login; the token it yields is renewed, and rotor logs in again when renewal
    /// fails or the token expires.
    Approle {
        /// The role id.
        role_id: SecretRef,
        /// The secret id.
        secret_id: SecretRef,
        /// Mount path of the AppRole auth method.
        #[serde(default = "default_approle_mount")]
        mount: String,
    },
}

fn default_approle_mount() -> String {
    "approle".into()
}

/// TLS files, all PEM.
#[derive(Debug, Clone, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate(s) that sign the server's certificate; replaces the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<PathBuf>,
    /// Private key of the client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<PathBuf>,
}

/// Bookkeeping inside a pending document.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PendingMeta {
    token: String,
    fingerprint: String,
}

struct Session {
    token: Option<SecretString>,
    /// When to renew (two thirds into the token's TTL); `None`: never expires.
    renew_at: Option<Instant>,
    renewable: bool,
    mount_checked: bool,
}

pub struct OpenbaoVault {
    name: String,
    http: reqwest::Client,
    base: String,
    mount: String,
    pending_prefix: String,
    namespace: Option<String>,
    auth: OpenbaoAuthConfig,
    session: Mutex<Session>,
}

/// A KV v2 read: `data.data` (absent for a deleted or destroyed version) and `data.metadata`.
#[derive(Deserialize)]
#[serde(bound = "M: serde::de::DeserializeOwned")]
struct KvRead<M> {
    data: KvReadData<M>,
}

#[derive(Deserialize)]
#[serde(bound = "M: serde::de::DeserializeOwned")]
struct KvReadData<M> {
    data: Option<WireDocument<M>>,
    metadata: KvVersionMeta,
}

#[derive(Deserialize)]
struct KvVersionMeta {
    version: u64,
    #[serde(default)]
    deletion_time: String,
    #[serde(default)]
    destroyed: bool,
    #[serde(default)]
    custom_metadata: Option<std::collections::BTreeMap<String, String>>,
}

enum Read<M> {
    Missing,
    Gone {
        version: u64,
        destroyed: bool,
    },
    Present {
        version: u64,
        doc: WireDocument<M>,
        custom: std::collections::BTreeMap<String, String>,
    },
}

impl OpenbaoVault {
    /// Builds the client. No network call happens here: a vault that is down at start makes
    /// runs retry, it does not stop rotor.
    pub fn open(name: &str, config: &OpenbaoVaultConfig) -> Result<OpenbaoVault, VaultError> {
        let fail = |message: String| VaultError::new(ErrorClass::Permanent, name, "", message);
        let mut builder = reqwest::Client::builder()
            .redirect(rotor_rotators::net::same_origin_redirects())
            .timeout(config.timeout.as_std())
            .connect_timeout(config.timeout.as_std());
        if let Some(tls) = &config.tls {
            if let Some(ca) = &tls.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| fail(format!("cannot read tls.ca_file {}: {e}", ca.display())))?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    fail(format!(
                        "tls.ca_file {} holds no usable PEM certificate: {e}",
                        ca.display()
                    ))
                })?;
                builder = builder.tls_certs_only(certs);
            }
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(cert), Some(key)) => {
                    let mut pem = Zeroizing::new(std::fs::read(cert).map_err(|e| {
                        fail(format!(
                            "cannot read tls.client_cert_file {}: {e}",
                            cert.display()
                        ))
                    })?);
                    pem.push(b'\n');
                    pem.extend_from_slice(&Zeroizing::new(std::fs::read(key).map_err(|e| {
                        fail(format!(
                            "cannot read tls.client_key_file {}: {e}",
                            key.display()
                        ))
                    })?));
                    let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                        fail(format!(
                            "the client certificate and key are not a usable PEM pair: {e}"
                        ))
                    })?;
                    builder = builder.identity(identity);
                }
                (None, None) => {}
                _ => {
                    return Err(fail(
                        "tls needs both client_cert_file and client_key_file, or neither".into(),
                    ));
                }
            }
        }
        let http = builder
            .build()
            .map_err(|e| fail(format!("cannot build the HTTP client: {e}")))?;
        Ok(OpenbaoVault {
            name: name.into(),
            http,
            base: config.address.trim_end_matches('/').to_owned(),
            mount: config.mount.trim_matches('/').to_owned(),
            pending_prefix: config.pending_prefix.trim_matches('/').to_owned(),
            namespace: config.namespace.clone(),
            auth: config.auth.clone(),
            session: Mutex::new(Session {
                token: None,
                renew_at: None,
                renewable: false,
                mount_checked: false,
            }),
        })
    }

    fn err(&self, class: ErrorClass, path: &str, message: impl Into<String>) -> VaultError {
        VaultError::new(class, &self.name, path, message)
    }

    /// A request the server answered with an error `call` did not classify.
    fn refused(&self, path: &str, what: &str, reply: &Reply) -> VaultError {
        let message = format!("{what} failed ({}): {}", reply.status, errors_of(reply));
        self.err(ErrorClass::Permanent, path, message)
    }

    /// One HTTP exchange with a token (or none, for login).
    async fn send(
        &self,
        method: Method,
        api_path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        token: Option<&SecretString>,
        path: &str,
    ) -> Result<Reply, VaultError> {
        let url = format!("{}/v1/{}", self.base, api_path);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(token) = token {
            request = request.header("X-Vault-Token", token.expose_secret());
        }
        if let Some(ns) = &self.namespace {
            request = request.header("X-Vault-Namespace", ns);
        }
        if let Some(body) = body {
            let content_type = if method == Method::PATCH {
                "application/merge-patch+json"
            } else {
                "application/json"
            };
            request = request
                .header("Content-Type", content_type)
                .body(body.to_vec());
        }
        let response = request.send().await.map_err(|e| {
            self.err(
                ErrorClass::Transient,
                path,
                format!(
                    "cannot reach {}: {}; is the server up and the address right?",
                    self.base,
                    error_chain(&e)
                ),
            )
        })?;
        let status = response.status();
        // Redirects within the address's origin were followed; one that leaves it is not.
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("(no Location)")
                .to_owned();
            return Err(self.err(
                ErrorClass::Transient,
                path,
                format!(
                    "{} answered {status}, redirecting to {to}: rotor sends its token and secrets to no \
                     other origin, nor from https to http. Point `address` at the active node (or a \
                     load balancer that routes to it); a standby redirects to its `api_addr`",
                    self.base
                ),
            ));
        }
        let bytes = rotor_rotators::net::read_within(response, MAX_REPLY)
            .await
            .map_err(|e| match e {
                rotor_rotators::net::BodyError::Read(e) => self.err(
                    ErrorClass::Transient,
                    path,
                    format!("reading the reply from {} failed: {e}", self.base),
                ),
                rotor_rotators::net::BodyError::TooLarge { limit } => self.err(
                    ErrorClass::Permanent,
                    path,
                    format!(
                        "{} answered more than {} KiB, more than any KV reply; rotor reads no more (is `address` the vault?)",
                        self.base,
                        limit / 1024
                    ),
                ),
            })?;
        Ok(Reply {
            status,
            body: bytes,
        })
    }

    /// Logs in or renews as needed and returns a token to use.
    async fn token(&self, path: &str) -> Result<SecretString, VaultError> {
        let mut session = self.session.lock().await;
        let due = session.renew_at.is_some_and(|at| Instant::now() >= at);
        if session.token.is_none() {
            self.login(&mut session, path).await?;
        } else if due {
            let renewed = if session.renewable {
                self.renew(&mut session, path).await
            } else {
                Err(None)
            };
            if let Err(problem) = renewed {
                if let Some(p) = &problem {
                    tracing::warn!(vault = %self.name, error = %p, "token renewal failed; logging in again");
                }
                self.login(&mut session, path).await?;
            }
        }
        if !session.mount_checked {
            let token = session.token.clone().expect("logged in");
            self.check_mount(&token, path).await?;
            session.mount_checked = true;
        }
        Ok(session.token.clone().expect("logged in"))
    }

    async fn login(&self, session: &mut Session, path: &str) -> Result<(), VaultError> {
        match &self.auth {
            OpenbaoAuthConfig::Token { token } => {
                let token = resolve(token)
                    .map_err(|m| self.err(ErrorClass::Permanent, path, format!("token: {m}")))?;
                let reply = self
                    .send(
                        Method::GET,
                        "auth/token/lookup-self",
                        None,
                        Some(&token),
                        path,
                    )
                    .await?;
                if reply.status == StatusCode::FORBIDDEN {
                    return Err(self.err(
                        ErrorClass::Permanent,
                        path,
                        "the token was refused (expired or revoked?); issue a new one",
                    ));
                }
                // A server that cannot answer has not accepted the token.
                if !reply.status.is_success() {
                    return Err(self.err(
                        class_of(reply.status),
                        path,
                        format!(
                            "token lookup answered {}: {}",
                            reply.status,
                            errors_of(&reply)
                        ),
                    ));
                }
                let info = self.json::<serde_json::Value>(&reply, path, "token lookup")?;
                let ttl = info["data"]["ttl"].as_u64().unwrap_or(0);
                session.renewable = info["data"]["renewable"].as_bool().unwrap_or(false);
                session.renew_at =
                    (ttl > 0).then(|| Instant::now() + Duration::from_secs(ttl * 2 / 3));
                session.token = Some(token);
            }
            OpenbaoAuthConfig::Approle {
                role_id,
                secret_id,
                mount,
            } => {
                let role_id = resolve(role_id)
                    .map_err(|m| self.err(ErrorClass::Permanent, path, format!("role_id: {m}")))?;
                let secret_id = resolve(secret_id).map_err(|m| {
                    self.err(ErrorClass::Permanent, path, format!("secret_id: {m}"))
                })?;
                let body = serde_json::to_vec(&json!({
                    "role_id": role_id.expose_secret(),
                    "secret_id": secret_id.expose_secret(),
                }))
                .expect("login body serializes");
                let reply = self
                    .send(
                        Method::POST,
                        &format!("auth/{mount}/login"),
                        Some(Zeroizing::new(body)),
                        None,
                        path,
                    )
                    .await?;
                if !reply.status.is_success() {
                    return Err(self.err(
                        class_of(reply.status),
                        path,
                        format!("AppRole login at auth/{mount} refused ({}): {}; check role_id and secret_id", reply.status, errors_of(&reply)),
                    ));
                }
                let auth = self.json::<LoginReply>(&reply, path, "AppRole login")?.auth;
                session.renewable = auth.renewable;
                session.renew_at = (auth.lease_duration > 0)
                    .then(|| Instant::now() + Duration::from_secs(auth.lease_duration * 2 / 3));
                session.token = Some(auth.client_token);
                tracing::debug!(vault = %self.name, ttl_s = auth.lease_duration, "logged in with AppRole");
            }
        }
        Ok(())
    }

    /// Renews the session's token. `Err(Some(problem))` when the server refused.
    async fn renew(&self, session: &mut Session, path: &str) -> Result<(), Option<VaultError>> {
        let token = session.token.clone().ok_or(None)?;
        let reply = self
            .send(
                Method::POST,
                "auth/token/renew-self",
                Some(Zeroizing::new(b"{}".to_vec())),
                Some(&token),
                path,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(Some(self.err(
                ErrorClass::Transient,
                path,
                format!("renewal refused: {}", errors_of(&reply)),
            )));
        }
        let auth = self.json::<LoginReply>(&reply, path, "token renewal")?.auth;
        session.renew_at = (auth.lease_duration > 0)
            .then(|| Instant::now() + Duration::from_secs(auth.lease_duration * 2 / 3));
        tracing::debug!(vault = %self.name, ttl_s = auth.lease_duration, "token renewed");
        Ok(())
    }

    /// Refuses a KV version 1 mount: rotor needs versions and check-and-set. It is checked at
    /// first contact, so its errors are classified like every other call's: a server that is
    /// down or overloaded (5xx, 429) is retried, never taken for a missing mount.
    async fn check_mount(&self, token: &SecretString, path: &str) -> Result<(), VaultError> {
        let reply = self
            .send(
                Method::GET,
                &format!("sys/internal/ui/mounts/{}", self.mount),
                None,
                Some(token),
                path,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.err(
                class_of(reply.status),
                path,
                format!("mount `{}` is not readable ({}): {}; does it exist, and may the token read it?", self.mount, reply.status, errors_of(&reply)),
            ));
        }
        let info = self.json::<serde_json::Value>(&reply, path, "mount lookup")?;
        let kind = info["data"]["type"].as_str().unwrap_or("");
        let version = info["data"]["options"]["version"].as_str().unwrap_or("1");
        if kind != "kv" || version != "2" {
            return Err(self.err(
                ErrorClass::Permanent,
                path,
                format!(
                    "mount `{}` is a {kind} engine version {version}, not KV version 2; rotor needs versions and \
                     check-and-set: `bao secrets enable -version=2 -path={} kv` (or `bao kv enable-versioning {}`)",
                    self.mount, self.mount, self.mount
                ),
            ));
        }
        Ok(())
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        reply: &Reply,
        path: &str,
        what: &str,
    ) -> Result<T, VaultError> {
        reply
            .decode(what, "KV v2")
            .map_err(|m| self.err(ErrorClass::Transient, path, m))
    }

    /// A request with the session token, classifying HTTP errors. A 403 once makes rotor log
    /// in again (the token may have been revoked) and retry.
    async fn call(
        &self,
        method: Method,
        api_path: &str,
        body: Option<Zeroizing<Vec<u8>>>,
        path: &str,
    ) -> Result<Reply, VaultError> {
        let mut retried = false;
        loop {
            let token = self.token(path).await?;
            let reply = self
                .send(method.clone(), api_path, body.clone(), Some(&token), path)
                .await?;
            if reply.status == StatusCode::FORBIDDEN
                && !retried
                && matches!(self.auth, OpenbaoAuthConfig::Approle { .. })
            {
                retried = true;
                self.session.lock().await.token = None;
                continue;
            }
            return match reply.status {
                s if s.is_success() || s == StatusCode::NOT_FOUND => Ok(reply),
                StatusCode::FORBIDDEN => Err(self.err(
                    ErrorClass::Permanent,
                    path,
                    format!(
                        "permission denied on {api_path}: {}; the token's policy must allow it",
                        errors_of(&reply)
                    ),
                )),
                StatusCode::TOO_MANY_REQUESTS => {
                    Err(self.err(ErrorClass::Transient, path, "rate limited by the server"))
                }
                s if s.is_server_error() => Err(self.err(
                    ErrorClass::Transient,
                    path,
                    format!("server error {s} on {api_path}: {}", errors_of(&reply)),
                )),
                s => Ok(Reply {
                    status: s,
                    body: reply.body,
                }),
            };
        }
    }

    fn data_path(&self, path: &str) -> String {
        format!("{}/data/{path}", self.mount)
    }

    fn pending_path(&self, path: &str) -> String {
        format!("{}/{path}", self.pending_prefix)
    }

    async fn read<M: serde::de::DeserializeOwned>(
        &self,
        kv_path: &str,
        path: &str,
    ) -> Result<Read<M>, VaultError> {
        let reply = self
            .call(Method::GET, &self.data_path(kv_path), None, path)
            .await?;
        if reply.status == StatusCode::NOT_FOUND {
            // A deleted or destroyed latest version answers 404 with its metadata.
            return Ok(match serde_json::from_slice::<KvRead<M>>(&reply.body) {
                Ok(read) => Read::Gone {
                    version: read.data.metadata.version,
                    destroyed: read.data.metadata.destroyed,
                },
                Err(_) => Read::Missing,
            });
        }
        if !reply.status.is_success() {
            return Err(self.refused(path, "reading", &reply));
        }
        let read: KvRead<M> = self.json(&reply, path, "read")?;
        let meta = read.data.metadata;
        match read.data.data {
            Some(doc) if meta.deletion_time.is_empty() && !meta.destroyed => Ok(Read::Present {
                version: meta.version,
                doc,
                custom: meta.custom_metadata.unwrap_or_default(),
            }),
            _ => Ok(Read::Gone {
                version: meta.version,
                destroyed: meta.destroyed,
            }),
        }
    }

    async fn write<M: Serialize>(
        &self,
        kv_path: &str,
        doc: &WireDocument<M>,
        cas: Option<u64>,
        path: &str,
    ) -> Result<u64, VaultError> {
        self.write_unless_changed(kv_path, doc, cas, path)
            .await?
            .ok_or_else(|| {
                self.err(
                    ErrorClass::Conflict,
                    path,
                    "another version was written since rotor read this path (check-and-set failed); rotor will not overwrite it",
                )
            })
    }

    /// `write`, with `None` when the check-and-set refused it.
    async fn write_unless_changed<M: Serialize>(
        &self,
        kv_path: &str,
        doc: &WireDocument<M>,
        cas: Option<u64>,
        path: &str,
    ) -> Result<Option<u64>, VaultError> {
        let options = cas
            .map(|cas| json!({ "cas": cas }))
            .unwrap_or_else(|| json!({}));
        let body = to_zeroized_json(&WriteRequest { options, data: doc }, doc.json_capacity());
        let reply = self
            .call(Method::POST, &self.data_path(kv_path), Some(body), path)
            .await?;
        if reply.status == StatusCode::BAD_REQUEST && errors_of(&reply).contains("check-and-set") {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(self.refused(path, "writing", &reply));
        }
        let written: serde_json::Value = self.json(&reply, path, "write")?;
        written["data"]["version"]
            .as_u64()
            .map(Some)
            .ok_or_else(|| {
                self.err(
                    ErrorClass::Transient,
                    path,
                    "the write reply carries no version",
                )
            })
    }

    async fn set_custom_metadata(
        &self,
        path: &str,
        values: serde_json::Value,
    ) -> Result<(), VaultError> {
        let body =
            serde_json::to_vec(&json!({ "custom_metadata": values })).expect("metadata serializes");
        let reply = self
            .call(
                Method::PATCH,
                &format!("{}/metadata/{path}", self.mount),
                Some(Zeroizing::new(body)),
                path,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.refused(path, "updating custom_metadata", &reply));
        }
        Ok(())
    }

    async fn delete_all_versions(&self, kv_path: &str, path: &str) -> Result<(), VaultError> {
        let reply = self
            .call(
                Method::DELETE,
                &format!("{}/metadata/{kv_path}", self.mount),
                None,
                path,
            )
            .await?;
        if !reply.status.is_success() && reply.status != StatusCode::NOT_FOUND {
            return Err(self.refused(path, &format!("deleting {kv_path}"), &reply));
        }
        Ok(())
    }

    fn gone_conflict(&self, path: &str, version: u64, destroyed: bool) -> VaultError {
        self.err(
            ErrorClass::Conflict,
            path,
            format!(
                "the latest version ({version}) was {} outside rotor; rotor will not write over it. Restore it \
                 (`bao kv undelete -versions={version}`) or remove the key (`bao kv metadata delete`), then `rotor rotate`",
                if destroyed { "destroyed" } else { "deleted" }
            ),
        )
    }

    async fn pending(
        &self,
        path: &str,
    ) -> Result<Option<(u64, WireDocument<PendingMeta>)>, VaultError> {
        match self
            .read::<PendingMeta>(&self.pending_path(path), path)
            .await?
        {
            Read::Present { version, doc, .. } if doc.meta.is_some() => Ok(Some((version, doc))),
            _ => Ok(None),
        }
    }
}

#[derive(Serialize)]
struct WriteRequest<'a, M: Serialize> {
    options: serde_json::Value,
    data: &'a WireDocument<M>,
}

#[derive(Deserialize)]
struct LoginReply {
    auth: LoginAuth,
}

#[derive(Deserialize)]
struct LoginAuth {
    client_token: SecretString,
    #[serde(default)]
    lease_duration: u64,
    #[serde(default)]
    renewable: bool,
}

fn resolve(reference: &SecretRef) -> Result<SecretString, String> {
    match reference {
        SecretRef::Env { env } => std::env::var(env)
            .map(SecretString::from)
            .map_err(|_| format!("environment variable {env} is not set")),
        SecretRef::File { file } => std::fs::read_to_string(file)
            .map(|t| SecretString::from(Zeroizing::new(t).trim_end()))
            .map_err(|e| format!("cannot read {}: {e}", file.display())),
        SecretRef::Vault { .. } => {
            Err("a vault's own login cannot come from a vault: use env or file".into())
        }
    }
}

/// The `errors` array of an error reply, joined; never the request's data.
fn errors_of(reply: &Reply) -> String {
    serde_json::from_slice::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("HTTP {}", reply.status))
}

fn stored(version: u64, token: Option<String>, credential: Credential) -> StoredVersion {
    StoredVersion::new(version.to_string(), token, credential)
}

impl Vault for OpenbaoVault {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read_current(&self, path: &str) -> Result<Option<Document>, VaultError> {
        match self.read::<serde_json::Value>(path, path).await? {
            Read::Missing => Ok(None),
            Read::Gone { version, destroyed } => Err(self.gone_conflict(path, version, destroyed)),
            Read::Present {
                version,
                doc,
                custom,
            } => {
                let ours = custom
                    .get("rotor_version")
                    .is_some_and(|v| v == &version.to_string());
                let token = custom.get("rotor_token").filter(|_| ours).cloned();
                let previous = doc.previous.map(|p| {
                    let previous_version = custom
                        .get("rotor_previous_version")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    stored(
                        previous_version,
                        custom.get("rotor_previous_token").cloned(),
                        p,
                    )
                });
                Ok(Some(Document {
                    current: stored(version, token, doc.fields),
                    previous,
                }))
            }
        }
    }

    async fn read_pending(&self, path: &str) -> Result<Option<StoredVersion>, VaultError> {
        Ok(self.pending(path).await?.map(|(version, doc)| {
            let token = doc.meta.map(|m| m.token);
            stored(version, token, doc.fields)
        }))
    }

    async fn write_pending(
        &self,
        path: &str,
        token: &str,
        credential: &Credential,
        // Promotion writes the current document: `Held::previous` says what it keeps there.
        _previous: Previous,
    ) -> Result<StoredVersion, VaultError> {
        let doc = WireDocument {
            fields: credential.clone(),
            previous: None,
            meta: Some(PendingMeta {
                token: token.to_owned(),
                fingerprint: credential.fingerprint().to_hex(),
            }),
        };
        // Promotion and rollback delete the pending key, so it nearly never exists: one
        // request, whose check-and-set (0: only a new key) refuses to write over one that does.
        let pending_path = self.pending_path(path);
        if let Some(version) = self
            .write_unless_changed(&pending_path, &doc, Some(0), path)
            .await?
        {
            return Ok(stored(version, Some(token.to_owned()), doc.fields));
        }
        // This run's own, written before a crash, or another run's left behind.
        if let Some((version, existing)) = self.pending(path).await?
            && existing.meta.as_ref().is_some_and(|m| m.token == token)
        {
            return Ok(stored(version, Some(token.to_owned()), existing.fields));
        }
        let version = self.write(&pending_path, &doc, None, path).await?;
        Ok(stored(version, Some(token.to_owned()), doc.fields))
    }

    async fn promote_run(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        expected_current: Option<&str>,
        verified: Option<super::Verified<'_>>,
    ) -> Result<String, VaultError> {
        let pending = self
            .pending(path)
            .await?
            .filter(|(_, d)| d.meta.as_ref().is_some_and(|m| m.token == token));
        let current = self.read_current(path).await?;
        if let Some(doc) = &current {
            let promoted_already = match &pending {
                Some((_, p)) => doc.current.fingerprint == p.fields.fingerprint().to_hex(),
                None => doc.current.token.as_deref() == Some(token),
            };
            if promoted_already {
                // Crashed after the write: finish the bookkeeping and the cleanup.
                if doc.current.token.as_deref() != Some(token) {
                    self.set_custom_metadata(path, current_metadata(token, run_id, doc))
                        .await?;
                }
                if pending.is_some() {
                    self.delete_all_versions(&self.pending_path(path), path)
                        .await?;
                }
                return Ok(doc.current.version.clone());
            }
        }
        let found = current.as_ref().map(|d| d.current.version.clone());
        if found.as_deref() != expected_current {
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "the current version is {} but rotor last saw {}: it was changed outside rotor. rotor will not \
                     overwrite it; check who changed it, then run `rotor rotate` again",
                    found.as_deref().unwrap_or("(none)"),
                    expected_current.unwrap_or("(none)")
                ),
            ));
        }
        let (_, pending) = pending.ok_or_else(|| {
            self.err(
                ErrorClass::Permanent,
                path,
                "this run has no pending version to promote; it will be rolled back",
            )
        })?;
        if verified.is_some_and(|v| !v.is(&pending.fields.fingerprint().to_hex())) {
            return Err(super::not_verified(&self.name, path));
        }
        let cas = cas_for(expected_current).ok_or_else(|| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!("version {expected_current:?} is not a KV version number"),
            )
        })?;
        let doc = WireDocument::<()> {
            fields: pending.fields,
            previous: current.as_ref().map(|c| c.current.credential.clone()),
            meta: None,
        };
        let version = self.write(path, &doc, Some(cas), path).await?;
        self.label_promoted(
            path,
            token,
            run_id,
            version,
            doc.fields,
            current.map(|c| c.current),
        )
        .await
    }

    async fn promote_held(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        expected_current: Option<&str>,
        held: Held<'_>,
    ) -> Result<String, VaultError> {
        let read_back =
            || super::promote_reading_back(self, path, token, run_id, expected_current, held);
        let Some(cas) = cas_for(expected_current) else {
            return read_back().await;
        };
        let previous = held.previous.of(held.replaced);
        let doc = WireDocument::<()> {
            fields: held.candidate.clone(),
            previous: previous.map(|r| r.credential.clone()),
            meta: None,
        };
        match self
            .write_unless_changed(path, &doc, Some(cas), path)
            .await?
        {
            Some(version) => {
                self.label_promoted(path, token, run_id, version, doc.fields, previous.cloned())
                    .await
            }
            None => read_back().await,
        }
    }

    async fn discard_pending(&self, path: &str, token: &str) -> Result<(), VaultError> {
        if let Some((_, doc)) = self.pending(path).await?
            && doc.meta.as_ref().is_some_and(|m| m.token == token)
        {
            self.delete_all_versions(&self.pending_path(path), path)
                .await?;
        }
        Ok(())
    }

    async fn drop_previous(&self, path: &str, token: &str) -> Result<Option<String>, VaultError> {
        // The data read carries custom_metadata: no second request for rotor's token.
        let (version, doc, custom) = match self.read::<serde_json::Value>(path, path).await? {
            Read::Missing => return Ok(None),
            Read::Gone { version, destroyed } => {
                return Err(self.gone_conflict(path, version, destroyed));
            }
            Read::Present {
                version,
                doc,
                custom,
            } => (version, doc, custom),
        };
        // custom_metadata belongs to the key, not the version: a `kv put` by hand leaves
        // rotor's token there. The version it names is rotor's, or, after a retirement that
        // crashed before relabelling, one more with the promoted fields and no previous.
        let labelled = custom.get("rotor_version") == Some(&version.to_string());
        if custom.get("rotor_token").map(String::as_str) != Some(token)
            || !(labelled
                || doc.previous.is_none()
                    && self
                        .holds_labelled_fields(path, &custom, &doc.fields)
                        .await?)
        {
            return Err(super::changed_since_promoted(&self.name, path));
        }
        if doc.previous.is_none() {
            return Ok(Some(version.to_string()));
        }
        let fresh = WireDocument::<()> {
            fields: doc.fields,
            previous: None,
            meta: None,
        };
        let version = self.write(path, &fresh, Some(version), path).await?;
        self.label_without_previous(path, token, version, fresh.fields)
            .await
    }

    async fn drop_previous_held(
        &self,
        path: &str,
        token: &str,
        promoted: &str,
        current: &Credential,
    ) -> Result<Option<String>, VaultError> {
        let Some(cas) = cas_for(Some(promoted)) else {
            return self.drop_previous(path, token).await;
        };
        let fresh = WireDocument::<()> {
            fields: current.clone(),
            previous: None,
            meta: None,
        };
        match self
            .write_unless_changed(path, &fresh, Some(cas), path)
            .await?
        {
            Some(version) => {
                self.label_without_previous(path, token, version, fresh.fields)
                    .await
            }
            None => self.drop_previous(path, token).await,
        }
    }
}

impl OpenbaoVault {
    /// Whether `fields` are those of the version custom_metadata labels as rotor's (read
    /// back by its number): a retirement that wrote them again without the previous version
    /// and crashed before relabelling. Compared here rather than by a fingerprint in the
    /// metadata, which whoever may read metadata could test guesses against.
    async fn holds_labelled_fields(
        &self,
        path: &str,
        custom: &std::collections::BTreeMap<String, String>,
        fields: &Credential,
    ) -> Result<bool, VaultError> {
        let Some(labelled) = custom
            .get("rotor_version")
            .and_then(|v| v.parse::<u64>().ok())
        else {
            return Ok(false);
        };
        Ok(
            match self
                .read::<serde_json::Value>(&format!("{path}?version={labelled}"), path)
                .await?
            {
                Read::Present { doc, .. } => doc.fields.fingerprint() == fields.fingerprint(),
                Read::Missing | Read::Gone { .. } => false,
            },
        )
    }

    /// After promotion's write: rotor's bookkeeping in custom_metadata, then the pending key
    /// goes (consumers never saw it).
    async fn label_promoted(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        version: u64,
        fields: Credential,
        previous: Option<StoredVersion>,
    ) -> Result<String, VaultError> {
        crate::failpoint::pause_if_armed("vault:promote:written").await;
        let promoted = Document {
            current: stored(version, Some(token.to_owned()), fields),
            previous,
        };
        self.set_custom_metadata(path, current_metadata(token, run_id, &promoted))
            .await?;
        crate::failpoint::pause_if_armed("vault:promote:labelled").await;
        self.delete_all_versions(&self.pending_path(path), path)
            .await?;
        Ok(version.to_string())
    }

    /// After retirement's write: the bookkeeping forgets the previous version.
    async fn label_without_previous(
        &self,
        path: &str,
        token: &str,
        version: u64,
        fields: Credential,
    ) -> Result<Option<String>, VaultError> {
        crate::failpoint::pause_if_armed("vault:retire:written").await;
        let after = Document {
            current: stored(version, Some(token.to_owned()), fields),
            previous: None,
        };
        self.set_custom_metadata(path, current_metadata(token, None, &after))
            .await?;
        Ok(Some(version.to_string()))
    }
}

/// The check-and-set value that writes only over `version` (0: only a new key); `None` for
/// a version id that is not a KV version number.
fn cas_for(version: Option<&str>) -> Option<u64> {
    version.map_or(Some(0), |v| v.parse().ok())
}

/// What rotor records about the current version in the key's custom_metadata.
fn current_metadata(token: &str, run_id: Option<&str>, doc: &Document) -> serde_json::Value {
    let mut values = json!({
        "rotor_token": token,
        "rotor_stage": "current",
        "rotor_version": doc.current.version,
        // Written by rotor before fingerprints were keyed: a merge patch's null removes it.
        "rotor_fingerprint": null,
    });
    if let Some(run_id) = run_id {
        values["rotor_run"] = json!(run_id);
    }
    match &doc.previous {
        Some(p) => {
            values["rotor_previous_version"] = json!(p.version);
            values["rotor_previous_token"] = json!(p.token);
        }
        // A merge patch with null removes the key.
        None => {
            values["rotor_previous_version"] = serde_json::Value::Null;
            values["rotor_previous_token"] = serde_json::Value::Null;
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use rotor_rotators::{ErrorClass, SecretRef};
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::{OpenbaoAuthConfig, OpenbaoVault, OpenbaoVaultConfig};
    use crate::vault::Vault;

    fn vault(server: &MockServer, dir: &std::path::Path) -> OpenbaoVault {
        let token = dir.join("token");
        std::fs::write(&token, "s.test").unwrap();
        let config = OpenbaoVaultConfig {
            address: server.uri(),
            mount: "secret".into(),
            auth: OpenbaoAuthConfig::Token {
                token: SecretRef::File { file: token },
            },
            tls: None,
            namespace: None,
            pending_prefix: "_rotor/pending".into(),
            timeout: rotor_rotators::duration::Duration::from_secs(5),
            insecure_transport: false,
        };
        OpenbaoVault::open("bao", &config).unwrap()
    }

    fn lookup_ok() -> ResponseTemplate {
        ResponseTemplate::new(200)
            .set_body_json(serde_json::json!({"data": {"ttl": 0, "renewable": false}}))
    }

    fn sealed(status: u16) -> ResponseTemplate {
        ResponseTemplate::new(status)
            .set_body_json(serde_json::json!({"errors": ["Vault is sealed"]}))
    }

    /// A fake OpenBao answering the token lookup and, if given, the mount check.
    async fn answering(lookup: ResponseTemplate, mount: Option<ResponseTemplate>) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/auth/token/lookup-self"))
            .respond_with(lookup)
            .mount(&server)
            .await;
        if let Some(mount) = mount {
            Mock::given(method("GET"))
                .and(path("/v1/sys/internal/ui/mounts/secret"))
                .respond_with(mount)
                .mount(&server)
                .await;
        }
        server
    }

    /// How many requests the fake took on paths starting with `prefix`.
    async fn requests_to(server: &MockServer, prefix: &str) -> usize {
        let requests = server.received_requests().await.unwrap();
        requests
            .iter()
            .filter(|r| r.url.path().starts_with(prefix))
            .count()
    }

    /// A vault that answers 503 at first contact (sealed, restarting, a standby behind a
    /// load balancer) is an outage to wait out, not a missing mount.
    #[tokio::test]
    async fn a_503_to_the_mount_check_is_transient_and_checked_again() {
        let server = answering(lookup_ok(), Some(sealed(503))).await;
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&server, dir.path());
        let err = vault.read_current("app/key").await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient, "{err}");
        // The check was not remembered as done: the next call asks again.
        let _ = vault.read_current("app/key").await;
        assert_eq!(
            requests_to(&server, "/v1/sys/internal/ui/mounts/secret").await,
            2
        );
    }

    /// A token lookup the server could not answer has not accepted the token.
    #[tokio::test]
    async fn a_503_to_the_token_lookup_is_transient_not_a_valid_token() {
        let server = answering(sealed(503), None).await;
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&server, dir.path());
        let err = vault.read_current("app/key").await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient, "{err}");
        assert_eq!(
            requests_to(&server, "/v1/sys/").await,
            0,
            "nothing goes on with an unchecked token"
        );
    }

    /// A mount that does not exist stays a permanent error.
    #[tokio::test]
    async fn a_missing_mount_is_permanent() {
        let missing = ResponseTemplate::new(400)
            .set_body_json(serde_json::json!({"errors": ["no mount at secret/"]}));
        let server = answering(lookup_ok(), Some(missing)).await;
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&server, dir.path());
        let err = vault.read_current("app/key").await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{err}");
    }

    /// An answer without end is not read into memory.
    #[tokio::test]
    async fn an_oversized_reply_is_refused_after_the_limit() {
        let huge = ResponseTemplate::new(200).set_body_string("x".repeat(super::MAX_REPLY + 1));
        let server = answering(huge, None).await;
        let dir = tempfile::tempdir().unwrap();
        let vault = vault(&server, dir.path());
        let err = vault.read_current("app/key").await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent, "{err}");
        assert!(err.to_string().contains("more than 4096 KiB"), "{err}");
    }
}
