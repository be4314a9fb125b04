//! Tools for control-plane drills: which scheduler leads, API calls to a
//! chosen scheduler, and a watch of every host heartbeat that notices a
//! replica running twice.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use futures::StreamExt;
use shoal_api::resources::SchedulerInfo;
use shoal_api::wire::{Heartbeat, ReplicaState};

use crate::{HttpReply, http_post_json_as, http_request_as};

/// How long one API call may take.
pub const CALL_LIMIT: Duration = Duration::from_secs(10);

/// The API address of the scheduler on `port`.
pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `GET path` on the scheduler at `port`, as `token`.
pub fn get(port: u16, token: &str, path: &str) -> anyhow::Result<HttpReply> {
    http_request_as(addr(port), token, "GET", path, CALL_LIMIT)
}

/// `POST path` with a JSON body on the scheduler at `port`, as `token`.
pub fn post(
    port: u16,
    token: &str,
    path: &str,
    body: &serde_json::Value,
) -> anyhow::Result<HttpReply> {
    http_post_json_as(addr(port), token, path, body, CALL_LIMIT)
}

/// The schedulers as the one on `port` lists them.
pub fn schedulers(port: u16, token: &str) -> anyhow::Result<Vec<SchedulerInfo>> {
    let reply = get(port, token, "/v1/schedulers")?;
    if reply.status != 200 {
        return Err(anyhow!(
            "GET /v1/schedulers: {} {}",
            reply.status,
            reply.body
        ));
    }
    serde_json::from_str(&reply.body).with_context(|| reply.body.clone())
}

/// The API port and epoch of the leader, as the scheduler on `port` sees
/// it.
pub fn leader(port: u16, token: &str) -> anyhow::Result<Option<(u16, u64)>> {
    Ok(schedulers(port, token)?.into_iter().find_map(|s| {
        let port = s.api.rsplit(':').next()?.parse().ok()?;
        Some((port, s.epoch?)).filter(|_| s.leader)
    }))
}

/// A replica copy: replica id and revision.
pub type Copy = (String, u64);

#[derive(Default)]
struct Seen {
    /// Each host's copies that start or run, by its last heartbeat, and
    /// when that heartbeat arrived.
    hosts: BTreeMap<String, (Instant, BTreeSet<Copy>)>,
    /// Copies on more than one host at once, described.
    twice: Vec<String>,
    /// When each copy was first seen.
    first_seen: BTreeMap<Copy, Instant>,
}

/// Every host heartbeat, followed on a thread of its own.
pub struct HeartbeatWatch {
    seen: Arc<Mutex<Seen>>,
    _runtime: tokio::runtime::Runtime,
}

/// A heartbeat older than this no longer counts: its host is gone.
const BEAT_FRESH: Duration = Duration::from_secs(3);

impl HeartbeatWatch {
    /// Subscribes to every heartbeat with `client`'s runtime `runtime`.
    pub fn start(nats: &crate::cluster::Nats) -> anyhow::Result<HeartbeatWatch> {
        let runtime = tokio::runtime::Runtime::new()?;
        let client = runtime.block_on(nats.admin())?;
        let mut sub = runtime.block_on(client.subscribe(shoal_api::subjects::ALL_HEARTBEATS))?;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let shared = seen.clone();
        runtime.spawn(async move {
            let _client = client;
            while let Some(msg) = sub.next().await {
                let Ok(hb) = serde_json::from_slice::<Heartbeat>(&msg.payload) else {
                    continue;
                };
                let copies: BTreeSet<Copy> = hb
                    .replicas
                    .iter()
                    .filter(|r| matches!(r.state, ReplicaState::Running | ReplicaState::Starting))
                    .map(|r| (r.id.to_string(), r.revision))
                    .collect();
                let now = Instant::now();
                let mut seen = shared.lock().unwrap_or_else(|p| p.into_inner());
                for c in &copies {
                    seen.first_seen.entry(c.clone()).or_insert(now);
                }
                let host = hb.host.to_string();
                let elsewhere: Vec<String> = seen
                    .hosts
                    .iter()
                    .filter(|(h, (at, _))| **h != host && now.duration_since(*at) < BEAT_FRESH)
                    .flat_map(|(h, (_, theirs))| {
                        copies
                            .intersection(theirs)
                            .map(|(id, rev)| format!("{id} revision {rev} on {host} and {h}"))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                seen.twice.extend(elsewhere);
                seen.hosts.insert(host, (now, copies));
            }
        });
        Ok(HeartbeatWatch {
            seen,
            _runtime: runtime,
        })
    }

    /// Every time a copy ran on two hosts at once.
    pub fn twice(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .twice
            .clone()
    }

    /// The copies that start or run now, by every host's last heartbeat.
    pub fn current(&self) -> Vec<Copy> {
        let now = Instant::now();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hosts
            .values()
            .filter(|(at, _)| now.duration_since(*at) < BEAT_FRESH)
            .flat_map(|(_, copies)| copies.iter().cloned())
            .collect()
    }

    /// When the first copy not seen before `after` appeared, if one did.
    pub fn first_new_copy_after(&self, after: Instant) -> Option<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_seen
            .values()
            .filter(|t| **t > after)
            .min()
            .copied()
    }
}
