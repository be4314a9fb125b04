//! The host's HTTP ingress routing table: one listener serves every http
//! component of the cluster, chosen by the longest matching route prefix.
//!
//! The longest match is taken over every route known anywhere (this host's
//! replicas, other hosts' heartbeats, the scheduler's table of declared
//! and dormant routes) before asking who serves it. A route whose replica
//! is still starting therefore answers 503 (or is held, when scaled to
//! zero) and never falls through to a shorter route of another app.
//!
//! Every source is indexed by host name and prefix: a request looks up the
//! few prefixes its path can match (one per `/` in it), so routing among
//! ten thousand apps costs what routing among one does.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use shoal_api::subjects;
use shoal_api::wire::{Activate, DormantRoutes, HostId, HttpRoute, ReplicaId};

use crate::component::LoadedComponent;
use crate::http::{Routes, Target};

use crate::tunables::REMOTE_ROUTE_TTL;

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

/// Routes of one source by where they apply.
type Index<T> = HashMap<RouteKey, Vec<T>>;

fn index(routes: &[HttpRoute]) -> Index<HttpRoute> {
    let mut out: Index<HttpRoute> = HashMap::new();
    for r in routes {
        out.entry(key_of(r.host.as_deref(), &r.prefix))
            .or_default()
            .push(r.clone());
    }
    out
}

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

/// What another host advertised in its last heartbeat.
struct Peer {
    seen: Instant,
    routes: Vec<HttpRoute>,
    index: Index<HttpRoute>,
}

/// The scheduler's route table, indexed.
struct Table {
    seen: Instant,
    dormant: Index<HttpRoute>,
    declared: Index<HttpRoute>,
}

/// Routes by path prefix: to the http components of local replicas first,
/// else over NATS to replicas other hosts advertise in their heartbeats.
#[derive(Default)]
pub struct IngressRoutes {
    routes: RwLock<Index<Route>>,
    next: AtomicUsize,
    remote: RwLock<HashMap<HostId, Peer>>,
    /// Routes of components scaled to zero and every declared route, as
    /// the scheduler last said.
    table: RwLock<Option<Table>>,
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
    pub fn observe(&self, host: &HostId, routes: Vec<HttpRoute>) {
        if self.cluster.as_ref().is_some_and(|(me, _)| me == host) {
            return;
        }
        let mut remote = self.remote.write().unwrap_or_else(|p| p.into_inner());
        match remote.get_mut(host) {
            // The same routes as before, as is usual: no new index.
            Some(peer) if peer.routes == routes => peer.seen = Instant::now(),
            _ => {
                let index = index(&routes);
                remote.insert(
                    host.clone(),
                    Peer {
                        seen: Instant::now(),
                        routes,
                        index,
                    },
                );
            }
        }
    }

    /// Whether another host of the cluster heartbeated recently: somewhere
    /// for this host's replicas to go.
    pub fn has_live_peers(&self) -> bool {
        self.remote
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .any(|peer| peer.seen.elapsed() <= REMOTE_ROUTE_TTL)
    }

    /// Learns from the scheduler which routes belong to components at zero.
    pub fn observe_dormant(&self, dormant: DormantRoutes) {
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Some(Table {
            seen: Instant::now(),
            dormant: index(&dormant.routes),
            declared: index(&dormant.declared),
        });
    }

    /// Runs `f` on the scheduler's route table, if it spoke recently.
    fn with_table<T>(&self, f: impl FnOnce(&Table) -> Option<T>) -> Option<T> {
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        table
            .as_ref()
            .filter(|t| t.seen.elapsed() <= REMOTE_ROUTE_TTL)
            .and_then(f)
    }

    /// A component scaled to zero that serves `key`, if the scheduler
    /// said so recently.
    fn dormant_target(&self, key: &RouteKey, path: &str) -> Option<Target> {
        let (_, nats) = self.cluster.as_ref()?;
        let best = self.with_table(|table| {
            table
                .dormant
                .get(key)?
                .iter()
                .max_by_key(|r| (r.namespace.clone(), r.app.clone()))
                .cloned()
        })?;
        Some(Target::Dormant {
            nats: nats.clone(),
            activate: Activate {
                namespace: best.namespace,
                app: best.app,
                component: best.component,
                path: path.to_string(),
            },
        })
    }

