//! How a replica takes work from NATS: queue-group subscriptions that are
//! open only while the replica is ready.
//!
//! A replica's readiness is a [`Gate`]. While it is open the replica is in
//! its queue groups and NATS spreads requests over it and its peers; when
//! it closes (a failed readiness check, a stop) the subscription is
//! drained: the server stops routing to it at once, and requests already on
//! their way are still answered. Every request runs as a task of the
//! replica's [`TaskTracker`], so a graceful stop can wait for them.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use shoal_api::subjects::headers;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

use crate::Message;
use crate::component::LoadedComponent;
use crate::trace::HostCallLog;
use shoal_api::trace::HostCalls;

/// Open while the replica takes work. Dropping the sender closes it for good.
pub(crate) type Gate = watch::Receiver<bool>;

use crate::tunables::RESUBSCRIBE;

/// Takes messages on `subject` in queue group `group` while `gate` is open,
/// handing each to `handle` as a task of `tracker`. Returns once the gate's
/// sender is gone and the last subscription is drained.
pub(crate) async fn serve_gated<H, F>(
    nats: async_nats::Client,
    subject: String,
    group: String,
    mut gate: Gate,
    tracker: TaskTracker,
    handle: H,
) where
    H: Fn(async_nats::Message) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    loop {
        if gate.wait_for(|open| *open).await.is_err() {
            return;
        }
        let mut sub = match nats.queue_subscribe(subject.clone(), group.clone()).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::warn!(subject, error = %e, "cannot subscribe; retrying");
                tokio::time::sleep(RESUBSCRIBE).await;
                continue;
            }
        };
        let closed_for_good = loop {
            tokio::select! {
                msg = sub.next() => match msg {
                    Some(msg) => {
                        tracker.spawn(handle(msg));
                    }
                    None => break false,
                },
                closed = gate.wait_for(|open| !*open) => break closed.is_err(),
            }
        };
        // Leave the group, but answer what is already on its way.
        if sub.drain().await.is_ok() {
            while let Some(msg) = sub.next().await {
                tracker.spawn(handle(msg));
            }
        }
        if closed_for_good {
            return;
        }
    }
}

/// Answers one invocation of a worker replica.
pub(crate) async fn answer_invocation(
    nats: async_nats::Client,
    component: Arc<LoadedComponent>,
    msg: async_nats::Message,
    replica: Arc<str>,
) {
    let Some(reply_to) = msg.reply.clone() else {
        return;
    };
    let message = Message {
        subject: msg.subject.to_string(),
        headers: headers::to_pairs(msg.headers.as_ref()),
        payload: msg.payload.to_vec(),
    };
    let traced = msg
        .headers
        .as_ref()
        .is_some_and(|h| h.get(headers::TRACE_CALLS).is_some());
    let log = traced.then(HostCallLog::default);
    let (mut out, payload) = match component.invoke_recorded(message, log.clone()).await {
        Ok((reply, _)) => match headers::from_pairs(&reply.headers) {
            Ok(map) => (map, reply.payload),
            Err(why) => {
                let mut out = async_nats::HeaderMap::new();
                out.insert(headers::ERROR, "failed");
                (
                    out,
                    format!("the reply's headers are malformed: {why}").into_bytes(),
                )
            }
        },
        Err(err) => {
            let mut out = async_nats::HeaderMap::new();
            out.insert(headers::ERROR, err.label());
            (out, err.to_string().into_bytes())
        }
    };
    out.insert(headers::REPLICA, replica.as_ref());
    if let Some(log) = log {
        let (calls, dropped) = log.take();
        match serde_json::to_string(&HostCalls { calls, dropped }) {
            Ok(json) => out.insert(headers::HOST_CALLS, json.as_str()),
            Err(e) => tracing::debug!(error = %e, "host calls not sent"),
        }
    }
    if let Err(e) = nats
        .publish_with_headers(reply_to, out, payload.into())
        .await
    {
        tracing::debug!(error = %e, "reply not sent");
    }
}
