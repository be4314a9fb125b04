//! Authentication and authorization, end to end: tokens and roles per
//! namespace, `can-i` against what the API does, secrets kept in their
//! namespace, quotas, the audit trail and safe defaults. Real nats-server,
//! scheduler and host processes, real components.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use shoal_api::resources::{AppDetail, AuditRecord, EventReason, NamespaceInfo};
use shoal_tests::cluster::{Cluster, Pki, free_port};
use shoal_tests::{Output, Running, http_request_to};

const LIMIT: Duration = Duration::from_secs(60);

/// An echo worker in namespace `NS`.
const ECHO: &str = "name = \"echo\"\nnamespace = \"NS\"\n[components.echo]\nsource = \"SOURCE(echo-worker)\"\nkind = \"worker\"\nlimits = { memory = \"16MiB\" }\n";

fn echo_in(cluster: &Cluster, namespace: &str) -> String {
    cluster
        .spec(
            &format!("echo-{namespace}.toml"),
            &ECHO.replace("NS", namespace),
        )
        .unwrap()
}

/// Two namespaces, each with an echo worker, on one host.
fn two_teams() -> Cluster {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    for ns in ["team-a", "team-b"] {
        cluster.create_namespace(ns).unwrap();
        cluster.ok(&["apply", &echo_in(&cluster, ns)]).unwrap();
    }
    cluster
}

/// The refusal of a call: exit 1 and the message.
fn refused(out: &Output) -> &str {
    assert_eq!(out.code, Some(1), "not refused: {}", out.stdout);
    &out.stderr
}

