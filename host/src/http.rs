//! Serving HTTP components: one listener, requests routed to components by
//! path prefix.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::component::LoadedComponent;
use crate::error::InvokeError;
use crate::invoke::{HttpResponse, text_response};
use crate::tunables::HTTP_DRAIN;

/// Finds the component serving a request.
pub trait Routes: Send + Sync + 'static {
    /// The component for `path` on `host`, if any serves it.
    fn route(&self, host: Option<&str>, path: &str) -> Option<Arc<LoadedComponent>>;
}

/// Every path goes to one component: `shoal run --http`.
pub struct SingleRoute(pub Arc<LoadedComponent>);

impl Routes for SingleRoute {
    fn route(&self, _host: Option<&str>, _path: &str) -> Option<Arc<LoadedComponent>> {
        Some(self.0.clone())
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
    let builder = auto::Builder::new(TokioExecutor::new());
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
        let routes = routes.clone();
        let service = service_fn(move |req| {
            let routes = routes.clone();
            async move { Ok::<_, Infallible>(dispatch(routes.as_ref(), req).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
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
    let Some(component) = routes.route(host.as_deref(), &path) else {
        return text_response(404, format!("no component serves {path}\n"));
    };
    match component.handle_http(req).await {
        Ok(response) => response,
        Err(err) => {
            tracing::warn!(component = component.name(), error = %err, "request failed");
            text_response(
                error_status(&err),
                format!("component {} failed: {err}\n", component.name()),
            )
        }
    }
}

/// The status a failed invocation answers with.
fn error_status(err: &InvokeError) -> u16 {
    match err {
        InvokeError::Deadline { .. } => 504,
        InvokeError::WrongKind { .. } => 404,
        _ => 500,
    }
}
