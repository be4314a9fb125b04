//! Serving HTTP components: one listener, requests routed to components by
//! path prefix.
//!
//! The listener bounds what clients can hold: a cap on open connections,
//! a timeout for a request's headers and one for an idle keep-alive
//! connection ([`IngressLimits`]), with what it refused counted in
//! [`IngressStats`].

use opentelemetry::KeyValue;
use shoal_api::trace::TRACEPARENT;

use crate::trace::{Span, SpanKind, parse_traceparent};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};

use shoal_api::subjects::headers;
use shoal_api::wire::CommandReply;

use crate::component::LoadedComponent;
use crate::error::InvokeError;
use crate::invoke::{HttpResponse, text_response};
use crate::tunables::{
    ACCEPT_RETRY, ACTIVATION_POLL, ACTIVATION_WAIT, HTTP_DRAIN, HTTP_HEADER_READ_TIMEOUT,
    HTTP_IDLE_TIMEOUT, HTTP_MAX_CONNECTIONS, HTTP_REFUSED_LOG_INTERVAL, MAX_HTTP_BODY,
};

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
        /// Where to send it instead when nothing answers on `subject`: the
        /// stable replicas, for a canary that is stopping.
        fallback: Option<String>,
    },
    /// A route that exists, with no replica ready to serve it.
    Unready(String),
    /// The stable replicas' target (local or remote), with a copy of the
    /// request for a shadow.
    Mirrored {
        /// Where the request goes: the caller gets this answer.
        primary: Box<Target>,
        /// Where its copy goes.
        shadow: crate::shadow::ShadowCopy,
    },
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

/// How an ingress bounds its connections. [`Default`] takes the values in
/// [`tunables`](crate::tunables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngressLimits {
    /// Connections open at once; more are refused ([`HTTP_MAX_CONNECTIONS`]).
    pub max_connections: usize,
    /// Time from a request's first byte to the end of its headers
    /// ([`HTTP_HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// Time a connection may wait, with no request in flight, for the first
    /// byte of the next one ([`HTTP_IDLE_TIMEOUT`]).
    pub idle_timeout: Duration,
}

impl Default for IngressLimits {
    fn default() -> Self {
        IngressLimits {
            max_connections: HTTP_MAX_CONNECTIONS,
            header_read_timeout: HTTP_HEADER_READ_TIMEOUT,
            idle_timeout: HTTP_IDLE_TIMEOUT,
        }
    }
}

/// What an ingress counts, for metrics and tests.
#[derive(Debug, Default)]
pub struct IngressStats {
    open: AtomicUsize,
    refused: AtomicU64,
    timed_out: AtomicU64,
}

impl IngressStats {
    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Connections closed at once because [`IngressLimits::max_connections`]
    /// were open, since the ingress started.
    pub fn refused_connections(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Connections closed for sending headers too slowly or for sitting
    /// idle too long, since the ingress started.
    pub fn timed_out_connections(&self) -> u64 {
        self.timed_out.load(Ordering::Relaxed)
    }
}

/// Accepts connections on `listener` and serves them until `shutdown`
/// completes, then waits up to [`HTTP_DRAIN`] for requests in flight.
/// Connections are bounded by [`IngressLimits::default`].
pub async fn serve(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(
        listener,
        routes,
        shutdown,
        IngressLimits::default(),
        Arc::new(IngressStats::default()),
    )
    .await
}

/// [`serve`] with explicit `limits`, counting into `stats`.
///
/// Each connection holds one of `limits.max_connections` slots while it is
/// open. When none is free, a new connection gets a one-shot `503` (if its
/// socket takes it without waiting) and is closed; refusals are counted
/// and logged at most once per [`HTTP_REFUSED_LOG_INTERVAL`]. A connection
/// with no request in flight is closed when a request's headers take
/// longer than `limits.header_read_timeout` from their first byte, or when
/// no request starts within `limits.idle_timeout`: so a slot is held only
/// by a client that is using it.
pub async fn serve_with(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    shutdown: impl Future<Output = ()>,
    limits: IngressLimits,
    stats: Arc<IngressStats>,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    // HTTP/1.1 with keep-alive is what ingress traffic speaks; skipping
    // protocol sniffing keeps the per-connection cost down.
    let mut builder = http1::Builder::new();
    // Header and idle timeouts are kept by `watchdog` below: hyper's own
    // header timeout also runs while a keep-alive connection waits for its
    // next request, so it cannot tell "slow headers" from "idle".
    builder.keep_alive(true).header_read_timeout(None);
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut refusals = RefusalLog::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Running out of file descriptors and the like pass; keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            refusals.note(limits.max_connections);
            // Best effort, never waiting: a client that reads gets a reason.
            let _ = stream.try_write(REFUSED_RESPONSE);
            drop(stream);
            continue;
        };
        // Responses go out in several writes: do not let Nagle hold them.
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let io = TokioIo::new(Tracked {
            inner: stream,
            activity: activity.clone(),
        });
        let routes = routes.clone();
        let on_request = activity.clone();
        let service = service_fn(move |req| {
            let routes = routes.clone();
            let request = InFlight::start(on_request.clone());
            async move {
                let response = dispatch(routes.as_ref(), req).await;
                Ok::<_, Infallible>(response.map(|body| TrackedBody {
                    inner: body,
                    _request: request,
                }))
            }
        });
        let conn = graceful.watch(builder.serve_connection(io, service));
        let stats = stats.clone();
        stats.open.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            tokio::select! {
                ended = conn => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                },
                why = watchdog(&activity, limits) => {
                    stats.timed_out.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(%peer, "closing the connection: {why}");
                }
            }
            stats.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
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

