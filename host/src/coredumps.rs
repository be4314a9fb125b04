//! Core dumps of trapping invocations, for components whose spec asks
//! (`debug = { coredumps = N }`).
//!
//! The engine attaches a Wasm core dump to every trap; a component with a
//! [`DumpSink`] serializes it in the standard core dump format (a Wasm
//! module a debugger such as `wasmgdb` opens) while the trapped store is
//! still there, and hands it over. On a host the sink is a [`DumpStore`]:
//! at most N dumps per replica go to the namespace's object store
//! (`shoal-dumps-<namespace>`, kept as long as the namespace's logs),
//! uploaded by one task so that a trapping guest never waits on NATS.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_nats::jetstream::object_store::{ObjectMetadata, ObjectStore};
use shoal_api::dumps::{DumpId, meta};
use shoal_api::wire::{HostId, ReplicaId};
use shoal_api::{Name, subjects};
use tokio::sync::mpsc;

use crate::tunables::DUMP_UPLOADS_PENDING;

/// One core dump, as a component hands it over.
pub struct CoreDump {
    /// The dump, in the Wasm core dump format.
    pub bytes: Vec<u8>,
    /// The trap, in words.
    pub trap: String,
    /// The innermost function of the guest's stack, demangled.
    pub function: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

/// Where one component's core dumps go.
pub trait DumpSink: Send + Sync {
    /// Takes one dump of the allowance, if any is left: only then is a
    /// dump serialized.
    fn reserve(&self) -> bool;
    /// Keeps a dump [`reserve`](Self::reserve) made room for.
    fn keep(&self, dump: CoreDump);
}

/// The name of a frame's function, demangled, or its index.
pub(crate) fn function_name(frame: &wasmtime::FrameInfo) -> String {
    match frame.func_name() {
        // `{:#}`: without the hash suffix.
        Some(name) => format!("{:#}", rustc_demangle::demangle(name)),
        None => format!("func[{}]", frame.func_index()),
    }
}

/// One dump on its way to the object store.
struct Upload {
    namespace: Name,
    id: DumpId,
    replica: ReplicaId,
    dump: CoreDump,
}

/// A host's core dumps: each replica's allowance, and the uploads.
pub struct DumpStore {
    uploads: mpsc::Sender<Upload>,
    /// Dumps each replica on this host has taken, across its restarts.
    taken: Mutex<HashMap<ReplicaId, Arc<AtomicU32>>>,
}

impl DumpStore {
    /// A store for `host`'s replicas, uploading through `nats`. The upload
    /// task ends when the store is dropped.
    pub fn start(nats: async_nats::Client, host: HostId) -> Arc<DumpStore> {
        let (uploads, pending) = mpsc::channel(DUMP_UPLOADS_PENDING);
        tokio::spawn(upload(nats, host, pending));
        Arc::new(DumpStore {
            uploads,
            taken: Mutex::default(),
        })
    }

    /// The sink of `component` of `replica`, allowed `limit` dumps; `None`
    /// when the spec asks for none.
    pub fn sink(
        self: &Arc<Self>,
        replica: &ReplicaId,
        component: &Name,
        limit: u32,
    ) -> Option<Arc<dyn DumpSink>> {
        if limit == 0 {
            return None;
        }
        let taken = self
            .taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(replica.clone())
            .or_default()
            .clone();
        Some(Arc::new(ReplicaDumps {
            store: self.clone(),
            replica: replica.clone(),
            component: component.clone(),
            limit,
            taken,
        }))
    }

    /// `replica` left this host: forget its count.
    pub fn forget(&self, replica: &ReplicaId) {
        self.taken
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(replica);
    }
}

/// One component's sink on a host.
struct ReplicaDumps {
    store: Arc<DumpStore>,
    replica: ReplicaId,
    component: Name,
    limit: u32,
    taken: Arc<AtomicU32>,
}

impl DumpSink for ReplicaDumps {
    fn reserve(&self) -> bool {
        self.taken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }

    fn keep(&self, dump: CoreDump) {
        let id = DumpId {
            app: self.replica.app.clone(),
            component: self.component.clone(),
            at_ms: dump.at_ms,
            nonce: rand_nonce(),
        };
        let upload = Upload {
            namespace: self.replica.namespace.clone(),
            id,
            replica: self.replica.clone(),
            dump,
        };
        if self.store.uploads.try_send(upload).is_err() {
            tracing::warn!(
                replica = %self.replica,
                "a core dump was dropped: {DUMP_UPLOADS_PENDING} are already waiting to be stored"
            );
        }
    }
}

fn rand_nonce() -> u32 {
    use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
    let [a, b, c, d, ..] = RandomIdGenerator::default().new_span_id().to_bytes();
    u32::from_be_bytes([a, b, c, d])
}

/// Stores each dump in its namespace's object store.
async fn upload(nats: async_nats::Client, host: HostId, mut pending: mpsc::Receiver<Upload>) {
    let js = async_nats::jetstream::new(nats);
    let mut buckets: HashMap<Name, ObjectStore> = HashMap::new();
    while let Some(upload) = pending.recv().await {
        let Upload {
            namespace,
            id,
            replica,
            dump,
        } = upload;
        let bucket = match buckets.get(&namespace) {
            Some(bucket) => bucket.clone(),
            None => match js
                .get_object_store(subjects::dumps_bucket(&namespace))
                .await
            {
                Ok(bucket) => {
                    buckets.insert(namespace.clone(), bucket.clone());
                    bucket
                }
                Err(e) => {
                    tracing::warn!(
                        %replica,
                        error = %e,
                        "a core dump was dropped: the namespace's dump store cannot be opened (the scheduler makes it with the namespace)"
                    );
                    continue;
                }
            },
        };
        let metadata = HashMap::from([
            (meta::REPLICA.to_string(), replica.to_string()),
            (meta::HOST.to_string(), host.to_string()),
            (meta::TRAP.to_string(), dump.trap),
            (meta::FUNCTION.to_string(), dump.function),
        ]);
        let object = ObjectMetadata {
            name: id.to_string(),
            description: Some(format!("core dump of {replica}")),
            metadata,
            ..Default::default()
        };
        match bucket.put(object, &mut dump.bytes.as_slice()).await {
            Ok(_) => {
                tracing::info!(%replica, dump = %id, bytes = dump.bytes.len(), "core dump stored")
            }
            Err(e) => tracing::warn!(%replica, error = %e, "a core dump could not be stored"),
        }
    }
}
