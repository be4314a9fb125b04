//! A replica's life end to end: health checks take it out of rotation and
//! restart it, restart policies back off, and rolling updates replace
//! replicas under load without a failed request, rolling back a version
//! that never gets ready.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_api::resources::{AppDetail, Event, EventReason, PodInfo, PodState, RevisionInfo};
use shoal_api::wire::ReplicaState;
use shoal_api::{Name, subjects};
use shoal_tests::cluster::Cluster;
use shoal_tests::{Load, http_request, repo_root, wasm_path};

const LIMIT: Duration = Duration::from_secs(30);

/// Sets (`Some`) or deletes (`None`) `key` in the app's key-value bucket,
/// as an operator would from outside.
fn kv(cluster: &Cluster, app: &str, key: &str, value: Option<&str>) {
    let bucket = subjects::app_bucket(&Name::new("default").unwrap(), &Name::new(app).unwrap());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let store = async_nats::jetstream::new(nats)
            .get_key_value(bucket)
            .await
            .unwrap();
        match value {
            Some(v) => {
                store.put(key, v.to_string().into()).await.unwrap();
            }
            None => store.delete(key).await.unwrap(),
        }
    });
}

fn describe(cluster: &Cluster, app: &str) -> AppDetail {
    let out = cluster.ok(&["describe", "app", app, "-o", "json"]).unwrap();
    serde_json::from_str(&out).unwrap()
}

fn events(cluster: &Cluster, app: &str, reason: EventReason) -> Vec<Event> {
    describe(cluster, app)
        .events
        .into_iter()
        .filter(|e| e.reason == reason)
        .collect()
}

fn pods_of(cluster: &Cluster, app: &str) -> Vec<PodInfo> {
    cluster
        .pods()
        .unwrap()
        .into_iter()
        .filter(|p| p.id.app.as_str() == app)
        .collect()
}

fn running_and_ready(p: &PodInfo) -> bool {
    p.ready && matches!(p.state, PodState::Host(ReplicaState::Running))
}

/// Waits until every replica of `app` is running and ready.
fn wait_all_ready(cluster: &Cluster, app: &str, what: &str) {
    cluster
        .wait_until(what, LIMIT, |c| {
            Ok(pods_of(c, app).iter().all(running_and_ready).then_some(()))
        })
        .unwrap();
}

/// Which replicas answered `n` requests for `path`.
fn served_by(addr: SocketAddr, path: &str, n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|_| {
            let r = http_request(addr, "GET", path, Duration::from_secs(5)).unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            r.body.trim().trim_start_matches("served by ").to_string()
        })
        .collect()
}

