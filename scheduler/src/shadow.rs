//! Shadow rollouts: a pod whose rollout is `strategy = "shadow"` gets a new
//! template by way of one extra replica (the shadow,
//! [`ReplicaId::SHADOW`]) that receives a copy of `share` of the requests
//! for `duration`, while the pod's replicas keep running and answering
//! with the stable template.
//!
//! - **Copies** are made where requests arrive: every ingress (see the
//!   host's `shadow` module) and the API's `invoke` ([`copy_invocation`]).
//!   The caller always gets the stable answer; the shadow's is compared
//!   with it and thrown away.
//! - **Side effects are held back** on the host that runs the shadow: its
//!   messages and outbound HTTP calls are refused, and its key-value
//!   writes go to a scratch bucket ([`subjects::shadow_bucket`]).
//! - **The report** sums what every ingress counted (heartbeats carry it)
//!   and what this scheduler's API counted, for the shadow's generation
//!   (another scheduler's API counts its own invocations).
//! - **After `duration`** copying stops, a `shadow_finished` event gives
//!   the report, and the rollout waits: `shoal rollout promote` rolls the
//!   new revision out, `shoal rollout abort` goes back. Its progress (when
//!   copying began) is kept like a canary's ([`CanaryProgress`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use shoal_api::resources::{EventReason, ShadowReport, ShadowStatus};
use shoal_api::wire::ReplicaId;
use shoal_api::{Name, RolloutSpec, Share, subjects};

use crate::canary::{CanaryProgress, Decision};
use crate::state::{App, Rollout, StableTemplate, State, event};

/// The shadow's rollout record of `pod`, and its spec's rollout, while a
/// shadow of it runs.
fn running<'a>(
    state: &'a State,
    key: &str,
    app: &App,
    pod: &Name,
) -> Option<(&'a Rollout, &'a CanaryProgress, RolloutSpec)> {
    app.stored.canary_of(pod)?;
    let spec = app
        .stored
        .spec
        .pods()
        .into_iter()
        .find(|p| &p.name == pod)?
        .rollout();
    if !spec.is_shadow() {
        return None;
    }
    let rollout = state.rollouts.get(&(key.to_string(), pod.clone()))?;
    if rollout.rolled_back || rollout.generation != app.stored.generation(pod) {
        return None;
    }
    Some((rollout, rollout.canary.as_ref()?, spec))
}

/// The share of requests to copy to the shadow of `pod` now: its share
/// while it copies, 0% once it finished (so that ingresses keep their
/// counts for the report), `None` when no shadow of it runs.
pub fn share(state: &State, key: &str, app: &App, pod: &Name) -> Option<Share> {
    let (_, progress, spec) = running(state, key, app, pod)?;
    Some(if progress.finished {
        Share::basis_points(0)
    } else {
        spec.shadow_share()
    })
}

/// What the copies to the shadow of `pod` (at `generation`) showed:
/// every live host's ingress counts and this scheduler's API's.
pub fn report(state: &State, app: &App, pod: &Name, generation: u64, now: Instant) -> ShadowReport {
    let spec = &app.stored.spec;
    let components: Vec<&Name> = spec
        .pods()
        .into_iter()
        .filter(|p| &p.name == pod)
        .flat_map(|p| p.components.into_iter().map(|(n, _)| n))
        .collect();
    let first = components
        .first()
        .map_or_else(|| pod.clone(), |c| (*c).clone());
    let mut sum = ShadowReport::new(spec.namespace.clone(), spec.name.clone(), first, generation);
    let ours = |r: &ShadowReport| {
        r.namespace == spec.namespace
            && r.app == spec.name
            && r.generation == generation
            && components.contains(&&r.component)
    };
    for host in state.hosts.values().filter(|h| h.is_live(now)) {
        for r in host.heartbeat.shadows.iter().filter(|r| ours(r)) {
            sum.add(r);
        }
    }
    let key = subjects::app_key(&spec.namespace, &spec.name);
    for ((k, g), invoked) in &state.shadow_invocations {
        if *k == key && *g == generation {
            sum.add(invoked);
        }
    }
    sum
}

/// A shadow for `rollout status`.
#[allow(clippy::too_many_arguments)]
pub fn status(
    state: &State,
    key: &str,
    app: &App,
    pod: &Name,
    base: &StableTemplate,
    ready: bool,
    now: Instant,
) -> Option<ShadowStatus> {
    let (_, progress, spec) = running(state, key, app, pod)?;
    let generation = app.stored.generation(pod);
    let ends_ms = progress.since.map(|since| {
        let end = since + spec.duration.get();
        let now_ms = crate::state::now_ms();
        if end >= now {
            now_ms + crate::state::millis(end - now)
        } else {
            now_ms.saturating_sub(crate::state::millis(now - end))
        }
    });
    Some(ShadowStatus {
        generation,
        stable_generation: base.generation,
        share: spec.shadow_share(),
        ready,
        ends_ms,
        finished: progress.finished,
        report: report(state, app, pod, generation, now),
    })
}

