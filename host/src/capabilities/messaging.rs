//! Messaging: publish to the subjects the spec allows, and call other
//! components of the same app by name.
//!
//! Subjects are relative to the app's namespace: a guest's `orders.new`
//! goes out as `ns.<namespace>.orders.new`, so Shoal's own subjects,
//! JetStream's, inboxes and other namespaces cannot be named at all. The
//! host's NATS credential allows only `ns.>` for such publishes, so even a
//! bug here could not reach `shoal.>`.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::KeyValue;
use shoal_api::subjects::{self, headers};
use shoal_api::trace::TRACEPARENT;
use shoal_api::{MessagingGrant, Name};

use wasmtime::component::{HasSelf, Linker};

use super::{Capability, GrantContext, HostContext};
use crate::bindings;
use crate::bindings::messaging::{Error, Host};
use crate::bindings::types::Message;
use crate::state::InvocationState;
use crate::trace::{CallContext, CallSite, Span, SpanKind};

/// The messaging provider of one invocation.
pub struct Messaging {
    call: Arc<CallContext>,
    grant: Option<MessagingGrant>,
    cluster: Option<ClusterLink>,
    /// A shadow's: nothing it sends leaves the host.
    held_back: bool,
}

impl Messaging {
    /// Publishing under `grant`, calls within the app of `cluster`, made
    /// in `call`.
    pub fn new(
        call: Arc<CallContext>,
        grant: Option<MessagingGrant>,
        cluster: Option<ClusterLink>,
    ) -> Self {
        Messaging {
            call,
            grant,
            cluster,
            held_back: false,
        }
    }

    /// Refuses every message, for a shadow replica: only the stable
    /// replicas' messages may take effect.
    pub fn held_back(mut self, held_back: bool) -> Self {
        self.held_back = held_back;
        self
    }

    fn refuse_if_held_back(&self) -> Result<(), Error> {
        if self.held_back {
            return Err(Error::NotAllowed(format!(
                "component {} runs as a shadow: its messages are held back, so that only the stable replicas' take effect",
                self.call.component()
            )));
        }
        Ok(())
    }

    fn cluster(&self) -> Result<&ClusterLink, Error> {
        self.cluster.as_ref().ok_or_else(|| {
            Error::NotAllowed(format!(
                "component {} runs outside a cluster: messaging needs one (`shoal up`)",
                self.call.component()
            ))
        })
    }

    /// The guest's headers as NATS headers, carrying `span`'s trace
    /// context unless the guest set a `traceparent` of its own.
    fn headers(pairs: &[(String, String)], span: &Span) -> Result<async_nats::HeaderMap, Error> {
        let mut map = headers::from_pairs(pairs).map_err(Error::NotAllowed)?;
        if map.get(TRACEPARENT).is_none() {
            map.insert(TRACEPARENT, span.context().to_string().as_str());
        }
        Ok(map)
    }

    async fn publish_now(&self, msg: Message) -> Result<(), Error> {
        self.refuse_if_held_back()?;
        if let Err(why) = shoal_api::check_user_subject(&msg.subject, false) {
            return Err(Error::NotAllowed(format!(
                "component {} may not publish to {:?}: {why}",
                self.call.component(),
                msg.subject
            )));
        }
        if !self.grant.as_ref().is_some_and(|g| g.allows(&msg.subject)) {
            return Err(Error::NotAllowed(format!(
                "component {} may not publish to {:?}: allow it with `messaging = {{ publish = [...] }}` in its app spec",
                self.call.component(),
                msg.subject
            )));
        }
        let cluster = self.cluster()?;
        // The namespace comes from the app, never from the guest: whatever
        // the guest names lands inside its own namespace's space.
        let subject = subjects::user_subject(&cluster.namespace, &msg.subject);
        let mut span = Span::start(SpanKind::Producer, Some(self.call.trace()), || {
            (
                "publish".into(),
                vec![KeyValue::new("messaging.destination.name", subject.clone())],
            )
        });
        let sent = cluster
            .nats
            .publish_with_headers(
                subject,
                Messaging::headers(&msg.headers, &span)?,
                msg.payload.into(),
            )
            .await
            .map_err(|e| Error::Failed(format!("publishing failed: {e}")));
        if let Err(e) = &sent {
            span.fail(e);
        }
        sent
    }

