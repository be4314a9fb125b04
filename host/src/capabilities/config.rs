//! Config values from the app spec's `config` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, GrantContext, HostContext};
use crate::bindings;
use crate::bindings::config::Host;
use crate::state::InvocationState;

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

/// The config capability.
pub struct ConfigCapability;

impl Capability for ConfigCapability {
    const NAME: &'static str = "config";
    type Grant = Arc<BTreeMap<String, String>>;
    type Provider = Config;

    fn new(_host: Option<&HostContext>) -> Self {
        ConfigCapability
    }

    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String> {
        Ok(Arc::new(ctx.spec.config.clone()))
    }

    fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        bindings::config::add_to_linker::<_, HasSelf<Config>>(linker, |s| &mut s.caps.config)
    }

    fn bind(_component: &Arc<str>, grant: &Self::Grant) -> Self::Provider {
        Config::new(grant.clone())
    }
}
