//! `shoal`: the command line of the Shoal orchestrator.
//!
//! Exit codes: 0 done, 1 refused or failed (with a message on stderr),
//! 2 bad usage.

mod access_verbs;
mod client;
mod config;
mod credentials;
mod data_dir;
mod debug_verbs;
mod log_verbs;
mod nats;
mod roles;
mod run;
mod tables;
mod tunables;
mod validate;
mod verbs;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shoal runs WebAssembly components the way Kubernetes runs containers.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
struct Cli {
    /// The scheduler API: what the user verbs talk to (default: the
    /// context's), and where `shoal scheduler` and `shoal up` listen
    /// (default 127.0.0.1:7070).
    #[arg(long, global = true, env = "SHOAL_API")]
    api: Option<String>,
    /// The client config context to use instead of the current one.
    #[arg(long, global = true, env = "SHOAL_CONTEXT")]
    context: Option<String>,
    /// The namespace to act in (default: the context's, else `default`).
    #[arg(short, long, global = true, env = "SHOAL_NAMESPACE")]
    namespace: Option<String>,
    /// Trust this CA certificate (PEM) for an https API.
    #[arg(long, global = true, env = "SHOAL_API_CA", value_name = "FILE")]
    api_ca: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a whole cluster on this machine (nats-server or a NATS cluster, scheduler, host) and apply apps.
    Up(Box<roles::UpArgs>),
    /// Run the scheduler.
    Scheduler(Box<roles::SchedulerArgs>),
    /// Run a host.
    Host(Box<roles::HostArgs>),
    /// Run one component: invoke a worker once, serve an http component, or run a job.
    Run(Box<run::RunArgs>),
    /// Check app specs without applying them.
    Validate(validate::ValidateArgs),
    /// The cluster's NATS authority and credentials.
    #[command(subcommand)]
    Nats(credentials::NatsCommand),
    /// The client config: contexts naming an API, a credential and a namespace.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    #[command(flatten)]
    Verb(verbs::Verb),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Validate(args) => validate::validate(args),
        Command::Nats(command) => credentials::run(command),
        Command::Config(command) => config::run(command),
        command => block_on(async move {
            let listen = cli
                .api
                .clone()
                .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
            match command {
                Command::Up(args) => roles::up(*args, &listen).await,
                Command::Scheduler(args) => roles::scheduler(*args, &listen).await,
                Command::Host(args) => roles::host(*args).await,
                Command::Verb(verb) => {
                    let given_namespace = cli.namespace.is_some();
                    let choice = config::Choice {
                        api: cli.api,
                        token: std::env::var("SHOAL_TOKEN").ok(),
                        context: cli.context,
                        namespace: cli.namespace,
                        ca: cli.api_ca,
                    };
                    let file = config::ClientConfig::load(&config::default_path()?)?;
                    let target = config::resolve(&file, &choice)?;
                    let client = client::Client::new(&target)?.namespace_was_given(given_namespace);
                    verbs::run(&client, verb).await
                }
                Command::Run(_) | Command::Validate(_) | Command::Nats(_) | Command::Config(_) => {
                    Ok(())
                }
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shoal: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where `shoal scheduler` and `shoal up` listen without `--api`.
const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

fn block_on<F: Future<Output = anyhow::Result<()>>>(future: F) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow::anyhow!("cannot start the async runtime: {e}"))?
        .block_on(future)
}

/// Logs to stderr; `RUST_LOG` picks the level (default: warnings, and
/// Shoal's own info lines and its guests' output).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shoal=info,guest=info"));
    // Colour only on a terminal, and never when NO_COLOR is set.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
