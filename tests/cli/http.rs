//! The `http` rotator through the binary, against the test's SaaS API-key service: a provider
//! that fails for a while is retried until it answers, a refused admin credential rolls back
//! with a message that names the call and leaks nothing, and the `apply` shape (rotor makes the
//! secret, the provider imports it) rotates with overlap too.

use std::time::Duration;

use crate::providers::{Provider, setup};
use crate::support::saas::ADMIN_TOKEN;
use crate::support::{Rotor, assert_secrets_absent};

fn current_fingerprint(rotor: &Rotor) -> String {
    rotor.json(&["status", "--json"])[0]["current_fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn a_provider_that_fails_for_a_while_is_retried_until_it_answers() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Http, "flaky", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let saas = fixture.service.clone().unwrap();
    let first = saas.key_ids();

    saas.state.lock().unwrap().fail_next = 2;
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("waits to retry"),
        "{out:?}"
    );
    let mut state = String::new();
    for _ in 0..40 {
        std::thread::sleep(Duration::from_millis(500));
        rotor.ok(&["run", "--once"]);
        state = rotor.json(&["history", "app/key0", "--json"])[0]["state"]
            .as_str()
            .unwrap()
            .to_owned();
        if state == "completed" {
            break;
        }
    }
    assert_eq!(state, "completed");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let retries = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["outcome"] == "retry")
        .count();
    assert!(retries >= 1, "{history}");
    let keys = saas.key_ids();
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert_ne!(keys, first);
}

#[test]
fn a_new_key_is_verified_again_while_it_propagates_and_rolled_back_when_it_never_works() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Http, "propagating", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let saas = fixture.service.clone().unwrap();

    // Refused twice, then accepted: propagation, not a bad key. The rotation completes.
    saas.state.lock().unwrap().propagating = 2;
    let before = saas.state.lock().unwrap().calls.len();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let calls = saas.state.lock().unwrap().calls[before..].to_vec();
    assert_eq!(
        calls.iter().filter(|c| *c == "GET /v1/whoami").count(),
        3,
        "{calls:?}"
    );
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "completed", "{history}");
    let current = current_fingerprint(&rotor);
    let keys = saas.key_ids();
    assert_eq!(keys.len(), 1, "the old key was retired: {keys:?}");

    // Refused for longer than `verify_within` (2 s in the fixture): rolled back, the current
    // key kept, the candidate revoked, and the error says how long rotor waited.
    saas.state.lock().unwrap().propagating = u32::MAX;
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back", "{history}");
    let error = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|s| s["error"].as_str())
        .unwrap()
        .to_owned();
    assert!(
        error.contains("GET /v1/whoami answered 401")
            && error.contains("still refused after verify_within = 2s"),
        "{error}"
    );
    assert_eq!(current_fingerprint(&rotor), current);
    assert_eq!(saas.key_ids(), keys, "the candidate was revoked");
}

#[test]
fn a_refused_admin_credential_rolls_back_and_says_which_call() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Http, "badadmin", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let wrong = "wrong-saas-admin-token-91d2";
    std::fs::write(rotor.path("saas-admin-token"), wrong).unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert_eq!(history[0]["state"], "rolled_back");
    let error = history[0]["steps"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("GET /v1/keys answered 401") && error.contains("refused rotor's credential"),
        "{error}"
    );
    assert!(fixture.service.as_ref().unwrap().key_ids().is_empty());
    std::fs::remove_file(rotor.path("saas-admin-token")).unwrap();
    let mut output = out.stdout.clone();
    output.extend_from_slice(&out.stderr);
    assert_secrets_absent(&[wrong, ADMIN_TOKEN], &output, rotor.dir.path());
}

#[test]
fn the_apply_shape_rotates_a_secret_rotor_makes() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Http, "imported", rotor.dir.path());
    let saas = fixture.service.clone().unwrap();
    let rotator = format!(
        r#"kind = "http"
base_url = "{}"
auth = {{ value = {{ file = "{}" }} }}
apply = {{ method = "POST", path = "/v1/keys", body = '{{"name": "imported", "key": "{{{{secret}}}}"}}' }}
verify = {{ path = "/v1/whoami", headers = {{ Authorization = "Bearer {{{{secret}}}}" }} }}
retire = {{ method = "DELETE", path = "/v1/keys/by-secret", body = '{{"key": "{{{{secret}}}}"}}', expect = [204, 404] }}
length = 48
"#,
        saas.url(),
        rotor.path("saas-admin-token").display()
    );
    let fixture = crate::providers::Fixture { rotator, ..fixture };
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0"]);
    let first = current_fingerprint(&rotor);
    assert_eq!(saas.key_ids().len(), 1);
    rotor.ok(&["rotate", "app/key0"]);
    assert_ne!(current_fingerprint(&rotor), first);
    let keys = saas.state.lock().unwrap().keys.clone();
    assert_eq!(keys.len(), 1, "the old secret was revoked: {keys:?}");
    let secret = &keys.values().next().unwrap().secret;
    assert_eq!(secret.len(), 48);
    assert!(
        !rotor.run(&["status"]).stdout.is_empty()
            && !String::from_utf8_lossy(&rotor.run(&["status", "--json"]).stdout)
                .contains(secret.as_str())
    );
}

