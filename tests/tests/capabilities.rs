//! Capabilities end to end: a component written with the SDK (`toolbox`)
//! uses each one when its spec grants it, and gets a clean, specific error
//! when not. Real nats-server, scheduler and host processes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use shoal_tests::cluster::Cluster;

const SECRET: &str = "hunter2-e2e-s3cret";

/// Writes an app spec (see [`Cluster::spec`]); `INGRESS_PORT` becomes the
/// port of the first host's ingress.
fn spec(cluster: &Cluster, file: &str, body: &str) -> String {
    let mut text = body.to_string();
    // Outbound HTTP to a private address needs that address and port
    // listed: here, the host's own ingress.
    if text.contains("INGRESS_PORT") {
        let ingress = cluster.hosts().unwrap()[0].http.clone().unwrap();
        let port = ingress.rsplit(':').next().unwrap().to_string();
        text = text.replace("INGRESS_PORT", &port);
    }
    cluster.spec(file, &text).unwrap()
}

/// `toolbox` with every grant, and its sibling `bare` with none.
const TOOLS: &str = r#"
name = "tools"

[components.toolbox]
source = "SOURCE(toolbox)"
kind = "worker"
env = { MODE = "demo" }
config = { greeting = "ahoy" }
secrets = ["db-password", "unset-secret"]
volumes = [{ name = "data", path = "/data" }, { name = "shared", path = "/ro", read_only = true }]
messaging = { publish = ["tools.>"] }
keyvalue = true
allowed_hosts = ["127.0.0.1:INGRESS_PORT"]

[components.bare]
source = "SOURCE(toolbox)"
kind = "worker"

[volumes.data]
size = "16MiB"

[volumes.shared]
retain = true
"#;

/// Invokes `app/component` with `command`: Ok(stdout) or Err(stderr).
fn run(cluster: &Cluster, target: &str, command: &str) -> Result<String, String> {
    let out = cluster
        .shoal(&["invoke", target, "--data", command])
        .unwrap();
    if out.code == Some(0) {
        Ok(out.stdout.trim_end().to_string())
    } else {
        Err(out.stderr.trim_end().to_string())
    }
}

fn ok(cluster: &Cluster, target: &str, command: &str) -> String {
    run(cluster, target, command).unwrap_or_else(|e| panic!("{command}: {e}"))
}

fn refused(cluster: &Cluster, target: &str, command: &str, expected: &str) {
    let err = run(cluster, target, command).expect_err(command);
    assert!(err.contains(expected), "{command}: {err}");
}

fn start(cluster: &mut Cluster) {
    cluster.start_host("h1", "").unwrap();
    let out = cluster.shoal(&["secret", "set", "db-password"]).unwrap();
    // No stdin: refused, nothing set.
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    let file = cluster.dir().join("pw.txt");
    std::fs::write(&file, SECRET).unwrap();
    cluster
        .ok(&[
            "secret",
            "set",
            "db-password",
            "--from-file",
            &file.display().to_string(),
        ])
        .unwrap();
    let tools = spec(cluster, "tools.toml", TOOLS);
    cluster.ok(&["apply", &tools]).unwrap();
    cluster
        .wait_until("toolbox running", Duration::from_secs(20), |c| {
            Ok(
                (run(c, "tools/toolbox", "env MODE").ok() == Some("demo".into())
                    && run(c, "tools/bare", "env MODE").ok() == Some("<unset>".into()))
                .then_some(()),
            )
        })
        .unwrap();
}

