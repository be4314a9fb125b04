//! Canary rollouts: a pod whose rollout is `strategy = "canary"` gets a
//! new template by way of one extra replica (the canary, [`ReplicaId::CANARY`])
//! that takes a share of the requests, step by step, while the pod's
//! replicas keep running the stable template.
//!
//! - **Where the split happens.** Every ingress (and the API's `invoke`)
//!   sends each request to the canary or to the stable replicas, by the
//!   share the route table carries ([`crate::route_table`]). The canary is
//!   in no queue group of the stable replicas, so its share is the share
//!   chosen, however many replicas the pod has.
//! - **What is judged.** The canary replica's own invocations during the
//!   step, as its host counts them in heartbeats ([`ReplicaStats`]): an
//!   error, a trap, or an HTTP answer of 500 or more is a failure. The
//!   stable replicas' figures over the same time are shown beside them.
//! - **Verdicts** ([`judge`]): a step fails at once when its failures are
//!   past what `max_error_rate` allows over `min_requests` (or over the
//!   requests seen, when more), or its p99 is past `max_p99` once it has
//!   `min_requests`. It passes when its interval is over and it has
//!   `min_requests`. A failed canary is rolled back (the revision before
//!   is stored again); the last step passed promotes it: the app is stored
//!   without its stable template, and the pod rolls out as usual.
//! - **What is remembered.** The step and when it began are kept with the
//!   rollout in the control bucket. The counters at the step's start are
//!   this leader's: a new leader counts the step's figures from when it
//!   took over.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use shoal_api::resources::{CanaryStatus, EventReason, Figures};
use shoal_api::top::ReplicaStats;
use shoal_api::wire::{HostId, ReplicaId, ReplicaState};
use shoal_api::{Analysis, Name, RolloutSpec, Share};

use crate::state::{App, StableTemplate, State, event};

/// A canary's progress, kept with its pod's [`crate::state::Rollout`].
#[derive(Debug, Clone, Default)]
pub struct CanaryProgress {
    /// The step it is at (from 0).
    pub step: u32,
    /// When the step began: when the canary replica was first ready, for
    /// the first.
    pub since: Option<Instant>,
    /// Each copy's counters when the step began, by host, replica and
    /// generation; `None` until this leader has looked.
    pub marks: Option<HashMap<CopyKey, ReplicaStats>>,
    /// Its last step passed: the promotion is being stored.
    pub promoting: bool,
    /// A shadow's copying is over (and said so).
    pub finished: bool,
}

/// One copy of a replica: where it runs, which replica, which generation.
pub type CopyKey = (HostId, ReplicaId, u64);

/// What to do about a canary after looking at a step's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going: the step is not over, or has too few requests yet.
    Wait,
    /// The step passed: take the next share.
    Advance,
    /// The last step passed: roll out to every replica.
    Promote,
    /// The step failed: roll back, for this reason.
    Fail(String),
}

/// Judges a step of `elapsed` (of `interval`) with the canary's figures
/// `canary`; `last` when it is the last step.
pub fn judge(
    analysis: &Analysis,
    canary: &Figures,
    elapsed: Duration,
    interval: Duration,
    last: bool,
) -> Verdict {
    let max_rate = analysis.max_error_rate.fraction();
    let min = u64::from(analysis.min_requests);
    // Failures past what the rate allows over `min_requests` fail the step
    // at once: no number of good requests up to `min_requests` could
    // bring it back under.
    let judged_over = canary.requests.max(min);
    if canary.errors as f64 > max_rate * judged_over as f64 {
        return Verdict::Fail(format!(
            "{canary}, above max_error_rate {} (judged over {judged_over} requests)",
            analysis.max_error_rate
        ));
    }
    let enough = canary.requests >= min;
    let max_p99 = analysis.max_p99.get();
    if enough
        && let Some(p99) = canary.p99_us
        && Duration::from_micros(p99) > max_p99
    {
        return Verdict::Fail(format!("{canary}, p99 above max_p99 {}", analysis.max_p99));
    }
    match (enough && elapsed >= interval, last) {
        (false, _) => Verdict::Wait,
        (true, false) => Verdict::Advance,
        (true, true) => Verdict::Promote,
    }
}

