//! Environment variables, through `wasi:cli/environment`: the spec's `env`,
//! and in a cluster `SHOAL_REPLICA` and `SHOAL_HOST` (which replica and
//! host this is, like a pod's hostname).

use std::sync::Arc;

use shoal_api::wire::HostId;
use wasmtime_wasi::WasiCtxBuilder;

use super::{Capability, GrantContext, HostContext};

/// The environment capability.
pub struct Environment {
    host: Option<HostId>,
}

impl Capability for Environment {
    const NAME: &'static str = "env";
    type Grant = Arc<Vec<(String, String)>>;
    type Provider = ();

    fn new(host: Option<&HostContext>) -> Self {
        Environment {
            host: host.map(|h| h.id.clone()),
        }
    }

    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String> {
        let mut vars: Vec<(String, String)> = ctx.spec.env.clone().into_iter().collect();
        if let (Some(replica), Some(host)) = (ctx.replica, &self.host) {
            vars.push(("SHOAL_REPLICA".into(), replica.to_string()));
            vars.push(("SHOAL_HOST".into(), host.to_string()));
        }
        Ok(Arc::new(vars))
    }

    fn bind(_call: &Arc<crate::trace::CallContext>, _grant: &Self::Grant) -> Self::Provider {}

    fn prepare_wasi(grant: &Self::Grant, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        wasi.envs(grant);
        Ok(())
    }
}
