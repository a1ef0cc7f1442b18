//! No client that carries a credential follows a redirect to another origin: the OpenBao vault
//! (its token, the new secret), the `http` rotator (rotor's admin key), alert webhooks and
//! notify webhooks (signed bodies). Each talks to a server that answers `307` to another
//! loopback origin; nothing may arrive there.

use crate::generated_config;
use crate::support::Rotor;
use crate::support::redirect::Redirect;

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A config whose one credential is stored in an OpenBao vault at `address`, trusting
/// `ca_file` when given.
fn openbao_config(address: &str, ca_file: Option<&std::path::Path>) -> String {
    let tls = ca_file
        .map(|ca| format!("tls = {{ ca_file = \"{}\" }}\n", ca.display()))
        .unwrap_or_default();
    format!(
        r#"
[defaults]
grace = "0s"
retry = {{ max_attempts = 2, initial = "1s", max = "1s" }}
[vaults.bao]
kind = "openbao"
address = "{address}"
mount = "kv"
auth = {{ method = "token", token = {{ env = "ROTOR_TEST_BAO_TOKEN" }} }}
{tls}[[credential]]
id = "app/key0"
schedule = {{ every = "30d" }}
vault = {{ name = "bao", path = "app/key0" }}
rotator = {{ kind = "generated", length = 40 }}
"#
    )
}

/// Rotates through the vault behind `bao`, which must fail on the redirect with nothing at the
/// other origin.
fn openbao_follows_no_redirect(bao: &Redirect, ca_file: Option<&std::path::Path>) {
    let rotor = Rotor::new(&openbao_config(&bao.url(), ca_file));
    let out = rotor
        .command(&["rotate", "app/key0"])
        .env("ROTOR_TEST_BAO_TOKEN", "s.token-that-must-stay-home")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = text(&out);
    assert!(text.contains("redirecting to"), "{text}");
    let (asked, elsewhere) = bao.seen();
    assert!(asked > 0, "rotor reached the vault");
    assert_eq!(elsewhere, 0, "nothing reached the other origin");
}

#[test]
fn the_openbao_vault_sends_its_token_to_no_other_origin() {
    openbao_follows_no_redirect(&Redirect::start(), None);
}

/// The finding as it was reproduced: an OpenBao address on https (its CA in `tls.ca_file`)
/// answering `307` to plain http on another port. Nothing follows it there (and reaching the
/// vault at all proves the CA was used).
#[test]
fn the_openbao_vault_over_tls_follows_no_redirect_to_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let bao = Redirect::start_tls(dir.path());
    assert!(bao.url().starts_with("https://"));
    openbao_follows_no_redirect(&bao, Some(&dir.path().join("ca.pem")));
}

/// The `http` rotator's table for a SaaS at `base_url` whose admin key is in `admin`, trusting
/// `ca_file` when given.
fn http_rotator(
    base_url: &str,
    admin: &std::path::Path,
    ca_file: Option<&std::path::Path>,
) -> String {
    let ca = ca_file
        .map(|ca| format!("ca_file = \"{}\"\n", ca.display()))
        .unwrap_or_default();
    format!(
        r#"[credential.rotator]
kind = "http"
base_url = "{base_url}"
{ca}auth = {{ value = {{ file = "{}" }} }}
mint = {{ method = "POST", path = "/v1/keys", body = '{{"name": "rotor {{{{token}}}}"}}', secret = "/key", id = "/id" }}
verify = {{ path = "/v1/whoami", headers = {{ Authorization = "Bearer {{{{secret}}}}" }} }}
retire = {{ method = "DELETE", path = "/v1/keys/{{{{id}}}}", expect = [204, 404] }}
"#,
        admin.display()
    )
}

const GENERATED_ROTATOR: &str =
    "rotator = { kind = \"generated\", length = 40, alphabet = \"alphanumeric\" }\n";

#[test]
fn the_http_rotator_and_an_alert_webhook_follow_no_redirect_to_another_origin() {
    let provider = Redirect::start();
    let sink = Redirect::start();
    let admin = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(admin.path(), "admin-key-that-must-stay-home").unwrap();
    let config = generated_config(1, "0s")
        .replace("alerts = [\"log\"]", "alerts = [\"hook\"]")
        .replace(
            GENERATED_ROTATOR,
            &http_rotator(&provider.url(), admin.path(), None),
        )
        + &format!(
            "\n[alerts.hook]\nkind = \"webhook\"\nurl = \"{}/rotor\"\nunsigned = true\n",
            sink.url()
        );
    let rotor = Rotor::new(&config);
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = text(&out);
    assert!(text.contains("redirect"), "{text}");
    for (what, server) in [("provider", &provider), ("alert sink", &sink)] {
        let (asked, elsewhere) = server.seen();
        assert!(asked > 0, "rotor called the {what}");
        assert_eq!(
            elsewhere, 0,
            "nothing of the {what}'s reached the other origin"
        );
    }
}

