//! Traffic end to end: every host's ingress serves every app's routes,
//! locally when it runs a replica, else by forwarding over NATS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_tests::cluster::Cluster;
use shoal_tests::{HttpReply, Load, http_head_only, http_request, http_send, wasm_path};

fn get(addr: SocketAddr, path: &str) -> HttpReply {
    http_request(addr, "GET", path, Duration::from_secs(10)).unwrap()
}

fn app(cluster: &Cluster, name: &str, route: &str, replicas: u32) -> String {
    let text = format!(
        "name = \"{name}\"\n[components.web]\nsource = \"{}\"\nkind = \"http\"\nroute = \"{route}\"\nreplicas = {replicas}\n",
        wasm_path("hello-http").unwrap().display()
    );
    let path = cluster.dir().join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn any_host_ingress_reaches_replicas_anywhere() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    let a2 = cluster.start_host("h2", "").unwrap();
    let web = app(&cluster, "web", "/web", 2);
    let solo = app(&cluster, "solo", "/solo", 1);
    cluster.ok(&["apply", &web]).unwrap();
    cluster.ok(&["apply", &solo]).unwrap();

    // Two replicas, one per host: requests through either ingress succeed,
    // and each host's replica serves a share.
    cluster
        .wait_until("all three replicas running", Duration::from_secs(20), |c| {
            let pods = c.pods()?;
            Ok((pods.len() == 3
                && pods.iter().all(|p| {
                    matches!(
                        p.state,
                        shoal_api::resources::PodState::Host(
                            shoal_api::wire::ReplicaState::Running
                        )
                    )
                }))
            .then_some(()))
        })
        .unwrap();
    let served = cluster
        .wait_until(
            "both ingresses serving /web",
            Duration::from_secs(20),
            |_| {
                let r1 = get(a1, "/web/a");
                let r2 = get(a2, "/web/b");
                Ok((r1.status == 200 && r2.status == 200).then_some((r1, r2)))
            },
        )
        .unwrap();
    assert_eq!(served.0.body, "Hello from Shoal! You asked for /web/a\n");
    let mut hosts = BTreeSet::new();
    let mut trail = Vec::new();
    for i in 0..20 {
        for addr in [a1, a2] {
            let r = get(addr, &format!("/web/{i}"));
            assert_eq!(r.status, 200, "{r:?}");
            let by = r.header("shoal-served-by").unwrap().to_string();
            trail.push(format!("{addr}->{by}"));
            hosts.insert(by);
        }
    }
    assert_eq!(
        hosts,
        BTreeSet::from(["h1".to_string(), "h2".to_string()]),
        "{trail:?} {:?}",
        cluster.pods().unwrap()
    );

    // One replica: the ingress of the host without it forwards over NATS.
    let pods = cluster.pods().unwrap();
    let solo_host = pods
        .iter()
        .find(|p| p.id.app.as_str() == "solo")
        .and_then(|p| p.host.clone())
        .map(|h| h.to_string());
    let solo_host = match solo_host {
        Some(h) => h,
        None => cluster
            .wait_until("solo placed", Duration::from_secs(10), |c| {
                Ok(c.pods()?
                    .into_iter()
                    .find(|p| p.id.app.as_str() == "solo")
                    .and_then(|p| p.host.map(|h| h.to_string())))
            })
            .unwrap(),
    };
    let (other, other_name) = if solo_host == "h1" {
        (a2, "h2")
    } else {
        (a1, "h1")
    };
    let forwarded = cluster
        .wait_until(
            "solo reachable through the other host",
            Duration::from_secs(10),
            |_| {
                let r = get(other, "/solo/x?y=1");
                Ok((r.status == 200).then_some(r))
            },
        )
        .unwrap();
    assert_eq!(forwarded.body, "Hello from Shoal! You asked for /solo/x\n");
    assert_eq!(
        forwarded.header("shoal-served-by"),
        Some(solo_host.as_str()),
        "served by the replica's host, not {other_name}"
    );
    let post = http_request(other, "POST", "/solo", Duration::from_secs(10)).unwrap();
    assert_eq!(
        post.status, 405,
        "the guest's own status travels back: {post:?}"
    );

    // No route anywhere: a clear 404.
    let missing = get(a1, "/nothing/here");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body, "no component serves /nothing/here\n");
}

