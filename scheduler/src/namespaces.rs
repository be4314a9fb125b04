//! Namespaces as objects: their settings (quotas, claimed routes) in a
//! JetStream bucket, and what each one uses, reckoned from desired state.
//!
//! Usage counts what the scheduler promised, not what happens to run: a
//! pod's replicas as wanted (the autoscaler's figure for autoscaled pods),
//! memory as `limits.memory` × `limits.concurrency` per replica, storage at
//! each bucket's and stream's size limit. So a quota holds however busy the
//! apps get.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_nats::jetstream::{self, kv, stream};
use serde::{Deserialize, Serialize};
use shoal_api::resources::{NamespaceSpec, Quota, Usage};
use shoal_api::subjects::NAMESPACES_BUCKET;
use shoal_api::{ByteSize, DEFAULT_NAMESPACE, Digest, Name};

use crate::SchedulerError;
use crate::jetstream::JetStream;
use crate::state::{State, StoredApp};
use crate::store::unavailable;
use crate::tunables::{KV_BUCKET_MAX_BYTES, QUEUE_STREAM_MAX_BYTES};

/// Makes sure `namespace`'s logs stream and dump store exist, with the
/// retention `spec` asks for.
pub async fn ensure_storage(
    js: &JetStream,
    namespace: &Name,
    spec: &NamespaceSpec,
) -> Result<(), SchedulerError> {
    crate::logs::ensure_stream(js, namespace, &spec.logs).await?;
    crate::dumps::ensure_bucket(js, namespace, &spec.logs).await
}

/// Removes `namespace`'s logs and core dumps.
pub async fn delete_storage(js: &jetstream::Context, namespace: &Name) {
    crate::logs::delete_stream(js, namespace).await;
    crate::dumps::delete_bucket(js, namespace).await;
}

/// A namespace as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredNamespace {
    /// Its settings.
    pub spec: NamespaceSpec,
    /// When it was made, in ms since the epoch.
    pub created_ms: u64,
}

/// The namespaces bucket.
#[derive(Clone)]
pub struct NamespaceStore {
    bucket: kv::Store,
}

impl NamespaceStore {
    /// Opens the bucket, creating it (and the `default` namespace) where
    /// missing.
    pub async fn open(js: &JetStream) -> Result<NamespaceStore, SchedulerError> {
        let bucket = js
            .create_or_update_key_value(js.bucket(kv::Config {
                bucket: NAMESPACES_BUCKET.to_string(),
                description: "Shoal namespaces: settings and quotas, one key each".into(),
                history: 4,
                storage: stream::StorageType::File,
                ..Default::default()
            }))
            .await
            .map_err(|e| unavailable("opening the namespaces bucket", e))?;
        let store = NamespaceStore { bucket };
        let default = StoredNamespace {
            spec: NamespaceSpec::default(),
            created_ms: shoal_api::wire::now_ms(),
        };
        // Made once; `create` fails harmlessly when it exists.
        let _ = store.put(DEFAULT_NAMESPACE, &default, None).await;
        Ok(store)
    }

    /// The bucket, to follow it.
    pub(crate) fn bucket(&self) -> &kv::Store {
        &self.bucket
    }

    /// Every namespace.
    pub async fn load(&self) -> Result<BTreeMap<Name, StoredNamespace>, SchedulerError> {
        let mut out = BTreeMap::new();
        for (key, value) in crate::store::kv_entries(&self.bucket, "namespaces").await? {
            match (Name::new(key.clone()), serde_json::from_slice(&value)) {
                (Ok(name), Ok(stored)) => {
                    out.insert(name, stored);
                }
                (_, Err(e)) => tracing::error!(key, error = %e, "skipping an unreadable namespace"),
                (Err(e), _) => tracing::error!(key, error = %e, "skipping a badly named namespace"),
            }
        }
        Ok(out)
    }

