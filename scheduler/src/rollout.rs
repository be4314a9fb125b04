//! Rollouts seen from the API: where each pod stands, the revisions an app
//! went through, and going back to one of them.
//!
//! The rollout itself happens in the reconciler ([`crate::reconcile`]):
//! applying a revision whose pod template changed gives the pod a new
//! generation, and each pass replaces old copies within the pod's
//! `max_surge` and `max_unavailable`, stopping an old copy only once the new
//! one beside it is ready. Going back is storing an earlier revision again:
//! its templates keep their generations, so replicas still running them
//! are kept as they are.

use std::collections::HashMap;

use shoal_api::resources::EventReason;
use shoal_api::resources::{PodRollout, RevisionInfo, RolloutState, RolloutStatus};
use shoal_api::subjects;
use shoal_api::wire::{ReplicaId, ReplicaState, ReplicaStatus};

use crate::reconcile::replica_id;
use crate::state::{App, State, StoredApp, event};
use crate::{SchedulerError, Shared};

/// Where each pod of `app` stands.
pub fn status(state: &State, app: &App, now: std::time::Instant) -> RolloutStatus {
    let spec = &app.stored.spec;
    let key = subjects::app_key(&spec.namespace, &spec.name);
    // This app's copies on live hosts, by replica.
    let mut by_replica: HashMap<&ReplicaId, Vec<&ReplicaStatus>> = HashMap::new();
    for r in state
        .hosts
        .values()
        .filter(|h| h.is_live(now))
        .flat_map(|h| h.replicas_of(&spec.namespace, &spec.name))
    {
        by_replica.entry(&r.id).or_default().push(r);
    }
    let mut pods = Vec::new();
    for pod in spec.pods() {
        let staged = pod.rollout();
        let stable = staged
            .is_staged()
            .then(|| app.stored.canary_of(&pod.name))
            .flatten();
        // During a canary or shadow the pod's replicas keep the stable
        // generation.
        let generation = stable.map_or_else(|| app.stored.generation(&pod.name), |s| s.generation);
        let desired = state.replicas_of(&key, &pod);
        let (mut updated, mut ready, mut old) = (0, 0, 0);
        for i in 0..desired {
            let id = replica_id(spec, &pod.name, i);
            let copies = by_replica.get(&id).map(Vec::as_slice).unwrap_or_default();
            let current: Vec<_> = copies.iter().filter(|r| r.revision == generation).collect();
            if !current.is_empty() {
                updated += 1;
            }
            if current.iter().any(|r| {
                (r.ready && r.state == ReplicaState::Running) || r.state == ReplicaState::Completed
            }) {
                ready += 1;
            }
            old += copies.iter().filter(|r| r.revision != generation).count() as u32;
        }
        let extra_ready = |index: u32| {
            let id = replica_id(spec, &pod.name, index);
            by_replica.get(&id).is_some_and(|copies| {
                copies
                    .iter()
                    .any(|r| r.ready && r.state == ReplicaState::Running)
            })
        };
        let canary = stable.filter(|_| staged.is_canary()).and_then(|stable| {
            let ready = extra_ready(ReplicaId::CANARY);
            crate::canary::status(state, &key, app, &pod.name, stable, ready, now)
        });
        let shadow = stable.filter(|_| staged.is_shadow()).and_then(|stable| {
            let ready = extra_ready(ReplicaId::SHADOW);
            crate::shadow::status(state, &key, app, &pod.name, stable, ready, now)
        });
        let complete = ready == desired && old == 0 && stable.is_none();
        let message = if let Some(c) = &canary {
            let waiting = if c.ready {
                ""
            } else {
                " (its replica is not ready yet)"
            };
            format!(
                "canary of generation {} at step {} of {}, taking {}{waiting}: {}; stable generation {}: {}",
                c.generation, c.step, c.steps, c.share, c.canary, c.stable_generation, c.stable
            )
        } else if let Some(s) = &shadow {
            let now = if s.finished {
                "finished copying: `shoal rollout promote` rolls it out, `shoal rollout abort` goes back"
            } else if s.ready {
                "copying"
            } else {
                "its replica is not ready yet"
            };
            format!(
                "shadow of generation {} beside generation {}, {} of requests, {now}: {}",
                s.generation, s.stable_generation, s.share, s.report
            )
        } else if stable.is_some() {
            format!(
                "{} of generation {} starting",
                if staged.is_shadow() {
                    "shadow"
                } else {
                    "canary"
                },
                app.stored.generation(&pod.name)
            )
        } else if complete {
            format!("{desired} of {desired} replicas at generation {generation} ready")
        } else if old > 0 {
            format!(
                "{ready} of {desired} replicas at generation {generation} ready; {old} old {} still running",
                if old == 1 { "copy" } else { "copies" }
            )
        } else {
            format!("{ready} of {desired} replicas at generation {generation} ready")
        };
        let deadline_ms = state
            .rollouts
            .get(&(key.clone(), pod.name.clone()))
            .filter(|r| !complete && r.generation == generation && !r.rolled_back)
            .map(|r| {
                let deadline = r.last_progress + pod.rollout().progress_deadline.get();
                let left = deadline.saturating_duration_since(now);
                let past = now.saturating_duration_since(deadline);
                (crate::state::now_ms() + crate::state::millis(left))
                    .saturating_sub(crate::state::millis(past))
            });
        pods.push(PodRollout {
            deadline_ms,
            pod: pod.name.clone(),
            generation,
            desired,
            updated,
            ready,
            old,
            state: if complete {
                RolloutState::Complete
            } else {
                RolloutState::Progressing
            },
            message,
            canary,
            shadow,
        });
    }
    RolloutStatus {
        app: format!("{}/{}", spec.namespace, spec.name),
        revision: app.revision,
        pods,
        promotes: app.stored.promotes,
    }
}

