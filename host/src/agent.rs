//! The host agent: the host's side of the cluster protocol over NATS.
//!
//! It heartbeats every [`HEARTBEAT_INTERVAL`] (and at once after any
//! change) with its capacity, labels and replicas; takes start and stop
//! commands by request/reply; fetches component bytes from the JetStream
//! object store into a local cache; and serves its replicas: workers on
//! their invoke subject in a queue group, http components behind the
//! host's ingress. Replicas keep running while NATS or the scheduler is
//! away; async-nats reconnects and resubscribes, and the next heartbeat
//! reports in.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use shoal_api::subjects::{self, COMPONENTS_BUCKET};
use shoal_api::wire::{
    Capacity, CommandReply, DormantRoutes, HEARTBEAT_INTERVAL, Heartbeat, HostCommand, HostId,
    PodComponent, ReplicaId, ReplicaState, ReplicaStatus, StartReplica,
};
use shoal_api::{Digest, Name, SealingKey, VolumeScope};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::capabilities::keyvalue::Bucket;
use crate::capabilities::secrets::SecretGrant;
use crate::capabilities::volumes::{Mount, VolumeQuota};
use crate::capabilities::{ClusterLink, Grants};
use crate::component::{ComponentSettings, LoadedComponent};
use crate::http::serve;
use crate::ingress::IngressRoutes;
use crate::runtime::Runtime;
use crate::supervisor::{CopyKey, supervise};
use crate::tunables::{DRAIN_HANDOFF, DRAIN_LIMIT};

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

/// One replica copy on this host, as its supervisor keeps it.
pub(crate) struct Replica {
    /// The memory it reserves.
    pub memory: u64,
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
    pub(crate) busy_at_beat: (u64, std::time::Instant),
    /// Set (or dropped) to stop it gracefully.
    stop: watch::Sender<bool>,
    /// Its supervisor: aborted when the host shuts down.
    task: JoinHandle<()>,
}

impl Replica {
    /// Invocations in flight on average since the previous call, in
    /// thousandths: busy time over wall time.
    fn load_milli(&mut self, now: std::time::Instant) -> u32 {
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
    /// Shutting down: announced in heartbeats, and no new replica starts.
    draining: AtomicBool,
    /// Each app's key-value bucket, opened once per host.
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
    /// Each writable volume directory's size limit, shared by its users.
    quotas: Mutex<HashMap<PathBuf, Arc<VolumeQuota>>>,
}

impl Agent {
    /// Where an app-scoped volume lives on this host.
    fn app_volume(&self, namespace: &Name, app: &Name, volume: &Name) -> PathBuf {
        self.config
            .data_dir
            .join("volumes")
            .join(namespace.as_str())
            .join(app.as_str())
            .join(volume.as_str())
    }

    /// Where a replica's pod-scoped volumes live on this host.
    fn pod_dir(&self, id: &ReplicaId) -> PathBuf {
        self.config
            .data_dir
            .join("pods")
            .join(id.namespace.as_str())
            .join(id.app.as_str())
            .join(format!("{}-{}", id.pod, id.index))
    }

    fn bucket(&self, namespace: &Name, app: &Name) -> Arc<Bucket> {
        let name = subjects::app_bucket(namespace, app);
        self.buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Bucket::new(self.nats.clone(), name)))
            .clone()
    }

    fn replicas(&self) -> MutexGuard<'_, HashMap<CopyKey, Replica>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes one copy's bookkeeping, if it is still here, and reports in.
    pub(crate) fn update(&self, key: &CopyKey, change: impl FnOnce(&mut Replica)) {
        if let Some(r) = self.replicas().get_mut(key) {
            change(r);
        }
        self.beat.notify_one();
    }

    fn heartbeat(&self) -> Heartbeat {
        let routes = self.routes.advertised();
        let now = std::time::Instant::now();
        let mut replicas: Vec<ReplicaStatus> = self
            .replicas()
            .iter_mut()
            .map(|((id, revision), r)| ReplicaStatus {
                id: id.clone(),
                revision: *revision,
                memory: r.memory,
                state: r.state.clone(),
                ready: r.ready,
                restarts: r.restarts,
                last_error: r.last_error.clone(),
                load_milli: r.load_milli(now),
            })
            .collect();
        replicas.sort_by(|a, b| (&a.id, a.revision).cmp(&(&b.id, b.revision)));
        Heartbeat {
            host: self.config.id.clone(),
            labels: self.config.labels.clone(),
            capacity: self.config.capacity,
            http: self.http.clone(),
            started_at_ms: self.started_at_ms,
            replicas,
            routes,
            draining: self.draining.load(Ordering::Relaxed),
            seal_key: Some(self.config.sealing_key.public_key()),
        }
    }
}

