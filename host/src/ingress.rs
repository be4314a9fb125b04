//! The host's HTTP ingress routing table: one listener serves every http
//! component of the cluster, chosen by the longest matching route prefix.
//!
//! The longest match is taken over every route known anywhere (this host's
//! replicas, and the cluster's route table the leading scheduler keeps)
//! before asking who serves it. A route whose replica
//! is still starting therefore answers 503 (or is held, when scaled to
//! zero) and never falls through to a shorter route of another app.
//!
//! Both are indexed by host name and prefix: a request looks up the
//! few prefixes its path can match (one per `/` in it), so routing among
//! ten thousand apps costs what routing among one does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use shoal_api::subjects;
use shoal_api::wire::{Activate, CanaryRoute, HostId, ReplicaId, RouteEntry};

use crate::component::LoadedComponent;
use crate::http::{Routes, Target};
use crate::shadow::{ShadowCopy, ShadowTally};
use shoal_api::resources::ShadowReport;

use crate::tunables::{MAX_SHADOW_REPORTS_PER_BEAT, PEER_TTL};

struct Route {
    replica: ReplicaId,
    revision: u64,
    component_name: shoal_api::Name,
    component: Arc<LoadedComponent>,
    /// Passing its readiness checks: only ready routes take requests.
    ready: bool,
}

/// Where a route applies: the host name it is limited to (lower case), if
/// any, and its prefix without a trailing `/` (empty for the root).
type RouteKey = (Option<String>, String);

fn key_of(host: Option<&str>, prefix: &str) -> RouteKey {
    (
        host.map(str::to_ascii_lowercase),
        prefix.trim_end_matches('/').to_string(),
    )
}

/// Routes by where they apply.
type Index<T> = HashMap<RouteKey, Vec<T>>;

/// The keys a request for `path` on `host` can match, best first:
/// host-specific routes before the others, longer prefixes before shorter.
fn candidates(host: Option<&str>, path: &str) -> Vec<(Rank, RouteKey)> {
    let mut prefixes: Vec<&str> = vec![path];
    prefixes.extend(
        path.char_indices()
            .rev()
            .filter(|(_, c)| *c == '/')
            .map(|(i, _)| &path[..i]),
    );
    prefixes.dedup();
    let host = host.map(str::to_ascii_lowercase);
    let specific = host.iter().flat_map(|h| {
        prefixes
            .iter()
            .map(move |p| ((true, p.len()), (Some(h.clone()), p.to_string())))
    });
    let general = prefixes
        .iter()
        .map(|p| ((false, p.len()), (None, p.to_string())));
    specific.chain(general).collect()
}

/// The cluster's route table, as the routes bucket holds it.
#[derive(Default)]
struct Table {
    /// By bucket key.
    entries: HashMap<String, RouteEntry>,
    /// The same, by where they apply.
    index: Index<String>,
    /// Requests routed so far to each route in a canary or a shadow, by
    /// bucket key: what the split counts on.
    splits: HashMap<String, AtomicU64>,
    /// Each shadowed route's comparisons, by bucket key.
    shadows: HashMap<String, ShadowTally>,
}

impl Table {
    fn insert(&mut self, key: String, entry: RouteEntry) {
        let counted = self.splits.remove(&key);
        let tally = self.shadows.remove(&key);
        self.remove(&key);
        if entry.canary.is_some() || entry.shadow.is_some() {
            self.splits.insert(key.clone(), counted.unwrap_or_default());
        }
        if let Some(shadow) = &entry.shadow {
            // Counts go on while the shadow is the same generation.
            let same = |t: &ShadowTally| {
                t.lock().unwrap_or_else(|p| p.into_inner()).generation == shadow.generation
            };
            let r = &entry.route;
            let tally = tally.filter(same).unwrap_or_else(|| {
                Arc::new(Mutex::new(ShadowReport::new(
                    r.namespace.clone(),
                    r.app.clone(),
                    r.component.clone(),
                    shadow.generation,
                )))
            });
            self.shadows.insert(key.clone(), tally);
        }
        self.index
            .entry(key_of(entry.route.host.as_deref(), &entry.route.prefix))
            .or_default()
            .push(key.clone());
        self.entries.insert(key, entry);
    }