#[test]
fn routes_can_be_limited_to_a_host_name() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    let a2 = cluster.start_host("h2", "").unwrap();
    for (app, greeting) in [("shop-a", "Welcome to A"), ("shop-b", "Welcome to B")] {
        let text = format!(
            "name = \"{app}\"\n[components.web]\nsource = \"{}\"\nkind = \"http\"\nroute = \"/\"\nhost = \"{app}.example\"\nenv = {{ GREETING = \"{greeting}\" }}\n",
            wasm_path("hello-http").unwrap().display()
        );
        let path = cluster.dir().join(format!("{app}.toml"));
        std::fs::write(&path, text).unwrap();
        cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    }
    let ask = |addr, host: &str| {
        shoal_tests::http_request_to(addr, host, "GET", "/x", Duration::from_secs(10)).unwrap()
    };
    for addr in [a1, a2] {
        let a = cluster
            .wait_until("shop-a answering", Duration::from_secs(20), |_| {
                let r = ask(addr, "shop-a.example:80");
                Ok((r.status == 200).then_some(r))
            })
            .unwrap();
        assert_eq!(a.body, "Welcome to A! You asked for /x\n");
        let b = cluster
            .wait_until("shop-b answering", Duration::from_secs(20), |_| {
                let r = ask(addr, "SHOP-B.example");
                Ok((r.status == 200).then_some(r))
            })
            .unwrap();
        assert_eq!(b.body, "Welcome to B! You asked for /x\n");
        assert_eq!(ask(addr, "elsewhere.example").status, 404);
    }
}

const JOBS: &str = r#"
name = "jobs"

[components.worker]
source = "SOURCE"
kind = "worker"
queue = "jobs.in"
max_deliver = 3
replicas = 2
limits = { memory = "16MiB", timeout = "1s" }
messaging = { publish = ["jobs.>"] }
"#;

fn apply_jobs(cluster: &Cluster) {
    let text = JOBS.replace(
        "SOURCE",
        &wasm_path("queue-worker").unwrap().display().to_string(),
    );
    let path = cluster.dir().join("jobs.toml");
    std::fs::write(&path, text).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    cluster
        .wait_until("two workers running", Duration::from_secs(20), |c| {
            let pods = c.pods()?;
            Ok((pods
                .iter()
                .filter(|p| {
                    matches!(
                        p.state,
                        shoal_api::resources::PodState::Host(
                            shoal_api::wire::ReplicaState::Running
                        )
                    )
                })
                .count()
                == 2)
                .then_some(()))
        })
        .unwrap();
}

/// Publishes `jobs` to the work queue, each acknowledged by JetStream.
async fn publish(js: &async_nats::jetstream::Context, jobs: impl Iterator<Item = String>) {
    publish_on(js, "ns.default.jobs.in", jobs).await;
}

/// Publishes `jobs` on `subject`, each acknowledged by JetStream.
async fn publish_on(
    js: &async_nats::jetstream::Context,
    subject: &'static str,
    jobs: impl Iterator<Item = String>,
) {
    let mut acks = Vec::new();
    for job in jobs {
        acks.push(js.publish(subject, job.into_bytes().into()).await.unwrap());
    }
    for ack in acks {
        ack.await.unwrap();
    }
}

/// Collects unique finished jobs into `done` until it holds `n` or `limit` passes.
async fn collect_into(
    sub: &mut async_nats::Subscriber,
    done: &mut BTreeSet<String>,
    n: usize,
    limit: Duration,
) {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + limit;
    while done.len() < n {
        match tokio::time::timeout_at(deadline, sub.next()).await {
            Ok(Some(msg)) => {
                done.insert(String::from_utf8_lossy(&msg.payload).into_owned());
            }
            _ => break,
        }
    }
}

