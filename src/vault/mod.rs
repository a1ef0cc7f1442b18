//! Vaults: the systems of record consumers read credentials from. rotor pushes every stage
//! change of a rotation here; a consumer reading a credential's path sees only verified
//! versions (the pending one lives where consumers do not read), and during grace the document
//! also carries the previous version.

#[cfg(feature = "aws_secrets_manager")]
pub mod aws_secrets_manager;
pub mod file;
#[cfg(feature = "gcp_secret_manager")]
pub mod gcp_secret_manager;
#[cfg(feature = "openbao")]
pub mod openbao;
pub mod wire;

use std::collections::BTreeMap;
use std::fmt;

use rotor_rotators::{Credential, ErrorClass, Fingerprint};

use crate::fingerprint::FingerprintKey;
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use rotor_rotators::SecretRef;
use rotor_rotators::kinds::Settings;

rotor_rotators::kinds! {
    /// A vault, tagged by `kind`.
    pub enum VaultConfig: VaultSettings {
        /// One age-encrypted file per credential in a local folder: the embedded default.
        "file" => File(file::FileVaultConfig),
        /// OpenBao or HashiCorp Vault, KV version 2 (`kind = "vault"` is accepted too).
        #[cfg(feature = "openbao")]
        "openbao" | "vault" => Openbao(openbao::OpenbaoVaultConfig),
        /// AWS Secrets Manager with native staging labels; the secret id is the vault path.
        #[cfg(feature = "aws_secrets_manager")]
        "aws_secrets_manager" => AwsSecretsManager(aws_secrets_manager::AwsSecretsManagerConfig),
        /// Google Cloud Secret Manager with version aliases; the secret id is the vault path.
        #[cfg(feature = "gcp_secret_manager")]
        "gcp_secret_manager" => GcpSecretManager(gcp_secret_manager::GcpSecretManagerConfig),
    }
}

/// What every vault kind's settings say about themselves without contacting anything.
pub trait VaultSettings: Settings {
    /// The least privilege rotor needs in this vault to rotate one credential, in the vault's
    /// own policy language, for `rotor policy ID`.
    fn least_privilege(&self, scope: &PolicyScope<'_>) -> String;

    /// Why `path` cannot name a credential in this kind of vault, for `rotor validate`.
    fn path_problem(&self, path: &str) -> Option<String> {
        let _ = path;
        None
    }
}

/// Whose least privilege: a credential, at a path of a named vault.
#[derive(Debug, Clone, Copy)]
pub struct PolicyScope<'a> {
    pub credential: &'a str,
    pub vault: &'a str,
    pub path: &'a str,
}

/// One stored version of a credential and what rotor recorded about it. Only `credential`
/// is secret.
#[derive(Debug, Clone)]
pub struct StoredVersion {
    /// The vault's own version id.
    pub version: String,
    /// The run token that wrote it (none for a version rotor did not write).
    pub token: Option<String>,
    /// Hex digest of `credential`'s fields, computed from the fields as read (never taken
    /// from metadata a hand edit could leave behind). Unkeyed: it never leaves the process.
    pub fingerprint: String,
    pub credential: Credential,
}

impl StoredVersion {
    /// A version read from a vault that does not record fingerprints: computed from the fields.
    pub fn new(version: impl Into<String>, token: Option<String>, credential: Credential) -> Self {
        let fingerprint = credential.fingerprint().to_hex();
        StoredVersion {
            version: version.into(),
            token,
            fingerprint,
            credential,
        }
    }
}

/// What consumers read at a path: the current version and, during grace, the previous one.
#[derive(Debug, Clone)]
pub struct Document {
    pub current: StoredVersion,
    pub previous: Option<StoredVersion>,
}

#[derive(Debug, Error)]
#[error("vault {vault} path {path}: {message}")]
pub struct VaultError {
    pub class: ErrorClass,
    pub vault: String,
    pub path: String,
    pub message: String,
}

impl VaultError {
    pub fn new(class: ErrorClass, vault: &str, path: &str, message: impl Into<String>) -> Self {
        Self {
            class,
            vault: vault.into(),
            path: path.into(),
            message: message.into(),
        }
    }
}

/// The operations the engine needs from a vault. Each is idempotent for the same run token.
pub trait Vault: Send + Sync {
    fn name(&self) -> &str;

