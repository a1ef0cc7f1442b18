//! A real MariaDB for the tests: `mariadb-install-db` in a temp folder, `mariadbd` on a free
//! loopback port, started once per test binary and stopped when the test process exits. The
//! harness administers it as `root` from 127.0.0.1 (no password); every account rotor touches
//! gets a real password. The server also speaks TLS, with a certificate for 127.0.0.1 signed by
//! a throwaway CA (`ca()`), for the tests that check rotor verifies it.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres::free_port;
use super::require_program;

const INSTALL: &str = "apt-get install -y mariadb-server mariadb-client";

pub struct MariaDb {
    pub port: u16,
    pub dir: PathBuf,
}

pub fn shared() -> &'static MariaDb {
    static SERVER: OnceLock<MariaDb> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(start)
}

fn start() -> MariaDb {
    let install = require_program("mariadb-install-db", INSTALL);
    require_program("mariadb", INSTALL);
    let server = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`mariadbd` is not installed; install it with: {INSTALL}"));
    let dir = std::env::temp_dir().join(format!(
        "rotor-mariadb-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    // As root, mariadbd runs only when told to; as anyone else, as that user.
    let user = if super::postgres::is_root() {
        "--user=root"
    } else {
        ""
    };
    let out = Command::new(&install)
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .args((!user.is_empty()).then_some(user))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run mariadb-install-db ({e}); install it with: {INSTALL}")
        });
    assert!(
        out.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = dir.join("tls");
    std::fs::create_dir_all(&certs).unwrap();
    super::tls::make_certificates(&certs);
    let port = free_port();
    let line = format!(
        "{} --no-defaults --datadir={d} --socket={s}/mariadb.sock --pid-file={s}/mariadb.pid \
         --port={port} --bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin \
         --innodb-flush-log-at-trx-commit=0 --max-connections=300 {user} \
         --ssl-cert={s}/tls/server.pem --ssl-key={s}/tls/server.key --ssl-ca={s}/tls/ca.pem \
         >{s}/server.log 2>&1",
        server.display(),
        d = data.display(),
        s = dir.display(),
    );
    let mut shell = Command::new("sh");
    shell.args(["-c", &super::watchdog_script(&line, "TERM", Some(&dir))]);
    super::spawn_watchdog(shell, "mariadbd");
    let db = MariaDb { port, dir };
    let deadline = Instant::now() + Duration::from_secs(60);
    while db.sql("SELECT 1").is_err() {
        assert!(
            Instant::now() < deadline,
            "mariadbd did not start on port {port}: {}",
            std::fs::read_to_string(db.dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    db
}

impl MariaDb {
    /// Runs `sql` with the `mariadb` client as `root` over TCP; `Err` holds what the server
    /// said. Rows come back tab-separated, without column names.
    pub fn sql(&self, sql: &str) -> Result<String, String> {
        self.sql_as(None, sql)
    }

    /// `sql` as `(user, password)` (the password goes through MYSQL_PWD, not the command
    /// line), or as `root`.
    pub fn sql_as(&self, login: Option<(&str, &str)>, sql: &str) -> Result<String, String> {
        let mut cmd = Command::new("mariadb");
        cmd.args([
            "--no-defaults",
            "-h",
            "127.0.0.1",
            "-P",
            &self.port.to_string(),
        ])
        .args(["--batch", "--skip-column-names", "--skip-ssl"])
        .env_remove("MYSQL_PWD");
        match login {
            Some((user, password)) => {
                cmd.args(["-u", user]).env("MYSQL_PWD", password);
            }
            None => {
                cmd.args(["-u", "root"]);
            }
        }
        let out = cmd
            .args(["-e", sql])
            .output()
            .unwrap_or_else(|e| panic!("cannot run mariadb ({e}); install it with: {INSTALL}"));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// `sql` as root, panicking on refusal.
    pub fn ok(&self, sql: &str) -> String {
        self.sql(sql)
            .unwrap_or_else(|e| panic!("mariadb -e {sql:?}: {e}"))
    }

    /// The PEM file of the CA that signs the server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("tls").join("ca.pem")
    }

    pub fn url(&self, user: &str) -> String {
        format!("mysql://{user}@127.0.0.1:{}/app", self.port)
    }
}
