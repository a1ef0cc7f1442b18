//! GitHub has no local server: this is a fake of the REST endpoints rotor calls, served by
//! wiremock on loopback with real state, whose request checks and response bodies follow
//! GitHub's documentation (deploy keys, repository and organisation webhook configuration, App
//! installation tokens), including its error bodies (401 "Bad credentials", 404 "Not Found",
//! 422 "Validation Failed") and its rate-limit headers. App requests must carry a JWT signed
//! with the App's RSA key (checked with the public key); token requests a known token.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::{MockServer, Request, Respond, ResponseTemplate};

pub const OWNER: &str = "acme";
pub const REPO: &str = "app";
pub const ADMIN_TOKEN: &str = "github_pat_11ROTORTEST0123456789_admin";
pub const APP_ID: u64 = 4242;
pub const INSTALLATION_ID: u64 = 77;
pub const REPO_HOOK: u64 = 12345678;
pub const ORG_HOOK: u64 = 87654321;

#[derive(Debug, Clone)]
pub struct DeployKey {
    pub key: String,
    pub title: String,
    pub read_only: bool,
    /// When GitHub last saw the key used (RFC 3339).
    pub last_used: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Hook {
    pub url: String,
    pub secret: Option<String>,
    /// What GitHub delivered to the receiver (pings), newest last.
    pub deliveries: Vec<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct Token {
    pub value: String,
    pub revoked: bool,
}

#[derive(Debug, Default)]
pub struct State {
    pub deploy_keys: BTreeMap<u64, DeployKey>,
    pub hooks: BTreeMap<u64, Hook>,
    pub tokens: Vec<Token>,
    next_id: u64,
    /// The next this many requests are refused as rate limited (403, remaining 0).
    pub rate_limited: u32,
    /// New deploy keys are refused as "already in use" (registered in another repository).
    pub keys_in_use_elsewhere: bool,
    /// The next this many new installation tokens come in a reply that is not shaped as
    /// documented, with the token's value where an object belongs (a proxy or API change).
    pub misshapen_token_replies: u32,
    /// The status the webhooks' receiver answers a delivery with (`None`: 200).
    pub receiver_refuses: Option<u16>,
    /// Every request, as "METHOD /path?query".
    pub calls: Vec<String>,
}

pub struct GitHub {
    pub server: MockServer,
    pub state: Arc<Mutex<State>>,
    /// The App's private key (PKCS#8 PEM), what its config refers to.
    pub app_key_pem: String,
    _runtime: tokio::runtime::Runtime,
}

struct Api {
    state: Arc<Mutex<State>>,
    app_public_pem: String,
}

fn json(status: u16, body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("content-type", "application/json; charset=utf-8")
        .insert_header("x-ratelimit-limit", "5000")
        .insert_header("x-ratelimit-remaining", "4999")
        .insert_header("x-github-api-version-selected", "2022-11-28")
        .set_body_json(body)
}

fn error(status: u16, message: &str, docs: &str) -> ResponseTemplate {
    json(
        status,
        serde_json::json!({
            "message": message,
            "documentation_url": format!("https://docs.github.com/rest/{docs}"),
            "status": status.to_string(),
        }),
    )
}

fn bearer(request: &Request) -> Option<String> {
    let value = request.headers.get("authorization")?.to_str().ok()?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "))
        .map(str::to_owned)
}

/// One page of a list, as GitHub pages: `per_page` (default 30, at most 100) and `page`
/// (from 1) in the query, and a `Link` header with `rel="next"` and `rel="last"` while more
/// pages follow.
fn paged(request: &wiremock::Request, items: Vec<serde_json::Value>) -> ResponseTemplate {
    let query = |name: &str| {
        request
            .url
            .query_pairs()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.parse::<usize>().ok())
    };
    let per_page = query("per_page").unwrap_or(30).clamp(1, 100);
    let page = query("page").unwrap_or(1).max(1);
    let last = items.len().div_ceil(per_page).max(1);
    let body: Vec<serde_json::Value> = items
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let mut response = json(200, serde_json::Value::Array(body));
    if page < last {
        // Absolute, as GitHub writes them, on the address the request came to (wiremock's
        // `request.url` names no port).
        let host = request
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost");
        let link = |n: usize| {
            let mut url =
                reqwest::Url::parse(&format!("http://{host}{}", request.url.path())).unwrap();
            url.query_pairs_mut()
                .clear()
                .append_pair("per_page", &per_page.to_string())
                .append_pair("page", &n.to_string());
            url.to_string()
        };
        response = response.insert_header(
            "link",
            format!(
                "<{}>; rel=\"next\", <{}>; rel=\"last\"",
                link(page + 1),
                link(last)
            ),
        );
    }
    response
}

fn deploy_key_json(id: u64, key: &DeployKey) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "key": key.key,
        "url": format!("https://api.github.com/repos/{OWNER}/{REPO}/keys/{id}"),
        "title": key.title,
        "verified": true,
        "created_at": "2026-11-27T09:00:00Z",
        "read_only": key.read_only,
        "added_by": "rotor-bot",
        "last_used": key.last_used,
        "enabled": true
    })
}