/// A hostile provider: an id that is a path and a query is refused at mint, so nothing is ever
/// sent to the path it names; an answer without end is not read into memory.
#[test]
fn a_hostile_providers_id_and_oversized_answer_are_refused() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Http, "hostile", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let saas = fixture.service.clone().unwrap();
    saas.state.lock().unwrap().mint_id = Some("../../admin/purge-all-keys?confirm=yes&x=".into());
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a plain identifier"), "{stderr}");
    let calls = saas.state.lock().unwrap().calls.clone();
    assert!(
        calls.iter().all(|c| !c.contains("/admin")),
        "nothing reached the path the id named: {calls:?}"
    );

    saas.state.lock().unwrap().mint_padding = 2 << 20;
    rotor.ok(&["run", "--once"]);
    let out = rotor.run(&["rotate", "app/key0"]);
    let text = format!("{out:?}");
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("larger than 1024 KiB"), "{text}");
}

#[test]
fn the_vendors_last_used_time_holds_retirement_until_the_old_key_is_quiet() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Http, "lastused", rotor.dir.path());
    let config = fixture
        .config("1h", rotor.dir.path())
        .replace(
            "active = \"/active\" }",
            "active = \"/active\", last_used = \"/last_used_at\" }",
        )
        .replace(
            "[credential.rotator]",
            "retire_when = \"unused\"\nunused_for = \"2s\"\n[credential.rotator]",
        );
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let saas = fixture.service.clone().unwrap();
    let old = crate::providers::current(&rotor);
    let (old_id, old_secret) = (
        crate::providers::field(&old, "id"),
        crate::providers::field(&old, "value"),
    );
    saas.used_now(&old_secret);
    rotor.ok(&["rotate", "app/key0"]);
    let status = &rotor.json(&["status", "app/key0", "--json"])[0];
    assert_eq!(status["previous_usage"]["evidence"], "seen", "{status}");
    assert_eq!(
        status["previous_usage"]["by"],
        format!("key {old_id} (the provider's last-used time)")
    );
    // Still called now and then: kept.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(600));
        saas.used_now(&old_secret);
        rotor.ok(&["run", "--once"]);
        assert!(saas.key_ids().contains(&old_id), "the old key is kept");
    }
    // Quiet for two seconds: revoked.
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(400)),
        "completed"
    );
    assert!(!saas.key_ids().contains(&old_id), "the old key is revoked");
    let mut output = rotor.run(&["status", "--json"]).stdout;
    output.extend(rotor.run(&["history", "--json"]).stdout);
    assert_secrets_absent(&[old_secret.as_str()], &output, rotor.dir.path());
}