#[test]
fn readiness_takes_a_replica_out_of_rotation_and_liveness_restarts_it() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    let a2 = cluster.start_host("h2", "").unwrap();
    let spec = repo_root().join("examples/health-probe/app.toml");
    cluster.ok(&["apply", &spec.display().to_string()]).unwrap();
    let pods = cluster
        .wait_until("both replicas ready", LIMIT, |c| {
            let pods = pods_of(c, "probe");
            Ok((pods.len() == 2 && pods.iter().all(running_and_ready)).then_some(pods))
        })
        .unwrap();
    // One replica per host; each ingress prefers its local one.
    let on = |host: &str| {
        let p = pods
            .iter()
            .find(|p| p.host.as_ref().is_some_and(|h| h.as_str() == host))
            .unwrap();
        (p.id.index, p.id.to_string())
    };
    let ((i1, r1), (i2, r2)) = (on("h1"), on("h2"));
    let only = |r: &str| BTreeSet::from([r.to_string()]);
    assert_eq!(served_by(a1, "/probe", 10), only(&r1));
    assert_eq!(served_by(a2, "/probe", 10), only(&r2));

    // Readiness flips to false: out of rotation, not restarted. h1's
    // ingress forwards to h2's replica, the only one left in the group.
    kv(&cluster, "probe", &format!("unready/{r1}"), Some("1"));
    cluster
        .wait_until("h1's replica out of rotation", LIMIT, |c| {
            Ok(pods_of(c, "probe")
                .iter()
                .any(|p| {
                    p.id.index == i1
                        && !p.ready
                        && matches!(p.state, PodState::Host(ReplicaState::Running))
                })
                .then_some(()))
        })
        .unwrap();
    assert_eq!(
        served_by(a1, "/probe", 20),
        only(&r2),
        "a replica that is not ready gets no requests"
    );
    assert_eq!(served_by(a2, "/probe", 10), only(&r2));
    let table = cluster.ok(&["get", "pods"]).unwrap();
    let line = table.lines().find(|l| l.contains(&r1)).unwrap();
    assert_eq!(line.split_whitespace().nth(3), Some("no"), "{table}");
    assert!(!events(&cluster, "probe", EventReason::Unready).is_empty());
    // ... and back when it flips back.
    kv(&cluster, "probe", &format!("unready/{r1}"), None);
    wait_all_ready(&cluster, "probe", "h1's replica back in rotation");
    assert_eq!(served_by(a1, "/probe", 10), only(&r1));
    assert!(pods_of(&cluster, "probe").iter().all(|p| p.restarts == 0));

    // Liveness fails: the replica is restarted, and the restart counted.
    kv(&cluster, "probe", &format!("dead/{r2}"), Some("1"));
    let restarted = cluster
        .wait_until("h2's replica restarted", LIMIT, |c| {
            Ok(pods_of(c, "probe")
                .into_iter()
                .find(|p| p.id.index == i2 && p.restarts >= 1))
        })
        .unwrap();
    assert!(
        restarted
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("liveness failed")),
        "{restarted:?}"
    );
    kv(&cluster, "probe", &format!("dead/{r2}"), None);
    wait_all_ready(&cluster, "probe", "h2's replica serving again");
    let pods = pods_of(&cluster, "probe");
    let again = pods.iter().find(|p| p.id.index == i2).unwrap();
    assert!(again.restarts >= 1, "{again:?}");
    assert_eq!(
        again.host.as_ref().map(|h| h.as_str()),
        Some("h2"),
        "restarted in place"
    );
    assert_eq!(pods.iter().find(|p| p.id.index == i1).unwrap().restarts, 0);
    let table = cluster.ok(&["get", "pods"]).unwrap();
    let line = table.lines().find(|l| l.contains(&r2)).unwrap();
    assert_eq!(
        line.split_whitespace().nth(4),
        Some(again.restarts.to_string().as_str()),
        "the RESTARTS column shows the count: {table}"
    );
    let restarts = events(&cluster, "probe", EventReason::Restarted);
    assert!(
        restarts
            .iter()
            .any(|e| e.message.contains(&r2) && e.message.contains("liveness failed")),
        "{restarts:?}"
    );
    assert_eq!(served_by(a2, "/probe", 10), only(&r2));
}