#[test]
fn each_capability_works_when_granted_and_is_refused_when_not() {
    let mut cluster = Cluster::start().unwrap();
    start(&mut cluster);
    let c = &cluster;

    // Config and env.
    assert_eq!(ok(c, "tools/toolbox", "config greeting"), "ahoy");
    assert_eq!(ok(c, "tools/bare", "config greeting"), "<unset>");

    // Secrets: the declaring component reads it; a listed but unset one is
    // "not found"; the sibling is "not granted".
    assert_eq!(ok(c, "tools/toolbox", "secret db-password"), SECRET);
    refused(
        c,
        "tools/toolbox",
        "secret unset-secret",
        "not found: secret \"unset-secret\" has not been set",
    );
    refused(
        c,
        "tools/bare",
        "secret db-password",
        "not granted: component bare is not granted secret \"db-password\"",
    );

    // Volumes: granted mounts work; the read-only one refuses writes; a
    // component without mounts sees no filesystem at all.
    assert_eq!(ok(c, "tools/toolbox", "write /data/note.txt hello"), "ok");
    assert_eq!(ok(c, "tools/toolbox", "read /data/note.txt"), "hello");
    assert_eq!(ok(c, "tools/toolbox", "ls /data"), "note.txt");
    refused(c, "tools/toolbox", "write /ro/x nope", "os error");
    assert!(
        !c.host_data("h1")
            .join("volumes/default/tools/shared/x")
            .exists()
    );
    refused(
        c,
        "tools/bare",
        "read /data/note.txt",
        "Capabilities insufficient",
    );
    refused(
        c,
        "tools/bare",
        "write /tmp/x y",
        "Capabilities insufficient",
    );

    // Messaging: an allowed subject arrives; others are refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut sub = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let sub = nats.subscribe("ns.default.tools.>").await.unwrap();
        nats.flush().await.unwrap();
        (nats, sub)
    });
    assert_eq!(
        ok(c, "tools/toolbox", "publish tools.created order-42"),
        "ok"
    );
    let msg = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(5), sub.1.next()).await })
        .unwrap()
        .unwrap();
    assert_eq!(
        (msg.subject.as_str(), &msg.payload[..]),
        ("ns.default.tools.created", &b"order-42"[..])
    );
    refused(
        c,
        "tools/toolbox",
        "publish billing.created x",
        "not allowed: component toolbox may not publish to \"billing.created\"",
    );
    refused(
        c,
        "tools/bare",
        "publish tools.created x",
        "not allowed: component bare may not publish",
    );
    // Calls to another component of the same app, by name.
    assert_eq!(ok(c, "tools/bare", "call toolbox config greeting"), "ahoy");
    refused(
        c,
        "tools/toolbox",
        "call nobody x",
        "no responders: no replica of nobody in app tools is running",
    );

    // Key-value.
    assert_eq!(ok(c, "tools/toolbox", "kv-set orders/1 paid"), "ok");
    assert_eq!(ok(c, "tools/toolbox", "kv-get orders/1"), "paid");
    assert_eq!(ok(c, "tools/toolbox", "kv-keys"), "orders/1");
    refused(c, "tools/toolbox", "kv-set bad*key x", "invalid key");
    // Another app with key-value gets its own bucket and cannot see this one.
    let other = spec(
        c,
        "other.toml",
        "name = \"other\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nkeyvalue = true\n",
    );
    c.ok(&["apply", &other]).unwrap();
    let seen = c
        .wait_until("the other app running", Duration::from_secs(20), |c| {
            Ok(run(c, "other/toolbox", "kv-get orders/1").ok())
        })
        .unwrap();
    assert_eq!(seen, "<none>");
    assert_eq!(ok(c, "other/toolbox", "kv-keys"), "");
    refused(
        c,
        "tools/bare",
        "kv-get orders/1",
        "not granted: component bare has no key-value access",
    );

    // Outbound HTTP: an allowed host answers; others are denied.
    let hello = spec(
        &cluster,
        "hello.toml",
        "name = \"hello\"\n[components.web]\nsource = \"SOURCE(hello-http)\"\nkind = \"http\"\nroute = \"/hello\"\n",
    );
    cluster.ok(&["apply", &hello]).unwrap();
    let ingress = cluster.hosts().unwrap()[0].http.clone().unwrap();
    let port = ingress.rsplit(':').next().unwrap().to_string();
    let url = format!("http-get http://127.0.0.1:{port}/hello");
    let answer = cluster
        .wait_until(
            "hello reachable over outbound HTTP",
            Duration::from_secs(10),
            |c| {
                Ok(run(c, "tools/toolbox", &url)
                    .ok()
                    .filter(|a| a.starts_with("200")))
            },
        )
        .unwrap();
    assert_eq!(answer, "200 Hello from Shoal! You asked for /hello");
    refused(
        &cluster,
        "tools/toolbox",
        &format!("http-get http://localhost:{port}/hello"),
        "HttpRequestDenied",
    );
    refused(&cluster, "tools/bare", &url, "HttpRequestDenied");
}

