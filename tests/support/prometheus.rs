//! A real Prometheus (Debian `prometheus`) on a free loopback port, scraping one target every
//! second; one per test that needs it, stopped when the test process exits.

use std::process::Command;
use std::time::{Duration, Instant};

use super::postgres::free_port;
use super::require_program;

const INSTALL: &str = "apt-get install -y prometheus";

pub struct Prometheus {
    pub url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    pub fn scraping(target: &str) -> Prometheus {
        let bin = require_program("prometheus", INSTALL);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rotor\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let line = format!(
            "{} --config.file={} --storage.tsdb.path={} --web.listen-address=127.0.0.1:{port} >{}/log 2>&1",
            bin.display(),
            config.display(),
            dir.path().join("data").display(),
            dir.path().display()
        );
        let mut shell = Command::new("sh");
        shell.args(["-c", &super::watchdog_script(&line, "TERM", None)]);
        super::spawn_watchdog(shell, "prometheus");
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while super::http_get(&format!("{url}/-/ready")).is_none_or(|(s, _)| s != 200) {
            assert!(
                Instant::now() < deadline,
                "Prometheus did not start: {}",
                std::fs::read_to_string(dir.path().join("log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Prometheus { url, _dir: dir }
    }

    /// The value of an instant query's single result, if there is one.
    pub fn value(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) =
            super::http_get(&format!("{}/api/v1/query?query={encoded}", self.url))?;
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        json["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    /// Waits until `query` has a value satisfying `ok`.
    pub fn wait_for(&self, query: &str, ok: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = self.value(query).filter(|v| ok(*v)) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus never saw {query} as expected (last: {:?})",
                self.value(query)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}