/// The revisions of the app at `key` the bucket keeps, oldest first.
pub async fn history(shared: &Shared, key: &str) -> Result<Vec<RevisionInfo>, SchedulerError> {
    let current = shared.state().apps.get(key).map(|a| a.revision);
    Ok(shared
        .store
        .app_history(key)
        .await?
        .into_iter()
        .map(|(revision, at_ms, stored)| RevisionInfo {
            revision,
            at_ms,
            cause: stored.cause,
            generations: stored.generations,
            current: Some(revision) == current,
        })
        .collect())
}

/// Promotes the canary of `pod` (of every pod in a canary, when `None`)
/// of the app at `key`: stores the app again without the canary's stable
/// template, so the pod rolls out to every replica. `expect`, when given,
/// is the KV revision the caller saw ([`App::kv`]): if the app moved on
/// since, nothing happens. Returns the new revision.
pub async fn promote(
    shared: &Shared,
    key: &str,
    pod: Option<&shoal_api::Name>,
    expect: Option<u64>,
    cause: &str,
) -> Result<u64, SchedulerError> {
    let _writing = shared.writes.lock().await;
    let current = current_app(shared, key)?;
    if expect.is_some_and(|kv| kv != current.kv) {
        return Err(SchedulerError::Invalid(format!(
            "{key} moved on to revision {} meanwhile; not promoting",
            current.revision
        )));
    }
    let mut stored = current.stored.clone();
    let before = stored.canary_base.len();
    stored
        .canary_base
        .retain(|p, _| pod.is_some_and(|pod| pod != p));
    if stored.canary_base.len() == before {
        return Err(SchedulerError::Conflict(format!(
            "no canary or shadow runs in {key}: `shoal rollout status` shows its rollout"
        )));
    }
    stored.cause = cause.to_string();
    let mut stored = stored.with_generations(Some(&current.stored));
    stored.promotes = Some(current.revision);
    store(shared, key, stored, current.kv, EventReason::CanaryPromoted).await
}

