//! Placement throughput and latency over the real protocol.
//!
//! Starts a nats-server (the one `scripts/setup` installs), the scheduler
//! in-process, and N simulated hosts: each heartbeats every second, takes
//! start/stop commands by request/reply and reports a replica running at
//! once (no wasm runs; this measures the control plane). Then:
//!
//! 1. applies apps totalling M replicas through the HTTP API and prints
//!    replicas placed per second and p50/p99 from apply to running;
//! 2. applies a single small app (one replica) many times in a row and
//!    prints p50/p99 from apply to running.
//!
//! Run: `cargo bench -p shoal-scheduler --bench placement` (defaults: N=100
//! and N=1000 hosts, M=10,000). `SHOAL_BENCH_HOSTS=100,1000` and
//! `SHOAL_BENCH_REPLICAS=10000` change them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use shoal_api::resources::ApplyRequest;
use shoal_api::subjects;
use shoal_api::wire::{
    Capacity, CommandReply, FencedCommand, HEARTBEAT_INTERVAL, HEARTBEAT_MIN_GAP, Heartbeat,
    HostCommand, HostId, ReplicaId, ReplicaState, ReplicaStatus,
};
use shoal_api::{Digest, Name};
use shoal_scheduler::{Scheduler, SchedulerOptions};
use tokio::sync::Notify;

struct NatsChild(Child);