    /// The document consumers read, if there is one.
    fn read_current(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<Document>, VaultError>> + Send;

    /// The version being rotated in, if there is one.
    fn read_pending(
        &self,
        path: &str,
    ) -> impl Future<Output = Result<Option<StoredVersion>, VaultError>> + Send;

    /// Stores `credential` as pending for run `token`, to be promoted with or without the
    /// current version as `previous`. If a pending version of this token is there already it
    /// is kept and returned: a retried mint must not replace the secret that a crashed attempt
    /// may already have applied.
    fn write_pending(
        &self,
        path: &str,
        token: &str,
        credential: &Credential,
        previous: Previous,
    ) -> impl Future<Output = Result<StoredVersion, VaultError>> + Send;

    /// Makes run `token`'s pending version current and the current one previous, only if the
    /// current version is still `expected_current` (else a `Conflict`: someone wrote the path).
    /// Done already for this token: returns the current version.
    fn promote(
        &self,
        path: &str,
        token: &str,
        expected_current: Option<&str>,
    ) -> impl Future<Output = Result<String, VaultError>> + Send {
        self.promote_run(path, token, None, expected_current, None)
    }

    /// `promote`, naming the run, for vaults that record it beside the version. With
    /// `verified`, a pending version of this token that is not the verified one (a worker that
    /// lost the run wrote over it) is not promoted: a `Permanent` error.
    fn promote_run(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        expected_current: Option<&str>,
        verified: Option<Verified<'_>>,
    ) -> impl Future<Output = Result<String, VaultError>> + Send;

    /// `promote_run` by the drive that stored and verified `held.candidate` itself: a vault
    /// that can promote without reading pending and current back does so, and takes the
    /// reading path when its check-and-set finds the path changed (a retried promotion whose
    /// write landed, or someone's edit).
    fn promote_held(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        expected_current: Option<&str>,
        held: Held<'_>,
    ) -> impl Future<Output = Result<String, VaultError>> + Send {
        promote_reading_back(self, path, token, run_id, expected_current, held)
    }

    /// Removes run `token`'s pending version; absent is success.
    fn discard_pending(
        &self,
        path: &str,
        token: &str,
    ) -> impl Future<Output = Result<(), VaultError>> + Send;

    /// Drops the previous version from the document run `token` promoted; done is success.
    /// Returns the current version afterwards (a versioned store writes a new one), or `None`
    /// when there is no document.
    fn drop_previous(
        &self,
        path: &str,
        token: &str,
    ) -> impl Future<Output = Result<Option<String>, VaultError>> + Send;

    /// `drop_previous` by the drive that promoted `current` as version `promoted`: a vault
    /// that can write without reading the document back does so, and takes the reading path
    /// when its check-and-set finds the path changed.
    fn drop_previous_held(
        &self,
        path: &str,
        token: &str,
        promoted: &str,
        current: &Credential,
    ) -> impl Future<Output = Result<Option<String>, VaultError>> + Send {
        let _ = (promoted, current);
        self.drop_previous(path, token)
    }
}

/// `promote_held` by reading pending and current back: `promote_run`, checking that the
/// pending version is the held candidate.
pub(crate) async fn promote_reading_back<V: Vault + ?Sized>(
    vault: &V,
    path: &str,
    token: &str,
    run_id: Option<&str>,
    expected_current: Option<&str>,
    held: Held<'_>,
) -> Result<String, VaultError> {
    let verified = held.candidate.fingerprint();
    vault
        .promote_run(
            path,
            token,
            run_id,
            expected_current,
            Some(Verified::Held(&verified)),
        )
        .await
}

/// Which pending version a promotion may make current. A vault compares it with the digest
/// it keeps beside the value in the same request that promotes, so a version written over
/// the verified one is never promoted.
#[derive(Clone, Copy)]
pub enum Verified<'a> {
    /// The one whose keyed fingerprint the store recorded when it was verified: what a
    /// resumed drive, holding no candidate, knows.
    Recorded {
        keyed: &'a str,
        key: &'a FingerprintKey,
    },
    /// The candidate the promoting drive holds and verified itself.
    Held(&'a Fingerprint),
}

impl Verified<'_> {
    /// Whether the digest a vault keeps (in hex) is the verified version's.
    pub fn is(&self, digest_hex: &str) -> bool {
        match self {
            Verified::Recorded { keyed, key } => key.of_hex(digest_hex).as_deref() == Some(*keyed),
            Verified::Held(digest) => digest.to_hex() == digest_hex,
        }
    }
}

/// What a drive holds of the rotation it promotes: the candidate it stored as pending and
/// verified, the version that candidate replaces as it read it at mint, and whether the
/// promoted document keeps that version.
#[derive(Clone, Copy)]
pub struct Held<'a> {
    pub candidate: &'a Credential,
    pub replaced: Option<&'a StoredVersion>,
    pub previous: Previous,
}

