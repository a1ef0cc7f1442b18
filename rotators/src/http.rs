//! `http`: a generic provider driven by configured HTTP calls, for SaaS API keys and in-house
//! services that have no rotator of their own.
//!
//! Two shapes. With `mint`, the provider generates the key (`POST /keys` returns it once): the
//! secret and the key's id are taken from the response by JSON pointer, and a `list` call lets
//! a retried mint find and revoke the key an interrupted attempt of the same run made (the run
//! token goes into the key's name). With `apply`, rotor generates the secret and sends it.
//! `verify` calls the provider *as* the new credential; `retire` revokes the old one.
//!
//! Templates: `{{token}}` (the run token), `{{id}}` (the credential's id at the provider),
//! `{{secret}}` (only in headers and bodies: never in a URL, which ends up in logs).

use crate::Usage;
use crate::backoff::while_propagating;
use crate::kinds::Settings;
use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::password::{Alphabet, random};
use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, resolve_secret,
};

/// The vault document's fields.
pub const ID: &str = "id";
pub const VALUE: &str = "value";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Prepended to every call's `path`: `https://api.vendor.example`.
    pub base_url: String,
    /// How rotor authenticates its own calls (all but `verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// The provider generates the key: this call returns it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mint: Option<MintCall>,
    /// rotor generates the secret and this call installs it (`{{secret}}` in the body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apply: Option<HttpCall>,
    /// A call made *as* the new credential (`{{secret}}` in a header) that must succeed.
    pub verify: HttpCall,
    /// How long a refusal of the new credential by `verify` (401, 403, 404) counts as the
    /// provider still propagating it: rotor calls again, backing off, and rolls back only when
    /// it is still refused after this long. "0s" rolls back at the first refusal.
    #[serde(default = "default_verify_within")]
    pub verify_within: crate::duration::Duration,
    /// Revokes a replaced or rolled-back credential (`{{id}}` or `{{secret}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retire: Option<HttpCall>,
    /// Lists the credentials at the provider (orphan repair after a crash, `list_live`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub list: Option<ListCall>,
    /// Length of a secret rotor generates for `apply` (alphanumeric).
    #[serde(default = "default_length")]
    pub length: usize,
    /// How long one call may take before the step counts as a transient failure.
    #[serde(default = "default_timeout")]
    pub timeout: crate::duration::Duration,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
    /// PEM bundle of the CA(s) that sign the provider's certificate, replacing the system
    /// roots: for a service of your own behind a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_length() -> usize {
    40
}

fn default_timeout() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(10)
}

fn default_verify_within() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(30)
}

/// A header carrying rotor's own credential: `Authorization: Bearer <value>`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// The header's name. Default "Authorization".
    #[serde(default = "default_auth_header")]
    pub header: String,
    /// Written before the value, e.g. "Bearer " (the default) or "" for a bare API key.
    #[serde(default = "default_auth_prefix")]
    pub prefix: String,
    /// rotor's own credential at the provider, by reference.
    pub value: SecretRef,
}

fn default_auth_header() -> String {
    "Authorization".into()
}

fn default_auth_prefix() -> String {
    "Bearer ".into()
}

/// One templated request and the statuses that mean success.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCall {
    /// The HTTP method. Default "GET".
    #[serde(default = "default_method")]
    pub method: String,
    /// Appended to `base_url`; may hold `{{token}}` and `{{id}}`.
    pub path: String,
    /// Extra request headers (not secrets: the auth header carries rotor's credential).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// A JSON (or other) body; template values are JSON-escaped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Statuses that mean success (default: any 2xx). For `retire`, add 404 if "already gone"
    /// answers so.
    #[serde(default)]
    pub expect: Vec<u16>,
}

fn default_method() -> String {
    "GET".into()
}

/// The call that makes a key at the provider, and where the key is in its answer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MintCall {
    #[serde(flatten)]
    pub call: HttpCall,
    /// JSON pointer to the secret in the response: "/key".
    pub secret: String,
    /// JSON pointer to the key's id in the response: "/id".
    pub id: String,
}

