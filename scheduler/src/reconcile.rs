//! The reconciler: compares desired replicas (apps) with observed ones
//! (heartbeats) and decides what to start and stop.
//!
//! Level-triggered and idempotent: each pass looks at the whole picture and
//! decides afresh, so a missed command or a lost message is mended by the
//! next pass. Replicas are numbered `0..replicas` per pod, so "what is
//! missing" and "what is extra" are set differences.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Instant;

use shoal_api::resources::Event;
use shoal_api::resources::EventReason;
use shoal_api::wire::{HostId, PodComponent, ReplicaId, ReplicaState, StartReplica};
use shoal_api::{AppSpec, Digest, Name, PodSpec, RolloutSpec, SealedSecret, SecretValue, subjects};

use crate::placement::{Candidate, Need, PodOnHost, Ranking, choose};
use crate::state::{App, Rollout, StableTemplate, Starting, State, event};
use crate::tunables::{
    HOST_LOSS_INTERVAL, OUTAGE_BOUND, START_CONFIRM_TIMEOUT, VOLUME_RETURN_WAIT,
};
use crate::workqueue::Scope;

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
    /// The pod that stalled.
    pub pod: Name,
    /// The KV revision of the stored revision that stalled ([`App::kv`]):
    /// exact across a delete and a new app of the same name.
    pub kv: u64,
    /// What stalled, in words.
    pub reason: String,
}

/// One pass's decisions.
#[derive(Debug, Default)]
pub struct Pass {
    /// Commands to send.
    pub actions: Vec<Action>,
    /// Events to publish (already held in the state).
    pub events: Vec<Event>,
    /// Rollouts to undo.
    pub rollbacks: Vec<Rollback>,
    /// Canaries that passed their last step, to store as promoted.
    pub promotions: Vec<crate::canary::Promotion>,
}

/// Every copy seen, by replica. Hashed with FxHash: a pass hashes every
/// replica id several times, and SipHash's defence against flooding buys
/// nothing for keys the scheduler makes itself.
type SeenCopies = FxHashMap<ReplicaId, Vec<Seen>>;

/// A replica copy seen on a host (or being started there).
#[derive(Debug, Clone)]
struct Seen {
    host: HostId,
    revision: u64,
    running: bool,
    /// Takes work, or (a job) completed: what a rollout waits for.
    ready: bool,
    rejoined: bool,
    /// Not on a live host: a job's completion remembered after its host
    /// forgot it (done), or a copy with volume data on a lost host that
    /// may still come back (waited for). There is nothing to stop.
    held: bool,
}

/// Decides one pass over the apps in `scope` (and their copies on every
/// host). Mutates `state` only for bookkeeping: starts sent are reserved,
/// pending reasons and lost hosts recorded, rollouts followed.
///
/// The pass widens `scope` by the apps with something due (see
/// [`widen_by_due`]), and to every app when it declares a host lost.
/// Placement weighs every host's whole load whatever the scope, so a pass
/// over some apps places as a pass over all would.
pub fn plan(state: &mut State, now: Instant, scope: &mut Scope) -> Pass {
    let mut pass = Pass::default();
    if mark_lost_hosts(state, now, &mut pass) {
        *scope = Scope::Everything;
    }
    widen_by_due(state, now, scope);
    if scope.is_empty() {
        return pass;
    }
    let seen = observe(state, now, &mut pass, scope);
    state.backoff.retain(|_, until| *until > now);
    let mut hosts = Hosts::new(state, now);
    let apps: Vec<(String, App)> = match &*scope {
        Scope::Everything => state
            .apps
            .iter()
            .map(|(k, a)| (k.clone(), a.clone()))
            .collect(),
        Scope::Apps(set) => set
            .iter()
            .filter_map(|(namespace, app)| {
                let key = subjects::app_key(namespace, app);
                let app = state.apps.get(&key)?.clone();
                Some((key, app))
            })
            .collect(),
    };
    let mut desired: FxHashSet<ReplicaId> = FxHashSet::default();
    for (key, app) in &apps {
        for pod in app.stored.spec.pods() {
            let plan = PodPlan::new(key, app, &pod);
            plan.decide(state, &mut pass, &mut hosts, &seen, &mut desired, now);
        }
    }
    // Copies nobody wants any more (of the apps in scope: `seen` holds
    // only theirs).
    for (id, list) in &seen {
        if desired.contains(id) {
            continue;
        }
        for s in list.iter().filter(|s| !s.held) {
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
    let scope = &*scope;
    state
        .pending
        .retain(|id, _| !scope.covers(id) || desired.contains(id));
    state
        .data_homes
        .retain(|id, _| !scope.covers(id) || desired.contains(id));
    let apps = &state.apps;
    state.jobs_done.retain(|id, done| {
        !scope.covers(id)
            || desired.contains(id)
                && apps
                    .get(&subjects::app_key(&id.namespace, &id.app))
                    .is_some_and(|a| a.stored.generation(&id.pod) == done.revision)
    });
    state.rollouts.retain(|(key, pod), _| {
        state
            .apps
            .get(key)
            .is_some_and(|a| a.stored.spec.pods().iter().any(|p| &p.name == pod))
    });
    pass
}

/// Adds to `scope` the apps with something due that no change queues: a
/// start unconfirmed past [`START_CONFIRM_TIMEOUT`], a back-off over, a
/// rollout to follow (its progress deadline), a replica pending (room may
/// have been made by another app).
fn widen_by_due(state: &State, now: Instant, scope: &mut Scope) {
    if !matches!(scope, Scope::Apps(_)) {
        return;
    }
    let due_starts = state
        .starting
        .iter()
        .filter(|(_, s)| now.duration_since(s.since) >= START_CONFIRM_TIMEOUT)
        .map(|(id, _)| id);
    let over_backoffs = state
        .backoff
        .iter()
        .filter(|(_, until)| **until <= now)
        .map(|(id, _)| id);
    for id in due_starts.chain(over_backoffs).chain(state.pending.keys()) {
        scope.add(&id.namespace, &id.app);
    }
    for (key, _) in state.rollouts.keys() {
        if let Some(app) = state.apps.get(key) {
            scope.add(&app.stored.spec.namespace, &app.stored.spec.name);
        }
    }
}

/// The copies `host` reports of the apps in `scope`.
fn in_scope<'a>(
    host: &'a crate::state::HostEntry,
    scope: &'a Scope,
) -> impl Iterator<Item = &'a shoal_api::wire::ReplicaStatus> {
    host.heartbeat
        .replicas
        .iter()
        .filter(|r| scope.covers(&r.id))
}

