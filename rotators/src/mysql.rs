//! `mysql_password`: a MariaDB account's password.
//!
//! `alternating` (the dual-credential strategy): two accounts with the same grants take turns;
//! each rotation gives the account consumers do *not* use a new password, so the old login
//! keeps working through grace, and retirement locks the old account (`ACCOUNT LOCK`) and
//! gives it a password nobody knows. `single`: one account's password is replaced in place;
//! consumers holding the old password fail until they read the new one.
//!
//! The password is hashed here into the `mysql_native_password` form the server stores
//! (`*` and the hex of SHA1(SHA1(password))) and set with `IDENTIFIED BY PASSWORD`, so the
//! plaintext never reaches the server, its general log or its binary log.
//!
//! MariaDB only: MySQL 8 removed `IDENTIFIED BY PASSWORD` and logs in with
//! `caching_sha2_password` by default; preflight says so instead of failing at `apply`.
//! MySQL 8's dual passwords (`RETAIN CURRENT PASSWORD`) are not offered: no MySQL server
//! could be run in the tests here.

use crate::kinds::Settings;
use std::str::FromStr;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use sqlx::mysql::{MySqlConnectOptions, MySqlConnection};
use sqlx::{ConnectOptions, Connection};
use zeroize::Zeroizing;

use crate::password::{Alphabet, random};
use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, Usage, resolve_secret,
};

/// The vault document's fields.
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Two accounts take turns; the old password keeps working through grace.
    #[default]
    Alternating,
    /// One account; its password is replaced in place (no overlap: prefer `alternating`).
    Single,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MysqlConfig {
    /// `alternating` (two accounts in `users`) or `single` (one account).
    #[serde(default)]
    pub strategy: Strategy,
    /// The user names consumers log in as: two for `alternating`, one for `single`.
    pub users: Vec<String>,
    /// The host part of the accounts (`'app_a'@'%'`): where consumers connect from.
    #[serde(default = "default_host")]
    pub host: String,
    /// Where rotor connects as its admin account, without a password:
    /// `mysql://rotor_admin@db.internal:3306/app?ssl-mode=verify_identity`. Consumers'
    /// logins are verified against the same server and database.
    pub dsn: String,
    /// The admin account's password (a secret reference); omit when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SecretRef>,
    /// Run as the new credential after it logs in, so lost privileges fail the rotation
    /// before consumers see it: `SELECT 1 FROM app.orders LIMIT 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_query: Option<String>,
    /// Length of the generated password (alphanumeric, 16 to 80 characters).
    #[serde(default = "default_length")]
    pub password_length: usize,
    /// How long a connection attempt may take before the step counts as a transient failure.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: crate::duration::Duration,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

fn default_host() -> String {
    "%".into()
}

fn default_length() -> usize {
    32
}

fn default_connect_timeout() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(10)
}

/// Names that go into statements as quoted literals: letters, digits and `_ . -` (and `%` in
/// a host pattern), so that no value needs escaping beyond its quotes.
fn plain(name: &str, host: bool) -> bool {
    !name.is_empty()
        && name.len() <= 80
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c) || (host && "%:".contains(c)))
}

