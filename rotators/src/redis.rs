//! `redis_acl_password`: a Redis ACL user's password. One ACL user holds several passwords at
//! once, so the old and the new one both work through grace: `apply` adds the new password,
//! `retire` removes the old one.
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
    RotatorSettings, SecretRef, Secrets, resolve_secret,
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

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// The server, without credentials: `redis://redis.internal:6379` or `rediss://...` (TLS).
    pub url: String,
    /// The ACL user consumers log in as. Never `default`.
    pub user: String,
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

fn default_timeout() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(10)
}

impl Settings for RedisConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        crate::net::endpoint("url", Some(self.url.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        if self.user == "default" {
            return Err("refusing to rotate the `default` user: every connection that sends no user name logs in as it, so a rotation would lock out clients rotor does not know of; create a named ACL user for the application".into());
        }
        if self.user.is_empty() || self.user.contains(char::is_whitespace) {
            return Err("`user` must be a non-empty ACL user name without spaces".into());
        }
        if self.admin_user.as_deref() == Some(self.user.as_str()) {
            return Err("rotor's `admin_user` must not be the rotated `user`".into());
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

impl RotatorSettings for RedisConfig {
    fn least_privilege(&self, credential_id: &str) -> String {
        let admin = self.admin_user.as_deref().unwrap_or("default");
        let persist = match self.persist {
            Persist::None => "",
            Persist::AclSave => " +acl|save",
            Persist::ConfigRewrite => " +config|rewrite",
        };
        format!(
            "# rotor: least privilege in Redis for credential \"{credential_id}\" (ACL user \"{}\").\n\
             # rotor's admin user reads and changes ACL users and nothing else; it needs no key access.\n\
             # Redis cannot limit ACL SETUSER to one user: treat this user as an administrator.\n\
             ACL SETUSER {admin} on >ADMIN_PASSWORD resetkeys resetchannels -@all +ping +acl|getuser +acl|setuser{persist}\n",
            self.user
        )
    }
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

    /// The password hashes the rotated user holds now, and whether it is enabled; `None` when
    /// the user does not exist.
    async fn user_state(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<Option<(bool, Vec<String>)>, RotatorError> {
        let user = &self.config.user;
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
        let text = |v: &Value| match v {
            Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            Value::SimpleString(s) => s.clone(),
            _ => String::new(),
        };
        let list = |v: &Value| match v {
            Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
            _ => Vec::new(),
        };
        let (mut on, mut passwords) = (false, Vec::new());
        for pair in fields.chunks(2) {
            if let [key, value] = pair {
                match text(key).as_str() {
                    "flags" => on = list(value).iter().any(|f| f == "on"),
                    "passwords" => passwords = list(value),
                    _ => {}
                }
            }
        }
        Ok(Some((on, passwords)))
    }

    async fn existing_user(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(bool, Vec<String>), RotatorError> {
        self.user_state(conn).await?.ok_or_else(|| {
            RotatorError::permanent(format!(
                "ACL user {} does not exist; create it with the key and command rules consumers need (rotor only manages its passwords)",
                self.config.user
            ))
        })
    }

    /// `ACL SETUSER user <rule>` then the configured persistence.
    async fn set(
        &self,
        conn: &mut MultiplexedConnection,
        rule: String,
        what: &str,
    ) -> Result<(), RotatorError> {
        let user = &self.config.user;
        let _: () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(user)
            .arg(rule)
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

    /// Removes `credential`'s password from the user if it holds it.
    async fn remove(&self, credential: &Credential, what: &str) -> Result<(), RotatorError> {
        let hash = password_hash(credential)?;
        let mut conn = self.admin().await?;
        let Some((_, passwords)) = self.user_state(&mut conn).await? else {
            return Ok(());
        };
        if passwords.contains(&hash) {
            self.set(&mut conn, format!("!{hash}"), what).await?;
        }
        Ok(())
    }

    /// The password hashes of the user other than `current`'s, with the admin connection.
    async fn others(
        &self,
        current: &Credential,
    ) -> Result<(MultiplexedConnection, Vec<String>), RotatorError> {
        let hash = password_hash(current)?;
        let mut conn = self.admin().await?;
        let passwords = match self.user_state(&mut conn).await? {
            Some((_, passwords)) => passwords,
            None => Vec::new(),
        };
        let others = passwords.into_iter().filter(|p| *p != hash).collect();
        Ok((conn, others))
    }

    fn same_password(a: &Credential, b: Option<&Credential>) -> Result<bool, RotatorError> {
        match b {
            Some(b) => Ok(password_hash(a)? == password_hash(b)?),
            None => Ok(false),
        }
    }
}

impl Rotator for RedisAclPassword {
    fn kind(&self) -> &'static str {
        "redis_acl_password"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, _context: MintContext<'_>) -> Result<Credential, RotatorError> {
        Ok(Credential::new()
            .with(USERNAME, SecretString::from(self.config.user.clone()))
            .with(
                PASSWORD,
                random(self.config.password_length, Alphabet::Alphanumeric),
            ))
    }

    async fn apply(
        &self,
        candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let hash = password_hash(candidate)?;
        let mut conn = self.admin().await?;
        let (_, passwords) = self.existing_user(&mut conn).await?;
        if !passwords.contains(&hash) {
            self.set(&mut conn, format!("#{hash}"), "adding the new password")
                .await?;
        }
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let user = candidate.require(USERNAME)?.expose_secret().to_owned();
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
        if Self::same_password(old, current)? {
            return Err(RotatorError::permanent(format!(
                "refusing to retire the password ACL user {} uses now",
                self.config.user
            )));
        }
        self.remove(old, "removing the old password").await?;
        Ok(Retired::Done)
    }

    async fn unissued(&self, current: &Credential) -> Result<usize, RotatorError> {
        Ok(self.others(current).await?.1.len())
    }

    /// Removes every password of the user but `current`'s: what it had before rotor.
    async fn retire_unissued(
        &self,
        current: &Credential,
        _at_once: bool,
    ) -> Result<Retired, RotatorError> {
        let (mut conn, others) = self.others(current).await?;
        for hash in others {
            self.set(
                &mut conn,
                format!("!{hash}"),
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
        if Self::same_password(candidate, current)? {
            return Ok(());
        }
        self.remove(candidate, "removing the rolled-back password")
            .await
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let mut conn = self.admin().await?;
        let Some((on, passwords)) = self.user_state(&mut conn).await? else {
            return Ok(Vec::new());
        };
        Ok(passwords
            .iter()
            .map(|hash| LiveCredential {
                provider_id: format!("{}#{}", self.config.user, &hash[..hash.len().min(16)]),
                active: on,
            })
            .collect())
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        let hash = password_hash(credential).ok()?;
        Some(format!("{}#{}", self.config.user, &hash[..16]))
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let mut conn = self.admin().await?;
        let (on, _) = self.existing_user(&mut conn).await?;
        if !on {
            return Err(RotatorError::permanent(format!(
                "ACL user {} is disabled (`off`): consumers cannot log in with any password",
                self.config.user
            )));
        }
        Ok(())
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
