//! Capabilities: what a component may touch outside itself.
//!
//! Each capability is one module implementing [`Capability`], the seam
//! Spin calls a factor and wasmCloud a host plugin. A capability
//! - works out what one component is granted from its spec when the
//!   component is loaded ([`Capability::grant`], on a blocking thread, so
//!   it may touch the filesystem);
//! - adds its imports to the linker, once per host
//!   ([`Capability::add_to_linker`]);
//! - binds the grant into each invocation's store ([`Capability::bind`],
//!   and [`Capability::prepare_wasi`] for what lives in the WASI context);
//! - cleans up what a deleted app left on the host ([`Capability::forget`])
//!   and what a stopped replica left ([`Capability::release`]).
//!
//! Everything is denied unless the app spec grants it; a denial is an
//! error value the guest sees, never a trap. The runtime and the host
//! agent know capabilities only through this module: [`Registry`] (one per
//! host), [`Grants`] (one per loaded component) and [`Capabilities`] (one
//! per invocation).
//!
//! # Adding a capability
//!
//! 1. Its WIT interface in `wit/` (imported by the worlds that may use
//!    it): the host's bindings and the SDK are both generated from there.
//! 2. Its SDK module in `sdk/src/`.
//! 3. Its field in `ComponentSpec` (`api/src/spec.rs`), with its checks and
//!    bounds.
//! 4. One module here implementing [`Capability`], and one line in the
//!    `capabilities!` list below.

pub mod config;
pub mod environment;
pub mod keyvalue;
pub mod messaging;
pub mod outbound_http;
pub mod secrets;
pub mod volumes;

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_api::wire::{HostId, ReplicaId};
use shoal_api::{ComponentSpec, Name, SealedSecret, SealingKey, VolumeSpec};
use wasmtime::component::Linker;
use wasmtime_wasi::WasiCtxBuilder;

use crate::layout::DataLayout;
use crate::state::InvocationState;
use crate::trace::CallContext;

/// What a host offers its capabilities: its NATS connection, where its data
/// lives, its sealing key. `None` under `shoal run`, outside a cluster.
#[derive(Clone)]
pub struct HostContext {
    /// The host.
    pub id: HostId,
    /// The NATS connection guests' messages and buckets go through.
    pub nats: async_nats::Client,
    /// Where the host keeps its data.
    pub layout: DataLayout,
    /// The key secrets for this host are sealed to.
    pub sealing_key: Arc<SealingKey>,
}

/// Everything a capability may look at to grant itself to one component.
pub struct GrantContext<'a> {
    /// The component's name in its app.
    pub component: &'a str,
    /// Its spec: what it asks for.
    pub spec: &'a ComponentSpec,
    /// Its replica, when it runs in a cluster.
    pub replica: Option<&'a ReplicaId>,
    /// The app's volumes.
    pub volumes: &'a BTreeMap<Name, VolumeSpec>,
    /// The values of its secrets, sealed to this host.
    pub secrets: &'a BTreeMap<Name, SealedSecret>,
}

/// A deleted app, for [`Capability::forget`].
pub struct ForgetContext<'a> {
    /// Its namespace.
    pub namespace: &'a Name,
    /// The app.
    pub app: &'a Name,
    /// Volumes whose spec says `retain = true`.
    pub retain: &'a [Name],
}

/// Why a capability could not be granted or cleaned up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{capability} failed for {component}: {reason}")]
pub struct CapabilityError {
    /// The capability (`volumes`, `secrets`, …).
    pub capability: &'static str,
    /// The component, or the app being forgotten.
    pub component: String,
    /// Why, and what to do.
    pub reason: String,
}

/// One capability a component may be granted.
pub trait Capability: Send + Sync + Sized + 'static {
    /// Its name in messages.
    const NAME: &'static str;
    /// What one component is granted, fixed when it is loaded.
    type Grant: Clone + Default + Send + Sync + 'static;
    /// What one invocation holds in its store.
    type Provider: Send + 'static;

    /// The capability on a host (`None` outside a cluster), with whatever
    /// it keeps host-wide.
    fn new(host: Option<&HostContext>) -> Self;

    /// Works out what `ctx`'s component is granted on this host. Runs on a
    /// blocking thread.
    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String>;

    /// Adds its imports to the linker.
    fn add_to_linker(_linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        Ok(())
    }

    /// The provider of one invocation, made in `call`.
    fn bind(call: &Arc<CallContext>, grant: &Self::Grant) -> Self::Provider;

    /// Puts what lives in the WASI context (environment, preopened
    /// directories) into one invocation's.
    fn prepare_wasi(_grant: &Self::Grant, _wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
        Ok(())
    }

    /// Removes what a deleted app left on this host. Runs on a blocking
    /// thread.
    fn forget(&self, _app: &ForgetContext<'_>) -> Result<(), String> {
        Ok(())
    }

    /// The last copy of `replica` stopped on this host: release what it
    /// alone held. Runs on a blocking thread.
    fn release(&self, _replica: &ReplicaId) -> Result<(), String> {
        Ok(())
    }
}