impl Settings for MysqlConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        crate::net::endpoint("dsn", Some(self.dsn.as_str()), self.insecure_transport)
    }

    fn validate(&self) -> Result<(), String> {
        let wanted = match self.strategy {
            Strategy::Alternating => 2,
            Strategy::Single => 1,
        };
        if self.users.len() != wanted {
            return Err(format!(
                "strategy {:?} needs exactly {wanted} user(s) in `users`, got {}",
                self.strategy,
                self.users.len()
            )
            .to_lowercase());
        }
        if let Some(user) = self.users.iter().find(|u| !plain(u, false)) {
            return Err(format!(
                "user name {user:?} in `users`: use letters, digits, `_`, `.` and `-` (at most 80)"
            ));
        }
        if !plain(&self.host, true) {
            return Err(format!(
                "`host` {:?}: use a host name, an address or a pattern with `%`",
                self.host
            ));
        }
        if wanted == 2 && self.users[0] == self.users[1] {
            return Err("the two alternating users must differ".into());
        }
        if !(16..=80).contains(&self.password_length) {
            return Err(format!(
                "password_length must be between 16 and 80, got {}",
                self.password_length
            ));
        }
        if !(self.dsn.starts_with("mysql://") || self.dsn.starts_with("mariadb://")) {
            return Err("`dsn` must be a mysql:// URL: mysql://rotor_admin@host:3306/db".into());
        }
        let options = MySqlConnectOptions::from_str(&self.dsn)
            .map_err(|e| format!("`dsn` is not a MySQL URL: {e}"))?;
        let admin = options.get_username();
        if admin.is_empty() {
            return Err("`dsn` names no user: write the admin as mysql://USER@host/db".into());
        }
        if crate::secret_ref::url_has_password(&self.dsn) {
            return Err("`dsn` contains a password; a config file holds no secrets: remove it and set `admin = { env = \"NAME\" }` (or { file = ... } or { vault = ... })".into());
        }
        if self.users.iter().any(|u| u == admin) {
            return Err("the admin user in `dsn` must not be one of the rotated `users`".into());
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.admin.iter().collect()
    }
}

impl RotatorSettings for MysqlConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "a login as the new credential, `CURRENT_USER()` is its account, and `verify_query` runs as it",
            cannot: "that each client's host matches the account's `host` (rotor logs in from where it runs)",
        }
    }

    fn usage_evidence(&self) -> Option<&'static str> {
        (self.strategy == Strategy::Alternating).then_some(
            "the old account's connections in information_schema.PROCESSLIST (address, database, idle time)",
        )
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        let admin = MySqlConnectOptions::from_str(&self.dsn)
            .map(|o| o.get_username().to_owned())
            .unwrap_or_else(|_| "rotor_admin".into());
        let mut sql = format!(
            "-- rotor: least privilege in MariaDB for credential \"{credential_id}\".\n\
             -- rotor's admin account changes passwords (CREATE USER covers ALTER USER) and reads\n\
             -- the accounts and grants (mysql.*); it needs no access to the application's data.\n\
             CREATE USER '{admin}'@'%' IDENTIFIED BY 'ADMIN_PASSWORD';\n\
             GRANT CREATE USER ON *.* TO '{admin}'@'%';\n\
             GRANT SELECT ON mysql.* TO '{admin}'@'%';\n"
        );
        if self.strategy == Strategy::Alternating {
            sql.push_str(&format!(
                "-- Retiring by evidence (`retire_when = \"unused\"`) reads the old account's\n\
                 -- connections in information_schema.PROCESSLIST, which shows other accounts' with:\n\
                 GRANT PROCESS ON *.* TO '{admin}'@'%';\n\
                 -- The alternating accounts must hold the same grants; grant through a role so\n\
                 -- they cannot drift (`rotor validate --online` reports any difference):\n"
            ));
            for user in &self.users {
                sql.push_str(&format!("-- GRANT app_role TO '{user}'@'{}';\n", self.host));
            }
        }
        sql
    }
}

/// The `mysql_native_password` hash the server stores for `password`: `*` and the uppercase
/// hex of SHA1(SHA1(password)), as `PASSWORD()` computes it.
pub fn native_password_hash(password: &SecretString) -> Zeroizing<String> {
    let stage1 = Zeroizing::new(<[u8; 20]>::from(Sha1::digest(
        password.expose_secret().as_bytes(),
    )));
    let stage2 = Sha1::digest(stage1.as_ref());
    Zeroizing::new(format!("*{}", hex::encode_upper(stage2)))
}

pub struct MysqlPassword {
    config: MysqlConfig,
    secrets: Secrets,
    /// `dsn`: where consumers' logins are verified.
    options: MySqlConnectOptions,
    /// `dsn` without its database: the admin account needs no access to the application's.
    admin_options: MySqlConnectOptions,
}

