//! The installation's integrity key: what keys the audit chain, so that whoever can write the
//! store but does not hold the key cannot recompute the chain over rows they changed.
//!
//! It never lives in the store. `[store] key` names it (`{ env = ... }` or `{ file = ... }`,
//! read before any vault is open); without it a SQLite store keeps its key in a file beside
//! itself (`rotor.db.key`, made on first use, 0600), while a PostgreSQL store must be given
//! one: a key its replicas share, kept where the database's writers cannot read it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

/// The fewest bytes a key may have: the strength of HMAC-SHA-256's output.
pub const MIN_KEY_BYTES: usize = 32;

/// The key, zeroized when the last copy is dropped. `Debug` shows nothing of it.
#[derive(Clone)]
pub struct IntegrityKey(Arc<Zeroizing<Vec<u8>>>);

impl std::fmt::Debug for IntegrityKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IntegrityKey(..)")
    }
}

impl IntegrityKey {
    /// A key read from a reference; refused when shorter than `MIN_KEY_BYTES`.
    pub fn from_secret(secret: &SecretString) -> Result<Self, String> {
        let bytes = secret.expose_secret().as_bytes();
        if bytes.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the store's integrity key has {} bytes, fewer than {MIN_KEY_BYTES}; make one with `head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'`",
                bytes.len()
            ));
        }
        Ok(Self(Arc::new(Zeroizing::new(bytes.to_vec()))))
    }

    /// A key from raw bytes (tests, benchmarks).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        Self::from_secret(&SecretString::from(hex::encode(bytes)))
    }

    /// HMAC-SHA-256 of `parts` (in order) under this key, in hex.
    pub fn mac_hex(&self, parts: &[&[u8]]) -> String {
        hex::encode(self.mac(parts))
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0)
            .expect("HMAC takes a key of any length");
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The installation's fingerprint key (`crate::fingerprint`): derived from this key under
    /// its own label, kept wherever this key is, and no fingerprint equals any audit hash.
    pub fn fingerprint_key(&self) -> crate::fingerprint::FingerprintKey {
        crate::fingerprint::FingerprintKey::from_derived(self.mac(&[b"rotor fingerprint key v1"]))
    }

    /// The key of the SQLite store `store_file`, kept beside it: read, or made when absent
    /// (created exclusively, without following a link, 0600). A key file others may read
    /// is refused, as the file vault's identity is.
    pub fn beside(store_file: &Path) -> std::io::Result<Self> {
        let path = Self::path_beside(store_file);
        let made = Zeroizing::new(hex::encode(rand::random::<[u8; 32]>()));
        let line = Zeroizing::new(format!("{}\n", made.as_str()));
        match crate::vault::file::write_new_file(&path, line.as_bytes(), 0o600)
            .and_then(|f| f.sync_all())
        {
            Ok(()) => {
                tracing::info!(file = %path.display(), "made the store's integrity key");
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_file() || meta.permissions().mode() & 0o077 != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!(
                    "the store's integrity key {} is {}: it must be a regular file only rotor's user can read (chmod 0600)",
                    path.display(),
                    if meta.is_file() {
                        "readable by group or others"
                    } else {
                        "not a regular file"
                    }
                ),
            ));
        }
        let text = Zeroizing::new(std::fs::read_to_string(&path)?);
        Self::from_secret(&SecretString::from(text.trim_end_matches(['\n', '\r'])))
            .map_err(|m| std::io::Error::new(std::io::ErrorKind::InvalidData, m))
    }

    /// Where `beside` keeps the key of `store_file`.
    pub fn path_beside(store_file: &Path) -> PathBuf {
        let mut name = store_file.as_os_str().to_owned();
        name.push(".key");
        PathBuf::from(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_key_is_refused_and_the_mac_depends_on_the_key() {
        assert!(IntegrityKey::from_secret(&SecretString::from("short")).is_err());
        let a = IntegrityKey::from_bytes(&[1; 32]).unwrap();
        let b = IntegrityKey::from_bytes(&[2; 32]).unwrap();
        assert_ne!(a.mac_hex(&[b"x"]), b.mac_hex(&[b"x"]));
        assert_eq!(a.mac_hex(&[b"x", b"y"]), a.mac_hex(&[b"xy"]));
        assert_eq!(format!("{a:?}"), "IntegrityKey(..)");
        let digest = rotor_rotators::Fingerprint::of_value(b"x");
        assert_ne!(
            a.fingerprint_key().of(&digest),
            b.fingerprint_key().of(&digest),
            "each installation's fingerprints are its own"
        );
        assert_ne!(
            a.fingerprint_key().of(&digest),
            a.mac_hex(&[b"rotor fingerprint v1\0", &digest.0]),
            "not a MAC under the audit chain's key itself"
        );
    }

    #[test]
    fn the_key_beside_a_store_is_made_once_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("rotor.db");
        let first = IntegrityKey::beside(&store).unwrap();
        let again = IntegrityKey::beside(&store).unwrap();
        assert_eq!(first.mac_hex(&[b"x"]), again.mac_hex(&[b"x"]));
        use std::os::unix::fs::PermissionsExt;
        let path = IntegrityKey::path_beside(&store);
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = IntegrityKey::beside(&store).unwrap_err();
        assert!(
            refused.to_string().contains("readable by group or others"),
            "{refused}"
        );
    }
}
