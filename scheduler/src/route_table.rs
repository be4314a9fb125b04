//! The cluster's route table: every route an app declares, which hosts
//! have a ready replica behind it, and whether its component is scaled to
//! zero. The leader keeps it in the routes bucket, one key per component,
//! writing only what changed; every ingress follows the bucket.
//!
//! Before, each host's heartbeat carried its routes and every ingress
//! read every heartbeat: traffic grew with hosts² and with routes per
//! beat. Now a route costs one write when it changes, and an ingress
//! learns it from one watch however many hosts there are.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use async_nats::jetstream::kv;
use shoal_api::wire::{CanaryRoute, HostId, HttpRoute, ReplicaState, RouteEntry};
use shoal_api::{ComponentKind, Name, subjects};

use crate::state::State;

/// The table as `state` has it now; `dormant` holds the keys of http
/// components scaled to zero.
pub(crate) fn wanted(
    state: &State,
    dormant: &HashSet<String>,
    now: Instant,
) -> BTreeMap<String, RouteEntry> {
    // Hosts with a ready replica, by namespace, app and pod: the stable
    // replicas', and a canary's apart.
    let mut ready: HashMap<(&Name, &Name, &Name), Vec<HostId>> = HashMap::new();
    let mut canaries: HashMap<(&Name, &Name, &Name), Vec<HostId>> = HashMap::new();
    let mut shadows: HashMap<(&Name, &Name, &Name), Vec<HostId>> = HashMap::new();
    for (host, entry) in &state.hosts {
        // A draining host's replicas serve until their replacements are
        // ready: they stay in the table until they stop.
        if !entry.is_live(now) {
            continue;
        }
        for r in &entry.heartbeat.replicas {
            if r.ready && r.state == ReplicaState::Running {
                let by_pod = if r.id.is_canary() {
                    &mut canaries
                } else if r.id.is_shadow() {
                    &mut shadows
                } else {
                    &mut ready
                };
                let hosts = by_pod
                    .entry((&r.id.namespace, &r.id.app, &r.id.pod))
                    .or_default();
                if !hosts.contains(host) {
                    hosts.push(host.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    for (app_key, app) in &state.apps {
        let spec = &app.stored.spec;
        for (name, c) in &spec.components {
            if c.kind != ComponentKind::Http {
                continue;
            }
            // As a host serves it: the root when the spec names no route.
            let prefix = c.route.clone().unwrap_or_else(|| "/".into());
            let pod = c.pod.as_ref().unwrap_or(name);
            let mut ready_on = ready
                .get(&(&spec.namespace, &spec.name, pod))
                .cloned()
                .unwrap_or_default();
            ready_on.sort();
            let canary = crate::canary::share(state, app_key, app, pod).and_then(|share| {
                let mut ready_on = canaries.get(&(&spec.namespace, &spec.name, pod))?.clone();
                ready_on.sort();
                Some(CanaryRoute {
                    generation: app.stored.generation(pod),
                    share,
                    ready_on,
                })
            });
            let shadow = crate::shadow::share(state, app_key, app, pod).map(|share| {
                let mut ready_on = shadows
                    .get(&(&spec.namespace, &spec.name, pod))
                    .cloned()
                    .unwrap_or_default();
                ready_on.sort();
                CanaryRoute {
                    generation: app.stored.generation(pod),
                    share,
                    ready_on,
                }
            });
            let key = subjects::route_key(&spec.namespace, &spec.name, name);
            out.insert(
                key.clone(),
                RouteEntry {
                    route: HttpRoute {
                        prefix,
                        host: c.host.as_deref().map(str::to_ascii_lowercase),
                        namespace: spec.namespace.clone(),
                        app: spec.name.clone(),
                        component: name.clone(),
                        ready: !ready_on.is_empty(),
                    },
                    ready_on,
                    dormant: dormant.contains(&key),
                    canary,
                    shadow,
                },
            );
        }
    }
    out
}

/// What the leader wrote to the routes bucket.
pub(crate) struct RouteTable {
    bucket: kv::Store,
    /// The bucket's content as last written or read; none until this
    /// scheduler writes for the first time, when it reads the bucket.
    written: Option<BTreeMap<String, Vec<u8>>>,
}

impl RouteTable {
    /// The table kept in `bucket`.
    pub(crate) fn new(bucket: kv::Store) -> RouteTable {
        RouteTable {
            bucket,
            written: None,
        }
    }

    /// Writes what differs between `wanted` and the bucket, and removes
    /// what is no longer wanted. A write that fails is tried again next
    /// time.
    pub(crate) async fn publish(&mut self, wanted: BTreeMap<String, RouteEntry>) {
        let mut written = match self.written.take() {
            Some(written) => written,
            // A new leader: what an earlier one wrote is the starting point.
            None => match crate::store::kv_entries(&self.bucket, "routes").await {
                Ok(entries) => entries.into_iter().map(|(k, v)| (k, v.to_vec())).collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the route table; trying again");
                    return;
                }
            },
        };
        // The same entry always serializes the same: fields in order, hosts sorted.
        let wanted: BTreeMap<String, Vec<u8>> = wanted
            .into_iter()
            .filter_map(|(k, e)| Some((k, serde_json::to_vec(&e).ok()?)))
            .collect();
        crate::store::sync_bucket(&self.bucket, &mut written, &wanted, "a route").await;
        self.written = Some(written);
    }

    /// Forgets what was written: when this scheduler leads again, it reads
    /// the bucket first, as another leader may have written meanwhile.
    pub(crate) fn forget(&mut self) {
        self.written = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use crate::state::{App, HostEntry};
    use shoal_api::AppSpec;

    fn app(state: &mut State, text: &str) {
        let spec = AppSpec::from_toml(text, "app.toml").unwrap();
        let key = subjects::app_key(&spec.namespace, &spec.name);
        state.apps.insert(
            key,
            App {
                stored: fixtures::stored_app(text),
                revision: 1,
                kv: 1,
            },
        );
    }

    #[test]
    fn every_declared_route_is_listed_with_the_hosts_ready_behind_it() {
        let mut state = State::default();
        app(
            &mut state,
            "name = \"shop\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/shop\"\nreplicas = 2\n[components.jobs]\nsource = \"j.wasm\"\nkind = \"worker\"\nqueue = \"q\"\n",
        );
        app(
            &mut state,
            "name = \"idle\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/idle\"\nhost = \"Idle.Example\"\n",
        );
        let now = Instant::now();
        for (host, ready) in [("h1", true), ("h2", false)] {
            let copy = fixtures::running(fixtures::replica_id("shop", "web", 0), 1, ready);
            state.hosts.insert(
                HostId::new(host).unwrap(),
                HostEntry {
                    heartbeat: fixtures::heartbeat(host, vec![copy]),
                    last_seen: now,
                    lost: false,
                    rejoined: None,
                    lost_at: None,
                    beats: Default::default(),
                },
            );
        }
        let dormant: HashSet<String> = ["default.idle.web".to_string()].into();
        let table = wanted(&state, &dormant, now);
        assert_eq!(
            table.keys().collect::<Vec<_>>(),
            ["default.idle.web", "default.shop.web"]
        );
        let shop = &table["default.shop.web"];
        assert_eq!(shop.ready_on, [HostId::new("h1").unwrap()]);
        assert!(shop.route.ready && !shop.dormant);
        let idle = &table["default.idle.web"];
        assert!(idle.ready_on.is_empty() && !idle.route.ready && idle.dormant);
        assert_eq!(idle.route.host.as_deref(), Some("idle.example"));
    }
}
