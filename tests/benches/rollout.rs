//! Rolling updates: how long a rollout of `REPLICAS` replicas takes, from
//! `shoal apply` of the new revision to every replica of it ready and every
//! old copy gone, next to the baseline of starting the same replicas from
//! nothing.
//!
//! A real cluster (nats-server, scheduler and two hosts as processes) and
//! `hello-http` with a readiness path (`health = { path = "/healthz",
//! interval = "200ms" }`). Each round applies a fresh app and waits until
//! it is ready (the baseline), then rolls it to a new greeting with
//! `max_surge = 1` (one replica at a time) and with `max_surge =
//! REPLICAS` (all at once). Run after `scripts/setup`:
//! `cargo bench -p shoal-tests --bench rollout`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shoal_api::resources::{RolloutState, RolloutStatus};
use shoal_tests::cluster::Cluster;
use shoal_tests::{http_request_as, wasm_path};

const ROUNDS: usize = 5;
const REPLICAS: u32 = 10;

fn spec(cluster: &Cluster, app: &str, greeting: &str, surge: u32) -> String {
    let text = format!(
        r#"name = "{app}"
[components.web]
source = "{}"
kind = "http"
route = "/{app}"
replicas = {REPLICAS}
limits = {{ memory = "32MiB" }}
env = {{ GREETING = "{greeting}" }}
health = {{ path = "/healthz", interval = "200ms", failure_threshold = 1 }}
rollout = {{ max_surge = {surge}, progress_deadline = "60s" }}
"#,
        wasm_path("hello-http").unwrap().display()
    );
    let path = cluster.dir().join(format!("{app}-{greeting}-{surge}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Applies `file` and returns how long until `app`'s rollout is complete at
/// a revision newer than `after`.
fn apply_and_wait(
    cluster: &Cluster,
    api: SocketAddr,
    app: &str,
    file: &str,
    after: u64,
) -> (Duration, u64) {
    let started = Instant::now();
    cluster.ok(&["apply", file]).unwrap();
    let path = format!("/v1/apps/default/{app}/rollout");
    loop {
        let token = cluster.admin_token().unwrap();
        let reply = http_request_as(api, &token, "GET", &path, Duration::from_secs(5)).unwrap();
        if reply.status == 200 {
            let status: RolloutStatus = serde_json::from_str(&reply.body).unwrap();
            if status.revision > after
                && status
                    .pods
                    .iter()
                    .all(|p| p.state == RolloutState::Complete)
            {
                return (started.elapsed(), status.revision);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{app} never completed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("rollout bench: run with `cargo bench -p shoal-tests --bench rollout`");
        return;
    }
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    let api: SocketAddr = cluster.api().trim_start_matches("http://").parse().unwrap();

    // Warm-up: both hosts compile the component once.
    let warm = spec(&cluster, "warm", "w", 1);
    apply_and_wait(&cluster, api, "warm", &warm, 0);
    cluster.ok(&["delete", "app", "warm"]).unwrap();

    let (mut fresh, mut one, mut all) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let app = format!("roll{round}");
        let (t, rev) = apply_and_wait(&cluster, api, &app, &spec(&cluster, &app, "v1", 1), 0);
        fresh.push(t);
        let (t, rev) = apply_and_wait(&cluster, api, &app, &spec(&cluster, &app, "v2", 1), rev);
        one.push(t);
        let (t, _) = apply_and_wait(
            &cluster,
            api,
            &app,
            &spec(&cluster, &app, "v3", REPLICAS),
            rev,
        );
        all.push(t);
        println!(
            "round {round}: fresh {} | rollout surge 1 {} | rollout surge {REPLICAS} {}",
            ms(fresh[round]),
            ms(one[round]),
            ms(all[round])
        );
        cluster.ok(&["delete", "app", &app]).unwrap();
    }
    let (fresh, one, all) = (median(fresh), median(one), median(all));
    println!("\n{REPLICAS} replicas of hello-http on 2 hosts, median of {ROUNDS} rounds:");
    println!("| | time | per replica | vs starting fresh |");
    println!("| --- | --- | --- | --- |");
    for (what, t) in [
        ("start from nothing (baseline)", fresh),
        ("rollout, max_surge = 1", one),
        (&format!("rollout, max_surge = {REPLICAS}"), all),
    ] {
        println!(
            "| {what} | {} | {} | {:.2}x |",
            ms(t),
            ms(t / REPLICAS),
            t.as_secs_f64() / fresh.as_secs_f64()
        );
    }
}
