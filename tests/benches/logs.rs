//! Log throughput and isolation: a noisy app printing as fast as it can
//! for ten seconds, the lines stored per second, and the latency of a quiet
//! neighbour on the same host meanwhile, against the same neighbour alone
//! and beside an app that burns the same CPU without printing (all in the
//! same run, alone measured before and after).
//!
//! A real cluster (nats-server, scheduler and one host as processes). The
//! printer is one replica of the toolbox, each invocation printing 5,000
//! lines, called back to back; the spinner is one replica of the
//! fuel-burner, called back to back. Each keeps one of the machine's cores
//! busy. The neighbour is hello-http, asked one GET at a time over its
//! ingress. Stored lines are counted from the namespace's logs stream.
//! Each replica's output is budgeted (200 lines/s and 256 KiB/s), so the
//! stored rate says what the budget lets through; the neighbour beside the
//! printer against beside the spinner says what logging itself costs it.
//! Run after `scripts/setup` and `cargo build --release -p shoal-cli`:
//! `cargo bench -p shoal-tests --bench logs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use shoal_api::logs::{LogBatch, LogStream};
use shoal_tests::cluster::Cluster;
use shoal_tests::wasm_path;

const NOISE: Duration = Duration::from_secs(10);
const NOISY_REPLICAS: usize = 1;
const LINES_PER_CALL: u64 = 5_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("logs bench: run with `cargo bench -p shoal-tests --bench logs`");
        return;
    }
    let mut cluster = Cluster::start().unwrap();
    let ingress = cluster.start_host("h1", "").unwrap();
    let spec = format!(
        r#"name = "quiet"
[components.web]
source = "{hello}"
kind = "http"
route = "/quiet"
limits = {{ memory = "16MiB", concurrency = 16 }}
"#,
        hello = wasm_path("hello-http").unwrap().display(),
    );
    let quiet = cluster.dir().join("quiet.toml");
    std::fs::write(&quiet, spec).unwrap();
    let spec = format!(
        r#"name = "noisy"
[components.toolbox]
source = "{toolbox}"
kind = "worker"
replicas = {NOISY_REPLICAS}
limits = {{ memory = "16MiB", timeout = "60s", concurrency = 1 }}
"#,
        toolbox = wasm_path("toolbox").unwrap().display(),
    );
    let noisy = cluster.dir().join("noisy.toml");
    std::fs::write(&noisy, spec).unwrap();
    let spec = format!(
        r#"name = "spinner"
[components.burner]
source = "{burner}"
kind = "worker"
limits = {{ memory = "16MiB", fuel = 1_000_000_000, timeout = "60s", concurrency = 1 }}
"#,
        burner = wasm_path("fuel-burner").unwrap().display(),
    );
    let spinner = cluster.dir().join("spinner.toml");
    std::fs::write(&spinner, spec).unwrap();
    for file in [&quiet, &noisy, &spinner] {
        cluster.ok(&["apply", &file.display().to_string()]).unwrap();
    }
    let running = cluster.wait_until("the three apps run", Duration::from_secs(60), |c| {
        let pods = c.pods()?;
        let ready = pods.iter().filter(|p| p.ready).count();
        let answered = shoal_tests::http_request(ingress, "GET", "/quiet", Duration::from_secs(5))
            .is_ok_and(|r| r.status == 200);
        Ok((ready == NOISY_REPLICAS + 2 && answered).then_some(()))
    });
    if let Err(e) = running {
        panic!(
            "{e}: {}\n{}",
            cluster.ok(&["get", "pods"]).unwrap_or_default(),
            cluster
                .ok(&["describe", "app", "spinner"])
                .unwrap_or_else(|e| e.to_string())
        );
    }

    let rt = tokio::runtime::Runtime::new().unwrap();
    let nats = rt.block_on(cluster.nats.admin()).unwrap();
    let alone_before = neighbour(ingress, NOISE);
    let started_ms = shoal_api::wire::now_ms();
    let (with_printer, calls, noise_secs) = beside(&rt, &nats, "noisy.toolbox", ingress, || {
        format!("print {LINES_PER_CALL}")
    });
    let printed = calls * LINES_PER_CALL;
    let (with_spinner, _, _) = beside(&rt, &nats, "spinner.burner", ingress, || "x".to_string());
    let alone_after = neighbour(ingress, NOISE);
    // What reached the stream (shipped within 100 ms; give it a moment).
    std::thread::sleep(Duration::from_secs(2));
    let stored = rt.block_on(stored_lines(&nats, started_ms));

    println!(
        "log throughput ({NOISY_REPLICAS} replicas printing {LINES_PER_CALL}-line bursts for {noise_secs:.1} s)"
    );
    println!(
        "  lines printed by the guests   {printed:>10}  ({:.0}/s)",
        printed as f64 / noise_secs
    );
    println!(
        "  lines stored in JetStream     {stored:>10}  ({:.0}/s, the output budget)",
        stored as f64 / noise_secs
    );
    println!(
        "  lines dropped by the budget   {:>10}",
        printed.saturating_sub(stored)
    );
    println!("quiet neighbour, GET /quiet one at a time over the ingress");
    println!("                          requests     p50 ms     p99 ms");
    for (label, figures) in [
        ("alone (before)", &alone_before),
        ("beside the printer", &with_printer),
        ("beside the spinner", &with_spinner),
        ("alone (after)", &alone_after),
    ] {
        println!(
            "  {label:<22} {:>9} {:>10.3} {:>10.3}",
            figures.count, figures.p50_ms, figures.p99_ms
        );
    }
    let alone_p99 = (alone_before.p99_ms + alone_after.p99_ms) / 2.0;
    println!(
        "  p99 beside the printer / alone (mean of before and after): {:.2}",
        with_printer.p99_ms / alone_p99
    );
    println!(
        "  p99 beside the printer / beside the spinner (logging's own share): {:.2}",
        with_printer.p99_ms / with_spinner.p99_ms
    );
}

