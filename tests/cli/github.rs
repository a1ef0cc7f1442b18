//! The GitHub rotators through the binary, against the fake GitHub API: the webhook keeps
//! signing with the old secret until grace is over, a rate limit is waited out until its
//! reset, GitHub's 404 and 422 answers become errors that say what to do, and deploy keys
//! past the first page of the list are found.

use std::time::Duration;

use crate::providers::{Provider, setup};
use crate::support::Rotor;
use crate::support::github::{ORG_HOOK, OWNER, REPO, REPO_HOOK};

fn rotor_for(provider: Provider, grace: &str) -> (Rotor, crate::providers::Fixture) {
    let rotor = Rotor::new("");
    let fixture = setup(provider, "github", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config(grace, rotor.dir.path())).unwrap();
    (rotor, fixture)
}

fn hook_secret(fixture: &crate::providers::Fixture) -> Option<String> {
    fixture.github.as_ref().unwrap().state.lock().unwrap().hooks[&REPO_HOOK]
        .secret
        .clone()
}

#[test]
fn the_webhook_switches_only_after_grace() {
    let (rotor, fixture) = rotor_for(Provider::GithubWebhook, "2s");
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let first = hook_secret(&fixture).expect("the first secret is set at once");

    let out = rotor.ok(&["rotate", "app/key0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("retired after grace"),
        "{out:?}"
    );
    // Promoted: receivers read the new secret beside the old one, GitHub still signs with the
    // old one, which every receiver accepts.
    assert_eq!(hook_secret(&fixture).as_deref(), Some(first.as_str()));
    let doc = crate::rotation::read_document(&rotor, "app/key0");
    assert_eq!(doc["previous"]["value"], first.as_str());
    let new = doc["value"].as_str().unwrap().to_owned();
    assert_ne!(new, first);

    std::thread::sleep(Duration::from_millis(2100));
    rotor.ok(&["run", "--once"]);
    assert_eq!(hook_secret(&fixture).as_deref(), Some(new.as_str()));
    let doc = crate::rotation::read_document(&rotor, "app/key0");
    assert!(doc.get("previous").is_none(), "{doc}");
    // Each switch was followed by a ping, signed with the new secret, that the receiver took.
    let state = fixture.github.as_ref().unwrap().state.lock().unwrap();
    let pings = &state.hooks[&REPO_HOOK].deliveries;
    assert_eq!(pings.len(), 2, "{pings:?}");
    assert!(pings.iter().all(|d| d["status_code"] == 200), "{pings:?}");
}

#[test]
fn a_receiver_that_refuses_the_ping_after_the_switch_is_retried_and_named() {
    let (rotor, fixture) = rotor_for(Provider::GithubWebhook, "0s");
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let github = fixture.github.as_ref().unwrap();
    github.state.lock().unwrap().receiver_refuses = Some(401);
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .contains("its receiver answered GitHub's ping with 401 (Invalid HTTP Response: 401)"),
        "{stdout}"
    );
    // Promoted and switched: nothing to roll back. Once the receiver takes the new secret,
    // the retried switch and ping complete the run.
    github.state.lock().unwrap().receiver_refuses = None;
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(500)),
        "completed"
    );
    let doc = crate::rotation::read_document(&rotor, "app/key0");
    assert_eq!(hook_secret(&fixture).as_deref(), doc["value"].as_str());
}

#[test]
fn an_organisation_webhook_is_switched_through_the_organisation_hooks_api() {
    let (rotor, fixture) = rotor_for(Provider::GithubWebhook, "0s");
    let config = std::fs::read_to_string(&rotor.config).unwrap();
    let repo_hook = format!("repo = \"{REPO}\"\nhook_id = {REPO_HOOK}\n");
    assert!(config.contains(&repo_hook), "{config}");
    std::fs::write(
        &rotor.config,
        config.replace(&repo_hook, &format!("hook_id = {ORG_HOOK}\n")),
    )
    .unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);

    let doc = crate::rotation::read_document(&rotor, "app/key0");
    let state = fixture.github.as_ref().unwrap().state.lock().unwrap();
    assert_eq!(
        state.hooks[&ORG_HOOK].secret.as_deref(),
        doc["value"].as_str(),
        "the organisation's webhook signs with the stored secret"
    );
    assert_eq!(
        state.hooks[&REPO_HOOK].secret, None,
        "the repository's is untouched"
    );
    let org_config = format!("/orgs/{OWNER}/hooks/{ORG_HOOK}/config");
    assert!(
        state.calls.contains(&format!("PATCH {org_config}"))
            && state.calls.contains(&format!("GET {org_config}")),
        "{:?}",
        state.calls
    );
}

#[test]
fn a_misshapen_reply_is_named_by_where_it_broke_never_by_the_token_in_it() {
    let (rotor, fixture) = rotor_for(Provider::GithubAppToken, "0s");
    let github = fixture.github.as_ref().unwrap();
    github.state.lock().unwrap().misshapen_token_replies = 1;
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("not shaped as its API documents at `permissions`"),
        "{stdout}"
    );
    let lost = github.state.lock().unwrap().tokens[0].value.clone();
    let history = rotor.run(&["history", "app/key0", "--json"]);
    for output in [&out, &history] {
        crate::support::assert_secrets_absent(
            &[lost.as_str()],
            &[output.stdout.as_slice(), output.stderr.as_slice()].concat(),
            &rotor.path("vault"),
        );
    }
    let db = std::fs::read(rotor.path("rotor.db")).unwrap();
    assert!(!crate::support::contains(&db, lost.as_bytes()));
}

