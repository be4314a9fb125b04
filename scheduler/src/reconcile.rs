//! The reconciler: compares desired replicas (apps) with observed ones
//! (heartbeats) and decides what to start and stop.
//!
//! Level-triggered and idempotent: each pass looks at the whole picture and
//! decides afresh, so a missed command or a lost message is mended by the
//! next pass. Replicas are numbered `0..replicas` per pod, so "what is
//! missing" and "what is extra" are set differences.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use shoal_api::resources::Event;
use shoal_api::wire::{HostId, PodComponent, ReplicaId, ReplicaState, StartReplica};
use shoal_api::{AppSpec, Digest, Name, SecretValue, subjects};

use crate::placement::{Candidate, Need, choose};
use crate::state::{App, Starting, State, event};
use crate::tunables::START_CONFIRM_TIMEOUT;

/// Something to tell a host.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start (or replace with a new revision) a replica.
    Start {
        /// Where.
        host: HostId,
        /// What.
        replica: StartReplica,
    },
    /// Stop a replica.
    Stop {
        /// Where.
        host: HostId,
        /// Which.
        id: ReplicaId,
        /// Why, for the event.
        reason: String,
    },
}

/// One pass's decisions.
#[derive(Debug, Default)]
pub struct Pass {
    /// Commands to send.
    pub actions: Vec<Action>,
    /// Events to publish (already remembered in the state).
    pub events: Vec<Event>,
}

/// A replica seen on a host (or being started there).
#[derive(Debug, Clone)]
struct Seen {
    host: HostId,
    revision: u64,
    running: bool,
    rejoined: bool,
}

