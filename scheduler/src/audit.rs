//! The audit trail: every mutating API call, who made it and how it
//! ended, appended to a JetStream stream with a retention.
//!
//! A record is stored (acknowledged by JetStream) before the caller gets
//! its answer, so a call a client saw succeed is always in the trail.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use shoal_api::Name;
use shoal_api::resources::AuditRecord;
use shoal_api::subjects::{ALL_AUDIT, AUDIT_STREAM, audit};

use crate::SchedulerError;
use crate::jetstream::JetStream;
use crate::store::unavailable;
use crate::tunables::{AUDIT_LIST_LIMIT, AUDIT_MAX_AGE, AUDIT_MAX_BYTES, AUDIT_READ_TIMEOUT};

/// The audit stream.
#[derive(Clone)]
pub struct AuditTrail {
    js: jetstream::Context,
}

impl AuditTrail {
    /// Opens the stream, creating it where missing.
    pub async fn open(js: &JetStream) -> Result<AuditTrail, SchedulerError> {
        js.create_or_update_stream(js.stream(stream::Config {
            name: AUDIT_STREAM.to_string(),
            description: Some("Shoal audit trail: every mutating API call".into()),
            subjects: vec![ALL_AUDIT.to_string()],
            max_age: AUDIT_MAX_AGE,
            max_bytes: AUDIT_MAX_BYTES,
            storage: stream::StorageType::File,
            ..Default::default()
        }))
        .await
        .map_err(|e| unavailable("opening the audit stream", e))?;
        Ok(AuditTrail { js: (**js).clone() })
    }

    /// Appends `record` and waits until JetStream has stored it.
    pub async fn append(&self, record: &AuditRecord) -> Result<(), SchedulerError> {
        let payload =
            serde_json::to_vec(record).map_err(|e| SchedulerError::Internal(e.to_string()))?;
        let failed = |e: &dyn std::fmt::Display| unavailable("appending to the audit trail", e);
        self.js
            .publish(audit(record.namespace.as_ref()), payload.into())
            .await
            .map_err(|e| failed(&e))?
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    }

    /// Records since `since_ms`, oldest first: of one namespace when
    /// `namespace` is given, else of every namespace and the cluster. At
    /// most the newest [`AUDIT_LIST_LIMIT`].
    pub async fn list(
        &self,
        namespace: Option<&Name>,
        since_ms: u64,
    ) -> Result<Vec<AuditRecord>, SchedulerError> {
        let failed = |e: &dyn std::fmt::Display| unavailable("reading the audit trail", e);
        let mut stream = self
            .js
            .get_stream(AUDIT_STREAM)
            .await
            .map_err(|e| failed(&e))?;
        let subject = match namespace {
            Some(ns) => audit(Some(ns)),
            None => ALL_AUDIT.to_string(),
        };
        let start =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(since_ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: start },
                filter_subject: subject,
                ..Default::default()
            })
            .await
            .map_err(|e| failed(&e))?;
        let pending = stream.info().await.map_err(|e| failed(&e))?.state.messages;
        let mut records = std::collections::VecDeque::new();
        let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
        let mut read = 0;
        while read < pending {
            match tokio::time::timeout(AUDIT_READ_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(msg))) => {
                    read += 1;
                    if let Ok(record) = serde_json::from_slice::<AuditRecord>(&msg.payload) {
                        if records.len() == AUDIT_LIST_LIMIT {
                            records.pop_front();
                        }
                        records.push_back(record);
                    }
                    if msg.info().is_ok_and(|info| info.pending == 0) {
                        break;
                    }
                }
                _ => break,
            }
        }
        Ok(records.into())
    }
}