    /// Stores a namespace: with `based_on` absent, only if it does not
    /// exist yet; else only if the stored one is still `based_on`, what
    /// the change was decided against (compare-and-set on the revision that
    /// holds it), so two schedulers' concurrent updates cannot both land.
    pub async fn put(
        &self,
        name: &str,
        stored: &StoredNamespace,
        based_on: Option<&StoredNamespace>,
    ) -> Result<(), SchedulerError> {
        let value =
            serde_json::to_vec(stored).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        let changed_meanwhile = || {
            SchedulerError::Conflict(format!(
                "namespace {name} was changed meanwhile by another request: look at it again \
                 (`shoal describe namespace {name}`) and repeat the change"
            ))
        };
        if let Some(based_on) = based_on {
            let entry = self
                .bucket
                .entry(name)
                .await
                .map_err(|e| unavailable("reading the namespace", e))?
                .filter(|e| e.operation == kv::Operation::Put)
                .ok_or_else(changed_meanwhile)?;
            let now: StoredNamespace = serde_json::from_slice(&entry.value)
                .map_err(|e| SchedulerError::Internal(format!("namespace {name}: {e}")))?;
            if &now != based_on {
                return Err(changed_meanwhile());
            }
            return self
                .bucket
                .update(name, value.into(), entry.revision)
                .await
                .map(|_| ())
                .map_err(|e| match e.kind() {
                    kv::UpdateErrorKind::WrongLastRevision => changed_meanwhile(),
                    _ => unavailable("storing the namespace", e),
                });
        }
        self.bucket
            .create(name, value.into())
            .await
            .map(|_| ())
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => SchedulerError::Conflict(format!(
                    "namespace {name} exists already: change it with `shoal update namespace {name}`"
                )),
                _ => unavailable("storing the namespace", e),
            })
    }

    /// Removes a namespace.
    pub async fn delete(&self, name: &str) -> Result<(), SchedulerError> {
        self.bucket
            .delete(name)
            .await
            .map_err(|e| unavailable("deleting the namespace", e))
    }
}

/// What the apps of `namespace` use (leaving out the app at `except`, if
/// given), with each component's size from `sizes`.
pub fn usage(
    state: &State,
    namespace: &Name,
    except: Option<&str>,
    sizes: &HashMap<Digest, u64>,
) -> Usage {
    let mut usage = Usage::default();
    let mut digests = BTreeSet::new();
    for (key, app) in &state.apps {
        if &app.stored.spec.namespace != namespace || Some(key.as_str()) == except {
            continue;
        }
        add_app(&mut usage, state, key, &app.stored);
        digests.extend(app.stored.digests.values().copied());
    }
    usage.component_bytes = ByteSize::bytes(
        digests
            .iter()
            .map(|d| sizes.get(d).copied().unwrap_or(0))
            .sum(),
    );
    let prefix = format!("{namespace}.");
    usage.secrets = state
        .secrets
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .count() as u32;
    usage
}

/// Adds what `app` (stored at `key`) reserves to `usage`; component bytes
/// are counted by the caller, who knows which digests are shared.
pub fn add_app(usage: &mut Usage, state: &State, key: &str, app: &StoredApp) {
    for pod in app.spec.pods() {
        let replicas = state.replicas_of(key, &pod);
        usage.replicas = usage.replicas.saturating_add(replicas);
        usage.memory = ByteSize::bytes(
            usage
                .memory
                .as_u64()
                .saturating_add(pod.reserved_memory().saturating_mul(u64::from(replicas))),
        );
    }
    let buckets = u64::from(app.spec.components.values().any(|c| c.keyvalue.is_some()));
    let queues = app
        .spec
        .components
        .values()
        .filter(|c| c.queue.is_some())
        .count() as u64;
    usage.storage = ByteSize::bytes(usage.storage.as_u64().saturating_add(
        buckets.saturating_mul(KV_BUCKET_MAX_BYTES as u64)
            + queues.saturating_mul(QUEUE_STREAM_MAX_BYTES as u64),
    ));
}

/// Usage with `app` replacing whatever the namespace's app of that key
/// held before.
pub fn usage_with(
    state: &State,
    key: &str,
    app: &StoredApp,
    sizes: &HashMap<Digest, u64>,
) -> Usage {
    let namespace = &app.spec.namespace;
    let mut usage = usage(state, namespace, Some(key), sizes);
    add_app(&mut usage, state, key, app);
    let mut digests: BTreeSet<Digest> = state
        .apps
        .iter()
        .filter(|(k, a)| &a.stored.spec.namespace == namespace && k.as_str() != key)
        .flat_map(|(_, a)| a.stored.digests.values().copied())
        .collect();
    digests.extend(app.digests.values().copied());
    usage.component_bytes = ByteSize::bytes(
        digests
            .iter()
            .map(|d| sizes.get(d).copied().unwrap_or(0))
            .sum(),
    );
    usage
}

