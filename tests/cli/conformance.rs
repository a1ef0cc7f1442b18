//! The rotator contract, checked the same way for every provider against its real server:
//! minting twice with one token leaves one credential, `list_live` sees what was made, the old
//! and new credential overlap until retirement, retiring twice is fine, a rollback leaves the
//! current credential working, and a refused credential is a permanent error that says which
//! account failed.

use std::sync::Arc;

use rotor::vault::{VaultSecrets, Vaults};
use rotor_rotators::{
    AnyRotator, Credential, ErrorClass, MintContext, Origin, Retired, Rotator, RotatorConfig,
};

use crate::providers::{Fixture, Provider, block_on, setup};

pub fn build(fixture: &Fixture) -> AnyRotator {
    let config: RotatorConfig = toml::from_str(&fixture.rotator).expect("rotator config");
    config.settings().validate().expect("valid rotator config");
    AnyRotator::build(&config, Arc::new(VaultSecrets(Arc::new(Vaults::default()))))
        .expect("rotator builds")
}

async fn live(rotator: &AnyRotator) -> Vec<(String, bool)> {
    let mut live: Vec<_> = rotator
        .list_live()
        .await
        .expect("list_live")
        .into_iter()
        .map(|l| (l.provider_id, l.active))
        .collect();
    live.sort();
    live
}

async fn retire_fully(rotator: &AnyRotator, old: &Credential, current: &Credential) {
    for _ in 0..2 {
        // Twice: a crash after retiring and before saving repeats the call.
        loop {
            match rotator.retire(old, Some(current)).await.expect("retire") {
                Retired::Done => break,
                Retired::Again(after) => tokio::time::sleep(after).await,
            }
        }
    }
}

fn contract(provider: Provider, unique: &str) {
    let dir = tempfile::tempdir().unwrap();
    let fixture = setup(provider, unique, dir.path());
    let rotator = build(&fixture);
    block_on(async {
        rotator.preflight().await.expect("preflight passes");
        let before = live(&rotator).await;

        // Mint twice with one token (a retried step): one credential at the provider.
        let first = MintContext {
            token: "conformance-token-1",
            current: None,
            fence: None,
        };
        let discarded = rotator.mint(first).await.expect("mint");
        let one = rotator.mint(first).await.expect("mint again");
        let after = live(&rotator).await;
        match rotator.origin() {
            Origin::Local => assert_eq!(after, before, "a local mint changes nothing"),
            Origin::Provider if fixture.lists() => {
                assert_eq!(after.len(), before.len() + 1, "one credential, not two");
                assert!(
                    !fixture.accepts_now(&discarded).await,
                    "the first mint's orphan is gone"
                );
            }
            // Not listable: GitHub can neither list nor revoke an installation token rotor
            // never received; it expires within the hour.
            Origin::Provider => drop(discarded),
        }
        rotator.apply(&one, None).await.expect("apply");
        rotator
            .apply(&one, None)
            .await
            .expect("apply is idempotent");
        rotator.verify(&one).await.expect("verify");
        // The first credential has nothing to overlap with: the engine switches over at once.
        rotator.switch_over(&one).await.expect("switch over");
        assert!(fixture.accepts_now(&one).await);
        let id = rotator.provider_id(&one).expect("a provider id");
        if fixture.lists() {
            assert!(
                live(&rotator).await.contains(&(id.clone(), true)),
                "list_live sees {id}"
            );
        }

        // The next rotation: old and new both work until the old one is retired.
        let second = MintContext {
            token: "conformance-token-2",
            current: Some(&one),
            fence: None,
        };
        let two = rotator.mint(second).await.expect("mint");
        rotator.apply(&two, Some(&one)).await.expect("apply");
        rotator.verify(&two).await.expect("verify");
        assert!(
            fixture.accepts_now(&one).await,
            "the old credential works through grace"
        );
        if !fixture.switches_after_grace() {
            assert!(fixture.accepts_now(&two).await);
        }
        rotator.switch_over(&two).await.expect("switch over");
        rotator.switch_over(&two).await.expect("switch over again");
        retire_fully(&rotator, &one, &two).await;
        assert!(!fixture.accepts_now(&one).await, "retired");
        assert!(
            fixture.accepts_now(&two).await,
            "retiring the old one leaves the new one"
        );

        // A candidate that fails is rolled back; the current credential is untouched.
        let third = MintContext {
            token: "conformance-token-3",
            current: Some(&two),
            fence: None,
        };
        let three = rotator.mint(third).await.expect("mint");
        rotator.apply(&three, Some(&two)).await.expect("apply");
        rotator
            .rollback(&three, Some(&two))
            .await
            .expect("rollback");
        rotator
            .rollback(&three, Some(&two))
            .await
            .expect("rollback again");
        assert!(
            fixture.accepts_now(&two).await,
            "current survives a rollback"
        );
        assert!(!fixture.accepts_now(&three).await, "the candidate is gone");

        // A credential the provider refuses: permanent, and the message names the account.
        // (GitHub never shows a webhook's secret: there is nothing to refuse it with.)
        if fixture.switches_after_grace() {
            return;
        }
        let refused = rotator
            .verify(&three)
            .await
            .expect_err("a rolled-back candidate does not verify");
        assert_eq!(refused.class, ErrorClass::Permanent, "{refused}");
        let id = rotator.provider_id(&three).unwrap();
        assert!(
            fixture.accounts.iter().any(|a| refused.message.contains(a))
                || refused.message.contains(&id),
            "{refused} names {id} or one of {:?}",
            fixture.accounts
        );
    });
}

#[test]
fn postgres_password_keeps_the_contract() {
    contract(Provider::Postgres, "conformance");
}

#[test]
fn redis_acl_password_keeps_the_contract() {
    contract(Provider::Redis, "conformance");
}

#[test]
fn redis_acl_password_alternating_keeps_the_contract() {
    contract(Provider::RedisAlternating, "conformance_alternating");
}

#[test]
fn aws_iam_access_key_keeps_the_contract() {
    contract(Provider::Iam, "conformance");
}

#[test]
fn http_keeps_the_contract() {
    contract(Provider::Http, "conformance");
}

#[test]
fn github_deploy_key_keeps_the_contract() {
    contract(Provider::GithubDeployKey, "conformance");
}

#[test]
fn github_webhook_secret_keeps_the_contract() {
    contract(Provider::GithubWebhook, "conformance");
}

#[test]
fn github_app_installation_token_keeps_the_contract() {
    contract(Provider::GithubAppToken, "conformance");
}

#[test]
fn mysql_password_keeps_the_contract() {
    contract(Provider::Mysql, "conformance");
}

#[test]
fn ssh_authorized_key_keeps_the_contract() {
    contract(Provider::Ssh, "conformance");
}
