//! Autoscaling by queue depth, inside the scheduler.
//!
//! For every queue worker with `autoscale`, the depth of its work queue
//! (messages waiting plus messages delivered and not yet acked, read from
//! the shared consumer's info through the JetStream API) sets the replicas
//! it wants: `ceil(depth / target_queue_depth)`, clamped to `[min, max]`.
//! Up at once; down only after [`SCALE_DOWN_WINDOW`] of wanting fewer; to
//! zero (or `min`) after `idle` without any messages. Each change is an
//! event with the numbers it used. A missing stream or consumer changes
//! nothing.

use std::sync::Arc;
use std::time::Instant;

use shoal_api::{Name, subjects};
use tokio::sync::watch;

use crate::Shared;
use crate::state::{ScaleState, event};
use crate::tunables::{AUTOSCALE_INTERVAL, SCALE_DOWN_WINDOW};

/// One autoscaled queue worker, as the loop sees it.
struct Target {
    key: String,
    namespace: Name,
    app: Name,
    pod: Name,
    component: Name,
    min: u32,
    max: u32,
    per_replica: u32,
    idle: std::time::Duration,
}

/// Runs until `stop`.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let js = async_nats::jetstream::new(shared.nats.clone());
    loop {
        tokio::select! {
            () = tokio::time::sleep(AUTOSCALE_INTERVAL) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        let targets = targets(&shared);
        for t in targets {
            let stream = subjects::queue_stream(&t.namespace, &t.app, &t.component);
            let info = match js.get_stream(&stream).await {
                Ok(s) => s.consumer_info(subjects::QUEUE_CONSUMER).await.ok(),
                Err(_) => None,
            };
            let Some(info) = info else {
                tracing::debug!(stream, "no queue consumer yet; not scaling");
                continue;
            };
            let pending = info.num_pending;
            let in_flight = info.num_ack_pending as u64;
            decide(&shared, &t, pending, in_flight).await;
        }
    }
}

fn targets(shared: &Shared) -> Vec<Target> {
    let state = shared.state();
    let mut out = Vec::new();
    for (key, app) in &state.apps {
        let spec = &app.stored.spec;
        for pod in spec.pods() {
            for (name, c) in &pod.components {
                if let (Some(auto), Some(_)) = (&c.autoscale, &c.queue) {
                    out.push(Target {
                        key: key.clone(),
                        namespace: spec.namespace.clone(),
                        app: spec.name.clone(),
                        pod: pod.name.clone(),
                        component: (*name).clone(),
                        min: auto.min,
                        max: auto.max,
                        per_replica: auto.target_queue_depth.max(1),
                        idle: auto.idle.get(),
                    });
                }
            }
        }
    }
    out
}

async fn decide(shared: &Shared, t: &Target, pending: u64, in_flight: u64) {
    let now = Instant::now();
    let depth = pending + in_flight;
    let wanted = u32::try_from(depth.div_ceil(u64::from(t.per_replica)))
        .unwrap_or(u32::MAX)
        .clamp(t.min, t.max);
    let change = {
        let mut state = shared.state();
        let entry = state
            .scale
            .entry((t.key.clone(), t.pod.clone()))
            .or_insert_with(|| ScaleState::new(t.min, now));
        if depth > 0 {
            entry.last_active = now;
        }
        let current = entry.desired;
        let next = if wanted > current {
            entry.low_since = None;
            Some(wanted)
        } else if wanted < current {
            let since = *entry.low_since.get_or_insert(now);
            if depth == 0 && now.duration_since(entry.last_active) >= t.idle {
                Some(t.min)
            } else if depth > 0 && now.duration_since(since) >= SCALE_DOWN_WINDOW {
                Some(wanted)
            } else {
                None
            }
        } else {
            entry.low_since = None;
            None
        };
        next.filter(|n| *n != current).map(|n| {
            entry.desired = n;
            entry.low_since = None;
            let why = format!(
                "{} scaled from {current} to {n} replicas: {depth} messages ({pending} waiting, {in_flight} in flight), target {} per replica, bounds {}..={}",
                t.component, t.per_replica, t.min, t.max
            );
            entry.last_decision = Some(why.clone());
            why
        })
    };
    if let Some(why) = change {
        tracing::info!(app = %t.app, "{why}");
        shared
            .record(event(&t.namespace, &t.app, "scaled", why))
            .await;
        shared.wake();
    }
}
