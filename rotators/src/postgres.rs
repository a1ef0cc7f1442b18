//! `postgres_password`: a PostgreSQL login role's password.
//!
//! `alternating` (the dual-credential strategy): two roles with the same grants take turns; each
//! rotation gives the role consumers do *not* use a new password, so the old login keeps working
//! through grace, and retirement removes the old role's password. `single`: one role's password
//! is replaced in place; consumers holding the old password fail until they read the new one.
//!
//! The password is hashed into a SCRAM-SHA-256 verifier here, as `psql`'s `\password` does, so
//! the plaintext never reaches the server (nor its statement log or `pg_stat_statements`).

use crate::kinds::Settings;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Row};
use zeroize::Zeroizing;

use crate::password::{Alphabet, random, random_bytes};
use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, Usage, resolve_secret,
};

/// The vault document's fields.
pub const USERNAME: &str = "username";
pub const PASSWORD: &str = "password";

/// PostgreSQL's default `scram_iterations`.
const SCRAM_ITERATIONS: u32 = 4096;

#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Two roles take turns; the old password keeps working through grace.
    #[default]
    Alternating,
    /// One role; its password is replaced in place (no overlap: prefer `alternating`).
    Single,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `alternating` (two roles in `users`) or `single` (one role).
    #[serde(default)]
    pub strategy: Strategy,
    /// The login roles consumers use: two for `alternating`, one for `single`.
    pub users: Vec<String>,
    /// Where rotor connects as its admin role, without a password:
    /// `postgres://rotor_admin@db.internal:5432/app?sslmode=verify-full`. Consumers' logins
    /// are verified against the same host and database.
    pub dsn: String,
    /// The admin role's password (a secret reference); omit when the server does not ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<SecretRef>,
    /// Run as the new credential after it logs in, so lost privileges fail the rotation
    /// before consumers see it: `SELECT 1 FROM app.orders LIMIT 1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_query: Option<String>,
    /// Length of the generated password (alphanumeric, 16 to 99 characters).
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

fn default_length() -> usize {
    32
}

fn default_connect_timeout() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(10)
}

impl Settings for PostgresConfig {
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
                "strategy {:?} needs exactly {wanted} role(s) in `users`, got {}",
                self.strategy,
                self.users.len()
            )
            .to_lowercase());
        }
        if self.users.iter().any(|u| u.is_empty()) {
            return Err("`users` holds an empty role name".into());
        }
        if wanted == 2 && self.users[0] == self.users[1] {
            return Err("the two alternating roles must differ".into());
        }
        if !(16..=99).contains(&self.password_length) {
            return Err(format!(
                "password_length must be between 16 and 99, got {}",
                self.password_length
            ));
        }
        let options = PgConnectOptions::from_str(&self.dsn)
            .map_err(|e| format!("`dsn` is not a PostgreSQL URL: {e}"))?;
        if options.get_username().is_empty() {
            return Err(
                "`dsn` names no user: write the admin role as postgres://ROLE@host/db".into(),
            );
        }
        if crate::secret_ref::url_has_password(&self.dsn) {
            return Err("`dsn` contains a password; a config file holds no secrets: remove it and set `admin = { env = \"NAME\" }` (or { file = ... } or { vault = ... })".into());
        }
        if self.users.iter().any(|u| u == options.get_username()) {
            return Err("the admin role in `dsn` must not be one of the rotated `users`".into());
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.admin.iter().collect()
    }
}

