//! The trust boundary, attacked: a hostile tenant's guest, forged NATS
//! messages, other namespaces' routes and subjects, secrets on the wire,
//! and every bound a spec or a guest could push past. Real nats-server
//! with authentication on, real scheduler and host processes, real
//! components.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use shoal_api::resources::AppStatus;
use shoal_tests::cluster::Cluster;
use shoal_tests::http_request;
use shoal_tests::specs::HELLO;

const LIMIT: Duration = Duration::from_secs(20);

/// A toolbox in namespace `other`, granted every subject of its namespace.
const EVIL: &str = r#"
name = "evil"
namespace = "other"
[components.toolbox]
source = "SOURCE(toolbox)"
kind = "worker"
limits = { memory = "16MiB", concurrency = 4 }
messaging = { publish = [">"] }
keyvalue = true
"#;

/// Invokes `target` in `namespace` with `command`: Ok(stdout) or Err(stderr).
fn run(cluster: &Cluster, namespace: &str, target: &str, command: &str) -> Result<String, String> {
    let out = cluster
        .shoal(&["invoke", target, "-n", namespace, "--data", command])
        .unwrap();
    if out.code == Some(0) {
        Ok(out.stdout.trim_end().to_string())
    } else {
        Err(out.stderr.trim_end().to_string())
    }
}

fn apply(cluster: &Cluster, file: &str, body: &str) -> Result<String, String> {
    let path = cluster.spec(file, body).unwrap();
    let out = cluster.shoal(&["apply", &path]).unwrap();
    if out.code == Some(0) {
        Ok(out.stdout)
    } else {
        Err(out.stderr)
    }
}

/// A cluster with one host, `default/hello` on `/` and `other/evil`.
fn tenants() -> (Cluster, std::net::SocketAddr) {
    let mut cluster = Cluster::start().unwrap();
    let ingress = cluster.start_host("h1", "").unwrap();
    cluster.create_namespace("other").unwrap();
    apply(&cluster, "hello.toml", HELLO).unwrap();
    apply(&cluster, "evil.toml", EVIL).unwrap();
    cluster
        .wait_until("both tenants serve", LIMIT, |c| {
            let hello = http_request(ingress, "GET", "/", Duration::from_secs(2))
                .is_ok_and(|r| r.status == 200);
            let evil = run(c, "other", "evil/toolbox", "env X").is_ok();
            Ok((hello && evil).then_some(()))
        })
        .unwrap();
    (cluster, ingress)
}

/// Collects every message on `subjects` into the returned list.
fn capture(
    rt: &tokio::runtime::Runtime,
    nats: &async_nats::Client,
    subjects: &[&str],
) -> Arc<Mutex<Vec<async_nats::Message>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    for subject in subjects {
        let mut sub = rt.block_on(nats.subscribe(subject.to_string())).unwrap();
        let seen = seen.clone();
        rt.spawn(async move {
            while let Some(msg) = sub.next().await {
                seen.lock().unwrap().push(msg);
            }
        });
    }
    rt.block_on(nats.flush()).unwrap();
    seen
}

