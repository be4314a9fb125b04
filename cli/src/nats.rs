//! Connecting to NATS, and running a nats-server child for `shoal up`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use shoal_api::identity::Identity;
use shoal_api::subjects::{JETSTREAM_MAX_FILE_STORE, NATS_MAX_PAYLOAD};

use crate::credentials::Authority;
use shoal_scheduler::secrets::SecretBox;

/// The oldest nats-server whose JetStream API async-nats speaks.
const MIN_VERSION: (u32, u32) = (2, 10);

/// The port the first node of a cluster `shoal up` starts routes on, as
/// nats-server's own default; the next nodes take the ports after it.
const ROUTE_PORT: u16 = 6222;

use crate::tunables::{
    NATS_CONNECT_TIMEOUT as CONNECT_TIMEOUT, NATS_PING_INTERVAL,
    NATS_REQUEST_TIMEOUT as REQUEST_TIMEOUT, NATS_START_POLL, NATS_START_TIMEOUT as START_TIMEOUT,
    NATS_STOP_TIMEOUT,
};

/// What a process presents to NATS, besides its URL.
#[derive(Debug, Clone, Default, Args)]
pub struct LoginArgs {
    /// This process's NATS credential (a `.creds` file, made by
    /// `shoal nats creds`). Not needed by `shoal up` with its own server.
    #[arg(long, env = "SHOAL_NATS_CREDS", value_name = "FILE")]
    pub nats_creds: Option<PathBuf>,
    /// Trust this CA certificate (PEM) for TLS to NATS; turns TLS on.
    #[arg(long, env = "SHOAL_NATS_TLS_CA", value_name = "FILE")]
    pub nats_tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) for TLS to NATS, with --nats-tls-key.
    #[arg(
        long,
        env = "SHOAL_NATS_TLS_CERT",
        value_name = "FILE",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(
        long,
        env = "SHOAL_NATS_TLS_KEY",
        value_name = "FILE",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
}

/// A credential's text: from `--nats-creds`, or minted by `shoal up`.
pub type Creds = Option<String>;

impl LoginArgs {
    /// The credential `--nats-creds` names, read now so that a bad path
    /// fails at start with its name.
    pub fn creds(&self) -> anyhow::Result<Creds> {
        self.nats_creds
            .as_ref()
            .map(|path| {
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the NATS credential {}", path.display()))
            })
            .transpose()
    }
}

/// The servers `urls` names: one URL, or several separated by commas (the
/// nodes of a NATS cluster, so that a process starts while any one of
/// them is up; it learns the rest from the cluster once connected).
pub fn server_list(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    let list: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>().with_context(|| {
                format!("{u:?} is not a NATS server URL (write nats://HOST:PORT, several separated by commas)")
            })
        })
        .collect::<anyhow::Result<_>>()?;
    if list.is_empty() {
        bail!("no NATS server given: write nats://HOST:PORT, several separated by commas");
    }
    Ok(list)
}

/// Connects to `url` (one server or a comma-separated list) as
/// `identity`, retrying in the background if it is not up yet, and
/// reconnecting forever after a loss, to any server of the cluster: hosts
/// must outlive NATS outages. A server that stops answering (hung, or cut
/// off without the connection closing) is noticed within a few
/// [`NATS_PING_INTERVAL`]s. Replies arrive under the identity's own inbox
/// prefix, the only one its NATS permissions let it read.
pub async fn connect(
    url: &str,
    identity: &Identity,
    creds: &Creds,
    tls: &LoginArgs,
) -> anyhow::Result<async_nats::Client> {
    let mut options = async_nats::ConnectOptions::new()
        .name(format!("shoal-{}", identity.name()))
        .custom_inbox_prefix(identity.inbox_prefix())
        .retry_on_initial_connect()
        .connection_timeout(CONNECT_TIMEOUT)
        .ping_interval(NATS_PING_INTERVAL)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Disconnected => {
                    tracing::warn!("disconnected from NATS; reconnecting")
                }
                async_nats::Event::Connected => tracing::info!("connected to NATS"),
                async_nats::Event::ServerError(e) => tracing::error!(
                    "NATS refused this process: {e}. Check its credential (--nats-creds; \
                     make one with `shoal nats creds`)"
                ),
                other => tracing::debug!(event = %other, "NATS event"),
            }
        });
    if let Some(creds) = creds {
        options = options
            .credentials(creds)
            .context("the NATS credential is not a .creds file")?;
    }
    if let Some(ca) = &tls.nats_tls_ca {
        options = options.require_tls(true).add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.nats_tls_cert, &tls.nats_tls_key) {
        options = options
            .require_tls(true)
            .add_client_certificate(cert.clone(), key.clone());
    }
    options
        .connect(server_list(url)?)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))
}

/// The nats-server processes `shoal up` runs: one, or the nodes of a
/// cluster routed to each other, each with JetStream. Stopped when dropped.
pub struct NatsServers {
    nodes: Vec<NatsServer>,
    /// Every node's client URL, separated by commas.
    pub url: String,
}

