//! `shoal scheduler`, `shoal host` and `shoal up`: the cluster roles.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use shoal_api::resources::AppSummary;
use shoal_api::wire::{Capacity, HostId};
use shoal_api::{AppSpec, ByteSize, ComponentKind};
use shoal_host::agent::{HostAgent, HostConfig};
use shoal_host::{Runtime, RuntimeOptions};
use shoal_scheduler::secrets::SecretBox;
use shoal_scheduler::{Scheduler, SchedulerOptions};
use tokio::sync::watch;

use crate::client::Client;
use crate::nats::{NatsServer, connect, find_server};
use crate::verbs::print_apply;

/// The address to listen on for an API given as `--api` (a URL or an
/// address: `http://127.0.0.1:7070` or `127.0.0.1:7070`).
pub fn listen_addr(api: &str) -> anyhow::Result<SocketAddr> {
    let addr = api.trim_start_matches("http://").trim_end_matches('/');
    addr.parse().with_context(|| {
        format!("--api {api:?} is not an address to listen on, like 127.0.0.1:7070")
    })
}
/// The default host HTTP ingress address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:8080";
/// The default NATS URL.
pub const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";

/// What every cluster role takes: `shoal scheduler` has nothing more.
#[derive(Debug, Args)]
pub struct RoleArgs {
    /// The NATS server (or cluster) to use.
    #[arg(long, env = "SHOAL_NATS", default_value = DEFAULT_NATS)]
    nats: String,
    /// Where Shoal keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

/// Host settings shared by `shoal host` and `shoal up`.
#[derive(Debug, Args)]
pub struct HostSettings {
    /// The host's id; defaults to the machine's name and a random suffix.
    #[arg(long)]
    name: Option<String>,
    /// Labels for placement, as k=v,k=v.
    #[arg(long, value_parser = parse_labels, default_value = "")]
    labels: BTreeMap<String, String>,
    /// Memory the host offers to replicas.
    #[arg(long, value_parser = ByteSize::parse, default_value = "8GiB")]
    memory: ByteSize,
    /// Replicas the host runs at most.
    #[arg(long, default_value_t = 256)]
    slots: u32,
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
    /// The nats-server binary to start.
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Where the host's HTTP ingress listens.
    #[arg(long, default_value = DEFAULT_HTTP)]
    http: SocketAddr,
    /// Where Shoal keeps its state.
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    host: HostSettings,
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

/// The key that seals secrets: `SHOAL_SECRET_KEY` (base64 of 32 bytes),
/// else `secret.key` in the data dir, created on first use (mode 0600).
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
            let path = data_dir.join("secret.key");
            match std::fs::read_to_string(&path) {
                Ok(text) => decode(&path.display().to_string(), &text)?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    std::fs::create_dir_all(data_dir)
                        .with_context(|| format!("cannot create {}", data_dir.display()))?;
                    let key = SecretBox::generate_key();
                    write_private(&path, &STANDARD.encode(key))?;
                    tracing::info!(path = %path.display(), "created a new secret key");
                    key
                }
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
            }
        }
    };
    let previous = match std::env::var("SHOAL_SECRET_KEY_PREVIOUS") {
        Ok(text) if !text.is_empty() => Some(decode("SHOAL_SECRET_KEY_PREVIOUS", &text)?),
        _ => None,
    };
    Ok(SecretBox::new(&key, previous.as_ref()))
}

/// Writes a file only its owner can read.
fn write_private(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// Runs the scheduler until Ctrl-C.
pub async fn scheduler(args: RoleArgs, api: &str) -> anyhow::Result<()> {
    let data_dir = crate::data_dir::resolve(args.data_dir);
    let secret_box = secret_box(&data_dir)?;
    let nats = connect(&args.nats, "shoal-scheduler").await?;
    let token = std::env::var("SHOAL_TOKEN").ok().filter(|t| !t.is_empty());
    let scheduler = Scheduler::start(
        nats,
        SchedulerOptions {
            api_addr: listen_addr(api)?,
            token,
            secret_box,
        },
        shutdown_signal(),
    )
    .await?;
    println!("scheduler API on http://{}", scheduler.api_addr());
    scheduler.wait().await;
    Ok(())
}

async fn start_host(
    nats: async_nats::Client,
    settings: HostSettings,
    data_dir: PathBuf,
    http: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<HostAgent> {
    let runtime = Runtime::new(RuntimeOptions::new(data_dir.join("cache")))?;
    let config = HostConfig {
        id: host_id(settings.name)?,
        labels: settings.labels,
        capacity: Capacity {
            memory: settings.memory.as_u64(),
            slots: settings.slots,
        },
        data_dir,
        http_addr: Some(http),
    };
    Ok(HostAgent::start(nats, Arc::new(runtime), config, shutdown).await?)
}

/// Runs a host until Ctrl-C.
pub async fn host(args: HostArgs) -> anyhow::Result<()> {
    let data_dir = crate::data_dir::resolve(args.role.data_dir);
    let nats = connect(&args.role.nats, "shoal-host").await?;
    let agent = start_host(nats, args.host, data_dir, args.http, shutdown_signal()).await?;
    if let Some(addr) = agent.http_addr() {
        println!("host ingress on http://{addr}");
    }
    agent.wait().await;
    Ok(())
}

/// How long `shoal up` waits for applied apps to run.
const UP_READY_TIMEOUT: Duration = Duration::from_secs(30);

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
    let url = match args.nats {
        Some(url) => url,
        None => {
            let binary = find_server(args.nats_server)?;
            let started = NatsServer::start(&binary, &data_dir.join("nats"), 4222)?;
            let url = started.url.clone();
            server = Some(started);
            url
        }
    };
    let nats = connect(&url, "shoal-up").await?;
    let (stop, stopped) = stop_channel();
    let token = std::env::var("SHOAL_TOKEN").ok().filter(|t| !t.is_empty());
    let scheduler = Scheduler::start(
        nats.clone(),
        SchedulerOptions {
            api_addr: listen_addr(api)?,
            token: token.clone(),
            secret_box: secret_box(&data_dir)?,
        },
        stopped(),
    )
    .await?;
    let mut settings = args.host;
    if settings.name.is_none() {
        settings.name = Some("local".into());
    }
    let agent = start_host(nats, settings, data_dir.clone(), args.http, stopped()).await?;
    let api = format!("http://{}", scheduler.api_addr());
    let ingress = agent
        .http_addr()
        .map(|a| format!("http://{a}"))
        .unwrap_or_default();
    println!("Shoal is up");
    println!("  NATS       {url}");
    println!("  API        {api}   (export SHOAL_API={api})");
    println!("  ingress    {ingress}");
    println!("  data       {}", data_dir.display());

    let client = Client::new(&api, token);
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
    if tokio::time::timeout(Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        eprintln!("shoal: some tasks did not stop within 10s");
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
                a.name == spec.name && a.namespace == spec.namespace && a.status == "running"
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
        tokio::time::sleep(Duration::from_millis(100)).await;
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
