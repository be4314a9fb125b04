//! What one host's heartbeats cost the control plane today, by how many
//! replicas the host runs: the bytes of one beat, and the bytes a second
//! at the steady rate of one beat a second and at the burst rate of one
//! beat per `HEARTBEAT_MIN_GAP`. Every scheduler and every host reads
//! every host's beats, so a cluster's control traffic is this times the
//! hosts, times the readers.
//!
//! Each replica is an http component with its own route and a week of
//! traffic in its duration histogram, as an idle app of a dense host
//! looks. `cargo bench -p shoal-api --bench heartbeat_size`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use shoal_api::Name;
use shoal_api::top::{DURATION_BUCKETS, ReplicaStats};
use shoal_api::wire::{
    Capacity, HEARTBEAT_INTERVAL, HEARTBEAT_MIN_GAP, Heartbeat, HostId, HttpRoute, ReplicaId,
    ReplicaState, ReplicaStatus,
};

fn heartbeat(replicas: usize) -> Heartbeat {
    let name = |s: String| Name::new(s).unwrap();
    let mut beat = Heartbeat {
        host: HostId::new("host-0001").unwrap(),
        labels: BTreeMap::from([("zone".to_string(), "eu-west-1a".to_string())]),
        capacity: Capacity {
            memory: 256 << 30,
            slots: 20_000,
        },
        http: Some("10.0.0.1:8080".to_string()),
        started_at_ms: 1_795_000_000_000,
        replicas: Vec::new(),
        routes: Vec::new(),
        draining: false,
        seal_key: Some("x".repeat(44)),
        epoch: 7,
        seq: 0,
        content: Default::default(),
        stopped: Vec::new(),
        total: 0,
        digest: 0,
    };
    for i in 0..replicas {
        let app = name(format!("app-{i:05}"));
        beat.replicas.push(ReplicaStatus {
            id: ReplicaId {
                namespace: name("default".into()),
                app: app.clone(),
                pod: name("web".into()),
                index: 0,
            },
            revision: 3,
            memory: 32 << 20,
            state: ReplicaState::Running,
            ready: true,
            restarts: 0,
            last_error: None,
            load_milli: 0,
            stats: ReplicaStats {
                invocations: 123_456,
                errors: 12,
                fuel: 9_876_543_210,
                peak_memory: 1 << 20,
                durations: (0..DURATION_BUCKETS as u64).map(|b| b * 1_000).collect(),
            },
        });
        beat.routes.push(HttpRoute {
            prefix: format!("/apps/{i:05}"),
            host: None,
            namespace: name("default".into()),
            app,
            component: name("web".into()),
            ready: true,
        });
    }
    beat
}

fn main() {
    println!(
        "{:>8} {:>14} {:>16} {:>18}",
        "replicas", "bytes a beat", "bytes/s steady", "bytes/s at most"
    );
    let steady = 1.0 / HEARTBEAT_INTERVAL.as_secs_f64();
    let most = 1.0 / HEARTBEAT_MIN_GAP.as_secs_f64();
    for replicas in [10, 256, 1_000, 10_000] {
        let bytes = serde_json::to_vec(&heartbeat(replicas)).unwrap().len() as f64;
        println!(
            "{replicas:>8} {:>14} {:>16} {:>18}",
            human(bytes),
            human(bytes * steady),
            human(bytes * most)
        );
    }
}

fn human(bytes: f64) -> String {
    if bytes >= (1 << 20) as f64 {
        format!("{:.1} MiB", bytes / (1 << 20) as f64)
    } else {
        format!("{:.1} KiB", bytes / 1024.0)
    }
}
