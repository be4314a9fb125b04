//! Canary rollouts end to end, under continuous load through two hosts'
//! ingresses: a version that fails a fifth of its requests is rolled back
//! during its first step, a good one goes through every step with no
//! failed request, each step's observed share is the configured one, and
//! `rollout abort` and `rollout promote` override.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_api::resources::{AppDetail, Event, EventReason, PodInfo, RolloutStatus};
use shoal_tests::cluster::Cluster;
use shoal_tests::{HttpReply, Load};

const LIMIT: Duration = Duration::from_secs(60);

/// The canary's steps, as the spec writes them and as shares.
const STEPS: [(&str, f64); 3] = [("5%", 0.05), ("25%", 0.25), ("50%", 0.50)];

/// A spec of hello-http saying `greeting`, failing `fail_percent` of its
/// requests, rolled out by canary with steps of `interval`.
fn spec(cluster: &Cluster, greeting: &str, fail_percent: u32, interval: &str) -> String {
    let steps: Vec<String> = STEPS.iter().map(|(s, _)| format!("{s:?}")).collect();
    cluster
        .spec(
            &format!("web-{greeting}.toml"),
            &format!(
                r#"name = "web"

[components.web]
source = "SOURCE(hello-http)"
kind = "http"
route = "/"
replicas = 2
env = {{ GREETING = "{greeting}", FAIL_PERCENT = "{fail_percent}" }}
health = {{ path = "/healthz", interval = "200ms", failure_threshold = 1 }}
rollout = {{ strategy = "canary", steps = [{}], step_interval = "{interval}", analysis = {{ max_error_rate = "1%", max_p99 = "500ms", min_requests = 100 }} }}
"#,
                steps.join(", ")
            ),
        )
        .unwrap()
}

fn describe(cluster: &Cluster) -> AppDetail {
    serde_json::from_str(
        &cluster
            .ok(&["describe", "app", "web", "-o", "json"])
            .unwrap(),
    )
    .unwrap()
}

fn events(cluster: &Cluster, reason: EventReason) -> Vec<Event> {
    describe(cluster)
        .events
        .into_iter()
        .filter(|e| e.reason == reason)
        .collect()
}

/// Waits for an event of `reason` after `since_ms`.
fn wait_event(cluster: &Cluster, reason: EventReason, since_ms: u64) -> Event {
    cluster
        .wait_until(&format!("a {reason} event"), LIMIT, |c| {
            Ok(events(c, reason).into_iter().find(|e| e.at_ms >= since_ms))
        })
        .unwrap()
}

fn pods(cluster: &Cluster) -> Vec<PodInfo> {
    cluster
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.id.app.as_str() == "web")
        .collect()
}

/// Waits until the app runs its two replicas at one generation, all
/// ready, and no canary.
fn wait_settled(cluster: &Cluster) {
    cluster
        .wait_until("two ready replicas and no canary", LIMIT, |c| {
            let pods = pods(c);
            let generations: std::collections::BTreeSet<u64> =
                pods.iter().map(|p| p.revision).collect();
            Ok((pods.len() == 2
                && generations.len() == 1
                && pods.iter().all(|p| p.ready && !p.id.is_canary()))
            .then_some(()))
        })
        .unwrap();
}

/// The greeting an answer carries.
fn greeting(r: &HttpReply) -> &str {
    r.body.split('!').next().unwrap_or("")
}

/// Continuous load: 4 clients, 800 requests a second in all (each a
/// connection of its own: unpaced, a run of this length would use up the
/// machine's ports for new connections).
fn load(ingresses: &[SocketAddr]) -> Load {
    Load::start_paced(ingresses.to_vec(), "/r?n={n}", 4, Some(800))
}

/// "E of R requests failed" in `message`, first found.
fn failed_figures(message: &str) -> (u64, u64) {
    let at = message
        .find(" requests failed")
        .expect("figures in the message");
    let words: Vec<&str> = message[..at].rsplit(' ').take(3).collect();
    (words[2].parse().unwrap(), words[0].parse().unwrap())
}

