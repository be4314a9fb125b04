//! `shoal-host`: runs WebAssembly components under hard limits.
//!
//! One [`Runtime`] per host holds one wasmtime engine (pooling allocator,
//! copy-on-write memory images, fuel metering, epoch deadlines), the linker
//! with every import Shoal provides, and the on-disk [`PrecompileCache`].
//! [`Runtime::load`] turns component bytes into a [`LoadedComponent`]:
//! compiled once (or read from the cache), linked once for its kind. Each
//! invocation then gets a fresh store and instance with its own fuel budget,
//! deadline and memory cap; a trap fails that invocation only
//! ([`InvokeError`] says which limit or fault), and the host goes on.
//!
//! Key types:
//! - [`Runtime`], [`RuntimeOptions`]: the engine, linker and cache.
//! - [`LoadedComponent`]: [`invoke`](LoadedComponent::invoke) a worker,
//!   [`handle_http`](LoadedComponent::handle_http) a request,
//!   [`run_job`](LoadedComponent::run_job) a job.
//! - [`LoadError`], [`InvokeError`]: what went wrong, in the user's terms.
//! - [`logs`]: guest stdout/stderr captured line by line, tagged with
//!   component and invocation, delivered to a [`LogSink`].
//! - [`capabilities`]: what a component may touch, denied unless granted:
//!   one [`capabilities::Capability`] per module, gathered in a
//!   [`capabilities::Registry`] per host.
//! - [`layout::DataLayout`]: where a host keeps its data; [`keyfile`]: its
//!   private keys (the sealing key that opens its secrets).
//! - [`http`]: serving http components behind one listener; [`ingress`]:
//!   the host's routing table.
//! - [`coredumps`]: Wasm core dumps of trapping invocations, kept for
//!   components that ask, at most N per replica.
//! - [`trace`]: the W3C trace context every request carries, spans
//!   exported by OTLP when configured, and the host calls of an invocation
//!   recorded for `shoal invoke --trace`.
//! - [`agent::HostAgent`]: the host's side of the cluster protocol over
//!   NATS: heartbeats, start/stop commands, invocations. Each replica has a
//!   supervisor that serves it behind its readiness, runs its [`health`]
//!   checks and restarts it under its restart policy with back-off.

pub mod agent;
pub mod bindings;
pub mod cache;
pub mod capabilities;
mod component;
pub mod coredumps;
mod engine;
mod error;
mod forward;
pub mod health;
pub mod http;
pub mod ingress;
mod invoke;
pub mod keyfile;
pub mod layout;
mod limiter;
pub mod log_shipper;
pub mod logs;
pub mod metrics;
mod queue;
mod runtime;
mod serving;
pub mod shadow;
mod state;
mod supervisor;
pub mod trace;
pub mod tunables;

pub use bindings::types::{HandlerError, Message, Reply};
pub use cache::{CacheStatus, PrecompileCache};
pub use component::{ComponentSettings, LoadedComponent, Usage};
pub use engine::{ClusterCompiler, EpochTicker, build_engine};
pub use error::{InvokeError, LoadError, RuntimeError};
pub use invoke::{HttpResponse, text_response};
pub use logs::{LogLine, LogSink, MemorySink, Stream, TracingSink};
pub use runtime::{Runtime, RuntimeOptions};
pub use state::InvocationState;
