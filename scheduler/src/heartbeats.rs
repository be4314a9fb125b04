//! Host heartbeats: the observed half of the scheduler's picture.
//!
//! Each host publishes a heartbeat on its own subject every
//! [`HEARTBEAT_INTERVAL`](crate::tunables::HEARTBEAT_INTERVAL). Each one
//! replaces what the scheduler knows of that host, confirms the starts it
//! reports, tells (through the leader) what its replicas did since the one
//! before, and queues for the reconciler exactly the apps whose replicas
//! changed. What concerns every app (a host joins, comes back, restarts or
//! starts draining) queues everything. Load figures change on every beat
//! and only the autoscaler reads them: they queue nothing.

use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use rustc_hash::FxHashMap;
use shoal_api::resources::Event;
use shoal_api::subjects;
use shoal_api::wire::{Heartbeat, ReplicaState, ReplicaStatus};
use tokio::sync::watch;

use crate::Shared;
use crate::state::{HostEntry, State, event};
use crate::tunables::HEARTBEAT_BATCH;
use crate::workqueue::{AppSet, WorkQueue};

/// Takes in heartbeats until `stop`.
pub(crate) async fn watch(
    shared: Arc<Shared>,
    mut heartbeats: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    let mut batch: Vec<async_nats::Message> = Vec::new();
    loop {
        let first = tokio::select! {
            msg = heartbeats.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        // Whatever else has arrived meanwhile is taken too, and of several
        // beats of one host only the newest is read: a scheduler behind a
        // burst of beats catches up instead of parsing each stale one.
        batch.clear();
        batch.push(first);
        while batch.len() < HEARTBEAT_BATCH {
            match heartbeats.next().now_or_never() {
                Some(Some(msg)) => batch.push(msg),
                Some(None) | None => break,
            }
        }
        let mut newest: FxHashMap<&str, &async_nats::Message> = FxHashMap::default();
        for msg in &batch {
            newest.insert(msg.subject.as_str(), msg);
        }
        for msg in &batch {
            if newest
                .get(msg.subject.as_str())
                .is_some_and(|latest| std::ptr::eq(*latest, msg))
            {
                take_in_message(&shared, msg).await;
            }
        }
    }
}

/// Reads one heartbeat message and takes it in.
async fn take_in_message(shared: &Shared, msg: &async_nats::Message) {
    let hb: Heartbeat = match serde_json::from_slice(&msg.payload) {
        Ok(hb) => hb,
        Err(e) => {
            tracing::warn!(subject = %msg.subject, error = %e, "ignoring a malformed heartbeat");
            return;
        }
    };
    // NATS lets host h publish only on h's heartbeat subject: the
    // subject, not the body, says who sent it.
    if msg.subject.as_str() != subjects::heartbeat(hb.host.as_str()) {
        tracing::warn!(subject = %msg.subject, claimed = %hb.host, "ignoring a heartbeat that claims another host");
        return;
    }
    if hb.epoch > 0 {
        shared.leadership.saw_epoch(hb.epoch);
    }
    let news = {
        let mut state = shared.state();
        state
            .top
            .record(&hb.host, &hb.replicas, shoal_api::wire::now_ms());
        take_in(&mut state, hb, Instant::now(), &shared.queue)
    };
    // What replicas did is told once, by the leader.
    if shared.leadership.holds() {
        for e in news {
            shared.record(e).await;
        }
    }
}

/// Takes one heartbeat into `state`, queues what it changed and returns
/// the events it brings.
fn take_in(state: &mut State, hb: Heartbeat, now: Instant, queue: &WorkQueue) -> Vec<Event> {
    // A start the host reports is confirmed: it no longer counts as in
    // flight, here rather than in a pass so that a pass over other apps
    // does not count its memory twice.
    if !state.starting.is_empty() {
        for r in &hb.replicas {
            if state
                .starting
                .get(&r.id)
                .is_some_and(|s| s.host == hb.host && s.revision == r.revision)
            {
                state.starting.remove(&r.id);
            }
        }
    }
    let Some(entry) = state.hosts.get_mut(&hb.host) else {
        tracing::info!(host = %hb.host, labels = ?hb.labels, "host joined");
        let (news, _) = compare(&[], &hb);
        state.hosts.insert(
            hb.host.clone(),
            HostEntry {
                heartbeat: hb,
                last_seen: now,
                lost: false,
                rejoined: None,
                lost_at: None,
            },
        );
        queue.everything();
        return news;
    };
    let host_changed = entry.lost
        || entry.heartbeat.draining != hb.draining
        || entry.heartbeat.started_at_ms != hb.started_at_ms;
    if hb.draining && !entry.heartbeat.draining {
        tracing::info!(host = %hb.host, "host draining: placing its replicas elsewhere");
    }
    if entry.lost {
        tracing::info!(host = %hb.host, "host is back");
        entry.lost = false;
        entry.lost_at = None;
        entry.rejoined = Some(now);
    }
    let (news, touched) = compare(&entry.heartbeat.replicas, &hb);
    entry.heartbeat = hb;
    entry.last_seen = now;
    if host_changed {
        queue.everything();
    } else if !touched.is_empty() {
        queue.apps(&touched);
    }
    news
}

/// What changed between a host's previous replicas and its heartbeat now:
/// events for what replicas did (restarts, crash loops, readiness lost
/// and regained), and the apps whose replicas changed in anything but
/// load.
fn compare(previous: &[ReplicaStatus], now: &Heartbeat) -> (Vec<Event>, AppSet) {
    let mut news = Vec::new();
    let mut touched = AppSet::default();
    let unchanged = previous.len() == now.replicas.len()
        && previous
            .iter()
            .zip(&now.replicas)
            .all(|(a, b)| a.same_apart_from_load(b));
    if unchanged {
        return (news, touched);
    }
    let mut before: FxHashMap<(&shoal_api::wire::ReplicaId, u64), &ReplicaStatus> =
        previous.iter().map(|r| ((&r.id, r.revision), r)).collect();
    for r in &now.replicas {
        let was = before.remove(&(&r.id, r.revision));
        if was.is_none_or(|b| !b.same_apart_from_load(r)) {
            touched.insert(&r.id.namespace, &r.id.app);
            news.extend(replica_news(was, r, now));
        }
    }
    for gone in before.values() {
        touched.insert(&gone.id.namespace, &gone.id.app);
    }
    (news, touched)
}

/// Events for what one replica did since the heartbeat before (`before`,
/// absent for a copy new on the host).
fn replica_news(before: Option<&ReplicaStatus>, r: &ReplicaStatus, now: &Heartbeat) -> Vec<Event> {
    let mut out = Vec::new();
    let id = &r.id;
    let why = r.last_error.as_deref().unwrap_or("no reason given");
    let (restarts_before, was_ready, was_crash_loop) = before.map_or((0, false, false), |b| {
        (
            b.restarts,
            b.ready,
            matches!(b.state, ReplicaState::CrashLoop { .. }),
        )
    });
    if r.restarts > restarts_before {
        let retry = match &r.state {
            ReplicaState::Restarting { retry_in_ms, .. }
            | ReplicaState::CrashLoop { retry_in_ms, .. } => {
                format!(", starting again in {retry_in_ms}ms")
            }
            _ => String::new(),
        };
        out.push(event(
            &id.namespace,
            &id.app,
            "restarted",
            format!(
                "{id} restarted on {} (restart {}{retry}): {why}",
                now.host, r.restarts
            ),
        ));
    }
    if matches!(r.state, ReplicaState::CrashLoop { .. }) && !was_crash_loop {
        out.push(event(
            &id.namespace,
            &id.app,
            "crash_loop",
            format!("{id} is crash-looping on {}: {why}", now.host),
        ));
    }
    if r.state == ReplicaState::Running && was_ready && !r.ready {
        out.push(event(
            &id.namespace,
            &id.app,
            "unready",
            format!("{id} on {} is not ready, out of rotation: {why}", now.host),
        ));
    }
    if r.state == ReplicaState::Running
        && r.ready
        && before.is_some_and(|b| b.state == ReplicaState::Running && !b.ready)
    {
        out.push(event(
            &id.namespace,
            &id.app,
            "ready",
            format!("{id} on {} is ready and in rotation", now.host),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{heartbeat, replica_id, running};

    fn copy(app: &str, restarts: u32, load_milli: u32) -> ReplicaStatus {
        ReplicaStatus {
            restarts,
            load_milli,
            ..running(replica_id(app, "web", 0), 1, true)
        }
    }

    fn beat(replicas: Vec<ReplicaStatus>) -> Heartbeat {
        heartbeat("h1", replicas)
    }

    fn apps(set: &AppSet) -> Vec<String> {
        let mut out: Vec<String> = set.iter().map(|(n, a)| format!("{n}.{a}")).collect();
        out.sort();
        out
    }

    #[test]
    fn only_apps_whose_replicas_changed_are_queued() {
        let before = vec![copy("a", 0, 0), copy("b", 0, 0), copy("c", 0, 0)];
        // Load alone changed: nothing to reconcile, nothing to tell.
        let (news, touched) = compare(
            &before,
            &beat(vec![copy("a", 0, 900), copy("b", 0, 5), copy("c", 0, 0)]),
        );
        assert!(news.is_empty() && touched.is_empty());

        // b restarted, c is gone, d is new; a is unchanged.
        let (news, touched) = compare(
            &before,
            &beat(vec![copy("a", 0, 0), copy("b", 1, 0), copy("d", 0, 0)]),
        );
        assert_eq!(apps(&touched), ["default.b", "default.c", "default.d"]);
        assert_eq!(news.len(), 1, "{news:?}");
        assert_eq!(news[0].app.as_str(), "b");
        assert_eq!(news[0].reason, "restarted");
    }
}