/// What a failed statement or connection means for the engine.
fn classify(error: sqlx::Error, what: &str) -> RotatorError {
    let (transient, advice) = match &error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // ER_ACCESS_DENIED_ERROR, ER_ACCOUNT_HAS_BEEN_LOCKED (SQLSTATE 28000, HY000)
            _ if matches!(
                db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number()),
                Some(1045 | 3118 | 4151)
            ) =>
            {
                (
                    false,
                    "the server refused the login: check the account and its password",
                )
            }
            // ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR
            _ if matches!(
                db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number()),
                Some(1227 | 1044 | 1142 | 1143)
            ) =>
            {
                (
                    false,
                    "permission denied: grant the account named what it needs (rotor's admin account: what `rotor policy ID` prints)",
                )
            }
            // ER_CANNOT_USER (ALTER USER of an account that does not exist), ER_NONEXISTING_GRANT
            _ if matches!(
                db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number()),
                Some(1396 | 1141)
            ) =>
            {
                (
                    false,
                    "the account does not exist: create it (with the same grants as its partner) or fix `users` and `host`",
                )
            }
            // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_LOCK_WAIT_TIMEOUT, ER_LOCK_DEADLOCK
            _ if matches!(
                db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                    .map(|e| e.number()),
                Some(1040 | 1053 | 1205 | 1213)
            ) =>
            {
                (true, "the server is unavailable or busy; rotor retries")
            }
            _ => (false, "the statement failed; see the server's message"),
        },
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => (
            true,
            "the server's TLS certificate was refused: give the CA that signs it as ssl-ca in `dsn`, or find out what answers in the server's place; rotor retries",
        ),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => {
            (true, "the server is unreachable; rotor retries")
        }
        sqlx::Error::Tls(_) => (
            false,
            "the TLS handshake failed: check ssl-mode, the server certificate and ssl-ca in `dsn`",
        ),
        _ => (true, "rotor retries"),
    };
    let message = format!("{what}: {error} ({advice})");
    let e = if transient {
        RotatorError::transient(message)
    } else {
        RotatorError::permanent(message)
    };
    e.with_source(error)
}

fn username(credential: &Credential) -> Result<String, RotatorError> {
    Ok(credential.require(USERNAME)?.expose_secret().to_owned())
}

/// An account as `SHOW CREATE USER` tells it: its password hash and whether it is locked.
struct Account {
    hash: Option<Zeroizing<String>>,
    locked: bool,
}

impl MysqlPassword {
    pub fn build(config: MysqlConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        let parse = |dsn: &str| {
            MySqlConnectOptions::from_str(dsn)
                .map(|o| o.disable_statement_logging())
                .map_err(|e| RotatorError::permanent(format!("`dsn` is not a MySQL URL: {e}")))
        };
        let options = parse(&config.dsn)?;
        let mut admin = reqwest::Url::parse(&config.dsn)
            .map_err(|e| RotatorError::permanent(format!("`dsn` is not a URL: {e}")))?;
        admin.set_path("");
        let admin_options = parse(admin.as_str())?;
        Ok(Self {
            config,
            secrets,
            options,
            admin_options,
        })
    }

    /// `'user'@'host'`; both were checked to need no escaping.
    fn account(&self, user: &str) -> String {
        format!("'{user}'@'{}'", self.config.host)
    }

    async fn connect(
        &self,
        options: MySqlConnectOptions,
        who: &str,
    ) -> Result<MySqlConnection, RotatorError> {
        let what = format!(
            "connecting to {}:{} as {who}",
            self.admin_options.get_host(),
            self.admin_options.get_port()
        );
        match tokio::time::timeout(self.config.connect_timeout.as_std(), options.connect()).await {
            Ok(result) => result.map_err(|e| classify(e, &what)),
            Err(_) => Err(RotatorError::transient(format!(
                "{what}: no answer within {}; rotor retries",
                self.config.connect_timeout
            ))),
        }
    }

    async fn admin(&self) -> Result<MySqlConnection, RotatorError> {
        let mut options = self.admin_options.clone();
        if let Some(reference) = &self.config.admin {
            let password =
                resolve_secret(&self.secrets, reference, "the MariaDB admin password").await?;
            options = options.password(password.expose_secret());
        }
        let admin = self.options.get_username().to_owned();
        self.connect(options, &format!("admin account {admin}"))
            .await
    }