/// Writes a hello-http app spec: version `greeting`, ready or not.
fn web_spec(cluster: &Cluster, greeting: &str, ready: bool, deadline: &str) -> String {
    let text = format!(
        r#"name = "web"

[components.web]
source = "{}"
kind = "http"
route = "/"
replicas = 2
env = {{ GREETING = "{greeting}", READY = "{ready}" }}
health = {{ path = "/healthz", interval = "200ms", failure_threshold = 1 }}
rollout = {{ max_surge = 1, max_unavailable = 0, progress_deadline = "{deadline}" }}
"#,
        wasm_path("hello-http").unwrap().display()
    );
    let path = cluster.dir().join(format!("web-{greeting}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Continuous load through `ingresses`.
fn load(ingresses: Vec<SocketAddr>) -> Load {
    Load::start(ingresses, "/load", 1)
}

/// Each answer's status and greeting.
fn finish(load: Load) -> Vec<(u16, String)> {
    load.finish()
        .into_iter()
        .map(|r| (r.status, r.body.split('!').next().unwrap_or("").to_string()))
        .collect()
}

fn assert_no_failures(seen: &[(u16, String)]) {
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
}

fn greetings(addrs: &[SocketAddr], n: usize) -> BTreeSet<String> {
    (0..n)
        .map(|i| {
            let r =
                http_request(addrs[i % addrs.len()], "GET", "/x", Duration::from_secs(5)).unwrap();
            assert_eq!(r.status, 200, "{r:?}");
            r.body.split('!').next().unwrap_or("").to_string()
        })
        .collect()
}

fn wait_rolled_out(cluster: &Cluster, generation_pods: usize) {
    cluster
        .ok(&["rollout", "status", "web", "--wait", "--timeout", "60"])
        .unwrap();
    cluster
        .wait_until("old copies gone", LIMIT, |c| {
            let pods = pods_of(c, "web");
            Ok((pods.len() == generation_pods && pods.iter().all(running_and_ready)).then_some(()))
        })
        .unwrap();
}

#[test]
fn rolling_updates_fail_no_request_and_undo_goes_back() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    let a2 = cluster.start_host("h2", "").unwrap();
    let ingresses = vec![a1, a2];
    cluster
        .ok(&["apply", &web_spec(&cluster, "v1", true, "30s")])
        .unwrap();
    wait_rolled_out(&cluster, 2);
    assert_eq!(
        greetings(&ingresses, 10),
        BTreeSet::from(["v1".to_string()])
    );

    // v1 -> v2 under continuous load.
    let running = load(ingresses.clone());
    std::thread::sleep(Duration::from_millis(300));
    cluster
        .ok(&["apply", &web_spec(&cluster, "v2", true, "30s")])
        .unwrap();
    wait_rolled_out(&cluster, 2);
    let seen = finish(running);
    assert_no_failures(&seen);
    let versions: BTreeSet<&str> = seen.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(
        versions,
        BTreeSet::from(["v1", "v2"]),
        "both answered during the rollout"
    );
    assert_eq!(
        greetings(&ingresses, 20),
        BTreeSet::from(["v2".to_string()])
    );
    assert!(!events(&cluster, "web", EventReason::RolloutComplete).is_empty());

    // `rollout undo` goes back to v1 the same way.
    let running = load(ingresses.clone());
    std::thread::sleep(Duration::from_millis(300));
    let out = cluster.ok(&["rollout", "undo", "web"]).unwrap();
    assert!(out.contains("rolled back"), "{out}");
    wait_rolled_out(&cluster, 2);
    let seen = finish(running);
    assert_no_failures(&seen);
    assert_eq!(
        greetings(&ingresses, 20),
        BTreeSet::from(["v1".to_string()])
    );

    // The history tells the story, and --to picks a revision.
    let history: Vec<RevisionInfo> = serde_json::from_str(
        &cluster
            .ok(&["rollout", "history", "web", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    assert!(
        history[2].current && history[2].cause.contains("rollout undo"),
        "{history:?}"
    );
    assert_eq!(
        history[2].generations, history[0].generations,
        "v1's generation again"
    );
    let v2 = history[1].revision.to_string();
    cluster
        .ok(&["rollout", "undo", "web", "--to", &v2])
        .unwrap();
    wait_rolled_out(&cluster, 2);
    assert_eq!(
        greetings(&ingresses, 20),
        BTreeSet::from(["v2".to_string()])
    );
    let table = cluster.ok(&["rollout", "history", "web"]).unwrap();
    assert!(
        table.contains("(current)") && table.contains("applied from"),
        "{table}"
    );
}

#[test]
fn a_version_that_never_gets_ready_is_rolled_back_at_its_deadline() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    cluster
        .ok(&["apply", &web_spec(&cluster, "v2", true, "2s")])
        .unwrap();
    wait_rolled_out(&cluster, 2);
    let before = describe(&cluster, "web").summary.revision;

    let running = load(vec![a1]);
    cluster
        .ok(&["apply", &web_spec(&cluster, "v3", false, "2s")])
        .unwrap();
    let rolled_back = cluster
        .wait_until("the automatic rollback", LIMIT, |c| {
            Ok(events(c, "web", EventReason::RolledBack).into_iter().next())
        })
        .unwrap();
    assert!(
        rolled_back.message.contains("automatic rollback")
            && rolled_back.message.contains("no progress"),
        "{rolled_back:?}"
    );
    wait_rolled_out(&cluster, 2);
    let seen = finish(running);
    assert_no_failures(&seen);
    assert!(
        seen.iter().all(|(_, v)| v == "v2"),
        "v3 never served: {:?}",
        seen.iter().find(|(_, v)| v != "v2")
    );
    let detail = describe(&cluster, "web");
    assert_eq!(detail.summary.revision, before + 2, "v3, then the rollback");
    assert_eq!(
        detail.spec.components.values().next().unwrap().env["GREETING"],
        "v2"
    );
    // `rollout status --wait` on a rollout that gets rolled back says so.
    cluster
        .ok(&["apply", &web_spec(&cluster, "v3", false, "2s")])
        .unwrap();
    let out = cluster
        .shoal(&["rollout", "status", "web", "--wait", "--timeout", "60"])
        .unwrap();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("rolled back"), "{}", out.stderr);
}

#[test]
fn a_crash_looping_job_backs_off_with_growing_intervals() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = repo_root().join("examples/crash-job/app.toml");
    cluster.ok(&["apply", &spec.display().to_string()]).unwrap();
    let restarts = cluster
        .wait_until("five restarts", LIMIT, |c| {
            let restarts = events(c, "crashy", EventReason::Restarted);
            Ok((restarts.len() >= 5).then_some(restarts))
        })
        .unwrap();
    let gaps: Vec<u64> = restarts
        .windows(2)
        .map(|w| w[1].at_ms - w[0].at_ms)
        .collect();
    for pair in gaps.windows(2) {
        assert!(
            pair[1] as f64 > pair[0] as f64 * 1.5,
            "each wait longer than the last: {gaps:?}"
        );
    }
    assert!(
        restarts[0].message.contains("exited with status 1"),
        "{restarts:?}"
    );
    let pods = pods_of(&cluster, "crashy");
    assert_eq!(pods.len(), 1, "restarted in place, not re-placed: {pods:?}");
    assert!(
        matches!(
            pods[0].state,
            PodState::Host(ReplicaState::CrashLoop { .. })
        ),
        "{pods:?}"
    );
    assert!(pods[0].restarts >= 5);
    let table = cluster.ok(&["get", "pods"]).unwrap();
    assert!(table.contains("crash_loop"), "{table}");
    let detail = cluster.ok(&["describe", "app", "crashy"]).unwrap();
    assert!(
        detail.contains("crash_loop")
            && detail.contains("last error: the job exited with status 1"),
        "{detail}"
    );
    assert!(!events(&cluster, "crashy", EventReason::CrashLoop).is_empty());

    // With `restart = "never"` the same job stops for good and says why.
    let never = std::fs::read_to_string(&spec)
        .unwrap()
        .replace("name = \"crashy\"", "name = \"once\"")
        .replace("restart = \"on-failure\"", "restart = \"never\"")
        .replace(
            "../../target",
            &repo_root().join("target").display().to_string(),
        );
    let path = cluster.dir().join("once.toml");
    std::fs::write(&path, never).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    let exited = cluster
        .wait_until("the job exited", LIMIT, |c| {
            Ok(pods_of(c, "once")
                .into_iter()
                .find(|p| matches!(p.state, PodState::Host(ReplicaState::Exited { .. }))))
        })
        .unwrap();
    assert_eq!(exited.restarts, 0, "{exited:?}");
    std::thread::sleep(Duration::from_secs(1));
    let still = pods_of(&cluster, "once");
    assert_eq!(still.len(), 1);
    assert!(
        matches!(&still[0].state, PodState::Host(ReplicaState::Exited { reason }) if reason.contains("status 1")),
        "neither restarted nor placed again: {still:?}"
    );
}

#[test]
fn a_pod_is_ready_restarted_and_taken_out_of_its_queues_as_one() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let text = format!(
        r#"name = "duo"

[components.web]
source = "{}"
kind = "http"
route = "/duo"
pod = "both"
keyvalue = true
health = {{ interval = "200ms", failure_threshold = 2 }}

[components.echo]
source = "{}"
kind = "worker"
pod = "both"
"#,
        wasm_path("health-probe").unwrap().display(),
        wasm_path("echo-worker").unwrap().display()
    );
    let path = cluster.dir().join("duo.toml");
    std::fs::write(&path, text).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    let replica = "default/duo/both-0";
    wait_all_ready(&cluster, "duo", "the pod ready");
    let pods = pods_of(&cluster, "duo");
    assert_eq!(pods.len(), 1);
    assert_eq!(
        pods[0].components.len(),
        2,
        "one replica runs both components"
    );
    assert_eq!(
        cluster.ok(&["invoke", "duo/echo", "--data", "hi"]).unwrap(),
        "hi\n"
    );

    // The web component's readiness is the pod's: the worker leaves its
    // queue group too.
    kv(&cluster, "duo", &format!("unready/{replica}"), Some("1"));
    cluster
        .wait_until("the pod out of rotation", LIMIT, |c| {
            Ok(pods_of(c, "duo").iter().all(|p| !p.ready).then_some(()))
        })
        .unwrap();
    let refused = cluster
        .shoal(&["invoke", "duo/echo", "--data", "hi"])
        .unwrap();
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("no replica"), "{}", refused.stderr);
    kv(&cluster, "duo", &format!("unready/{replica}"), None);
    wait_all_ready(&cluster, "duo", "the pod back");
    assert_eq!(
        cluster
            .ok(&["invoke", "duo/echo", "--data", "back"])
            .unwrap(),
        "back\n"
    );

    // One component failing liveness restarts the whole pod.
    kv(&cluster, "duo", &format!("dead/{replica}"), Some("1"));
    cluster
        .wait_until("the pod restarted", LIMIT, |c| {
            Ok(pods_of(c, "duo")
                .iter()
                .any(|p| p.restarts >= 1)
                .then_some(()))
        })
        .unwrap();
    kv(&cluster, "duo", &format!("dead/{replica}"), None);
    wait_all_ready(&cluster, "duo", "the pod serving again");
    assert_eq!(
        cluster
            .ok(&["invoke", "duo/echo", "--data", "again"])
            .unwrap(),
        "again\n"
    );
    let restarted = events(&cluster, "duo", EventReason::Restarted);
    assert!(
        restarted
            .iter()
            .any(|e| e.message.contains("web: liveness failed")),
        "the pod restarted for its web component: {restarted:?}"
    );
}

