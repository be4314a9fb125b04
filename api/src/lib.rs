//! `shoal-api`: the vocabulary every Shoal process shares. Types only, no I/O.
//!
//! This crate is the floor of the workspace: the host and the scheduler
//! both build on it and never on each other.
//!
//! Key types:
//! - [`AppSpec`], parsed from TOML by [`AppSpec::from_toml`]: an app and its
//!   [`ComponentSpec`]s, with [`Limits`], volumes, placement, scaling,
//!   health checks ([`HealthSpec`]), [`RestartPolicy`] and [`RolloutSpec`].
//! - [`SpecError`]: every problem found in a spec, each a [`Diagnostic`]
//!   with file, line, column and key.
//! - [`Digest`]: the sha256 that names a component version.
//! - [`wire`]: messages between hosts and the scheduler over NATS
//!   ([`wire::Heartbeat`], [`wire::HostCommand`]); [`subjects`]: every NATS
//!   subject and JetStream name, spelled once.
//! - [`resources`]: what the scheduler's HTTP API takes and returns.
//! - [`Name`], [`ByteSize`], [`DurationSpec`], [`Fuel`]: values that refuse
//!   bad input while parsing, so the rest of Shoal never sees it;
//!   [`bounds`]: the largest value every number in a spec may take.
//! - [`identity`]: who connects to NATS ([`identity::Identity`]) and what
//!   nats-server lets each one publish and subscribe to.
//! - [`SealedSecret`], [`SealingKey`]: secret values sealed to the one host
//!   that runs them; [`SecretValue`]: a value in memory, never printed.
//! - [`logs`]: replica log lines as hosts publish them ([`logs::LogBatch`])
//!   and as the API streams them ([`logs::LogEntry`]).
//! - [`top`]: what replicas did ([`top::ReplicaStats`], in heartbeats) and
//!   the rates `shoal top` shows ([`top::TopRow`]).
//! - [`dumps`]: core dumps of trapping invocations, as hosts store them
//!   ([`dumps::DumpId`]) and `shoal debug dumps` lists them
//!   ([`dumps::DumpInfo`]).
//! - [`trace`]: the W3C trace context carried by every request
//!   ([`trace::TraceParent`]) and the host calls `shoal invoke --trace`
//!   shows ([`trace::HostCall`]).
//! - [`access`]: who may do what through the API: [`access::Verb`]s on
//!   [`access::Resource`]s, granted by [`access::Roles`] bound per namespace
//!   to a [`access::Principal`]; [`token`]: the bearer tokens that name one.
//! - [`check_user_subject`]: what a spec or a guest may name as a subject
//!   (relative to its namespace; Shoal's, JetStream's and inboxes refused).

pub mod access;
pub mod base64_serde;
pub mod beats;
pub mod bounds;
mod diagnostics;
mod digest;
pub mod dumps;
pub mod identity;
pub mod logs;
mod name;
pub mod quantity;
pub mod resources;
mod schema;
mod sealed;
mod secret;
mod spec;
pub mod subjects;
pub mod token;
pub mod top;
pub mod trace;
pub mod wire;

pub use diagnostics::{Diagnostic, SpecError};
pub use digest::Digest;
pub use name::{Name, NameError};
pub use quantity::{ByteSize, DurationSpec, Fuel, QuantityError, Share};
pub use sealed::{SealError, SealedSecret, SealingKey};
pub use secret::SecretValue;
pub use spec::{
    Analysis, AppSpec, Autoscale, ComponentKind, ComponentSpec, DEFAULT_NAMESPACE, DebugSpec,
    HealthSpec, KeyValueGrant, Limits, MAX_MEMORY, MAX_REPLICAS, MIN_MEMORY, MessagingGrant,
    Placement, PodSpec, RestartPolicy, RolloutSpec, RolloutStrategy, VolumeMount, VolumeScope,
    VolumeSpec, exports, subject_matches,
};
pub use spec::{SubjectError, check_user_subject};
