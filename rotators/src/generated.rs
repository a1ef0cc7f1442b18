//! `generated`: a random secret rotor creates itself (webhook signing keys, API keys of your own
//! services). There is no provider to tell: `apply` and `retire` have nothing to do, and `verify`
//! proves that what consumers will read from the vault is exactly a secret of the configured shape.

use rand::Rng;
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::{Credential, LiveCredential, Origin, Rotator, RotatorError};

/// The vault document field that holds the secret.
pub const FIELD: &str = "value";

/// A random secret of `length` characters drawn from `alphabet`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GeneratedConfig {
    /// Number of characters in the secret (16 to 4096). 32 characters of base64url carry 192 bits.
    #[serde(default = "default_length")]
    pub length: usize,
    /// Characters the secret is drawn from.
    #[serde(default)]
    pub alphabet: Alphabet,
}

fn default_length() -> usize {
    32
}

impl GeneratedConfig {
    pub const MIN_LENGTH: usize = 16;
    pub const MAX_LENGTH: usize = 4096;

    /// Checks what serde cannot: a usable length.
    pub fn validate(&self) -> Result<(), String> {
        if !(Self::MIN_LENGTH..=Self::MAX_LENGTH).contains(&self.length) {
            return Err(format!(
                "length must be between {} and {}, got {}",
                Self::MIN_LENGTH,
                Self::MAX_LENGTH,
                self.length
            ));
        }
        Ok(())
    }
}

/// The character set of a generated secret.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Alphabet {
    /// `A-Z a-z 0-9 - _` (URL and header safe; 6 bits per character).
    #[default]
    Base64url,
    /// `A-Z a-z 0-9`.
    Alphanumeric,
    /// `0-9 a-f`.
    Hex,
    /// Printable ASCII without space, quotes and backslash (for systems that demand symbols).
    Printable,
}

impl Alphabet {
    fn chars(self) -> &'static [u8] {
        match self {
            Alphabet::Base64url => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
            Alphabet::Alphanumeric => b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
            Alphabet::Hex => b"0123456789abcdef",
            Alphabet::Printable => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~"
            }
        }
    }
}

pub struct Generated {
    config: GeneratedConfig,
}

impl Generated {
    pub fn new(config: GeneratedConfig) -> Self {
        Self { config }
    }

    fn generate(&self) -> Result<SecretString, RotatorError> {
        let chars = self.config.alphabet.chars();
        // The OS generator, not a seeded one: these are production secrets.
        let mut rng = OsRng.unwrap_err();
        let mut value = Zeroizing::new(String::with_capacity(self.config.length));
        for _ in 0..self.config.length {
            value.push(chars[rng.random_range(0..chars.len())] as char);
        }
        Ok(SecretString::from(value.as_str()))
    }
}

impl Rotator for Generated {
    fn kind(&self) -> &'static str {
        "generated"
    }

    fn origin(&self) -> Origin {
        Origin::Local
    }

    async fn mint(&self) -> Result<Credential, RotatorError> {
        Ok(Credential::new().with(FIELD, self.generate()?))
    }

    async fn apply(
        &self,
        _candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn verify(&self, candidate: &Credential) -> Result<(), RotatorError> {
        let value = candidate.get(FIELD).ok_or_else(|| {
            RotatorError::permanent(format!("the vault document has no `{FIELD}` field"))
        })?;
        let value = value.expose_secret();
        let count = value.chars().count();
        if count != self.config.length {
            return Err(RotatorError::permanent(format!(
                "the stored secret has {count} characters, the config asks for {}; \
                 the vault returned something other than what rotor wrote",
                self.config.length
            )));
        }
        let chars = self.config.alphabet.chars();
        if !value.bytes().all(|b| chars.contains(&b)) {
            return Err(RotatorError::permanent(format!(
                "the stored secret has characters outside the {:?} alphabet",
                self.config.alphabet
            )));
        }
        Ok(())
    }

    async fn retire(&self, _old: &Credential) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn rollback(
        &self,
        _candidate: &Credential,
        _current: Option<&Credential>,
    ) -> Result<(), RotatorError> {
        Ok(())
    }

    async fn list_live(&self) -> Result<Vec<LiveCredential>, RotatorError> {
        Ok(Vec::new())
    }

    async fn preflight(&self) -> Result<(), RotatorError> {
        self.config.validate().map_err(RotatorError::permanent)?;
        self.generate().map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotator(length: usize, alphabet: Alphabet) -> Generated {
        Generated::new(GeneratedConfig { length, alphabet })
    }

    #[tokio::test]
    async fn minted_secrets_have_the_configured_shape_and_differ() {
        for alphabet in [
            Alphabet::Base64url,
            Alphabet::Alphanumeric,
            Alphabet::Hex,
            Alphabet::Printable,
        ] {
            let r = rotator(48, alphabet);
            let a = r.mint().await.unwrap();
            let b = r.mint().await.unwrap();
            r.verify(&a).await.unwrap();
            assert_ne!(a.fingerprint(), b.fingerprint());
        }
    }

    #[tokio::test]
    async fn verify_refuses_a_value_of_the_wrong_shape() {
        let r = rotator(20, Alphabet::Hex);
        let short = Credential::new().with(FIELD, SecretString::from("abc"));
        assert!(r.verify(&short).await.is_err());
        let wrong = Credential::new().with(FIELD, SecretString::from("zzzzzzzzzzzzzzzzzzzz"));
        assert!(r.verify(&wrong).await.is_err());
        assert!(r.verify(&Credential::new()).await.is_err());
    }

    #[test]
    fn the_documented_example_parses() {
        let c: GeneratedConfig = toml::from_str("length = 48\nalphabet = \"base64url\"").unwrap();
        assert_eq!(
            c,
            GeneratedConfig {
                length: 48,
                alphabet: Alphabet::Base64url
            }
        );
        assert!(toml::from_str::<GeneratedConfig>("length = 48\nalphabat = \"hex\"").is_err());
        assert!(
            GeneratedConfig {
                length: 8,
                alphabet: Alphabet::Hex
            }
            .validate()
            .is_err()
        );
    }
}