#[test]
fn each_role_does_what_it_grants_and_a_refusal_names_the_missing_permission() {
    let cluster = two_teams();
    let spec_a = echo_in(&cluster, "team-a");
    let spec_b = echo_in(&cluster, "team-b");

    // view in team-a: reads, and nothing else.
    let view = cluster.token("vera", "view", Some("team-a")).unwrap();
    let listed = cluster
        .shoal_as(&view, &["get", "apps", "-n", "team-a"])
        .unwrap();
    assert_eq!(listed.code, Some(0), "{}", listed.stderr);
    assert!(listed.stdout.contains("echo"), "{}", listed.stdout);
    let described = cluster
        .shoal_as(&view, &["describe", "app", "echo", "-n", "team-a"])
        .unwrap();
    assert_eq!(described.code, Some(0), "{}", described.stderr);
    let logs = cluster
        .shoal_as(&view, &["logs", "echo", "-n", "team-a"])
        .unwrap();
    assert_eq!(logs.code, Some(0), "{}", logs.stderr);
    let out = cluster
        .shoal_as(&view, &["logs", "echo", "-n", "team-b"])
        .unwrap();
    assert!(
        refused(&out).contains("logs on logs in namespace team-b"),
        "{}",
        out.stderr
    );
    let cases: [(&[&str], &str); 3] = [
        (
            &["apply", &spec_a],
            "may not upload components: that needs permission create on apps",
        ),
        (
            &["scale", "echo/echo", "3", "-n", "team-a"],
            "scale on apps in namespace team-a",
        ),
        (
            &["delete", "app", "echo", "-n", "team-a"],
            "delete on apps in namespace team-a",
        ),
    ];
    for (args, missing) in cases {
        let out = cluster.shoal_as(&view, args).unwrap();
        let message = refused(&out);
        assert!(message.contains(missing), "{args:?}: {message}");
        assert!(
            message.contains("needs permission") && message.contains("roles admin, edit grant it"),
            "{args:?}: {message}"
        );
    }
    // The read routes built since keep to the namespace too: events, top
    // and the scheduler's metrics (cluster-wide only).
    let events = cluster.shoal_as(&view, &["events", "-o", "json"]).unwrap();
    assert_eq!(events.code, Some(0), "{}", events.stderr);
    assert!(
        events.stdout.contains("team-a") && !events.stdout.contains("team-b"),
        "{}",
        events.stdout
    );
    let out = cluster
        .shoal_as(&view, &["events", "-n", "team-b"])
        .unwrap();
    assert!(
        refused(&out).contains("list events in namespace team-b"),
        "{}",
        out.stderr
    );
    let top = cluster
        .shoal_as(&view, &["top", "pods", "-o", "json"])
        .unwrap();
    assert_eq!(top.code, Some(0), "{}", top.stderr);
    assert!(!top.stdout.contains("team-b"), "{}", top.stdout);
    let out = cluster.shoal_as(&view, &["top", "hosts"]).unwrap();
    assert!(
        refused(&out).contains("list hosts cluster-wide"),
        "{}",
        out.stderr
    );
    let api = cluster.api().trim_start_matches("http://").parse().unwrap();
    let metrics = shoal_tests::http_request_as(api, &view, "GET", "/metrics", LIMIT).unwrap();
    assert_eq!(metrics.status, 403, "{}", metrics.body);
    assert!(
        metrics.body.contains("get metrics cluster-wide"),
        "{}",
        metrics.body
    );

    let no = cluster
        .shoal_as(&view, &["auth", "can-i", "get", "apps", "-n", "team-b"])
        .unwrap();
    assert_eq!(no.code, Some(1));
    assert!(
        no.stdout.starts_with("no: ") && no.stdout.contains("may not get apps in namespace team-b"),
        "{}",
        no.stdout
    );
    let secret = secret_set(&cluster, Some(&view), "team-a", "db", "x");
    assert!(
        refused(&secret).contains("secrets-set on secrets in namespace team-a"),
        "{}",
        secret.stderr
    );
    // A view user sees only their namespace, even when listing everything.
    let all = cluster.shoal_as(&view, &["get", "apps"]).unwrap();
    assert_eq!(all.code, Some(0), "{}", all.stderr);
    assert!(all.stdout.contains("team-a") && !all.stdout.contains("team-b"));

    // edit in team-a: changes team-a, cannot touch team-b.
    let edit = cluster.token("eddie", "edit", Some("team-a")).unwrap();
    let applied = cluster.shoal_as(&edit, &["apply", &spec_a]).unwrap();
    assert_eq!(applied.code, Some(0), "{}", applied.stderr);
    let out = cluster.shoal_as(&edit, &["apply", &spec_b]).unwrap();
    assert!(
        refused(&out).contains("in namespace team-b"),
        "{}",
        out.stderr
    );
    let out = cluster
        .shoal_as(&edit, &["describe", "app", "echo", "-n", "team-b"])
        .unwrap();
    assert!(refused(&out).contains("get apps in namespace team-b"));
    let out = cluster.shoal_as(&edit, &["get", "hosts"]).unwrap();
    assert!(refused(&out).contains("list hosts cluster-wide"));
    // Nobody mints a token stronger than their own.
    let out = cluster
        .shoal_as(
            &edit,
            &[
                "auth", "token", "create", "sneaky", "--role", "admin", "-n", "team-a",
            ],
        )
        .unwrap();
    assert!(refused(&out).contains("create on tokens"), "{}", out.stderr);

    // Shoal's own principal names are not for the taking.
    let out = cluster
        .shoal(&[
            "auth", "token", "create", "admin", "--role", "view", "-n", "team-a",
        ])
        .unwrap();
    assert!(refused(&out).contains("keeps for itself"), "{}", out.stderr);

    // invoke in team-a: invokes, nothing else.
    let invoke = cluster.token("bot", "invoke", Some("team-a")).unwrap();
    let reply = cluster
        .wait_until("the invoke token reaches the worker", LIMIT, |c| {
            let out = c.shoal_as(
                &invoke,
                &["invoke", "echo/echo", "-n", "team-a", "--data", "hi"],
            )?;
            Ok((out.code == Some(0)).then_some(out.stdout))
        })
        .unwrap();
    assert_eq!(reply, "hi\n");
    let out = cluster
        .shoal_as(&invoke, &["get", "apps", "-n", "team-a"])
        .unwrap();
    assert!(refused(&out).contains("list apps in namespace team-a"));
    let out = cluster
        .shoal_as(
            &invoke,
            &["invoke", "echo/echo", "-n", "team-b", "--data", "hi"],
        )
        .unwrap();
    assert!(refused(&out).contains("invoke apps in namespace team-b"));

    // whoami names the principal and its roles.
    let me = cluster.shoal_as(&edit, &["auth", "whoami"]).unwrap();
    assert!(
        me.stdout.contains("service-account eddie")
            && me.stdout.contains("edit in namespace team-a"),
        "{}",
        me.stdout
    );

    // A revoked token and an expired one get 401.
    let id = token_id(&cluster, "eddie");
    cluster.ok(&["auth", "token", "revoke", &id]).unwrap();
    let out = cluster
        .shoal_as(&edit, &["get", "apps", "-n", "team-a"])
        .unwrap();
    assert!(refused(&out).contains("was revoked"), "{}", out.stderr);
    let brief = cluster
        .ok(&[
            "auth", "token", "create", "brief", "--role", "view", "-n", "team-a", "--ttl", "1s",
            "--quiet",
        ])
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out = cluster
        .shoal_as(brief.trim(), &["get", "apps", "-n", "team-a"])
        .unwrap();
    assert!(refused(&out).contains("has expired"), "{}", out.stderr);
    let out = cluster
        .shoal_as(
            "shoal_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            &["get", "apps"],
        )
        .unwrap();
    assert!(refused(&out).contains("not valid"), "{}", out.stderr);
    let out = cluster.shoal_as("", &["get", "apps"]).unwrap();
    assert!(refused(&out).contains("needs a token"), "{}", out.stderr);
}

