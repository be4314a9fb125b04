//! Secret values sealed to the one host that runs them.
//!
//! Every host has a curve key pair (an nkeys "xkey"): the public half goes
//! out in its heartbeats, which only that host can publish, and the private
//! half never leaves its data dir. The scheduler seals each secret value to
//! the public key of the host a replica is placed on, with a fresh sender
//! key every time (a sealed box: X25519 and XSalsa20-Poly1305), so nothing
//! on the wire holds a value in clear and no other host can open it.
//!
//! The sealed bytes name the secret they hold (`<namespace>/<name>`): a
//! sealed value copied under another secret's name, or into another
//! namespace's start command, does not open.

use nkeys::XKey;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::{Name, SecretValue};

/// Why a secret could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The host's public key is not a valid xkey.
    #[error("{0:?} is not a host sealing key (an nkeys curve public key starting with X)")]
    BadKey(String),
    /// The crypto failed: a wrong key, or bytes changed in flight.
    #[error(
        "secret {secret} does not open with this host's key: it was sealed for another host or changed in flight"
    )]
    DoesNotOpen {
        /// `<namespace>/<name>`.
        secret: String,
    },
    /// It opened, but names another secret.
    #[error("the value sent as secret {expected} was sealed as another secret")]
    WrongName {
        /// `<namespace>/<name>` it was sent as.
        expected: String,
    },
    /// Sealing failed.
    #[error("sealing secret {secret} failed")]
    Seal {
        /// `<namespace>/<name>`.
        secret: String,
    },
}

/// A host's key pair for opening secrets sealed to it. Its `Debug` shows
/// only the public key.
pub struct SealingKey(XKey);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealingKey({})", self.0.public_key())
    }
}

impl SealingKey {
    /// A fresh random key pair.
    pub fn generate() -> Self {
        SealingKey(XKey::new())
    }

    /// The key pair from its seed (`SX…`), as [`SealingKey::seed`] wrote it.
    pub fn from_seed(seed: &str) -> Result<Self, SealError> {
        XKey::from_seed(seed.trim())
            .map(SealingKey)
            .map_err(|_| SealError::BadKey("<seed redacted>".into()))
    }

    /// The seed, to store (privately) and reload.
    pub fn seed(&self) -> Result<String, SealError> {
        self.0
            .seed()
            .map_err(|_| SealError::BadKey("<seed redacted>".into()))
    }

    /// The public key (`X…`), which hosts announce in heartbeats.
    pub fn public_key(&self) -> String {
        self.0.public_key()
    }
}

/// One secret value sealed to one host. In JSON: the sender's one-time
/// public key and the sealed bytes in base64.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    /// The one-time public key it was sealed with.
    pub sender: String,
    /// The sealed box.
    #[serde(with = "crate::base64_serde")]
    pub sealed: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedSecret({} bytes)", self.sealed.len())
    }
}

fn label(namespace: &Name, name: &Name) -> String {
    format!("{namespace}/{name}")
}

impl SealedSecret {
    /// Seals `value`, the secret `name` of `namespace`, to the host whose
    /// public key is `host_key`.
    pub fn seal(
        namespace: &Name,
        name: &Name,
        value: &SecretValue,
        host_key: &str,
    ) -> Result<Self, SealError> {
        let recipient =
            XKey::from_public_key(host_key).map_err(|_| SealError::BadKey(host_key.into()))?;
        let sender = XKey::new();
        let mut plain = label(namespace, name).into_bytes();
        plain.push(0);
        plain.extend_from_slice(value.expose());
        let sealed = sender.seal(&plain, &recipient);
        plain.zeroize();
        Ok(SealedSecret {
            sender: sender.public_key(),
            sealed: sealed.map_err(|_| SealError::Seal {
                secret: label(namespace, name),
            })?,
        })
    }

    /// Opens it with this host's `key`, checking that it was sealed as the
    /// secret `name` of `namespace`.
    pub fn open(
        &self,
        namespace: &Name,
        name: &Name,
        key: &SealingKey,
    ) -> Result<SecretValue, SealError> {
        let expected = label(namespace, name);
        let does_not_open = || SealError::DoesNotOpen {
            secret: expected.clone(),
        };
        let sender = XKey::from_public_key(&self.sender).map_err(|_| does_not_open())?;
        let mut plain = key
            .0
            .open(&self.sealed, &sender)
            .map_err(|_| does_not_open())?;
        let split = plain.iter().position(|b| *b == 0);
        let named = split.is_some_and(|at| &plain[..at] == expected.as_bytes());
        let value = match split {
            Some(at) if named => Ok(SecretValue::new(plain[at + 1..].to_vec())),
            _ => Err(SealError::WrongName { expected }),
        };
        plain.zeroize();
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    #[test]
    fn only_the_host_it_was_sealed_for_opens_it_under_its_own_name() {
        let host = SealingKey::generate();
        let other = SealingKey::generate();
        let value = SecretValue::new(b"hunter2".to_vec());
        let sealed = SealedSecret::seal(&n("a"), &n("db"), &value, &host.public_key()).unwrap();
        let json = serde_json::to_string(&sealed).unwrap();
        assert!(!json.contains("hunter2"));
        let sealed: SealedSecret = serde_json::from_str(&json).unwrap();
        assert_eq!(
            sealed.open(&n("a"), &n("db"), &host).unwrap().expose(),
            b"hunter2"
        );
        assert!(matches!(
            sealed.open(&n("a"), &n("db"), &other),
            Err(SealError::DoesNotOpen { .. })
        ));
        assert!(matches!(
            sealed.open(&n("a"), &n("api-key"), &host),
            Err(SealError::WrongName { .. })
        ));
        assert!(matches!(
            sealed.open(&n("b"), &n("db"), &host),
            Err(SealError::WrongName { .. })
        ));
        let reloaded = SealingKey::from_seed(&host.seed().unwrap()).unwrap();
        assert!(sealed.open(&n("a"), &n("db"), &reloaded).is_ok());
        assert!(SealedSecret::seal(&n("a"), &n("db"), &value, "nonsense").is_err());
    }
}
