//! `manual`: a credential nobody can rotate through an API (a GitHub personal access token, a
//! GitHub App's private key, a vendor's console-only key). rotor never rotates it: it tracks its
//! age or expiry, reminds people before it is due and alerts when it is overdue, and
//! `rotor confirm ID` records that a person rotated it.

use crate::kinds::Settings;
use serde::{Deserialize, Serialize};

use crate::{
    Credential, LiveCredential, MintContext, Origin, Retired, Rotator, RotatorError,
    RotatorSettings, Secrets,
};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualConfig {
    /// How to rotate it, for the person reminded: a runbook link or the console's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// Remind this long before it is due ("14d").
    #[serde(default = "default_remind_before")]
    pub remind_before: crate::duration::Duration,
    /// When the current credential expires (RFC 3339), if the provider sets an expiry;
    /// otherwise the credential's `max_age` counts from its last confirmed rotation.
    /// `rotor confirm ID --expires-at` records the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

fn default_remind_before() -> crate::duration::Duration {
    crate::duration::Duration::from_secs(14 * 86_400)
}

impl ManualConfig {
    /// The configured expiry in ms since the epoch.
    pub fn expires_at_ms(&self) -> Option<i64> {
        self.expires_at.as_deref().and_then(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.timestamp_millis())
        })
    }
}

impl Settings for ManualConfig {
    fn validate(&self) -> Result<(), String> {
        if let Some(at) = &self.expires_at
            && chrono::DateTime::parse_from_rfc3339(at).is_err()
        {
            return Err(format!(
                "expires_at `{at}` is not an RFC 3339 time such as \"2027-03-01T00:00:00Z\""
            ));
        }
        Ok(())
    }
}

impl RotatorSettings for ManualConfig {
    fn verification(&self) -> crate::Verification {
        crate::Verification {
            proves: "nothing: a person rotated it and says so with `rotor confirm`",
            cannot: "anything",
        }
    }

    fn least_privilege(&self, credential_id: &str) -> String {
        format!(
            "# rotor: credential \"{credential_id}\" is rotated by hand; rotor needs no permission at its provider.\n{}",
            self.instructions
                .as_ref()
                .map(|i| format!("# How to rotate it: {i}\n"))
                .unwrap_or_default()
        )
    }
}

pub struct Manual {
    config: ManualConfig,
}

fn by_hand() -> RotatorError {
    RotatorError::permanent(
        "this credential is rotated by hand: rotate it at its provider, then `rotor confirm ID`",
    )
}

impl Manual {
    pub fn build(config: ManualConfig, _secrets: Secrets) -> Result<Self, RotatorError> {
        config.validate().map_err(RotatorError::permanent)?;
        Ok(Self { config })
    }

    pub fn config(&self) -> &ManualConfig {
        &self.config
    }
}

impl Rotator for Manual {
    fn kind(&self) -> &'static str {
        "manual"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self, _context: MintContext<'_>) -> Result<Credential, RotatorError> {
        Err(by_hand())
    }

    async fn apply(&self, _: &Credential, _: Option<&Credential>) -> Result<(), RotatorError> {
        Err(by_hand())
    }

    async fn verify(&self, _: &Credential) -> Result<(), RotatorError> {
        Err(by_hand())
    }

    async fn retire(
        &self,
        _: &Credential,
        _: Option<&Credential>,
    ) -> Result<Retired, RotatorError> {
        Err(by_hand())
    }

    async fn rollback(&self, _: &Credential, _: Option<&Credential>) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        Ok(Vec::new())
    }

    fn provider_id(&self, _: &Credential) -> Option<String> {
        None
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        Ok(())
    }
}
