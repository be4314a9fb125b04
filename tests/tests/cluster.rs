//! The control plane end to end: a real nats-server, a scheduler process,
//! several host processes and real components. Hosts die, the scheduler
//! restarts, NATS restarts; replicas stay placed and work keeps flowing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_api::resources::{HostState, PodInfo, PodState};
use shoal_api::wire::ReplicaState;
use shoal_tests::cluster::{Cluster, free_port};
use shoal_tests::{Running, http_request};

/// Writes an app spec into the test's directory (see [`Cluster::spec`]).
fn spec(cluster: &Cluster, file: &str, body: &str) -> String {
    cluster.spec(file, body).unwrap()
}

fn running(pods: &[PodInfo]) -> Vec<&PodInfo> {
    pods.iter()
        .filter(|p| matches!(p.state, PodState::Host(ReplicaState::Running)))
        .collect()
}

/// Replica id → host, for pods that run.
fn placement(pods: &[PodInfo]) -> BTreeMap<String, String> {
    running(pods)
        .into_iter()
        .map(|p| (p.id.to_string(), p.host.as_ref().unwrap().to_string()))
        .collect()
}

const ECHO_SPREAD: &str = r#"
name = "echo"

[components.echo]
source = "SOURCE(echo-worker)"
kind = "worker"
replicas = 3
limits = { memory = "16MiB" }
placement = { spread = "zone" }
"#;

fn wait_all_running(cluster: &Cluster, n: usize, limit: Duration) -> Vec<PodInfo> {
    cluster
        .wait_until(&format!("{n} replicas running"), limit, |c| {
            let pods = c.pods()?;
            Ok((running(&pods).len() == n && pods.len() == n).then_some(pods))
        })
        .unwrap()
}