/// Every copy live hosts report of the apps in `scope`, by replica, with
/// the starts still in flight. Failed copies are stopped (and their
/// replica backs off) rather than counted: their replica is missing.
fn observe(state: &mut State, now: Instant, pass: &mut Pass, scope: &Scope) -> SeenCopies {
    let mut seen: SeenCopies = FxHashMap::default();
    let mut failed: Vec<(HostId, ReplicaId, u64, String)> = Vec::new();
    let mut completed: Vec<(ReplicaId, u64, HostId)> = Vec::new();
    for (id, host) in &state.hosts {
        // A draining host's copies are on their way out: their replicas
        // are placed elsewhere, and the host stops them itself. A silent
        // host not declared lost (yet, or during an outage) keeps its
        // replicas.
        if host.lost || host.heartbeat.draining {
            continue;
        }
        for r in in_scope(host, scope) {
            if r.state == ReplicaState::Completed {
                completed.push((r.id.clone(), r.revision, id.clone()));
            }
            match &r.state {
                ReplicaState::Failed { reason } => {
                    failed.push((id.clone(), r.id.clone(), r.revision, reason.clone()));
                }
                replica_state => seen.entry(r.id.clone()).or_default().push(Seen {
                    host: id.clone(),
                    revision: r.revision,
                    running: matches!(replica_state, ReplicaState::Running),
                    ready: (r.ready && matches!(replica_state, ReplicaState::Running))
                        || matches!(replica_state, ReplicaState::Completed),
                    rejoined: host.rejoined.is_some(),
                    held: false,
                }),
            }
        }
    }
    // Copies with volume data on a host lost a short while ago: they wait
    // for it, as their data is there.
    for (host_id, host) in &state.hosts {
        let waiting = host.lost
            && host
                .lost_at
                .is_some_and(|at| now.duration_since(at) < VOLUME_RETURN_WAIT);
        if !waiting {
            continue;
        }
        for r in in_scope(host, scope) {
            if keeps_data(state, &r.id) {
                seen.entry(r.id.clone()).or_default().push(Seen {
                    host: host_id.clone(),
                    revision: r.revision,
                    running: false,
                    ready: false,
                    rejoined: false,
                    held: true,
                });
            }
        }
    }
    for (id, revision, host) in completed {
        state
            .jobs_done
            .insert(id, crate::state::JobDone { revision, host });
    }
    // Jobs that completed on a host that has forgotten them since (it
    // restarted): done, not to be run again.
    for (id, done) in state.jobs_done.iter().filter(|(id, _)| scope.covers(id)) {
        let current = app_of(state, id).map(|a| a.stored.generation(&id.pod));
        if current == Some(done.revision) && !seen.contains_key(id) {
            seen.insert(
                id.clone(),
                vec![Seen {
                    host: done.host.clone(),
                    revision: done.revision,
                    running: false,
                    ready: true,
                    rejoined: false,
                    held: true,
                }],
            );
        }
    }
    for (host, id, revision, reason) in failed {
        if app_of(state, &id).is_some() {
            let e = event(
                &id.namespace,
                &id.app,
                EventReason::Failed,
                format!("{id} failed on {host}: {reason}"),
            );
            remember(state, pass, e);
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
        if !scope.covers(id) {
            return true;
        }
        let confirmed = seen.get(id).is_some_and(|v| {
            v.iter()
                .any(|x| x.host == s.host && x.revision == s.revision)
        });
        let host_live = state.hosts.get(&s.host).is_some_and(|h| !h.lost);
        !confirmed && host_live && now.duration_since(s.since) < START_CONFIRM_TIMEOUT
    });
    for (id, s) in state.starting.iter().filter(|(id, _)| scope.covers(id)) {
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
                held: false,
            });
        }
    }
    seen
}

/// One pod of one app, as a pass plans it.
#[derive(Clone)]
struct PodPlan<'a> {
    key: &'a String,
    app: &'a App,
    pod: &'a PodSpec<'a>,
    /// The generation its replicas should run.
    generation: u64,
    /// While a canary of a new template runs: the stable template the
    /// pod's replicas keep running (at `generation`).
    stable: Option<&'a StableTemplate>,
    /// What one replica reserves.
    memory: u64,
    /// Labels a host must have: the union over the pod's components.
    labels: BTreeMap<String, String>,
    /// The label to spread replicas over, from the first component naming one.
    spread: Option<&'a str>,
    rollout: RolloutSpec,
    /// It mounts a persistent volume: its data lives where it ran.
    keeps_data: bool,
}

impl<'a> PodPlan<'a> {
    fn new(key: &'a String, app: &'a App, pod: &'a PodSpec<'a>) -> Self {
        let mut labels = BTreeMap::new();
        let mut spread = None;
        for (_, c) in &pod.components {
            labels.extend(c.placement.labels.clone());
            spread = spread.or(c.placement.spread.as_deref());
        }
        let rollout = pod.rollout();
        let stable = rollout
            .is_staged()
            .then(|| app.stored.canary_of(&pod.name))
            .flatten();
        PodPlan {
            key,
            app,
            pod,
            generation: stable.map_or_else(|| app.stored.generation(&pod.name), |s| s.generation),
            stable,
            memory: pod.reserved_memory(),
            labels,
            spread,
            rollout,
            keeps_data: pod_keeps_data(&app.stored.spec, pod),
        }
    }