#[test]
fn a_notify_webhook_follows_no_redirect_to_another_origin() {
    let consumer = Redirect::start();
    let config = generated_config(1, "0s").replace(
        "vault = { name = \"local\", path = \"app/key0\" }",
        "vault = { name = \"local\", path = \"app/key0\" }\nnotify = [\"consumer\"]",
    ) + &format!(
        "\n[hooks.consumer]\nkind = \"webhook\"\nurl = \"{}/rotated\"\nsecret = {{ file = \"hook.key\" }}\n",
        consumer.url()
    );
    let rotor = Rotor::new(&config);
    std::fs::write(rotor.path("hook.key"), "hook-signing-key").unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let (asked, elsewhere) = consumer.seen();
    assert!(asked > 0, "rotor told the consumer");
    assert_eq!(elsewhere, 0, "nothing reached the other origin");
}

/// The `kubernetes_rollout` hook carries the service account's token: over verified TLS (the
/// API server's CA in `ca_file`), a `307` to plain http on another port is not followed.
#[test]
fn a_kubernetes_rollout_over_tls_sends_its_token_to_no_other_origin() {
    let dir = tempfile::tempdir().unwrap();
    let api = Redirect::start_tls(dir.path());
    let config = generated_config(1, "0s").replace(
        "vault = { name = \"local\", path = \"app/key0\" }",
        "vault = { name = \"local\", path = \"app/key0\" }\nnotify = [\"rollout\"]",
    ) + &format!(
        "\n[hooks.rollout]\nkind = \"kubernetes_rollout\"\nnamespace = \"payments\"\ndeployment = \"api\"\napi_url = \"{}\"\ntoken = {{ file = \"sa-token\" }}\nca_file = \"{}\"\n",
        api.url(),
        dir.path().join("ca.pem").display()
    );
    let rotor = Rotor::new(&config);
    std::fs::write(
        rotor.path("sa-token"),
        "service-account-token-that-must-stay-home",
    )
    .unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let (asked, elsewhere) = api.seen();
    assert!(asked > 0, "rotor reached the API server over verified TLS");
    assert_eq!(elsewhere, 0, "nothing reached the plain-http origin");
}

/// The `http` rotator's admin key over verified TLS (a private CA in its `ca_file`): a `307`
/// to plain http on another port is not followed.
#[test]
fn the_http_rotator_over_tls_sends_its_admin_key_to_no_other_origin() {
    let dir = tempfile::tempdir().unwrap();
    let provider = Redirect::start_tls(dir.path());
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "admin-key-that-must-stay-home").unwrap();
    let config = generated_config(1, "0s").replace(
        GENERATED_ROTATOR,
        &http_rotator(&provider.url(), &admin, Some(&dir.path().join("ca.pem"))),
    );
    let rotor = Rotor::new(&config);
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = text(&out);
    assert!(text.contains("redirect"), "{text}");
    let (asked, elsewhere) = provider.seen();
    assert!(asked > 0, "rotor reached the provider over verified TLS");
    assert_eq!(elsewhere, 0, "nothing reached the plain-http origin");
}

/// An alert webhook over verified TLS (a private CA in its `ca_file`): the signed alert is
/// not carried to plain http on another port.
#[test]
fn an_alert_webhook_over_tls_follows_no_redirect_to_plain_http() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Redirect::start_tls(dir.path());
    // A provider that redirects elsewhere fails the rotation, which raises the alert.
    let provider = Redirect::start();
    let admin = dir.path().join("admin");
    std::fs::write(&admin, "admin-key").unwrap();
    let config = generated_config(1, "0s")
        .replace("alerts = [\"log\"]", "alerts = [\"hook\"]")
        .replace(
            GENERATED_ROTATOR,
            &http_rotator(&provider.url(), &admin, None),
        )
        + &format!(
            "\n[alerts.hook]\nkind = \"webhook\"\nurl = \"{}/rotor\"\nsecret = {{ file = \"alert.key\" }}\nca_file = \"{}\"\n",
            sink.url(),
            dir.path().join("ca.pem").display()
        );
    let rotor = Rotor::new(&config);
    std::fs::write(rotor.path("alert.key"), "alert-signing-key").unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let (asked, elsewhere) = sink.seen();
    assert!(
        asked > 0,
        "rotor reached the alert sink over verified TLS: {}",
        text(&out)
    );
    assert_eq!(elsewhere, 0, "nothing reached the plain-http origin");
}