/// The neighbour's figures while `target` (`app.component` in `default`)
/// is invoked back to back with `payload`; how many calls it answered and
/// for how long it ran.
fn beside(
    rt: &tokio::runtime::Runtime,
    nats: &async_nats::Client,
    target: &str,
    ingress: std::net::SocketAddr,
    payload: impl Fn() -> String + Send + 'static,
) -> (Figures, u64, f64) {
    let calls = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let subject = format!("shoal.v1.invoke.default.{target}");
    let noise = {
        let (calls, stop, nats) = (calls.clone(), stop.clone(), nats.clone());
        rt.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let request = async_nats::Request::new()
                    .payload(payload().into())
                    .timeout(Some(Duration::from_secs(60)));
                if nats.send_request(subject.clone(), request).await.is_ok() {
                    calls.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let figures = neighbour(ingress, NOISE);
    stop.store(true, Ordering::Relaxed);
    let ended = Instant::now();
    rt.block_on(noise).unwrap();
    let secs = NOISE.as_secs_f64() + ended.elapsed().as_secs_f64();
    (figures, calls.load(Ordering::Relaxed), secs)
}

/// Latency figures of a run of requests.
struct Figures {
    count: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// GETs `/quiet` one at a time for `span`.
fn neighbour(ingress: std::net::SocketAddr, span: Duration) -> Figures {
    let mut times = Vec::new();
    let end = Instant::now() + span;
    while Instant::now() < end {
        let t = Instant::now();
        let reply =
            shoal_tests::http_request(ingress, "GET", "/quiet", Duration::from_secs(5)).unwrap();
        assert_eq!(reply.status, 200, "{reply:?}");
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    Figures {
        count: times.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// Guest lines of the noisy app stored since `since_ms`.
async fn stored_lines(nats: &async_nats::Client, since_ms: u64) -> u64 {
    let js = async_nats::jetstream::new(nats.clone());
    let stream = js.get_stream("SHOAL_LOGS_default").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "shoal.v1.logs.default.noisy.>".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending;
    let mut messages = consumer.messages().await.unwrap();
    let mut lines = 0u64;
    for _ in 0..pending {
        let Some(Ok(message)) = messages.next().await else {
            break;
        };
        let batch: LogBatch = serde_json::from_slice(&message.payload).unwrap();
        lines += batch
            .lines
            .iter()
            .filter(|l| l.at_ms >= since_ms && l.stream == LogStream::Stdout)
            .count() as u64;
    }
    lines
}
