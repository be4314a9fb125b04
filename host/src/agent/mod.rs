//! The host agent: the host's side of the cluster protocol over NATS.
//!
//! It heartbeats every [`HEARTBEAT_INTERVAL`](shoal_api::wire::HEARTBEAT_INTERVAL)
//! (and at once after any change) with its capacity, labels and replicas
//! (`heartbeat`); takes start and stop commands by request/reply
//! (`commands`); fetches component bytes from the JetStream object store
//! into a local copy (`artifacts`); and serves its replicas, each under a
//! supervisor: workers on their invoke subject in a queue group, http
//! components behind the host's ingress. Replicas keep running while NATS
//! or the scheduler is away; async-nats reconnects and resubscribes, and
//! the next heartbeat reports in.

mod artifacts;
mod commands;
mod heartbeat;
mod routes;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use shoal_api::SealingKey;
use shoal_api::subjects;
use shoal_api::wire::{Capacity, HostId, PodComponent, ReplicaId, StartReplica};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::capabilities::{GrantContext, HostContext, Registry};
use crate::component::{ComponentSettings, LoadedComponent};
use crate::coredumps::DumpStore;
use crate::http::serve;
use crate::ingress::IngressRoutes;
use crate::layout::DataLayout;
use crate::log_shipper::{LogShipper, ReplicaLog};
use crate::logs::LogSink;
use crate::metrics::HostMetrics;
use crate::runtime::Runtime;
use crate::supervisor::{CopyKey, CopyStatus, ReplicaHost};
use crate::tunables::{DRAIN_HANDOFF, DRAIN_LIMIT, DRAIN_NATS_WAIT};

/// How a host presents itself to the cluster.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Its id.
    pub id: HostId,
    /// Labels placement matches against.
    pub labels: std::collections::BTreeMap<String, String>,
    /// What it offers.
    pub capacity: Capacity,
    /// Where component bytes are cached.
    pub data_dir: PathBuf,
    /// Where the HTTP ingress listens, if anywhere.
    pub http_addr: Option<SocketAddr>,
    /// Where `/metrics` is served, if anywhere (never on the ingress).
    pub metrics_addr: Option<SocketAddr>,
    /// The key pair secrets for this host are sealed to
    /// ([`crate::keyfile::sealing_key`]).
    pub sealing_key: Arc<SealingKey>,
}

/// Why a host agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// NATS refused a subscription.
    #[error("cannot subscribe to {subject}: {reason}")]
    Subscribe {
        /// The subject.
        subject: String,
        /// Why.
        reason: String,
    },
    /// The ingress could not listen.
    #[error("cannot listen for HTTP on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The cache directory could not be created.
    #[error("cannot create {dir}: {source}")]
    DataDir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One replica copy on this host.
pub(crate) struct Replica {
    /// The memory it reserves.
    pub memory: u64,
    /// How it is doing, as its supervisor reports.
    pub status: CopyStatus,
    /// Set (or dropped) to stop it gracefully.
    pub(super) stop: watch::Sender<bool>,
    /// Its supervisor: aborted when the host shuts down.
    pub(super) task: JoinHandle<()>,
}

/// What the agent's tasks share.
pub(crate) struct Agent {
    pub(crate) config: HostConfig,
    pub(crate) nats: async_nats::Client,
    runtime: Arc<Runtime>,
    replicas: Mutex<HashMap<CopyKey, Replica>>,
    pub(crate) routes: Arc<IngressRoutes>,
    http: Option<String>,
    started_at_ms: u64,
    beat: Notify,
    /// What the beats sent so far told, to send only changes.
    beats: Mutex<shoal_api::beats::BeatWriter>,
    /// Shutting down: announced in heartbeats, and no new replica starts.
    draining: AtomicBool,
    /// Every capability, with what each keeps host-wide.
    pub(crate) registry: Arc<Registry>,
    /// Where this host keeps its data.
    layout: DataLayout,
    /// Ships replicas' log lines to JetStream.
    pub(crate) logs: Arc<LogShipper>,
    /// What `/metrics` shows.
    pub(crate) metrics: Arc<HostMetrics>,
    /// Core dumps of replicas that keep them.
    pub(crate) dumps: Arc<DumpStore>,
    /// The newest scheduler lease epoch seen: commands from older ones
    /// are refused.
    epoch: AtomicU64,
}