/// What a connection over the limit is told before it is closed.
const REFUSED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 38\r\nconnection: close\r\nretry-after: 1\r\n\r\ntoo many connections; try again later\n";

/// Logs refused connections at most once per [`HTTP_REFUSED_LOG_INTERVAL`],
/// with the count since the last line.
#[derive(Default)]
struct RefusalLog {
    last: Option<Instant>,
    unlogged: u64,
}

impl RefusalLog {
    fn note(&mut self, limit: usize) {
        self.unlogged = self.unlogged.saturating_add(1);
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < HTTP_REFUSED_LOG_INTERVAL)
        {
            return;
        }
        tracing::warn!(
            refused = self.unlogged,
            limit,
            "refused HTTP connections: {limit} are open already (raise HTTP_MAX_CONNECTIONS or add hosts)"
        );
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// What a connection's watchdog needs to know: whether a request is in
/// flight, since when none is, and when the next request's first byte came.
/// Times are milliseconds since the connection opened; everything runs on
/// the connection's own task, so relaxed atomics are enough.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    idle_since: AtomicU64,
    first_byte: AtomicU64,
    changed: Notify,
}

/// `first_byte` when no byte of a new request has come yet.
const NO_BYTE: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            first_byte: AtomicU64::new(NO_BYTE),
            changed: Notify::new(),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(NO_BYTE - 1)
    }

    /// Bytes were read from the client.
    fn read(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.first_byte.load(Ordering::Relaxed) == NO_BYTE
        {
            self.first_byte.store(self.now(), Ordering::Relaxed);
            self.changed.notify_one();
        }
    }
}

/// One request in flight on a connection, from its headers until its
/// response body is dropped (sent, or abandoned).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        if activity.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            activity.idle_since.store(activity.now(), Ordering::Relaxed);
            activity.first_byte.store(NO_BYTE, Ordering::Relaxed);
            activity.changed.notify_one();
        }
    }
}

/// Completes when a connection has been idle, or slow with its headers,
/// for too long, saying which.
async fn watchdog(activity: &Activity, limits: IngressLimits) -> &'static str {
    let idle = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let header = u64::try_from(limits.header_read_timeout.as_millis()).unwrap_or(u64::MAX);
    loop {
        let now = activity.now();
        let (deadline, why) = if activity.in_flight.load(Ordering::Relaxed) > 0 {
            // A request's own deadline bounds it: look again later.
            (now.saturating_add(idle.min(header)), "")
        } else {
            match activity.first_byte.load(Ordering::Relaxed) {
                NO_BYTE => (
                    activity
                        .idle_since
                        .load(Ordering::Relaxed)
                        .saturating_add(idle),
                    "idle past the keep-alive timeout",
                ),
                first => (
                    first.saturating_add(header),
                    "request headers not received within the header timeout",
                ),
            }
        };
        if deadline <= now && !why.is_empty() {
            return why;
        }
        let wait = Duration::from_millis(deadline.saturating_sub(now).max(1));
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = activity.changed.notified() => {}
        }
    }
}

/// A client connection that tells its [`Activity`] when bytes arrive.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request counted as in flight until hyper
/// has sent (or abandoned) it.
struct TrackedBody<B> {
    inner: B,
    _request: InFlight,
}

