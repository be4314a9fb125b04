//! Heartbeats: what this host tells the cluster every
//! [`HEARTBEAT_INTERVAL`] and soon after any change (within
//! [`HEARTBEAT_MIN_GAP`] of the beat before), and which other hosts it
//! hears beating.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use shoal_api::beats::{BEAT_HEADER, BeatContent};
use shoal_api::subjects;
use shoal_api::wire::{HEARTBEAT_INTERVAL, HEARTBEAT_MIN_GAP, Heartbeat, HostId, ReplicaStatus};
use tokio::sync::watch;

use super::{Agent, next_or_stop};

impl Agent {
    /// What this host reports now: its capacity and its replicas (each
    /// with the load since the previous beat), as the beats to send
    /// ([`shoal_api::beats`]: one, or a snapshot's pages).
    pub(super) fn heartbeats(&self) -> Vec<Heartbeat> {
        let now = std::time::Instant::now();
        let replicas: Vec<ReplicaStatus> = self
            .replicas()
            .iter_mut()
            .map(|((id, revision), r)| ReplicaStatus {
                id: id.clone(),
                revision: *revision,
                memory: r.memory,
                state: r.status.state.clone(),
                ready: r.status.ready,
                restarts: r.status.restarts,
                last_error: r.status.last_error.clone(),
                load_milli: r.status.load_milli(now),
                stats: r.status.components.iter().fold(
                    shoal_api::top::ReplicaStats::default(),
                    |mut sum, c| {
                        sum.add(&c.work());
                        sum
                    },
                ),
            })
            .collect();
        let header = Heartbeat {
            host: self.config.id.clone(),
            labels: self.config.labels.clone(),
            capacity: self.config.capacity,
            http: self.http.clone(),
            started_at_ms: self.started_at_ms,
            replicas: Vec::new(),
            draining: self.draining.load(Ordering::Relaxed),
            seal_key: Some(self.config.sealing_key.public_key()),
            epoch: self.epoch.load(Ordering::Acquire),
            seq: 0,
            content: BeatContent::Full,
            stopped: Vec::new(),
            total: 0,
            digest: 0,
            shadows: self.routes.shadow_reports(),
        };
        self.beats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .beats(&header, replicas, now)
    }
}

/// Publishes the heartbeat now (a snapshot's pages one after the other).
/// While NATS is away this fails; replicas keep running, and receivers
/// that missed beats ask for a snapshot once it is back.
pub(super) async fn publish_heartbeat(agent: &Agent) {
    let subject = subjects::heartbeat(agent.config.id.as_str());
    let beats = agent.heartbeats();
    let m = &agent.metrics;
    let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    m.memory_offered.set(gauge(agent.config.capacity.memory));
    m.memory_used.set(gauge(agent.used_memory()));
    m.slots_offered.set(i64::from(agent.config.capacity.slots));
    m.slots_used.set(gauge(agent.replicas().len() as u64));
    m.log_lines_dropped.set(gauge(agent.logs.dropped()));
    for beat in beats {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(BEAT_HEADER, beat.content.header());
        match serde_json::to_vec(&beat) {
            Ok(payload) => {
                if let Err(e) = agent
                    .nats
                    .publish_with_headers(subject.clone(), headers, payload.into())
                    .await
                {
                    tracing::debug!(error = %e, "heartbeat not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the heartbeat"),
        }
    }
}

/// Sends a snapshot when a receiver that lost track asks for one.
pub(super) async fn answer_resyncs(
    agent: Arc<Agent>,
    mut requests: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while next_or_stop(&mut requests, &mut stop).await.is_some() {
        agent.want_snapshot();
    }
}

pub(super) async fn heartbeats(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    loop {
        publish_heartbeat(&agent).await;
        let sent = tokio::time::Instant::now();
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {},
            () = async {
                agent.beat.notified().await;
                tokio::time::sleep_until(sent + HEARTBEAT_MIN_GAP).await;
            } => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Notes which other hosts heartbeat: somewhere for this host's replicas
/// to go when it drains. The subject says who; the beat is not read.
pub(super) async fn watch_peers(
    agent: Arc<Agent>,
    mut heartbeats: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(msg) = next_or_stop(&mut heartbeats, &mut stop).await {
        let host = msg
            .subject
            .strip_prefix(subjects::HOSTS_PREFIX)
            .and_then(|rest| rest.strip_suffix(subjects::HEARTBEAT_SUFFIX))
            .and_then(|id| HostId::new(id).ok());
        if let Some(host) = host {
            agent.routes.observe_peer(&host);
        }
    }
}
