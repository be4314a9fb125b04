//! Components compiled once for the cluster.
//!
//! When a component is uploaded, the scheduler compiles it with the hosts'
//! code settings (the [`Precompiler`] the `shoal` binary hands it) and keeps
//! the artifact in the [`ARTIFACTS_BUCKET`] object store, named by the
//! component's sha256 and the engine's compatibility hash. A host about to
//! compile a component it has never run looks there first, and loads the
//! artifact when it was made for an engine like its own: a cluster of N
//! hosts compiles each version once, not N times.
//!
//! Compiled code runs as the host, outside every sandbox, so who may write
//! it matters: only scheduler identities may write the store (NATS
//! permissions, as for component bytes and desired state; see
//! `shoal_api::identity`). A host checks the artifact loads with its own
//! engine, then keeps it in its precompile cache under its own MAC.
//!
//! Compiling at upload also finds, before anything is applied, a component
//! wasmtime cannot compile: the upload is refused with wasmtime's reason.

use std::fmt;
use std::sync::Arc;

use async_nats::jetstream::object_store::ObjectStore;
use bytes::Bytes;
use shoal_api::Digest;
use shoal_api::subjects::artifact_name;
use tokio::sync::Semaphore;

/// Compiles components as hosts would.
pub trait Precompiler: Send + Sync + fmt::Debug {
    /// The compatibility hash of its engine, in hex: part of each
    /// artifact's name, so a host only loads one made for its engine.
    fn engine_id(&self) -> &str;

    /// Compiles a component's bytes. CPU-bound.
    fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, String>;
}

/// Compiles component `digest` (its `bytes`) into `store`, unless it is
/// there already, one compile per `turns` permit at a time. Fails only when
/// the component does not compile; a store that cannot take the artifact
/// costs each host a compile, and is logged.
pub async fn compile(
    store: &ObjectStore,
    compiler: &Arc<dyn Precompiler>,
    turns: &Semaphore,
    digest: &Digest,
    bytes: Bytes,
) -> Result<(), String> {
    let name = artifact_name(digest, compiler.engine_id());
    // Looked for once the turn comes: two uploads of one component at
    // once compile it once.
    let _turn = turns
        .acquire()
        .await
        .map_err(|_| "the scheduler is stopping".to_string())?;
    if store.info(&name).await.is_ok() {
        return Ok(());
    }
    let job = compiler.clone();
    let started = std::time::Instant::now();
    let artifact = tokio::task::spawn_blocking(move || job.precompile(&bytes))
        .await
        .map_err(|e| format!("compiling stopped: {e}"))??;
    tracing::info!(
        component = %digest.short(),
        bytes = artifact.len(),
        ms = started.elapsed().as_millis() as u64,
        "compiled for the cluster"
    );
    if let Err(e) = store.put(name.as_str(), &mut artifact.as_slice()).await {
        tracing::warn!(component = %digest.short(), error = %e, "cannot store the compiled component; each host compiles it");
    }
    Ok(())
}
