//! The `aws_secrets_manager` vault: one secret per credential (the secret id is the vault
//! path), its value the credential document as JSON, with AWS's native staging labels so that
//! AWS-native consumers and AWS's own rotation tooling keep working.
//!
//! mint writes the new document with `PutSecretValue`, `VersionStages = [AWSPENDING]` and
//! `ClientRequestToken` = the run token (so the version id is the token: a retried mint finds its
//! own version). The pending document already carries the current fields under `previous`, so
//! promotion only moves labels: AWSCURRENT to the run's version (AWS moves AWSPREVIOUS itself),
//! then AWSPENDING off it. Retirement writes the fields alone as a new AWSCURRENT version whose
//! token is derived from the run token. Every read names its stage: some implementations answer a
//! stage-less read with a stale version after a label move.
//!
//! A stale AWSPENDING version that is not this run's ("a previous rotation isn't complete") is
//! never overwritten or relabelled: the run stops with a `Conflict` naming the version, and the
//! operator finishes or cancels that rotation first.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use rotor_rotators::{Credential, ErrorClass};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::wire::{WireDocument, describe_json_error, to_zeroized_json};
use super::{
    Document, PolicyScope, Previous, StoredVersion, Vault, VaultError, VaultSettings, retired_token,
};
use rotor_rotators::kinds::Settings;

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// AWS Secrets Manager, with credentials from the standard AWS chain.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSecretsManagerConfig {
    /// AWS region, e.g. "eu-west-1".
    pub region: String,
    /// Endpoint URL override (a VPC endpoint, or a local emulator in tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Allow a transport that does not protect secrets (plaintext http or redis, PostgreSQL
    /// without `sslmode=verify-full`/`verify-ca`) to a host other than this machine, on a
    /// network you trust; `rotor validate` warns of it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_transport: bool,
}

impl Settings for AwsSecretsManagerConfig {
    fn endpoints(&self) -> Vec<rotor_rotators::net::Endpoint<'_>> {
        self.endpoint
            .as_deref()
            .map(|url| rotor_rotators::net::Endpoint {
                field: "endpoint",
                url,
                insecure_allowed: self.insecure_transport,
            })
            .into_iter()
            .collect()
    }
}

impl VaultSettings for AwsSecretsManagerConfig {
    fn least_privilege(&self, scope: &PolicyScope<'_>) -> String {
        let PolicyScope {
            credential,
            vault,
            path,
        } = *scope;
        let resource = format!(
            "arn:aws:secretsmanager:{}:*:secret:{path}-??????",
            self.region
        );
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "RotorRotates",
                    "Effect": "Allow",
                    "Action": [
                        "secretsmanager:GetSecretValue",
                        "secretsmanager:PutSecretValue",
                        "secretsmanager:UpdateSecretVersionStage"
                    ],
                    "Resource": resource
                },
                {
                    "Sid": "RotorCreatesOnFirstRotation",
                    "Effect": "Allow",
                    "Action": ["secretsmanager:CreateSecret"],
                    "Resource": resource
                }
            ]
        });
        format!(
            "// rotor: least privilege (IAM policy) for credential \"{credential}\" in vault \"{vault}\".\n{}\n",
            serde_json::to_string_pretty(&policy).expect("policy serializes")
        )
    }
}

pub struct AwsSecretsManager {
    name: String,
    client: Client,
}

