//! The user verbs: apply, get, describe, delete, scale, invoke.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::resources::{
    AppDetail, AppSummary, ApplyResponse, HostInfo, InvokeRequest, InvokeResponse, PodInfo,
    PodState, ScaleRequest,
};
use shoal_api::wire::ReplicaState;
use shoal_api::{ByteSize, DEFAULT_NAMESPACE};

use crate::client::Client;

/// Output formats.
#[derive(Debug, Clone, Copy, Default, ValueEnum)]
pub enum Format {
    /// A table for people.
    #[default]
    Table,
    /// JSON for programs.
    Json,
}

/// `shoal apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Only print what would be created, changed and stopped.
    #[arg(long)]
    dry_run: bool,
    /// The app spec.
    #[arg(value_name = "APP.toml")]
    file: PathBuf,
}

/// What `shoal get` lists.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Kind {
    /// Apps and their replica counts.
    Apps,
    /// Every replica, with its host and state.
    Pods,
    /// Hosts, with capacity and usage.
    Hosts,
}

/// `shoal get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list.
    what: Kind,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// `shoal describe app NAME`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Always `app`.
    #[arg(value_parser = ["app"])]
    kind: String,
    /// The app's name.
    name: String,
    /// The app's namespace.
    #[arg(short, long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// `shoal delete app NAME`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Always `app`.
    #[arg(value_parser = ["app"])]
    kind: String,
    /// The app's name.
    name: String,
    /// The app's namespace.
    #[arg(short, long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
}

/// `shoal scale APP/COMPONENT N`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The component, as APP/COMPONENT.
    target: String,
    /// Replicas wanted.
    replicas: u32,
    /// The app's namespace.
    #[arg(short, long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
}

/// `shoal invoke APP/COMPONENT`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The worker component, as APP/COMPONENT.
    target: String,
    /// The payload.
    #[arg(long, default_value = "")]
    data: String,
    /// A header, NAME=VALUE (repeatable).
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// The app's namespace.
    #[arg(short, long, default_value = DEFAULT_NAMESPACE)]
    namespace: String,
}

/// `shoal secret …`.
#[derive(Debug, Subcommand)]
pub enum SecretVerb {
    /// Set a secret. The value comes from --from-file, or else stdin (one
    /// trailing newline dropped); never from the command line, where it
    /// would land in shell history.
    Set {
        /// The secret's name.
        name: String,
        /// Read the value from this file, byte for byte.
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// The namespace.
        #[arg(short, long, default_value = DEFAULT_NAMESPACE)]
        namespace: String,
    },
    /// List secret names (never values).
    List,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Create or update an app from its spec, uploading its components.
    Apply(ApplyArgs),
    /// List apps, pods or hosts.
    Get(GetArgs),
    /// Show an app: spec, revision, replicas per host, recent events.
    Describe(DescribeArgs),
    /// Delete an app and stop its replicas.
    Delete(DeleteArgs),
    /// Set a component's replica count.
    Scale(ScaleArgs),
    /// Call a worker component and print its reply.
    Invoke(InvokeArgs),
    /// Set or list secrets.
    #[command(subcommand)]
    Secret(SecretVerb),
}

fn split_target(target: &str) -> anyhow::Result<(&str, &str)> {
    match target.split_once('/') {
        Some((app, component)) if !app.is_empty() && !component.is_empty() => Ok((app, component)),
        _ => bail!("expected APP/COMPONENT, got {target:?}"),
    }
}

/// Runs a verb against the scheduler at `client`.
pub async fn run(client: &Client, verb: Verb) -> anyhow::Result<()> {
    match verb {
        Verb::Apply(args) => {
            let resp = client.apply(&args.file, args.dry_run).await?;
            print_apply(&resp);
        }
        Verb::Get(args) => get(client, args).await?,
        Verb::Describe(args) => {
            let detail: AppDetail = client
                .get(&format!("/v1/apps/{}/{}", args.namespace, args.name))
                .await?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
                Format::Table => print_detail(&detail),
            }
        }
        Verb::Delete(args) => {
            client
                .delete(&format!("/v1/apps/{}/{}", args.namespace, args.name))
                .await?;
            println!("app {}/{} deleted", args.namespace, args.name);
        }
        Verb::Scale(args) => {
            let (app, component) = split_target(&args.target)?;
            let resp: ApplyResponse = client
                .post(
                    &format!("/v1/apps/{}/{app}/scale", args.namespace),
                    &ScaleRequest {
                        component: component.parse().context("component name")?,
                        replicas: args.replicas,
                    },
                )
                .await?;
            println!(
                "{}/{component} scaled to {} (revision {})",
                resp.app, args.replicas, resp.revision
            );
        }
        Verb::Invoke(args) => {
            let (app, component) = split_target(&args.target)?;
            let headers = args
                .headers
                .iter()
                .map(|h| match h.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => bail!("expected a header as NAME=VALUE, got {h:?}"),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let resp: InvokeResponse = client
                .post(
                    &format!("/v1/apps/{}/{app}/invoke/{component}", args.namespace),
                    &InvokeRequest {
                        data: args.data,
                        headers,
                    },
                )
                .await?;
            print!("{}", resp.data);
            if !resp.data.ends_with('\n') {
                println!();
            }
        }
        Verb::Secret(SecretVerb::Set {
            name,
            from_file,
            namespace,
        }) => {
            let value = match from_file {
                Some(file) => std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?,
                None => {
                    use std::io::Read;
                    let mut value = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut value)
                        .context("cannot read the secret from stdin")?;
                    if value.ends_with(b"\n") {
                        value.pop();
                    }
                    value
                }
            };
            if value.is_empty() {
                bail!("the secret is empty: pipe its value on stdin or pass --from-file FILE");
            }
            client
                .put_bytes(&format!("/v1/secrets/{namespace}/{name}"), value)
                .await?;
            println!("secret {namespace}/{name} set");
        }
        Verb::Secret(SecretVerb::List) => {
            let names: Vec<String> = client.get("/v1/secrets").await?;
            for name in names {
                println!("{name}");
            }
        }
    }
    Ok(())
}