/// Decides one pass. Mutates `state` only for bookkeeping: starts sent are
/// reserved, pending reasons and lost hosts recorded.
pub fn plan(state: &mut State, now: Instant) -> Pass {
    let mut pass = Pass::default();
    mark_lost_hosts(state, now, &mut pass);

    // Observed replicas on live hosts. Failed ones are cleaned up and count
    // as missing.
    let mut seen: HashMap<ReplicaId, Vec<Seen>> = HashMap::new();
    let mut failed: Vec<(HostId, ReplicaId, String)> = Vec::new();
    for (id, host) in &state.hosts {
        if !host.is_live(now) {
            continue;
        }
        for r in &host.heartbeat.replicas {
            match &r.state {
                ReplicaState::Failed { reason } => {
                    failed.push((id.clone(), r.id.clone(), reason.clone()));
                }
                state => seen.entry(r.id.clone()).or_default().push(Seen {
                    host: id.clone(),
                    revision: r.revision,
                    running: matches!(state, ReplicaState::Running),
                    rejoined: host.rejoined.is_some(),
                }),
            }
        }
    }
    for (host, id, reason) in failed {
        if app_of(state, &id).is_some() {
            let e = event(
                &id.namespace,
                &id.app,
                "failed",
                format!("{id} failed on {host}: {reason}"),
            );
            remember(state, &mut pass, e);
        }
        state
            .backoff
            .insert(id.clone(), now + crate::tunables::START_RETRY_BACKOFF);
        pass.actions.push(Action::Stop {
            host,
            id,
            reason: "failed".into(),
        });
    }

    // Starts in flight count as seen until a heartbeat confirms them or
    // they time out.
    state.starting.retain(|id, s| {
        let confirmed = seen.get(id).is_some_and(|v| {
            v.iter()
                .any(|x| x.host == s.host && x.revision == s.revision)
        });
        let host_live = state.hosts.get(&s.host).is_some_and(|h| h.is_live(now));
        !confirmed && host_live && now.duration_since(s.since) < START_CONFIRM_TIMEOUT
    });
    for (id, s) in &state.starting {
        let list = seen.entry(id.clone()).or_default();
        if !list.iter().any(|x| x.host == s.host) {
            list.push(Seen {
                host: s.host.clone(),
                revision: s.revision,
                running: false,
                rejoined: false,
            });
        }
    }
    state.backoff.retain(|_, until| *until > now);

    let mut candidates = candidates(state, now);

    let apps: Vec<(String, App)> = state
        .apps
        .iter()
        .map(|(k, a)| (k.clone(), a.clone()))
        .collect();
    let mut desired: std::collections::HashSet<ReplicaId> = std::collections::HashSet::new();
    for (key, app) in &apps {
        let spec = &app.stored.spec;
        for pod in spec.pods() {
            let replicas = state.replicas_of(key, &pod);
            let mut pod_on_host: HashMap<HostId, u32> = HashMap::new();
            for i in 0..replicas {
                if let Some(list) = seen.get(&replica_id(spec, &pod.name, i)) {
                    for s in list {
                        *pod_on_host.entry(s.host.clone()).or_default() += 1;
                    }
                }
            }
            let memory = pod.memory();
            let generation = app.stored.generation(&pod.name);
            // Labels and spread: the union over the pod's components.
            let mut labels = BTreeMap::new();
            let mut spread = None;
            for (_, c) in &pod.components {
                labels.extend(c.placement.labels.clone());
                spread = spread.or(c.placement.spread.as_deref());
            }
            for i in 0..replicas {
                let id = replica_id(spec, &pod.name, i);
                desired.insert(id.clone());
                let list = seen.get(&id).cloned().unwrap_or_default();
                let current: Vec<&Seen> =
                    list.iter().filter(|s| s.revision == generation).collect();
                if let Some(keep) = best(&current) {
                    // Keep one copy of the current revision; stop the rest.
                    for s in &list {
                        if s.host != keep.host {
                            pass.actions.push(Action::Stop {
                                host: s.host.clone(),
                                id: id.clone(),
                                reason: format!("duplicate of the copy on {}", keep.host),
                            });
                        }
                    }
                    state.pending.remove(&id);
                    continue;
                }
                if let Some(old) = best(&list.iter().collect::<Vec<_>>()) {
                    // An older revision: replace it where it runs.
                    let replica =
                        start_replica(app, generation, &pod.components, &id, &state.secrets);
                    for s in &list {
                        if s.host != old.host {
                            pass.actions.push(Action::Stop {
                                host: s.host.clone(),
                                id: id.clone(),
                                reason: "superseded".into(),
                            });
                        }
                    }
                    state.starting.insert(
                        id.clone(),
                        Starting {
                            host: old.host.clone(),
                            revision: generation,
                            memory,
                            since: now,
                        },
                    );
                    pass.actions.push(Action::Start {
                        host: old.host.clone(),
                        replica,
                    });
                    continue;
                }
                if state.backoff.contains_key(&id) {
                    continue;
                }
                let need = Need {
                    memory,
                    labels: &labels,
                    spread,
                    pod_on_host: &pod_on_host,
                };
                match choose(&candidates, &need) {
                    Ok(chosen) => {
                        let host = candidates[chosen].id.clone();
                        candidates[chosen].used_memory += memory;
                        candidates[chosen].used_slots += 1;
                        *pod_on_host.entry(host.clone()).or_default() += 1;
                        state.pending.remove(&id);
                        state.starting.insert(
                            id.clone(),
                            Starting {
                                host: host.clone(),
                                revision: generation,
                                memory,
                                since: now,
                            },
                        );
                        pass.actions.push(Action::Start {
                            host,
                            replica: start_replica(
                                app,
                                generation,
                                &pod.components,
                                &id,
                                &state.secrets,
                            ),
                        });
                    }
                    Err(reason) => {
                        if state.pending.get(&id) != Some(&reason) {
                            let e = event(
                                &id.namespace,
                                &id.app,
                                "pending",
                                format!("{id} pending: {reason}"),
                            );
                            remember(state, &mut pass, e);
                            state.pending.insert(id.clone(), reason);
                        }
                    }
                }
            }
        }
    }

    // Replicas nobody wants any more.
    for (id, list) in &seen {
        if desired.contains(id) {
            continue;
        }
        for s in list {
            if state.starting.get(id).is_some_and(|st| st.host == s.host) {
                state.starting.remove(id);
            }
            pass.actions.push(Action::Stop {
                host: s.host.clone(),
                id: id.clone(),
                reason: "no longer wanted".into(),
            });
        }
    }
    state.pending.retain(|id, _| desired.contains(id));
    pass
}