impl AwsSecretsManager {
    pub async fn open(name: &str, config: &AwsSecretsManagerConfig) -> AwsSecretsManager {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(config.region.clone()));
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let client = Client::new(&loader.load().await);
        AwsSecretsManager {
            name: name.into(),
            client,
        }
    }

    fn err(&self, class: ErrorClass, path: &str, message: impl Into<String>) -> VaultError {
        VaultError::new(class, &self.name, path, message)
    }

    /// Classifies an SDK error; the message names the operation and AWS's error code.
    fn sdk_err<E: ProvideErrorMetadata>(
        &self,
        path: &str,
        operation: &str,
        e: &SdkError<E, HttpResponse>,
    ) -> VaultError {
        // A server that is down or overloaded says so by its status, whatever code (if any) a
        // load balancer or proxy in front of it puts in the body.
        let status = e.raw_response().map(|r| r.status().as_u16());
        let (class, what) = match e {
            SdkError::TimeoutError(_)
            | SdkError::DispatchFailure(_)
            | SdkError::ResponseError(_) => (
                ErrorClass::Transient,
                "AWS could not be reached or answered badly".to_owned(),
            ),
            _ => {
                let code = e.code().unwrap_or("unknown");
                let class = match code {
                    "InternalServiceError"
                    | "ThrottlingException"
                    | "LimitExceededException"
                    | "RequestTimeout" => ErrorClass::Transient,
                    _ if status.is_some_and(|s| s >= 500 || s == 429 || s == 408) => {
                        ErrorClass::Transient
                    }
                    _ => ErrorClass::Permanent,
                };
                (
                    class,
                    format!("{code}: {}", e.message().unwrap_or("no message")),
                )
            }
        };
        let hint = if what.contains("AccessDenied") {
            "; the credentials' IAM policy must allow it"
        } else {
            ""
        };
        self.err(class, path, format!("{operation} failed: {what}{hint}"))
    }

    /// The version at `stage`, if the secret exists and has one.
    async fn get(
        &self,
        path: &str,
        stage: &str,
    ) -> Result<Option<(String, WireDocument<serde_json::Value>)>, VaultError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(path)
            .version_stage(stage)
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(self.sdk_err(path, &format!("GetSecretValue {stage}"), &e)),
        };
        let version = out.version_id.clone().unwrap_or_default();
        let text = Zeroizing::new(out.secret_string.unwrap_or_default());
        let doc = serde_json::from_str(&text).map_err(|e| {
            self.err(
                ErrorClass::Permanent,
                path,
                format!(
                    "the {stage} value is not a rotor document ({}); nothing was changed",
                    describe_json_error(&e)
                ),
            )
        })?;
        Ok(Some((version, doc)))
    }

    async fn put(
        &self,
        path: &str,
        token: &str,
        doc: &WireDocument<()>,
        stage: &str,
    ) -> Result<(), VaultError> {
        let body = to_zeroized_json(doc, doc.json_capacity());
        let text = Zeroizing::new(String::from_utf8(body.to_vec()).expect("JSON is UTF-8"));
        let put = || {
            self.client
                .put_secret_value()
                .secret_id(path)
                .client_request_token(token)
                .secret_string(text.as_str())
                .version_stages(stage)
                .send()
        };
        match put().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                // The first version of a new secret: create it empty, then put as usual.
                self.client
                    .create_secret()
                    .name(path)
                    // AWS makes a secret's first version AWSCURRENT whatever its labels: an empty
                    // document (no fields, read as "no credential") is that version, so an
                    // unverified candidate never becomes AWSCURRENT.
                    .secret_string("{}")
                    .description("Managed by rotor: rotated on a schedule, do not edit by hand")
                    .send()
                    .await
                    .map_err(|e| self.sdk_err(path, "CreateSecret", &e))?;
                put()
                    .await
                    .map(drop)
                    .map_err(|e| self.sdk_err(path, "PutSecretValue", &e))
            }
            Err(e) => Err(self.sdk_err(path, "PutSecretValue", &e)),
        }
    }

    /// AWSCURRENT, unless it is the empty first version of a new secret.
    async fn current(
        &self,
        path: &str,
    ) -> Result<Option<(String, WireDocument<serde_json::Value>)>, VaultError> {
        Ok(self
            .get(path, CURRENT)
            .await?
            .filter(|(_, doc)| !doc.fields.is_empty()))
    }

    async fn move_stage(
        &self,
        path: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), VaultError> {
        let mut request = self
            .client
            .update_secret_version_stage()
            .secret_id(path)
            .version_stage(stage);
        if let Some(to) = to {
            request = request.move_to_version_id(to);
        }
        if let Some(from) = from {
            request = request.remove_from_version_id(from);
        }
        request
            .send()
            .await
            .map(drop)
            .map_err(|e| self.sdk_err(path, &format!("UpdateSecretVersionStage {stage}"), &e))
    }
}

/// A version of ours: its id is the run token it was written with.
fn stored(version: &str, credential: Credential) -> StoredVersion {
    StoredVersion::new(version, Some(version.to_owned()), credential)
}

impl Vault for AwsSecretsManager {
    fn name(&self) -> &str {
        &self.name
    }

    async fn read_current(&self, path: &str) -> Result<Option<Document>, VaultError> {
        Ok(self.current(path).await?.map(|(version, doc)| Document {
            current: stored(&version, doc.fields),
            previous: doc.previous.map(|p| StoredVersion::new("", None, p)),
        }))
    }

    async fn read_pending(&self, path: &str) -> Result<Option<StoredVersion>, VaultError> {
        Ok(self
            .get(path, PENDING)
            .await?
            .map(|(version, doc)| stored(&version, doc.fields)))
    }

