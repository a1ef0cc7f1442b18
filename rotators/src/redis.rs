//! `redis_acl_password`: a Redis ACL user's password, by one of two strategies.
//!
//! `two_passwords` (the default): one ACL user holds several passwords at once, so the old and
//! the new one both work through grace: `apply` adds the new password, `retire` removes the
//! old one. The server does not say which password a client logged in with, so nothing tells
//! whether the old one is still used.
//!
//! `alternating`: two ACL users with the same rules take turns, like PostgreSQL's alternating
//! roles. The new password goes to the user consumers do not use now; `retire` removes the
//! old user's password. Which user a connection logged in as is in `CLIENT LIST`, and that is
//! the evidence of use `retire_when = "unused"` reads.
//!
//! Passwords are added and removed by their SHA-256 (`#hash`, `!hash`), the form `ACL GETUSER`
//! reports: the plaintext never travels in an admin command, and "already added" or "already
//! removed" can be checked before acting, which keeps every step idempotent.

use crate::kinds::Settings;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::password::{Alphabet, random};
use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, Usage, resolve_secret,
};

pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";

/// What makes an ACL change survive a restart of the server.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Persist {
    /// Nothing: users are defined elsewhere (a config management tool, a managed service).
    #[default]
    None,
    /// `ACL SAVE` after each change, for servers started with an `aclfile`.
    AclSave,
    /// `CONFIG REWRITE` after each change, for users defined in `redis.conf`.
    ConfigRewrite,
}

/// How the old and the new password both work through grace.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// One ACL user (`user`) holds the old and the new password through grace.
    #[default]
    TwoPasswords,
    /// Two ACL users (`users`) with the same rules take turns; which one a client logged in
    /// as shows in `CLIENT LIST`, so `retire_when = "unused"` can see the old one in use.
    Alternating,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server, without credentials: `redis://redis.internal:6379` or `rediss://...` (TLS).
    pub url: String,
    /// `two_passwords` (default, with `user`) or `alternating` (with `users`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub strategy: Strategy,
    /// `two_passwords`: the ACL user consumers log in as. Never `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `alternating`: the two ACL users consumers log in as, with the same rules. Never
    /// `default`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// The ACL user rotor logs in as (see `rotor policy ID`); `default` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_user: Option<String>,
    /// The admin user's password (a secret reference); omit when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SecretRef>,
    /// Length of the generated password (alphanumeric, 16 to 256 characters).
    #[serde(default = "default_length")]
    pub password_length: usize,
    /// How ACL changes are persisted on the server.
    #[serde(default)]
    pub persist: Persist,
    /// How long connecting and each command may take before the step counts as transient.
    #[serde(default = "default_timeout")]
    pub timeout: crate::duration::Duration,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
    /// PEM file of the CA(s) that sign a `rediss://` server's certificate, when it is not
    /// signed by a public CA; without it the webpki roots are trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<std::path::PathBuf>,
}

fn default_length() -> usize {
    32
}

fn is_default(strategy: &Strategy) -> bool {
    *strategy == Strategy::default()
}

fn default_timeout() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(10)
}

