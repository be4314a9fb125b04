//! A replica's life on its host: load, serve, check, restart, stop.
//!
//! One supervisor task per replica copy. It loads the pod's components,
//! serves them behind a readiness [`Gate`], runs their health checks and
//! watches for invocations that keep trapping and for jobs that exit. When
//! the replica must stop, its restart policy decides whether it starts
//! again, after an exponential back-off ([`Backoff`]) that shows as
//! `restarting` and then `crash_loop`. A stop command is graceful: the
//! replica leaves load balancing and its queues, finishes the work it
//! holds (up to its components' timeout), then goes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_api::wire::{HostId, PodComponent, ReplicaId, ReplicaState, StartReplica};
use shoal_api::{ComponentKind, HealthSpec, Name, RestartPolicy, subjects};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use crate::component::LoadedComponent;
use crate::error::InvokeError;
use crate::health::{Checks, Probe, Verdict};
use crate::ingress::IngressRoutes;
use crate::log_shipper::ReplicaLog;
use crate::logs::LogSink;
use crate::serving::{answer_invocation, serve_gated};
use crate::tunables::{
    RESTART_BACKOFF_FIRST, RESTART_BACKOFF_MAX, RESTART_BACKOFF_RESET, STOP_GRACE,
    TRAP_CHECK_INTERVAL, TRAPS_BEFORE_RESTART,
};

/// Which copy of which replica: a rollout runs two copies of one replica,
/// at different revisions, side by side for a moment.
pub(crate) type CopyKey = (ReplicaId, u64);

/// How a replica copy is doing, as its supervisor reports it and the
/// host's heartbeats carry it.
pub(crate) struct CopyStatus {
    /// How it is doing.
    pub state: ReplicaState,
    /// Whether it takes work.
    pub ready: bool,
    /// Times it was restarted.
    pub restarts: u32,
    /// Why it last stopped or failed a check.
    pub last_error: Option<String>,
    /// Its components while it runs: their busy time is its load.
    pub components: Vec<Arc<LoadedComponent>>,
    /// Busy time and when, at the previous heartbeat.
    pub busy_at_beat: (u64, Instant),
}

impl CopyStatus {
    /// A copy about to start.
    pub(crate) fn starting() -> Self {
        CopyStatus {
            state: ReplicaState::Starting,
            ready: false,
            restarts: 0,
            last_error: None,
            components: Vec::new(),
            busy_at_beat: (0, Instant::now()),
        }
    }

    /// Invocations in flight on average since the previous call, in
    /// thousandths: busy time over wall time.
    pub(crate) fn load_milli(&mut self, now: Instant) -> u32 {
        let busy: u64 = self.components.iter().map(|c| c.busy_ns()).sum();
        let (before, then) = std::mem::replace(&mut self.busy_at_beat, (busy, now));
        let wall = now.duration_since(then).as_nanos();
        if wall == 0 {
            return 0;
        }
        let load = u128::from(busy.saturating_sub(before)) * 1000 / wall;
        u32::try_from(load).unwrap_or(u32::MAX)
    }
}

/// What a supervisor may do on its host, and nothing more: load its
/// components, report how its copy is doing, serve it.
pub(crate) trait ReplicaHost: Send + Sync + 'static {
    /// The host's id.
    fn id(&self) -> &HostId;
    /// The NATS connection the replica serves on.
    fn nats(&self) -> &async_nats::Client;
    /// The ingress's routing table.
    fn routes(&self) -> &IngressRoutes;
    /// Changes how the copy `key` is doing, if it is still on the host.
    fn update(&self, key: &CopyKey, change: impl FnOnce(&mut CopyStatus));
    /// Fetches, grants and loads one component of a replica.
    /// The log of run `incarnation` of `replica`.
    fn replica_log(&self, replica: &ReplicaId, incarnation: u32) -> ReplicaLog;
    fn load(
        &self,
        start: &StartReplica,
        component: &PodComponent,
        log_sink: Arc<dyn LogSink>,
    ) -> impl Future<Output = Result<Arc<LoadedComponent>, String>> + Send;
}

