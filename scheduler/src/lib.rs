//! `shoal-scheduler`: places pods on hosts over NATS and keeps them there.
//!
//! Desired state lives in JetStream ([`store::Store`]): an app per key, one
//! revision per apply, component bytes in an object store. Observed state
//! comes from host heartbeats ([`heartbeats`]). The reconciler
//! ([`reconcile::plan`]) compares the two for the apps a change queued
//! ([`workqueue`]: an apply reconciles its app, not the cluster), for every
//! app at least every [`tunables::RESYNC_INTERVAL`], and sends start and
//! stop commands to hosts by request/reply, each host in its own queue
//! ([`commands`]). Placement ([`placement::choose`]) bin-packs by
//! declared memory, honours labels, spreads over a label and keeps replicas
//! of a pod apart. A changed pod template rolls out replica by replica
//! within the pod's surge and unavailability budget, and is rolled back by
//! itself when it stalls ([`rollout`]). [`autoscale`] sizes queue workers
//! by queue depth and http components by requests in flight, from zero.
//!
//! Any number of schedulers may run: each serves the API, and the one
//! holding the leader lease ([`lease`]) reconciles, autoscales and commands
//! hosts, every command fenced by the lease's epoch. Writes to desired
//! state are compare-and-set on the KV revision, and every scheduler
//! follows the buckets with watches ([`follow`]). What the leader decides
//! and must remember is stored ([`remembered`]); nothing else is kept that
//! cannot be rebuilt from JetStream and heartbeats, so a new or restarted
//! leader picks up where the last one left off.
//!
//! Key types: [`Scheduler`] (start it with [`Scheduler::start`]),
//! [`SchedulerError`], [`lease::Leadership`].

pub mod api;
pub mod artifact;
pub mod audit;
pub mod auth;
pub mod autoscale;
pub mod canary;
pub mod commands;
pub mod compiled;
pub mod controller;
pub mod dumps;
#[cfg(test)]
mod fixtures;
pub mod follow;
pub mod heartbeats;
pub mod jetstream;
pub mod lease;
pub mod logs;
pub mod metrics;
pub mod namespaces;
pub mod placement;
pub mod reconcile;
pub mod remembered;
pub mod rollout;
pub mod route_table;
pub mod secrets;
pub mod shadow;
pub mod state;
pub mod store;
pub mod tls;
pub mod top;
pub mod tunables;
pub mod ui;
pub mod workqueue;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use shoal_api::resources::Event;
use shoal_api::{Name, subjects};
use tokio::sync::watch;

use crate::state::State;
use crate::store::Store;
use crate::tunables::STARTUP_GRACE;

/// Why the scheduler could not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchedulerError {
    /// The request is wrong; nothing changed.
    #[error("{0}")]
    Invalid(String),
    /// No such app.
    #[error("{0}")]
    NotFound(String),
    /// It exists already, or changed under us.
    #[error("{0}")]
    Conflict(String),
    /// A namespace's quota would be exceeded; nothing changed.
    #[error("{0}")]
    OverQuota(String),
    /// NATS or JetStream could not be reached; try again.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected state.
    #[error("{0}")]
    Internal(String),
}

/// How to run a scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where the HTTP API listens (port 0 picks a free one).
    pub api_addr: SocketAddr,
    /// Whether API calls need a token, and the roles tokens may hold.
    pub auth: AuthMode,
    /// Host names the API answers to, besides IP literals and `localhost`.
    pub api_names: Vec<String>,
    /// Serve the API over TLS with this configuration.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Seals secrets at rest.
    pub secret_box: secrets::SecretBox,
    /// How many copies JetStream keeps of what the scheduler stores.
    pub copies: jetstream::Copies,
    /// Compiles uploaded components once for the cluster's hosts (see
    /// [`compiled`]); without it, each host compiles for itself.
    pub compiler: Option<Arc<dyn compiled::Precompiler>>,
}

/// Whether the API authenticates its callers.
#[derive(Debug, Clone)]
pub enum AuthMode {
    /// Every call carries a token; these roles say what each may do.
    Tokens(shoal_api::access::Roles),
    /// Every call is an anonymous admin. Only for a private, local setup.
    Off,
}

