//! Password storage for MD5 challenge login.
//!
//! MSNP2's MD5 login sends `md5(challenge + password)`. To check that without keeping the
//! password, each account stores a random salt and `md5(salt + password)`, and the salt is the
//! challenge: the client's answer must then equal the stored digest. The digest is as good as
//! the password for logging in, so the database must be protected like a password file.

use md5::{Digest, Md5};
use subtle::ConstantTimeEq;

/// A salt and the MD5 digest of salt + password, in lower-case hex.
#[derive(Clone)]
pub struct PasswordHash {
    pub salt: String,
    pub digest: String,
}

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash([redacted])")
    }
}

impl PasswordHash {
    /// Hashes a new password under a fresh random salt.
    pub fn new(password: &str) -> PasswordHash {
        let salt = challenge_from(rand::random());
        let digest = md5_hex(&format!("{salt}{password}"));
        PasswordHash { salt, digest }
    }
}

/// The lower-case hex MD5 digest of a string.
pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// A challenge string: 20 decimal digits, the shape MSN's own challenges had.
pub fn challenge_from(value: u64) -> String {
    format!("{value:020}")
}

/// The challenge for a handle with no account: derived from the server secret so it is stable
/// and looks like a real salt, and a client can't tell an unknown handle from a wrong password.
pub fn fake_challenge(secret: &[u8], handle: &str) -> String {
    let mut hasher = Md5::new();
    hasher.update(secret);
    hasher.update(handle.as_bytes());
    let digest = hasher.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    challenge_from(u64::from_le_bytes(first))
}

/// Whether a client's MD5 response matches the stored digest (compared in constant time).
pub fn verify_response(hash: &PasswordHash, response: &str) -> bool {
    let response = response.to_ascii_lowercase();
    response.len() == hash.digest.len()
        && bool::from(response.as_bytes().ct_eq(hash.digest.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_matches_md5_of_challenge_and_password() {
        let hash = PasswordHash::new("secret");
        assert_eq!(hash.salt.len(), 20);
        assert!(hash.salt.bytes().all(|b| b.is_ascii_digit()));
        let good = md5_hex(&format!("{}secret", hash.salt));
        assert!(verify_response(&hash, &good));
        assert!(verify_response(&hash, &good.to_uppercase()));
        assert!(!verify_response(
            &hash,
            &md5_hex(&format!("{}Secret", hash.salt))
        ));
        assert!(!verify_response(&hash, ""));
        assert_eq!(format!("{hash:?}"), "PasswordHash([redacted])");
    }

    #[test]
    fn fake_challenges_are_stable_and_look_real() {
        let a = fake_challenge(b"k", "nobody@x.com");
        assert_eq!(a, fake_challenge(b"k", "nobody@x.com"));
        assert_ne!(a, fake_challenge(b"k", "other@x.com"));
        assert_ne!(a, fake_challenge(b"j", "nobody@x.com"));
        assert_eq!(a.len(), 20);
    }

    #[test]
    fn known_md5() {
        assert_eq!(md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