/// A `simple-user` as GitHub's documentation shows one (an account, an owner).
fn simple_user(login: &str, id: u64, kind: &str) -> serde_json::Value {
    let api = format!("https://api.github.com/users/{login}");
    serde_json::json!({
        "login": login,
        "id": id,
        "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
        "avatar_url": "https://github.com/images/error/octocat_happy.gif",
        "gravatar_id": "",
        "url": api,
        "html_url": format!("https://github.com/{login}"),
        "followers_url": format!("{api}/followers"),
        "following_url": format!("{api}/following{{/other_user}}"),
        "gists_url": format!("{api}/gists{{/gist_id}}"),
        "starred_url": format!("{api}/starred{{/owner}}{{/repo}}"),
        "subscriptions_url": format!("{api}/subscriptions"),
        "organizations_url": format!("{api}/orgs"),
        "repos_url": format!("{api}/repos"),
        "events_url": format!("{api}/events{{/privacy}}"),
        "received_events_url": format!("{api}/received_events"),
        "type": kind,
        "site_admin": false
    })
}

/// A `repository` as the installation endpoints return it (GitHub's documented example,
/// its `*_url` templates cut to those a client reads).
fn repository_json() -> serde_json::Value {
    let api = format!("https://api.github.com/repos/{OWNER}/{REPO}");
    serde_json::json!({
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": REPO,
        "full_name": format!("{OWNER}/{REPO}"),
        "owner": simple_user(OWNER, 1, "Organization"),
        "private": true,
        "html_url": format!("https://github.com/{OWNER}/{REPO}"),
        "description": "This your first repo!",
        "fork": false,
        "url": api,
        "keys_url": format!("{api}/keys{{/key_id}}"),
        "hooks_url": format!("{api}/hooks"),
        "default_branch": "main",
        "visibility": "private",
        "archived": false,
        "disabled": false,
        "pushed_at": "2011-01-26T19:06:43Z",
        "created_at": "2011-01-26T19:01:12Z",
        "updated_at": "2011-01-26T19:14:43Z"
    })
}

fn hook_config_json(hook: &Hook) -> serde_json::Value {
    serde_json::json!({
        "content_type": "json",
        "insecure_ssl": "0",
        "secret": hook.secret.as_ref().map(|_| "********"),
        "url": hook.url,
    })
}

impl Api {
    fn app_jwt_valid(&self, request: &Request) -> bool {
        let Some(jwt) = bearer(request) else {
            return false;
        };
        let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(self.app_public_pem.as_bytes())
        else {
            return false;
        };
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
        // octocrab sends `iss` as a number, as GitHub accepts; it is checked below.
        validation.set_required_spec_claims(&["exp"]);
        match jsonwebtoken::decode::<serde_json::Value>(&jwt, &key, &validation) {
            Ok(data) => {
                let iss = &data.claims["iss"];
                iss.as_str()
                    .map(str::to_owned)
                    .or_else(|| iss.as_u64().map(|n| n.to_string()))
                    == Some(APP_ID.to_string())
            }
            Err(e) => {
                eprintln!("fake GitHub: JWT refused: {e:?}");
                false
            }
        }
    }

