//! A local AWS for the tests: `moto_server` (pip install 'moto[server]') on a free loopback
//! port, started once per test binary and stopped when the test process exits.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres::free_port;
use super::require_program;

pub struct Moto {
    pub endpoint: String,
}

pub fn shared() -> &'static Moto {
    static SERVER: OnceLock<Moto> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(start)
}

/// Starts `moto_server` on a free port; `env` goes before the command (e.g. auth settings).
fn launch(env: &str) -> u16 {
    let moto = require_program(
        "moto_server",
        "pip install 'moto[server]' (scripts/test installs it into its Python venv)",
    );
    let port = free_port();
    let server = format!(
        "{env} {} -H 127.0.0.1 -p {port} >/dev/null 2>&1",
        moto.display()
    );
    let mut shell = Command::new("sh");
    shell.args(["-c", &super::watchdog_script(&server, "TERM", None)]);
    super::spawn_watchdog(shell, "moto_server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    port
}

fn start() -> Moto {
    let port = launch("");
    // The standard AWS credential chain reads these; moto accepts any key in its default mode.
    // Set once, under the start lock, before any test of this binary talks to AWS.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::remove_var("AWS_PROFILE");
    }
    Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
    }
}

impl Moto {
    /// An SDK client for checking what AWS-native consumers see.
    pub async fn client(&self) -> aws_sdk_secretsmanager::Client {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("eu-west-1"))
            .endpoint_url(&self.endpoint)
            .load()
            .await;
        aws_sdk_secretsmanager::Client::new(&config)
    }
}

/// A second moto that authenticates like AWS: after its first `NO_AUTH` requests, every
/// request must be signed by a key that exists, and IAM policies are enforced. Those first
/// requests create `harness-root` (allowed everything), whose key the tests then use.
pub struct AuthenticatingMoto {
    pub endpoint: String,
    pub root: aws_sdk_iam::config::Credentials,
}

const NO_AUTH: usize = 3;

pub fn authenticating() -> &'static AuthenticatingMoto {
    static SERVER: OnceLock<AuthenticatingMoto> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(|| {
        let port = launch(&format!("INITIAL_NO_AUTH_ACTION_COUNT={NO_AUTH}"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let anyone = aws_sdk_iam::config::Credentials::new("HARNESS-SETUP", "harness", None, None, "harness");
        let root = block_on(async {
            let iam = iam_client(&endpoint, anyone);
            // Exactly NO_AUTH requests.
            iam.create_user().user_name("harness-root").send().await.expect("create harness-root");
            iam.put_user_policy()
                .user_name("harness-root")
                .policy_name("everything")
                .policy_document(r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#)
                .send()
                .await
                .expect("allow harness-root everything");
            let key = iam.create_access_key().user_name("harness-root").send().await.expect("harness-root key");
            let key = key.access_key().expect("a key");
            aws_sdk_iam::config::Credentials::new(key.access_key_id(), key.secret_access_key(), None, None, "harness")
        });
        AuthenticatingMoto { endpoint, root }
    })
}

pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

pub fn iam_client(
    endpoint: &str,
    credentials: aws_sdk_iam::config::Credentials,
) -> aws_sdk_iam::Client {
    let config = aws_sdk_iam::config::Builder::new()
        .behavior_version(aws_sdk_iam::config::BehaviorVersion::latest())
        .region(aws_sdk_iam::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .build();
    aws_sdk_iam::Client::from_conf(config)
}

pub fn sts_client(
    endpoint: &str,
    credentials: aws_sdk_sts::config::Credentials,
) -> aws_sdk_sts::Client {
    let config = aws_sdk_sts::config::Builder::new()
        .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
        .region(aws_sdk_sts::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(credentials)
        .build();
    aws_sdk_sts::Client::from_conf(config)
}

impl AuthenticatingMoto {
    pub fn iam(&self) -> aws_sdk_iam::Client {
        iam_client(&self.endpoint, self.root.clone())
    }
}
