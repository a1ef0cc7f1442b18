//! OpenSSH key material, for the rotators whose credential is an SSH key pair (a GitHub deploy
//! key, a host's `authorized_keys` line): made by aws-lc-rs (rotor's one source of key
//! material) and encoded by the `ssh-key` crate.

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::RotatorError;
use crate::password::random_bytes;

/// An ed25519 key pair as OpenSSH writes it: the private key file (unencrypted, as
/// `ssh-keygen -N ""` makes it) and the `ssh-ed25519 AAAA... comment` public line.
pub fn ed25519_openssh(comment: &str) -> (Zeroizing<String>, String) {
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use ssh_key::private::{Ed25519Keypair, KeypairData, PrivateKey};
    let seed = random_bytes::<32>();
    let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref()).expect("a 32-byte seed is a key");
    let mut both = Zeroizing::new([0u8; 64]);
    both[..32].copy_from_slice(seed.as_ref());
    both[32..].copy_from_slice(pair.public_key().as_ref());
    let keypair = Ed25519Keypair::from_bytes(&both).expect("a seed and its public key");
    let private = PrivateKey::new(KeypairData::Ed25519(keypair), comment)
        .expect("an ed25519 key pair is a private key");
    let file = private
        .to_openssh(ssh_key::LineEnding::LF)
        .expect("an unencrypted ed25519 key encodes");
    let public = private
        .public_key()
        .to_openssh()
        .expect("an ed25519 public key encodes");
    (file, public)
}

/// The OpenSSH public key line (`ssh-ed25519 AAAA… comment`) of a private key in OpenSSH format.
pub fn public_half(private: &SecretString) -> Result<String, RotatorError> {
    let key = ssh_key::PrivateKey::from_openssh(private.expose_secret().as_bytes())
        .map_err(|_| RotatorError::permanent("the stored private key is not an OpenSSH key"))?;
    key.public_key()
        .to_openssh()
        .map_err(|_| RotatorError::permanent("the stored private key has no OpenSSH public half"))
}

/// The SHA256 fingerprint OpenSSH shows for a public key line.
pub fn fingerprint(public: &str) -> Option<String> {
    let key = ssh_key::PublicKey::from_openssh(public).ok()?;
    Some(key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}
