//! The user verbs: apply, get, describe, delete, scale, invoke, rollout,
//! secret.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use shoal_api::resources::{
    AppDetail, AppSummary, ApplyResponse, HostInfo, InvokeRequest, InvokeResponse, PodInfo,
    RevisionInfo, RollbackRequest, RolloutState, RolloutStatus, ScaleRequest, SchedulerInfo,
};
use shoal_api::wire::now_ms;

use crate::access_verbs::{self, AuditArgs, AuthVerb, CreateVerb, UpdateVerb};
use crate::client::Client;
use crate::debug_verbs::{self, DebugVerb};
use crate::log_verbs::{self, EventsArgs, LogsArgs, TopArgs};
use crate::tables::{self, age, ready_text, state_text};

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
    /// Wait until every replica of the applied revision is ready, printing
    /// progress (exit 1 if it is rolled back or the timeout passes).
    #[arg(long, conflicts_with = "dry_run")]
    wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300, requires = "wait")]
    timeout: u64,
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
    /// Schedulers, and which one leads.
    Schedulers,
    /// Namespaces, with their usage and quotas.
    Namespaces,
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

/// What `describe` and `delete` act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Object {
    /// An app.
    App,
    /// A namespace.
    Namespace,
}

/// `shoal describe app|namespace NAME`.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// What to describe.
    kind: Object,
    /// Its name.
    name: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// `shoal delete app|namespace NAME`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// What to delete (a namespace only when it holds no app).
    kind: Object,
    /// Its name.
    name: String,
}

/// `shoal scale APP/COMPONENT N`.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The component, as APP/COMPONENT.
    target: String,
    /// Replicas wanted.
    replicas: u32,
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
    /// Also print the host calls the invocation made (capability, target,
    /// bytes sent and received, result, time), on stderr.
    #[arg(long)]
    trace: bool,
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
    },
    /// List secret names (never values).
    List,
}

/// The app a rollout verb is about.
#[derive(Debug, Args)]
pub struct RolloutTarget {
    /// The app's name.
    app: String,
}

/// `shoal rollout …`.
#[derive(Debug, Subcommand)]
pub enum RolloutVerb {
    /// Show where each pod's rollout stands; with --wait, wait until every
    /// pod is complete.
    Status {
        #[command(flatten)]
        target: RolloutTarget,
        /// Wait until the rollout completes (exit 1 if it is rolled back or
        /// the timeout passes).
        #[arg(long)]
        wait: bool,
        /// How long --wait waits, in seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        format: Format,
    },
    /// List the app's stored revisions and why each was stored.
    History {
        #[command(flatten)]
        target: RolloutTarget,
        /// Output format.
        #[arg(short = 'o', long = "output", value_enum, default_value_t)]
        format: Format,
    },
    /// Roll back to the previous revision, or to --to REVISION.
    Undo {
        #[command(flatten)]
        target: RolloutTarget,
        /// The revision to go back to (see `shoal rollout history`).
        #[arg(long, value_name = "REVISION")]
        to: Option<u64>,
    },
    /// Promote a running canary now: it rolls out to every replica
    /// without waiting for its remaining steps.
    Promote {
        #[command(flatten)]
        target: RolloutTarget,
    },
    /// Abort a running canary now: the revision before it is stored
    /// again, and the canary replica stops.
    Abort {
        #[command(flatten)]
        target: RolloutTarget,
    },
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
    /// Follow, list and undo rolling updates.
    #[command(subcommand)]
    Rollout(RolloutVerb),
    /// Set or list secrets.
    #[command(subcommand)]
    Secret(SecretVerb),
    /// Who you are, what you may do, and API tokens.
    #[command(subcommand)]
    Auth(AuthVerb),
    /// Create a namespace.
    #[command(subcommand)]
    Create(CreateVerb),
    /// Change a namespace's quotas and claimed routes.
    #[command(subcommand)]
    Update(UpdateVerb),
    /// List the audit trail: every change made through the API, by whom.
    Audit(AuditArgs),
    /// Print an app's logs, from every replica on every host, stored or
    /// live.
    Logs(LogsArgs),
    /// List or follow events.
    Events(EventsArgs),
    /// Live figures per pod, app or host: invocations and errors a second,
    /// p50/p99 durations, fuel, memory, in flight.
    Top(TopArgs),
    /// Core dumps of trapping invocations.
    #[command(subcommand)]
    Debug(DebugVerb),
}