/// The call that lists keys, and where each key's fields are.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListCall {
    #[serde(flatten)]
    pub call: HttpCall,
    /// JSON pointer to the array of keys: "/keys" ("" for a top-level array).
    pub items: String,
    /// JSON pointer to a key's id within an item: "/id".
    pub id: String,
    /// JSON pointer to a key's name within an item (where `mint` put `{{token}}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON pointer to a boolean "active" within an item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// JSON pointer to when a key was last used, within an item: RFC 3339 text or seconds
    /// since the epoch (`null`: never). Gives `retire_when = "unused"` its evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<String>,
}

/// One key as the `list` call shows it.
struct Listed {
    id: String,
    name: Option<String>,
    active: bool,
    /// When it was last used (ms), where the list says.
    last_used: Option<i64>,
}

/// A time as APIs write it: RFC 3339 text, or seconds since the epoch.
fn time_at(value: &serde_json::Value, pointer: &str) -> Option<i64> {
    match value.pointer(pointer)? {
        serde_json::Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis()),
        serde_json::Value::Number(n) => n.as_i64().map(|secs| secs.saturating_mul(1000)),
        _ => None,
    }
}

impl HttpConfig {
    fn calls(&self) -> Vec<(&'static str, &HttpCall)> {
        let mut calls = vec![("verify", &self.verify)];
        calls.extend(self.mint.as_ref().map(|m| ("mint", &m.call)));
        calls.extend(self.apply.as_ref().map(|c| ("apply", c)));
        calls.extend(self.retire.as_ref().map(|c| ("retire", c)));
        calls.extend(self.list.as_ref().map(|l| ("list", &l.call)));
        calls
    }
}

impl Settings for HttpConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        crate::net::endpoint(
            "base_url",
            Some(self.base_url.as_str()),
            self.insecure_transport,
        )
    }

    fn validate(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.base_url)
            .map_err(|e| format!("`base_url` is not a URL: {e}"))?;
        if url.password().is_some() || !url.username().is_empty() {
            return Err("`base_url` contains credentials; put rotor's credential in `auth = { value = { env = \"NAME\" } }`".into());
        }
        match (&self.mint, &self.apply) {
            (Some(_), Some(_)) => {
                return Err(
                    "set `mint` (the provider makes the key) or `apply` (rotor makes it), not both"
                        .into(),
                );
            }
            (None, None) => {
                return Err(
                    "set `mint` (the provider makes the key) or `apply` (rotor makes it)".into(),
                );
            }
            _ => {}
        }
        for (name, call) in self.calls() {
            Method::from_bytes(call.method.to_uppercase().as_bytes())
                .map_err(|_| format!("{name}.method `{}` is not an HTTP method", call.method))?;
            if call.path.contains("{{secret}}") {
                return Err(format!(
                    "{name}.path must not hold {{{{secret}}}}: URLs end up in logs; send it in a header or the body"
                ));
            }
            if !call.path.starts_with('/') {
                return Err(format!("{name}.path must start with `/`"));
            }
            if let Some(bad) = call.expect.iter().find(|s| !(100..=599).contains(*s)) {
                return Err(format!(
                    "{name}.expect holds {bad}, which is not an HTTP status"
                ));
            }
        }
        if !self
            .verify
            .headers
            .values()
            .any(|v| v.contains("{{secret}}"))
            && !self
                .verify
                .body
                .as_deref()
                .unwrap_or("")
                .contains("{{secret}}")
        {
            return Err("verify must send the new credential: put {{secret}} in one of its headers (or its body)".into());
        }
        if let Some(mint) = &self.mint {
            for (name, pointer) in [("mint.secret", &mint.secret), ("mint.id", &mint.id)] {
                if !pointer.starts_with('/') {
                    return Err(format!("{name} must be a JSON pointer such as \"/key\""));
                }
            }
            let names_token = |c: &HttpCall| {
                c.path.contains("{{token}}")
                    || c.body.as_deref().unwrap_or("").contains("{{token}}")
                    || c.headers.values().any(|v| v.contains("{{token}}"))
            };
            if !names_token(&mint.call) {
                return Err("mint must carry {{token}} (in the key's name or an idempotency header), so that a retried mint can find what an interrupted one made".into());
            }
        }
        if let Some(pointer) = self.list.as_ref().and_then(|l| l.last_used.as_ref())
            && !pointer.starts_with('/')
        {
            return Err("list.last_used must be a JSON pointer such as \"/last_used_at\"".into());
        }
        if self.apply.is_some() && !(16..=512).contains(&self.length) {
            return Err(format!(
                "length must be between 16 and 512, got {}",
                self.length
            ));
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.auth.iter().map(|a| &a.value).collect()
    }
}