/// Whether a promotion puts the version it replaces in the document as `previous`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Previous {
    /// Consumers accept both until retirement; a provider's retirement, resumed after a
    /// crash, reads the old credential from there.
    Kept,
    /// Nobody would read it: a credential only the vault holds, retired as soon as it is
    /// promoted. Written, it would only be rewritten away a moment later.
    Omitted,
}

impl Previous {
    /// `replaced`, if it is kept.
    pub fn of<T>(self, replaced: Option<T>) -> Option<T> {
        match self {
            Previous::Kept => replaced,
            Previous::Omitted => None,
        }
    }
}

/// A built vault of any kind.
pub enum AnyVault {
    File(file::FileVault),
    #[cfg(feature = "openbao")]
    Openbao(Box<openbao::OpenbaoVault>),
    #[cfg(feature = "aws_secrets_manager")]
    AwsSecretsManager(Box<aws_secrets_manager::AwsSecretsManager>),
    #[cfg(feature = "gcp_secret_manager")]
    GcpSecretManager(Box<gcp_secret_manager::GcpSecretManager>),
}

macro_rules! dispatch {
    ($self:ident, $v:ident => $body:expr) => {
        match $self {
            AnyVault::File($v) => $body,
            #[cfg(feature = "openbao")]
            AnyVault::Openbao($v) => $body,
            #[cfg(feature = "aws_secrets_manager")]
            AnyVault::AwsSecretsManager($v) => $body,
            #[cfg(feature = "gcp_secret_manager")]
            AnyVault::GcpSecretManager($v) => $body,
        }
    };
}

impl Vault for AnyVault {
    fn name(&self) -> &str {
        dispatch!(self, v => v.name())
    }
    async fn read_current(&self, path: &str) -> Result<Option<Document>, VaultError> {
        dispatch!(self, v => v.read_current(path).await)
    }
    async fn read_pending(&self, path: &str) -> Result<Option<StoredVersion>, VaultError> {
        dispatch!(self, v => v.read_pending(path).await)
    }
    async fn write_pending(
        &self,
        path: &str,
        token: &str,
        credential: &Credential,
        previous: Previous,
    ) -> Result<StoredVersion, VaultError> {
        dispatch!(self, v => v.write_pending(path, token, credential, previous).await)
    }
    async fn promote_run(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        expected_current: Option<&str>,
        verified: Option<Verified<'_>>,
    ) -> Result<String, VaultError> {
        dispatch!(self, v => v.promote_run(path, token, run_id, expected_current, verified).await)
    }
    async fn promote_held(
        &self,
        path: &str,
        token: &str,
        run_id: Option<&str>,
        expected_current: Option<&str>,
        held: Held<'_>,
    ) -> Result<String, VaultError> {
        dispatch!(self, v => v.promote_held(path, token, run_id, expected_current, held).await)
    }
    async fn discard_pending(&self, path: &str, token: &str) -> Result<(), VaultError> {
        dispatch!(self, v => v.discard_pending(path, token).await)
    }
    async fn drop_previous(&self, path: &str, token: &str) -> Result<Option<String>, VaultError> {
        dispatch!(self, v => v.drop_previous(path, token).await)
    }
    async fn drop_previous_held(
        &self,
        path: &str,
        token: &str,
        promoted: &str,
        current: &Credential,
    ) -> Result<Option<String>, VaultError> {
        dispatch!(self, v => v.drop_previous_held(path, token, promoted, current).await)
    }
}

#[derive(Debug, Error)]
pub enum SecretRefError {
    #[error("environment variable {0} is not set (it holds a secret the config refers to)")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: {message}")]
    Vault { reference: String, message: String },
}

/// Reads the secret a reference points to. Vault references read the current document.
pub async fn resolve(
    reference: &SecretRef,
    vaults: &Vaults,
) -> Result<SecretString, SecretRefError> {
    let SecretRef::Vault { vault, path, field } = reference else {
        return resolve_local(reference);
    };
    let field = field.as_deref().unwrap_or("value");
    let fail = |message: String| SecretRefError::Vault {
        reference: reference.to_string(),
        message,
    };
    let v = vaults
        .get(vault)
        .ok_or_else(|| fail("no such vault".into()))?;
    let doc = v
        .read_current(path)
        .await
        .map_err(|e| fail(e.message))?
        .ok_or_else(|| fail("no document".into()))?;
    let value = doc
        .current
        .credential
        .get(field)
        .ok_or_else(|| fail(format!("no field {field}")))?;
    Ok(SecretString::from(value.expose_secret()))
}