#[test]
fn a_hostile_guest_cannot_command_hosts_or_reach_other_namespaces() {
    let (cluster, ingress) = tenants();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(cluster.nats.admin()).unwrap();
    let seen = capture(
        &rt,
        &admin,
        &["shoal.v1.hosts.h1.cmd", "ns.default.>", "ns.other.>"],
    );
    let pods_before = cluster.ok(&["get", "pods", "-o", "json"]).unwrap();

    let stop =
        r#"{"command":"stop","id":{"namespace":"default","app":"hello","pod":"web","index":0}}"#;
    let forget = r#"{"command":"forget","namespace":"default","app":"hello","retain":[]}"#;
    for forged in [
        format!("publish shoal.v1.hosts.h1.cmd {stop}"),
        format!("publish shoal.v1.hosts.h1.cmd {forget}"),
        "publish $KV.shoal-apps.default.hello x".to_string(),
        "publish _INBOX.scheduler.x x".to_string(),
        "publish ns.default.orders x".to_string(),
    ] {
        let err = run(&cluster, "other", "evil/toolbox", &forged).expect_err(&forged);
        assert!(err.contains("may not publish"), "{forged}: {err}");
    }
    // What it may publish stays in its own namespace.
    assert_eq!(
        run(&cluster, "other", "evil/toolbox", "publish orders x").unwrap(),
        "ok"
    );
    std::thread::sleep(Duration::from_millis(500));
    let subjects: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|m| m.subject.to_string())
        .collect();
    assert_eq!(subjects, vec!["ns.other.orders".to_string()]);

    // The victim never noticed.
    let hello = http_request(ingress, "GET", "/login", LIMIT).unwrap();
    assert_eq!(hello.status, 200, "{}", hello.body);
    assert!(hello.body.contains("Hello from Shoal"), "{}", hello.body);
    let pods_after = cluster.ok(&["get", "pods", "-o", "json"]).unwrap();
    let restarts = |json: &str| -> Vec<(String, u64)> {
        let pods: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        pods.iter()
            .map(|p| {
                (
                    p["id"].to_string(),
                    p["restarts"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    };
    assert_eq!(restarts(&pods_before), restarts(&pods_after));
}

#[test]
fn specs_naming_reserved_subjects_are_refused() {
    let cluster = Cluster::start().unwrap();
    for (subject, key) in [
        ("shoal.v1.hosts.h1.cmd", "publish"),
        ("$KV.shoal-apps.>", "publish"),
        ("_INBOX.>", "publish"),
        ("shoal.v1.hosts.h1.cmd", "queue"),
    ] {
        let grant = if key == "queue" {
            format!("queue = {subject:?}")
        } else {
            format!("messaging = {{ publish = [{subject:?}] }}")
        };
        let body = format!(
            "name = \"bad\"\n[components.w]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\n{grant}\n"
        );
        let err = apply(&cluster, "bad.toml", &body).expect_err(subject);
        assert!(err.contains("is refused"), "{subject}: {err}");
    }
}

/// The events a client saw within half a second of quiet: the server's
/// permission errors come back this way.
async fn violations(events: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), events.recv()).await {
        out.push(e);
    }
    out
}

/// A NATS client with `who`'s credential, and the events it sees.
async fn client_with_events(
    cluster: &Cluster,
    who: &str,
    inbox: &str,
) -> anyhow::Result<(
    async_nats::Client,
    tokio::sync::mpsc::UnboundedReceiver<String>,
)> {
    let (tx, events) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_credentials_file(cluster.nats.creds(who)?)
        .await?
        .custom_inbox_prefix(inbox)
        .event_callback(move |e| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(e.to_string());
            }
        })
        .connect(cluster.nats.url())
        .await?;
    Ok((client, events))
}

/// Asserts that nats-server refused at least `n` of the client's
/// publishes and subscriptions, as permission-violation events.
fn assert_refused(
    rt: &tokio::runtime::Runtime,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    n: usize,
) {
    let seen = rt.block_on(violations(events));
    let refused = seen
        .iter()
        .filter(|e| e.contains("Permissions Violation"))
        .count();
    assert!(refused >= n, "{refused} refusals of {n}: {seen:?}");
}

