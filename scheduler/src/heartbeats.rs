//! Host heartbeats: the observed half of the scheduler's picture.
//!
//! Each host publishes a heartbeat on its own subject every
//! [`HEARTBEAT_INTERVAL`](crate::tunables::HEARTBEAT_INTERVAL): all its
//! replicas, or (a large host) what changed and now and then a snapshot
//! in pages ([`shoal_api::beats`]), which a [`shoal_api::beats::BeatReader`]
//! per host puts together; a scheduler that lost track asks the host for
//! a snapshot. Each beat taken in updates what the scheduler knows of the
//! host, confirms the starts it reports, tells (through the leader) what
//! its replicas did since the beat before, and queues for the reconciler
//! exactly the apps whose replicas changed. What concerns every app (a host joins, comes back, restarts or
//! starts draining) queues everything. Load figures change on every beat
//! and only the autoscaler reads them: they queue nothing.

use std::sync::Arc;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use rustc_hash::FxHashMap;
use shoal_api::beats::{BEAT_HEADER, BeatContent, BeatGap, SNAPSHOT_MIN_GAP, Taken};
use shoal_api::resources::Event;
use shoal_api::resources::EventReason;
use shoal_api::subjects;
use shoal_api::wire::{Heartbeat, HostId, ReplicaState, ReplicaStatus};
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
    let mut asked = Resyncs::default();
    loop {
        let first = tokio::select! {
            msg = heartbeats.next() => match msg {
                Some(msg) => msg,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        // Whatever else has arrived meanwhile is taken too, and a full beat
        // replaces every beat of its host before it: a scheduler behind a
        // burst of beats catches up instead of parsing each stale one.
        // Changes and pages are taken in order.
        batch.clear();
        batch.push(first);
        while batch.len() < HEARTBEAT_BATCH {
            match heartbeats.next().now_or_never() {
                Some(Some(msg)) => batch.push(msg),
                Some(None) | None => break,
            }
        }
        let mut last_full: FxHashMap<&str, usize> = FxHashMap::default();
        for (i, msg) in batch.iter().enumerate() {
            if is_full(msg) {
                last_full.insert(msg.subject.as_str(), i);
            }
        }
        for (i, msg) in batch.iter().enumerate() {
            if last_full
                .get(msg.subject.as_str())
                .is_none_or(|full| i >= *full)
            {
                take_in_message(&shared, msg, &mut asked).await;
            }
        }
    }
}

/// Whether a beat says (in its header, without parsing) that it carries
/// every replica. A beat without the header is from a host that always
/// sends everything.
fn is_full(msg: &async_nats::Message) -> bool {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(BEAT_HEADER))
        .is_none_or(|v| v.as_str() == BeatContent::Full.header())
}

/// When each host was last asked for a snapshot.
#[derive(Default)]
struct Resyncs(FxHashMap<HostId, Instant>);

impl Resyncs {
    /// Asks `host` for a snapshot, unless it was asked a moment ago.
    async fn ask(&mut self, nats: &async_nats::Client, host: &HostId, gap: &BeatGap) {
        let now = Instant::now();
        if self
            .0
            .get(host)
            .is_some_and(|at| now.duration_since(*at) < SNAPSHOT_MIN_GAP)
        {
            return;
        }
        self.0.insert(host.clone(), now);
        tracing::debug!(%host, %gap, "lost track of a host's beats: asking for a snapshot");
        let _ = nats
            .publish(subjects::host_resync(host.as_str()), bytes::Bytes::new())
            .await;
    }
}

/// Reads one heartbeat message and takes it in.
async fn take_in_message(shared: &Shared, msg: &async_nats::Message, asked: &mut Resyncs) {
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
    let host = hb.host.clone();
    let (news, gap) = {
        let mut state = shared.state();
        state
            .top
            .record(&hb.host, &hb.replicas, shoal_api::wire::now_ms());
        take_in(&mut state, hb, Instant::now(), &shared.queue)
    };
    if let Some(gap) = gap {
        asked.ask(&shared.nats, &host, &gap).await;
    }
    // What replicas did is told once, by the leader.
    if shared.leadership.holds() {
        for e in news {
            shared.record(e).await;
        }
    }
}