impl RotatorSettings for PostgresConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "a login as the new credential, `current_user` is its role, and `verify_query` runs as it",
            cannot: "that each client's `pg_hba.conf` path (its host, its TLS) admits it",
        }
    }

    fn usage_evidence(&self) -> Option<&'static str> {
        (self.strategy == Strategy::Alternating)
            .then_some("the old role's sessions in pg_stat_activity (address, application, start)")
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        let admin = PgConnectOptions::from_str(&self.dsn)
            .map(|o| o.get_username().to_owned())
            .unwrap_or_else(|_| "rotor_admin".into());
        let admin = quote_ident(&admin);
        let mut sql = format!(
            "-- rotor: least privilege in PostgreSQL for credential \"{credential_id}\".\n\
             -- rotor's admin role changes passwords and reads the catalog; it needs no superuser\n\
             -- and no access to the application's data.\n\
             CREATE ROLE {admin} LOGIN CREATEROLE;\n\
             -- PostgreSQL 16 and later: CREATEROLE only covers roles the admin holds ADMIN OPTION on.\n"
        );
        for user in &self.users {
            sql.push_str(&format!(
                "GRANT {} TO {admin} WITH ADMIN OPTION, INHERIT FALSE, SET FALSE;  -- PostgreSQL 16+\n",
                quote_ident(user)
            ));
        }
        if self.strategy == Strategy::Alternating {
            sql.push_str(&format!(
                "-- Retiring by evidence (`retire_when = \"unused\"`) reads the old role's sessions in\n\
                 -- pg_stat_activity; to name their address and application as well:\n\
                 GRANT pg_read_all_stats TO {admin};\n"
            ));
            sql.push_str(
                "-- The alternating roles must hold the same grants; grant through a group role so\n\
                 -- they cannot drift (`rotor validate --online` reports any difference):\n",
            );
            for user in &self.users {
                sql.push_str(&format!("-- GRANT app_group TO {};\n", quote_ident(user)));
            }
        }
        sql
    }
}

/// `"name"` with inner quotes doubled, for identifiers that cannot be bound as parameters.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677), with a
/// fresh random salt.
pub fn scram_verifier(password: &SecretString) -> Zeroizing<String> {
    let salt = random_bytes::<16>();
    scram_verifier_with(
        password.expose_secret().as_bytes(),
        salt.as_ref(),
        SCRAM_ITERATIONS,
    )
}

fn scram_verifier_with(password: &[u8], salt: &[u8], iterations: u32) -> Zeroizing<String> {
    type HmacSha256 = Hmac<Sha256>;
    // SaltedPassword = Hi(password, salt, i) of RFC 5802: PBKDF2-HMAC-SHA256, one block. The
    // passwords rotor generates are ASCII, for which SASLprep changes nothing.
    // postgres-protocol's `scram_sha_256` would do this whole function, but copies the
    // password into a buffer it does not zeroize and picks its own salt (so the RFC 7677
    // vector below could not check it).
    let mut salted = Zeroizing::new([0u8; 32]);
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, salted.as_mut());
    let key = |label: &[u8]| {
        let mut mac =
            <HmacSha256 as KeyInit>::new_from_slice(salted.as_ref()).expect("HMAC takes any key");
        mac.update(label);
        Zeroizing::new(<[u8; 32]>::from(mac.finalize().into_bytes()))
    };
    let client_key = key(b"Client Key");
    let stored_key = Sha256::digest(client_key.as_ref());
    let server_key = key(b"Server Key");
    Zeroizing::new(format!(
        "SCRAM-SHA-256${iterations}:{}${}:{}",
        BASE64.encode(salt),
        BASE64.encode(stored_key),
        BASE64.encode(server_key.as_ref())
    ))
}

pub struct PostgresPassword {
    config: PostgresConfig,
    secrets: Secrets,
    options: PgConnectOptions,
}

