//! GitHub: deploy keys, webhook secrets and App installation tokens, through GitHub's REST API
//! (octocrab, `api_url` for GitHub Enterprise Server).
//!
//! - `github_deploy_key`: an ed25519 key pair made here; the public half is registered as a
//!   deploy key beside the old one, verified by reading it back, and the old key is deleted at
//!   retirement. The vault document holds the OpenSSH private key and the public key.
//! - `github_webhook_secret`: a webhook holds one secret, so the overlap is on the receivers'
//!   side. The new secret is promoted into the vault first (the document carries it and the
//!   previous one, and receivers accept either); after grace, retirement switches the webhook to
//!   the new secret and only then drops the old one from the vault. Before that GitHub keeps
//!   signing with the old secret, which every receiver still accepts.
//! - `github_app_installation_token`: a token minted from the App's private key. Tokens expire
//!   after an hour, so schedule these in minutes; retirement revokes the old token early.

use crate::kinds::Settings;
use std::time::Duration;

use octocrab::Octocrab;
use octocrab::models::apps::CreateInstallationAccessToken;
use octocrab::models::hooks::{Config as HookConfigModel, UpdateHookConfig};
use octocrab::models::repos::DeployKey;
use octocrab::models::{HookId, InstallationId};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::password::{Alphabet, random};
use crate::sshkey::{ed25519_openssh, fingerprint, public_half};
use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, Usage, resolve_secret,
};

const DEFAULT_API: &str = "https://api.github.com";

/// How rotor authenticates to GitHub for deploy keys and webhooks.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GithubAccess {
    /// GitHub's API root; GitHub Enterprise Server: `https://HOST/api/v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// A fine-grained token with the permission `rotor policy ID` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<SecretRef>,
    /// Or act as a GitHub App installation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<AppIdentity>,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

/// A GitHub App installation rotor acts as.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AppIdentity {
    /// The GitHub App's id (its settings page, "App ID").
    pub app_id: u64,
    /// The installation of the App on the account that owns the repository.
    pub installation_id: u64,
    /// The App's private key (PEM), as a secret reference.
    pub private_key: SecretRef,
}

impl GithubAccess {
    fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.api_url {
            api_url_problem(url)?;
        }
        match (&self.token, &self.app) {
            (Some(_), Some(_)) => Err("set `token` or `app`, not both".into()),
            (None, None) => Err("set `token` (a fine-grained token reference) or `app = { app_id, installation_id, private_key }`".into()),
            _ => Ok(()),
        }
    }

    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        crate::net::endpoint("api_url", self.api_url.as_deref(), self.insecure_transport)
    }

    fn refs(&self) -> Vec<&SecretRef> {
        self.token
            .iter()
            .chain(self.app.iter().map(|a| &a.private_key))
            .collect()
    }

    fn api(&self) -> &str {
        self.api_url.as_deref().unwrap_or(DEFAULT_API)
    }
}

/// An `api_url` must be http(s) and hold no credentials (they belong in `token` or `app`).
fn api_url_problem(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!("`api_url` {url} must start with https:// (or http:// for a local test server)")
        })?;
    if rest.split('/').next().unwrap_or("").contains('@') {
        return Err("`api_url` contains credentials; use `token = { env = \"NAME\" }`".into());
    }
    Ok(())
}

/// Builds a client authenticated as configured; references are read each time. (octocrab's
/// builder is not `Send`: secrets are read before it exists.)
async fn client(access: &GithubAccess, secrets: &Secrets) -> Result<Octocrab, RotatorError> {
    if let Some(token) = &access.token {
        let token = resolve_secret(secrets, token, "rotor's GitHub token").await?;
        return token_client(access.api(), &token);
    }
    let app = access.app.as_ref().expect("validated: token or app");
    let pem = resolve_secret(secrets, &app.private_key, "the GitHub App's private key").await?;
    app_client(access.api(), app.app_id, &pem)?
        .installation(octocrab::models::InstallationId(app.installation_id))
        .map_err(|e| {
            classify(
                e,
                &format!("acting as installation {}", app.installation_id),
            )
        })
}