/// Defines [`Registry`], [`Grants`] and [`Capabilities`] from one list, so
/// that a capability is registered in one place.
macro_rules! capabilities {
    ($($(#[$doc:meta])* $field:ident: $cap:ty),* $(,)?) => {
        /// Every capability of one host, each with what it keeps host-wide.
        pub struct Registry {
            $($(#[$doc])* pub $field: $cap,)*
        }

        /// What one component is granted, fixed when it is loaded and
        /// shared by all its invocations.
        #[derive(Clone, Default)]
        pub struct Grants {
            $($(#[$doc])* pub $field: <$cap as Capability>::Grant,)*
        }

        /// The capability providers of one invocation.
        // A capability that lives only in the WASI context (`env`) keeps a
        // `()` here, never read.
        #[allow(dead_code)]
        pub struct Capabilities {
            $(pub(crate) $field: <$cap as Capability>::Provider,)*
        }

        impl Registry {
            /// Every capability, on `host` (`None` outside a cluster).
            pub fn new(host: Option<&HostContext>) -> Self {
                Registry { $($field: <$cap as Capability>::new(host),)* }
            }

            /// What `ctx`'s component is granted. Call it on a blocking
            /// thread: capabilities may touch the filesystem.
            pub fn grant(&self, ctx: &GrantContext<'_>) -> Result<Grants, CapabilityError> {
                Ok(Grants {
                    $($field: self.$field.grant(ctx).map_err(|reason| CapabilityError {
                        capability: <$cap as Capability>::NAME,
                        component: ctx.component.to_string(),
                        reason,
                    })?,)*
                })
            }

            /// Removes what a deleted app left on this host. Call it on a
            /// blocking thread.
            pub fn forget(&self, app: &ForgetContext<'_>) -> Result<(), CapabilityError> {
                $(self.$field.forget(app).map_err(|reason| CapabilityError {
                    capability: <$cap as Capability>::NAME,
                    component: format!("{}/{}", app.namespace, app.app),
                    reason,
                })?;)*
                Ok(())
            }

            /// Releases what the last copy of `replica` held on this host.
            /// Call it on a blocking thread.
            pub fn release(&self, replica: &ReplicaId) -> Result<(), CapabilityError> {
                $(self.$field.release(replica).map_err(|reason| CapabilityError {
                    capability: <$cap as Capability>::NAME,
                    component: replica.to_string(),
                    reason,
                })?;)*
                Ok(())
            }
        }

        impl Grants {
            /// Puts every grant that lives in the WASI context into one
            /// invocation's.
            pub(crate) fn prepare_wasi(&self, wasi: &mut WasiCtxBuilder) -> wasmtime::Result<()> {
                $(<$cap as Capability>::prepare_wasi(&self.$field, wasi)?;)*
                Ok(())
            }
        }

        impl Capabilities {
            /// Binds `grants` for one invocation, made in `call`.
            pub fn bind(call: &Arc<CallContext>, grants: &Grants) -> Self {
                Capabilities {
                    $($field: <$cap as Capability>::bind(call, &grants.$field),)*
                }
            }
        }

        /// Adds every capability's imports to `linker`.
        pub fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
            $(<$cap as Capability>::add_to_linker(linker)?;)*
            Ok(())
        }
    };
}

capabilities! {
    /// Environment variables (`wasi:cli/environment`).
    env: environment::Environment,
    /// `config` values (`shoal:workload/config`).
    config: config::ConfigCapability,
    /// Secrets (`shoal:workload/secrets`).
    secrets: secrets::SecretsCapability,
    /// Publishing and calls between components (`shoal:workload/messaging`).
    messaging: messaging::MessagingCapability,
    /// The app's key-value bucket (`shoal:workload/keyvalue`).
    keyvalue: keyvalue::KeyValueCapability,
    /// Outbound HTTP (`wasi:http/outgoing-handler`).
    outbound_http: outbound_http::OutboundHttpCapability,
    /// Volumes (preopened directories under `wasi:filesystem`).
    volumes: volumes::VolumesCapability,
}
