//! `shoal scheduler`, `shoal host` and `shoal up`: the cluster roles.

use shoal_host::trace::Exporting;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use shoal_api::access::Roles;
use shoal_api::resources::{AppStatus, AppSummary};
use shoal_api::wire::{Capacity, HostId};
use shoal_api::{AppSpec, ByteSize, ComponentKind};
use shoal_host::agent::{HostAgent, HostConfig};
use shoal_host::layout::DataLayout;
use shoal_host::{Runtime, RuntimeOptions};
use shoal_scheduler::jetstream::Copies;
use shoal_scheduler::secrets::SecretBox;
use shoal_scheduler::{AuthMode, Scheduler, SchedulerOptions};
use tokio::sync::watch;

use crate::client::Client;
use crate::config::{self, ClientConfig, ContextEntry, Target};
use crate::tunables::{UP_READY_TIMEOUT, UP_STOP_TIMEOUT, WAIT_POLL};
use shoal_api::identity::Identity;

use crate::credentials::Authority;
use crate::nats::{Creds, LoginArgs, NatsServers, connect, find_server};
use crate::verbs::print_apply;

/// The address to listen on for an API given as `--api` (a URL or an
/// address: `http://127.0.0.1:7070` or `127.0.0.1:7070`).
pub fn listen_addr(api: &str) -> anyhow::Result<SocketAddr> {
    let addr = api
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    addr.parse().with_context(|| {
        format!("--api {api:?} is not an address to listen on, like 127.0.0.1:7070")
    })
}
/// The default host HTTP ingress address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The default host metrics address.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9090";
/// The default NATS URL.
pub const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";

/// What every cluster role takes: `shoal scheduler` has nothing more.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The NATS server to use; for a cluster, several of its nodes'
    /// URLs separated by commas.
    #[arg(long, env = "SHOAL_NATS", default_value = DEFAULT_NATS)]
    nats: String,
    #[command(flatten)]
    login: LoginArgs,
    /// Where Shoal keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// How the scheduler's API serves and whom it lets in: `shoal scheduler`
/// and `shoal up`.
#[derive(Debug, Args)]
pub struct ApiSettings {
    /// Serve the API over TLS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The TLS certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A host name the API answers to (repeatable), besides IP addresses
    /// and `localhost`: any other `Host` is refused (DNS rebinding).
    #[arg(long = "api-name", value_name = "NAME")]
    api_names: Vec<String>,
    /// Custom roles, from a TOML file (`[roles.NAME]` with `rules`).
    #[arg(long, value_name = "FILE")]
    roles: Option<PathBuf>,
    /// DANGER: turn authentication off. Every caller is an admin.
    #[arg(long)]
    insecure_no_auth: bool,
    /// DANGER: serve the API in plain HTTP on an address other machines
    /// reach, where tokens cross the network in clear.
    #[arg(long)]
    insecure_no_tls: bool,
    /// How many copies JetStream keeps of what the scheduler stores: 1 to
    /// 5, or `auto` (one on a single nats-server, three on a cluster of
    /// three or more nodes).
    #[arg(long, value_name = "N|auto", default_value = "auto", value_parser = Copies::parse)]
    nats_replicas: Copies,
}

/// Compiles components for the scheduler with the hosts' engine settings:
/// `shoal-host`'s compiler under `shoal-scheduler`'s trait (the two crates
/// never depend on each other; the binary puts them together).
#[derive(Debug)]
struct HostCompiler(shoal_host::ClusterCompiler);

impl shoal_scheduler::compiled::Precompiler for HostCompiler {
    fn engine_id(&self) -> &str {
        self.0.engine_id()
    }

    fn precompile(&self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        self.0.precompile(bytes)
    }
}

/// The scheduler's compiler, or none (each host then compiles for itself)
/// when this machine cannot make a wasmtime engine.
fn cluster_compiler() -> Option<Arc<dyn shoal_scheduler::compiled::Precompiler>> {
    match shoal_host::ClusterCompiler::new() {
        Ok(compiler) => Some(Arc::new(HostCompiler(compiler))),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "cannot compile for the cluster here; each host compiles for itself");
            None
        }
    }
}

