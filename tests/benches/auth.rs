//! What authentication and authorization cost an API call: the latency of
//! `GET /v1/pods` from a scheduler with tokens and roles, next to one
//! started with `--insecure-no-auth`, in the same run, requests to the two
//! interleaved so both see the same machine.
//!
//! Two real clusters (nats-server, scheduler, one host as processes), each
//! running the same app of `REPLICAS` echo-worker replicas, so both answer
//! the same list. Each request opens a connection, as a CLI call does.
//! Run after `scripts/setup`: `cargo bench -p shoal-tests --bench auth`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_tests::cluster::Cluster;
use shoal_tests::{http_request, http_request_as, wasm_path};

const REQUESTS: usize = 2_000;
const REPLICAS: u32 = 10;

fn cluster(flags: &[&str]) -> (Cluster, SocketAddr) {
    let mut cluster = Cluster::start_with(flags).unwrap();
    cluster.start_host("h1", "").unwrap();
    let text = format!(
        "name = \"echo\"\n[components.echo]\nsource = \"{}\"\nkind = \"worker\"\nreplicas = {REPLICAS}\nlimits = {{ memory = \"16MiB\", concurrency = 1 }}\n",
        wasm_path("echo-worker").unwrap().display()
    );
    let path = cluster.dir().join("echo.toml");
    std::fs::write(&path, text).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    cluster
        .wait_until("every replica runs", Duration::from_secs(60), |c| {
            let pods = c.pods()?;
            Ok((pods.len() == REPLICAS as usize && pods.iter().all(|p| p.ready)).then_some(()))
        })
        .unwrap();
    let api = cluster.api().trim_start_matches("http://").parse().unwrap();
    (cluster, api)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn main() {
    // Under `cargo test` a short run checks that it works; `cargo bench`
    // measures.
    let requests = if std::env::args().any(|a| a == "--bench") {
        REQUESTS
    } else {
        200
    };
    let (on, on_api) = cluster(&[]);
    let (_off, off_api) = cluster(&["--insecure-no-auth"]);
    let token = on.admin_token().unwrap();
    let limit = Duration::from_secs(5);
    let mut with_auth = Vec::with_capacity(requests);
    let mut without = Vec::with_capacity(requests);
    for i in 0..requests + 100 {
        let started = Instant::now();
        let reply = http_request_as(on_api, &token, "GET", "/v1/pods", limit).unwrap();
        let on_time = started.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.body);
        let started = Instant::now();
        let reply = http_request(off_api, "GET", "/v1/pods", limit).unwrap();
        let off_time = started.elapsed();
        assert_eq!(reply.status, 200, "{}", reply.body);
        // The first hundred warm both up.
        if i >= 100 {
            with_auth.push(on_time);
            without.push(off_time);
        }
    }
    with_auth.sort();
    without.sort();
    println!("GET /v1/pods ({REPLICAS} pods), {requests} requests each, interleaved");
    println!("{:<14} {:>10} {:>10}", "", "p50", "p99");
    for (name, times) in [("auth on", &with_auth), ("auth off", &without)] {
        println!(
            "{name:<14} {:>10.3?} {:>10.3?}",
            percentile(times, 0.5),
            percentile(times, 0.99)
        );
    }
    let added = |p| percentile(&with_auth, p).as_secs_f64() - percentile(&without, p).as_secs_f64();
    println!(
        "added by auth: p50 {:+.3} ms, p99 {:+.3} ms (ratio p50 {:.2}x)",
        added(0.5) * 1e3,
        added(0.99) * 1e3,
        percentile(&with_auth, 0.5).as_secs_f64() / percentile(&without, 0.5).as_secs_f64()
    );
}