#[test]
fn a_rate_limit_is_waited_out_until_its_reset() {
    let (rotor, fixture) = rotor_for(Provider::GithubDeployKey, "0s");
    fixture
        .github
        .as_ref()
        .unwrap()
        .state
        .lock()
        .unwrap()
        .rate_limited = 1;
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("waits to retry"), "{stdout}");
    assert!(stdout.contains("rate limited until"), "{stdout}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let retried = history[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["outcome"] == "retry")
        .unwrap()
        .clone();
    assert!(
        retried["error"]
            .as_str()
            .unwrap()
            .contains("API rate limit exceeded"),
        "{retried}"
    );
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(500)),
        "completed"
    );
}

#[test]
fn not_found_and_validation_failures_say_what_to_do() {
    let (rotor, fixture) = rotor_for(Provider::GithubDeployKey, "0s");
    std::fs::write(
        &rotor.config,
        fixture
            .config("0s", rotor.dir.path())
            .replace("repo = \"app\"", "repo = \"no-such-repo\""),
    )
    .unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let error = history[0]["steps"][1]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("acme/no-such-repo")
            && error.contains("GitHub answered 404: Not Found")
            && error.contains("cannot see it"),
        "{error}"
    );

    // The rollback cannot reach the repository either: the run is stuck (rotor cannot tell
    // "no such repository" from "no access"), and resumes once the config is fixed.
    assert_eq!(history[0]["state"], "stuck", "{history:#}");
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let out = rotor.run(&["rotate", "app/key0"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("resuming stuck run"),
        "{out:?}"
    );
    assert_eq!(
        rotor.json(&["history", "app/key0", "--json"])[0]["state"],
        "rolled_back"
    );
    fixture
        .github
        .as_ref()
        .unwrap()
        .state
        .lock()
        .unwrap()
        .keys_in_use_elsewhere = true;
    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // Both runs started within the same second: find the second by its error.
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let refused = history
        .as_array()
        .unwrap()
        .iter()
        .filter(|run| run["state"] == "rolled_back")
        .flat_map(|run| run["steps"].as_array().unwrap().iter())
        .filter_map(|step| step["error"].as_str())
        .any(|e| e.contains("GitHub answered 422: Validation Failed: key is already in use"));
    assert!(refused, "{history:#}");
}

#[test]
fn policies_name_the_github_permissions() {
    for (provider, expected) in [
        (Provider::GithubDeployKey, "Administration: Read and write"),
        (Provider::GithubWebhook, "Webhooks: Read and write"),
        (Provider::GithubAppToken, "needs only the App's private key"),
    ] {
        let (rotor, _fixture) = rotor_for(provider, "0s");
        let out = rotor.ok(&["policy", "app/key0"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(expected), "{provider:?}: {text}");
    }
}

#[test]
fn deploy_keys_past_the_first_page_are_verified_and_retired() {
    let (rotor, fixture) = rotor_for(Provider::GithubDeployKey, "0s");
    let github = fixture.github.as_ref().unwrap();
    // 150 keys other tools added: rotor's own land on the second page of 100.
    {
        let mut state = github.state.lock().unwrap();
        for n in 0..150u64 {
            state.deploy_keys.insert(
                10_000 + n,
                crate::support::github::DeployKey {
                    key: format!("ssh-ed25519 AAAAother{n}"),
                    title: format!("ci-{n}"),
                    read_only: true,
                    last_used: None,
                },
            );
        }
    }
    let ours = |state: &crate::support::github::State| -> Vec<String> {
        state
            .deploy_keys
            .values()
            .filter(|k| !k.title.starts_with("ci-"))
            .map(|k| k.key.clone())
            .collect()
    };
    rotor.ok(&["rotate", "app/key0"]);
    let first = ours(&github.state.lock().unwrap());
    assert_eq!(first.len(), 1, "{first:?}");
    rotor.ok(&["rotate", "app/key0"]);
    let state = github.state.lock().unwrap();
    let second = ours(&state);
    assert_eq!(
        second.len(),
        1,
        "the old key was found and retired: {second:?}"
    );
    assert_ne!(second, first);
    assert_eq!(state.deploy_keys.len(), 151, "the other keys are untouched");
    assert!(
        state
            .calls
            .iter()
            .any(|c| c.starts_with("GET ") && c.contains("page=2")),
        "{:?}",
        state.calls
    );
}

#[test]
fn a_deploy_keys_last_used_at_github_is_its_evidence_of_use() {
    let (rotor, fixture) = rotor_for(Provider::GithubDeployKey, "1h");
    let config = std::fs::read_to_string(&rotor.config).unwrap().replace(
        "[credential.rotator]",
        "retire_when = \"unused\"\nunused_for = \"1s\"\n[credential.rotator]",
    );
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let github = fixture.github.as_ref().unwrap();
    let old_id = {
        let mut state = github.state.lock().unwrap();
        let (id, key) = state.deploy_keys.iter_mut().next().unwrap();
        key.last_used = Some(chrono::Utc::now().to_rfc3339());
        *id
    };
    rotor.ok(&["rotate", "app/key0"]);
    let status = &rotor.json(&["status", "app/key0", "--json"])[0];
    assert_eq!(status["previous_usage"]["evidence"], "seen", "{status}");
    assert!(
        status["previous_usage"]["by"]
            .as_str()
            .unwrap()
            .starts_with(&format!("deploy key {old_id} (")),
        "{status}"
    );
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(300)),
        "completed"
    );
    assert!(
        !github
            .state
            .lock()
            .unwrap()
            .deploy_keys
            .contains_key(&old_id),
        "the old key is deleted"
    );
}