/// Every limit of `quota` that `usage` exceeds, in words naming the
/// quota, the usage and the namespace.
pub fn exceeded(namespace: &Name, quota: &Quota, usage: &Usage) -> Vec<String> {
    let mut over = Vec::new();
    let mut check = |what: &str, limit: Option<u64>, used: u64, show: &dyn Fn(u64) -> String| {
        if let Some(limit) = limit
            && used > limit
        {
            over.push(format!(
                "namespace {namespace}'s {what} quota is {}, and this would make its usage {}",
                show(limit),
                show(used)
            ));
        }
    };
    let count = |n: u64| n.to_string();
    let size = |n: u64| ByteSize::bytes(n).to_string();
    check(
        "replicas",
        quota.replicas.map(u64::from),
        u64::from(usage.replicas),
        &count,
    );
    check(
        "memory",
        quota.memory.map(ByteSize::as_u64),
        usage.memory.as_u64(),
        &size,
    );
    check(
        "component-bytes",
        quota.component_bytes.map(ByteSize::as_u64),
        usage.component_bytes.as_u64(),
        &size,
    );
    check(
        "storage",
        quota.storage.map(ByteSize::as_u64),
        usage.storage.as_u64(),
        &size,
    );
    check(
        "secrets",
        quota.secrets.map(u64::from),
        u64::from(usage.secrets),
        &count,
    );
    over
}

/// The replicas `namespace` may still add under its quota, if it has a
/// replica or memory quota: each added replica of a pod reserving
/// `per_replica` bytes.
pub fn headroom(quota: &Quota, usage: &Usage, per_replica: u64) -> Option<u32> {
    let by_count = quota
        .replicas
        .map(|limit| limit.saturating_sub(usage.replicas));
    let by_memory = quota.memory.map(|limit| {
        let left = limit.as_u64().saturating_sub(usage.memory.as_u64());
        match per_replica {
            0 => u32::MAX,
            per => u32::try_from(left / per).unwrap_or(u32::MAX),
        }
    });
    match (by_count, by_memory) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Name {
        Name::new("team-a").unwrap_or_else(|e| unreachable!("{e}"))
    }

    #[test]
    fn exceeded_names_the_quota_and_the_usage() {
        let quota = Quota {
            replicas: Some(4),
            memory: Some(ByteSize::mib(256)),
            ..Quota::default()
        };
        let usage = Usage {
            replicas: 6,
            memory: ByteSize::mib(128),
            ..Usage::default()
        };
        let over = exceeded(&ns(), &quota, &usage);
        assert_eq!(
            over,
            vec!["namespace team-a's replicas quota is 4, and this would make its usage 6"]
        );
        let usage = Usage {
            replicas: 4,
            memory: ByteSize::mib(512),
            ..Usage::default()
        };
        let over = exceeded(&ns(), &quota, &usage);
        assert_eq!(over.len(), 1);
        assert!(over[0].contains("memory quota is 256MiB"), "{over:?}");
        assert!(over[0].contains("usage 512MiB"), "{over:?}");
    }

    #[test]
    fn headroom_is_the_tighter_of_count_and_memory() {
        let quota = Quota {
            replicas: Some(10),
            memory: Some(ByteSize::mib(100)),
            ..Quota::default()
        };
        let usage = Usage {
            replicas: 4,
            memory: ByteSize::mib(40),
            ..Usage::default()
        };
        assert_eq!(headroom(&quota, &usage, 20 << 20), Some(3));
        assert_eq!(headroom(&quota, &usage, 1 << 20), Some(6));
        assert_eq!(headroom(&Quota::default(), &usage, 1 << 20), None);
        let full = Usage {
            replicas: 12,
            ..usage
        };
        assert_eq!(headroom(&quota, &full, 1 << 20), Some(0));
    }
}