    fn remove(&mut self, key: &str) {
        self.splits.remove(key);
        self.shadows.remove(key);
        let Some(old) = self.entries.remove(key) else {
            return;
        };
        let at = key_of(old.route.host.as_deref(), &old.route.prefix);
        if let Some(keys) = self.index.get_mut(&at) {
            keys.retain(|k| k != key);
            if keys.is_empty() {
                self.index.remove(&at);
            }
        }
    }

    /// The entries at `at`.
    fn at(&self, at: &RouteKey) -> impl Iterator<Item = &RouteEntry> {
        self.index
            .get(at)
            .into_iter()
            .flatten()
            .filter_map(|k| self.entries.get(k))
    }
}

/// Routes by path prefix: to the http components of local replicas first,
/// else over NATS to replicas the route table says other hosts have ready.
#[derive(Default)]
pub struct IngressRoutes {
    routes: RwLock<Index<Route>>,
    next: AtomicUsize,
    /// When each other host last heartbeated.
    peers: RwLock<HashMap<HostId, Instant>>,
    /// The cluster's route table.
    table: RwLock<Table>,
    cluster: Option<(HostId, async_nats::Client)>,
}

impl IngressRoutes {
    /// A table that can also forward to other hosts of the cluster.
    pub fn clustered(me: HostId, nats: async_nats::Client) -> Self {
        IngressRoutes {
            cluster: Some((me, nats)),
            ..Default::default()
        }
    }

    /// Notes that another host heartbeated.
    pub fn observe_peer(&self, host: &HostId) {
        if self.cluster.as_ref().is_some_and(|(me, _)| me == host) {
            return;
        }
        self.peers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(host.clone(), Instant::now());
    }

