//! `shoal run`: run one component on this machine, like `wasmtime run` or
//! `spin up`, under the same runtime and limits a Shoal host uses.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use shoal_api::{ByteSize, ComponentKind, ComponentSpec, DurationSpec, Fuel, Limits};
use shoal_host::capabilities::{GrantContext, Registry};
use shoal_host::http::{SingleRoute, serve};
use shoal_host::{ComponentSettings, LogLine, LogSink, Message, Runtime, RuntimeOptions};

/// Arguments of `shoal run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The component to run (a `.wasm` file).
    #[arg(value_name = "COMPONENT.wasm")]
    component: PathBuf,
    /// Call a worker's handler once with this payload and print the reply.
    #[arg(long, value_name = "DATA", conflicts_with = "http")]
    invoke: Option<String>,
    /// The subject the invoked message carries.
    #[arg(long, default_value = "shoal.run", requires = "invoke")]
    subject: String,
    /// Serve an http component on this address.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The component's kind; told from its exports when left out.
    #[arg(long, value_parser = parse_kind)]
    kind: Option<ComponentKind>,
    /// Memory cap per invocation, like 64MiB.
    #[arg(long, value_parser = ByteSize::parse)]
    memory: Option<ByteSize>,
    /// Fuel budget per invocation in units, or "off".
    #[arg(long)]
    fuel: Option<Fuel>,
    /// Wall-clock deadline per invocation, like 2s.
    #[arg(long, value_parser = DurationSpec::parse)]
    timeout: Option<DurationSpec>,
    /// Invocations running at once.
    #[arg(long)]
    concurrency: Option<u32>,
    /// An environment variable for the guest, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_pair)]
    env: Vec<(String, String)>,
    /// A config value for the guest, KEY=VALUE (repeatable).
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_pair)]
    config: Vec<(String, String)>,
    /// Where Shoal keeps its state (the precompile cache lives in `cache/`).
    #[arg(long, env = "SHOAL_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

fn parse_kind(text: &str) -> Result<ComponentKind, String> {
    match text {
        "http" => Ok(ComponentKind::Http),
        "worker" => Ok(ComponentKind::Worker),
        "job" => Ok(ComponentKind::Job),
        _ => Err(format!("unknown kind {text:?}: use http, worker or job")),
    }
}

fn parse_pair(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {text:?}")),
    }
}

/// Prints guest lines to stderr, tagged with component and invocation.
struct StderrSink;

impl LogSink for StderrSink {
    fn line(&self, line: LogLine) {
        let _ = writeln!(
            std::io::stderr().lock(),
            "[{}#{} {}] {}",
            line.component,
            line.invocation,
            line.stream,
            line.text
        );
    }
}

/// Runs the command.
pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: RunArgs) -> anyhow::Result<()> {
    let defaults = Limits::default();
    let limits = Limits {
        memory: args.memory.unwrap_or(defaults.memory),
        fuel: args.fuel.unwrap_or(defaults.fuel),
        timeout: args.timeout.unwrap_or(defaults.timeout),
        concurrency: args.concurrency.unwrap_or(defaults.concurrency),
    };
    if limits.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    // What `--env` and `--config` grant, through the same capabilities a
    // host uses (outside a cluster, nothing else can be granted).
    let mut spec = ComponentSpec::new(
        args.component.display().to_string(),
        args.kind.unwrap_or(ComponentKind::Worker),
    );
    spec.env = args.env.into_iter().collect();
    spec.config = args.config.into_iter().collect::<BTreeMap<_, _>>();
    let name = args
        .component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "component".into());
    let grants = Registry::new(None).grant(&GrantContext {
        component: &name,
        spec: &spec,
        replica: None,
        volumes: &BTreeMap::new(),
        secrets: &BTreeMap::new(),
    })?;
    let settings = ComponentSettings {
        kind: args.kind,
        limits,
        grants,
        log_sink: None,
        metrics: None,
        dumps: None,
    };
    let data_dir = crate::data_dir::resolve(args.data_dir);
    let runtime =
        Runtime::new(RuntimeOptions::new(data_dir.join("cache")).log_sink(Arc::new(StderrSink)))?;
    let path = args.component.clone();
    let component = tokio::task::spawn_blocking(move || {
        runtime.load_file(&path, settings).map(|c| (c, runtime))
    })
    .await
    .context("loading the component panicked")?;
    let (component, _runtime) = component?;
    tracing::info!(
        component = component.name(),
        kind = %component.kind(),
        digest = %component.digest().short(),
        cache = ?component.cache_status(),
        "loaded"
    );

    match component.kind() {
        ComponentKind::Worker => {
            let Some(data) = args.invoke else {
                bail!(
                    "{} is a worker: pass --invoke DATA to call its handler once",
                    component.name()
                );
            };
            let msg = Message {
                subject: args.subject,
                headers: Vec::new(),
                payload: data.into_bytes(),
            };
            let (reply, usage) = component.invoke(msg).await?;
            tracing::info!(fuel = ?usage.fuel, elapsed = ?usage.elapsed, "invoked");
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(&reply.payload)?;
            if !reply.payload.ends_with(b"\n") {
                stdout.write_all(b"\n")?;
            }
            Ok(())
        }
        ComponentKind::Http => {
            if args.invoke.is_some() {
                bail!(
                    "{} is an http component: serve it with --http ADDR",
                    component.name()
                );
            }
            let addr = args
                .http
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr}: pick another with --http ADDR")
            })?;
            let local = listener.local_addr()?;
            println!("serving {} on http://{local}/", component.name());
            serve(
                listener,
                Arc::new(SingleRoute(component)),
                crate::roles::shutdown_signal(),
            )
            .await?;
            Ok(())
        }
        ComponentKind::Job => {
            if args.invoke.is_some() || args.http.is_some() {
                bail!(
                    "{} is a job: it takes neither --invoke nor --http",
                    component.name()
                );
            }
            let usage = component.run_job().await?;
            tracing::info!(fuel = ?usage.fuel, elapsed = ?usage.elapsed, "job finished");
            Ok(())
        }
    }
}