/// Stores `stored` as the app at `key` over KV revision `based_on`, takes
/// it in, and says so in an event of `reason` giving its cause; the new
/// revision.
async fn store(
    shared: &Shared,
    key: &str,
    stored: StoredApp,
    based_on: u64,
    reason: EventReason,
) -> Result<u64, SchedulerError> {
    let kv = shared.store.put_app(key, &stored, based_on).await?;
    let app = App::from_kv(stored, kv);
    let revision = app.revision;
    let e = event(
        &app.stored.spec.namespace,
        &app.stored.spec.name,
        reason,
        format!("revision {revision} stored: {}", app.stored.cause),
    );
    crate::api::remember_app(shared, key.to_string(), app);
    shared.wake_app(&e.namespace, &e.app);
    shared.record(e).await;
    Ok(revision)
}

/// The app at `key` as this scheduler knows it.
fn current_app(shared: &Shared, key: &str) -> Result<App, SchedulerError> {
    shared
        .state()
        .apps
        .get(key)
        .cloned()
        .ok_or_else(|| SchedulerError::NotFound(format!("no app {key}")))
}

/// Stores revision `to` of the app at `key` again (by default the one
/// before the current), which rolls the app back to it. Returns the new
/// revision and the one it went back to. `expect`, when given, is the KV
/// revision ([`App::kv`]) the caller saw: if the app moved on since,
/// nothing happens.
pub async fn roll_back(
    shared: &Shared,
    key: &str,
    to: Option<u64>,
    expect: Option<u64>,
    cause: &str,
) -> Result<(u64, u64), SchedulerError> {
    let _writing = shared.writes.lock().await;
    let current = current_app(shared, key)?;
    if expect.is_some_and(|kv| kv != current.kv) {
        return Err(SchedulerError::Conflict(format!(
            "{key} moved on to revision {} meanwhile; not rolling back",
            current.revision
        )));
    }
    let history = shared.store.app_history(key).await?;
    let target = match to {
        Some(to) => history.iter().find(|(r, _, _)| *r == to).ok_or_else(|| {
            SchedulerError::NotFound(format!(
                "revision {to} of {key} is not kept (the bucket keeps the last {}): see `shoal rollout history`",
                history.len()
            ))
        })?,
        // The template before the current one: revisions that only
        // scaled run what the current one runs.
        None => history
            .iter()
            .rev()
            .find(|(r, _, stored)| {
                *r < current.revision && stored.generations != current.stored.generations
            })
            .ok_or_else(|| {
                SchedulerError::Conflict(format!(
                    "{key} has no earlier template before revision {} to go back to",
                    current.revision
                ))
            })?,
    };
    let (target_revision, _, target_app) = target;
    if *target_revision == current.revision {
        return Err(SchedulerError::Conflict(format!(
            "{key} is at revision {target_revision} already"
        )));
    }
    let mut stored = target_app.clone();
    stored.cause = format!("{cause} (back to revision {target_revision})");
    // Going back is never a canary: what runs is replaced as it is.
    stored.canary_base.clear();
    // Scaling since then is kept: a rollback changes what runs, not how many.
    for (name, c) in stored.spec.components.iter_mut() {
        if let Some(now) = current.stored.spec.components.get(name) {
            c.replicas = now.replicas;
        }
    }
    let stored = stored.with_generations(Some(&current.stored));
    // The old revision is checked as an apply would be: it may reserve
    // more than the quota allows now, or a route another namespace took.
    crate::api::check_quota(shared, key, &stored, &format!("rolling {key} back")).await?;
    let taken = crate::api::route_claims(&shared.state(), &stored.spec);
    if !taken.is_empty() {
        return Err(SchedulerError::Invalid(format!(
            "rolling {key} back to revision {target_revision} is refused:\n  {}",
            taken.join("\n  ")
        )));
    }
    crate::api::ensure_queues(shared, &stored).await?;
    let revision = store(shared, key, stored, current.kv, EventReason::RolledBack).await?;
    Ok((revision, *target_revision))
}
