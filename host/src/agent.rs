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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use shoal_api::subjects::{self, COMPONENTS_BUCKET, headers};
use shoal_api::wire::{
    Capacity, CommandReply, HEARTBEAT_INTERVAL, Heartbeat, HostCommand, HostId, PodComponent,
    ReplicaId, ReplicaState, ReplicaStatus, StartReplica,
};
use shoal_api::{ComponentKind, Digest, Name, VolumeScope};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::Message;
use crate::capabilities::keyvalue::Bucket;
use crate::capabilities::secrets::SecretGrant;
use crate::capabilities::volumes::{Mount, VolumeQuota};
use crate::capabilities::{ClusterLink, Grants};
use crate::component::{ComponentSettings, LoadedComponent};
use crate::http::serve;
use crate::ingress::IngressRoutes;
use crate::runtime::Runtime;

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

/// One replica on this host.
struct Replica {
    revision: u64,
    memory: u64,
    state: ReplicaState,
    /// Loading, then serving: aborted on stop.
    tasks: Vec<JoinHandle<()>>,
}

/// What the agent's tasks share.
struct Agent {
    config: HostConfig,
    nats: async_nats::Client,
    runtime: Arc<Runtime>,
    replicas: Mutex<HashMap<ReplicaId, Replica>>,
    routes: Arc<IngressRoutes>,
    http: Option<String>,
    started_at_ms: u64,
    beat: Notify,
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

    fn replicas(&self) -> MutexGuard<'_, HashMap<ReplicaId, Replica>> {
        self.replicas.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn heartbeat(&self) -> Heartbeat {
        let running: std::collections::HashSet<ReplicaId> = self
            .replicas()
            .iter()
            .filter(|(_, r)| matches!(r.state, ReplicaState::Running))
            .map(|(id, _)| id.clone())
            .collect();
        let routes = self.routes.advertised(&|id| running.contains(id));
        let mut replicas: Vec<ReplicaStatus> = self
            .replicas()
            .iter()
            .map(|(id, r)| ReplicaStatus {
                id: id.clone(),
                revision: r.revision,
                memory: r.memory,
                state: r.state.clone(),
            })
            .collect();
        replicas.sort_by(|a, b| a.id.cmp(&b.id));
        Heartbeat {
            host: self.config.id.clone(),
            labels: self.config.labels.clone(),
            capacity: self.config.capacity,
            http: self.http.clone(),
            started_at_ms: self.started_at_ms,
            replicas,
            routes,
        }
    }

