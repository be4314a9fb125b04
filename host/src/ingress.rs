//! The host's HTTP ingress routing table: one listener serves every http
//! component of the cluster, chosen by the longest matching route prefix.
//!
//! The longest match is taken over every route known anywhere (this host's
//! replicas, other hosts' heartbeats, the scheduler's table of declared
//! and dormant routes) before asking who serves it. A route whose replica
//! is still starting therefore answers 503 (or is held, when scaled to
//! zero) and never falls through to a shorter route of another app.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use shoal_api::subjects;
use shoal_api::wire::{Activate, DormantRoutes, Heartbeat, HostId, HttpRoute, ReplicaId};

use crate::component::LoadedComponent;
use crate::http::{Routes, Target};

use crate::tunables::REMOTE_ROUTE_TTL;

struct Route {
    prefix: String,
    host: Option<String>,
    replica: ReplicaId,
    revision: u64,
    component_name: shoal_api::Name,
    component: Arc<LoadedComponent>,
    /// Passing its readiness checks: only ready routes take requests.
    ready: bool,
}

/// Routes by path prefix: to the http components of local replicas first,
/// else over NATS to replicas other hosts advertise in their heartbeats.
#[derive(Default)]
pub struct IngressRoutes {
    routes: RwLock<Vec<Route>>,
    next: AtomicUsize,
    remote: RwLock<HashMap<HostId, (Instant, Vec<HttpRoute>)>>,
    /// Routes of components scaled to zero and every declared route, as
    /// the scheduler last said.
    dormant: RwLock<Option<(Instant, DormantRoutes)>>,
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

    /// Learns the routes another host serves from its heartbeat.
    pub fn observe(&self, heartbeat: &Heartbeat) {
        if self
            .cluster
            .as_ref()
            .is_some_and(|(me, _)| me == &heartbeat.host)
        {
            return;
        }
        self.remote
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                heartbeat.host.clone(),
                (Instant::now(), heartbeat.routes.clone()),
            );
    }

    /// Whether another host of the cluster heartbeated recently: somewhere
    /// for this host's replicas to go.
    pub fn has_live_peers(&self) -> bool {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|(seen, _)| seen.elapsed() <= REMOTE_ROUTE_TTL)
    }

    /// Learns which routes belong to components scaled to zero.
    pub fn observe_dormant(&self, dormant: DormantRoutes) {
        *self.dormant.write().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), dormant));
    }

    /// The scheduler's route table, if it spoke recently.
    fn table(&self) -> Option<std::sync::RwLockReadGuard<'_, Option<(Instant, DormantRoutes)>>> {
        let dormant = self.dormant.read().unwrap_or_else(|p| p.into_inner());
        let fresh = dormant
            .as_ref()
            .is_some_and(|(seen, _)| seen.elapsed() <= REMOTE_ROUTE_TTL);
        fresh.then_some(dormant)
    }

    /// A component scaled to zero that serves `path` by a route of rank
    /// `rank`, if the scheduler said so recently.
    fn dormant_target(&self, host: Option<&str>, path: &str, rank: Rank) -> Option<Target> {
        let (_, nats) = self.cluster.as_ref()?;
        let table = self.table()?;
        let (_, table) = table.as_ref()?;
        let best = table
            .routes
            .iter()
            .filter(|r| serves(r, host, path) && rank_of(r) == rank)
            .max_by_key(|r| (r.namespace.clone(), r.app.clone()))?;
        Some(Target::Dormant {
            nats: nats.clone(),
            activate: Activate {
                namespace: best.namespace.clone(),
                app: best.app.clone(),
                component: best.component.clone(),
                path: path.to_string(),
            },
        })
    }

    /// The best rank of any route known anywhere for `path` on `host`.
    fn best_rank(&self, host: Option<&str>, path: &str) -> Option<Rank> {
        let local = self
            .routes
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|r| host_matches(r.host.as_deref(), host) && matches(&r.prefix, path))
            .map(|r| (r.host.is_some(), r.prefix.len()))
            .max();
        let now = Instant::now();
        let remote = self
            .remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|(seen, _)| now.duration_since(*seen) <= REMOTE_ROUTE_TTL)
            .flat_map(|(_, routes)| routes.iter())
            .filter(|r| serves(r, host, path))
            .map(rank_of)
            .max();
        let table = self.table().and_then(|t| {
            let (_, table) = t.as_ref()?;
            table
                .routes
                .iter()
                .chain(&table.declared)
                .filter(|r| serves(r, host, path))
                .map(rank_of)
                .max()
        });
        [local, remote, table].into_iter().flatten().max()
    }

    /// The name of a declared route of rank `rank` for `path`, when no
    /// replica serves it anywhere yet.
    fn declared_name(&self, host: Option<&str>, path: &str, rank: Rank) -> Option<String> {
        let table = self.table()?;
        let (_, table) = table.as_ref()?;
        table
            .declared
            .iter()
            .find(|r| serves(r, host, path) && rank_of(r) == rank)
            .map(|r| format!("{}/{}/{}", r.namespace, r.app, r.component))
    }

    /// The routes of the local replicas, for this host's heartbeat: ready
    /// when a ready replica is behind them.
    pub fn advertised(&self) -> Vec<HttpRoute> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<HttpRoute> = Vec::new();
        for r in routes.iter() {
            let ready = r.ready;
            let prefix = if r.prefix.is_empty() {
                "/".to_string()
            } else {
                r.prefix.clone()
            };
            match out.iter_mut().find(|o| {
                o.prefix == prefix
                    && o.host == r.host
                    && o.app == r.replica.app
                    && o.namespace == r.replica.namespace
            }) {
                Some(o) => o.ready |= ready,
                None => out.push(HttpRoute {
                    prefix,
                    host: r.host.clone(),
                    namespace: r.replica.namespace.clone(),
                    app: r.replica.app.clone(),
                    component: r.component_name.clone(),
                    ready,
                }),
            }
        }
        out
    }

    fn remote_target(&self, host: Option<&str>, path: &str, rank: Rank) -> Option<Target> {
        let (_, nats) = self.cluster.as_ref()?;
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let best = remote
            .values()
            .filter(|(seen, _)| now.duration_since(*seen) <= REMOTE_ROUTE_TTL)
            .flat_map(|(_, routes)| routes.iter())
            .filter(|r| serves(r, host, path) && rank_of(r) == rank)
            .max_by_key(|r| r.ready)?;
        let name = format!("{}/{}/{}", best.namespace, best.app, best.component);
        if !best.ready {
            return Some(Target::Unready(name));
        }
        Some(Target::Remote {
            nats: nats.clone(),
            subject: subjects::http(&best.namespace, &best.app, &best.component),
            name,
        })
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
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.push(Route {
            prefix: prefix.trim_end_matches('/').to_string(),
            host: host.map(str::to_ascii_lowercase),
            replica: replica.clone(),
            revision,
            component_name: name.clone(),
            component,
            ready,
        });
        // Host-specific routes first, then the longest prefix.
        routes.sort_by_key(|r| std::cmp::Reverse((r.host.is_some(), r.prefix.len())));
    }

    /// Takes the routes of one copy of `replica` in or out of rotation.
    pub fn set_ready(&self, replica: &ReplicaId, revision: u64, ready: bool) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        for r in routes
            .iter_mut()
            .filter(|r| &r.replica == replica && r.revision == revision)
        {
            r.ready = ready;
        }
    }

    /// Removes the routes of the copy of `replica` at `revision`.
    pub fn remove(&self, replica: &ReplicaId, revision: u64) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| !(&r.replica == replica && r.revision == revision));
    }
}