impl ApiSettings {
    /// The scheduler's options for an API listening on `addr`; refuses
    /// plain HTTP beyond this machine unless told so, loudly.
    fn options(&self, addr: SocketAddr, secret_box: SecretBox) -> anyhow::Result<SchedulerOptions> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(shoal_scheduler::tls::server_config(cert, key)?),
            _ => None,
        };
        let public = !addr.ip().is_loopback();
        if public && tls.is_none() {
            if !self.insecure_no_tls {
                bail!(
                    "refusing to serve the API in plain HTTP on {addr}, which other machines reach: tokens would cross the network in clear. Give --tls-cert and --tls-key, listen on 127.0.0.1, or pass --insecure-no-tls if something else encrypts the traffic"
                );
            }
            tracing::warn!(%addr, "DANGER: the API serves plain HTTP beyond this machine (--insecure-no-tls)");
        }
        if self.insecure_no_auth && public {
            bail!(
                "refusing to serve the API without authentication on {addr}, which other machines reach: whoever reached it would be an admin. Drop --insecure-no-auth, or listen on 127.0.0.1"
            );
        }
        let auth = if self.insecure_no_auth {
            tracing::warn!(%addr, "DANGER: authentication is OFF (--insecure-no-auth): whoever reaches the API is an admin");
            AuthMode::Off
        } else {
            let roles = match &self.roles {
                Some(file) => {
                    let text = std::fs::read_to_string(file)
                        .with_context(|| format!("cannot read --roles {}", file.display()))?;
                    Roles::with_custom(&text, &file.display().to_string())?
                }
                None => Roles::builtin(),
            };
            AuthMode::Tokens(roles)
        };
        Ok(SchedulerOptions {
            api_addr: addr,
            auth,
            api_names: self.api_names.clone(),
            tls,
            secret_box,
            copies: self.nats_replicas,
            compiler: cluster_compiler(),
        })
    }

    /// The URL clients on this machine use for an API listening on
    /// `addr`: the first `--api-name` (what a certificate names), else the
    /// address, with loopback for an unspecified one (`0.0.0.0`).
    fn url(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        match self.api_names.first() {
            Some(name) => format!("{scheme}://{name}:{}", addr.port()),
            None if addr.ip().is_unspecified() => {
                let loopback = match addr {
                    SocketAddr::V4(_) => std::net::IpAddr::from([127, 0, 0, 1]),
                    SocketAddr::V6(_) => std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                };
                format!("{scheme}://{}", SocketAddr::new(loopback, addr.port()))
            }
            None => format!("{scheme}://{addr}"),
        }
    }
}

/// `shoal scheduler`.
#[derive(Debug, Args)]
pub struct SchedulerArgs {
    #[command(flatten)]
    role: RoleArgs,
    #[command(flatten)]
    api: ApiSettings,
}

/// Keeps a new cluster's first admin token, shown only once, in a client
/// config under the data dir (mode 0600), and says where.
fn keep_first_admin(
    scheduler: &mut Scheduler,
    data_dir: &std::path::Path,
    api: &str,
) -> anyhow::Result<()> {
    let Some(token) = scheduler.take_first_admin() else {
        return Ok(());
    };
    let path = data_dir.join(ADMIN_CONFIG);
    let mut config = ClientConfig::default();
    config.set_context(
        ADMIN_CONTEXT,
        ContextEntry {
            api: api.to_string(),
            token: Some(token.reveal().to_string()),
            namespace: None,
            ca: None,
        },
        true,
    );
    config.save(&path)?;
    println!(
        "the first admin token is in {}: `export SHOAL_CONFIG={}`",
        path.display(),
        path.display()
    );
    Ok(())
}

/// The client config, under the data dir, holding the first admin token.
pub const ADMIN_CONFIG: &str = "admin.toml";
/// Its context's name.
const ADMIN_CONTEXT: &str = "admin";

/// Host settings shared by `shoal host` and `shoal up`.
#[derive(Debug, Args)]
pub struct HostSettings {
    /// The host's id; defaults to the machine's name and a random suffix.
    #[arg(long)]
    name: Option<String>,
    /// Labels for placement, as k=v,k=v.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// Memory the host offers to replicas [default: the machine's memory].
    /// Each replica reserves its components' `limits.memory` ×
    /// `limits.concurrency`: what they may hold at their busiest.
    #[arg(long, value_parser = ByteSize::parse)]
    memory: Option<ByteSize>,
    /// Replicas the host runs at most.
    #[arg(long, default_value_t = 256)]
    slots: u32,
    /// Where the host serves its Prometheus metrics (`/metrics`), apart
    /// from the ingress.
    #[arg(long, default_value = DEFAULT_METRICS)]
    metrics: SocketAddr,
    /// Export trace spans by OTLP/HTTP to this collector (like
    /// http://127.0.0.1:4318). Nothing is exported without it.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

/// `shoal host`.
#[derive(Debug, Args)]
pub struct HostArgs {
    #[command(flatten)]
    role: RoleArgs,
    /// Where the HTTP ingress listens.
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: SocketAddr,
    #[command(flatten)]
    host: HostSettings,
}

/// `shoal up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// App specs to apply once the cluster is up.
    #[arg(value_name = "APP.toml")]
    apps: Vec<PathBuf>,
    /// Join this NATS server instead of starting one.
    #[arg(long, env = "SHOAL_NATS")]
    nats: Option<String>,
    #[command(flatten)]
    login: LoginArgs,
    /// The nats-server binary to start.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Start this many nats-server nodes as one cluster (routed to each
    /// other, JetStream on each) instead of one server: 3 survives the
    /// loss of any node.
    #[arg(long, value_name = "NODES", default_value_t = 1, conflicts_with = "nats",
          value_parser = clap::value_parser!(u16).range(1..=5))]
    nats_cluster: u16,
    /// Where the host's HTTP ingress listens.
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: SocketAddr,
    /// Where Shoal keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    host: HostSettings,
    #[command(flatten)]
    api_settings: ApiSettings,
}

fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                Ok((k.trim().to_string(), v.trim().to_string()))
            }
            _ => Err(format!("expected labels as k=v,k=v; got {pair:?}")),
        })
        .collect()
}

/// The machine's memory (`MemTotal` in /proc/meminfo), or 8 GiB where it
/// cannot be read.
fn machine_memory() -> u64 {
    const FALLBACK: u64 = 8 << 30;
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            kib.checked_mul(1024)
        })
        .unwrap_or(FALLBACK)
}

fn host_id(name: Option<String>) -> anyhow::Result<HostId> {
    let name = match name {
        Some(name) => name,
        None => {
            let machine = std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "host".into());
            let machine: String = machine
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .take(40)
                .collect();
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            format!("{machine}-{:06x}", (nanos ^ std::process::id()) & 0xff_ffff)
        }
    };
    HostId::new(name).map_err(anyhow::Error::msg)
}

/// Points the user's client config (context `local`, made current) at
/// this `shoal up`'s API, with the admin token kept under its data dir:
/// after `shoal up`, every verb works without a flag. Returns the target
/// `shoal up` itself uses.
fn local_context(data_dir: &std::path::Path, api: &str, auth_off: bool) -> anyhow::Result<Target> {
    let admin = ClientConfig::load(&data_dir.join(ADMIN_CONFIG))?;
    let token = admin
        .contexts
        .get(ADMIN_CONTEXT)
        .and_then(|c| c.token.clone());
    if token.is_none() && !auth_off {
        bail!(
            "{} holds no admin token, and this cluster made its first one before: restore that file, or start afresh with a new --data-dir",
            data_dir.join(ADMIN_CONFIG).display()
        );
    }
    let entry = ContextEntry {
        api: api.to_string(),
        token: token.clone(),
        namespace: None,
        ca: None,
    };
    let path = config::default_path()?;
    let mut user = ClientConfig::load(&path)?;
    user.set_context(LOCAL_CONTEXT, entry, true);
    user.save(&path)?;
    println!("  config     {} (context {LOCAL_CONTEXT})", path.display());
    Ok(Target {
        api: api.to_string(),
        token,
        namespace: shoal_api::DEFAULT_NAMESPACE.to_string(),
        ca: None,
        context: Some(LOCAL_CONTEXT.to_string()),
    })
}

/// The context `shoal up` writes into the user's client config.
const LOCAL_CONTEXT: &str = "local";

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// A shutdown signal that can be both fired and awaited by many.
fn stop_channel() -> (
    watch::Sender<bool>,
    impl Fn() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>,
) {
    let (tx, rx) = watch::channel(false);
    let wait = move || {
        let mut rx = rx.clone();
        Box::pin(async move {
            let _ = rx.wait_for(|s| *s).await;
        }) as std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
    };
    (tx, wait)
}

