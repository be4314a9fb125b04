//! Queue workers: a replica consumes its component's JetStream work queue
//! through the durable pull consumer its replicas share.
//!
//! A message is acked only after the guest returns `Ok`. A trap or a
//! `failed` error hands it back with a growing delay; `invalid-input`, or
//! the last of `max_deliver` attempts, sends it to the component's
//! dead-letter subject (kept in a stream) with the reason. A replica or host
//! that dies holding messages never acks them, and JetStream redelivers them
//! to another replica after the consumer's ack wait.

use std::sync::Arc;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use shoal_api::Name;
use shoal_api::subjects::{self, headers};
use shoal_api::wire::ReplicaId;
use tokio_util::task::TaskTracker;

use crate::component::LoadedComponent;
use crate::serving::Gate;
use crate::{InvokeError, Message};

use crate::tunables::{
    QUEUE_FIRST_BACKOFF as FIRST_BACKOFF, QUEUE_MAX_BACKOFF as MAX_BACKOFF, QUEUE_RETRY as RETRY,
};

/// Consumes `component`'s queue while `gate` is open, each message a task
/// of `tracker`. Returns once the gate's sender is gone. Messages pulled
/// but not yet handed out when the gate closes are redelivered by
/// JetStream after the consumer's ack wait.
pub(crate) async fn consume(
    nats: async_nats::Client,
    replica: ReplicaId,
    name: Name,
    component: Arc<LoadedComponent>,
    max_deliver: u32,
    mut gate: Gate,
    tracker: TaskTracker,
) {
    let js = jetstream::new(nats);
    let stream_name = subjects::queue_stream(&replica.namespace, &replica.app, &name);
    let dead = subjects::dead_letters(&replica.namespace, &replica.app, &name);
    let batch = usize::try_from(component.limits().concurrency)
        .unwrap_or(64)
        .clamp(1, 256);
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let messages = async {
            let stream = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| e.to_string())?;
            let consumer: consumer::PullConsumer = stream
                .get_consumer(subjects::QUEUE_CONSUMER)
                .await
                .map_err(|e| e.to_string())?;
            consumer
                .stream()
                .max_messages_per_batch(batch)
                .messages()
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let mut messages = match messages {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(replica = %replica, queue = stream_name, error = %e, "queue not reachable; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                closed = gate.wait_for(|open| !*open) => {
                    if closed.is_err() {
                        return;
                    }
                    break;
                }
            };
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "queue stream hiccup");
                    continue;
                }
                None => {
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            };
            let (js, component, dead) = (js.clone(), component.clone(), dead.clone());
            tracker.spawn(async move {
                handle(&js, &component, &dead, msg, max_deliver).await;
            });
        }
    }
}

async fn handle(
    js: &jetstream::Context,
    component: &LoadedComponent,
    dead: &str,
    msg: jetstream::Message,
    max_deliver: u32,
) {
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1).max(1) as u32;
    let message = Message {
        subject: msg.subject.to_string(),
        headers: headers::to_pairs(msg.headers.as_ref()),
        payload: msg.payload.to_vec(),
    };
    let outcome = component.invoke(message).await;
    let result = match outcome {
        Ok(_) => msg.ack().await,
        Err(err) if matches!(err, InvokeError::InvalidInput(_)) || delivered >= max_deliver => {
            let mut h = async_nats::HeaderMap::new();
            h.insert(headers::DEAD_SUBJECT, msg.subject.as_str());
            h.insert(headers::DEAD_REASON, err.to_string().as_str());
            h.insert(headers::DEAD_DELIVERIES, delivered.to_string().as_str());
            match js
                .publish_with_headers(dead.to_string(), h, msg.payload.clone())
                .await
            {
                Ok(ack) => {
                    if let Err(e) = ack.await {
                        tracing::warn!(error = %e, "dead letter not stored; the message will be redelivered");
                        return;
                    }
                    tracing::warn!(component = component.name(), deliveries = delivered, error = %err, "message dead-lettered");
                    msg.ack_with(AckKind::Term).await
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dead letter not sent; the message will be redelivered");
                    return;
                }
            }
        }
        Err(err) => {
            let shift = delivered.saturating_sub(1).min(16);
            let delay = (FIRST_BACKOFF * 2u32.pow(shift)).min(MAX_BACKOFF);
            tracing::debug!(component = component.name(), deliveries = delivered, error = %err, ?delay, "message handed back");
            msg.ack_with(AckKind::Nak(Some(delay))).await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "ack not sent; JetStream will redeliver");
    }
}