fn token_client(api: &str, token: &SecretString) -> Result<Octocrab, RotatorError> {
    Octocrab::builder()
        .base_uri(api)
        .map_err(|e| RotatorError::permanent(format!("`api_url` {api}: {e}")))?
        .personal_token(token.expose_secret().to_owned())
        .build()
        .map_err(|e| RotatorError::permanent(format!("building the GitHub client: {e}")))
}

fn app_client(api: &str, app_id: u64, pem: &SecretString) -> Result<Octocrab, RotatorError> {
    let key = octocrab::EncodingKey::from_rsa_pem(pem.expose_secret().as_bytes()).map_err(|e| {
        RotatorError::permanent(format!(
            "the GitHub App's private key is not an RSA PEM key: {e}"
        ))
    })?;
    Octocrab::builder()
        .base_uri(api)
        .map_err(|e| RotatorError::permanent(format!("`api_url` {api}: {e}")))?
        .app(octocrab::models::AppId(app_id), key)
        .build()
        .map_err(|e| RotatorError::permanent(format!("building the GitHub client: {e}")))
}

/// What a failed call means for the engine; GitHub's own message is kept (it holds no secret).
fn classify(error: octocrab::Error, what: &str) -> RotatorError {
    // A reply that does not parse is named by where, never by what: serde's message quotes the
    // value it could not take, and a reply may carry a new secret.
    let unparsed = match &error {
        octocrab::Error::Json { source, .. } => Some(format!(
            " at `{}` ({:?} error, line {}, column {})",
            source.path(),
            source.inner().classify(),
            source.inner().line(),
            source.inner().column()
        )),
        octocrab::Error::Serde { source, .. } => Some(format!(
            " ({:?} error, line {}, column {})",
            source.classify(),
            source.line(),
            source.column()
        )),
        _ => None,
    };
    if let Some(place) = unparsed {
        return RotatorError::transient(format!(
            "{what}: GitHub's reply is not shaped as its API documents{place}; rotor retries"
        ));
    }
    let octocrab::Error::GitHub { source, .. } = &error else {
        return RotatorError::transient(format!(
            "{what}: {error} (GitHub is unreachable; rotor retries)"
        ));
    };
    let status = source.status_code.as_u16();
    let remaining = source
        .headers
        .as_ref()
        .and_then(|h| h.get("x-ratelimit-remaining"))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let details: Vec<&str> = source
        .errors
        .iter()
        .flatten()
        .filter_map(|e| e.get("message").and_then(|m| m.as_str()))
        .collect();
    let message = if details.is_empty() {
        format!("{what}: GitHub answered {status}: {}", source.message)
    } else {
        format!(
            "{what}: GitHub answered {status}: {}: {}",
            source.message,
            details.join("; ")
        )
    };
    if status == 429 || (status == 403 && remaining == Some(0)) {
        let wait = source.rate_limit_reset_at().map(|at| {
            (at - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_secs(1)
        });
        let mut e = RotatorError::transient(format!(
            "{message} (rate limited{}; rotor retries after the reset)",
            source
                .rate_limit_reset_at()
                .map(|at| format!(
                    " until {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ))
                .unwrap_or_default()
        ));
        e.retry_after = wait;
        return e;
    }
    match status {
        500..=599 => RotatorError::transient(format!("{message} (rotor retries)")),
        401 => RotatorError::permanent(format!(
            "{message} (GitHub refused rotor's credential: check `token` or `app`)"
        )),
        403 => RotatorError::permanent(format!(
            "{message} (permission denied: grant what `rotor policy ID` prints)"
        )),
        404 => RotatorError::permanent(format!(
            "{message} (not found, or rotor's credential cannot see it: GitHub answers 404 for both)"
        )),
        _ => RotatorError::permanent(message),
    }
}

// ---------------------------------------------------------------------------------------------
// github_deploy_key

pub const PRIVATE_KEY: &str = "private_key";
pub const PUBLIC_KEY: &str = "public_key";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployKeyConfig {
    /// The repository's owner (user or organisation).
    pub owner: String,
    /// The repository whose deploy key rotates.
    pub repo: String,
    /// Write access for the key; read-only by default.
    #[serde(default)]
    pub read_write: bool,
    /// The key's title at GitHub; the run token is appended.
    #[serde(default = "default_title")]
    pub title: String,
    #[serde(flatten)]
    pub access: GithubAccess,
}

fn default_title() -> String {
    "rotor".into()
}

impl Settings for DeployKeyConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        self.access.endpoints()
    }

    fn validate(&self) -> Result<(), String> {
        check_name("owner", &self.owner)?;
        check_name("repo", &self.repo)?;
        self.access.validate()
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.access.refs()
    }
}

impl RotatorSettings for DeployKeyConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "the stored private key is the half of the public key rotor generated, and GitHub lists that key with the configured read-only flag",
            cannot: "a `git fetch` over SSH (GitHub's SSH endpoint is not called)",
        }
    }

    fn usage_evidence(&self) -> Option<&'static str> {
        Some("the old deploy key's `last_used` at GitHub")
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        format!(
            "# rotor: least privilege at GitHub for credential \"{credential_id}\" (deploy key of {}/{}).\n\
             # Fine-grained token or GitHub App, repository {}/{} only:\n\
             #   Administration: Read and write   (deploy keys are repository administration)\n\
             #   Metadata: Read-only              (always granted)\n",
            self.owner, self.repo, self.owner, self.repo
        )
    }
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "`{what}` `{name}` is not a GitHub account or repository name"
        ));
    }
    Ok(())
}