/// Runs one replica copy until `stop` is set or its sender dropped.
pub(crate) async fn supervise<H: ReplicaHost>(
    agent: Arc<H>,
    start: StartReplica,
    mut stop: watch::Receiver<bool>,
) {
    let key: CopyKey = (start.id.clone(), start.revision);
    let policy = RestartPolicy::of_pod(start.components.iter().map(|c| &c.spec));
    let mut backoff = Backoff::default();
    let names: Vec<Name> = start.components.iter().map(|c| c.name.clone()).collect();
    let mut incarnation = 0;
    loop {
        let log = agent.replica_log(&start.id, incarnation);
        let mut run = tokio::select! {
            run = Run::start(&agent, &start, &log) => match run {
                Ok(run) => run,
                Err(reason) => {
                    tracing::warn!(replica = %key.0, %reason, "replica failed to start");
                    log.lifecycle(&names, &format!("failed to start: {reason}"));
                    agent.update(&key, |r| r.state = ReplicaState::Failed { reason });
                    return;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let ready = run.ready();
        let components: Vec<_> = run.components.iter().map(|c| c.component.clone()).collect();
        agent.update(&key, |r| {
            r.state = ReplicaState::Running;
            r.ready = ready;
            r.busy_at_beat = (0, Instant::now());
            r.components = components;
        });
        tracing::info!(replica = %key.0, revision = key.1, "replica running");
        log.lifecycle(
            &names,
            &format!(
                "started on {} (revision {}){}",
                agent.id(),
                key.1,
                if ready {
                    ", ready"
                } else {
                    ", waiting for its readiness check"
                }
            ),
        );
        let began = Instant::now();
        let ended = tokio::select! {
            _ = stop.wait_for(|s| *s) => None,
            why = run.watch(agent.as_ref(), &key, &log) => Some(why),
        };
        run.shut_down(agent.as_ref(), &key).await;
        let Some(ended) = ended else {
            log.lifecycle(&names, "stopped");
            return;
        };
        let restart = !matches!(
            (policy, &ended),
            (RestartPolicy::Never, _) | (RestartPolicy::OnFailure, Ended::Succeeded)
        );
        if !restart {
            tracing::info!(replica = %key.0, "replica stopped for good: {ended}");
            log.lifecycle(&names, &format!("stopped for good: {ended}"));
            agent.update(&key, |r| {
                r.ready = false;
                r.state = match &ended {
                    Ended::Succeeded => ReplicaState::Completed,
                    Ended::Failed(reason) => {
                        r.last_error = Some(reason.clone());
                        ReplicaState::Exited {
                            reason: reason.clone(),
                        }
                    }
                };
            });
            let _ = stop.wait_for(|s| *s).await;
            return;
        }
        let delay = backoff.next(began.elapsed());
        let reason = ended.to_string();
        tracing::warn!(replica = %key.0, ?delay, "replica restarting: {reason}");
        log.lifecycle(
            &names,
            &format!("restarting in {:.1}s: {reason}", delay.as_secs_f64()),
        );
        incarnation += 1;
        agent.update(&key, |r| {
            r.ready = false;
            r.restarts += 1;
            r.last_error = Some(reason.clone());
            let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
            r.state = if backoff.in_a_row > 1 {
                ReplicaState::CrashLoop {
                    reason: reason.clone(),
                    retry_in_ms,
                }
            } else {
                ReplicaState::Restarting {
                    reason: reason.clone(),
                    retry_in_ms,
                }
            };
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        agent.update(&key, |r| r.state = ReplicaState::Starting);
    }
}

/// Why a run of a replica ended on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// A job finished with success.
    Succeeded,
    /// A job failed, a liveness check failed, or invocations kept trapping.
    Failed(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Succeeded => f.write_str("the job completed"),
            Ended::Failed(why) => f.write_str(why),
        }
    }
}

/// Exponential back-off between restarts: the first after
/// [`RESTART_BACKOFF_FIRST`], doubling up to [`RESTART_BACKOFF_MAX`], and
/// back to the first once a run lasted [`RESTART_BACKOFF_RESET`].
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Restarts in a row without a long enough run in between.
    pub in_a_row: u32,
}

impl Backoff {
    /// The wait before the next start, after a run that lasted `ran`.
    pub fn next(&mut self, ran: Duration) -> Duration {
        if ran >= RESTART_BACKOFF_RESET {
            self.in_a_row = 0;
        }
        let delay = RESTART_BACKOFF_FIRST
            .saturating_mul(2u32.saturating_pow(self.in_a_row.min(16)))
            .min(RESTART_BACKOFF_MAX);
        self.in_a_row += 1;
        delay
    }
}

/// One component of a running replica.
struct Running {
    name: shoal_api::Name,
    component: Arc<LoadedComponent>,
    /// How it is checked, if it is.
    probe: Option<(Probe, HealthSpec)>,
}

/// One run of a replica: its components loaded and serving.
struct Run {
    components: Vec<Running>,
    /// Open while the replica is ready; dropped to stop its serving loops.
    gate: Option<watch::Sender<bool>>,
    tracker: TaskTracker,
    /// The loops taking work while the gate is open.
    serving: Vec<JoinHandle<()>>,
    /// A job's run, and where its outcome arrives.
    job_task: Option<JoinHandle<()>>,
    job: Option<oneshot::Receiver<Result<(), InvokeError>>>,
    /// The longest timeout of its components: how long a stop waits for
    /// work in flight.
    grace: Duration,
}

impl Run {
    /// Loads every component of the pod, then starts serving them. The
    /// replica is ready at once unless a component is health-checked: then
    /// it waits for its first passing check.
    async fn start<H: ReplicaHost>(
        agent: &Arc<H>,
        start: &StartReplica,
        log: &ReplicaLog,
    ) -> Result<Run, String> {
        let id = &start.id;
        let mut components = Vec::new();
        for c in &start.components {
            let component = agent.load(start, c, log.sink(&c.name)).await?;
            let probe = probe_of(&c.spec, &component)
                .map_err(|why| format!("component {}: {why}", c.name))?;
            components.push((c, component, probe));
        }
        let checked = components.iter().any(|(_, _, p)| p.is_some());
        let (gate, open) = watch::channel(!checked);
        let tracker = TaskTracker::new();
        let mut tasks = Vec::new();
        let mut job = None;
        let mut job_task = None;
        let replica: Arc<str> = id.to_string().into();
        let host: Arc<str> = agent.id().to_string().into();
        let grace = components
            .iter()
            .map(|(_, c, _)| c.limits().timeout.get())
            .max()
            .unwrap_or_default();
        for (spec, c, _) in &components {
            let group = subjects::invoke_queue_group(&id.namespace, &id.app, &spec.name);
            match spec.spec.kind {
                ComponentKind::Worker => {
                    // A canary takes only what is routed to it: the share
                    // its callers choose, never a pull of its own.
                    if spec.spec.queue.is_some() && !id.is_extra() {
                        tasks.push(tokio::spawn(crate::queue::consume(
                            agent.nats().clone(),
                            id.clone(),
                            spec.name.clone(),
                            c.clone(),
                            spec.spec.max_deliver,
                            open.clone(),
                            tracker.clone(),
                        )));
                    }
                    let subject = if id.is_canary() {
                        subjects::invoke_canary(&id.namespace, &id.app, &spec.name)
                    } else if id.is_shadow() {
                        subjects::invoke_shadow(&id.namespace, &id.app, &spec.name)
                    } else {
                        subjects::invoke(&id.namespace, &id.app, &spec.name)
                    };
                    let (nats, c, replica) = (agent.nats().clone(), c.clone(), replica.clone());
                    tasks.push(tokio::spawn(serve_gated(
                        agent.nats().clone(),
                        subject,
                        group,
                        open.clone(),
                        tracker.clone(),
                        move |msg| answer_invocation(nats.clone(), c.clone(), msg, replica.clone()),
                    )));
                }
                ComponentKind::Http => {
                    let subject = if id.is_canary() {
                        subjects::http_canary(&id.namespace, &id.app, &spec.name)
                    } else if id.is_shadow() {
                        subjects::http_shadow(&id.namespace, &id.app, &spec.name)
                    } else {
                        subjects::http(&id.namespace, &id.app, &spec.name)
                    };
                    let (nats, comp, replica, host) = (
                        agent.nats().clone(),
                        c.clone(),
                        replica.clone(),
                        host.clone(),
                    );
                    tasks.push(tokio::spawn(serve_gated(
                        agent.nats().clone(),
                        subject,
                        group,
                        open.clone(),
                        tracker.clone(),
                        move |msg| {
                            crate::forward::answer_forwarded(
                                nats.clone(),
                                comp.clone(),
                                msg,
                                replica.clone(),
                                host.clone(),
                            )
                        },
                    )));
                    agent.routes().add(
                        spec.spec.route.as_deref().unwrap_or("/"),
                        spec.spec.host.as_deref(),
                        id,
                        start.revision,
                        &spec.name,
                        c.clone(),
                        !checked,
                    );
                }
                ComponentKind::Job => {
                    let (done, exit) = oneshot::channel();
                    let c = c.clone();
                    job_task = Some(tokio::spawn(async move {
                        let outcome = c.run_job().await.map(|_| ());
                        let _ = done.send(outcome);
                    }));
                    job = Some(exit);
                }
            }
        }
        Ok(Run {
            components: components
                .into_iter()
                .map(|(spec, component, probe)| Running {
                    name: spec.name.clone(),
                    component,
                    probe,
                })
                .collect(),
            gate: Some(gate),
            tracker,
            serving: tasks,
            job_task,
            job,
            grace,
        })
    }

    /// Whether the replica takes work now.
    fn ready(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| *g.borrow())
    }

    /// Checks the replica until it must stop: a job ended, a liveness
    /// check failed `failure_threshold` times in a row, or
    /// [`TRAPS_BEFORE_RESTART`] invocations in a row trapped. Readiness
    /// changes open and close the gate on the way.
    async fn watch<H: ReplicaHost>(&mut self, agent: &H, key: &CopyKey, log: &ReplicaLog) -> Ended {
        let mut checks: Vec<Option<(Checks, Instant)>> = self
            .components
            .iter()
            .map(|c| {
                c.probe
                    .as_ref()
                    .map(|(_, spec)| (Checks::new(spec.failure_threshold), Instant::now()))
            })
            .collect();
        let tick = self
            .components
            .iter()
            .filter_map(|c| c.probe.as_ref().map(|(_, spec)| spec.interval.get()))
            .min()
            .unwrap_or(TRAP_CHECK_INTERVAL)
            .min(TRAP_CHECK_INTERVAL);
        let mut job = self.job.take();
        loop {
            for (c, state) in self.components.iter().zip(checks.iter_mut()) {
                let (streak, last) = c.component.trap_streak();
                if streak >= TRAPS_BEFORE_RESTART {
                    return Ended::Failed(format!(
                        "{}: {streak} invocations in a row trapped; the last: {}",
                        c.name,
                        last.unwrap_or_default()
                    ));
                }
                let (Some((probe, spec)), Some((checks, due))) = (&c.probe, state.as_mut()) else {
                    continue;
                };
                if Instant::now() < *due {
                    continue;
                }
                *due = Instant::now() + spec.interval.get();
                let outcome = c.component.check_health(probe, spec.timeout.get()).await;
                if let Verdict::Dead(why) = checks.record(outcome) {
                    return Ended::Failed(format!("{}: {why}", c.name));
                }
            }
            let ready = checks
                .iter()
                .all(|s| s.as_ref().is_none_or(|(c, _)| c.ready()));
            let flipped = self.gate.as_ref().is_some_and(|g| {
                g.send_if_modified(|open| std::mem::replace(open, ready) != ready)
            });
            if flipped {
                tracing::info!(replica = %key.0, ready, "readiness changed");
                let names: Vec<&Name> = self.components.iter().map(|c| &c.name).collect();
                log.lifecycle(names, if ready { "ready" } else { "not ready" });
                agent.routes().set_ready(&key.0, key.1, ready);
                let why = checks
                    .iter()
                    .filter_map(|s| s.as_ref().and_then(|(c, _)| c.last_error()))
                    .next()
                    .map(str::to_string);
                agent.update(key, |r| {
                    r.ready = ready;
                    if why.is_some() {
                        r.last_error = why.clone();
                    }
                });
            }
            let exited = async {
                match job.as_mut() {
                    Some(exit) => exit.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = tokio::time::sleep(tick) => {}
                outcome = exited => {
                    return match outcome {
                        Ok(Ok(())) => Ended::Succeeded,
                        Ok(Err(e)) => Ended::Failed(e.to_string()),
                        Err(_) => Ended::Failed("the job's task ended without an outcome".into()),
                    };
                }
            }
        }
    }

    /// Stops serving: out of load balancing and off its queues at once,
    /// then waits (up to the longest component timeout, plus a margin) for
    /// the work in flight before the tasks go.
    async fn shut_down<H: ReplicaHost>(mut self, agent: &H, key: &CopyKey) {
        agent.routes().remove(&key.0, key.1);
        if let Some(job) = &self.job_task {
            job.abort();
        }
        if let Some(gate) = self.gate.take() {
            let _ = gate.send(false);
        }
        // The serving loops drain their subscriptions and return.
        let serving = futures::future::join_all(self.serving.iter_mut());
        let _ = tokio::time::timeout(STOP_GRACE, serving).await;
        self.tracker.close();
        if tokio::time::timeout(self.grace + STOP_GRACE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(replica = %key.0, "work still in flight after the grace period; stopping it");
        }
    }
}

impl Drop for Run {
    /// Whatever way the run ends (a shutdown, its supervisor aborted), its
    /// tasks end with it.
    fn drop(&mut self) {
        for task in &self.serving {
            task.abort();
        }
        if let Some(job) = &self.job_task {
            job.abort();
        }
    }
}

/// How `component` is health-checked, if it is: by its spec's `health`
/// (a path, or the export), or with default settings when it exports
/// `shoal:workload/health` and the spec says nothing. Jobs are not checked.
fn probe_of(
    spec: &shoal_api::ComponentSpec,
    component: &LoadedComponent,
) -> Result<Option<(Probe, HealthSpec)>, String> {
    if spec.kind == ComponentKind::Job {
        return Ok(None);
    }
    match &spec.health {
        Some(health) => match &health.path {
            Some(path) => Ok(Some((Probe::Path(path.clone()), health.clone()))),
            None if component.exports_health() => Ok(Some((Probe::Export, health.clone()))),
            None => Err(
                "its spec sets `health` but it exports no shoal:workload/health: export one with shoal_sdk::export_health!, or give an http component a health.path"
                    .into(),
            ),
        },
        None if component.exports_health() => Ok(Some((Probe::Export, HealthSpec::defaults()))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_resets_after_a_long_run() {
        let mut b = Backoff::default();
        let quick = Duration::from_millis(10);
        assert_eq!(b.next(quick), RESTART_BACKOFF_FIRST);
        assert_eq!(b.next(quick), RESTART_BACKOFF_FIRST * 2);
        assert_eq!(b.next(quick), RESTART_BACKOFF_FIRST * 4);
        for _ in 0..40 {
            assert!(b.next(quick) <= RESTART_BACKOFF_MAX);
        }
        assert_eq!(b.next(quick), RESTART_BACKOFF_MAX);
        assert_eq!(b.next(RESTART_BACKOFF_RESET), RESTART_BACKOFF_FIRST);
    }
}
