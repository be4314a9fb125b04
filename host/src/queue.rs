//! Queue workers: a replica consumes its component's JetStream work queue
//! through the durable pull consumer its replicas share.
//!
//! A replica pulls only what it has free concurrency for: it holds a
//! permit per invocation it may run, and each pull request asks for as
//! many messages as it holds free permits, so a fast or early replica
//! cannot take a burst that others would share. Every message pulled
//! starts at once; a long invocation tells JetStream it is still at work
//! ([`QUEUE_PROGRESS_INTERVAL`]), so its message is not handed to another
//! replica meanwhile. When the replica stops, messages still arriving for
//! its last pull are handed back at once (nak), not left to time out.
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
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::component::LoadedComponent;
use crate::serving::Gate;
use crate::{InvokeError, Message};

use crate::tunables::{
    QUEUE_FIRST_BACKOFF as FIRST_BACKOFF, QUEUE_MAX_BACKOFF as MAX_BACKOFF,
    QUEUE_PROGRESS_INTERVAL, QUEUE_PULL_WAIT, QUEUE_RETRY as RETRY,
};

/// Consumes `component`'s queue while `gate` is open, each message a task
/// of `tracker`. Returns once the gate's sender is gone.
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
    let concurrency = usize::try_from(component.limits().concurrency)
        .unwrap_or(64)
        .clamp(1, 256);
    let free = Arc::new(Semaphore::new(concurrency));
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let consumer = async {
            let stream = js
                .get_stream(&stream_name)
                .await
                .map_err(|e| e.to_string())?;
            stream
                .get_consumer::<consumer::pull::Config>(subjects::QUEUE_CONSUMER)
                .await
                .map_err(|e| e.to_string())
        }
        .await;
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::warn!(replica = %replica, queue = stream_name, error = %e, "queue not reachable; retrying");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        loop {
            // Free concurrency first, then as many messages as it allows.
            let first = tokio::select! {
                permit = free.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => return,
                },
                closed = gate.wait_for(|open| !*open) => {
                    if closed.is_err() {
                        return;
                    }
                    break;
                }
            };
            let mut held: Vec<OwnedSemaphorePermit> = vec![first];
            while let Ok(permit) = free.clone().try_acquire_owned() {
                held.push(permit);
            }
            let pulled = consumer
                .batch()
                .max_messages(held.len())
                .expires(QUEUE_PULL_WAIT)
                .messages()
                .await;
            let mut pulled = match pulled {
                Ok(pulled) => pulled,
                Err(e) => {
                    tracing::debug!(error = %e, "queue pull failed; trying again");
                    tokio::time::sleep(RETRY).await;
                    break;
                }
            };
            let mut stopping = false;
            loop {
                let next = tokio::select! {
                    next = pulled.next() => next,
                    closed = gate.wait_for(|open| !*open) => {
                        if closed.is_err() {
                            return;
                        }
                        stopping = true;
                        break;
                    }
                };
                match next {
                    Some(Ok(msg)) => {
                        let Some(permit) = held.pop() else {
                            // More than asked for: not this replica's to run.
                            hand_back(&msg).await;
                            continue;
                        };
                        let (js, component, dead) = (js.clone(), component.clone(), dead.clone());
                        tracker.spawn(async move {
                            handle(&js, &component, &dead, msg, max_deliver).await;
                            drop(permit);
                        });
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "queue pull hiccup");
                        break;
                    }
                    None => break,
                }
            }
            if stopping {
                // Whatever still arrives for this pull was never started:
                // back to the queue for another replica, at once.
                while let Ok(Some(Ok(msg))) =
                    tokio::time::timeout(QUEUE_PULL_WAIT, pulled.next()).await
                {
                    hand_back(&msg).await;
                }
                break;
            }
            // Permits of messages that did not come are free again here.
        }
    }
}

/// Returns a message this replica will not run to the queue at once.
async fn hand_back(msg: &jetstream::Message) {
    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "hand-back not sent; JetStream will redeliver after the ack wait");
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
    // Still at work: a long invocation keeps its message from being
    // handed to another replica after the ack wait.
    let invoke = component.invoke(message);
    tokio::pin!(invoke);
    let outcome = loop {
        tokio::select! {
            outcome = &mut invoke => break outcome,
            () = tokio::time::sleep(QUEUE_PROGRESS_INTERVAL) => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "in-progress ack not sent");
                }
            }
        }
    };
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
