//! Component bytes on a host: from its local copy, else fetched from the
//! cluster's object store and kept for the next start. And the code the
//! cluster compiled from them, when a scheduler compiled it for an engine
//! like this host's.

use std::io::Write;

use shoal_api::Digest;
use shoal_api::subjects::{ARTIFACTS_BUCKET, COMPONENTS_BUCKET, artifact_name};
use tokio::io::AsyncReadExt;

use crate::layout::DataLayout;

/// The bytes of the component `digest`: the local copy when it is intact,
/// else from the object store (checked against the digest, then kept).
pub(super) async fn fetch(
    nats: &async_nats::Client,
    layout: &DataLayout,
    digest: &Digest,
) -> Result<Vec<u8>, String> {
    let path = layout.component(digest);
    if let Ok(bytes) = tokio::fs::read(&path).await
        && Digest::of(&bytes) == *digest
    {
        return Ok(bytes);
    }
    let js = async_nats::jetstream::new(nats.clone());
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
    // Kept for the next start; a failure to keep it only costs a fetch.
    let keep = (layout.components(), path, bytes.clone());
    let kept = tokio::task::spawn_blocking(move || keep_copy(&keep.0, &keep.1, &keep.2)).await;
    if let Ok(Err(e)) = kept {
        tracing::warn!(component = %digest, error = %e, "cannot keep a local copy of the component");
    }
    Ok(bytes)
}

/// The component `digest` as the cluster compiled it for an engine whose
/// compatibility hash is `engine`, if a scheduler did. Anything missing or
/// unreadable is `None`: the host then compiles the component itself.
pub(super) async fn fetch_compiled(
    nats: &async_nats::Client,
    digest: &Digest,
    engine: &str,
) -> Option<Vec<u8>> {
    let js = async_nats::jetstream::new(nats.clone());
    let store = js.get_object_store(ARTIFACTS_BUCKET).await.ok()?;
    let mut object = store.get(artifact_name(digest, engine)).await.ok()?;
    let mut artifact = Vec::new();
    match object.read_to_end(&mut artifact).await {
        Ok(_) => Some(artifact),
        Err(e) => {
            tracing::warn!(component = %digest, error = %e, "cannot read the cluster's compiled artifact; compiling here");
            None
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in `dir`, renamed.
fn keep_copy(dir: &std::path::Path, path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir)?;
    file.write_all(bytes)?;
    file.persist(path).map_err(|e| e.error)?;
    Ok(())
}
