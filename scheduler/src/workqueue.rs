//! The reconciler's work queue: which apps to look at next.
//!
//! Modelled on kube-rs's `Controller`: a change is queued under the key of
//! the app it concerns (an apply, a scale, a heartbeat in which one of the
//! app's replicas changed), and a pass reconciles only the apps queued
//! since the one before, so an apply costs its own app and not a pass over
//! every replica in the cluster. A key queued twice before a pass is
//! reconciled once. What concerns every app (a host joins, is lost or
//! drains, a namespace's quota changes) queues everything, and so does the
//! periodic resync ([`RESYNC_INTERVAL`](crate::tunables::RESYNC_INTERVAL)),
//! the level-triggered safety net that mends whatever a missed change left.

use std::sync::Mutex;

use rustc_hash::{FxHashMap, FxHashSet};
use shoal_api::Name;
use shoal_api::wire::ReplicaId;
use tokio::sync::Notify;

/// Which apps one pass reconciles.
#[derive(Debug, Clone, Default)]
pub enum Scope {
    /// Every app, and every copy on every host.
    #[default]
    Everything,
    /// These apps (by namespace, then name) and their copies only.
    Apps(AppSet),
}

/// A set of apps, looked up by a replica's namespace and app name without
/// building a key for each replica a pass looks at.
#[derive(Debug, Clone, Default)]
pub struct AppSet(FxHashMap<Name, FxHashSet<Name>>);

impl AppSet {
    /// Adds one app.
    pub fn insert(&mut self, namespace: &Name, app: &Name) {
        if let Some(apps) = self.0.get_mut(namespace) {
            if !apps.contains(app) {
                apps.insert(app.clone());
            }
        } else {
            self.0
                .insert(namespace.clone(), FxHashSet::from_iter([app.clone()]));
        }
    }

    /// Whether the set holds `app` of `namespace`.
    pub fn contains(&self, namespace: &Name, app: &Name) -> bool {
        self.0.get(namespace).is_some_and(|apps| apps.contains(app))
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.values().all(FxHashSet::is_empty)
    }

    /// Every app in the set, as (namespace, name).
    pub fn iter(&self) -> impl Iterator<Item = (&Name, &Name)> {
        self.0
            .iter()
            .flat_map(|(ns, apps)| apps.iter().map(move |a| (ns, a)))
    }
}

impl Scope {
    /// Whether the pass covers `replica`'s app.
    pub fn covers(&self, replica: &ReplicaId) -> bool {
        self.covers_app(&replica.namespace, &replica.app)
    }

    /// Whether the pass covers `app` of `namespace`.
    pub fn covers_app(&self, namespace: &Name, app: &Name) -> bool {
        match self {
            Scope::Everything => true,
            Scope::Apps(set) => set.contains(namespace, app),
        }
    }

    /// Widens the scope by `app` of `namespace`.
    pub fn add(&mut self, namespace: &Name, app: &Name) {
        if let Scope::Apps(set) = self {
            set.insert(namespace, app);
        }
    }

    /// Whether nothing is in scope.
    pub fn is_empty(&self) -> bool {
        matches!(self, Scope::Apps(set) if set.is_empty())
    }
}

/// Apps waiting for a pass, and the signal that wakes the reconciler.
#[derive(Default)]
pub struct WorkQueue {
    queued: Mutex<Queued>,
    wake: Notify,
}

#[derive(Default)]
struct Queued {
    everything: bool,
    apps: AppSet,
}

impl WorkQueue {
    /// Queues one app and wakes the reconciler.
    pub fn app(&self, namespace: &Name, app: &Name) {
        self.lock().apps.insert(namespace, app);
        self.wake.notify_one();
    }

    /// Queues every app in `apps` and wakes the reconciler.
    pub fn apps(&self, apps: &AppSet) {
        let mut queued = self.lock();
        for (namespace, app) in apps.iter() {
            queued.apps.insert(namespace, app);
        }
        drop(queued);
        self.wake.notify_one();
    }

    /// Queues the app stored under `key` (`namespace.app`).
    pub fn app_key(&self, key: &str) {
        match key
            .split_once('.')
            .map(|(ns, app)| (Name::new(ns.to_string()), Name::new(app.to_string())))
        {
            Some((Ok(namespace), Ok(app))) => self.app(&namespace, &app),
            // Not an app's key: look at everything rather than miss it.
            _ => self.everything(),
        }
    }

    /// Queues every app and wakes the reconciler.
    pub fn everything(&self) {
        self.lock().everything = true;
        self.wake.notify_one();
    }

    /// Waits until something is queued (or was queued since the last take).
    pub async fn notified(&self) {
        self.wake.notified().await;
    }

    /// What is queued, leaving the queue empty.
    pub fn take(&self) -> Scope {
        let queued = std::mem::take(&mut *self.lock());
        if queued.everything {
            Scope::Everything
        } else {
            Scope::Apps(queued.apps)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Name {
        Name::new(s.to_string()).unwrap()
    }

    #[test]
    fn an_app_queued_twice_is_reconciled_once_and_everything_covers_all() {
        let queue = WorkQueue::default();
        queue.app(&name("shop"), &name("cart"));
        queue.app_key("shop.cart");
        queue.app(&name("blog"), &name("web"));
        let Scope::Apps(set) = queue.take() else {
            panic!("only apps were queued")
        };
        let mut apps: Vec<_> = set.iter().map(|(n, a)| format!("{n}.{a}")).collect();
        apps.sort();
        assert_eq!(apps, ["blog.web", "shop.cart"]);
        assert!(queue.take().is_empty(), "a take empties the queue");

        queue.app(&name("shop"), &name("cart"));
        queue.everything();
        let scope = queue.take();
        assert!(matches!(scope, Scope::Everything));
        assert!(scope.covers_app(&name("any"), &name("thing")));
    }

    #[test]
    fn a_key_that_is_not_an_apps_queues_everything() {
        let queue = WorkQueue::default();
        queue.app_key("no-dot-here");
        assert!(matches!(queue.take(), Scope::Everything));
    }
}
