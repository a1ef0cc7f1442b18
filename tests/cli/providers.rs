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
    /// `mysql_password`, alternating, on MariaDB.
    Mysql,
    Redis,
    /// `redis_acl_password` with `strategy = "alternating"`: two ACL users take turns.
    RedisAlternating,
    Iam,
    Http,
    GithubDeployKey,
    GithubWebhook,
    GithubAppToken,
    /// `ssh_authorized_key`, on a real sshd of the fixture's own.
    Ssh,
}

/// One rotated account at a provider.
pub struct Fixture {
    pub provider: Provider,
    /// The body of `[credential.rotator]`.
    pub rotator: String,
    /// Accounts of this fixture at the provider (role names, ...).
    pub accounts: Vec<String>,
    /// A provider that lives in the test process (the fake SaaS), kept running.
    pub service: Option<std::sync::Arc<crate::support::saas::Saas>>,
    /// The fake GitHub of a GitHub fixture, kept running.
    pub github: Option<std::sync::Arc<crate::support::github::GitHub>>,
    /// The sshd of an SSH fixture, kept running.
    pub sshd: Option<std::sync::Arc<crate::support::sshd::Sshd>>,
}

/// The credential consumers read now at `app/key0` in the file vault `local` of `rotor`'s config.
pub fn current(rotor: &crate::support::Rotor) -> Credential {
    current_at(rotor, "app/key0")
}

/// The credential consumers read now for credential `id` of `rotor`'s config.
pub fn current_at(rotor: &crate::support::Rotor, id: &str) -> Credential {
    use rotor::vault::{Vault, Vaults};
    let config = rotor::config::load(std::slice::from_ref(&rotor.config)).unwrap();
    let c = config.credential(id).unwrap().clone();
    block_on(async {
        let vaults = Vaults::open(&config.vaults).await.unwrap();
        vaults
            .get(&c.vault)
            .unwrap()
            .read_current(&c.vault_path)
            .await
            .unwrap()
            .expect("a current document")
            .current
            .credential
    })
}

pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn field(c: &Credential, name: &str) -> String {
    c.get(name)
        .unwrap_or_else(|| panic!("credential has no {name}"))
        .expose_secret()
        .to_owned()
}

/// `unique` must be a lowercase identifier, different for every fixture of a test binary.
pub fn setup(provider: Provider, unique: &str, dir: &Path) -> Fixture {
    match provider {
        Provider::Postgres => pg::setup(unique, dir),
        Provider::Mysql => mysql::setup(unique, dir),
        Provider::Redis => redis::setup(unique, dir),
        Provider::RedisAlternating => redis::setup_alternating(unique, dir),
        Provider::Iam => iam::setup(unique, dir),
        Provider::Http => http::setup(unique, dir),
        Provider::GithubDeployKey | Provider::GithubWebhook | Provider::GithubAppToken => {
            github::setup(provider, dir)
        }
        Provider::Ssh => ssh::setup(dir),
    }
}

impl Fixture {
    /// Whether the provider can list its credentials (GitHub installation tokens cannot).
    pub fn lists(&self) -> bool {
        self.provider != Provider::GithubAppToken
    }

    /// Whether the provider holds one secret and switches to the new one only after grace
    /// (a webhook): the overlap is then on the consumers' side, not at the provider.
    pub fn switches_after_grace(&self) -> bool {
        self.provider == Provider::GithubWebhook
    }

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
            Provider::Mysql => mysql::check_rotated(self, current, old),
            Provider::Redis | Provider::RedisAlternating => {
                redis::check_rotated(self, current, old)
            }
            Provider::Iam => iam::check_rotated(self, current, old),
            Provider::Http => http::check_rotated(self, current, old),
            Provider::Ssh => ssh::check_rotated(self, current, old),
            _ => github::check_rotated(self, current, old),
        }
    }

    /// Whether `credential` authenticates at the provider now.
    pub async fn accepts_now(&self, credential: &Credential) -> bool {
        match self.provider {
            Provider::Postgres => pg::login(credential).await.is_ok(),
            Provider::Mysql => mysql::accepts(credential),
            Provider::Redis | Provider::RedisAlternating => redis::accepts(credential),
            Provider::Iam => iam::identity(credential).await.is_ok(),
            Provider::Http => http::accepts(self, credential),
            Provider::Ssh => ssh::accepts(self, credential),
            _ => github::accepts(self, credential),
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
        READY.get_or_init(|| prepare(server));
        server
    }

    /// Creates the `apps` database, its `app_group` role and the admin role on `server`.
    pub fn prepare(server: &postgres::Postgres) {
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
    }

    pub fn dsn(user: &str) -> String {
        dsn_on(server(), user)
    }

    fn dsn_on(server: &postgres::Postgres, user: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{DATABASE}", server.port)
    }

    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        setup_on(server(), unique, dir)
    }

    /// The role pair on a server of the test's own (`prepare`d), for a test that stops it.
    pub fn setup_on(server: &postgres::Postgres, unique: &str, dir: &Path) -> Fixture {
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
                dsn_on(server, "rotor_admin"),
                admin_file.display()
            ),
            accounts: vec![a, b],
            service: None,
            github: None,
            sshd: None,
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

