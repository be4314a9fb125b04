//! The runtime: one engine, one linker, the precompile cache, and the
//! components loaded into them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use shoal_api::Digest;
use wasmtime::Engine;
use wasmtime::component::Linker;

use crate::cache::CacheStatus;
use crate::cache::PrecompileCache;
use crate::component::{Compiled, ComponentSettings, LoadedComponent, check_header};
use crate::engine::{EpochTicker, build_engine};
use crate::error::{LoadError, RuntimeError};
use crate::logs::{LogSink, TracingSink};
use crate::state::InvocationState;

/// How to set up a [`Runtime`].
#[derive(Clone)]
pub struct RuntimeOptions {
    /// Where precompiled components are kept.
    pub cache_dir: PathBuf,
    /// Where guest stdout/stderr lines go.
    pub log_sink: Arc<dyn LogSink>,
}

impl RuntimeOptions {
    /// Options with the cache at `cache_dir` and guest logs sent to `tracing`.
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        RuntimeOptions {
            cache_dir: cache_dir.into(),
            log_sink: Arc::new(TracingSink),
        }
    }

    /// Sends guest log lines to `sink`.
    pub fn log_sink(mut self, sink: Arc<dyn LogSink>) -> Self {
        self.log_sink = sink;
        self
    }
}

/// Runs components in wasmtime with hard limits. One per host.
pub struct Runtime {
    engine: Engine,
    linker: Linker<InvocationState>,
    cache: PrecompileCache,
    /// The compiled code of every digest a loaded component runs.
    compiled: Mutex<HashMap<Digest, Arc<Compiled>>>,
    sink: Arc<dyn LogSink>,
    invocations: Arc<AtomicU64>,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Builds the engine, the linker with every import Shoal provides, and
    /// opens the precompile cache.
    pub fn new(options: RuntimeOptions) -> Result<Self, RuntimeError> {
        let engine = build_engine().map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        let link = |linker: &mut Linker<InvocationState>| -> wasmtime::Result<()> {
            wasmtime_wasi::p2::add_to_linker_async(linker)?;
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
            crate::capabilities::add_to_linker(linker)
        };
        link(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        let cache = PrecompileCache::open(options.cache_dir, &engine)?;
        let ticker = EpochTicker::start(&engine).map_err(RuntimeError::Thread)?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            compiled: Mutex::default(),
            sink: options.log_sink,
            invocations: Arc::new(AtomicU64::new(0)),
            _ticker: ticker,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The precompile cache.
    pub fn cache(&self) -> &PrecompileCache {
        &self.cache
    }

    /// Loads a component from its bytes: checks them, compiles them (or takes
    /// them from the cache) and links them for `settings.kind`.
    ///
    /// Compiling is CPU-bound and can take a while for a large component:
    /// from async code, call this in `spawn_blocking`.
    pub fn load(
        &self,
        name: &str,
        bytes: &[u8],
        settings: ComponentSettings,
    ) -> Result<Arc<LoadedComponent>, LoadError> {
        self.load_described(name, name, bytes, settings)
    }

    /// [`Runtime::load`], with `what` naming the source in errors.
    fn load_described(
        &self,
        name: &str,
        what: &str,
        bytes: &[u8],
        settings: ComponentSettings,
    ) -> Result<Arc<LoadedComponent>, LoadError> {
        check_header(what, bytes)?;
        let digest = Digest::of(bytes);
        let (compiled, status) = self.compiled(&digest, bytes, what)?;
        let loaded = LoadedComponent::link(
            name,
            what,
            digest,
            &compiled,
            status,
            &self.engine,
            settings
                .log_sink
                .clone()
                .unwrap_or_else(|| self.sink.clone()),
            settings,
            self.invocations.clone(),
        )?;
        tracing::debug!(component = name, digest = %digest.short(), kind = %loaded.kind(), cache = ?status, "loaded");
        Ok(Arc::new(loaded))
    }

    /// The compiled, linked code of the component with `digest`: shared
    /// with the components already loaded from it, else taken from the
    /// precompile cache or compiled from `bytes`.
    fn compiled(
        &self,
        digest: &Digest,
        bytes: &[u8],
        what: &str,
    ) -> Result<(Arc<Compiled>, CacheStatus), LoadError> {
        let mut table = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
        // The table's own reference aside, a loaded component holds it.
        let in_use = |c: &Arc<Compiled>| Arc::strong_count(c) > 1;
        if let Some(compiled) = table.get(digest).filter(|c| in_use(c)) {
            return Ok((compiled.clone(), CacheStatus::Shared));
        }
        // Let go of the code no loaded component runs any more.
        table.retain(|_, c| in_use(c));
        let (component, status) = self
            .cache
            .load_or_compile(&self.engine, digest, bytes, what)?;
        let compiled = Arc::new(Compiled::new(&component, &self.engine, &self.linker));
        table.insert(*digest, compiled.clone());
        Ok((compiled, status))
    }

    /// Loads the component in the file at `path`, named after the file.
    pub fn load_file(
        &self,
        path: &Path,
        settings: ComponentSettings,
    ) -> Result<Arc<LoadedComponent>, LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        self.load_described(&name, &path.display().to_string(), &bytes, settings)
    }
}