pub struct GithubDeployKey {
    config: DeployKeyConfig,
    secrets: Secrets,
}

/// `ssh-ed25519 AAAA...` without the comment: what GitHub stores and lists.
fn key_body(public: &str) -> String {
    public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

impl GithubDeployKey {
    pub fn build(config: DeployKeyConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        Ok(Self { config, secrets })
    }

    fn repo<'a>(&self, github: &'a Octocrab) -> octocrab::repos::RepoHandler<'a> {
        github.repos(&self.config.owner, &self.config.repo)
    }

    /// Every deploy key of the repository, page after page.
    async fn keys(&self, github: &Octocrab) -> Result<Vec<DeployKey>, RotatorError> {
        let listing = || {
            format!(
                "listing the deploy keys of {}/{}",
                self.config.owner, self.config.repo
            )
        };
        let first = self
            .repo(github)
            .keys()
            .list()
            .per_page(100u8)
            .send()
            .await
            .map_err(|e| classify(e, &listing()))?;
        github
            .all_pages(first)
            .await
            .map_err(|e| classify(e, &listing()))
    }

    async fn find(
        &self,
        github: &Octocrab,
        credential: &Credential,
    ) -> Result<Option<DeployKey>, RotatorError> {
        let wanted = key_body(credential.require(PUBLIC_KEY)?.expose_secret());
        Ok(self
            .keys(github)
            .await?
            .into_iter()
            .find(|k| key_body(&k.key) == wanted))
    }

    async fn remove(&self, credential: &Credential, what: &str) -> Result<(), RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        let Some(key) = self.find(&github, credential).await? else {
            return Ok(());
        };
        match self.repo(&github).keys().delete(key.id).await {
            Ok(()) => Ok(()),
            // Removed since it was listed: what retirement wanted.
            Err(octocrab::Error::GitHub { source, .. }) if source.status_code.as_u16() == 404 => {
                Ok(())
            }
            Err(e) => Err(classify(
                e,
                &format!(
                    "{what} deploy key {} of {}/{}",
                    key.id, self.config.owner, self.config.repo
                ),
            )),
        }
    }
}

