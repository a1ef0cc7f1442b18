//! Google Cloud Secret Manager's REST API (v1), faked with wiremock on loopback with state, plus
//! the two ways rotor gets a token: Google's OAuth token endpoint (a service-account JWT, checked
//! with the key's public half) and the metadata server. No emulator implements what the vault
//! needs: gcplocal 0.1.0's Secret Manager answers `addVersion` and `access` with
//! `{"status": "ok"}`, keeps no versions, aliases or etags.
//!
//! Shaped as Google documents it (reference/rest/v1 `projects.secrets` and
//! `projects.secrets.versions`, and the etags page): versions numbered from 1; `versionAliases`
//! as int64 strings; `secrets.patch` with `updateMask=versionAliases` and the etag in the body,
//! refused with 400 `FAILED_PRECONDITION` when it is stale; `addVersion` leaves the secret's
//! etag alone; `access` by number, alias or `latest`, refused with `FAILED_PRECONDITION` for a
//! disabled or destroyed version; `versions.list` newest first, paged with `nextPageToken`;
//! errors as `{"error": {"code", "message", "status"}}`; payloads base64 with `dataCrc32c`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use wiremock::{MockServer, Request, Respond, ResponseTemplate};

pub const PROJECT: &str = "rotor-test-1";
pub const CLIENT_EMAIL: &str = "rotor@rotor-test-1.iam.gserviceaccount.com";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

#[derive(Debug, Clone)]
pub struct Version {
    pub state: &'static str,
    pub payload: Option<Vec<u8>>,
}

#[derive(Debug, Default, Clone)]
pub struct Secret {
    pub etag: u64,
    pub aliases: BTreeMap<String, u64>,
    pub versions: Vec<Version>,
    pub labels: BTreeMap<String, String>,
    pub replication: serde_json::Value,
}

#[derive(Debug, Default)]
pub struct State {
    pub secrets: BTreeMap<String, Secret>,
    tokens: Vec<String>,
    /// How each token was obtained: "jwt" or "metadata".
    pub issued: Vec<&'static str>,
    /// Every Secret Manager request, as `METHOD /path`.
    pub requests: Vec<String>,
    /// Answer 503 to every Secret Manager request.
    pub unavailable: bool,
    /// Refuse every token presented so far (as if revoked).
    pub revoke_all: bool,
    /// Change the secret's etag right after the next `secrets.get`, as another writer would.
    pub bump_etag_after_next_read: bool,
}

impl State {
    /// Forgets every token issued: each is refused from now on, as if revoked.
    pub fn forget_tokens(&mut self) {
        self.tokens.clear();
    }
}

pub struct Gcp {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    /// The service-account key's JSON (its `token_uri` is this fake's).
    pub key_file: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Gcp {
    /// Without blocking: the async vault tests drop the fake inside their own runtime.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

struct Api {
    state: Arc<Mutex<State>>,
    public_pem: String,
    token_uri: Arc<Mutex<String>>,
}

fn error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(serde_json::json!({
        "error": {"code": code, "message": message, "status": status}
    }))
}

/// CRC32C (Castagnoli), as Secret Manager's `dataCrc32c`.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn secret_json(id: &str, s: &Secret) -> serde_json::Value {
    let aliases: BTreeMap<&str, String> = s
        .aliases
        .iter()
        .map(|(k, v)| (k.as_str(), v.to_string()))
        .collect();
    let mut json = serde_json::json!({
        "name": format!("projects/{PROJECT}/secrets/{id}"),
        "replication": s.replication,
        "createTime": "2026-12-04T09:00:00.000000Z",
        "labels": s.labels,
        "etag": format!("\"{:x}\"", 0x16ed_0000 + s.etag),
    });
    if !aliases.is_empty() {
        json["versionAliases"] = serde_json::json!(aliases);
    }
    json
}

fn version_json(id: &str, n: u64, v: &Version) -> serde_json::Value {
    let mut json = serde_json::json!({
        "name": format!("projects/{PROJECT}/secrets/{id}/versions/{n}"),
        "createTime": "2026-12-04T09:00:00.000000Z",
        "state": v.state,
        "replicationStatus": {"automatic": {}},
        "etag": format!("\"{:x}\"", 0x2a00 + n),
        "clientSpecifiedPayloadChecksum": false,
    });
    if v.state == "DESTROYED" {
        json["destroyTime"] = serde_json::json!("2026-12-04T09:05:00.000000Z");
    }
    json
}

