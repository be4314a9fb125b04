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
//!
//! Then the interruption tax: the bare loop on engines with fuel metering
//! and epoch interruption (Shoal's engine), epochs only, and neither, on
//! `echo-worker` (instantiation-bound) and on `fuel-burner` asked to spin
//! a fixed number of rounds (compute-bound).

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

/// How a bare engine can stop a guest.
#[derive(Debug, Clone, Copy)]
enum Interruption {
    /// Neither fuel nor epochs: a spinning guest cannot be stopped.
    Neither,
    /// Epoch interruption only: a wall-clock deadline.
    Epochs,
    /// Fuel metering and epochs, as Shoal's engine.
    FuelAndEpochs,
}

impl Interruption {
    fn name(self) -> &'static str {
        match self {
            Interruption::Neither => "neither",
            Interruption::Epochs => "epochs only",
            Interruption::FuelAndEpochs => "fuel + epochs",
        }
    }
}

/// A bare engine's instance factory, and its epoch clock (ticking as
/// Shoal's does) while it has one.
struct Bare {
    pre: WorkerPre<BareState>,
    _ticker: Option<shoal_host::EpochTicker>,
}

fn bare(bytes: &[u8], interruption: Interruption) -> Bare {
    let pre = bare_pre(bytes, interruption);
    let ticker = match interruption {
        Interruption::Neither => None,
        _ => Some(shoal_host::EpochTicker::start(pre.engine()).unwrap()),
    };
    Bare {
        pre,
        _ticker: ticker,
    }
}

fn bare_pre(bytes: &[u8], interruption: Interruption) -> WorkerPre<BareState> {
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
    match interruption {
        Interruption::Neither => {}
        Interruption::Epochs => {
            config.epoch_interruption(true);
        }
        Interruption::FuelAndEpochs => {
            config.consume_fuel(true).epoch_interruption(true);
        }
    }
    let engine = Engine::new(&config).unwrap();
    let component = Component::new(&engine, bytes).unwrap();
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    WorkerPre::new(linker.instantiate_pre(&component).unwrap()).unwrap()
}

async fn bare_invoke(pre: &WorkerPre<BareState>, msg: &Message) -> Vec<u8> {
    let mut store = Store::new(
        pre.engine(),
        BareState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    // As Shoal's store: a budget of fuel, a deadline a tick away that
    // yields and moves on. Each fails harmlessly on an engine without it.
    let _ = store.set_fuel(u64::MAX);
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    let worker = pre.instantiate_async(&mut store).await.unwrap();
    worker
        .shoal_workload_handler()
        .call_handle(&mut store, msg)
        .await
        .unwrap()
        .unwrap()
        .payload
}

/// Runs `INVOCATIONS` calls spread over `threads` tasks on a runtime with
/// `threads` workers; returns the wall time per invocation.
fn measure<F, Fut>(threads: usize, call: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    measure_n(threads, INVOCATIONS, call)
}

/// [`measure`] with `invocations` calls.
fn measure_n<F, Fut>(threads: usize, invocations: usize, call: F) -> Duration
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
        for _ in 0..(invocations / 40).max(5) {
            call().await;
        }
        let started = Instant::now();
        let per_task = invocations / threads;
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

fn wasm(name: &str) -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path = root.join(format!("target/wasm/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the examples first with scripts/build-examples",
            path.display()
        )
    })
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // and only wants to know that this builds and runs.
    let quick = !std::env::args().any(|a| a == "--bench");
    let bytes = wasm("echo-worker");
    let burner = wasm("fuel-burner");

    let cache = tempfile::tempdir().unwrap();
    let runtime =
        Runtime::new(RuntimeOptions::new(cache.path()).log_sink(Arc::new(DiscardLogs))).unwrap();
    let settings = ComponentSettings {
        kind: None,
        limits: Limits::default(),
        ..Default::default()
    };
    let shoal = runtime.load("echo-worker", &bytes, settings).unwrap();
    let bare_loop = Arc::new(bare(&bytes, Interruption::Neither));
    let msg = Arc::new(message());

    if quick {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            shoal.invoke(message()).await.unwrap();
            assert_eq!(bare_invoke(&bare_loop.pre, &msg).await, msg.payload);
            let spin = Message {
                payload: b"spin 1000".to_vec(),
                ..message()
            };
            let metered = bare(&burner, Interruption::FuelAndEpochs);
            let plain = bare(&burner, Interruption::Neither);
            assert_eq!(
                bare_invoke(&metered.pre, &spin).await,
                bare_invoke(&plain.pre, &spin).await
            );
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
            let (b, m) = (bare_loop.clone(), msg.clone());
            bare_samples.push(measure(threads, move || {
                let (b, m) = (b.clone(), m.clone());
                async move {
                    assert_eq!(bare_invoke(&b.pre, &m).await, m.payload);
                }
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
            us(b),
            us(s),
            s.as_secs_f64() / b.as_secs_f64()
        );
    }

    interruption_tax(&bytes, &burner);
}

/// The bare loop on each kind of engine: what stopping a guest costs.
fn interruption_tax(echo: &[u8], burner: &[u8]) {
    const SPIN: u64 = 1_000_000;
    const SPINS: usize = 200;
    let kinds = [
        Interruption::Neither,
        Interruption::Epochs,
        Interruption::FuelAndEpochs,
    ];
    let spin = Message {
        payload: format!("spin {SPIN}").into_bytes(),
        ..message()
    };
    let workloads: [(String, &[u8], Message, usize); 2] = [
        ("echo-worker".into(), echo, message(), INVOCATIONS),
        (format!("fuel-burner, {SPIN} rounds"), burner, spin, SPINS),
    ];
    println!();
    println!("interruption tax, bare loop on 1 thread, median of {ROUNDS} interleaved rounds");
    println!(
        "{:<30} {:>14} {:>14} {:>14} {:>9} {:>9}",
        "workload",
        kinds[0].name(),
        kinds[1].name(),
        kinds[2].name(),
        "epochs",
        "fuel+ep"
    );
    for (name, bytes, msg, count) in workloads {
        let engines: Vec<Arc<Bare>> = kinds.iter().map(|k| Arc::new(bare(bytes, *k))).collect();
        let msg = Arc::new(msg);
        let expected = {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(bare_invoke(&engines[0].pre, &msg))
        };
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kinds.len()];
        for _ in 0..ROUNDS {
            for (engine, out) in engines.iter().zip(samples.iter_mut()) {
                let (b, m, want) = (engine.clone(), msg.clone(), expected.clone());
                out.push(measure_n(1, count, move || {
                    let (b, m, want) = (b.clone(), m.clone(), want.clone());
                    async move {
                        assert_eq!(bare_invoke(&b.pre, &m).await, want);
                    }
                }));
            }
        }
        let [neither, epochs, fuel]: [Duration; 3] = samples
            .into_iter()
            .map(median)
            .collect::<Vec<_>>()
            .try_into()
            .unwrap();
        println!(
            "{:<30} {:>11.2} us {:>11.2} us {:>11.2} us {:>8.2}x {:>8.2}x",
            name,
            us(neither),
            us(epochs),
            us(fuel),
            epochs.as_secs_f64() / neither.as_secs_f64(),
            fuel.as_secs_f64() / neither.as_secs_f64(),
        );
    }
}