#[test]
fn nats_itself_refuses_what_a_credential_does_not_allow() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.start_host("h2", "").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = cluster.nats.url();

    // No credential: refused at the door.
    let anonymous = rt.block_on(async_nats::connect(&url));
    let err = anonymous
        .map(|_| ())
        .expect_err("connected without a credential");
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );

    let admin = rt.block_on(cluster.nats.admin()).unwrap();
    let seen = capture(
        &rt,
        &admin,
        &[
            "shoal.v1.hosts.h2.heartbeat",
            "shoal.v1.hosts.*.cmd",
            "ns.team-b.>",
        ],
    );

    // A host's credential: its own heartbeat only, and no host commands.
    let (h1, mut events) = rt
        .block_on(client_with_events(&cluster, "host h1", "_INBOX.host-h1"))
        .unwrap();
    rt.block_on(async {
        h1.publish("shoal.v1.hosts.h2.heartbeat", "{}".into())
            .await
            .unwrap();
        h1.publish(
            "shoal.v1.hosts.h2.cmd",
            r#"{"command":"forget","namespace":"default","app":"x","retain":[]}"#.into(),
        )
        .await
        .unwrap();
        h1.publish("shoal.v1.hosts.h1.cmd", "{}".into())
            .await
            .unwrap();
        // A forged route, sending another app's traffic elsewhere: the
        // route table is the leader's to write.
        h1.publish(
            "$KV.shoal-routes.default.victim.web",
            r#"{"route":{"prefix":"/","namespace":"default","app":"victim","component":"web","ready":true},"ready_on":["h1"]}"#.into(),
        )
        .await
        .unwrap();
        // Another host's snapshot requests are not its to hear.
        let _ = h1.subscribe("shoal.v1.hosts.h2.resync").await;
        // Compiled code other hosts would load: the schedulers' to write.
        h1.publish("$O.shoal-artifacts.C.planted", "code".into())
            .await
            .unwrap();
        h1.publish("$O.shoal-artifacts.M.planted", "{}".into())
            .await
            .unwrap();
        let _ = h1.flush().await;
    });
    assert_refused(&rt, &mut events, 7);

    // A namespace's credential: its own namespace only.
    let (team_a, mut events) = rt
        .block_on(client_with_events(
            &cluster,
            "namespace team-a",
            "_INBOX.ns-team-a",
        ))
        .unwrap();
    rt.block_on(async {
        team_a
            .publish("ns.team-a.orders", "mine".into())
            .await
            .unwrap();
        team_a
            .publish("ns.team-b.orders", "theirs".into())
            .await
            .unwrap();
        let _sub = team_a.subscribe("ns.team-b.>").await.unwrap();
        let _sub = team_a.subscribe("shoal.>").await.unwrap();
        let _ = team_a.flush().await;
    });
    assert_refused(&rt, &mut events, 3);

    // None of the forged messages reached anyone.
    std::thread::sleep(Duration::from_millis(300));
    // No app runs, so the scheduler sends no command: every command seen
    // is forged, and so is a heartbeat of h2 that is not h2's.
    let forged: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| {
            m.subject.as_str() != "shoal.v1.hosts.h2.heartbeat"
                || !m.payload.starts_with(b"{\"host\":\"h2\"")
        })
        .map(|m| format!("{} {:?}", m.subject, m.payload))
        .collect();
    assert!(forged.is_empty(), "forged messages got through: {forged:?}");
}

