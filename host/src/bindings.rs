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

pub use health_check::HealthCheckPre;
pub use health_check::exports::shoal::workload::health;
pub use worker::exports::shoal::workload::handler;
pub use worker::shoal::workload::{config, keyvalue, messaging, secrets, types};
pub use worker::{Worker, WorkerPre};

/// The export names Shoal looks for to tell a component's kind.
pub use shoal_api::exports;
