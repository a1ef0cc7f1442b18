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

fn start() -> Moto {
    let moto = require_program(
        "moto_server",
        "pip install 'moto[server]' (scripts/test installs it into its Python venv)",
    );
    let port = free_port();
    let server = format!("{} -H 127.0.0.1 -p {port} >/dev/null 2>&1", moto.display());
    let mut shell = Command::new("sh");
    shell.args(["-c", &super::watchdog_script(&server, "TERM")]);
    super::spawn_watchdog(shell, "moto_server");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