impl Rotator for GithubDeployKey {
    fn kind(&self) -> &'static str {
        "github_deploy_key"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        let comment = format!("{} {}", self.config.title, context.token);
        let (private, public) = ed25519_openssh(&comment);
        Ok(Credential::new()
            .with(PRIVATE_KEY, SecretString::from(private.as_str()))
            .with(PUBLIC_KEY, SecretString::from(public)))
    }

    async fn apply(
        &self,
        candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        if self.find(&github, candidate).await?.is_some() {
            return Ok(());
        }
        let public = candidate.require(PUBLIC_KEY)?.expose_secret();
        let title = public
            .splitn(3, ' ')
            .nth(2)
            .unwrap_or(&self.config.title)
            .to_owned();
        self.repo(&github)
            .keys()
            .create(title, key_body(public))
            .read_only(!self.config.read_write)
            .send()
            .await
            .map_err(|e| {
                classify(
                    e,
                    &format!(
                        "adding a deploy key to {}/{}",
                        self.config.owner, self.config.repo
                    ),
                )
            })?;
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        // Consumers read the private key: it must be the half of the key GitHub holds.
        let public = candidate.require(PUBLIC_KEY)?.expose_secret();
        let derived = public_half(candidate.require(PRIVATE_KEY)?)?;
        if key_body(&derived) != key_body(public) {
            return Err(RotatorError::permanent(format!(
                "the stored private key of {}/{} is not the half of its public key {}; the document was changed outside rotor",
                self.config.owner,
                self.config.repo,
                fingerprint(public).unwrap_or_default()
            )));
        }
        let github = client(&self.config.access, &self.secrets).await?;
        let fingerprint = fingerprint(public).unwrap_or_default();
        let key = self.find(&github, candidate).await?.ok_or_else(|| {
            RotatorError::permanent(format!(
                "deploy key {fingerprint} is not registered at {}/{}",
                self.config.owner, self.config.repo
            ))
        })?;
        if key.read_only == self.config.read_write {
            return Err(RotatorError::permanent(format!(
                "deploy key {} ({fingerprint}) of {}/{} is {} but the config asks for {}",
                key.id,
                self.config.owner,
                self.config.repo,
                if key.read_only {
                    "read-only"
                } else {
                    "read-write"
                },
                if self.config.read_write {
                    "read-write"
                } else {
                    "read-only"
                }
            )));
        }
        Ok(())
    }

    /// GitHub's `last_used` of the old key (a key no longer registered is not in use).
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        Ok(match self.find(&github, old).await? {
            Some(key) => match key.last_used {
                Some(at) => Usage::Seen {
                    at: Some(at.timestamp_millis()),
                    by: format!("deploy key {} ({})", key.id, key.title),
                },
                None => Usage::Unseen,
            },
            None => Usage::Unseen,
        })
    }

    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        if let Some(current) = current
            && key_body(current.require(PUBLIC_KEY)?.expose_secret())
                == key_body(old.require(PUBLIC_KEY)?.expose_secret())
        {
            return Err(RotatorError::permanent(
                "refusing to delete the current deploy key",
            ));
        }
        self.remove(old, "deleting the old").await?;
        Ok(Retired::Done)
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        if current.is_some_and(|c| c.fingerprint() == candidate.fingerprint()) {
            return Ok(());
        }
        self.remove(candidate, "deleting the rolled-back").await
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        Ok(self
            .keys(&github)
            .await?
            .into_iter()
            .filter_map(|k| {
                Some(LiveCredential {
                    provider_id: fingerprint(&k.key)?,
                    active: true,
                })
            })
            .collect())
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        fingerprint(credential.get(PUBLIC_KEY)?.expose_secret())
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        self.keys(&github).await.map(drop)
    }
}

// ---------------------------------------------------------------------------------------------
// github_webhook_secret

pub const VALUE: &str = "value";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The repository owner (with `repo`) or the organisation (without it).
    pub owner: String,
    /// The repository; omit for an organisation webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    /// The webhook's id (in its settings URL, `.../hooks/ID`).
    pub hook_id: u64,
    /// Length of the secret (alphanumeric).
    #[serde(default = "default_webhook_length")]
    pub length: usize,
    #[serde(flatten)]
    pub access: GithubAccess,
}

fn default_webhook_length() -> usize {
    40
}