#[test]
fn shoal_up_serves_http_and_invoke_reaches_a_worker() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().display().to_string();
    let api = format!("127.0.0.1:{}", free_port().unwrap());
    let http = format!("127.0.0.1:{}", free_port().unwrap());
    let hello = shoal_tests::repo_root().join("examples/hello-http/app.toml");
    // `shoal up` writes the client config the verbs below use unaided.
    let config = dir.path().join("config.toml").display().to_string();
    let mut up = Running::start_with_env(
        &[
            "up",
            &hello.display().to_string(),
            "--api",
            &api,
            "--http",
            &http,
            "--data-dir",
            &data,
            "--metrics",
            "127.0.0.1:0",
        ],
        &[("SHOAL_CONFIG", &config)],
    )
    .unwrap();
    let line = up
        .wait_for_line("hello/web answers on http://", Duration::from_secs(60))
        .unwrap();
    assert!(line.contains(&http), "{line}");
    let reply = http_request(
        http.parse().unwrap(),
        "GET",
        "/from-curl",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body, "Hello from Shoal! You asked for /from-curl\n");

    let env = [("SHOAL_CONFIG", config.as_str())];
    let echo = shoal_tests::repo_root().join("examples/echo-worker/app.toml");
    // `apply --wait` returns once the replica is ready: the invoke right
    // after it needs no retry.
    let out = shoal_tests::shoal_with_env(
        &["apply", &echo.display().to_string(), "--wait"],
        &env,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Revisions are the app's own: its first is 1, whatever came before.
    assert!(
        out.stdout.contains("app default/echo applied (revision 1)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("app default/echo revision ") && out.stdout.contains(" is ready"),
        "{}",
        out.stdout
    );
    let out = shoal_tests::shoal_with_env(
        &["invoke", "echo/echo", "--data", "ping"],
        &env,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "ping\n");
    assert_eq!(
        up.stop(Duration::from_secs(20)).unwrap(),
        Some(0),
        "{:?}",
        up.output()
    );
}

#[test]
fn replicas_spread_over_zones_and_move_when_a_host_dies() {
    let mut cluster = Cluster::start().unwrap();
    for zone in ["a", "b", "c"] {
        cluster
            .start_host(&format!("host-{zone}"), &format!("zone={zone}"))
            .unwrap();
    }
    let file = spec(&cluster, "echo.toml", ECHO_SPREAD);
    cluster.ok(&["apply", &file]).unwrap();
    let pods = wait_all_running(&cluster, 3, Duration::from_secs(20));
    let hosts: BTreeSet<String> = placement(&pods).into_values().collect();
    assert_eq!(hosts.len(), 3, "one replica per zone: {pods:?}");
    assert_eq!(
        cluster
            .ok(&["invoke", "echo/echo", "--data", "before"])
            .unwrap(),
        "before\n"
    );

    // Host b dies; within 5 s its replica runs elsewhere.
    let started = std::time::Instant::now();
    cluster.kill_host("host-b");
    let pods = cluster
        .wait_until(
            "the lost replica placed elsewhere",
            Duration::from_secs(5),
            |c| {
                let pods = c.pods()?;
                let places = placement(&pods);
                Ok((places.len() == 3 && !places.values().any(|h| h == "host-b")).then_some(pods))
            },
        )
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    let hosts: BTreeSet<String> = placement(&pods).into_values().collect();
    assert_eq!(
        hosts,
        BTreeSet::from(["host-a".to_string(), "host-c".to_string()])
    );
    for i in 0..10 {
        let data = format!("after-{i}");
        assert_eq!(
            cluster
                .ok(&["invoke", "echo/echo", "--data", &data])
                .unwrap(),
            format!("{data}\n")
        );
    }
    let lost = cluster.hosts().unwrap();
    assert!(
        lost.iter()
            .any(|h| h.id.as_str() == "host-b" && h.state == HostState::Lost),
        "{lost:?}"
    );
    let describe = cluster.ok(&["describe", "app", "echo"]).unwrap();
    assert!(describe.contains("host_lost"), "{describe}");
}

#[test]
fn a_host_that_returns_is_told_to_stop_the_replicas_placed_elsewhere() {
    let mut cluster = Cluster::start().unwrap();
    for zone in ["a", "b", "c"] {
        cluster
            .start_host(&format!("host-{zone}"), &format!("zone={zone}"))
            .unwrap();
    }
    let file = spec(&cluster, "echo.toml", ECHO_SPREAD);
    cluster.ok(&["apply", &file]).unwrap();
    wait_all_running(&cluster, 3, Duration::from_secs(20));

    // host-b hangs: lost, and its replica is placed elsewhere.
    cluster.host("host-b").unwrap().pause();
    cluster
        .wait_until(
            "the replica moved off the hung host",
            Duration::from_secs(8),
            |c| {
                let places = placement(&c.pods()?);
                Ok((places.len() == 3 && !places.values().any(|h| h == "host-b")).then_some(()))
            },
        )
        .unwrap();

    // It comes back still running its old copy: that copy is stopped.
    cluster.host("host-b").unwrap().resume();
    let hosts = cluster
        .wait_until(
            "the returning host's copy stopped",
            Duration::from_secs(8),
            |c| {
                let hosts = c.hosts()?;
                let b = hosts.iter().find(|h| h.id.as_str() == "host-b");
                Ok(b.filter(|b| b.state == HostState::Ready && b.replicas == 0)
                    .map(|_| hosts.clone()))
            },
        )
        .unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.replicas).sum::<u32>(),
        3,
        "{hosts:?}"
    );
    let describe = cluster.ok(&["describe", "app", "echo"]).unwrap();
    assert!(
        describe.contains("stopped on host-b: duplicate"),
        "{describe}"
    );
}

#[test]
fn a_restarted_scheduler_neither_stops_nor_duplicates_replicas() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "zone=a").unwrap();
    cluster.start_host("h2", "zone=b").unwrap();
    let file = spec(
        &cluster,
        "echo.toml",
        &ECHO_SPREAD.replace("replicas = 3", "replicas = 4"),
    );
    cluster.ok(&["apply", &file]).unwrap();
    let before = wait_all_running(&cluster, 4, Duration::from_secs(20));

    cluster.kill_scheduler();
    // Work goes on while the scheduler is away.
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_scheduler().unwrap();
    // Past the start-up grace, and a few reconcile passes more.
    std::thread::sleep(Duration::from_secs(4));
    let after = cluster.pods().unwrap();
    assert_eq!(placement(&before), placement(&after));
    assert_eq!(
        serde_json::to_value(&before).unwrap(),
        serde_json::to_value(&after).unwrap(),
        "get pods -o json is the same after the restart"
    );
    let describe = cluster.ok(&["describe", "app", "echo"]).unwrap();
    assert!(
        !describe.contains("stopped"),
        "nothing was stopped: {describe}"
    );
    let hosts = cluster.hosts().unwrap();
    assert_eq!(
        hosts.iter().map(|h| h.replicas).sum::<u32>(),
        4,
        "no duplicates: {hosts:?}"
    );
}

