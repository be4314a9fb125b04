//! Outbound HTTP through `wasi:http/outgoing-handler`, only to the hosts the
//! spec lists in `allowed_hosts`, and never into the host's own networks.
//!
//! An `allowed_hosts` entry is a name or an IP address, with a port
//! (`"api.example.com:8443"`, `"127.0.0.1:8080"`, `"[::1]:8080"`) or
//! without one, which means the standard ports 80 and 443 only. A request
//! to anything else is denied before a connection is made
//! (`HttpRequestDenied`).
//!
//! An allowed *name* still only reaches the public internet: the name is
//! resolved here, every address it resolves to is checked, and the request
//! is refused (`DestinationIpProhibited`) if any of them is loopback,
//! private (RFC 1918, CGNAT, IPv6 unique-local), link-local, unspecified,
//! multicast, broadcast or otherwise not globally routable, including the
//! same addresses written as IPv4-mapped (or NAT64, 6to4) IPv6. Only an
//! entry that is that literal address opens it (`"10.0.0.5:8080"`): the
//! operator named it, so no DNS answer can lead there by surprise.
//!
//! The connection is then made to the checked address itself, never by
//! resolving the name again, so a DNS answer that changes between the check
//! and the connect (DNS rebinding) cannot reach an address that was not
//! checked. TLS still verifies the certificate against the name.
//!
//! Every refusal is an error code the guest sees (never a trap) and a
//! warning in the host's log naming the component, the destination and
//! what to change.

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use opentelemetry::KeyValue;
use shoal_api::trace::TRACEPARENT;

use crate::trace::{CallContext, CallSite, Span, SpanKind};
use crate::tunables::{OUTBOUND_CONNECT_TIMEOUT, OUTBOUND_DNS_TIMEOUT, OUTBOUND_RESPONSE_TIMEOUT};

/// The outbound HTTP provider of one invocation.
pub struct OutboundHttp {
    call: Arc<CallContext>,
    allowed: Arc<Vec<String>>,
}

impl OutboundHttp {
    /// Requests to `allowed` hosts only (entries as in the spec's
    /// `allowed_hosts`), made in `call`.
    pub fn new(call: Arc<CallContext>, allowed: Arc<Vec<String>>) -> Self {
        OutboundHttp { call, allowed }
    }

    /// The parsed `allowed_hosts`; entries that do not parse allow nothing
    /// (the spec refuses them at apply anyway).
    fn entries(&self) -> Vec<AllowedHost> {
        self.allowed
            .iter()
            .filter_map(|a| AllowedHost::parse(a))
            .collect()
    }
}

/// A host as written in a URI or an `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostName {
    /// A DNS name, lower-cased, without a trailing dot.
    Name(String),
    /// An IP address literal.
    Ip(IpAddr),
}

impl HostName {
    fn parse(text: &str) -> Option<Self> {
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Some(HostName::Ip(ip.to_canonical()));
        }
        let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        valid.then_some(HostName::Name(name))
    }
}