/// Fails, naming a few, unless every job of `jobs` is in `seen`.
fn assert_all_done(jobs: &[String], seen: &BTreeSet<String>) {
    let missing: Vec<&String> = jobs.iter().filter(|j| !seen.contains(*j)).collect();
    assert!(
        missing.is_empty(),
        "{} jobs never done: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Collects unique finished jobs until `n` are seen or `limit` passes.
async fn collect(sub: &mut async_nats::Subscriber, n: usize, limit: Duration) -> BTreeSet<String> {
    let mut done = BTreeSet::new();
    collect_into(sub, &mut done, n, limit).await;
    done
}

#[test]
fn a_work_queue_is_processed_whole_and_poison_is_dead_lettered() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    apply_jobs(&cluster);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let mut done = nats.subscribe("ns.default.jobs.done").await.unwrap();
        let mut dead = nats
            .subscribe("shoal.v1.dead.default.jobs.worker")
            .await
            .unwrap();
        nats.flush().await.unwrap();
        let js = async_nats::jetstream::new(nats.clone());
        let jobs: Vec<String> = (0..2000).map(|i| format!("job-{i}")).collect();
        publish(&js, jobs.iter().take(1000).cloned()).await;
        publish(&js, std::iter::once("trap-1".to_string())).await;
        publish(&js, jobs.iter().skip(1000).cloned()).await;

        let seen = collect(&mut done, jobs.len(), Duration::from_secs(60)).await;
        assert_all_done(&jobs, &seen);

        // The poison job, after its three attempts, and with the reason.
        use futures::StreamExt;
        let letter = tokio::time::timeout(Duration::from_secs(30), dead.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&letter.payload[..], b"trap-1");
        let h = letter.headers.unwrap();
        assert_eq!(h.get("Shoal-Dead-Deliveries").unwrap().as_str(), "3");
        assert_eq!(
            h.get("Shoal-Dead-Subject").unwrap().as_str(),
            "ns.default.jobs.in"
        );
        assert!(
            h.get("Shoal-Dead-Reason")
                .unwrap()
                .as_str()
                .contains("trapped"),
            "{h:?}"
        );
        // The dead letter is kept for the user to read.
        let stream = js.get_stream("SHOAL_DEAD").await.unwrap();
        let kept = stream
            .get_last_raw_message_by_subject("shoal.v1.dead.default.jobs.worker")
            .await
            .unwrap();
        assert_eq!(&kept.payload[..], b"trap-1");
    });
}