/// What a failed statement or connection means for the engine.
fn classify(error: sqlx::Error, what: &str) -> RotatorError {
    let advice = match &error {
        sqlx::Error::Database(db) => match db.code().as_deref() {
            // invalid_password, invalid_authorization_specification
            Some("28P01") | Some("28000") => Some((
                false,
                "the server refused the login: check the role and its password",
            )),
            Some("42501") => Some((
                false,
                "permission denied: grant what `rotor policy ID` prints to the role named",
            )),
            Some("42704") => Some((
                false,
                "the role does not exist: create it (with the same grants as its partner) or fix `users`",
            )),
            Some(code)
                if code.starts_with("08") || code.starts_with("53") || code.starts_with("57") =>
            {
                Some((
                    true,
                    "the server is unavailable or overloaded; rotor retries",
                ))
            }
            _ => Some((false, "the statement failed; see the server's message")),
        },
        // A certificate rustls refused reaches sqlx as an I/O error of kind InvalidData. Not
        // an outage, but retried like one: an interposed proxy may go away, and a fixed
        // `sslrootcert` is picked up by the next attempt after a reload, while a run given up
        // would wait for a person. The advice says which it is.
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => Some((
            true,
            "the server's TLS certificate was refused: give the CA that signs it as sslrootcert in `dsn`, or find out what answers in the server's place; rotor retries",
        )),
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Protocol(_) => {
            Some((true, "the server is unreachable; rotor retries"))
        }
        sqlx::Error::Tls(_) => Some((
            false,
            "the TLS handshake failed: check sslmode, the server certificate and sslrootcert in `dsn`",
        )),
        _ => None,
    };
    let (transient, advice) = advice.unwrap_or((true, "rotor retries"));
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

/// Admin sessions kept between steps, per server and admin password (at most
/// `KEPT_SESSIONS` in all, so that a thousand credentials on a hundred servers hold no more).
struct KeptSessions(std::sync::Mutex<Vec<([u8; 32], PgConnection)>>);

const KEPT_SESSIONS: usize = 32;

fn kept_sessions() -> &'static KeptSessions {
    static KEPT: std::sync::OnceLock<KeptSessions> = std::sync::OnceLock::new();
    KEPT.get_or_init(|| KeptSessions(std::sync::Mutex::new(Vec::new())))
}

impl KeptSessions {
    fn take(&self, key: &[u8; 32]) -> Option<PgConnection> {
        let mut kept = self.0.lock().expect("kept sessions lock");
        let at = kept.iter().rposition(|(k, _)| k == key)?;
        Some(kept.swap_remove(at).1)
    }

    fn put(&self, key: [u8; 32], conn: PgConnection) {
        let mut kept = self.0.lock().expect("kept sessions lock");
        if kept.len() < KEPT_SESSIONS {
            kept.push((key, conn));
        }
    }
}

/// A session as the admin role. Dropped, it is closed; `keep` hands it to the next step, only
/// after the step's statements succeeded (a failed session may be broken).
struct AdminSession {
    conn: PgConnection,
    key: [u8; 32],
}

impl AdminSession {
    fn keep(self) {
        kept_sessions().put(self.key, self.conn);
    }
}

impl std::ops::Deref for AdminSession {
    type Target = PgConnection;
    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl std::ops::DerefMut for AdminSession {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}

impl PostgresPassword {
    pub fn build(config: PostgresConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        let options = PgConnectOptions::from_str(&config.dsn)
            .map_err(|e| RotatorError::permanent(format!("`dsn` is not a PostgreSQL URL: {e}")))?
            .application_name("rotor")
            .disable_statement_logging();
        Ok(Self {
            config,
            secrets,
            options,
        })
    }

    fn admin_name(&self) -> &str {
        self.options.get_username()
    }

    async fn connect(
        &self,
        options: PgConnectOptions,
        who: &str,
    ) -> Result<PgConnection, RotatorError> {
        let what = format!(
            "connecting to {}:{} as {who}",
            self.options.get_host(),
            self.options.get_port()
        );
        match tokio::time::timeout(self.config.connect_timeout.as_std(), options.connect()).await {
            Ok(result) => result.map_err(|e| classify(e, &what)),
            Err(_) => Err(RotatorError::transient(format!(
                "{what}: no answer within {}; rotor retries",
                self.config.connect_timeout
            ))),
        }
    }

