//! Shadow rollouts end to end: copies of requests (through two hosts'
//! ingresses) and of invocations (through the API) reach a new revision
//! whose answers are compared and thrown away. Callers only ever see the
//! stable revision, the report counts the differences exactly, and the
//! shadow's side effects are held back: its publish is refused and its
//! key-value write lands in a scratch bucket, not the app's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use shoal_api::resources::{AppDetail, EventReason, RolloutStatus, ShadowReport, ShadowStatus};
use shoal_api::{Name, subjects};
use shoal_tests::cluster::Cluster;
use shoal_tests::{HttpReply, http_request};

const LIMIT: Duration = Duration::from_secs(60);

/// hello-http saying `greeting`, failing `fail_percent` of its requests,
/// shadowed for `duration`.
fn web(cluster: &Cluster, file: &str, fail_percent: u32, duration: &str) -> String {
    cluster
        .spec(
            file,
            &format!(
                r#"name = "web"

[components.web]
source = "SOURCE(hello-http)"
kind = "http"
route = "/"
replicas = 2
env = {{ GREETING = "v1", FAIL_PERCENT = "{fail_percent}" }}
health = {{ path = "/healthz", interval = "200ms", failure_threshold = 1 }}
rollout = {{ strategy = "shadow", share = "100%", duration = "{duration}" }}
"#
            ),
        )
        .unwrap()
}

/// The toolbox worker in `mode`, shadowed.
fn tools(cluster: &Cluster, mode: &str) -> String {
    cluster
        .spec(
            &format!("tools-{mode}.toml"),
            &format!(
                r#"name = "tools"

[components.toolbox]
source = "SOURCE(toolbox)"
kind = "worker"
env = {{ MODE = "{mode}" }}
messaging = {{ publish = ["tools.>"] }}
keyvalue = true
rollout = {{ strategy = "shadow", share = "100%", duration = "1h" }}
"#
            ),
        )
        .unwrap()
}

fn status(cluster: &Cluster, app: &str) -> RolloutStatus {
    serde_json::from_str(
        &cluster
            .ok(&["rollout", "status", app, "-o", "json"])
            .unwrap(),
    )
    .unwrap()
}

/// Waits until `app`'s shadow is ready and copying, then a moment more
/// for every ingress to hear of it.
fn wait_copying(cluster: &Cluster, app: &str) -> ShadowStatus {
    let shadow = cluster
        .wait_until(&format!("{app}'s shadow ready"), LIMIT, |c| {
            Ok(status(c, app).pods[0]
                .shadow
                .clone()
                .filter(|s| s.ready && !s.finished))
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    shadow
}

/// Waits until `app`'s shadow report has compared `n` answers.
fn wait_compared(cluster: &Cluster, app: &str, n: u64) -> ShadowReport {
    cluster
        .wait_until(&format!("{n} answers compared"), LIMIT, |c| {
            let report = status(c, app).pods[0].shadow.clone().map(|s| s.report);
            Ok(report.filter(|r| r.compared + r.unanswered >= n))
        })
        .unwrap()
}

/// Whether hello-http with `FAIL_PERCENT=20` fails a request for `path`
/// and `query`: the same FNV-1a hash it uses.
fn fails(path: &str, query: &str) -> bool {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.bytes().chain(query.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 100 < 20
}

fn kv_value(cluster: &Cluster, bucket: String, key: &str) -> Option<String> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let store = async_nats::jetstream::new(nats)
            .get_key_value(bucket)
            .await
            .unwrap();
        store
            .get(key)
            .await
            .unwrap()
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    })
}