/// A pod's copies on live hosts, with their counters: the canary's and
/// the stable replicas'.
fn counters<'a>(
    state: &'a State,
    app: &'a App,
    pod: &'a Name,
    now: Instant,
) -> impl Iterator<Item = (CopyKey, &'a ReplicaStats)> + 'a {
    let spec = &app.stored.spec;
    state
        .hosts
        .iter()
        .filter(move |(_, h)| h.is_live(now))
        .flat_map(move |(host, h)| {
            h.replicas_of(&spec.namespace, &spec.name)
                .iter()
                .filter(move |r| &r.id.pod == pod)
                .map(move |r| ((host.clone(), r.id.clone(), r.revision), &r.stats))
        })
}

/// The figures of the canary and of the stable replicas since `marks`
/// were taken (copies started since count from zero).
pub fn figures(
    state: &State,
    app: &App,
    pod: &Name,
    marks: &HashMap<CopyKey, ReplicaStats>,
    now: Instant,
) -> (Figures, Figures) {
    let (mut canary, mut stable) = (ReplicaStats::default(), ReplicaStats::default());
    let zero = ReplicaStats::default();
    for (key, stats) in counters(state, app, pod, now) {
        let since = stats.since(marks.get(&key).unwrap_or(&zero));
        if key.1.is_canary() {
            canary.add(&since);
        } else {
            stable.add(&since);
        }
    }
    (figures_of(&canary), figures_of(&stable))
}

fn figures_of(stats: &ReplicaStats) -> Figures {
    Figures {
        requests: stats.invocations,
        errors: stats.errors,
        p99_us: stats
            .quantile(0.99)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
    }
}

/// Every copy's counters now: the marks a step starts from.
pub fn marks(state: &State, app: &App, pod: &Name, now: Instant) -> HashMap<CopyKey, ReplicaStats> {
    counters(state, app, pod, now)
        .map(|(key, stats)| (key, stats.clone()))
        .collect()
}

/// The share of requests the canary of `pod` takes now; `None` when no
/// canary of it runs, or it failed or passed its last step.
pub fn share(state: &State, key: &str, app: &App, pod: &Name) -> Option<Share> {
    app.stored.canary_of(pod)?;
    let rollout = state.rollouts.get(&(key.to_string(), pod.clone()))?;
    // A shadow's progress is kept alike: its share is another thing.
    if app
        .stored
        .spec
        .pods()
        .into_iter()
        .find(|p| &p.name == pod)?
        .rollout()
        .is_shadow()
    {
        return None;
    }
    let canary = rollout.canary.as_ref()?;
    if rollout.rolled_back || canary.promoting || rollout.generation != app.stored.generation(pod) {
        return None;
    }
    let spec = app
        .stored
        .spec
        .pods()
        .into_iter()
        .find(|p| &p.name == pod)?
        .rollout();
    spec.steps.get(canary.step as usize).copied()
}

/// Invocations sent through the API so far: what its canary split counts.
static INVOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Whether an invocation of a worker of `pod` sent through the API goes
/// to the pod's canary: one runs, its replica is ready, and this
/// invocation is one of its share.
pub fn takes_invocation(state: &State, key: &str, app: &App, pod: &Name, now: Instant) -> bool {
    let Some(share) = self::share(state, key, app, pod) else {
        return false;
    };
    let spec = &app.stored.spec;
    let ready = state.hosts.values().filter(|h| h.is_live(now)).any(|h| {
        h.replicas_of(&spec.namespace, &spec.name).iter().any(|r| {
            &r.id.pod == pod
                && r.id.is_canary()
                && r.revision == app.stored.generation(pod)
                && r.ready
                && r.state == ReplicaState::Running
        })
    });
    ready && share.picks(INVOCATIONS.fetch_add(1, Ordering::Relaxed))
}

/// A canary in words and figures, for `rollout status`.
pub fn status(
    state: &State,
    key: &str,
    app: &App,
    pod: &Name,
    base: &StableTemplate,
    canary_ready: bool,
    now: Instant,
) -> Option<CanaryStatus> {
    let rollout = state.rollouts.get(&(key.to_string(), pod.clone()))?;
    let progress = rollout.canary.as_ref()?;
    let spec = app
        .stored
        .spec
        .pods()
        .into_iter()
        .find(|p| &p.name == pod)?
        .rollout();
    let empty = HashMap::new();
    let (canary, stable) = figures(
        state,
        app,
        pod,
        progress.marks.as_ref().unwrap_or(&empty),
        now,
    );
    let since_ms = |at: Instant| {
        crate::state::now_ms()
            .saturating_sub(crate::state::millis(now.saturating_duration_since(at)))
    };
    Some(CanaryStatus {
        generation: app.stored.generation(pod),
        stable_generation: base.generation,
        step: progress.step + 1,
        steps: u32::try_from(spec.steps.len()).unwrap_or(u32::MAX),
        share: spec
            .steps
            .get(progress.step as usize)
            .copied()
            .unwrap_or_default(),
        ready: canary_ready,
        step_started_ms: progress.since.map_or(0, since_ms),
        canary,
        stable,
    })
}

/// What [`track`] decided that the leader must store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    /// The app's key.
    pub app: String,
    /// The pod whose canary passed.
    pub pod: Name,
    /// The KV revision of the app the canary ran in ([`App::kv`]): the
    /// promotion is stored over it only.
    pub kv: u64,
    /// The last step's figures, in words, for the event.
    pub figures: String,
}