    /// A session as the admin role: one this process kept from an earlier step (still
    /// answering) or a new login. A SCRAM login costs both sides thousands of hash rounds:
    /// more than the statement a step sends.
    async fn admin(&self) -> Result<AdminSession, RotatorError> {
        let mut options = self.options.clone();
        let mut key = Sha256::new();
        key.update(self.config.dsn.as_bytes());
        if let Some(reference) = &self.config.admin {
            let password =
                resolve_secret(&self.secrets, reference, "the PostgreSQL admin password").await?;
            key.update([0]);
            key.update(password.expose_secret().as_bytes());
            options = options.password(password.expose_secret());
        }
        // Sessions are kept per server and admin password: a changed password logs in anew.
        let key: [u8; 32] = key.finalize().into();
        while let Some(mut conn) = kept_sessions().take(&key) {
            let answered =
                tokio::time::timeout(self.config.connect_timeout.as_std(), conn.ping()).await;
            if matches!(answered, Ok(Ok(()))) {
                return Ok(AdminSession { conn, key });
            }
        }
        let conn = self
            .connect(options, &format!("admin role {}", self.admin_name()))
            .await?;
        Ok(AdminSession { conn, key })
    }

    /// Sets `role`'s password (`None` removes it, so no password logs in).
    async fn set_password(
        &self,
        role: &str,
        password: Option<&SecretString>,
    ) -> Result<(), RotatorError> {
        let mut conn = self.admin().await?;
        let statement = Zeroizing::new(match password {
            Some(p) => format!(
                "ALTER ROLE {} WITH PASSWORD '{}'",
                quote_ident(role),
                scram_verifier(p).as_str()
            ),
            None => format!("ALTER ROLE {} WITH PASSWORD NULL", quote_ident(role)),
        });
        let what = match password {
            Some(_) => format!("setting the password of role {role}"),
            None => format!("removing the password of role {role}"),
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(statement.as_str()))
            .execute(&mut *conn)
            .await
            .map_err(|e| classify(e, &what))?;
        conn.keep();
        Ok(())
    }

    fn alternate(&self, current: Option<&Credential>) -> Result<String, RotatorError> {
        let current = current.map(username).transpose()?;
        Ok(crate::alternating::partner(&self.config.users, current.as_deref()).to_owned())
    }

    /// The privileges of `role` as comparable lines: attributes, memberships, and the grants
    /// on the database, its schemas and its relations.
    async fn privileges(
        conn: &mut PgConnection,
        role: &str,
    ) -> Result<Option<(bool, Vec<String>)>, RotatorError> {
        let what = format!("reading the catalog entry of role {role}");
        let Some(row) = sqlx::query("SELECT oid::int8 AS oid, rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolbypassrls, rolconnlimit FROM pg_roles WHERE rolname = $1")
            .bind(role)
            .fetch_optional(&mut *conn)
            .await
            .map_err(|e| classify(e, &what))?
        else {
            return Ok(None);
        };
        let oid: i64 = row.get("oid");
        let login: bool = row.get("rolcanlogin");
        let mut lines = Vec::new();
        for attribute in [
            "rolsuper",
            "rolinherit",
            "rolcreaterole",
            "rolcreatedb",
            "rolbypassrls",
        ] {
            if row.get::<bool, _>(attribute) {
                lines.push(format!("attribute {}", attribute.trim_start_matches("rol")));
            }
        }
        let limit: i32 = row.get("rolconnlimit");
        if limit >= 0 {
            lines.push(format!("connection limit {limit}"));
        }
        let grants = sqlx::query(
            "SELECT 'member of ' || r.rolname AS line FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid WHERE m.member = $1::oid
             UNION ALL
             SELECT 'database ' || d.datname || ': ' || a.privilege_type FROM pg_database d, aclexplode(d.datacl) a WHERE a.grantee = $1::oid AND d.datname = current_database()
             UNION ALL
             SELECT 'schema ' || n.nspname || ': ' || a.privilege_type FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = $1::oid
             UNION ALL
             SELECT 'relation ' || n.nspname || '.' || c.relname || ': ' || a.privilege_type FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a WHERE a.grantee = $1::oid",
        )
        .bind(oid)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(e, &format!("reading the grants of role {role}")))?;
        lines.extend(grants.iter().map(|r| r.get::<String, _>("line")));
        lines.sort();
        lines.dedup();
        Ok(Some((login, lines)))
    }
}

