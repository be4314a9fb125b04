//! Config values from the app spec's `config` table.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, GrantContext, HostContext};
use crate::bindings;
use crate::bindings::config::Host;
use crate::state::InvocationState;
use crate::trace::{CallContext, CallSite};

/// The `config` values granted to one component.
pub struct Config {
    call: Arc<CallContext>,
    values: Arc<BTreeMap<String, String>>,
}

impl Config {
    /// Serves `values` in `call`.
    pub fn new(call: Arc<CallContext>, values: Arc<BTreeMap<String, String>>) -> Self {
        Config { call, values }
    }

    fn site<'a>(function: &'static str, target: &'a str) -> CallSite<'a> {
        CallSite {
            capability: "config",
            function,
            target,
            sent_bytes: 0,
        }
    }
}

impl Host for Config {
    async fn get(&mut self, key: String) -> Option<String> {
        let found = self.values.get(&key).cloned();
        let recorded = self.call.record(
            Config::site("get", &key),
            |v: &Option<String>| v.as_ref().map_or(0, String::len),
            async { Ok::<_, std::convert::Infallible>(found) },
        );
        recorded.await.unwrap_or_else(|never| match never {})
    }

    async fn get_all(&mut self) -> Vec<(String, String)> {
        let all: Vec<(String, String)> = self
            .values
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let recorded = self.call.record(
            Config::site("get-all", ""),
            |all: &Vec<(String, String)>| all.iter().map(|(k, v)| k.len() + v.len()).sum(),
            async { Ok::<_, std::convert::Infallible>(all) },
        );
        recorded.await.unwrap_or_else(|never| match never {})
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

    fn bind(call: &Arc<CallContext>, grant: &Self::Grant) -> Self::Provider {
        Config::new(call.clone(), grant.clone())
    }
}