pub mod mysql {
    use super::*;
    use crate::support::mariadb::{self, MariaDb};

    pub const ADMIN_PASSWORD: &str = "rotor-mariadb-admin-test-password-42";
    /// rotor's admin account, with exactly the grants `rotor policy` prints.
    pub const ADMIN_GRANTS: [&str; 3] = [
        "GRANT CREATE USER ON *.* TO 'rotor_admin'@'%'",
        "GRANT SELECT ON mysql.* TO 'rotor_admin'@'%'",
        "GRANT PROCESS ON *.* TO 'rotor_admin'@'%'",
    ];

    /// The shared server with the `app` database and rotor's admin account.
    pub fn server() -> &'static MariaDb {
        static READY: OnceLock<()> = OnceLock::new();
        let server = mariadb::shared();
        READY.get_or_init(|| {
            server.ok(&format!(
                "CREATE DATABASE app; CREATE USER 'rotor_admin'@'%' IDENTIFIED BY '{ADMIN_PASSWORD}'; {};",
                ADMIN_GRANTS.join("; ")
            ));
        });
        server
    }

    /// Two accounts `{unique}_a` and `{unique}_b` with the same grants on a table of their
    /// own; locked, without a password, until rotor gives one a password.
    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        let server = server();
        let (a, b) = (format!("{unique}_a"), format!("{unique}_b"));
        server.ok(&format!(
            "CREATE TABLE app.{unique} (id INT);
             CREATE USER '{a}'@'%' ACCOUNT LOCK; GRANT SELECT, INSERT ON app.{unique} TO '{a}'@'%';
             CREATE USER '{b}'@'%' ACCOUNT LOCK; GRANT SELECT, INSERT ON app.{unique} TO '{b}'@'%';"
        ));
        let admin_file = dir.join("mariadb-admin-password");
        std::fs::write(&admin_file, ADMIN_PASSWORD).unwrap();
        Fixture {
            provider: Provider::Mysql,
            rotator: format!(
                "kind = \"mysql_password\"\nusers = [\"{a}\", \"{b}\"]\ndsn = \"{}\"\nadmin = {{ file = \"{}\" }}\nverify_query = \"SELECT COUNT(*) FROM app.{unique}\"\n",
                server.url("rotor_admin"),
                admin_file.display()
            ),
            accounts: vec![a, b],
            service: None,
            github: None,
            sshd: None,
        }
    }

    /// What the server says to a login with `c`: `CURRENT_USER()`, or the refusal.
    pub fn login(c: &Credential) -> Result<String, String> {
        server().sql_as(
            Some((&field(c, "username"), &field(c, "password"))),
            "SELECT CURRENT_USER()",
        )
    }

    pub fn accepts(c: &Credential) -> bool {
        login(c).is_ok()
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        let server = server();
        let user = field(current, "username");
        let table = fixture.accounts[0].strip_suffix("_a").unwrap();
        server
            .sql_as(
                Some((&user, &field(current, "password"))),
                &format!("INSERT INTO app.{table} VALUES (1)"),
            )
            .expect("the current credential logs in and keeps its grants");
        let refused = login(old).expect_err("the old credential is refused");
        assert!(refused.contains("Access denied"), "{refused}");
        // Nothing orphaned: every account but the current one is locked.
        for account in &fixture.accounts {
            let create = server.ok(&format!("SHOW CREATE USER '{account}'@'%'"));
            assert_eq!(
                create.contains("ACCOUNT LOCK"),
                *account != user,
                "{account}: {create}"
            );
        }
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

    /// rotor's admin user for the alternating strategy, with exactly the rule `rotor policy`
    /// prints for it: `CLIENT LIST` besides.
    pub const ALTERNATING_ADMIN_RULE: &str =
        "on resetkeys resetchannels -@all +ping +acl|getuser +acl|setuser +client|list";

    /// An application's ACL user: its key and command rules are the operator's; it starts
    /// without any password, so nothing logs in until rotor adds one. Its keys are
    /// `{keys}:*`, shared by the two users of an alternating pair.
    pub fn create_user(user: &str, keys: &str) {
        let keys = format!("~{keys}:*");
        server().ok(&[
            "ACL",
            "SETUSER",
            user,
            "on",
            &keys,
            "+get",
            "+set",
            "+ping",
            "+acl|whoami",
        ]);
    }

    /// Two ACL users `{unique}_a` and `{unique}_b` with the same rules, and an admin that
    /// may list connections.
    pub fn setup_alternating(unique: &str, dir: &Path) -> Fixture {
        static ADMIN: OnceLock<()> = OnceLock::new();
        ADMIN.get_or_init(|| {
            let mut args = vec!["ACL", "SETUSER", "rotor_alternating"];
            args.extend(ALTERNATING_ADMIN_RULE.split(' '));
            let password = format!(">{ADMIN_PASSWORD}");
            args.push(&password);
            server().ok(&args);
        });
        let users = [format!("{unique}_a"), format!("{unique}_b")];
        for user in &users {
            create_user(user, unique);
        }
        let admin_file = dir.join("redis-admin-password");
        std::fs::write(&admin_file, ADMIN_PASSWORD).unwrap();
        Fixture {
            provider: Provider::RedisAlternating,
            rotator: format!(
                "kind = \"redis_acl_password\"\nstrategy = \"alternating\"\nurl = \"{}\"\nusers = [\"{}\", \"{}\"]\nadmin_user = \"rotor_alternating\"\nadmin = {{ file = \"{}\" }}\n",
                server().url(),
                users[0],
                users[1],
                admin_file.display()
            ),
            accounts: users.to_vec(),
            service: None,
            github: None,
            sshd: None,
        }
    }

    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        create_user(unique, unique);
        let server = server();
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
            service: None,
            github: None,
            sshd: None,
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
        let keys = match fixture.provider {
            Provider::RedisAlternating => fixture.accounts[0].trim_end_matches("_a"),
            _ => &fixture.accounts[0],
        };
        let key = format!("{keys}:probe");
        server
            .cli(Some((&user, &password)), &["SET", &key, "1"])
            .expect("the current credential logs in and keeps its key rules");
        let (old_user, old_password) = login(old);
        let refused = server
            .cli(Some((&old_user, &old_password)), &["ACL", "WHOAMI"])
            .expect_err("the old credential is refused");
        assert!(refused.contains("WRONGPASS"), "{refused}");
        // Nothing orphaned: the current user holds exactly the current password, and the
        // other user of an alternating pair none.
        for account in &fixture.accounts {
            let acl = server.ok(&["ACL", "GETUSER", account]);
            let hashes: Vec<&str> = acl
                .lines()
                .filter(|l| l.len() == 64 && l.chars().all(|c| c.is_ascii_hexdigit()))
                .collect();
            let expected = if *account == user {
                vec![hex::encode(Sha256::digest(password.as_bytes()))]
            } else {
                vec![]
            };
            assert_eq!(hashes, expected, "passwords of ACL user {account}");
        }
    }
}

