//! What the scheduler knows: desired state (apps, from JetStream KV) and
//! observed state (hosts and their replicas, from heartbeats). All of it
//! can be rebuilt after a restart: apps from KV, the rest from heartbeats.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use shoal_api::resources::{Event, EventReason};
use shoal_api::wire::{Heartbeat, HostId, ReplicaId, ReplicaStatus};
use shoal_api::{AppSpec, Digest, Name};

use crate::tunables::{EVENTS_PER_APP, HOST_TIMEOUT};

/// An app as stored in the desired-state bucket: one KV revision per apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredApp {
    /// The parsed spec.
    pub spec: AppSpec,
    /// Each component's bytes, by sha256, in the component store.
    pub digests: BTreeMap<Name, Digest>,
    /// The file it was applied from.
    pub file: String,
    /// Each pod's generation: bumped when its template (components, their
    /// specs apart from replica counts, and their bytes) changes, so that
    /// scaling never restarts a replica and a real change replaces them.
    pub generations: BTreeMap<Name, u64>,
    /// Each pod's templates seen so far, by digest, with their generation:
    /// going back to an earlier template (a rollback) goes back to its
    /// generation, so the replicas still running it are kept.
    #[serde(default)]
    pub templates: BTreeMap<Name, BTreeMap<String, u64>>,
    /// Why this revision was stored: the file applied, or the rollback.
    #[serde(default)]
    pub cause: String,
    /// This revision's number among the app's own: 1 for its first apply,
    /// one more for each change stored since (as `kubectl` counts an
    /// object's generation). 0 in revisions stored before apps counted
    /// their own, which [`App::from_kv`] numbers by their KV revision.
    #[serde(default)]
    pub number: u64,
    /// Pods in a canary rollout: what their stable replicas keep running
    /// meanwhile, by pod. Set by an apply that changes a canary pod's
    /// template; gone once the canary is promoted or rolled back.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub canary_base: BTreeMap<Name, StableTemplate>,
    /// The revision whose canary this one promoted, if that is why it was
    /// stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotes: Option<u64>,
}

/// What a pod's stable replicas run while a canary of a new template runs
/// beside them: the template, and its generation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StableTemplate {
    /// Its generation.
    pub generation: u64,
    /// Its components: name, spec and bytes.
    pub components: Vec<(Name, shoal_api::ComponentSpec, Digest)>,
}

use crate::tunables::TEMPLATES_KEPT;

impl StoredApp {
    /// The generation of `pod` (1 if never recorded).
    pub fn generation(&self, pod: &Name) -> u64 {
        self.generations.get(pod).copied().unwrap_or(1)
    }

    /// What a pod's replicas run: compared between applies.
    pub fn template(&self, pod: &Name) -> Vec<(Name, shoal_api::ComponentSpec, Option<Digest>)> {
        self.spec
            .pods()
            .into_iter()
            .filter(|p| &p.name == pod)
            .flat_map(|p| p.components)
            .map(|(name, spec)| {
                let mut spec = spec.clone();
                spec.replicas = 0;
                spec.autoscale = None;
                (name.clone(), spec, self.digests.get(name).copied())
            })
            .collect()
    }

    /// Sets which pods start a canary, against the previously stored
    /// version: a pod whose rollout is a canary and whose generation
    /// changed keeps its previous template as the stable one (or, when a
    /// canary was already running, the stable template of that one). A
    /// change that keeps the generation (scaling) keeps the canary as it
    /// is. Call after [`with_generations`](Self::with_generations).
    pub fn with_canary_bases(mut self, previous: Option<&StoredApp>) -> Self {
        self.canary_base.clear();
        let Some(previous) = previous else {
            return self;
        };
        for pod in self.spec.pods() {
            if !pod.rollout().is_staged() {
                continue;
            }
            let generation = self.generation(&pod.name);
            let running = previous.canary_base.get(&pod.name).cloned();
            let base = if previous.generation(&pod.name) == generation {
                running
            } else {
                running.or_else(|| previous.stable_template(&pod.name))
            };
            if let Some(base) = base.filter(|b| b.generation != generation) {
                self.canary_base.insert(pod.name.clone(), base);
            }
        }
        self
    }