/// Follows the shadow of `pod` in one reconcile pass: starts its record,
/// starts its clock once its replica is ready, and ends copying after its
/// duration. The same shape as [`crate::canary::track`], so the reconciler
/// calls either.
#[allow(clippy::too_many_arguments)]
pub fn track(
    state: &mut State,
    (key, app): (&String, &App),
    pod: &Name,
    rollout: &RolloutSpec,
    base: &StableTemplate,
    ready: bool,
    now: Instant,
) -> Decision {
    let mut out = Decision::default();
    let spec = &app.stored.spec;
    let generation = app.stored.generation(pod);
    let slot = (key.clone(), pod.clone());
    if crate::canary::begin(state, &slot, generation, now) {
        out.events.push(event(
            &spec.namespace,
            &spec.name,
            EventReason::RolloutStarted,
            format!(
                "shadow of pod {pod}: generation {generation} (revision {}) beside generation {}, copying {} of requests for {}; its answers are compared and thrown away, its messages and outbound calls refused, its key-value writes kept apart",
                app.revision,
                base.generation,
                rollout.shadow_share(),
                rollout.duration,
            ),
        ));
    }
    let report_now = state
        .rollouts
        .get(&slot)
        .and_then(|r| r.canary.as_ref())
        .filter(|p| {
            p.since
                .is_some_and(|s| now.duration_since(s) >= rollout.duration.get())
        })
        .filter(|p| !p.finished)
        .map(|_| report(state, app, pod, generation, now));
    let Some(r) = state.rollouts.get_mut(&slot) else {
        return out;
    };
    let Some(progress) = r.canary.as_mut() else {
        return out;
    };
    if r.rolled_back || progress.finished {
        return out;
    }
    match (progress.since, ready) {
        (None, true) => {
            progress.since = Some(now);
            r.last_progress = now;
        }
        (None, false) if now.duration_since(r.last_progress) > rollout.progress_deadline.get() => {
            r.rolled_back = true;
            out.fail = Some(format!(
                "the shadow of pod {pod} was not ready within its progress deadline {}",
                rollout.progress_deadline
            ));
        }
        _ => {}
    }
    if let Some(report) = report_now {
        progress.finished = true;
        let mut message = format!(
            "shadow of pod {pod} (generation {generation}) finished after {}: {report}",
            rollout.duration
        );
        for d in &report.examples {
            message.push_str(&format!(
                "; e.g. {}: {} from the stable replicas, {} from the shadow",
                d.request, d.stable_status, d.shadow_status
            ));
        }
        message.push_str("; `shoal rollout promote` rolls it out, `shoal rollout abort` goes back");
        out.events.push(event(
            &spec.namespace,
            &spec.name,
            EventReason::ShadowFinished,
            message,
        ));
    }
    out
}

/// Invocations through the API so far: what its shadow split counts.
static INVOKED: AtomicU64 = AtomicU64::new(0);

/// Where a copy of an API invocation of a worker `component` of `pod`
/// goes: the shadow's subject and generation, when one runs, its replica
/// is ready, and this invocation is one of its share.
pub fn copy_invocation(
    state: &State,
    key: &str,
    app: &App,
    (pod, component): (&Name, &Name),
    now: Instant,
) -> Option<(String, u64)> {
    let share = share(state, key, app, pod)?;
    let spec = &app.stored.spec;
    let generation = app.stored.generation(pod);
    let ready = state.hosts.values().filter(|h| h.is_live(now)).any(|h| {
        h.replicas_of(&spec.namespace, &spec.name).iter().any(|r| {
            &r.id.pod == pod
                && r.id.index == ReplicaId::SHADOW
                && r.revision == generation
                && r.ready
        })
    });
    (ready && share.picks(INVOKED.fetch_add(1, Ordering::Relaxed))).then(|| {
        (
            subjects::invoke_shadow(&spec.namespace, &spec.name, component),
            generation,
        )
    })
}

/// Counts one invocation copied to a shadow: the stable reply (error
/// flag and payload) against the shadow's (`None`: it did not answer).
pub fn note_invocation(
    state: &mut State,
    (key, generation): (String, u64),
    (namespace, app, component): (&Name, &Name, &Name),
    request: &str,
    stable: (bool, &[u8]),
    shadow: Option<(bool, &[u8])>,
) {
    // Counts of shadows that ended go.
    let apps = &state.apps;
    state.shadow_invocations.retain(|((k, g), _)| {
        apps.get(k)
            .is_some_and(|a| a.stored.generations.values().any(|x| x == g))
    });
    let all = &mut state.shadow_invocations;
    let at = match all
        .iter()
        .position(|(k, _)| k.0 == key && k.1 == generation)
    {
        Some(at) => at,
        None => {
            all.push((
                (key.clone(), generation),
                ShadowReport::new(
                    namespace.clone(),
                    app.clone(),
                    component.clone(),
                    generation,
                ),
            ));
            all.len() - 1
        }
    };
    let report = &mut all[at].1;
    let Some((shadow_failed, shadow_payload)) = shadow else {
        report.unanswered += 1;
        return;
    };
    let (stable_failed, stable_payload) = stable;
    report.compared += 1;
    let status = |failed: bool| if failed { 500 } else { 200 };
    let differs = if stable_failed != shadow_failed {
        report.status_differed += 1;
        true
    } else if stable_payload != shadow_payload {
        report.body_differed += 1;
        true
    } else {
        false
    };
    if differs && report.examples.len() < shoal_api::resources::SHADOW_EXAMPLES {
        let start = |b: &[u8]| {
            String::from_utf8_lossy(&b[..b.len().min(shoal_api::resources::SHADOW_EXAMPLE_BODY)])
                .into_owned()
        };
        report
            .examples
            .push(shoal_api::resources::ShadowDifference {
                request: request.to_string(),
                stable_status: status(stable_failed),
                shadow_status: status(shadow_failed),
                stable_body: start(stable_payload),
                shadow_body: start(shadow_payload),
            });
    }
}
