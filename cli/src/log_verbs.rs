//! `shoal logs` and `shoal events`: what JetStream keeps, read or followed
//! through the scheduler's API.

use std::time::{Duration, UNIX_EPOCH};

use anyhow::bail;
use clap::Args;
use shoal_api::logs::{LogEntry, LogStream};
use shoal_api::resources::Event;
use shoal_api::wire::now_ms;

use crate::client::{Client, Refused};
use crate::tables::{age, render};
use crate::tunables::FOLLOW_RETRY;
use crate::verbs::Format;

/// `shoal logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The app, or one of its components as APP/COMPONENT.
    target: String,
    /// Keep printing new lines (and those of replicas started later).
    #[arg(short, long)]
    follow: bool,
    /// Only lines from this long ago on (like 10m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Only the last N lines (before following).
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
    /// Only this replica (like web-0).
    #[arg(long, value_name = "REPLICA")]
    replica: Option<String>,
    /// The lines of each replica's run before its latest (before a restart).
    #[arg(long)]
    previous: bool,
    /// Only lines matching this regular expression.
    #[arg(long, value_name = "RE")]
    grep: Option<String>,
    /// Start each line with when it was written.
    #[arg(long)]
    timestamps: bool,
    /// Output format (json: one object per line).
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// `shoal events`.
#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this app's events.
    app: Option<String>,
    /// Keep printing new events.
    #[arg(short, long)]
    follow: bool,
    /// Only events from this long ago on (like 10m, 2h).
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Output format (json: one object per line).
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

fn since_ms(since: Option<Duration>) -> Option<u64> {
    since.map(|d| now_ms().saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// When `ms` was, as RFC 3339 with milliseconds.
fn timestamp(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn print_entry(entry: &LogEntry, args: &LogsArgs) -> anyhow::Result<()> {
    if let Format::Json = args.format {
        println!("{}", serde_json::to_string(entry)?);
        return Ok(());
    }
    let when = if args.timestamps {
        format!("{} ", timestamp(entry.at_ms))
    } else {
        String::new()
    };
    let replica = format!("{}-{}", entry.replica.pod, entry.replica.index);
    match entry.stream {
        LogStream::Lifecycle => println!("{when}[{replica}] (shoal) {}", entry.text),
        _ => println!("{when}[{replica}] {}", entry.text),
    }
    Ok(())
}

/// Runs `shoal logs`. Following, a dropped connection (a scheduler
/// restart) is retried every [`FOLLOW_RETRY`], resuming after the last
/// line shown, so no line is shown twice or skipped.
pub async fn logs(client: &Client, args: LogsArgs) -> anyhow::Result<()> {
    let (app, component) = match args.target.split_once('/') {
        Some((app, component)) => (app.to_string(), Some(component.to_string())),
        None => (args.target.clone(), None),
    };
    let mut after: Option<String> = None;
    let mut first = true;
    loop {
        let path = format!(
            "/v1/logs/{}/{app}{}",
            client.namespace(),
            query(&[
                ("component", component.clone()),
                ("replica", args.replica.clone()),
                ("since_ms", since_ms(args.since).map(|s| s.to_string())),
                ("after", after.clone()),
                ("tail", args.tail.filter(|_| first).map(|n| n.to_string())),
                ("grep", args.grep.clone()),
                ("previous", args.previous.then(|| "true".into())),
                ("follow", args.follow.then(|| "true".into())),
            ])
        );
        let result = client
            .get_lines(&path, |line| {
                if let Ok(error) = serde_json::from_str::<serde_json::Value>(line)
                    && let Some(message) = error.get("error").and_then(|e| e.as_str())
                {
                    bail!("{message}");
                }
                let entry: LogEntry = serde_json::from_str(line)?;
                after = Some(entry.cursor.to_string());
                print_entry(&entry, &args)
            })
            .await;
        first = false;
        match result {
            Ok(()) if !args.follow => return Ok(()),
            Err(e) if !args.follow || e.downcast_ref::<Refused>().is_some() => return Err(e),
            _ => {
                tracing::debug!("the log stream ended; following again");
                tokio::time::sleep(FOLLOW_RETRY).await;
            }
        }
    }
}

/// Runs `shoal events`.
pub async fn events(client: &Client, args: EventsArgs) -> anyhow::Result<()> {
    let namespace = match (&args.app, client.namespace_given()) {
        (Some(_), _) => Some(client.namespace().to_string()),
        (None, given) => given.map(str::to_string),
    };
    let path = format!(
        "/v1/events{}",
        query(&[
            ("namespace", namespace),
            ("app", args.app.clone()),
            ("since_ms", since_ms(args.since).map(|s| s.to_string())),
            ("follow", args.follow.then(|| "true".into())),
        ])
    );
    let table = matches!(args.format, Format::Table) && !args.follow;
    let mut rows = Vec::new();
    let now = now_ms();
    client
        .get_lines(&path, |line| {
            if let Ok(error) = serde_json::from_str::<serde_json::Value>(line)
                && let Some(message) = error.get("error").and_then(|e| e.as_str())
            {
                bail!("{message}");
            }
            let e: Event = serde_json::from_str(line)?;
            let row = vec![
                age(now.saturating_sub(e.at_ms)),
                if e.reason.is_warning() {
                    "Warning"
                } else {
                    "Normal"
                }
                .to_string(),
                e.reason.to_string(),
                format!("app/{}/{}", e.namespace, e.app),
                e.message.clone(),
            ];
            match args.format {
                Format::Json => println!("{}", serde_json::to_string(&e)?),
                Format::Table if table => rows.push(row),
                Format::Table => println!(
                    "{}  {:<7}  {:<16}  {}  {}",
                    timestamp(e.at_ms),
                    row[1],
                    row[2],
                    row[3],
                    row[4]
                ),
            }
            Ok(())
        })
        .await?;
    if table {
        println!(
            "{}",
            render(&["AGE", "TYPE", "REASON", "OBJECT", "MESSAGE"], &[], rows)
        );
    }
    Ok(())
}

/// What `shoal top` shows.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TopKind {
    /// Each replica.
    Pods,
    /// Each app's pods, their replicas summed.
    Apps,
    /// Each host, its replicas summed.
    Hosts,
}

/// How `shoal top` sorts, largest first.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum TopSort {
    /// Invocations a second.
    #[default]
    Invocations,
    /// Errors a second.
    Errors,
    /// 99th percentile duration.
    P99,
    /// Fuel a second.
    Fuel,
    /// Peak memory.
    Memory,
    /// In flight.
    InFlight,
}

/// `shoal top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    /// Pods, apps or hosts.
    what: TopKind,
    /// Figures over this long (like 10m; up to 15m) instead of the last
    /// beats.
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Sort by this, largest first.
    #[arg(long, value_enum, default_value_t)]
    sort: TopSort,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t)]
    format: Format,
}