    fn route(&self, request: &Request, state: &mut State) -> ResponseTemplate {
        let path = request.url.path().to_owned();
        let method = request.method.as_str().to_owned();
        let bad_credentials = || {
            error(
                401,
                "Bad credentials",
                "overview/authenticating-to-the-rest-api",
            )
        };

        // App endpoints: a JWT signed with the App's key.
        if path.starts_with("/app/") {
            if !self.app_jwt_valid(request) {
                return error(401, "A JSON web token could not be decoded", "apps/apps");
            }
            let installation = format!("/app/installations/{INSTALLATION_ID}");
            return match (method.as_str(), path.as_str()) {
                ("GET", p) if p == installation => json(
                    200,
                    serde_json::json!({
                        "id": INSTALLATION_ID,
                        "account": simple_user(OWNER, 1, "Organization"),
                        "access_tokens_url": format!("https://api.github.com{installation}/access_tokens"),
                        "repositories_url": "https://api.github.com/installation/repositories",
                        "html_url": format!("https://github.com/organizations/{OWNER}/settings/installations/{INSTALLATION_ID}"),
                        "app_id": APP_ID,
                        "target_id": 1,
                        "target_type": "Organization",
                        "permissions": {"contents": "read", "metadata": "read"},
                        "events": ["push", "pull_request"],
                        "single_file_name": null,
                        "has_multiple_single_files": false,
                        "single_file_paths": [],
                        "repository_selection": "selected",
                        "created_at": "2017-07-08T16:18:44-04:00",
                        "updated_at": "2017-07-08T16:18:44-04:00",
                        "app_slug": "rotor-test",
                        "suspended_at": null,
                        "suspended_by": null
                    }),
                ),
                ("POST", p) if p == format!("{installation}/access_tokens") => {
                    state.next_id += 1;
                    let value = format!(
                        "ghs_{:036}",
                        state.next_id as u128 * 7919 + rand::random::<u32>() as u128
                    );
                    state.tokens.push(Token {
                        value: value.clone(),
                        revoked: false,
                    });
                    if state.misshapen_token_replies > 0 {
                        state.misshapen_token_replies -= 1;
                        return json(
                            201,
                            serde_json::json!({"token": value, "permissions": value}),
                        );
                    }
                    json(
                        201,
                        serde_json::json!({
                            "token": value,
                            "expires_at": "2026-11-27T11:00:00Z",
                            "permissions": {"contents": "read", "metadata": "read"},
                            "repository_selection": "selected",
                            "repositories": [repository_json()]
                        }),
                    )
                }
                _ => error(404, "Not Found", "apps/apps"),
            };
        }

        // Installation-token endpoints.
        if path.starts_with("/installation/") {
            let presented = bearer(request);
            let Some(token) = state
                .tokens
                .iter_mut()
                .find(|t| Some(&t.value) == presented.as_ref() && !t.revoked)
            else {
                return bad_credentials();
            };
            return match (method.as_str(), path.as_str()) {
                ("GET", "/installation/repositories") => json(
                    200,
                    serde_json::json!({
                        "total_count": 1,
                        "repository_selection": "selected",
                        "repositories": [repository_json()]
                    }),
                ),
                ("DELETE", "/installation/token") => {
                    token.revoked = true;
                    ResponseTemplate::new(204)
                }
                _ => error(404, "Not Found", "apps/installations"),
            };
        }

        if bearer(request).as_deref() != Some(ADMIN_TOKEN) {
            return bad_credentials();
        }
        let keys = format!("/repos/{OWNER}/{REPO}/keys");
        let repo_hook = format!("/repos/{OWNER}/{REPO}/hooks/{REPO_HOOK}/config");
        let org_hook = format!("/orgs/{OWNER}/hooks/{ORG_HOOK}/config");
        let repo_pings = format!("/repos/{OWNER}/{REPO}/hooks/{REPO_HOOK}/pings");
        let org_pings = format!("/orgs/{OWNER}/hooks/{ORG_HOOK}/pings");
        let repo_deliveries = format!("/repos/{OWNER}/{REPO}/hooks/{REPO_HOOK}/deliveries");
        let org_deliveries = format!("/orgs/{OWNER}/hooks/{ORG_HOOK}/deliveries");
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == keys => {
                let all: Vec<serde_json::Value> = state
                    .deploy_keys
                    .iter()
                    .map(|(id, k)| deploy_key_json(*id, k))
                    .collect();
                paged(request, all)
            }
            ("POST", p) if p == keys => {
                let Ok(body) = request.body_json::<serde_json::Value>() else {
                    return error(
                        400,
                        "Problems parsing JSON",
                        "deploy-keys/deploy-keys#create-a-deploy-key",
                    );
                };
                let key = body["key"].as_str().unwrap_or("").to_owned();
                if !key.starts_with("ssh-ed25519 ") && !key.starts_with("ssh-rsa ") {
                    return json(
                        422,
                        serde_json::json!({
                            "message": "Validation Failed",
                            "errors": [{"resource": "PublicKey", "code": "custom", "field": "key", "message": "key is invalid. You must supply a key in OpenSSH public key format"}],
                            "documentation_url": "https://docs.github.com/rest/deploy-keys/deploy-keys#create-a-deploy-key",
                            "status": "422"
                        }),
                    );
                }
                if state.keys_in_use_elsewhere || state.deploy_keys.values().any(|k| k.key == key) {
                    return json(
                        422,
                        serde_json::json!({
                            "message": "Validation Failed",
                            "errors": [{"resource": "PublicKey", "code": "custom", "field": "key", "message": "key is already in use"}],
                            "documentation_url": "https://docs.github.com/rest/deploy-keys/deploy-keys#create-a-deploy-key",
                            "status": "422"
                        }),
                    );
                }
                state.next_id += 1;
                let id = state.next_id;
                let created = DeployKey {
                    key,
                    title: body["title"].as_str().unwrap_or("").to_owned(),
                    read_only: body["read_only"].as_bool().unwrap_or(false),
                    last_used: None,
                };
                let response = deploy_key_json(id, &created);
                state.deploy_keys.insert(id, created);
                json(201, response)
            }
            ("DELETE", p) if p.starts_with(&format!("{keys}/")) => {
                let id: u64 = p[keys.len() + 1..].parse().unwrap_or(0);
                match state.deploy_keys.remove(&id) {
                    Some(_) => ResponseTemplate::new(204),
                    None => error(
                        404,
                        "Not Found",
                        "deploy-keys/deploy-keys#delete-a-deploy-key",
                    ),
                }
            }
            ("POST", p) if p == repo_pings || p == org_pings => {
                let id = if p == repo_pings { REPO_HOOK } else { ORG_HOOK };
                let status = state.receiver_refuses.unwrap_or(200);
                let Some(hook) = state.hooks.get_mut(&id) else {
                    return error(404, "Not Found", "webhooks/repos#ping-a-repository-webhook");
                };
                let n = hook.deliveries.len() as u64 + 1;
                hook.deliveries.push(serde_json::json!({
                    "id": 12_345_000 + n,
                    "guid": format!("0b989ba4-242f-11e5-81e1-{n:012x}"),
                    "delivered_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    "redelivery": false,
                    "duration": 0.27,
                    "status": if status == 200 { "OK".to_owned() } else { format!("Invalid HTTP Response: {status}") },
                    "status_code": status,
                    "event": "ping",
                    "action": null,
                    "installation_id": null,
                    "repository_id": 1296269,
                    "throttled_at": null
                }));
                ResponseTemplate::new(204)
            }
            ("GET", p) if p == repo_deliveries || p == org_deliveries => {
                let id = if p == repo_deliveries {
                    REPO_HOOK
                } else {
                    ORG_HOOK
                };
                match state.hooks.get(&id) {
                    // Newest first, as GitHub lists them.
                    Some(hook) => json(
                        200,
                        serde_json::json!(hook.deliveries.iter().rev().collect::<Vec<_>>()),
                    ),
                    None => error(404, "Not Found", "webhooks/repo-deliveries"),
                }
            }
            ("GET" | "PATCH", p) if p == repo_hook || p == org_hook => {
                let id = if p == repo_hook { REPO_HOOK } else { ORG_HOOK };
                let Some(hook) = state.hooks.get_mut(&id) else {
                    return error(404, "Not Found", "webhooks/repo-config");
                };
                if method == "PATCH" {
                    let Ok(body) = request.body_json::<serde_json::Value>() else {
                        return error(400, "Problems parsing JSON", "webhooks/repo-config");
                    };
                    if let Some(secret) = body["secret"].as_str() {
                        hook.secret = Some(secret.to_owned());
                    }
                    if let Some(url) = body["url"].as_str() {
                        hook.url = url.to_owned();
                    }
                }
                json(200, hook_config_json(hook))
            }
            _ => error(404, "Not Found", "overview/resources-in-the-rest-api"),
        }
    }
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap();
        state.calls.push(match request.url.query() {
            Some(query) => format!("{} {}?{query}", request.method, request.url.path()),
            None => format!("{} {}", request.method, request.url.path()),
        });
        if state.rate_limited > 0 {
            state.rate_limited -= 1;
            let reset = chrono::Utc::now().timestamp() + 2;
            return error(403, "API rate limit exceeded for installation ID 77. If you reach out to GitHub Support for help, please include the request ID.", "overview/rate-limits-for-the-rest-api")
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .insert_header("x-ratelimit-resource", "core");
        }
        self.route(request, &mut state)
    }
}

impl GitHub {
    /// A fresh fake with a repository webhook and an organisation webhook (no secret yet), and
    /// an App key pair made by the `openssl` tool.
    pub fn start(dir: &std::path::Path) -> Arc<GitHub> {
        let (private, public_pem) = super::rsa_key_pair(dir, "github-app");
        let mut state = State::default();
        for id in [REPO_HOOK, ORG_HOOK] {
            state.hooks.insert(
                id,
                Hook {
                    url: "https://hooks.acme.example/github".into(),
                    secret: None,
                    deliveries: Vec::new(),
                },
            );
        }
        let state = Arc::new(Mutex::new(state));
        let api = Api {
            state: state.clone(),
            app_public_pem: public_pem,
        };
        let (server, runtime) = super::serve(api);
        Arc::new(GitHub {
            server,
            state,
            app_key_pem: std::fs::read_to_string(&private).unwrap(),
            _runtime: runtime,
        })
    }

    pub fn url(&self) -> String {
        self.server.uri()
    }
}
