//! Capability providers: what a component may touch outside itself.
//!
//! Each capability is one module holding one small struct, bound into the
//! store of each invocation from the component's [`Grants`]. Everything is
//! denied unless the app spec grants it; a denial is an error value the
//! guest sees, never a trap.

pub mod config;
pub mod keyvalue;
pub mod messaging;
pub mod outbound_http;
pub mod secrets;
pub mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_api::{MessagingGrant, Name};
use wasmtime::component::{HasSelf, Linker};

use crate::bindings;
use crate::state::InvocationState;

/// The cluster a component runs in: how it reaches other components and
/// the app's key-value bucket. `None` under `shoal run`.
#[derive(Clone)]
pub struct ClusterLink {
    /// The NATS connection.
    pub nats: async_nats::Client,
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
}

/// What a component is granted, fixed when it is loaded and shared by all
/// its invocations.
#[derive(Clone, Default)]
pub struct Grants {
    /// `config` values from the spec.
    pub config: Arc<BTreeMap<String, String>>,
    /// Environment variables from the spec.
    pub env: Arc<Vec<(String, String)>>,
    /// Secrets the spec lists, with the values that are set.
    pub secrets: Arc<secrets::SecretGrant>,
    /// Subjects it may publish to.
    pub messaging: Option<MessagingGrant>,
    /// Whether it may use the app's key-value bucket.
    pub keyvalue: Option<Arc<keyvalue::Bucket>>,
    /// Hosts it may send HTTP requests to.
    pub allowed_hosts: Arc<Vec<String>>,
    /// Directories mounted into it.
    pub volumes: Arc<Vec<volumes::Mount>>,
    /// The cluster, when it runs in one.
    pub cluster: Option<ClusterLink>,
}

/// The capability providers of one invocation.
pub struct Capabilities {
    pub(crate) config: config::Config,
    pub(crate) secrets: secrets::Secrets,
    pub(crate) messaging: messaging::Messaging,
    pub(crate) keyvalue: keyvalue::KeyValue,
    pub(crate) outbound_http: outbound_http::OutboundHttp,
    /// The size limits of the writable volumes.
    pub(crate) quotas: Vec<Arc<volumes::VolumeQuota>>,
}

impl Capabilities {
    /// Binds `grants` for one invocation of `component`.
    pub fn bind(component: &Arc<str>, grants: &Grants) -> Self {
        Capabilities {
            config: config::Config::new(grants.config.clone()),
            secrets: secrets::Secrets::new(component.clone(), grants.secrets.clone()),
            messaging: messaging::Messaging::new(
                component.clone(),
                grants.messaging.clone(),
                grants.cluster.clone(),
            ),
            keyvalue: keyvalue::KeyValue::new(component.clone(), grants.keyvalue.clone()),
            outbound_http: outbound_http::OutboundHttp::new(
                component.clone(),
                grants.allowed_hosts.clone(),
            ),
            quotas: volumes::quotas(&grants.volumes),
        }
    }
}

/// Adds every `shoal:workload` import to `linker`.
pub fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
    bindings::config::add_to_linker::<_, HasSelf<config::Config>>(linker, |s| &mut s.caps.config)?;
    bindings::secrets::add_to_linker::<_, HasSelf<secrets::Secrets>>(linker, |s| {
        &mut s.caps.secrets
    })?;
    bindings::messaging::add_to_linker::<_, HasSelf<messaging::Messaging>>(linker, |s| {
        &mut s.caps.messaging
    })?;
    bindings::keyvalue::add_to_linker::<_, HasSelf<keyvalue::KeyValue>>(linker, |s| {
        &mut s.caps.keyvalue
    })?;
    volumes::add_to_linker(linker)
}