/// `path`, narrowed to the namespace `-n` gave, if it gave one.
fn listing(path: &str, client: &Client) -> String {
    match client.namespace_given() {
        Some(ns) => format!("{path}?namespace={ns}"),
        None => path.to_string(),
    }
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
            if args.wait {
                let path = format!("/v1/apps/{}/rollout", resp.app);
                let timeout = std::time::Duration::from_secs(args.timeout);
                wait_for_rollout(client, &path, resp.revision, timeout, Format::Table).await?;
            }
        }
        Verb::Get(args) => get(client, args).await?,
        Verb::Describe(args) if args.kind == Object::Namespace => {
            access_verbs::describe_namespace(client, &args.name, args.format).await?;
        }
        Verb::Describe(args) => {
            let detail: AppDetail = client
                .get(&format!("/v1/apps/{}/{}", client.namespace(), args.name))
                .await?;
            match args.format {
                Format::Json => println!("{}", serde_json::to_string_pretty(&detail)?),
                Format::Table => print_detail(&detail),
            }
        }
        Verb::Delete(args) if args.kind == Object::Namespace => {
            client
                .delete(&format!("/v1/namespaces/{}", args.name))
                .await?;
            println!("namespace {} deleted", args.name);
        }
        Verb::Delete(args) => {
            client
                .delete(&format!("/v1/apps/{}/{}", client.namespace(), args.name))
                .await?;
            println!("app {}/{} deleted", client.namespace(), args.name);
        }
        Verb::Scale(args) => {
            let (app, component) = split_target(&args.target)?;
            let resp: ApplyResponse = client
                .post(
                    &format!("/v1/apps/{}/{app}/scale", client.namespace()),
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
                    &format!("/v1/apps/{}/{app}/invoke/{component}", client.namespace()),
                    &InvokeRequest {
                        data: args.data.into_bytes(),
                        headers,
                        trace: args.trace,
                    },
                )
                .await?;
            if let Some(calls) = &resp.calls {
                eprintln!("{}", crate::tables::host_calls(calls));
            }
            // The reply as the component sent it, byte for byte; text
            // gets a final newline if it has none.
            let mut out = std::io::stdout().lock();
            out.write_all(&resp.data)?;
            if std::str::from_utf8(&resp.data).is_ok_and(|t| !t.ends_with('\n')) {
                out.write_all(b"\n")?;
            }
            out.flush()?;
        }
        Verb::Secret(SecretVerb::Set { name, from_file }) => {
            let namespace = client.namespace();
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
        Verb::Rollout(verb) => rollout(client, verb).await?,
        Verb::Auth(verb) => access_verbs::auth(client, verb).await?,
        Verb::Create(CreateVerb::Namespace(args)) => {
            access_verbs::put_namespace(client, args, true).await?;
        }
        Verb::Update(UpdateVerb::Namespace(args)) => {
            access_verbs::put_namespace(client, args, false).await?;
        }
        Verb::Audit(args) => access_verbs::audit(client, args).await?,
        Verb::Logs(args) => log_verbs::logs(client, args).await?,
        Verb::Events(args) => log_verbs::events(client, args).await?,
        Verb::Top(args) => log_verbs::top(client, args).await?,
        Verb::Debug(verb) => debug_verbs::run(client, verb).await?,
        Verb::Secret(SecretVerb::List) => {
            let names: Vec<String> = client.get(&listing("/v1/secrets", client)).await?;
            for name in names {
                println!("{name}");
            }
        }
    }
    Ok(())
}

