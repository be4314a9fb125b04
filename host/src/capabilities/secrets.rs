//! Secrets: read on demand through `shoal:workload/secrets`, never placed
//! in the environment. Only names the component's spec lists are served.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_api::{Name, SecretValue};

use crate::bindings::secrets::{Error, Host};

/// The secrets granted to one component: the names its spec lists, and
/// the values of those that have been set.
#[derive(Debug, Default)]
pub struct SecretGrant {
    /// Names the spec lists.
    pub listed: Vec<Name>,
    /// Values, by name; zeroed when dropped.
    pub values: BTreeMap<Name, SecretValue>,
}

/// The secrets provider of one invocation.
pub struct Secrets {
    component: Arc<str>,
    grant: Arc<SecretGrant>,
}

impl Secrets {
    /// Serves `grant` to `component`.
    pub fn new(component: Arc<str>, grant: Arc<SecretGrant>) -> Self {
        Secrets { component, grant }
    }
}

impl Host for Secrets {
    async fn get(&mut self, name: String) -> Result<Vec<u8>, Error> {
        if !self.grant.listed.iter().any(|n| n.as_str() == name) {
            return Err(Error::NotGranted(format!(
                "component {} is not granted secret {name:?}: list it under `secrets` in its app spec",
                self.component
            )));
        }
        match self.grant.values.iter().find(|(n, _)| n.as_str() == name) {
            Some((_, value)) => Ok(value.expose().to_vec()),
            None => Err(Error::NotFound(format!(
                "secret {name:?} has not been set: set it with `shoal secret set {name}`"
            ))),
        }
    }
}