fn not_found(id: &str) -> ResponseTemplate {
    error(
        404,
        "NOT_FOUND",
        &format!("Secret [projects/{PROJECT}/secrets/{id}] not found or has no versions."),
    )
}

impl Api {
    fn token(&self, request: &Request, state: &mut State) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body).into_owned();
        let field = |name: &str| {
            body.split('&')
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        if field("grant_type").as_deref()
            != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
        {
            return ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "unsupported_grant_type", "error_description": "Invalid grant_type"
            }));
        }
        let assertion = field("assertion").unwrap_or_default();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        validation.set_audience(&[self.token_uri.lock().unwrap().as_str()]);
        validation.set_issuer(&[CLIENT_EMAIL]);
        let key = jsonwebtoken::DecodingKey::from_rsa_pem(self.public_pem.as_bytes()).unwrap();
        match jsonwebtoken::decode::<serde_json::Value>(&assertion, &key, &validation) {
            Ok(data) if data.claims["scope"] == SCOPE => self.issue(state, "jwt"),
            _ => ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": "invalid_grant", "error_description": "Invalid JWT Signature."
            })),
        }
    }

    fn issue(&self, state: &mut State, how: &'static str) -> ResponseTemplate {
        let token = format!("ya29.fake-{}-{}", how, state.tokens.len());
        state.tokens.push(token.clone());
        state.issued.push(how);
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": token, "expires_in": 3599, "token_type": "Bearer"
        }))
    }

    fn secret_manager(&self, request: &Request, state: &mut State) -> ResponseTemplate {
        let method = request.method.as_str().to_owned();
        let path = request.url.path().to_owned();
        state.requests.push(format!("{method} {path}"));
        if state.unavailable {
            return error(503, "UNAVAILABLE", "The service is currently unavailable.");
        }
        let presented = super::bearer(request);
        if state.revoke_all || !presented.is_some_and(|t| state.tokens.contains(&t)) {
            return error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
            );
        }
        let query: BTreeMap<String, String> = request
            .url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let prefix = format!("/v1/projects/{PROJECT}/secrets");
        let Some(rest) = path.strip_prefix(&prefix) else {
            return error(404, "NOT_FOUND", "Requested entity was not found.");
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null);
        if rest.is_empty() && method == "POST" {
            let Some(id) = query.get("secretId") else {
                return error(400, "INVALID_ARGUMENT", "secret_id is required");
            };
            if state.secrets.contains_key(id) {
                return error(
                    409,
                    "ALREADY_EXISTS",
                    &format!("Secret [projects/{PROJECT}/secrets/{id}] already exists."),
                );
            }
            let secret = Secret {
                etag: 1,
                labels: serde_json::from_value(body["labels"].clone()).unwrap_or_default(),
                replication: body["replication"].clone(),
                ..Secret::default()
            };
            let json = secret_json(id, &secret);
            state.secrets.insert(id.clone(), secret);
            return ResponseTemplate::new(200).set_body_json(json);
        }
        let rest = rest.trim_start_matches('/');
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        let (id, verb) = id.split_once(':').unwrap_or((id, ""));
        let Some(secret) = state.secrets.get_mut(id) else {
            return not_found(id);
        };
        match (method.as_str(), verb, tail) {
            ("GET", "", "") => {
                let json = secret_json(id, secret);
                if std::mem::take(&mut state.bump_etag_after_next_read) {
                    state.secrets.get_mut(id).unwrap().etag += 1;
                }
                ResponseTemplate::new(200).set_body_json(json)
            }
            ("PATCH", "", "") => {
                if query.get("updateMask").map(String::as_str) != Some("versionAliases") {
                    return error(
                        400,
                        "INVALID_ARGUMENT",
                        "update_mask must name versionAliases",
                    );
                }
                let current = format!("\"{:x}\"", 0x16ed_0000 + secret.etag);
                if let Some(etag) = body["etag"].as_str()
                    && etag != current
                {
                    return error(
                        400,
                        "FAILED_PRECONDITION",
                        "The etag provided in the request does not match the current etag of the resource.",
                    );
                }
                let mut aliases = BTreeMap::new();
                if let Some(map) = body["versionAliases"].as_object() {
                    for (alias, n) in map {
                        let n = n
                            .as_str()
                            .and_then(|t| t.parse().ok())
                            .or_else(|| n.as_u64())
                            .unwrap_or(0);
                        if n == 0 || n as usize > secret.versions.len() {
                            return error(
                                400,
                                "INVALID_ARGUMENT",
                                &format!(
                                    "Version alias {alias} refers to a version that does not exist."
                                ),
                            );
                        }
                        aliases.insert(alias.clone(), n);
                    }
                }
                secret.aliases = aliases;
                secret.etag += 1;
                ResponseTemplate::new(200).set_body_json(secret_json(id, secret))
            }
            ("POST", "addVersion", "") => {
                let data = body["payload"]["data"].as_str().unwrap_or("");
                let Ok(payload) = BASE64.decode(data) else {
                    return error(400, "INVALID_ARGUMENT", "payload.data is not base64");
                };
                secret.versions.push(Version {
                    state: "ENABLED",
                    payload: Some(payload),
                });
                let n = secret.versions.len() as u64;
                ResponseTemplate::new(200).set_body_json(version_json(
                    id,
                    n,
                    secret.versions.last().unwrap(),
                ))
            }
            ("GET", "", "versions") => {
                let size: usize = query
                    .get("pageSize")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(25)
                    .clamp(1, 25);
                let from: usize = query
                    .get("pageToken")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let newest_first: Vec<_> = (1..=secret.versions.len() as u64)
                    .rev()
                    .map(|n| version_json(id, n, &secret.versions[n as usize - 1]))
                    .collect();
                let page: Vec<_> = newest_first.iter().skip(from).take(size).cloned().collect();
                let mut json = serde_json::json!({
                    "versions": page, "totalSize": newest_first.len()
                });
                if from + size < newest_first.len() {
                    json["nextPageToken"] = serde_json::json!((from + size).to_string());
                }
                ResponseTemplate::new(200).set_body_json(json)
            }
            (method, "", version_path) if version_path.starts_with("versions/") => {
                let name = version_path.trim_start_matches("versions/");
                let (which, action) = name.split_once(':').unwrap_or((name, ""));
                let n = match which {
                    "latest" => secret.versions.len() as u64,
                    alias if secret.aliases.contains_key(alias) => secret.aliases[alias],
                    number => number.parse().unwrap_or(0),
                };
                let full = format!("projects/{PROJECT}/secrets/{id}/versions/{which}");
                if n == 0 || n as usize > secret.versions.len() {
                    return error(
                        404,
                        "NOT_FOUND",
                        &format!("Secret Version [{full}] not found."),
                    );
                }
                let version = &mut secret.versions[n as usize - 1];
                match (method, action) {
                    ("GET", "access") => {
                        let Some(payload) = version
                            .payload
                            .as_ref()
                            .filter(|_| version.state == "ENABLED")
                        else {
                            return error(
                                400,
                                "FAILED_PRECONDITION",
                                &format!("Secret Version [{full}] is in {} state.", version.state),
                            );
                        };
                        ResponseTemplate::new(200).set_body_json(serde_json::json!({
                            "name": format!("projects/{PROJECT}/secrets/{id}/versions/{n}"),
                            "payload": {
                                "data": BASE64.encode(payload),
                                "dataCrc32c": crc32c(payload).to_string(),
                            }
                        }))
                    }
                    ("GET", "") => {
                        ResponseTemplate::new(200).set_body_json(version_json(id, n, version))
                    }
                    ("POST", "disable") | ("POST", "enable") => {
                        if version.state == "DESTROYED" {
                            return error(
                                400,
                                "FAILED_PRECONDITION",
                                &format!("Secret Version [{full}] is in DESTROYED state."),
                            );
                        }
                        version.state = if action == "disable" {
                            "DISABLED"
                        } else {
                            "ENABLED"
                        };
                        ResponseTemplate::new(200).set_body_json(version_json(id, n, version))
                    }
                    ("POST", "destroy") => {
                        if version.state == "DESTROYED" {
                            return error(
                                400,
                                "FAILED_PRECONDITION",
                                &format!("Secret Version [{full}] is in DESTROYED state."),
                            );
                        }
                        version.state = "DESTROYED";
                        version.payload = None;
                        ResponseTemplate::new(200).set_body_json(version_json(id, n, version))
                    }
                    _ => error(404, "NOT_FOUND", "Requested entity was not found."),
                }
            }
            _ => error(404, "NOT_FOUND", "Requested entity was not found."),
        }
    }
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        let path = request.url.path();
        if path == "/token" && request.method.as_str() == "POST" {
            return self.token(request, &mut state);
        }
        if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
            let flavored = request
                .headers
                .get("metadata-flavor")
                .is_some_and(|v| v == "Google");
            let scoped = request
                .url
                .query_pairs()
                .any(|(k, v)| k == "scopes" && v == SCOPE);
            if !flavored || !scoped {
                return ResponseTemplate::new(403).set_body_string(
                    "Missing Metadata-Flavor:Google header, or the scope asked is not the one expected.",
                );
            }
            return self
                .issue(&mut state, "metadata")
                .insert_header("Metadata-Flavor", "Google");
        }
        self.secret_manager(request, &mut state)
    }
}