pub mod iam {
    use super::*;
    use crate::support::moto::{AuthenticatingMoto, authenticating, sts_client};

    pub fn server() -> &'static AuthenticatingMoto {
        authenticating()
    }

    /// A target user, and rotor's own IAM user holding exactly the policy `rotor policy`
    /// prints for it (moto enforces it), with its key in files the config refers to. The
    /// account id is moto's: moto checks the signature of a body holding `*` wrongly.
    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        setup_with(unique, dir, "0s")
    }

    pub fn setup_with(unique: &str, dir: &Path, delete_after: &str) -> Fixture {
        let moto = server();
        let (id_file, secret_file) = (dir.join("aws-id"), dir.join("aws-secret"));
        let rotator = format!(
            "kind = \"aws_iam_access_key\"\nuser_name = \"{unique}\"\ndelete_after = \"{delete_after}\"\nendpoint = \"{}\"\nverify_within = \"5s\"\naccount_id = \"123456789012\"\ncredentials = {{ access_key_id = {{ file = \"{}\" }}, secret_access_key = {{ file = \"{}\" }} }}\n",
            moto.endpoint,
            id_file.display(),
            secret_file.display()
        );
        let config: rotor_rotators::RotatorConfig = toml::from_str(&rotator).unwrap();
        let printed = config.settings().least_privilege("test");
        let policy: String = printed.lines().filter(|l| !l.starts_with("//")).collect();
        // Compact: moto computes the signature of a form body with spaces differently.
        let mut policy: serde_json::Value =
            serde_json::from_str(&policy).expect("the policy is JSON");
        let resource = &mut policy["Statement"][0]["Resource"];
        assert_eq!(
            *resource,
            format!("arn:aws:iam::123456789012:user/{unique}")
        );
        // moto enforces the actions of a policy but cannot match IAM resource ARNs (it denies
        // every specific one): the scoping is asserted above, the actions are enforced.
        *resource = "*".into();
        let policy = policy.to_string();
        block_on(async {
            let iam = moto.iam();
            iam.create_user()
                .user_name(unique)
                .send()
                .await
                .expect("create the target user");
            let admin = format!("{unique}-rotor");
            iam.create_user()
                .user_name(&admin)
                .send()
                .await
                .expect("create rotor's user");
            iam.put_user_policy()
                .user_name(&admin)
                .policy_name("rotor")
                .policy_document(policy)
                .send()
                .await
                .expect("attach rotor's policy");
            let key = iam
                .create_access_key()
                .user_name(&admin)
                .send()
                .await
                .unwrap();
            let key = key.access_key().unwrap();
            std::fs::write(&id_file, key.access_key_id()).unwrap();
            std::fs::write(&secret_file, key.secret_access_key()).unwrap();
        });
        Fixture {
            provider: Provider::Iam,
            rotator,
            accounts: vec![unique.to_owned()],
            service: None,
            github: None,
            sshd: None,
        }
    }

    /// The ARN STS reports for a request signed by `c`.
    pub async fn identity(c: &Credential) -> Result<String, String> {
        let credentials = aws_sdk_sts::config::Credentials::new(
            field(c, "access_key_id"),
            field(c, "secret_access_key"),
            None,
            None,
            "test",
        );
        sts_client(&server().endpoint, credentials)
            .get_caller_identity()
            .send()
            .await
            .map(|o| o.arn().unwrap_or_default().to_owned())
            .map_err(|e| format!("{e:?}"))
    }

    /// The user's keys as (id, active), as IAM lists them.
    pub async fn keys(user: &str) -> Vec<(String, bool)> {
        let out = server()
            .iam()
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .expect("list keys");
        let mut keys: Vec<_> = out
            .access_key_metadata()
            .iter()
            .map(|k| {
                (
                    k.access_key_id().unwrap().to_owned(),
                    k.status() == Some(&aws_sdk_iam::types::StatusType::Active),
                )
            })
            .collect();
        keys.sort();
        keys
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        let user = &fixture.accounts[0];
        block_on(async {
            let arn = identity(current)
                .await
                .expect("the current key authenticates");
            assert!(arn.ends_with(&format!("user/{user}")), "{arn}");
            assert!(
                identity(old).await.is_err(),
                "the old key is refused (deleted)"
            );
            assert_eq!(
                keys(user).await,
                [(field(current, "access_key_id"), true)],
                "the user holds exactly the current key: nothing orphaned"
            );
        });
    }
}