/// Prints what an apply did or would do.
pub fn print_apply(resp: &ApplyResponse) {
    let verb = if resp.dry_run { "would" } else { "will" };
    if resp.unchanged {
        println!("app {} unchanged (revision {})", resp.app, resp.revision);
        return;
    }
    if resp.dry_run {
        println!("app {}: dry run, nothing stored", resp.app);
    } else {
        println!("app {} applied (revision {})", resp.app, resp.revision);
    }
    for (what, list) in [
        ("create", &resp.plan.create),
        ("replace", &resp.plan.change),
        ("stop", &resp.plan.stop),
    ] {
        for id in list {
            println!("  {verb} {what} {id}");
        }
    }
}

async fn get(client: &Client, args: GetArgs) -> anyhow::Result<()> {
    match args.what {
        Kind::Apps => {
            let apps: Vec<AppSummary> = client.get("/v1/apps").await?;
            if let Format::Json = args.format {
                println!("{}", serde_json::to_string_pretty(&apps)?);
                return Ok(());
            }
            println!(
                "{:<12} {:<20} {:<9} {:<10} COMPONENTS",
                "NAMESPACE", "NAME", "REVISION", "STATUS"
            );
            for app in apps {
                let components: Vec<String> = app
                    .components
                    .iter()
                    .map(|c| format!("{} {}/{}", c.name, c.running, c.desired))
                    .collect();
                println!(
                    "{:<12} {:<20} {:<9} {:<10} {}",
                    app.namespace,
                    app.name,
                    app.revision,
                    app.status,
                    components.join(", ")
                );
            }
        }
        Kind::Pods => {
            let pods: Vec<PodInfo> = client.get("/v1/pods").await?;
            if let Format::Json = args.format {
                println!("{}", serde_json::to_string_pretty(&pods)?);
                return Ok(());
            }
            print_pods(&pods);
        }
        Kind::Hosts => {
            let hosts: Vec<HostInfo> = client.get("/v1/hosts").await?;
            if let Format::Json = args.format {
                println!("{}", serde_json::to_string_pretty(&hosts)?);
                return Ok(());
            }
            println!(
                "{:<24} {:<7} {:<9} {:<21} {:<22} LABELS",
                "HOST", "STATE", "REPLICAS", "MEMORY", "HTTP"
            );
            for h in hosts {
                let labels: Vec<String> =
                    h.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!(
                    "{:<24} {:<7} {:<9} {:<21} {:<22} {}",
                    h.id,
                    h.state,
                    h.replicas,
                    format!(
                        "{}/{}",
                        ByteSize::bytes(h.used_memory),
                        ByteSize::bytes(h.capacity.memory)
                    ),
                    h.http.unwrap_or_else(|| "-".into()),
                    labels.join(",")
                );
            }
        }
    }
    Ok(())
}

fn state_text(state: &PodState) -> String {
    match state {
        PodState::Pending { reason } => format!("pending: {reason}"),
        PodState::Host(ReplicaState::Starting) => "starting".into(),
        PodState::Host(ReplicaState::Running) => "running".into(),
        PodState::Host(ReplicaState::Failed { reason }) => format!("failed: {reason}"),
    }
}

fn print_pods(pods: &[PodInfo]) {
    println!("{:<36} {:<24} {:<4} STATE", "POD", "HOST", "GEN");
    for p in pods {
        println!(
            "{:<36} {:<24} {:<4} {}",
            p.id,
            p.host.as_ref().map_or("-".to_string(), |h| h.to_string()),
            p.revision,
            state_text(&p.state)
        );
    }
}

/// "4s ago", "3m ago", "2h ago".
fn age(ms: u64) -> String {
    let s = ms / 1000;
    if s < 120 {
        format!("{s}s ago")
    } else if s < 7200 {
        format!("{}m ago", s / 60)
    } else {
        format!("{}h ago", s / 3600)
    }
}

fn print_detail(d: &AppDetail) {
    let s = &d.summary;
    println!("Name:       {}", s.name);
    println!("Namespace:  {}", s.namespace);
    println!("Revision:   {}", s.revision);
    println!("Status:     {}", s.status);
    println!("Components:");
    for c in &s.components {
        let digest = d
            .digests
            .get(&c.name)
            .map(|x| x.short())
            .unwrap_or_default();
        let spec = d.spec.components.get(&c.name);
        println!(
            "  {:<16} kind={:<7} pod={:<12} replicas={}/{} digest={digest}{}",
            c.name,
            c.kind,
            c.pod,
            c.running,
            c.desired,
            spec.and_then(|s| s.route.as_ref())
                .map(|r| format!(" route={r}"))
                .unwrap_or_default()
        );
    }
    for c in &s.components {
        if let Some(why) = &c.last_scale {
            println!("Autoscaler: {why}");
        }
    }
    println!("Pods:");
    for p in &d.pods {
        println!(
            "  {:<32} {:<24} gen {:<3} {}",
            p.id.to_string(),
            p.host.as_ref().map_or("-".to_string(), |h| h.to_string()),
            p.revision,
            state_text(&p.state)
        );
    }
    println!("Events:");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    for e in &d.events {
        println!(
            "  {:>8} {:<10} {}",
            age(now.saturating_sub(e.at_ms)),
            e.reason,
            e.message
        );
    }
}