impl std::fmt::Display for HostName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostName::Name(name) => f.write_str(name),
            HostName::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            HostName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One `allowed_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AllowedHost {
    host: HostName,
    /// `None`: ports 80 and 443.
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses `name`, `name:port`, `a.b.c.d[:port]`, `[v6][:port]` or a
    /// bare IPv6 address.
    fn parse(entry: &str) -> Option<Self> {
        let entry = entry.trim();
        if let Ok(addr) = entry.parse::<SocketAddr>() {
            return Some(AllowedHost {
                host: HostName::Ip(addr.ip().to_canonical()),
                port: Some(addr.port()),
            });
        }
        if let Ok(ip) = entry.parse::<IpAddr>() {
            return Some(AllowedHost {
                host: HostName::Ip(ip.to_canonical()),
                port: None,
            });
        }
        let (host, port) = match entry.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(':') => (host, Some(port.parse().ok()?)),
            _ => (entry, None),
        };
        Some(AllowedHost {
            host: HostName::parse(host)?,
            port,
        })
    }

    fn covers(&self, host: &HostName, port: u16) -> bool {
        self.host == *host && self.covers_port(port)
    }

    fn covers_port(&self, port: u16) -> bool {
        match self.port {
            Some(p) => p == port,
            None => port == 80 || port == 443,
        }
    }
}

/// Where a request goes.
#[derive(Debug)]
struct Destination {
    host: HostName,
    port: u16,
    tls: bool,
}

impl Destination {
    fn of(uri: &http::Uri) -> Option<Self> {
        let authority = uri.authority()?;
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Some(Destination {
            host: HostName::parse(authority.host())?,
            port,
            tls,
        })
    }
}

/// Why an address is not on the public internet, if it is not.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => not_public_v4(v4),
        IpAddr::V6(v6) => not_public_v6(v6),
    }
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (\"this network\")")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if a == 100 && (b & 0xc0) == 64 {
        Some("shared address space (CGNAT, 100.64.0.0/10)")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if ip.is_broadcast() {
        Some("broadcast")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if a >= 240 {
        Some("reserved (240.0.0.0/4)")
    } else if (a == 192 && b == 0 && c == 0) || (a == 198 && (b & 0xfe) == 18) {
        Some("special-purpose (IETF protocol or benchmarking)")
    } else if ip.is_documentation() {
        Some("documentation")
    } else {
        None
    }
}

fn not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if (s[0] & 0xfe00) == 0xfc00 {
        Some("unique local (fc00::/7)")
    } else if (s[0] & 0xffc0) == 0xfe80 {
        Some("link-local (fe80::/10)")
    } else if (s[0] & 0xffc0) == 0xfec0 {
        Some("site-local (fec0::/10)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else if s[..6] == [0; 6] {
        // ::a.b.c.d, the deprecated IPv4-compatible form (IPv4-mapped ones
        // were made IPv4 by `to_canonical`).
        Some("IPv4-compatible")
    } else if s[0] == 0x0064 && s[1] == 0xff9b {
        // NAT64: the well-known prefix carries an IPv4 address; the
        // local-use one (64:ff9b:1::/48) leads into a private network.
        if s[2..6] == [0; 4] {
            not_public_v4(embedded_v4(s[6], s[7])).map(|_| "NAT64 of a non-public IPv4 address")
        } else {
            Some("local-use NAT64 (64:ff9b:1::/48)")
        }
    } else if s[0] == 0x2002 {
        // 6to4: the IPv4 address is in the next 32 bits.
        not_public_v4(embedded_v4(s[1], s[2])).map(|_| "6to4 of a non-public IPv4 address")
    } else if s[0] == 0x2001 && s[1] == 0x0db8 {
        Some("documentation")
    } else if s[0] == 0x0100 && s[1..4] == [0; 3] {
        Some("discard-only (100::/64)")
    } else {
        None
    }
}

fn embedded_v4(high: u16, low: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(high) << 16) | u32::from(low))
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    /// The destination is not in `allowed_hosts`.
    NotAllowed,
    /// The destination resolves to an address that is not public, which no
    /// entry names literally.
    Prohibited {
        /// The address.
        addr: SocketAddr,
        /// What kind of address it is.
        kind: &'static str,
    },
}

/// Whether `dest` is in `allowed` at all.
fn listed(allowed: &[AllowedHost], dest: &Destination) -> Result<(), Refusal> {
    if allowed.iter().any(|a| a.covers(&dest.host, dest.port)) {
        Ok(())
    } else {
        Err(Refusal::NotAllowed)
    }
}

/// Checks every address `dest` resolved to: all must be public, or named
/// literally (with a port that covers this one) in `allowed`. Refuses the
/// request if any is not, so a DNS answer that mixes a public address with
/// an internal one cannot lead inside.
fn vet(allowed: &[AllowedHost], addrs: &[SocketAddr]) -> Result<(), Refusal> {
    for addr in addrs {
        let ip = addr.ip().to_canonical();
        if let Some(kind) = not_public(ip) {
            let named = allowed
                .iter()
                .any(|a| a.host == HostName::Ip(ip) && a.covers_port(addr.port()));
            if !named {
                return Err(Refusal::Prohibited { addr: *addr, kind });
            }
        }
    }
    Ok(())
}

/// The addresses `dest` resolves to, each with its port.
async fn resolve(dest: &Destination) -> Result<Vec<SocketAddr>, Error> {
    let name = match &dest.host {
        HostName::Ip(ip) => return Ok(vec![SocketAddr::new(*ip, dest.port)]),
        HostName::Name(name) => name.as_str(),
    };
    let found = tokio::time::timeout(
        OUTBOUND_DNS_TIMEOUT,
        tokio::net::lookup_host((name, dest.port)),
    )
    .await
    .map_err(|_| Error::DnsTimeout)?
    .map_err(|e| Error::DnsError {
        rcode: Some(format!("cannot resolve {name}: {e}")),
        info_code: None,
    })?;
    let addrs: Vec<SocketAddr> = found.collect();
    if addrs.is_empty() {
        return Err(Error::DestinationNotFound);
    }
    Ok(addrs)
}

/// The future types `WasiHttpHooks::send_request` deals in.
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let call = self.call.clone();
        let allowed = self.entries();
        // The query is left out: it may carry credentials.
        let target = format!(
            "{} {}{}",
            request.method(),
            request.uri().authority().map_or("", |a| a.as_str()),
            request.uri().path()
        );
        let mut span = Span::start(SpanKind::Client, Some(call.trace()), || {
            (
                format!("HTTP {}", request.method()).into(),
                vec![
                    KeyValue::new("http.request.method", request.method().to_string()),
                    KeyValue::new(
                        "server.address",
                        request.uri().host().unwrap_or_default().to_string(),
                    ),
                ],
            )
        });
        if !request.headers().contains_key(TRACEPARENT)
            && let Ok(value) = http::HeaderValue::from_str(&span.context().to_string())
        {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let sent_bytes = request
            .body()
            .size_hint()
            .exact()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(0);
        Box::new(async move {
            let send = async {
                let Some(dest) = Destination::of(request.uri()) else {
                    return Err(Error::HttpRequestUriInvalid);
                };
                if let Err(refusal) = listed(&allowed, &dest) {
                    deny(call.component(), &dest, &refusal);
                    return Err(Error::HttpRequestDenied);
                }
                let addrs = resolve(&dest).await?;
                if let Err(refusal) = vet(&allowed, &addrs) {
                    deny(call.component(), &dest, &refusal);
                    return Err(Error::DestinationIpProhibited);
                }
                send(request, options, &dest, &addrs).await
            };
            let site = CallSite {
                capability: "http",
                function: "request",
                target: &target,
                sent_bytes,
            };
            // What the response's length says; the body itself is still
            // on its way when the call returns.
            let received = |(response, _): &(http::Response<WasiBody>, IoFuture)| {
                response
                    .headers()
                    .get(http::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0)
            };
            let result = call.record(site, received, send).await;
            match &result {
                Ok((response, _)) => span.set(|| {
                    KeyValue::new(
                        "http.response.status_code",
                        i64::from(response.status().as_u16()),
                    )
                }),
                Err(e) => span.fail(e),
            }
            result
        })
    }
}

/// Logs a refusal in the operator's terms.
fn deny(component: &str, dest: &Destination, refusal: &Refusal) {
    let target = format!("{}:{}", dest.host, dest.port);
    match refusal {
        Refusal::NotAllowed => tracing::warn!(
            component,
            destination = %target,
            "outbound HTTP denied: {target} is not in the component's allowed_hosts (an entry without a port allows 80 and 443 only)"
        ),
        Refusal::Prohibited { addr, kind } => tracing::warn!(
            component,
            destination = %target,
            address = %addr,
            "outbound HTTP denied: {target} resolves to {addr}, a {kind} address; only an allowed_hosts entry naming that address and port (\"{addr}\") opens it"
        ),
    }
}

/// A connection to the destination, plain or TLS.
trait Stream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> Stream for T {}

/// The guest's timeout for something, capped at `most`.
fn capped(asked: Option<Duration>, most: Duration) -> Duration {
    asked.map_or(most, |d| d.min(most))
}

/// Sends `request` over a connection to one of `addrs` (all vetted),
/// as wasmtime's `default_send_request` does but without resolving the
/// name again. Returns the response and the future that drives the rest
/// of the connection.
async fn send(
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
    dest: &Destination,
    addrs: &[SocketAddr],
) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
    let connect_timeout = capped(
        options.and_then(|o| o.connect_timeout),
        OUTBOUND_CONNECT_TIMEOUT,
    );
    let first_byte_timeout = capped(
        options.and_then(|o| o.first_byte_timeout),
        OUTBOUND_RESPONSE_TIMEOUT,
    );
    let between_bytes_timeout = capped(
        options.and_then(|o| o.between_bytes_timeout),
        OUTBOUND_RESPONSE_TIMEOUT,
    )
    // tokio's interval refuses zero.
    .max(Duration::from_nanos(1));

    let stream = tokio::time::timeout(connect_timeout, async {
        let tcp = connect(addrs).await?;
        if dest.tls {
            tls(tcp, &dest.host).await
        } else {
            Ok(Box::new(tcp) as Box<dyn Stream>)
        }
    })
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::Builder::new().handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;

    // The request line carries the path only (the authority is in `Host`),
    // as to any origin server.
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(path)
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;

    let mut send = pin!(async move {
        let response = tokio::time::timeout(first_byte_timeout, sender.send_request(request))
            .await
            .map_err(|_| Error::ConnectionReadTimeout)??;
        let mut timeout = tokio::time::interval(between_bytes_timeout);
        timeout.reset();
        Ok::<_, Error>(response.map(|incoming| TimedBody { incoming, timeout }))
    });
    // Drive the connection while waiting for the response head.
    let mut conn = Some(conn);
    let response = poll_fn(|cx| match send.as_mut().poll(cx) {
        Poll::Ready(result) => Poll::Ready(result),
        Poll::Pending => {
            let Some(c) = conn.as_mut() else {
                return Poll::Pending;
            };
            let ended = ready!(Pin::new(c).poll(cx));
            conn = None;
            match ended {
                Ok(()) => send.as_mut().poll(cx),
                Err(e) => Poll::Ready(Err(Error::from(e))),
            }
        }
    })
    .await?;
    let io = async move {
        let Some(conn) = conn else {
            return Ok(());
        };
        conn.await.map_err(|e| {
            if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }
        })
    };
    Ok((response.map(BodyExt::boxed_unsync), Box::new(io)))
}

/// Connects to the first of `addrs` that answers.
async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Error::DestinationNotFound, Error::Connect))
}

/// Wraps `tcp` in TLS, verifying the server's certificate for `host`
/// against the Web PKI roots.
async fn tls(tcp: TcpStream, host: &HostName) -> Result<Box<dyn Stream>, Error> {
    let name = match host {
        HostName::Ip(ip) => rustls::pki_types::ServerName::from(*ip),
        HostName::Name(name) => rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(Error::InvalidDnsNameError)?,
    };
    let connector = tokio_rustls::TlsConnector::from(tls_config()?);
    let stream = connector.connect(name, tcp).await.map_err(Error::Tls)?;
    Ok(Box::new(stream))
}

/// The TLS client configuration, built once per process.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, Error> {
    static CONFIG: OnceLock<Option<Arc<rustls::ClientConfig>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            // The provider is named rather than taken from the process
            // default, which would panic if none (or two) were installed.
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()
                .map(|b| Arc::new(b.with_root_certificates(roots).with_no_client_auth()))
        })
        .clone()
        .ok_or_else(|| Error::InternalError(Some("TLS is not available on this host".into())))
}

/// A response body that fails when the server pauses for longer than the
/// between-bytes timeout.
struct TimedBody {
    incoming: Incoming,
    timeout: tokio::time::Interval,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(if e.is_timeout() {
                Error::HttpResponseTimeout
            } else {
                Error::from(e)
            }))),
            Poll::Ready(Some(Ok(frame))) => {
                self.timeout.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                ready!(self.timeout.poll_tick(cx));
                Poll::Ready(Some(Err(Error::ConnectionReadTimeout)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

/// The outbound HTTP capability. Its imports are wasi-http's own, linked
/// by the runtime; the requests come through [`OutboundHttp`]'s hooks.
pub struct OutboundHttpCapability;

impl super::Capability for OutboundHttpCapability {
    const NAME: &'static str = "outbound HTTP";
    type Grant = Arc<Vec<String>>;
    type Provider = OutboundHttp;

    fn new(_host: Option<&super::HostContext>) -> Self {
        OutboundHttpCapability
    }

    fn grant(&self, ctx: &super::GrantContext<'_>) -> Result<Self::Grant, String> {
        // A shadow replica calls out nowhere: only the stable replicas'
        // calls may take effect.
        if ctx.replica.is_some_and(|r| r.is_shadow()) {
            return Ok(Arc::new(Vec::new()));
        }
        Ok(Arc::new(ctx.spec.allowed_hosts.clone()))
    }

    fn bind(call: &Arc<CallContext>, grant: &Self::Grant) -> Self::Provider {
        OutboundHttp::new(call.clone(), grant.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_are_public() {
        for refused in [
            "127.0.0.1",
            "127.255.0.9",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "198.18.0.1",
            "192.0.2.1",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001:db8::1",
        ] {
            assert!(not_public(ip(refused)).is_some(), "{refused} passed");
        }
        for allowed in [
            "8.8.8.8",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(not_public(ip(allowed)), None, "{allowed} refused");
        }
    }

    #[test]
    fn entries_parse() {
        let name = |n: &str| HostName::Name(n.into());
        let cases = [
            ("api.example.com", name("api.example.com"), None),
            ("API.Example.com.:8443", name("api.example.com"), Some(8443)),
            ("127.0.0.1", HostName::Ip(ip("127.0.0.1")), None),
            ("127.0.0.1:8080", HostName::Ip(ip("127.0.0.1")), Some(8080)),
            ("[::1]:8080", HostName::Ip(ip("::1")), Some(8080)),
            ("[::1]", HostName::Ip(ip("::1")), None),
            ("::1", HostName::Ip(ip("::1")), None),
            (
                "[::ffff:10.0.0.1]:80",
                HostName::Ip(ip("10.0.0.1")),
                Some(80),
            ),
        ];
        for (text, host, port) in cases {
            assert_eq!(
                AllowedHost::parse(text),
                Some(AllowedHost { host, port }),
                "{text}"
            );
        }
        for bad in ["", "a b", "host:port", "host:99999", "a/b"] {
            assert_eq!(AllowedHost::parse(bad), None, "{bad}");
        }
    }

    fn dest(uri: &str) -> Destination {
        Destination::of(&uri.parse().unwrap()).unwrap()
    }

    fn allowed(entries: &[&str]) -> Vec<AllowedHost> {
        entries
            .iter()
            .map(|e| AllowedHost::parse(e).unwrap())
            .collect()
    }

    #[test]
    fn an_entry_without_a_port_allows_80_and_443_only() {
        let list = allowed(&["example.com", "other.example:8080"]);
        assert!(listed(&list, &dest("http://example.com/x")).is_ok());
        assert!(listed(&list, &dest("https://EXAMPLE.com/x")).is_ok());
        assert!(listed(&list, &dest("http://example.com:443/x")).is_ok());
        assert!(listed(&list, &dest("http://example.com:8080/x")).is_err());
        assert!(listed(&list, &dest("http://other.example:8080/")).is_ok());
        assert!(listed(&list, &dest("http://other.example/")).is_err());
        assert!(listed(&list, &dest("http://sub.example.com/")).is_err());
    }

    #[test]
    fn resolved_addresses_must_be_public_unless_named() {
        let sa = |t: &str| t.parse::<SocketAddr>().unwrap();
        let list = allowed(&["api.example.com", "10.0.0.5:8080", "[::1]:9000"]);
        assert_eq!(vet(&list, &[sa("93.184.216.34:443")]), Ok(()));
        // A name that resolves inside, however it is written.
        for inside in ["127.0.0.1:443", "[::ffff:127.0.0.1]:443", "10.0.0.9:443"] {
            assert!(
                matches!(vet(&list, &[sa(inside)]), Err(Refusal::Prohibited { .. })),
                "{inside}"
            );
        }
        // One internal address among public ones refuses the lot.
        assert!(vet(&list, &[sa("93.184.216.34:443"), sa("169.254.169.254:443")]).is_err());
        // A literal entry opens that address, at that port only.
        assert_eq!(vet(&list, &[sa("10.0.0.5:8080")]), Ok(()));
        assert_eq!(vet(&list, &[sa("[::ffff:10.0.0.5]:8080")]), Ok(()));
        assert!(vet(&list, &[sa("10.0.0.5:8081")]).is_err());
        assert_eq!(vet(&list, &[sa("[::1]:9000")]), Ok(()));
    }

    /// A server on loopback that answers every request with `hi`.
    async fn server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi")
                        .await;
                });
            }
        });
        port
    }

    async fn get(allowed_hosts: &[String], uri: &str) -> Result<(u16, Bytes), Error> {
        let trace = Span::start(SpanKind::Internal, None, || ("test".into(), Vec::new())).context();
        let call = CallContext::new("test".into(), trace, None);
        let mut hooks = OutboundHttp::new(call, Arc::new(allowed_hosts.to_vec()));
        let authority = uri
            .parse::<http::Uri>()
            .unwrap()
            .authority()
            .unwrap()
            .to_string();
        let request = http::Request::get(uri)
            .header(http::header::HOST, authority)
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| -> Error { match never {} })
                    .boxed_unsync(),
            )
            .unwrap();
        let (response, io) =
            Pin::from(hooks.send_request(request, None, Box::new(async { Ok(()) }))).await?;
        tokio::spawn(Pin::from(io));
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    #[tokio::test]
    async fn loopback_is_reached_only_when_named_with_its_port() {
        let port = server().await;
        let url = format!("http://127.0.0.1:{port}/x");

        let named = [format!("127.0.0.1:{port}")];
        let (status, body) = get(&named, &url).await.unwrap();
        assert_eq!((status, body.as_ref()), (200, b"hi".as_ref()));

        // Without a port, the entry covers 80 and 443 only.
        let portless = ["127.0.0.1".to_string()];
        assert!(matches!(
            get(&portless, &url).await,
            Err(Error::HttpRequestDenied)
        ));

        // A name that resolves to loopback is refused after resolving, even
        // though the name itself is allowed.
        let by_name = [format!("localhost:{port}")];
        assert!(matches!(
            get(&by_name, &format!("http://localhost:{port}/x")).await,
            Err(Error::DestinationIpProhibited)
        ));

        // Not listed at all.
        assert!(matches!(
            get(&[], &url).await,
            Err(Error::HttpRequestDenied)
        ));
    }
}
