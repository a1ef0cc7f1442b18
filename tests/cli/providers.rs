//! Real providers for the rotator tests: each fixture sets up a fresh account at a server the
//! harness started (roles in PostgreSQL, ...), gives the `[credential.rotator]` table that
//! rotates it, and checks afterwards what the provider really accepts.

use std::path::Path;
use std::sync::OnceLock;

use rotor_rotators::Credential;
use secrecy::ExposeSecret;

use crate::support::postgres;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provider {
    Postgres,
    Redis,
}

/// One rotated account at a provider.
pub struct Fixture {
    pub provider: Provider,
    /// The body of `[credential.rotator]`.
    pub rotator: String,
    /// Accounts of this fixture at the provider (role names, ...).
    pub accounts: Vec<String>,
}

pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn field(c: &Credential, name: &str) -> String {
    c.get(name)
        .unwrap_or_else(|| panic!("credential has no {name}"))
        .expose_secret()
        .to_owned()
}

/// `unique` must be a lowercase identifier, different for every fixture of a test binary.
pub fn setup(provider: Provider, unique: &str, dir: &Path) -> Fixture {
    match provider {
        Provider::Postgres => pg::setup(unique, dir),
        Provider::Redis => redis::setup(unique, dir),
    }
}

impl Fixture {
    /// A whole config rotating this fixture as credential `app/key0` into a file vault in
    /// `dir`, with absolute paths so the test process can open the same vault.
    pub fn config(&self, grace: &str, dir: &Path) -> String {
        crate::generated_config(1, grace)
            .replace(
                "rotator = { kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }\n",
                &format!("[credential.rotator]\n{}", self.rotator),
            )
            .replace(
                "dir = \"vault\"",
                &format!("dir = \"{}/vault\"", dir.display()),
            )
            .replace(
                "file = \"vault.key\"",
                &format!("file = \"{}/vault.key\"", dir.display()),
            )
    }

    /// Asserts what the provider accepts after a finished rotation: `current` authenticates
    /// (with its privileges), `old` is refused, and nothing else this fixture owns is live.
    pub fn check_rotated(&self, current: &Credential, old: &Credential) {
        match self.provider {
            Provider::Postgres => pg::check_rotated(self, current, old),
            Provider::Redis => redis::check_rotated(self, current, old),
        }
    }

    /// Whether `credential` authenticates at the provider now.
    pub async fn accepts_now(&self, credential: &Credential) -> bool {
        match self.provider {
            Provider::Postgres => pg::login(credential).await.is_ok(),
            Provider::Redis => redis::accepts(credential),
        }
    }

    pub fn accepts(&self, credential: &Credential) -> bool {
        block_on(self.accepts_now(credential))
    }
}

pub mod pg {
    use super::*;
    use sqlx::Connection;

    pub const DATABASE: &str = "apps";
    pub const VERIFY_QUERY: &str = "SELECT count(*) FROM app.orders";
    const ADMIN_PASSWORD: &str = "rotor-admin-test-password-0123456789";

