//! What logs and metrics cost an invocation: the same component loaded
//! twice on one runtime, once with a sink that discards its output and no
//! metrics, once as a host runs it (its lines shipped to a real JetStream
//! stream by the log shipper, its invocations counted and measured), and
//! invoked in interleaved rounds.
//!
//! The component is `toolbox`, asked to `print 1`: one line per
//! invocation. At this rate the replica's log budget (200 lines/s) drops
//! most lines, as it would on a host: the figure is what a chatty guest
//! costs, with the lines that pass stored and acknowledged.
//! Run after `scripts/setup`: `cargo bench -p shoal-tests --bench telemetry`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::wire::{HostId, ReplicaId};
use shoal_api::{Limits, Name, subjects};
use shoal_host::log_shipper::LogShipper;
use shoal_host::metrics::HostMetrics;
use shoal_host::{
    ComponentSettings, LoadedComponent, LogLine, LogSink, Message, Runtime, RuntimeOptions,
};
use shoal_tests::cluster::{free_port, nats_server_bin};

const INVOCATIONS: usize = 5_000;
const ROUNDS: usize = 7;

struct DiscardLogs;

impl LogSink for DiscardLogs {
    fn line(&self, line: LogLine) {
        std::hint::black_box(line);
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn message() -> Message {
    Message {
        subject: "bench".into(),
        headers: Vec::new(),
        payload: b"print 1".to_vec(),
    }
}

async fn round(component: &Arc<LoadedComponent>, invocations: usize) -> Duration {
    let started = Instant::now();
    for _ in 0..invocations {
        component.invoke(message()).await.unwrap();
    }
    started.elapsed()
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let (invocations, rounds) = if quick {
        (50, 1)
    } else {
        (INVOCATIONS, ROUNDS)
    };
    let store = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let _server = Server(
        Command::new(nats_server_bin().unwrap())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("nats://127.0.0.1:{port}");
        let nats = loop {
            match async_nats::connect(&url).await {
                Ok(nats) => break nats,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let namespace = Name::new("default").unwrap();
        let js = async_nats::jetstream::new(nats.clone());
        let stream = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: subjects::logs_stream(&namespace),
                subjects: vec![subjects::namespace_logs(&namespace)],
                ..Default::default()
            })
            .await
            .unwrap();

        let bytes = shoal_tests::wasm_bytes("toolbox").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let runtime =
            Runtime::new(RuntimeOptions::new(cache.path()).log_sink(Arc::new(DiscardLogs)))
                .unwrap();
        let limits = Limits::default();
        let quiet = runtime
            .load(
                "toolbox",
                &bytes,
                ComponentSettings {
                    limits,
                    ..Default::default()
                },
            )
            .unwrap();
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let (shipper, _shipping) =
            LogShipper::start(nats.clone(), HostId::new("bench").unwrap(), stopped);
        let metrics = HostMetrics::new();
        let replica = ReplicaId {
            namespace: namespace.clone(),
            app: Name::new("bench").unwrap(),
            pod: Name::new("toolbox").unwrap(),
            index: 0,
        };
        let toolbox = Name::new("toolbox").unwrap();
        let observed = runtime
            .load(
                "toolbox",
                &bytes,
                ComponentSettings {
                    limits,
                    log_sink: Some(shipper.replica(&replica, 0).sink(&toolbox)),
                    metrics: Some(metrics.component(&replica, "toolbox")),
                    ..Default::default()
                },
            )
            .unwrap();
        // Warm both up.
        round(&quiet, invocations.min(200)).await;
        round(&observed, invocations.min(200)).await;
        let (mut off, mut on) = (Vec::new(), Vec::new());
        // Interleaved, each going first in turn, so drift hits both alike.
        for i in 0..rounds {
            if i % 2 == 0 {
                off.push(round(&quiet, invocations).await);
                on.push(round(&observed, invocations).await);
            } else {
                on.push(round(&observed, invocations).await);
                off.push(round(&quiet, invocations).await);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let stored = stream.clone().info().await.unwrap().state.messages;
        if quick {
            assert!(stored > 0, "the shipper stored nothing");
            println!("telemetry bench: smoke run ok (use `cargo bench` for figures)");
            return;
        }
        let per = |d: Duration| d.as_secs_f64() * 1e6 / invocations as f64;
        let (off, on) = (median(off), median(on));
        println!(
            "instantiate + invoke toolbox `print 1`, {invocations} invocations per round, median of {rounds} rounds"
        );
        println!("{:<34} {:>12}", "", "µs/invocation");
        println!("{:<34} {:>12.2}", "logs discarded, no metrics", per(off));
        println!(
            "{:<34} {:>12.2}",
            "logs shipped to JetStream, metrics",
            per(on)
        );
        println!(
            "overhead: {:+.1}% (ratio {:.3}x); {stored} batches stored; {} lines dropped by the shipper (the replica's log budget drops most before they reach it)",
            (per(on) / per(off) - 1.0) * 100.0,
            per(on) / per(off),
            shipper.dropped()
        );
    });
}