    /// Gives `user` the password `password` (as its hash: the plaintext never leaves rotor)
    /// and unlocks or locks the account, in one statement.
    async fn alter_user(
        &self,
        user: &str,
        password: &SecretString,
        lock: bool,
    ) -> Result<(), RotatorError> {
        let mut conn = self.admin().await?;
        let hash = native_password_hash(password);
        let (state, what) = if lock {
            ("LOCK", "locking")
        } else {
            ("UNLOCK", "setting the password of")
        };
        // The statement holds the hash: zeroized once sent.
        let statement = Zeroizing::new(format!(
            "ALTER USER {} IDENTIFIED BY PASSWORD '{}' ACCOUNT {state}",
            self.account(user),
            hash.as_str()
        ));
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(&mut conn)
            .await
            .map_err(|e| classify(e, &format!("{what} {}", self.account(user))))?;
        conn.close().await.ok();
        Ok(())
    }

    /// Gives `user` the password `password` and unlocks it.
    async fn set_password(&self, user: &str, password: &SecretString) -> Result<(), RotatorError> {
        self.alter_user(user, password, false).await
    }

    /// Locks `user` and gives it a password nobody knows (a fresh random one, discarded): the
    /// old password no longer logs in, and neither does anything else.
    async fn lock(&self, user: &str) -> Result<(), RotatorError> {
        self.alter_user(user, &random(40, Alphabet::Alphanumeric), true)
            .await
    }

    /// `user`'s account, or `None` when it does not exist.
    async fn show_account(
        &self,
        conn: &mut MySqlConnection,
        user: &str,
    ) -> Result<Option<Account>, RotatorError> {
        let exists: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM mysql.user WHERE User = ? AND Host = ?")
                .bind(user)
                .bind(&self.config.host)
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify(e, "reading mysql.user"))?;
        if exists == 0 {
            return Ok(None);
        }
        let account = self.account(user);
        let create: String =
            sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SHOW CREATE USER {account}")))
                .fetch_one(&mut *conn)
                .await
                .map_err(|e| classify(e, &format!("reading {account}")))?;
        let create = Zeroizing::new(create);
        let hash = create
            .split_once("IDENTIFIED BY PASSWORD '")
            .and_then(|(_, rest)| rest.split_once('\''))
            .map(|(hash, _)| Zeroizing::new(hash.to_owned()));
        Ok(Some(Account {
            hash,
            locked: create.contains("ACCOUNT LOCK"),
        }))
    }

    /// `user`'s grants, with its own name and any password hash taken out, so that two
    /// accounts' grants compare.
    async fn grants(
        &self,
        conn: &mut MySqlConnection,
        user: &str,
    ) -> Result<Vec<String>, RotatorError> {
        let account = self.account(user);
        let rows: Vec<(String,)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!("SHOW GRANTS FOR {account}")))
                .fetch_all(&mut *conn)
                .await
                .map_err(|e| classify(e, &format!("reading the grants of {account}")))?;
        let me = format!("`{user}`@`{}`", self.config.host);
        let mut lines: Vec<String> = rows
            .into_iter()
            .map(|(line,)| {
                let line = Zeroizing::new(line);
                let line = match line.split_once(" IDENTIFIED BY PASSWORD '") {
                    Some((before, rest)) => format!(
                        "{before}{}",
                        rest.split_once('\'').map_or("", |(_, after)| after)
                    ),
                    None => line.to_string(),
                };
                line.replace(&me, "ACCOUNT")
            })
            .collect();
        lines.sort();
        Ok(lines)
    }

    fn alternate(&self, current: Option<&Credential>) -> Result<String, RotatorError> {
        let current = current.map(username).transpose()?;
        Ok(crate::alternating::partner(&self.config.users, current.as_deref()).to_owned())
    }
}