impl Drop for NatsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nats(store: &std::path::Path) -> (NatsChild, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin = root.join(".tools/nats/bin/nats-server");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup",
        bin.display()
    );
    let port = free_port();
    let config = store.join("nats-server.conf");
    std::fs::create_dir_all(store).unwrap();
    std::fs::write(
        &config,
        format!(
            "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {:?}, max_file_store: {} }}\n",
            store.display().to_string(),
            subjects::JETSTREAM_MAX_FILE_STORE
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    while TcpStream::connect(addr).is_err() {
        std::thread::sleep(Duration::from_millis(20));
    }
    (NatsChild(child), format!("nats://127.0.0.1:{port}"))
}

/// When each replica was reported running, by the simulated hosts.
type RunningAt = Arc<Mutex<HashMap<ReplicaId, Instant>>>;

/// A host that speaks the protocol but runs nothing.
struct SimHost {
    id: HostId,
    labels: BTreeMap<String, String>,
    replicas: Mutex<BTreeMap<ReplicaId, ReplicaStatus>>,
    beat: Notify,
    started_at_ms: u64,
}

impl SimHost {
    fn heartbeat(&self) -> Heartbeat {
        Heartbeat {
            host: self.id.clone(),
            labels: self.labels.clone(),
            capacity: Capacity {
                memory: 64 << 30,
                slots: 10_000,
            },
            http: None,
            started_at_ms: self.started_at_ms,
            replicas: self.replicas.lock().unwrap().values().cloned().collect(),
            draining: false,
            seal_key: None,
            epoch: 0,
            seq: 0,
            content: Default::default(),
            stopped: Vec::new(),
            total: 0,
            digest: 0,
            shadows: Vec::new(),
        }
    }
}

async fn run_sim_host(nats: async_nats::Client, host: Arc<SimHost>, running_at: RunningAt) {
    let mut commands = nats
        .subscribe(subjects::host_commands(host.id.as_str()))
        .await
        .unwrap();
    let beats = {
        let (nats, host) = (nats.clone(), host.clone());
        tokio::spawn(async move {
            let subject = subjects::heartbeat(host.id.as_str());
            loop {
                let payload = serde_json::to_vec(&host.heartbeat()).unwrap();
                let _ = nats.publish(subject.clone(), payload.into()).await;
                // As a real host beats: on time, and soon after a change.
                let sent = tokio::time::Instant::now();
                tokio::select! {
                    () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {},
                    () = async {
                        host.beat.notified().await;
                        tokio::time::sleep_until(sent + HEARTBEAT_MIN_GAP).await;
                    } => {},
                }
            }
        })
    };
    while let Some(msg) = commands.next().await {
        let cmd: HostCommand = serde_json::from_slice::<FencedCommand>(&msg.payload)
            .unwrap()
            .command;
        match cmd {
            HostCommand::Start(start) => {
                let status = ReplicaStatus {
                    id: start.id.clone(),
                    revision: start.revision,
                    memory: start.memory(),
                    state: ReplicaState::Running,
                    ready: true,
                    restarts: 0,
                    last_error: None,
                    load_milli: 0,
                    stats: Default::default(),
                };
                host.replicas
                    .lock()
                    .unwrap()
                    .insert(start.id.clone(), status);
                running_at.lock().unwrap().insert(start.id, Instant::now());
            }
            HostCommand::Stop { id, .. } => {
                host.replicas.lock().unwrap().remove(&id);
            }
            HostCommand::Forget { .. } => {}
        }
        let reply = serde_json::to_vec(&CommandReply::Ok).unwrap();
        if let Some(to) = msg.reply {
            let _ = nats.publish(to, reply.into()).await;
        }
        host.beat.notify_one();
    }
    beats.abort();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn apply(&self, name: &str, replicas: u32, digest: Digest) {
        // One invocation at a time: a replica reserves its memory limit
        // times its concurrency, and 16 MiB each lets 10,000 replicas fit
        // 100 simulated hosts (the default concurrency of 64 would not).
        let spec = format!(
            "name = \"{name}\"\n[components.w]\nsource = \"w.wasm\"\nkind = \"worker\"\nreplicas = {replicas}\nlimits = {{ memory = \"16MiB\", concurrency = 1 }}\n"
        );
        let req = ApplyRequest {
            file: format!("{name}.toml"),
            spec,
            digests: [(Name::new("w").unwrap(), digest)].into(),
            dry_run: false,
            if_revision: None,
        };
        let resp = self
            .http
            .post(format!("{}/v1/apps", self.base))
            .json(&req)
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    }
}

fn replica(app: &str, index: u32) -> ReplicaId {
    ReplicaId {
        namespace: Name::new("default").unwrap(),
        app: Name::new(app).unwrap(),
        pod: Name::new("w").unwrap(),
        index,
    }
}

async fn wait_running(running_at: &RunningAt, ids: &[ReplicaId], limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        {
            let map = running_at.lock().unwrap();
            if ids.iter().all(|id| map.contains_key(id)) {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not all run within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

async fn scenario(hosts: usize, replicas: usize, component: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let (_nats_child, url) = start_nats(dir.path());
    let nats = async_nats::connect(&url).await.unwrap();
    let api_port = free_port();
    let scheduler = Scheduler::start(
        nats.clone(),
        SchedulerOptions {
            api_addr: SocketAddr::from(([127, 0, 0, 1], api_port)),
            // The bench calls the API without a token: placement is
            // what it measures.
            auth: shoal_scheduler::AuthMode::Off,
            api_names: Vec::new(),
            tls: None,
            secret_box: shoal_scheduler::secrets::SecretBox::new(
                &shoal_scheduler::secrets::SecretBox::generate_key(),
                None,
            ),
            copies: shoal_scheduler::jetstream::Copies::Auto,
            compiler: None,
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    let running_at: RunningAt = Arc::default();
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for i in 0..hosts {
        let host = Arc::new(SimHost {
            id: HostId::new(format!("sim-{i}")).unwrap(),
            labels: [("zone".to_string(), format!("z{}", i % 3))].into(),
            replicas: Mutex::default(),
            beat: Notify::new(),
            started_at_ms,
        });
        // Hosts share a few connections, as a cluster of real hosts would
        // share the server's capacity.
        tokio::spawn(run_sim_host(nats.clone(), host, running_at.clone()));
    }
    let api = Api {
        base: format!("http://{}", scheduler.api_addr()),
        http: {
            // reqwest is built without a default TLS provider (the CLI
            // configures ring itself): name one before making a client.
            let _ = rustls::crypto::ring::default_provider().install_default();
            reqwest::Client::new()
        },
    };
    let digest = Digest::of(component);
    let resp = api
        .http
        .put(format!("{}/v1/components/{}", api.base, digest.to_hex()))
        .body(component.to_vec())
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    // Let the scheduler hear every host and pass its start-up grace.
    tokio::time::sleep(shoal_scheduler::tunables::STARTUP_GRACE + Duration::from_millis(1500))
        .await;

    // 1. Bulk: apps of 100 replicas each, applied back to back.
    let per_app = 100usize;
    let apps = replicas.div_ceil(per_app);
    let t0 = Instant::now();
    let mut applied_at = HashMap::new();
    let mut ids = Vec::new();
    for a in 0..apps {
        let name = format!("bulk-{a}");
        let n = per_app.min(replicas - a * per_app) as u32;
        api.apply(&name, n, digest).await;
        applied_at.insert(name.clone(), Instant::now());
        ids.extend((0..n).map(|i| replica(&name, i)));
    }
    wait_running(&running_at, &ids, Duration::from_secs(300)).await;
    let map = running_at.lock().unwrap().clone();
    let last = ids.iter().map(|id| map[id]).max().unwrap();
    let elapsed = last.duration_since(t0);
    let mut latencies: Vec<Duration> = ids
        .iter()
        .map(|id| map[id].duration_since(applied_at[id.app.as_str()]))
        .collect();
    latencies.sort();
    println!(
        "{hosts:>5} hosts {:>6} replicas in {apps:>3} apps: {:>8.0} placed/s  apply->running p50 {:>7.1} ms  p99 {:>7.1} ms  (all in {:.2} s)",
        ids.len(),
        ids.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        elapsed.as_secs_f64()
    );

    // 2. One small app at a time.
    let mut single = Vec::new();
    for a in 0..200 {
        let name = format!("small-{a}");
        let start = Instant::now();
        api.apply(&name, 1, digest).await;
        let id = replica(&name, 0);
        wait_running(
            &running_at,
            std::slice::from_ref(&id),
            Duration::from_secs(30),
        )
        .await;
        single.push(running_at.lock().unwrap()[&id].duration_since(start));
    }
    single.sort();
    println!(
        "{hosts:>5} hosts, one 1-replica app at a time (200 apps): apply->running p50 {:>6.1} ms  p99 {:>6.1} ms",
        percentile(&single, 0.50).as_secs_f64() * 1e3,
        percentile(&single, 0.99).as_secs_f64() * 1e3,
    );
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("placement bench: run with `cargo bench -p shoal-scheduler --bench placement`");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let component = std::fs::read(root.join("target/wasm/echo-worker.wasm"))
        .expect("target/wasm/echo-worker.wasm: build the examples with scripts/build-examples");
    let hosts: Vec<usize> = std::env::var("SHOAL_BENCH_HOSTS")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .map(|s| s.trim().parse().unwrap())
        .collect();
    let replicas: usize = std::env::var("SHOAL_BENCH_REPLICAS")
        .map(|s| s.parse().unwrap())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    for n in hosts {
        rt.block_on(scenario(n, replicas, &component));
    }
}