impl Settings for WebhookConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        self.access.endpoints()
    }

    fn validate(&self) -> Result<(), String> {
        check_name("owner", &self.owner)?;
        if let Some(repo) = &self.repo {
            check_name("repo", repo)?;
        }
        if !(20..=256).contains(&self.length) {
            return Err(format!(
                "length must be between 20 and 256, got {}",
                self.length
            ));
        }
        self.access.validate()
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.access.refs()
    }
}

impl RotatorSettings for WebhookConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "the stored secret is what rotor generated, and the webhook exists with a delivery URL; after the switch (at grace end) GitHub's ping, signed with it, is answered 2xx by the receiver (read back from the hook's deliveries; a refusal is retried and alerted)",
            cannot: "that every receiver accepts it, where one URL fans out to several",
        }
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        match &self.repo {
            Some(repo) => format!(
                "# rotor: least privilege at GitHub for credential \"{credential_id}\" (webhook {} of {}/{repo}).\n\
                 # Fine-grained token or GitHub App, repository {}/{repo} only:\n\
                 #   Webhooks: Read and write\n#   Metadata: Read-only\n",
                self.hook_id, self.owner, self.owner
            ),
            None => format!(
                "# rotor: least privilege at GitHub for credential \"{credential_id}\" (webhook {} of organisation {}).\n\
                 # Fine-grained token or GitHub App on organisation {}:\n#   Organization permissions: Webhooks: Read and write\n",
                self.hook_id, self.owner, self.owner
            ),
        }
    }
}

pub struct GithubWebhookSecret {
    config: WebhookConfig,
    secrets: Secrets,
}

impl GithubWebhookSecret {
    pub fn build(config: WebhookConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        Ok(Self { config, secrets })
    }

    fn name(&self) -> String {
        match &self.config.repo {
            Some(repo) => format!(
                "webhook {} of {}/{repo}",
                self.config.hook_id, self.config.owner
            ),
            None => format!(
                "webhook {} of organisation {}",
                self.config.hook_id, self.config.owner
            ),
        }
    }

    async fn read(&self, github: &Octocrab) -> Result<HookConfigModel, RotatorError> {
        let hook = HookId(self.config.hook_id);
        let read = match &self.config.repo {
            Some(repo) => {
                github
                    .repos(&self.config.owner, repo)
                    .hooks()
                    .get_config(hook)
                    .await
            }
            None => {
                github
                    .orgs(&self.config.owner)
                    .hooks()
                    .get_config(hook)
                    .await
            }
        };
        read.map_err(|e| classify(e, &format!("reading the configuration of {}", self.name())))
    }
}

/// How often, and how many times, the deliveries are read for the ping's.
const PING_POLL: Duration = Duration::from_millis(500);
const PING_READS: u32 = 10;

impl GithubWebhookSecret {
    /// Consumers' view of the switch: GitHub pings the webhook, signed with the new secret,
    /// and the delivery's status says whether the receiver took it. A refusal is transient
    /// (the switch and the ping are retried, and the run alerts past its retry budget): the
    /// receivers must accept the new secret, which the vault has held since promotion. GitHub
    /// not reporting the delivery in time is not a failure: it delivers asynchronously.
    async fn ping(&self, github: &Octocrab) -> Result<(), RotatorError> {
        use octocrab::models::webhook_events::WebhookEventType;
        let hook_id = HookId(self.config.hook_id);
        let hooks = github.hooks(&self.config.owner);
        let hooks = match &self.config.repo {
            Some(repo) => hooks.repo(repo.clone()),
            None => hooks,
        };
        // The pings listed now, newest first (GitHub's order); ours is the one not seen before.
        let pings = || async {
            let page = hooks
                .list_deliveries(hook_id)
                .per_page(20u8)
                .send()
                .await
                .map_err(|e| classify(e, &format!("reading the deliveries of {}", self.name())))?;
            Ok::<_, RotatorError>(
                page.items
                    .into_iter()
                    .filter(|d| d.event == Some(WebhookEventType::Ping))
                    .collect::<Vec<_>>(),
            )
        };
        let before: Vec<_> = pings().await?.into_iter().map(|d| d.id).collect();
        let pinged = match &self.config.repo {
            Some(repo) => {
                github
                    .repos(&self.config.owner, repo)
                    .hooks()
                    .ping(hook_id)
                    .await
            }
            None => github.orgs(&self.config.owner).hooks().ping(hook_id).await,
        };
        pinged.map_err(|e| classify(e, &format!("pinging {}", self.name())))?;
        for _ in 0..PING_READS {
            tokio::time::sleep(PING_POLL).await;
            let Some(delivery) = pings().await?.into_iter().find(|d| !before.contains(&d.id))
            else {
                continue;
            };
            if (200..300).contains(&delivery.status_code) {
                return Ok(());
            }
            return Err(RotatorError::transient(format!(
                "{} now signs with the new secret, but its receiver answered GitHub's ping with {} ({}): receivers must accept the secret the vault holds as `value`; rotor pings again",
                self.name(),
                delivery.status_code,
                delivery.status
            )));
        }
        tracing::warn!(webhook = %self.name(), "GitHub has not reported the ping's delivery yet; the switch stands");
        Ok(())
    }
}