#[test]
fn volumes_persist_across_restarts_and_cannot_be_escaped() {
    let mut cluster = Cluster::start().unwrap();
    start(&mut cluster);
    assert_eq!(
        ok(&cluster, "tools/toolbox", "write /data/kept.txt still-here"),
        "ok"
    );

    // A symlink planted in the volume pointing outside it leads nowhere.
    let volume = cluster.host_data("h1").join("volumes/default/tools/data");
    std::os::unix::fs::symlink("/etc/hostname", volume.join("escape")).unwrap();
    for path in [
        "/data/escape",
        "/data/../../../../etc/hostname",
        "/etc/hostname",
        "../etc/hostname",
    ] {
        let err = run(&cluster, "tools/toolbox", &format!("read {path}")).expect_err(path);
        assert!(err.contains("the handler failed"), "{path}: {err}");
    }

    // The data volume holds 16 MiB: a write past it fails in the guest,
    // nothing of it reaches the disk, and the host goes on.
    const LIMIT: u64 = 16 << 20;
    let used = |dir: &std::path::Path| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    refused(
        &cluster,
        "tools/toolbox",
        "fill /data/big 17000000",
        "No space left on device",
    );
    assert!(
        used(&volume) <= LIMIT,
        "the volume holds {} bytes",
        used(&volume)
    );
    // Space freed (here by an operator) can be used again.
    std::fs::remove_file(volume.join("big")).unwrap();
    assert_eq!(
        ok(&cluster, "tools/toolbox", "fill /data/medium 8000000"),
        "ok"
    );
    refused(
        &cluster,
        "tools/toolbox",
        "fill /data/more 9000000",
        "No space left on device",
    );
    assert!(
        used(&volume) <= LIMIT,
        "the volume holds {} bytes",
        used(&volume)
    );
    assert_eq!(
        ok(&cluster, "tools/toolbox", "read /data/kept.txt"),
        "still-here"
    );

    // A new generation replaces the replica on the same host: the data stays.
    let changed = spec(
        &cluster,
        "tools2.toml",
        &TOOLS.replace("MODE = \"demo\"", "MODE = \"v2\""),
    );
    cluster.ok(&["apply", &changed]).unwrap();
    cluster
        .wait_until("the replaced replica", Duration::from_secs(20), |c| {
            Ok((run(c, "tools/toolbox", "env MODE").ok() == Some("v2".into())).then_some(()))
        })
        .unwrap();
    assert_eq!(
        ok(&cluster, "tools/toolbox", "read /data/kept.txt"),
        "still-here"
    );

    // Deleting the app removes its volumes and bucket, but the retained volume.
    assert_eq!(ok(&cluster, "tools/toolbox", "kv-set k v"), "ok");
    cluster.ok(&["delete", "app", "tools"]).unwrap();
    let shared = cluster.host_data("h1").join("volumes/default/tools/shared");
    cluster
        .wait_until("volumes removed", Duration::from_secs(10), |_| {
            Ok((!volume.exists()).then_some(()))
        })
        .unwrap();
    assert!(shared.exists(), "the retained volume stays");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bucket = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        async_nats::jetstream::new(nats)
            .get_key_value("shoal-kv_default_tools")
            .await
    });
    assert!(bucket.is_err(), "the app's key-value bucket is gone");
}

#[test]
fn a_secret_value_appears_nowhere_but_in_the_guest() {
    let mut cluster = Cluster::start().unwrap();
    start(&mut cluster);
    assert_eq!(ok(&cluster, "tools/toolbox", "secret db-password"), SECRET);

    // Every API response and describe output.
    let mut seen = String::new();
    for args in [
        vec!["get", "apps", "-o", "json"],
        vec!["get", "pods", "-o", "json"],
        vec!["get", "hosts", "-o", "json"],
        vec!["describe", "app", "tools"],
        vec!["describe", "app", "tools", "-o", "json"],
        vec!["secret", "list"],
    ] {
        seen.push_str(&cluster.ok(&args).unwrap());
    }
    assert!(seen.contains("db-password"), "the checks read real output");
    // Every log line of every process.
    seen.push_str(&cluster.all_output());
    assert!(!seen.contains(SECRET), "the secret leaked: {seen}");

    // The bucket holds ciphertext only.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let stored = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let kv = async_nats::jetstream::new(nats)
            .get_key_value("shoal-secrets")
            .await
            .unwrap();
        kv.get("default.db-password").await.unwrap().unwrap()
    });
    assert!(stored.len() > SECRET.len(), "sealed value stored");
    assert!(!stored.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));
}
