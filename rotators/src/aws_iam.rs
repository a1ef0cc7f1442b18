//! `aws_iam_access_key`: an IAM user's access key. A user holds at most two keys, so the new
//! key is created beside the old one, verified with STS as itself, and the old key is
//! deactivated at retirement and deleted `delete_after` later.
//!
//! IAM shows a new key's secret once. Before `CreateAccessKey`, rotor tags the user with the
//! run token and the keys that exist; if the process dies before the secret reaches the vault,
//! the retried `mint` of the same run finds that tag, deletes the key it made (the orphan) and
//! creates another. Deactivation time is a tag too, so the deletion deadline survives
//! restarts. rotor deletes no key it did not make or retire: two active keys it does not know
//! stop the rotation with a conflict.

use crate::kinds::Settings;

use aws_sdk_iam::config::http::HttpResponse;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::{StatusType, Tag};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::backoff::while_propagating;

use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, SecretRef, Secrets, Usage, resolve_secret,
};

pub const ACCESS_KEY_ID: &str = "access_key_id";
pub const SECRET_ACCESS_KEY: &str = "secret_access_key";

/// The user tag holding the run token and the keys that existed before its `CreateAccessKey`.
const MINTING_TAG: &str = "rotor:minting";
/// Prefix of the user tags holding when rotor deactivated a key (`rotor:deactivated:KEYID`).
const DEACTIVATED_TAG: &str = "rotor:deactivated:";

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsIamConfig {
    /// The IAM user whose access key rotates.
    pub user_name: String,
    /// How long a retired key stays deactivated (a way back if something still used it) before
    /// it is deleted. "0s" deletes it at retirement.
    #[serde(default = "default_delete_after")]
    pub delete_after: crate::duration::Duration,
    /// Region for STS (IAM itself is global).
    #[serde(default = "default_region")]
    pub region: String,
    /// Endpoint URL override for IAM and STS (a VPC endpoint, or a local emulator in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How long verification keeps retrying a new key that STS does not accept yet (IAM is
    /// eventually consistent) before the attempt counts as failed.
    #[serde(default = "default_verify_within")]
    pub verify_within: crate::duration::Duration,
    /// The account id, to scope `rotor policy` to the user's ARN; `*` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// rotor's own AWS access key, as secret references; the standard AWS credential chain
    /// (environment, profile, instance role) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<AwsCredentialRefs>,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

/// An access key given as secret references.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsCredentialRefs {
    pub access_key_id: SecretRef,
    pub secret_access_key: SecretRef,
}

fn default_delete_after() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(7 * 86_400)
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_verify_within() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(60)
}

impl Settings for AwsIamConfig {
    fn endpoints(&self) -> Vec<crate::net::Endpoint<'_>> {
        self.endpoint
            .as_deref()
            .map(|url| crate::net::Endpoint {
                field: "endpoint",
                url,
                insecure_allowed: self.insecure_transport,
            })
            .into_iter()
            .collect()
    }

    fn validate(&self) -> Result<(), String> {
        let valid = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
        if self.user_name.is_empty()
            || self.user_name.len() > 64
            || !self.user_name.chars().all(valid)
        {
            return Err(format!(
                "user_name `{}` is not an IAM user name (1-64 of A-Z a-z 0-9 +=,.@_-)",
                self.user_name
            ));
        }
        if let Some(account) = &self.account_id
            && (account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()))
        {
            return Err(format!(
                "account_id `{account}` is not a 12-digit AWS account id"
            ));
        }
        Ok(())
    }

    fn secret_refs(&self) -> Vec<&SecretRef> {
        self.credentials
            .iter()
            .flat_map(|c| [&c.access_key_id, &c.secret_access_key])
            .collect()
    }
}