impl Rotator for GithubWebhookSecret {
    fn kind(&self) -> &'static str {
        "github_webhook_secret"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, _context: MintContext<'_>) -> Result<Credential, RotatorError> {
        Ok(Credential::new().with(VALUE, random(self.config.length, Alphabet::Alphanumeric)))
    }

    async fn apply(
        &self,
        _candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        // GitHub switches at retirement, once receivers have read the new secret (module doc).
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let value = candidate.require(VALUE)?.expose_secret();
        if value.len() != self.config.length || !value.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(RotatorError::permanent(
                "the stored webhook secret is not what rotor generated",
            ));
        }
        // The webhook exists and rotor may change it: the switch at retirement will work.
        let github = client(&self.config.access, &self.secrets).await?;
        let hook = self.read(&github).await?;
        if hook.url.is_empty() {
            return Err(RotatorError::permanent(format!(
                "{} has no delivery URL",
                self.name()
            )));
        }
        Ok(())
    }

    async fn switch_over(&self, current: &Credential) -> Result<(), RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        // octocrab takes the secret as a String and serializes it into a request body that it
        // drops without zeroizing (as its generic `patch` did with rotor's JSON body).
        let secret = current.require(VALUE)?.expose_secret().to_owned();
        let hook_id = HookId(self.config.hook_id);
        let switched = match &self.config.repo {
            Some(repo) => {
                github
                    .repos(&self.config.owner, repo)
                    .hooks()
                    .update_config(hook_id)
                    .secret(secret)
                    .send()
                    .await
            }
            None => {
                let config = UpdateHookConfig {
                    secret: Some(secret),
                    ..UpdateHookConfig::default()
                };
                github
                    .orgs(&self.config.owner)
                    .hooks()
                    .update_config(hook_id, config)
                    .await
            }
        };
        let hook = switched
            .map_err(|e| classify(e, &format!("switching {} to the new secret", self.name())))?;
        if hook.secret.is_none() {
            return Err(RotatorError::transient(format!(
                "{} reports no secret after the switch; rotor retries",
                self.name()
            )));
        }
        self.ping(&github).await
    }

    async fn retire(
        &self,
        _old: &Credential,
        _current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        // The switch to the current secret replaced it at GitHub; the vault drops it next.
        Ok(Retired::Done)
    }

    async fn rollback(
        &self,
        _candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        // Nothing reached GitHub before promotion.
        Ok(())
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        let hook = self.read(&github).await?;
        Ok(vec![LiveCredential {
            provider_id: format!("hook {}", self.config.hook_id),
            active: hook.secret.is_some(),
        }])
    }

    fn provider_id(&self, _credential: &Credential) -> Option<String> {
        Some(format!("hook {}", self.config.hook_id))
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let github = client(&self.config.access, &self.secrets).await?;
        self.read(&github).await.map(drop)
    }
}

// ---------------------------------------------------------------------------------------------
// github_app_installation_token

