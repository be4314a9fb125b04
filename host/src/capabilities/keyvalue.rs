//! Key-value: a bucket private to the app, on NATS KV. The bucket's name
//! is derived from the app's own namespace and name, so one app cannot
//! name another's.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio::sync::OnceCell;

use shoal_api::subjects;
use wasmtime::component::{HasSelf, Linker};

use super::{Capability, GrantContext, HostContext};
use crate::bindings;
use crate::bindings::keyvalue::{Error, Host};
use crate::state::InvocationState;
use crate::trace::{CallContext, CallSite};

/// An app's bucket, opened on first use and shared by its invocations.
pub struct Bucket {
    nats: async_nats::Client,
    name: String,
    store: OnceCell<kv::Store>,
}

impl Bucket {
    /// The bucket called `name`.
    pub fn new(nats: async_nats::Client, name: String) -> Self {
        Bucket {
            nats,
            name,
            store: OnceCell::new(),
        }
    }

    async fn store(&self) -> Result<&kv::Store, Error> {
        self.store
            .get_or_try_init(|| async {
                // The scheduler creates the bucket, with its size limits,
                // when the app is applied; a host may only open it.
                async_nats::jetstream::new(self.nats.clone())
                    .get_key_value(self.name.clone())
                    .await
                    .map_err(|e| Error::Unavailable(format!("opening the app's bucket: {e}")))
            })
            .await
    }
}

/// The key-value provider of one invocation.
pub struct KeyValue {
    call: Arc<CallContext>,
    bucket: Option<Arc<Bucket>>,
}

impl KeyValue {
    /// Access to `bucket`, if granted, in `call`.
    pub fn new(call: Arc<CallContext>, bucket: Option<Arc<Bucket>>) -> Self {
        KeyValue { call, bucket }
    }

    fn site<'a>(function: &'static str, key: &'a str, sent_bytes: usize) -> CallSite<'a> {
        CallSite {
            capability: "keyvalue",
            function,
            target: key,
            sent_bytes,
        }
    }

    async fn store(&self, key: Option<&str>) -> Result<&kv::Store, Error> {
        let Some(bucket) = &self.bucket else {
            return Err(Error::NotGranted(format!(
                "component {} has no key-value access: add `keyvalue = true` to its app spec (in a cluster)",
                self.call.component()
            )));
        };
        if let Some(key) = key
            && !valid_key(key)
        {
            return Err(Error::InvalidKey(format!(
                "{key:?}: use letters, digits, '-', '_', '/', '=' and '.', not starting or ending with '.'"
            )));
        }
        bucket.store().await
    }
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && !key.starts_with('.')
        && !key.ends_with('.')
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_/=.".contains(c))
}

fn unavailable(e: impl std::fmt::Display) -> Error {
    Error::Unavailable(e.to_string())
}

impl Host for KeyValue {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, Error> {
        let get = async {
            let store = self.store(Some(&key)).await?;
            Ok(store
                .get(key.as_str())
                .await
                .map_err(unavailable)?
                .map(|b| b.to_vec()))
        };
        let site = KeyValue::site("get", &key, 0);
        let received = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        self.call.record(site, received, get).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), Error> {
        let size = value.len();
        let set = async {
            let store = self.store(Some(&key)).await?;
            store.put(key.as_str(), value.into()).await.map_err(|e| {
                // JetStream refuses a put past the bucket's size limits; say so
                // in the guest's terms.
                let text = e.to_string();
                if text.contains("maximum bytes") || text.contains("message size") || text.contains("resources") {
                    Error::Unavailable(format!(
                        "the app's key-value bucket is full or the value ({size} bytes) is too large: delete keys you no longer need ({text})"
                    ))
                } else {
                    unavailable(e)
                }
            })?;
            Ok(())
        };
        self.call
            .record(KeyValue::site("set", &key, size), |_| 0, set)
            .await
    }

    async fn delete(&mut self, key: String) -> Result<(), Error> {
        let delete = async {
            let store = self.store(Some(&key)).await?;
            store.delete(key.as_str()).await.map_err(unavailable)
        };
        self.call
            .record(KeyValue::site("delete", &key, 0), |_| 0, delete)
            .await
    }

    async fn list_keys(&mut self) -> Result<Vec<String>, Error> {
        let list = async {
            let store = self.store(None).await?;
            let mut keys = store.keys().await.map_err(unavailable)?;
            let mut out = Vec::new();
            while let Some(key) = keys.next().await {
                out.push(key.map_err(unavailable)?);
            }
            out.sort();
            Ok(out)
        };
        let received = |keys: &Vec<String>| keys.iter().map(String::len).sum();
        self.call
            .record(KeyValue::site("list-keys", "", 0), received, list)
            .await
    }
}

/// The key-value capability: each app's bucket, opened once per host.
pub struct KeyValueCapability {
    nats: Option<async_nats::Client>,
    buckets: Mutex<HashMap<String, Arc<Bucket>>>,
}

impl Capability for KeyValueCapability {
    const NAME: &'static str = "keyvalue";
    type Grant = Option<Arc<Bucket>>;
    type Provider = KeyValue;

    fn new(host: Option<&HostContext>) -> Self {
        KeyValueCapability {
            nats: host.map(|h| h.nats.clone()),
            buckets: Mutex::default(),
        }
    }

    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String> {
        let (Some(_), Some(nats), Some(replica)) = (&ctx.spec.keyvalue, &self.nats, ctx.replica)
        else {
            return Ok(None);
        };
        // A shadow's writes go to a scratch bucket of their own: the app's
        // data changes only by the stable replicas.
        let name = if replica.is_shadow() {
            subjects::shadow_bucket(&replica.namespace, &replica.app)
        } else {
            subjects::app_bucket(&replica.namespace, &replica.app)
        };
        let bucket = self
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.clone())
            .or_insert_with(|| Arc::new(Bucket::new(nats.clone(), name)))
            .clone();
        Ok(Some(bucket))
    }

    fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        bindings::keyvalue::add_to_linker::<_, HasSelf<KeyValue>>(linker, |s| &mut s.caps.keyvalue)
    }

    fn bind(call: &Arc<CallContext>, grant: &Self::Grant) -> Self::Provider {
        KeyValue::new(call.clone(), grant.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::valid_key;

    #[test]
    fn keys_follow_nats_rules() {
        assert!(valid_key("orders/42"));
        assert!(valid_key("a.b-c_d=e"));
        assert!(!valid_key(""));
        assert!(!valid_key(".a"));
        assert!(!valid_key("a b"));
        assert!(!valid_key("a*"));
    }
}