    /// The best route known anywhere for `path` on `host`: its rank and key.
    fn best(&self, host: Option<&str>, path: &str) -> Option<(Rank, RouteKey)> {
        let local = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
        let table = self.table.read().unwrap_or_else(|p| p.into_inner());
        let table = table
            .as_ref()
            .filter(|t| t.seen.elapsed() <= REMOTE_ROUTE_TTL);
        let now = Instant::now();
        candidates(host, path).into_iter().find(|(_, key)| {
            local.contains_key(key)
                || remote.values().any(|peer| {
                    now.duration_since(peer.seen) <= REMOTE_ROUTE_TTL
                        && peer.index.contains_key(key)
                })
                || table
                    .is_some_and(|t| t.dormant.contains_key(key) || t.declared.contains_key(key))
        })
    }

    /// The name of a declared route at `key`, when no replica serves it
    /// anywhere yet.
    fn declared_name(&self, key: &RouteKey) -> Option<String> {
        self.with_table(|table| {
            let r = table.declared.get(key)?.first()?;
            Some(format!("{}/{}/{}", r.namespace, r.app, r.component))
        })
    }

    /// The routes of the local replicas, for this host's heartbeat: ready
    /// when a ready replica is behind them.
    pub fn advertised(&self) -> Vec<HttpRoute> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<HttpRoute> = Vec::new();
        for ((host, prefix), copies) in routes.iter() {
            // One route per app behind the key, ready if any copy is.
            let mut apps: Vec<HttpRoute> = Vec::new();
            for r in copies {
                match apps
                    .iter_mut()
                    .find(|o| o.app == r.replica.app && o.namespace == r.replica.namespace)
                {
                    Some(o) => o.ready |= r.ready,
                    None => apps.push(HttpRoute {
                        prefix: if prefix.is_empty() {
                            "/".to_string()
                        } else {
                            prefix.clone()
                        },
                        host: host.clone(),
                        namespace: r.replica.namespace.clone(),
                        app: r.replica.app.clone(),
                        component: r.component_name.clone(),
                        ready: r.ready,
                    }),
                }
            }
            out.extend(apps);
        }
        // In a stable order, so that a peer sees an unchanged list as equal.
        out.sort_by(|a, b| {
            (&a.host, &a.prefix, &a.namespace, &a.app).cmp(&(
                &b.host,
                &b.prefix,
                &b.namespace,
                &b.app,
            ))
        });
        out
    }

    fn remote_target(&self, key: &RouteKey) -> Option<Target> {
        let (_, nats) = self.cluster.as_ref()?;
        let remote = self.remote.read().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let best = remote
            .values()
            .filter(|peer| now.duration_since(peer.seen) <= REMOTE_ROUTE_TTL)
            .filter_map(|peer| peer.index.get(key))
            .flatten()
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

/// How well a route matches: host-specific routes first, then the longest
/// prefix (without its trailing `/`).
type Rank = (bool, usize);

impl Routes for IngressRoutes {
    fn served_by(&self) -> Option<&str> {
        self.cluster.as_ref().map(|(me, _)| me.as_str())
    }

    fn route(&self, host: Option<&str>, path: &str) -> Option<Target> {
        let (_, key) = self.best(host, path)?;
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let Some(copies) = routes.get(&key) else {
            drop(routes);
            return self
                .remote_target(&key)
                .or_else(|| self.dormant_target(&key, path))
                .or_else(|| self.declared_name(&key).map(Target::Unready));
        };
        // Spread requests over the ready local replicas serving the route.
        let ready: Vec<&Route> = copies.iter().filter(|r| r.ready).collect();
        if ready.is_empty() {
            // Local replicas exist but none is ready: another host's may be.
            let name = copies.first().map(|r| {
                format!(
                    "{}/{}/{}",
                    r.replica.namespace, r.replica.app, r.component_name
                )
            });
            drop(routes);
            return match self.remote_target(&key) {
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
