//! Logs and events, end to end: every replica's lines stored in JetStream
//! and read cluster-wide with `shoal logs`, followed across a scale-up,
//! kept when a host dies; a crash-looping job's last words in `describe`;
//! `shoal events -f`. Real nats-server, scheduler and hosts, real
//! components.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use shoal_api::logs::{LogEntry, LogStream};
use shoal_api::resources::AppDetail;
use shoal_tests::Running;
use shoal_tests::cluster::Cluster;

const LIMIT: Duration = Duration::from_secs(60);

const PRINTER: &str = "name = \"printer\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nreplicas = 2\nlimits = { memory = \"16MiB\", concurrency = 4 }\nplacement = { spread = \"zone\" }\n";

/// Every stored line of `app`, as JSON entries.
fn entries(cluster: &Cluster, args: &[&str]) -> Vec<LogEntry> {
    let mut all = vec!["logs"];
    all.extend(args);
    all.extend(["-o", "json"]);
    cluster
        .ok(&all)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn guest_lines(entries: &[LogEntry]) -> Vec<&str> {
    entries
        .iter()
        .filter(|e| e.stream == LogStream::Stdout)
        .map(|e| e.text.as_str())
        .collect()
}

#[test]
fn logs_are_kept_cluster_wide_read_once_and_followed() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "zone=a").unwrap();
    cluster.start_host("h2", "zone=b").unwrap();
    let spec = cluster.spec("printer.toml", PRINTER).unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    // Four invocations of 25 numbered lines each, spread over the replicas.
    cluster
        .wait_until("a replica answers", LIMIT, |c| {
            let out = c.shoal(&["invoke", "printer/toolbox", "--data", "print 25"])?;
            Ok((out.code == Some(0)).then_some(()))
        })
        .unwrap();
    for _ in 0..3 {
        cluster
            .ok(&["invoke", "printer/toolbox", "--data", "print 25"])
            .unwrap();
    }
    let all = cluster
        .wait_until("every line is stored", LIMIT, |c| {
            let all = entries(c, &["printer"]);
            // Both replicas have started (the second may start later than
            // the first answers) and every line is in.
            let hosts: std::collections::BTreeSet<_> = all.iter().map(|e| &e.host).collect();
            Ok((guest_lines(&all).len() >= 100 && hosts.len() == 2).then_some(all))
        })
        .unwrap();
    // Every line exactly once, in order within each invocation.
    let lines = guest_lines(&all);
    assert_eq!(lines.len(), 100, "{lines:?}");
    for i in 0..25 {
        let n = lines
            .iter()
            .filter(|l| **l == format!("line {i} of 25"))
            .count();
        assert_eq!(n, 4, "line {i}: {lines:?}");
    }
    let hosts: std::collections::BTreeSet<String> =
        all.iter().map(|e| e.host.to_string()).collect();
    assert_eq!(hosts.len(), 2, "both hosts' replicas: {hosts:?}");
    assert!(
        all.iter()
            .any(|e| e.stream == LogStream::Lifecycle && e.text.starts_with("started on")),
        "lifecycle lines"
    );
    // The filters.
    let tail = entries(&cluster, &["printer", "--tail", "5"]);
    assert_eq!(tail.len(), 5);
    assert_eq!(tail.as_slice(), &all[all.len() - 5..]);
    let grep = entries(&cluster, &["printer", "--grep", "^line 7 of"]);
    assert_eq!(guest_lines(&grep), vec!["line 7 of 25"; 4]);
    let since = entries(&cluster, &["printer", "--since", "1h"]);
    assert_eq!(since.len(), all.len());
    let one = entries(&cluster, &["printer", "--replica", "toolbox-0"]);
    assert!(!one.is_empty() && one.iter().all(|e| e.replica.index == 0));
    let text = cluster
        .ok(&["logs", "printer/toolbox", "--tail", "1", "--timestamps"])
        .unwrap();
    assert!(
        text.starts_with("20") && text.contains("[toolbox-"),
        "{text}"
    );

    // A follower started before a scale-up sees the new replica.
    let config = cluster.admin_config().display().to_string();
    let api = cluster.api();
    let mut follow = Running::start_with_env(
        &["logs", "printer", "-f", "--tail", "0"],
        &[("SHOAL_CONFIG", &config), ("SHOAL_API", &api)],
    )
    .unwrap();
    cluster.ok(&["scale", "printer/toolbox", "3"]).unwrap();
    follow
        .wait_for_line("[toolbox-2] (shoal) started on", LIMIT)
        .unwrap();
    // It survives a scheduler restart, and shows nothing twice.
    cluster.kill_scheduler();
    cluster.start_scheduler().unwrap();
    cluster
        .wait_until("invoked after the restart", LIMIT, |c| {
            let out = c.shoal(&["invoke", "printer/toolbox", "--data", "print 3"])?;
            Ok((out.code == Some(0)).then_some(()))
        })
        .unwrap();
    follow.wait_for_line("line 2 of 3", LIMIT).unwrap();
    let seen = follow.output();
    let started_2 = seen
        .iter()
        .filter(|l| l.contains("[toolbox-2] (shoal) started on"))
        .count();
    assert_eq!(started_2, 1, "{seen:?}");

    // A follow ends when its token is revoked.
    let token = cluster.token("watcher", "view", Some("default")).unwrap();
    let nowhere = cluster.dir().join("none.toml").display().to_string();
    let mut watcher = Running::start_with_env(
        &["logs", "printer", "-f", "--tail", "0"],
        &[
            ("SHOAL_CONFIG", &nowhere),
            ("SHOAL_API", &api),
            ("SHOAL_TOKEN", &token),
        ],
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let list: Vec<serde_json::Value> = serde_json::from_str(
        &cluster
            .ok(&["auth", "token", "list", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    let id = list
        .iter()
        .find(|t| t["principal"]["name"] == "watcher")
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string();
    cluster.ok(&["auth", "token", "revoke", &id]).unwrap();
    assert_eq!(
        watcher.wait_exit(LIMIT).unwrap(),
        Some(1),
        "{:?}",
        watcher.output()
    );

    // A host killed: the lines it had shipped are still there.
    let before = cluster
        .wait_until("the last lines are stored", LIMIT, |c| {
            let n = guest_lines(&entries(c, &["printer"])).len();
            Ok((n == 103).then_some(n))
        })
        .unwrap();
    cluster.kill_host("h1");
    let after = entries(&cluster, &["printer"]);
    assert_eq!(guest_lines(&after).len(), before);
}

#[test]
fn a_crash_looping_job_shows_its_last_words_and_events_follow() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let config = cluster.admin_config().display().to_string();
    let api = cluster.api();
    let mut events = Running::start_with_env(
        &["events", "-f"],
        &[("SHOAL_CONFIG", &config), ("SHOAL_API", &api)],
    )
    .unwrap();
    let spec = shoal_tests::repo_root().join("examples/crash-job/app.toml");
    cluster.ok(&["apply", &spec.display().to_string()]).unwrap();
    events
        .wait_for_line("applied", Duration::from_secs(5))
        .unwrap();
    let detail: AppDetail = cluster
        .wait_until("the job has restarted", LIMIT, |c| {
            let text = c.ok(&["describe", "app", "crashy", "-o", "json"])?;
            let d: AppDetail = serde_json::from_str(&text)?;
            Ok(d.last_output
                .iter()
                .any(|e| e.text.starts_with("restarting in"))
                .then_some(d))
        })
        .unwrap();
    assert!(
        detail
            .last_output
            .iter()
            .any(|e| e.stream == LogStream::Stdout && e.text.contains("exiting with code 1")),
        "{:?}",
        detail.last_output
    );
    let shown = cluster.ok(&["describe", "app", "crashy"]).unwrap();
    assert!(shown.contains("Last output"), "{shown}");
    // The run before the latest, on its own.
    let previous = cluster
        .wait_until("a second run", LIMIT, |c| {
            let out = c.ok(&["logs", "crashy", "--previous", "-o", "json"])?;
            let prev: Vec<LogEntry> = out
                .lines()
                .map(serde_json::from_str)
                .collect::<Result<_, _>>()?;
            Ok((!prev.is_empty()).then_some(prev))
        })
        .unwrap();
    let latest = previous.iter().map(|e| e.incarnation).max().unwrap();
    let all = entries(&cluster, &["crashy"]);
    let newest = all.iter().map(|e| e.incarnation).max().unwrap();
    assert!(latest < newest, "--previous shows an earlier run");
    // Events, stored and followed.
    let listed = cluster.ok(&["events", "crashy"]).unwrap();
    assert!(listed.contains("applied"), "{listed}");
}

/// The samples of `text`, parsed as Prometheus/OpenMetrics text.
fn scrape(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

/// The value of `name` with `labels` among `scrape`'s samples.
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => *v,
            prometheus_parse::Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

#[test]
fn metrics_count_exactly_what_happened_with_bounded_labels() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = cluster
        .spec(
            "metered.toml",
            "name = \"metered\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nlimits = { memory = \"16MiB\", fuel = 100_000_000 }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    cluster
        .wait_until("the replica answers", LIMIT, |c| {
            let out = c.shoal(&["invoke", "metered/toolbox", "--data", "print 1"])?;
            Ok((out.code == Some(0)).then_some(()))
        })
        .unwrap();
    for _ in 0..4 {
        cluster
            .ok(&["invoke", "metered/toolbox", "--data", "print 1"])
            .unwrap();
    }
    // Two components whose figures are known: one burns its whole fuel
    // budget, one grows its memory up to its limit.
    let known = cluster
        .spec(
            "known.toml",
            "name = \"known\"\n[components.burner]\nsource = \"SOURCE(fuel-burner)\"\nkind = \"worker\"\nlimits = { fuel = 10_000_000, timeout = \"10s\" }\n[components.hog]\nsource = \"SOURCE(memory-hog)\"\nkind = \"worker\"\nlimits = { memory = \"16MiB\", timeout = \"10s\" }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &known]).unwrap();
    for (component, says) in [("burner", "out of fuel"), ("hog", "memory")] {
        let out = cluster
            .wait_until("the component runs", LIMIT, |c| {
                let out = c.shoal(&["invoke", &format!("known/{component}"), "--data", "x"])?;
                Ok((!out.stderr.contains("no replica")).then_some(out))
            })
            .unwrap();
        assert!(out.stderr.contains(says), "{out:?}");
    }
    let labels = [
        ("namespace", "default"),
        ("app", "metered"),
        ("component", "toolbox"),
    ];
    let host = cluster.host_metrics("h1").unwrap();
    let text = shoal_tests::http_request(host, "GET", "/metrics", LIMIT)
        .unwrap()
        .body;
    let host_scrape = scrape(&text);
    let ok = [labels.as_slice(), &[("outcome", "ok")]].concat();
    assert_eq!(
        value(&host_scrape, "shoal_invocations_total", &ok),
        Some(5.0),
        "{text}"
    );
    let count = |name: &str| {
        host_scrape
            .samples
            .iter()
            .find(|s| s.metric == name && s.labels.get("app") == Some("metered"))
            .map(|s| match &s.value {
                prometheus_parse::Value::Histogram(b) => b.last().map_or(0.0, |b| b.count),
                _ => f64::NAN,
            })
    };
    assert_eq!(count("shoal_invocation_fuel"), Some(5.0), "{text}");
    assert_eq!(count("shoal_invocation_memory_bytes"), Some(5.0), "{text}");
    assert_eq!(
        count("shoal_invocation_duration_seconds"),
        Some(5.0),
        "{text}"
    );
    assert!(text.contains("shoal_host_slots_offered"), "{text}");
    let of = |component| [("app", "known"), ("component", component)];
    assert_eq!(
        value(
            &host_scrape,
            "shoal_invocations_total",
            &[of("burner").as_slice(), &[("outcome", "fuel_exhausted")]].concat()
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &host_scrape,
            "shoal_invocations_total",
            &[of("hog").as_slice(), &[("outcome", "memory_limit")]].concat()
        ),
        Some(1.0),
        "{text}"
    );
    // The burner spent exactly its budget; the hog held just under its
    // 16 MiB when the next mebibyte was refused.
    assert_eq!(
        value(&host_scrape, "shoal_invocation_fuel_sum", &of("burner")),
        Some(10_000_000.0),
        "{text}"
    );
    let peak = value(
        &host_scrape,
        "shoal_invocation_memory_bytes_sum",
        &of("hog"),
    )
    .unwrap();
    assert!(
        (15.0 * 1048576.0..=16.0 * 1048576.0).contains(&peak),
        "peak {peak}: {text}"
    );
    // No label holds a replica or a path.
    for sample in &host_scrape.samples {
        assert!(
            sample.labels.get("replica").is_none() && sample.labels.get("path").is_none(),
            "{sample:?}"
        );
        for (_, v) in sample.labels.iter() {
            assert!(
                !v.contains("toolbox-0") && !v.starts_with('/'),
                "{sample:?}"
            );
        }
    }

    // The scheduler's, behind a token.
    let api = cluster.api().trim_start_matches("http://").parse().unwrap();
    let refused = shoal_tests::http_request(api, "GET", "/metrics", LIMIT).unwrap();
    assert_eq!(refused.status, 401);
    let token = cluster.admin_token().unwrap();
    let text = shoal_tests::http_request_as(api, &token, "GET", "/metrics", LIMIT)
        .unwrap()
        .body;
    let scheduler = scrape(&text);
    let wanted = [labels.as_slice(), &[("state", "wanted")]].concat();
    assert_eq!(
        value(&scheduler, "shoal_replicas", &wanted),
        Some(1.0),
        "{text}"
    );
    let ready = [labels.as_slice(), &[("state", "ready")]].concat();
    assert_eq!(
        value(&scheduler, "shoal_replicas", &ready),
        Some(1.0),
        "{text}"
    );
    let invokes = value(
        &scheduler,
        "shoal_api_request_duration_seconds",
        &[
            ("route", "/v1/apps/:namespace/:name/invoke/:component"),
            ("method", "POST"),
        ],
    )
    .unwrap_or(0.0);
    assert!(invokes >= 5.0, "{text}");
    assert_eq!(
        value(&scheduler, "shoal_hosts", &[("state", "ready")]),
        Some(1.0)
    );
}

#[test]
fn top_shows_the_load_within_two_seconds() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = cluster
        .spec(
            "busy.toml",
            "name = \"busy\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nlimits = { memory = \"16MiB\", fuel = 100_000_000 }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    cluster
        .wait_until("the replica answers", LIMIT, |c| {
            let out = c.shoal(&["invoke", "busy/toolbox", "--data", "print 1"])?;
            Ok((out.code == Some(0)).then_some(()))
        })
        .unwrap();
    let started = std::time::Instant::now();
    let rows: Vec<shoal_api::top::TopRow> = cluster
        .wait_until("top shows the load", Duration::from_secs(10), |c| {
            c.ok(&["invoke", "busy/toolbox", "--data", "print 1"])?;
            let rows: Vec<shoal_api::top::TopRow> =
                serde_json::from_str(&c.ok(&["top", "pods", "-o", "json"])?)?;
            Ok(rows
                .iter()
                .any(|r| r.name == "default/busy/toolbox-0" && r.invocations_per_s > 0.0)
                .then_some(rows))
        })
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "top took {:?}",
        started.elapsed()
    );
    let row = rows
        .iter()
        .find(|r| r.name == "default/busy/toolbox-0")
        .unwrap();
    assert!(
        row.p50_ms.is_some() && row.fuel_per_s > 0.0 && row.peak_memory > 0,
        "{row:?}"
    );
    let apps: Vec<shoal_api::top::TopRow> = serde_json::from_str(
        &cluster
            .ok(&["top", "apps", "--since", "1m", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert!(
        apps.iter()
            .any(|r| r.name == "default/busy/toolbox" && r.invocations_per_s > 0.0),
        "{apps:?}"
    );
    let hosts = cluster.ok(&["top", "hosts"]).unwrap();
    assert!(hosts.contains("h1") && hosts.contains("INV/S"), "{hosts}");
}