/// What the scheduler's tasks share.
pub struct Shared {
    state: Mutex<State>,
    nats: async_nats::Client,
    /// JetStream, with the copies new streams keep.
    js: jetstream::JetStream,
    store: Store,
    /// Which apps the reconciler looks at next.
    queue: workqueue::WorkQueue,
    ready_at: Instant,
    access: auth::Access,
    audit: audit::AuditTrail,
    namespaces: namespaces::NamespaceStore,
    api_names: Vec<String>,
    /// Whether the API is served over TLS (the dashboard's cookie is then
    /// `Secure`).
    serves_tls: bool,
    metrics: metrics::SchedulerMetrics,
    /// Held from a quota check to the write it allows (apply, scale,
    /// rollback, secret set), so that two changes cannot each pass the
    /// check and together exceed a quota.
    writes: tokio::sync::Mutex<()>,
    /// What each stored component exports, learnt once per digest: a
    /// component's bytes never change, so neither do its exports.
    kinds: Mutex<std::collections::HashMap<shoal_api::Digest, artifact::Inspected>>,
    secret_box: secrets::SecretBox,
    /// Sends host commands without holding up the reconciler.
    commands: commands::Dispatcher,
    /// Whether this scheduler leads, and with which epoch.
    leadership: Arc<lease::Leadership>,
    /// Writes what the leader must remember.
    keeper: remembered::Keeper,
    /// Compiles uploaded components for the hosts.
    compiler: Option<Arc<dyn compiled::Precompiler>>,
    /// Turns to compile (see [`tunables::COMPILES_AT_ONCE`]).
    compiles: tokio::sync::Semaphore,
}

impl Shared {
    /// The state, even if a panicking thread poisoned the lock: every
    /// update is a whole-value write, so the data stays consistent.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the stored component `digest` exports: from memory, or read
    /// and checked once from the component store.
    async fn exports_of(
        &self,
        digest: &shoal_api::Digest,
    ) -> Result<artifact::Inspected, SchedulerError> {
        if let Some(inspected) = self
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest)
        {
            return Ok(*inspected);
        }
        let bytes = self.store.get_component(digest).await?;
        let inspected = artifact::inspect(&bytes).map_err(|why| {
            SchedulerError::Invalid(format!("stored component {digest} is {why}"))
        })?;
        self.remember_exports(*digest, inspected);
        Ok(inspected)
    }

    /// The size of each component in `digests`: from memory, or from the
    /// component store's metadata.
    async fn component_sizes(
        &self,
        digests: &[shoal_api::Digest],
    ) -> Result<std::collections::HashMap<shoal_api::Digest, u64>, SchedulerError> {
        let mut sizes = std::collections::HashMap::new();
        for digest in digests {
            if sizes.contains_key(digest) {
                continue;
            }
            let known = self
                .kinds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(digest)
                .map(|i| i.bytes);
            let size = match known {
                Some(size) => size,
                None => self.store.component_size(digest).await?,
            };
            sizes.insert(*digest, size);
        }
        Ok(sizes)
    }

    /// Records what a checked component exports.
    fn remember_exports(&self, digest: shoal_api::Digest, inspected: artifact::Inspected) {
        self.kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest, inspected);
    }

    /// Asks the reconciler for a pass over every app now.
    fn wake(&self) {
        self.queue.everything();
    }

    /// Asks the reconciler for a pass over `app` of `namespace` now.
    fn wake_app(&self, namespace: &Name, app: &Name) {
        self.queue.app(namespace, app);
    }

    /// Publishes events on their app's subject (the events stream keeps them).
    async fn publish(&self, events: &[Event]) {
        for e in events {
            if let Ok(payload) = serde_json::to_vec(e) {
                let _ = self
                    .nats
                    .publish(subjects::events(&e.namespace, &e.app), payload.into())
                    .await;
            }
        }
    }

    /// Records and publishes one event.
    async fn record(&self, e: Event) {
        self.state().remember(e.clone());
        self.publish(&[e]).await;
    }
}

/// A running scheduler.
pub struct Scheduler {
    api_addr: SocketAddr,
    tasks: tokio::task::JoinSet<()>,
    first_admin: Option<shoal_api::token::BearerToken>,
}