    async fn write_pending(
        &self,
        path: &str,
        token: &str,
        credential: &Credential,
        previous: Previous,
    ) -> Result<StoredVersion, VaultError> {
        if let Some((version, doc)) = self.get(path, PENDING).await? {
            if version == token {
                return Ok(stored(&version, doc.fields));
            }
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "version {version} holds AWSPENDING: a previous rotation isn't complete. rotor will not \
                     overwrite it; finish it, or cancel it with `aws secretsmanager update-secret-version-stage \
                     --secret-id {path} --version-stage AWSPENDING --remove-from-version-id {version}`, then `rotor rotate`"
                ),
            ));
        }
        let current = self.current(path).await?;
        let doc = WireDocument {
            fields: credential.clone(),
            previous: previous.of(current.map(|(_, c)| c.fields)),
            meta: None,
        };
        self.put(path, token, &doc, PENDING).await?;
        Ok(stored(token, doc.fields))
    }

    async fn promote_run(
        &self,
        path: &str,
        token: &str,
        _run_id: Option<&str>,
        expected_current: Option<&str>,
        verified: Option<super::Verified<'_>>,
    ) -> Result<String, VaultError> {
        let labelled = self.get(path, CURRENT).await?;
        let placeholder = labelled.as_ref().map(|(v, _)| v.clone());
        let current = labelled
            .filter(|(_, d)| !d.fields.is_empty())
            .map(|(v, _)| v);
        let pending_doc = self.get(path, PENDING).await?;
        let pending = pending_doc.as_ref().map(|(v, _)| v.clone());
        if current.as_deref() == Some(token) {
            if pending.as_deref() == Some(token) {
                self.move_stage(path, PENDING, None, Some(token)).await?;
            }
            return Ok(token.to_owned());
        }
        if current.as_deref() != expected_current {
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                format!(
                    "AWSCURRENT is version {} but rotor last saw {}: it was changed outside rotor. rotor will not \
                     overwrite it; check who changed it, then run `rotor rotate` again",
                    current.as_deref().unwrap_or("(none)"),
                    expected_current.unwrap_or("(none)")
                ),
            ));
        }
        if pending.as_deref() != Some(token) {
            return Err(self.err(
                ErrorClass::Permanent,
                path,
                "this run has no AWSPENDING version to promote; it will be rolled back",
            ));
        }
        if let (Some(verified), Some((_, doc))) = (verified, &pending_doc)
            && !verified.is(&doc.fields.fingerprint().to_hex())
        {
            return Err(super::not_verified(&self.name, path));
        }
        // Off the old current version, or off the empty first version of a new secret.
        self.move_stage(path, CURRENT, Some(token), placeholder.as_deref())
            .await?;
        crate::failpoint::pause_if_armed("vault:promote:written").await;
        self.move_stage(path, PENDING, None, Some(token)).await?;
        Ok(token.to_owned())
    }

    async fn discard_pending(&self, path: &str, token: &str) -> Result<(), VaultError> {
        if self
            .get(path, PENDING)
            .await?
            .is_some_and(|(v, _)| v == token)
        {
            self.move_stage(path, PENDING, None, Some(token)).await?;
        }
        Ok(())
    }

    async fn drop_previous(&self, path: &str, token: &str) -> Result<Option<String>, VaultError> {
        let Some((version, doc)) = self.current(path).await? else {
            return Ok(None);
        };
        let retired = retired_token(token);
        let pending = self.get(path, PENDING).await?.map(|(v, _)| v);
        if version == retired {
            if pending.as_deref() == Some(retired.as_str()) {
                self.move_stage(path, PENDING, None, Some(&retired)).await?;
            }
            return Ok(Some(retired));
        }
        if version != token {
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                "AWSCURRENT is no longer the version this run promoted: it was changed outside rotor; \
                 the previous credential is left in place",
            ));
        }
        if doc.previous.is_none() {
            return Ok(Some(version));
        }
        let fresh = WireDocument::<()> {
            fields: doc.fields,
            previous: None,
            meta: None,
        };
        if pending.as_ref().is_some_and(|p| p != &retired) {
            return Err(self.err(
                ErrorClass::Conflict,
                path,
                "another AWSPENDING version appeared during grace: someone started a rotation outside \
                 rotor; the previous credential is left in place",
            ));
        }
        // Written under AWSPENDING, then AWSCURRENT is moved explicitly: relying on a put to move
        // AWSCURRENT is not honoured by every implementation.
        self.put(path, &retired, &fresh, PENDING).await?;
        crate::failpoint::pause_if_armed("vault:retire:written").await;
        self.move_stage(path, CURRENT, Some(&retired), Some(token))
            .await?;
        crate::failpoint::pause_if_armed("vault:retire:labelled").await;
        self.move_stage(path, PENDING, None, Some(&retired)).await?;
        Ok(Some(retired))
    }
}
