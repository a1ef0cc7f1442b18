//! OpenAI's project service accounts (`/v1/organization/projects/{project}/service_accounts`)
//! and project API keys (`.../api_keys`), faked with wiremock on loopback with state: a service
//! account is created with an API key (its value shown once), the project's keys are listed
//! with their owner and `last_used_at`, a key calls `GET /v1/models` as itself, and deleting the
//! service account deletes its key. Bodies are shaped as OpenAI's API reference gives them:
//! `object` on every object, lists as `{object: "list", data, first_id, last_id, has_more}`,
//! errors as `{"error": {message, type, param, code}}`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::{MockServer, Request, Respond, ResponseTemplate};

/// rotor's own admin key (`sk-admin-...`, made by an organization owner).
pub const ADMIN_KEY: &str = "sk-admin-rotor0123456789abcdefghijklmnopqrstuvwxyzABCD";
/// The project of the recipe in `schedules/examples/saas/openai.toml`.
pub const PROJECT: &str = "proj_abc123";

#[derive(Debug, Clone)]
pub struct ServiceAccount {
    pub name: String,
    pub key_id: String,
    pub value: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

#[derive(Debug, Default)]
pub struct State {
    /// By service account id.
    pub accounts: BTreeMap<String, ServiceAccount>,
    next: u64,
    /// `limit` of every list request, as asked.
    pub limits_asked: Vec<Option<String>>,
}

pub struct OpenAi {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    _runtime: tokio::runtime::Runtime,
}

struct Api(Arc<Mutex<State>>);

fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "error": {"message": message, "type": kind, "param": null, "code": code}
    }))
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let presented = super::bearer(request);
        let path = request.url.path().to_owned();
        if path == "/v1/models" && request.method.as_str() == "GET" {
            return match state
                .accounts
                .values_mut()
                .find(|a| Some(&a.value) == presented.as_ref())
            {
                Some(account) => {
                    account.last_used_at = Some(now());
                    ResponseTemplate::new(200).set_body_json(serde_json::json!({
                        "object": "list",
                        "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]
                    }))
                }
                None => error(
                    401,
                    "invalid_request_error",
                    Some("invalid_api_key"),
                    "Incorrect API key provided.",
                ),
            };
        }
        if presented.as_deref() != Some(ADMIN_KEY) {
            return error(
                401,
                "invalid_request_error",
                Some("invalid_api_key"),
                "Incorrect API key provided.",
            );
        }
        let accounts = format!("/v1/organization/projects/{PROJECT}/service_accounts");
        let keys = format!("/v1/organization/projects/{PROJECT}/api_keys");
        match (request.method.as_str(), path.as_str()) {
            ("POST", p) if p == accounts => {
                let Ok(body) = request.body_json::<serde_json::Value>() else {
                    return error(
                        400,
                        "invalid_request_error",
                        None,
                        "We could not parse the JSON body of your request.",
                    );
                };
                let Some(name) = body["name"].as_str() else {
                    return error(
                        400,
                        "invalid_request_error",
                        None,
                        "Missing required parameter: 'name'.",
                    );
                };
                state.next += 1;
                let id = format!("svc_acct_{:08x}", state.next);
                let account = ServiceAccount {
                    name: name.to_owned(),
                    key_id: format!("key_{:08x}", state.next),
                    value: format!(
                        "sk-svcacct-{:032x}{:032x}",
                        rand::random::<u128>(),
                        rand::random::<u128>()
                    ),
                    created_at: now(),
                    last_used_at: None,
                };
                let created = serde_json::json!({
                    "object": "organization.project.service_account",
                    "id": id,
                    "name": account.name,
                    "role": "member",
                    "created_at": account.created_at,
                    "api_key": {
                        "object": "organization.project.service_account.api_key",
                        "value": account.value,
                        "name": "Secret Key",
                        "created_at": account.created_at,
                        "id": account.key_id
                    }
                });
                state.accounts.insert(id, account);
                ResponseTemplate::new(200).set_body_json(created)
            }
            ("GET", p) if p == keys => {
                let limit = request
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "limit")
                    .map(|(_, v)| v.into_owned());
                state.limits_asked.push(limit.clone());
                let limit: usize = limit.and_then(|l| l.parse().ok()).unwrap_or(20);
                let all: Vec<_> = state
                    .accounts
                    .iter()
                    .map(|(id, a)| {
                        serde_json::json!({
                            "object": "organization.project.api_key",
                            "redacted_value": format!("sk-svcacct-...{}", &a.value[a.value.len() - 4..]),
                            "name": "Secret Key",
                            "created_at": a.created_at,
                            "last_used_at": a.last_used_at,
                            "id": a.key_id,
                            "owner": {
                                "type": "service_account",
                                "service_account": {"id": id, "name": a.name, "created_at": a.created_at, "role": "member"}
                            }
                        })
                    })
                    .collect();
                let page: Vec<_> = all.iter().take(limit).cloned().collect();
                ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "object": "list",
                    "data": page,
                    "first_id": page.first().map(|k| k["id"].clone()),
                    "last_id": page.last().map(|k| k["id"].clone()),
                    "has_more": all.len() > page.len()
                }))
            }
            ("DELETE", p) if p.starts_with(&format!("{accounts}/")) => {
                let id = p.trim_start_matches(&format!("{accounts}/"));
                match state.accounts.remove(id) {
                    Some(_) => ResponseTemplate::new(200).set_body_json(serde_json::json!({
                        "object": "organization.project.service_account.deleted",
                        "id": id,
                        "deleted": true
                    })),
                    None => error(
                        404,
                        "invalid_request_error",
                        None,
                        &format!("No such service account: {id}"),
                    ),
                }
            }
            _ => error(404, "invalid_request_error", None, "Not found."),
        }
    }
}

impl OpenAi {
    pub fn start() -> Arc<OpenAi> {
        let state = Arc::new(Mutex::new(State::default()));
        let (server, runtime) = super::serve(Api(state.clone()));
        Arc::new(OpenAi {
            server,
            state,
            _runtime: runtime,
        })
    }

    /// What the recipe's `base_url` stands for.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.uri())
    }
}
