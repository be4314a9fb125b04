//! Desired state and component bytes in JetStream: a key-value bucket of
//! apps (one revision per apply), an object store of components by sha256,
//! and a stream of events.

use std::collections::BTreeMap;
use std::time::Duration;

use async_nats::jetstream::{consumer, kv, object_store, stream};
use futures::StreamExt;
use shoal_api::Digest;
use shoal_api::resources::Event;
use shoal_api::subjects::{
    ALL_DEAD_LETTERS, ALL_EVENTS, APPS_BUCKET, ARTIFACTS_BUCKET, COMPONENTS_BUCKET, CONTROL_BUCKET,
    DEAD_LETTER_STREAM, EVENTS_STREAM, JETSTREAM_MAX_FILE_STORE, QUEUE_CONSUMER, ROUTES_BUCKET,
    SCHEDULERS_BUCKET, SECRETS_BUCKET,
};
use tokio::io::AsyncReadExt;

use crate::SchedulerError;
use crate::jetstream::JetStream;
use crate::state::{App, StoredApp};
use crate::tunables::{
    ARTIFACT_STORE_MAX_BYTES, COMPONENT_STORE_MAX_BYTES, DEAD_LETTER_MAX_BYTES, EVENTS_MAX_BYTES,
    EVENTS_PER_APP, EVENTS_READ_TIMEOUT, KV_BUCKET_MAX_BYTES, KV_MAX_VALUE_BYTES,
    QUEUE_MAX_MESSAGE_BYTES, QUEUE_STREAM_MAX_BYTES, SCHEDULER_PRESENCE_TTL,
};

/// Every key of `bucket` with its value (keys deleted meanwhile are
/// skipped); `what` names the entries in errors.
pub(crate) async fn kv_entries(
    bucket: &kv::Store,
    what: &str,
) -> Result<Vec<(String, bytes::Bytes)>, SchedulerError> {
    let mut keys = bucket
        .keys()
        .await
        .map_err(|e| unavailable(&format!("listing {what}"), e))?;
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let key = key.map_err(|e| unavailable(&format!("listing {what}"), e))?;
        if let Some(value) = bucket
            .get(key.clone())
            .await
            .map_err(|e| unavailable(&format!("reading {what}"), e))?
        {
            out.push((key, value));
        }
    }
    Ok(out)
}

/// Makes `bucket` hold `wanted`, given that it held `written` (as this
/// process last wrote or read it): puts the entries that differ, purges
/// those no longer wanted, and records in `written` each write that
/// succeeded, so that a failed one is tried again next time. `what` names
/// an entry in warnings.
pub(crate) async fn sync_bucket(
    bucket: &kv::Store,
    written: &mut BTreeMap<String, Vec<u8>>,
    wanted: &BTreeMap<String, Vec<u8>>,
    what: &str,
) {
    for (key, bytes) in wanted {
        if written.get(key) == Some(bytes) {
            continue;
        }
        match bucket.put(key, bytes.clone().into()).await {
            Ok(_) => {
                written.insert(key.clone(), bytes.clone());
            }
            Err(e) => tracing::warn!(key, error = %e, "cannot write {what}"),
        }
    }
    let gone: Vec<String> = written
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .cloned()
        .collect();
    for key in gone {
        match bucket.purge(&key).await {
            Ok(()) => {
                written.remove(&key);
            }
            Err(e) => tracing::warn!(key, error = %e, "cannot remove {what}"),
        }
    }
}

/// The scheduler's JetStream resources.
#[derive(Clone)]
pub struct Store {
    pub(crate) kv: kv::Store,
    pub(crate) secrets: kv::Store,
    /// The leader lease and what the leader must remember.
    pub(crate) control: kv::Store,
    /// Which schedulers run.
    pub(crate) presence: kv::Store,
    /// The cluster's route table, kept by the leader.
    pub(crate) routes: kv::Store,
    objects: object_store::ObjectStore,
    /// Components compiled once for the cluster (see [`crate::compiled`]).
    pub(crate) artifacts: object_store::ObjectStore,
    js: JetStream,
}

/// A JetStream call that failed: try again.
///
/// JetStream counts every stream's size limit as reserved the moment the
/// stream is made, and by default offers only 75% of the disk that is free
/// when nats-server starts. A server too small for Shoal's limits refuses
/// with error code 10047; that refusal gets a hint saying what to change,
/// since trying again alone will not help.
pub(crate) fn unavailable(what: &str, err: impl std::fmt::Display) -> SchedulerError {
    let err = err.to_string();
    if err.contains("error code 10047") {
        return SchedulerError::Unavailable(format!(
            "{what}: {err}. JetStream reserves each stream's size limit as the stream is made, \
             and this nats-server offers less file storage than Shoal's limits add up to: set \
             `max_file_store` in the `jetstream` block of its configuration (the nats-server \
             Shoal starts itself uses {JETSTREAM_MAX_FILE_STORE}), or free disk space and restart it"
        ));
    }
    SchedulerError::Unavailable(format!("{what}: {err}"))
}

