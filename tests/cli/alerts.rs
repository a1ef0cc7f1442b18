//! Alerts reach the sinks: a real Alertmanager shows the alert and then its resolution; local
//! receivers get the webhook (HMAC checked with the `openssl` tool), Slack and PagerDuty
//! payloads in their documented shapes; one alert per problem, not per attempt; and a sink
//! that is down gets the alert from the durable outbox once it is back, exactly once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers::any};

use crate::generated_config;
use crate::support::{Rotor, alertmanager, require_program};

/// A local receiver that records what it is sent.
pub struct Receiver {
    pub server: MockServer,
    pub seen: Arc<Mutex<Vec<Request>>>,
    _runtime: tokio::runtime::Runtime,
}

impl Receiver {
    pub fn start(status: u16) -> Receiver {
        Self::start_on(None, status)
    }

    pub fn start_on(port: Option<u16>, status: u16) -> Receiver {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
        let record = seen.clone();
        let server = runtime.block_on(async move {
            let builder = MockServer::builder();
            let builder = match port {
                Some(port) => {
                    builder.listener(std::net::TcpListener::bind(("127.0.0.1", port)).unwrap())
                }
                None => builder,
            };
            let server = builder.start().await;
            Mock::given(any())
                .respond_with(move |request: &Request| {
                    record.lock().unwrap().push(request.clone());
                    ResponseTemplate::new(status)
                })
                .mount(&server)
                .await;
            server
        });
        Receiver {
            server,
            seen,
            _runtime: runtime,
        }
    }

    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| serde_json::from_slice(&r.body).unwrap())
            .collect()
    }
}

/// A config whose one credential routes to `sinks` (TOML of `[alerts.*]` tables).
fn config(sinks: &[(&str, String)]) -> String {
    let names: Vec<String> = sinks.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let mut text = generated_config(1, "0s").replace(
        "alerts = [\"log\"]",
        &format!("alerts = [{}]", names.join(", ")),
    );
    for (name, table) in sinks {
        text.push_str(&format!("\n[alerts.{name}]\n{table}\n"));
    }
    text
}

/// Fails one rotation by corrupting the vault file, then restores it. Returns the failed
/// rotation's output.
fn fail_once(rotor: &Rotor) -> std::process::Output {
    let file = rotor.path("vault/app/key0.age");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"not an age file").unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    std::fs::write(&file, good).unwrap();
    out
}