async fn rollout(client: &Client, verb: RolloutVerb) -> anyhow::Result<()> {
    match verb {
        RolloutVerb::Status {
            target,
            wait,
            timeout,
            format,
        } => {
            let path = format!("/v1/apps/{}/{}/rollout", client.namespace(), target.app);
            let status: RolloutStatus = client.get(&path).await?;
            if wait {
                let timeout = std::time::Duration::from_secs(timeout);
                wait_for_rollout(client, &path, status.revision, timeout, format).await?;
            } else {
                match format {
                    Format::Table => print_rollout(&status),
                    Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
                }
            }
        }
        RolloutVerb::History { target, format } => {
            let revisions: Vec<RevisionInfo> = client
                .get(&format!(
                    "/v1/apps/{}/{}/revisions",
                    client.namespace(),
                    target.app
                ))
                .await?;
            if let Format::Json = format {
                println!("{}", serde_json::to_string_pretty(&revisions)?);
                return Ok(());
            }
            println!(
                "{:<9} {:<10} {:<24} CAUSE",
                "REVISION", "AGE", "GENERATIONS"
            );
            let now = now_ms();
            for r in revisions {
                let generations: Vec<String> = r
                    .generations
                    .iter()
                    .map(|(pod, g)| format!("{pod}={g}"))
                    .collect();
                println!(
                    "{:<9} {:<10} {:<24} {}{}",
                    r.revision,
                    age(now.saturating_sub(r.at_ms)),
                    generations.join(","),
                    r.cause,
                    if r.current { "  (current)" } else { "" }
                );
            }
        }
        RolloutVerb::Undo { target, to } => {
            let resp: ApplyResponse = client
                .post(
                    &format!("/v1/apps/{}/{}/rollback", client.namespace(), target.app),
                    &RollbackRequest { to },
                )
                .await?;
            println!(
                "app {} rolled back{} (revision {})",
                resp.app,
                to.map(|t| format!(" to revision {t}")).unwrap_or_default(),
                resp.revision
            );
            for id in &resp.plan.change {
                println!("  will replace {id}");
            }
        }
        RolloutVerb::Promote { target } => {
            let path = format!(
                "/v1/apps/{}/{}/rollout/promote",
                client.namespace(),
                target.app
            );
            let resp: ApplyResponse = client.post(&path, &serde_json::json!({})).await?;
            println!(
                "app {}: canary promoted (revision {}); it rolls out to every replica",
                resp.app, resp.revision
            );
        }
        RolloutVerb::Abort { target } => {
            let path = format!(
                "/v1/apps/{}/{}/rollout/abort",
                client.namespace(),
                target.app
            );
            let resp: ApplyResponse = client.post(&path, &serde_json::json!({})).await?;
            println!(
                "app {}: canary aborted (revision {} is the one before it)",
                resp.app, resp.revision
            );
        }
    }
    Ok(())
}

/// Waits until every pod of the app whose rollout is at `path` runs
/// `revision` ready, printing each change of progress (as a table), or the
/// last status (as JSON). Fails when the app moves past `revision` (rolled
/// back, or applied again) or `timeout` passes. A status still behind
/// `revision` (a scheduler that has not seen the apply yet) is waited out.
async fn wait_for_rollout(
    client: &Client,
    path: &str,
    revision: u64,
    timeout: std::time::Duration,
    format: Format,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let mut last_printed: Option<RolloutStatus> = None;
    let mut revision = revision;
    loop {
        let status: RolloutStatus = client.get(path).await?;
        if status.revision > revision && status.promotes == Some(revision) {
            // The canary passed its last step: the promotion rolls it out.
            revision = status.revision;
        }
        if status.revision > revision {
            bail!(
                "{} moved from revision {revision} to {} while waiting (rolled back or re-applied): see `shoal describe app {}`",
                status.app,
                status.revision,
                status.app.rsplit('/').next().unwrap_or(&status.app)
            );
        }
        let current = status.revision == revision;
        if let Format::Table = format
            && current
            && last_printed.as_ref() != Some(&status)
        {
            print_rollout(&status);
            last_printed = Some(status.clone());
        }
        if current
            && status
                .pods
                .iter()
                .all(|p| p.state == RolloutState::Complete)
        {
            match format {
                Format::Table => println!("app {} revision {revision} is ready", status.app),
                Format::Json => println!("{}", serde_json::to_string_pretty(&status)?),
            }
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!(
                "revision {revision} of {} is not ready after {}s: see `shoal describe app {}` for what it waits for",
                status.app,
                timeout.as_secs(),
                status.app.rsplit('/').next().unwrap_or(&status.app)
            );
        }
        tokio::time::sleep(crate::tunables::WAIT_POLL).await;
    }
}