impl Agent {
    fn replicas(&self) -> MutexGuard<'_, HashMap<CopyKey, Replica>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The memory this host's replicas reserve.
    fn used_memory(&self) -> u64 {
        self.replicas().values().map(|r| r.memory).sum()
    }

    /// Sends a snapshot of every replica in the next beat, soon.
    fn want_snapshot(&self) {
        self.beats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .want_snapshot();
        self.beat.notify_one();
    }

    /// Takes note of a scheduler's lease epoch. Refuses (with the newest
    /// seen) one older than an epoch seen before.
    fn see_epoch(&self, epoch: u64) -> Result<(), u64> {
        let before = self.epoch.fetch_max(epoch, Ordering::AcqRel);
        if epoch < before {
            return Err(before);
        }
        if epoch > before {
            tracing::info!(epoch, "a scheduler leads with a new lease epoch");
            // A new leader acts on what it knows of every host: it gets
            // the whole picture at once.
            self.want_snapshot();
        }
        Ok(())
    }
}

impl ReplicaHost for Agent {
    fn id(&self) -> &HostId {
        &self.config.id
    }

    fn nats(&self) -> &async_nats::Client {
        &self.nats
    }

    fn routes(&self) -> &IngressRoutes {
        &self.routes
    }

    /// Changes one copy's bookkeeping, if it is still here, and reports in.
    fn update(&self, key: &CopyKey, change: impl FnOnce(&mut CopyStatus)) {
        if let Some(r) = self.replicas().get_mut(key) {
            change(&mut r.status);
        }
        self.beat.notify_one();
    }

    fn replica_log(&self, replica: &ReplicaId, incarnation: u32) -> ReplicaLog {
        self.logs.replica(replica, incarnation)
    }