    /// `pod`'s template and generation here, as a canary's stable side;
    /// `None` when the pod is not in this version or a component's bytes
    /// are unknown.
    fn stable_template(&self, pod: &Name) -> Option<StableTemplate> {
        let components = self
            .template(pod)
            .into_iter()
            .map(|(name, spec, digest)| Some((name, spec, digest?)))
            .collect::<Option<Vec<_>>>()?;
        (!components.is_empty()).then(|| StableTemplate {
            generation: self.generation(pod),
            components,
        })
    }

    /// The stable template of `pod` while a canary (or shadow) of it runs.
    pub fn canary_of(&self, pod: &Name) -> Option<&StableTemplate> {
        self.canary_base
            .get(pod)
            .filter(|b| b.generation != self.generation(pod))
    }

    /// The digest of a pod's template, to recognise it again.
    fn template_digest(&self, pod: &Name) -> String {
        let bytes = serde_json::to_vec(&self.template(pod)).unwrap_or_default();
        Digest::of(&bytes).to_hex()
    }

    /// Fills in generations against the previously stored version: the
    /// same template keeps its generation, a template seen before gets its
    /// generation back, a new one gets the next number. Numbers the
    /// revision one past the previous (1 for the first).
    pub fn with_generations(mut self, previous: Option<&StoredApp>) -> Self {
        self.number = previous.map_or(1, |p| p.number + 1);
        self.promotes = None;
        let pods: Vec<Name> = self.spec.pods().into_iter().map(|p| p.name).collect();
        self.generations.clear();
        self.templates.clear();
        for pod in pods {
            let digest = self.template_digest(&pod);
            let prev = previous.filter(|p| p.spec.pods().iter().any(|x| x.name == pod));
            let mut known = prev
                .and_then(|p| p.templates.get(&pod).cloned())
                .unwrap_or_default();
            let generation = match (known.get(&digest), prev) {
                (Some(generation), _) => *generation,
                (None, Some(p)) if p.template(&pod) == self.template(&pod) => p.generation(&pod),
                (None, Some(p)) => {
                    known
                        .values()
                        .copied()
                        .max()
                        .unwrap_or(0)
                        .max(p.generation(&pod))
                        + 1
                }
                (None, None) => 1,
            };
            known.insert(digest, generation);
            while known.len() > TEMPLATES_KEPT {
                let oldest = known
                    .iter()
                    .filter(|(_, g)| **g != generation)
                    .min_by_key(|(_, g)| **g)
                    .map(|(d, _)| d.clone());
                match oldest {
                    Some(d) => known.remove(&d),
                    None => break,
                };
            }
            self.generations.insert(pod.clone(), generation);
            self.templates.insert(pod, known);
        }
        self
    }
}

/// A stored app and its revision.
#[derive(Debug, Clone)]
pub struct App {
    /// What was applied.
    pub stored: StoredApp,
    /// The app's own revision number ([`StoredApp::number`]): what users
    /// see, and what they name to roll back or to apply only over.
    pub revision: u64,
    /// The KV revision of that apply: the bucket's sequence across every
    /// app, which orders writes and guards the next one.
    pub kv: u64,
}

impl App {
    /// The app stored at KV revision `kv`.
    pub fn from_kv(mut stored: StoredApp, kv: u64) -> App {
        if stored.number == 0 {
            stored.number = kv;
        }
        App {
            revision: stored.number,
            stored,
            kv,
        }
    }
}

/// A host as its heartbeats show it.
#[derive(Debug, Clone)]
pub struct HostEntry {
    /// The last heartbeat.
    pub heartbeat: Heartbeat,
    /// When it arrived.
    pub last_seen: Instant,
    /// Silent for longer than [`HOST_TIMEOUT`]; its replicas were placed elsewhere.
    pub lost: bool,
    /// When it came back after being lost: its replicas lose ties with
    /// copies placed while it was away.
    pub rejoined: Option<Instant>,
    /// When it was declared lost, while it is: its replicas that keep data
    /// in volumes wait for it for a while before they move.
    pub lost_at: Option<Instant>,
    /// What puts its replicas (`heartbeat.replicas`) together from beats
    /// that carry only changes.
    pub beats: shoal_api::beats::BeatReader,
}

