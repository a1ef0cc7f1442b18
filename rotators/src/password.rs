//! Random secrets from the operating system's generator, in the alphabets providers accept.

use rand::Rng;
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

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
    pub fn chars(self) -> &'static [u8] {
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

/// A secret of `length` characters drawn uniformly from `alphabet`.
pub fn random(length: usize, alphabet: Alphabet) -> SecretString {
    let chars = alphabet.chars();
    // The OS generator, not a seeded one: these are production secrets.
    let mut rng = OsRng.unwrap_err();
    let mut value = Zeroizing::new(String::with_capacity(length));
    for _ in 0..length {
        value.push(chars[rng.random_range(0..chars.len())] as char);
    }
    SecretString::from(value.as_str())
}

/// `n` random bytes (salts, key material).
pub fn random_bytes<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut bytes = Zeroizing::new([0u8; N]);
    OsRng
        .try_fill_bytes(bytes.as_mut())
        .expect("the operating system's random generator failed");
    bytes
}
