//! Core dumps of trapping invocations: how a host names and describes
//! them in a namespace's object store, and what `shoal debug dumps` lists.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Name;

/// A core dump's id, which is also its object's name:
/// `<app>.<component>.<unix ms>.<nonce>`. The app comes first so that the
/// API can check permission on it from the id alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DumpId {
    /// The app.
    pub app: Name,
    /// Its component that trapped.
    pub component: Name,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// Tells apart dumps of one component in the same millisecond.
    pub nonce: u32,
}

impl fmt::Display for DumpId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}.{:08x}",
            self.app, self.component, self.at_ms, self.nonce
        )
    }
}

/// Why a text is not a [`DumpId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a core dump id: use one `shoal debug dumps APP` lists")]
pub struct DumpIdError(String);

impl FromStr for DumpId {
    type Err = DumpIdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || DumpIdError(text.chars().take(100).collect());
        let mut parts = text.split('.');
        let (Some(app), Some(component), Some(at), Some(nonce), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        if nonce.len() != 8 {
            return Err(bad());
        }
        Ok(DumpId {
            app: Name::new(app).map_err(|_| bad())?,
            component: Name::new(component).map_err(|_| bad())?,
            at_ms: at.parse().map_err(|_| bad())?,
            nonce: u32::from_str_radix(nonce, 16).map_err(|_| bad())?,
        })
    }
}

/// Keys of a dump object's metadata.
pub mod meta {
    /// The replica that trapped.
    pub const REPLICA: &str = "replica";
    /// The host it ran on.
    pub const HOST: &str = "host";
    /// The trap, in words.
    pub const TRAP: &str = "trap";
    /// The innermost function of the guest's stack.
    pub const FUNCTION: &str = "function";
}

/// One stored core dump, as `GET /v1/dumps/{namespace}/{app}` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DumpInfo {
    /// Its id, for `shoal debug dump ID`.
    pub id: String,
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
    /// The component that trapped.
    pub component: Name,
    /// The replica (`namespace/app/pod-index`).
    pub replica: String,
    /// The host it ran on.
    pub host: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The trap.
    pub trap: String,
    /// The innermost function of the guest's stack, demangled.
    pub function: String,
    /// Its size in bytes.
    pub bytes: u64,
}

impl DumpInfo {
    /// The listing of object `id` in `namespace`, from its metadata.
    pub fn new(
        namespace: Name,
        id: &DumpId,
        metadata: &HashMap<String, String>,
        bytes: u64,
    ) -> DumpInfo {
        let get = |k: &str| metadata.get(k).cloned().unwrap_or_default();
        DumpInfo {
            id: id.to_string(),
            namespace,
            app: id.app.clone(),
            component: id.component.clone(),
            replica: get(meta::REPLICA),
            host: get(meta::HOST),
            at_ms: id.at_ms,
            trap: get(meta::TRAP),
            function: get(meta::FUNCTION),
            bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_ids_round_trip_and_refuse_what_is_not_one() {
        let id = DumpId {
            app: Name::new("shop").unwrap(),
            component: Name::new("api").unwrap(),
            at_ms: 1_700_000_000_123,
            nonce: 0xbeef,
        };
        assert_eq!(id.to_string(), "shop.api.1700000000123.0000beef");
        assert_eq!(id.to_string().parse::<DumpId>().unwrap(), id);
        for bad in [
            "",
            "shop.api.1.0000beef.x",
            "shop.api.x.0000beef",
            "Shop.api.1.0000beef",
            "shop.api.1.beef",
            "../etc.api.1.0000beef",
        ] {
            assert!(bad.parse::<DumpId>().is_err(), "{bad}");
        }
    }
}