impl RotatorSettings for HttpConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "the configured `verify` call, made as the new key, is answered as `expect` says; 401, 403 and 404 within `verify_within` (30 s) count as propagation",
            cannot: "more than that call shows: choose one that needs what consumers need",
        }
    }

    fn usage_evidence(&self) -> Option<&'static str> {
        self.list
            .as_ref()
            .and_then(|l| l.last_used.as_ref())
            .map(|_| "the `list` call's `last_used` of the old key")
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        let mut text = format!(
            "# rotor: what the `http` rotator of credential \"{credential_id}\" calls at {}.\n\
             # Grant rotor's credential these calls and nothing else:\n",
            self.base_url
        );
        for (name, call) in self.calls().into_iter().filter(|(n, _)| *n != "verify") {
            text.push_str(&format!(
                "#   {name:7} {} {}\n",
                call.method.to_uppercase(),
                call.path
            ));
        }
        text.push_str(&format!(
            "# verify runs as the new credential itself: {} {}\n",
            self.verify.method.to_uppercase(),
            self.verify.path
        ));
        text
    }
}

pub struct HttpRotator {
    config: HttpConfig,
    secrets: Secrets,
    client: reqwest::Client,
}

/// What a template is filled for: a URL path (values percent-encoded), a JSON body (values
/// JSON-escaped) or a header or plain body (as they are).
#[derive(Clone, Copy)]
enum FillFor {
    Path,
    Json,
    Text,
}

/// Everything but RFC 3986's unreserved characters.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The most of a provider's answer rotor reads: a key's JSON is a few hundred bytes, and an
/// answer without end must not fill rotor's memory.
const MAX_ANSWER: usize = 1 << 20;

/// What the provider answered to one call.
struct Answer {
    /// The step and the call, as errors name them: `verify: GET /v1/whoami`.
    shown: String,
    status: StatusCode,
    retry_after: Option<String>,
    body: Zeroizing<Vec<u8>>,
    /// The status is the one the call expects.
    accepted: bool,
}

impl Answer {
    /// The error an answer that was not accepted comes to, by its status.
    fn refusal(&self, as_rotor: bool) -> RotatorError {
        let message = format!("{} answered {}", self.shown, self.status);
        let retry_after = self.retry_after.as_ref();
        match self.status.as_u16() {
            429 => RotatorError::transient(format!(
                "{message}: rate limited{}; rotor retries",
                retry_after
                    .map(|s| format!(" (Retry-After {s})"))
                    .unwrap_or_default()
            )),
            500..=599 | 408 => RotatorError::transient(format!("{message}; rotor retries")),
            401 | 403 if as_rotor => RotatorError::permanent(format!(
                "{message}: the provider refused rotor's credential (`auth`); grant it the calls `rotor policy ID` lists"
            )),
            401 | 403 => {
                RotatorError::permanent(format!("{message}: the provider refused the credential"))
            }
            300..=399 => RotatorError::permanent(format!(
                "{message}: a redirect to another origin (or from https to http), which rotor does not follow \
                     with its credential; point `base_url` at the API itself"
            )),
            409 => RotatorError::conflict(format!(
                "{message}: the provider reports a conflict (changed outside rotor?); check it by hand"
            )),
            _ => RotatorError::permanent(format!(
                "{message}; check the call in the rotator's config"
            )),
        }
    }

    /// Whether a refusal of a new credential may be the provider still propagating it.
    fn maybe_propagating(&self) -> bool {
        matches!(self.status.as_u16(), 401 | 403 | 404)
    }
}

async fn read_limited(
    response: reqwest::Response,
    shown: &str,
) -> Result<Zeroizing<Vec<u8>>, RotatorError> {
    crate::net::read_within(response, MAX_ANSWER)
        .await
        .map_err(|e| match e {
            crate::net::BodyError::Read(e) => RotatorError::transient(format!(
                "{shown}: reading the answer: {}",
                e.without_url()
            )),
            crate::net::BodyError::TooLarge { limit } => RotatorError::permanent(format!(
                "{shown}: the answer is larger than {} KiB; rotor reads no more (is `base_url` the provider's API?)",
                limit / 1024
            )),
        })
}

