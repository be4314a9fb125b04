//! What a host saves by loading the code the cluster compiled instead of
//! compiling a component itself.
//!
//! For each example: compiling it (what every host did on its first start
//! of a version, and what the scheduler now does once at upload), against
//! importing the compiled artifact into a fresh precompile cache (what a
//! host now does: wasmtime's load check, then the entry written under the
//! host's MAC) and loading it from there. Fetching the artifact over NATS
//! is not included: it is a read of the artifact's bytes from JetStream.
//!
//! Run with `cargo bench -p shoal-host --bench compile_once` after
//! `scripts/build-examples`. Prints medians of 5 rounds, and the ratio.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use shoal_api::Digest;
use shoal_host::{ClusterCompiler, PrecompileCache, build_engine};

const ROUNDS: usize = 5;
const EXAMPLES: [&str; 3] = ["hello-http", "echo-worker", "toolbox"];

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let engine = build_engine().unwrap();
    let compiler = ClusterCompiler::new().unwrap();
    println!(
        "{:<12} {:>9} {:>10} {:>12} {:>13} {:>7}",
        "component", "bytes", "artifact", "compile ms", "import+load", "ratio"
    );
    for name in EXAMPLES {
        let path = root.join(format!("target/wasm/{name}.wasm"));
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-examples)", path.display()));
        let digest = Digest::of(&bytes);
        let mut compiled = Vec::new();
        let mut imported = Vec::new();
        let mut artifact = Vec::new();
        for round in 0..ROUNDS {
            let started = Instant::now();
            artifact = compiler.precompile(&bytes).unwrap();
            compiled.push(started.elapsed());

            let dir = tempfile::tempdir().unwrap();
            let cache = PrecompileCache::open_with_key(
                dir.path().join("cache"),
                &engine,
                [round as u8; 32],
            )
            .unwrap();
            let started = Instant::now();
            cache.import(&engine, &digest, &artifact).unwrap();
            let (_, status) = cache
                .load_or_compile(&engine, &digest, &bytes, name)
                .unwrap();
            imported.push(started.elapsed());
            assert_eq!(status, shoal_host::CacheStatus::Hit);
        }
        let (compile, import) = (median(compiled), median(imported));
        println!(
            "{:<12} {:>9} {:>10} {:>12.1} {:>13.1} {:>6.0}x",
            name,
            bytes.len(),
            artifact.len(),
            ms(compile),
            ms(import),
            compile.as_secs_f64() / import.as_secs_f64()
        );
    }
}