    /// Fetches (or reuses) a component's bytes, and the code the cluster
    /// compiled from them when this host has none yet; grants it what its
    /// spec asks for on this host, and loads it. Granting and loading run
    /// on a blocking thread: both touch the filesystem.
    async fn load(
        &self,
        start: &StartReplica,
        component: &PodComponent,
        log_sink: Arc<dyn LogSink>,
    ) -> Result<Arc<LoadedComponent>, String> {
        let bytes = artifacts::fetch(&self.nats, &self.layout, &component.digest).await?;
        let cache = self.runtime.cache();
        let compiled = if cache.has_entry(&component.digest) {
            None
        } else {
            artifacts::fetch_compiled(&self.nats, &component.digest, &cache.engine_id()).await
        };
        let (runtime, registry) = (self.runtime.clone(), self.registry.clone());
        let (start, component) = (start.clone(), component.clone());
        let metrics = self.metrics.component(&start.id, component.name.as_str());
        let coredumps = component.spec.debug.as_ref().map_or(0, |d| d.coredumps);
        let dumps = self.dumps.sink(&start.id, &component.name, coredumps);
        tokio::task::spawn_blocking(move || {
            if let Some(artifact) = compiled {
                let digest = &component.digest;
                match runtime.cache().import(runtime.engine(), digest, &artifact) {
                    Ok(()) => tracing::info!(
                        component = %component.name,
                        digest = %digest.short(),
                        "took the code the cluster compiled"
                    ),
                    Err(e) => tracing::warn!(
                        component = %component.name,
                        digest = %digest.short(),
                        "the code the cluster compiled is refused ({e}); compiling here"
                    ),
                }
            }
            let grants = registry
                .grant(&GrantContext {
                    component: component.name.as_str(),
                    spec: &component.spec,
                    replica: Some(&start.id),
                    volumes: &start.volumes,
                    secrets: &component.secrets,
                })
                .map_err(|e| e.to_string())?;
            let settings = ComponentSettings {
                kind: Some(component.spec.kind),
                limits: component.spec.limits,
                grants,
                log_sink: Some(log_sink),
                metrics: Some(metrics),
                dumps,
            };
            runtime
                .load(component.name.as_str(), &bytes, settings)
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| format!("loading panicked: {e}"))?
    }
}

/// A running host agent.
pub struct HostAgent {
    http: Option<SocketAddr>,
    metrics: Option<SocketAddr>,
    tasks: tokio::task::JoinSet<()>,
}

impl HostAgent {
    /// Starts heartbeating, taking commands and (with an `http_addr`)
    /// serving HTTP. Everything stops when `shutdown` completes; the
    /// replicas stop with it.
    pub async fn start(
        nats: async_nats::Client,
        runtime: Arc<Runtime>,
        config: HostConfig,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<HostAgent, AgentError> {
        let layout = DataLayout::new(config.data_dir.clone());
        let components_dir = layout.components();
        std::fs::create_dir_all(&components_dir).map_err(|source| AgentError::DataDir {
            dir: components_dir.clone(),
            source,
        })?;
        let registry = Arc::new(Registry::new(Some(&HostContext {
            id: config.id.clone(),
            nats: nats.clone(),
            layout: layout.clone(),
            sealing_key: config.sealing_key.clone(),
        })));
        let commands_subject = subjects::host_commands(config.id.as_str());
        let commands = nats
            .subscribe(commands_subject.clone())
            .await
            .map_err(|e| AgentError::Subscribe {
                subject: commands_subject,
                reason: e.to_string(),
            })?;
        let listener = match config.http_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| AgentError::Listen { addr, source })?,
            ),
            None => None,
        };
        let http = listener.as_ref().and_then(|l| l.local_addr().ok());
        let metrics_listener = match config.metrics_addr {
            Some(addr) => Some(
                crate::metrics::listen(addr)
                    .await
                    .map_err(|source| AgentError::Listen { addr, source })?,
            ),
            None => None,
        };
        let metrics_at = metrics_listener.as_ref().and_then(|l| l.local_addr().ok());
        let routes = Arc::new(IngressRoutes::clustered(config.id.clone(), nats.clone()));
        let peers = nats
            .subscribe(subjects::ALL_HEARTBEATS)
            .await
            .map_err(|e| AgentError::Subscribe {
                subject: subjects::ALL_HEARTBEATS.into(),
                reason: e.to_string(),
            })?;
        let resync_subject = subjects::host_resync(config.id.as_str());
        let resyncs =
            nats.subscribe(resync_subject.clone())
                .await
                .map_err(|e| AgentError::Subscribe {
                    subject: resync_subject,
                    reason: e.to_string(),
                })?;
        let leader = nats
            .subscribe(subjects::LEADER_ANNOUNCEMENTS)
            .await
            .map_err(|e| AgentError::Subscribe {
                subject: subjects::LEADER_ANNOUNCEMENTS.into(),
                reason: e.to_string(),
            })?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (logs, shipping) = LogShipper::start(nats.clone(), config.id.clone(), stop_rx.clone());
        let metrics = HostMetrics::new();
        let dumps = DumpStore::start(nats.clone(), config.id.clone());
        let agent = Arc::new(Agent {
            logs,
            dumps,
            metrics: metrics.clone(),
            config,
            nats,
            runtime,
            replicas: Mutex::new(HashMap::new()),
            routes,
            http: http.map(|a| a.to_string()),
            started_at_ms: shoal_api::wire::now_ms(),
            beat: Notify::new(),
            beats: Mutex::new(shoal_api::beats::BeatWriter::new()),
            draining: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            registry,
            layout,
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            let _ = shipping.await;
        });
        let leaving = agent.clone();
        tasks.spawn(async move {
            shutdown.await;
            drain(&leaving).await;
            let _ = stop_tx.send(true);
        });
        tasks.spawn(heartbeat::heartbeats(agent.clone(), stop_rx.clone()));
        tasks.spawn(heartbeat::answer_resyncs(
            agent.clone(),
            resyncs,
            stop_rx.clone(),
        ));
        tasks.spawn(commands::take_commands(
            agent.clone(),
            commands,
            stop_rx.clone(),
        ));
        tasks.spawn(commands::watch_leader(
            agent.clone(),
            leader,
            stop_rx.clone(),
        ));
        tasks.spawn(heartbeat::watch_peers(
            agent.clone(),
            peers,
            stop_rx.clone(),
        ));
        tasks.spawn(routes::follow_routes(agent.clone(), stop_rx.clone()));
        if let Some(listener) = metrics_listener {
            tasks.spawn(crate::metrics::serve(listener, metrics, stop_rx.clone()));
        }
        if let Some(listener) = listener {
            let routes = agent.routes.clone();
            let mut stop = stop_rx.clone();
            tasks.spawn(async move {
                let stopped = async move {
                    let _ = stop.wait_for(|s| *s).await;
                };
                if let Err(e) = serve(listener, routes, stopped).await {
                    tracing::error!(error = %e, "the HTTP ingress stopped");
                }
            });
        }
        let mut stop = stop_rx;
        let cleanup = agent.clone();
        tasks.spawn(async move {
            let _ = stop.wait_for(|s| *s).await;
            for (_, r) in cleanup.replicas().drain() {
                r.task.abort();
            }
        });
        tracing::info!(host = %agent.config.id, http = ?http, "host agent started");
        Ok(HostAgent {
            http,
            metrics: metrics_at,
            tasks,
        })
    }

    /// Where the HTTP ingress listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
    }

    /// Where `/metrics` is served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// Waits until every task has stopped (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Leaves the cluster without dropping work: says so (the scheduler
