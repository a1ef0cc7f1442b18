//! Test harness: real servers on loopback (started once per test binary) and a small builder
//! that drives the real `rotor` binary in a scratch folder.
#![allow(dead_code)]

pub mod alertmanager;
pub mod cloudflare;
pub mod gcp;
pub mod github;
pub mod kubernetes;
pub mod mariadb;
pub mod moto;
pub mod openai;
pub mod openbao;
pub mod outage;
pub mod postgres;
pub mod prometheus;
pub mod redirect;
pub mod redis;
pub mod saas;
pub mod sendgrid;
pub mod sshd;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

/// A scratch folder with a config, a SQLite store and a file vault, and the binary to run.
pub struct Rotor {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub database: Option<String>,
    /// How far ahead of the system clock the processes started from now on live (see
    /// `advance`).
    clock_offset_ms: AtomicI64,
}

impl Rotor {
    /// A scratch folder whose config is `config` (paths in it are relative to the folder).
    pub fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("rotor.toml");
        std::fs::write(&path, config).expect("write config");
        Rotor {
            dir,
            config: path,
            database: None,
            clock_offset_ms: AtomicI64::new(0),
        }
    }

    /// Moves the clock of every process started from now on forward by `by`: past a grace
    /// period, a lease or a backoff, without sleeping through it. Time only moves forward,
    /// so what earlier processes saved stays in the past.
    pub fn advance(&self, by: Duration) {
        self.clock_offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }

    /// Puts the store in PostgreSQL database `url`, with the integrity key such a store needs
    /// (`[store] key`, a file of its own beside the config).
    pub fn use_postgres(&mut self, url: String) {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut key = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(self.path("store.key"))
            .expect("a new key file");
        writeln!(key, "{}", hex::encode(rand::random::<[u8; 32]>())).unwrap();
        let mut config = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.config)
            .unwrap();
        writeln!(
            config,
            "\n[store]\nkey = {{ file = \"{}\" }}",
            self.path("store.key").display()
        )
        .unwrap();
        self.database = Some(url);
    }

    /// `digest` as this installation shows it: keyed under the store's integrity key (the
    /// file beside the SQLite store, or the one `use_postgres` wrote), `hmac-sha256:` and hex.
    pub fn shown_fingerprint(&self, digest: &rotor_rotators::Fingerprint) -> String {
        let file = if self.database.is_some() {
            self.path("store.key")
        } else {
            self.path("rotor.db.key")
        };
        let text = std::fs::read_to_string(&file).expect("the store's integrity key");
        let integrity = rotor::store::integrity::IntegrityKey::from_secret(
            &secrecy::SecretString::from(text.trim_end().to_owned()),
        )
        .unwrap();
        let keyed = integrity.fingerprint_key().of(digest);
        rotor::fingerprint::shown(&keyed)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rotor"));
        cmd.current_dir(self.dir.path())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("ROTOR_FAILPOINT")
            .env_remove("ROTOR_DATABASE_URL")
            .env(
                "ROTOR_TEST_CLOCK_OFFSET_MS",
                self.clock_offset_ms.load(Ordering::SeqCst).to_string(),
            )
            .stdin(Stdio::null());
        if let Some(db) = &self.database {
            cmd.arg("--database").arg(db);
        }
        cmd
    }

    /// Runs to completion and returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run rotor")
    }

    /// Runs and asserts exit code 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        self.ok_with_env(args, &[])
    }

    /// Runs with extra environment variables (credentials for a server) and asserts exit 0.
    pub fn ok_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let out = self
            .command(args)
            .envs(env.iter().copied())
            .output()
            .expect("run rotor");
        assert!(
            out.status.success(),
            "rotor {args:?} failed with {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ok(args);
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }

    /// Runs `rotor run --once` every `every` until the latest run of `id` completes, at most
    /// 20 times; returns that run's last state.
    pub fn run_until_completed(&self, id: &str, every: std::time::Duration) -> String {
        let mut state = String::new();
        for _ in 0..20 {
            std::thread::sleep(every);
            self.ok(&["run", "--once"]);
            state = self.json(&["history", id, "--json"])[0]["state"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if state == "completed" {
                break;
            }
        }
        state
    }

    /// The error of step `step` in the latest run of `id`, from `history --json`.
    pub fn step_error(&self, id: &str, step: &str) -> String {
        let history = self.json(&["history", id, "--json"]);
        history[0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == step)
            .unwrap_or_else(|| panic!("no {step} step: {history}"))["error"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The store URL of this scratch folder.
    pub fn store_url(&self) -> String {
        self.database
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.path("rotor.db").display()))
    }
}

/// Spawns with piped stderr and waits until a line containing `marker` appears. `Err` with
/// the stderr seen when the process exits before that.
pub fn spawn_until(
    mut cmd: Command,
    marker: &str,
    timeout: Duration,
) -> Result<(Child, String), String> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn rotor");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining after the caller stops listening: a closed pipe would make the
        // child's log writes fail.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = String::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                seen.push_str(&line);
                seen.push('\n');
                if line.contains(marker) {
                    return Ok((child, seen));
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(_)) = child.try_wait() {
                    // Drain what is left of stderr, then report.
                    while let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
                        if line.contains(marker) {
                            return Ok((child, seen));
                        }
                        seen.push_str(&line);
                        seen.push('\n');
                    }
                    return Err(seen);
                }
            }
            Err(_) => {
                let _ = child.wait();
                return Err(seen);
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("rotor did not print {marker:?} within {timeout:?}; stderr:\n{seen}");
}

