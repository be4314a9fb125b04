//! Secrets: read on demand through `shoal:workload/secrets`, never placed
//! in the environment. Only names the component's spec lists are served.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_api::{Name, SealingKey, SecretValue};
use wasmtime::component::{HasSelf, Linker};

use super::{Capability, GrantContext, HostContext};
use crate::bindings;
use crate::bindings::secrets::{Error, Host};
use crate::state::InvocationState;
use crate::trace::{CallContext, CallSite};

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
    call: Arc<CallContext>,
    grant: Arc<SecretGrant>,
}

impl Secrets {
    /// Serves `grant` in `call`.
    pub fn new(call: Arc<CallContext>, grant: Arc<SecretGrant>) -> Self {
        Secrets { call, grant }
    }

    fn lookup(&self, name: &str) -> Result<Vec<u8>, Error> {
        if !self.grant.listed.iter().any(|n| n.as_str() == name) {
            return Err(Error::NotGranted(format!(
                "component {} is not granted secret {name:?}: list it under `secrets` in its app spec",
                self.call.component()
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

impl Host for Secrets {
    async fn get(&mut self, name: String) -> Result<Vec<u8>, Error> {
        let site = CallSite {
            capability: "secrets",
            function: "get",
            target: &name,
            sent_bytes: 0,
        };
        let found = self.lookup(&name);
        // A trace never tells a secret's length.
        self.call.record(site, |_| 0, async { found }).await
    }
}

/// The secrets capability: opens the values sent for a component with the
/// host's sealing key.
pub struct SecretsCapability {
    key: Option<Arc<SealingKey>>,
}

impl Capability for SecretsCapability {
    const NAME: &'static str = "secrets";
    type Grant = Arc<SecretGrant>;
    type Provider = Secrets;

    fn new(host: Option<&HostContext>) -> Self {
        SecretsCapability {
            key: host.map(|h| h.sealing_key.clone()),
        }
    }

    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String> {
        let mut values = BTreeMap::new();
        if !ctx.secrets.is_empty() {
            let (Some(key), Some(replica)) = (&self.key, ctx.replica) else {
                return Err("secrets were sent to a host without a sealing key".into());
            };
            for (name, sealed) in ctx.secrets {
                let value = sealed
                    .open(&replica.namespace, name, key)
                    .map_err(|e| e.to_string())?;
                values.insert(name.clone(), value);
            }
        }
        Ok(Arc::new(SecretGrant {
            listed: ctx.spec.secrets.clone(),
            values,
        }))
    }

    fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        bindings::secrets::add_to_linker::<_, HasSelf<Secrets>>(linker, |s| &mut s.caps.secrets)
    }

    fn bind(call: &Arc<CallContext>, grant: &Self::Grant) -> Self::Provider {
        Secrets::new(call.clone(), grant.clone())
    }
}