pub mod http {
    use super::*;
    use crate::support::saas::{ADMIN_TOKEN, Saas};

    /// A fresh SaaS for each fixture; the rotator is the documented API-key shape.
    pub fn setup(unique: &str, dir: &Path) -> Fixture {
        let saas = Saas::start();
        let admin_file = dir.join("saas-admin-token");
        std::fs::write(&admin_file, ADMIN_TOKEN).unwrap();
        Fixture {
            provider: Provider::Http,
            rotator: format!(
                r#"kind = "http"
base_url = "{}"
auth = {{ value = {{ file = "{}" }} }}
mint = {{ method = "POST", path = "/v1/keys", body = '{{"name": "{unique} {{{{token}}}}"}}', secret = "/key", id = "/id" }}
verify = {{ path = "/v1/whoami", headers = {{ Authorization = "Bearer {{{{secret}}}}" }} }}
verify_within = "2s"
retire = {{ method = "DELETE", path = "/v1/keys/{{{{id}}}}", expect = [204, 404] }}
list = {{ path = "/v1/keys", items = "/keys", id = "/id", name = "/name", active = "/active" }}
"#,
                saas.url(),
                admin_file.display()
            ),
            accounts: vec![unique.to_owned()],
            service: Some(saas),
            github: None,
            sshd: None,
        }
    }

