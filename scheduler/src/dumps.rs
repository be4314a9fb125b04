//! Core dumps: each namespace's object store (`shoal-dumps-<namespace>`),
//! made with the namespace and kept as long as its logs; and reading it
//! for the API. Hosts write the dumps (see `shoal_host::coredumps`).

use async_nats::jetstream::{self, object_store};
use futures::StreamExt;
use shoal_api::dumps::{DumpId, DumpInfo};
use shoal_api::resources::LogRetention;
use shoal_api::{Name, subjects};

use crate::SchedulerError;
use crate::jetstream::JetStream;
use crate::store::unavailable;
use crate::tunables::{DUMPS_MAX_BYTES, LOGS_MAX_AGE};

/// Makes sure `namespace`'s dump store exists and keeps dumps as long as
/// its logs (`retention`). A full store takes no new dump until old ones
/// age out: a dump is never half kept.
pub async fn ensure_bucket(
    js: &JetStream,
    namespace: &Name,
    retention: &LogRetention,
) -> Result<(), SchedulerError> {
    let bucket = subjects::dumps_bucket(namespace);
    let max_age = retention.max_age.map_or(LOGS_MAX_AGE, |d| d.get());
    let failed = |e: &dyn std::fmt::Display| {
        unavailable(&format!("making the dump store of {namespace}"), e)
    };
    if js.get_object_store(&bucket).await.is_err() {
        js.create_object_store(js.objects(object_store::Config {
            bucket,
            description: Some(format!("Shoal core dumps of namespace {namespace}")),
            max_age,
            max_bytes: DUMPS_MAX_BYTES,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        }))
        .await
        .map_err(|e| failed(&e))?;
        return Ok(());
    }
    // The store's stream carries its limits: follow a changed retention.
    let mut stream = js
        .get_stream(format!("OBJ_{bucket}"))
        .await
        .map_err(|e| failed(&e))?;
    let mut config = stream.info().await.map_err(|e| failed(&e))?.config.clone();
    if config.max_age != max_age {
        config.max_age = max_age;
        js.update_stream(config).await.map_err(|e| failed(&e))?;
    }
    Ok(())
}

/// Removes `namespace`'s dump store.
pub async fn delete_bucket(js: &jetstream::Context, namespace: &Name) {
    if let Err(e) = js
        .delete_object_store(subjects::dumps_bucket(namespace))
        .await
    {
        tracing::warn!(%namespace, error = %e, "cannot delete the dump store");
    }
}

async fn bucket(
    js: &jetstream::Context,
    namespace: &Name,
) -> Result<object_store::ObjectStore, SchedulerError> {
    js.get_object_store(subjects::dumps_bucket(namespace))
        .await
        .map_err(|e| unavailable(&format!("opening the dump store of {namespace}"), e))
}

/// The dumps of `app` in `namespace`, oldest first.
pub async fn list(
    js: &jetstream::Context,
    namespace: &Name,
    app: &Name,
) -> Result<Vec<DumpInfo>, SchedulerError> {
    let bucket = bucket(js, namespace).await?;
    let unavailable =
        |e: &dyn std::fmt::Display| SchedulerError::Unavailable(format!("listing dumps: {e}"));
    let mut objects = bucket.list().await.map_err(|e| unavailable(&e))?;
    let mut out = Vec::new();
    while let Some(object) = objects.next().await {
        let object = object.map_err(|e| unavailable(&e))?;
        let Ok(id) = object.name.parse::<DumpId>() else {
            continue;
        };
        if object.deleted || &id.app != app {
            continue;
        }
        out.push(DumpInfo::new(
            namespace.clone(),
            &id,
            &object.metadata,
            object.size as u64,
        ));
    }
    out.sort_by_key(|d| (d.at_ms, d.id.clone()));
    Ok(out)
}

/// The bytes of dump `id` in `namespace`, to stream.
pub async fn open(
    js: &jetstream::Context,
    namespace: &Name,
    id: &DumpId,
) -> Result<object_store::Object, SchedulerError> {
    let bucket = bucket(js, namespace).await?;
    bucket.get(id.to_string()).await.map_err(|e| {
        if e.kind() == object_store::GetErrorKind::NotFound {
            SchedulerError::NotFound(format!(
                "no core dump {id} in namespace {namespace}: it may have aged out; `shoal debug dumps {}` lists those kept",
                id.app
            ))
        } else {
            SchedulerError::Unavailable(format!("reading dump {id}: {e}"))
        }
    })
}
