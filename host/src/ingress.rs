//! The host's HTTP ingress routing table: one listener serves every http
//! component the host runs, chosen by the longest matching route prefix.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use shoal_api::wire::ReplicaId;

use crate::component::LoadedComponent;
use crate::http::Routes;

struct Route {
    prefix: String,
    replica: ReplicaId,
    component: Arc<LoadedComponent>,
}

/// Routes by path prefix to the http components of local replicas.
#[derive(Default)]
pub struct IngressRoutes {
    routes: RwLock<Vec<Route>>,
    next: AtomicUsize,
}

impl IngressRoutes {
    /// Serves `prefix` with `component` of `replica`.
    pub fn add(&self, prefix: &str, replica: &ReplicaId, component: Arc<LoadedComponent>) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.push(Route {
            prefix: prefix.trim_end_matches('/').to_string(),
            replica: replica.clone(),
            component,
        });
        // Longest prefix first.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
    }

    /// Removes every route of `replica`.
    pub fn remove(&self, replica: &ReplicaId) {
        self.routes
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| &r.replica != replica);
    }
}

fn matches(prefix: &str, path: &str) -> bool {
    prefix.is_empty()
        || path == prefix
        || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

impl Routes for IngressRoutes {
    fn route(&self, _host: Option<&str>, path: &str) -> Option<Arc<LoadedComponent>> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        let best = routes.iter().find(|r| matches(&r.prefix, path))?;
        // Spread requests over the local replicas serving the same prefix.
        let same: Vec<&Route> = routes.iter().filter(|r| r.prefix == best.prefix).collect();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % same.len();
        Some(same[i].component.clone())
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
