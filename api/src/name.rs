//! Names of apps, namespaces, components, volumes and secrets.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// The longest name allowed: a DNS label, so a name can appear in a host
/// name, a NATS subject and a file name alike.
pub const MAX_NAME_LEN: usize = 63;

/// A name: 1 to 63 lowercase ASCII letters, digits and `-`, starting with a
/// letter and not ending with `-` (a DNS label, as in Kubernetes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Name(String);

/// Why a string is not a valid [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid name {given:?}: {why}; a name is 1 to {MAX_NAME_LEN} lowercase letters, digits and '-', starting with a letter"
)]
pub struct NameError {
    given: String,
    why: &'static str,
}

impl Name {
    /// Checks `value` and wraps it.
    pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
        let given = value.into();
        let fail = |why| {
            Err(NameError {
                given: given.clone(),
                why,
            })
        };
        if given.is_empty() {
            return fail("it is empty");
        }
        if given.len() > MAX_NAME_LEN {
            return fail("it is too long");
        }
        if !given.starts_with(|c: char| c.is_ascii_lowercase()) {
            return fail("it does not start with a lowercase letter");
        }
        if given.ends_with('-') {
            return fail("it ends with '-'");
        }
        if !given
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return fail("it has a character other than a-z, 0-9 and '-'");
        }
        Ok(Name(given))
    }

    /// Wraps a name known to be valid at compile time.
    pub(crate) fn trusted(value: &str) -> Self {
        debug_assert!(Name::new(value).is_ok());
        Name(value.to_string())
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::new(s)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Name::new(raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "orders", "billing-v2", "x1"] {
            assert_eq!(Name::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn refuses_everything_else_and_says_why() {
        let cases = [
            ("", "empty"),
            ("Orders", "lowercase letter"),
            ("1st", "lowercase letter"),
            ("a_b", "other than"),
            ("a.b", "other than"),
            ("trailing-", "ends with"),
        ];
        for (bad, why) in cases {
            let err = Name::new(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(err.contains(&format!("{bad:?}")), "{err}");
        }
        assert!(
            Name::new("a".repeat(64))
                .unwrap_err()
                .to_string()
                .contains("too long")
        );
    }
}