    /// Whether another host of the cluster heartbeated recently: somewhere
    /// for this host's replicas to go.
    pub fn has_live_peers(&self) -> bool {
        self.peers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|seen| seen.elapsed() <= PEER_TTL)
    }

    /// Sets the route table's entry `key` (none: removes it).
    pub fn set_route(&self, key: &str, entry: Option<RouteEntry>) {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        match entry {
            Some(entry) => table.insert(key.to_string(), entry),
            None => table.remove(key),
        }
    }

    /// Replaces the whole route table (after following it again).
    pub fn replace_routes(&self, entries: HashMap<String, RouteEntry>) {
        let mut table = Table::default();
        for (key, entry) in entries {
            table.insert(key, entry);
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = table;
    }

    /// The best route known anywhere for `path` on `host`: its rank and key.
    fn best(&self, host: Option<&str>, path: &str) -> Option<(Rank, RouteKey)> {
        let local = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        candidates(host, path)
            .into_iter()
            .find(|(_, key)| local.contains_key(key) || table.index.contains_key(key))
    }

    /// Where the route table sends a request for `at` that no local
    /// replica takes: another host's ready replica, a component at zero to
    /// wake, or 503 naming the component.
    fn remote_target(&self, at: &RouteKey, path: &str) -> Option<Target> {
        let (me, nats) = self.cluster.as_ref()?;
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let mut entries: Vec<&RouteEntry> = table.at(at).collect();
        // Several apps at one place (within a namespace): the same one each time.
        entries.sort_by(|a, b| {
            (&a.route.namespace, &a.route.app).cmp(&(&b.route.namespace, &b.route.app))
        });
        let elsewhere = |e: &&&RouteEntry| e.ready_on.iter().any(|h| h != me);
        if let Some(best) = entries.iter().find(elsewhere) {
            let r = &best.route;
            return Some(Target::Remote {
                nats: nats.clone(),
                subject: subjects::http(&r.namespace, &r.app, &r.component),
                name: format!("{}/{}/{}", r.namespace, r.app, r.component),
                fallback: None,
            });
        }
        if let Some(best) = entries.iter().rev().find(|e| e.dormant) {
            let r = &best.route;
            return Some(Target::Dormant {
                nats: nats.clone(),
                activate: Activate {
                    namespace: r.namespace.clone(),
                    app: r.app.clone(),
                    component: r.component.clone(),
                    path: path.to_string(),
                },
            });
        }
        let r = &entries.first()?.route;
        Some(Target::Unready(format!(
            "{}/{}/{}",
            r.namespace, r.app, r.component
        )))
    }

    /// The canary's replica for a request at `at`, when a canary runs
    /// there and this request is one of its share; `None` sends the request
    /// to the stable replicas. A local canary replica serves it here, else
    /// the canary's subject reaches it on its host.
    fn canary_target(&self, at: &RouteKey) -> Option<Target> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let (_, entry, canary) = picked(&table, at, |e| e.canary.as_ref())?;
        let r = &entry.route;
        if let Some(here) = self.local_extra(at, r, ReplicaId::is_canary) {
            return Some(Target::Local(here));
        }
        let (me, nats) = self.cluster.as_ref()?;
        canary
            .ready_on
            .iter()
            .any(|h| h != me)
            .then(|| Target::Remote {
                nats: nats.clone(),
                subject: subjects::http_canary(&r.namespace, &r.app, &r.component),
                name: format!("{}/{}/{} (canary)", r.namespace, r.app, r.component),
                // A canary rolled back stops a moment before every ingress
                // hears of it: its requests go to the stable replicas then.
                fallback: Some(subjects::http(&r.namespace, &r.app, &r.component)),
            })
    }

    /// Where a copy of a request at `at` goes, when a shadow runs there
    /// and this request is one of its share.
    fn shadow_copy(&self, at: &RouteKey) -> Option<ShadowCopy> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let (key, entry, shadow) = picked(&table, at, |e| e.shadow.as_ref())?;
        let r = &entry.route;
        let name = format!("{}/{}/{} (shadow)", r.namespace, r.app, r.component);
        let tally = table.shadows.get(key)?.clone();
        if let Some(here) = self.local_extra(at, r, ReplicaId::is_shadow) {
            return Some(ShadowCopy {
                local: Some(here),
                remote: None,
                name,
                tally,
            });
        }
        let (me, nats) = self.cluster.as_ref()?;
        shadow.ready_on.iter().any(|h| h != me).then(|| ShadowCopy {
            local: None,
            remote: Some((
                nats.clone(),
                subjects::http_shadow(&r.namespace, &r.app, &r.component),
            )),
            name,
            tally,
        })
    }

    /// A ready local replica of `r`'s component at `at` that `extra` picks
    /// (the canary or the shadow).
    fn local_extra(
        &self,
        at: &RouteKey,
        r: &shoal_api::wire::HttpRoute,
        extra: fn(&ReplicaId) -> bool,
    ) -> Option<Arc<LoadedComponent>> {
        let local = self.routes.read().unwrap_or_else(|p| p.into_inner());
        local
            .get(at)
            .into_iter()
            .flatten()
            .find(|c| {
                c.ready
                    && extra(&c.replica)
                    && c.replica.namespace == r.namespace
                    && c.replica.app == r.app
                    && c.component_name == r.component
            })
            .map(|c| c.component.clone())
    }

    /// What copying requests to shadows showed so far, one report per
    /// shadowed route with something to report (at most
    /// [`MAX_SHADOW_REPORTS_PER_BEAT`]): for the heartbeat.
    pub fn shadow_reports(&self) -> Vec<ShadowReport> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table
            .shadows
            .values()
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .filter(|r| r.compared + r.unanswered > 0)
            .take(MAX_SHADOW_REPORTS_PER_BEAT)
            .collect()
    }

    /// Serves `prefix` with `component` (called `name`) of the copy of
    /// `replica` at `revision`, once it is [`set_ready`](Self::set_ready).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &self,
        prefix: &str,
        host: Option<&str>,
        replica: &ReplicaId,
        revision: u64,
        name: &shoal_api::Name,
        component: Arc<LoadedComponent>,
        ready: bool,
    ) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key_of(host, prefix))
            .or_default()
            .push(Route {
                replica: replica.clone(),
                revision,
                component_name: name.clone(),
                component,
                ready,
            });
    }

    /// Takes the routes of one copy of `replica` in or out of rotation.
    pub fn set_ready(&self, replica: &ReplicaId, revision: u64, ready: bool) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for r in routes
            .values_mut()
            .flatten()
            .filter(|r| &r.replica == replica && r.revision == revision)
        {
            r.ready = ready;
        }
    }

    /// Removes the routes of the copy of `replica` at `revision`.
    pub fn remove(&self, replica: &ReplicaId, revision: u64) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|_, copies| {
            copies.retain(|r| !(&r.replica == replica && r.revision == revision));
            !copies.is_empty()
        });
    }
}

