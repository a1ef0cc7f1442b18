//! A real Prometheus Alertmanager (Debian `prometheus-alertmanager`) on a free loopback port,
//! without clustering, started once per test binary.

use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::postgres::free_port;

const INSTALL: &str = "apt-get install -y prometheus-alertmanager";

pub struct Alertmanager {
    pub url: String,
}

pub fn shared() -> &'static Alertmanager {
    static SERVER: OnceLock<Alertmanager> = OnceLock::new();
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    SERVER.get_or_init(start)
}

fn binary() -> std::path::PathBuf {
    ["prometheus-alertmanager", "alertmanager"]
        .iter()
        .find_map(|name| which(name))
        .unwrap_or_else(|| panic!("Alertmanager is not installed; install it with: {INSTALL}"))
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn start() -> Alertmanager {
    let bin = binary();
    let dir = std::env::temp_dir().join(format!("rotor-am-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\n  group_wait: 1s\nreceivers:\n  - name: blackhole\n",
    )
    .unwrap();
    let port = free_port();
    let line = format!(
        "{} --config.file={} --storage.path={} --web.listen-address=127.0.0.1:{port} --cluster.listen-address= >{}/log 2>&1",
        bin.display(),
        config.display(),
        dir.display(),
        dir.display()
    );
    let mut shell = Command::new("sh");
    shell.args(["-c", &super::watchdog_script(&line, "TERM", Some(&dir))]);
    super::spawn_watchdog(shell, "alertmanager");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if super::http_get(&format!("{url}/-/ready")).is_some_and(|(status, _)| status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager did not start on port {port}: {}",
            std::fs::read_to_string(dir.join("log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    Alertmanager { url }
}

impl Alertmanager {
    /// The active alerts whose `credential` label is `credential`.
    pub fn alerts_for(&self, credential: &str) -> Vec<serde_json::Value> {
        let (status, body) =
            super::http_get(&format!("{}/api/v2/alerts", self.url)).expect("GET /api/v2/alerts");
        assert_eq!(status, 200, "{body}");
        let all: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        all.into_iter()
            .filter(|a| a["labels"]["credential"] == credential)
            .collect()
    }
}