#[test]
fn alertmanager_shows_the_alert_then_its_resolution() {
    let am = alertmanager::shared();
    let rotor = Rotor::new(&config(&[(
        "am",
        format!("kind = \"alertmanager\"\nurl = \"{}\"", am.url),
    )]));
    rotor.ok(&["rotate", "app/key0"]);
    fail_once(&rotor);
    let alerts = am.alerts_for("app/key0");
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["labels"]["alertname"], "RotorRotationFailed");
    assert_eq!(alert["labels"]["condition"], "rolled_back");
    assert_eq!(alert["labels"]["provider"], "generated");
    assert_eq!(alert["status"]["state"], "active");
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .contains("mint failed"),
        "{alert}"
    );

    rotor.ok(&["rotate", "app/key0"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !am.alerts_for("app/key0").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the alert resolves: {:?}",
            am.alerts_for("app/key0")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn each_sink_gets_its_documented_payload_once_per_problem() {
    let (webhook, slack, pagerduty) = (
        Receiver::start(200),
        Receiver::start(200),
        Receiver::start(202),
    );
    let rotor = Rotor::new("");
    std::fs::write(rotor.path("hook-secret"), "hmac-key-for-tests").unwrap();
    std::fs::write(rotor.path("pd-key"), "R0UTINGKEY0123456789ABCDEFGHIJKL").unwrap();
    std::fs::write(
        rotor.path("slack-url"),
        format!("{}/services/T000/B000/XXXX", slack.server.uri()),
    )
    .unwrap();
    let text = config(&[
        (
            "hook",
            format!(
                "kind = \"webhook\"\nurl = \"{}/rotor\"\nsecret = {{ file = \"{}\" }}",
                webhook.server.uri(),
                rotor.path("hook-secret").display()
            ),
        ),
        (
            "chat",
            format!(
                "kind = \"slack\"\nwebhook_url = {{ file = \"{}\" }}",
                rotor.path("slack-url").display()
            ),
        ),
        (
            "pager",
            format!(
                "kind = \"pagerduty\"\nrouting_key = {{ file = \"{}\" }}\nurl = \"{}/v2/enqueue\"",
                rotor.path("pd-key").display(),
                pagerduty.server.uri()
            ),
        ),
    ]);
    std::fs::write(&rotor.config, text).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    fail_once(&rotor);
    fail_once(&rotor);

    // Webhook: one event for two failed attempts, signed over the exact body.
    let hook = webhook.seen.lock().unwrap().clone();
    assert_eq!(hook.len(), 1, "deduplicated");
    let body: serde_json::Value = serde_json::from_slice(&hook[0].body).unwrap();
    assert_eq!(body["event"], "alert.raised");
    assert_eq!(body["credential_id"], "app/key0");
    assert_eq!(body["condition"], "rolled_back");
    assert_eq!(body["dedup_key"], "rotor/app/key0/rolled_back");
    for field in [
        "provider",
        "step",
        "attempt",
        "run_id",
        "cause",
        "action",
        "raised_at",
    ] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
    let signature = hook[0].headers["x-rotor-signature"]
        .to_str()
        .unwrap()
        .to_owned();
    let openssl = require_program("openssl", "apt-get install -y openssl");
    let body_file = rotor.path("received-body");
    std::fs::write(&body_file, &hook[0].body).unwrap();
    let out = std::process::Command::new(openssl)
        .args(["dgst", "-sha256", "-hmac", "hmac-key-for-tests", "-hex"])
        .arg(&body_file)
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&out.stdout)
        .rsplit(' ')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(signature, format!("sha256={expected}"));

    // Slack: the incoming-webhook shape, posted to the secret URL.
    let chat = slack.bodies();
    assert_eq!(chat.len(), 1);
    assert!(chat[0]["text"].as_str().unwrap().contains("`app/key0`"));
    assert_eq!(chat[0]["blocks"][0]["type"], "section");
    assert_eq!(
        slack.seen.lock().unwrap()[0].url.path(),
        "/services/T000/B000/XXXX"
    );

    // PagerDuty: Events API v2 trigger with the routing key and a dedup key.
    let pages = pagerduty.bodies();
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0]["event_action"], "trigger");
    assert_eq!(pages[0]["routing_key"], "R0UTINGKEY0123456789ABCDEFGHIJKL");
    assert_eq!(pages[0]["dedup_key"], "rotor/app/key0/rolled_back");
    assert_eq!(pages[0]["payload"]["source"], "rotor");
    assert_eq!(pages[0]["payload"]["severity"], "critical");
    assert_eq!(pages[0]["payload"]["component"], "app/key0");

    // The next success resolves it everywhere.
    rotor.ok(&["rotate", "app/key0"]);
    assert_eq!(webhook.bodies()[1]["event"], "alert.resolved");
    assert!(
        slack.bodies()[1]["text"]
            .as_str()
            .unwrap()
            .contains("resolved")
    );
    let resolve = &pagerduty.bodies()[1];
    assert_eq!(resolve["event_action"], "resolve");
    assert_eq!(resolve["dedup_key"], "rotor/app/key0/rolled_back");
    // The secrets the sinks need never show up in rotor's output or store.
    let out = rotor.run(&["history", "--json"]);
    crate::support::assert_secrets_absent(
        &[
            "R0UTINGKEY0123456789ABCDEFGHIJKL",
            "/services/T000/B000/XXXX",
        ],
        &out.stdout,
        &rotor.path("vault"),
    );
    let db = std::fs::read(rotor.path("rotor.db")).unwrap();
    assert!(!crate::support::contains(
        &db,
        b"R0UTINGKEY0123456789ABCDEFGHIJKL"
    ));
}

#[test]
fn a_sink_that_is_down_gets_the_alert_from_the_outbox_exactly_once() {
    let port = crate::support::postgres::free_port();
    let rotor = Rotor::new(&config(&[(
        "hook",
        format!("kind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/rotor\"\nunsigned = true"),
    )]));
    rotor.ok(&["rotate", "app/key0"]);
    let out = fail_once(&rotor);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("delivery failed; will retry") && stderr.contains("channel=alert"),
        "{out:?}"
    );

    let receiver = Receiver::start_on(Some(port), 200);
    std::thread::sleep(Duration::from_millis(2200));
    rotor.ok(&["run", "--once"]);
    rotor.ok(&["run", "--once"]);
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["event"], "alert.raised");
}
