//! Values the unit tests build over and over: replicas as hosts report
//! them and the heartbeats that carry them.

use std::collections::BTreeMap;

use shoal_api::Name;
use shoal_api::wire::{Capacity, Heartbeat, HostId, ReplicaId, ReplicaState, ReplicaStatus};

/// Replica `index` of pod `pod` of `app` in namespace `default`.
pub(crate) fn replica_id(app: &str, pod: &str, index: u32) -> ReplicaId {
    ReplicaId {
        namespace: Name::new("default").unwrap(),
        app: Name::new(app).unwrap(),
        pod: Name::new(pod).unwrap(),
        index,
    }
}

/// A copy of `id` at `revision`, running, ready as said, 64 MiB, idle.
pub(crate) fn running(id: ReplicaId, revision: u64, ready: bool) -> ReplicaStatus {
    ReplicaStatus {
        id,
        revision,
        memory: 64 << 20,
        state: ReplicaState::Running,
        ready,
        restarts: 0,
        last_error: None,
        load_milli: 0,
        stats: Default::default(),
    }
}

/// Host `host`'s heartbeat reporting `replicas`: 64 GiB and 100 slots, no
/// labels.
pub(crate) fn heartbeat(host: &str, mut replicas: Vec<ReplicaStatus>) -> Heartbeat {
    // In order, as a `BeatReader` keeps a host's picture.
    replicas.sort_by(|a, b| (&a.id, a.revision).cmp(&(&b.id, b.revision)));
    Heartbeat {
        host: HostId::new(host).unwrap(),
        labels: BTreeMap::new(),
        capacity: Capacity {
            memory: 64 << 30,
            slots: 100,
        },
        http: None,
        started_at_ms: 0,
        replicas,
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

/// An app stored from its spec's text, every component's bytes `b"web"`.
pub(crate) fn stored_app(text: &str) -> crate::state::StoredApp {
    let spec = shoal_api::AppSpec::from_toml(text, "app.toml").unwrap();
    let digests = spec
        .components
        .keys()
        .map(|n| (n.clone(), shoal_api::Digest::of(b"web")))
        .collect();
    crate::state::StoredApp {
        spec,
        digests,
        file: "app.toml".into(),
        generations: BTreeMap::new(),
        templates: BTreeMap::new(),
        cause: String::new(),
        number: 0,
        canary_base: BTreeMap::new(),
        promotes: None,
    }
    .with_generations(None)
}