/// Runs `shoal top`.
pub async fn top(client: &Client, args: TopArgs) -> anyhow::Result<()> {
    let kind = match args.what {
        TopKind::Pods => "pods",
        TopKind::Apps => "apps",
        TopKind::Hosts => "hosts",
    };
    let path = format!(
        "/v1/top/{kind}{}",
        query(&[
            ("namespace", client.namespace_given().map(str::to_string)),
            (
                "window_s",
                args.since.map(|d| d.as_secs().max(1).to_string())
            ),
        ])
    );
    let mut rows: Vec<shoal_api::top::TopRow> = client.get(&path).await?;
    let key = |r: &shoal_api::top::TopRow| match args.sort {
        TopSort::Invocations => r.invocations_per_s,
        TopSort::Errors => r.errors_per_s,
        TopSort::P99 => r.p99_ms.unwrap_or(0.0),
        TopSort::Fuel => r.fuel_per_s,
        TopSort::Memory => r.peak_memory as f64,
        TopSort::InFlight => r.in_flight,
    };
    rows.sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    if let Format::Json = args.format {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.2}ms"));
    let table = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{:.1}", r.invocations_per_s),
                format!("{:.1}", r.errors_per_s),
                ms(r.p50_ms),
                ms(r.p99_ms),
                format!("{:.0}", r.fuel_per_s),
                shoal_api::ByteSize::bytes(r.peak_memory).to_string(),
                format!("{:.2}", r.in_flight),
            ]
        })
        .collect();
    // Every column but the name holds a number: right-aligned.
    const COLUMNS: [&str; 8] = [
        "NAME",
        "INV/S",
        "ERR/S",
        "P50",
        "P99",
        "FUEL/S",
        "MEMORY",
        "IN-FLIGHT",
    ];
    println!("{}", render(&COLUMNS, &COLUMNS[1..], table,));
    Ok(())
}