pub const TOKEN: &str = "token";
pub const EXPIRES_AT: &str = "expires_at";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallationTokenConfig {
    /// GitHub's API root; GitHub Enterprise Server: `https://HOST/api/v3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// The GitHub App's id (its settings page, "App ID").
    pub app_id: u64,
    /// The installation whose token is minted.
    pub installation_id: u64,
    /// The App's private key (PEM), as a secret reference.
    pub private_key: SecretRef,
    /// Narrow the token to these repositories (names, not ids); all of the installation's when
    /// omitted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

impl Settings for InstallationTokenConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        crate::net::endpoint("api_url", self.api_url.as_deref(), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        if let Some(url) = &self.api_url {
            api_url_problem(url)?;
        }
        for repo in &self.repositories {
            check_name("repositories", repo)?;
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        vec![&self.private_key]
    }
}

impl RotatorSettings for InstallationTokenConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "a call as the new token (`GET /installation/repositories`) succeeds",
            cannot: "the token's permissions beyond listing (they are the App's)",
        }
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        format!(
            "# rotor: credential \"{credential_id}\" is an installation token of GitHub App {} (installation {}).\n\
             # rotor needs only the App's private key; the token carries the permissions the App was\n\
             # granted on installation: grant the App no more than its consumers need.\n",
            self.app_id, self.installation_id
        )
    }
}

pub struct GithubAppInstallationToken {
    config: InstallationTokenConfig,
    secrets: Secrets,
}

impl GithubAppInstallationToken {
    pub fn build(config: InstallationTokenConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        Ok(Self { config, secrets })
    }

    fn api(&self) -> &str {
        self.config.api_url.as_deref().unwrap_or(DEFAULT_API)
    }

    fn installation(&self) -> InstallationId {
        InstallationId(self.config.installation_id)
    }

    /// A client authenticated as the installation token itself.
    fn as_token(&self, token: &SecretString) -> Result<Octocrab, RotatorError> {
        token_client(self.api(), token)
    }

    /// A client authenticated as the App (a JWT from its private key).
    async fn as_app(&self) -> Result<Octocrab, RotatorError> {
        let pem = resolve_secret(
            &self.secrets,
            &self.config.private_key,
            "the GitHub App's private key",
        )
        .await?;
        app_client(self.api(), self.config.app_id, &pem)
    }
}

impl Rotator for GithubAppInstallationToken {
    fn kind(&self) -> &'static str {
        "github_app_installation_token"
    }

    fn origin(&self) -> Origin {
        Origin::Provider
    }

    async fn mint(&self, _context: MintContext<'_>) -> Result<Credential, RotatorError> {
        // GitHub can neither list nor revoke a token rotor never received; one lost to a crash
        // here expires within the hour.
        let app = self.as_app().await?;
        let body = CreateInstallationAccessToken {
            repositories: (!self.config.repositories.is_empty())
                .then(|| self.config.repositories.clone()),
            ..CreateInstallationAccessToken::default()
        };
        let token = app
            .apps()
            .create_installation_access_token(self.installation(), &body)
            .await
            .map_err(|e| {
                classify(
                    e,
                    &format!(
                        "creating a token for installation {} of App {}",
                        self.config.installation_id, self.config.app_id
                    ),
                )
            })?;
        let value = Zeroizing::new(token.token);
        let Some(expires_at) = token.expires_at else {
            return Err(RotatorError::permanent(format!(
                "GitHub created a token for installation {} without `expires_at`; rotor cannot schedule its replacement (it expires within the hour)",
                self.config.installation_id
            )));
        };
        Ok(Credential::new()
            .with(TOKEN, SecretString::from(value.as_str()))
            .with(EXPIRES_AT, SecretString::from(expires_at)))
    }

    async fn apply(
        &self,
        _candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let github = self.as_token(candidate.require(TOKEN)?)?;
        github
            .apps()
            .installation_repositories()
            .per_page(1)
            .send()
            .await
            .map_err(|e| {
                classify(
                    e,
                    &format!(
                        "verifying the new token of installation {}",
                        self.config.installation_id
                    ),
                )
            })?;
        Ok(())
    }

    async fn retire(
        &self,
        old: &Credential,
        _current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        // It would expire within the hour anyway; revoking it ends its use now.
        let github = self.as_token(old.require(TOKEN)?)?;
        match github.apps().revoke_installation_token().await {
            Ok(()) => Ok(Retired::Done),
            Err(e) => match &e {
                octocrab::Error::GitHub { source, .. } if source.status_code.as_u16() == 401 => {
                    Ok(Retired::Done)
                }
                _ => Err(classify(e, "revoking the old installation token")),
            },
        }
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        if current.is_some_and(|c| c.fingerprint() == candidate.fingerprint()) {
            return Ok(());
        }
        self.retire(candidate, current).await.map(drop)
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        Ok(Vec::new())
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        // Tokens have no id at GitHub: name one by a digest of the token.
        let token = credential.get(TOKEN)?;
        Some(format!(
            "token sha256:{}",
            &hex_prefix(token.expose_secret())
        ))
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let app = self.as_app().await?;
        app.apps()
            .installation(self.installation())
            .await
            .map_err(|e| {
                classify(
                    e,
                    &format!(
                        "reading installation {} of App {}",
                        self.config.installation_id, self.config.app_id
                    ),
                )
            })?;
        Ok(())
    }
}