/// How well a route matches: host-specific routes first, then the longest
/// prefix (without its trailing `/`).
type Rank = (bool, usize);

fn rank_of(route: &HttpRoute) -> Rank {
    (
        route.host.is_some(),
        route.prefix.trim_end_matches('/').len(),
    )
}

/// Whether an advertised `route` takes a request for `path` on `host`.
fn serves(route: &HttpRoute, host: Option<&str>, path: &str) -> bool {
    host_matches(route.host.as_deref(), host) && matches(route.prefix.trim_end_matches('/'), path)
}

/// Whether a route limited to `route_host` (if any) takes a request for `host`.
fn host_matches(route_host: Option<&str>, host: Option<&str>) -> bool {
    match route_host {
        None => true,
        Some(want) => host.is_some_and(|h| h.eq_ignore_ascii_case(want)),
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl Routes for IngressRoutes {
    fn served_by(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(me, _)| me.as_str())
    }

    fn route(&self, host: Option<&str>, path: &str) -> Option<Target> {
        let rank = self.best_rank(host, path)?;
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let best = routes.iter().find(|r| {
            host_matches(r.host.as_deref(), host)
                && matches(&r.prefix, path)
                && (r.host.is_some(), r.prefix.len()) == rank
        });
        let Some(best) = best else {
            drop(routes);
            return self
                .remote_target(host, path, rank)
                .or_else(|| self.dormant_target(host, path, rank))
                .or_else(|| self.declared_name(host, path, rank).map(Target::Unready));
        };
        // Spread requests over the ready local replicas serving the same route.
        let same: Vec<&Route> = routes
            .iter()
            .filter(|r| r.ready && r.prefix == best.prefix && r.host == best.host)
            .collect();
        if same.is_empty() {
            // Local replicas exist but none is ready: another host's may be.
            let name = format!(
                "{}/{}/{}",
                best.replica.namespace, best.replica.app, best.component_name
            );
            drop(routes);
            return match self.remote_target(host, path, rank) {
                Some(remote @ Target::Remote { .. }) => Some(remote),
                _ => Some(Target::Unready(name)),
            };
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % same.len();
        Some(Target::Local(same[i].component.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(matches("", "/anything"));
        assert!(matches("/orders", "/orders"));
        assert!(matches("/orders", "/orders/42"));
        assert!(!matches("/orders", "/ordersx"));
        assert!(!matches("/orders", "/"));
    }
}
