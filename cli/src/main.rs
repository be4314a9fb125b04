//! `shoal`: the command line of the Shoal orchestrator.
//!
//! Exit codes: 0 done, 1 refused or failed (with a message on stderr),
//! 2 bad usage.

mod data_dir;
mod run;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Shoal runs WebAssembly components the way Kubernetes runs containers.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one component: invoke a worker once, serve an http component, or run a job.
    Run(Box<run::RunArgs>),
    /// Check app specs without applying them.
    Validate(validate::ValidateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Validate(args) => validate::validate(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shoal: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` picks the level (default: warnings, and
/// Shoal's own info lines).
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,shoal=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