impl Rotator for PostgresPassword {
    fn kind(&self) -> &'static str {
        "postgres_password"
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
                "the candidate would re-password role {user}, which consumers use now; the alternating strategy never does that"
            )));
        }
        self.set_password(&user, Some(candidate.require(PASSWORD)?))
            .await
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let user = username(candidate)?;
        let options = self
            .options
            .clone()
            .username(&user)
            .password(candidate.require(PASSWORD)?.expose_secret());
        let mut conn = self
            .connect(options, &format!("the new credential of role {user}"))
            .await?;
        let who: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&mut conn)
            .await
            .map_err(|e| classify(e, &format!("verifying role {user}")))?;
        if who != user {
            return Err(RotatorError::permanent(format!(
                "logged in as {user} but the session runs as {who}; check the role's settings"
            )));
        }
        if let Some(query) = &self.config.verify_query {
            sqlx::raw_sql(sqlx::AssertSqlSafe(query.as_str()))
                .execute(&mut conn)
                .await
                .map_err(|e| {
                    crate::alternating::as_drift(classify(
                        e,
                        &format!("running verify_query as role {user}"),
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
                "refusing to retire role {user}: it holds the current credential"
            )));
        }
        self.set_password(&user, None).await?;
        Ok(Retired::Done)
    }

    /// The old role's sessions open now (alternating: the old credential is a role of its
    /// own). In place, one role holds the new password: no session says which it logged in with.
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        if self.config.strategy == Strategy::Single {
            return Ok(Usage::Unknown);
        }
        let user = username(old)?;
        let mut conn = self.admin().await?;
        // Address and application show only with pg_read_all_stats (`rotor policy`); the
        // sessions are counted either way.
        let sessions: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
            "SELECT host(client_addr), NULLIF(application_name, ''), \
             to_char(backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
             FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid() \
             ORDER BY backend_start",
        )
        .bind(&user)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(e, &format!("reading the sessions of role {user}")))?;
        conn.keep();
        if sessions.is_empty() {
            return Ok(Usage::Unseen);
        }
        const NAMED: usize = 3;
        let mut by: Vec<String> = sessions
            .iter()
            .take(NAMED)
            .map(|(addr, app, since)| {
                format!(
                    "{} ({}{})",
                    addr.as_deref().unwrap_or("a local or hidden address"),
                    app.as_deref()
                        .map_or("no application_name".to_owned(), |a| format!(
                            "application {a}"
                        )),
                    since
                        .as_deref()
                        .map_or(String::new(), |s| format!(", since {s}"))
                )
            })
            .collect();
        if sessions.len() > NAMED {
            by.push(format!("{} more", sessions.len() - NAMED));
        }
        Ok(Usage::Seen {
            at: None,
            by: format!(
                "{} session(s) of role {user}: {}",
                sessions.len(),
                by.join("; ")
            ),
        })
    }

    /// The partner role of an alternating pair may hold a password set before rotor, but a
    /// role without the superuser's `pg_authid` cannot see whether it does: none is counted,
    /// so the first version keeps no grace, and `retire_unissued` removes the partner's
    /// password when it completes. (A single role's old password was replaced at apply.)
    async fn unissued(&self, _current: &Credential) -> Result<usize, RotatorError> {
        Ok(0)
    }

    /// Removes the partner role's password (`PASSWORD NULL`; already none is success).
    async fn retire_unissued(
        &self,
        current: &Credential,
        _at_once: bool,
    ) -> Result<Retired, RotatorError> {
        if self.config.strategy == Strategy::Alternating {
            let partner = self.alternate(Some(current))?;
            self.set_password(&partner, None).await?;
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
                self.set_password(&user, Some(current.require(PASSWORD)?))
                    .await
            }
            (Strategy::Alternating, Some(current)) if username(current)? == user => Ok(()),
            // The candidate's role served no one: leave it without a password.
            _ => self.set_password(&user, None).await,
        }
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let mut conn = self.admin().await?;
        let rows = sqlx::query(
            "SELECT rolname::text AS name, rolcanlogin AND (rolvaliduntil IS NULL OR rolvaliduntil > now()) AS active FROM pg_roles WHERE rolname = ANY($1)",
        )
        .bind(&self.config.users)
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| classify(e, "listing the rotated roles"))?;
        conn.keep();
        Ok(rows
            .iter()
            .map(|r| LiveCredential {
                provider_id: r.get("name"),
                active: r.get("active"),
            })
            .collect())
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        username(credential).ok()
    }

    fn apply_disturbs_current(&self) -> bool {
        self.config.strategy == Strategy::Single
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let mut conn = self.admin().await?;
        let mut problems = Vec::new();
        let mut seen = Vec::new();
        for user in &self.config.users {
            match Self::privileges(&mut conn, user).await? {
                None => problems.push(format!("role {user} does not exist")),
                Some((false, _)) => problems.push(format!("role {user} has no LOGIN")),
                Some((true, lines)) => seen.push((user, lines)),
            }
        }
        if let [(a, a_lines), (b, b_lines)] = seen.as_slice() {
            problems.extend(crate::alternating::drift(a, a_lines, b, b_lines));
        }
        let may: bool = sqlx::query_scalar(
            "SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| classify(e, "reading the admin role's attributes"))?;
        if !may {
            problems.push(format!(
                "admin role {} has neither CREATEROLE nor SUPERUSER and cannot change passwords",
                self.admin_name()
            ));
        }
        conn.keep();
        crate::alternating::verdict(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scram_verifier_matches_rfc_7677() {
        // RFC 7677 section 3: user "user", password "pencil", salt W22ZaJ0SNY7soEsUEjb6gQ==,
        // 4096 iterations; the server signature there is derived from this ServerKey.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let v = scram_verifier_with(b"pencil", &salt, 4096);
        let (head, keys) = v.split_once('$').unwrap().1.split_once('$').unwrap();
        assert_eq!(head, "4096:W22ZaJ0SNY7soEsUEjb6gQ==");
        let (stored, server) = keys.split_once(':').unwrap();
        // StoredKey and ServerKey computed independently (Python's hashlib.pbkdf2_hmac and
        // hmac); the integration tests also log in with verifiers made here.
        assert_eq!(stored, "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=");
        assert_eq!(server, "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=");
    }

    #[test]
    fn config_errors_are_specific() {
        let parse = |extra: &str| -> PostgresConfig {
            toml::from_str(&format!(
                "dsn = \"postgres://rotor_admin@127.0.0.1:5432/app\"\n{extra}"
            ))
            .unwrap()
        };
        assert!(parse("users = [\"a\", \"b\"]").validate().is_ok());
        assert!(
            parse("users = [\"a\"]")
                .validate()
                .unwrap_err()
                .contains("exactly 2")
        );
        assert!(
            parse("users = [\"a\", \"a\"]")
                .validate()
                .unwrap_err()
                .contains("differ")
        );
        assert!(
            parse("strategy = \"single\"\nusers = [\"a\"]")
                .validate()
                .is_ok()
        );
        assert!(
            parse("users = [\"rotor_admin\", \"b\"]")
                .validate()
                .unwrap_err()
                .contains("admin role")
        );
        let with_password: PostgresConfig = toml::from_str(
            "dsn = \"postgres://rotor_admin:hunter2@db/app\"\nusers = [\"a\", \"b\"]",
        )
        .unwrap();
        let e = with_password.validate().unwrap_err();
        assert!(
            e.contains("contains a password") && !e.contains("hunter2"),
            "{e}"
        );
        assert!(
            toml::from_str::<PostgresConfig>(
                "dsn = \"x\"\nusers = [\"a\",\"b\"]\nadmin = \"literal\""
            )
            .is_err()
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("app_a"), "\"app_a\"");
        assert_eq!(quote_ident("we\"ird"), "\"we\"\"ird\"");
    }
}