/// What a pass decided about one pod's canary.
#[derive(Debug, Default)]
pub struct Decision {
    /// Events to publish.
    pub events: Vec<shoal_api::resources::Event>,
    /// A rollback to ask for, with its reason.
    pub fail: Option<String>,
    /// A promotion to store.
    pub promote: Option<Promotion>,
}

/// Starts the record of a canary (or shadow) of `generation` at `slot`
/// unless it runs already; whether it started.
pub(crate) fn begin(
    state: &mut State,
    slot: &(String, Name),
    generation: u64,
    now: Instant,
) -> bool {
    let fresh = state
        .rollouts
        .get(slot)
        .is_none_or(|r| r.generation != generation || r.canary.is_none());
    if fresh {
        state.rollouts.insert(
            slot.clone(),
            crate::state::Rollout {
                generation,
                done: 0,
                last_progress: now,
                rolled_back: false,
                canary: Some(CanaryProgress::default()),
            },
        );
    }
    fresh
}

/// Follows the canary of `pod` in one reconcile pass: starts its record,
/// waits for its replica, judges its step, and decides what comes next.
#[allow(clippy::too_many_arguments)]
pub fn track(
    state: &mut State,
    (key, app): (&String, &App),
    pod: &Name,
    rollout: &RolloutSpec,
    base: &StableTemplate,
    canary_ready: bool,
    now: Instant,
) -> Decision {
    let mut out = Decision::default();
    let spec = &app.stored.spec;
    let generation = app.stored.generation(pod);
    let slot = (key.clone(), pod.clone());
    if begin(state, &slot, generation, now) {
        let steps: Vec<String> = rollout.steps.iter().map(Share::to_string).collect();
        out.events.push(event(
            &spec.namespace,
            &spec.name,
            EventReason::RolloutStarted,
            format!(
                "canary of pod {pod}: generation {generation} (revision {}) beside generation {}, taking {} of requests in turn, each for {} at least; analysis: max_error_rate {}, max_p99 {}, min_requests {}",
                app.revision,
                base.generation,
                steps.join(", "),
                rollout.step_interval,
                rollout.analysis.max_error_rate,
                rollout.analysis.max_p99,
                rollout.analysis.min_requests,
            ),
        ));
    }
    let marks_now = marks(state, app, pod, now);
    let Some(r) = state.rollouts.get_mut(&slot) else {
        return out;
    };
    let Some(progress) = r.canary.as_mut() else {
        return out;
    };
    if r.rolled_back || progress.promoting {
        return out;
    }
    if !canary_ready || progress.since.is_none() {
        if canary_ready {
            // The step's clock and counters start with a ready canary.
            progress.since = Some(now);
            progress.marks = Some(marks_now);
            r.last_progress = now;
        } else if now.duration_since(r.last_progress) > rollout.progress_deadline.get() {
            r.rolled_back = true;
            out.fail = Some(format!(
                "the canary of pod {pod} was not ready within its progress deadline {}",
                rollout.progress_deadline
            ));
        }
        return out;
    }
    let marks_taken = progress.marks.get_or_insert(marks_now).clone();
    let step = progress.step as usize;
    let share = rollout.steps.get(step).copied().unwrap_or_default();
    let since = progress.since.unwrap_or(now);
    // Figures need `state` whole: `r` is looked up again after.
    let (canary, stable) = figures(state, app, pod, &marks_taken, now);
    let verdict = judge(
        &rollout.analysis,
        &canary,
        now.duration_since(since),
        rollout.step_interval.get(),
        step + 1 >= rollout.steps.len(),
    );
    let next_marks = (verdict == Verdict::Advance).then(|| marks(state, app, pod, now));
    let Some(r) = state.rollouts.get_mut(&slot) else {
        return out;
    };
    let Some(progress) = r.canary.as_mut() else {
        return out;
    };
    let step_words = format!("step {} of {} ({share})", step + 1, rollout.steps.len());
    match verdict {
        Verdict::Wait => {}
        Verdict::Fail(why) => {
            r.rolled_back = true;
            let reason = format!(
                "canary of pod {pod} (generation {generation}) failed {step_words}: {why}; stable replicas: {stable}"
            );
            out.events.push(event(
                &spec.namespace,
                &spec.name,
                EventReason::CanaryFailed,
                reason.clone(),
            ));
            out.fail = Some(reason);
        }
        Verdict::Advance => {
            progress.step += 1;
            progress.since = Some(now);
            progress.marks = next_marks;
            let next = rollout
                .steps
                .get(progress.step as usize)
                .copied()
                .unwrap_or_default();
            r.last_progress = now;
            out.events.push(event(
                &spec.namespace,
                &spec.name,
                EventReason::CanaryAdvanced,
                format!(
                    "canary of pod {pod} passed {step_words}: {canary}; stable replicas: {stable}; now taking {next}"
                ),
            ));
        }
        Verdict::Promote => {
            progress.promoting = true;
            out.promote = Some(Promotion {
                app: key.clone(),
                pod: pod.clone(),
                kv: app.kv,
                figures: format!("passed {step_words}: {canary}; stable replicas: {stable}"),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analysis() -> Analysis {
        Analysis {
            max_error_rate: Share::percent(1),
            max_p99: shoal_api::DurationSpec::new(Duration::from_millis(200)),
            min_requests: 100,
        }
    }

    fn figures(requests: u64, errors: u64, p99_ms: u64) -> Figures {
        Figures {
            requests,
            errors,
            p99_us: Some(p99_ms * 1000),
        }
    }

    const STEP: Duration = Duration::from_secs(30);

    #[test]
    fn a_step_passes_once_its_interval_is_over_with_enough_requests() {
        let a = analysis();
        let good = figures(150, 1, 20);
        assert_eq!(judge(&a, &good, STEP / 2, STEP, false), Verdict::Wait);
        assert_eq!(judge(&a, &good, STEP, STEP, false), Verdict::Advance);
        assert_eq!(judge(&a, &good, STEP, STEP, true), Verdict::Promote);
        // Too few requests: the step waits past its interval.
        assert_eq!(
            judge(&a, &figures(99, 0, 20), STEP * 3, STEP, false),
            Verdict::Wait
        );
    }

    #[test]
    fn failures_past_what_min_requests_allows_fail_at_once() {
        let a = analysis();
        // 1% of 100 allows one failure; the second fails the step, even
        // after 10 requests and before the interval is over.
        assert_eq!(
            judge(&a, &figures(10, 1, 20), Duration::ZERO, STEP, false),
            Verdict::Wait
        );
        let Verdict::Fail(why) = judge(&a, &figures(10, 2, 20), Duration::ZERO, STEP, false) else {
            panic!("two failures in ten requests must fail a 1% step");
        };
        assert!(why.contains("2 of 10 requests failed (20.0%)"), "{why}");
        assert!(why.contains("max_error_rate 1%"), "{why}");
        // Over more requests the rate is what counts.
        assert_eq!(
            judge(&a, &figures(1000, 10, 20), STEP, STEP, false),
            Verdict::Advance
        );
        assert!(matches!(
            judge(&a, &figures(1000, 11, 20), STEP, STEP, false),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn a_slow_canary_fails_once_it_has_enough_requests() {
        let a = analysis();
        assert_eq!(
            judge(&a, &figures(50, 0, 900), STEP, STEP, false),
            Verdict::Wait
        );
        let Verdict::Fail(why) = judge(&a, &figures(100, 0, 900), Duration::ZERO, STEP, false)
        else {
            panic!("a p99 over max_p99 must fail the step");
        };
        assert!(why.contains("max_p99 200ms"), "{why}");
    }
}