impl RotatorSettings for AwsIamConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "STS `GetCallerIdentity` signed with the new key names the IAM user; refusals within `verify_within` (60 s) count as propagation",
            cannot: "the consumers' own IAM permissions (the key carries the user's)",
        }
    }

    fn usage_evidence(&self) -> Option<&'static str> {
        Some(
            "GetAccessKeyLastUsed of the old key (date, service, region; AWS updates it within hours)",
        )
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        let account = self.account_id.as_deref().unwrap_or("*");
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "RotorRotatesAccessKeys",
                "Effect": "Allow",
                "Action": [
                    "iam:GetUser",
                    "iam:ListAccessKeys",
                    "iam:CreateAccessKey",
                    "iam:UpdateAccessKey",
                    "iam:DeleteAccessKey",
                    "iam:GetAccessKeyLastUsed",
                    "iam:ListUserTags",
                    "iam:TagUser",
                    "iam:UntagUser"
                ],
                "Resource": format!("arn:aws:iam::{account}:user/{}", self.user_name)
            }]
        });
        format!(
            "// rotor: least privilege (IAM policy) at the provider for credential \"{credential_id}\" \
             (IAM user \"{}\").\n// Verification calls sts:GetCallerIdentity as the new key, which needs no permission.\n{}\n",
            self.user_name,
            serde_json::to_string_pretty(&policy).expect("policy serializes")
        )
    }
}

pub struct AwsIamAccessKey {
    config: AwsIamConfig,
    secrets: Secrets,
    sdk: OnceCell<aws_config::SdkConfig>,
}

#[derive(Debug, Clone)]
struct Key {
    id: String,
    active: bool,
}

fn key_id(credential: &Credential) -> Result<String, RotatorError> {
    Ok(credential
        .require(ACCESS_KEY_ID)?
        .expose_secret()
        .to_owned())
}

/// Classifies an SDK error; the message names the operation, the user and AWS's error code.
fn classify<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>, what: &str) -> RotatorError {
    // moto (and some proxies) refuse a bad signature with a bare 403 and no error code.
    let status = e.raw_response().map(|r| r.status().as_u16());
    let (transient, advice) = match e {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            (true, "AWS could not be reached or answered badly; rotor retries".to_owned())
        }
        // Down or overloaded, whatever code (if any) a proxy in front of it puts in the body.
        _ if status.is_some_and(|s| s >= 500 || s == 429 || s == 408) => (
            true,
            format!(
                "AWS answered HTTP {}; rotor retries",
                status.unwrap_or_default()
            ),
        ),
        _ => match e.code() {
            Some("Throttling" | "ThrottlingException" | "ServiceFailure" | "RequestExpired") => {
                (true, "AWS throttled or failed the request; rotor retries".to_owned())
            }
            Some("LimitExceeded") => (
                false,
                "the user already has two access keys; delete or deactivate the one rotor does not know".to_owned(),
            ),
            Some("NoSuchEntity") => (false, "the user or key does not exist: check `user_name`".to_owned()),
            Some("AccessDenied") => (
                false,
                "permission denied: attach the policy `rotor policy ID` prints to rotor's AWS identity".to_owned(),
            ),
            Some(code) => (false, format!("AWS error {code}")),
            None if status == Some(403) => (
                false,
                "AWS refused the request (HTTP 403): check rotor's AWS credentials and the policy `rotor policy ID` prints".to_owned(),
            ),
            None => (false, "AWS refused the request".to_owned()),
        },
    };
    let detail = e.message().map(|m| format!(": {m}")).unwrap_or_default();
    let message = format!("{what}{detail} ({advice})");
    if transient {
        RotatorError::transient(message)
    } else {
        RotatorError::permanent(message)
    }
}

impl AwsIamAccessKey {
    pub fn build(config: AwsIamConfig, secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        Ok(Self {
            config,
            secrets,
            sdk: OnceCell::new(),
        })
    }

    async fn sdk(&self) -> &aws_config::SdkConfig {
        self.sdk
            .get_or_init(|| async {
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .region(aws_config::Region::new(self.config.region.clone()));
                if let Some(endpoint) = &self.config.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                loader.load().await
            })
            .await
    }