impl Gcp {
    /// A fresh fake with no secrets, and a service-account key made by the `openssl` tool.
    pub fn start(dir: &std::path::Path) -> Arc<Gcp> {
        let (private, public_pem) = super::rsa_key_pair(dir, "gcp-sa");
        let state = Arc::new(Mutex::new(State::default()));
        let token_uri = Arc::new(Mutex::new(String::new()));
        let api = Api {
            state: state.clone(),
            public_pem,
            token_uri: token_uri.clone(),
        };
        // On a thread of its own: an async test calls this from inside its runtime.
        let (server, runtime) = std::thread::spawn(move || super::serve(api))
            .join()
            .unwrap();
        *token_uri.lock().unwrap() = format!("{}/token", server.uri());
        // Shaped as the JSON `gcloud iam service-accounts keys create` writes.
        let key = serde_json::json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "0d9c1b7e5a3f2e4d6c8b0a1f3e5d7c9b1a3f5e7d",
            "private_key": std::fs::read_to_string(&private).unwrap(),
            "client_email": CLIENT_EMAIL,
            "client_id": "104857600000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri.lock().unwrap().clone(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!("https://www.googleapis.com/robot/v1/metadata/x509/{CLIENT_EMAIL}"),
            "universe_domain": "googleapis.com"
        });
        let key_file = dir.join("gcp-sa.json");
        std::fs::write(&key_file, serde_json::to_vec_pretty(&key).unwrap()).unwrap();
        Arc::new(Gcp {
            server,
            state,
            key_file,
            runtime: Some(runtime),
        })
    }

    /// A vault block for this fake, named `name`, authenticated with the key.
    pub fn vault_toml(&self, name: &str, extra: &str) -> String {
        format!(
            "[vaults.{name}]\nkind = \"gcp_secret_manager\"\nproject = \"{PROJECT}\"\nendpoint = \"{}\"\nauth = {{ method = \"service_account_key\", key = {{ file = \"{}\" }} }}\n{extra}",
            self.server.uri(),
            self.key_file.display()
        )
    }

    /// The document a version holds, as consumers would read it, if it is enabled.
    pub fn payload(&self, secret: &str, which: &str) -> Option<serde_json::Value> {
        let state = self.state.lock().unwrap();
        let s = state.secrets.get(secret)?;
        let n = match which {
            "latest" => s.versions.len() as u64,
            alias if s.aliases.contains_key(alias) => s.aliases[alias],
            number => number.parse().ok()?,
        };
        let v = s.versions.get(n.checked_sub(1)? as usize)?;
        let payload = v.payload.as_ref().filter(|_| v.state == "ENABLED")?;
        Some(serde_json::from_slice(payload).unwrap())
    }

    /// Each version's state, oldest first.
    pub fn states(&self, secret: &str) -> Vec<&'static str> {
        let state = self.state.lock().unwrap();
        state
            .secrets
            .get(secret)
            .map(|s| s.versions.iter().map(|v| v.state).collect())
            .unwrap_or_default()
    }
}

/// One fake for the whole test process; each test uses secrets of its own.
pub fn shared() -> Arc<Gcp> {
    static FAKE: std::sync::OnceLock<Arc<Gcp>> = std::sync::OnceLock::new();
    FAKE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rotor-gcp-fake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Gcp::start(&dir)
    })
    .clone()
}
