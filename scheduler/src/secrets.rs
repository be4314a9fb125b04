//! Secrets at rest: sealed with ChaCha20-Poly1305 before they reach the
//! JetStream bucket, so the bucket (and its files, and its backups) hold
//! ciphertext only.
//!
//! Each value is sealed with its key in the bucket (`<namespace>.<name>`)
//! as associated data, so a sealed value copied under another secret's key
//! does not open.
//!
//! The key is 32 bytes, from `SHOAL_SECRET_KEY` (base64) or a key file
//! kept in Shoal's configuration directory, away from the JetStream data
//! it protects (created on first start, mode 0600). To rotate it: start the scheduler with the new key in
//! `SHOAL_SECRET_KEY` and the old one in `SHOAL_SECRET_KEY_PREVIOUS`; every
//! secret still sealed with the old key is re-sealed with the new one at
//! start, after which the old key can be dropped.

use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
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

    /// Nonce then ciphertext (with its tag) of the secret stored under
    /// `key`.
    pub fn seal(&self, key: &str, value: &SecretValue) -> Result<Vec<u8>, String> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: value.expose(),
            aad: key.as_bytes(),
        };
        let sealed = self
            .current
            .encrypt(&nonce, payload)
            .map_err(|_| "sealing the secret failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(out)
    }

    /// Opens the value stored under `key` with the current key, else the
    /// previous one.
    pub fn open(&self, key: &str, sealed: &[u8]) -> Result<Opened, String> {
        if sealed.len() < NONCE_LEN {
            return Err("the stored secret is truncated".into());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::from_slice(nonce);
        let payload = || Payload {
            msg: body,
            aad: key.as_bytes(),
        };
        if let Ok(plain) = self.current.decrypt(nonce, payload()) {
            return Ok(Opened::Current(SecretValue::new(plain)));
        }
        if let Some(previous) = &self.previous
            && let Ok(plain) = previous.decrypt(nonce, payload())
        {
            return Ok(Opened::Previous(SecretValue::new(plain)));
        }
        Err("the stored secret does not open with the secret key: was the key changed without SHOAL_SECRET_KEY_PREVIOUS, or was the value copied from another secret?".into())
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
        let sealed = SecretBox::new(&old, None).seal("a.db", &value).unwrap();
        assert!(
            !sealed.windows(7).any(|w| w == b"hunter2"),
            "ciphertext only"
        );
        assert!(SecretBox::new(&new, None).open("a.db", &sealed).is_err());
        match SecretBox::new(&new, Some(&old))
            .open("a.db", &sealed)
            .unwrap()
        {
            Opened::Previous(v) => assert_eq!(v.expose(), b"hunter2"),
            Opened::Current(_) => panic!("sealed with the old key"),
        }
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(SecretBox::new(&old, None).open("a.db", &tampered).is_err());
        // Copied under another secret's key, it does not open.
        assert!(SecretBox::new(&old, None).open("b.db", &sealed).is_err());
        assert!(SecretBox::new(&old, None).open("a.api", &sealed).is_err());
    }
}