/// An id the provider gave that rotor will put in URLs: a plain identifier, not a path.
fn plain_id(id: String) -> Result<String, RotatorError> {
    let plain = !id.is_empty()
        && id.len() <= 256
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:@+=".contains(c));
    if plain {
        Ok(id)
    } else {
        Err(RotatorError::permanent(format!(
            "mint: the provider's id {:?} is not a plain identifier (letters, digits and -._~:@+=); \
             rotor will not use it in a URL. The candidate was not stored; the provider may hold it \
             under that id: remove it there by hand, and check `mint.id`",
            id.chars().take(80).collect::<String>()
        )))
    }
}

/// Template values for one call.
#[derive(Default)]
struct Values<'a> {
    token: Option<&'a str>,
    id: Option<&'a str>,
    secret: Option<&'a SecretString>,
}

fn json_escaped(value: &str) -> Zeroizing<String> {
    let quoted = Zeroizing::new(serde_json::to_string(value).expect("a string serializes"));
    Zeroizing::new(quoted[1..quoted.len() - 1].to_owned())
}

/// Overwrites every string in a JSON value before it is dropped.
fn zeroize_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(zeroize_json),
        _ => {}
    }
}

fn text_at(value: &serde_json::Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl HttpRotator {
    pub fn build(config: HttpConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        // One client per trust (the system roots, or each `ca_file`) for every `http`
        // credential: building one loads the certificates, which thousands of credentials must
        // not do each. Each request carries its credential's own timeout.
        static SHARED: std::sync::Mutex<
            std::collections::BTreeMap<Option<std::path::PathBuf>, reqwest::Client>,
        > = std::sync::Mutex::new(std::collections::BTreeMap::new());
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        let client = match shared.get(&config.ca_file) {
            Some(client) => client.clone(),
            None => {
                let mut builder = reqwest::Client::builder()
                    .redirect(crate::net::same_origin_redirects())
                    .connect_timeout(Duration::from_secs(10))
                    .user_agent(concat!("rotor/", env!("CARGO_PKG_VERSION")));
                if let Some(file) = &config.ca_file {
                    let certs = crate::net::ca_bundle(file)
                        .map_err(|e| RotatorError::permanent(format!("`ca_file`: {e}")))?;
                    builder = builder.tls_certs_only(certs);
                }
                let client = builder.build().map_err(|e| {
                    RotatorError::permanent(format!("cannot build the HTTP client: {e}"))
                })?;
                shared.insert(config.ca_file.clone(), client.clone());
                client
            }
        };
        drop(shared);
        Ok(Self {
            config,
            secrets,
            client,
        })
    }

    fn fill(template: &str, values: &Values<'_>, into: FillFor) -> Zeroizing<String> {
        let mut out = Zeroizing::new(template.to_owned());
        let escape = |v: &str| match into {
            FillFor::Json => json_escaped(v),
            // A value from the provider (an id) must not reach another path or a query: every
            // byte but the unreserved ones is percent-encoded.
            FillFor::Path => {
                Zeroizing::new(percent_encoding::utf8_percent_encode(v, NOT_UNRESERVED).to_string())
            }
            FillFor::Text => Zeroizing::new(v.to_owned()),
        };
        if let Some(token) = values.token {
            *out = out.replace("{{token}}", &escape(token));
        }
        if let Some(id) = values.id {
            *out = out.replace("{{id}}", &escape(id));
        }
        if let Some(secret) = values.secret {
            *out = out.replace("{{secret}}", &escape(secret.expose_secret()));
        }
        out
    }

    /// Sends one call. `as_rotor`: authenticate as rotor (every call but verify). Returns the
    /// status and the body (zeroized when dropped), or an error naming the step and what to do.
    async fn send(
        &self,
        step: &str,
        call: &HttpCall,
        values: &Values<'_>,
        as_rotor: bool,
    ) -> Result<(StatusCode, Zeroizing<Vec<u8>>), RotatorError> {
        let answer = self.call(step, call, values, as_rotor).await?;
        if answer.accepted {
            Ok((answer.status, answer.body))
        } else {
            Err(answer.refusal(as_rotor))
        }
    }

    /// Makes one call; an answer of any status is `Ok`, only a call that got none is an error.
    async fn call(
        &self,
        step: &str,
        call: &HttpCall,
        values: &Values<'_>,
        as_rotor: bool,
    ) -> Result<Answer, RotatorError> {
        let path = Self::fill(
            &call.path,
            &Values {
                secret: None,
                ..*values
            },
            FillFor::Path,
        );
        let method = Method::from_bytes(call.method.to_uppercase().as_bytes()).expect("validated");
        let shown = format!("{step}: {method} {}", path.as_str());
        let url = format!(
            "{}{}",
            self.config.base_url.trim_end_matches('/'),
            path.as_str()
        );
        let mut request = self
            .client
            .request(method, &url)
            .timeout(self.config.timeout.as_std());
        if as_rotor && let Some(auth) = &self.config.auth {
            let value = resolve_secret(
                &self.secrets,
                &auth.value,
                "rotor's credential for the provider",
            )
            .await?;
            let header = Zeroizing::new(format!("{}{}", auth.prefix, value.expose_secret()));
            let mut header = reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
                RotatorError::permanent("rotor's credential is not a valid header value")
            })?;
            header.set_sensitive(true);
            request = request.header(auth.header.as_str(), header);
        }
        for (name, template) in &call.headers {
            let value = Self::fill(template, values, FillFor::Text);
            let mut value = reqwest::header::HeaderValue::from_str(&value).map_err(|_| {
                RotatorError::permanent(format!(
                    "{shown}: header {name} is not a valid header value"
                ))
            })?;
            value.set_sensitive(template.contains("{{secret}}"));
            request = request.header(name.as_str(), value);
        }
        if let Some(body) = &call.body {
            let json = body.trim_start().starts_with(['{', '[']);
            let filled = Self::fill(
                body,
                values,
                if json { FillFor::Json } else { FillFor::Text },
            );
            if json {
                request = request.header(reqwest::header::CONTENT_TYPE, "application/json");
            }
            request = request.body(filled.as_bytes().to_vec());
        }
        let response = request.send().await.map_err(|e| {
            let e = e.without_url();
            RotatorError::transient(format!(
                "{shown}: {e} (the provider is unreachable; rotor retries)"
            ))
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_limited(response, &shown).await?;
        let accepted = if call.expect.is_empty() {
            status.is_success()
        } else {
            call.expect.contains(&status.as_u16())
        };
        Ok(Answer {
            shown,
            status,
            retry_after,
            body,
            accepted,
        })
    }

    fn id_of(credential: &Credential) -> Option<&str> {
        credential.get(ID).map(|s| s.expose_secret())
    }

    /// Revokes `credential` with the `retire` call, if one is configured.
    async fn revoke(&self, step: &str, credential: &Credential) -> Result<(), RotatorError> {
        let Some(call) = &self.config.retire else {
            return Ok(());
        };
        let values = Values {
            id: Self::id_of(credential),
            secret: credential.get(VALUE),
            ..Default::default()
        };
        self.send(step, call, &values, true).await.map(drop)
    }

    /// The keys the provider lists: (id, name, active).
    async fn listed(&self, list: &ListCall) -> Result<Vec<Listed>, RotatorError> {
        let (_, body) = self
            .send("list", &list.call, &Values::default(), true)
            .await?;
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RotatorError::permanent(format!("list: the answer is not JSON ({e})")))?;
        let items = value
            .pointer(&list.items)
            .and_then(|v| v.as_array())
            .ok_or_else(|| {
                RotatorError::permanent(format!("list: no array at `{}` in the answer", list.items))
            })?;
        let listed = items
            .iter()
            .filter_map(|item| {
                let id = text_at(item, &list.id)?;
                let name = list.name.as_deref().and_then(|p| text_at(item, p));
                let active = list
                    .active
                    .as_deref()
                    .and_then(|p| item.pointer(p))
                    .and_then(|v| v.as_bool())
                    .unwrap_or(true);
                let last_used = list.last_used.as_deref().and_then(|p| time_at(item, p));
                Some(Listed {
                    id,
                    name,
                    active,
                    last_used,
                })
            })
            .collect();
        zeroize_json(&mut value);
        Ok(listed)
    }
}