#[test]
fn no_message_is_lost_when_a_host_dies_mid_work() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    apply_jobs(&cluster);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (js, mut done) = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let done = nats.subscribe("ns.default.jobs.done").await.unwrap();
        nats.flush().await.unwrap();
        (async_nats::jetstream::new(nats), done)
    });
    // Slow jobs, so both hosts hold unacknowledged ones when h1 dies.
    let jobs: Vec<String> = (0..600).map(|i| format!("slow-{i}")).collect();
    rt.block_on(publish(&js, jobs.iter().cloned()));
    let mut seen = rt.block_on(collect(&mut done, 50, Duration::from_secs(30)));
    assert!(!seen.is_empty(), "work started");
    cluster.kill_host("h1");
    rt.block_on(collect_into(
        &mut done,
        &mut seen,
        jobs.len(),
        Duration::from_secs(90),
    ));
    let missing: Vec<&String> = jobs.iter().filter(|j| !seen.contains(*j)).collect();
    assert!(
        missing.is_empty(),
        "{} jobs lost with the host: {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn a_queue_worker_scales_from_zero_with_its_backlog_and_back() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    let text = JOBS
        .replace(
            "SOURCE",
            &wasm_path("queue-worker").unwrap().display().to_string(),
        )
        .replace(
            "replicas = 2",
            "autoscale = { min = 0, max = 4, target_queue_depth = 100, idle = \"2s\" }",
        )
        .replace("name = \"jobs\"", "name = \"auto\"")
        .replace("\"jobs.in\"", "\"auto.in\"");
    let path = cluster.dir().join("auto.toml");
    std::fs::write(&path, text).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        cluster.pods().unwrap().is_empty(),
        "min = 0: no replica while the queue is empty"
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let (js, mut done) = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let done = nats.subscribe("ns.default.jobs.done").await.unwrap();
        nats.flush().await.unwrap();
        (async_nats::jetstream::new(nats), done)
    });
    let publish_to =
        |jobs: Vec<String>| rt.block_on(publish_on(&js, "ns.default.auto.in", jobs.into_iter()));
    // Publishes one job and waits for it to be done; returns how long it took.
    let time_one = |job: &str, done: &mut async_nats::Subscriber| {
        let started = std::time::Instant::now();
        publish_to(vec![job.to_string()]);
        let seen = rt.block_on(collect(done, 1, Duration::from_secs(10)));
        assert!(seen.contains(job), "{seen:?}");
        (started.elapsed(), seen)
    };

    // From zero: the first message is handled within moments (this first
    // time the hosts also compile the component).
    let (cold, first) = time_one("first", &mut done);
    assert!(
        cold < Duration::from_secs(5),
        "scaled from zero (cold) in {cold:?}"
    );
    // The message itself woke it, not the next read of the queue's depth.
    let detail = cluster.ok(&["describe", "app", "auto"]).unwrap();
    assert!(
        detail.contains("scaled from 0 to 1 replica: a message arrived on ns.default.auto.in"),
        "{detail}"
    );

    // A large backlog: up towards max, every message processed. Each job
    // takes 50 ms ("slow-"), so that one replica cannot keep the queue
    // short by itself however fast instantiation gets.
    let jobs: Vec<String> = (0..5000).map(|i| format!("slow-{i}")).collect();
    publish_to(jobs.clone());
    let peak = cluster
        .wait_until("scaled up for the backlog", Duration::from_secs(20), |c| {
            let apps = c.apps()?;
            let desired = apps
                .iter()
                .flat_map(|a| &a.components)
                .map(|c| c.desired)
                .max()
                .unwrap_or(0);
            Ok((desired > 1).then_some(desired))
        })
        .unwrap();
    assert!(peak <= 4, "never past max: {peak}");
    let mut seen = first;
    rt.block_on(collect_into(
        &mut done,
        &mut seen,
        jobs.len() + 1,
        Duration::from_secs(120),
    ));
    assert_all_done(&jobs, &seen);
    let describe = cluster.ok(&["describe", "app", "auto"]).unwrap();
    assert!(describe.contains("Autoscaler: worker scaled"), "{describe}");
    assert!(describe.contains("target 100 per replica"), "{describe}");

    // Idle: back to zero.
    cluster
        .wait_until("back to zero after idle", Duration::from_secs(20), |c| {
            Ok(c.pods()?.is_empty().then_some(()))
        })
        .unwrap();

    // From zero again, with the component already compiled on the hosts:
    // within a second of the first message.
    let (warm, _) = time_one("again", &mut done);
    assert!(
        warm < Duration::from_secs(1),
        "scaled from zero (warm) in {warm:?}"
    );
    eprintln!(
        "from zero to the first job done: cold {cold:?}, warm {warm:?}; peak {peak} replicas"
    );
}