fn hex_prefix(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_half_of_a_stored_private_key_is_its_own_and_no_other() {
        let (private, public) = ed25519_openssh("rotor test");
        let (_, other) = ed25519_openssh("rotor test");
        let derived = public_half(&SecretString::from(private.as_str())).unwrap();
        assert_eq!(key_body(&derived), key_body(&public));
        assert_ne!(key_body(&derived), key_body(&other));
        let garbage = public_half(&SecretString::from("not a key")).unwrap_err();
        assert_eq!(garbage.class, crate::ErrorClass::Permanent);
    }

    #[test]
    fn the_openssh_key_is_well_formed() {
        let (private, public) = ed25519_openssh("rotor test");
        // Spelled out here, not from the writer's constant, so that a wrong label fails.
        assert!(private.starts_with(concat!("-----BEGIN OPENSSH PRIVATE", " KEY-----\n")));
        assert!(private.ends_with(concat!("-----END OPENSSH PRIVATE", " KEY-----\n")));
        assert!(
            public.starts_with("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"),
            "{public}"
        );
        assert!(public.ends_with(" rotor test"));
        assert!(fingerprint(&public).unwrap().starts_with("SHA256:"));
        // A key and its fingerprint as `ssh-keygen -l -E sha256` printed them.
        assert_eq!(
            fingerprint(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL/fMYzPts/HUm9wjG1u8INXJ6+urTKqgkIWteRi3YF9 vector"
            )
            .as_deref(),
            Some("SHA256:F35SHxGQvqOIHsKMcpNUZNgs85fG3OyCuLlNVeFnw9s")
        );
        let (_, other) = ed25519_openssh("rotor test");
        assert_ne!(public, other);
    }

    #[test]
    fn configs_validate() {
        let c: DeployKeyConfig =
            toml::from_str("owner = \"acme\"\nrepo = \"app\"\ntoken = { env = \"GH\" }").unwrap();
        c.validate().unwrap();
        let both: DeployKeyConfig = toml::from_str(
            "owner = \"acme\"\nrepo = \"app\"\ntoken = { env = \"GH\" }\napp = { app_id = 1, installation_id = 2, private_key = { file = \"/k\" } }",
        )
        .unwrap();
        assert!(both.validate().unwrap_err().contains("not both"));
        let w: WebhookConfig =
            toml::from_str("owner = \"acme\"\nhook_id = 7\ntoken = { env = \"GH\" }").unwrap();
        w.validate().unwrap();
        assert!(w.least_privilege("x").contains("organisation acme"));
        assert!(
            toml::from_str::<WebhookConfig>(
                "owner = \"acme\"\nhook_id = 7\ntoken = \"ghp_literal\""
            )
            .is_err()
        );
    }
}
