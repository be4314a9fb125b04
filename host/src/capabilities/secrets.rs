//! Secrets: read on demand through `shoal:workload/secrets`.
//!
//! No secret store is wired in yet, so every name is refused as not granted
//! with a message that says how to grant one.

use std::sync::Arc;

use crate::bindings::secrets::{Error, Host};

/// The secrets granted to one component.
pub struct Secrets {
    component: Arc<str>,
}

impl Secrets {
    /// No secrets granted to `component`.
    pub fn new(component: Arc<str>) -> Self {
        Secrets { component }
    }
}

impl Host for Secrets {
    async fn get(&mut self, name: String) -> Result<Vec<u8>, Error> {
        Err(Error::NotGranted(format!(
            "component {} is not granted secret {name:?}: list it under `secrets` in its app spec",
            self.component
        )))
    }
}
