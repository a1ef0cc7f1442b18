//! Traces over OTLP/HTTP: a local receiver (the collector's `/v1/traces` endpoint) gets the
//! spans of a rotation, one per step, carrying the credential id and the run id, and one per
//! notification of a consumer hook.

use std::sync::{Arc, Mutex};

use wiremock::{Mock, MockServer, Request, ResponseTemplate, matchers::any};

use crate::generated_config;
use crate::support::{Rotor, contains};

#[test]
fn a_rotation_sends_a_span_per_step_with_its_ids() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seen: Arc<Mutex<Vec<Request>>> = Arc::default();
    let record = seen.clone();
    let collector = runtime.block_on(async move {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(move |r: &Request| {
                record.lock().unwrap().push(r.clone());
                ResponseTemplate::new(200)
            })
            .mount(&server)
            .await;
        server
    });
    // With a hook, whose delivery is a span of its own.
    let config = generated_config(1, "0s").replace(
        "rotator = { kind = \"generated\"",
        "notify = [\"reload-app\"]\nrotator = { kind = \"generated\"",
    ) + "\n[hooks.reload-app]\nkind = \"command\"\ncommand = [\"/bin/true\"]\n";
    let rotor = Rotor::new(&config);
    rotor.ok(&["--otlp-endpoint", &collector.uri(), "rotate", "app/key0"]);
    let run_id = rotor.json(&["history", "app/key0", "--json"])[0]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty(), "the collector received nothing");
    assert!(requests.iter().all(|r| r.url.path() == "/v1/traces"));
    assert!(requests.iter().all(|r| r.method.as_str() == "POST"));
    assert_eq!(
        requests[0].headers["content-type"].to_str().unwrap(),
        "application/x-protobuf"
    );
    // The OTLP protobuf carries attribute strings as they are.
    let body: Vec<u8> = requests.iter().flat_map(|r| r.body.clone()).collect();
    for expected in [
        "rotor",
        "step",
        "app/key0",
        run_id.as_str(),
        "mint",
        "apply",
        "verify",
        "promote",
        "retire",
        "credential",
        "run",
        "notify",
        "reload-app",
        "promoted",
    ] {
        assert!(
            contains(&body, expected.as_bytes()),
            "{expected} is in the spans"
        );
    }
    // And no secret value.
    let value = crate::rotation::read_document(&rotor, "app/key0")["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!contains(&body, value.as_bytes()));
    drop(collector);
}