#[test]
fn shadows_compare_answers_exactly_and_hold_back_side_effects() {
    let mut cluster = Cluster::start().unwrap();
    let ingresses = [
        cluster.start_host("h1", "").unwrap(),
        cluster.start_host("h2", "").unwrap(),
    ];

    // HTTP: a shadow failing a fifth of the paths.
    cluster
        .ok(&["apply", "--wait", &web(&cluster, "web-1.toml", 0, "1h")])
        .unwrap();
    cluster
        .ok(&["apply", &web(&cluster, "web-2.toml", 20, "1h")])
        .unwrap();
    let shadow = wait_copying(&cluster, "web");
    assert_eq!(shadow.share.to_string(), "100%");
    let before = status(&cluster, "web").pods[0]
        .shadow
        .clone()
        .unwrap()
        .report;
    let n = 300u64;
    let mut expected = 0;
    for i in 0..n {
        let query = format!("n={i}");
        expected += u64::from(fails("/s", &query));
        let r: HttpReply = http_request(
            ingresses[i as usize % 2],
            "GET",
            &format!("/s?{query}"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.status, 200, "callers only see the stable replicas: {r:?}");
        assert!(r.body.starts_with("v1!"), "{r:?}");
    }
    let report = wait_compared(&cluster, "web", before.compared + n);
    println!("http shadow: {report}; {expected} of {n} paths fail in the shadow");
    assert_eq!(report.compared - before.compared, n, "{report:?}");
    assert_eq!(report.unanswered, 0, "{report:?}");
    assert_eq!(
        report.status_differed - before.status_differed,
        expected,
        "{report:?}"
    );
    assert_eq!(report.body_differed, 0, "{report:?}");
    let example = report.examples.first().expect("an example");
    assert_eq!((example.stable_status, example.shadow_status), (200, 500));
    assert!(
        example.shadow_body.contains("failing on purpose"),
        "{example:?}"
    );
    let table = cluster.ok(&["rollout", "status", "web"]).unwrap();
    assert!(table.contains("shadow gen 2 beside gen 1"), "{table}");

    // `rollout abort` ends it: the shadow replica stops.
    cluster.ok(&["rollout", "abort", "web"]).unwrap();
    cluster
        .wait_until("the shadow gone", LIMIT, |c| {
            let pods = c.pods()?;
            Ok((!pods.iter().any(|p| p.id.is_shadow())
                && status(c, "web").pods[0].shadow.is_none())
            .then_some(()))
        })
        .unwrap();

    // A worker through the API: a publish refused, a key-value write kept
    // apart, an answer that differs.
    cluster
        .ok(&["apply", "--wait", &tools(&cluster, "stable")])
        .unwrap();
    cluster.ok(&["apply", &tools(&cluster, "shadow")]).unwrap();
    wait_copying(&cluster, "tools");
    let (published, subscribed) = std::sync::mpsc::channel();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let nats = runtime.block_on(cluster.nats.admin()).unwrap();
    let subject = subjects::user_subject(&Name::new("default").unwrap(), "tools.events");
    let mut sub = runtime.block_on(nats.subscribe(subject)).unwrap();
    runtime.block_on(nats.flush()).unwrap();
    let counter = runtime.spawn(async move {
        while let Some(msg) = sub.next().await {
            let _ = published.send(String::from_utf8_lossy(&msg.payload).into_owned());
        }
    });
    for data in [
        "kv-set-env note MODE",
        "publish tools.events hi",
        "env MODE",
    ] {
        let out = cluster
            .ok(&["invoke", "tools/toolbox", "--data", data])
            .unwrap();
        assert!(
            !out.contains("shadow"),
            "the caller gets the stable answer: {out}"
        );
    }
    let report = wait_compared(&cluster, "tools", 3);
    println!("worker shadow: {report}");
    assert_eq!(
        (
            report.compared,
            report.status_differed,
            report.body_differed
        ),
        (3, 1, 1),
        "{report:?}"
    );
    let refused = report
        .examples
        .iter()
        .find(|d| d.request.starts_with("publish"))
        .expect("the publish's difference");
    assert!(
        refused.shadow_body.contains("runs as a shadow"),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let messages: Vec<String> = subscribed.try_iter().collect();
    assert_eq!(
        messages,
        ["hi"],
        "only the stable replica's publish went out"
    );
    counter.abort();
    let (ns, app) = (Name::new("default").unwrap(), Name::new("tools").unwrap());
    assert_eq!(
        kv_value(&cluster, subjects::app_bucket(&ns, &app), "note").as_deref(),
        Some("stable")
    );
    assert_eq!(
        kv_value(&cluster, subjects::shadow_bucket(&ns, &app), "note").as_deref(),
        Some("shadow")
    );

    // Promoted, the shadow's revision rolls out.
    cluster.ok(&["rollout", "promote", "tools"]).unwrap();
    cluster
        .ok(&["rollout", "status", "tools", "--wait", "--timeout", "60"])
        .unwrap();
    cluster
        .wait_until("the promoted revision answers", LIMIT, |c| {
            let out = c.ok(&["invoke", "tools/toolbox", "--data", "env MODE"])?;
            Ok(out.contains("shadow").then_some(()))
        })
        .unwrap();

    // A short shadow finishes by itself, with its report in an event.
    cluster
        .ok(&["apply", "--wait", &web(&cluster, "web-3.toml", 0, "1h")])
        .unwrap();
    cluster
        .ok(&["apply", &web(&cluster, "web-4.toml", 20, "3s")])
        .unwrap();
    let finished = cluster
        .wait_until("the shadow finished", LIMIT, |c| {
            let detail: AppDetail =
                serde_json::from_str(&c.ok(&["describe", "app", "web", "-o", "json"])?)?;
            Ok(detail
                .events
                .into_iter()
                .find(|e| e.reason == EventReason::ShadowFinished))
        })
        .unwrap();
    assert!(
        finished.message.contains("answers compared")
            && finished.message.contains("rollout promote"),
        "{}",
        finished.message
    );
    let shadow = status(&cluster, "web").pods[0].shadow.clone().unwrap();
    assert!(shadow.finished, "{shadow:?}");
}
