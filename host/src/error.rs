//! The host's error types: what went wrong loading a component, and how an
//! invocation ended when it did not return a reply.

use std::path::PathBuf;
use std::time::Duration;

use shoal_api::{ByteSize, ComponentKind};

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not WebAssembly at all.
    #[error(
        "{what} is not a WebAssembly file (it does not start with \\0asm): give the path of a .wasm component"
    )]
    NotWasm {
        /// What was loaded.
        what: String,
    },
    /// A core module was given where a component is expected.
    #[error(
        "{what} is a core WebAssembly module, not a component: build it for wasm32-wasip2 (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule {
        /// What was loaded.
        what: String,
    },
    /// The component is malformed (truncated, corrupt or using unsupported features).
    #[error("{what} is not a valid component: {reason}")]
    Invalid {
        /// What was loaded.
        what: String,
        /// What the validator or compiler said.
        reason: String,
    },
    /// The component does not export what its kind needs.
    #[error("{what} does not target the {kind} world: it lacks the export {missing}{hint}")]
    WrongWorld {
        /// What was loaded.
        what: String,
        /// The kind it was loaded as.
        kind: ComponentKind,
        /// The export it lacks.
        missing: &'static str,
        /// What it looks like instead, if it can be told.
        hint: String,
    },
    /// The component exports none of the worlds Shoal runs.
    #[error(
        "{what} exports none of wasi:http/incoming-handler (http), shoal:workload/handler (worker) or wasi:cli/run (job): Shoal cannot tell how to run it"
    )]
    UnknownWorld {
        /// What was loaded.
        what: String,
    },
    /// The component imports something Shoal does not provide.
    #[error("{what} needs an import Shoal does not provide: {reason}")]
    UnsatisfiedImport {
        /// What was loaded.
        what: String,
        /// The linker's explanation, naming the import.
        reason: String,
    },
    /// The precompile cache could not be used; the component was not loaded.
    #[error("precompile cache at {dir}: {reason}")]
    Cache {
        /// The cache directory.
        dir: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// How an invocation failed. Each of these fails that invocation only: the
/// host and its other invocations go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvokeError {
    /// The guest used its whole fuel budget.
    #[error(
        "the guest ran out of fuel (budget {budget} units): raise limits.fuel or do less work per call"
    )]
    FuelExhausted {
        /// The budget it had.
        budget: u64,
    },
    /// The guest tried to grow its memory past the cap.
    #[error(
        "the guest hit its memory limit of {limit} (it asked for {asked}): raise limits.memory or use less"
    )]
    MemoryLimit {
        /// The cap.
        limit: ByteSize,
        /// What it asked to grow to.
        asked: ByteSize,
    },
    /// The guest ran past its wall-clock deadline.
    #[error("the guest ran past its deadline of {}ms: raise limits.timeout or answer sooner", timeout.as_millis())]
    Deadline {
        /// The deadline.
        timeout: Duration,
    },
    /// The guest trapped (a panic, an `unreachable`, a bad memory access…).
    #[error("the guest trapped: {message}")]
    Trap {
        /// The trap and the guest's backtrace, when there is one.
        message: String,
    },
    /// The handler ran and returned an error of its own.
    #[error("the handler refused the message as invalid input: {0}")]
    InvalidInput(String),
    /// The handler ran and reported a failure.
    #[error("the handler failed: {0}")]
    HandlerFailed(String),
    /// A job exited with a failure status.
    #[error("the job exited with status {code}")]
    Exit {
        /// The exit status.
        code: i32,
    },
    /// The component could not be instantiated for this invocation.
    #[error("could not start an instance: {0}")]
    Instantiate(String),
    /// The invocation was asked of a component of another kind.
    #[error("{component} is a {kind} component; {wanted}")]
    WrongKind {
        /// The component.
        component: String,
        /// Its kind.
        kind: ComponentKind,
        /// What was asked of it.
        wanted: &'static str,
    },
}

impl InvokeError {
    /// Whether the guest was stopped by a fault or a limit, rather than
    /// answering: what a run of failures that restarts a replica counts.
    pub fn is_trap(&self) -> bool {
        matches!(
            self,
            InvokeError::FuelExhausted { .. }
                | InvokeError::MemoryLimit { .. }
                | InvokeError::Deadline { .. }
                | InvokeError::Trap { .. }
        )
    }

    /// A short, stable label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            InvokeError::FuelExhausted { .. } => "fuel_exhausted",
            InvokeError::MemoryLimit { .. } => "memory_limit",
            InvokeError::Deadline { .. } => "deadline",
            InvokeError::Trap { .. } => "trap",
            InvokeError::InvalidInput(_) => "invalid_input",
            InvokeError::HandlerFailed(_) => "handler_failed",
            InvokeError::Exit { .. } => "exit",
            InvokeError::Instantiate(_) => "instantiate",
            InvokeError::WrongKind { .. } => "wrong_kind",
        }
    }
}

/// Why a runtime could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration (for example, not enough
    /// virtual address space for the instance pool).
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
    /// The epoch thread could not be started.
    #[error("cannot start the epoch timer thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The precompile cache could not be opened.
    #[error(transparent)]
    Cache(#[from] LoadError),
}