impl HostEntry {
    /// Ready, draining or lost, as of `now`.
    pub fn state(&self, now: Instant) -> shoal_api::resources::HostState {
        use shoal_api::resources::HostState;
        match (self.is_live(now), self.heartbeat.draining) {
            (false, _) => HostState::Lost,
            (true, true) => HostState::Draining,
            (true, false) => HostState::Ready,
        }
    }

    /// Whether it heartbeated recently enough to count.
    pub fn is_live(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) <= HOST_TIMEOUT
    }

    /// Its replicas of app `app` in `namespace`: found by halving, as the
    /// picture a [`shoal_api::beats::BeatReader`] keeps is in order of
    /// replica id (namespace, app, pod, index), so that asking about one
    /// app costs the same on a host of ten replicas or of ten thousand.
    pub fn replicas_of(&self, namespace: &Name, app: &Name) -> &[ReplicaStatus] {
        let all = &self.heartbeat.replicas;
        let start = all.partition_point(|r| (&r.id.namespace, &r.id.app) < (namespace, app));
        let end = start
            + all[start..].partition_point(|r| (&r.id.namespace, &r.id.app) == (namespace, app));
        &all[start..end]
    }
}

/// A start command sent but not yet confirmed by a heartbeat.
#[derive(Debug, Clone)]
pub struct Starting {
    /// Where.
    pub host: HostId,
    /// Which revision.
    pub revision: u64,
    /// Memory it reserves there.
    pub memory: u64,
    /// When the command was sent.
    pub since: Instant,
}

/// Everything the scheduler knows, behind one lock.
#[derive(Debug, Default)]
pub struct State {
    /// Desired state, by `namespace.name`.
    pub apps: BTreeMap<String, App>,
    /// Observed hosts.
    pub hosts: HashMap<HostId, HostEntry>,
    /// Hosts heard from whose first snapshot is still arriving, with the
    /// picture so far.
    pub joining: HashMap<
        HostId,
        (
            shoal_api::beats::BeatReader,
            Vec<shoal_api::wire::ReplicaStatus>,
        ),
    >,
    /// Starts sent, not yet seen in a heartbeat.
    pub starting: HashMap<ReplicaId, Starting>,
    /// Replicas that could not be placed, and why.
    pub pending: HashMap<ReplicaId, shoal_api::resources::Unschedulable>,
    /// Replicas whose start failed, and when they may be tried again.
    pub backoff: HashMap<ReplicaId, Instant>,
    /// Recent events per app key.
    pub events: HashMap<String, VecDeque<Event>>,
    /// Secret values by `namespace.name`, opened from the sealed bucket.
    /// Zeroed when dropped; sent only to hosts running a component that
    /// lists them.
    pub secrets: HashMap<String, shoal_api::SecretValue>,
    /// Replicas the autoscaler wants, by app key and pod.
    pub scale: HashMap<(String, Name), ScaleState>,
    /// Rollouts in progress, by app key and pod.
    pub rollouts: HashMap<(String, Name), Rollout>,
    /// Job replicas that completed at their pod's current generation: not
    /// run again when their host restarts and forgets them.
    pub jobs_done: HashMap<ReplicaId, JobDone>,
    /// Namespaces, with their settings.
    pub namespaces: BTreeMap<Name, crate::namespaces::StoredNamespace>,
    /// What each replica did, for `shoal top`.
    pub top: crate::top::Top,
    /// Where each replica with persistent volume data was last started:
    /// placed there again when that host can take it.
    pub data_homes: HashMap<ReplicaId, HostId>,
    /// Since when most hosts have been silent at once, while they are.
    pub outage_since: Option<Instant>,
    /// When a host was last declared lost.
    pub last_host_lost: Option<Instant>,
    /// What this scheduler's API counted copying invocations to shadows,
    /// by app key and shadow generation ([`crate::shadow`]).
    pub shadow_invocations: Vec<((String, u64), shoal_api::resources::ShadowReport)>,
}

/// A pod's rollout in progress: old copies are still running.
#[derive(Debug, Clone)]
pub struct Rollout {
    /// The generation it rolls to.
    pub generation: u64,
    /// Replicas of that generation ready at the last progress.
    pub done: u32,
    /// When a replica of that generation last became ready (or the
    /// rollout began).
    pub last_progress: Instant,
    /// Rolled back already: do it once.
    pub rolled_back: bool,
    /// A canary's progress, while the pod rolls out by canary.
    pub canary: Option<crate::canary::CanaryProgress>,
}