#[test]
fn no_secret_value_crosses_the_wire_in_clear() {
    const SECRET: &str = "wire-s3cret-value-42";
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let admin = rt.block_on(cluster.nats.admin()).unwrap();
    let seen = capture(&rt, &admin, &[">", "$JS.>", "$KV.>", "$O.>"]);

    let file = cluster.dir().join("pw.txt");
    std::fs::write(&file, SECRET).unwrap();
    cluster
        .ok(&[
            "secret",
            "set",
            "db",
            "--from-file",
            &file.display().to_string(),
        ])
        .unwrap();
    apply(
        &cluster,
        "vault.toml",
        "name = \"vault\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nsecrets = [\"db\"]\nlimits = { memory = \"16MiB\", concurrency = 4 }\n",
    )
    .unwrap();
    // A subscriber on `>` answers "no responders" for every request, so
    // invoke only once the replica runs.
    cluster
        .wait_until("vault runs", LIMIT, |c| {
            Ok(c.apps()?
                .iter()
                .any(|a| a.name.as_str() == "vault" && a.status == AppStatus::Running)
                .then_some(()))
        })
        .unwrap();
    let answer = cluster
        .wait_until("the guest reads its secret", LIMIT, |c| {
            run(c, "default", "vault/toolbox", "secret db")
                .map(Some)
                .map_err(anyhow::Error::msg)
        })
        .unwrap_or_else(|e| {
            let last = run(&cluster, "default", "vault/toolbox", "secret db");
            panic!("{e}: {last:?}\n{}", cluster.all_output())
        });
    // The guest's own reply is the one place the value may appear: make
    // the check about everything else by leaving that out.
    assert_eq!(answer, SECRET);
    std::thread::sleep(Duration::from_millis(500));
    let messages = seen.lock().unwrap();
    let starts = messages
        .iter()
        .filter(|m| m.subject.as_str() == "shoal.v1.hosts.h1.cmd")
        .count();
    assert!(starts >= 1, "the start command was seen on the wire");
    let leaks: BTreeSet<String> = messages
        .iter()
        .filter(|m| {
            m.payload
                .windows(SECRET.len())
                .any(|w| w == SECRET.as_bytes())
        })
        .filter(|m| !m.subject.as_str().starts_with("shoal.v1.invoke."))
        .filter(|m| !m.subject.as_str().starts_with("_INBOX.scheduler"))
        .map(|m| m.subject.to_string())
        .collect();
    assert!(leaks.is_empty(), "secret in clear on {leaks:?}");
}

#[test]
fn routes_belong_to_the_namespace_that_serves_them() {
    let (cluster, ingress) = tenants();
    for route in ["/", "/login"] {
        let body = format!(
            "name = \"thief\"\nnamespace = \"other\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = {route:?}\n"
        );
        let err = apply(&cluster, "thief.toml", &body).expect_err(route);
        assert!(
            err.contains("which another namespace serves") && !err.contains("default/hello"),
            "{route}: {err}"
        );
    }
    // A route whose replica cannot start yet answers 503, never the
    // shorter route of another app.
    apply(
        &cluster,
        "login.toml",
        "name = \"login\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/login\"\nplacement = { labels = { zone = \"nowhere\" } }\n",
    )
    .unwrap();
    let reply = cluster
        .wait_until("the declared route is known", LIMIT, |_| {
            let r = http_request(ingress, "GET", "/login", Duration::from_secs(2))?;
            Ok((r.status == 503).then_some(r))
        })
        .unwrap();
    assert!(reply.body.contains("default/login/web"), "{}", reply.body);
    for _ in 0..20 {
        let r = http_request(ingress, "GET", "/login/x", LIMIT).unwrap();
        assert_eq!(r.status, 503, "{}", r.body);
    }
    assert_eq!(
        http_request(ingress, "GET", "/other", LIMIT)
            .unwrap()
            .status,
        200
    );
}

