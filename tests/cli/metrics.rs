//! `/metrics`, `/healthz` and `/readyz` of a running daemon, scraped by a real Prometheus: a
//! series for every configured credential from startup, then a success and a failure seen
//! through Prometheus's query API; `promtool check metrics` accepts the exposition; and a
//! restart that Prometheus scrapes across without a counter reset.

use std::time::Duration;

use crate::generated_config;
use crate::support::prometheus::Prometheus;
use crate::support::{Rotor, http_get, postgres::free_port, require_program};

#[test]
fn prometheus_scrapes_rotations_and_failures() {
    let rotor = Rotor::new(&generated_config(2, "0s"));
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut daemon = serving(&rotor, &addr);
    let metrics_url = format!("http://{addr}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some((200, body)) = http_get(&metrics_url) {
            break body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon never served /metrics"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Every configured credential has its series from the first scrape.
    for id in ["app/key0", "app/key1"] {
        assert!(
            first.contains(&format!(
                "rotor_rotations_total{{credential=\"{id}\",provider=\"generated\",outcome=\"rolled_back\"}}"
            )),
            "{first}"
        );
    }
    assert_eq!(http_get(&format!("http://{addr}/healthz")).unwrap().0, 200);
    assert_eq!(http_get(&format!("http://{addr}/readyz")).unwrap().0, 200);

    let prometheus = Prometheus::scraping(&addr);
    // The daemon mints both on its first pass; then app/key1 fails once.
    prometheus.wait_for(
        "rotor_rotations_total{credential=\"app/key0\",outcome=\"completed\"}",
        |v| v >= 1.0,
    );
    let file = rotor.path("vault/app/key1.age");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"garbage").unwrap();
    rotor.ok(&["rotate", "app/key1", "--no-wait"]);
    prometheus.wait_for(
        "rotor_rotations_total{credential=\"app/key1\",outcome=\"rolled_back\"}",
        |v| v >= 1.0,
    );
    prometheus.wait_for(
        "rotor_alerts_active{credential=\"app/key1\",condition=\"rolled_back\"}",
        |v| v == 1.0,
    );
    prometheus.wait_for("rotor_consecutive_failures{credential=\"app/key1\"}", |v| {
        v == 1.0
    });
    let age = prometheus.wait_for(
        "rotor_credential_age_seconds{credential=\"app/key0\"}",
        |v| v >= 0.0,
    );
    assert!(age < 600.0, "{age}");
    prometheus.wait_for("rotor_scheduler_lag_seconds_count", |v| v >= 2.0);
    std::fs::write(&file, good).unwrap();

    // Every alert condition has its series, so that every rule on one has a series to read.
    let (_, body) = http_get(&metrics_url).unwrap();
    for condition in rotor::alert::Condition::ALL {
        let series = format!(
            "rotor_alerts_active{{credential=\"app/key0\",provider=\"generated\",condition=\"{}\"}}",
            condition.as_str()
        );
        assert!(body.contains(&series), "{series} missing: {body}");
    }
    promtool_accepts(&body);

    // Prometheus asked for OpenMetrics; a client that asks for nothing got the classic format.
    let (_, open) = crate::support::http_get_accepting(
        &metrics_url,
        "application/openmetrics-text; version=1.0.0",
    )
    .unwrap();
    assert!(open.ends_with("# EOF\n"), "{open}");
    assert!(!body.contains("# EOF"), "{body}");

    // Restarted on the same address, the daemon reports what it reported before: the counters
    // come from the store, so Prometheus sees no reset (a reset would read as lost history).
    let completed = "rotor_rotations_total{credential=\"app/key0\",outcome=\"completed\"}";
    let before = prometheus.wait_for(completed, |v| v >= 1.0);
    let durations = "rotor_rotation_duration_seconds_count{credential=\"app/key0\"}";
    let durations_before = prometheus.wait_for(durations, |v| v >= 1.0);
    stop(&mut daemon);
    prometheus.wait_for("up{job=\"rotor\"}", |v| v == 0.0);
    let mut daemon = serving(&rotor, &addr);
    prometheus.wait_for("up{job=\"rotor\"}", |v| v == 1.0);
    // Two scrapes of the new process, at least, within the range below.
    prometheus.wait_for("count_over_time(up{job=\"rotor\"}[3s])", |v| v >= 2.0);
    assert_eq!(prometheus.wait_for(completed, |_| true), before);
    assert_eq!(prometheus.wait_for(durations, |_| true), durations_before);
    let resets = format!("sum(resets({completed}[5m])) + sum(resets({durations}[5m]))");
    assert_eq!(prometheus.wait_for(&resets, |_| true), 0.0, "{resets}");
    stop(&mut daemon);
}