    fn saas(fixture: &Fixture) -> &Saas {
        fixture
            .service
            .as_deref()
            .expect("an http fixture has its service")
    }

    pub fn accepts(fixture: &Fixture, c: &Credential) -> bool {
        saas(fixture).accepts(&field(c, "value"))
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        let saas = saas(fixture);
        assert!(
            saas.accepts(&field(current, "value")),
            "the current key works"
        );
        assert!(
            !saas.accepts(&field(old, "value")),
            "the old key is revoked"
        );
        assert_eq!(
            saas.key_ids(),
            [field(current, "id")],
            "only the current key exists: nothing orphaned"
        );
    }
}

pub mod github {
    use super::*;
    use crate::support::github::{
        ADMIN_TOKEN, APP_ID, GitHub, INSTALLATION_ID, OWNER, REPO, REPO_HOOK,
    };

    pub fn setup(provider: Provider, dir: &Path) -> Fixture {
        let github = GitHub::start(dir);
        let token_file = dir.join("github-token");
        std::fs::write(&token_file, ADMIN_TOKEN).unwrap();
        let access = format!(
            "api_url = \"{}\"\ntoken = {{ file = \"{}\" }}\n",
            github.url(),
            token_file.display()
        );
        let (rotator, account) = match provider {
            Provider::GithubDeployKey => (
                format!(
                    "kind = \"github_deploy_key\"\nowner = \"{OWNER}\"\nrepo = \"{REPO}\"\n{access}"
                ),
                format!("{OWNER}/{REPO}"),
            ),
            Provider::GithubWebhook => (
                format!(
                    "kind = \"github_webhook_secret\"\nowner = \"{OWNER}\"\nrepo = \"{REPO}\"\nhook_id = {REPO_HOOK}\n{access}"
                ),
                format!("webhook {REPO_HOOK}"),
            ),
            _ => (
                format!(
                    "kind = \"github_app_installation_token\"\napi_url = \"{}\"\napp_id = {APP_ID}\ninstallation_id = {INSTALLATION_ID}\nprivate_key = {{ file = \"{}\" }}\n",
                    github.url(),
                    dir.join("github-app.pem").display()
                ),
                format!("installation {INSTALLATION_ID}"),
            ),
        };
        Fixture {
            provider,
            rotator,
            accounts: vec![account],
            service: None,
            github: Some(github),
            sshd: None,
        }
    }