    fn set_state(&self, id: &ReplicaId, revision: u64, state: ReplicaState) {
        if let Some(r) = self.replicas().get_mut(id)
            && r.revision == revision
        {
            r.state = state;
        }
        self.beat.notify_one();
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
            buckets: Mutex::default(),
            quotas: Mutex::default(),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tasks.spawn(heartbeats(agent.clone(), stop_rx.clone()));
        tasks.spawn(take_commands(agent.clone(), commands, stop_rx.clone()));
        tasks.spawn(watch_peers(agent.clone(), peers, stop_rx.clone()));
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
                r.tasks.iter().for_each(JoinHandle::abort);
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

async fn heartbeats(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let subject = subjects::heartbeat(agent.config.id.as_str());
    loop {
        let hb = agent.heartbeat();
        match serde_json::to_vec(&hb) {
            Ok(payload) => {
                // While NATS is away this fails; replicas keep running and
                // the next beat after reconnecting reports in.
                if let Err(e) = agent.nats.publish(subject.clone(), payload.into()).await {
                    tracing::debug!(error = %e, "heartbeat not sent");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot encode the heartbeat"),
        }
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
            Ok(HostCommand::Stop { id }) => {
                stop_replica(&agent, &id);
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
    {
        let replicas = agent.replicas();
        if let Some(existing) = replicas.get(&start.id)
            && existing.revision == start.revision
            && !matches!(existing.state, ReplicaState::Failed { .. })
        {
            return CommandReply::Ok;
        }
    }
    // A new revision replaces the old one in place.
    stop_replica(agent, &start.id);
    let id = start.id.clone();
    let revision = start.revision;
    let task = tokio::spawn(run_replica(agent.clone(), start.clone()));
    agent.replicas().insert(
        id,
        Replica {
            revision,
            memory: start.memory(),
            state: ReplicaState::Starting,
            tasks: vec![task],
        },
    );
    agent.beat.notify_one();
    CommandReply::Ok
}

fn stop_replica(agent: &Agent, id: &ReplicaId) {
    if let Some(r) = agent.replicas().remove(id) {
        r.tasks.iter().for_each(JoinHandle::abort);
        tracing::info!(replica = %id, "replica stopped");
    }
    agent.routes.remove(id);
    // Pod-scoped volumes go with the pod.
    let pod_dir = agent.pod_dir(id);
    if pod_dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&pod_dir)
    {
        tracing::warn!(replica = %id, error = %e, "cannot remove the pod's scratch volumes");
    }
    agent.beat.notify_one();
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

/// Loads every component of the replica, then serves them until aborted.
async fn run_replica(agent: Arc<Agent>, start: StartReplica) {
    let id = start.id.clone();
    let mut loaded = Vec::new();
    for component in &start.components {
        match load(&agent, &start, component).await {
            Ok(c) => loaded.push((component, c)),
            Err(reason) => {
                tracing::warn!(replica = %id, component = %component.name, %reason, "replica failed to start");
                agent.set_state(&id, start.revision, ReplicaState::Failed { reason });
                return;
            }
        }
    }
    let mut serving = Vec::new();
    for (component, c) in loaded {
        match component.spec.kind {
            ComponentKind::Worker => {
                if component.spec.queue.is_some() {
                    serving.push(tokio::spawn(crate::queue::consume(
                        agent.nats.clone(),
                        id.clone(),
                        component.name.clone(),
                        c.clone(),
                        component.spec.max_deliver,
                    )));
                }
                let subject = subjects::invoke(&id.namespace, &id.app, &component.name);
                let group = subjects::invoke_queue_group(&id.namespace, &id.app, &component.name);
                match agent.nats.queue_subscribe(subject.clone(), group).await {
                    Ok(sub) => serving.push(tokio::spawn(serve_invocations(
                        agent.nats.clone(),
                        c,
                        sub,
                        id.to_string(),
                    ))),
                    Err(e) => {
                        let reason = format!("cannot subscribe to {subject}: {e}");
                        agent.set_state(&id, start.revision, ReplicaState::Failed { reason });
                        return;
                    }
                }
            }
            ComponentKind::Http => {
                let route = component.spec.route.as_deref().unwrap_or("/");
                let subject = subjects::http(&id.namespace, &id.app, &component.name);
                let group = subjects::invoke_queue_group(&id.namespace, &id.app, &component.name);
                match agent.nats.queue_subscribe(subject.clone(), group).await {
                    Ok(sub) => serving.push(tokio::spawn(crate::forward::serve_forwarded(
                        agent.nats.clone(),
                        c.clone(),
                        sub,
                        id.to_string(),
                        agent.config.id.to_string(),
                    ))),
                    Err(e) => {
                        let reason = format!("cannot subscribe to {subject}: {e}");
                        agent.set_state(&id, start.revision, ReplicaState::Failed { reason });
                        return;
                    }
                }
                agent.routes.add(
                    route,
                    component.spec.host.as_deref(),
                    &id,
                    &component.name,
                    c,
                );
            }
            ComponentKind::Job => {
                serving.push(tokio::spawn(async move {
                    if let Err(e) = c.run_job().await {
                        tracing::warn!(component = c.name(), error = %e, "job failed");
                    }
                }));
            }
        }
    }
    if let Some(r) = agent.replicas().get_mut(&id)
        && r.revision == start.revision
    {
        r.tasks.extend(serving);
    }
    tracing::info!(replica = %id, revision = start.revision, "replica running");
    agent.set_state(&id, start.revision, ReplicaState::Running);
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
        env: Arc::new(spec.env.clone().into_iter().collect()),
        secrets: Arc::new(SecretGrant {
            listed: spec.secrets.clone(),
            values: component.secrets.clone(),
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

/// Fetches (or reuses) a component's bytes and loads it.
async fn load(
    agent: &Agent,
    start: &StartReplica,
    component: &PodComponent,
) -> Result<Arc<LoadedComponent>, String> {
    let bytes = fetch(agent, &component.digest).await?;
    let settings = ComponentSettings {
        kind: Some(component.spec.kind),
        limits: component.spec.limits,
        grants: grants(agent, start, component)?,
    };
    let runtime = agent.runtime.clone();
    let name = component.name.to_string();
    tokio::task::spawn_blocking(move || runtime.load(&name, &bytes, settings))
        .await
        .map_err(|e| format!("loading panicked: {e}"))?
        .map_err(|e| e.to_string())
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

/// Serves invocations of one worker replica until aborted.
async fn serve_invocations(
    nats: async_nats::Client,
    component: Arc<LoadedComponent>,
    mut sub: async_nats::Subscriber,
    replica: String,
) {
    while let Some(msg) = sub.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let component = component.clone();
        let nats = nats.clone();
        let replica = replica.clone();
        tokio::spawn(async move {
            let message = Message {
                subject: msg.subject.to_string(),
                headers: headers::to_pairs(msg.headers.as_ref()),
                payload: msg.payload.to_vec(),
            };
            let (mut out, payload) = match component.invoke(message).await {
                Ok((reply, _)) => (headers::from_pairs(&reply.headers), reply.payload),
                Err(err) => {
                    let mut out = async_nats::HeaderMap::new();
                    out.insert(headers::ERROR, err.label());
                    (out, err.to_string().into_bytes())
                }
            };
            out.insert(headers::REPLICA, replica.as_str());
            if let Err(e) = nats
                .publish_with_headers(reply_to, out, payload.into())
                .await
            {
                tracing::debug!(error = %e, "reply not sent");
            }
        });
    }
}
