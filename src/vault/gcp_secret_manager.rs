//! The `gcp_secret_manager` vault: Google Cloud Secret Manager, one secret per credential (the
//! secret id is the vault path), each version rotor writes a secret version holding the
//! credential document as JSON.
//!
//! Consumers read the version alias `current` (`versions/current`), never `latest`: the version
//! being rotated in is added as the newest one and carries the alias `pending` until it is
//! verified. Promotion moves `current` to it and takes `pending` off in one `secrets.patch` of
//! `versionAliases`, with the secret's `etag` for check-and-set: an alias someone else moved
//! meanwhile fails the patch (`FAILED_PRECONDITION`), and the step reads again. The pending
//! document already carries the current fields under `previous`, as the AWS vault's does;
//! retirement adds the fields alone as a new version and moves `current` to it, then disables
//! or destroys (`retired_versions`) every older version no alias names, since each of them
//! holds the retired credential.
//!
//! Secret Manager numbers versions itself and keeps no metadata on them, so the run token rides
//! in the document under `_rotor`. A version added by a step that crashed before its alias
//! was set is found again by that token (an enabled version newer than `current` that no alias
//! names) and adopted, never added twice; a run rolled back disables or destroys it.
//!
//! ## Why no Google client crate
//! `google-cloud-secretmanager-v1` carries payloads as `bytes::Bytes`, which is never zeroized,
//! and its auth crate keeps the service-account key as a plain `String`. `gcp_auth` does the
//! same with the key and its tokens, and reads the metadata server at a fixed address, which no
//! test can stand in for. What rotor needs is seven REST calls and the OAuth 2.0 JWT bearer
//! grant (RFC 7523); the JWT is signed by `jsonwebtoken`. Every secret here is a
//! `SecretString` or a zeroized buffer, and the client follows no redirect to another origin.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::{Method, StatusCode};
use rotor_rotators::duration::Duration as ConfigDuration;
use rotor_rotators::kinds::Settings;
use rotor_rotators::{Credential, ErrorClass, SecretRef};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use zeroize::Zeroizing;

use super::wire::{WireDocument, describe_json_error, to_zeroized_json};
use super::{
    Document, PolicyScope, Previous, Reply, StoredVersion, Vault, VaultError, VaultSettings,
    error_chain, retired_token,
};

/// Google Cloud Secret Manager.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GcpSecretManagerConfig {
    /// The project that holds the secrets: its id (e.g. "acme-prod") or number.
    pub project: String,
    /// How rotor gets its access token.
    pub auth: GcpAuthConfig,
    /// What becomes of the versions that hold a retired (or discarded) credential: `disable`
    /// (the default: recoverable with `versions enable`), `destroy` (the payload is gone), or
    /// `keep` (left enabled; anyone who may read old versions still can).
    #[serde(default)]
    pub retired_versions: RetiredVersions,
    /// The version alias consumers read (`versions/current`).
    #[serde(default = "default_current_alias")]
    pub current_alias: String,
    /// The version alias of a version being rotated in.
    #[serde(default = "default_pending_alias")]
    pub pending_alias: String,
    /// Where a secret rotor creates keeps its replicas; empty: automatic replication.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replica_locations: Vec<String>,
    /// The API's base address: a regional or Private Service Connect endpoint, or a fake in tests.
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Timeout of each HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

/// How rotor gets an access token, tagged by `method`.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(tag = "method", rename_all = "snake_case", deny_unknown_fields)]
pub enum GcpAuthConfig {
    /// A service-account key (the JSON file `gcloud iam service-accounts keys create` writes),
    /// exchanged at its `token_uri` for an access token with a signed JWT.
    ServiceAccountKey {
        /// Where the key's JSON is: `env` or `file`.
        key: SecretRef,
    },
    /// The metadata server of the machine rotor runs on: the attached service account on
    /// Compute Engine, or workload identity on GKE.
    Metadata {
        /// The metadata server's address; plain http by design (it is on the host).
        #[serde(default = "default_metadata_endpoint")]
        endpoint: String,
    },
}

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RetiredVersions {
    #[default]
    Disable,
    Destroy,
    Keep,
}

fn default_current_alias() -> String {
    "current".into()
}

fn default_pending_alias() -> String {
    "pending".into()
}

fn default_endpoint() -> String {
    "https://secretmanager.googleapis.com".into()
}

fn default_metadata_endpoint() -> String {
    "http://metadata.google.internal".into()
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(10)
}

/// The scope of the access token: Secret Manager documents no narrower one.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The most of a reply rotor reads: a payload is at most 64 KiB, base64 a third more.
const MAX_REPLY: usize = 1 << 20;

/// Versions per page of `versions.list`.
const PAGE_SIZE: u32 = 100;

/// Unaliased versions read when looking for what a crashed step added: each crashed attempt
/// adopts the version before it instead of adding one, so a run leaves at most one behind.
const ORPHANS_READ: usize = 8;