    /// An IAM client as rotor's identity. Configured references are read for every client, so
    /// a key that rotor itself rotates is picked up at once.
    async fn iam(&self) -> Result<aws_sdk_iam::Client, RotatorError> {
        let mut config = aws_sdk_iam::config::Builder::from(self.sdk().await);
        if let Some(refs) = &self.config.credentials {
            let id = resolve_secret(
                &self.secrets,
                &refs.access_key_id,
                "rotor's AWS access key id",
            )
            .await?;
            let secret = resolve_secret(
                &self.secrets,
                &refs.secret_access_key,
                "rotor's AWS secret access key",
            )
            .await?;
            config = config.credentials_provider(aws_sdk_iam::config::Credentials::new(
                id.expose_secret(),
                secret.expose_secret(),
                None,
                None,
                "rotor-config",
            ));
        }
        Ok(aws_sdk_iam::Client::from_conf(config.build()))
    }

    fn user(&self) -> &str {
        &self.config.user_name
    }

    async fn keys(&self, iam: &aws_sdk_iam::Client) -> Result<Vec<Key>, RotatorError> {
        let out = iam
            .list_access_keys()
            .user_name(self.user())
            .send()
            .await
            .map_err(|e| {
                classify(
                    &e,
                    &format!("listing the access keys of IAM user {}", self.user()),
                )
            })?;
        Ok(out
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                Some(Key {
                    id: k.access_key_id()?.to_owned(),
                    active: k.status() == Some(&StatusType::Active),
                })
            })
            .collect())
    }

    async fn tags(&self, iam: &aws_sdk_iam::Client) -> Result<Vec<(String, String)>, RotatorError> {
        let out = iam
            .list_user_tags()
            .user_name(self.user())
            .send()
            .await
            .map_err(|e| classify(&e, &format!("reading the tags of IAM user {}", self.user())))?;
        Ok(out
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }

    async fn tag(
        &self,
        iam: &aws_sdk_iam::Client,
        key: &str,
        value: &str,
    ) -> Result<(), RotatorError> {
        let tag = Tag::builder()
            .key(key)
            .value(value)
            .build()
            .map_err(|e| RotatorError::permanent(format!("building tag {key}: {e}")))?;
        iam.tag_user()
            .user_name(self.user())
            .tags(tag)
            .send()
            .await
            .map_err(|e| classify(&e, &format!("tagging IAM user {} with {key}", self.user())))?;
        Ok(())
    }

    async fn untag(&self, iam: &aws_sdk_iam::Client, key: &str) -> Result<(), RotatorError> {
        iam.untag_user()
            .user_name(self.user())
            .tag_keys(key)
            .send()
            .await
            .map_err(|e| {
                classify(
                    &e,
                    &format!("removing tag {key} from IAM user {}", self.user()),
                )
            })?;
        Ok(())
    }

    async fn delete(&self, iam: &aws_sdk_iam::Client, id: &str) -> Result<(), RotatorError> {
        match iam
            .delete_access_key()
            .user_name(self.user())
            .access_key_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchEntity") => Ok(()),
            Err(e) => Err(classify(
                &e,
                &format!("deleting access key {id} of IAM user {}", self.user()),
            )),
        }
    }

    async fn deactivate(&self, iam: &aws_sdk_iam::Client, id: &str) -> Result<(), RotatorError> {
        iam.update_access_key()
            .user_name(self.user())
            .access_key_id(id)
            .status(StatusType::Inactive)
            .send()
            .await
            .map_err(|e| {
                classify(
                    &e,
                    &format!("deactivating access key {id} of IAM user {}", self.user()),
                )
            })?;
        Ok(())
    }

    /// Makes room for a new key: removes what an interrupted mint of this run made, and a
    /// deactivated key that is not current. Anything else is left alone, and a conflict.
    async fn make_room(
        &self,
        iam: &aws_sdk_iam::Client,
        token: &str,
        current: Option<&str>,
    ) -> Result<Vec<Key>, RotatorError> {
        let mut keys = self.keys(iam).await?;
        let tags = self.tags(iam).await?;
        if let Some((_, value)) = tags.iter().find(|(k, _)| k == MINTING_TAG) {
            let mut parts = value.split('/');
            if parts.next() == Some(token) {
                let before: Vec<&str> = parts.collect();
                for orphan in keys
                    .iter()
                    .filter(|k| !before.contains(&k.id.as_str()) && Some(k.id.as_str()) != current)
                {
                    tracing::warn!(user = self.user(), key = %orphan.id, "deleting the access key an interrupted mint of this run created");
                    self.delete(iam, &orphan.id).await?;
                }
                keys.retain(|k| before.contains(&k.id.as_str()) || Some(k.id.as_str()) == current);
            }
        }
        if keys.len() >= 2
            && let Some(spare) = keys
                .iter()
                .find(|k| !k.active && Some(k.id.as_str()) != current)
                .cloned()
        {
            tracing::info!(user = self.user(), key = %spare.id, "deleting a deactivated access key to make room");
            self.delete(iam, &spare.id).await?;
            self.untag(iam, &format!("{DEACTIVATED_TAG}{}", spare.id))
                .await?;
            keys.retain(|k| k.id != spare.id);
        }
        if keys.len() >= 2 {
            let unknown: Vec<&str> = keys
                .iter()
                .filter(|k| Some(k.id.as_str()) != current)
                .map(|k| k.id.as_str())
                .collect();
            return Err(RotatorError::conflict(format!(
                "IAM user {} already has two access keys and {} is active and not the one rotor manages; \
                 rotor deletes no key it did not create or retire: deactivate or delete it, then `rotor rotate`",
                self.user(),
                unknown.join(" and ")
            )));
        }
        Ok(keys)
    }

    /// When rotor deactivated `id`, from the user's tags.
    fn deactivated_at(
        tags: &[(String, String)],
        id: &str,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        let key = format!("{DEACTIVATED_TAG}{id}");
        tags.iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| chrono::DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// Deactivates `old` (tagging when, first) and deletes it once `delete_after` has passed
    /// since; zero deletes it in the same call.
    async fn retire_key(
        &self,
        old: &Credential,
        current: Option<&Credential>,
        delete_after: std::time::Duration,
    ) -> Result<Retired, RotatorError> {
        let id = key_id(old)?;
        if current.map(key_id).transpose()?.as_deref() == Some(id.as_str()) {
            return Err(RotatorError::permanent(format!(
                "refusing to retire access key {id}: it is the current key of IAM user {}",
                self.user()
            )));
        }
        let iam = self.iam().await?;
        let Some(key) = self.keys(&iam).await?.into_iter().find(|k| k.id == id) else {
            return Ok(Retired::Done);
        };
        let tag = format!("{DEACTIVATED_TAG}{id}");
        let now = chrono::Utc::now();
        let since = if key.active {
            // Tag first: a crash after deactivating must not lose the deadline.
            self.tag(
                &iam,
                &tag,
                &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            )
            .await?;
            self.deactivate(&iam, &id).await?;
            now
        } else {
            match Self::deactivated_at(&self.tags(&iam).await?, &id) {
                Some(since) => since,
                None => {
                    self.tag(
                        &iam,
                        &tag,
                        &now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    )
                    .await?;
                    now
                }
            }
        };
        let elapsed = (now - since).to_std().unwrap_or_default();
        if elapsed < delete_after {
            return Ok(Retired::Again(delete_after - elapsed));
        }
        self.delete(&iam, &id).await?;
        self.untag(&iam, &tag).await?;
        Ok(Retired::Done)
    }
}