/// Fails with the command that installs a missing program, never skips.
pub fn require_program(program: &str, install: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{program}` is not installed; install it with: {install}"))
}

/// A 2048-bit RSA key pair made by the `openssl` tool: the private key's PKCS#8 PEM file
/// `dir/STEM.pem` and the public key's PEM text (what a fake checks signatures with).
pub fn rsa_key_pair(dir: &Path, stem: &str) -> (PathBuf, String) {
    let openssl = require_program("openssl", "apt-get install -y openssl");
    let private = dir.join(format!("{stem}.pem"));
    let run = |args: &[&str]| {
        let out = Command::new(&openssl).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let path = private.to_str().unwrap();
    run(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path,
    ]);
    let public = run(&["pkey", "-in", path, "-pubout"]);
    (private, String::from_utf8(public).unwrap())
}

/// Every byte of every file under `dir` (the store and its WAL, vault files...).
pub fn all_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p) {
                out.push((p, bytes));
            }
        }
    }
    out
}

pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Fails if any of `secrets` appears in `output` (logs, CLI output) or in any file under `dir`
/// (the store and its WAL among them).
pub fn assert_secrets_absent(secrets: &[&str], output: &[u8], dir: &Path) {
    for secret in secrets {
        assert!(
            !contains(output, secret.as_bytes()),
            "a secret value appears in the output"
        );
        for (path, bytes) in all_bytes(dir) {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "a secret value is in {}",
                path.display()
            );
        }
    }
}

/// A shell line that runs `server` in the background and stops it with `signal` when this test
/// process exits, however it exits, then removes `leftover` (the server's data folder, ~150 MiB
/// for PostgreSQL: a day of test runs filled the disk). A server that stops while the tests
/// still run (a restart) keeps its folder. It watches /proc rather than `kill -0`, which fails
/// across users when the tests run as root and the server as another user.
pub fn watchdog_script(server: &str, signal: &str, leftover: Option<&std::path::Path>) -> String {
    let me = std::process::id();
    let cleanup = leftover.map_or(String::new(), |dir| {
        format!("; [ -d /proc/{me} ] || rm -rf '{}'", dir.display())
    });
    format!(
        "{server} & s=$!; while [ -d /proc/{me} ] && kill -0 $s 2>/dev/null; do sleep 0.5; done; \
         kill -{signal} $s; wait $s{cleanup}"
    )
}

/// Spawns a `watchdog_script` shell. The handle is dropped on purpose: the shell outlives it
/// and is reaped when the test process exits.
pub fn spawn_watchdog(mut shell: Command, what: &str) {
    #[allow(clippy::zombie_processes)]
    let _watchdog = shell
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
}

/// A GET with rotor's own HTTP client: the status and body, or `None` when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    http_get_with(url, None)
}

/// `http_get` with an `Accept` header.
pub fn http_get_accepting(url: &str, accept: &str) -> Option<(u16, String)> {
    http_get_with(url, Some(accept))
}

fn http_get_with(url: &str, accept: Option<&str>) -> Option<(u16, String)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let mut request = reqwest::Client::new().get(url);
            if let Some(accept) = accept {
                request = request.header(reqwest::header::ACCEPT, accept);
            }
            let response = request.send().await.ok()?;
            let status = response.status().as_u16();
            Some((status, response.text().await.ok()?))
        })
}

/// The token a request presents as `Authorization: Bearer <token>`, for the HTTP fakes.
pub fn bearer(request: &wiremock::Request) -> Option<String> {
    request
        .headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// A wiremock server answering every request with `api`, started on a runtime of its own:
/// wiremock serves from its own thread, so the `rotor` processes a test starts can call it.
/// The runtime must live as long as the server.
pub fn serve(
    api: impl wiremock::Respond + 'static,
) -> (wiremock::MockServer, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(api)
            .mount(&server)
            .await;
        server
    });
    (server, runtime)
}

/// A config with `n` generated credentials in a file vault, with the given grace.
pub fn generated_config(n: usize, grace: &str) -> String {
    let mut text = format!(
        r#"
[defaults]
grace = "{grace}"
alerts = ["log"]
retry = {{ max_attempts = 3, initial = "1s", max = "2s" }}

[vaults.local]
kind = "file"
dir = "vault"
identity = {{ file = "vault.key" }}

[alerts.log]
kind = "log"
"#
    );
    for i in 0..n {
        text.push_str(&format!(
            "\n[[credential]]\nid = \"app/key{i}\"\nschedule = {{ every = \"30d\" }}\nvault = {{ name = \"local\", path = \"app/key{i}\" }}\nrotator = {{ kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }}\n"
        ));
    }
    text
}
