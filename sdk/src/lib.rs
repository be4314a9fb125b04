//! `shoal-sdk`: write Shoal workloads as ordinary Rust.
//!
//! A workload is a WebAssembly component that Shoal schedules, scales and
//! sandboxes. With this SDK you implement one trait on a type of yours and
//! export it with one macro; Shoal does the rest.
//!
//! - [`Worker`] + [`export_worker!`]: handle messages (from `shoal invoke`,
//!   a subject or a work queue) and reply.
//! - [`http::Handler`] + [`export_http!`]: serve HTTP requests.
//! - [`Health`] + [`export_health!`]: answer liveness and readiness checks.
//! - [`trace`]: the W3C trace the request or message belongs to; Shoal
//!   carries it through outbound HTTP and messaging by itself.
//! - [`secrets`], [`config`], [`messaging`], [`keyvalue`]: the capabilities a
//!   workload may ask for. Each is denied unless the app spec grants it, and
//!   a denial comes back as an error value, never a trap.
//!
//! A job is a plain `fn main()` binary: nothing from the SDK is needed to run
//! to completion, though the capabilities are there to use.
//!
//! Besides the `env` its spec sets, every workload sees `SHOAL_REPLICA`
//! (`namespace/app/pod-index`, like a pod's hostname) and `SHOAL_HOST` (the
//! host running it) through `std::env`.
//!
//! # Example: a worker
//!
//! ```ignore
//! use shoal_sdk::{HandlerError, Message, Reply, Worker};
//!
//! struct Echo;
//!
//! impl Worker for Echo {
//!     fn handle(msg: Message) -> Result<Reply, HandlerError> {
//!         if msg.payload.is_empty() {
//!             return Err(HandlerError::InvalidInput("send something to echo".into()));
//!         }
//!         Ok(Reply::new(msg.payload))
//!     }
//! }
//!
//! shoal_sdk::export_worker!(Echo);
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` and run it with
//! `shoal run echo.wasm --invoke hello`.
//!
//! # Example: an HTTP component
//!
//! ```ignore
//! use shoal_sdk::http::{Handler, Request, Response};
//!
//! struct Hello;
//!
//! impl Handler for Hello {
//!     fn handle(req: Request) -> Response {
//!         Response::text(200, format!("hello from {}\n", req.path))
//!     }
//! }
//!
//! shoal_sdk::export_http!(Hello);
//! ```

pub mod config;
mod health;
pub mod http;
pub mod keyvalue;
pub mod messaging;
pub mod secrets;
pub mod trace;
mod worker;

pub use health::Health;
pub use worker::{HandlerError, Headers, Message, Reply, Worker};

/// Bindings generated from `wit/`, the one copy of Shoal's interfaces.
///
/// Public so that the export macros, expanded in a workload's crate, can
/// reuse these types; workloads use the typed wrappers instead.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "shoal:workload/platform",
        runtime_path: "::shoal_sdk::__wit_bindgen::rt",
        generate_unused_types: true,
    });
}

// What the export macros need in the workload's crate, which depends on this
// SDK alone.
#[doc(hidden)]
pub use shoal_sdk_macros::export_bindings as __export_bindings;
#[doc(hidden)]
pub use wasip2 as __wasip2;
#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

// `runtime_path` above names the SDK by its crate name; make that name
// resolve inside the SDK too.
extern crate self as shoal_sdk;