/// Above `[metrics] per_credential_up_to` credentials, `/metrics` has one set of series per
/// provider kind: what a Prometheus keeps does not grow with the credentials, and the counts
/// still say how many credentials are in each condition.
#[test]
fn above_the_configured_size_the_series_are_per_provider() {
    let config = format!(
        "{}\n[metrics]\nper_credential_up_to = 2\n",
        generated_config(3, "0s")
    );
    let rotor = Rotor::new(&config);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut daemon = serving(&rotor, &addr);
    let metrics_url = format!("http://{addr}/metrics");
    let scrape_until = |what: &str, done: &dyn Fn(&str) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, body)) = http_get(&metrics_url)
                && done(&body)
            {
                return body;
            }
            assert!(std::time::Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The daemon's first pass gives each of the three its first version.
    let body = scrape_until("three rotations completed", &|body| {
        body.contains("rotor_rotations_total{provider=\"generated\",outcome=\"completed\"} 3")
    });
    assert!(
        !body.contains("credential=\""),
        "no series per credential: {body}"
    );
    for line in [
        "rotor_provider_credentials{provider=\"generated\"} 3",
        "rotor_provider_failing{provider=\"generated\"} 0",
        "rotor_provider_past_max_age{provider=\"generated\"} 0",
        "rotor_credential_paused{provider=\"generated\"} 0",
        "rotor_rotation_duration_seconds_count{provider=\"generated\"} 3",
        "rotor_alerts_active{provider=\"generated\",condition=\"rolled_back\"} 0",
        "rotor_credentials 3",
    ] {
        assert!(body.contains(line), "{line} missing: {body}");
    }
    promtool_accepts(&body);

    // One of them fails and one is paused: the provider's counts say so.
    let file = rotor.path("vault/app/key1.age");
    std::fs::write(&file, b"garbage").unwrap();
    rotor.ok(&["rotate", "app/key1", "--no-wait"]);
    rotor.ok(&["pause", "app/key2", "--reason", "maintenance"]);
    let body = scrape_until("the failure counted", &|body| {
        body.contains("rotor_alerts_active{provider=\"generated\",condition=\"rolled_back\"} 1")
    });
    for line in [
        "rotor_rotations_total{provider=\"generated\",outcome=\"rolled_back\"} 1",
        "rotor_provider_failing{provider=\"generated\"} 1",
        "rotor_credential_paused{provider=\"generated\"} 1",
    ] {
        assert!(body.contains(line), "{line} missing: {body}");
    }
    stop(&mut daemon);
}

/// `promtool check metrics` accepts the exposition.
fn promtool_accepts(body: &str) {
    let promtool = require_program("promtool", "apt-get install -y prometheus");
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rotor run` serving its endpoints on `addr`.
fn serving(rotor: &Rotor, addr: &str) -> Running {
    Running(Some(
        rotor
            .command(&["run", "--listen", addr, "--poll", "1s"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

/// A daemon killed if the test fails before stopping it, so that no process outlives the test
/// holding its output open.
struct Running(Option<std::process::Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn stop(daemon: &mut Running) {
    let mut daemon = daemon.0.take().expect("the daemon was started");
    let stopped = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "SIGTERM stops the daemon cleanly: {status:?}"
    );
}