    /// Decides every replica of the pod. A replica ("slot") runs one copy,
    /// or two while a rollout replaces it: the new copy starts beside the
    /// old one (within `max_surge`) or in its place (within
    /// `max_unavailable`, or at once when the old copy is not ready
    /// anyway), and the old copy stops once the new one is ready.
    fn decide(
        &self,
        state: &mut State,
        pass: &mut Pass,
        hosts: &mut Hosts,
        seen: &SeenCopies,
        desired: &mut FxHashSet<ReplicaId>,
        now: Instant,
    ) {
        let spec = &self.app.stored.spec;
        let generation = self.generation;
        let slots: Vec<(ReplicaId, &[Seen])> = (0..state.replicas_of(self.key, self.pod))
            .map(|i| {
                let id = replica_id(spec, &self.pod.name, i);
                let list = seen.get(&id).map_or(&[][..], Vec::as_slice);
                (id, list)
            })
            .collect();
        let mut pod_on_host = PodOnHost::default();
        for s in slots.iter().flat_map(|(_, l)| l.iter()) {
            *pod_on_host.entry(s.host.clone()).or_default() += 1;
        }
        // The rollout's budget: slots running a new copy, not ready yet,
        // beside an old one (once the new copy is ready the old one stops
        // in this pass), and slots with no ready copy at all.
        let mut surging = slots
            .iter()
            .filter(|(_, l)| {
                l.iter().any(|s| s.revision == generation && !s.ready)
                    && l.iter().any(|s| s.revision != generation)
            })
            .count() as u32;
        let mut unavailable = slots
            .iter()
            .filter(|(_, l)| !l.iter().any(|s| s.ready))
            .count() as u32;
        let (mut rolling, mut updated_ready) = (0u32, 0u32);
        // The hosts ranked for this pod, made on the first replica to place.
        let mut ranking: Option<Ranking> = None;
        for (id, list) in slots {
            desired.insert(id.clone());
            let current: Vec<&Seen> = list.iter().filter(|s| s.revision == generation).collect();
            let old: Vec<&Seen> = list.iter().filter(|s| s.revision != generation).collect();
            if let Some(keep) = best(&current) {
                // Keep one copy of the current generation; stop other copies
                // of it, and old ones once it is ready.
                for s in current.iter().filter(|s| s.host != keep.host) {
                    stop(
                        pass,
                        s,
                        &id,
                        format!("duplicate of the copy on {}", keep.host),
                    );
                }
                if keep.ready {
                    updated_ready += 1;
                    for s in &old {
                        stop(pass, s, &id, format!("replaced by revision {generation}"));
                    }
                } else if !old.is_empty() {
                    rolling += 1;
                }
                state.pending.remove(&id);
            } else if let Some(old_copy) = best(&old) {
                rolling += 1;
                let in_place = if !old_copy.ready {
                    true
                } else if surging < self.rollout.max_surge {
                    false
                } else if unavailable < self.rollout.max_unavailable {
                    true
                } else {
                    continue;
                };
                let host = if in_place {
                    old_copy.host.clone()
                } else {
                    let candidates = hosts.get(state);
                    let Some(i) =
                        self.surge_host(candidates, &old_copy.host, &pod_on_host, &mut ranking)
                    else {
                        continue;
                    };
                    surging += 1;
                    reserve(candidates, i, self.memory);
                    if let Some(r) = &mut ranking {
                        r.reserved(candidates, &self.need(&pod_on_host), i);
                    }
                    candidates[i].id.clone()
                };
                if in_place {
                    if old_copy.ready {
                        unavailable += 1;
                    }
                    for s in &old {
                        stop(pass, s, &id, format!("replaced by revision {generation}"));
                    }
                }
                self.start(state, pass, host, &id, now);
            } else if !state.backoff.contains_key(&id) {
                self.place(
                    state,
                    pass,
                    (hosts, &mut ranking),
                    &mut pod_on_host,
                    &id,
                    now,
                );
            }
        }
        match self.stable {
            Some(stable) => self.decide_canary(
                state,
                pass,
                (hosts, &mut pod_on_host),
                seen,
                desired,
                stable,
                now,
            ),
            None => track_rollout(
                state,
                pass,
                (self.key, self.app),
                &self.pod.name,
                generation,
                &self.rollout,
                (rolling, updated_ready),
                now,
            ),
        }
    }

    /// Decides the canary replica of a pod whose new template runs as a
    /// canary beside `stable`: one copy at the new generation while the
    /// canary runs (until it is rolled back), then follows the canary's
    /// steps ([`crate::canary::track`]).
    #[allow(clippy::too_many_arguments)]
    fn decide_canary(
        &self,
        state: &mut State,
        pass: &mut Pass,
        (hosts, pod_on_host): (&mut Hosts, &mut PodOnHost),
        seen: &SeenCopies,
        desired: &mut FxHashSet<ReplicaId>,
        stable: &StableTemplate,
        now: Instant,
    ) {
        let canary = PodPlan {
            generation: self.app.stored.generation(&self.pod.name),
            stable: None,
            ..self.clone()
        };
        let shadow = self.rollout.is_shadow();
        let index = if shadow {
            ReplicaId::SHADOW
        } else {
            ReplicaId::CANARY
        };
        let id = replica_id(&self.app.stored.spec, &self.pod.name, index);
        let failed = state
            .rollouts
            .get(&(self.key.clone(), self.pod.name.clone()))
            .is_some_and(|r| r.rolled_back && r.generation == canary.generation);
        let mut ready = false;
        if !failed {
            desired.insert(id.clone());
            let list = seen.get(&id).map_or(&[][..], Vec::as_slice);
            let (current, other): (Vec<&Seen>, Vec<&Seen>) =
                list.iter().partition(|s| s.revision == canary.generation);
            for s in other {
                stop(
                    pass,
                    s,
                    &id,
                    format!("replaced by revision {}", canary.generation),
                );
            }
            if let Some(keep) = best(&current) {
                for s in current.iter().filter(|s| s.host != keep.host) {
                    stop(
                        pass,
                        s,
                        &id,
                        format!("duplicate of the copy on {}", keep.host),
                    );
                }
                ready = keep.ready;
                state.pending.remove(&id);
            } else if !state.backoff.contains_key(&id) {
                canary.place(state, pass, (hosts, &mut None), pod_on_host, &id, now);
            }
        }
        let track = if shadow {
            crate::shadow::track
        } else {
            crate::canary::track
        };
        let decision = track(
            state,
            (self.key, self.app),
            &self.pod.name,
            &self.rollout,
            stable,
            ready,
            now,
        );
        for e in decision.events {
            remember(state, pass, e);
        }
        if let Some(reason) = decision.fail {
            pass.rollbacks.push(Rollback {
                app: self.key.clone(),
                pod: self.pod.name.clone(),
                kv: self.app.kv,
                reason,
            });
        }
        pass.promotions.extend(decision.promote);
    }