    fn key_body(public: &str) -> String {
        public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    pub fn accepts(fixture: &Fixture, c: &Credential) -> bool {
        let state = fixture.github.as_ref().unwrap().state.lock().unwrap();
        match fixture.provider {
            Provider::GithubDeployKey => {
                let wanted = key_body(&field(c, "public_key"));
                state.deploy_keys.values().any(|k| k.key == wanted)
            }
            Provider::GithubWebhook => {
                state.hooks[&REPO_HOOK].secret.as_deref() == Some(field(c, "value").as_str())
            }
            _ => {
                let token = field(c, "token");
                state.tokens.iter().any(|t| t.value == token && !t.revoked)
            }
        }
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        assert!(
            accepts(fixture, current),
            "GitHub honours the current credential"
        );
        assert!(
            !accepts(fixture, old),
            "GitHub no longer honours the old one"
        );
        let state = fixture.github.as_ref().unwrap().state.lock().unwrap();
        match fixture.provider {
            Provider::GithubDeployKey => {
                let keys: Vec<_> = state.deploy_keys.values().map(|k| k.key.clone()).collect();
                assert_eq!(
                    keys,
                    [key_body(&field(current, "public_key"))],
                    "only the current deploy key is registered: nothing orphaned"
                );
                assert!(
                    state.deploy_keys.values().all(|k| k.read_only),
                    "read-only by default"
                );
                // The private key is a real OpenSSH key whose public half is what GitHub holds.
                let dir = tempfile::tempdir().unwrap();
                let file = dir.path().join("id_ed25519");
                std::fs::write(&file, field(current, "private_key")).unwrap();
                std::fs::set_permissions(
                    &file,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .unwrap();
                let ssh_keygen = crate::support::require_program(
                    "ssh-keygen",
                    "apt-get install -y openssh-client",
                );
                let out = std::process::Command::new(ssh_keygen)
                    .arg("-y")
                    .arg("-f")
                    .arg(&file)
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "ssh-keygen -y: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                assert_eq!(
                    key_body(String::from_utf8_lossy(&out.stdout).trim()),
                    key_body(&field(current, "public_key"))
                );
            }
            Provider::GithubWebhook => {}
            _ => {
                let live: Vec<_> = state.tokens.iter().filter(|t| !t.revoked).collect();
                assert_eq!(
                    live.len(),
                    1,
                    "only the current installation token is unrevoked"
                );
            }
        }
    }
}

pub mod ssh {
    use super::*;
    use crate::support::sshd::Sshd;

    /// A fresh sshd whose `authorized_keys` holds rotor's admin key and a neighbour's key.
    pub fn setup(dir: &Path) -> Fixture {
        let sshd = std::sync::Arc::new(Sshd::start(dir));
        Fixture {
            provider: Provider::Ssh,
            rotator: format!(
                "kind = \"ssh_authorized_key\"\nhosts = [\"127.0.0.1:{}\"]\nuser = \"{}\"\nadmin_key = {{ file = \"{}\" }}\nknown_hosts = \"{}\"\nauthorized_keys = \"{}\"\nverify_command = \"test -s {}\"\n",
                sshd.port,
                sshd.user,
                sshd.admin_key.display(),
                sshd.known_hosts.display(),
                sshd.authorized_keys.display(),
                sshd.authorized_keys.display(),
            ),
            accounts: vec![sshd.user.clone()],
            service: None,
            github: None,
            sshd: Some(sshd),
        }
    }

    fn server(fixture: &Fixture) -> &Sshd {
        fixture.sshd.as_deref().expect("an SSH fixture")
    }

    pub fn accepts(fixture: &Fixture, c: &Credential) -> bool {
        server(fixture)
            .login(&field(c, "private_key"), "true")
            .is_ok()
    }

    pub fn check_rotated(fixture: &Fixture, current: &Credential, old: &Credential) {
        let sshd = server(fixture);
        sshd.login(&field(current, "private_key"), "true")
            .expect("the current key logs in");
        let refused = sshd
            .login(&field(old, "private_key"), "true")
            .expect_err("the old key is refused");
        assert!(refused.contains("Permission denied"), "{refused}");
        // Exactly the admin's line, the neighbour's and the current key's: nothing orphaned.
        let lines = sshd.lines();
        let rotor_lines: Vec<_> = lines.iter().filter(|l| l.contains(" rotor:")).collect();
        assert_eq!(rotor_lines, [&field(current, "public_key")], "{lines:#?}");
        assert_eq!(lines[0], sshd.admin_public, "the admin key stays first");
        assert!(
            lines.iter().any(|l| l.ends_with(" ops@laptop")),
            "{lines:#?}"
        );
        assert_eq!(lines.len(), 3, "{lines:#?}");
    }
}