impl Rotator for MysqlPassword {
    fn kind(&self) -> &'static str {
        "mysql_password"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        let user = self.alternate(context.current)?;
        Ok(Credential::new()
            .with(USERNAME, SecretString::from(user))
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
        let user = username(candidate)?;
        if self.config.strategy == Strategy::Alternating
            && current.map(username).transpose()?.as_deref() == Some(user.as_str())
        {
            return Err(RotatorError::permanent(format!(
                "the candidate would re-password {}, which consumers use now; the alternating strategy never does that",
                self.account(&user)
            )));
        }
        self.set_password(&user, candidate.require(PASSWORD)?).await
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let user = username(candidate)?;
        let options = self
            .options
            .clone()
            .username(&user)
            .password(candidate.require(PASSWORD)?.expose_secret());
        let mut conn = self
            .connect(
                options,
                &format!("the new credential of {}", self.account(&user)),
            )
            .await?;
        let who: String = sqlx::query_scalar("SELECT CURRENT_USER()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| classify(e, &format!("verifying {}", self.account(&user))))?;
        if who.rsplit_once('@').map(|(u, _)| u) != Some(user.as_str()) {
            return Err(RotatorError::permanent(format!(
                "logged in as {user} but the server took the login as {who}: an account with another host (or an anonymous one) matches first; check `host`"
            )));
        }
        if let Some(query) = &self.config.verify_query {
            sqlx::raw_sql(sqlx::AssertSqlSafe(query.as_str()))
                .execute(&mut conn)
                .await
                .map_err(|e| {
                    crate::alternating::as_drift(classify(
                        e,
                        &format!("running verify_query as {user}"),
                    ))
                })?;
        }
        conn.close().await.ok();
        Ok(())
    }

    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        if self.config.strategy == Strategy::Single {
            // The new password replaced the old one when it was applied.
            return Ok(Retired::Done);
        }
        let user = username(old)?;
        if current.map(username).transpose()?.as_deref() == Some(user.as_str()) {
            return Err(RotatorError::permanent(format!(
                "refusing to retire {}: it holds the current credential",
                self.account(&user)
            )));
        }
        self.lock(&user).await?;
        Ok(Retired::Done)
    }

