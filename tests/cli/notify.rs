//! Consumers hear that a credential changed: a signed webhook (HMAC checked with the `openssl`
//! tool), a local program (event on stdin, fixed environment, exit code and timeout recorded),
//! and a Deployment rollout through a fake of the Kubernetes API. A hook that is down gets its
//! event once it is back, exactly once; a failing hook is alerted and never rolls back a
//! promoted credential; `retire_after = "notified"` ends grace when every hook succeeded.

use std::time::{Duration, Instant};

use crate::alerts::Receiver;
use crate::generated_config;
use crate::providers::current;
use crate::support::kubernetes::{self, Kubernetes};
use crate::support::{
    Rotor, assert_secrets_absent, contains, http_get, postgres::free_port, require_program,
    spawn_until,
};

const HMAC_KEY: &str = "hook-key-for-tests";

/// Writes the config of `rotor` with absolute paths, so that the test can open its vault too.
fn write_config(rotor: &Rotor, text: &str) {
    let dir = rotor.path(".").canonicalize().unwrap();
    let text = text
        .replace(
            "dir = \"vault\"",
            &format!("dir = \"{}/vault\"", dir.display()),
        )
        .replace("\"vault.key\"", &format!("\"{}/vault.key\"", dir.display()))
        .replace("\"hook.key\"", &format!("\"{}/hook.key\"", dir.display()));
    std::fs::write(&rotor.config, text).unwrap();
}

/// One generated credential with grace `grace`, told of changes by `hooks` (`[hooks.*]`
/// tables), plus `extra` lines in the credential.
fn config(grace: &str, hooks: &[(&str, String)], extra: &str) -> String {
    let names: Vec<String> = hooks.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let mut text = generated_config(1, grace).replace(
        "rotator = { kind = \"generated\"",
        &format!(
            "notify = [{}]\n{extra}\nrotator = {{ kind = \"generated\"",
            names.join(", ")
        ),
    );
    for (name, table) in hooks {
        text.push_str(&format!("\n[hooks.{name}]\n{table}\n"));
    }
    text
}

fn webhook(url: &str) -> String {
    format!("kind = \"webhook\"\nurl = \"{url}\"\nsecret = {{ file = \"hook.key\" }}")
}

/// The HMAC-SHA256 of `body`, by `openssl dgst` (an implementation independent of rotor's).
fn openssl_hmac(rotor: &Rotor, body: &[u8]) -> String {
    let openssl = require_program("openssl", "apt-get install -y openssl");
    let file = rotor.path("received-body");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new(openssl)
        .args(["dgst", "-sha256", "-hmac", HMAC_KEY, "-hex"])
        .arg(&file)
        .output()
        .unwrap();
    let hex = String::from_utf8_lossy(&out.stdout);
    format!("sha256={}", hex.rsplit(' ').next().unwrap().trim())
}