/// The key that seals secrets at rest: `SHOAL_SECRET_KEY` (base64 of 32
/// bytes), else the file `SHOAL_SECRET_KEY_FILE`, else `secret.key` in
/// Shoal's configuration directory (`$XDG_CONFIG_HOME/shoal`, or
/// `~/.config/shoal`), created on first use with mode 0600. It is kept
/// away from the data dir on purpose: a copy of the JetStream data (a
/// backup, a stolen disk) must not carry the key that opens it.
/// `SHOAL_SECRET_KEY_PREVIOUS` opens secrets sealed before a rotation.
fn secret_box(data_dir: &std::path::Path) -> anyhow::Result<SecretBox> {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    let decode = |var: &str, text: &str| -> anyhow::Result<[u8; 32]> {
        let bytes = STANDARD
            .decode(text.trim())
            .with_context(|| format!("{var} is not base64"))?;
        bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("{var} must be 32 bytes (44 characters of base64)"))
    };
    let key = match std::env::var("SHOAL_SECRET_KEY") {
        Ok(text) if !text.is_empty() => decode("SHOAL_SECRET_KEY", &text)?,
        _ => {
            let legacy = data_dir.join("secret.key");
            let path = if legacy.is_file() {
                tracing::warn!(
                    path = %legacy.display(),
                    "the secret key lies beside the data it protects: move it to {} (or set SHOAL_SECRET_KEY_FILE)",
                    secret_key_path().display()
                );
                legacy
            } else {
                secret_key_path()
            };
            let text = shoal_host::keyfile::read_or_create(&path, || {
                tracing::info!(path = %path.display(), "created a new secret key");
                Ok(STANDARD.encode(SecretBox::generate_key()))
            })?;
            decode(&path.display().to_string(), &text)?
        }
    };
    let previous = match std::env::var("SHOAL_SECRET_KEY_PREVIOUS") {
        Ok(text) if !text.is_empty() => Some(decode("SHOAL_SECRET_KEY_PREVIOUS", &text)?),
        _ => None,
    };
    Ok(SecretBox::new(&key, previous.as_ref()))
}

/// Where the secret key file is: `SHOAL_SECRET_KEY_FILE`, else
/// `$XDG_CONFIG_HOME/shoal/secret.key`, else `~/.config/shoal/secret.key`.
fn secret_key_path() -> PathBuf {
    if let Some(file) = std::env::var_os("SHOAL_SECRET_KEY_FILE") {
        return PathBuf::from(file);
    }
    crate::data_dir::config_dir().join("secret.key")
}

/// Runs the scheduler until Ctrl-C.
pub async fn scheduler(args: SchedulerArgs, api: &str) -> anyhow::Result<()> {
    let settings = args.api;
    let args = args.role;
    let data_dir = crate::data_dir::resolve(args.data_dir);
    let secret_box = secret_box(&data_dir)?;
    let creds = args.login.creds()?;
    let nats = connect(&args.nats, &Identity::Scheduler, &creds, &args.login).await?;
    let options = settings.options(listen_addr(api)?, secret_box)?;
    let mut scheduler = Scheduler::start(nats, options, shutdown_signal()).await?;
    let url = settings.url(scheduler.api_addr());
    keep_first_admin(&mut scheduler, &data_dir, &url)?;
    println!("scheduler API on {url}");
    scheduler.wait().await;
    Ok(())
}

/// Starts a host agent, connecting to NATS at `url` as the host with
/// `creds`.
async fn start_host(
    (url, creds, login): (&str, &Creds, &LoginArgs),
    settings: HostSettings,
    data_dir: PathBuf,
    http: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<(HostAgent, Option<Exporting>)> {
    let id = host_id(settings.name)?;
    let exporting = settings
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| {
            shoal_host::trace::export_to(
                endpoint,
                "shoal-host",
                vec![("shoal.host", id.to_string())],
            )
        })
        .transpose()?;
    let layout = DataLayout::new(data_dir.clone());
    let sealing_key = shoal_host::keyfile::sealing_key(&layout.sealing_key())?;
    let nats = connect(url, &Identity::Host(id.clone()), creds, login).await?;
    let runtime = Runtime::new(RuntimeOptions::new(layout.cache()))?;
    let config = HostConfig {
        id,
        labels: settings.labels,
        capacity: Capacity {
            memory: settings.memory.map_or_else(machine_memory, |m| m.as_u64()),
            slots: settings.slots,
        },
        data_dir,
        http_addr: Some(http),
        metrics_addr: Some(settings.metrics),
        sealing_key: Arc::new(sealing_key),
    };
    let agent = HostAgent::start(nats, Arc::new(runtime), config, shutdown).await?;
    Ok((agent, exporting))
}

/// Runs a host until Ctrl-C.
pub async fn host(args: HostArgs) -> anyhow::Result<()> {
    let data_dir = crate::data_dir::resolve(args.role.data_dir);
    let creds = args.role.login.creds()?;
    let nats = (args.role.nats.as_str(), &creds, &args.role.login);
    let (agent, _exporting) =
        start_host(nats, args.host, data_dir, args.http, shutdown_signal()).await?;
    if let Some(addr) = agent.http_addr() {
        println!("host ingress on http://{addr}");
    }
    if let Some(addr) = agent.metrics_addr() {
        println!("host metrics on http://{addr}/metrics");
    }
    agent.wait().await;
    Ok(())
}

