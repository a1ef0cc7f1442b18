//! A small SaaS API-key service for the `http` rotator tests, served by wiremock on loopback
//! with real state: keys are created (the secret shown once), listed, revoked, and used to call
//! `/v1/whoami`. Failures can be injected. Each instance runs on wiremock's own thread, so the
//! `rotor` processes a test starts can call it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::{MockServer, Request, Respond, ResponseTemplate};

pub const ADMIN_TOKEN: &str = "saas-admin-token-for-rotor-tests";

#[derive(Debug, Clone)]
pub struct Key {
    pub secret: String,
    pub name: String,
    /// When the key last called the API (RFC 3339), as the vendor records it.
    pub last_used_at: Option<String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub keys: BTreeMap<String, Key>,
    next: u64,
    /// The next this many requests answer 503.
    pub fail_next: u32,
    /// The next this many calls to `/v1/whoami` refuse even a valid key (401), as a provider
    /// does while a new key propagates to its edge.
    pub propagating: u32,
    /// Every request seen, as "METHOD /path".
    pub calls: Vec<String>,
    /// When each request of `calls` arrived.
    pub times: Vec<std::time::Instant>,
    /// Creating a key answers this much later (a slow provider).
    pub mint_delay: std::time::Duration,
    /// A hostile provider: the id the next created key gets, instead of `key_N`.
    pub mint_id: Option<String>,
    /// A hostile provider: this many bytes of padding in the answer to a key's creation.
    pub mint_padding: usize,
}

pub struct Saas {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    // The runtime that started the server; wiremock serves from its own thread.
    _runtime: tokio::runtime::Runtime,
}

struct Api(Arc<Mutex<State>>);

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let path = request.url.path().to_owned();
        state.calls.push(format!("{} {path}", request.method));
        state.times.push(std::time::Instant::now());
        if state.fail_next > 0 {
            state.fail_next -= 1;
            return ResponseTemplate::new(503)
                .set_body_json(serde_json::json!({"error": "service unavailable"}));
        }
        let unauthorized = || {
            ResponseTemplate::new(401).set_body_json(serde_json::json!({"error": "unauthorized"}))
        };
        if path == "/v1/whoami" {
            if state.propagating > 0 {
                state.propagating -= 1;
                return unauthorized();
            }
            let presented = super::bearer(request);
            return match state
                .keys
                .iter()
                .find(|(_, k)| Some(&k.secret) == presented.as_ref())
            {
                Some((id, key)) => {
                    let body = serde_json::json!({"id": id, "name": key.name});
                    let id = id.clone();
                    if let Some(key) = state.keys.get_mut(&id) {
                        key.last_used_at = Some(chrono::Utc::now().to_rfc3339());
                    }
                    ResponseTemplate::new(200).set_body_json(body)
                }
                None => unauthorized(),
            };
        }
        if super::bearer(request).as_deref() != Some(ADMIN_TOKEN) {
            return unauthorized();
        }
        match (request.method.as_str(), path.as_str()) {
            ("POST", "/v1/keys") => {
                let Ok(body) = request.body_json::<serde_json::Value>() else {
                    return ResponseTemplate::new(400);
                };
                state.next += 1;
                let id = state
                    .mint_id
                    .take()
                    .unwrap_or_else(|| format!("key_{}", state.next));
                // A key the client brings is imported; otherwise one is made and shown once.
                let secret = match body["key"].as_str() {
                    Some(imported) => imported.to_owned(),
                    None => format!("sk_live_{}_{:016x}", state.next, rand::random::<u64>()),
                };
                let name = body["name"].as_str().unwrap_or("").to_owned();
                state.keys.insert(
                    id.clone(),
                    Key {
                        secret: secret.clone(),
                        name: name.clone(),
                        last_used_at: None,
                    },
                );
                let padding = "x".repeat(state.mint_padding);
                ResponseTemplate::new(201)
                    .set_body_json(serde_json::json!({
                        "id": id, "key": secret, "name": name, "active": true, "padding": padding
                    }))
                    .set_delay(state.mint_delay)
            }
            ("GET", "/v1/keys") => {
                let keys: Vec<_> = state
                    .keys
                    .iter()
                    .map(|(id, k)| {
                        serde_json::json!({"id": id, "name": k.name, "active": true, "last_used_at": k.last_used_at})
                    })
                    .collect();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({ "keys": keys }))
            }
            ("DELETE", "/v1/keys/by-secret") => {
                let Ok(body) = request.body_json::<serde_json::Value>() else {
                    return ResponseTemplate::new(400);
                };
                let secret = body["key"].as_str().unwrap_or("");
                let before = state.keys.len();
                state.keys.retain(|_, k| k.secret != secret);
                if state.keys.len() < before {
                    ResponseTemplate::new(204)
                } else {
                    ResponseTemplate::new(404)
                }
            }
            ("DELETE", p) if p.starts_with("/v1/keys/") => {
                match state.keys.remove(p.trim_start_matches("/v1/keys/")) {
                    Some(_) => ResponseTemplate::new(204),
                    None => ResponseTemplate::new(404)
                        .set_body_json(serde_json::json!({"error": "no such key"})),
                }
            }
            _ => ResponseTemplate::new(404),
        }
    }
}

impl Saas {
    pub fn start() -> Arc<Saas> {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, runtime) = super::serve(Api(state.clone()));
        Arc::new(Saas {
            server,
            state,
            _runtime: runtime,
        })
    }

    pub fn url(&self) -> String {
        self.server.uri()
    }

    /// The ids of the keys that exist now.
    pub fn key_ids(&self) -> Vec<String> {
        self.state.lock().unwrap().keys.keys().cloned().collect()
    }

    /// Records that a consumer called the API with `secret` now, as the vendor would.
    pub fn used_now(&self, secret: &str) {
        let mut state = self.state.lock().unwrap();
        for key in state.keys.values_mut().filter(|k| k.secret == secret) {
            key.last_used_at = Some(chrono::Utc::now().to_rfc3339());
        }
    }

    /// Whether `secret` is accepted by `/v1/whoami`.
    pub fn accepts(&self, secret: &str) -> bool {
        self.state
            .lock()
            .unwrap()
            .keys
            .values()
            .any(|k| k.secret == secret)
    }
}