/// Why `alias` cannot be a version alias.
fn alias_problem(alias: &str) -> Option<String> {
    let ok = alias.len() <= 63
        && alias.starts_with(|c: char| c.is_ascii_lowercase())
        && alias
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if !ok {
        Some(format!(
            "version alias `{alias}` must start with a lowercase letter and hold only lowercase letters, digits, `-` and `_` (at most 63)"
        ))
    } else if alias == "latest" || alias.chars().all(|c| c.is_ascii_digit()) {
        Some(format!(
            "version alias `{alias}` is taken by Secret Manager itself"
        ))
    } else {
        None
    }
}

impl Settings for GcpSecretManagerConfig {
    fn validate(&self) -> Result<(), String> {
        for alias in [&self.current_alias, &self.pending_alias] {
            if let Some(problem) = alias_problem(alias) {
                return Err(problem);
            }
        }
        if self.current_alias == self.pending_alias {
            return Err("current_alias and pending_alias must differ".into());
        }
        let project_ok = !self.project.is_empty()
            && self
                .project
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'));
        if !project_ok {
            return Err(format!(
                "project `{}` is not a project id or number (letters, digits, `-`, `.`, `:`)",
                self.project
            ));
        }
        reqwest::Url::parse(&self.endpoint)
            .map(drop)
            .map_err(|e| format!("endpoint `{}` is not a URL: {e}", self.endpoint))
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        match &self.auth {
            GcpAuthConfig::ServiceAccountKey { key } => vec![key],
            GcpAuthConfig::Metadata { .. } => Vec::new(),
        }
    }

    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        rotor_rotators::net::endpoint(
            "endpoint",
            Some(self.endpoint.as_str()),
            self.insecure_transport,
        )
    }
}

impl VaultSettings for GcpSecretManagerConfig {
    fn path_problem(&self, path: &str) -> Option<String> {
        let ok = path.len() <= 255
            && path
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        (!ok).then(|| {
            "a Secret Manager secret id holds only letters, digits, `-` and `_` (at most 255): no `/`"
                .into()
        })
    }

    fn least_privilege(&self, scope: &PolicyScope<'_>) -> String {
        let PolicyScope {
            credential,
            vault,
            path,
        } = *scope;
        let project = &self.project;
        let retire = match self.retired_versions {
            RetiredVersions::Disable => ",secretmanager.versions.disable",
            RetiredVersions::Destroy => ",secretmanager.versions.destroy",
            RetiredVersions::Keep => "",
        };
        format!(
            "# rotor: least privilege for credential \"{credential}\" in vault \"{vault}\" (project {project}, secret {path}).\n\
             # No predefined role below roles/secretmanager.admin may move version aliases\n\
             # (secretmanager.secrets.update), so a custom role holds exactly what rotor calls:\n\
             gcloud iam roles create rotorRotates --project={project} --title=\"rotor rotates\" \\\n  \
             --permissions=secretmanager.secrets.get,secretmanager.secrets.update,secretmanager.versions.add,secretmanager.versions.access,secretmanager.versions.list{retire}\n\
             # Bound on this secret only:\n\
             gcloud secrets add-iam-policy-binding {path} --project={project} \\\n  \
             --member=serviceAccount:ROTOR_SERVICE_ACCOUNT --role=projects/{project}/roles/rotorRotates\n\
             # The first rotation creates the secret (or create it beforehand, then this is not needed):\n\
             # secretmanager.secrets.create on the project, e.g. in a second custom role.\n\
             # Consumers: roles/secretmanager.secretAccessor on the secret, reading versions/{current}, never latest.\n",
            current = self.current_alias,
        )
    }
}

/// Bookkeeping inside every document rotor writes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    token: String,
}

/// What rotor reads of a secret: its etag and version aliases.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretMeta {
    #[serde(default)]
    etag: String,
    #[serde(default)]
    version_aliases: BTreeMap<String, VersionNumber>,
}

/// A version number: proto3 JSON writes an int64 as a string, some fakes as a number.
#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(untagged)]
enum VersionNumber {
    Number(u64),
    #[serde(deserialize_with = "number_from_string")]
    Text(u64),
}

fn number_from_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl VersionNumber {
    fn get(self) -> u64 {
        match self {
            VersionNumber::Number(n) | VersionNumber::Text(n) => n,
        }
    }
}

impl SecretMeta {
    fn alias(&self, alias: &str) -> Option<u64> {
        self.version_aliases.get(alias).map(|n| n.get())
    }
}

#[derive(Deserialize)]
struct AccessReply {
    payload: Payload,
}

#[derive(Deserialize)]
struct Payload {
    data: SecretString,
}