#[test]
fn a_host_that_does_not_answer_delays_no_other_hosts_starts() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("slow", "role=slow").unwrap();
    cluster.start_host("fast", "role=fast").unwrap();
    cluster
        .wait_until("both hosts ready", Duration::from_secs(20), |c| {
            Ok((c.hosts()?.len() == 2).then_some(()))
        })
        .unwrap();
    let pinned = |name: &str, role: &str| {
        format!(
            "name = \"{name}\"\n[components.echo]\nsource = \"SOURCE(echo-worker)\"\nkind = \"worker\"\nreplicas = 2\nlimits = {{ memory = \"16MiB\" }}\nplacement = {{ labels = {{ role = \"{role}\" }} }}\n"
        )
    };
    let ready = |app: &'static str| {
        move |c: &Cluster| {
            let running = c
                .pods()?
                .iter()
                .filter(|p| p.id.app.as_str() == app && p.ready)
                .count();
            Ok((running == 2).then_some(()))
        }
    };
    // A first app on `fast`, running: the scheduler is past its start-up
    // grace and places as soon as it is told.
    let warm = spec(&cluster, "warm.toml", &pinned("warm", "fast"));
    cluster.ok(&["apply", &warm]).unwrap();
    cluster
        .wait_until("warm runs on fast", Duration::from_secs(20), ready("warm"))
        .unwrap();
    let stuck = spec(&cluster, "stuck.toml", &pinned("stuck", "slow"));
    let quick = spec(&cluster, "quick.toml", &pinned("quick", "fast"));
    // Frozen, `slow` answers nothing, yet is not lost for its grace
    // period: the scheduler's starts for it each wait out the 5 s timeout.
    cluster.host("slow").unwrap().pause();
    cluster.ok(&["apply", &stuck]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let applied = std::time::Instant::now();
    cluster.ok(&["apply", &quick]).unwrap();
    cluster
        .wait_until(
            "quick runs on fast",
            Duration::from_secs(20),
            ready("quick"),
        )
        .unwrap();
    let took = applied.elapsed();
    cluster.host("slow").unwrap().resume();
    // Well inside the 5 s a command to `slow` waits before it gives up.
    assert!(took < Duration::from_secs(3), "quick took {took:?}");
}

#[test]
fn a_host_told_to_stop_while_nats_is_gone_exits_within_its_drain_bound() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let echo = spec(&cluster, "echo.toml", ECHO_SPREAD);
    cluster.ok(&["apply", &echo]).unwrap();
    wait_all_running(&cluster, 3, Duration::from_secs(20));
    // Some lines for the shipper to hold when NATS goes.
    cluster
        .ok(&["invoke", "echo/echo", "--data", "before"])
        .unwrap();

    cluster.nats.kill();
    let told = std::time::Instant::now();
    let code = cluster
        .stop_host("h1", Duration::from_secs(30))
        .expect("the host exits although NATS is gone");
    let took = told.elapsed();
    assert_eq!(code, Some(0));
    // The drain's own bounds (replicas 10 s, NATS 2 s) and some slack.
    let said = cluster.all_output();
    assert!(took < Duration::from_secs(16), "took {took:?}: {said}");
    assert!(
        said.contains("NATS is unreachable"),
        "the host says what it could not hand over: {said}"
    );
}

