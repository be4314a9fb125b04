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
use crate::state::{App, Rollout, Starting, State, event};
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
    /// Stop a replica's copy at one revision.
    Stop {
        /// Where.
        host: HostId,
        /// Which.
        id: ReplicaId,
        /// The copy's revision.
        revision: u64,
        /// Why, for the event.
        reason: String,
    },
}

/// A rollout that made no progress for its deadline: go back to the
/// revision before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// The app's key.
    pub app: String,
    /// The stored revision that stalled.
    pub revision: u64,
    /// What stalled, in words.
    pub reason: String,
}

/// One pass's decisions.
#[derive(Debug, Default)]
pub struct Pass {
    /// Commands to send.
    pub actions: Vec<Action>,
    /// Events to publish (already remembered in the state).
    pub events: Vec<Event>,
    /// Rollouts to undo.
    pub rollbacks: Vec<Rollback>,
}

/// A replica copy seen on a host (or being started there).
#[derive(Debug, Clone)]
struct Seen {
    host: HostId,
    revision: u64,
    running: bool,
    /// Takes work, or (a job) completed: what a rollout waits for.
    ready: bool,
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
    let mut failed: Vec<(HostId, ReplicaId, u64, String)> = Vec::new();
    for (id, host) in &state.hosts {
        if !host.is_live(now) {
            continue;
        }
        for r in &host.heartbeat.replicas {
            match &r.state {
                ReplicaState::Failed { reason } => {
                    failed.push((id.clone(), r.id.clone(), r.revision, reason.clone()));
                }
                state => seen.entry(r.id.clone()).or_default().push(Seen {
                    host: id.clone(),
                    revision: r.revision,
                    running: matches!(state, ReplicaState::Running),
                    ready: (r.ready && matches!(state, ReplicaState::Running))
                        || matches!(state, ReplicaState::Completed),
                    rejoined: host.rejoined.is_some(),
                }),
            }
        }
    }
    for (host, id, revision, reason) in failed {
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
            revision,
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
        if !list
            .iter()
            .any(|x| x.host == s.host && x.revision == s.revision)
        {
            list.push(Seen {
                host: s.host.clone(),
                revision: s.revision,
                running: false,
                ready: false,
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
            let rollout = pod.rollout();
            let slots: Vec<(ReplicaId, Vec<Seen>)> = (0..replicas)
                .map(|i| {
                    let id = replica_id(spec, &pod.name, i);
                    let list = seen.get(&id).cloned().unwrap_or_default();
                    (id, list)
                })
                .collect();
            // What the rollout budget allows: new copies beside old ones,
            // and slots with no ready copy at all.
            let mut surging = slots
                .iter()
                .filter(|(_, l)| {
                    l.iter().any(|s| s.revision == generation)
                        && l.iter().any(|s| s.revision != generation)
                })
                .count() as u32;
            let mut unavailable = slots
                .iter()
                .filter(|(_, l)| !l.iter().any(|s| s.ready))
                .count() as u32;
            let mut rolling = 0u32;
            let mut updated_ready = 0u32;
            for (id, list) in slots {
                desired.insert(id.clone());
                let current: Vec<&Seen> =
                    list.iter().filter(|s| s.revision == generation).collect();
                let old: Vec<&Seen> = list.iter().filter(|s| s.revision != generation).collect();
                if let Some(keep) = best(&current) {
                    // Keep one copy of the current revision; stop other
                    // copies of it, and old ones once it is ready.
                    for s in &current {
                        if s.host != keep.host {
                            pass.actions.push(Action::Stop {
                                host: s.host.clone(),
                                id: id.clone(),
                                revision: s.revision,
                                reason: format!("duplicate of the copy on {}", keep.host),
                            });
                        }
                    }
                    if keep.ready {
                        updated_ready += 1;
                        for s in &old {
                            pass.actions.push(Action::Stop {
                                host: s.host.clone(),
                                id: id.clone(),
                                revision: s.revision,
                                reason: format!("replaced by revision {generation}"),
                            });
                        }
                    } else if !old.is_empty() {
                        rolling += 1;
                    }
                    state.pending.remove(&id);
                    continue;
                }
                if let Some(old_copy) = best(&old) {
                    // An older revision runs here: replace it within the
                    // rollout's budget.
                    rolling += 1;
                    let replace_in_place = if !old_copy.ready {
                        true
                    } else if surging < rollout.max_surge {
                        surging += 1;
                        false
                    } else if unavailable < rollout.max_unavailable {
                        unavailable += 1;
                        true
                    } else {
                        continue;
                    };
                    let host = if replace_in_place {
                        for s in &old {
                            pass.actions.push(Action::Stop {
                                host: s.host.clone(),
                                id: id.clone(),
                                revision: s.revision,
                                reason: format!("replaced by revision {generation}"),
                            });
                        }
                        Some(old_copy.host.clone())
                    } else {
                        // A surge copy: beside the old one if it fits there.
                        let need = Need {
                            memory,
                            labels: &labels,
                            spread,
                            pod_on_host: &pod_on_host,
                        };
                        let here = candidates.iter().position(|c| c.id == old_copy.host);
                        let fits_here = here.is_some_and(|i| {
                            choose(std::slice::from_ref(&candidates[i]), &need).is_ok()
                        });
                        match (here, fits_here) {
                            (Some(i), true) => Some(candidates[i].id.clone()),
                            _ => choose(&candidates, &need)
                                .ok()
                                .map(|i| candidates[i].id.clone()),
                        }
                    };
                    let Some(host) = host else {
                        surging = surging.saturating_sub(1);
                        continue;
                    };
                    if let Some(c) = candidates.iter_mut().find(|c| c.id == host) {
                        c.used_memory += memory;
                        c.used_slots += 1;
                    }
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
            track_rollout(
                state,
                &mut pass,
                (key, app),
                &pod.name,
                generation,
                &rollout,
                (rolling, updated_ready),
                now,
            );
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
                revision: s.revision,
                reason: "no longer wanted".into(),
            });
        }
    }
    state.pending.retain(|id, _| desired.contains(id));
    state.rollouts.retain(|(key, pod), _| {
        state
            .apps
            .get(key)
            .is_some_and(|a| a.stored.spec.pods().iter().any(|p| &p.name == pod))
    });
    pass
}

/// Follows a pod's rollout: announces it, notices progress, and asks for a
/// rollback when none was made for the progress deadline. `rolling` counts
/// slots still running an old copy; `updated_ready` slots whose current
/// copy is ready.
#[allow(clippy::too_many_arguments)]
fn track_rollout(
    state: &mut State,
    pass: &mut Pass,
    (key, app): (&String, &App),
    pod: &Name,
    generation: u64,
    rollout: &shoal_api::RolloutSpec,
    (rolling, updated_ready): (u32, u32),
    now: Instant,
) {
    let spec = &app.stored.spec;
    let slot = (key.clone(), pod.clone());
    if rolling == 0 {
        if let Some(done) = state.rollouts.remove(&slot)
            && !done.rolled_back
            && done.generation == generation
        {
            let e = event(
                &spec.namespace,
                &spec.name,
                "rollout_complete",
                format!(
                    "pod {pod} rolled out to generation {generation} (revision {})",
                    app.revision
                ),
            );
            remember(state, pass, e);
        }
        return;
    }
    let fresh = state
        .rollouts
        .get(&slot)
        .is_none_or(|r| r.generation != generation);
    if fresh {
        state.rollouts.insert(
            slot.clone(),
            Rollout {
                generation,
                done: updated_ready,
                last_progress: now,
                rolled_back: false,
            },
        );
        let e = event(
            &spec.namespace,
            &spec.name,
            "rollout_started",
            format!(
                "rolling pod {pod} to generation {generation} (revision {}): max_surge {}, max_unavailable {}, progress_deadline {}",
                app.revision, rollout.max_surge, rollout.max_unavailable, rollout.progress_deadline
            ),
        );
        remember(state, pass, e);
        return;
    }
    let Some(r) = state.rollouts.get_mut(&slot) else {
        return;
    };
    if updated_ready > r.done {
        r.done = updated_ready;
        r.last_progress = now;
    }
    let deadline = rollout.progress_deadline.get();
    if !r.rolled_back && now.duration_since(r.last_progress) > deadline {
        r.rolled_back = true;
        pass.rollbacks.push(Rollback {
            app: key.clone(),
            revision: app.revision,
            reason: format!(
                "pod {pod} made no progress for {} ({} of its replicas at generation {generation} ready)",
                rollout.progress_deadline, r.done
            ),
        });
    }
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

/// The copy to keep: ready before running before starting, a host that
/// never left before one that rejoined, then by host id for a stable choice.
fn best<'a>(list: &[&'a Seen]) -> Option<&'a Seen> {
    list.iter()
        .min_by_key(|s| (!s.ready, !s.running, s.rejoined, s.host.clone()))
        .copied()
}

/// Live hosts with what they hold, starts in flight included.
fn candidates(state: &State, now: Instant) -> Vec<Candidate> {
    let mut extra: HashMap<&HostId, (u64, u32)> = HashMap::new();
    for (id, s) in &state.starting {
        let in_heartbeat = state.hosts.get(&s.host).is_some_and(|h| {
            h.heartbeat
                .replicas
                .iter()
                .any(|r| &r.id == id && r.revision == s.revision)
        });
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
