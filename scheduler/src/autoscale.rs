//! Autoscaling by load, inside the scheduler.
//!
//! For every queue worker with `autoscale`, the depth of its work queue
//! (messages waiting plus messages delivered and not yet acked, read from
//! the shared consumer's info through the JetStream API) sets the replicas
//! it wants: `ceil(depth / target_queue_depth)`, clamped to `[min, max]`.
//! For every http component with `autoscale`, the requests its replicas
//! had in flight on average (reported in host heartbeats) set it the same
//! way: `ceil(in_flight / target_in_flight)`. Up at once; down only after
//! [`SCALE_DOWN_WINDOW`] of wanting fewer; to zero (or `min`) after `idle`
//! without any work. Each change is an event with the numbers it used. A
//! missing stream or consumer changes nothing.
//!
//! An http component at zero has no replica for an ingress to find, so the
//! route table marks it dormant ([`crate::route_table`]); an ingress that
//! gets a request for one holds it and asks ([`Activate`]) for a replica,
//! which this module grants at once. This loop, which only the leader
//! runs, also keeps the route table.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use std::collections::{HashMap, HashSet};

use shoal_api::resources::EventReason;
use shoal_api::wire::{Activate, CommandReply, ReplicaState};
use shoal_api::{ComponentKind, Name, subjects};
use tokio::sync::watch;

use crate::Shared;
use crate::route_table::RouteTable;
use crate::state::{ScaleState, event};
use crate::tunables::{AUTOSCALE_INTERVAL, SCALE_DOWN_WINDOW};

/// What an autoscaled component follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    /// A queue worker: messages waiting or in flight, per replica.
    QueueDepth(u32),
    /// An http component: requests in flight on average, per replica.
    InFlight(u32),
}

/// One autoscaled component, as the loop sees it.
struct Target {
    key: String,
    namespace: Name,
    app: Name,
    pod: Name,
    component: Name,
    min: u32,
    max: u32,
    metric: Metric,
    idle: std::time::Duration,
    /// Whether it is an http component, whose route can be dormant.
    route: bool,
    /// A queue worker's queue subject, on the wire.
    queue: Option<String>,
    /// Memory one more replica of its pod reserves, for the quota.
    per_replica_memory: u64,
}

/// How much work there is, in units one replica should have at most
/// `per_replica` of, and the same in words for the decision's event.
struct Demand {
    amount: u64,
    per_replica: u64,
    words: String,
}

/// Runs until `stop`: while this scheduler leads, scales, and keeps the
/// route table.
pub async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let js = shared.js.clone();
    let mut table = RouteTable::new(shared.store.routes.clone());
    let mut wakers = Wakers::default();
    loop {
        tokio::select! {
            () = tokio::time::sleep(AUTOSCALE_INTERVAL) => {},
            _ = stop.wait_for(|s| *s) => return,
        }
        // Only the leader scales: the others follow its decisions.
        if shared.leadership.epoch().is_none() {
            table.forget();
            wakers.clear();
            continue;
        }
        let targets = targets(&shared);
        let mut changed = false;
        for t in &targets {
            let demand = match t.metric {
                Metric::QueueDepth(per_replica) => {
                    let stream = subjects::queue_stream(&t.namespace, &t.app, &t.component);
                    let info = match js.get_stream(&stream).await {
                        Ok(s) => s.consumer_info(subjects::QUEUE_CONSUMER).await.ok(),
                        Err(_) => None,
                    };
                    let Some(info) = info else {
                        tracing::debug!(stream, "no queue consumer yet; not scaling");
                        continue;
                    };
                    let (pending, in_flight) = (info.num_pending, info.num_ack_pending as u64);
                    Demand {
                        amount: pending + in_flight,
                        per_replica: u64::from(per_replica),
                        words: format!(
                            "{} messages ({pending} waiting, {in_flight} in flight), target {per_replica} per replica",
                            pending + in_flight
                        ),
                    }
                }
                Metric::InFlight(per_replica) => {
                    let load = load_milli(&shared, t);
                    Demand {
                        amount: load,
                        per_replica: u64::from(per_replica) * 1000,
                        words: format!(
                            "{:.2} requests in flight on average, target {per_replica} per replica",
                            load as f64 / 1000.0
                        ),
                    }
                }
            };
            if decide(&shared, t, demand).await {
                shared.wake_app(&t.namespace, &t.app);
                changed = true;
            }
        }
        // Written before the reconciler stops the last replica, so that no
        // request finds neither a replica nor a dormant route; each tick,
        // so that readiness reaches every ingress within one. Only what
        // changed is written.
        publish_routes(&shared, &mut table, &targets).await;
        wakers.follow(&shared, &targets).await;
        if changed {
            shared.keeper.save(&shared).await;
        }
    }
}

