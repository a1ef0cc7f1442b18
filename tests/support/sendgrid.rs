//! SendGrid's API key endpoints (`/v3/api_keys`, `/v3/scopes`), faked with wiremock on loopback
//! with state: keys are created (the 69-character value shown once, with `api_key_id`),
//! listed (names and ids only), asked for their own scopes and deleted. Bodies are shaped as
//! Twilio SendGrid's API reference gives them, errors as `{"errors": [{"field", "message"}]}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// rotor's own key (with the `api_keys.*` scopes).
pub const ADMIN_KEY: &str = "SG.rotoradminkey0000000.0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";

#[derive(Debug, Clone)]
pub struct Key {
    pub name: String,
    pub value: String,
    pub scopes: Vec<String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub keys: BTreeMap<String, Key>,
    /// `limit` of every list request, as asked.
    pub limits_asked: Vec<Option<String>>,
}

pub struct SendGrid {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

struct Api(Arc<Mutex<State>>);

fn error(status: u16, field: Option<&str>, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "errors": [{"field": field, "message": message}]
    }))
}

fn alphanumeric(n: usize) -> String {
    use rand::Rng;
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(n)
        .map(char::from)
        .collect()
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let presented = super::bearer(request);
        let path = request.url.path().to_owned();
        if path == "/v3/scopes" && request.method.as_str() == "GET" {
            // The scopes of the key that asks.
            return match state
                .keys
                .values()
                .find(|k| Some(&k.value) == presented.as_ref())
            {
                Some(key) => {
                    ResponseTemplate::new(200).set_body_json(serde_json::json!({"scopes": key.scopes}))
                }
                None if presented.as_deref() == Some(ADMIN_KEY) => ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"scopes": ["api_keys.create", "api_keys.read", "api_keys.delete"]})),
                None => error(401, None, "authorization required"),
            };
        }
        if presented.as_deref() != Some(ADMIN_KEY) {
            return error(403, None, "access forbidden");
        }
        match (request.method.as_str(), path.as_str()) {
            ("POST", "/v3/api_keys") => {
                let Ok(body) = request.body_json::<serde_json::Value>() else {
                    return error(400, None, "invalid JSON");
                };
                let Some(name) = body["name"].as_str() else {
                    return error(400, Some("name"), "missing required argument");
                };
                if state.keys.len() >= 100 {
                    return error(403, None, "Cannot create more than 100 API keys");
                }
                let scopes: Vec<String> = body["scopes"]
                    .as_array()
                    .map(|s| {
                        s.iter()
                            .filter_map(|v| v.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_else(|| vec!["mail.send".into()]);
                let id = alphanumeric(22);
                // "SG." + 22 + "." + 43: 69 characters, as SendGrid's keys are.
                let value = format!("SG.{id}.{}", alphanumeric(43));
                state.keys.insert(
                    id.clone(),
                    Key {
                        name: name.to_owned(),
                        value: value.clone(),
                        scopes: scopes.clone(),
                    },
                );
                ResponseTemplate::new(201).set_body_json(serde_json::json!({
                    "api_key": value, "api_key_id": id, "name": name, "scopes": scopes
                }))
            }
            ("GET", "/v3/api_keys") => {
                let limit = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "limit")
                    .map(|(_, v)| v.into_owned());
                state.limits_asked.push(limit);
                let result: Vec<_> = state
                    .keys
                    .iter()
                    .map(|(id, k)| serde_json::json!({"api_key_id": id, "name": k.name}))
                    .collect();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({"result": result}))
            }
            ("DELETE", p) if p.starts_with("/v3/api_keys/") => {
                match state.keys.remove(p.trim_start_matches("/v3/api_keys/")) {
                    Some(_) => ResponseTemplate::new(204),
                    None => error(404, None, "unable to find API Key"),
                }
            }
            _ => error(404, None, "resource not found"),
        }
    }
}

impl SendGrid {
    pub fn start() -> Arc<SendGrid> {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, runtime) = super::serve(Api(state.clone()));
        Arc::new(SendGrid {
            server,
            state,
            _runtime: runtime,
        })
    }

    /// What the recipe's `base_url` stands for.
    pub fn base_url(&self) -> String {
        format!("{}/v3", self.server.uri())
    }
}