    /// The shared server with the `apps` database, its `app_group` role and the admin role
    /// created exactly as `rotor policy` prescribes (CREATEROLE, no superuser).
    pub fn server() -> &'static postgres::Postgres {
        static READY: OnceLock<()> = OnceLock::new();
        let server = postgres::shared();
        READY.get_or_init(|| {
            server.psql("postgres", &format!("CREATE DATABASE {DATABASE}"));
            server.psql(
                DATABASE,
                &format!(
                    "CREATE ROLE app_group NOLOGIN;
                     CREATE SCHEMA app; CREATE TABLE app.orders (id int);
                     GRANT USAGE ON SCHEMA app TO app_group; GRANT SELECT ON app.orders TO app_group;
                     CREATE ROLE rotor_admin LOGIN CREATEROLE PASSWORD '{ADMIN_PASSWORD}';"
                ),
            );
        });
        server
    }

    pub fn dsn(user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{DATABASE}", server().port)
    }

    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        let server = server();
        let (a, b) = (format!("{unique}_a"), format!("{unique}_b"));
        server.psql(
            DATABASE,
            &format!(
                "CREATE ROLE {a} LOGIN; GRANT app_group TO {a};
                 CREATE ROLE {b} LOGIN; GRANT app_group TO {b};"
            ),
        );
        let admin_file = dir.join("pg-admin-password");
        std::fs::write(&admin_file, format!("{ADMIN_PASSWORD}\n")).unwrap();
        Fixture {
            provider: Provider::Postgres,
            rotator: format!(
                "kind = \"postgres_password\"\nstrategy = \"alternating\"\nusers = [\"{a}\", \"{b}\"]\ndsn = \"{}\"\nadmin = {{ file = \"{}\" }}\nverify_query = \"{VERIFY_QUERY}\"\n",
                dsn("rotor_admin"),
                admin_file.display()
            ),
            accounts: vec![a, b],
        }
    }

    pub async fn login(c: &Credential) -> Result<sqlx::PgConnection, sqlx::Error> {
        let options: sqlx::postgres::PgConnectOptions = dsn(&field(c, "username")).parse()?;
        sqlx::PgConnection::connect_with(&options.password(&field(c, "password"))).await
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        block_on(async {
            let mut conn = login(current)
                .await
                .unwrap_or_else(|e| panic!("the current credential logs in: {e}"));
            sqlx::raw_sql(VERIFY_QUERY)
                .execute(&mut conn)
                .await
                .expect("and keeps its privileges");
            let Err(refused) = login(old).await else {
                panic!("the old credential is refused");
            };
            assert!(
                refused
                    .to_string()
                    .contains("password authentication failed"),
                "{refused}"
            );
        });
        let with_password = server().psql(
            DATABASE,
            &format!(
                "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_authid WHERE rolname IN ('{}') AND rolpassword IS NOT NULL",
                fixture.accounts.join("','")
            ),
        );
        assert_eq!(
            with_password,
            field(current, "username"),
            "only the current role has a password: nothing orphaned"
        );
    }
}

pub mod redis {
    use super::*;
    use crate::support::redis::{Redis, shared};
    use sha2::{Digest, Sha256};

    pub const ADMIN_PASSWORD: &str = "rotor-redis-admin-test-password-42";
    /// rotor's admin user, with exactly the rule `rotor policy` prints.
    pub const ADMIN_RULE: &str = "on resetkeys resetchannels -@all +ping +acl|getuser +acl|setuser";

    pub fn server() -> &'static Redis {
        static READY: OnceLock<()> = OnceLock::new();
        let server = shared();
        READY.get_or_init(|| {
            let mut args = vec!["ACL", "SETUSER", "rotor"];
            args.extend(ADMIN_RULE.split(' '));
            let password = format!(">{ADMIN_PASSWORD}");
            args.push(&password);
            server.ok(&args);
        });
        server
    }

    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        let server = server();
        // The application's user: its key and command rules are the operator's; it starts
        // without any password, so nothing logs in until rotor adds one.
        let keys = format!("~{unique}:*");
        server.ok(&[
            "ACL",
            "SETUSER",
            unique,
            "on",
            &keys,
            "+get",
            "+set",
            "+ping",
            "+acl|whoami",
        ]);
        let admin_file = dir.join("redis-admin-password");
        std::fs::write(&admin_file, ADMIN_PASSWORD).unwrap();
        Fixture {
            provider: Provider::Redis,
            rotator: format!(
                "kind = \"redis_acl_password\"\nurl = \"{}\"\nuser = \"{unique}\"\nadmin_user = \"rotor\"\nadmin = {{ file = \"{}\" }}\n",
                server.url(),
                admin_file.display()
            ),
            accounts: vec![unique.to_owned()],
        }
    }

    fn login(c: &Credential) -> (String, String) {
        (field(c, "username"), field(c, "password"))
    }

    pub fn accepts(c: &Credential) -> bool {
        let (user, password) = login(c);
        server().cli(Some((&user, &password)), &["ACL", "WHOAMI"]) == Ok(user)
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        let server = server();
        let (user, password) = login(current);
        let key = format!("{user}:probe");
        server
            .cli(Some((&user, &password)), &["SET", &key, "1"])
            .expect("the current credential logs in and keeps its key rules");
        let (old_user, old_password) = login(old);
        let refused = server
            .cli(Some((&old_user, &old_password)), &["ACL", "WHOAMI"])
            .expect_err("the old credential is refused");
        assert!(refused.contains("WRONGPASS"), "{refused}");
        let acl = server.ok(&["ACL", "GETUSER", &fixture.accounts[0]]);
        let hashes: Vec<&str> = acl
            .lines()
            .filter(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
            .collect();
        assert_eq!(
            hashes,
            [hex::encode(Sha256::digest(password.as_bytes()))],
            "the user holds exactly the current password: nothing orphaned"
        );
    }
}
