//! The one wasmtime [`Engine`] of a host, and the thread that drives its
//! epoch clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use crate::tunables::{
    EPOCH_TICK, POOL_INSTANCES, POOL_KEEP_RESIDENT, POOL_MAX_MEMORY, POOL_TABLE_KEEP_RESIDENT,
};

/// What the code a host runs is compiled for: fuel metering and epoch
/// interruption on, optimised for speed. Everything that shapes the
/// compiled code is here, and only here, so an engine that compiles for
/// the cluster ([`compile_engine`]) and a host's own make artifacts of the
/// same compatibility hash.
fn code_config() -> Config {
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .memory_init_cow(true)
        // Cheap until a trap: the dump only refers to the store's state,
        // and is serialized only for components that keep dumps.
        .coredump_on_trap(true)
        .cranelift_opt_level(OptLevel::Speed);
    config
}

/// An engine that only compiles, for the scheduler to compile components
/// once for the cluster: the host's code settings, without the pool of
/// instance slots that only running needs.
pub fn compile_engine() -> wasmtime::Result<Engine> {
    Engine::new(&code_config())
}

/// Builds the host's engine: fuel metering and epoch interruption on,
/// the pooling allocator with copy-on-write memory images.
///
/// Why pooling: an instance per invocation is the isolation model, so
/// instantiation is on every hot path; pooled slots make it a few
/// microseconds instead of an mmap per memory.
pub fn build_engine() -> wasmtime::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(POOL_INSTANCES)
        .total_core_instances(POOL_INSTANCES * 8)
        .total_memories(POOL_INSTANCES * 2)
        .total_tables(POOL_INSTANCES * 4)
        .total_stacks(POOL_INSTANCES)
        .max_memory_size(POOL_MAX_MEMORY)
        .linear_memory_keep_resident(POOL_KEEP_RESIDENT)
        .table_keep_resident(POOL_TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);

    let mut config = code_config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances an engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    /// Starts ticking `engine`.
    pub fn start(engine: &Engine) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = engine.clone();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("shoal-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })?;
        Ok(EpochTicker {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Compiles components for the cluster, as a host would compile them: the
/// scheduler compiles each uploaded component once with it, and hosts
/// whose engine has the same compatibility hash load the artifact instead
/// of compiling.
#[derive(Clone)]
pub struct ClusterCompiler {
    engine: Engine,
    id: String,
}

impl std::fmt::Debug for ClusterCompiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCompiler")
            .field("engine", &self.id)
            .finish()
    }
}

impl ClusterCompiler {
    /// A compiler with the hosts' code settings.
    pub fn new() -> wasmtime::Result<Self> {
        let engine = compile_engine()?;
        let id = crate::cache::hex(&crate::cache::engine_hash(&engine));
        Ok(ClusterCompiler { engine, id })
    }

    /// The engine's compatibility hash in hex (as
    /// [`crate::PrecompileCache::engine_id`] gives a host's).
    pub fn engine_id(&self) -> &str {
        &self.id
    }

    /// Compiles a component's bytes. CPU-bound: from async code, call it
    /// in `spawn_blocking`.
    pub fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.engine
            .precompile_component(bytes)
            .map_err(|e| format!("{e:#}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the cluster compiles, a host loads: the two engines differ only
    /// in how they allocate instances, which is not part of the code.
    #[test]
    fn the_cluster_compiles_for_the_hosts_engine() {
        let host = build_engine().unwrap();
        let compiler = ClusterCompiler::new().unwrap();
        assert_eq!(
            crate::cache::engine_hash(&host),
            crate::cache::engine_hash(&compiler.engine)
        );
        let dir = tempfile::tempdir().unwrap();
        let cache = crate::PrecompileCache::open_with_key(dir.path().join("cache"), &host, [7; 32])
            .unwrap();
        assert_eq!(cache.engine_id(), compiler.engine_id());
        // wasmtime compiles the text format as well.
        let bytes = b"(component)".to_vec();
        let artifact = compiler.precompile(&bytes).unwrap();
        let digest = shoal_api::Digest::of(&bytes);
        assert!(!cache.has_entry(&digest));
        cache.import(&host, &digest, &artifact).unwrap();
        assert!(cache.has_entry(&digest));
        let (_, status) = cache
            .load_or_compile(&host, &digest, &bytes, "empty")
            .unwrap();
        assert_eq!(
            status,
            crate::CacheStatus::Hit,
            "loaded, not compiled again"
        );
        // Not a component compiled by a like engine: refused, not stored.
        let other = shoal_api::Digest::of(b"other");
        assert!(cache.import(&host, &other, b"not machine code").is_err());
        assert!(!cache.has_entry(&other));
    }
}