/// Takes one heartbeat into `state`, queues what it changed and returns
/// the events it brings, and the gap if the beat showed that this
/// scheduler lost track of the host's replicas.
fn take_in(
    state: &mut State,
    mut hb: Heartbeat,
    now: Instant,
    queue: &WorkQueue,
) -> (Vec<Event>, Option<BeatGap>) {
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
        let (reader, picture) = state.joining.entry(hb.host.clone()).or_default();
        let taken = match reader.take(picture, &hb) {
            Ok(Some(taken)) => taken,
            Ok(None) => return (Vec::new(), None),
            Err(gap) => return (Vec::new(), Some(gap)),
        };
        let Some((beats, picture)) = state.joining.remove(&hb.host) else {
            return (Vec::new(), None);
        };
        tracing::info!(host = %hb.host, labels = ?hb.labels, "host joined");
        let (news, _) = changes(&taken, &hb.host);
        hb.replicas = picture;
        state.hosts.insert(
            hb.host.clone(),
            HostEntry {
                heartbeat: hb,
                last_seen: now,
                lost: false,
                rejoined: None,
                lost_at: None,
                beats,
            },
        );
        queue.everything();
        return (news, None);
    };
    // Any beat says the host is alive.
    entry.last_seen = now;
    let mut picture = std::mem::take(&mut entry.heartbeat.replicas);
    let taken = entry.beats.take(&mut picture, &hb);
    let taken = match taken {
        Ok(Some(taken)) => taken,
        Ok(None) => {
            entry.heartbeat.replicas = picture;
            return (Vec::new(), None);
        }
        Err(gap) => {
            entry.heartbeat.replicas = picture;
            return (Vec::new(), Some(gap));
        }
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
    let (news, touched) = changes(&taken, &hb.host);
    hb.replicas = picture;
    entry.heartbeat = hb;
    if host_changed {
        queue.everything();
    } else if !touched.is_empty() {
        queue.apps(&touched);
    }
    (news, None)
}

/// What a beat changed on `host`: events for what replicas did (restarts,
/// crash loops, readiness lost and regained), and the apps whose replicas
/// changed in anything but load.
fn changes(taken: &Taken, host: &HostId) -> (Vec<Event>, AppSet) {
    let mut news = Vec::new();
    let mut touched = AppSet::default();
    for (before, now) in &taken.changed {
        if before.as_ref().is_none_or(|b| !b.same_apart_from_load(now)) {
            touched.insert(&now.id.namespace, &now.id.app);
            news.extend(replica_news(before.as_ref(), now, host));
        }
    }
    for gone in &taken.stopped {
        touched.insert(&gone.id.namespace, &gone.id.app);
    }
    (news, touched)
}

/// Events for what one replica did since the heartbeat before (`before`,
/// absent for a copy new on the host).
fn replica_news(before: Option<&ReplicaStatus>, r: &ReplicaStatus, host: &HostId) -> Vec<Event> {
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
            EventReason::Restarted,
            format!(
                "{id} restarted on {} (restart {}{retry}): {why}",
                host, r.restarts
            ),
        ));
    }
    if matches!(r.state, ReplicaState::CrashLoop { .. }) && !was_crash_loop {
        out.push(event(
            &id.namespace,
            &id.app,
            EventReason::CrashLoop,
            format!("{id} is crash-looping on {}: {why}", host),
        ));
    }
    if r.state == ReplicaState::Running && was_ready && !r.ready {
        out.push(event(
            &id.namespace,
            &id.app,
            EventReason::Unready,
            format!("{id} on {} is not ready, out of rotation: {why}", host),
        ));
    }
    if r.state == ReplicaState::Running
        && r.ready
        && before.is_some_and(|b| b.state == ReplicaState::Running && !b.ready)
    {
        out.push(event(
            &id.namespace,
            &id.app,
            EventReason::Ready,
            format!("{id} on {} is ready and in rotation", host),
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

    /// What the beat `now` changes after a full beat of `before`.
    fn compare(before: &[ReplicaStatus], now: &Heartbeat) -> (Vec<Event>, AppSet) {
        let mut reader = shoal_api::beats::BeatReader::default();
        let mut picture = Vec::new();
        reader.take(&mut picture, &beat(before.to_vec())).unwrap();
        let taken = reader.take(&mut picture, now).unwrap().unwrap();
        changes(&taken, &now.host)
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
        assert_eq!(news[0].reason, EventReason::Restarted);
    }
}
