//! Many schedulers, one leader: real scheduler processes sharing a real
//! nats-server, real hosts and real components. Leaders are killed and
//! frozen mid-stream; writes race; NATS goes away.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use shoal_api::Digest;
use shoal_api::resources::{AppDetail, EventReason, PodState, RolloutStatus};
use shoal_api::wire::ReplicaState;
use shoal_tests::cluster::Cluster;
use shoal_tests::control::{self, HeartbeatWatch};

/// An app of one worker, `replicas` copies, its template marked by `mark`.
fn worker_spec(app: &str, replicas: u32, mark: &str) -> String {
    format!(
        "name = \"{app}\"\n[components.w]\nsource = \"w.wasm\"\nkind = \"worker\"\nreplicas = {replicas}\nlimits = {{ memory = \"16MiB\" }}\nenv = {{ MARK = \"{mark}\" }}\n"
    )
}

/// Uploads the echo worker once (through an apply with the CLI) and
/// returns its digest, for applies sent straight to the API.
fn upload_worker(cluster: &Cluster) -> Digest {
    let spec = cluster
        .spec(
            "seed.toml",
            "name = \"seed\"\n[components.w]\nsource = \"SOURCE(echo-worker)\"\nkind = \"worker\"\nreplicas = 0\nlimits = { memory = \"16MiB\" }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    Digest::of(&shoal_tests::wasm_bytes("echo-worker").unwrap())
}

fn apply_body(
    app: &str,
    replicas: u32,
    mark: &str,
    digest: Digest,
    if_revision: Option<u64>,
) -> serde_json::Value {
    json!({
        "file": format!("{app}.toml"),
        "spec": worker_spec(app, replicas, mark),
        "digests": { "w": digest },
        "if_revision": if_revision,
    })
}

fn describe(port: u16, token: &str, app: &str) -> Option<AppDetail> {
    let reply = control::get(port, token, &format!("/v1/apps/default/{app}")).ok()?;
    (reply.status == 200).then(|| serde_json::from_str(&reply.body).unwrap())
}

fn rollout(port: u16, token: &str, app: &str) -> Option<RolloutStatus> {
    let reply = control::get(port, token, &format!("/v1/apps/default/{app}/rollout")).ok()?;
    (reply.status == 200).then(|| serde_json::from_str(&reply.body).unwrap())
}

/// Whether `app` runs exactly `replicas` copies, all of its current
/// template marked `mark`, as the scheduler on `port` sees it.
fn in_effect(port: u16, token: &str, app: &str, replicas: u32, mark: &str) -> Result<(), String> {
    let detail = describe(port, token, app).ok_or("not found")?;
    let c = &detail.spec.components[&shoal_api::Name::new("w").unwrap()];
    let stored_mark = c.env.get("MARK").cloned().unwrap_or_default();
    if c.replicas != replicas || stored_mark != mark {
        return Err(format!(
            "stored {} replicas marked {stored_mark}, wanted {replicas} marked {mark}",
            c.replicas
        ));
    }
    let status = rollout(port, token, app).ok_or("no rollout status")?;
    let pod = status.pods.first().ok_or("no pod")?;
    let running: Vec<_> = detail
        .pods
        .iter()
        .filter(|p| matches!(p.state, PodState::Host(ReplicaState::Running)))
        .collect();
    let current = running.iter().all(|p| p.revision == pod.generation);
    if running.len() as u32 != replicas
        || detail.pods.len() as u32 != replicas
        || !current
        || pod.old != 0
    {
        return Err(format!(
            "{} running of {} pods ({} old), generation {}: {:?}",
            running.len(),
            detail.pods.len(),
            pod.old,
            pod.generation,
            detail
                .pods
                .iter()
                .map(|p| (p.id.to_string(), p.revision))
                .collect::<Vec<_>>()
        ));
    }
    Ok(())
}

/// Waits until some scheduler among `ports` leads, other than `not`.
fn wait_leader(
    cluster: &Cluster,
    token: &str,
    ports: &[u16],
    not: Option<u16>,
    limit: Duration,
) -> (u16, u64) {
    cluster
        .wait_until("a leader", limit, |_| {
            for port in ports {
                if let Ok(Some((leader, epoch))) = control::leader(*port, token)
                    && Some(leader) != not
                    && ports.contains(&leader)
                {
                    return Ok(Some((leader, epoch)));
                }
            }
            Ok(None)
        })
        .unwrap()
}

/// Sends an apply (or a scale, when `scale`) to the scheduler on `port`;
/// a 409 (another scheduler's write not yet seen here) is sent again.
fn change(
    port: u16,
    token: &str,
    app: &str,
    replicas: u32,
    mark: &str,
    digest: Digest,
    scale: bool,
) -> u16 {
    for _ in 0..5 {
        let reply = if scale {
            control::post(
                port,
                token,
                &format!("/v1/apps/default/{app}/scale"),
                &json!({ "component": "w", "replicas": replicas }),
            )
        } else {
            control::post(
                port,
                token,
                "/v1/apps",
                &apply_body(app, replicas, mark, digest, None),
            )
        }
        .unwrap();
        if reply.status != 409 {
            assert!(
                (200..300).contains(&reply.status),
                "{app}: {} {}",
                reply.status,
                reply.body
            );
            return reply.status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{app}: conflicts kept coming");
}

/// Rounds of the failover drill: `SHOAL_FAILOVER_ROUNDS`, else `default`.
fn rounds(default: usize) -> usize {
    std::env::var("SHOAL_FAILOVER_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

fn failover_drill(rounds: usize) {
    let mut cluster = Cluster::start().unwrap();
    let token = cluster.admin_token().unwrap();
    cluster.start_standby().unwrap();
    cluster.start_standby().unwrap();
    cluster.start_host("h1", "zone=a").unwrap();
    cluster.start_host("h2", "zone=b").unwrap();
    let digest = upload_worker(&cluster);
    let watch = HeartbeatWatch::start(&cluster.nats).unwrap();
    let apps = ["a0", "a1", "a2", "a3", "a4"];
    let mut wanted: BTreeMap<&str, (u32, String)> = BTreeMap::new();
    let mut takeovers = Vec::new();
    for round in 0..rounds {
        let ports = cluster.scheduler_ports();
        let (leader, epoch) = wait_leader(&cluster, &token, &ports, None, Duration::from_secs(20));
        let others: Vec<u16> = ports.iter().copied().filter(|p| *p != leader).collect();
        let mut killed_at = None;
        for i in 0..100usize {
            if i == 50 {
                cluster.kill_scheduler_on(leader);
                killed_at = Some(Instant::now());
            }
            let app = apps[i % apps.len()];
            let port = others[i % others.len()];
            let scale = i % 3 == 0 && wanted.contains_key(app);
            let replicas = ((i * 7 + round) % 4) as u32;
            let mark = if scale {
                wanted[app].1.clone()
            } else {
                format!("r{round}i{i}")
            };
            change(port, &token, app, replicas, &mark, digest, scale);
            wanted.insert(app, (replicas, mark));
        }
        let killed_at = killed_at.unwrap();
        let (new_leader, new_epoch) = wait_leader(
            &cluster,
            &token,
            &others,
            Some(leader),
            Duration::from_secs(10),
        );
        assert!(
            new_epoch > epoch,
            "round {round}: epoch {new_epoch} after {epoch}"
        );
        for (app, (replicas, mark)) in &wanted {
            cluster
                .wait_until(
                    &format!("round {round}: {app} in effect"),
                    Duration::from_secs(30),
                    |_| {
                        Ok(in_effect(new_leader, &token, app, *replicas, mark)
                            .map_err(|e| anyhow::anyhow!(e))
                            .ok())
                    },
                )
                .unwrap();
        }
        // The copies started after the kill are the new leader's: the
        // first one says when it began to act.
        let acted = watch
            .first_new_copy_after(killed_at + Duration::from_millis(300))
            .expect("the new leader started nothing");
        let took = acted.duration_since(killed_at);
        takeovers.push(took);
        assert!(
            took <= Duration::from_secs(5),
            "round {round}: the new leader acted {took:?} after the kill"
        );
        let twice = watch.twice();
        assert!(
            twice.is_empty(),
            "round {round}: replicas ran twice: {twice:?}"
        );
        cluster.restart_scheduler_on(leader).unwrap();
    }
    takeovers.sort();
    println!(
        "failover over {rounds} rounds: median {:?}, max {:?}",
        takeovers[takeovers.len() / 2],
        takeovers[takeovers.len() - 1]
    );
}

#[test]
fn the_leader_killed_mid_stream_is_replaced_and_every_accepted_change_holds() {
    failover_drill(rounds(10));
}

/// The long drill: `cargo test -p shoal-tests --test control_plane -- --ignored`.
#[test]
#[ignore]
fn the_leader_killed_a_hundred_times() {
    failover_drill(rounds(100));
}

#[test]
fn a_frozen_leader_is_fenced_by_hosts_and_steps_down() {
    let mut cluster = Cluster::start().unwrap();
    let token = cluster.admin_token().unwrap();
    cluster.start_standby().unwrap();
    cluster.start_host("h1", "").unwrap();
    let digest = upload_worker(&cluster);
    let ports = cluster.scheduler_ports();
    let (old, epoch) = wait_leader(&cluster, &token, &ports, None, Duration::from_secs(20));
    let other = ports.iter().copied().find(|p| *p != old).unwrap();
    change(other, &token, "steady", 2, "one", digest, false);
    cluster
        .wait_until("steady placed", Duration::from_secs(20), |_| {
            Ok(in_effect(other, &token, "steady", 2, "one").ok())
        })
        .unwrap();

    // Frozen past its lease: the other scheduler takes over.
    cluster.scheduler_on(old).unwrap().pause();
    let (new, new_epoch) = wait_leader(
        &cluster,
        &token,
        &[other],
        Some(old),
        Duration::from_secs(10),
    );
    assert_eq!(new, other);
    assert!(new_epoch > epoch);
    // The new leader acts: a change goes into effect through it.
    change(other, &token, "steady", 3, "one", digest, true);
    cluster
        .wait_until(
            "steady scaled by the new leader",
            Duration::from_secs(20),
            |_| Ok(in_effect(other, &token, "steady", 3, "one").ok()),
        )
        .unwrap();

    // A command under the old epoch, sent with the schedulers' own NATS
    // credential, as the frozen leader's would be: the host refuses it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let reply: shoal_api::wire::CommandReply = rt.block_on(async {
        let nats = cluster
            .nats
            .client_as("scheduler", "_INBOX.scheduler")
            .await
            .unwrap();
        let command = shoal_api::wire::FencedCommand {
            epoch,
            command: shoal_api::wire::HostCommand::Stop {
                id: shoal_api::wire::ReplicaId {
                    namespace: shoal_api::Name::new("default").unwrap(),
                    app: shoal_api::Name::new("steady").unwrap(),
                    pod: shoal_api::Name::new("w").unwrap(),
                    index: 0,
                },
                revision: None,
            },
        };
        let reply = nats
            .request(
                shoal_api::subjects::host_commands("h1"),
                serde_json::to_vec(&command).unwrap().into(),
            )
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    });
    assert_eq!(
        reply,
        shoal_api::wire::CommandReply::StaleEpoch {
            epoch,
            newest: new_epoch
        }
    );

    // Woken up, the old leader learns it lost the lease, steps down and
    // changes nothing: the replicas stay as the new leader left them.
    cluster.scheduler_on(old).unwrap().resume();
    cluster
        .wait_until("the old leader follows", Duration::from_secs(10), |_| {
            Ok(control::leader(old, &token)?.filter(|(l, _)| *l == other))
        })
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // `shoal get schedulers` through either shows both, the new leader marked.
    for port in [old, other] {
        cluster.use_scheduler(port);
        let out = cluster.shoal_as(&token, &["get", "schedulers"]).unwrap();
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        let table = out.stdout;
        let leader_line = table
            .lines()
            .find(|l| l.contains("leader"))
            .unwrap_or_else(|| panic!("{table}"));
        assert!(leader_line.contains(&format!(":{other}")), "{table}");
        assert!(leader_line.contains(&new_epoch.to_string()), "{table}");
        assert_eq!(table.matches("standby").count(), 1, "{table}");
    }
    in_effect(other, &token, "steady", 3, "one").unwrap();
    in_effect(old, &token, "steady", 3, "one").unwrap();
    // The schedulers are cluster machinery: an editor of one namespace
    // may not list them.
    // (Made through the first scheduler, whose API the admin's context names.)
    cluster.use_scheduler(cluster.scheduler_ports()[0]);
    let editor = cluster.token("eve", "edit", Some("default")).unwrap();
    let refused = control::get(other, &editor, "/v1/schedulers").unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    let out = cluster.all_output();
    assert!(
        out.contains("stepping down") || out.contains("no longer leads"),
        "{out}"
    );
}

#[test]
fn of_two_concurrent_applies_one_wins_and_the_other_gets_409() {
    let mut cluster = Cluster::start().unwrap();
    let token = cluster.admin_token().unwrap();
    let other = cluster.start_standby().unwrap();
    let first = cluster.scheduler_ports()[0];
    cluster.start_host("h1", "").unwrap();
    let digest = upload_worker(&cluster);
    change(first, &token, "race", 1, "start", digest, false);
    for round in 0..5 {
        let revision = cluster
            .wait_until("both schedulers agree", Duration::from_secs(10), |_| {
                let a = describe(first, &token, "race").map(|d| d.summary.revision);
                let b = describe(other, &token, "race").map(|d| d.summary.revision);
                Ok(a.filter(|a| Some(*a) == b))
            })
            .unwrap();
        let marks = [format!("left{round}"), format!("right{round}")];
        let sent: Vec<(u16, String)> = std::thread::scope(|s| {
            let calls: Vec<_> = [first, other]
                .into_iter()
                .zip(&marks)
                .map(|(port, mark)| {
                    let body = apply_body("race", 2, mark, digest, Some(revision));
                    let token = &token;
                    s.spawn(move || {
                        let reply = control::post(port, token, "/v1/apps", &body).unwrap();
                        (reply.status, reply.body)
                    })
                })
                .collect();
            calls.into_iter().map(|c| c.join().unwrap()).collect()
        });
        let statuses: Vec<u16> = sent.iter().map(|(s, _)| *s).collect();
        let winners: Vec<usize> = (0..2).filter(|i| statuses[*i] == 200).collect();
        assert_eq!(winners.len(), 1, "round {round}: {sent:?}");
        let loser = 1 - winners[0];
        assert_eq!(statuses[loser], 409, "round {round}: {sent:?}");
        assert!(sent[loser].1.contains("revision"), "{}", sent[loser].1);
        let mark = &marks[winners[0]];
        for port in [first, other] {
            cluster
                .wait_until(
                    &format!("round {round}: the winner runs"),
                    Duration::from_secs(30),
                    |_| Ok(in_effect(port, &token, "race", 2, mark).ok()),
                )
                .unwrap();
        }
    }
}

#[test]
fn nats_gone_for_ten_seconds_moves_nothing_but_a_dead_host_moves_at_once() {
    let mut cluster = Cluster::start().unwrap();
    let token = cluster.admin_token().unwrap();
    let port = cluster.scheduler_ports()[0];
    for h in ["h1", "h2", "h3"] {
        cluster.start_host(h, "").unwrap();
    }
    let digest = upload_worker(&cluster);
    change(port, &token, "calm", 6, "one", digest, false);
    cluster
        .wait_until("calm placed", Duration::from_secs(20), |_| {
            Ok(in_effect(port, &token, "calm", 6, "one").ok())
        })
        .unwrap();
    let before = placement(port, &token, "calm");
    let commands_before = commands_sent(port, &token, "calm");

    cluster.nats.kill();
    std::thread::sleep(Duration::from_secs(10));
    cluster.nats.restart().unwrap();
    // Every host is back; nothing moved, and no start or stop went out.
    cluster
        .wait_until("the hosts are back", Duration::from_secs(30), |c| {
            Ok(c.hosts()?
                .iter()
                .all(|h| h.state == shoal_api::resources::HostState::Ready)
                .then_some(()))
        })
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(placement(port, &token, "calm"), before);
    assert_eq!(commands_sent(port, &token, "calm"), commands_before);
    let out = cluster.all_output();
    assert!(!out.contains("host lost"), "{out}");

    // One host dies for real: its replicas move within 5 s.
    let victim = before.values().next().unwrap().clone();
    cluster.kill_host(&victim);
    let killed = Instant::now();
    cluster
        .wait_until(
            "the dead host's replicas moved",
            Duration::from_secs(10),
            |_| {
                let now = placement(port, &token, "calm");
                Ok((now.len() == 6 && now.values().all(|h| *h != victim)).then_some(()))
            },
        )
        .unwrap();
    let took = killed.elapsed();
    assert!(took <= Duration::from_secs(5), "moved after {took:?}");
}

/// How many starts and stops the scheduler recorded for `app`.
fn commands_sent(port: u16, token: &str, app: &str) -> usize {
    describe(port, token, app)
        .map(|d| {
            d.events
                .iter()
                .filter(|e| e.reason == EventReason::Placed || e.reason == EventReason::Stopped)
                .count()
        })
        .unwrap_or_default()
}

/// Replica → host of `app`'s running replicas.
fn placement(port: u16, token: &str, app: &str) -> BTreeMap<String, String> {
    describe(port, token, app)
        .map(|d| {
            d.pods
                .iter()
                .filter(|p| matches!(p.state, PodState::Host(ReplicaState::Running)))
                .filter_map(|p| Some((p.id.to_string(), p.host.as_ref()?.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

const AUTOSCALED: &str = "name = \"auto\"\n[components.worker]\nsource = \"SOURCE(queue-worker)\"\nkind = \"worker\"\nqueue = \"auto.in\"\nlimits = { memory = \"16MiB\", timeout = \"1s\", concurrency = 1 }\nmessaging = { publish = [\"jobs.>\"] }\nautoscale = { min = 0, max = 4, target_queue_depth = 100, idle = \"60s\" }\nplacement = { labels = { role = \"work\" } }\n";

const ONE_SHOT: &str = "name = \"once\"\n[components.job]\nsource = \"SOURCE(crash-job)\"\nkind = \"job\"\nenv = { EXIT_CODE = \"0\" }\nlimits = { memory = \"16MiB\", timeout = \"1s\" }\nplacement = { labels = { role = \"jobs\" } }\n";

fn web(cluster: &Cluster, mark: &str, ready: bool) -> String {
    cluster
        .spec(
            &format!("web-{mark}.toml"),
            &format!(
                "name = \"web\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/\"\nreplicas = 1\nenv = {{ GREETING = \"{mark}\", READY = \"{ready}\" }}\nhealth = {{ path = \"/healthz\", interval = \"200ms\", failure_threshold = 1 }}\nrollout = {{ max_surge = 1, max_unavailable = 0, progress_deadline = \"120s\" }}\nplacement = {{ labels = {{ role = \"work\" }} }}\n"
            ),
        )
        .unwrap()
}

fn desired_of(cluster: &Cluster, app: &str) -> u32 {
    cluster
        .apps()
        .unwrap()
        .iter()
        .filter(|a| a.name.as_str() == app)
        .flat_map(|a| &a.components)
        .map(|c| c.desired)
        .sum()
}

fn deadline_of(cluster: &Cluster) -> u64 {
    let out = cluster
        .ok(&["rollout", "status", "web", "-o", "json"])
        .unwrap();
    let status: RolloutStatus = serde_json::from_str(&out).unwrap();
    status.pods[0]
        .deadline_ms
        .expect("a rollout in progress has a deadline")
}

#[test]
fn a_restarted_scheduler_keeps_scaled_counts_finished_jobs_and_rollout_deadlines() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "role=work").unwrap();
    cluster.start_host("h2", "role=jobs").unwrap();

    // An autoscaled worker under a backlog that lasts (each job 50 ms).
    let auto = cluster.spec("auto.toml", AUTOSCALED).unwrap();
    cluster.ok(&["apply", &auto]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let js = async_nats::jetstream::new(cluster.nats.admin().await.unwrap());
        let mut acks = Vec::new();
        for i in 0..3000 {
            acks.push(
                js.publish("ns.default.auto.in", format!("slow-{i}").into())
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    });
    cluster
        .wait_until("scaled to 4", Duration::from_secs(30), |c| {
            Ok((desired_of(c, "auto") == 4).then_some(()))
        })
        .unwrap();

    // A job that completes.
    let once = cluster.spec("once.toml", ONE_SHOT).unwrap();
    cluster.ok(&["apply", &once]).unwrap();
    cluster
        .wait_until("the job completed", Duration::from_secs(30), |c| {
            Ok(c.pods()?
                .iter()
                .any(|p| matches!(p.state, PodState::Host(ReplicaState::Completed)))
                .then_some(()))
        })
        .unwrap();

    // A rollout that cannot progress (the new version never gets ready).
    cluster.ok(&["apply", &web(&cluster, "v1", true)]).unwrap();
    cluster
        .wait_until("web v1 ready", Duration::from_secs(30), |c| {
            Ok(c.pods()?
                .iter()
                .any(|p| p.id.app.as_str() == "web" && p.ready)
                .then_some(()))
        })
        .unwrap();
    cluster.ok(&["apply", &web(&cluster, "v2", false)]).unwrap();
    let deadline = cluster
        .wait_until("the rollout has a deadline", Duration::from_secs(10), |c| {
            let out = c.ok(&["rollout", "status", "web", "-o", "json"])?;
            let status: RolloutStatus = serde_json::from_str(&out)?;
            Ok(status.pods[0].deadline_ms)
        })
        .unwrap();

    // The scheduler restarts; the hosts' heartbeats say what runs.
    let watch = HeartbeatWatch::start(&cluster.nats).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    cluster.kill_scheduler();
    std::thread::sleep(Duration::from_millis(500));
    cluster.start_scheduler().unwrap();
    // Until it leads and after: the worker keeps its 4 replicas.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(8) {
        if let Ok(apps) = cluster.apps() {
            let desired: u32 = apps
                .iter()
                .filter(|a| a.name.as_str() == "auto")
                .flat_map(|a| &a.components)
                .map(|c| c.desired)
                .sum();
            assert_eq!(desired, 4, "the autoscaled count after the restart");
        }
        let running = watch
            .current()
            .iter()
            .filter(|(id, _)| id.starts_with("default/auto/"))
            .count();
        assert_eq!(running, 4, "the worker's replicas after the restart");
        std::thread::sleep(Duration::from_millis(250));
    }
    // The rollout's deadline is the one set before the restart.
    let after = deadline_of(&cluster);
    assert!(
        after.abs_diff(deadline) < 1_000,
        "deadline {deadline} before the restart, {after} after"
    );

    // The job's host restarts and forgets the job: it is not run again.
    cluster.stop_host("h2", Duration::from_secs(15)).unwrap();
    cluster.start_host("h2", "role=jobs").unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (_, h2) = cluster.hosts.iter_mut().find(|(n, _)| n == "h2").unwrap();
    let reran: Vec<String> = h2
        .output()
        .into_iter()
        .filter(|l| l.contains("crash-job on"))
        .collect();
    assert!(reran.is_empty(), "the job ran again: {reran:?}");
}

/// A queue worker of four replicas, four jobs at a time each, for the NATS
/// node drill.
const DRILL_JOBS: &str = r#"
name = "drill"

[components.worker]
source = "SOURCE(queue-worker)"
kind = "worker"
queue = "drill.in"
max_deliver = 5
replicas = 4
limits = { memory = "16MiB", timeout = "2s", concurrency = 4 }
messaging = { publish = ["jobs.>"] }
"#;

/// What JetStream says of `stream`.
async fn stream_info(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> anyhow::Result<async_nats::jetstream::stream::Info> {
    Ok(js.get_stream(stream).await?.info().await?.clone())
}

/// One apply of the drill's stream and what the API answered.
struct Sent {
    app: &'static str,
    replicas: u32,
    mark: String,
    at: Instant,
    /// The status, or none when the call got no answer.
    status: Option<u16>,
}

/// Applies changes to three apps, one every 50 ms, until `stop`.
fn apply_stream(
    port: u16,
    token: &str,
    digest: Digest,
    round: usize,
    stop: &AtomicBool,
) -> Vec<Sent> {
    let apps = ["n0", "n1", "n2"];
    let mut sent = Vec::new();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let app = apps[i % apps.len()];
        let replicas = ((i / apps.len() + round) % 3) as u32;
        let mark = format!("r{round}i{i}");
        let at = Instant::now();
        let status = control::post(
            port,
            token,
            "/v1/apps",
            &apply_body(app, replicas, &mark, digest, None),
        )
        .ok()
        .map(|r| r.status);
        sent.push(Sent {
            app,
            replicas,
            mark,
            at,
            status,
        });
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    sent
}

/// Publishes `count` jobs to `subject` through JetStream, each with a
/// message id so that one published again after a lost acknowledgement
/// is stored once, and tries each until JetStream acknowledges it.
async fn publish_burst(
    js: &async_nats::jetstream::Context,
    subject: &str,
    round: usize,
    count: usize,
) {
    let mut pending: Vec<usize> = (0..count).collect();
    while !pending.is_empty() {
        let mut acks = Vec::new();
        for i in &pending {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("r{round}-{i}").as_str());
            let payload = format!("r{round}-job-{i}").into_bytes().into();
            let ack = js
                .publish_with_headers(subject.to_string(), headers, payload)
                .await;
            acks.push((*i, ack));
        }
        let mut failed = Vec::new();
        for (i, ack) in acks {
            let stored = match ack {
                Ok(ack) => tokio::time::timeout(Duration::from_secs(3), ack)
                    .await
                    .is_ok_and(|a| a.is_ok()),
                Err(_) => false,
            };
            if !stored {
                failed.push(i);
            }
        }
        if !failed.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        pending = failed;
    }
}

/// The drill of a NATS cluster node's death: during a stream of applies
/// and a queue burst, one node is killed with SIGKILL, each of the three
/// in turn. Every acknowledged apply holds; every message is processed;
/// redeliveries (the most messages that could have run twice) are counted
/// and printed, as is how long applies stalled.
#[test]
fn a_nats_node_killed_in_turn_loses_no_acknowledged_apply_and_no_message() {
    let mut cluster = Cluster::start_on_nats_cluster(3).unwrap();
    let token = cluster.admin_token().unwrap();
    let port = cluster.scheduler_ports()[0];
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    let digest = upload_worker(&cluster);
    let jobs = cluster.spec("drill.toml", DRILL_JOBS).unwrap();
    cluster.ok(&["apply", &jobs]).unwrap();
    cluster
        .wait_until("four workers running", Duration::from_secs(30), |c| {
            let running = c
                .pods()?
                .iter()
                .filter(|p| p.id.app.as_str() == "drill")
                .filter(|p| matches!(p.state, PodState::Host(ReplicaState::Running)))
                .count();
            Ok((running == 4).then_some(()))
        })
        .unwrap();
    let name = |s: &str| shoal_api::Name::new(s).unwrap();
    let queue =
        shoal_api::subjects::queue_stream(&name("default"), &name("drill"), &name("worker"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let nats = rt.block_on(cluster.nats.admin()).unwrap();
    let js = {
        let _entered = rt.enter();
        async_nats::jetstream::new(nats.clone())
    };
    // What Shoal made keeps three copies.
    for stream in [
        format!("KV_{}", shoal_api::subjects::APPS_BUCKET),
        queue.clone(),
    ] {
        let info = rt.block_on(stream_info(&js, &stream)).unwrap();
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }

    const BURST: usize = 5_000;
    let mut stalls = Vec::new();
    for round in 0..3 {
        let stop = AtomicBool::new(false);
        let (sent, killed_at) = std::thread::scope(|s| {
            let applies = s.spawn(|| apply_stream(port, &token, digest, round, &stop));
            let burst =
                s.spawn(|| rt.block_on(publish_burst(&js, "ns.default.drill.in", round, BURST)));
            std::thread::sleep(Duration::from_secs(1));
            cluster.nats.kill_node(round);
            let killed_at = Instant::now();
            burst.join().unwrap();
            // Applies go on long enough after the kill for JetStream to
            // elect new stream leaders (nats-server's raft waits 4 to 9 s).
            let until = killed_at + Duration::from_secs(12);
            std::thread::sleep(until.saturating_duration_since(Instant::now()));
            stop.store(true, Ordering::Relaxed);
            (applies.join().unwrap(), killed_at)
        });
        cluster.nats.restart_node(round).unwrap();

        // How long applies went unanswered: from the kill to the first
        // acknowledged apply sent after it.
        let resumed = sent
            .iter()
            .find(|s| s.at > killed_at && s.status == Some(200))
            .map(|s| s.at.duration_since(killed_at))
            .expect("no apply was acknowledged after the kill");
        stalls.push(resumed);
        let acknowledged = sent.iter().filter(|s| s.status == Some(200)).count();
        println!(
            "round {round}: node {} killed; {acknowledged} of {} applies acknowledged; applies resumed {resumed:?} after the kill",
            round + 1,
            sent.len()
        );

        // Every app holds its last acknowledged apply, or a later one that
        // got no answer but may have been stored.
        for app in ["n0", "n1", "n2"] {
            let mine: Vec<&Sent> = sent.iter().filter(|s| s.app == app).collect();
            let last_ok = mine
                .iter()
                .rposition(|s| s.status == Some(200))
                .expect("an acknowledged apply per app");
            let candidates = &mine[last_ok..];
            cluster
                .wait_until(
                    &format!("round {round}: {app} holds its last acknowledged apply"),
                    Duration::from_secs(60),
                    |_| {
                        Ok(candidates
                            .iter()
                            .filter(|s| s.status != Some(200) || std::ptr::eq(**s, candidates[0]))
                            .any(|s| in_effect(port, &token, app, s.replicas, &s.mark).is_ok())
                            .then_some(()))
                    },
                )
                .unwrap();
        }
        // The killed node is back in the cluster before the next is killed.
        cluster
            .wait_until("the node caught up", Duration::from_secs(30), |_| {
                let info = rt.block_on(stream_info(&js, &queue));
                Ok(info.ok().and_then(|i| i.cluster).and_then(|c| {
                    (c.replicas.len() == 2 && c.replicas.iter().all(|r| r.current)).then_some(())
                }))
            })
            .unwrap();
    }

    // Every message was processed: the work queue is empty and its
    // consumer acknowledged up to the last one; none went to dead letters.
    let (published, redelivered) = cluster
        .wait_until("the queue drained", Duration::from_secs(120), |_| {
            let state = rt.block_on(async {
                let mut stream = js.get_stream(&queue).await?;
                let stream_state = stream.info().await?.state.clone();
                let mut consumer: async_nats::jetstream::consumer::PullConsumer = stream
                    .get_consumer(shoal_api::subjects::QUEUE_CONSUMER)
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                let info = consumer.info().await?.clone();
                anyhow::Ok((stream_state, info))
            });
            Ok(state.ok().and_then(|(stream, consumer)| {
                (stream.messages == 0
                    && consumer.num_ack_pending == 0
                    && consumer.ack_floor.stream_sequence == stream.last_sequence)
                    .then(|| {
                        (
                            stream.last_sequence,
                            consumer.delivered.consumer_sequence - stream.last_sequence,
                        )
                    })
            }))
        })
        .unwrap();
    assert_eq!(published, 3 * BURST as u64, "each job stored once");
    let dead = rt.block_on(async {
        js.get_stream(shoal_api::subjects::DEAD_LETTER_STREAM)
            .await
            .unwrap()
            .get_last_raw_message_by_subject("shoal.v1.dead.default.drill.worker")
            .await
    });
    assert!(dead.is_err(), "a job was dead-lettered");
    stalls.sort();
    println!(
        "NATS node loss: {published} jobs all processed, {redelivered} redelivered (at most that many ran twice); applies resumed after {:?} (median) and {:?} (worst)",
        stalls[stalls.len() / 2],
        stalls[stalls.len() - 1]
    );
    assert!(
        stalls[stalls.len() - 1] < Duration::from_secs(15),
        "applies stalled {stalls:?}"
    );
}