impl<B: Body + Unpin> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Serves one request at the ingress, in a span that continues the
/// request's `traceparent` (or starts a trace) and is passed on to the
/// replica that serves it, here or on another host.
async fn dispatch(routes: &dyn Routes, mut req: hyper::Request<Incoming>) -> HttpResponse {
    let parent = parse_traceparent(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    let mut span = Span::start(SpanKind::Server, parent, || {
        (
            format!("ingress {}", req.method()).into(),
            vec![
                KeyValue::new("http.request.method", req.method().to_string()),
                KeyValue::new("url.path", req.uri().path().to_string()),
            ],
        )
    });
    if let Ok(value) = hyper::header::HeaderValue::from_str(&span.context().to_string()) {
        req.headers_mut().insert(TRACEPARENT, value);
    }
    let response = route_request(routes, req).await;
    let status = response.status();
    span.set(|| KeyValue::new("http.response.status_code", i64::from(status.as_u16())));
    if status.is_server_error() {
        span.fail(status);
    }
    response
}

async fn route_request(routes: &dyn Routes, req: hyper::Request<Incoming>) -> HttpResponse {
    let declared = req
        .headers()
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_HTTP_BODY as u64) {
        return text_response(
            413,
            format!("request bodies are limited to {MAX_HTTP_BODY} bytes\n"),
        );
    }
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
        Some(Target::Local(component)) => serve_local(routes, &component, req).await,
        Some(Target::Mirrored { primary, shadow }) => {
            crate::shadow::mirror(routes, *primary, shadow, req).await
        }
        Some(Target::Remote {
            nats,
            subject,
            name,
            fallback,
        }) => crate::forward::forward(&nats, (subject, fallback), &name, req).await,
        Some(Target::Dormant { activate, .. }) => text_response(
            503,
            format!(
                "{}/{}/{} is scaled to zero and did not wake; try again shortly\n",
                activate.namespace, activate.app, activate.component
            ),
        ),
    }
}

/// Serves `req` with a replica's component on this host.
pub(crate) async fn serve_local<B>(
    routes: &dyn Routes,
    component: &LoadedComponent,
    req: hyper::Request<B>,
) -> HttpResponse
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<wasmtime_wasi_http::Error>,
{
    match component.handle_http(req).await {
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
            Ok(CommandReply::StaleEpoch { .. }) => {
                Err("a scheduler that no longer leads answered".to_string())
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// No routes: every request is a quick 404.
    struct NoRoutes;

    impl Routes for NoRoutes {
        fn route(&self, _host: Option<&str>, _path: &str) -> Option<Target> {
            None
        }
    }

    const GET: &[u8] = b"GET /x HTTP/1.1\r\nhost: t\r\n\r\n";

    /// An ingress with `limits` on a free port, stopped when the returned
    /// sender is dropped.
    async fn start(
        limits: IngressLimits,
    ) -> (
        std::net::SocketAddr,
        Arc<IngressStats>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Arc::new(IngressStats::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counted = stats.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve_with(listener, Arc::new(NoRoutes), shutdown, limits, counted)
                .await
                .unwrap();
        });
        (addr, stats, stop)
    }

    /// Reads until the peer closes (or 5 s pass: then `None`).
    async fn read_to_close(stream: &mut TcpStream) -> Option<String> {
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), async {
            let mut buf = [0u8; 4096];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => all.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        read.ok()
            .map(|()| String::from_utf8_lossy(&all).into_owned())
    }

    /// Sends one request and reads its (404) response, leaving the
    /// connection open.
    async fn request(stream: &mut TcpStream) -> String {
        stream.write_all(GET).await.unwrap();
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&all).contains("no component serves") {
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&all));
            all.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&all).into_owned()
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_refused_and_counted() {
        let limits = IngressLimits {
            max_connections: 1,
            ..IngressLimits::default()
        };
        let (addr, stats, _stop) = start(limits).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut first).await.starts_with("HTTP/1.1 404"));

        let mut second = TcpStream::connect(addr).await.unwrap();
        let answer = read_to_close(&mut second).await.expect("closed at once");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 503"),
            "{answer}"
        );
        assert_eq!(stats.refused_connections(), 1);
        assert_eq!(stats.open_connections(), 1);

        // The first one still works, and once it is gone its slot is free.
        assert!(request(&mut first).await.starts_with("HTTP/1.1 404"));
        drop(first);
        let deadline = Instant::now() + Duration::from_secs(5);
        while stats.open_connections() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut third = TcpStream::connect(addr).await.unwrap();
        assert!(request(&mut third).await.starts_with("HTTP/1.1 404"));
    }

    #[tokio::test]
    async fn slow_headers_are_cut_off() {
        let limits = IngressLimits {
            header_read_timeout: Duration::from_millis(200),
            ..IngressLimits::default()
        };
        let (addr, stats, _stop) = start(limits).await;
        let mut slow = TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n")
            .await
            .unwrap();
        let started = Instant::now();
        let answer = read_to_close(&mut slow)
            .await
            .expect("closed by the ingress");
        assert!(answer.is_empty(), "{answer}");
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(stats.timed_out_connections(), 1);
    }

    #[tokio::test]
    async fn idle_keep_alive_connections_are_closed_and_busy_ones_kept() {
        let limits = IngressLimits {
            idle_timeout: Duration::from_millis(300),
            ..IngressLimits::default()
        };
        let (addr, stats, _stop) = start(limits).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        // Requests closer together than the idle timeout keep it open.
        for _ in 0..4 {
            assert!(request(&mut client).await.starts_with("HTTP/1.1 404"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(stats.timed_out_connections(), 0);
        let answer = read_to_close(&mut client).await.expect("closed when idle");
        assert!(answer.is_empty(), "{answer}");
        assert_eq!(stats.timed_out_connections(), 1);
    }
}