#[test]
fn an_http_component_scales_from_zero_on_requests_and_back() {
    let mut cluster = Cluster::start().unwrap();
    let addr = cluster.start_host("h1", "").unwrap();
    let text = format!(
        r#"name = "auto"
[components.web]
source = "{}"
kind = "http"
route = "/auto"
limits = {{ memory = "16MiB", timeout = "2s" }}
autoscale = {{ min = 0, max = 3, target_in_flight = 1, idle = "2s" }}
"#,
        wasm_path("hello-http").unwrap().display()
    );
    let path = cluster.dir().join("auto.toml");
    std::fs::write(&path, text).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();

    // At zero, nothing runs; the first request wakes a replica and is
    // held until it serves, not refused.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(cluster.pods().unwrap().is_empty());
    let first = get(addr, "/auto/first");
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.body, "Hello from Shoal! You asked for /auto/first\n");
    assert_eq!(cluster.pods().unwrap().len(), 1);

    // Six clients keeping slow requests in flight: more replicas.
    let load = Load::start(vec![addr], "/auto/load?sleep_ms=100", 6);
    let scaled = cluster.wait_until("scaled up under load", Duration::from_secs(20), |c| {
        let n = c.pods()?.len();
        Ok((n >= 2).then_some(n))
    });
    let statuses: Vec<u16> = load.finish().iter().map(|r| r.status).collect();
    assert!(scaled.unwrap() >= 2);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let detail = cluster.ok(&["describe", "app", "auto"]).unwrap();
    assert!(detail.contains("requests in flight on average"), "{detail}");

    // Idle: back to zero, and a new request wakes it again.
    cluster
        .wait_until("back to zero", Duration::from_secs(30), |c| {
            Ok(c.pods()?.is_empty().then_some(()))
        })
        .unwrap();
    assert_eq!(get(addr, "/auto/again").status, 200);
}

#[test]
fn a_host_that_shuts_down_hands_its_replicas_over_without_a_failed_request() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h2", "").unwrap();
    let spec = app(&cluster, "moving", "/moving", 1);
    cluster.ok(&["apply", &spec]).unwrap();
    cluster
        .wait_until("the replica running on h2", Duration::from_secs(20), |c| {
            Ok(c.pods()?
                .iter()
                .any(|p| p.host.as_ref().is_some_and(|h| h.as_str() == "h2") && p.ready)
                .then_some(()))
        })
        .unwrap();
    // h1 has no replica: its ingress forwards to h2's.
    let a1 = cluster.start_host("h1", "").unwrap();
    cluster
        .wait_until("h1 forwarding to h2", Duration::from_secs(20), |_| {
            Ok((get(a1, "/moving").status == 200).then_some(()))
        })
        .unwrap();
    let load = Load::start(vec![a1], "/moving/x", 1);
    std::thread::sleep(Duration::from_millis(300));

    assert_eq!(
        cluster.stop_host("h2", Duration::from_secs(20)).unwrap(),
        Some(0),
        "a clean exit"
    );
    std::thread::sleep(Duration::from_millis(500));
    let seen: Vec<(u16, String)> = load
        .finish()
        .iter()
        .map(|r| {
            (
                r.status,
                r.header("shoal-served-by").unwrap_or("").to_string(),
            )
        })
        .collect();
    let failed: Vec<_> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    let by: BTreeSet<&str> = seen.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(by, BTreeSet::from(["h1", "h2"]), "served by h2, then by h1");
    let pods = cluster.pods().unwrap();
    assert_eq!(pods.len(), 1, "{pods:?}");
    assert_eq!(pods[0].host.as_ref().map(|h| h.as_str()), Some("h1"));
}