#[test]
fn canaries_roll_back_on_failures_go_through_their_steps_and_can_be_overridden() {
    let mut cluster = Cluster::start().unwrap();
    let ingresses = vec![
        cluster.start_host("h1", "").unwrap(),
        cluster.start_host("h2", "").unwrap(),
    ];
    cluster
        .ok(&["apply", "--wait", &spec(&cluster, "v1", 0, "4s")])
        .unwrap();
    wait_settled(&cluster);

    // A version failing a fifth of its requests: rolled back during the
    // first step, having failed at most its share of them.
    // A dry run says what the canary does: one replica more, none replaced.
    let bad = spec(&cluster, "bad", 20, "4s");
    let dry = cluster.ok(&["apply", "--dry-run", &bad]).unwrap();
    assert!(dry.contains("would create default/web/web-canary"), "{dry}");
    assert!(!dry.contains("replace"), "{dry}");
    let began = shoal_api::wire::now_ms();
    let running = load(&ingresses);
    std::thread::sleep(Duration::from_millis(500));
    cluster.ok(&["apply", &bad]).unwrap();
    let failed = wait_event(&cluster, EventReason::CanaryFailed, began);
    wait_event(&cluster, EventReason::RolledBack, began);
    wait_settled(&cluster);
    // More load after: the total is the whole run's.
    std::thread::sleep(Duration::from_secs(3));
    let seen = running.finish_timed();
    let total = seen.len() as f64;
    let failures: Vec<&HttpReply> = seen
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.status != 200)
        .collect();
    assert!(
        failures
            .iter()
            .all(|r| r.status == 500 && r.body.contains("failing on purpose")),
        "only the canary fails: {:?}",
        failures
            .iter()
            .filter(|r| r.status != 500)
            .take(3)
            .collect::<Vec<_>>()
    );
    assert!(
        failed.message.contains("step 1 of 3 (5%)"),
        "{}",
        failed.message
    );
    let (event_errors, event_requests) = failed_figures(&failed.message);
    let canary_answers = seen.iter().filter(|(_, r)| greeting(r) == "bad").count() + failures.len();
    println!(
        "bad canary: {} of {total} requests failed; the event counted {event_errors} of {event_requests}; the canary answered {canary_answers}",
        failures.len()
    );
    assert!(
        failures.len() as f64 <= 0.05 * 0.20 * total,
        "{} failures in {total} requests: more than 5% x 20%",
        failures.len()
    );
    assert!(event_errors >= 2, "{}", failed.message);
    // The event counts what hosts had reported when the step failed; the
    // test also sees what the canary answered in the moment after, before
    // every ingress stopped sending it requests.
    assert!(
        event_errors as usize <= failures.len() && failures.len() <= event_errors as usize + 10,
        "the event says {event_errors} failed; the test saw {}",
        failures.len()
    );
    assert!(
        event_requests as usize <= canary_answers,
        "the event counts {event_requests} canary requests; the test saw {canary_answers}"
    );
    let settled = seen.iter().filter(|(at, _)| *at > failed.at_ms + 2_000);
    assert!(
        settled.clone().all(|(_, r)| greeting(r) == "v1"),
        "after the rollback only v1 answers"
    );

    // A good version: through every step to every replica, no request
    // failing, each step's share as configured.
    let began = shoal_api::wire::now_ms();
    let running = load(&ingresses);
    std::thread::sleep(Duration::from_millis(500));
    let out = cluster
        .ok(&[
            "apply",
            "--wait",
            "--timeout",
            "120",
            &spec(&cluster, "good", 0, "6s"),
        ])
        .unwrap();
    assert!(out.contains("is ready"), "{out}");
    wait_settled(&cluster);
    let seen = running.finish_timed();
    let failures: Vec<&HttpReply> = seen
        .iter()
        .map(|(_, r)| r)
        .filter(|r| r.status != 200)
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        seen.len(),
        &failures[..failures.len().min(3)]
    );
    let mut boundaries: Vec<u64> = events(&cluster, EventReason::CanaryAdvanced)
        .iter()
        .filter(|e| e.at_ms >= began)
        .map(|e| e.at_ms)
        .collect();
    let promoted = wait_event(&cluster, EventReason::CanaryPromoted, began);
    assert_eq!(boundaries.len(), 2, "two steps passed before the last");
    let started = events(&cluster, EventReason::RolloutStarted)
        .into_iter()
        .find(|e| e.at_ms >= began && e.message.contains("canary"))
        .expect("the canary's start");
    boundaries.insert(0, started.at_ms);
    boundaries.push(promoted.at_ms);
    let mut shares = BTreeMap::new();
    for (i, (name, share)) in STEPS.iter().enumerate() {
        // A second's margin at each end: the route table reaches every
        // ingress a moment after the step changes.
        let window = seen.iter().filter(|(at, r)| {
            *at > boundaries[i] + 1_000
                && *at + 1_000 < boundaries[i + 1]
                && ["v1", "good"].contains(&greeting(r))
        });
        let (n, good) = window.fold((0, 0), |(n, good), (_, r)| {
            (n + 1, good + usize::from(greeting(r) == "good"))
        });
        let observed = good as f64 / n as f64;
        println!(
            "step {name}: {good} of {n} requests to the canary ({:.1}%)",
            observed * 100.0
        );
        assert!(n >= 2000, "step {name} saw only {n} requests");
        assert!(
            (observed - share).abs() <= 0.03,
            "step {name}: {:.1}% went to the canary",
            observed * 100.0
        );
        shares.insert(*name, observed);
    }
    assert!(
        promoted.message.contains("passed step 3 of 3 (50%)"),
        "{}",
        promoted.message
    );
    assert!(pods(&cluster).iter().all(|p| !p.id.is_canary()));

    // `rollout abort` and `rollout promote` override a canary's steps.
    cluster
        .ok(&["apply", &spec(&cluster, "aborted", 0, "1h")])
        .unwrap();
    let status_with_canary = cluster
        .wait_until("the canary ready", LIMIT, |c| {
            let status: RolloutStatus =
                serde_json::from_str(&c.ok(&["rollout", "status", "web", "-o", "json"])?)?;
            Ok(status
                .pods
                .iter()
                .any(|p| p.canary.as_ref().is_some_and(|c| c.ready))
                .then_some(status))
        })
        .unwrap();
    let canary = status_with_canary.pods[0].canary.clone().unwrap();
    assert_eq!((canary.step, canary.steps), (1, 3));
    // Who may only look cannot override.
    let viewer = cluster.token("reader", "view", Some("default")).unwrap();
    for verb in ["abort", "promote"] {
        let refused = cluster
            .shoal_as(&viewer, &["rollout", verb, "web"])
            .unwrap();
        assert_ne!(refused.code, Some(0), "{verb}");
        assert!(refused.stderr.contains("rollout"), "{verb}: {refused:?}");
    }
    let table = cluster.ok(&["rollout", "status", "web"]).unwrap();
    assert!(table.contains("canary step 1/3 taking 5%"), "{table}");
    let out = cluster.ok(&["rollout", "abort", "web"]).unwrap();
    assert!(out.contains("canary aborted"), "{out}");
    wait_settled(&cluster);
    let answers = Load::start(ingresses.clone(), "/after-abort-{n}", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(answers.finish().iter().all(|r| greeting(r) == "good"));
    let refused = cluster.shoal(&["rollout", "abort", "web"]).unwrap();
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("no canary or shadow runs"),
        "{refused:?}"
    );

    cluster
        .ok(&["apply", &spec(&cluster, "promoted", 0, "1h")])
        .unwrap();
    cluster
        .wait_until("the second canary", LIMIT, |c| {
            Ok(pods(c)
                .iter()
                .any(|p| p.id.is_canary() && p.ready)
                .then_some(()))
        })
        .unwrap();
    let out = cluster.ok(&["rollout", "promote", "web"]).unwrap();
    assert!(out.contains("canary promoted"), "{out}");
    cluster
        .ok(&["rollout", "status", "web", "--wait", "--timeout", "60"])
        .unwrap();
    wait_settled(&cluster);
    let answers = Load::start(ingresses, "/after-promote-{n}", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert!(answers.finish().iter().all(|r| greeting(r) == "promoted"));
}
