//! `shoal validate`: check app specs without applying them.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use shoal_api::AppSpec;

/// Arguments of `shoal validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// App spec files to check.
    #[arg(required = true, value_name = "APP.toml")]
    files: Vec<PathBuf>,
}

/// Checks every file and reports every problem in each; fails if any has one.
pub fn validate(args: ValidateArgs) -> anyhow::Result<()> {
    let mut failed = 0;
    for file in &args.files {
        let shown = file.display().to_string();
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {shown}"))?;
        match AppSpec::from_toml(&text, &shown) {
            Ok(spec) => {
                let components: Vec<String> = spec
                    .components
                    .iter()
                    .map(|(name, c)| format!("{name} ({})", c.kind))
                    .collect();
                println!(
                    "{shown}: app {}/{} is valid: {}",
                    spec.namespace,
                    spec.name,
                    components.join(", ")
                );
            }
            Err(err) => {
                eprintln!("{err}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} spec(s) are invalid", args.files.len());
    }
    Ok(())
}
