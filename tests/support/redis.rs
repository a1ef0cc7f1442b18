//! A real Redis for the tests: `redis-server` (Debian package) on a free loopback port without
//! persistence, started once per test binary and stopped when the test process exits.
//! `default` stays password-less for the harness; the users rotor touches get real passwords.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres::free_port;
use super::require_program;

const INSTALL: &str = "apt-get install -y redis-server";

pub struct Redis {
    pub port: u16,
}

pub fn shared() -> &'static Redis {
    static SERVER: OnceLock<Redis> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(start)
}

fn start() -> Redis {
    start_with(free_port(), "")
}

/// A server of its own that also speaks TLS on the returned port, with a certificate for
/// 127.0.0.1 signed by a throwaway CA (`dir/ca.pem`, see `tls::make_certificates`); the
/// returned `Redis` administers it over plain TCP on loopback.
pub fn start_tls(dir: &std::path::Path) -> (Redis, u16) {
    super::tls::make_certificates(dir);
    let tls_port = free_port();
    let d = dir.display();
    let tls = format!(
        " --tls-port {tls_port} --tls-cert-file {d}/server.pem --tls-key-file {d}/server.key \
         --tls-ca-cert-file {d}/ca.pem --tls-auth-clients no"
    );
    (start_with(free_port(), &tls), tls_port)
}

fn start_with(port: u16, extra: &str) -> Redis {
    let server = require_program("redis-server", INSTALL);
    require_program("redis-cli", INSTALL);
    let line = format!(
        "{} --bind 127.0.0.1 --port {port} --save '' --appendonly no --protected-mode no{extra} >/dev/null 2>&1",
        server.display()
    );
    let mut shell = Command::new("sh");
    shell.args(["-c", &super::watchdog_script(&line, "TERM", None)]);
    super::spawn_watchdog(shell, "redis-server");
    let deadline = Instant::now() + Duration::from_secs(30);
    let redis = Redis { port };
    while redis
        .cli(None, &["PING"])
        .map(|o| o != "PONG")
        .unwrap_or(true)
    {
        assert!(
            Instant::now() < deadline,
            "redis-server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    redis
}

impl Redis {
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` as the `default` user, or as `(user, password)` (the password goes
    /// through REDISCLI_AUTH, not the command line). `Err` holds what the server refused.
    pub fn cli(&self, login: Option<(&str, &str)>, args: &[&str]) -> Result<String, String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("--no-auth-warning")
            .env_remove("REDISCLI_AUTH");
        if let Some((user, password)) = login {
            cmd.args(["--user", user]).env("REDISCLI_AUTH", password);
        }
        let out = cmd
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli ({e}); install it with: {INSTALL}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim()
        .to_owned();
        let refused = [
            "ERR",
            "WRONGPASS",
            "NOPERM",
            "AUTH failed",
            "Could not connect",
        ];
        if !out.status.success() || refused.iter().any(|r| text.contains(r)) {
            Err(text)
        } else {
            Ok(text)
        }
    }

    /// `cli` as `default`, panicking on refusal.
    pub fn ok(&self, args: &[&str]) -> String {
        self.cli(None, args)
            .unwrap_or_else(|e| panic!("redis-cli {args:?}: {e}"))
    }
}
