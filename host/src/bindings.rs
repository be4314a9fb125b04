//! Host bindings generated from `wit/`, the one copy of Shoal's interfaces.
//! Every other module imports WIT types from here.

#[allow(missing_docs)]
mod worker {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "shoal:workload/worker",
        imports: { default: async },
        exports: { default: async },
    });
}

#[allow(missing_docs)]
mod health_check {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "shoal:workload/health-check",
        exports: { default: async },
    });
}

pub use health_check::exports::shoal::workload::health;
pub use worker::exports::shoal::workload::handler;
pub use worker::shoal::workload::{config, keyvalue, messaging, secrets, types};
pub use worker::{Worker, WorkerPre};

/// The export names Shoal looks for to tell a component's kind.
pub mod exports {
    /// Exported by `worker` components.
    pub const HANDLER: &str = "shoal:workload/handler@0.1.0";
    /// Optionally exported by any component.
    pub const HEALTH: &str = "shoal:workload/health@0.1.0";
    /// Exported by `http` components.
    pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2.12";
    /// Exported by `job` components.
    pub const CLI_RUN: &str = "wasi:cli/run@0.2.12";
}
