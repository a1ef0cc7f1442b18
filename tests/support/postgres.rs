//! A real PostgreSQL for the tests: `initdb` in a temp folder, `postgres` on a free loopback
//! port, started once per test binary and stopped when the test process exits.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Postgres {
    pub port: u16,
    pub dir: PathBuf,
    pub bin: PathBuf,
    /// The server's command line and whether it runs as the `postgres` user, to restart it.
    command: String,
    as_root: bool,
}

const INSTALL: &str = "apt-get install -y postgresql";

fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BIN") {
        return dir.into();
    }
    let base = PathBuf::from("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(&base)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL server binaries not found under {}; install them with: {INSTALL}",
            base.display()
        )
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The shared server of this test binary.
pub fn shared() -> &'static Postgres {
    static SERVER: OnceLock<Postgres> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    // One attempt at a time: a failed start is reported once, not retried by every test.
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(start)
}

fn start() -> Postgres {
    start_with(false)
}

/// A server of its own that also accepts TLS, with a certificate for 127.0.0.1 signed by a
/// throwaway CA; returns it and the CA's PEM file (for `sslrootcert`).
pub fn dedicated_tls() -> (Postgres, std::path::PathBuf) {
    let server = start_with(true);
    let ca = server.dir.join("tls").join("ca.pem");
    (server, ca)
}

fn start_with(tls: bool) -> Postgres {
    let bin = bin_dir();
    let dir = std::env::temp_dir().join(format!("rotor-pg-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("pg dir");
    let data = dir.join("data");
    let mut ssl = String::new();
    if tls {
        let certs = dir.join("tls");
        std::fs::create_dir_all(&certs).unwrap();
        super::tls::make_certificates(&certs);
        use std::os::unix::fs::PermissionsExt;
        // PostgreSQL refuses a key others can read.
        std::fs::set_permissions(
            certs.join("server.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        ssl = format!(
            " -c ssl=on -c ssl_cert_file={d}/server.pem -c ssl_key_file={d}/server.key",
            d = certs.display()
        );
    }
    // initdb and postgres refuse to run as root: drop to the postgres user when we are root.
    let as_root = std::env::var("USER").map(|u| u == "root").unwrap_or(false) || is_root();
    if as_root {
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
    }
    let run = |args: Vec<String>| -> Command {
        if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).args(args);
            c
        } else {
            let mut c = Command::new(&args[0]);
            c.args(&args[1..]);
            c
        }
    };
    let initdb = run(vec![
        bin.join("initdb").display().to_string(),
        "-D".into(),
        data.display().to_string(),
        "-U".into(),
        "rotor".into(),
        "--auth=trust".into(),
        "--no-sync".into(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .output()
    .unwrap_or_else(|e| panic!("cannot run initdb ({e}); install PostgreSQL with: {INSTALL}"));
    assert!(
        initdb.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&initdb.stderr)
    );
    // The harness's superuser `rotor` gets in without a password; every other role must
    // present a real SCRAM password, so the rotator tests see wrong passwords refused.
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhost all rotor 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .expect("write pg_hba.conf");
    if as_root {
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(data.join("pg_hba.conf"))
            .status();
    }
    let port = free_port();
    let server = format!(
        "{} -D {} -p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200{ssl}",
        bin.join("postgres").display(),
        data.display(),
        dir.display(),
    );
    let postgres = Postgres {
        port,
        dir,
        bin,
        command: server,
        as_root,
    };
    postgres.launch();
    postgres
}

/// A server of its own, for a test that restarts it.
pub fn dedicated() -> Postgres {
    start()
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

impl Postgres {
    /// Starts the server process (stopped with the test process by a watchdog) and waits
    /// until it accepts connections.
    fn launch(&self) {
        let script = super::watchdog_script(&self.command, "INT", Some(&self.dir));
        let shell = if self.as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "sh", "-c", &script]);
            c
        } else {
            let mut c = Command::new("sh");
            c.args(["-c", &script]);
            c
        };
        super::spawn_watchdog(shell, "postgres");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not start on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Stops the server (fast shutdown: every connection is cut), keeps it down for `down`,
    /// and starts it again on the same port and data.
    pub fn restart(&self, down: Duration) {
        self.stop();
        std::thread::sleep(down);
        self.launch();
    }

    /// Starts a server `stop` stopped, on the same port and data.
    pub fn start_again(&self) {
        self.launch();
    }

    /// Stops the server (fast shutdown: every connection is cut) and waits until it is gone.
    pub fn stop(&self) {
        let pid_file = self.dir.join("data/postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file)
            .expect("postmaster.pid")
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            Command::new("kill")
                .args(["-INT", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while pid_file.exists() {
            assert!(Instant::now() < deadline, "PostgreSQL did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL as the superuser on database `db`; panics with psql's message on failure.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "rotor",
                "-d",
                db,
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run psql ({e}); install it with: apt-get install -y postgresql-client"
                )
            });
        assert!(
            out.status.success(),
            "psql {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// A new empty database on the shared server; returns its URL.
    pub fn database(&self, name: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "rotor",
                "-d",
                "postgres",
                "-c",
            ])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run psql ({e}); install it with: apt-get install -y postgresql-client"
                )
            });
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://rotor@127.0.0.1:{}/{name}", self.port)
    }
}