#[test]
fn hosts_and_scheduler_ride_out_a_nats_restart() {
    let mut cluster = Cluster::start().unwrap();
    let ingress = cluster.start_host("h1", "").unwrap();
    let echo = spec(&cluster, "echo.toml", ECHO_SPREAD);
    let hello = spec(
        &cluster,
        "hello.toml",
        r#"
name = "hello"
[components.web]
source = "SOURCE(hello-http)"
kind = "http"
route = "/"
"#,
    );
    cluster.ok(&["apply", &echo]).unwrap();
    cluster.ok(&["apply", &hello]).unwrap();
    let before = wait_all_running(&cluster, 4, Duration::from_secs(20));

    cluster.nats.kill();
    // The host keeps serving HTTP with NATS gone.
    let reply = http_request(ingress, "GET", "/during", Duration::from_secs(5)).unwrap();
    assert_eq!(reply.status, 200);
    std::thread::sleep(Duration::from_secs(1));
    cluster.nats.restart().unwrap();

    // Everyone reconnects; both applies are still there; nothing moved.
    let after = wait_all_running(&cluster, 4, Duration::from_secs(20));
    assert_eq!(placement(&before), placement(&after));
    let apps: BTreeSet<String> = cluster
        .apps()
        .unwrap()
        .into_iter()
        .map(|a| a.name.to_string())
        .collect();
    assert_eq!(
        apps,
        BTreeSet::from(["echo".to_string(), "hello".to_string()])
    );
    let out = cluster
        .wait_until(
            "invoke after the NATS restart",
            Duration::from_secs(10),
            |c| {
                let out = c.shoal(&["invoke", "echo/echo", "--data", "back"])?;
                Ok((out.code == Some(0)).then_some(out.stdout))
            },
        )
        .unwrap();
    assert_eq!(out, "back\n");
}

#[test]
fn an_unplaceable_app_stays_pending_with_a_reason_until_a_host_fits() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("plain", "region=us").unwrap();
    let file = spec(
        &cluster,
        "eu.toml",
        r#"
name = "eu-only"
[components.echo]
source = "SOURCE(echo-worker)"
kind = "worker"
limits = { memory = "64MiB" }
placement = { labels = { region = "eu" } }
"#,
    );
    // Waiting for it gives up after the timeout and says where to look.
    let out = cluster
        .shoal(&["apply", &file, "--wait", "--timeout", "2"])
        .unwrap();
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr.contains("is not ready after 2s")
            && out.stderr.contains("shoal describe app eu-only"),
        "{}",
        out.stderr
    );
    let describe = cluster
        .wait_until("a pending reason", Duration::from_secs(10), |c| {
            let d = c.ok(&["describe", "app", "eu-only"])?;
            Ok(d.contains("pending: no host has region=eu").then_some(d))
        })
        .unwrap();
    assert!(describe.contains("Status:     pending"), "{describe}");

    cluster.start_host("euro", "region=eu").unwrap();
    let pods = wait_all_running(&cluster, 1, Duration::from_secs(10));
    assert_eq!(pods[0].host.as_ref().unwrap().as_str(), "euro");
    assert_eq!(
        cluster
            .ok(&["invoke", "eu-only/echo", "--data", "bonjour"])
            .unwrap(),
        "bonjour\n"
    );
}

