//! TLS for the scheduler's HTTP API: a rustls server configuration read
//! from PEM files ([`server_config`]) and an accept loop that serves an
//! axum router over it ([`serve`]).
//!
//! The loop only accepts TCP connections; each connection's TLS handshake
//! and HTTP traffic run in a task of their own, with the handshake bounded
//! by [`TLS_HANDSHAKE_TIMEOUT`], so a client that connects and then says
//! nothing (or says it slowly) costs one task for a while and never holds
//! up the next accept. HTTP/1.1 and HTTP/2 are both served (ALPN offers
//! `h2` and `http/1.1`).

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::SchedulerError;
use crate::tunables::{API_ACCEPT_RETRY, API_DRAIN_TIMEOUT, TLS_HANDSHAKE_TIMEOUT};

/// Builds the API's TLS configuration from a PEM certificate chain (the
/// server's certificate first, then any intermediates) and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
///
/// TLS 1.3 and 1.2 with rustls' safe defaults and the ring provider; no
/// client certificates; ALPN offers `h2` and `http/1.1`.
///
/// # Errors
///
/// [`SchedulerError::Invalid`] when a file cannot be read, is not PEM,
/// holds no certificate or no key, or when the key does not belong to the
/// certificate. The message names the file and says what to give instead.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, SchedulerError> {
    let chain = read_chain(cert)?;
    let key_der = read_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SchedulerError::Internal(format!("TLS protocol versions: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| {
            SchedulerError::Invalid(format!(
                "--tls-cert {} and --tls-key {} cannot be used together ({e}): give the \
                 private key that belongs to the certificate, in a type rustls supports \
                 (RSA, ECDSA P-256/P-384 or Ed25519)",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads every certificate in a PEM file, in order.
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, SchedulerError> {
    let shown = path.display();
    let not_pem = |e: pem::Error| match e {
        pem::Error::Io(e) => SchedulerError::Invalid(format!(
            "--tls-cert {shown} cannot be read: {e}: give a readable file with the \
             server's certificate chain in PEM"
        )),
        e => SchedulerError::Invalid(format!(
            "--tls-cert {shown} is not valid PEM ({e}): give the server's certificate \
             chain in PEM"
        )),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(not_pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(not_pem)?;
    if chain.is_empty() {
        return Err(SchedulerError::Invalid(format!(
            "--tls-cert {shown} holds no PEM certificate: give the server's certificate \
             chain in PEM (\"-----BEGIN CERTIFICATE-----\" blocks, the server's own first)"
        )));
    }
    Ok(chain)
}

/// Reads the first private key in a PEM file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, SchedulerError> {
    let shown = path.display();
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::Io(e) => SchedulerError::Invalid(format!(
            "--tls-key {shown} cannot be read: {e}: give a readable file with the \
             certificate's private key in PEM"
        )),
        pem::Error::NoItemsFound => SchedulerError::Invalid(format!(
            "--tls-key {shown} holds no PEM private key: give the certificate's private \
             key in PEM (PKCS#8 \"PRIVATE KEY\", PKCS#1 \"RSA PRIVATE KEY\" or SEC1 \
             \"EC PRIVATE KEY\")"
        )),
        e => SchedulerError::Invalid(format!(
            "--tls-key {shown} is not valid PEM ({e}): give the certificate's private key \
             in PEM"
        )),
    })
}

/// Serves `router` over TLS on `listener` until `stop` completes.
///
/// Accept errors (out of file descriptors, say) are logged and retried
/// after [`API_ACCEPT_RETRY`]. A failed or timed-out handshake drops that
/// connection only. When `stop` completes the listener is closed at once,
/// handshakes still under way are dropped, and open connections finish
/// their requests (HTTP/1 closes after the current response, HTTP/2 sends
/// GOAWAY) within [`API_DRAIN_TIMEOUT`]; whatever is still open then is
/// closed. Returns when every connection task has ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Arc<rustls::ServerConfig>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = TlsAcceptor::from(tls);
    let service = TowerToHyperService::new(router);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // With a timer, hyper enforces its default HTTP/1 header read timeout,
    // so a client that completes the handshake and then trickles a request
    // head is cut off too.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let (stopping_tx, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    tracing::error!(error = %e, "an API connection task failed");
                }
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_in = ?API_ACCEPT_RETRY,
                        "the API could not accept a connection"
                    );
                    tokio::time::sleep(API_ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        connections.spawn(connection(
            tcp,
            peer,
            acceptor.clone(),
            service.clone(),
            builder.clone(),
            graceful.watcher(),
            stopping.clone(),
        ));
    }

    drop(listener);
    let _ = stopping_tx.send(true);
    let open = graceful.count();
    if tokio::time::timeout(API_DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            drain = ?API_DRAIN_TIMEOUT,
            "API connections still open after the drain time: closing them"
        );
    }
    connections.shutdown().await;
}