/// A running host agent.
pub struct HostAgent {
    http: Option<SocketAddr>,
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
        let components_dir = config.data_dir.join("components");
        std::fs::create_dir_all(&components_dir).map_err(|source| AgentError::DataDir {
            dir: components_dir.clone(),
            source,
        })?;
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
        let routes = Arc::new(IngressRoutes::clustered(config.id.clone(), nats.clone()));
        let peers = nats
            .subscribe(subjects::ALL_HEARTBEATS)
            .await
            .map_err(|e| AgentError::Subscribe {
                subject: subjects::ALL_HEARTBEATS.into(),
                reason: e.to_string(),
            })?;
        let dormant = nats
            .subscribe(subjects::DORMANT_ROUTES)
            .await
            .map_err(|e| AgentError::Subscribe {
                subject: subjects::DORMANT_ROUTES.into(),
                reason: e.to_string(),
            })?;
        let agent = Arc::new(Agent {
            config,
            nats,
            runtime,
            replicas: Mutex::new(HashMap::new()),
            routes,
            http: http.map(|a| a.to_string()),
            started_at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            beat: Notify::new(),
            draining: AtomicBool::new(false),
            buckets: Mutex::default(),
            quotas: Mutex::default(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let leaving = agent.clone();
        tasks.spawn(async move {
            shutdown.await;
            drain(&leaving).await;
            let _ = stop_tx.send(true);
        });
        tasks.spawn(heartbeats(agent.clone(), stop_rx.clone()));
        tasks.spawn(take_commands(agent.clone(), commands, stop_rx.clone()));
        tasks.spawn(watch_peers(agent.clone(), peers, stop_rx.clone()));
        tasks.spawn(watch_dormant(agent.clone(), dormant, stop_rx.clone()));
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
        Ok(HostAgent { http, tasks })
    }

    /// Where the HTTP ingress listens.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http
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
    publish_heartbeat(agent).await;
    // Alone in the cluster, there is nowhere to hand over to.
    if agent.routes.has_live_peers() {
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
    publish_heartbeat(agent).await;
    let _ = agent.nats.flush().await;
}

/// Publishes one heartbeat now. While NATS is away this fails; replicas
/// keep running and the next beat after reconnecting reports in.
async fn publish_heartbeat(agent: &Agent) {
    let subject = subjects::heartbeat(agent.config.id.as_str());
    match serde_json::to_vec(&agent.heartbeat()) {
        Ok(payload) => {
            if let Err(e) = agent.nats.publish(subject, payload.into()).await {
                tracing::debug!(error = %e, "heartbeat not sent");
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot encode the heartbeat"),
    }
}

async fn heartbeats(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    loop {
        publish_heartbeat(&agent).await;
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_INTERVAL) => {},
            () = agent.beat.notified() => {},
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// The next message, or `None` once the subscription ends or `stop` is set.
async fn next_or_stop(
    sub: &mut async_nats::Subscriber,
    stop: &mut watch::Receiver<bool>,
) -> Option<async_nats::Message> {
    tokio::select! {
        msg = sub.next() => msg,
        _ = stop.wait_for(|s| *s) => None,
    }
}

/// Learns from the scheduler which routes belong to components scaled to zero.
async fn watch_dormant(
    agent: Arc<Agent>,
    mut announcements: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(msg) = next_or_stop(&mut announcements, &mut stop).await {
        if let Ok(dormant) = serde_json::from_slice::<DormantRoutes>(&msg.payload) {
            agent.routes.observe_dormant(dormant);
        }
    }
}

/// Learns from other hosts' heartbeats which routes they serve.
async fn watch_peers(
    agent: Arc<Agent>,
    mut heartbeats: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(msg) = next_or_stop(&mut heartbeats, &mut stop).await {
        if let Ok(hb) = serde_json::from_slice::<Heartbeat>(&msg.payload) {
            agent.routes.observe(&hb);
        }
    }
}

async fn take_commands(
    agent: Arc<Agent>,
    mut commands: async_nats::Subscriber,
    mut stop: watch::Receiver<bool>,
) {
    while let Some(msg) = next_or_stop(&mut commands, &mut stop).await {
        let reply = match serde_json::from_slice::<HostCommand>(&msg.payload) {
            Ok(HostCommand::Start(start)) => start_replica(&agent, start),
            Ok(HostCommand::Stop { id, revision }) => {
                stop_replica(&agent, &id, revision);
                CommandReply::Ok
            }
            Ok(HostCommand::Forget {
                namespace,
                app,
                retain,
            }) => forget_app(&agent, &namespace, &app, &retain),
            Err(e) => CommandReply::Failed {
                reason: format!("malformed command: {e}"),
            },
        };
        if let (Some(reply_to), Ok(payload)) = (msg.reply, serde_json::to_vec(&reply)) {
            let _ = agent.nats.publish(reply_to, payload.into()).await;
        }
    }
}

fn start_replica(agent: &Arc<Agent>, start: StartReplica) -> CommandReply {
    if agent.draining.load(Ordering::Relaxed) {
        return CommandReply::Failed {
            reason: format!("host {} is shutting down", agent.config.id),
        };
    }
    let key: CopyKey = (start.id.clone(), start.revision);
    {
        let replicas = agent.replicas();
        if let Some(existing) = replicas.get(&key)
            && !matches!(existing.state, ReplicaState::Failed { .. })
        {
            return CommandReply::Ok;
        }
    }
    // A failed copy at the same revision is replaced; copies at other
    // revisions keep running until the scheduler stops them.
    stop_copy(agent, &key);
    let (stop, stopped) = watch::channel(false);
    let memory = start.memory();
    let task = tokio::spawn(supervise(agent.clone(), start, stopped));
    agent.replicas().insert(
        key,
        Replica {
            memory,
            state: ReplicaState::Starting,
            ready: false,
            restarts: 0,
            last_error: None,
            components: Vec::new(),
            busy_at_beat: (0, std::time::Instant::now()),
            stop,
            task,
        },
    );
    agent.beat.notify_one();
    CommandReply::Ok
}

/// Stops the copies of `id` at `revision`, or every copy.
fn stop_replica(agent: &Arc<Agent>, id: &ReplicaId, revision: Option<u64>) {
    let keys: Vec<CopyKey> = agent
        .replicas()
        .keys()
        .filter(|(i, r)| i == id && revision.is_none_or(|want| *r == want))
        .cloned()
        .collect();
    for key in keys {
        stop_copy(agent, &key);
    }
}

/// Stops one copy gracefully: its supervisor takes it out of rotation and
/// lets its work finish in the background, while this host already stops
/// reporting it. Pod-scoped volumes go with the last copy of the pod.
fn stop_copy(agent: &Arc<Agent>, key: &CopyKey) {
    let Some(r) = agent.replicas().remove(key) else {
        return;
    };
    agent.routes.remove(&key.0, key.1);
    let _ = r.stop.send(true);
    tracing::info!(replica = %key.0, revision = key.1, "replica stopping");
    agent.beat.notify_one();
    let agent = agent.clone();
    let id = key.0.clone();
    tokio::spawn(async move {
        let _ = r.task.await;
        let still_here = agent.replicas().keys().any(|(i, _)| i == &id);
        let pod_dir = agent.pod_dir(&id);
        if !still_here
            && pod_dir.exists()
            && let Err(e) = std::fs::remove_dir_all(&pod_dir)
        {
            tracing::warn!(replica = %id, error = %e, "cannot remove the pod's scratch volumes");
        }
        tracing::info!(replica = %id, "replica stopped");
    });
}

/// Removes a deleted app's volumes from this host, but those it retains.
fn forget_app(agent: &Agent, namespace: &Name, app: &Name, retain: &[Name]) -> CommandReply {
    let dir = agent
        .config
        .data_dir
        .join("volumes")
        .join(namespace.as_str())
        .join(app.as_str());
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return CommandReply::Ok;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if retain.iter().any(|r| r.as_str() == name) {
            continue;
        }
        if let Err(e) = std::fs::remove_dir_all(entry.path()) {
            return CommandReply::Failed {
                reason: format!("cannot remove volume {name} of {namespace}/{app}: {e}"),
            };
        }
        tracing::info!(%namespace, %app, volume = name, "volume removed with its app");
    }
    CommandReply::Ok
}

/// What `component` of `start` is granted on this host.
fn grants(agent: &Agent, start: &StartReplica, component: &PodComponent) -> Result<Grants, String> {
    let id = &start.id;
    let spec = &component.spec;
    let mut mounts = Vec::new();
    for mount in &spec.volumes {
        let scope = start
            .volumes
            .get(&mount.name)
            .map(|v| v.scope)
            .unwrap_or_default();
        let host = match scope {
            VolumeScope::App => agent.app_volume(&id.namespace, &id.app, &mount.name),
            VolumeScope::Pod => agent.pod_dir(id).join(mount.name.as_str()),
        };
        std::fs::create_dir_all(&host).map_err(|e| {
            format!(
                "cannot create volume {} at {}: {e}",
                mount.name,
                host.display()
            )
        })?;
        let quota = (!mount.read_only).then(|| {
            let size = start
                .volumes
                .get(&mount.name)
                .map(|v| v.size.as_u64())
                .unwrap_or(u64::MAX);
            agent
                .quotas
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(host.clone())
                .or_insert_with(|| Arc::new(VolumeQuota::new(&host, size)))
                .clone()
        });
        mounts.push(Mount {
            host,
            guest: mount.path.clone(),
            read_only: mount.read_only,
            quota,
        });
    }
    Ok(Grants {
        config: Arc::new(spec.config.clone()),
        env: Arc::new(
            spec.env
                .clone()
                .into_iter()
                .chain([
                    // Like a pod's hostname: which replica and host this is.
                    ("SHOAL_REPLICA".to_string(), id.to_string()),
                    ("SHOAL_HOST".to_string(), agent.config.id.to_string()),
                ])
                .collect(),
        ),
        secrets: Arc::new(SecretGrant {
            listed: spec.secrets.clone(),
            values: component
                .secrets
                .iter()
                .map(|(name, sealed)| {
                    sealed
                        .open(&id.namespace, name, &agent.config.sealing_key)
                        .map(|value| (name.clone(), value))
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?,
        }),
        messaging: spec.messaging.clone(),
        keyvalue: spec
            .keyvalue
            .as_ref()
            .map(|_| agent.bucket(&id.namespace, &id.app)),
        allowed_hosts: Arc::new(spec.allowed_hosts.clone()),
        volumes: Arc::new(mounts),
        cluster: Some(ClusterLink {
            nats: agent.nats.clone(),
            namespace: id.namespace.clone(),
            app: id.app.clone(),
        }),
    })
}

impl Agent {
    /// Fetches (or reuses) a component's bytes and loads it.
    pub(crate) async fn load(
        &self,
        start: &StartReplica,
        component: &PodComponent,
    ) -> Result<Arc<LoadedComponent>, String> {
        let bytes = fetch(self, &component.digest).await?;
        let settings = ComponentSettings {
            kind: Some(component.spec.kind),
            limits: component.spec.limits,
            grants: grants(self, start, component)?,
        };
        let runtime = self.runtime.clone();
        let name = component.name.to_string();
        tokio::task::spawn_blocking(move || runtime.load(&name, &bytes, settings))
            .await
            .map_err(|e| format!("loading panicked: {e}"))?
            .map_err(|e| e.to_string())
    }
}

/// The component's bytes: from the local cache, else the object store.
async fn fetch(agent: &Agent, digest: &Digest) -> Result<Vec<u8>, String> {
    let path = agent
        .config
        .data_dir
        .join("components")
        .join(format!("{}.wasm", digest.to_hex()));
    if let Ok(bytes) = tokio::fs::read(&path).await
        && Digest::of(&bytes) == *digest
    {
        return Ok(bytes);
    }
    let js = async_nats::jetstream::new(agent.nats.clone());
    let store = js
        .get_object_store(COMPONENTS_BUCKET)
        .await
        .map_err(|e| format!("cannot open the component store: {e}"))?;
    let mut object = store
        .get(digest.to_hex())
        .await
        .map_err(|e| format!("cannot fetch component {digest}: {e}"))?;
    let mut bytes = Vec::new();
    object
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot fetch component {digest}: {e}"))?;
    if Digest::of(&bytes) != *digest {
        return Err(format!("component {digest} arrived corrupted"));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    if tokio::fs::write(&tmp, &bytes).await.is_ok() {
        let _ = tokio::fs::rename(&tmp, &path).await;
    }
    Ok(bytes)
}
