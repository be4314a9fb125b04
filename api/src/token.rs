//! API bearer tokens: `shoal_<id>_<secret>`.
//!
//! The id (16 hex digits) is public: it names the token in lists, in the
//! audit trail and in `shoal auth token revoke`. The secret (32 random
//! bytes, base64url) is shown once, when the token is made; the scheduler
//! keeps only its SHA-256 and compares in constant time. A plain hash is
//! enough because the secret is random, not a password: there is nothing
//! to guess from a dictionary, so a slow hash would only slow every call.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The prefix every token starts with, so secret scanners can spot one.
pub const PREFIX: &str = "shoal_";

/// The bytes of randomness in a token's id.
pub const ID_BYTES: usize = 8;
/// The bytes of randomness in a token's secret.
pub const SECRET_BYTES: usize = 32;

/// A token's public id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TokenId(String);

impl TokenId {
    /// Checks `text` is 16 lowercase hex digits.
    pub fn parse(text: &str) -> Option<TokenId> {
        (text.len() == ID_BYTES * 2
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| TokenId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TokenId {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        TokenId::parse(&text).ok_or_else(|| format!("{text:?} is not a token id (16 hex digits)"))
    }
}

impl From<TokenId> for String {
    fn from(id: TokenId) -> String {
        id.0
    }
}

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// A whole token, as a client presents it. Never printed by `Debug`.
pub struct BearerToken {
    id: TokenId,
    secret: Zeroizing<String>,
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BearerToken({}, <secret>)", self.id)
    }
}

impl BearerToken {
    /// A token from its random parts (from a CSPRNG).
    pub fn from_random(id: [u8; ID_BYTES], secret: [u8; SECRET_BYTES]) -> BearerToken {
        let id = id.iter().map(|b| format!("{b:02x}")).collect();
        BearerToken {
            id: TokenId(id),
            secret: Zeroizing::new(URL_SAFE_NO_PAD.encode(secret)),
        }
    }

    /// Parses `shoal_<id>_<secret>`; `None` for anything else.
    pub fn parse(text: &str) -> Option<BearerToken> {
        let rest = text.strip_prefix(PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let id = TokenId::parse(id)?;
        let decoded = URL_SAFE_NO_PAD.decode(secret).ok()?;
        (decoded.len() == SECRET_BYTES).then(|| BearerToken {
            id,
            secret: Zeroizing::new(secret.to_string()),
        })
    }

    /// The public id.
    pub fn id(&self) -> &TokenId {
        &self.id
    }

    /// What the scheduler stores in place of the secret.
    pub fn hash(&self) -> TokenHash {
        TokenHash(Sha256::digest(self.secret.as_bytes()).into())
    }

    /// The token as the client sends it. Show it once.
    pub fn reveal(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{PREFIX}{}_{}", self.id, self.secret.as_str()))
    }
}

/// The SHA-256 of a token's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Whether `token`'s secret hashes to this, in constant time.
    pub fn matches(&self, token: &BearerToken) -> bool {
        self.0.ct_eq(&token.hash().0).into()
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl Serialize for TokenHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl<'de> Deserialize<'de> for TokenHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(&text)
            .map_err(serde::de::Error::custom)?;
        let array: [u8; 32] = bytes
            .try_into()
            .map_err(|_| serde::de::Error::custom("a token hash is 32 bytes"))?;
        Ok(TokenHash(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_round_trips_and_matches_only_its_own_hash() {
        let token = BearerToken::from_random([0xab; ID_BYTES], [7; SECRET_BYTES]);
        let text = token.reveal();
        assert!(text.starts_with("shoal_abababababababab_"), "{}", *text);
        let parsed = BearerToken::parse(&text).unwrap_or_else(|| unreachable!("parses"));
        assert_eq!(parsed.id(), token.id());
        assert!(token.hash().matches(&parsed));
        let other = BearerToken::from_random([0xab; ID_BYTES], [8; SECRET_BYTES]);
        assert!(!token.hash().matches(&other));
        assert!(!format!("{token:?}").contains(&text[25..]));
    }

    #[test]
    fn anything_else_is_not_a_token() {
        for text in [
            "",
            "s3cret",
            "shoal_",
            "shoal_abababababababab",
            "shoal_ABABABABABABABAB_AAAA",
            "shoal_abababababababab_short",
            "Bearer shoal_abababababababab_x",
        ] {
            assert!(BearerToken::parse(text).is_none(), "{text}");
        }
    }

    #[test]
    fn a_hash_survives_json() {
        let token = BearerToken::from_random([1; ID_BYTES], [2; SECRET_BYTES]);
        let json = serde_json::to_string(&token.hash()).unwrap_or_default();
        let back: TokenHash = serde_json::from_str(&json).unwrap_or_else(|e| unreachable!("{e}"));
        assert!(back.matches(&token));
    }
}
