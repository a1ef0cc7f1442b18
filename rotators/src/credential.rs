//! The secret material a rotator mints and the engine moves between vault stages.

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// One credential's fields (`value` for `generated`; `username` + `password` for database
/// users...). The values are secret: `Debug` prints field names only, and they are zeroized
/// when dropped.
#[derive(Clone, Default)]
pub struct Credential {
    fields: BTreeMap<String, SecretString>,
}

impl Credential {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, value: SecretString) -> Self {
        self.insert(name, value);
        self
    }

    pub fn insert(&mut self, name: &str, value: SecretString) {
        self.fields.insert(name.to_owned(), value);
    }

    /// The field `name`, or a permanent error naming the fields the document does have
    /// (names only, never values).
    pub fn require(&self, name: &str) -> Result<&SecretString, crate::RotatorError> {
        self.get(name).ok_or_else(|| {
            let present: Vec<&str> = self.fields().map(|(n, _)| n).collect();
            crate::RotatorError::permanent(format!(
                "the vault document has no `{name}` field (it has: {}); was it written by hand or by another rotator kind?",
                if present.is_empty() { "none".to_owned() } else { present.join(", ") }
            ))
        })
    }

    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.fields.get(name)
    }

    pub fn fields(&self) -> impl Iterator<Item = (&str, &SecretString)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// SHA-256 over the fields in name order: what the store and the logs may hold instead of
    /// the secret. Names and values are length-prefixed so no two credentials share an input.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut hash = Sha256::new();
        for (name, value) in &self.fields {
            let value = value.expose_secret().as_bytes();
            hash.update((name.len() as u64).to_be_bytes());
            hash.update(name.as_bytes());
            hash.update((value.len() as u64).to_be_bytes());
            hash.update(value);
        }
        let digest = hash.finalize();
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&digest);
        Fingerprint(bytes)
    }
}

impl Credential {
    /// Each field's `Fingerprint::of_value`: what `rotor identify` matches a value found in the
    /// wild against, long after this credential was retired.
    pub fn value_fingerprints(&self) -> Vec<(&str, Fingerprint)> {
        self.fields
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str(),
                    Fingerprint::of_value(value.expose_secret().as_bytes()),
                )
            })
            .collect()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            // Field names only: even a digest of a value lets whoever reads it test guesses.
            .field("fields", &self.fields.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The SHA-256 fingerprint of a credential, shown as `sha256:` and the first 16 hex digits
/// in human output and stored in full.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// SHA-256 of one field's value alone, under its own domain (a credential's fingerprint
    /// never equals a value's): a value found in the wild, without its field's name, is
    /// matched against these.
    pub fn of_value(value: &[u8]) -> Fingerprint {
        let mut hash = Sha256::new();
        hash.update(b"rotor value fingerprint v1\0");
        hash.update(value);
        Fingerprint(hash.finalize().into())
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", &self.to_hex()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_depends_on_names_and_values_and_debug_hides_values() {
        let a = Credential::new().with("value", SecretString::from("s3cret-a"));
        let b = Credential::new().with("value", SecretString::from("s3cret-b"));
        let c = Credential::new().with("valu", SecretString::from("es3cret-a"));
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_eq!(a.fingerprint(), a.clone().fingerprint());
        let shown = format!("{a:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("value"));
    }
}
