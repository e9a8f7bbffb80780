//! Backend secrets at rest: XChaCha20-Poly1305 under a key kept outside the database.
//!
//! The key comes from `[secrets] key` (64 hex digits, e.g. from `MSNGATE__SECRETS__KEY`) or from
//! the file `[secrets] key_file`, which is created with owner-only permissions the first time a
//! secret is stored. A stolen database alone therefore reveals no backend password or token.
//! Each sealed secret is bound to its account handle (as associated data), so secrets can't be
//! swapped between accounts in the database.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::config::SecretsConfig;

const NONCE_BYTES: usize = 24;

/// Why secrets can't be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("configuration: key `secrets.key`: must be 64 hex digits")]
    BadKey,
    #[error("the key file {path} is unusable: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("a stored secret can't be decrypted with this key (wrong key, or damaged data)")]
    Undecryptable,
}

/// The key that seals backend secrets.
pub struct SecretKey {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        SecretKey {
            cipher: XChaCha20Poly1305::new(bytes.into()),
        }
    }

    fn from_hex(text: &str) -> Option<SecretKey> {
        let bytes: [u8; 32] = hex::decode(text.trim()).ok()?.try_into().ok()?;
        Some(SecretKey::from_bytes(&bytes))
    }

    /// The configured key, or the key file's; with `create`, a missing key file is made.
    pub fn load(config: &SecretsConfig, create: bool) -> Result<Option<SecretKey>, SecretsError> {
        if let Some(text) = config.key.as_deref().filter(|k| !k.is_empty()) {
            return SecretKey::from_hex(text)
                .map(Some)
                .ok_or(SecretsError::BadKey);
        }
        let path = &config.key_file;
        let file_error = |reason: String| SecretsError::KeyFile {
            path: path.clone(),
            reason,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                warn_if_exposed(path);
                SecretKey::from_hex(&text)
                    .map(Some)
                    .ok_or_else(|| file_error("it does not hold 64 hex digits".into()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let bytes: [u8; 32] = rand::random();
                write_new_key_file(path, &hex::encode(bytes))
                    .map_err(|e| file_error(e.to_string()))?;
                tracing::info!(path = %path.display(), "created a new secrets key file");
                Ok(Some(SecretKey::from_bytes(&bytes)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(file_error(e.to_string())),
        }
    }

    /// Encrypts a secret for the account `handle`.
    pub fn seal(&self, handle: &str, secret: &[u8]) -> Vec<u8> {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret,
                    aad: handle.as_bytes(),
                },
            )
            .expect("encryption of an in-memory buffer does not fail");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts a secret sealed for the account `handle`.
    pub fn open(&self, handle: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < NONCE_BYTES {
            return Err(SecretsError::Undecryptable);
        }
        let (nonce, body) = sealed.split_at(NONCE_BYTES);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: handle.as_bytes(),
                },
            )
            .map_err(|_| SecretsError::Undecryptable)
    }
}

#[cfg(unix)]
fn write_new_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_new_key_file(path: &Path, text: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "the secrets key file is readable by others; chmod 600 it");
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> SecretsConfig {
        SecretsConfig {
            key: None,
            key_file: dir.join("msngate.key"),
        }
    }

    #[test]
    fn key_file_is_created_once_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        assert!(SecretKey::load(&c, false).unwrap().is_none());
        let key = SecretKey::load(&c, true).unwrap().unwrap();
        let sealed = key.seal("a@b.c", b"hunter2");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&c.key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = SecretKey::load(&c, true).unwrap().unwrap();
        assert_eq!(again.open("a@b.c", &sealed).unwrap(), b"hunter2");
    }

    #[test]
    fn sealed_secrets_are_bound_and_opaque() {
        let key = SecretKey::from_hex(&"11".repeat(32)).unwrap();
        let sealed = key.seal("a@b.c", b"hunter2");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_ne!(sealed, key.seal("a@b.c", b"hunter2"), "random nonces");
        assert!(matches!(
            key.open("x@b.c", &sealed),
            Err(SecretsError::Undecryptable)
        ));
        let other = SecretKey::from_hex(&"22".repeat(32)).unwrap();
        assert!(matches!(
            other.open("a@b.c", &sealed),
            Err(SecretsError::Undecryptable)
        ));
        assert!(matches!(
            key.open("a@b.c", &sealed[..10]),
            Err(SecretsError::Undecryptable)
        ));
    }

    #[test]
    fn configured_key_wins_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.key = Some("zz".into());
        assert!(matches!(
            SecretKey::load(&c, true),
            Err(SecretsError::BadKey)
        ));
        c.key = Some("ab".repeat(32));
        assert!(SecretKey::load(&c, true).unwrap().is_some());
        assert!(
            !c.key_file.exists(),
            "no key file when the key is configured"
        );
    }
}