/// The requests in flight on average over the running replicas of `t`'s
/// pod, in thousandths, as their hosts last reported.
fn load_milli(shared: &Shared, t: &Target) -> u64 {
    let state = shared.state();
    let now = Instant::now();
    state
        .hosts
        .values()
        .filter(|h| h.is_live(now))
        .flat_map(|h| h.replicas_of(&t.namespace, &t.app))
        .filter(|r| r.id.pod == t.pod && r.state == ReplicaState::Running)
        .map(|r| u64::from(r.load_milli))
        .sum()
}

/// Whether `t` is scaled to zero now.
fn at_zero(state: &crate::state::State, t: &Target) -> bool {
    state
        .scale
        .get(&(t.key.clone(), t.pod.clone()))
        .map_or(t.min, |s| s.desired)
        == 0
}

/// A subscription per queue worker at zero to its queue subject: the
/// first message published wakes it at once, where the depth poll would
/// see it up to [`AUTOSCALE_INTERVAL`] later. JetStream stores the message
/// and the core subscription sees the same publish.
#[derive(Default)]
struct Wakers(HashMap<String, tokio::task::JoinHandle<()>>);

impl Wakers {
    /// Subscribes to the queue of every worker at zero, and lets go of the
    /// others.
    async fn follow(&mut self, shared: &Arc<Shared>, targets: &[Target]) {
        let wanted: HashMap<&str, &Target> = {
            let state = shared.state();
            targets
                .iter()
                .filter(|t| at_zero(&state, t))
                .filter_map(|t| Some((t.queue.as_deref()?, t)))
                .collect()
        };
        self.0.retain(|subject, task| {
            let keep = wanted.contains_key(subject.as_str()) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (subject, t) in wanted {
            if self.0.contains_key(subject) {
                continue;
            }
            let mut messages = match shared.nats.subscribe(subject.to_string()).await {
                Ok(messages) => messages,
                Err(e) => {
                    tracing::debug!(subject, error = %e, "cannot watch a queue at zero; the poll will see it");
                    continue;
                }
            };
            let activate = Activate {
                namespace: t.namespace.clone(),
                app: t.app.clone(),
                component: t.component.clone(),
                path: subject.to_string(),
            };
            let shared = shared.clone();
            let task = tokio::spawn(async move {
                if messages.next().await.is_some() {
                    activate_one(&shared, &activate, Cause::Message).await;
                }
            });
            self.0.insert(subject.to_string(), task);
        }
    }

    /// Lets go of every subscription: this scheduler no longer leads.
    fn clear(&mut self) {
        for (_, task) in self.0.drain() {
            task.abort();
        }
    }
}

/// What woke a component at zero.
#[derive(Debug, Clone, Copy)]
enum Cause {
    /// An HTTP request for its route.
    Request,
    /// A message on its queue.
    Message,
}

/// Writes the route table: every declared route, who serves it, and which
/// belong to http components at zero.
async fn publish_routes(shared: &Shared, table: &mut RouteTable, targets: &[Target]) {
    let wanted = {
        let state = shared.state();
        let dormant: HashSet<String> = targets
            .iter()
            .filter(|t| t.route && at_zero(&state, t))
            .map(|t| subjects::route_key(&t.namespace, &t.app, &t.component))
            .collect();
        crate::route_table::wanted(&state, &dormant, Instant::now())
    };
    table.publish(wanted).await;
}

/// Answers ingresses asking for a replica of a component at zero: it is
/// scaled to one at once.
pub async fn serve_activations(
    shared: Arc<Shared>,
    mut requests: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let msg = tokio::select! {
            msg = requests.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        // Only the leader answers; the ingress asks again if none does.
        if shared.leadership.epoch().is_none() {
            continue;
        }
        let reply = match serde_json::from_slice::<Activate>(&msg.payload) {
            Ok(activate) => activate_one(&shared, &activate, Cause::Request).await,
            Err(e) => CommandReply::Failed {
                reason: format!("malformed activation: {e}"),
            },
        };
        if let (Some(to), Ok(payload)) = (msg.reply, serde_json::to_vec(&reply)) {
            let _ = shared.nats.publish(to, payload.into()).await;
        }
    }
}

/// Scales `a`'s component from zero to one replica at once, because of
/// `cause` (`a.path` names the request's path or the message's subject).
async fn activate_one(shared: &Shared, a: &Activate, cause: Cause) -> CommandReply {
    let now = Instant::now();
    let key = subjects::app_key(&a.namespace, &a.app);
    let woke = {
        let mut state = shared.state();
        let Some(app) = state.apps.get(&key) else {
            return CommandReply::Failed {
                reason: format!("no app {}/{}", a.namespace, a.app),
            };
        };
        let Some(c) = app.stored.spec.components.get(&a.component) else {
            return CommandReply::Failed {
                reason: format!(
                    "app {}/{} has no component {}",
                    a.namespace, a.app, a.component
                ),
            };
        };
        let pod = c.pod.clone().unwrap_or_else(|| a.component.clone());
        let min = c.autoscale.as_ref().map_or(1, |auto| auto.min);
        let entry = state
            .scale
            .entry((key.clone(), pod))
            .or_insert_with(|| ScaleState::new(min, now));
        entry.last_active = now;
        (entry.desired == 0).then(|| {
            entry.desired = 1;
            entry.low_since = None;
            let why = match cause {
                Cause::Request => format!(
                    "{} scaled from 0 to 1 replica: a request arrived for {}",
                    a.component, a.path
                ),
                Cause::Message => format!(
                    "{} scaled from 0 to 1 replica: a message arrived on {}",
                    a.component, a.path
                ),
            };
            entry.last_decision = Some(why.clone());
            why
        })
    };
    if let Some(why) = woke {
        tracing::info!(app = %a.app, "{why}");
        shared
            .record(event(&a.namespace, &a.app, EventReason::Scaled, why))
            .await;
        shared.wake_app(&a.namespace, &a.app);
    }
    CommandReply::Ok
}

/// How many more replicas `t`'s namespace quota lets it have, and the
/// quota that binds, in words; `None` without a replica or memory quota.
fn quota_room(state: &crate::state::State, t: &Target) -> Option<(u32, String)> {
    let quota = &state.namespaces.get(&t.namespace)?.spec.quota;
    if quota.replicas.is_none() && quota.memory.is_none() {
        return None;
    }
    let usage = crate::namespaces::usage(state, &t.namespace, None, &Default::default());
    let room = crate::namespaces::headroom(quota, &usage, t.per_replica_memory)?;
    let words = match (quota.replicas, quota.memory) {
        (Some(n), _) if usage.replicas.saturating_add(room) >= n => {
            format!("replicas quota ({n})")
        }
        (_, Some(m)) => format!("memory quota ({m})"),
        (Some(n), None) => format!("replicas quota ({n})"),
        (None, None) => return None,
    };
    Some((room, words))
}

fn targets(shared: &Shared) -> Vec<Target> {
    let state = shared.state();
    let mut out = Vec::new();
    for (key, app) in &state.apps {
        let spec = &app.stored.spec;
        for pod in spec.pods() {
            for (name, c) in &pod.components {
                let Some(auto) = &c.autoscale else {
                    continue;
                };
                let metric = match (c.kind, &c.queue) {
                    (ComponentKind::Http, _) => Metric::InFlight(auto.target_in_flight.max(1)),
                    (_, Some(_)) => Metric::QueueDepth(auto.target_queue_depth.max(1)),
                    _ => continue,
                };
                let route = c.kind == ComponentKind::Http;
                let queue = c
                    .queue
                    .as_deref()
                    .map(|q| subjects::user_subject(&spec.namespace, q));
                out.push(Target {
                    per_replica_memory: pod.reserved_memory(),
                    key: key.clone(),
                    namespace: spec.namespace.clone(),
                    app: spec.name.clone(),
                    pod: pod.name.clone(),
                    component: (*name).clone(),
                    min: auto.min,
                    max: auto.max,
                    metric,
                    idle: auto.idle.get(),
                    route,
                    queue,
                });
            }
        }
    }
    out
}

/// Decides `t`'s replicas from `demand`; true when they changed (the
/// caller wakes the reconciler).
async fn decide(shared: &Shared, t: &Target, demand: Demand) -> bool {
    let now = Instant::now();
    let depth = demand.amount;
    let wanted = u32::try_from(depth.div_ceil(demand.per_replica.max(1)))
        .unwrap_or(u32::MAX)
        .clamp(t.min, t.max);
    let mut held = None;
    let change = {
        let mut state = shared.state();
        let room = quota_room(&state, t);
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
            match room {
                Some((room, quota)) if wanted > current.saturating_add(room) => {
                    let cap = current.saturating_add(room);
                    if entry.held_at != Some(cap) {
                        entry.held_at = Some(cap);
                        held = Some(format!(
                            "{} held at {cap} replicas, not {wanted}: namespace {}'s {quota} is reached",
                            t.component, t.namespace
                        ));
                    }
                    Some(cap)
                }
                _ => {
                    entry.held_at = None;
                    Some(wanted)
                }
            }
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
                "{} scaled from {current} to {n} replicas: {}, bounds {}..={}",
                t.component, demand.words, t.min, t.max
            );
            entry.last_decision = Some(why.clone());
            why
        })
    };
    if let Some(why) = held {
        tracing::warn!(app = %t.app, "{why}");
        shared
            .record(event(&t.namespace, &t.app, EventReason::QuotaReached, why))
            .await;
    }
    match change {
        Some(why) => {
            tracing::info!(app = %t.app, "{why}");
            shared
                .record(event(&t.namespace, &t.app, EventReason::Scaled, why))
                .await;
            true
        }
        None => false,
    }
}