#[derive(Deserialize)]
struct VersionInfo {
    name: String,
    #[serde(default)]
    state: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VersionList {
    #[serde(default)]
    versions: Vec<VersionInfo>,
    #[serde(default)]
    next_page_token: String,
}

#[derive(Deserialize)]
struct TokenReply {
    access_token: SecretString,
    #[serde(default)]
    expires_in: u64,
}

#[derive(Deserialize)]
struct ServiceAccountKey {
    client_email: String,
    private_key: SecretString,
    #[serde(default)]
    private_key_id: Option<String>,
    token_uri: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// The number at the end of a version's resource name (`projects/P/secrets/S/versions/N`).
fn number_of(name: &str) -> Option<u64> {
    name.rsplit('/').next().and_then(|n| n.parse().ok())
}

impl Reply {
    /// Google's error `status` (`NOT_FOUND`, `FAILED_PRECONDITION`...) and message; never the
    /// request's data.
    fn error(&self) -> (String, String) {
        let value = serde_json::from_slice::<serde_json::Value>(&self.body).unwrap_or_default();
        let status = value["error"]["status"].as_str().unwrap_or("").to_owned();
        let mut message = value["error"]["message"]
            .as_str()
            .map_or_else(|| format!("HTTP {}", self.status), str::to_owned);
        if let Some((cut, _)) = message.char_indices().nth(300) {
            message.truncate(cut);
        }
        (status, message)
    }
}

struct CachedToken {
    token: SecretString,
    renew_at: Instant,
}

pub struct GcpSecretManager {
    name: String,
    http: reqwest::Client,
    base: String,
    config: GcpSecretManagerConfig,
    token: Mutex<Option<CachedToken>>,
}

impl GcpSecretManager {
    /// Builds the client. No network call happens here: Google unreachable at start makes runs
    /// retry, it does not stop rotor.
    pub fn open(name: &str, config: &GcpSecretManagerConfig) -> Result<Self, VaultError> {
        let http = reqwest::Client::builder()
            .redirect(rotor_rotators::net::same_origin_redirects())
            .timeout(config.timeout.as_std())
            .connect_timeout(config.timeout.as_std())
            .build()
            .map_err(|e| {
                VaultError::new(
                    ErrorClass::Permanent,
                    name,
                    "",
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        Ok(GcpSecretManager {
            name: name.into(),
            http,
            base: format!(
                "{}/v1/projects/{}/secrets",
                config.endpoint.trim_end_matches('/'),
                config.project
            ),
            config: config.clone(),
            token: Mutex::new(None),
        })
    }

    fn err(&self, class: ErrorClass, path: &str, message: impl Into<String>) -> VaultError {
        VaultError::new(class, &self.name, path, message)
    }

    /// One HTTP exchange, its body read.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        to: &str,
        path: &str,
    ) -> Result<Reply, VaultError> {
        let response = self.exchange(request, to, path).await?;
        self.read(response, to, path).await
    }

    /// Sends `request`; a redirect to another origin comes back as an error.
    async fn exchange(
        &self,
        request: reqwest::RequestBuilder,
        to: &str,
        path: &str,
    ) -> Result<reqwest::Response, VaultError> {
        let response = request.send().await.map_err(|e| {
            self.err(
                ErrorClass::Transient,
                path,
                format!("cannot reach {to}: {}", error_chain(&e)),
            )
        })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(self.err(
                ErrorClass::Transient,
                path,
                format!(
                    "{to} answered {status}, a redirect: rotor sends its token and secrets to no other origin; \
                     point `endpoint` at the API itself"
                ),
            ));
        }
        Ok(response)
    }

    /// Reads a reply's body, within `MAX_REPLY`.
    async fn read(
        &self,
        response: reqwest::Response,
        to: &str,
        path: &str,
    ) -> Result<Reply, VaultError> {
        let status = response.status();
        let body = rotor_rotators::net::read_within(response, MAX_REPLY)
            .await
            .map_err(|e| match e {
                rotor_rotators::net::BodyError::Read(e) => self.err(
                    ErrorClass::Transient,
                    path,
                    format!("reading the reply from {to} failed: {e}"),
                ),
                rotor_rotators::net::BodyError::TooLarge { limit } => self.err(
                    ErrorClass::Permanent,
                    path,
                    format!(
                        "{to} answered more than {} KiB, more than any Secret Manager reply",
                        limit / 1024
                    ),
                ),
            })?;
        Ok(Reply { status, body })
    }

    /// An access token, fetched again two thirds into its life.
    async fn access_token(&self, path: &str) -> Result<SecretString, VaultError> {
        let mut cached = self.token.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.renew_at) {
            return Ok(c.token.clone());
        }
        let reply = match &self.config.auth {
            GcpAuthConfig::ServiceAccountKey { key } => self.token_by_key(key, path).await?,
            GcpAuthConfig::Metadata { endpoint } => self.token_by_metadata(endpoint, path).await?,
        };
        let life = Duration::from_secs(reply.expires_in.max(60));
        *cached = Some(CachedToken {
            token: reply.access_token.clone(),
            renew_at: Instant::now() + life * 2 / 3,
        });
        Ok(reply.access_token)
    }

