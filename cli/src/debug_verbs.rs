//! `shoal debug dumps APP` and `shoal debug dump ID -o FILE`: the core
//! dumps of an app's trapping invocations, listed and downloaded for a
//! Wasm debugger.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use shoal_api::dumps::{DumpId, DumpInfo};

use crate::client::Client;
use crate::config::write_private;
use crate::tables;
use crate::verbs::Format;

/// `shoal debug …`.
#[derive(Debug, Subcommand)]
pub enum DebugVerb {
    /// List an app's core dumps: when, replica, trap and the function
    /// that trapped. Components keep them when their spec says
    /// `debug = { coredumps = N }`.
    Dumps {
        /// The app.
        app: String,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        output: Format,
    },
    /// Download one core dump (a Wasm module in the core dump format, for
    /// debuggers such as wasmgdb). It holds the guest's memory: the file
    /// is readable by you only.
    Dump {
        /// The dump, as `shoal debug dumps` lists it.
        id: String,
        /// Where to write it.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        file: PathBuf,
    },
}

/// Runs a `debug` verb.
pub async fn run(client: &Client, verb: DebugVerb) -> anyhow::Result<()> {
    let namespace = client.namespace();
    match verb {
        DebugVerb::Dumps { app, output } => {
            let dumps: Vec<DumpInfo> = client.get(&format!("/v1/dumps/{namespace}/{app}")).await?;
            match output {
                Format::Json => println!("{}", serde_json::to_string_pretty(&dumps)?),
                Format::Table if dumps.is_empty() => {
                    println!("no core dumps of {namespace}/{app}")
                }
                Format::Table => println!("{}", tables::dumps(&dumps)),
            }
        }
        DebugVerb::Dump { id, file } => {
            let parsed: DumpId = id.parse()?;
            let bytes = client
                .get_bytes(&format!("/v1/dumps/{namespace}/{}/{id}", parsed.app))
                .await?;
            write_private(&file, &bytes)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!("wrote {} bytes to {}", bytes.len(), file.display());
        }
    }
    Ok(())
}