#[test]
fn every_bound_gives_a_clear_error_and_the_cluster_keeps_serving() {
    let (cluster, ingress) = tenants();
    let validate = |body: &str| -> String {
        let path = cluster.spec("bounds.toml", body).unwrap();
        let out = cluster.shoal(&["validate", &path]).unwrap();
        assert_eq!(out.code, Some(1), "accepted: {body}");
        out.stderr
    };
    let worker =
        "name = \"big\"\n[components.w]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\n";
    let err = validate(&format!(
        "{worker}queue = \"jobs\"\nautoscale = {{ min = 4294967295, max = 4294967295 }}\n"
    ));
    assert!(
        err.contains("autoscale.max") && err.contains("10000"),
        "{err}"
    );
    let err = validate(&format!(
        "{worker}limits = {{ timeout = \"18446744073709551615s\" }}\n"
    ));
    assert!(err.contains("too long"), "{err}");

    // Memory × concurrency past every host: pending, with the figure.
    apply(
        &cluster,
        "greedy.toml",
        &format!("{worker}limits = {{ memory = \"4GiB\", concurrency = 10000 }}\n"),
    )
    .unwrap();
    let describe = cluster
        .wait_until("a pending reason", LIMIT, |c| {
            let d = c.ok(&["describe", "app", "big"])?;
            Ok(d.contains("free").then_some(d))
        })
        .unwrap();
    assert!(describe.contains("no host has 40000GiB free"), "{describe}");

    // A full key-value bucket refuses the write; what it holds stays.
    assert_eq!(
        run(&cluster, "other", "evil/toolbox", "kv-set first kept").unwrap(),
        "ok"
    );
    let err = run(&cluster, "other", "evil/toolbox", "kv-fill huge 2000000").unwrap_err();
    assert!(err.contains("too large"), "{err}");
    let mut full = None;
    for i in 0..100 {
        if let Err(e) = run(
            &cluster,
            "other",
            "evil/toolbox",
            &format!("kv-fill k{i} 1000000"),
        ) {
            full = Some((i, e));
            break;
        }
    }
    let (written, err) = full.expect("the bucket never filled up");
    assert!(written >= 50, "full after {written} values: {err}");
    assert!(err.contains("full"), "{err}");
    assert_eq!(
        run(&cluster, "other", "evil/toolbox", "kv-get first").unwrap(),
        "kept"
    );

    // A guest flooding its output is never blocked; what passes the
    // budget is dropped and counted.
    assert_eq!(
        run(&cluster, "other", "evil/toolbox", "print 20000").unwrap(),
        "ok"
    );
    // The next line that passes, once the budget refills, says how many
    // were dropped.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        run(&cluster, "other", "evil/toolbox", "print 1").unwrap(),
        "ok"
    );
    let mut cluster = cluster;
    let output = cluster.all_output();
    let printed = output.matches("of 20000").count();
    assert!(printed < 20000, "every line was kept: {printed}");
    assert!(
        output.contains("over the log budget"),
        "no drop marker: {}",
        &output[output.len().saturating_sub(3000)..]
    );

    // Outbound HTTP to loopback: refused by name and after resolution.
    let port = ingress.port();
    let outbound = format!(
        "name = \"caller\"\nnamespace = \"other\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nlimits = {{ memory = \"16MiB\", concurrency = 4 }}\nallowed_hosts = [\"localhost:{port}\", \"127.0.0.1\"]\n"
    );
    apply(&cluster, "caller.toml", &outbound).unwrap();
    let by_address = cluster
        .wait_until("the caller runs", LIMIT, |c| {
            Ok(run(
                c,
                "other",
                "caller/toolbox",
                &format!("http-get http://127.0.0.1:{port}/"),
            )
            .err())
        })
        .unwrap();
    assert!(by_address.contains("HttpRequestDenied"), "{by_address}");
    let by_name = run(
        &cluster,
        "other",
        "caller/toolbox",
        &format!("http-get http://localhost:{port}/"),
    )
    .unwrap_err();
    assert!(by_name.contains("DestinationIpProhibited"), "{by_name}");

    // And the cluster kept serving throughout.
    let hello = http_request(ingress, "GET", "/", LIMIT).unwrap();
    assert_eq!(hello.status, 200, "{}", hello.body);
}

#[test]
fn a_cluster_runs_over_nats_with_tls() {
    let mut cluster = Cluster::start_tls().unwrap();
    let ingress = cluster.start_host("h1", "").unwrap();
    apply(&cluster, "hello.toml", HELLO).unwrap();
    let hello = cluster
        .wait_until("hello serves over a TLS control plane", LIMIT, |_| {
            let r = http_request(ingress, "GET", "/", Duration::from_secs(2))?;
            Ok((r.status == 200).then_some(r))
        })
        .unwrap();
    assert!(hello.body.contains("Hello from Shoal"), "{}", hello.body);

    // A client that does not speak TLS, even with a credential, is refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let plain = rt.block_on(async {
        async_nats::ConnectOptions::with_credentials_file(cluster.nats.creds("admin")?)
            .await?
            .connect(cluster.nats.url())
            .await
            .map_err(anyhow::Error::from)
    });
    assert!(plain.is_err(), "a plain-text client was let in");
    assert!(cluster.nats.tls_ca().is_some());
}