fn print_rollout(status: &RolloutStatus) {
    println!("app {} revision {}", status.app, status.revision);
    for p in &status.pods {
        println!(
            "  pod {:<16} gen {:<3} {:<11} updated {}/{} ready {}/{} old {}: {}",
            p.pod,
            p.generation,
            p.state,
            p.updated,
            p.desired,
            p.ready,
            p.desired,
            p.old,
            p.message
        );
        if let Some(c) = &p.canary {
            println!(
                "    canary step {}/{} taking {}{}",
                c.step,
                c.steps,
                c.share,
                if c.ready { "" } else { " (not ready)" }
            );
            println!("      canary gen {:<3} {}", c.generation, c.canary);
            println!("      stable gen {:<3} {}", c.stable_generation, c.stable);
        }
        if let Some(s) = &p.shadow {
            let state = match (s.finished, s.ready) {
                (true, _) => "finished",
                (false, true) => "copying",
                (false, false) => "not ready",
            };
            println!(
                "    shadow gen {} beside gen {}, {} of requests, {state}: {}",
                s.generation, s.stable_generation, s.share, s.report
            );
            for d in &s.report.examples {
                println!(
                    "      {}: stable {} {:?}, shadow {} {:?}",
                    d.request, d.stable_status, d.stable_body, d.shadow_status, d.shadow_body
                );
            }
        }
    }
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
            let apps: Vec<AppSummary> = client.get(&listing("/v1/apps", client)).await?;
            if let Format::Json = args.format {
                println!("{}", serde_json::to_string_pretty(&apps)?);
                return Ok(());
            }
            println!("{}", tables::apps(&apps));
        }
        Kind::Pods => {
            let pods: Vec<PodInfo> = client.get(&listing("/v1/pods", client)).await?;
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
            println!("{}", tables::hosts(&hosts));
        }
        Kind::Schedulers => {
            let schedulers: Vec<SchedulerInfo> = client.get("/v1/schedulers").await?;
            if let Format::Json = args.format {
                println!("{}", serde_json::to_string_pretty(&schedulers)?);
                return Ok(());
            }
            println!("{}", tables::schedulers(&schedulers));
        }
        Kind::Namespaces => access_verbs::list_namespaces(client, args.format).await?,
    }
    Ok(())
}

fn print_pods(pods: &[PodInfo]) {
    println!("{}", tables::pods(pods));
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
            "  {:<32} {:<24} gen {:<3} ready {:<3} restarts {:<3} {}",
            p.id.to_string(),
            p.host.as_ref().map_or("-".to_string(), |h| h.to_string()),
            p.revision,
            ready_text(p),
            p.restarts,
            state_text(&p.state)
        );
        if let Some(why) = &p.last_error {
            println!("  {:<32} last error: {why}", "");
        }
    }
    println!("Events:");
    let now = now_ms();
    for e in &d.events {
        println!(
            "  {:>8} {:<10} {}",
            age(now.saturating_sub(e.at_ms)),
            e.reason,
            e.message
        );
    }
    if !d.last_output.is_empty() {
        println!("Last output of replicas that stopped or restart:");
        for line in &d.last_output {
            println!(
                "  [{}-{}] {}{}",
                line.replica.pod,
                line.replica.index,
                if line.stream == shoal_api::logs::LogStream::Lifecycle {
                    "(shoal) "
                } else {
                    ""
                },
                line.text
            );
        }
    }
}