impl Settings for RedisConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        crate::net::endpoint("url", Some(self.url.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        match (self.strategy, &self.user, self.users.len()) {
            (Strategy::TwoPasswords, Some(_), 0) => {}
            (Strategy::TwoPasswords, _, _) => {
                return Err("strategy `two_passwords` (the default) rotates one ACL user: set `user`, not `users` (two users that take turns are `strategy = \"alternating\"`)".into());
            }
            (Strategy::Alternating, None, 2) => {
                if self.users[0] == self.users[1] {
                    return Err("the two alternating ACL users must differ".into());
                }
            }
            (Strategy::Alternating, _, n) => {
                return Err(format!(
                    "strategy `alternating` needs exactly two ACL users in `users` and no `user`, got {n} in `users`{}",
                    if self.user.is_some() {
                        " and a `user`"
                    } else {
                        ""
                    }
                ));
            }
        }
        for user in self.accounts() {
            if user == "default" {
                return Err("refusing to rotate the `default` user: every connection that sends no user name logs in as it, so a rotation would lock out clients rotor does not know of; create a named ACL user for the application".into());
            }
            if user.is_empty() || user.contains(char::is_whitespace) {
                return Err("ACL user names must be non-empty and without spaces".into());
            }
            if self.admin_user.as_deref() == Some(user) {
                return Err("rotor's `admin_user` must not be a rotated user".into());
            }
        }
        if !(16..=256).contains(&self.password_length) {
            return Err(format!(
                "password_length must be between 16 and 256, got {}",
                self.password_length
            ));
        }
        let info = self
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| format!("`url` is not a Redis URL: {e}"))?;
        if self.ca_file.is_some() && !self.url.starts_with("rediss://") {
            return Err("`ca_file` verifies a TLS server: use it with a rediss:// URL".into());
        }
        if info.redis_settings().password().is_some() {
            return Err("`url` contains a password; a config file holds no secrets: remove it and set `admin = { env = \"NAME\" }` (or { file = ... } or { vault = ... })".into());
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.admin.iter().collect()
    }
}

impl RedisConfig {
    /// The rotated ACL users: `user`, or the two `users`.
    fn accounts(&self) -> impl Iterator<Item = &str> {
        self.user.iter().chain(&self.users).map(String::as_str)
    }
}

impl RotatorSettings for RedisConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "`AUTH` as the user with the new password, and `ACL WHOAMI` names the user",
            cannot: "which commands the consumers need (the user's ACL rules are not rotor's)",
        }
    }

    fn usage_evidence(&self) -> Option<&'static str> {
        (self.strategy == Strategy::Alternating).then_some(
            "connections of the old ACL user in CLIENT LIST (address, client name, idle time), sampled during grace",
        )
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        let admin = self.admin_user.as_deref().unwrap_or("default");
        let persist = match self.persist {
            Persist::None => "",
            Persist::AclSave => " +acl|save",
            Persist::ConfigRewrite => " +config|rewrite",
        };
        let users: Vec<&str> = self.accounts().collect();
        let (client_list, alternating) = match self.strategy {
            Strategy::TwoPasswords => ("", String::new()),
            Strategy::Alternating => (
                " +client|list",
                format!(
                    "# CLIENT LIST tells which of the two users each connection logged in as: the evidence of use.\n\
                     # The two users must have the same rules (`rotor validate --online` compares them), e.g.\n\
                     #   ACL SETUSER {} on ~app:* +@read\n\
                     #   ACL SETUSER {} on ~app:* +@read\n",
                    users[0], users[1]
                ),
            ),
        };
        format!(
            "# rotor: least privilege in Redis for credential \"{credential_id}\" (ACL user(s) {}).\n\
             # rotor's admin user reads and changes ACL users and nothing else; it needs no key access.\n\
             # Redis cannot limit ACL SETUSER to one user: treat this user as an administrator.\n\
             {alternating}\
             ACL SETUSER {admin} on >ADMIN_PASSWORD resetkeys resetchannels -@all +ping +acl|getuser +acl|setuser{client_list}{persist}\n",
            users
                .iter()
                .map(|u| format!("\"{u}\""))
                .collect::<Vec<_>>()
                .join(" and ")
        )
    }
}

/// An ACL user as `ACL GETUSER` reports it.
struct AclUser {
    on: bool,
    /// SHA-256 of each password, lowercase hex.
    passwords: Vec<String>,
    /// Everything else that decides what the user may do (`flags`, `commands`, `keys`,
    /// `channels`, `selectors`), one comparable line each.
    rules: Vec<String>,
}

pub struct RedisAclPassword {
    config: RedisConfig,
    secrets: Secrets,
    client_info: redis::ConnectionInfo,
    /// The contents of `ca_file`, read once when the rotator is built.
    ca: Option<Vec<u8>>,
}