/// Bytes `n` of echo-http's `/bytes` pattern.
fn pattern(n: usize) -> String {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

#[test]
fn large_bodies_pass_between_hosts_and_an_over_limit_body_is_refused_at_once() {
    let mut cluster = Cluster::start().unwrap();
    let a1 = cluster.start_host("h1", "").unwrap();
    let a2 = cluster.start_host("h2", "").unwrap();
    let text = format!(
        "name = \"echo\"\n[components.web]\nsource = \"{}\"\nkind = \"http\"\nroute = \"/echo\"\nreplicas = 1\nlimits = {{ memory = \"256MiB\", timeout = \"10s\" }}\n",
        wasm_path("echo-http").unwrap().display()
    );
    let spec = cluster.dir().join("echo.toml");
    std::fs::write(&spec, text).unwrap();
    cluster.ok(&["apply", &spec.display().to_string()]).unwrap();
    let on = cluster
        .wait_until("echo running", Duration::from_secs(20), |c| {
            Ok(c.pods()?.into_iter().find_map(|p| {
                matches!(
                    p.state,
                    shoal_api::resources::PodState::Host(shoal_api::wire::ReplicaState::Running)
                )
                .then(|| p.host.map(|h| h.to_string()))
                .flatten()
            }))
        })
        .unwrap();
    // The ingress of the host without the replica forwards over NATS.
    let (other, other_name) = if on == "h1" { (a2, "h2") } else { (a1, "h1") };
    let five_mib = 5 << 20;

    let body = pattern(five_mib);
    let echoed = cluster
        .wait_until(
            "a 5 MiB request through the other host",
            Duration::from_secs(20),
            |_| {
                let r = http_send(
                    other,
                    "POST",
                    "/echo",
                    body.as_bytes(),
                    Duration::from_secs(30),
                )?;
                Ok((r.status == 200).then_some(r))
            },
        )
        .unwrap();
    assert_eq!(echoed.body.len(), five_mib);
    assert!(echoed.body == body, "the 5 MiB body came back unchanged");
    assert_eq!(
        echoed.header("shoal-served-by"),
        Some(on.as_str()),
        "not served by {other_name}"
    );

    let big = http_request(
        other,
        "GET",
        &format!("/echo/bytes?n={five_mib}"),
        Duration::from_secs(30),
    )
    .unwrap();
    assert_eq!(big.status, 200, "{}", &big.body[..big.body.len().min(200)]);
    assert_eq!(big.body.len(), five_mib);
    assert!(
        big.body == pattern(five_mib),
        "the 5 MiB response arrived whole"
    );

    // Over the ingress limit: 413 from the headers alone, before a byte of
    // the body is sent.
    let limit = shoal_host::tunables::MAX_HTTP_BODY;
    for addr in [a1, a2] {
        let started = std::time::Instant::now();
        let refused =
            http_head_only(addr, "POST", "/echo", limit + 1, Duration::from_secs(10)).unwrap();
        assert_eq!(refused.status, 413, "{refused:?}");
        assert!(refused.body.contains(&limit.to_string()), "{refused:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "answered at once"
        );
    }
}

/// The jobs app as `fair`: four replicas of four at a time, on `queue`.
fn fair_jobs(queue: &str) -> String {
    JOBS.replace(
        "SOURCE",
        &wasm_path("queue-worker").unwrap().display().to_string(),
    )
    .replace("name = \"jobs\"", "name = \"fair\"")
    .replace("queue = \"jobs.in\"", &format!("queue = \"{queue}\""))
    .replace("replicas = 2", "replicas = 4")
    .replace("timeout = \"1s\" }", "timeout = \"2s\", concurrency = 4 }")
}

/// Each replica's invocations as its host last reported them.
async fn invocations_by_replica(
    beats: &mut async_nats::Subscriber,
    counts: &mut std::collections::BTreeMap<String, u64>,
    limit: Duration,
) {
    use futures::StreamExt;
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Some(msg)) = tokio::time::timeout_at(deadline, beats.next()).await {
        if let Ok(hb) = serde_json::from_slice::<shoal_api::wire::Heartbeat>(&msg.payload) {
            for r in hb.replicas.iter().filter(|r| r.id.app.as_str() == "fair") {
                let n = counts.entry(r.id.to_string()).or_default();
                *n = (*n).max(r.stats.invocations);
            }
        }
    }
}