    /// Where a surge copy goes (an index into `candidates`): beside the
    /// old copy when that host has room, else wherever placement says.
    fn surge_host(
        &self,
        candidates: &[Candidate],
        old_host: &HostId,
        pod_on_host: &PodOnHost,
        ranking: &mut Option<Ranking>,
    ) -> Option<usize> {
        let need = self.need(pod_on_host);
        let here = candidates.binary_search_by(|c| c.id.cmp(old_host)).ok();
        if let Some(i) = here
            && choose(std::slice::from_ref(&candidates[i]), &need).is_ok()
        {
            return Some(i);
        }
        ranking
            .get_or_insert_with(|| Ranking::new(candidates, &need))
            .best(candidates, &need)
            .ok()
    }

    /// Places a missing replica, or records why it cannot be placed.
    fn place(
        &self,
        state: &mut State,
        pass: &mut Pass,
        (hosts, ranking): (&mut Hosts, &mut Option<Ranking>),
        pod_on_host: &mut PodOnHost,
        id: &ReplicaId,
        now: Instant,
    ) {
        let candidates = hosts.get(state);
        let need = self.need(pod_on_host);
        // A replica with volume data goes back where its data is, when
        // that host can take it.
        let home = self
            .keeps_data
            .then(|| state.data_homes.get(id))
            .flatten()
            .and_then(|home| candidates.binary_search_by(|c| c.id.cmp(home)).ok())
            .filter(|&i| choose(std::slice::from_ref(&candidates[i]), &need).is_ok());
        let chosen = match home {
            Some(i) => Ok(i),
            None => ranking
                .get_or_insert_with(|| Ranking::new(candidates, &need))
                .best(candidates, &need),
        };
        match chosen {
            Ok(chosen) => {
                let host = candidates[chosen].id.clone();
                if self.keeps_data
                    && let Some(home) = state.data_homes.get(id).filter(|h| **h != host)
                {
                    let e = event(
                        &id.namespace,
                        &id.app,
                        EventReason::VolumeLeftBehind,
                        format!(
                            "{id} placed on {host} without its data: its volume data stays on {home}, which cannot take it"
                        ),
                    );
                    remember(state, pass, e);
                }
                reserve(candidates, chosen, self.memory);
                *pod_on_host.entry(host.clone()).or_default() += 1;
                if let Some(r) = ranking {
                    r.placed(candidates, &self.need(pod_on_host), chosen);
                }
                state.pending.remove(id);
                self.start(state, pass, host, id, now);
            }
            Err(reason) => {
                if state.pending.get(id) != Some(&reason) {
                    let e = event(
                        &id.namespace,
                        &id.app,
                        EventReason::Pending,
                        format!("{id} pending: {reason}"),
                    );
                    remember(state, pass, e);
                    state.pending.insert(id.clone(), reason);
                }
            }
        }
    }

    fn need<'b>(&'b self, pod_on_host: &'b PodOnHost) -> Need<'b> {
        Need {
            memory: self.memory,
            labels: &self.labels,
            spread: self.spread,
            pod_on_host,
        }
    }

    /// Sends a start of `id` at the pod's generation to `host`, and
    /// remembers it until a heartbeat confirms it.
    fn start(
        &self,
        state: &mut State,
        pass: &mut Pass,
        host: HostId,
        id: &ReplicaId,
        now: Instant,
    ) {
        if self.keeps_data {
            state.data_homes.insert(id.clone(), host.clone());
        }
        state.starting.insert(
            id.clone(),
            Starting {
                host: host.clone(),
                revision: self.generation,
                memory: self.memory,
                since: now,
            },
        );
        let seal_key = state
            .hosts
            .get(&host)
            .and_then(|h| h.heartbeat.seal_key.clone());
        let components: Vec<(&Name, &shoal_api::ComponentSpec, Digest)> = match self.stable {
            Some(stable) => stable
                .components
                .iter()
                .map(|(name, spec, digest)| (name, spec, *digest))
                .collect(),
            None => self
                .pod
                .components
                .iter()
                .filter_map(|(name, spec)| {
                    Some((*name, *spec, *self.app.stored.digests.get(*name)?))
                })
                .collect(),
        };
        pass.actions.push(Action::Start {
            replica: start_replica(
                &self.app.stored.spec,
                self.generation,
                &components,
                id,
                &state.secrets,
                seal_key.as_deref(),
            ),
            host,
        });
    }
}

/// Stops the copy `s` of `id` (a held completion has nothing to stop).
fn stop(pass: &mut Pass, s: &Seen, id: &ReplicaId, reason: String) {
    if s.held {
        return;
    }
    pass.actions.push(Action::Stop {
        host: s.host.clone(),
        id: id.clone(),
        revision: s.revision,
        reason,
    });
}