impl Rotator for HttpRotator {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn origin(&self) -> Origin {
        if self.config.mint.is_some() {
            Origin::Provider
        } else {
            Origin::Local
        }
    }

    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        let Some(mint) = &self.config.mint else {
            return Ok(
                Credential::new().with(VALUE, random(self.config.length, Alphabet::Alphanumeric))
            );
        };
        // A key named with this run's token that is not current was made by an interrupted
        // attempt of this run: its secret is lost, so it is revoked before making another.
        if let (Some(list), Some(retire)) = (&self.config.list, &self.config.retire)
            && list.name.is_some()
        {
            let current = context.current.and_then(Self::id_of);
            for Listed { id, name, .. } in self.listed(list).await? {
                if name.as_deref().is_some_and(|n| n.contains(context.token))
                    && Some(id.as_str()) != current
                {
                    context.still_owned().await?;
                    tracing::warn!(id = %id, "revoking the key an interrupted mint of this run created");
                    let values = Values {
                        id: Some(&id),
                        ..Default::default()
                    };
                    self.send("mint (revoking an orphan)", retire, &values, true)
                        .await?;
                }
            }
        }
        let values = Values {
            token: Some(context.token),
            id: context.current.and_then(Self::id_of),
            secret: None,
        };
        let (_, body) = self.send("mint", &mint.call, &values, true).await?;
        let mut value: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| RotatorError::permanent(format!("mint: the answer is not JSON ({e})")))?;
        let secret =
            text_at(&value, &mint.secret).map(|s| SecretString::from(Zeroizing::new(s).as_str()));
        let id = text_at(&value, &mint.id);
        zeroize_json(&mut value);
        let secret = secret.ok_or_else(|| {
            RotatorError::permanent(format!(
                "mint: no string at `{}` in the answer (mint.secret)",
                mint.secret
            ))
        })?;
        let id = plain_id(id.ok_or_else(|| {
            RotatorError::permanent(format!(
                "mint: no id at `{}` in the answer (mint.id)",
                mint.id
            ))
        })?)?;
        Ok(Credential::new()
            .with(ID, SecretString::from(id))
            .with(VALUE, secret))
    }

    async fn apply(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let Some(apply) = &self.config.apply else {
            return Ok(());
        };
        let values = Values {
            id: current.and_then(Self::id_of),
            secret: Some(candidate.require(VALUE)?),
            token: None,
        };
        self.send("apply", apply, &values, true).await.map(drop)
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let values = Values {
            id: Self::id_of(candidate),
            secret: Some(candidate.require(VALUE)?),
            token: None,
        };
        /// Why one verify call did not pass.
        enum NotVerified {
            /// The provider answered, refusing the key.
            Refused(Answer),
            /// No answer (an error rotor retries as any other).
            Unanswered(RotatorError),
        }
        let verified = while_propagating(
            self.config.verify_within.as_std(),
            || async {
                match self
                    .call("verify", &self.config.verify, &values, false)
                    .await
                {
                    Ok(answer) if answer.accepted => Ok(()),
                    Ok(answer) => Err(NotVerified::Refused(answer)),
                    Err(e) => Err(NotVerified::Unanswered(e)),
                }
            },
            |e| matches!(e, NotVerified::Refused(answer) if answer.maybe_propagating()),
        )
        .await;
        let refused = match verified {
            Ok(()) => return Ok(()),
            Err((NotVerified::Unanswered(e), _)) => return Err(e),
            Err((NotVerified::Refused(answer), lasted)) => {
                let refused = answer.refusal(false);
                if lasted {
                    RotatorError {
                        message: format!(
                            "{} (still refused after verify_within = {})",
                            refused.message, self.config.verify_within
                        ),
                        ..refused
                    }
                } else {
                    refused
                }
            }
        };
        Err(RotatorError {
            message: match Self::id_of(candidate) {
                Some(id) => format!("{} (credential {id})", refused.message),
                None => refused.message,
            },
            ..refused
        })
    }

    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        if let (Some(old_id), Some(current_id)) = (Self::id_of(old), current.and_then(Self::id_of))
            && old_id == current_id
        {
            return Err(RotatorError::permanent(format!(
                "refusing to retire {old_id}: it is the current credential"
            )));
        }
        self.revoke("retire", old).await?;
        Ok(Retired::Done)
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        if candidate.fingerprint()
            == current
                .map(|c| c.fingerprint())
                .unwrap_or(crate::Fingerprint([0; 32]))
        {
            return Ok(());
        }
        self.revoke("rollback", candidate).await
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let Some(list) = &self.config.list else {
            return Ok(Vec::new());
        };
        Ok(self
            .listed(list)
            .await?
            .into_iter()
            .map(|key| LiveCredential {
                provider_id: key.id,
                active: key.active,
            })
            .collect())
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        Self::id_of(credential).map(str::to_owned)
    }

    /// The `list` call's `last_used` of the old key; a key no longer listed is not in use.
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        let (Some(list), Some(id)) = (&self.config.list, Self::id_of(old)) else {
            return Ok(Usage::Unknown);
        };
        if list.last_used.is_none() {
            return Ok(Usage::Unknown);
        }
        let listed = self.listed(list).await?;
        Ok(match listed.iter().find(|key| key.id == id) {
            Some(Listed {
                last_used: Some(at),
                ..
            }) => Usage::Seen {
                at: Some(*at),
                by: format!("key {id} (the provider's last-used time)"),
            },
            _ => Usage::Unseen,
        })
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        match &self.config.list {
            Some(list) => self.listed(list).await.map(drop),
            // Without a list call, all rotor can check offline is its config.
            None => self.config.validate().map_err(RotatorError::permanent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAAS: &str = r#"
base_url = "https://api.vendor.example"
auth = { value = { env = "VENDOR_ADMIN" } }
mint = { method = "POST", path = "/v1/keys", body = '{"name": "rotor {{token}}"}', secret = "/key", id = "/id" }
verify = { path = "/v1/whoami", headers = { Authorization = "Bearer {{secret}}" } }
retire = { method = "DELETE", path = "/v1/keys/{{id}}", expect = [204, 404] }
list = { path = "/v1/keys", items = "/keys", id = "/id", name = "/name" }
"#;

    #[test]
    fn values_in_a_url_path_are_percent_encoded_and_ids_must_be_plain() {
        let hostile = "../../admin/purge-all-keys?confirm=yes&x=";
        let values = Values {
            id: Some(hostile),
            token: Some("tok"),
            ..Default::default()
        };
        let path = HttpRotator::fill("/v1/keys/{{id}}?t={{token}}", &values, FillFor::Path);
        assert_eq!(
            path.as_str(),
            "/v1/keys/..%2F..%2Fadmin%2Fpurge-all-keys%3Fconfirm%3Dyes%26x%3D?t=tok"
        );
        let json = HttpRotator::fill(r#"{"id": "{{id}}"}"#, &values, FillFor::Json);
        assert_eq!(
            json.as_str(),
            r#"{"id": "../../admin/purge-all-keys?confirm=yes&x="}"#
        );
        for bad in [hostile, "..", ".", "", "a b", "key/1", "k\u{e9}y"] {
            let err = plain_id(bad.to_owned()).unwrap_err();
            assert!(
                err.to_string().contains("not a plain identifier"),
                "{bad}: {err}"
            );
        }
        for good in ["key_01", "ak-1.2~x", "org:key@v2", "a+b="] {
            assert_eq!(plain_id(good.to_owned()).unwrap(), good);
        }
    }

    #[test]
    fn a_saas_api_key_config_validates() {
        let c: HttpConfig = toml::from_str(SAAS).unwrap();
        c.validate().unwrap();
        assert!(c.least_privilege("x").contains("DELETE /v1/keys/{{id}}"));
    }

    #[test]
    fn unsafe_or_incomplete_configs_are_refused() {
        let broken = |from: &str, to: &str| {
            let c: HttpConfig = toml::from_str(&SAAS.replace(from, to)).unwrap();
            c.validate().unwrap_err()
        };
        assert!(broken("/v1/keys/{{id}}", "/v1/keys/{{secret}}").contains("must not hold"));
        assert!(broken("Bearer {{secret}}", "Bearer fixed").contains("verify must send"));
        assert!(broken("rotor {{token}}", "rotor").contains("must carry {{token}}"));
        assert!(
            broken(
                "https://api.vendor.example",
                "https://u:p@api.vendor.example"
            )
            .contains("credentials")
        );
    }

    #[test]
    fn template_values_are_escaped_for_json_bodies() {
        let secret = SecretString::from("a\"b\\c");
        let values = Values {
            secret: Some(&secret),
            token: Some("t1"),
            id: None,
        };
        let body = HttpRotator::fill(
            r#"{"s": "{{secret}}", "t": "{{token}}"}"#,
            &values,
            FillFor::Json,
        );
        let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["s"], "a\"b\\c");
        assert_eq!(parsed["t"], "t1");
    }
}