/// A job replica that completed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDone {
    /// The generation it completed at.
    pub revision: u64,
    /// Where it ran.
    pub host: HostId,
}

/// The autoscaler's view of one pod.
#[derive(Debug, Clone)]
pub struct ScaleState {
    /// Replicas wanted now.
    pub desired: u32,
    /// When messages were last waiting or in flight.
    pub last_active: Instant,
    /// Since when fewer replicas have been wanted.
    pub low_since: Option<Instant>,
    /// The last decision, with the numbers it used.
    pub last_decision: Option<String>,
    /// The count a namespace quota holds it at, while it does: the event
    /// saying so is recorded once.
    pub held_at: Option<u32>,
}

impl ScaleState {
    /// Starting at `desired`.
    pub fn new(desired: u32, now: Instant) -> Self {
        ScaleState {
            desired,
            last_active: now,
            low_since: None,
            last_decision: None,
            held_at: None,
        }
    }
}

impl State {
    /// Replicas of `pod` of the app at `key` to run: the autoscaler's
    /// figure for autoscaled pods (starting at `min`), else the spec's.
    pub fn replicas_of(&self, key: &str, pod: &shoal_api::PodSpec<'_>) -> u32 {
        let auto = pod
            .components
            .iter()
            .find_map(|(_, c)| c.autoscale.as_ref());
        match auto {
            Some(auto) => self
                .scale
                .get(&(key.to_string(), pod.name.clone()))
                .map_or(auto.min, |s| s.desired),
            None => pod.replicas,
        }
    }
}

impl State {
    /// Records an event in memory; the caller publishes it.
    pub fn remember(&mut self, event: Event) {
        let key = shoal_api::subjects::app_key(&event.namespace, &event.app);
        let ring = self.events.entry(key).or_default();
        ring.push_back(event);
        while ring.len() > EVENTS_PER_APP {
            ring.pop_front();
        }
    }
}

pub use shoal_api::wire::now_ms;

/// Milliseconds between two instants, saturating.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Builds an event.
pub fn event(namespace: &Name, app: &Name, reason: EventReason, message: String) -> Event {
    Event {
        at_ms: now_ms(),
        namespace: namespace.clone(),
        app: app.clone(),
        reason,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn an_app_counts_its_own_revisions() {
        let text = "name = \"web\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/\"\n";
        let first = fixtures::stored_app(text);
        assert_eq!(first.number, 1);
        let second = fixtures::stored_app(text).with_generations(Some(&first));
        assert_eq!(App::from_kv(second.clone(), 4_711).revision, 2);
        // Stored before apps counted their own: numbered by the KV
        // revision, and counted on from there.
        let mut legacy = first.clone();
        legacy.number = 0;
        let legacy = App::from_kv(legacy, 37);
        assert_eq!((legacy.revision, legacy.kv), (37, 37));
        let next = fixtures::stored_app(text).with_generations(Some(&legacy.stored));
        assert_eq!(next.number, 38);
    }

    #[test]
    fn a_hosts_replicas_of_one_app_are_found_among_many() {
        let copies: Vec<ReplicaStatus> = ["b", "a", "c", "b", "ab"]
            .iter()
            .enumerate()
            .map(|(i, app)| fixtures::running(fixtures::replica_id(app, "web", i as u32), 1, true))
            .collect();
        let entry = HostEntry {
            heartbeat: fixtures::heartbeat("h1", copies),
            last_seen: Instant::now(),
            lost: false,
            rejoined: None,
            lost_at: None,
            beats: Default::default(),
        };
        let default = Name::new("default").unwrap();
        let apps_of = |app: &str| -> Vec<u32> {
            entry
                .replicas_of(&default, &Name::new(app).unwrap())
                .iter()
                .map(|r| r.id.index)
                .collect()
        };
        assert_eq!(apps_of("b"), vec![0, 3]);
        assert_eq!(apps_of("a"), vec![1]);
        assert_eq!(apps_of("ab"), vec![4]);
        assert!(apps_of("d").is_empty());
        let other = Name::new("other").unwrap();
        assert!(
            entry
                .replicas_of(&other, &Name::new("b").unwrap())
                .is_empty()
        );
    }
}
