//! A loaded component version: compiled, linked once into an `InstancePre`,
//! and invoked in a fresh store and instance every time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_api::{ByteSize, ComponentKind, Digest, Limits};
use tokio::sync::Semaphore;
use wasmtime::component::{Component, InstancePre, Linker};
use wasmtime::{Engine, Store, Trap, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::WasiHttpCtx;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use crate::bindings::{HealthCheckPre, WorkerPre};
use crate::cache::CacheStatus;
use crate::capabilities::{Capabilities, Grants};
use crate::coredumps::{CoreDump, DumpSink, function_name};
use crate::error::{InvokeError, LoadError};
use crate::limiter::MemoryLimiter;
use crate::logs::{GuestOutput, LogBudget, LogSink, Stream};
use crate::metrics::{ComponentMetrics, Outcome};
use crate::state::InvocationState;
use crate::trace::{CallContext, HostCallLog, Span};
use crate::tunables::{MAX_COREDUMP_BYTES, UNMETERED_FUEL};
use shoal_api::top::{DURATION_BUCKETS, ReplicaStats, duration_bucket};

/// How one component is run: its kind (or `None` to tell from its
/// exports), its limits and what it is granted.
#[derive(Clone, Default)]
pub struct ComponentSettings {
    /// The kind the spec declares; `None` tells it from the exports.
    pub kind: Option<ComponentKind>,
    /// Hard limits for every invocation.
    pub limits: Limits,
    /// Capabilities granted.
    pub grants: Grants,
    /// Where its guest's output goes, instead of the runtime's sink (a
    /// replica's log, on a host).
    pub log_sink: Option<Arc<dyn LogSink>>,
    /// Where its invocations are counted and measured, on a host.
    pub metrics: Option<ComponentMetrics>,
    /// Where core dumps of its traps go, when its spec asks for them.
    pub dumps: Option<Arc<dyn DumpSink>>,
}

/// The linked entry point, by kind.
#[derive(Clone)]
pub(crate) enum Entry {
    Worker(WorkerPre<InvocationState>),
    Http(ProxyPre<InvocationState>),
    Job(CommandPre<InvocationState>),
}

/// A component's compiled code and its linking, one per digest on a host:
/// a thousand apps of one component share one copy of its machine code.
pub(crate) struct Compiled {
    /// The kind its exports say it is, if they say.
    pub(crate) detected: Option<ComponentKind>,
    /// Linked against the runtime's linker, or why it could not be.
    pub(crate) pre: Result<InstancePre<InvocationState>, String>,
}

impl Compiled {
    /// Links `component` with `linker`.
    pub(crate) fn new(
        component: &Component,
        engine: &Engine,
        linker: &Linker<InvocationState>,
    ) -> Compiled {
        Compiled {
            detected: detect_kind(component, engine),
            pre: linker
                .instantiate_pre(component)
                .map_err(|e| format!("{e:#}")),
        }
    }
}

/// A component ready to run: compiled once, linked once, instantiated per
/// invocation. Cheap to share behind an `Arc`.
pub struct LoadedComponent {
    name: Arc<str>,
    digest: Digest,
    kind: ComponentKind,
    limits: Limits,
    grants: Grants,
    cache_status: CacheStatus,
    /// The compiled code it runs, shared with every other component of
    /// the same digest on this host. Never read: held, it keeps the code
    /// in the runtime's table for the next component of this digest.
    _compiled: Arc<Compiled>,
    pub(crate) entry: Entry,
    engine: Engine,
    sink: Arc<dyn LogSink>,
    invocations: Arc<AtomicU64>,
    concurrency: Arc<Semaphore>,
    /// The `shoal:workload/health` export, when the component has one.
    pub(crate) health: Option<HealthCheckPre<InvocationState>>,
    /// Invocations in a row that trapped; reset by any that did not.
    trap_streak: AtomicU32,
    /// The last trap, for the reason a restart gives.
    last_trap: std::sync::Mutex<Option<String>>,
    /// Nanoseconds spent in invocations, summed: its derivative is the
    /// average number of invocations in flight (Little's law).
    busy_ns: AtomicU64,
    /// The rate its guest may log at; lines past it are dropped and counted.
    log_budget: LogBudget,
    /// Its invocations' counts and figures, on a host.
    metrics: Option<ComponentMetrics>,
    /// What it has done, for `shoal top` (through heartbeats).
    work: WorkCounters,
    /// Where core dumps of its traps go, if anywhere.
    dumps: Option<Arc<dyn DumpSink>>,
}

/// A component's counters for `shoal top`: they only grow, but the peak
/// memory, which is read and reset each heartbeat.
#[derive(Default)]
struct WorkCounters {
    invocations: AtomicU64,
    errors: AtomicU64,
    fuel: AtomicU64,
    peak_memory: AtomicU64,
    durations: [AtomicU64; DURATION_BUCKETS],
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("name", &self.name)
            .field("digest", &self.digest)
            .field("kind", &self.kind)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What a finished invocation cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Fuel units burned, when fuel is metered.
    pub fuel: Option<u64>,
    /// Wall-clock time from the start of instantiation.
    pub elapsed: Duration,
}

impl LoadedComponent {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn link(
        name: &str,
        what: &str,
        digest: Digest,
        compiled: &Arc<Compiled>,
        cache_status: CacheStatus,
        engine: &Engine,
        sink: Arc<dyn LogSink>,
        settings: ComponentSettings,
        invocations: Arc<AtomicU64>,
    ) -> Result<Self, LoadError> {
        let what = what.to_string();
        let detected = compiled.detected;
        let kind = match (settings.kind, detected) {
            (Some(kind), _) => kind,
            (None, Some(kind)) => kind,
            (None, None) => return Err(LoadError::UnknownWorld { what }),
        };
        let pre: InstancePre<InvocationState> = match &compiled.pre {
            Ok(pre) => pre.clone(),
            Err(reason) => {
                return Err(LoadError::UnsatisfiedImport {
                    what: what.clone(),
                    reason: reason.clone(),
                });
            }
        };
        let wrong_world = |missing: &'static str| LoadError::WrongWorld {
            what: what.clone(),
            kind,
            missing,
            hint: match detected {
                Some(other) if other != kind => {
                    let article = if other == ComponentKind::Http {
                        "an"
                    } else {
                        "a"
                    };
                    format!(" (it looks like {article} {other} component)")
                }
                _ => String::new(),
            },
        };
        let health = HealthCheckPre::new(pre.clone()).ok();
        let entry = match kind {
            ComponentKind::Worker => {
                Entry::Worker(WorkerPre::new(pre).map_err(|_| wrong_world(kind.required_export()))?)
            }
            ComponentKind::Http => {
                Entry::Http(ProxyPre::new(pre).map_err(|_| wrong_world(kind.required_export()))?)
            }
            ComponentKind::Job => {
                Entry::Job(CommandPre::new(pre).map_err(|_| wrong_world(kind.required_export()))?)
            }
        };
        let permits = usize::try_from(settings.limits.concurrency)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        Ok(LoadedComponent {
            name: name.into(),
            digest,
            kind,
            limits: settings.limits,
            grants: settings.grants,
            cache_status,
            _compiled: compiled.clone(),
            entry,
            engine: engine.clone(),
            sink,
            invocations,
            concurrency: Arc::new(Semaphore::new(permits)),
            health,
            trap_streak: AtomicU32::new(0),
            last_trap: std::sync::Mutex::new(None),
            busy_ns: AtomicU64::new(0),
            log_budget: LogBudget::default(),
            metrics: settings.metrics,
            dumps: settings.dumps,
            work: WorkCounters::default(),
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The sha256 of its bytes.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Its kind.
    pub fn kind(&self) -> ComponentKind {
        self.kind
    }

    /// Its limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether it exports `shoal:workload/health`.
    pub fn exports_health(&self) -> bool {
        self.health.is_some()
    }

    /// Nanoseconds spent in invocations since the component was loaded.
    pub fn busy_ns(&self) -> u64 {
        self.busy_ns.load(Ordering::Relaxed)
    }

    /// Counts an invocation that started at `started`, and its outcome
    /// towards the run of traps in a row. `answered_failure` is an answer
    /// that says it failed (an HTTP status of 500 or more): it counts as an
    /// error for `shoal top` and a canary's analysis, though the guest ran
    /// to its end.
    pub(crate) fn note<T>(
        &self,
        started: Instant,
        outcome: &Result<T, InvokeError>,
        answered_failure: bool,
    ) {
        let spent = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy_ns.fetch_add(spent, Ordering::Relaxed);
        self.work.invocations.fetch_add(1, Ordering::Relaxed);
        if outcome.is_err() || answered_failure {
            self.work.errors.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(bucket) = self.work.durations.get(duration_bucket(started.elapsed())) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(metrics) = &self.metrics {
            metrics.ended(Outcome::of(outcome), started.elapsed().as_secs_f64());
        }
        match outcome {
            Err(err) if err.is_trap() => {
                self.trap_streak.fetch_add(1, Ordering::Relaxed);
                let trap = err.to_string();
                self.sink.line(crate::logs::LogLine {
                    component: self.name.clone(),
                    invocation: 0,
                    stream: Stream::Lifecycle,
                    text: format!("trapped: {trap}"),
                });
                *self.last_trap.lock().unwrap_or_else(|p| p.into_inner()) = Some(trap);
            }
            // Read before writing: most calls find it at zero already, and
            // a read leaves the cache line shared between cores.
            _ => {
                if self.trap_streak.load(Ordering::Relaxed) != 0 {
                    self.trap_streak.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// What it has done since it was loaded; the peak memory since the
    /// previous call.
    pub fn work(&self) -> ReplicaStats {
        ReplicaStats {
            invocations: self.work.invocations.load(Ordering::Relaxed),
            errors: self.work.errors.load(Ordering::Relaxed),
            fuel: self.work.fuel.load(Ordering::Relaxed),
            peak_memory: self.work.peak_memory.swap(0, Ordering::Relaxed),
            durations: self
                .work
                .durations
                .iter()
                .map(|d| d.load(Ordering::Relaxed))
                .collect(),
        }
    }

    /// An invocation begins (for the in-flight gauge; [`Self::note`] ends it).
    pub(crate) fn begin(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.started();
        }
    }

    /// Invocations in a row that trapped, and the last trap.
    pub fn trap_streak(&self) -> (u32, Option<String>) {
        let streak = self.trap_streak.load(Ordering::Relaxed);
        let last = self
            .last_trap
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (streak, last)
    }

    /// Whether it came from the precompile cache or was compiled.
    pub fn cache_status(&self) -> CacheStatus {
        self.cache_status
    }

    /// Waits for a concurrency slot; invocations beyond `limits.concurrency`
    /// queue here.
    pub(crate) async fn permit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, InvokeError> {
        self.concurrency
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| InvokeError::Instantiate("the component is shutting down".into()))
    }

    /// Guest log lines dropped so far for going past the log budget.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_budget.dropped()
    }

    /// The context of one invocation's host calls, in span `span`,
    /// recorded into `log` when given.
    pub(crate) fn call_context(&self, span: &Span, log: Option<HostCallLog>) -> Arc<CallContext> {
        CallContext::new(self.name.clone(), span.context(), log)
    }

    /// A fresh store for one invocation, with its limits armed.
    /// Its host calls are made in `call`.
    pub(crate) fn new_store(
        &self,
        call: &Arc<CallContext>,
    ) -> Result<(Store<InvocationState>, Instant), InvokeError> {
        let invocation = self.invocations.fetch_add(1, Ordering::Relaxed);
        let mut wasi = WasiCtx::builder();
        wasi.args(&[self.name.as_ref()])
            .stdout(GuestOutput::with_budget(
                self.sink.clone(),
                self.name.clone(),
                invocation,
                Stream::Stdout,
                self.log_budget.clone(),
            ))
            .stderr(GuestOutput::with_budget(
                self.sink.clone(),
                self.name.clone(),
                invocation,
                Stream::Stderr,
                self.log_budget.clone(),
            ));
        self.grants.prepare_wasi(&mut wasi).map_err(|e| {
            InvokeError::Instantiate(format!("cannot set up the guest's WASI context: {e:#}"))
        })?;
        let state = InvocationState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: wasmtime::component::ResourceTable::new(),
            limiter: MemoryLimiter::new(self.limits.memory.as_u64()),
            caps: Capabilities::bind(call, &self.grants),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let fuel = self.limits.fuel.units().unwrap_or(UNMETERED_FUEL);
        // Setting fuel only fails on an engine without fuel metering, and
        // ours always meters.
        let _ = store.set_fuel(fuel);
        let started = Instant::now();
        let deadline = started + self.limits.timeout.get();
        store.set_epoch_deadline(1);
        // Once per epoch tick: stop at the deadline, otherwise let other
        // tasks on this thread run. A guest that never calls the host can
        // hold a worker thread for one tick at most.
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        Ok((store, started))
    }

    /// Turns a failed call into what happened, in the user's terms.
    pub(crate) fn classify(
        &self,
        err: &wasmtime::Error,
        store: &Store<InvocationState>,
    ) -> InvokeError {
        if let Some(asked) = store.data().limiter.denied() {
            return InvokeError::MemoryLimit {
                limit: self.limits.memory,
                asked: ByteSize::bytes(asked as u64),
            };
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => InvokeError::FuelExhausted {
                budget: self.limits.fuel.units().unwrap_or(UNMETERED_FUEL),
            },
            Some(Trap::Interrupt) => InvokeError::Deadline {
                timeout: self.limits.timeout.get(),
            },
            _ => InvokeError::Trap {
                message: trap_message(err),
            },
        }
    }

    /// Keeps the core dump attached to `err`, when this component keeps
    /// dumps and has some of its allowance left. Call it before the
    /// trapped store is dropped: the dump reads the guest's memory there.
    pub(crate) fn dump(&self, err: &wasmtime::Error, store: &mut Store<InvocationState>) {
        let Some(sink) = &self.dumps else {
            return;
        };
        let Some(core) = err.downcast_ref::<wasmtime::WasmCoreDump>() else {
            return;
        };
        if !sink.reserve() {
            return;
        }
        let bytes = core.serialize(&mut *store, &self.name);
        if bytes.len() > MAX_COREDUMP_BYTES {
            tracing::warn!(
                component = %self.name,
                bytes = bytes.len(),
                "a core dump over {MAX_COREDUMP_BYTES} bytes was not kept"
            );
            return;
        }
        sink.keep(CoreDump {
            bytes,
            trap: err.root_cause().to_string(),
            function: core.frames().first().map(function_name).unwrap_or_default(),
            at_ms: shoal_api::wire::now_ms(),
        });
    }

    /// The deadline as an error, for a guest stuck outside Wasm code.
    pub(crate) fn deadline(&self) -> InvokeError {
        InvokeError::Deadline {
            timeout: self.limits.timeout.get(),
        }
    }

    /// Fuel burned so far in `store`.
    pub(crate) fn usage(&self, store: &Store<InvocationState>, started: Instant) -> Usage {
        let fuel = self.limits.fuel.units().and_then(|budget| {
            store
                .get_fuel()
                .ok()
                .map(|left| budget.saturating_sub(left))
        });
        let peak = store.data().limiter.peak() as u64;
        self.work
            .fuel
            .fetch_add(fuel.unwrap_or(0), Ordering::Relaxed);
        self.work.peak_memory.fetch_max(peak, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.used(fuel, peak);
        }
        Usage {
            fuel,
            elapsed: started.elapsed(),
        }
    }

    pub(crate) fn wrong_kind(&self, wanted: &'static str) -> InvokeError {
        InvokeError::WrongKind {
            component: self.name.to_string(),
            kind: self.kind,
            wanted,
        }
    }
}

/// The trap and the top of the guest's backtrace, on one line.
pub(crate) fn trap_message(err: &wasmtime::Error) -> String {
    let mut message = err.root_cause().to_string();
    if let Some(trace) = err.downcast_ref::<wasmtime::WasmBacktrace>() {
        let frames: Vec<String> = trace.frames().iter().take(3).map(function_name).collect();
        if !frames.is_empty() {
            message.push_str(&format!(" (in {})", frames.join(" <- ")));
        }
    }
    message
}

/// Tells a component's kind from its exports.
fn detect_kind(component: &Component, engine: &Engine) -> Option<ComponentKind> {
    let ty = component.component_type();
    ComponentKind::from_exports(ty.exports(engine).map(|(name, _)| name))
}

/// Why `bytes` failed to compile, told in the user's terms.
pub(crate) fn invalid(what: &str, err: &wasmtime::Error) -> LoadError {
    LoadError::Invalid {
        what: what.to_string(),
        reason: format!("{:#}", err).replace('\n', " "),
    }
}

/// Checks the binary header before handing the bytes to wasmtime, so the
/// common mistakes get a precise message.
pub(crate) fn check_header(what: &str, bytes: &[u8]) -> Result<(), LoadError> {
    const MAGIC: &[u8] = b"\0asm";
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        if bytes.starts_with(MAGIC) {
            return Err(LoadError::Invalid {
                what: what.to_string(),
                reason: format!("the file is truncated ({} bytes)", bytes.len()),
            });
        }
        return Err(LoadError::NotWasm {
            what: what.to_string(),
        });
    }
    // Bytes 4..8: version 1 with layer 0 is a core module; a component has layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(LoadError::CoreModule {
            what: what.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        assert!(matches!(
            check_header("x", b"hello world"),
            Err(LoadError::NotWasm { .. })
        ));
        assert!(matches!(
            check_header("x", b"\0asm"),
            Err(LoadError::Invalid { .. })
        ));
        assert!(matches!(
            check_header("x", b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule { .. })
        ));
        assert!(check_header("x", b"\0asm\x0d\0\x01\0").is_ok());
    }
}
