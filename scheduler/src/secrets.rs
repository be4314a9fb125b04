//! Secrets at rest: sealed with ChaCha20-Poly1305 before they reach the
//! JetStream bucket, so the bucket (and its files, and its backups) hold
//! ciphertext only.
//!
//! The key is 32 bytes, from `SHOAL_SECRET_KEY` (base64) or the file
//! `secret.key` in the scheduler's data dir (created on first start, mode
//! 0600). To rotate it: start the scheduler with the new key in
//! `SHOAL_SECRET_KEY` and the old one in `SHOAL_SECRET_KEY_PREVIOUS`; every
//! secret still sealed with the old key is re-sealed with the new one at
//! start, after which the old key can be dropped.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use shoal_api::SecretValue;

const NONCE_LEN: usize = 12;

/// Seals and opens secret values.
#[derive(Clone)]
pub struct SecretBox {
    current: ChaCha20Poly1305,
    previous: Option<ChaCha20Poly1305>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<keys redacted>)")
    }
}

/// What opening a sealed value found.
pub enum Opened {
    /// Sealed with the current key.
    Current(SecretValue),
    /// Sealed with the previous key: re-seal it.
    Previous(SecretValue),
}

impl SecretBox {
    /// A box for `key`, also opening values sealed with `previous`.
    pub fn new(key: &[u8; 32], previous: Option<&[u8; 32]>) -> Self {
        SecretBox {
            current: ChaCha20Poly1305::new(Key::from_slice(key)),
            previous: previous.map(|k| ChaCha20Poly1305::new(Key::from_slice(k))),
        }
    }

    /// A fresh random key.
    pub fn generate_key() -> [u8; 32] {
        ChaCha20Poly1305::generate_key(&mut OsRng).into()
    }

    /// Nonce then ciphertext (with its tag).
    pub fn seal(&self, value: &SecretValue) -> Result<Vec<u8>, String> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self
            .current
            .encrypt(&nonce, value.expose())
            .map_err(|_| "sealing the secret failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens a sealed value with the current key, else the previous one.
    pub fn open(&self, sealed: &[u8]) -> Result<Opened, String> {
        if sealed.len() < NONCE_LEN {
            return Err("the stored secret is truncated".into());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        if let Ok(plain) = self.current.decrypt(nonce, body) {
            return Ok(Opened::Current(SecretValue::new(plain)));
        }
        if let Some(previous) = &self.previous
            && let Ok(plain) = previous.decrypt(nonce, body)
        {
            return Ok(Opened::Previous(SecretValue::new(plain)));
        }
        Err("the stored secret does not open with the secret key: was the key changed without SHOAL_SECRET_KEY_PREVIOUS?".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_opens_and_rotates() {
        let old = SecretBox::generate_key();
        let new = SecretBox::generate_key();
        let value = SecretValue::new(b"hunter2".to_vec());
        let sealed = SecretBox::new(&old, None).seal(&value).unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "ciphertext only"
        );
        assert!(SecretBox::new(&new, None).open(&sealed).is_err());
        match SecretBox::new(&new, Some(&old)).open(&sealed).unwrap() {
            Opened::Previous(v) => assert_eq!(v.expose(), b"hunter2"),
            Opened::Current(_) => panic!("sealed with the old key"),
        }
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(SecretBox::new(&old, None).open(&tampered).is_err());
    }
}