/// places this host's replicas elsewhere at once), keeps serving for
/// [`DRAIN_HANDOFF`] while the replacements start, then stops every replica
/// gracefully (out of its queue groups, its work in flight finished, up to
/// [`DRAIN_LIMIT`]) and reports itself empty.
async fn drain(agent: &Arc<Agent>) {
    tracing::info!(host = %agent.config.id, "draining: replicas move elsewhere, then stop");
    agent.draining.store(true, Ordering::Relaxed);
    let announced = said(agent).await;
    // Alone in the cluster, or cut off from it, there is nowhere to hand
    // over to.
    if announced && agent.routes.has_live_peers() {
        tokio::time::sleep(DRAIN_HANDOFF).await;
    }
    let copies: Vec<(CopyKey, Replica)> = agent.replicas().drain().collect();
    let mut supervisors = Vec::new();
    for ((id, revision), r) in copies {
        agent.routes.remove(&id, revision);
        let _ = r.stop.send(true);
        supervisors.push(r.task);
    }
    if tokio::time::timeout(DRAIN_LIMIT, futures::future::join_all(supervisors))
        .await
        .is_err()
    {
        tracing::warn!("replicas still busy after {DRAIN_LIMIT:?}; leaving anyway");
    }
    if !said(agent).await {
        tracing::warn!(
            "NATS is unreachable: the cluster was not told this host left; the scheduler finds it lost after its grace period and places its replicas elsewhere"
        );
    }
}

/// Publishes a heartbeat and waits until NATS has it, for at most
/// [`DRAIN_NATS_WAIT`]. False if NATS did not take it in time.
async fn said(agent: &Agent) -> bool {
    let sent = tokio::time::timeout(DRAIN_NATS_WAIT, async {
        heartbeat::publish_heartbeat(agent).await;
        agent.nats.flush().await
    })
    .await;
    matches!(sent, Ok(Ok(())))
}

/// The next message, or `None` once the subscription ends or `stop` is set.
pub(super) async fn next_or_stop(
    sub: &mut async_nats::Subscriber,
    stop: &mut watch::Receiver<bool>,
) -> Option<async_nats::Message> {
    tokio::select! {
        msg = sub.next() => msg,
        _ = stop.wait_for(|s| *s) => None,
    }
}
