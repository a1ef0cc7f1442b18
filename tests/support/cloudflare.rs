//! Cloudflare's API token endpoints (`/client/v4/user/tokens`), faked with wiremock on loopback
//! with state: tokens are created (the value shown once), listed a page at a time, verified as
//! themselves and deleted. Bodies are shaped as Cloudflare's API documentation gives them: the
//! `{success, errors, messages, result}` envelope, `result_info` on lists.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// rotor's own token (with "API Tokens Write").
pub const ADMIN_TOKEN: &str = "cf-admin-token-with-api-tokens-write-0123";

#[derive(Debug, Clone)]
pub struct Token {
    pub name: String,
    pub value: String,
    pub policies: serde_json::Value,
    pub last_used_on: Option<String>,
}

#[derive(Debug, Default)]
pub struct State {
    pub tokens: BTreeMap<String, Token>,
    next: u64,
    /// `per_page` of every list request, as asked.
    pub pages_asked: Vec<Option<String>>,
}

pub struct Cloudflare {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

struct Api(Arc<Mutex<State>>);

fn envelope(status: u16, result: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "errors": [], "messages": [], "success": true, "result": result
    }))
}

fn failure(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "errors": [{"code": code, "message": message}], "messages": [], "success": false, "result": null
    }))
}

/// A token as Cloudflare shows it, without its value (only its creation shows that).
fn shown(id: &str, t: &Token) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "name": t.name,
        "status": "active",
        "issued_on": "2026-12-01T05:20:00Z",
        "modified_on": "2026-12-01T05:20:00Z",
        "last_used_on": t.last_used_on,
        "not_before": null,
        "expires_on": null,
        "policies": t.policies,
        "condition": {}
    })
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let presented = super::bearer(request);
        let path = request.url.path().to_owned();
        if path == "/client/v4/user/tokens/verify" {
            let found = state
                .tokens
                .iter_mut()
                .find(|(_, t)| Some(&t.value) == presented.as_ref());
            return match found {
                Some((id, token)) => {
                    token.last_used_on = Some(chrono::Utc::now().to_rfc3339());
                    envelope(
                        200,
                        serde_json::json!({"id": id, "status": "active", "not_before": null, "expires_on": null}),
                    )
                }
                None => failure(401, 1000, "Invalid API Token"),
            };
        }
        if presented.as_deref() != Some(ADMIN_TOKEN) {
            return failure(403, 9109, "Unauthorized to access requested resource");
        }
        match (request.method.as_str(), path.as_str()) {
            ("POST", "/client/v4/user/tokens") => {
                let Ok(body) = request.body_json::<serde_json::Value>() else {
                    return failure(400, 6007, "Malformed JSON in request body");
                };
                let (Some(name), Some(policies)) = (body["name"].as_str(), body.get("policies"))
                else {
                    return failure(400, 1001, "name and policies are required");
                };
                state.next += 1;
                let id = format!("ed17574386854bf78a67040be0a7{:04x}", state.next);
                let token = Token {
                    name: name.to_owned(),
                    value: format!("{:040x}", rand::random::<u128>()),
                    policies: policies.clone(),
                    last_used_on: None,
                };
                let mut result = shown(&id, &token);
                result["value"] = token.value.clone().into();
                state.tokens.insert(id, token);
                envelope(200, result)
            }
            ("GET", "/client/v4/user/tokens") => {
                let per_page = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "per_page")
                    .map(|(_, v)| v.into_owned());
                state.pages_asked.push(per_page.clone());
                let per_page: usize = per_page.and_then(|p| p.parse().ok()).unwrap_or(20);
                let all: Vec<_> = state.tokens.iter().map(|(id, t)| shown(id, t)).collect();
                let page: Vec<_> = all.iter().take(per_page).cloned().collect();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "errors": [], "messages": [], "success": true, "result": page,
                    "result_info": {"count": page.len(), "page": 1, "per_page": per_page, "total_count": all.len()}
                }))
            }
            ("DELETE", p) if p.starts_with("/client/v4/user/tokens/") => {
                let id = p.trim_start_matches("/client/v4/user/tokens/");
                match state.tokens.remove(id) {
                    Some(_) => envelope(200, serde_json::json!({"id": id})),
                    None => failure(404, 1003, "Invalid token id"),
                }
            }
            _ => failure(404, 7003, "Could not route to the requested path"),
        }
    }
}

impl Cloudflare {
    pub fn start() -> Arc<Cloudflare> {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, runtime) = super::serve(Api(state.clone()));
        Arc::new(Cloudflare {
            server,
            state,
            _runtime: runtime,
        })
    }

    /// What the recipe's `base_url` stands for.
    pub fn base_url(&self) -> String {
        format!("{}/client/v4", self.server.uri())
    }
}
