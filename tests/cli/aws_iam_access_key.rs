//! `aws_iam_access_key` through the binary, against moto in its authenticating mode (wrong and
//! deleted keys are refused, rotor's user holds only the actions `rotor policy` prints): the
//! old key is deactivated at retirement and deleted `delete_after` later, and keys rotor did
//! not make are never deleted while active.

use std::time::Duration;

use crate::providers::{Provider, block_on, iam, setup};
use crate::support::Rotor;

fn status_state(rotor: &Rotor) -> String {
    rotor.json(&["status", "--json"])[0]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn the_old_key_is_deactivated_then_deleted_after_delete_after() {
    let rotor = Rotor::new("");
    let fixture = iam::setup_with("delete_later", rotor.dir.path(), "3s");
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let first = block_on(iam::keys("delete_later"));
    assert_eq!(first.len(), 1);

    let out = rotor.ok(&["rotate", "app/key0"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("the previous one disabled"),
        "{out:?}"
    );
    let keys = block_on(iam::keys("delete_later"));
    assert_eq!(keys.len(), 2, "{keys:?}");
    // moto still accepts inactive keys (AWS does not): the deactivation is checked in IAM.
    assert!(
        keys.contains(&(first[0].0.clone(), false)),
        "the old key is inactive: {keys:?}"
    );
    assert_eq!(status_state(&rotor), "retiring");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    assert!(
        history[0]["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["step"] == "retire" && s["outcome"] == "waiting"),
        "{history}"
    );

    std::thread::sleep(Duration::from_millis(3200));
    rotor.ok(&["run", "--once"]);
    assert_eq!(status_state(&rotor), "idle");
    let keys = block_on(iam::keys("delete_later"));
    assert_eq!(keys.len(), 1, "the old key is deleted: {keys:?}");
    assert_ne!(keys[0].0, first[0].0);
    assert!(keys[0].1);
}

/// Two keys made by hand fill the user's two slots: rotor deletes neither to make room (it
/// cannot tell which one consumers use). Once one is deactivated, rotor takes its slot; the
/// active one is then what rotor adopted, retired after the first version's grace like any
/// replaced key (grace 0 and `delete_after = "0s"` here).
#[test]
fn an_unknown_active_key_is_never_deleted_to_make_room_and_is_retired_after_adoption() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Iam, "two_keys", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let moto = iam::server();
    // Someone made two keys by hand: IAM allows no third.
    let made = block_on(async {
        let iam = moto.iam();
        let mut made = Vec::new();
        for _ in 0..2 {
            let out = iam
                .create_access_key()
                .user_name("two_keys")
                .send()
                .await
                .unwrap();
            made.push(out.access_key().unwrap().access_key_id().to_owned());
        }
        made.sort();
        made
    });

    let out = rotor.run(&["rotate", "app/key0"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let history = rotor.json(&["history", "app/key0", "--json"]);
    let error = history[0]["steps"][0]["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("already has two access keys") && error.contains(&made[0]),
        "{error}"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("conflict"), "an alert is raised: {stderr}");
    let keys: Vec<String> = block_on(iam::keys("two_keys"))
        .into_iter()
        .map(|k| k.0)
        .collect();
    assert_eq!(keys, made, "no key was deleted");

    // Once one of them is deactivated, rotor may use its slot.
    block_on(async {
        moto.iam()
            .update_access_key()
            .user_name("two_keys")
            .access_key_id(&made[1])
            .status(aws_sdk_iam::types::StatusType::Inactive)
            .send()
            .await
            .unwrap();
    });
    rotor.ok(&["rotate", "app/key0"]);
    let keys = block_on(iam::keys("two_keys"));
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(
        !keys.iter().any(|k| made.contains(&k.0)),
        "both keys made by hand are gone, rotor's is the one left: {keys:?}"
    );
    assert!(keys[0].1);
}

#[test]
fn policy_is_scoped_to_the_user() {
    let rotor = Rotor::new("");
    let fixture = setup(Provider::Iam, "policy_user", rotor.dir.path());
    std::fs::write(&rotor.config, fixture.config("0s", rotor.dir.path())).unwrap();
    let out = rotor.ok(&["policy", "app/key0"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\"Resource\": \"arn:aws:iam::123456789012:user/policy_user\"")
            && text.contains("iam:CreateAccessKey"),
        "{text}"
    );
}

#[test]
fn retiring_by_evidence_reads_when_the_old_key_was_last_used() {
    let rotor = Rotor::new("");
    let fixture = iam::setup("evidence", rotor.dir.path());
    let config = fixture.config("1h", rotor.dir.path()).replace(
        "[credential.rotator]",
        "retire_when = \"unused\"\nunused_for = \"1s\"\n[credential.rotator]",
    );
    std::fs::write(&rotor.config, config).unwrap();
    rotor.ok(&["rotate", "app/key0", "--emergency"]);
    let old = crate::providers::current(&rotor);
    block_on(iam::identity(&old)).expect("the key signs a request");
    rotor.ok(&["rotate", "app/key0"]);
    // moto in its authenticating mode records the STS call the old key signed.
    let status = &rotor.json(&["status", "app/key0", "--json"])[0];
    let usage = &status["previous_usage"];
    assert_eq!(usage["evidence"], "seen", "{status}");
    let old_id = crate::providers::field(&old, "access_key_id");
    assert_eq!(
        usage["by"],
        format!("access key {old_id}: sts in us-east-1"),
        "{status}"
    );
    assert!(usage["last_seen_at"].is_string(), "{status}");
    // Its last use was before the promotion: once a second has passed without another, it is
    // retired, long before the hour of grace.
    assert_eq!(
        rotor.run_until_completed("app/key0", std::time::Duration::from_millis(300)),
        "completed"
    );
    let keys = block_on(iam::keys("evidence"));
    assert!(
        !keys.iter().any(|(id, active)| *id == old_id && *active),
        "the old key is no longer active: {keys:?}"
    );
}