/// Counts a start on `host` against its capacity for the rest of the pass.
fn reserve(candidates: &mut [Candidate], i: usize, memory: u64) {
    if let Some(c) = candidates.get_mut(i) {
        c.used_memory += memory;
        c.used_slots += 1;
    }
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
                EventReason::RolloutComplete,
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
                canary: None,
            },
        );
        let e = event(
            &spec.namespace,
            &spec.name,
            EventReason::RolloutStarted,
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
    if r.canary.take().is_some() {
        // A promoted canary: the rollout to every replica starts now.
        r.done = updated_ready;
        r.last_progress = now;
    }
    if updated_ready > r.done {
        r.done = updated_ready;
        r.last_progress = now;
    }
    let deadline = rollout.progress_deadline.get();
    if !r.rolled_back && now.duration_since(r.last_progress) > deadline {
        r.rolled_back = true;
        pass.rollbacks.push(Rollback {
            app: key.clone(),
            pod: pod.clone(),
            kv: app.kv,
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

/// Whether the replica's pod mounts a persistent volume: its data lives
/// on its host.
fn keeps_data(state: &State, id: &ReplicaId) -> bool {
    app_of(state, id).is_some_and(|app| {
        let spec = &app.stored.spec;
        spec.pods()
            .iter()
            .any(|p| p.name == id.pod && pod_keeps_data(spec, p))
    })
}

/// Whether `pod` mounts a persistent volume (scope `app`). Scratch volumes
/// (scope `pod`) go with the pod anyway.
fn pod_keeps_data(spec: &AppSpec, pod: &PodSpec<'_>) -> bool {
    pod.components
        .iter()
        .flat_map(|(_, c)| &c.volumes)
        .any(|m| {
            spec.volumes
                .get(&m.name)
                .is_some_and(|v| v.scope == shoal_api::VolumeScope::App)
        })
}

fn app_of<'a>(state: &'a State, id: &ReplicaId) -> Option<&'a App> {
    state
        .apps
        .get(&shoal_api::subjects::app_key(&id.namespace, &id.app))
}

/// Hosts silent too long are lost: say so once per host. When most hosts
/// fall silent at once the trouble is NATS (or this scheduler's link to
/// it), not the hosts: none is declared lost until they are back or the
/// silence outlasts [`OUTAGE_BOUND`]. Hosts are declared lost one per
/// [`HOST_LOSS_INTERVAL`] at most.
///
/// Says whether it declared any host lost.
fn mark_lost_hosts(state: &mut State, now: Instant, pass: &mut Pass) -> bool {
    let mut silent: Vec<(Instant, HostId)> = state
        .hosts
        .iter()
        .filter(|(_, h)| !h.lost && !h.is_live(now))
        .map(|(id, h)| (h.last_seen, id.clone()))
        .collect();
    let known = state.hosts.values().filter(|h| !h.lost).count();
    if silent.len() >= 2 && silent.len() * 2 > known && state.outage_since.is_none() {
        tracing::warn!(
            silent = silent.len(),
            known,
            "most hosts fell silent at once: holding their replicas where they are for up to {OUTAGE_BOUND:?}"
        );
        state.outage_since = Some(now);
    }
    if let Some(since) = state.outage_since {
        if silent.is_empty() {
            tracing::info!("the silent hosts are back");
            state.outage_since = None;
        } else if now.duration_since(since) < OUTAGE_BOUND {
            return false;
        }
    }
    silent.sort();
    let mut lost = Vec::new();
    for (_, id) in silent {
        if state
            .last_host_lost
            .is_some_and(|t| now.duration_since(t) < HOST_LOSS_INTERVAL)
        {
            break;
        }
        if let Some(host) = state.hosts.get_mut(&id) {
            host.lost = true;
            host.lost_at = Some(now);
            state.last_host_lost = Some(now);
            lost.push((id, host.heartbeat.replicas.clone()));
        }
    }
    let any = !lost.is_empty();
    for (host, replicas) in lost {
        tracing::warn!(%host, "host lost: no heartbeat for {:?}", crate::tunables::HOST_TIMEOUT);
        for r in replicas {
            let what = if keeps_data(state, &r.id) {
                format!(
                    "waiting up to {VOLUME_RETURN_WAIT:?} for the host to return, as its volume data is there"
                )
            } else {
                "placing it elsewhere".to_string()
            };
            let e = event(
                &r.id.namespace,
                &r.id.app,
                EventReason::HostLost,
                format!("{} lost with host {host}: {what}", r.id),
            );
            remember(state, pass, e);
        }
    }
    any
}

/// The copy to keep: ready before running before starting, a host that
/// never left before one that rejoined, then by host id for a stable choice.
fn best<'a>(list: &[&'a Seen]) -> Option<&'a Seen> {
    list.iter()
        .min_by_key(|s| (!s.ready, !s.running, s.rejoined, s.host.clone()))
        .copied()
}

/// Live hosts as placement sees them, made on the first placement or
/// surge of a pass: most passes place nothing, and at 10,000 hosts making
/// them costs more than the rest of a small pass.
struct Hosts {
    /// Memory and slots of the starts in flight when the pass began, by
    /// host (a start a heartbeat reported is no longer in flight: see
    /// [`crate::heartbeats`]).
    starting: FxHashMap<HostId, (u64, u32)>,
    now: Instant,
    made: Option<Vec<Candidate>>,
}

impl Hosts {
    fn new(state: &State, now: Instant) -> Hosts {
        let mut starting: FxHashMap<HostId, (u64, u32)> = FxHashMap::default();
        for s in state.starting.values() {
            let e = starting.entry(s.host.clone()).or_default();
            e.0 += s.memory;
            e.1 += 1;
        }
        Hosts {
            starting,
            now,
            made: None,
        }
    }

    /// The candidates, with what this pass reserved on them so far.
    fn get(&mut self, state: &State) -> &mut Vec<Candidate> {
        self.made
            .get_or_insert_with(|| candidates(state, self.now, &self.starting))
    }
}