    /// RFC 7523: a JWT signed with the key, exchanged at the key's `token_uri`.
    async fn token_by_key(&self, key: &SecretRef, path: &str) -> Result<TokenReply, VaultError> {
        let permanent = |m: String| self.err(ErrorClass::Permanent, path, m);
        let text = super::resolve_local(key)
            .map_err(|e| permanent(format!("service-account key: {e}")))?;
        let key: ServiceAccountKey = serde_json::from_str(text.expose_secret()).map_err(|e| {
            permanent(format!(
                "the service-account key is not the JSON `gcloud iam service-accounts keys create` writes ({})",
                describe_json_error(&e)
            ))
        })?;
        if let Some(problem) = rotor_rotators::net::transport_problem(&key.token_uri) {
            return Err(permanent(format!(
                "the service-account key's token_uri {} would carry the signed assertion unprotected: {problem}",
                key.token_uri
            )));
        }
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            iss: &key.client_email,
            scope: SCOPE,
            aud: &key.token_uri,
            iat: now,
            exp: now + 3600,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = key.private_key_id.clone();
        let signing =
            jsonwebtoken::EncodingKey::from_rsa_pem(key.private_key.expose_secret().as_bytes())
                .map_err(|e| {
                    permanent(format!(
                        "the service-account key's private_key is not an RSA key in PEM: {e}"
                    ))
                })?;
        let assertion = Zeroizing::new(
            jsonwebtoken::encode(&header, &claims, &signing)
                .map_err(|e| permanent(format!("signing the token request failed: {e}")))?,
        );
        // A JWT is base64url and dots: nothing in it needs form encoding.
        let body = Zeroizing::new(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
            assertion.as_str()
        ));
        let request = self
            .http
            .post(&key.token_uri)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.as_bytes().to_vec());
        let reply = self.send(request, &key.token_uri, path).await?;
        if !reply.status.is_success() {
            let detail = serde_json::from_slice::<serde_json::Value>(&reply.body)
                .ok()
                .and_then(|v| {
                    v["error_description"]
                        .as_str()
                        .or(v["error"].as_str())
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| format!("HTTP {}", reply.status));
            return Err(self.err(
                class_of(reply.status),
                path,
                format!(
                    "the token request for {} was refused ({}): {detail}; is the key still active (`gcloud iam service-accounts keys list --iam-account={}`)?",
                    key.client_email, reply.status, key.client_email
                ),
            ));
        }
        self.token_reply(&reply, path, "the token endpoint")
    }

