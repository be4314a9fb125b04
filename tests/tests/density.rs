//! Density end to end: many idle apps on one host, each with its own
//! route, all from one component. Every route answers through the host's
//! ingress and through another host's, and the host's heartbeats stay
//! under their bound, read off the wire. The suite runs a thousand apps
//! (more than a beat's page, so beats carry changes and snapshots);
//! `SHOAL_DENSITY_APPS=10000` runs the full drill (`--ignored`), and
//! `scripts/bench-density` measures it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use shoal_api::Digest;
use shoal_api::beats::BEAT_PAGE;
use shoal_api::wire::Heartbeat;
use shoal_tests::cluster::Cluster;
use shoal_tests::{control, http_request, wasm_bytes};

/// A beat may not be larger than this (the bound `api::beats` keeps, with
/// room for the host's labels and key).
const BEAT_BOUND: usize = 96 * 1024;

fn apps(default: usize) -> usize {
    std::env::var("SHOAL_DENSITY_APPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn spec(i: usize) -> String {
    format!(
        "name = \"d{i}\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/d{i}\"\nreplicas = 1\nlimits = {{ memory = \"4MiB\", concurrency = 1 }}\n"
    )
}

fn drill(count: usize) {
    let mut cluster = Cluster::start().unwrap();
    let token = cluster.admin_token().unwrap();
    let port = cluster.scheduler_ports()[0];
    let slots = (count + 10).to_string();
    let dense = cluster
        .start_host_with("dense", "", &["--slots", &slots])
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nats = rt.block_on(cluster.nats.admin()).unwrap();
    let mut beats = rt
        .block_on(nats.subscribe(shoal_api::subjects::heartbeat("dense")))
        .unwrap();

    // The first app through the CLI uploads the component; the others
    // name its digest.
    let first = cluster
        .spec("d0.toml", &spec(0).replace("w.wasm", "SOURCE(hello-http)"))
        .unwrap();
    cluster.ok(&["apply", &first]).unwrap();
    let digest = Digest::of(&wasm_bytes("hello-http").unwrap());
    let started = Instant::now();
    for i in 1..count {
        let body =
            json!({ "file": format!("d{i}.toml"), "spec": spec(i), "digests": { "web": digest } });
        let reply = control::post(port, &token, "/v1/apps", &body).unwrap();
        assert_eq!(reply.status, 200, "d{i}: {}", reply.body);
    }
    let applied = started.elapsed();
    let running = cluster
        .wait_until(
            "every app running",
            Duration::from_secs(60 + count as u64 / 20),
            |c| {
                let pods = c.pods()?;
                let ready = pods.iter().filter(|p| p.ready).count();
                eprintln!("{ready} of {count} ready, {} pods", pods.len());
                Ok((ready == count).then_some(ready))
            },
        )
        .unwrap();
    println!(
        "{count} apps applied in {applied:?}, all {running} running after {:?}",
        started.elapsed()
    );

    // The dashboard's pages among every app: how long the scheduler takes
    // to answer each (printed for BENCHMARKS.md, not asserted).
    let cookie = {
        let form = format!("token={token}");
        let api = shoal_tests::control::addr(port);
        let reply = shoal_tests::http_exchange(
            api,
            &api.to_string(),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            "POST",
            "/ui/sign-in",
            form.as_bytes(),
            Duration::from_secs(10),
        )
        .unwrap();
        let set = reply.header("set-cookie").unwrap();
        set.split(';').next().unwrap().to_string()
    };
    let last = format!("/ui/apps/default/d{}", count - 1);
    let pages = [
        ("the overview", "/ui".to_string(), last.clone()),
        (
            "an app's page",
            last.clone(),
            format!("default/d{}/web-0", count - 1),
        ),
        (
            "its revisions",
            format!("{last}/revisions"),
            "Revisions kept".into(),
        ),
        ("the hosts page", "/ui/hosts".into(), "Replicas on".into()),
        (
            "the namespace's page",
            "/ui/namespaces/default".into(),
            last.clone(),
        ),
    ];
    for (what, path, shown) in pages {
        let mut took = Vec::new();
        for _ in 0..5 {
            let api = shoal_tests::control::addr(port);
            let asked = Instant::now();
            let page = shoal_tests::http_request_with(
                api,
                &api.to_string(),
                &[("Cookie", &cookie)],
                "GET",
                &path,
                Duration::from_secs(30),
            )
            .unwrap();
            took.push(asked.elapsed());
            assert_eq!(page.status, 200, "{path}: {page:?}");
            assert!(page.body.contains(&shown), "{shown} not on {path}");
        }
        took.sort();
        println!(
            "{what} among {count} apps: median {:?} to the last byte (of 5)",
            took[2]
        );
    }

    // Every route answers through the dense host's ingress; a sample
    // through another host's, which learns the routes from the route
    // table alone.
    let other = cluster.start_host("other", "").unwrap();
    for i in 0..count {
        let reply =
            http_request(dense, "GET", &format!("/d{i}/x"), Duration::from_secs(10)).unwrap();
        assert_eq!(reply.status, 200, "/d{i}: {reply:?}");
        assert_eq!(
            reply.body,
            format!("Hello from Shoal! You asked for /d{i}/x\n")
        );
    }
    let sample: Vec<usize> = (0..count).step_by((count / 20).max(1)).collect();
    cluster
        .wait_until(
            "the other ingress knows every route",
            Duration::from_secs(20),
            |_| {
                Ok(sample
                    .iter()
                    .all(|i| {
                        http_request(other, "GET", &format!("/d{i}"), Duration::from_secs(10))
                            .is_ok_and(|r| r.status == 200)
                    })
                    .then_some(()))
            },
        )
        .unwrap();

    // Every beat the dense host sent meanwhile was under the bound, and
    // it sent changes and snapshots, not everything every time.
    let mut sizes: BTreeMap<&'static str, (usize, usize)> = BTreeMap::new();
    let mut last_total = 0;
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, beats.next()).await {
            let beat: Heartbeat = serde_json::from_slice(&msg.payload).unwrap();
            assert!(
                beat.replicas.len() <= BEAT_PAGE,
                "{} replicas in a beat",
                beat.replicas.len()
            );
            let (n, largest) = sizes.entry(beat.content.header()).or_default();
            *n += 1;
            *largest = (*largest).max(msg.payload.len());
            last_total = beat.total as usize;
        }
    });
    assert_eq!(
        last_total, count,
        "the replicas the host's last beat counts"
    );
    println!("beats by kind (count, largest bytes): {sizes:?}");
    let largest = sizes.values().map(|(_, l)| *l).max().unwrap();
    assert!(
        largest <= BEAT_BOUND,
        "a beat of {largest} bytes: {sizes:?}"
    );
    assert!(sizes.contains_key("changes"), "{sizes:?}");
    assert!(sizes.contains_key("page"), "{sizes:?}");
}

#[test]
fn a_thousand_idle_apps_on_one_host_all_answer_and_its_beats_stay_bounded() {
    drill(apps(1_000));
}

#[test]
#[ignore]
fn ten_thousand_idle_apps_on_one_host() {
    drill(apps(10_000));
}