/// Reads an `env` or `file` reference, without any vault: what is needed before the vaults
/// open (the store's password) can only be one of these. A file's trailing line ends are not
/// part of the secret.
pub fn resolve_local(reference: &SecretRef) -> Result<SecretString, SecretRefError> {
    match reference {
        SecretRef::Env { env } => std::env::var(env)
            .map(SecretString::from)
            .map_err(|_| SecretRefError::EnvMissing(env.clone())),
        SecretRef::File { file } => {
            let text = std::fs::read_to_string(file).map_err(|source| SecretRefError::File {
                path: file.display().to_string(),
                source,
            })?;
            let text = zeroize::Zeroizing::new(text);
            Ok(SecretString::from(text.trim_end_matches(['\n', '\r'])))
        }
        SecretRef::Vault { .. } => Err(SecretRefError::Vault {
            reference: reference.to_string(),
            message: "needed before any vault is open: use env or file".into(),
        }),
    }
}

/// Resolves the secret references in rotator configs through the configured vaults.
pub struct VaultSecrets(pub std::sync::Arc<Vaults>);

impl rotor_rotators::SecretSource for VaultSecrets {
    fn resolve<'a>(
        &'a self,
        reference: &'a SecretRef,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<SecretString, String>> + Send + 'a>,
    > {
        Box::pin(async move { resolve(reference, &self.0).await.map_err(|e| e.to_string()) })
    }
}

/// The configured vaults, built.
#[derive(Default)]
pub struct Vaults {
    vaults: BTreeMap<String, AnyVault>,
}

impl fmt::Debug for Vaults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.vaults.keys()).finish()
    }
}

impl Vaults {
    /// Opens every vault in config. File vaults first: other vaults' secret references may
    /// point into them.
    pub async fn open(configs: &BTreeMap<String, VaultConfig>) -> Result<Vaults, VaultError> {
        let mut vaults = Vaults::default();
        for (name, vault) in configs {
            let built = match vault {
                VaultConfig::File(c) => AnyVault::File(file::FileVault::open(name, c).await?),
                #[cfg(feature = "openbao")]
                VaultConfig::Openbao(c) => {
                    AnyVault::Openbao(Box::new(openbao::OpenbaoVault::open(name, c)?))
                }
                #[cfg(feature = "aws_secrets_manager")]
                VaultConfig::AwsSecretsManager(c) => AnyVault::AwsSecretsManager(Box::new(
                    aws_secrets_manager::AwsSecretsManager::open(name, c).await,
                )),
                #[cfg(feature = "gcp_secret_manager")]
                VaultConfig::GcpSecretManager(c) => AnyVault::GcpSecretManager(Box::new(
                    gcp_secret_manager::GcpSecretManager::open(name, c)?,
                )),
            };
            vaults.vaults.insert(name.clone(), built);
        }
        Ok(vaults)
    }

    pub fn get(&self, name: &str) -> Option<&AnyVault> {
        self.vaults.get(name)
    }
}

/// The token of the version a retirement writes, for vaults that find a version by the token
/// it was written with: derived from the run's token, so a retried retirement finds its own.
#[cfg(any(feature = "aws_secrets_manager", feature = "gcp_secret_manager"))]
pub(crate) fn retired_token(token: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(
        &Sha256::new()
            .chain_update(b"rotor-retire:")
            .chain_update(token.as_bytes())
            .finalize()[..16],
    )
}

/// The reply of one HTTP exchange with a vault's API: its status and its body, zeroized (it
/// may hold a secret).
#[cfg(any(feature = "openbao", feature = "gcp_secret_manager"))]
pub(crate) struct Reply {
    pub status: reqwest::StatusCode,
    pub body: zeroize::Zeroizing<Vec<u8>>,
}

#[cfg(any(feature = "openbao", feature = "gcp_secret_manager"))]
impl Reply {
    /// The body as `T`, or what did not match in it (never the body itself); `api` names what
    /// should have sent it.
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        api: &str,
    ) -> Result<T, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            format!(
                "{what}: the reply is not what {api} sends ({})",
                wire::describe_json_error(&e)
            )
        })
    }
}

/// An error and its sources, for a message that says why a connection failed.
#[cfg(any(feature = "openbao", feature = "gcp_secret_manager"))]
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The error of a pending version that is not the one the run verified.
pub(crate) fn not_verified(vault: &str, path: &str) -> VaultError {
    VaultError::new(
        ErrorClass::Permanent,
        vault,
        path,
        "the pending version is not the one verified (fingerprint differs); it is not promoted",
    )
}

/// `drop_previous` found a current version other than the one its run promoted.
pub(crate) fn changed_since_promoted(vault: &str, path: &str) -> VaultError {
    VaultError::new(
        ErrorClass::Conflict,
        vault,
        path,
        "the current version is no longer the one this run promoted: it was changed outside rotor; \
         the previous credential is left in place",
    )
}