fn classify(error: redis::RedisError, what: &str) -> RotatorError {
    let (transient, advice) = if error.is_io_error()
        || error.is_connection_refusal()
        || error.is_timeout()
        || matches!(
            error.code(),
            Some("LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN")
        ) {
        (true, "the server is unreachable or busy; rotor retries")
    } else {
        match error.code() {
            _ if error.kind() == redis::ErrorKind::AuthenticationFailed => (
                false,
                "the server refused the login: check the user and its password",
            ),
            Some("WRONGPASS") => (
                false,
                "the server refused the login: check the user and its password",
            ),
            Some("NOPERM") => (
                false,
                "permission denied: apply the ACL rule `rotor policy ID` prints to rotor's admin user",
            ),
            Some("READONLY") => (false, "this is a replica: point `url` at the primary"),
            _ => (false, "the command failed; see the server's message"),
        }
    };
    let message = format!("{what}: {error} ({advice})");
    if transient {
        RotatorError::transient(message)
    } else {
        RotatorError::permanent(message)
    }
}

/// The SHA-256 of a password as `ACL GETUSER` reports it: lowercase hex.
fn password_hash(credential: &Credential) -> Result<String, RotatorError> {
    Ok(hex::encode(Sha256::digest(
        credential.require(PASSWORD)?.expose_secret().as_bytes(),
    )))
}

