//! Config values from the app spec's `config` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::bindings::config::Host;

/// The `config` values granted to one component.
pub struct Config {
    values: Arc<BTreeMap<String, String>>,
}

impl Config {
    /// Serves `values`.
    pub fn new(values: Arc<BTreeMap<String, String>>) -> Self {
        Config { values }
    }
}

impl Host for Config {
    async fn get(&mut self, key: String) -> Option<String> {
        self.values.get(&key).cloned()
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
