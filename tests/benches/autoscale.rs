//! Autoscale reaction at min = 0: the time from the first message of a
//! burst to its processing, and to the autoscaler reaching max; and for an
//! http component at zero, the time to answer the request that wakes it.
//!
//! A real cluster (nats-server, scheduler and two hosts as processes), a
//! queue worker with `autoscale = { min = 0, max = 4, target_queue_depth =
//! 100, idle = "1s" }`, warmed once so the hosts have the component
//! compiled. Each round waits for zero replicas, publishes a burst of 2,000
//! messages and measures. Run after `scripts/setup`:
//! `cargo bench -p shoal-tests --bench autoscale`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_tests::cluster::Cluster;
use shoal_tests::wasm_path;

const ROUNDS: usize = 10;
const BURST: usize = 2_000;
const MAX: u32 = 4;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("autoscale bench: run with `cargo bench -p shoal-tests --bench autoscale`");
        return;
    }
    let mut cluster = Cluster::start().unwrap();
    let ingress = cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    let spec = format!(
        r#"name = "autobench"
[components.worker]
source = "{}"
kind = "worker"
queue = "autobench.in"
limits = {{ memory = "16MiB", timeout = "1s" }}
messaging = {{ publish = ["jobs.>"] }}
autoscale = {{ min = 0, max = {MAX}, target_queue_depth = 100, idle = "1s" }}
"#,
        wasm_path("queue-worker").unwrap().display()
    );
    let path = cluster.dir().join("autobench.toml");
    std::fs::write(&path, spec).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (js, mut done, mut events) = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let done = nats.subscribe("ns.default.jobs.done").await.unwrap();
        let events = nats
            .subscribe("shoal.v1.events.default.autobench")
            .await
            .unwrap();
        nats.flush().await.unwrap();
        (async_nats::jetstream::new(nats), done, events)
    });
    let idle = |cluster: &Cluster| {
        cluster
            .wait_until("zero replicas", Duration::from_secs(60), |c| {
                Ok(c.pods()?.is_empty().then_some(()))
            })
            .unwrap();
    };

    // Warm-up: the hosts compile the component once.
    rt.block_on(async {
        js.publish("ns.default.autobench.in", "warm".into())
            .await
            .unwrap()
            .await
            .unwrap();
        done.next().await.unwrap();
    });
    idle(&cluster);

    let mut first = Vec::new();
    let mut to_max = Vec::new();
    for round in 0..ROUNDS {
        rt.block_on(async {
            while tokio::time::timeout(Duration::from_millis(10), events.next()).await.is_ok() {}
            let started = Instant::now();
            let mut acks = Vec::new();
            for i in 0..BURST {
                acks.push(js.publish("ns.default.autobench.in", format!("r{round}-{i}").into()).await.unwrap());
            }
            for ack in acks {
                ack.await.unwrap();
            }
            let mut seen = 0;
            let mut first_at = None;
            let mut max_at = None;
            // Woken by the first message, one replica may finish a burst
            // of quick jobs before the depth calls for more: max is
            // recorded when the autoscaler gets there.
            while seen < BURST {
                tokio::select! {
                    Some(_) = done.next() => {
                        seen += 1;
                        first_at.get_or_insert(started.elapsed());
                    }
                    Some(e) = events.next() => {
                        let text = String::from_utf8_lossy(&e.payload);
                        if text.contains(&format!("to {MAX} replicas")) {
                            max_at.get_or_insert(started.elapsed());
                        }
                    }
                    () = tokio::time::sleep(Duration::from_secs(60)) => panic!("round {round} stalled"),
                }
            }
            first.push(first_at.unwrap());
            to_max.extend(max_at);
        });
        idle(&cluster);
    }
    first.sort();
    to_max.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("autoscale reaction at min = 0, burst of {BURST} messages, median of {ROUNDS} rounds");
    println!(
        "  first message processed: {:>7.1} ms  (rounds: {:?})",
        ms(first[ROUNDS / 2]),
        first.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
    match to_max.get(to_max.len() / 2) {
        Some(median) => println!(
            "  max ({MAX}) replicas wanted: {:>7.1} ms  (in {} of {ROUNDS} rounds: {:?})",
            ms(*median),
            to_max.len(),
            to_max.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
        ),
        None => println!("  max ({MAX}) replicas wanted: in no round (the burst was done before)"),
    }

    http_from_zero(&cluster, ingress);
}

/// The first request to an http component at zero: held by the ingress
/// while a replica starts, then answered.
fn http_from_zero(cluster: &Cluster, ingress: std::net::SocketAddr) {
    let spec = format!(
        r#"name = "webzero"
[components.web]
source = "{}"
kind = "http"
route = "/zero"
limits = {{ memory = "16MiB" }}
autoscale = {{ min = 0, max = 2, idle = "1s" }}
"#,
        wasm_path("hello-http").unwrap().display()
    );
    let path = cluster.dir().join("webzero.toml");
    std::fs::write(&path, spec).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    let at_zero = |cluster: &Cluster| {
        cluster
            .wait_until("webzero at zero", Duration::from_secs(60), |c| {
                Ok(c.pods()?.is_empty().then_some(()))
            })
            .unwrap();
        // Let the dormant route be announced.
        std::thread::sleep(Duration::from_millis(1200));
    };
    // Warm-up: the host compiles the component once.
    at_zero(cluster);
    let warm = shoal_tests::http_request(ingress, "GET", "/zero", Duration::from_secs(15)).unwrap();
    assert_eq!(warm.status, 200, "{warm:?}");
    let mut times = Vec::new();
    for _ in 0..ROUNDS {
        at_zero(cluster);
        let started = Instant::now();
        let reply =
            shoal_tests::http_request(ingress, "GET", "/zero", Duration::from_secs(15)).unwrap();
        times.push(started.elapsed());
        assert_eq!(reply.status, 200, "{reply:?}");
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "http component at zero, first request answered: {:>7.1} ms  (rounds: {:?})",
        ms(times[ROUNDS / 2]),
        times.iter().map(|d| ms(*d).round()).collect::<Vec<_>>()
    );
}