impl RedisAclPassword {
    pub fn build(config: RedisConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        let client_info = config
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| RotatorError::permanent(format!("`url` is not a Redis URL: {e}")))?;
        let ca = match &config.ca_file {
            Some(file) => Some(std::fs::read(file).map_err(|e| {
                RotatorError::permanent(format!("`ca_file` {} cannot be read: {e}", file.display()))
            })?),
            None => None,
        };
        Ok(Self {
            config,
            secrets,
            client_info,
            ca,
        })
    }

    fn timeout(&self) -> Duration {
        self.config.timeout.as_std()
    }

    async fn connect(
        &self,
        user: &str,
        password: Option<&SecretString>,
        who: &str,
    ) -> Result<MultiplexedConnection, RotatorError> {
        let mut settings = self.client_info.redis_settings().clone().set_username(user);
        if let Some(password) = password {
            settings = settings.set_password(password.expose_secret());
        }
        let info = self
            .client_info
            .clone()
            .set_redis_settings(settings.set_skip_set_lib_name());
        let what = format!("connecting to {} as {who}", self.client_info.addr());
        let client = match &self.ca {
            Some(ca) => Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            ),
            None => Client::open(info),
        }
        .map_err(|e| classify(e, &what))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout()))
            .set_response_timeout(Some(self.timeout()));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| classify(e, &what))
    }

    async fn admin(&self) -> Result<MultiplexedConnection, RotatorError> {
        let password = match &self.config.admin {
            Some(reference) => {
                Some(resolve_secret(&self.secrets, reference, "the Redis admin password").await?)
            }
            None => None,
        };
        let admin = self.config.admin_user.as_deref().unwrap_or("default");
        self.connect(admin, password.as_ref(), &format!("admin user {admin}"))
            .await
    }

    /// `user` as `ACL GETUSER` reports it; `None` when it does not exist.
    async fn user_state(
        &self,
        conn: &mut MultiplexedConnection,
        user: &str,
    ) -> Result<Option<AclUser>, RotatorError> {
        let reply: Value = redis::cmd("ACL")
            .arg("GETUSER")
            .arg(user)
            .query_async(conn)
            .await
            .map_err(|e| classify(e, &format!("reading ACL user {user}")))?;
        let fields = match reply {
            Value::Nil => return Ok(None),
            Value::Array(items) => items,
            Value::Map(pairs) => pairs.into_iter().flat_map(|(k, v)| [k, v]).collect(),
            other => {
                return Err(RotatorError::permanent(format!(
                    "reading ACL user {user}: unexpected reply {other:?}"
                )));
            }
        };
        let mut state = AclUser {
            on: false,
            passwords: Vec::new(),
            rules: Vec::new(),
        };
        for pair in fields.chunks(2) {
            if let [key, value] = pair {
                match text(key).as_str() {
                    "flags" => {
                        let flags = list(value);
                        state.on = flags.iter().any(|f| f == "on");
                        state.rules.push(format!("flags {}", flags.join(" ")));
                    }
                    "passwords" => state.passwords = list(value),
                    field => state.rules.push(format!("{field} {}", render(value))),
                }
            }
        }
        Ok(Some(state))
    }

    async fn existing_user(
        &self,
        conn: &mut MultiplexedConnection,
        user: &str,
    ) -> Result<AclUser, RotatorError> {
        self.user_state(conn, user).await?.ok_or_else(|| {
            RotatorError::permanent(format!(
                "ACL user {user} does not exist; create it with the key and command rules consumers need (rotor only manages its passwords)"
            ))
        })
    }

    /// `ACL SETUSER user <rules>` (applied together, or not at all) then the configured
    /// persistence.
    async fn set(
        &self,
        conn: &mut MultiplexedConnection,
        user: &str,
        rules: &[String],
        what: &str,
    ) -> Result<(), RotatorError> {
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(rules)
            .query_async(conn)
            .await
            .map_err(|e| classify(e, &format!("{what} of ACL user {user}")))?;
        let persist = match self.config.persist {
            Persist::None => return Ok(()),
            Persist::AclSave => redis::cmd("ACL").arg("SAVE").clone(),
            Persist::ConfigRewrite => redis::cmd("CONFIG").arg("REWRITE").clone(),
        };
        let _: () = persist.query_async(conn).await.map_err(|e| {
            classify(
                e,
                &format!("persisting the ACL change ({:?})", self.config.persist),
            )
        })?;
        Ok(())
    }

    /// Removes `credential`'s password from its user if the user holds it.
    async fn remove(&self, credential: &Credential, what: &str) -> Result<(), RotatorError> {
        let user = self.user_of(credential)?;
        let hash = password_hash(credential)?;
        let mut conn = self.admin().await?;
        let Some(state) = self.user_state(&mut conn, &user).await? else {
            return Ok(());
        };
        if state.passwords.contains(&hash) {
            self.set(&mut conn, &user, &[format!("!{hash}")], what)
                .await?;
        }
        Ok(())
    }

    /// Every password of the rotated users other than `current`'s, as (user, hash), with the
    /// admin connection.
    async fn others(
        &self,
        current: &Credential,
    ) -> Result<(MultiplexedConnection, Vec<(String, String)>), RotatorError> {
        let hash = password_hash(current)?;
        let mut conn = self.admin().await?;
        let mut others = Vec::new();
        for user in self.config.accounts() {
            if let Some(state) = self.user_state(&mut conn, user).await? {
                others.extend(
                    state
                        .passwords
                        .into_iter()
                        .filter(|p| *p != hash)
                        .map(|p| (user.to_owned(), p)),
                );
            }
        }
        Ok((conn, others))
    }

    /// The ACL user `credential` logs in as; one of the configured users, or it is refused.
    fn user_of(&self, credential: &Credential) -> Result<String, RotatorError> {
        let user = credential.require(USERNAME)?.expose_secret();
        if !self.config.accounts().any(|u| u == user) {
            return Err(RotatorError::permanent(format!(
                "the credential's ACL user {user} is not one of the configured users; was `user`/`users` changed?"
            )));
        }
        Ok(user.to_owned())
    }

    /// Whether `credential` is what consumers use now: the same password (one user holds
    /// both) or, alternating, the same user.
    fn in_use_now(
        &self,
        credential: &Credential,
        current: Option<&Credential>,
    ) -> Result<bool, RotatorError> {
        let Some(current) = current else {
            return Ok(false);
        };
        Ok(match self.config.strategy {
            Strategy::TwoPasswords => password_hash(credential)? == password_hash(current)?,
            Strategy::Alternating => self.user_of(credential)? == self.user_of(current)?,
        })
    }

    /// The user a new password goes to: the one user, or the one consumers do not use now.
    fn next_user(&self, current: Option<&Credential>) -> Result<String, RotatorError> {
        let current = current.map(|c| self.user_of(c)).transpose()?;
        let accounts: Vec<String> = self.config.accounts().map(str::to_owned).collect();
        let current = current.filter(|_| self.config.strategy == Strategy::Alternating);
        Ok(crate::alternating::partner(&accounts, current.as_deref()).to_owned())
    }
}

