//! Serving HTTP components: one listener, requests routed to components by
//! path prefix.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use shoal_api::subjects::headers;
use shoal_api::wire::CommandReply;

use crate::component::LoadedComponent;
use crate::error::InvokeError;
use crate::invoke::{HttpResponse, text_response};
use crate::tunables::{ACTIVATION_POLL, ACTIVATION_WAIT, HTTP_DRAIN};

/// Where a request goes.
pub enum Target {
    /// A replica on this host.
    Local(Arc<LoadedComponent>),
    /// Replicas elsewhere, reached over NATS.
    Remote {
        /// The connection.
        nats: async_nats::Client,
        /// The component's HTTP subject.
        subject: String,
        /// `namespace/app/component`, for messages.
        name: String,
    },
    /// A route that exists, with no replica ready to serve it.
    Unready(String),
    /// A component scaled to zero: ask the scheduler for a replica, then
    /// wait for it.
    Dormant {
        /// The connection.
        nats: async_nats::Client,
        /// What to ask for.
        activate: shoal_api::wire::Activate,
    },
}

/// Finds where a request goes.
pub trait Routes: Send + Sync + 'static {
    /// The target for `path` on `host`, if any route matches.
    fn route(&self, host: Option<&str>, path: &str) -> Option<Target>;

    /// This host's id, stamped on the responses its replicas serve.
    fn served_by(&self) -> Option<&str> {
        None
    }
}

/// Every path goes to one component: `shoal run --http`.
pub struct SingleRoute(pub Arc<LoadedComponent>);

impl Routes for SingleRoute {
    fn route(&self, _host: Option<&str>, _path: &str) -> Option<Target> {
        Some(Target::Local(self.0.clone()))
    }
}

/// Accepts connections on `listener` and serves them until `shutdown`
/// completes, then waits up to [`HTTP_DRAIN`] for requests in flight.
pub async fn serve(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 with keep-alive is what ingress traffic speaks; skipping
    // protocol sniffing keeps the per-connection cost down.
    let mut builder = http1::Builder::new();
    builder.keep_alive(true);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Running out of file descriptors and the like pass; keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses go out in several writes: do not let Nagle hold them.
        let _ = stream.set_nodelay(true);
        let routes = routes.clone();
        let service = service_fn(move |req| {
            let routes = routes.clone();
            async move { Ok::<_, Infallible>(dispatch(routes.as_ref(), req).await) }
        });
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(HTTP_DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in flight after {HTTP_DRAIN:?}; closing them");
    }
    Ok(())
}

async fn dispatch(routes: &dyn Routes, req: hyper::Request<Incoming>) -> HttpResponse {
    let host = req
        .headers()
        .get(hyper::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.split(':').next().unwrap_or(h).to_string());
    let path = req.uri().path().to_string();
    let target = match routes.route(host.as_deref(), &path) {
        Some(Target::Dormant { nats, activate }) => {
            Some(wake(routes, &nats, &activate, host.as_deref(), &path).await)
        }
        other => other,
    };
    match target {
        None => text_response(404, format!("no component serves {path}\n")),
        Some(Target::Unready(name)) => text_response(
            503,
            format!("no replica of {name} is ready to serve {path}; try again shortly\n"),
        ),
        Some(Target::Local(component)) => match component.handle_http(req).await {
            Ok(mut response) => {
                if let Some(Ok(me)) = routes.served_by().map(hyper::header::HeaderValue::from_str) {
                    response.headers_mut().insert(headers::SERVED_BY, me);
                }
                response
            }
            Err(err) => {
                tracing::warn!(component = component.name(), error = %err, "request failed");
                text_response(
                    error_status(&err),
                    format!("component {} failed: {err}\n", component.name()),
                )
            }
        },
        Some(Target::Remote {
            nats,
            subject,
            name,
        }) => crate::forward::forward(&nats, subject, &name, req).await,
        Some(Target::Dormant { activate, .. }) => text_response(
            503,
            format!(
                "{}/{}/{} is scaled to zero and did not wake; try again shortly\n",
                activate.namespace, activate.app, activate.component
            ),
        ),
    }
}

/// Asks the scheduler to wake a component scaled to zero, then waits (up
/// to [`ACTIVATION_WAIT`]) until a replica of it is ready somewhere: the
/// request that woke it is held, not refused.
async fn wake(
    routes: &dyn Routes,
    nats: &async_nats::Client,
    activate: &shoal_api::wire::Activate,
    host: Option<&str>,
    path: &str,
) -> Target {
    let name = format!(
        "{}/{}/{}",
        activate.namespace, activate.app, activate.component
    );
    let asked = async {
        let payload = serde_json::to_vec(activate).map_err(|e| e.to_string())?;
        let request = async_nats::Request::new()
            .payload(payload.into())
            .timeout(Some(ACTIVATION_WAIT));
        let reply = nats
            .send_request(shoal_api::subjects::ACTIVATE, request)
            .await
            .map_err(|e| format!("the scheduler did not answer: {e}"))?;
        match serde_json::from_slice::<CommandReply>(&reply.payload) {
            Ok(CommandReply::Ok) => Ok(()),
            Ok(CommandReply::Failed { reason }) => Err(reason),
            Err(e) => Err(format!("the scheduler answered nonsense: {e}")),
        }
    };
    if let Err(why) = asked.await {
        tracing::warn!(component = name, error = %why, "cannot wake a component scaled to zero");
        return Target::Unready(name);
    }
    let deadline = tokio::time::Instant::now() + ACTIVATION_WAIT;
    while tokio::time::Instant::now() < deadline {
        match routes.route(host, path) {
            Some(found @ (Target::Local(_) | Target::Remote { .. })) => return found,
            _ => tokio::time::sleep(ACTIVATION_POLL).await,
        }
    }
    Target::Unready(name)
}

/// The status a failed invocation answers with.
fn error_status(err: &InvokeError) -> u16 {
    match err {
        InvokeError::Deadline { .. } => 504,
        InvokeError::WrongKind { .. } => 404,
        _ => 500,
    }
}
