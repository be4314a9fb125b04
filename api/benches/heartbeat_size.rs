//! What one host's heartbeats cost the control plane, by how many
//! replicas the host runs, side by side: every replica in every beat (as
//! Shoal did before bounded beats) against the beats a host sends now
//! ([`shoal_api::beats`]): changes, at most a page a beat, and a snapshot
//! every `SNAPSHOT_INTERVAL`. For each: the largest beat, the bytes a
//! second of an idle host, and of a host whose every replica's figures
//! change on every beat at the burst rate (one beat per
//! `HEARTBEAT_MIN_GAP`). Every scheduler reads every host's beats, so a
//! cluster's control traffic is this times the hosts, times the schedulers.
//!
//! Each replica is an http component with a week of traffic in its
//! duration histogram, as an idle app of a dense host looks.
//! `cargo bench -p shoal-api --bench heartbeat_size`.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use shoal_api::Name;
use shoal_api::top::{DURATION_BUCKETS, ReplicaStats};
use std::time::{Duration, Instant};

use shoal_api::beats::{BeatWriter, SNAPSHOT_INTERVAL};
use shoal_api::wire::{
    Capacity, HEARTBEAT_INTERVAL, HEARTBEAT_MIN_GAP, Heartbeat, HostId, ReplicaId, ReplicaState,
    ReplicaStatus,
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
        draining: false,
        seal_key: Some("x".repeat(44)),
        epoch: 7,
        seq: 0,
        content: Default::default(),
        stopped: Vec::new(),
        total: 0,
        digest: 0,
        shadows: Vec::new(),
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
    }
    beat
}

/// What `beats` weigh, in bytes: the largest and all together.
fn weigh(beats: &[Heartbeat]) -> (usize, usize) {
    let sizes: Vec<usize> = beats
        .iter()
        .map(|b| serde_json::to_vec(b).unwrap().len())
        .collect();
    (sizes.iter().copied().max().unwrap_or(0), sizes.iter().sum())
}

/// Bytes a second of a host sending `beats_per_second` for a snapshot
/// interval, its replicas' figures changing each beat when `busy`, and
/// the largest beat it sent.
fn bounded(replicas: usize, beats_per_second: f64, busy: bool) -> (usize, f64) {
    let full = heartbeat(replicas);
    let header = Heartbeat {
        replicas: Vec::new(),
        ..full.clone()
    };
    let mut now = full.replicas;
    let mut writer = BeatWriter::new();
    let start = Instant::now();
    let gap = Duration::from_secs_f64(1.0 / beats_per_second);
    let beats = (SNAPSHOT_INTERVAL.as_secs_f64() * beats_per_second) as u32;
    let (mut largest, mut total) = (0, 0);
    for i in 0..beats {
        if busy {
            for r in &mut now {
                r.stats.invocations += 1;
            }
        }
        let (big, sum) = weigh(&writer.beats(&header, now.clone(), start + gap * i));
        largest = largest.max(big);
        total += sum;
    }
    (largest, total as f64 / SNAPSHOT_INTERVAL.as_secs_f64())
}

fn main() {
    println!(
        "{:>8} | {:>10} {:>12} {:>12} | {:>10} {:>12} {:>12}",
        "", "before:", "", "", "now:", "", ""
    );
    println!(
        "{:>8} | {:>10} {:>12} {:>12} | {:>10} {:>12} {:>12}",
        "replicas", "largest", "idle/s", "busy/s", "largest", "idle/s", "busy/s"
    );
    let steady = 1.0 / HEARTBEAT_INTERVAL.as_secs_f64();
    let most = 1.0 / HEARTBEAT_MIN_GAP.as_secs_f64();
    for replicas in [10, 256, 1_000, 10_000] {
        let bytes = serde_json::to_vec(&heartbeat(replicas)).unwrap().len() as f64;
        let (idle_largest, idle) = bounded(replicas, steady, false);
        let (busy_largest, busy) = bounded(replicas, most, true);
        println!(
            "{replicas:>8} | {:>10} {:>12} {:>12} | {:>10} {:>12} {:>12}",
            human(bytes),
            human(bytes * steady),
            human(bytes * most),
            human(idle_largest.max(busy_largest) as f64),
            human(idle),
            human(busy),
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
