//! Sealing of Secret data: the `data` map of a Secret never enters the document (and so never
//! reaches the disk or a peer) in clear.
//!
//! The key is derived from the cluster secret with HKDF-SHA256 (info `shoal secret data v1`),
//! so every node of a cluster derives the same key and no key is stored. Sealing uses
//! XChaCha20-Poly1305 with a random 24-byte nonce (large enough that random nonces never
//! repeat in practice), and binds the ciphertext to the object's `namespace/name` as
//! associated data, so that a sealed blob copied onto another Secret does not open.
//!
//! Sealed form: `v1:` followed by base64 (standard, padded) of `nonce || ciphertext`.
//!
//! Owned by the state store ([`super::store`]), which seals on write and opens on read.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

const INFO: &[u8] = b"shoal secret data v1";
/// The HKDF info of the key's public fingerprint (see [`Sealer::key_id`]).
const KEY_ID_INFO: &[u8] = b"shoal secret key id v1";
const PREFIX: &str = "v1:";
const NONCE_LEN: usize = 24;

/// Why a sealed value cannot be opened (or made).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CryptoError {
    #[error("sealed data has an unknown format (expected the prefix {PREFIX:?})")]
    UnknownFormat,
    #[error("sealed data is not valid base64 or is too short")]
    BadEncoding,
    #[error(
        "sealed data does not open: it was sealed with another cluster secret, or it is damaged"
    )]
    Decrypt,
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// The key that seals Secret data. Deliberately not `Debug`: it must never reach a log.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
    key_id: String,
}

impl Sealer {
    /// Derives the sealing key from the cluster secret.
    pub(crate) fn derive(cluster_secret: &[u8; 32]) -> Sealer {
        let hk = Hkdf::<Sha256>::new(None, cluster_secret);
        let mut okm = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32 bytes, so expand cannot fail;
        // were it ever to, the all-zero key would only make every open fail loudly.
        let _ = hk.expand(INFO, &mut okm);
        let mut id = [0u8; 8];
        let _ = hk.expand(KEY_ID_INFO, &mut id);
        Sealer {
            cipher: XChaCha20Poly1305::new(Key::from_slice(&okm)),
            key_id: hex::encode(id),
        }
    }

    /// A public fingerprint of the key (16 hex digits): another HKDF output of the same
    /// secret, so it tells keys apart without revealing anything of them. Backups carry it, so
    /// that a restore into a cluster with another secret is refused before anything is written.
    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Seals `plaintext`, bound to `context` (the object's `namespace/name`).
    pub(crate) fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| CryptoError::Random(e.to_string()))?;
        let ciphertext = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            // Encryption fails only for messages beyond the cipher's limit (256 GiB).
            .map_err(|_| CryptoError::Decrypt)?;
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(blob)
        ))
    }

    /// Opens a sealed value made by [`Sealer::seal`] with the same key and context.
    pub(crate) fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, CryptoError> {
        let b64 = sealed
            .strip_prefix(PREFIX)
            .ok_or(CryptoError::UnknownFormat)?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| CryptoError::BadEncoding)?;
        if blob.len() < NONCE_LEN {
            return Err(CryptoError::BadEncoding);
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Decrypt)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn seals_and_opens() {
        let s = Sealer::derive(&[7; 32]);
        let sealed = s.seal(b"hunter2", "default/db").unwrap();
        assert!(sealed.starts_with("v1:"));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(s.open(&sealed, "default/db").unwrap(), b"hunter2");
        // Random nonces: sealing twice gives two different blobs.
        assert_ne!(s.seal(b"hunter2", "default/db").unwrap(), sealed);
    }

    #[test]
    fn wrong_key_context_or_damage_is_an_error() {
        let s = Sealer::derive(&[7; 32]);
        let sealed = s.seal(b"hunter2", "default/db").unwrap();
        let other = Sealer::derive(&[8; 32]);
        assert_eq!(other.open(&sealed, "default/db"), Err(CryptoError::Decrypt));
        assert_eq!(s.open(&sealed, "default/other"), Err(CryptoError::Decrypt));
        assert_eq!(
            s.open("v2:abc", "default/db"),
            Err(CryptoError::UnknownFormat)
        );
        assert_eq!(
            s.open("v1:!!!", "default/db"),
            Err(CryptoError::BadEncoding)
        );
        assert_eq!(
            s.open("v1:AAAA", "default/db"),
            Err(CryptoError::BadEncoding)
        );
        let mut damaged = sealed.clone().into_bytes();
        let last = damaged.len() - 3;
        damaged[last] = if damaged[last] == b'A' { b'B' } else { b'A' };
        let damaged = String::from_utf8(damaged).unwrap();
        assert_eq!(s.open(&damaged, "default/db"), Err(CryptoError::Decrypt));
    }

    #[test]
    fn key_id_names_the_secret_without_revealing_it() {
        let a = Sealer::derive(&[7; 32]);
        assert_eq!(a.key_id().len(), 16);
        assert_eq!(a.key_id(), Sealer::derive(&[7; 32]).key_id());
        assert_ne!(a.key_id(), Sealer::derive(&[8; 32]).key_id());
        assert!(!a.key_id().contains(&hex::encode([7u8; 8])));
    }
}