impl Store {
    /// Opens (creating where missing) the bucket, object store and stream.
    pub async fn open(js: &JetStream) -> Result<Self, SchedulerError> {
        let kv = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: APPS_BUCKET.to_string(),
                description: "Shoal desired state: one key per app".into(),
                history: 16,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the apps bucket", e))?;
        let secrets = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: SECRETS_BUCKET.to_string(),
                description: "Shoal secrets, sealed: one key per namespace.name".into(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the secrets bucket", e))?;
        let control = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: CONTROL_BUCKET.to_string(),
                description: "Shoal's leader lease and what the leader must remember".into(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the control bucket", e))?;
        let presence = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: SCHEDULERS_BUCKET.to_string(),
                description: "Shoal's running schedulers, each renewing its own key".into(),
                history: 1,
                max_age: SCHEDULER_PRESENCE_TTL,
                storage: stream::StorageType::Memory,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the schedulers bucket", e))?;
        let routes = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: ROUTES_BUCKET.to_string(),
                description: "Shoal's route table: one key per http component with a route".into(),
                history: 1,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the routes bucket", e))?;
        let artifacts = match js.get_object_store(ARTIFACTS_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(js.objects(object_store::Config {
                    bucket: ARTIFACTS_BUCKET.to_string(),
                    description: Some(
                        "Shoal components compiled for the cluster, by sha256 and engine".into(),
                    ),
                    storage: stream::StorageType::File,
                    max_bytes: ARTIFACT_STORE_MAX_BYTES,
                    ..Default::default()
                }))
                .await
                .map_err(|e| unavailable("opening the compiled-component store", e))?,
        };
        let objects = match js.get_object_store(COMPONENTS_BUCKET).await {
            Ok(store) => store,
            Err(_) => js
                .create_object_store(js.objects(object_store::Config {
                    bucket: COMPONENTS_BUCKET.to_string(),
                    description: Some("Shoal component bytes by sha256".into()),
                    storage: stream::StorageType::File,
                    max_bytes: COMPONENT_STORE_MAX_BYTES,
                    ..Default::default()
                }))
                .await
                .map_err(|e| unavailable("opening the component store", e))?,
        };
        js.create_or_update_stream(js.stream(stream::Config {
            name: EVENTS_STREAM.to_string(),
            subjects: vec![ALL_EVENTS.to_string()],
            max_messages_per_subject: EVENTS_PER_APP as i64,
            max_bytes: EVENTS_MAX_BYTES,
            storage: stream::StorageType::File,
            ..Default::default()
        }))
        .await
        .map_err(|e| unavailable("opening the events stream", e))?;
        js.create_or_update_stream(js.stream(stream::Config {
            name: DEAD_LETTER_STREAM.to_string(),
            subjects: vec![ALL_DEAD_LETTERS.to_string()],
            max_bytes: DEAD_LETTER_MAX_BYTES,
            storage: stream::StorageType::File,
            ..Default::default()
        }))
        .await
        .map_err(|e| unavailable("opening the dead-letter stream", e))?;
        Ok(Store {
            kv,
            secrets,
            control,
            presence,
            routes,
            objects,
            artifacts,
            js: js.clone(),
        })
    }

    /// Every stored app.
    pub async fn load_apps(&self) -> Result<Vec<App>, SchedulerError> {
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| unavailable("listing apps", e))?;
        let mut apps = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| unavailable("listing apps", e))?;
            let Some(entry) = self
                .kv
                .entry(key.clone())
                .await
                .map_err(|e| unavailable("reading an app", e))?
            else {
                continue;
            };
            match serde_json::from_slice::<StoredApp>(&entry.value) {
                Ok(stored) => apps.push(App::from_kv(stored, entry.revision)),
                Err(e) => {
                    tracing::error!(key, error = %e, "skipping an unreadable app in the desired-state bucket")
                }
            }
        }
        Ok(apps)
    }

    /// Stores an app if it is still at revision `based_on` (0: if it does
    /// not exist); returns its new revision. A change made meanwhile (by
    /// another call, through any scheduler) is a conflict: nothing is
    /// written, and the error says which revision the app is at now.
    pub async fn put_app(
        &self,
        key: &str,
        app: &StoredApp,
        based_on: u64,
    ) -> Result<u64, SchedulerError> {
        let value = serde_json::to_vec(app).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        let written = if based_on == 0 {
            self.kv.create(key, value.into()).await.map_err(|e| {
                (e.kind() == kv::CreateErrorKind::AlreadyExists)
                    .then_some(())
                    .ok_or_else(|| unavailable("storing the app", e))
            })
        } else {
            self.kv
                .update(key, value.into(), based_on)
                .await
                .map_err(|e| {
                    (e.kind() == kv::UpdateErrorKind::WrongLastRevision)
                        .then_some(())
                        .ok_or_else(|| unavailable("storing the app", e))
                })
        };
        match written {
            Ok(revision) => Ok(revision),
            Err(Err(e)) => Err(e),
            Err(Ok(())) => Err(self.conflict(key, based_on).await),
        }
    }

    /// The error for a write based on revision `based_on` of the app at
    /// `key` that lost to another write.
    async fn conflict(&self, key: &str, based_on: u64) -> SchedulerError {
        let now = match self.kv.entry(key).await {
            Ok(Some(e)) if e.operation == kv::Operation::Put => format!("revision {}", e.revision),
            Ok(_) => "deleted".to_string(),
            Err(_) => "changed".to_string(),
        };
        let was = if based_on == 0 {
            "absent".to_string()
        } else {
            format!("at revision {based_on}")
        };
        SchedulerError::Conflict(format!(
            "app {key} changed meanwhile: this change was made while it was {was}, and it is {now} now; nothing was written: look at it again and retry"
        ))
    }

    /// The revisions of the app at `key` the bucket still keeps, oldest
    /// first, each with when it was stored (ms since the epoch). Only those
    /// since the app was last deleted.
    pub async fn app_history(
        &self,
        key: &str,
    ) -> Result<Vec<(u64, u64, StoredApp)>, SchedulerError> {
        let mut entries = self
            .kv
            .history(key)
            .await
            .map_err(|e| unavailable("reading the app's history", e))?;
        let mut out = Vec::new();
        while let Some(entry) = entries.next().await {
            let entry = entry.map_err(|e| unavailable("reading the app's history", e))?;
            if entry.operation != kv::Operation::Put {
                out.clear();
                continue;
            }
            let at_ms =
                u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            match serde_json::from_slice::<StoredApp>(&entry.value) {
                Ok(stored) => {
                    let app = App::from_kv(stored, entry.revision);
                    out.push((app.revision, at_ms, app.stored));
                }
                Err(e) => {
                    tracing::warn!(key, revision = entry.revision, error = %e, "skipping an unreadable revision")
                }
            }
        }
        Ok(out)
    }

    /// Removes an app if it is still at revision `based_on`.
    pub async fn delete_app(&self, key: &str, based_on: u64) -> Result<(), SchedulerError> {
        match self.kv.delete_expect_revision(key, Some(based_on)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == kv::DeleteErrorKind::WrongLastRevision => {
                Err(self.conflict(key, based_on).await)
            }
            Err(e) => Err(unavailable("deleting the app", e)),
        }
    }

    /// Every sealed secret, by `namespace.name`.
    pub async fn load_secrets(&self) -> Result<Vec<(String, Vec<u8>)>, SchedulerError> {
        Ok(kv_entries(&self.secrets, "secrets")
            .await?
            .into_iter()
            .map(|(key, sealed)| (key, sealed.to_vec()))
            .collect())
    }

    /// Stores a sealed secret.
    pub async fn put_secret(&self, key: &str, sealed: Vec<u8>) -> Result<(), SchedulerError> {
        self.secrets
            .put(key, sealed.into())
            .await
            .map(|_| ())
            .map_err(|e| unavailable("storing the secret", e))
    }

    /// Removes a secret.
    pub async fn delete_secret(&self, key: &str) -> Result<(), SchedulerError> {
        self.secrets
            .purge(key)
            .await
            .map_err(|e| unavailable("deleting the secret", e))
    }

    /// Makes sure a queue worker's work-queue stream and shared durable
    /// consumer exist, so messages published before any replica runs are
    /// kept, and that the consumer has the settings the spec asks for now
    /// (`ack_wait`, and `max_ack_pending`: deliveries in flight at once,
    /// the most replicas times their concurrency). Refuses a subject another
    /// stream already holds, and a changed subject: the stream holds
    /// messages published to the old one, which a new subject would strand.
    pub async fn ensure_queue(
        &self,
        stream_name: &str,
        subject: &str,
        ack_wait: Duration,
        max_ack_pending: i64,
    ) -> Result<(), SchedulerError> {
        let mut stream = self
            .js
            .get_or_create_stream(self.js.stream(stream::Config {
                name: stream_name.to_string(),
                subjects: vec![subject.to_string()],
                retention: stream::RetentionPolicy::WorkQueue,
                max_bytes: QUEUE_STREAM_MAX_BYTES,
                max_message_size: QUEUE_MAX_MESSAGE_BYTES,
                discard: stream::DiscardPolicy::New,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| {
                SchedulerError::Invalid(format!(
                    "cannot create the work queue for subject {subject:?}: {e} (is another app's queue using it?)"
                ))
            })?;
        let held = stream
            .info()
            .await
            .map_err(|e| unavailable("reading the work queue", e))?
            .config
            .subjects
            .clone();
        if held != [subject] {
            return Err(SchedulerError::Invalid(format!(
                "the queue subject changed (from {} to {subject:?}): its work queue holds what was \
                 published to the old subject, which would be stranded. Keep the old subject, or \
                 delete the app (`shoal delete app`) once its queue is drained and apply it again",
                held.iter()
                    .map(|s| format!("{s:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        // Made or updated in place: a changed timeout changes the ack wait
        // of messages delivered from now on.
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(QUEUE_CONSUMER.to_string()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait,
                max_ack_pending,
                ..Default::default()
            })
            .await
            .map_err(|e| unavailable("creating or updating the queue consumer", e))?;
        Ok(())
    }

    /// Makes sure an app's key-value bucket exists, with its size limits.
    /// Hosts may only open it: creating buckets is the scheduler's.
    pub async fn ensure_bucket(&self, bucket: &str) -> Result<(), SchedulerError> {
        if self.js.get_key_value(bucket).await.is_ok() {
            return Ok(());
        }
        self.js
            .create_key_value(self.js.bucket(kv::Config {
                bucket: bucket.to_string(),
                history: 1,
                max_bytes: KV_BUCKET_MAX_BYTES,
                max_value_size: KV_MAX_VALUE_BYTES,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map(|_| ())
            .map_err(|e| unavailable("creating the app's key-value bucket", e))
    }

    /// Removes an app's key-value bucket, if it has one.
    pub async fn delete_bucket(&self, bucket: &str) {
        if self.js.get_key_value(bucket).await.is_ok()
            && let Err(e) = self.js.delete_key_value(bucket).await
        {
            tracing::warn!(bucket, error = %e, "cannot delete the app's key-value bucket");
        }
    }

    /// Whether the component with `digest` is stored.
    pub async fn has_component(&self, digest: &Digest) -> bool {
        self.objects.info(digest.to_hex()).await.is_ok()
    }

    /// The size of the stored component with `digest`.
    pub async fn component_size(&self, digest: &Digest) -> Result<u64, SchedulerError> {
        self.objects
            .info(digest.to_hex())
            .await
            .map(|info| info.size as u64)
            .map_err(|e| unavailable("reading the component's size", e))
    }

    /// Stores component bytes under their digest.
    pub async fn put_component(&self, digest: &Digest, bytes: &[u8]) -> Result<(), SchedulerError> {
        if self.has_component(digest).await {
            return Ok(());
        }
        let mut reader = bytes;
        self.objects
            .put(digest.to_hex().as_str(), &mut reader)
            .await
            .map_err(|e| unavailable("storing the component", e))?;
        Ok(())
    }

    /// Reads component bytes.
    pub async fn get_component(&self, digest: &Digest) -> Result<Vec<u8>, SchedulerError> {
        let mut object = self
            .objects
            .get(digest.to_hex())
            .await
            .map_err(|e| unavailable("reading the component", e))?;
        let mut bytes = Vec::new();
        object
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| unavailable("reading the component", e))?;
        Ok(bytes)
    }

    /// Recent events of every app, oldest first.
    pub async fn load_events(&self) -> Vec<Event> {
        let Ok(stream) = self.js.get_stream(EVENTS_STREAM).await else {
            return Vec::new();
        };
        let Ok(consumer) = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
        else {
            return Vec::new();
        };
        let Ok(pending) = stream.get_info().await.map(|i| i.state.messages) else {
            return Vec::new();
        };
        let mut events = Vec::new();
        let Ok(mut messages) = consumer.messages().await else {
            return events;
        };
        let mut read = 0;
        while read < pending {
            match tokio::time::timeout(EVENTS_READ_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(msg))) => {
                    read += 1;
                    if let Ok(e) = serde_json::from_slice::<Event>(&msg.payload) {
                        events.push(e);
                    }
                }
                _ => break,
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_room_for_the_limits_is_told_how_to_make_room() {
        let refusal = "jetstream error: insufficient storage resources available \
                       (code 500, error code 10047)";
        let message = unavailable("opening the component store", refusal).to_string();
        assert!(message.contains("opening the component store"), "{message}");
        assert!(message.contains("max_file_store"), "{message}");
        assert!(message.contains(JETSTREAM_MAX_FILE_STORE), "{message}");

        let other = unavailable("listing apps", "timed out").to_string();
        assert!(!other.contains("max_file_store"), "{other}");
    }
}
