//! Random secrets from the operating system's generator, in the alphabets providers accept.

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
    // Every alphabet fits a byte: a byte at or above the largest multiple of its size is drawn
    // again, so that every character is equally likely.
    let zone = 256 - 256 % chars.len();
    let mut value = Zeroizing::new(String::with_capacity(length));
    // The OS generator, not a seeded one: these are production secrets. Asked for a buffer at
    // a time: a character at a time cost a system call each (33 of a rotation's 273).
    let mut bytes = Zeroizing::new(vec![0u8; length + length / 2 + 16]);
    while value.len() < length {
        OsRng
            .try_fill_bytes(bytes.as_mut_slice())
            .expect("the operating system's random generator failed");
        let usable = bytes.iter().filter(|&&b| usize::from(b) < zone);
        for &b in usable.take(length - value.len()) {
            value.push(char::from(chars[usize::from(b) % chars.len()]));
        }
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

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::{Alphabet, random};

    /// Each character as likely as any other: 20,000 draws from the 90 printable characters
    /// (the alphabet whose size divides 256 least evenly) fit the uniform distribution. Bytes
    /// taken modulo 90 without redrawing (76 characters at 3/256, 14 at 2/256) gave a
    /// chi-square of 407; uniform draws exceed 200 (89 degrees of freedom) with a probability
    /// below 1e-10.
    #[test]
    fn every_character_of_the_alphabet_is_equally_likely() {
        let chars = Alphabet::Printable.chars();
        let mut seen = [0u32; 256];
        for _ in 0..500 {
            let secret = random(40, Alphabet::Printable);
            let secret = secret.expose_secret();
            assert_eq!(secret.len(), 40);
            for b in secret.bytes() {
                assert!(chars.contains(&b), "{b} is not in the alphabet");
                seen[usize::from(b)] += 1;
            }
        }
        let expected = 20_000.0 / chars.len() as f64;
        let chi_square: f64 = chars
            .iter()
            .map(|&c| (f64::from(seen[usize::from(c)]) - expected).powi(2) / expected)
            .sum();
        assert!(
            chi_square < 200.0,
            "chi-square {chi_square:.1}: not uniform"
        );
    }

    #[test]
    fn every_alphabet_gives_the_length_asked() {
        for alphabet in [
            Alphabet::Base64url,
            Alphabet::Alphanumeric,
            Alphabet::Hex,
            Alphabet::Printable,
        ] {
            for length in [1, 16, 32, 64, 200] {
                let secret = random(length, alphabet);
                assert_eq!(secret.expose_secret().len(), length, "{alphabet:?}");
                assert!(
                    secret
                        .expose_secret()
                        .bytes()
                        .all(|b| alphabet.chars().contains(&b))
                );
            }
        }
    }
}