/// The route at `at` whose `side` (its canary or its shadow) has a ready
/// replica, when this request is one of that side's share: its bucket key,
/// entry and side. Several apps at one place: the same one each time.
fn picked<'t>(
    table: &'t Table,
    at: &RouteKey,
    side: impl Fn(&RouteEntry) -> Option<&CanaryRoute>,
) -> Option<(&'t String, &'t RouteEntry, &'t CanaryRoute)> {
    let (key, entry, split) = table
        .index
        .get(at)?
        .iter()
        .filter_map(|k| {
            let entry = table.entries.get(k)?;
            Some((k, entry, side(entry).filter(|s| !s.ready_on.is_empty())?))
        })
        .min_by(|(_, a, _), (_, b, _)| {
            (&a.route.namespace, &a.route.app).cmp(&(&b.route.namespace, &b.route.app))
        })?;
    let n = table.splits.get(key)?.fetch_add(1, Ordering::Relaxed);
    split.share.picks(n).then_some((key, entry, split))
}

/// How well a route matches: host-specific routes first, then the longest
/// prefix (without its trailing `/`).
type Rank = (bool, usize);

impl Routes for IngressRoutes {
    fn served_by(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(me, _)| me.as_str())
    }

    fn route(&self, host: Option<&str>, path: &str) -> Option<Target> {
        let (_, key) = self.best(host, path)?;
        if let Some(canary) = self.canary_target(&key) {
            return Some(canary);
        }
        let target = self.stable_target(&key, path)?;
        if matches!(target, Target::Local(_) | Target::Remote { .. })
            && let Some(shadow) = self.shadow_copy(&key)
        {
            return Some(Target::Mirrored {
                primary: Box::new(target),
                shadow,
            });
        }
        Some(target)
    }
}

impl IngressRoutes {
    /// Where a request at `key` goes among the stable replicas: a local
    /// one, another host's, a component at zero to wake, or 503.
    fn stable_target(&self, key: &RouteKey, path: &str) -> Option<Target> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(copies) = routes.get(key) else {
            drop(routes);
            return self.remote_target(key, path);
        };
        // Spread requests over the ready local replicas serving the route;
        // a canary or shadow replica takes only what is routed to it.
        let ready: Vec<&Route> = copies
            .iter()
            .filter(|r| r.ready && !r.replica.is_extra())
            .collect();
        if ready.is_empty() {
            // Local replicas exist but none is ready: another host's may be.
            let name = copies.first().map(|r| {
                format!(
                    "{}/{}/{}",
                    r.replica.namespace, r.replica.app, r.component_name
                )
            });
            drop(routes);
            return match self.remote_target(key, path) {
                Some(remote @ Target::Remote { .. }) => Some(remote),
                _ => name.map(Target::Unready),
            };
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % ready.len();
        Some(Target::Local(ready[i].component.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::candidates;

    /// Whether a route at `prefix` (and no host) takes `path`.
    fn matches(prefix: &str, path: &str) -> bool {
        candidates(None, path)
            .iter()
            .any(|(_, (_, p))| p == prefix.trim_end_matches('/'))
    }

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(matches("", "/anything"));
        assert!(matches("/", "/anything"));
        assert!(matches("/orders", "/orders"));
        assert!(matches("/orders", "/orders/42"));
        assert!(matches("/orders/", "/orders/42"));
        assert!(matches("/orders", "/orders/"));
        assert!(!matches("/orders", "/ordersx"));
        assert!(!matches("/orders", "/"));
        assert!(!matches("/orders/42", "/orders"));
    }

    #[test]
    fn host_routes_come_first_then_longer_prefixes() {
        let order: Vec<String> = candidates(Some("Shop.Example"), "/a/b")
            .into_iter()
            .map(|((specific, len), (host, prefix))| {
                format!("{specific} {len} {} {prefix:?}", host.unwrap_or_default())
            })
            .collect();
        assert_eq!(
            order,
            [
                "true 4 shop.example \"/a/b\"",
                "true 2 shop.example \"/a\"",
                "true 0 shop.example \"\"",
                "false 4  \"/a/b\"",
                "false 2  \"/a\"",
                "false 0  \"\"",
            ]
        );
    }
}