/// A whole single-node cluster in one process.
pub async fn up(args: UpArgs, api: &str) -> anyhow::Result<()> {
    let data_dir = crate::data_dir::resolve(args.data_dir);
    // Check the specs before starting anything.
    for file in &args.apps {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        AppSpec::from_toml(&text, &file.display().to_string())?;
    }
    let mut server = None;
    // With a server of its own, `shoal up` is its NATS authority and mints
    // a credential for each of its roles; joining one, it uses the
    // credential it is given for both.
    let (url, scheduler_creds, host_creds) = match args.nats {
        Some(url) => {
            let creds = args.login.creds()?;
            (url, creds.clone(), creds)
        }
        None => {
            let authority = Authority::open_or_create(&data_dir.join("nats-auth"))?;
            let binary = find_server(args.nats_server)?;
            let (store, nodes) = match args.nats_cluster {
                1 => (data_dir.join("nats"), 1),
                n => (data_dir.join("nats-cluster"), usize::from(n)),
            };
            let started = NatsServers::start(&binary, &store, 4222, nodes, &authority)?;
            let url = started.url.clone();
            server = Some(started);
            let host = Identity::Host(host_id(args.host.name.clone().or(Some("local".into())))?);
            (
                url,
                Some(authority.creds(&Identity::Scheduler, None)?),
                Some(authority.creds(&host, None)?),
            )
        }
    };
    let nats = connect(&url, &Identity::Scheduler, &scheduler_creds, &args.login).await?;
    let (stop, stopped) = stop_channel();
    let options = args
        .api_settings
        .options(listen_addr(api)?, secret_box(&data_dir)?)?;
    let mut scheduler = Scheduler::start(nats, options, stopped()).await?;
    let api_url = args.api_settings.url(scheduler.api_addr());
    keep_first_admin(&mut scheduler, &data_dir, &api_url)?;
    let target = local_context(&data_dir, &api_url, args.api_settings.insecure_no_auth)?;
    let mut settings = args.host;
    if settings.name.is_none() {
        settings.name = Some("local".into());
    }
    let (agent, _exporting) = start_host(
        (url.as_str(), &host_creds, &args.login),
        settings,
        data_dir.clone(),
        args.http,
        stopped(),
    )
    .await?;
    let api = api_url;
    let ingress = agent
        .http_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    println!("Shoal is up");
    println!("  NATS       {url}");
    println!("  API        {api}   (export SHOAL_API={api})");
    println!("  dashboard  {api}/ui   (sign in with the token in the client config)");
    println!("  ingress    {ingress}");
    if let Some(addr) = agent.metrics_addr() {
        println!("  metrics    http://{addr}/metrics");
    }
    println!("  data       {}", data_dir.display());

    let client = Client::new(&target)?;
    let result = apply_and_wait(&client, &args.apps, &ingress).await;
    if let Err(e) = &result {
        eprintln!("shoal: {e:#}");
    }
    if result.is_ok() {
        println!("Ctrl-C stops everything.");
        shutdown_signal().await;
    }
    println!("stopping");
    let _ = stop.send(true);
    let drain = async {
        agent.wait().await;
        scheduler.wait().await;
    };
    if tokio::time::timeout(UP_STOP_TIMEOUT, drain).await.is_err() {
        eprintln!("shoal: some tasks did not stop within {UP_STOP_TIMEOUT:?}");
    }
    drop(server);
    result
}

async fn apply_and_wait(client: &Client, files: &[PathBuf], ingress: &str) -> anyhow::Result<()> {
    let mut applied = Vec::new();
    for file in files {
        let resp = client.apply(file, false).await?;
        print_apply(&resp);
        let text = std::fs::read_to_string(file)?;
        applied.push(AppSpec::from_toml(&text, &file.display().to_string())?);
    }
    if applied.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + UP_READY_TIMEOUT;
    loop {
        let apps: Vec<AppSummary> = client.get("/v1/apps").await?;
        let ready = applied.iter().all(|spec| {
            apps.iter().any(|a| {
                a.name == spec.name
                    && a.namespace == spec.namespace
                    && a.status == AppStatus::Running
            })
        });
        if ready {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the apps did not all run within {UP_READY_TIMEOUT:?}: see `shoal describe app NAME`"
            );
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    for spec in &applied {
        for (name, c) in &spec.components {
            match c.kind {
                ComponentKind::Http => println!(
                    "  {}/{name} answers on {ingress}{}",
                    spec.name,
                    c.route.as_deref().unwrap_or("/")
                ),
                ComponentKind::Worker => println!(
                    "  {}/{name}: shoal invoke {}/{name} --data …",
                    spec.name, spec.name
                ),
                ComponentKind::Job => println!("  {}/{name}: a job", spec.name),
            }
        }
    }
    Ok(())
}