#[test]
fn bad_specs_and_components_are_refused_and_change_nothing() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let good = spec(&cluster, "good.toml", ECHO_SPREAD);
    // Settled first: what the refusals must not change is a steady state.
    cluster.ok(&["apply", "--wait", &good]).unwrap();
    let before = cluster.ok(&["get", "apps", "-o", "json"]).unwrap();

    let core = cluster.dir().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let cases = [
        (
            spec(
                &cluster,
                "unknown.toml",
                &ECHO_SPREAD.replace("replicas = 3", "replica = 3"),
            ),
            "unknown field `replica`",
        ),
        (
            spec(
                &cluster,
                "missing.toml",
                &ECHO_SPREAD.replace("SOURCE(echo-worker)", "/nonexistent/echo.wasm"),
            ),
            "cannot read its source /nonexistent/echo.wasm",
        ),
        (
            spec(
                &cluster,
                "core.toml",
                &ECHO_SPREAD.replace("SOURCE(echo-worker)", &core.display().to_string()),
            ),
            "core WebAssembly module",
        ),
        (
            spec(
                &cluster,
                "kind.toml",
                &ECHO_SPREAD.replace("SOURCE(echo-worker)", "SOURCE(hello-http)"),
            ),
            "is declared kind = \"worker\" but does not export shoal:workload/handler@0.1.0: it is an http component",
        ),
        (
            spec(
                &cluster,
                "health.toml",
                &ECHO_SPREAD.replace(
                    "placement = { spread = \"zone\" }",
                    "health = { interval = \"1s\" }",
                ),
            ),
            "sets `health` but exports no shoal:workload/health@0.1.0: export one with shoal_sdk::export_health!",
        ),
    ];
    for (file, expected) in cases {
        let out = cluster.shoal(&["apply", &file]).unwrap();
        assert_eq!(out.code, Some(1), "{file}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{file}: {}", out.stderr);
    }
    assert_eq!(
        cluster.ok(&["get", "apps", "-o", "json"]).unwrap(),
        before,
        "nothing changed"
    );

    // The API describes itself.
    let api: std::net::SocketAddr = cluster.api().trim_start_matches("http://").parse().unwrap();
    let doc = http_request(api, "GET", "/openapi.json", Duration::from_secs(5)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&doc.body).unwrap();
    for path in [
        "/v1/apps",
        "/v1/apps/{namespace}/{name}",
        "/v1/pods",
        "/v1/hosts",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from /openapi.json"
        );
    }

    // A dry run prints the plan and stores nothing.
    let scaled = spec(
        &cluster,
        "scaled.toml",
        &ECHO_SPREAD.replace("replicas = 3", "replicas = 5"),
    );
    let plan = cluster.ok(&["apply", "--dry-run", &scaled]).unwrap();
    assert!(plan.contains("would create default/echo/echo-3"), "{plan}");
    assert!(plan.contains("would create default/echo/echo-4"), "{plan}");
    assert_eq!(
        cluster.ok(&["get", "apps", "-o", "json"]).unwrap(),
        before,
        "a dry run stores nothing"
    );
}

#[test]
fn every_refusal_is_the_apis_json_error() {
    let cluster = Cluster::start().unwrap();
    let token = cluster.admin_token().unwrap();
    let api = shoal_tests::control::addr(cluster.scheduler_ports()[0]);
    let json = [("Content-Type", "application/json")];
    // What axum refuses before a handler runs, one of each kind.
    let cases: [Refusal; 6] = [
        (
            "POST",
            "/v1/apps",
            &json,
            b"{not json",
            400,
            "invalid",
            "JSON",
        ),
        (
            "POST",
            "/v1/apps",
            &[("Content-Type", "text/plain")],
            b"{}",
            415,
            "invalid",
            "Content-Type",
        ),
        (
            "POST",
            "/v1/apps",
            &json,
            b"{\"file\": 7}",
            422,
            "invalid",
            "file",
        ),
        (
            "GET",
            "/v1/top/pods?window_s=soon",
            &[],
            b"",
            400,
            "invalid",
            "window_s",
        ),
        (
            "GET",
            "/v1/no-such-thing",
            &[],
            b"",
            404,
            "not_found",
            "/openapi.json",
        ),
        (
            "DELETE",
            "/v1/pods",
            &[],
            b"",
            405,
            "invalid",
            "does not take DELETE",
        ),
    ];
    for (method, path, headers, body, status, kind, says) in cases {
        let reply = shoal_tests::http_call_as(
            api,
            &token,
            method,
            path,
            headers,
            body,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(reply.status, status, "{method} {path}: {reply:?}");
        assert_eq!(
            reply.header("content-type"),
            Some("application/json"),
            "{method} {path}: {reply:?}"
        );
        let error: shoal_api::resources::ApiError = serde_json::from_str(&reply.body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", reply.body));
        assert_eq!(error.kind, kind, "{method} {path}: {error:?}");
        assert!(error.error.contains(says), "{method} {path}: {error:?}");
    }
    // Without a credential, an unknown path is refused as unauthorized,
    // not described.
    let reply = shoal_tests::http_request(api, "GET", "/v1/no-such-thing", Duration::from_secs(10))
        .unwrap();
    assert_eq!(reply.status, 401, "{reply:?}");
}

/// A request the API refuses, and how it should say so: method, path,
/// headers, body, status, the error's kind, words the error contains.
type Refusal<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    u16,
    &'a str,
    &'a str,
);
