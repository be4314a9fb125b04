//! Secret values in flight: never printed, zeroed when dropped.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A secret's value. It has no `Display`, its `Debug` prints
/// `SecretValue(<redacted>)`, and its memory is zeroed when dropped. On the
/// wire (scheduler to host only) it is base64.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct SecretValue(Vec<u8>);

impl SecretValue {
    /// Wraps `bytes`.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretValue(bytes)
    }

    /// The value. Hand it to the guest that asked; log it nowhere.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue(<redacted>)")
    }
}

impl Serialize for SecretValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut text = STANDARD.encode(&self.0);
        let out = s.serialize_str(&text);
        text.zeroize();
        out
    }
}

impl<'de> Deserialize<'de> for SecretValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut text = String::deserialize(d)?;
        let bytes = STANDARD
            .decode(&text)
            .map_err(|_| serde::de::Error::custom("a secret value must be base64"));
        text.zeroize();
        bytes.map(SecretValue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = SecretValue::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "SecretValue(<redacted>)");
        let json = serde_json::to_string(&s).unwrap();
        assert!(!json.contains("hunter2"));
        assert_eq!(
            serde_json::from_str::<SecretValue>(&json).unwrap().expose(),
            b"hunter2"
        );
    }
}