/// The recipe `schedules/examples/saas/{file}` as written, pointed at its fake (`base_url`),
/// with rotor's own key (`admin_ref`) in a file, a local vault, a two-second grace and a
/// one-second quiet time; rotated twice (the second rotation to completion). Returns the
/// credential id and the first and last versions.
fn rotate_recipe(
    rotor: &Rotor,
    file: &str,
    base_url: (&str, &str),
    admin_ref: &str,
    admin_key: &str,
) -> (
    String,
    rotor_rotators::Credential,
    rotor_rotators::Credential,
) {
    let admin = rotor.path("saas-admin-key");
    std::fs::write(&admin, admin_key).unwrap();
    let recipe = std::fs::read_to_string(format!(
        "{}/schedules/examples/saas/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(
        recipe.contains(base_url.0) && recipe.contains(admin_ref),
        "{file}"
    );
    let recipe = recipe
        .replace(base_url.0, base_url.1)
        .replace(admin_ref, &format!("{{ file = \"{}\" }}", admin.display()))
        .replace("vault = { name = \"bao\"", "vault = { name = \"local\"")
        .replace("grace = \"24h\"", "grace = \"2s\"")
        .replace("unused_for = \"1h\"", "unused_for = \"1s\"");
    let id = recipe
        .lines()
        .find_map(|l| l.strip_prefix("id = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_owned();
    let config = crate::generated_config(0, "1h")
        .replace(
            "dir = \"vault\"",
            &format!("dir = \"{}/vault\"", rotor.dir.path().display()),
        )
        .replace(
            "file = \"vault.key\"",
            &format!("file = \"{}/vault.key\"", rotor.dir.path().display()),
        )
        + &recipe;
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", &id, "--emergency"]);
    let first = crate::providers::current_at(rotor, &id);
    rotor.ok(&["rotate", &id]);
    assert_eq!(
        rotor.run_until_completed(&id, Duration::from_millis(500)),
        "completed"
    );
    let last = crate::providers::current_at(rotor, &id);
    (id, first, last)
}

#[test]
fn the_cloudflare_recipe_rotates_a_token_through_the_api_cloudflare_documents() {
    use crate::support::cloudflare::{ADMIN_TOKEN, Cloudflare};
    let cloudflare = Cloudflare::start();
    let rotor = Rotor::new("");
    let (_, first, current) = rotate_recipe(
        &rotor,
        "cloudflare.toml",
        (
            "https://api.cloudflare.com/client/v4",
            &cloudflare.base_url(),
        ),
        "{ vault = \"bao\", path = \"admin/cloudflare\", field = \"token\" }",
        ADMIN_TOKEN,
    );
    let state = cloudflare.state.lock().unwrap();
    let tokens: Vec<_> = state.tokens.iter().collect();
    assert_eq!(tokens.len(), 1, "the old token is deleted: {tokens:?}");
    let (token_id, token) = tokens[0];
    assert_eq!(*token_id, crate::providers::field(&current, "id"));
    assert_eq!(token.value, crate::providers::field(&current, "value"));
    assert_ne!(token.value, crate::providers::field(&first, "value"));
    // Named with the run's token, which a retried mint looks for.
    assert!(
        token.name.len() > "rotor dns ".len() && token.name.starts_with("rotor dns "),
        "{}",
        token.name
    );
    assert_eq!(
        token.policies[0]["permission_groups"][0]["name"], "DNS Write",
        "the recipe's policies reach Cloudflare"
    );
    assert!(
        state.pages_asked.iter().all(|p| p.as_deref() == Some("50")),
        "{:?}",
        state.pages_asked
    );
}

#[test]
fn the_openai_recipe_rotates_a_project_key_and_retires_it_by_its_last_use() {
    use crate::support::openai::{ADMIN_KEY, OpenAi};
    let openai = OpenAi::start();
    let rotor = Rotor::new("");
    let (id, first, current) = rotate_recipe(
        &rotor,
        "openai.toml",
        ("https://api.openai.com/v1", &openai.base_url()),
        "{ vault = \"bao\", path = \"admin/openai\", field = \"admin_key\" }",
        ADMIN_KEY,
    );
    let state = openai.state.lock().unwrap();
    let accounts: Vec<_> = state.accounts.iter().collect();
    assert_eq!(
        accounts.len(),
        1,
        "the old service account is deleted: {accounts:?}"
    );
    let (account_id, account) = accounts[0];
    assert_eq!(*account_id, crate::providers::field(&current, "id"));
    assert_eq!(account.value, crate::providers::field(&current, "value"));
    assert_ne!(account.value, crate::providers::field(&first, "value"));
    assert!(
        account.name.starts_with("rotor support-bot "),
        "{}",
        account.name
    );
    assert!(
        state
            .limits_asked
            .iter()
            .all(|l| l.as_deref() == Some("100")),
        "{:?}",
        state.limits_asked
    );
    drop(state);
    // The old key's `last_used_at` (epoch seconds) was read as evidence of use.
    let history = rotor.json(&["history", &id, "--json"]);
    let old_id = crate::providers::field(&first, "id");
    assert!(
        history[0]["previous_usage"]["by"]
            .as_str()
            .is_some_and(|by| by.contains(&old_id)),
        "{}",
        history[0]
    );
}

#[test]
fn the_sendgrid_recipe_rotates_a_mail_send_key() {
    use crate::support::sendgrid::{ADMIN_KEY, SendGrid};
    let sendgrid = SendGrid::start();
    let rotor = Rotor::new("");
    let (_, first, current) = rotate_recipe(
        &rotor,
        "sendgrid.toml",
        ("https://api.sendgrid.com/v3", &sendgrid.base_url()),
        "{ vault = \"bao\", path = \"admin/sendgrid\", field = \"key\" }",
        ADMIN_KEY,
    );
    let state = sendgrid.state.lock().unwrap();
    let keys: Vec<_> = state.keys.iter().collect();
    assert_eq!(keys.len(), 1, "the old key is deleted: {keys:?}");
    let (key_id, key) = keys[0];
    assert_eq!(*key_id, crate::providers::field(&current, "id"));
    let value = crate::providers::field(&current, "value");
    assert_eq!(key.value, value);
    assert_eq!(value.len(), 69, "a SendGrid key is 69 characters");
    assert_ne!(value, crate::providers::field(&first, "value"));
    assert_eq!(
        key.scopes,
        ["mail.send"],
        "the recipe's scopes reach SendGrid"
    );
    assert!(key.name.starts_with("rotor mailer "), "{}", key.name);
}
