//! Traffic end to end: every host's ingress serves every app's routes,
//! locally when it runs a replica, else by forwarding over NATS.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use shoal_tests::cluster::Cluster;
use shoal_tests::{HttpReply, http_request, wasm_path};

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
    for i in 0..20 {
        for addr in [a1, a2] {
            let r = get(addr, &format!("/web/{i}"));
            assert_eq!(r.status, 200, "{r:?}");
            hosts.insert(r.header("shoal-served-by").unwrap().to_string());
        }
    }
    assert_eq!(hosts, BTreeSet::from(["h1".to_string(), "h2".to_string()]));

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