/// `set secret NAME` in `namespace` with `value` on stdin, as `token` (or
/// the admin).
fn secret_set(
    cluster: &Cluster,
    token: Option<&str>,
    namespace: &str,
    name: &str,
    value: &str,
) -> Output {
    let file = cluster.dir().join(format!("{name}.secret"));
    std::fs::write(&file, value).unwrap();
    let file = file.display().to_string();
    let args = ["secret", "set", name, "-n", namespace, "--from-file", &file];
    match token {
        Some(token) => cluster.shoal_as(token, &args).unwrap(),
        None => cluster.shoal(&args).unwrap(),
    }
}

/// The id of `principal`'s newest token.
fn token_id(cluster: &Cluster, principal: &str) -> String {
    let list: Vec<serde_json::Value> = serde_json::from_str(
        &cluster
            .ok(&["auth", "token", "list", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    list.iter()
        .rev()
        .find(|t| t["principal"]["name"] == principal)
        .and_then(|t| t["id"].as_str())
        .unwrap()
        .to_string()
}

/// One probe of the API: the verb and resource `can-i` is asked about,
/// and a call that needs exactly that permission. Targets that do not
/// exist keep an allowed call from changing anything: it fails later, with
/// anything but a refusal.
struct Probe {
    verb: &'static str,
    resource: &'static str,
    args: &'static [&'static str],
    cluster_wide: bool,
}

const PROBES: &[Probe] = &[
    Probe {
        verb: "get",
        resource: "apps",
        args: &["describe", "app", "ghost", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "list",
        resource: "apps",
        args: &["get", "apps", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "delete",
        resource: "apps",
        args: &["delete", "app", "ghost", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "scale",
        resource: "apps",
        args: &["scale", "ghost/c", "1", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "rollout",
        resource: "apps",
        args: &["rollout", "undo", "ghost", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "invoke",
        resource: "apps",
        args: &["invoke", "ghost/c", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "list",
        resource: "pods",
        args: &["get", "pods", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "secrets-list",
        resource: "secrets",
        args: &["secret", "list", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "get",
        resource: "namespaces",
        args: &["describe", "namespace", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "list",
        resource: "tokens",
        args: &["auth", "token", "list"],
        cluster_wide: false,
    },
    Probe {
        verb: "list",
        resource: "audit",
        args: &["audit", "-n", "team-a"],
        cluster_wide: false,
    },
    Probe {
        verb: "list",
        resource: "hosts",
        args: &["get", "hosts"],
        cluster_wide: true,
    },
    Probe {
        verb: "update",
        resource: "namespaces",
        args: &["update", "namespace", "ghost"],
        cluster_wide: true,
    },
];

#[test]
fn can_i_agrees_with_the_api_for_every_built_in_role() {
    let cluster = two_teams();
    for role in ["admin", "edit", "view", "invoke"] {
        let token = cluster
            .token(&format!("probe-{role}"), role, Some("team-a"))
            .unwrap();
        for probe in PROBES {
            let mut ask = vec!["auth", "can-i", probe.verb, probe.resource];
            if probe.cluster_wide {
                ask.push("--cluster");
            } else {
                ask.extend(["-n", "team-a"]);
            }
            let answer = cluster.shoal_as(&token, &ask).unwrap();
            let says_yes = answer.stdout.starts_with("yes");
            assert_eq!(
                says_yes,
                answer.code == Some(0),
                "{role}: exit code and answer disagree: {}",
                answer.stdout
            );
            let call = cluster.shoal_as(&token, probe.args).unwrap();
            let api_refused = call.code == Some(1) && call.stderr.contains(" may not ");
            assert_eq!(
                says_yes,
                !api_refused,
                "{role}: can-i {} {} says {}, the API {}: {}",
                probe.verb,
                probe.resource,
                answer.stdout.trim(),
                if api_refused { "refused" } else { "allowed" },
                call.stderr
            );
        }
    }
}

#[test]
fn a_component_in_another_namespace_cannot_be_given_a_secret() {
    let cluster = two_teams();
    let set = secret_set(&cluster, None, "team-a", "db", "team-a-password-1f9c");
    assert_eq!(set.code, Some(0), "{}", set.stderr);

    // team-b lists a secret of the same name: it gets team-b's, which is not set.
    let body = "name = \"vault\"\nnamespace = \"team-b\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nsecrets = [\"db\"]\nlimits = { memory = \"16MiB\", concurrency = 4 }\n";
    let path = cluster.spec("vault.toml", body).unwrap();
    cluster.ok(&["apply", &path]).unwrap();
    let read = cluster
        .wait_until("the team-b guest answers", LIMIT, |c| {
            let out = c.shoal(&[
                "invoke",
                "vault/toolbox",
                "-n",
                "team-b",
                "--data",
                "secret db",
            ])?;
            Ok((out.code.is_some() && !out.stderr.contains("no replica")).then_some(out))
        })
        .unwrap();
    assert!(
        !read.stdout.contains("team-a-password") && !read.stderr.contains("team-a-password"),
        "{read:?}"
    );
    // A secret named with its namespace is not a secret name at all.
    let other = cluster
        .spec("thief.toml", &body.replace("[\"db\"]", "[\"team-a/db\"]"))
        .unwrap();
    let out = cluster.shoal(&["apply", &other]).unwrap();
    assert!(refused(&out).contains("team-a/db"), "{}", out.stderr);
    // And an editor of team-b may not set or list team-a's.
    let edit_b = cluster.token("bea", "edit", Some("team-b")).unwrap();
    let out = cluster
        .shoal_as(&edit_b, &["secret", "list", "-n", "team-a"])
        .unwrap();
    assert!(refused(&out).contains("secrets-list on secrets in namespace team-a"));
    let listed = cluster.shoal_as(&edit_b, &["secret", "list"]).unwrap();
    assert!(!listed.stdout.contains("team-a"), "{}", listed.stdout);
}

const QUEUE: &str = "name = \"auto\"\nnamespace = \"small\"\n[components.worker]\nsource = \"SOURCE(queue-worker)\"\nkind = \"worker\"\nqueue = \"auto.in\"\nlimits = { memory = \"16MiB\", timeout = \"1s\", concurrency = 1 }\nmessaging = { publish = [\"auto.>\"] }\nautoscale = { min = 0, max = 8, target_queue_depth = 10, idle = \"30s\" }\n";

#[test]
fn quotas_refuse_what_exceeds_them_and_hold_the_autoscaler() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster
        .ok(&[
            "create",
            "namespace",
            "small",
            "--max-replicas",
            "2",
            "--max-memory",
            "100MiB",
        ])
        .unwrap();
    let echo = "name = \"echo\"\nnamespace = \"small\"\n[components.echo]\nsource = \"SOURCE(echo-worker)\"\nkind = \"worker\"\nreplicas = 3\nlimits = { memory = \"16MiB\", concurrency = 1 }\n";
    let path = cluster.spec("echo.toml", echo).unwrap();
    let out = cluster.shoal(&["apply", &path]).unwrap();
    assert!(
        refused(&out)
            .contains("namespace small's replicas quota is 2, and this would make its usage 3"),
        "{}",
        out.stderr
    );
    let big = echo.replace("replicas = 3", "replicas = 1").replace(
        "memory = \"16MiB\", concurrency = 1",
        "memory = \"64MiB\", concurrency = 2",
    );
    let path = cluster.spec("big.toml", &big).unwrap();
    let out = cluster.shoal(&["apply", &path]).unwrap();
    assert!(
        refused(&out).contains("memory quota is 100MiB, and this would make its usage 128MiB"),
        "{}",
        out.stderr
    );

    // An autoscaling worker under a burst stops at the quota, and says so.
    let path = cluster.spec("auto.toml", QUEUE).unwrap();
    cluster.ok(&["apply", &path]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let js = async_nats::jetstream::new(nats);
        let mut acks = Vec::new();
        for i in 0..2000 {
            acks.push(
                js.publish("ns.small.auto.in", format!("slow-{i}").into_bytes().into())
                    .await
                    .unwrap(),
            );
        }
        for ack in acks {
            ack.await.unwrap();
        }
    });
    let detail: AppDetail = cluster
        .wait_until("the autoscaler meets the quota", LIMIT, |c| {
            let d: AppDetail = serde_json::from_str(
                &c.ok(&["describe", "app", "auto", "-n", "small", "-o", "json"])?,
            )?;
            Ok(d.events
                .iter()
                .any(|e| e.reason == EventReason::QuotaReached)
                .then_some(d))
        })
        .unwrap();
    let held = detail
        .events
        .iter()
        .find(|e| e.reason == EventReason::QuotaReached)
        .unwrap();
    assert!(
        held.message.contains("held at 2 replicas") && held.message.contains("replicas quota (2)"),
        "{}",
        held.message
    );
    std::thread::sleep(Duration::from_secs(2));
    let ns: NamespaceInfo = serde_json::from_str(
        &cluster
            .ok(&["describe", "namespace", "small", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ns.usage.replicas, 2, "{ns:?}");
    assert!(detail.summary.components[0].desired <= 2);
    let shown = cluster.ok(&["describe", "namespace", "small"]).unwrap();
    assert!(shown.contains("replicas") && shown.contains("2"), "{shown}");
}

#[test]
fn the_audit_trail_lists_every_change_with_its_principal_and_no_secret() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    cluster.create_namespace("team-a").unwrap();
    let view = cluster.token("vera", "view", Some("team-a")).unwrap();
    let set = secret_set(&cluster, None, "team-a", "db", "hunter2-do-not-log");
    assert_eq!(set.code, Some(0), "{}", set.stderr);
    cluster
        .ok(&["apply", &echo_in(&cluster, "team-a")])
        .unwrap();
    cluster
        .ok(&["scale", "echo/echo", "2", "-n", "team-a"])
        .unwrap();
    let out = cluster
        .shoal_as(&view, &["delete", "app", "echo", "-n", "team-a"])
        .unwrap();
    refused(&out);
    // Reads are not changes: none of these is recorded.
    cluster.ok(&["get", "apps"]).unwrap();
    cluster.ok(&["describe", "namespace", "team-a"]).unwrap();

    let text = cluster.ok(&["audit", "-o", "json"]).unwrap();
    assert!(
        !text.contains("hunter2"),
        "a secret value in the audit trail"
    );
    let records: Vec<AuditRecord> = serde_json::from_str(&text).unwrap();
    let seen: Vec<String> = records
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {}",
                r.principal,
                r.verb,
                r.resource,
                r.namespace.as_ref().map_or("*", |n| n.as_str()),
                r.outcome
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            "admin create namespaces * allowed",
            "admin create tokens team-a allowed",
            "admin secrets-set secrets team-a allowed",
            "admin create apps team-a allowed",
            "admin scale apps team-a allowed",
            "vera delete apps team-a denied",
        ],
        "{text}"
    );
    // A namespace's records alone, and in a table.
    let mine = cluster.ok(&["audit", "-n", "team-a"]).unwrap();
    assert!(
        mine.contains("vera") && !mine.contains("namespaces"),
        "{mine}"
    );
}

#[test]
fn the_api_refuses_plain_http_beyond_this_machine_and_foreign_host_names() {
    let cluster = Cluster::start().unwrap();
    // A name the API does not answer to (DNS rebinding) is refused.
    let api = cluster.api().trim_start_matches("http://").parse().unwrap();
    let reply = http_request_to(
        api,
        "attacker.example",
        "GET",
        "/v1/apps",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(reply.status, 421, "{}", reply.body);
    assert!(
        reply.body.contains("--api-name attacker.example"),
        "{}",
        reply.body
    );
    // No token, no answer; /healthz stays open.
    let reply =
        http_request_to(api, "127.0.0.1", "GET", "/v1/apps", Duration::from_secs(5)).unwrap();
    assert_eq!(reply.status, 401);
    let reply =
        http_request_to(api, "localhost", "GET", "/healthz", Duration::from_secs(5)).unwrap();
    assert_eq!(reply.status, 200);

    // Listening beyond loopback in plain HTTP needs a loud flag.
    let creds = cluster
        .nats
        .creds("scheduler")
        .unwrap()
        .display()
        .to_string();
    let public = format!("0.0.0.0:{}", free_port().unwrap());
    let data = cluster.dir().join("public").display().to_string();
    let args = [
        "scheduler",
        "--nats",
        &cluster.nats.url(),
        "--nats-creds",
        &creds,
        "--api",
        &public,
        "--data-dir",
        &data,
    ];
    let out = shoal_tests::shoal(&args, LIMIT).unwrap();
    assert!(
        refused(&out).contains("refusing to serve the API in plain HTTP on 0.0.0.0"),
        "{}",
        out.stderr
    );
    let mut no_auth = args.to_vec();
    no_auth.extend(["--insecure-no-tls", "--insecure-no-auth"]);
    let out = shoal_tests::shoal(&no_auth, LIMIT).unwrap();
    assert!(
        refused(&out).contains("without authentication on 0.0.0.0"),
        "{}",
        out.stderr
    );
    let mut loud = args.to_vec();
    loud.push("--insecure-no-tls");
    let mut scheduler = Running::start(&loud).unwrap();
    scheduler.wait_for_line("scheduler API on", LIMIT).unwrap();
}

#[test]
fn the_api_serves_tls_to_clients_that_trust_its_ca() {
    let cluster = Cluster::start().unwrap();
    let pki = Pki::make(cluster.dir(), "api").unwrap();
    let creds = cluster
        .nats
        .creds("scheduler")
        .unwrap()
        .display()
        .to_string();
    let data = cluster.dir().join("tls-scheduler");
    let port = free_port().unwrap();
    // Every address, with TLS: allowed without a loud flag.
    let listen = format!("0.0.0.0:{port}");
    let mut scheduler = Running::start(&[
        "scheduler",
        "--nats",
        &cluster.nats.url(),
        "--nats-creds",
        &creds,
        "--api",
        &listen,
        "--data-dir",
        &data.display().to_string(),
        "--tls-cert",
        &pki.cert.display().to_string(),
        "--tls-key",
        &pki.key.display().to_string(),
    ])
    .unwrap();
    let line = scheduler.wait_for_line("scheduler API on", LIMIT).unwrap();
    assert!(
        line.contains(&format!("https://127.0.0.1:{port}")),
        "{line}"
    );
    // The cluster's first scheduler made the admin token: this one, on
    // the same NATS, knows it.
    let token = cluster.admin_token().unwrap();
    let https = format!("https://127.0.0.1:{port}");
    let nowhere = cluster.dir().join("none.toml").display().to_string();
    let ca = pki.ca.display().to_string();
    let ask = |api: &str, ca: Option<&str>| {
        let mut env = vec![
            ("SHOAL_CONFIG", nowhere.as_str()),
            ("SHOAL_TOKEN", token.as_str()),
            ("SHOAL_API", api),
        ];
        if let Some(ca) = ca {
            env.push(("SHOAL_API_CA", ca));
        }
        shoal_tests::shoal_with_env(&["auth", "whoami"], &env, LIMIT).unwrap()
    };
    let with_ca = ask(&https, Some(&ca));
    assert_eq!(with_ca.code, Some(0), "{}", with_ca.stderr);
    assert!(with_ca.stdout.contains("user admin"), "{}", with_ca.stdout);
    // A client that does not trust the CA does not talk to it.
    let without = ask(&https, None);
    assert_eq!(without.code, Some(1), "{}", without.stdout);
    // Plain HTTP to the TLS port gets no answer.
    let plain = ask(&format!("http://127.0.0.1:{port}"), None);
    assert_eq!(plain.code, Some(1), "{}", plain.stdout);
}