    async fn token_by_metadata(
        &self,
        endpoint: &str,
        path: &str,
    ) -> Result<TokenReply, VaultError> {
        let mut url = reqwest::Url::parse(&format!(
            "{}/computeMetadata/v1/instance/service-accounts/default/token",
            endpoint.trim_end_matches('/')
        ))
        .map_err(|e| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!("auth.endpoint `{endpoint}` is not a URL: {e}"),
            )
        })?;
        url.query_pairs_mut().append_pair("scopes", SCOPE);
        let request = self.http.get(url).header("Metadata-Flavor", "Google");
        let response = self.exchange(request, endpoint, path).await?;
        // Whatever else answers on that address (a proxy, a captive portal) does not say so.
        if response
            .headers()
            .get("metadata-flavor")
            .is_none_or(|v| v != "Google")
        {
            return Err(self.err(
                ErrorClass::Permanent,
                path,
                format!(
                    "{endpoint} answered without `Metadata-Flavor: Google`: it is not the metadata server; \
                     use `method = \"service_account_key\"` where there is none"
                ),
            ));
        }
        let reply = self.read(response, endpoint, path).await?;
        if !reply.status.is_success() {
            return Err(self.err(
                class_of(reply.status),
                path,
                format!(
                    "the metadata server refused a token ({}); is a service account attached to this machine, or workload identity set up for this pod?",
                    reply.status
                ),
            ));
        }
        self.token_reply(&reply, path, "the metadata server")
    }

    fn token_reply(&self, reply: &Reply, path: &str, from: &str) -> Result<TokenReply, VaultError> {
        serde_json::from_slice(&reply.body).map_err(|e| {
            self.err(
                ErrorClass::Transient,
                path,
                format!(
                    "{from} answered without an access token ({})",
                    describe_json_error(&e)
                ),
            )
        })
    }

    /// A Secret Manager call with the access token. A 401 once drops the cached token (it
    /// may have been revoked) and asks again. 404 and 400 come back to the caller, which knows
    /// what they mean there; the server down or throttling is transient, a refusal permanent.
    async fn call(
        &self,
        method: Method,
        suffix: &str,
        query: &[(&str, &str)],
        body: Option<&Zeroizing<Vec<u8>>>,
        path: &str,
    ) -> Result<Reply, VaultError> {
        let mut url = reqwest::Url::parse(&format!("{}{suffix}", self.base)).map_err(|e| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!("the request URL is not a URL: {e}"),
            )
        })?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let mut retried = false;
        loop {
            let token = self.access_token(path).await?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(body) = body {
                request = request
                    .header("Content-Type", "application/json")
                    .body(body.to_vec());
            }
            let reply = self.send(request, &self.config.endpoint, path).await?;
            let (status, message) = reply.error();
            return match reply.status {
                s if s.is_success() || s == StatusCode::NOT_FOUND || s == StatusCode::BAD_REQUEST => {
                    Ok(reply)
                }
                StatusCode::CONFLICT if status == "ALREADY_EXISTS" => Ok(reply),
                // Google's answer to a concurrency conflict: retry.
                StatusCode::CONFLICT if status == "ABORTED" => Err(self.err(
                    ErrorClass::Transient,
                    path,
                    format!("Secret Manager aborted the request: {message}"),
                )),
                StatusCode::UNAUTHORIZED if !retried => {
                    retried = true;
                    *self.token.lock().await = None;
                    continue;
                }
                StatusCode::UNAUTHORIZED => Err(self.err(
                    ErrorClass::Permanent,
                    path,
                    format!("the access token was refused: {message}; check the service account"),
                )),
                StatusCode::FORBIDDEN => Err(self.err(
                    ErrorClass::Permanent,
                    path,
                    format!(
                        "permission denied: {message}; `rotor policy` prints the role rotor needs on this secret"
                    ),
                )),
                s => Err(self.err(
                    class_of(s),
                    path,
                    format!("Secret Manager answered {s} {status}: {message}"),
                )),
            };
        }
    }

    fn unexpected(&self, path: &str, what: &str, reply: &Reply) -> VaultError {
        let (status, message) = reply.error();
        self.err(
            ErrorClass::Permanent,
            path,
            format!("{what} failed ({} {status}): {message}", reply.status),
        )
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        reply: &Reply,
        path: &str,
        what: &str,
    ) -> Result<T, VaultError> {
        reply
            .decode(what, "Secret Manager")
            .map_err(|m| self.err(ErrorClass::Transient, path, m))
    }

    /// The secret's etag and aliases, if it exists.
    async fn secret(&self, path: &str) -> Result<Option<SecretMeta>, VaultError> {
        let reply = self
            .call(Method::GET, &format!("/{path}"), &[], None, path)
            .await?;
        match reply.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => self.json(&reply, path, "secrets.get").map(Some),
            _ => Err(self.unexpected(path, "secrets.get", &reply)),
        }
    }

    /// Creates the secret, empty, for its first version; one created meanwhile is as good.
    async fn create(&self, path: &str) -> Result<SecretMeta, VaultError> {
        let replication = if self.config.replica_locations.is_empty() {
            serde_json::json!({ "automatic": {} })
        } else {
            let replicas: Vec<_> = self
                .config
                .replica_locations
                .iter()
                .map(|l| serde_json::json!({ "location": l }))
                .collect();
            serde_json::json!({ "userManaged": { "replicas": replicas } })
        };
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({
                "replication": replication,
                "labels": { "managed-by": "rotor" },
            }))
            .expect("a secret serializes"),
        );
        let reply = self
            .call(Method::POST, "", &[("secretId", path)], Some(&body), path)
            .await?;
        if !reply.status.is_success() && reply.status != StatusCode::CONFLICT {
            return Err(self.unexpected(path, "secrets.create", &reply));
        }
        self.secret(path).await?.ok_or_else(|| {
            self.err(
                ErrorClass::Transient,
                path,
                "the secret was created but cannot be read yet",
            )
        })
    }

    /// Version `n`'s document and the run token in it: `None` when the version is disabled,
    /// destroyed or gone. A payload that is not a rotor document is an error naming it.
    async fn access(
        &self,
        path: &str,
        n: u64,
    ) -> Result<Option<(Option<String>, WireDocument<Meta>)>, VaultError> {
        let reply = self
            .call(
                Method::GET,
                &format!("/{path}/versions/{n}:access"),
                &[],
                None,
                path,
            )
            .await?;
        if reply.status == StatusCode::NOT_FOUND || reply.status == StatusCode::BAD_REQUEST {
            let (status, _) = reply.error();
            if reply.status == StatusCode::NOT_FOUND || status == "FAILED_PRECONDITION" {
                return Ok(None);
            }
            return Err(self.unexpected(path, "versions.access", &reply));
        }
        let access: AccessReply = self.json(&reply, path, "versions.access")?;
        let bytes = Zeroizing::new(BASE64.decode(access.payload.data.expose_secret()).map_err(
            |_| {
                self.err(
                    ErrorClass::Permanent,
                    path,
                    format!("version {n}'s payload is not base64"),
                )
            },
        )?);
        let doc: WireDocument<Meta> = serde_json::from_slice(&bytes).map_err(|e| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!(
                    "version {n} is not a rotor document ({}); nothing was changed",
                    describe_json_error(&e)
                ),
            )
        })?;
        Ok(Some((doc.meta.as_ref().map(|m| m.token.clone()), doc)))
    }

    /// Adds `doc` as the newest version; returns its number.
    async fn add(&self, path: &str, doc: &WireDocument<Meta>) -> Result<u64, VaultError> {
        let json = to_zeroized_json(doc, doc.json_capacity());
        let encoded_len = json.len().div_ceil(3) * 4;
        let mut body = Zeroizing::new(Vec::with_capacity(encoded_len + 32));
        body.extend_from_slice(br#"{"payload":{"data":""#);
        let start = body.len();
        body.resize(start + encoded_len, 0);
        let written = BASE64
            .encode_slice(&*json, &mut body[start..])
            .expect("sized for base64");
        body.truncate(start + written);
        body.extend_from_slice(br#""}}"#);
        let reply = self
            .call(
                Method::POST,
                &format!("/{path}:addVersion"),
                &[],
                Some(&body),
                path,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.unexpected(path, "secrets.addVersion", &reply));
        }
        let version: VersionInfo = self.json(&reply, path, "secrets.addVersion")?;
        number_of(&version.name).ok_or_else(|| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!(
                    "secrets.addVersion answered a version named {}",
                    version.name
                ),
            )
        })
    }

    /// Sets the secret's aliases to `aliases`, if its etag is still `etag`. A changed etag is
    /// transient: the step reads again, and finds its own work or the change.
    async fn set_aliases(
        &self,
        path: &str,
        etag: &str,
        aliases: &BTreeMap<String, u64>,
    ) -> Result<(), VaultError> {
        let as_text: BTreeMap<&str, String> = aliases
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_string()))
            .collect();
        let body = Zeroizing::new(
            serde_json::to_vec(&serde_json::json!({ "versionAliases": as_text, "etag": etag }))
                .expect("aliases serialize"),
        );
        let reply = self
            .call(
                Method::PATCH,
                &format!("/{path}"),
                &[("updateMask", "versionAliases")],
                Some(&body),
                path,
            )
            .await?;
        if reply.status.is_success() {
            return Ok(());
        }
        let (status, message) = reply.error();
        if status == "FAILED_PRECONDITION" {
            return Err(self.err(
                ErrorClass::Transient,
                path,
                format!("the secret changed while rotor moved its aliases ({message}); it will read it again"),
            ));
        }
        Err(self.unexpected(path, "secrets.patch versionAliases", &reply))
    }

    /// Every version's number and state, oldest first.
    async fn versions(&self, path: &str) -> Result<Vec<(u64, String)>, VaultError> {
        let mut all = Vec::new();
        let mut page = String::new();
        let size = PAGE_SIZE.to_string();
        loop {
            let mut query = vec![("pageSize", size.as_str())];
            if !page.is_empty() {
                query.push(("pageToken", page.as_str()));
            }
            let reply = self
                .call(
                    Method::GET,
                    &format!("/{path}/versions"),
                    &query,
                    None,
                    path,
                )
                .await?;
            if reply.status == StatusCode::NOT_FOUND {
                return Ok(Vec::new());
            }
            if !reply.status.is_success() {
                return Err(self.unexpected(path, "versions.list", &reply));
            }
            let list: VersionList = self.json(&reply, path, "versions.list")?;
            all.extend(
                list.versions
                    .into_iter()
                    .filter_map(|v| number_of(&v.name).map(|n| (n, v.state))),
            );
            if list.next_page_token.is_empty() {
                break;
            }
            page = list.next_page_token;
        }
        all.sort_unstable();
        Ok(all)
    }

    /// An enabled version of run `token` newer than every aliased one that no alias names: what
    /// a step that crashed between adding it and aliasing it left.
    async fn orphan_of(
        &self,
        path: &str,
        secret: &SecretMeta,
        token: &str,
    ) -> Result<Option<(u64, WireDocument<Meta>)>, VaultError> {
        let newest_aliased = secret.version_aliases.values().map(|n| n.get()).max();
        let unaliased = self
            .versions(path)
            .await?
            .into_iter()
            .rev()
            .take_while(|(n, _)| newest_aliased.is_none_or(|a| *n > a))
            .filter(|(_, state)| state == "ENABLED")
            .take(ORPHANS_READ);
        for (n, _) in unaliased {
            // Someone else's payload in between is not rotor's concern here.
            if let Ok(Some((Some(t), doc))) = self.access(path, n).await
                && t == token
            {
                return Ok(Some((n, doc)));
            }
        }
        Ok(None)
    }

    /// Disables or destroys (as configured) version `n`.
    async fn retire_version(&self, path: &str, n: u64) -> Result<(), VaultError> {
        let verb = match self.config.retired_versions {
            RetiredVersions::Keep => return Ok(()),
            RetiredVersions::Disable => "disable",
            RetiredVersions::Destroy => "destroy",
        };
        let body = Zeroizing::new(b"{}".to_vec());
        let reply = self
            .call(
                Method::POST,
                &format!("/{path}/versions/{n}:{verb}"),
                &[],
                Some(&body),
                path,
            )
            .await?;
        let (status, _) = reply.error();
        // Already disabled or destroyed by an earlier attempt: done.
        if reply.status.is_success()
            || reply.status == StatusCode::NOT_FOUND
            || status == "FAILED_PRECONDITION"
        {
            return Ok(());
        }
        Err(self.unexpected(path, &format!("versions.{verb}"), &reply))
    }

    /// Retires every version older than `current` that holds a credential and no alias names.
    async fn retire_older(&self, path: &str, current: u64) -> Result<(), VaultError> {
        if self.config.retired_versions == RetiredVersions::Keep {
            return Ok(());
        }
        let Some(secret) = self.secret(path).await? else {
            return Ok(());
        };
        let aliased: Vec<u64> = secret.version_aliases.values().map(|n| n.get()).collect();
        let live = |state: &str| match self.config.retired_versions {
            RetiredVersions::Destroy => state != "DESTROYED",
            _ => state == "ENABLED",
        };
        for (n, state) in self.versions(path).await? {
            if n < current && !aliased.contains(&n) && live(&state) {
                self.retire_version(path, n).await?;
            }
        }
        Ok(())
    }

    /// The version `alias` names and its document, unless the alias is absent.
    async fn aliased(
        &self,
        path: &str,
        secret: &SecretMeta,
        alias: &str,
    ) -> Result<Option<(u64, Option<String>, WireDocument<Meta>)>, VaultError> {
        let Some(n) = secret.alias(alias) else {
            return Ok(None);
        };
        match self.access(path, n).await? {
            Some((token, doc)) => Ok(Some((n, token, doc))),
            None => Err(self.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "alias `{alias}` names version {n}, which is disabled or destroyed: it was changed outside rotor; \
                     enable it or move the alias, then `rotor rotate`"
                ),
            )),
        }
    }

    /// `aliased`, the secret read first: for the reads that change nothing.
    async fn read_aliased(
        &self,
        path: &str,
        alias: &str,
    ) -> Result<Option<(u64, Option<String>, WireDocument<Meta>)>, VaultError> {
        match self.secret(path).await? {
            Some(secret) => self.aliased(path, &secret, alias).await,
            None => Ok(None),
        }
    }

    /// `aliases` with `set` naming `n` and `remove` gone.
    fn moved(
        secret: &SecretMeta,
        set: Option<(&str, u64)>,
        remove: &[&str],
    ) -> BTreeMap<String, u64> {
        let mut aliases: BTreeMap<String, u64> = secret
            .version_aliases
            .iter()
            .map(|(k, v)| (k.clone(), v.get()))
            .collect();
        for alias in remove {
            aliases.remove(*alias);
        }
        if let Some((alias, n)) = set {
            aliases.insert(alias.to_owned(), n);
        }
        aliases
    }
}