    /// The old account's connections open now (alternating: the old credential is an account
    /// of its own). In place, one account holds the new password: no connection says which it
    /// logged in with.
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        if self.config.strategy == Strategy::Single {
            return Ok(Usage::Unknown);
        }
        let user = username(old)?;
        let mut conn = self.admin().await?;
        // Other accounts' connections show only with PROCESS (`rotor policy`).
        let sessions: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT HOST, DB, CAST(TIME AS SIGNED) FROM information_schema.PROCESSLIST \
             WHERE USER = ? AND ID <> CONNECTION_ID() ORDER BY TIME DESC",
        )
        .bind(&user)
        .fetch_all(&mut conn)
        .await
        .map_err(|e| {
            classify(
                e,
                &format!("reading the connections of {}", self.account(&user)),
            )
        })?;
        conn.close().await.ok();
        if sessions.is_empty() {
            return Ok(Usage::Unseen);
        }
        const NAMED: usize = 3;
        let mut by: Vec<String> = sessions
            .iter()
            .take(NAMED)
            .map(|(host, db, idle)| {
                format!(
                    "{host} ({}, idle {idle}s)",
                    db.as_deref()
                        .map_or("no database".to_owned(), |d| format!("database {d}"))
                )
            })
            .collect();
        if sessions.len() > NAMED {
            by.push(format!("{} more", sessions.len() - NAMED));
        }
        Ok(Usage::Seen {
            at: None,
            by: format!(
                "{} connection(s) of {}: {}",
                sessions.len(),
                self.account(&user),
                by.join("; ")
            ),
        })
    }

    /// Whether the partner account of an alternating pair still logs in with a password set
    /// before rotor is not counted (its hash says nothing of who knows it), so the first
    /// version keeps no grace, and `retire_unissued` locks the partner when it completes.
    async fn unissued(&self, _current: &Credential) -> Result<usize, RotatorError> {
        Ok(0)
    }

    /// Locks the partner account (already locked is success).
    async fn retire_unissued(
        &self,
        current: &Credential,
        _at_once: bool,
    ) -> Result<Retired, RotatorError> {
        if self.config.strategy == Strategy::Alternating {
            let partner = self.alternate(Some(current))?;
            self.lock(&partner).await?;
        }
        Ok(Retired::Done)
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let user = username(candidate)?;
        match (self.config.strategy, current) {
            // In place: put the current password back so its consumers work again.
            (Strategy::Single, Some(current)) => {
                self.set_password(&user, current.require(PASSWORD)?).await
            }
            (Strategy::Alternating, Some(current)) if username(current)? == user => Ok(()),
            // The candidate's account served no one: lock it.
            _ => self.lock(&user).await,
        }
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let mut conn = self.admin().await?;
        let mut live = Vec::new();
        for user in &self.config.users {
            if let Some(account) = self.show_account(&mut conn, user).await? {
                live.push(LiveCredential {
                    provider_id: self.account(user),
                    active: !account.locked && account.hash.is_some(),
                });
            }
        }
        conn.close().await.ok();
        Ok(live)
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        username(credential).ok().map(|u| self.account(&u))
    }

    fn apply_disturbs_current(&self) -> bool {
        self.config.strategy == Strategy::Single
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let mut conn = self.admin().await?;
        let version: String = sqlx::query_scalar("SELECT VERSION()")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| classify(e, "reading the server's version"))?;
        if !version.contains("MariaDB") {
            return Err(RotatorError::permanent(format!(
                "the server is {version}, not MariaDB: mysql_password sets passwords with MariaDB's `IDENTIFIED BY PASSWORD`, which MySQL 8 removed; MySQL is not supported yet"
            )));
        }
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for user in &self.config.users {
            match self.show_account(&mut conn, user).await? {
                None => problems.push(format!("{} does not exist", self.account(user))),
                Some(_) => seen.push((user, self.grants(&mut conn, user).await?)),
            }
        }
        if let [(a, a_lines), (b, b_lines)] = seen.as_slice() {
            problems.extend(crate::alternating::drift(a, a_lines, b, b_lines));
        }
        let own: Vec<(String,)> = sqlx::query_as("SHOW GRANTS")
            .fetch_all(&mut conn)
            .await
            .map_err(|e| classify(e, "reading the admin account's grants"))?;
        let may = own.iter().any(|(g,)| {
            g.starts_with("GRANT ALL PRIVILEGES ON *.*")
                || (g.contains("CREATE USER") && g.contains(" ON *.* "))
        });
        if !may {
            problems.push(format!(
                "admin account {} lacks CREATE USER ON *.* and cannot change passwords",
                self.options.get_username()
            ));
        }
        conn.close().await.ok();
        crate::alternating::verdict(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> MysqlConfig {
        toml::from_str(&format!(
            "dsn = \"mysql://rotor_admin@127.0.0.1:3306/app\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn the_native_password_hash_matches_the_servers_password_function() {
        // SELECT PASSWORD('password') on MariaDB 10.11.
        assert_eq!(
            native_password_hash(&SecretString::from("password")).as_str(),
            "*2470C0C06DEE42FD1618BB99005ADCA2EC9D1E19"
        );
    }

    #[test]
    fn config_errors_are_specific() {
        assert!(parse("users = [\"a\", \"b\"]").validate().is_ok());
        for (extra, expected) in [
            ("users = [\"a\"]", "needs exactly 2 user(s)"),
            ("users = [\"a\", \"a\"]", "must differ"),
            ("users = [\"a'b\", \"c\"]", "use letters, digits"),
            ("users = [\"a\", \"b\"]\nhost = \"x' OR 1\"", "`host`"),
            (
                "users = [\"rotor_admin\", \"b\"]",
                "must not be one of the rotated",
            ),
            (
                "strategy = \"single\"\nusers = [\"a\", \"b\"]",
                "needs exactly 1",
            ),
        ] {
            let e = parse(extra).validate().unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        let with_password: MysqlConfig =
            toml::from_str("dsn = \"mysql://rotor_admin:hunter2@db/app\"\nusers = [\"a\", \"b\"]")
                .unwrap();
        let e = with_password.validate().unwrap_err();
        assert!(
            e.contains("contains a password") && !e.contains("hunter2"),
            "{e}"
        );
    }
}
