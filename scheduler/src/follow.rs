//! Every scheduler's picture of desired state comes from KV watches.
//!
//! Any scheduler accepts API writes (compare-and-set writes to KV), so a
//! change made through one must reach every other's memory: each bucket
//! that holds desired state (apps, secrets, namespaces) and the control
//! bucket (what the leader remembers) is followed with a watch. A write
//! made through this scheduler lands in its memory at once and again from
//! the watch; the revision tells the two apart, so applying an entry twice
//! changes nothing. When a watch ends (NATS went away), it is taken up
//! again from the last value of every key.

use std::sync::Arc;

use async_nats::jetstream::kv;
use futures::StreamExt;
use shoal_api::Name;
use tokio::sync::watch;

use crate::Shared;
use crate::state::{App, StoredApp};
use crate::tunables::REWATCH_INTERVAL;

/// A bucket whose entries feed the scheduler's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Followed {
    /// `shoal-apps`: desired state.
    Apps,
    /// `shoal-secrets`: sealed secrets.
    Secrets,
    /// `shoal-namespaces`: namespaces and quotas.
    Namespaces,
    /// `shoal-control`: autoscaled counts, rollouts, finished jobs.
    Control,
}

impl Followed {
    fn name(self) -> &'static str {
        match self {
            Followed::Apps => "apps",
            Followed::Secrets => "secrets",
            Followed::Namespaces => "namespaces",
            Followed::Control => "control",
        }
    }
}

/// Starts watching `bucket` for changes from now on; pass the watch to
/// [`run`] after loading what the bucket holds, so nothing in between is
/// missed.
pub async fn watch(bucket: &kv::Store, what: Followed) -> Result<kv::Watch, crate::SchedulerError> {
    bucket
        .watch_all()
        .await
        .map_err(|e| crate::store::unavailable(&format!("watching the {} bucket", what.name()), e))
}

/// Applies `updates` of `bucket` to the scheduler's memory until `stop`.
pub async fn run(
    shared: Arc<Shared>,
    bucket: kv::Store,
    what: Followed,
    updates: kv::Watch,
    stop: watch::Receiver<bool>,
) {
    let rewatch = || {
        let bucket = &bucket;
        // The last value of every key, then changes.
        async move {
            bucket.watch_with_history(">").await.map_err(|e| {
                crate::store::unavailable(&format!("watching the {} bucket", what.name()), e)
            })
        }
    };
    follow_bucket(
        what.name(),
        updates,
        stop,
        |entry| apply(&shared, what, entry),
        |_| {},
        rewatch,
    )
    .await;
}

/// Hands every entry of a bucket's watch to `apply` until `stop`. When the
/// watch ends (NATS went away), `gap(false)` is called, then `rewatch`
/// every [`REWATCH_INTERVAL`] until it gives a new watch, caught up with
/// what was missed, and then `gap(true)`.
pub(crate) async fn follow_bucket<Fut>(
    what: &str,
    mut updates: kv::Watch,
    mut stop: watch::Receiver<bool>,
    mut apply: impl FnMut(&kv::Entry),
    mut gap: impl FnMut(bool),
    mut rewatch: impl FnMut() -> Fut,
) where
    Fut: std::future::Future<Output = Result<kv::Watch, crate::SchedulerError>>,
{
    loop {
        let update = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            update = updates.next() => update,
        };
        match update {
            Some(Ok(entry)) => {
                apply(&entry);
                continue;
            }
            Some(Err(e)) => {
                tracing::warn!(bucket = what, error = %e, "a watch update failed");
                continue;
            }
            None => {}
        }
        tracing::warn!(bucket = what, "the watch ended: taking it up again");
        gap(false);
        updates = loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                () = tokio::time::sleep(REWATCH_INTERVAL) => {}
            }
            match rewatch().await {
                Ok(watch) => break watch,
                Err(e) => tracing::warn!(bucket = what, error = %e, "cannot watch yet"),
            }
        };
        tracing::info!(bucket = what, "the watch is back");
        gap(true);
    }
}

/// Applies one entry.
fn apply(shared: &Shared, what: Followed, entry: &kv::Entry) {
    let value = (entry.operation == kv::Operation::Put).then_some(&entry.value[..]);
    match what {
        Followed::Apps => apply_app(shared, &entry.key, value, entry.revision),
        Followed::Secrets => apply_secret(shared, &entry.key, value),
        Followed::Namespaces => apply_namespace(shared, &entry.key, value),
        Followed::Control => {
            // The leader writes these itself; only the others follow.
            if !shared.leadership.holds() {
                crate::remembered::apply(&mut shared.state(), &entry.key, value);
            }
        }
    }
}

fn apply_app(shared: &Shared, key: &str, value: Option<&[u8]>, revision: u64) {
    let changed = {
        let mut state = shared.state();
        let newer = state.apps.get(key).is_none_or(|a| a.kv < revision);
        if !newer {
            return;
        }
        match value.map(serde_json::from_slice::<StoredApp>) {
            Some(Ok(stored)) => {
                state
                    .apps
                    .insert(key.to_string(), App::from_kv(stored, revision));
                true
            }
            Some(Err(e)) => {
                tracing::error!(key, revision, error = %e, "skipping an unreadable app");
                false
            }
            None => state.apps.remove(key).is_some(),
        }
    };
    if changed {
        shared.queue.app_key(key);
    }
}

fn apply_secret(shared: &Shared, key: &str, value: Option<&[u8]>) {
    match value {
        Some(sealed) => match shared.secret_box.open(key, sealed) {
            Ok(
                crate::secrets::Opened::Current(value) | crate::secrets::Opened::Previous(value),
            ) => {
                shared.state().secrets.insert(key.to_string(), value);
            }
            Err(why) => tracing::error!(secret = key, "{why}"),
        },
        None => {
            shared.state().secrets.remove(key);
        }
    }
}

fn apply_namespace(shared: &Shared, key: &str, value: Option<&[u8]>) {
    let Ok(name) = Name::new(key.to_string()) else {
        return;
    };
    match value.map(serde_json::from_slice::<crate::namespaces::StoredNamespace>) {
        Some(Ok(stored)) => {
            shared.state().namespaces.insert(name, stored);
        }
        Some(Err(e)) => tracing::error!(key, error = %e, "skipping an unreadable namespace"),
        None => {
            shared.state().namespaces.remove(&name);
        }
    }
    shared.wake();
}