fn class_of(status: StatusCode) -> ErrorClass {
    if status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
    {
        ErrorClass::Transient
    } else {
        ErrorClass::Permanent
    }
}

fn stored(n: u64, token: Option<String>, credential: Credential) -> StoredVersion {
    StoredVersion::new(n.to_string(), token, credential)
}

impl Vault for GcpSecretManager {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read_current(&self, path: &str) -> Result<Option<Document>, VaultError> {
        Ok(self
            .read_aliased(path, &self.config.current_alias)
            .await?
            .map(|(n, token, doc)| Document {
                current: stored(n, token, doc.fields),
                previous: doc.previous.map(|p| StoredVersion::new("", None, p)),
            }))
    }

    async fn read_pending(&self, path: &str) -> Result<Option<StoredVersion>, VaultError> {
        Ok(self
            .read_aliased(path, &self.config.pending_alias)
            .await?
            .map(|(n, token, doc)| stored(n, token, doc.fields)))
    }

    async fn write_pending(
        &self,
        path: &str,
        token: &str,
        credential: &Credential,
        previous: Previous,
    ) -> Result<StoredVersion, VaultError> {
        let pending_alias = self.config.pending_alias.as_str();
        let secret = match self.secret(path).await? {
            Some(secret) => secret,
            None => self.create(path).await?,
        };
        if let Some((n, held, doc)) = self.aliased(path, &secret, pending_alias).await? {
            if held.as_deref() == Some(token) {
                return Ok(stored(n, held, doc.fields));
            }
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "version {n} holds alias `{pending_alias}`: a previous rotation isn't complete. rotor will not \
                     overwrite it; finish it, or cancel it by removing the alias (`gcloud secrets update {path} \
                     --remove-version-aliases={pending_alias}`), then `rotor rotate`"
                ),
            ));
        }
        let (n, fields) = match self.orphan_of(path, &secret, token).await? {
            Some((n, doc)) => (n, doc.fields),
            None => {
                let current = self
                    .aliased(path, &secret, &self.config.current_alias)
                    .await?;
                let doc = WireDocument {
                    fields: credential.clone(),
                    previous: previous.of(current.map(|(_, _, doc)| doc.fields)),
                    meta: Some(Meta {
                        token: token.to_owned(),
                    }),
                };
                let n = self.add(path, &doc).await?;
                crate::failpoint::pause_if_armed("vault:pending:added").await;
                (n, doc.fields)
            }
        };
        let aliases = Self::moved(&secret, Some((pending_alias, n)), &[]);
        self.set_aliases(path, &secret.etag, &aliases).await?;
        Ok(stored(n, Some(token.to_owned()), fields))
    }

    async fn promote_run(
        &self,
        path: &str,
        token: &str,
        _run_id: Option<&str>,
        expected_current: Option<&str>,
        verified: Option<super::Verified<'_>>,
    ) -> Result<String, VaultError> {
        let (current_alias, pending_alias) = (
            self.config.current_alias.as_str(),
            self.config.pending_alias.as_str(),
        );
        let secret = self.secret(path).await?.ok_or_else(|| {
            self.err(
                ErrorClass::Permanent,
                path,
                "the secret is gone: this run has no pending version to promote; it will be rolled back",
            )
        })?;
        let pending = self.aliased(path, &secret, pending_alias).await?;
        let current = secret.alias(current_alias);
        // Promoted already: pending is gone and current is this run's version.
        if pending.is_none()
            && let Some((n, Some(held), _)) = self.aliased(path, &secret, current_alias).await?
            && held == token
        {
            return Ok(n.to_string());
        }
        let current_text = current.map(|n| n.to_string());
        if current_text.as_deref() != expected_current {
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "alias `{current_alias}` names version {} but rotor last saw {}: it was changed outside rotor. \
                     rotor will not overwrite it; check who changed it, then run `rotor rotate` again",
                    current_text.as_deref().unwrap_or("(none)"),
                    expected_current.unwrap_or("(none)")
                ),
            ));
        }
        let Some((n, Some(held), doc)) =
            pending.filter(|(_, held, _)| held.as_deref() == Some(token))
        else {
            return Err(self.err(
                ErrorClass::Permanent,
                path,
                "this run has no pending version to promote; it will be rolled back",
            ));
        };
        debug_assert_eq!(held, token);
        if let Some(verified) = verified
            && !verified.is(&doc.fields.fingerprint().to_hex())
        {
            return Err(super::not_verified(&self.name, path));
        }
        let aliases = Self::moved(&secret, Some((current_alias, n)), &[pending_alias]);
        self.set_aliases(path, &secret.etag, &aliases).await?;
        crate::failpoint::pause_if_armed("vault:promote:written").await;
        Ok(n.to_string())
    }

    async fn discard_pending(&self, path: &str, token: &str) -> Result<(), VaultError> {
        let Some(secret) = self.secret(path).await? else {
            return Ok(());
        };
        let pending_alias = self.config.pending_alias.as_str();
        if let Some((n, Some(held), _)) = self.aliased(path, &secret, pending_alias).await?
            && held == token
        {
            let aliases = Self::moved(&secret, None, &[pending_alias]);
            self.set_aliases(path, &secret.etag, &aliases).await?;
            return self.retire_version(path, n).await;
        }
        // Added by an attempt that crashed before aliasing it.
        if let Some((n, _)) = self.orphan_of(path, &secret, token).await? {
            self.retire_version(path, n).await?;
        }
        Ok(())
    }

    async fn drop_previous(&self, path: &str, token: &str) -> Result<Option<String>, VaultError> {
        let current_alias = self.config.current_alias.as_str();
        let Some(secret) = self.secret(path).await? else {
            return Ok(None);
        };
        let Some((n, held, doc)) = self.aliased(path, &secret, current_alias).await? else {
            return Ok(None);
        };
        let retired = retired_token(token);
        if held.as_deref() == Some(retired.as_str()) {
            self.retire_older(path, n).await?;
            return Ok(Some(n.to_string()));
        }
        if held.as_deref() != Some(token) {
            return Err(super::changed_since_promoted(&self.name, path));
        }
        if doc.previous.is_none() {
            self.retire_older(path, n).await?;
            return Ok(Some(n.to_string()));
        }
        if secret.alias(&self.config.pending_alias).is_some() {
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                "another pending version appeared during grace: someone started a rotation outside \
                 rotor; the previous credential is left in place",
            ));
        }
        let r = match self.orphan_of(path, &secret, &retired).await? {
            Some((r, _)) => r,
            None => {
                let fresh = WireDocument {
                    fields: doc.fields,
                    previous: None,
                    meta: Some(Meta {
                        token: retired.clone(),
                    }),
                };
                let r = self.add(path, &fresh).await?;
                crate::failpoint::pause_if_armed("vault:retire:written").await;
                r
            }
        };
        let aliases = Self::moved(&secret, Some((current_alias, r)), &[]);
        self.set_aliases(path, &secret.etag, &aliases).await?;
        crate::failpoint::pause_if_armed("vault:retire:labelled").await;
        self.retire_older(path, r).await?;
        Ok(Some(r.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_follow_secret_managers_rules() {
        assert!(alias_problem("current").is_none());
        assert!(alias_problem("rotor_pending-2").is_none());
        assert!(alias_problem("latest").is_some());
        assert!(alias_problem("Current").is_some());
        assert!(alias_problem("1").is_some());
        assert!(alias_problem("has/slash").is_some());
    }

    #[test]
    fn version_numbers_come_as_text_or_number() {
        let meta: SecretMeta = serde_json::from_str(
            r#"{"etag":"\"1\"","versionAliases":{"current":"3","pending":4}}"#,
        )
        .unwrap();
        assert_eq!(meta.alias("current"), Some(3));
        assert_eq!(meta.alias("pending"), Some(4));
        assert_eq!(number_of("projects/p/secrets/s/versions/12"), Some(12));
    }
}