/// Text of a reply element: bulk or simple string.
fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    }
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        _ => Vec::new(),
    }
}

/// Any reply element as comparable text (`selectors` nest maps in arrays).
fn render(v: &Value) -> String {
    match v {
        Value::Array(items) | Value::Set(items) => {
            format!(
                "[{}]",
                items.iter().map(render).collect::<Vec<_>>().join(" ")
            )
        }
        Value::Map(pairs) => format!(
            "{{{}}}",
            pairs
                .iter()
                .map(|(k, v)| format!("{}={}", render(k), render(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Int(i) => i.to_string(),
        other => text(other),
    }
}

/// One connection of `CLIENT LIST`: its `key=value` fields. Values hold no spaces (client
/// names cannot), so a space separates fields.
fn client_fields(line: &str) -> Vec<(&str, &str)> {
    line.split(' ').filter_map(|f| f.split_once('=')).collect()
}

/// "3 connection(s) of ACL user app_b: 10.0.0.5:5100 (client billing, idle 2s); ...".
fn describe_connections(user: &str, list: &str) -> Option<String> {
    const NAMED: usize = 3;
    let connections: Vec<Vec<(&str, &str)>> = list
        .lines()
        .map(client_fields)
        .filter(|fields| fields.iter().any(|&(k, v)| k == "user" && v == user))
        .collect();
    if connections.is_empty() {
        return None;
    }
    let field = |c: &[(&str, &str)], name: &str| {
        c.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.is_empty())
    };
    let mut by: Vec<String> = connections
        .iter()
        .take(NAMED)
        .map(|c| {
            let client = field(c, "name").or_else(|| field(c, "lib-name"));
            format!(
                "{} ({}, idle {}s)",
                field(c, "addr").unwrap_or_else(|| "an unknown address".into()),
                client.map_or("no client name".to_owned(), |n| format!("client {n}")),
                field(c, "idle").unwrap_or_else(|| "?".into())
            )
        })
        .collect();
    if connections.len() > NAMED {
        by.push(format!("{} more", connections.len() - NAMED));
    }
    Some(format!(
        "{} connection(s) of ACL user {user}: {}",
        connections.len(),
        by.join("; ")
    ))
}

impl Rotator for RedisAclPassword {
    fn kind(&self) -> &'static str {
        "redis_acl_password"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        Ok(Credential::new()
            .with(
                USERNAME,
                SecretString::from(self.next_user(context.current)?),
            )
            .with(
                PASSWORD,
                random(self.config.password_length, Alphabet::Alphanumeric),
            ))
    }

    async fn apply(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let user = self.user_of(candidate)?;
        let hash = password_hash(candidate)?;
        let mut conn = self.admin().await?;
        let state = self.existing_user(&mut conn, &user).await?;
        match self.config.strategy {
            Strategy::TwoPasswords => {
                if !state.passwords.contains(&hash) {
                    self.set(
                        &mut conn,
                        &user,
                        &[format!("#{hash}")],
                        "adding the new password",
                    )
                    .await?;
                }
            }
            Strategy::Alternating => {
                if self.in_use_now(candidate, current)? {
                    return Err(RotatorError::permanent(format!(
                        "the candidate would re-password ACL user {user}, which consumers use now; the alternating strategy never does that"
                    )));
                }
                // The resting user's passwords are all replaced: it served no one since its
                // last retirement, and whatever it still holds was not issued by rotor.
                if state.passwords != [hash.clone()] {
                    self.set(
                        &mut conn,
                        &user,
                        &["resetpass".into(), format!("#{hash}")],
                        "setting the new password",
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let user = self.user_of(candidate)?;
        let mut conn = self
            .connect(
                &user,
                Some(candidate.require(PASSWORD)?),
                &format!("the new credential of ACL user {user}"),
            )
            .await?;
        let whoami: String = redis::cmd("ACL")
            .arg("WHOAMI")
            .query_async(&mut conn)
            .await
            .or_else(|e| match e.code() {
                // The user may lack ACL WHOAMI; a successful AUTH already proved the login.
                Some("NOPERM") => Ok(user.clone()),
                _ => Err(classify(e, &format!("verifying ACL user {user}"))),
            })?;
        if whoami != user {
            return Err(RotatorError::permanent(format!(
                "logged in as ACL user {user} but the server says {whoami}"
            )));
        }
        Ok(())
    }

    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        if self.in_use_now(old, current)? {
            return Err(RotatorError::permanent(format!(
                "refusing to retire the password ACL user {} uses now",
                self.user_of(old)?
            )));
        }
        self.remove(old, "removing the old password").await?;
        Ok(Retired::Done)
    }

    /// Alternating: the old user's connections open now. One user holding both passwords
    /// does not say which one a connection logged in with.
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        if self.config.strategy == Strategy::TwoPasswords {
            return Ok(Usage::Unknown);
        }
        let user = self.user_of(old)?;
        let mut conn = self.admin().await?;
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut conn)
            .await
            .map_err(|e| classify(e, &format!("listing the connections of ACL user {user}")))?;
        // An open connection counts as use now, however idle: it logged in with the old
        // password and logs in with it again when it reconnects.
        Ok(match describe_connections(&user, &list) {
            Some(by) => Usage::Seen { at: None, by },
            None => Usage::Unseen,
        })
    }

    async fn unissued(&self, current: &Credential) -> Result<usize, RotatorError> {
        Ok(self.others(current).await?.1.len())
    }

    /// Removes every password of the rotated users but `current`'s: what they had before
    /// rotor.
    async fn retire_unissued(
        &self,
        current: &Credential,
        _at_once: bool,
    ) -> Result<Retired, RotatorError> {
        let (mut conn, others) = self.others(current).await?;
        for (user, hash) in others {
            self.set(
                &mut conn,
                &user,
                &[format!("!{hash}")],
                "removing a password rotor did not issue",
            )
            .await?;
        }
        Ok(Retired::Done)
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        if self.in_use_now(candidate, current)? {
            return Ok(());
        }
        self.remove(candidate, "removing the rolled-back password")
            .await
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let mut conn = self.admin().await?;
        let mut live = Vec::new();
        for user in self.config.accounts() {
            if let Some(state) = self.user_state(&mut conn, user).await? {
                live.extend(state.passwords.iter().map(|hash| LiveCredential {
                    provider_id: format!("{user}#{}", &hash[..hash.len().min(16)]),
                    active: state.on,
                }));
            }
        }
        Ok(live)
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        let user = self.user_of(credential).ok()?;
        let hash = password_hash(credential).ok()?;
        Some(format!("{user}#{}", &hash[..16]))
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let mut conn = self.admin().await?;
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for user in self.config.accounts() {
            match self.user_state(&mut conn, user).await? {
                None => problems.push(format!(
                    "ACL user {user} does not exist; create it with the key and command rules consumers need (rotor only manages its passwords)"
                )),
                Some(state) if !state.on => problems.push(format!(
                    "ACL user {user} is disabled (`off`): consumers cannot log in with any password"
                )),
                Some(state) => seen.push((user, state.rules)),
            }
        }
        if let [(a, a_rules), (b, b_rules)] = seen.as_slice() {
            problems.extend(crate::alternating::drift(a, a_rules, b, b_rules));
        }
        if self.config.strategy == Strategy::Alternating {
            // The evidence of use: a missing `+client|list` is found now, not during grace.
            let _: String = redis::cmd("CLIENT")
                .arg("LIST")
                .arg("ID")
                .arg(0)
                .query_async(&mut conn)
                .await
                .map_err(|e| classify(e, "listing connections (CLIENT LIST)"))?;
        }
        crate::alternating::verdict(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> RedisConfig {
        toml::from_str(&format!("url = \"redis://127.0.0.1:6379\"\n{extra}")).unwrap()
    }

    #[test]
    fn the_default_user_and_literal_passwords_are_refused() {
        assert!(parse("user = \"app\"").validate().is_ok());
        let e = parse("user = \"default\"").validate().unwrap_err();
        assert!(e.contains("`default` user"), "{e}");
        let with_password: RedisConfig =
            toml::from_str("url = \"redis://rotor:hunter2@127.0.0.1:6379\"\nuser = \"app\"")
                .unwrap();
        let e = with_password.validate().unwrap_err();
        assert!(
            e.contains("contains a password") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(
            parse("user = \"app\"\nadmin_user = \"app\"")
                .validate()
                .is_err()
        );
    }

    #[test]
    fn each_strategy_names_its_users_the_way_it_needs() {
        let alternating = |users: &str| parse(&format!("strategy = \"alternating\"\n{users}"));
        assert!(
            alternating("users = [\"app_a\", \"app_b\"]")
                .validate()
                .is_ok()
        );
        for (config, expected) in [
            (alternating("user = \"app\""), "needs exactly two ACL users"),
            (alternating("users = [\"app_a\"]"), "got 1 in `users`"),
            (alternating("users = [\"a\", \"a\"]"), "must differ"),
            (
                alternating("users = [\"a\", \"default\"]"),
                "`default` user",
            ),
            (parse("users = [\"a\", \"b\"]"), "set `user`, not `users`"),
            (
                alternating("users = [\"a\", \"b\"]\nadmin_user = \"b\""),
                "`admin_user` must not be a rotated user",
            ),
        ] {
            let e = config.validate().unwrap_err();
            assert!(e.contains(expected), "{e} should say {expected}");
        }
    }

    /// `CLIENT LIST` as Redis 7.2 prints it (the 7.0 line lacks lib-name and lib-ver).
    #[test]
    fn connections_of_the_old_user_are_named_from_client_list() {
        let list = "id=3 addr=10.0.0.5:51234 laddr=10.0.0.1:6379 fd=8 name=billing-cron age=120 idle=30 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=get user=app_b redir=-1 resp=2 lib-name= lib-ver=\n\
                    id=4 addr=10.0.0.6:40000 laddr=10.0.0.1:6379 fd=9 name= age=5 idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=26 qbuf-free=20448 argv-mem=10 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=22298 events=r cmd=client|list user=rotor redir=-1 resp=2 lib-name=redis-rs lib-ver=0.32\n\
                    id=5 addr=10.0.0.7:40001 laddr=10.0.0.1:6379 fd=10 name= age=9 idle=9 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=1024 rbp=0 obl=0 oll=0 omem=0 tot-mem=1800 events=r cmd=set user=app_b redir=-1 resp=3 lib-name=jedis lib-ver=5.1\n";
        assert_eq!(
            describe_connections("app_b", list).unwrap(),
            "2 connection(s) of ACL user app_b: 10.0.0.5:51234 (client billing-cron, idle 30s); 10.0.0.7:40001 (client jedis, idle 9s)"
        );
        assert_eq!(describe_connections("app_a", list), None);
        // A user whose name is a prefix of another's is not matched by it.
        assert_eq!(describe_connections("app", list), None);
    }

    #[test]
    fn passwords_are_handled_by_their_sha256() {
        let c = Credential::new()
            .with(USERNAME, SecretString::from("app"))
            .with(PASSWORD, SecretString::from("foobar"));
        // sha256("foobar"), as `ACL GETUSER` would list it.
        assert_eq!(
            password_hash(&c).unwrap(),
            "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
    }
}