#[test]
fn queue_replicas_share_a_burst_and_a_stopped_one_hands_back_its_share() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    let text = fair_jobs("fair.in");
    let path = cluster.dir().join("fair.toml");
    std::fs::write(&path, text).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    let running = |c: &Cluster| -> anyhow::Result<usize> {
        Ok(c.pods()?
            .iter()
            .filter(|p| {
                matches!(
                    p.state,
                    shoal_api::resources::PodState::Host(shoal_api::wire::ReplicaState::Running)
                )
            })
            .count())
    };
    cluster
        .wait_until("four workers running", Duration::from_secs(20), |c| {
            Ok((running(c)? == 4).then_some(()))
        })
        .unwrap();
    let hosts: BTreeSet<String> = cluster
        .pods()
        .unwrap()
        .into_iter()
        .filter_map(|p| p.host.map(|h| h.to_string()))
        .collect();
    assert_eq!(hosts.len(), 2, "spread over both hosts");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let mut done = nats.subscribe("ns.default.jobs.done").await.unwrap();
        let mut beats = nats
            .subscribe(shoal_api::subjects::ALL_HEARTBEATS)
            .await
            .unwrap();
        nats.flush().await.unwrap();
        let js = async_nats::jetstream::new(nats.clone());

        // 2,000 jobs of 50 ms: 4 replicas of 4 at a time take about 6 s.
        let jobs: Vec<String> = (0..2000).map(|i| format!("slow-{i}")).collect();
        publish_on(&js, "ns.default.fair.in", jobs.iter().cloned()).await;
        // NATS here carries 24 MB messages for HTTP between hosts; a work
        // queue still takes none over 1 MiB.
        let oversized = js
            .publish("ns.default.fair.in", vec![b'x'; 2 << 20].into())
            .await
            .unwrap()
            .await;
        assert!(oversized.is_err(), "a 2 MiB job was queued");
        let mut seen = collect(&mut done, 500, Duration::from_secs(30)).await;
        assert!(seen.len() >= 500, "a quarter done: {}", seen.len());

        // Mid-burst, one replica stops: what it has not started goes back
        // to the queue for the others, and nothing is lost.
        cluster.ok(&["scale", "fair/worker", "3"]).unwrap();
        collect_into(&mut done, &mut seen, jobs.len(), Duration::from_secs(60)).await;
        assert_all_done(&jobs, &seen);

        // Each replica did a share: none more than twice the mean. The
        // beats were kept from the start, the stopped replica's last ones
        // with them; it reports no more once stopped, so its last few
        // invocations (up to a second of them) may be missing from the sum.
        let mut counts = std::collections::BTreeMap::new();
        invocations_by_replica(&mut beats, &mut counts, Duration::from_secs(3)).await;
        let total: u64 = counts.values().sum();
        assert_eq!(counts.len(), 4, "{counts:?}");
        assert!(
            (1800..=2000).contains(&total),
            "every job run once, none twice: {total} {counts:?}"
        );
        let mean = total as f64 / counts.len() as f64;
        for (replica, n) in &counts {
            assert!(
                (*n as f64) <= 2.0 * mean,
                "{replica} did {n} of {total} (mean {mean:.0}): {counts:?}"
            );
            assert!(*n > 0, "{replica} did none: {counts:?}");
        }
    });

    // A changed queue subject would strand what the queue holds: refused,
    // saying what to do instead.
    let moved = fair_jobs("fair.elsewhere");
    std::fs::write(&path, moved).unwrap();
    let refused = cluster
        .shoal(&["apply", &path.display().to_string()])
        .unwrap();
    assert_ne!(refused.code, Some(0), "{refused:?}");
    assert!(
        refused.stderr.contains("queue subject changed"),
        "{}",
        refused.stderr
    );

    // A longer timeout lengthens the consumer's ack wait by as much.
    let ack_wait = || {
        rt.block_on(async {
            let nats = cluster.nats.admin().await.unwrap();
            let js = async_nats::jetstream::new(nats);
            let name = |s: &str| shoal_api::Name::new(s).unwrap();
            let stream =
                shoal_api::subjects::queue_stream(&name("default"), &name("fair"), &name("worker"));
            let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
                .get_stream(&stream)
                .await
                .unwrap()
                .get_consumer(shoal_api::subjects::QUEUE_CONSUMER)
                .await
                .unwrap();
            consumer.info().await.unwrap().config.ack_wait
        })
    };
    let before = ack_wait();
    let longer = fair_jobs("fair.in").replace("timeout = \"2s\"", "timeout = \"5s\"");
    std::fs::write(&path, longer).unwrap();
    cluster.ok(&["apply", &path.display().to_string()]).unwrap();
    assert_eq!(ack_wait() - before, Duration::from_secs(3));
}