impl Rotator for AwsIamAccessKey {
    fn kind(&self) -> &'static str {
        "aws_iam_access_key"
    }

    fn origin(&self) -> Origin {
        Origin::Provider
    }

    async fn mint(&self, context: MintContext<'_>) -> Result<Credential, RotatorError> {
        let iam = self.iam().await?;
        let current = context.current.map(key_id).transpose()?;
        context.still_owned().await?;
        let keys = self
            .make_room(&iam, context.token, current.as_deref())
            .await?;
        // The intent, recorded at the provider before the key exists: `token/KEY/KEY`.
        let mut intent = vec![context.token];
        intent.extend(keys.iter().map(|k| k.id.as_str()));
        self.tag(&iam, MINTING_TAG, &intent.join("/")).await?;
        let out = iam
            .create_access_key()
            .user_name(self.user())
            .send()
            .await
            .map_err(|e| {
                classify(
                    &e,
                    &format!("creating an access key for IAM user {}", self.user()),
                )
            })?;
        let key = out.access_key().ok_or_else(|| {
            RotatorError::transient(format!(
                "CreateAccessKey for IAM user {} returned no key",
                self.user()
            ))
        })?;
        Ok(Credential::new()
            .with(ACCESS_KEY_ID, SecretString::from(key.access_key_id()))
            .with(
                SECRET_ACCESS_KEY,
                SecretString::from(key.secret_access_key()),
            ))
    }

    async fn apply(
        &self,
        _candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        // IAM made the key active when it created it.
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let id = key_id(candidate)?;
        let credentials = aws_sdk_sts::config::Credentials::new(
            id.clone(),
            candidate.require(SECRET_ACCESS_KEY)?.expose_secret(),
            None,
            None,
            "rotor-candidate",
        );
        let config = aws_sdk_sts::config::Builder::from(self.sdk().await)
            .credentials_provider(credentials)
            .build();
        let sts = aws_sdk_sts::Client::from_conf(config);
        let what = format!(
            "verifying access key {id} of IAM user {} with sts:GetCallerIdentity",
            self.user()
        );
        // New keys take a few seconds to be accepted everywhere: a failure counts only when it
        // lasts `verify_within`.
        let identity = while_propagating(
            self.config.verify_within.as_std(),
            || async {
                sts.get_caller_identity()
                    .send()
                    .await
                    .map_err(|e| classify(&e, &what))
            },
            |_| true,
        )
        .await
        .map_err(|(error, _)| RotatorError {
            message: format!(
                "{} (still failing after {})",
                error.message, self.config.verify_within
            ),
            ..error
        })?;
        let arn = identity.arn().unwrap_or_default();
        if !arn.ends_with(&format!("/{}", self.user()))
            && !arn.ends_with(&format!(":user/{}", self.user()))
        {
            return Err(RotatorError::permanent(format!(
                "access key {id} authenticates as {arn}, not as IAM user {}",
                self.user()
            )));
        }
        Ok(())
    }

    async fn retire(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        self.retire_key(old, current, self.config.delete_after.as_std())
            .await
    }

    /// Deactivated and deleted in the same call: an exposed key is not kept for `delete_after`.
    async fn retire_at_once(
        &self,
        old: &Credential,
        current: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        self.retire_key(old, current, std::time::Duration::ZERO)
            .await
    }

    /// `GetAccessKeyLastUsed`: when the old key last signed a request, for which service in
    /// which region (AWS records this within hours, not seconds: "unused for 15m" is as
    /// fresh as AWS's record).
    async fn last_used(&self, old: &Credential) -> Result<Usage, RotatorError> {
        let id = key_id(old)?;
        let iam = self.iam().await?;
        let answer = iam
            .get_access_key_last_used()
            .access_key_id(&id)
            .send()
            .await
            .map_err(|e| classify(&e, &format!("reading when access key {id} was last used")))?;
        let Some(used) = answer.access_key_last_used() else {
            return Ok(Usage::Unseen);
        };
        let Some(date) = used.last_used_date() else {
            return Ok(Usage::Unseen);
        };
        Ok(Usage::Seen {
            at: Some(date.to_millis().unwrap_or(i64::MAX)),
            by: format!(
                "access key {id}: {} in {}",
                used.service_name(),
                used.region()
            ),
        })
    }

    async fn unissued(&self, current: &Credential) -> Result<usize, RotatorError> {
        let current = key_id(current)?;
        let iam = self.iam().await?;
        Ok(self
            .keys(&iam)
            .await?
            .iter()
            .filter(|k| k.id != current)
            .count())
    }

    /// Retires every other key of the user as a previous key is retired: deactivated, then
    /// deleted after `delete_after` (at once when `at_once`).
    async fn retire_unissued(
        &self,
        current: &Credential,
        at_once: bool,
    ) -> Result<Retired, RotatorError> {
        let current_id = key_id(current)?;
        let iam = self.iam().await?;
        let delete_after = if at_once {
            std::time::Duration::ZERO
        } else {
            self.config.delete_after.as_std()
        };
        let mut again: Option<std::time::Duration> = None;
        for key in self.keys(&iam).await? {
            if key.id == current_id {
                continue;
            }
            let other = Credential::new().with(ACCESS_KEY_ID, SecretString::from(key.id));
            if let Retired::Again(after) =
                self.retire_key(&other, Some(current), delete_after).await?
            {
                again = Some(again.map_or(after, |a| a.min(after)));
            }
        }
        Ok(again.map_or(Retired::Done, Retired::Again))
    }

    async fn rollback(
        &self,
        candidate: &Credential,
        current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        let id = key_id(candidate)?;
        if current.map(key_id).transpose()?.as_deref() == Some(id.as_str()) {
            return Ok(());
        }
        let iam = self.iam().await?;
        self.delete(&iam, &id).await
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        let iam = self.iam().await?;
        Ok(self
            .keys(&iam)
            .await?
            .into_iter()
            .map(|k| LiveCredential {
                provider_id: k.id,
                active: k.active,
            })
            .collect())
    }

    fn provider_id(&self, credential: &Credential) -> Option<String> {
        key_id(credential).ok()
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        let iam = self.iam().await?;
        iam.get_user()
            .user_name(self.user())
            .send()
            .await
            .map_err(|e| classify(&e, &format!("reading IAM user {}", self.user())))?;
        let keys = self.keys(&iam).await?;
        self.tags(&iam).await?;
        if keys.len() >= 2 && keys.iter().all(|k| k.active) {
            return Err(RotatorError::permanent(format!(
                "IAM user {} has two active access keys ({}): the next rotation cannot create a third; \
                 deactivate the one no one uses",
                self.user(),
                keys.iter()
                    .map(|k| k.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_errors() {
        let c: AwsIamConfig = toml::from_str("user_name = \"ci-deployer\"").unwrap();
        assert_eq!(c.delete_after.as_secs(), 7 * 86_400);
        assert!(c.validate().is_ok());
        let bad: AwsIamConfig = toml::from_str("user_name = \"no spaces\"").unwrap();
        assert!(bad.validate().unwrap_err().contains("not an IAM user name"));
        assert!(toml::from_str::<AwsIamConfig>("user_name = \"u\"\nsecret = \"x\"").is_err());
    }

    #[test]
    fn the_policy_is_scoped_to_the_user() {
        let c: AwsIamConfig =
            toml::from_str("user_name = \"ci-deployer\"\naccount_id = \"123456789012\"").unwrap();
        let text = c.least_privilege("ci/aws");
        let json: serde_json::Value = serde_json::from_str(
            text.lines()
                .filter(|l| !l.starts_with("//"))
                .collect::<String>()
                .as_str(),
        )
        .unwrap();
        assert_eq!(
            json["Statement"][0]["Resource"],
            "arn:aws:iam::123456789012:user/ci-deployer"
        );
    }
}