fn remember(state: &mut State, pass: &mut Pass, e: Event) {
    state.remember(e.clone());
    pass.events.push(e);
}

fn app_of<'a>(state: &'a State, id: &ReplicaId) -> Option<&'a App> {
    state
        .apps
        .get(&shoal_api::subjects::app_key(&id.namespace, &id.app))
}

/// Hosts silent too long are lost: say so once per host.
fn mark_lost_hosts(state: &mut State, now: Instant, pass: &mut Pass) {
    let mut lost = Vec::new();
    for (id, host) in state.hosts.iter_mut() {
        if !host.lost && !host.is_live(now) {
            host.lost = true;
            lost.push((id.clone(), host.heartbeat.replicas.clone()));
        }
    }
    for (host, replicas) in lost {
        tracing::warn!(%host, "host lost: no heartbeat for {:?}", crate::tunables::HOST_TIMEOUT);
        for r in replicas {
            let e = event(
                &r.id.namespace,
                &r.id.app,
                "host_lost",
                format!("{} lost with host {host}: placing it elsewhere", r.id),
            );
            remember(state, pass, e);
        }
    }
}

/// The copy to keep: running before starting, a host that never left
/// before one that rejoined, then by host id for a stable choice.
fn best<'a>(list: &[&'a Seen]) -> Option<&'a Seen> {
    list.iter()
        .min_by_key(|s| (!s.running, s.rejoined, s.host.clone()))
        .copied()
}

/// Live hosts with what they hold, starts in flight included.
fn candidates(state: &State, now: Instant) -> Vec<Candidate> {
    let mut extra: HashMap<&HostId, (u64, u32)> = HashMap::new();
    for (id, s) in &state.starting {
        let in_heartbeat = state
            .hosts
            .get(&s.host)
            .is_some_and(|h| h.heartbeat.replicas.iter().any(|r| &r.id == id));
        if !in_heartbeat {
            let e = extra.entry(&s.host).or_default();
            e.0 += s.memory;
            e.1 += 1;
        }
    }
    let mut out: Vec<Candidate> = state
        .hosts
        .iter()
        .filter(|(_, h)| h.is_live(now))
        .map(|(id, h)| {
            let (mem, slots) = extra.get(id).copied().unwrap_or_default();
            Candidate {
                id: id.clone(),
                labels: h.heartbeat.labels.clone(),
                memory: h.heartbeat.capacity.memory,
                used_memory: h.heartbeat.used_memory() + mem,
                slots: h.heartbeat.capacity.slots,
                used_slots: h.heartbeat.replicas.len() as u32 + slots,
            }
        })
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

/// The id of replica `index` of `pod`.
pub fn replica_id(spec: &AppSpec, pod: &Name, index: u32) -> ReplicaId {
    ReplicaId {
        namespace: spec.namespace.clone(),
        app: spec.name.clone(),
        pod: pod.clone(),
        index,
    }
}

fn start_replica(
    app: &App,
    generation: u64,
    components: &[(&Name, &shoal_api::ComponentSpec)],
    id: &ReplicaId,
    secrets: &HashMap<String, SecretValue>,
) -> StartReplica {
    let spec = &app.stored.spec;
    StartReplica {
        id: id.clone(),
        revision: generation,
        components: components
            .iter()
            .filter_map(|(name, c)| {
                let digest: Digest = *app.stored.digests.get(*name)?;
                // Only the secrets this component lists, and only those set.
                let values = c
                    .secrets
                    .iter()
                    .filter_map(|s| {
                        secrets
                            .get(&subjects::app_key(&spec.namespace, s))
                            .map(|v| (s.clone(), v.clone()))
                    })
                    .collect();
                Some(PodComponent {
                    name: (*name).clone(),
                    digest,
                    spec: (*c).clone(),
                    secrets: values,
                })
            })
            .collect(),
        volumes: spec
            .volumes
            .iter()
            .filter(|(v, _)| {
                components
                    .iter()
                    .any(|(_, c)| c.volumes.iter().any(|m| &m.name == *v))
            })
            .map(|(v, s)| (v.clone(), s.clone()))
            .collect(),
    }
}
