//! A real cluster for end-to-end tests: a nats-server with JetStream on a
//! free port, a scheduler process and host processes, each killed when the
//! test ends.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::de::DeserializeOwned;
use shoal_api::resources::{AppSummary, HostInfo, HostState, PodInfo};
use shoal_api::subjects::{JETSTREAM_MAX_FILE_STORE, NATS_MAX_PAYLOAD};

use crate::{Output, Running, repo_root, shoal_with_env};

/// How long a process may take to come up.
pub const START_LIMIT: Duration = Duration::from_secs(30);

/// A free port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The nats-server the project's set-up installed.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    let path = repo_root().join(".tools/nats/bin/nats-server");
    if !path.is_file() {
        bail!(
            "{} is missing: run scripts/setup to install nats-server",
            path.display()
        );
    }
    Ok(path)
}

/// nats-server with JetStream and Shoal's NATS authentication (made by
/// `shoal nats init`): one server, or the nodes of a cluster routed to each
/// other. Killed when dropped.
pub struct Nats {
    nodes: Vec<Node>,
    auth: PathBuf,
    /// With TLS: the CA certificate clients must trust.
    tls_ca: Option<PathBuf>,
}

/// One nats-server process of [`Nats`].
struct Node {
    child: Option<Child>,
    port: u16,
    /// The port routes from the other nodes come in on, in a cluster.
    route_port: Option<u16>,
    store: PathBuf,
}

impl Nats {
    /// Starts one on a free port, storing JetStream data under `store`
    /// and its NATS authority beside it.
    pub fn start(store: &Path) -> anyhow::Result<Self> {
        Nats::start_nodes(store, 1)
    }

    /// Starts a cluster of `nodes` servers on free ports, routed to each
    /// other, each storing under its own folder of `store`.
    pub fn start_cluster(store: &Path, nodes: usize) -> anyhow::Result<Self> {
        Nats::start_nodes(store, nodes)
    }

    fn start_nodes(store: &Path, count: usize) -> anyhow::Result<Self> {
        let auth = store.with_extension("auth");
        let init = crate::shoal_with_env(
            &["nats", "init", "--dir", &auth.display().to_string()],
            &[],
            START_LIMIT,
        )?;
        if init.code != Some(0) {
            bail!("shoal nats init failed: {}", init.stderr);
        }
        let mut nodes = Vec::new();
        for i in 0..count {
            nodes.push(Node {
                child: None,
                port: free_port()?,
                route_port: if count > 1 { Some(free_port()?) } else { None },
                store: if count > 1 {
                    store.join(format!("n{}", i + 1))
                } else {
                    store.to_path_buf()
                },
            });
        }
        let mut nats = Nats {
            nodes,
            auth,
            tls_ca: None,
        };
        nats.restart()?;
        Ok(nats)
    }

    /// Like [`Nats::start`], but the server speaks TLS only, with a
    /// certificate for 127.0.0.1 from a CA made for the test.
    pub fn start_tls(store: &Path) -> anyhow::Result<Self> {
        let mut nats = Nats::start(store)?;
        nats.kill();
        let pki = Pki::make(&nats.auth, "server")?;
        nats.tls_ca = Some(pki.ca);
        nats.restart()?;
        Ok(nats)
    }

    /// What every process of the cluster needs to reach this server
    /// besides its credential: the CA to trust, with TLS.
    pub fn client_args(&self) -> Vec<String> {
        match &self.tls_ca {
            Some(ca) => vec!["--nats-tls-ca".into(), ca.display().to_string()],
            None => Vec::new(),
        }
    }

    /// The CA certificate clients trust, when the server speaks TLS.
    pub fn tls_ca(&self) -> Option<&Path> {
        self.tls_ca.as_deref()
    }

    /// The first node's client URL.
    pub fn url(&self) -> String {
        self.node_url(0)
    }