/// One API connection: the TLS handshake, then HTTP until the client or
/// the shutdown ends it.
async fn connection(
    tcp: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    service: TowerToHyperService<Router>,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    mut stopping: watch::Receiver<bool>,
) {
    let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
    let stream = tokio::select! {
        done = handshake => match done {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, timeout = ?TLS_HANDSHAKE_TIMEOUT, "API TLS handshake timed out");
                return;
            }
        },
        _ = stopping.wait_for(|s| *s) => return,
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "API connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::{Notify, oneshot};
    use tokio::task::JoinHandle;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream;

    use super::{serve, server_config};
    use crate::SchedulerError;
    use crate::tunables::API_DRAIN_TIMEOUT;

    type TestResult = Result<(), Box<dyn Error>>;

    /// Every wait in these tests is bounded by this.
    const WAIT: Duration = Duration::from_secs(10);

    /// A self-signed certificate for `localhost`, written as PEM files.
    struct Pki {
        dir: tempfile::TempDir,
        cert: CertificateDer<'static>,
    }

    impl Pki {
        fn new() -> Result<Self, Box<dyn Error>> {
            let dir = tempfile::tempdir()?;
            let rcgen::CertifiedKey { cert, key_pair } =
                rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
            std::fs::write(dir.path().join("cert.pem"), cert.pem())?;
            std::fs::write(dir.path().join("key.pem"), key_pair.serialize_pem())?;
            Ok(Pki {
                dir,
                cert: cert.der().clone(),
            })
        }

        fn cert_path(&self) -> PathBuf {
            self.dir.path().join("cert.pem")
        }

        fn key_path(&self) -> PathBuf {
            self.dir.path().join("key.pem")
        }
    }

    /// A TLS API serving `/healthz` on a free port.
    struct Server {
        addr: SocketAddr,
        stop: oneshot::Sender<()>,
        task: JoinHandle<()>,
    }

    impl Server {
        async fn start(pki: &Pki, router: Router) -> Result<Self, Box<dyn Error>> {
            let config = server_config(&pki.cert_path(), &pki.key_path())?;
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, router, config, async move {
                let _ = stopped.await;
            }));
            Ok(Server { addr, stop, task })
        }

        /// Stops the server and checks that it returns in time.
        async fn stop(self) -> TestResult {
            let _ = self.stop.send(());
            tokio::time::timeout(WAIT, self.task).await??;
            Ok(())
        }
    }

    fn healthz() -> Router {
        Router::new().route("/healthz", get(|| async { "ok" }))
    }

    fn connector(pki: &Pki, alpn: &[&[u8]]) -> Result<TlsConnector, Box<dyn Error>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.cert.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsConnector::from(Arc::new(config)))
    }

    /// `GET /healthz` over HTTPS/1.1; returns the whole response.
    async fn get_healthz(pki: &Pki, addr: SocketAddr) -> Result<String, Box<dyn Error>> {
        read_response(send(pki, addr, "/healthz").await?).await
    }

    /// Connects over TLS (HTTP/1.1) and sends `GET path`.
    async fn send(
        pki: &Pki,
        addr: SocketAddr,
        path: &str,
    ) -> Result<TlsStream<TcpStream>, Box<dyn Error>> {
        let exchange = async {
            let tcp = TcpStream::connect(addr).await?;
            let mut tls = connector(pki, &[b"http/1.1"])?
                .connect(ServerName::try_from("localhost")?, tcp)
                .await?;
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
            tls.write_all(request.as_bytes()).await?;
            Ok::<_, Box<dyn Error>>(tls)
        };
        tokio::time::timeout(WAIT, exchange).await?
    }

    /// Reads until the server closes; returns the whole response.
    async fn read_response(mut tls: TlsStream<TcpStream>) -> Result<String, Box<dyn Error>> {
        let exchange = async {
            let mut response = Vec::new();
            tls.read_to_end(&mut response).await?;
            Ok::<_, Box<dyn Error>>(String::from_utf8(response)?)
        };
        tokio::time::timeout(WAIT, exchange).await?
    }

    fn assert_ok(response: &str) {
        assert!(
            response.starts_with("HTTP/1.1 200"),
            "want a 200, got {response:?}"
        );
        assert!(
            response.ends_with("\r\n\r\nok"),
            "want body \"ok\", got {response:?}"
        );
    }

    #[tokio::test]
    async fn serves_https() -> TestResult {
        let pki = Pki::new()?;
        let server = Server::start(&pki, healthz()).await?;
        assert_ok(&get_healthz(&pki, server.addr).await?);
        server.stop().await
    }

    #[tokio::test]
    async fn negotiates_h2_when_offered() -> TestResult {
        let pki = Pki::new()?;
        let server = Server::start(&pki, healthz()).await?;
        let tcp = TcpStream::connect(server.addr).await?;
        let tls = tokio::time::timeout(
            WAIT,
            connector(&pki, &[b"h2", b"http/1.1"])?
                .connect(ServerName::try_from("localhost")?, tcp),
        )
        .await??;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        drop(tls);
        server.stop().await
    }

    #[tokio::test]
    async fn stop_lets_a_request_in_flight_finish() -> TestResult {
        let pki = Pki::new()?;
        let started = Arc::new(Notify::new());
        let router = {
            let started = started.clone();
            Router::new().route(
                "/slow",
                get(move || async move {
                    started.notify_one();
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    "done"
                }),
            )
        };
        let server = Server::start(&pki, router).await?;
        let in_flight = send(&pki, server.addr, "/slow").await?;
        tokio::time::timeout(WAIT, started.notified()).await?;

        let stopping = std::time::Instant::now();
        let (response, stopped) = tokio::join!(read_response(in_flight), server.stop());
        let response = response?;
        assert!(response.starts_with("HTTP/1.1 200"), "got {response:?}");
        assert!(response.ends_with("\r\n\r\ndone"), "got {response:?}");
        stopped?;
        assert!(
            stopping.elapsed() < API_DRAIN_TIMEOUT,
            "the drain waited for its timeout"
        );
        Ok(())
    }

    #[tokio::test]
    async fn plaintext_is_refused_and_tls_still_served() -> TestResult {
        let pki = Pki::new()?;
        let server = Server::start(&pki, healthz()).await?;

        let mut tcp = TcpStream::connect(server.addr).await?;
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        // The server answers with a TLS alert and closes; a reset is as good.
        let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut response)).await?;
        if let Err(e) = read {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
        }
        assert!(
            !response.starts_with(b"HTTP/"),
            "plaintext HTTP got an HTTP answer: {:?}",
            String::from_utf8_lossy(&response)
        );

        assert_ok(&get_healthz(&pki, server.addr).await?);
        server.stop().await
    }

    #[test]
    fn a_file_without_a_certificate_is_a_clear_error() -> TestResult {
        let pki = Pki::new()?;
        // A key where the certificate should be: PEM, but no certificate.
        let err = server_config(&pki.key_path(), &pki.key_path())
            .err()
            .ok_or("a key file was taken for a certificate")?;
        let SchedulerError::Invalid(message) = err else {
            return Err(format!("want Invalid, got {err:?}").into());
        };
        let want = format!(
            "--tls-cert {} holds no PEM certificate: give the server's certificate chain in PEM",
            pki.key_path().display()
        );
        assert!(message.starts_with(&want), "got {message:?}");
        Ok(())
    }

    #[test]
    fn a_file_without_a_key_is_a_clear_error() -> TestResult {
        let pki = Pki::new()?;
        let err = server_config(&pki.cert_path(), &pki.cert_path())
            .err()
            .ok_or("a certificate file was taken for a key")?;
        let SchedulerError::Invalid(message) = err else {
            return Err(format!("want Invalid, got {err:?}").into());
        };
        let want = format!(
            "--tls-key {} holds no PEM private key",
            pki.cert_path().display()
        );
        assert!(message.starts_with(&want), "got {message:?}");
        Ok(())
    }

    #[test]
    fn a_missing_file_names_it() -> TestResult {
        let pki = Pki::new()?;
        let missing = pki.dir.path().join("nope.pem");
        let err = server_config(&missing, &pki.key_path())
            .err()
            .ok_or("a missing file was accepted")?;
        let want = format!("--tls-cert {} cannot be read", missing.display());
        assert!(err.to_string().starts_with(&want), "got {err}");
        Ok(())
    }
}