/// Live hosts with what they hold, `starting` added, sorted by id.
fn candidates(
    state: &State,
    now: Instant,
    starting: &FxHashMap<HostId, (u64, u32)>,
) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = state
        .hosts
        .iter()
        .filter(|(_, h)| h.is_live(now) && !h.heartbeat.draining)
        .map(|(id, h)| {
            let (mem, slots) = starting.get(id).copied().unwrap_or_default();
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
    spec: &AppSpec,
    generation: u64,
    components: &[(&Name, &shoal_api::ComponentSpec, Digest)],
    id: &ReplicaId,
    secrets: &HashMap<String, SecretValue>,
    seal_key: Option<&str>,
) -> StartReplica {
    StartReplica {
        id: id.clone(),
        revision: generation,
        components: components
            .iter()
            .map(|(name, c, digest)| {
                // Only the secrets this component lists, only those set,
                // and each sealed to the host that will run it. A host that
                // announces no sealing key gets none: its guest is told the
                // secret is not set.
                let values = c
                    .secrets
                    .iter()
                    .filter_map(|s| {
                        let value = secrets.get(&subjects::app_key(&spec.namespace, s))?;
                        let sealed = SealedSecret::seal(&spec.namespace, s, value, seal_key?);
                        match sealed {
                            Ok(sealed) => Some((s.clone(), sealed)),
                            Err(e) => {
                                tracing::error!(replica = %id, error = %e, "secret not sent");
                                None
                            }
                        }
                    })
                    .collect();
                PodComponent {
                    name: (*name).clone(),
                    digest: *digest,
                    spec: (*c).clone(),
                    secrets: values,
                }
            })
            .collect(),
        volumes: spec
            .volumes
            .iter()
            .filter(|(v, _)| {
                components
                    .iter()
                    .any(|(_, c, _)| c.volumes.iter().any(|m| &m.name == *v))
            })
            .map(|(v, s)| (v.clone(), s.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use shoal_api::wire::ReplicaStatus;

    use super::*;
    use crate::fixtures;
    use crate::state::{HostEntry, StoredApp};

    fn plan_all(state: &mut State, now: Instant) -> Pass {
        plan(state, now, &mut Scope::Everything)
    }

    fn stored(greeting: &str, rollout: &str, previous: Option<&StoredApp>) -> StoredApp {
        let text = format!(
            "name = \"web\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/\"\nreplicas = 2\nenv = {{ GREETING = \"{greeting}\" }}\nrollout = {rollout}\n"
        );
        let spec = AppSpec::from_toml(&text, "web.toml").unwrap();
        StoredApp {
            spec,
            digests: BTreeMap::from([(Name::new("web").unwrap(), Digest::of(b"web"))]),
            file: "web.toml".into(),
            generations: BTreeMap::new(),
            templates: BTreeMap::new(),
            cause: String::new(),
            number: 0,
            canary_base: BTreeMap::new(),
            promotes: None,
        }
        .with_generations(previous)
        .with_canary_bases(previous)
    }

    fn id(index: u32) -> ReplicaId {
        fixtures::replica_id("web", "web", index)
    }

    fn copy(index: u32, revision: u64, ready: bool) -> ReplicaStatus {
        fixtures::running(id(index), revision, ready)
    }

    /// A state with the app and one host reporting `copies`.
    fn state(app: StoredApp, copies: Vec<ReplicaStatus>, now: Instant) -> State {
        let mut state = State::default();
        state.apps.insert(
            "default.web".into(),
            App {
                stored: app,
                revision: 1,
                kv: 1,
            },
        );
        report(&mut state, copies, now);
        state
    }

    fn report(state: &mut State, copies: Vec<ReplicaStatus>, now: Instant) {
        report_on(state, "h1", copies, now);
    }

    /// Host `name` reports `copies`, heard last at `at`.
    fn report_on(state: &mut State, name: &str, copies: Vec<ReplicaStatus>, at: Instant) {
        let host = HostId::new(name).unwrap();
        state.hosts.insert(
            host,
            HostEntry {
                heartbeat: fixtures::heartbeat(name, copies),
                last_seen: at,
                lost: false,
                rejoined: None,
                lost_at: None,
                beats: Default::default(),
            },
        );
    }

    /// Copies as (replica index, revision).
    type Copies = Vec<(u32, u64)>;

    /// The pass's starts and stops.
    fn actions(pass: &Pass) -> (Copies, Copies) {
        let mut starts = Vec::new();
        let mut stops = Vec::new();
        for a in &pass.actions {
            match a {
                Action::Start { replica, .. } => starts.push((replica.id.index, replica.revision)),
                Action::Stop { id, revision, .. } => stops.push((id.index, *revision)),
            }
        }
        starts.sort();
        stops.sort();
        (starts, stops)
    }

    fn only(namespace: &str, app: &str) -> Scope {
        let mut set = crate::workqueue::AppSet::default();
        set.insert(&Name::new(namespace).unwrap(), &Name::new(app).unwrap());
        Scope::Apps(set)
    }

    #[test]
    fn a_pass_over_some_apps_decides_for_those_alone() {
        let now = Instant::now();
        let mut state = state(stored("hi", "{}", None), vec![], now);
        let pass = plan(&mut state, now, &mut only("default", "other"));
        assert_eq!(actions(&pass), (vec![], vec![]), "web was not queued");
        let pass = plan(&mut state, now, &mut only("default", "web"));
        assert_eq!(actions(&pass), (vec![(0, 1), (1, 1)], vec![]));

        // Deleted, with copies running: only a pass over it stops them.
        let mut state = State::default();
        report(&mut state, vec![copy(0, 1, true), copy(1, 1, true)], now);
        let pass = plan(&mut state, now, &mut only("default", "other"));
        assert_eq!(actions(&pass), (vec![], vec![]));
        let pass = plan(&mut state, now, &mut only("default", "web"));
        assert_eq!(actions(&pass), (vec![], vec![(0, 1), (1, 1)]));
    }

    #[test]
    fn a_pass_that_loses_a_host_looks_at_every_app() {
        let now = Instant::now();
        let mut state = state(stored("hi", "{}", None), vec![], now);
        report_on(
            &mut state,
            "h2",
            vec![copy(0, 1, true), copy(1, 1, true)],
            now - Duration::from_secs(60),
        );
        let mut scope = only("default", "other");
        let pass = plan(&mut state, now, &mut scope);
        assert!(matches!(scope, Scope::Everything));
        assert_eq!(actions(&pass), (vec![(0, 1), (1, 1)], vec![]));
    }

    #[test]
    fn a_pending_replica_is_looked_at_again_without_being_queued() {
        let now = Instant::now();
        let mut state = state(stored("hi", "{}", None), vec![], now);
        state
            .pending
            .insert(id(0), shoal_api::resources::Unschedulable::NoHosts);
        let pass = plan(&mut state, now, &mut only("default", "other"));
        assert_eq!(actions(&pass), (vec![(0, 1), (1, 1)], vec![]));
        assert!(state.pending.is_empty(), "placed, so no longer pending");
    }

    #[test]
    fn a_new_app_is_placed() {
        let now = Instant::now();
        let mut state = state(stored("v1", "{}", None), Vec::new(), now);
        let pass = plan_all(&mut state, now);
        assert_eq!(actions(&pass), (vec![(0, 1), (1, 1)], vec![]));
        // Starts in flight are not sent twice.
        assert_eq!(actions(&plan_all(&mut state, now)), (vec![], vec![]));
    }

    #[test]
    fn a_rollout_surges_one_at_a_time_and_stops_old_copies_once_new_ones_are_ready() {
        let now = Instant::now();
        let v1 = stored("v1", "{ max_surge = 1 }", None);
        let v2 = stored("v2", "{ max_surge = 1 }", Some(&v1));
        assert_eq!(v2.generation(&Name::new("web").unwrap()), 2);
        let mut state = state(v2, vec![copy(0, 1, true), copy(1, 1, true)], now);

        // One new copy beside its old one; nothing stops yet.
        assert_eq!(actions(&plan_all(&mut state, now)), (vec![(0, 2)], vec![]));
        // Started but not ready: the surge budget is spent.
        report(
            &mut state,
            vec![copy(0, 1, true), copy(0, 2, false), copy(1, 1, true)],
            now,
        );
        assert_eq!(actions(&plan_all(&mut state, now)), (vec![], vec![]));
        // Ready: its old copy stops, and the next replica's new copy starts.
        report(
            &mut state,
            vec![copy(0, 1, true), copy(0, 2, true), copy(1, 1, true)],
            now,
        );
        assert_eq!(
            actions(&plan_all(&mut state, now)),
            (vec![(1, 2)], vec![(0, 1)])
        );
        // Every new copy ready: the last old one stops, and that is the end.
        report(
            &mut state,
            vec![copy(0, 2, true), copy(1, 1, true), copy(1, 2, true)],
            now,
        );
        let done = plan_all(&mut state, now);
        assert_eq!(actions(&done), (vec![], vec![(1, 1)]));
        assert!(
            done.events
                .iter()
                .any(|e| e.reason == EventReason::RolloutComplete)
        );
        report(&mut state, vec![copy(0, 2, true), copy(1, 2, true)], now);
        assert_eq!(actions(&plan_all(&mut state, now)), (vec![], vec![]));
    }

    #[test]
    fn a_canary_runs_beside_the_stable_replicas_until_promoted() {
        let now = Instant::now();
        let canary = r#"{ strategy = "canary", steps = ["10%"], step_interval = "1s", analysis = { min_requests = 1 } }"#;
        let v1 = stored("v1", canary, None);
        let v2 = stored("v2", canary, Some(&v1));
        let web = Name::new("web").unwrap();
        assert_eq!(v2.generation(&web), 2);
        assert_eq!(v2.canary_of(&web).map(|s| s.generation), Some(1));
        let mut state = state(v2.clone(), vec![copy(0, 1, true), copy(1, 1, true)], now);

        // One canary copy at the new generation; the replicas stay.
        let started = plan_all(&mut state, now);
        assert_eq!(actions(&started), (vec![(ReplicaId::CANARY, 2)], vec![]));
        assert!(
            started
                .events
                .iter()
                .any(|e| e.reason == EventReason::RolloutStarted
                    && e.message.contains("canary of pod web"))
        );
        // Ready: its step begins; a failed replica starts again at the
        // stable generation, from the stable template.
        report(
            &mut state,
            vec![copy(0, 1, true), copy(ReplicaId::CANARY, 2, true)],
            now,
        );
        let pass = plan_all(&mut state, now);
        assert_eq!(actions(&pass), (vec![(1, 1)], vec![]));
        let Some(Action::Start { replica, .. }) = pass.actions.first() else {
            panic!("a start");
        };
        assert_eq!(replica.components[0].spec.env["GREETING"], "v1");
        assert!(
            crate::canary::share(&state, "default.web", &state.apps["default.web"], &web)
                .is_some_and(|s| s.as_basis_points() == 1000)
        );

        // Promoted (the app stored without its stable template): the pod
        // rolls out as usual and the canary copy is no longer wanted.
        let mut promoted = v2.clone();
        promoted.canary_base.clear();
        state.apps.get_mut("default.web").unwrap().stored = promoted;
        report(
            &mut state,
            vec![
                copy(0, 1, true),
                copy(1, 1, true),
                copy(ReplicaId::CANARY, 2, true),
            ],
            now,
        );
        assert_eq!(
            actions(&plan_all(&mut state, now)),
            (vec![(0, 2)], vec![(ReplicaId::CANARY, 2)])
        );
        // A scale of the canary revision keeps the canary; going back
        // (stored by a rollback, which clears it) or a new apply over a
        // running canary keeps the stable template it had.
        let scaled = stored("v2", canary, Some(&v2));
        assert_eq!(scaled.canary_of(&web).map(|s| s.generation), Some(1));
        let v3 = stored("v3", canary, Some(&v2));
        assert_eq!(v3.canary_of(&web).map(|s| s.generation), Some(1));
        let back = stored("v1", canary, Some(&v2));
        assert!(
            back.canary_of(&web).is_none(),
            "v1 is the stable one: no canary"
        );
    }

    #[test]
    fn max_unavailable_replaces_copies_in_place() {
        let now = Instant::now();
        let rollout = "{ max_surge = 0, max_unavailable = 1 }";
        let v1 = stored("v1", rollout, None);
        let v2 = stored("v2", rollout, Some(&v1));
        let mut state = state(v2, vec![copy(0, 1, true), copy(1, 1, true)], now);
        assert_eq!(
            actions(&plan_all(&mut state, now)),
            (vec![(0, 2)], vec![(0, 1)])
        );
    }

    #[test]
    fn a_rollout_without_progress_past_its_deadline_is_rolled_back() {
        let now = Instant::now();
        let rollout = "{ progress_deadline = \"2s\" }";
        let v1 = stored("v1", rollout, None);
        let v2 = stored("v2", rollout, Some(&v1));
        let mut state = state(v2, vec![copy(0, 1, true), copy(1, 1, true)], now);
        let first = plan_all(&mut state, now);
        assert!(
            first
                .events
                .iter()
                .any(|e| e.reason == EventReason::RolloutStarted)
        );
        assert!(first.rollbacks.is_empty());
        let later = now + Duration::from_secs(1);
        report(
            &mut state,
            vec![copy(0, 1, true), copy(0, 2, false), copy(1, 1, true)],
            later,
        );
        assert!(plan_all(&mut state, later).rollbacks.is_empty());
        let past = now + Duration::from_secs(3);
        report(
            &mut state,
            vec![copy(0, 1, true), copy(0, 2, false), copy(1, 1, true)],
            past,
        );
        let stalled = plan_all(&mut state, past);
        assert_eq!(stalled.rollbacks.len(), 1, "{:?}", stalled.rollbacks);
        assert!(stalled.rollbacks[0].reason.contains("no progress"));
        assert!(
            plan_all(&mut state, past).rollbacks.is_empty(),
            "asked once"
        );
    }

    /// Three hosts, each running one of the app's copies (the app wants
    /// three), heard last at `at`, but `silent` at `long_ago`.
    fn three_hosts(silent: &[&str], at: Instant, long_ago: Instant) -> State {
        let mut app = stored("v1", "{}", None);
        if let Some(c) = app.spec.components.values_mut().next() {
            c.replicas = 3;
        }
        let mut state = state(app, Vec::new(), at);
        for (i, h) in ["h1", "h2", "h3"].into_iter().enumerate() {
            let heard = if silent.contains(&h) { long_ago } else { at };
            report_on(&mut state, h, vec![copy(i as u32, 1, true)], heard);
        }
        state
    }

    #[test]
    fn most_hosts_silent_at_once_is_an_outage_and_moves_nothing_until_its_bound() {
        let start = Instant::now();
        let now = start + Duration::from_secs(10);
        let mut state = three_hosts(&["h1", "h2", "h3"], now, start);
        let pass = plan_all(&mut state, now);
        assert_eq!(actions(&pass), (vec![], vec![]));
        assert!(state.hosts.values().all(|h| !h.lost));
        // Two come back: the third is still held, the outage not over.
        let back = now + Duration::from_secs(1);
        report_on(&mut state, "h1", vec![copy(0, 1, true)], back);
        report_on(&mut state, "h2", vec![copy(1, 1, true)], back);
        assert_eq!(actions(&plan_all(&mut state, back)), (vec![], vec![]));
        // Past the bound, the one still silent is lost and its copy moves.
        let past = now + OUTAGE_BOUND + Duration::from_secs(1);
        report_on(&mut state, "h1", vec![copy(0, 1, true)], past);
        report_on(&mut state, "h2", vec![copy(1, 1, true)], past);
        let pass = plan_all(&mut state, past);
        assert_eq!(actions(&pass), (vec![(2, 1)], vec![]));
        assert!(state.hosts[&HostId::new("h3").unwrap()].lost);
    }

    #[test]
    fn one_silent_host_of_three_is_lost_at_once_and_its_copy_moves() {
        let start = Instant::now();
        let now = start + Duration::from_secs(10);
        let mut state = three_hosts(&["h3"], now, start);
        let pass = plan_all(&mut state, now);
        assert_eq!(actions(&pass), (vec![(2, 1)], vec![]));
        assert!(
            pass.events
                .iter()
                .any(|e| e.reason == EventReason::HostLost)
        );
    }

    /// An app of one component called `web`, from its spec's text.
    fn stored_from(text: &str) -> StoredApp {
        fixtures::stored_app(text)
    }

    const VOLUME_APP: &str = "name = \"web\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/\"\nreplicas = 1\nvolumes = [{ name = \"data\", path = \"/data\" }]\n[volumes.data]\nsize = \"1GiB\"\n";

    #[test]
    fn a_replica_with_volume_data_goes_back_to_the_host_holding_it() {
        let now = Instant::now();
        // Both hosts empty: placement alone would pick h1.
        let mut state = state(stored_from(VOLUME_APP), Vec::new(), now);
        report_on(&mut state, "h2", Vec::new(), now);
        state.data_homes.insert(id(0), HostId::new("h2").unwrap());
        let pass = plan_all(&mut state, now);
        let hosts: Vec<&str> = pass
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Start { host, .. } => Some(host.as_str()),
                Action::Stop { .. } => None,
            })
            .collect();
        assert_eq!(hosts, vec!["h2"]);
        assert!(
            !pass
                .events
                .iter()
                .any(|e| e.reason == EventReason::VolumeLeftBehind)
        );
    }

    #[test]
    fn a_replica_with_volume_data_waits_for_its_lost_host_then_moves_and_says_so() {
        let start = Instant::now();
        let mut state = state(stored_from(VOLUME_APP), vec![copy(0, 1, true)], start);
        state.data_homes.insert(id(0), HostId::new("h1").unwrap());
        let now = start + Duration::from_secs(10);
        report_on(&mut state, "h2", Vec::new(), now);
        // h1 falls silent: lost, but its copy waits for it.
        let pass = plan_all(&mut state, now);
        assert_eq!(actions(&pass), (vec![], vec![]));
        assert!(
            pass.events
                .iter()
                .any(|e| e.reason == EventReason::HostLost && e.message.contains("volume data")),
            "{:?}",
            pass.events
        );
        let within = now + VOLUME_RETURN_WAIT - Duration::from_secs(1);
        report_on(&mut state, "h2", Vec::new(), within);
        assert_eq!(actions(&plan_all(&mut state, within)), (vec![], vec![]));
        // Past the wait it moves, and says its data stayed behind.
        let past = now + VOLUME_RETURN_WAIT + Duration::from_secs(1);
        report_on(&mut state, "h2", Vec::new(), past);
        let pass = plan_all(&mut state, past);
        assert_eq!(actions(&pass), (vec![(0, 1)], vec![]));
        assert!(
            pass.events
                .iter()
                .any(|e| e.reason == EventReason::VolumeLeftBehind && e.message.contains("h1")),
            "{:?}",
            pass.events
        );
    }

    #[test]
    fn a_completed_job_is_not_run_again_when_its_host_forgets_it() {
        let now = Instant::now();
        let text =
            "name = \"web\"\n[components.web]\nsource = \"j.wasm\"\nkind = \"job\"\nreplicas = 1\n";
        let app = stored_from(text);
        let mut done = copy(0, 1, true);
        done.state = ReplicaState::Completed;
        let mut state = state(app, vec![done], now);
        assert_eq!(actions(&plan_all(&mut state, now)), (vec![], vec![]));
        // The host restarted and reports nothing: the job stays done.
        report(&mut state, Vec::new(), now);
        assert_eq!(actions(&plan_all(&mut state, now)), (vec![], vec![]));
        assert_eq!(state.jobs_done.len(), 1);
    }

    #[test]
    fn going_back_to_a_template_keeps_its_generation() {
        let v1 = stored("v1", "{}", None);
        let v2 = stored("v2", "{}", Some(&v1));
        let back = stored("v1", "{}", Some(&v2));
        let web = Name::new("web").unwrap();
        assert_eq!(
            (
                v1.generation(&web),
                v2.generation(&web),
                back.generation(&web)
            ),
            (1, 2, 1)
        );
        let v3 = stored("v3", "{}", Some(&back));
        assert_eq!(v3.generation(&web), 3, "a new template gets a new number");
    }
}