fn hooks_of(rotor: &Rotor) -> Vec<serde_json::Value> {
    rotor.json(&["status", "--json"])[0]["hooks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn webhook_events_are_signed_in_order_and_hold_no_secret() {
    let receiver = Receiver::start(200);
    let url = format!("{}/rotor/events", receiver.server.uri());
    let rotor = Rotor::new("");
    write_config(&rotor, &config("0s", &[("consumer", webhook(&url))], ""));
    std::fs::write(rotor.path("hook.key"), HMAC_KEY).unwrap();
    let mut secrets = Vec::new();
    let mut output = Vec::new();
    for _ in 0..2 {
        let out = rotor.ok(&["rotate", "app/key0"]);
        output.extend(out.stdout);
        output.extend(out.stderr);
        let value = secrecy::ExposeSecret::expose_secret(current(&rotor).require("value").unwrap())
            .to_owned();
        secrets.push(value);
    }

    let seen = receiver.seen.lock().unwrap().clone();
    let types: Vec<String> = seen
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["type"].as_str().unwrap().to_owned()
        })
        .collect();
    // A first version replaced nothing, so only the second rotation retires one.
    assert_eq!(
        types,
        [
            "credential.promoted",
            "credential.promoted",
            "credential.retired"
        ]
    );
    for request in &seen {
        assert_eq!(request.url.path(), "/rotor/events");
        assert_eq!(
            request.headers["x-rotor-signature"].to_str().unwrap(),
            openssl_hmac(&rotor, &request.body),
            "the signature covers the exact body"
        );
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            request.headers["x-rotor-event"].to_str().unwrap(),
            body["type"]
        );
        assert_eq!(
            request.headers["x-rotor-delivery"].to_str().unwrap(),
            body["delivery_id"]
        );
        for secret in &secrets {
            assert!(
                !contains(&request.body, secret.as_bytes()),
                "an event holds a secret"
            );
        }
    }
    let bodies = receiver.bodies();
    let (second, retired) = (&bodies[1], &bodies[2]);
    assert_eq!(second["credential_id"], "app/key0");
    assert_eq!(second["vault"], "local");
    assert_eq!(second["vault_path"], "app/key0");
    assert_eq!(second["version"], "2");
    assert_eq!(second["previous_version"], "1");
    assert_eq!(second["stage_change"]["current"], "2");
    assert_eq!(second["stage_change"]["previous"], "1");
    let status = rotor.json(&["status", "--json"]);
    assert_eq!(second["fingerprint"], status[0]["current_fingerprint"]);
    assert!(second["run_id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(
        second["delivery_id"],
        format!("{}/promoted/consumer", second["run_id"].as_str().unwrap())
    );
    assert_eq!(retired["stage_change"]["retired"], "1");
    assert_eq!(retired["run_id"], second["run_id"]);

    let hooks = hooks_of(&rotor);
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    assert_eq!(hooks[0]["hook"], "consumer");
    assert_eq!(hooks[0]["event"], "retired");
    assert_eq!(hooks[0]["state"], "delivered");
    assert_eq!(hooks[0]["last_outcome"], "HTTP 200");
    let table = rotor.ok(&["status"]);
    output.extend(&table.stdout);
    assert!(String::from_utf8_lossy(&table.stdout).contains("consumer"));
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    // Not in rotor's output, not in the store (whose outbox holds the events).
    assert_secrets_absent(&refs, &output, &rotor.path("."));
}

#[test]
fn a_receiver_down_at_first_gets_the_event_exactly_once_when_back() {
    let hook_port = free_port();
    let alerts = Receiver::start(200);
    let text = config(
        "0s",
        &[(
            "consumer",
            webhook(&format!("http://127.0.0.1:{hook_port}/rotor")),
        )],
        "",
    )
    .replace("alerts = [\"log\"]", "alerts = [\"oncall\"]")
        + &format!(
            "\n[alerts.oncall]\nkind = \"webhook\"\nurl = \"{}/alerts\"\nunsigned = true\n",
            alerts.server.uri()
        );
    let rotor = Rotor::new("");
    write_config(&rotor, &text);
    std::fs::write(rotor.path("hook.key"), HMAC_KEY).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let (mut daemon, _) = spawn_until(
        rotor.command(&["run", "--listen", &listen, "--poll", "1s"]),
        "rotor started",
        Duration::from_secs(30),
    )
    .expect("rotor run starts");

    // The first version is minted and promoted; its event cannot be delivered.
    let raised = |condition: &str, event: &str| {
        alerts
            .bodies()
            .iter()
            .any(|b| b["condition"] == condition && b["event"] == event)
    };
    wait_for("the notify_failed alert", Duration::from_secs(60), || {
        raised("notify_failed", "alert.raised")
    });
    let hooks = hooks_of(&rotor);
    assert_eq!(hooks[0]["state"], "retrying", "{hooks:?}");
    assert_eq!(hooks[0]["last_outcome"], "unreachable");
    assert!(
        hooks[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("hook `consumer` (webhook) is unreachable"),
        "{hooks:?}"
    );
    // Never rolled back: the credential is current and the run completed.
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");

    let receiver = Receiver::start_on(Some(hook_port), 200);
    wait_for(
        "the event, once the receiver is back",
        Duration::from_secs(60),
        || !receiver.bodies().is_empty(),
    );
    wait_for("the alert to resolve", Duration::from_secs(30), || {
        raised("notify_failed", "alert.resolved")
    });
    // Two more passes of the outbox: nothing is sent again.
    std::thread::sleep(Duration::from_secs(11));
    let bodies = receiver.bodies();
    assert_eq!(bodies.len(), 1, "exactly once: {bodies:?}");
    assert_eq!(bodies[0]["type"], "credential.promoted");
    assert_eq!(hooks_of(&rotor)[0]["state"], "delivered");

    let (_, metrics) = http_get(&format!("http://{listen}/metrics")).expect("metrics");
    assert!(
        metrics.contains(
            "rotor_notifications_total{credential=\"app/key0\",hook=\"consumer\",outcome=\"success\"} 1\n"
        ),
        "{metrics}"
    );
    let failures: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "rotor_notifications_total{credential=\"app/key0\",hook=\"consumer\",outcome=\"failure\"} ",
            )
        })
        .expect("failure series")
        .parse()
        .unwrap();
    assert!(failures >= 3, "{metrics}");
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    let status = daemon.wait().unwrap();
    assert!(status.success(), "SIGTERM stops it cleanly: {status:?}");
}