    async fn request_now(
        &self,
        target: &str,
        msg: Message,
        timeout_ms: u32,
    ) -> Result<Message, Error> {
        self.refuse_if_held_back()?;
        let cluster = self.cluster()?;
        let name = Name::new(target).map_err(|e| Error::NotAllowed(e.to_string()))?;
        let subject = subjects::invoke(&cluster.namespace, &cluster.app, &name);
        let mut span = Span::start(SpanKind::Client, Some(self.call.trace()), || {
            (
                format!("call {target}").into(),
                vec![KeyValue::new("shoal.component", target.to_string())],
            )
        });
        let request = async_nats::Request::new()
            .headers(Messaging::headers(&msg.headers, &span)?)
            .payload(msg.payload.into())
            .timeout(Some(Duration::from_millis(u64::from(timeout_ms.max(1)))));
        let reply = cluster
            .nats
            .send_request(subject, request)
            .await
            .map_err(|e| match e.kind() {
                async_nats::RequestErrorKind::NoResponders => Error::NoResponders(format!(
                    "no replica of {target} in app {} is running",
                    cluster.app
                )),
                async_nats::RequestErrorKind::TimedOut => {
                    Error::Timeout(format!("{target} did not answer within {timeout_ms} ms"))
                }
                _ => Error::Failed(format!("calling {target} failed: {e}")),
            });
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                span.fail(&e);
                return Err(e);
            }
        };
        let reply_headers = headers::to_pairs(reply.headers.as_ref());
        if reply_headers.iter().any(|(k, _)| k == headers::ERROR) {
            let why = String::from_utf8_lossy(&reply.payload).into_owned();
            span.fail(&why);
            return Err(Error::Failed(why));
        }
        Ok(Message {
            subject: reply.subject.to_string(),
            headers: reply_headers,
            payload: reply.payload.to_vec(),
        })
    }
}

impl Host for Messaging {
    async fn publish(&mut self, msg: Message) -> Result<(), Error> {
        let subject = msg.subject.clone();
        let site = CallSite {
            capability: "messaging",
            function: "publish",
            target: &subject,
            sent_bytes: msg.payload.len(),
        };
        let call = self.call.clone();
        call.record(site, |_| 0, self.publish_now(msg)).await
    }

    async fn request(
        &mut self,
        target: String,
        msg: Message,
        timeout_ms: u32,
    ) -> Result<Message, Error> {
        let site = CallSite {
            capability: "messaging",
            function: "request",
            target: &target,
            sent_bytes: msg.payload.len(),
        };
        let received = |reply: &Message| reply.payload.len();
        let call = self.call.clone();
        call.record(site, received, self.request_now(&target, msg, timeout_ms))
            .await
    }
}

/// The cluster a component runs in: how it reaches other components.
#[derive(Clone)]
pub struct ClusterLink {
    /// The NATS connection.
    pub nats: async_nats::Client,
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
}

/// What one component may do with messaging.
#[derive(Clone, Default)]
pub struct MessagingGranted {
    /// Subjects it may publish to, relative to its namespace.
    pub publish: Option<MessagingGrant>,
    /// Its app in the cluster; `None` under `shoal run`.
    pub cluster: Option<ClusterLink>,
    /// A shadow replica's: every message is refused.
    pub held_back: bool,
}

/// The messaging capability.
pub struct MessagingCapability {
    nats: Option<async_nats::Client>,
}

impl Capability for MessagingCapability {
    const NAME: &'static str = "messaging";
    type Grant = MessagingGranted;
    type Provider = Messaging;

    fn new(host: Option<&HostContext>) -> Self {
        MessagingCapability {
            nats: host.map(|h| h.nats.clone()),
        }
    }

    fn grant(&self, ctx: &GrantContext<'_>) -> Result<Self::Grant, String> {
        let cluster = match (&self.nats, ctx.replica) {
            (Some(nats), Some(replica)) => Some(ClusterLink {
                nats: nats.clone(),
                namespace: replica.namespace.clone(),
                app: replica.app.clone(),
            }),
            _ => None,
        };
        Ok(MessagingGranted {
            publish: ctx.spec.messaging.clone(),
            cluster,
            held_back: ctx.replica.is_some_and(|r| r.is_shadow()),
        })
    }

    fn add_to_linker(linker: &mut Linker<InvocationState>) -> wasmtime::Result<()> {
        bindings::messaging::add_to_linker::<_, HasSelf<Messaging>>(linker, |s| {
            &mut s.caps.messaging
        })
    }

    fn bind(call: &Arc<CallContext>, grant: &Self::Grant) -> Self::Provider {
        Messaging::new(call.clone(), grant.publish.clone(), grant.cluster.clone())
            .held_back(grant.held_back)
    }
}
