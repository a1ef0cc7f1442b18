//! Keyed fingerprints: what identifies a credential value to rotor and to nobody else.
//!
//! A plain SHA-256 of a value lets whoever reads it (status, a hook, the store, a vault's
//! metadata) test guesses offline, and a low-entropy secret falls to that. Every fingerprint
//! rotor records or shows is instead an HMAC-SHA-256 under a key derived from the
//! installation's integrity key (`IntegrityKey::fingerprint_key` in the store), kept outside
//! the store as that key is: replicas sharing a store share it, and without it a fingerprint
//! says nothing.
//!
//! The HMAC is taken over the SHA-256 digest (`rotor_rotators::Fingerprint`), not over the
//! value: a store written before fingerprints were keyed holds those digests, and is keyed at
//! open without any value (`Store::key_the_fingerprints`). Vaults keep the digest next to the
//! value they encrypt or guard, where it tells nobody more than the value does; it is keyed
//! wherever it leaves them.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use rotor_rotators::Fingerprint;
use sha2::Sha256;
use zeroize::Zeroizing;

/// How a keyed fingerprint is shown (status, hooks, audit, CLI output): the prefix says
/// which kind it is, as `sha256:` said before.
pub const SHOWN_PREFIX: &str = "hmac-sha256:";

/// The fingerprint key: zeroized with its last copy, `Debug` shows nothing of it.
#[derive(Clone)]
pub struct FingerprintKey(Arc<Zeroizing<[u8; 32]>>);

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey(..)")
    }
}

impl FingerprintKey {
    /// A key of 32 bytes, derived by its maker from a key of the installation's.
    pub fn from_derived(bytes: [u8; 32]) -> Self {
        Self(Arc::new(Zeroizing::new(bytes)))
    }

    /// The keyed fingerprint of `digest`, in hex: what the store holds and output shows.
    pub fn of(&self, digest: &Fingerprint) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&self.0[..])
            .expect("HMAC takes a key of any length");
        mac.update(b"rotor fingerprint v1\0");
        mac.update(&digest.0);
        hex::encode(mac.finalize().into_bytes())
    }

    /// The keyed fingerprint of a digest written in hex (as vaults keep it); `None` for text
    /// that is not a SHA-256 digest.
    pub fn of_hex(&self, digest_hex: &str) -> Option<String> {
        let bytes: [u8; 32] = hex::decode(digest_hex).ok()?.try_into().ok()?;
        Some(self.of(&Fingerprint(bytes)))
    }
}

/// A keyed fingerprint as output shows it.
pub fn shown(keyed: &str) -> String {
    format!("{SHOWN_PREFIX}{keyed}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keyed_fingerprint_depends_on_the_key_and_is_not_the_digest() {
        let digest = Fingerprint::of_value(b"hunter2");
        let (a, b) = (
            FingerprintKey::from_derived([1; 32]),
            FingerprintKey::from_derived([2; 32]),
        );
        assert_eq!(a.of(&digest), a.of(&digest));
        assert_ne!(a.of(&digest), b.of(&digest));
        assert_ne!(a.of(&digest), digest.to_hex());
        assert_eq!(a.of_hex(&digest.to_hex()), Some(a.of(&digest)));
        assert_eq!(a.of_hex("not hex"), None);
        assert_eq!(a.of_hex("abcd"), None);
        assert_eq!(format!("{a:?}"), "FingerprintKey(..)");
    }
}
