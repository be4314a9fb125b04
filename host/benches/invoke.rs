//! Instantiate + invoke `echo-worker`: Shoal's runtime against a bare
//! wasmtime loop on the same component, pooling allocator on in both.
//!
//! Shoal's path adds what makes it an orchestrator's runtime: the fuel
//! budget, the epoch deadline, the memory limiter, guest stdout captured
//! line by line, capability providers bound per invocation and a
//! concurrency permit. The bare loop has none of these: a `Store` with an
//! empty WASI context, `instantiate_async`, `call_handle`.
//!
//! Run with `cargo bench -p shoal-host --bench invoke` after
//! `scripts/build-examples`. Prints the cost per invocation (wall time over
//! all threads divided by invocations) on 1 and 2 threads, and the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::Limits;
use shoal_host::bindings::WorkerPre;
use shoal_host::{ComponentSettings, LogLine, LogSink, Message, Runtime, RuntimeOptions};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

const INVOCATIONS: usize = 20_000;
const ROUNDS: usize = 7;

struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, line: LogLine) {
        std::hint::black_box(line);
    }
}

struct BareState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for BareState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

fn message() -> Message {
    Message {
        subject: "bench".into(),
        headers: Vec::new(),
        payload: b"hello, shoal".to_vec(),
    }
}

fn bare_pre(bytes: &[u8]) -> WorkerPre<BareState> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(1000)
        .total_core_instances(8000)
        .total_memories(2000)
        .total_tables(4000)
        .total_stacks(1000)
        // The same memory reset as Shoal's engine, so the ratio measures
        // what Shoal adds, not a pool setting.
        .linear_memory_keep_resident(shoal_host::tunables::POOL_KEEP_RESIDENT)
        .table_keep_resident(shoal_host::tunables::POOL_TABLE_KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    let mut config = Config::new();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    WorkerPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

async fn bare_invoke(pre: &WorkerPre<BareState>, msg: &Message) {
    let mut store = Store::new(
        pre.engine(),
        BareState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let worker = pre.instantiate_async(&mut store).await.unwrap();
    let reply = worker
        .shoal_workload_handler()
        .call_handle(&mut store, msg)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply.payload, msg.payload);
}

/// Runs `INVOCATIONS` calls spread over `threads` tasks on a runtime with
/// `threads` workers; returns the wall time per invocation.
fn measure<F, Fut>(threads: usize, call: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let call = Arc::new(call);
    rt.block_on(async move {
        // Warm up: fill the pool's slots and the caches.
        for _ in 0..500 {
            call().await;
        }
        let started = Instant::now();
        let per_task = INVOCATIONS / threads;
        let tasks: Vec<_> = (0..threads)
            .map(|_| {
                let call = call.clone();
                tokio::spawn(async move {
                    for _ in 0..per_task {
                        call().await;
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        started.elapsed() / (per_task * threads) as u32
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and only wants to know that this builds and runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join("target/wasm/echo-worker.wasm");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the examples first with scripts/build-examples",
            path.display()
        )
    });

    let cache = tempfile::tempdir().unwrap();
    let runtime =
        Runtime::new(RuntimeOptions::new(cache.path()).log_sink(Arc::new(DiscardLogs))).unwrap();
    let settings = ComponentSettings {
        kind: None,
        limits: Limits::default(),
        ..Default::default()
    };
    let shoal = runtime.load("echo-worker", &bytes, settings).unwrap();
    let bare = Arc::new(bare_pre(&bytes));
    let msg = Arc::new(message());

    if quick {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            shoal.invoke(message()).await.unwrap();
            bare_invoke(&bare, &msg).await;
        });
        println!("invoke bench: smoke run ok (use `cargo bench` for figures)");
        return;
    }

    println!(
        "instantiate + invoke echo-worker, {INVOCATIONS} invocations per round, median of {ROUNDS} rounds"
    );
    println!(
        "{:<8} {:>16} {:>16} {:>8}",
        "threads", "bare wasmtime", "shoal runtime", "ratio"
    );
    for threads in [1, 2] {
        let mut bare_samples = Vec::new();
        let mut shoal_samples = Vec::new();
        // Interleave the rounds so drift on the machine hits both alike.
        for _ in 0..ROUNDS {
            let (pre, m) = (bare.clone(), msg.clone());
            bare_samples.push(measure(threads, move || {
                let (pre, m) = (pre.clone(), m.clone());
                async move { bare_invoke(&pre, &m).await }
            }));
            let component = shoal.clone();
            shoal_samples.push(measure(threads, move || {
                let component = component.clone();
                async move {
                    let (reply, _) = component.invoke(message()).await.unwrap();
                    assert_eq!(reply.payload, b"hello, shoal");
                }
            }));
        }
        let (b, s) = (median(bare_samples), median(shoal_samples));
        println!(
            "{:<8} {:>13.2} us {:>13.2} us {:>7.2}x",
            threads,
            b.as_secs_f64() * 1e6,
            s.as_secs_f64() * 1e6,
            s.as_secs_f64() / b.as_secs_f64()
        );
    }
}
