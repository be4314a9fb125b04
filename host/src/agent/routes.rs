//! Following the cluster's route table: the leading scheduler keeps it in
//! the routes bucket, one key per http component with a route; this task
//! keeps the ingress's copy current through a watch, taken up again when
//! it ends.

use std::collections::HashMap;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use shoal_api::subjects::ROUTES_BUCKET;
use shoal_api::wire::RouteEntry;
use tokio::sync::watch;

use super::Agent;
use crate::tunables::ROUTES_REWATCH;

/// Follows the route table into the ingress until `stop`.
pub(super) async fn follow_routes(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let js = jetstream::new(agent.nats.clone());
    let mut told = false;
    loop {
        let updates = match js.get_key_value(ROUTES_BUCKET).await {
            Ok(bucket) => bucket
                .watch_with_history(">")
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match updates {
            Ok(updates) => {
                told = false;
                if follow(&agent, updates, &mut stop).await.is_break() {
                    return;
                }
                tracing::warn!("the route table's watch ended: taking it up again");
            }
            // Before any scheduler made the bucket, or while NATS is away.
            Err(e) if !told => {
                tracing::info!(error = %e, "cannot follow the route table yet");
                told = true;
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            () = tokio::time::sleep(ROUTES_REWATCH) => {}
        }
    }
}

/// Applies one watch's entries until it ends (`Continue`) or `stop`
/// (`Break`). Until the watch has caught up, entries go into a new table
/// that then replaces the old one whole, so that a route deleted while
/// the watch was down does not linger.
async fn follow(
    agent: &Agent,
    mut updates: kv::Watch,
    stop: &mut watch::Receiver<bool>,
) -> std::ops::ControlFlow<()> {
    let mut fresh: Option<HashMap<String, RouteEntry>> = Some(HashMap::new());
    loop {
        let update = tokio::select! {
            _ = stop.wait_for(|s| *s) => return std::ops::ControlFlow::Break(()),
            update = updates.next() => update,
        };
        let entry = match update {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "a route table update failed");
                continue;
            }
            None => return std::ops::ControlFlow::Continue(()),
        };
        let value = match entry.operation {
            kv::Operation::Put => match serde_json::from_slice::<RouteEntry>(&entry.value) {
                Ok(route) => Some(route),
                Err(e) => {
                    tracing::warn!(key = entry.key, error = %e, "ignoring an unreadable route");
                    None
                }
            },
            kv::Operation::Delete | kv::Operation::Purge => None,
        };
        match &mut fresh {
            Some(table) => {
                match value {
                    Some(route) => table.insert(entry.key.clone(), route),
                    None => table.remove(&entry.key),
                };
                if entry.seen_current || entry.delta == 0 {
                    agent
                        .routes
                        .replace_routes(fresh.take().unwrap_or_default());
                }
            }
            None => agent.routes.set_route(&entry.key, value),
        }
    }
}