impl NatsServers {
    /// Starts `nodes` servers of `binary`, each storing under its own
    /// folder of `store_dir` (`store_dir` itself for one), on ports from
    /// `preferred_port` up where free, trusting only the credentials
    /// `authority` signs. The nodes of a cluster route to each other on
    /// the loopback interface, with a password made here and kept in the
    /// configuration files (mode 0600): no other process joins the cluster.
    pub fn start(
        binary: &Path,
        store_dir: &Path,
        preferred_port: u16,
        nodes: usize,
        authority: &Authority,
    ) -> anyhow::Result<Self> {
        let mut taken = Vec::new();
        let mut port_near = |preferred: u16| -> anyhow::Result<u16> {
            let port = if port_is_free(preferred) && !taken.contains(&preferred) {
                preferred
            } else {
                free_port()?
            };
            taken.push(port);
            Ok(port)
        };
        let mut ports = Vec::new();
        for i in 0..nodes {
            let offset = u16::try_from(i).unwrap_or(0);
            let client = port_near(preferred_port.saturating_add(offset))?;
            let route = port_near(ROUTE_PORT.saturating_add(offset))?;
            ports.push((client, route));
        }
        let auth = authority.server_config()?;
        let password = data_encoding::BASE32_NOPAD.encode(&SecretBox::generate_key());
        let routes = ports
            .iter()
            .map(|(_, route)| format!("nats-route://shoal:{password}@127.0.0.1:{route}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut servers = NatsServers {
            nodes: Vec::new(),
            url: String::new(),
        };
        for (i, (port, route)) in ports.iter().enumerate() {
            let (name, store, cluster) = if nodes == 1 {
                ("shoal".to_string(), store_dir.to_path_buf(), String::new())
            } else {
                (
                    format!("shoal-{}", i + 1),
                    store_dir.join(format!("n{}", i + 1)),
                    format!(
                        "cluster {{ name: shoal, host: 127.0.0.1, port: {route}, \
                         authorization {{ user: shoal, password: {password} }}, routes: [{routes}] }}\n"
                    ),
                )
            };
            std::fs::create_dir_all(&store)
                .with_context(|| format!("cannot create {}", store.display()))?;
            let config = if nodes == 1 {
                authority.dir().join("nats-server.conf")
            } else {
                authority.dir().join(format!("nats-server-{}.conf", i + 1))
            };
            write_private(
                &config,
                &format!(
                    "host: 127.0.0.1\nport: {port}\nserver_name: {name}\n\
                     max_payload: {NATS_MAX_PAYLOAD}\n\
                     jetstream {{ store_dir: {store:?}, max_file_store: {JETSTREAM_MAX_FILE_STORE} }}\n\
                     {cluster}{auth}",
                    store = store.display().to_string(),
                ),
            )?;
            servers
                .nodes
                .push(NatsServer::start(binary, &config, *port)?);
        }
        servers.url = servers
            .nodes
            .iter()
            .map(|n| n.url.as_str())
            .collect::<Vec<_>>()
            .join(",");
        Ok(servers)
    }
}

/// Writes `text` to `path`, readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    // A file made before with wider rights keeps them through `open`.
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .with_context(|| format!("cannot restrict {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// One nats-server process, stopped when dropped.
struct NatsServer {
    child: Child,
    /// The client URL.
    url: String,
}

impl NatsServer {
    /// Starts `binary` with `config`, and waits until it accepts clients
    /// on `port`.
    fn start(binary: &Path, config: &Path, port: u16) -> anyhow::Result<Self> {
        // A process group of its own: Ctrl-C in the terminal reaches
        // `shoal up`, which drains its host and scheduler over NATS first
        // and stops this server last.
        let child = Command::new(binary)
            .arg("-c")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = NatsServer {
            child,
            url: format!("nats://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, NATS_START_POLL * 4).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "nats-server exited at start ({status}); run it by hand to see why: {} -c {}",
                    binary.display(),
                    config.display()
                );
            }
            if Instant::now() > deadline {
                bail!("nats-server did not accept connections on {addr} within {START_TIMEOUT:?}");
            }
            std::thread::sleep(NATS_START_POLL);
        }
        Ok(server)
    }

    /// Stops the server (SIGTERM, then SIGKILL after a moment).
    pub fn stop(&mut self) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + NATS_STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(NATS_START_POLL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Finds a nats-server of a version that works: `explicit`, the project's
/// tool folder next to this binary, then `PATH`.
pub fn find_server(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(path) = explicit {
        candidates.push(path);
    } else {
        if let Ok(exe) = std::env::current_exe() {
            // target/<profile>/shoal → the repository's .tools/nats
            for up in exe.ancestors().skip(1).take(4) {
                candidates.push(up.join(".tools/nats/bin/nats-server"));
            }
        }
        if let Some(paths) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&paths).map(|p| p.join("nats-server")));
        }
    }
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        match version(&path) {
            Some(v) if v >= MIN_VERSION => return Ok(path),
            Some((major, minor)) => tried.push(format!("{} is {major}.{minor}", path.display())),
            None => tried.push(format!("{} did not say its version", path.display())),
        }
    }
    let found = if tried.is_empty() {
        "none was found".to_string()
    } else {
        tried.join("; ")
    };
    bail!(
        "Shoal needs nats-server {}.{} or newer with JetStream, and {found}. \
         Run scripts/setup (it installs one into .tools/nats), pass --nats-server PATH, \
         or join a running server with --nats URL",
        MIN_VERSION.0,
        MIN_VERSION.1
    )
}

fn version(binary: &Path) -> Option<(u32, u32)> {
    let out = Command::new(binary).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "nats-server: v2.15.1"
    let v = text.rsplit('v').next()?.trim();
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_given_as_urls_separated_by_commas() {
        let list =
            server_list("nats://10.0.0.1:4222, nats://10.0.0.2:4222,nats://10.0.0.3:4222").unwrap();
        assert_eq!(list.len(), 3);
        assert_eq!(list[1].host(), "10.0.0.2");
        assert_eq!(server_list("nats://127.0.0.1:4222").unwrap().len(), 1);

        let bad = server_list("nats://10.0.0.1:4222,nats://:x:y").unwrap_err();
        assert!(format!("{bad:#}").contains("nats://:x:y"), "{bad:#}");
        let none = server_list(" , ").unwrap_err();
        assert!(format!("{none:#}").contains("no NATS server"), "{none:#}");
    }
}