/// A shell script hook in the scratch folder.
fn script(rotor: &Rotor, name: &str, body: &str) -> String {
    let path = rotor.path(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn a_command_hook_gets_the_event_on_stdin_and_only_its_fixed_environment() {
    let rotor = Rotor::new("");
    let dir = rotor.path(".").display().to_string();
    let program = script(
        &rotor,
        "reload.sh",
        &format!("cat > {dir}/stdin.$ROTOR_EVENT.json\nenv > {dir}/env.$ROTOR_EVENT.txt"),
    );
    let hook = format!(
        "kind = \"command\"\ncommand = [\"{program}\", \"payments-api\"]\ntimeout = \"10s\"\nenv = {{ APP_NAME = \"payments\" }}"
    );
    write_config(&rotor, &config("0s", &[("reload", hook)], ""));
    let out = rotor
        .command(&["rotate", "app/key0"])
        .env("ROTOR_ADMIN_TOKEN_FOR_TEST", "must-not-reach-hooks")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let event: serde_json::Value =
        serde_json::from_slice(&std::fs::read(rotor.path("stdin.promoted.json")).unwrap()).unwrap();
    assert_eq!(event["type"], "credential.promoted");
    assert_eq!(event["credential_id"], "app/key0");
    assert_eq!(event["hook"], "reload");
    let env = std::fs::read_to_string(rotor.path("env.promoted.txt")).unwrap();
    for line in [
        "ROTOR_EVENT=promoted",
        "ROTOR_HOOK=reload",
        "ROTOR_CREDENTIAL_ID=app/key0",
        "ROTOR_VAULT=local",
        "ROTOR_VAULT_PATH=app/key0",
        "ROTOR_VERSION=1",
        "APP_NAME=payments",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} in:\n{env}");
    }
    assert!(
        env.lines().any(|l| l.starts_with("ROTOR_RUN_ID=run_")),
        "{env}"
    );
    assert!(
        !env.contains("must-not-reach-hooks"),
        "rotor's own environment is not passed on:\n{env}"
    );
    let hooks = hooks_of(&rotor);
    assert_eq!(hooks[0]["last_outcome"], "exit 0");
    assert_eq!(hooks[0]["state"], "delivered");
}

#[test]
fn a_failing_or_hanging_hook_is_recorded_retried_and_never_rolls_back() {
    let rotor = Rotor::new("");
    let dir = rotor.path(".").display().to_string();
    let failing = script(&rotor, "fail.sh", "cat >/dev/null\nexit 3");
    let hanging = script(
        &rotor,
        "hang.sh",
        &format!("sleep 300 &\necho $! > {dir}/child.pid\nsleep 300"),
    );
    let hooks = [
        (
            "fails",
            format!("kind = \"command\"\ncommand = [\"{failing}\"]"),
        ),
        (
            "hangs",
            format!("kind = \"command\"\ncommand = [\"{hanging}\"]\ntimeout = \"1s\""),
        ),
    ];
    write_config(&rotor, &config("0s", &hooks, ""));
    let started = Instant::now();
    let out = rotor.ok(&["rotate", "app/key0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a notify hook of app/key0 failed"),
        "{out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the hanging hook was cut off"
    );
    let before = current(&rotor).fingerprint().to_hex();
    let status = rotor.json(&["status", "--json"]);
    assert_eq!(status[0]["state"], "idle", "the rotation completed");
    assert_eq!(
        status[0]["current_fingerprint"],
        rotor.shown_fingerprint(&current(&rotor).fingerprint())
    );
    let hooks = hooks_of(&rotor);
    let by_name = |name: &str| hooks.iter().find(|h| h["hook"] == name).unwrap().clone();
    assert_eq!(by_name("fails")["last_outcome"], "exit 3");
    assert_eq!(by_name("fails")["state"], "retrying");
    assert!(
        by_name("fails")["last_error"]
            .as_str()
            .unwrap()
            .contains("failed: exit 3")
    );
    assert_eq!(by_name("hangs")["last_outcome"], "timed out after 1s");
    // The timeout killed the hook's whole process group, its background child included.
    let child: u32 = std::fs::read_to_string(rotor.path("child.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the hook's child to be killed",
        Duration::from_secs(10),
        || match std::fs::read_to_string(format!("/proc/{child}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.split(' ').nth(2) == Some("Z"),
        },
    );
    // A retry later fails the same way and still rolls nothing back.
    std::thread::sleep(Duration::from_millis(2500));
    rotor.ok(&["run", "--once"]);
    assert_eq!(current(&rotor).fingerprint().to_hex(), before);
    assert!(by_name_after(&rotor, "fails")["attempts"].as_i64().unwrap() >= 2);
}

fn by_name_after(rotor: &Rotor, name: &str) -> serde_json::Value {
    hooks_of(rotor)
        .into_iter()
        .find(|h| h["hook"] == name)
        .unwrap()
}

#[test]
fn kubernetes_rollout_patches_the_pod_template_once_per_version() {
    let k8s = Kubernetes::start(&["payments/api"]);
    let rotor = Rotor::new("");
    std::fs::write(rotor.path("sa-token"), kubernetes::TOKEN).unwrap();
    std::fs::write(rotor.path("wrong-token"), "not-the-token").unwrap();
    let api = k8s.server.uri();
    let hooks = [
        (
            "rollout",
            format!(
                "kind = \"kubernetes_rollout\"\nnamespace = \"payments\"\ndeployment = \"api\"\napi_url = \"{api}\"\ntoken = {{ file = \"sa-token\" }}"
            ),
        ),
        (
            "refused",
            format!(
                "kind = \"kubernetes_rollout\"\nnamespace = \"payments\"\ndeployment = \"api\"\napi_url = \"{api}\"\ntoken = {{ file = \"wrong-token\" }}"
            ),
        ),
        (
            "absent",
            format!(
                "kind = \"kubernetes_rollout\"\nnamespace = \"payments\"\ndeployment = \"worker\"\napi_url = \"{api}\"\ntoken = {{ file = \"sa-token\" }}\nannotation = \"example.com/db-password-version\""
            ),
        ),
    ];
    write_config(&rotor, &config("0s", &hooks, ""));
    rotor.ok(&["rotate", "app/key0"]);
    let deployment = k8s.deployment("payments/api");
    assert_eq!(deployment.generation, 2, "one rollout");
    assert_eq!(
        deployment.annotations.get("rotor.dev/rotated-app.key0"),
        Some(&"1".to_owned())
    );
    rotor.ok(&["rotate", "app/key0"]);
    let deployment = k8s.deployment("payments/api");
    assert_eq!(deployment.generation, 3, "one rollout per promotion");
    assert_eq!(deployment.annotations["rotor.dev/rotated-app.key0"], "2");

    // Strategic-merge patches only, and none for the retirement.
    let calls = k8s.state.lock().unwrap().calls.clone();
    assert!(
        calls.iter().all(|c| c
            == "PATCH /apis/apps/v1/namespaces/payments/deployments/api application/strategic-merge-patch+json"
            || c == "PATCH /apis/apps/v1/namespaces/payments/deployments/worker application/strategic-merge-patch+json"),
        "{calls:?}"
    );

    let hooks = hooks_of(&rotor);
    let by_name = |name: &str| hooks.iter().find(|h| h["hook"] == name).unwrap().clone();
    assert_eq!(by_name("rollout")["last_outcome"], "HTTP 200");
    assert_eq!(by_name("refused")["last_outcome"], "HTTP 401");
    assert!(
        by_name("refused")["last_error"]
            .as_str()
            .unwrap()
            .contains("the service account token was refused"),
        "{hooks:?}"
    );
    assert_eq!(by_name("absent")["last_outcome"], "HTTP 404");
    assert!(
        by_name("absent")["last_error"]
            .as_str()
            .unwrap()
            .contains("there is no Deployment payments/worker")
    );
    // The second promotion superseded the first one the failing hook could not take: it is
    // never told of a version already replaced.
    assert_eq!(by_name("refused")["undelivered"], 1);
    assert_eq!(by_name("refused")["run_id"], by_name("rollout")["run_id"]);

    // A delivery repeated for the same version changes nothing, so pods roll once.
    std::fs::write(rotor.path("wrong-token"), kubernetes::TOKEN).unwrap();
    std::thread::sleep(Duration::from_millis(4500));
    rotor.ok(&["run", "--once"]);
    let hooks = hooks_of(&rotor);
    let refused = hooks.iter().find(|h| h["hook"] == "refused").unwrap();
    assert_eq!(refused["state"], "delivered", "{hooks:?}");
    assert_eq!(refused["undelivered"], 0, "{hooks:?}");
    let deployment = k8s.deployment("payments/api");
    assert_eq!(
        deployment.generation, 3,
        "no second rollout: {deployment:?}"
    );
    assert_eq!(deployment.annotations["rotor.dev/rotated-app.key0"], "2");
}

#[test]
fn retire_after_notified_ends_grace_when_hooks_succeed_and_grace_bounds_a_failing_one() {
    // Hooks that succeed: the old credential is retired at once, not after an hour.
    let rotor = Rotor::new("");
    let ok = script(&rotor, "ok.sh", "cat >/dev/null");
    let hook = format!("kind = \"command\"\ncommand = [\"{ok}\"]");
    write_config(
        &rotor,
        &config("1h", &[("reload", hook)], "retire_after = \"notified\""),
    );
    rotor.ok(&["rotate", "app/key0"]);
    let out = rotor.ok(&["rotate", "app/key0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("completed"), "{stdout}");
    assert!(current(&rotor).fingerprint().to_hex().len() == 64);
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert!(
        history.to_string().contains("completed"),
        "both runs completed: {history}"
    );

    // A hook that fails: grace still ends, after `grace`, and nothing is rolled back.
    let rotor = Rotor::new("");
    let failing = script(&rotor, "fail.sh", "exit 1");
    let hook = format!("kind = \"command\"\ncommand = [\"{failing}\"]");
    write_config(
        &rotor,
        &config("3s", &[("reload", hook)], "retire_after = \"notified\""),
    );
    // The first version replaced nothing and has no grace; the second does.
    rotor.ok(&["rotate", "app/key0"]);
    let out = rotor.ok(&["rotate", "app/key0"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("the previous one is retired after grace"),
        "{stdout}"
    );
    let promoted = current(&rotor).fingerprint().to_hex();
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "grace");
    std::thread::sleep(Duration::from_secs(3));
    rotor.ok(&["run", "--once"]);
    assert_eq!(rotor.json(&["status", "--json"])[0]["state"], "idle");
    assert_eq!(current(&rotor).fingerprint().to_hex(), promoted);
    let hook = &hooks_of(&rotor)[0];
    assert!(
        ["retrying", "queued"].contains(&hook["state"].as_str().unwrap()),
        "{hook}"
    );
    assert!(hook["undelivered"].as_i64().unwrap() > 0, "{hook}");
}

#[test]
fn the_daemon_ends_grace_once_every_hook_took_the_promotion() {
    let rotor = Rotor::new("");
    let ok = script(&rotor, "ok.sh", "cat >/dev/null");
    let hook = format!("kind = \"command\"\ncommand = [\"{ok}\"]");
    write_config(
        &rotor,
        &config("1h", &[("reload", hook)], "retire_after = \"notified\""),
    );
    let (mut daemon, _) = spawn_until(
        rotor.command(&["run", "--poll", "30s"]),
        "rotor started",
        Duration::from_secs(30),
    )
    .expect("rotor run starts");
    // Grace is an hour and the poll 30 s: only the hook's delivery can end the wait this soon.
    wait_for("the run to complete", Duration::from_secs(20), || {
        rotor.json(&["history", "app/key0", "--json"])[0]["state"] == "completed"
    });
    assert_eq!(hooks_of(&rotor)[0]["state"], "delivered");
    let _ = std::process::Command::new("kill")
        .arg(daemon.id().to_string())
        .status();
    assert!(daemon.wait().unwrap().success());
}

/// The `standardwebhooks` package (PyPI), an implementation of the Standard Webhooks
/// specification independent of rotor's, in the test servers' venv.
fn standard_webhooks_python() -> std::path::PathBuf {
    let venv = std::env::var("ROTOR_TEST_VENV").unwrap_or_else(|_| {
        format!(
            "{}/.cache/rotor-test-venv",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let python = std::path::PathBuf::from(venv).join("bin/python");
    let found = std::process::Command::new(&python)
        .args(["-c", "import standardwebhooks"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "the standardwebhooks package is missing: {} -m pip install standardwebhooks (scripts/test installs it)",
        python.display()
    );
    python
}

/// Whether the `standardwebhooks` library accepts `request` signed with `secret`.
fn standard_verifies(
    rotor: &Rotor,
    secret: &str,
    body: &[u8],
    request: &wiremock::Request,
) -> Result<(), String> {
    let headers: serde_json::Map<String, serde_json::Value> =
        ["webhook-id", "webhook-timestamp", "webhook-signature"]
            .iter()
            .map(|h| {
                let value = request
                    .headers
                    .get(*h)
                    .map(|v| v.to_str().unwrap().to_owned());
                (
                    h.to_string(),
                    serde_json::Value::from(value.unwrap_or_default()),
                )
            })
            .collect();
    std::fs::write(rotor.path("sw-secret"), secret).unwrap();
    std::fs::write(rotor.path("sw-body"), body).unwrap();
    std::fs::write(
        rotor.path("sw-headers"),
        serde_json::to_vec(&headers).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new(standard_webhooks_python())
        .current_dir(rotor.dir.path())
        .args([
            "-c",
            "import json, sys\nfrom standardwebhooks.webhooks import Webhook\n\
             Webhook(open('sw-secret').read()).verify(open('sw-body', 'rb').read(), json.load(open('sw-headers')))",
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn webhooks_verify_with_an_independent_standard_webhooks_library() {
    use base64::Engine;
    let receiver = Receiver::start(200);
    let url = format!("{}/rotor/events", receiver.server.uri());
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
    );
    let rotor = Rotor::new("");
    let alerts = format!(
        "\n[alerts.oncall]\nkind = \"webhook\"\nurl = \"{}/alerts\"\nsecret = {{ file = \"hook.key\" }}\n",
        receiver.server.uri()
    );
    write_config(
        &rotor,
        &(config("0s", &[("consumer", webhook(&url))], "")
            .replace("alerts = [\"log\"]", "alerts = [\"oncall\"]")
            + &alerts),
    );
    std::fs::write(rotor.path("hook.key"), &secret).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    // An alert too: a rotation that fails on a vault file that cannot be read.
    let file = rotor.path("vault/app/key0.age");
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"not an age file").unwrap();
    let _ = rotor.run(&["rotate", "app/key0"]);
    std::fs::write(&file, good).unwrap();

    let seen = receiver.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|r| r.url.path()).collect();
    assert!(
        paths.contains(&"/rotor/events") && paths.contains(&"/alerts"),
        "{paths:?}"
    );
    for request in &seen {
        standard_verifies(&rotor, &secret, &request.body, request)
            .unwrap_or_else(|e| panic!("{} refused: {e}", request.url.path()));
        let mut tampered = request.body.clone();
        tampered.extend_from_slice(b" ");
        assert!(
            standard_verifies(&rotor, &secret, &tampered, request).is_err(),
            "a changed body is refused"
        );
    }
}