#[test]
fn a_stuck_rollout_survives_a_scheduler_restart_and_is_undone() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    cluster
        .ok(&["apply", &web_spec(&cluster, "v1", true, "120s")])
        .unwrap();
    wait_rolled_out(&cluster, 2);
    let running = load(vec![a1]);
    cluster
        .ok(&["apply", &web_spec(&cluster, "v2", false, "120s")])
        .unwrap();
    cluster
        .wait_until("a v2 copy started beside v1", LIMIT, |c| {
            Ok((pods_of(c, "web").len() == 3).then_some(()))
        })
        .unwrap();

    // The scheduler goes away and comes back mid-rollout: nothing that
    // serves is touched, and the rollout picks up where it was.
    cluster.kill_scheduler();
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_scheduler().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let pods = pods_of(&cluster, "web");
    assert_eq!(pods.len(), 3, "{pods:?}");
    assert_eq!(pods.iter().filter(|p| p.ready).count(), 2, "{pods:?}");
    let status = cluster.ok(&["rollout", "status", "web"]).unwrap();
    assert!(status.contains("progressing"), "{status}");

    let out = cluster.ok(&["rollout", "undo", "web"]).unwrap();
    assert!(out.contains("rolled back"), "{out}");
    wait_rolled_out(&cluster, 2);
    let seen = finish(running);
    assert_no_failures(&seen);
    assert!(seen.iter().all(|(_, v)| v == "v1"), "only v1 ever answered");
}

#[test]
fn a_replica_whose_invocations_keep_trapping_is_restarted() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = repo_root().join("examples/fuel-burner/app.toml");
    cluster.ok(&["apply", &spec.display().to_string()]).unwrap();
    wait_all_ready(&cluster, "burner", "the burner ready");
    // Every call runs out of fuel; ten in a row count as a failed replica.
    for _ in 0..10 {
        let out = cluster
            .shoal(&["invoke", "burner/burner", "--data", "x"])
            .unwrap();
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("ran out of fuel"), "{}", out.stderr);
    }
    let restarted = cluster
        .wait_until("the burner restarted", LIMIT, |c| {
            Ok(pods_of(c, "burner").into_iter().find(|p| p.restarts >= 1))
        })
        .unwrap();
    let why = restarted.last_error.unwrap_or_default();
    assert!(
        why.contains("10 invocations in a row trapped") && why.contains("ran out of fuel"),
        "{why}"
    );
}