impl Scheduler {
    /// Opens the JetStream resources, loads desired state and events,
    /// starts listening to heartbeats, the reconciler and the HTTP API.
    /// Everything stops when `shutdown` completes.
    pub async fn start(
        nats: async_nats::Client,
        options: SchedulerOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Scheduler, SchedulerError> {
        let js = jetstream::JetStream::open(&nats, options.copies).await;
        let store = jetstream::when_ready("opening the store", || Store::open(&js)).await?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let access = match options.auth {
            AuthMode::Tokens(roles) => auth::Access::open(&js, roles, stop_rx.clone()).await?,
            AuthMode::Off => auth::Access::open_to_all(shoal_api::access::Roles::builtin()),
        };
        let first_admin = access.bootstrap().await?;
        let audit = audit::AuditTrail::open(&js).await?;
        let namespace_store = namespaces::NamespaceStore::open(&js).await?;
        // Watches first, then loads: no change in between is missed.
        let followed = [
            (store.kv.clone(), follow::Followed::Apps),
            (store.secrets.clone(), follow::Followed::Secrets),
            (
                namespace_store.bucket().clone(),
                follow::Followed::Namespaces,
            ),
            (store.control.clone(), follow::Followed::Control),
        ];
        let mut watches = Vec::new();
        for (bucket, what) in followed {
            let updates = follow::watch(&bucket, what).await?;
            watches.push((bucket, what, updates));
        }
        let mut state = State {
            namespaces: namespace_store.load().await?,
            ..State::default()
        };
        for (name, ns) in &state.namespaces {
            namespaces::ensure_storage(&js, name, &ns.spec).await?;
        }
        for app in store.load_apps().await? {
            let key = subjects::app_key(&app.stored.spec.namespace, &app.stored.spec.name);
            state.apps.insert(key, app);
        }
        for e in store.load_events().await {
            state.remember(e);
        }
        remembered::load(&store.control, &mut state).await?;
        for (key, sealed) in store.load_secrets().await? {
            match options.secret_box.open(&key, &sealed) {
                Ok(secrets::Opened::Current(value)) => {
                    state.secrets.insert(key, value);
                }
                Ok(secrets::Opened::Previous(value)) => {
                    let resealed = options
                        .secret_box
                        .seal(&key, &value)
                        .map_err(SchedulerError::Internal)?;
                    store.put_secret(&key, resealed).await?;
                    tracing::info!(secret = key, "secret re-sealed with the new key");
                    state.secrets.insert(key, value);
                }
                Err(why) => tracing::error!(secret = key, "{why}"),
            }
        }
        tracing::info!(apps = state.apps.len(), "desired state loaded");
        let heartbeats = nats
            .subscribe(subjects::ALL_HEARTBEATS)
            .await
            .map_err(|e| SchedulerError::Unavailable(format!("subscribing to heartbeats: {e}")))?;
        let activations = nats
            .subscribe(subjects::ACTIVATE)
            .await
            .map_err(|e| SchedulerError::Unavailable(format!("subscribing to activations: {e}")))?;
        let listener = tokio::net::TcpListener::bind(options.api_addr)
            .await
            .map_err(|e| {
                SchedulerError::Invalid(format!("cannot listen on {}: {e}", options.api_addr))
            })?;
        let api_addr = listener
            .local_addr()
            .map_err(|e| SchedulerError::Internal(e.to_string()))?;

        let leadership = Arc::new(lease::Leadership::new(api_addr.to_string()));
        // The grace keeps a restarted scheduler from placing again what
        // hosts it has not heard from yet still run. With no app stored
        // there is nothing any host could be running for it to duplicate:
        // a fresh cluster acts at once.
        let ready_at = if state.apps.is_empty() {
            Instant::now()
        } else {
            Instant::now() + STARTUP_GRACE
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            nats,
            js,
            store,
            queue: workqueue::WorkQueue::default(),
            ready_at,
            access,
            audit,
            namespaces: namespace_store,
            api_names: options.api_names,
            serves_tls: options.tls.is_some(),
            metrics: metrics::SchedulerMetrics::default(),
            writes: tokio::sync::Mutex::new(()),
            kinds: Mutex::default(),
            secret_box: options.secret_box,
            commands: commands::Dispatcher::default(),
            leadership: leadership.clone(),
            keeper: remembered::Keeper::default(),
            compiler: options.compiler.clone(),
            compiles: tokio::sync::Semaphore::new(tunables::COMPILES_AT_ONCE),
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        tasks.spawn(heartbeats::watch(
            shared.clone(),
            heartbeats,
            stop_rx.clone(),
        ));
        tasks.spawn(lease::run(
            leadership,
            shared.store.control.clone(),
            shared.store.presence.clone(),
            shared.nats.clone(),
            stop_rx.clone(),
        ));
        for (bucket, what, updates) in watches {
            tasks.spawn(follow::run(
                shared.clone(),
                bucket,
                what,
                updates,
                stop_rx.clone(),
            ));
        }
        tasks.spawn(controller::run(shared.clone(), stop_rx.clone()));
        tasks.spawn(autoscale::run(shared.clone(), stop_rx.clone()));
        tasks.spawn(autoscale::serve_activations(
            shared.clone(),
            activations,
            stop_rx.clone(),
        ));
        let router = api::router(shared.clone());
        let mut api_stop = stop_rx;
        let stopped = async move {
            let _ = api_stop.wait_for(|s| *s).await;
        };
        match options.tls {
            Some(tls) => {
                tasks.spawn(tls::serve(listener, router, tls, stopped));
            }
            None => {
                tasks.spawn(async move {
                    let serve = axum::serve(listener, router).with_graceful_shutdown(stopped);
                    if let Err(e) = serve.await {
                        tracing::error!(error = %e, "the API server stopped");
                    }
                });
            }
        }
        tracing::info!(%api_addr, "scheduler API listening");
        Ok(Scheduler {
            api_addr,
            tasks,
            first_admin,
        })
    }

    /// Where the HTTP API listens.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The first admin token, made when this scheduler found no token at
    /// all: the caller must keep it (it is shown only now), once.
    pub fn take_first_admin(&mut self) -> Option<shoal_api::token::BearerToken> {
        self.first_admin.take()
    }

    /// Waits until every task has stopped (after shutdown).
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}