    /// Node `i`'s client URL.
    pub fn node_url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].port)
    }

    /// Every node's client URL, separated by commas, as `--nats` takes
    /// them.
    pub fn urls(&self) -> String {
        (0..self.nodes.len())
            .map(|i| self.node_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// How many nodes there are.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are none (never: one at least is started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// A credential file for `who` (`scheduler`, `admin`, `host NAME`,
    /// `namespace NS`), made by `shoal nats creds`.
    pub fn creds(&self, who: &str) -> anyhow::Result<PathBuf> {
        let path = self.auth.join(format!("{}.creds", who.replace(' ', "-")));
        if !path.is_file() {
            let mut args = vec!["nats", "creds"];
            args.extend(who.split(' '));
            let dir = self.auth.display().to_string();
            let out = path.display().to_string();
            args.extend(["--dir", &dir, "-o", &out]);
            let made = crate::shoal_with_env(&args, &[], START_LIMIT)?;
            if made.code != Some(0) {
                bail!("shoal nats creds {who} failed: {}", made.stderr);
            }
        }
        Ok(path)
    }

    /// A NATS client with full rights, as an operator's tools would have.
    pub async fn admin(&self) -> anyhow::Result<async_nats::Client> {
        self.client_as("admin", "_INBOX.admin").await
    }

    /// A NATS client with the credential of `who` (see [`Nats::creds`]),
    /// its replies under `inbox`, knowing every node.
    pub async fn client_as(&self, who: &str, inbox: &str) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::with_credentials_file(self.creds(who)?)
            .await?
            .custom_inbox_prefix(inbox);
        if let Some(ca) = &self.tls_ca {
            options = options.require_tls(true).add_root_certificates(ca.clone());
        }
        let addrs = (0..self.nodes.len())
            .map(|i| self.node_url(i).parse())
            .collect::<Result<Vec<async_nats::ServerAddr>, _>>()?;
        Ok(options.connect(addrs).await?)
    }

    /// Kills every node (as a crash would).
    pub fn kill(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Kills node `i` with SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts every node again on the same ports with the same stores.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        for i in 0..self.nodes.len() {
            self.restart_node(i)?;
        }
        Ok(())
    }

    /// Starts node `i` again (killing it first if it runs) on its port
    /// with its store.
    pub fn restart_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_node(i);
        let auth = std::fs::read_to_string(self.auth.join("nats-auth.conf"))
            .context("reading nats-auth.conf")?;
        let config = self.auth.join(format!("server-{i}.conf"));
        let tls = match &self.tls_ca {
            Some(ca) => format!(
                "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?} }}\n",
                self.auth.join("server.pem").display().to_string(),
                self.auth.join("server-key.pem").display().to_string(),
                ca.display().to_string()
            ),
            None => String::new(),
        };
        let node = &self.nodes[i];
        let cluster = match node.route_port {
            Some(port) => {
                let routes = self
                    .nodes
                    .iter()
                    .filter_map(|n| n.route_port)
                    .map(|p| format!("nats-route://127.0.0.1:{p}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "server_name: n{}\ncluster {{ name: test, host: 127.0.0.1, port: {port}, routes: [{routes}] }}\n",
                    i + 1
                )
            }
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                "host: 127.0.0.1\nport: {}\nmax_payload: {NATS_MAX_PAYLOAD}\njetstream {{ store_dir: {:?}, max_file_store: {JETSTREAM_MAX_FILE_STORE} }}\n{cluster}{tls}{auth}",
                node.port,
                node.store.display().to_string()
            ),
        )?;
        let child = Command::new(nats_server_bin()?)
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let addr = SocketAddr::from(([127, 0, 0, 1], node.port));
        self.nodes[i].child = Some(child);
        let deadline = Instant::now() + START_LIMIT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if Instant::now() > deadline {
                bail!("nats-server did not come up on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A CA made for a test and a certificate for 127.0.0.1 it signed, as PEM
/// files.
pub struct Pki {
    /// The CA's certificate: what clients trust.
    pub ca: PathBuf,
    /// The server's certificate.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
}

impl Pki {
    /// Writes `ca.pem`, `<name>.pem` and `<name>-key.pem` into `dir`.
    pub fn make(dir: &Path, name: &str) -> anyhow::Result<Pki> {
        let ca_key = rcgen::KeyPair::generate()?;
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let key = rcgen::KeyPair::generate()?;
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])?
            .signed_by(&key, &ca, &ca_key)?;
        let write = |file: String, text: String| -> anyhow::Result<PathBuf> {
            let path = dir.join(file);
            std::fs::write(&path, text)?;
            Ok(path)
        };
        Ok(Pki {
            ca: write("ca.pem".into(), ca.pem())?,
            cert: write(format!("{name}.pem"), cert.pem())?,
            key: write(format!("{name}-key.pem"), key.serialize_pem())?,
        })
    }
}

/// A cluster: NATS, a scheduler and hosts, all real processes.
pub struct Cluster {
    /// The NATS server.
    pub nats: Nats,
    /// The scheduler process, when running.
    pub scheduler: Option<Running>,
    /// Host processes by name.
    pub hosts: Vec<(String, Running)>,
    /// Where the verbs go.
    api_port: u16,
    /// The first scheduler's API port.
    first_port: u16,
    dir: tempfile::TempDir,
    scheduler_flags: Vec<String>,
    metrics: Vec<(String, SocketAddr)>,
    /// What hosts stopped by [`Cluster::stop_host`] printed.
    stopped_output: Vec<String>,
    /// More schedulers beside the first, by API port.
    pub standbys: Vec<(u16, Running)>,
}

impl Cluster {
    /// NATS and a scheduler, no hosts yet.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let nats = Nats::start(&dir.path().join("nats"))?;
        Cluster::on(nats, dir)
    }

    /// The same, with NATS speaking TLS only.
    pub fn start_tls() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let nats = Nats::start_tls(&dir.path().join("nats"))?;
        Cluster::on(nats, dir)
    }

    /// A NATS cluster of `nodes` servers and a scheduler, no hosts yet.
    pub fn start_on_nats_cluster(nodes: usize) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let nats = Nats::start_cluster(&dir.path().join("nats"), nodes)?;
        Cluster::on(nats, dir)
    }

    /// NATS and a scheduler started with these extra flags.
    pub fn start_with(scheduler_flags: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let nats = Nats::start(&dir.path().join("nats"))?;
        let mut cluster = Cluster::new(nats, dir)?;
        cluster.scheduler_flags = scheduler_flags.iter().map(|f| f.to_string()).collect();
        cluster.start_scheduler()?;
        Ok(cluster)
    }

    fn new(nats: Nats, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let port = free_port()?;
        Ok(Cluster {
            nats,
            scheduler: None,
            hosts: Vec::new(),
            api_port: port,
            first_port: port,
            dir,
            scheduler_flags: Vec::new(),
            metrics: Vec::new(),
            stopped_output: Vec::new(),
            standbys: Vec::new(),
        })
    }

    fn on(nats: Nats, dir: tempfile::TempDir) -> anyhow::Result<Self> {
        let mut cluster = Cluster::new(nats, dir)?;
        cluster.start_scheduler()?;
        Ok(cluster)
    }

    /// The API URL.
    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Starts (or restarts) the scheduler process.
    pub fn start_scheduler(&mut self) -> anyhow::Result<()> {
        self.scheduler = None;
        self.scheduler = Some(self.spawn_scheduler(self.first_port)?);
        Ok(())
    }

    /// Starts one more scheduler beside the others, with an API of its
    /// own, sharing NATS, data directory and secret key: it stands by
    /// until it takes the lease. Returns its API port.
    pub fn start_standby(&mut self) -> anyhow::Result<u16> {
        let port = free_port()?;
        let s = self.spawn_scheduler(port)?;
        self.standbys.push((port, s));
        Ok(port)
    }

    /// The API ports of every scheduler process running.
    pub fn scheduler_ports(&self) -> Vec<u16> {
        let first = self.scheduler.as_ref().map(|_| self.first_port);
        first
            .into_iter()
            .chain(self.standbys.iter().map(|(p, _)| *p))
            .collect()
    }

    /// The scheduler process whose API is on `port`.
    pub fn scheduler_on(&self, port: u16) -> Option<&Running> {
        if port == self.first_port {
            return self.scheduler.as_ref();
        }
        self.standbys
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, s)| s)
    }

    /// Kills (SIGKILL) the scheduler whose API is on `port`.
    pub fn kill_scheduler_on(&mut self, port: u16) {
        if port == self.first_port {
            self.scheduler = None;
        } else {
            self.standbys.retain(|(p, _)| *p != port);
        }
    }

    /// Starts a scheduler on `port` again, after [`Cluster::kill_scheduler_on`].
    pub fn restart_scheduler_on(&mut self, port: u16) -> anyhow::Result<()> {
        let s = self.spawn_scheduler(port)?;
        if port == self.first_port {
            self.scheduler = Some(s);
        } else {
            self.standbys.push((port, s));
        }
        Ok(())
    }

    /// Points [`Cluster::shoal`] and [`Cluster::api`] at the scheduler on
    /// `port`.
    pub fn use_scheduler(&mut self, port: u16) {
        self.api_port = port;
    }

    fn spawn_scheduler(&self, port: u16) -> anyhow::Result<Running> {
        let data = self.dir.path().join("scheduler").display().to_string();
        let api = format!("127.0.0.1:{port}");
        let nats = self.nats.urls();
        let creds = self.nats.creds("scheduler")?.display().to_string();
        let mut args = vec![
            "scheduler",
            "--nats",
            &nats,
            "--nats-creds",
            &creds,
            "--api",
            &api,
            "--data-dir",
            &data,
        ];
        let tls = self.nats.client_args();
        args.extend(tls.iter().map(String::as_str));
        args.extend(self.scheduler_flags.iter().map(String::as_str));
        let mut s = Running::start(&args)?;
        s.wait_for_line("scheduler API on", START_LIMIT)?;
        Ok(s)
    }

    /// Kills the scheduler process.
    pub fn kill_scheduler(&mut self) {
        self.scheduler = None;
    }

    /// Starts a host called `name` with `labels` (k=v,k=v); returns its ingress address.
    pub fn start_host(&mut self, name: &str, labels: &str) -> anyhow::Result<SocketAddr> {
        self.start_host_with(name, labels, &[])
    }

    /// [`start_host`](Self::start_host) with more flags.
    pub fn start_host_with(
        &mut self,
        name: &str,
        labels: &str,
        flags: &[&str],
    ) -> anyhow::Result<SocketAddr> {
        let data = self
            .dir
            .path()
            .join(format!("host-{name}"))
            .display()
            .to_string();
        let nats = self.nats.urls();
        let creds = self
            .nats
            .creds(&format!("host {name}"))?
            .display()
            .to_string();
        let mut args = vec![
            "host",
            "--nats",
            &nats,
            "--nats-creds",
            &creds,
            "--name",
            name,
            "--labels",
            labels,
            "--http",
            "127.0.0.1:0",
            "--data-dir",
            &data,
            "--memory",
            "64GiB",
            "--metrics",
            "127.0.0.1:0",
        ];
        let tls = self.nats.client_args();
        args.extend(tls.iter().map(String::as_str));
        args.extend(flags);
        let mut h = Running::start(&args)?;
        let line = h.wait_for_line("host ingress on http://", START_LIMIT)?;
        let addr = line
            .rsplit("http://")
            .next()
            .ok_or_else(|| anyhow!("no address in {line:?}"))?
            .trim()
            .parse()?;
        let line = h.wait_for_line("host metrics on http://", START_LIMIT)?;
        let metrics: SocketAddr = line
            .rsplit("http://")
            .next()
            .and_then(|a| a.trim().strip_suffix("/metrics"))
            .ok_or_else(|| anyhow!("no address in {line:?}"))?
            .parse()?;
        self.metrics.retain(|(n, _)| n != name);
        self.metrics.push((name.to_string(), metrics));
        self.hosts.push((name.to_string(), h));
        // Ready once the scheduler has heard its heartbeat.
        if self.scheduler.is_some() {
            self.wait_until(
                &format!("host {name} known to the scheduler"),
                START_LIMIT,
                |c| {
                    Ok(c.hosts()?
                        .iter()
                        .any(|h| h.id.as_str() == name && h.state == HostState::Ready)
                        .then_some(()))
                },
            )?;
        }
        Ok(addr)
    }

    /// The data directory of the host called `name`.
    pub fn host_data(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("host-{name}"))
    }

    /// Everything every process printed so far.
    pub fn all_output(&mut self) -> String {
        let mut out = self.stopped_output.clone();
        if let Some(s) = &mut self.scheduler {
            out.extend(s.output());
        }
        for (_, s) in &mut self.standbys {
            out.extend(s.output());
        }
        for (_, h) in &mut self.hosts {
            out.extend(h.output());
        }
        out.join("\n")
    }

    /// Stops the host called `name` as an operator would (SIGTERM), and
    /// returns its exit code.
    pub fn stop_host(&mut self, name: &str, limit: Duration) -> anyhow::Result<Option<i32>> {
        let (_, host) = self
            .hosts
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or_else(|| anyhow!("no host {name}"))?;
        let code = host.stop(limit)?;
        self.stopped_output.extend(host.output());
        self.hosts.retain(|(n, _)| n != name);
        Ok(code)
    }

    /// Kills the host called `name`, as a crash would.
    pub fn kill_host(&mut self, name: &str) {
        self.hosts.retain(|(n, _)| n != name);
    }

    /// The host process called `name`.
    pub fn host(&self, name: &str) -> anyhow::Result<&Running> {
        self.hosts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, h)| h)
            .ok_or_else(|| anyhow!("no host {name}"))
    }

    /// Writes an app spec called `file` into the cluster's directory and
    /// returns its path. `SOURCE(name)` in `body` becomes the path of the
    /// compiled example `name`.
    pub fn spec(&self, file: &str, body: &str) -> anyhow::Result<String> {
        let mut text = body.to_string();
        while let Some(start) = text.find("SOURCE(") {
            let end = text[start..]
                .find(')')
                .map(|e| start + e)
                .ok_or_else(|| anyhow!("unclosed SOURCE( in {file}"))?;
            let path = crate::wasm_path(&text[start + 7..end])?;
            text.replace_range(start..=end, &path.display().to_string());
        }
        let path = self.dir().join(file);
        std::fs::write(&path, text)?;
        Ok(path.display().to_string())
    }

    /// Runs a `shoal` verb against this cluster.
    pub fn shoal(&self, args: &[&str]) -> anyhow::Result<Output> {
        let config = self.admin_config().display().to_string();
        shoal_with_env(
            args,
            &[("SHOAL_API", &self.api()), ("SHOAL_CONFIG", &config)],
            Duration::from_secs(60),
        )
    }

    /// The client config the scheduler wrote on its first start, holding
    /// the cluster's first admin token.
    pub fn admin_config(&self) -> PathBuf {
        self.dir.path().join("scheduler").join("admin.toml")
    }

    /// The first admin's token, from [`Cluster::admin_config`].
    pub fn admin_token(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(self.admin_config())?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("token = "))
            .map(|t| t.trim_matches('"').to_string())
            .ok_or_else(|| anyhow!("no token in {}", self.admin_config().display()))
    }

    /// Where host `name` serves its metrics.
    pub fn host_metrics(&self, name: &str) -> anyhow::Result<SocketAddr> {
        self.metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .ok_or_else(|| anyhow!("no host {name}"))
    }

    /// Runs `shoal ARGS…` against the cluster with `token` alone (no client
    /// config).
    pub fn shoal_as(&self, token: &str, args: &[&str]) -> anyhow::Result<Output> {
        let config = self.dir.path().join("no-config.toml").display().to_string();
        shoal_with_env(
            args,
            &[
                ("SHOAL_API", &self.api()),
                ("SHOAL_CONFIG", &config),
                ("SHOAL_TOKEN", token),
            ],
            Duration::from_secs(60),
        )
    }

    /// A new token for `principal` holding `role` in `namespace` (or
    /// cluster-wide when `None`), made by the admin.
    pub fn token(
        &self,
        principal: &str,
        role: &str,
        namespace: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut args = vec![
            "auth", "token", "create", principal, "--role", role, "--quiet",
        ];
        match namespace {
            Some(ns) => args.extend(["-n", ns]),
            None => args.push("--cluster"),
        }
        Ok(self.ok(&args)?.trim().to_string())
    }

    /// Creates namespace `name` (as the admin).
    pub fn create_namespace(&self, name: &str) -> anyhow::Result<()> {
        self.ok(&["create", "namespace", name]).map(|_| ())
    }

    /// Runs a verb that must succeed, returning its stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.shoal(args)?;
        if out.code != Some(0) {
            bail!("shoal {args:?} failed ({:?}): {}", out.code, out.stderr);
        }
        Ok(out.stdout)
    }

    /// `shoal get WHAT -o json`, parsed.
    pub fn get<T: DeserializeOwned>(&self, what: &str) -> anyhow::Result<T> {
        let stdout = self.ok(&["get", what, "-o", "json"])?;
        serde_json::from_str(&stdout).with_context(|| format!("parsing {stdout}"))
    }

    /// Every replica.
    pub fn pods(&self) -> anyhow::Result<Vec<PodInfo>> {
        self.get("pods")
    }

    /// Every host.
    pub fn hosts(&self) -> anyhow::Result<Vec<HostInfo>> {
        self.get("hosts")
    }

    /// Every app.
    pub fn apps(&self) -> anyhow::Result<Vec<AppSummary>> {
        self.get("apps")
    }

    /// Polls `check` every 100 ms until it returns `Some`, for up to `limit`.
    pub fn wait_until<T>(
        &self,
        what: &str,
        limit: Duration,
        mut check: impl FnMut(&Cluster) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        let mut last = String::new();
        loop {
            match check(self) {
                Ok(Some(v)) => return Ok(v),
                Ok(None) => {}
                Err(e) => last = format!("{e:#}"),
            }
            if Instant::now() > deadline {
                bail!("{what}: not within {limit:?} {last}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A scratch directory for this test.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}
