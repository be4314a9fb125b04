//! Components compiled once for the cluster: the scheduler compiles each
//! uploaded version with the hosts' engine settings, and every host loads
//! that code instead of compiling it again. Real nats-server, scheduler
//! and two hosts with empty precompile caches, real components.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use shoal_tests::cluster::Cluster;

/// The toolbox worker, one replica in each zone.
const TOOLS: &str = r#"
name = "tools"
[components.toolbox]
source = "SOURCE(toolbox)"
kind = "worker"
replicas = 2
limits = { memory = "16MiB", concurrency = 2 }
placement = { spread = "zone" }
"#;

const LIMIT: Duration = Duration::from_secs(20);

/// How many times the scheduler compiled a component for the cluster.
fn compiles(cluster: &mut Cluster) -> usize {
    cluster
        .scheduler
        .as_mut()
        .unwrap()
        .output()
        .iter()
        .filter(|l| l.contains("compiled for the cluster"))
        .count()
}

#[test]
fn a_component_is_compiled_once_for_every_host() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "zone=a").unwrap();
    cluster.start_host("h2", "zone=b").unwrap();
    let file = cluster.spec("tools.toml", TOOLS).unwrap();
    cluster.ok(&["apply", "--wait", &file]).unwrap();

    // The scheduler compiled it once, at upload...
    assert_eq!(compiles(&mut cluster), 1);
    // ...and each host, its cache empty, took that code instead of
    // compiling its own.
    for (name, host) in cluster.hosts.iter_mut() {
        let line = host
            .wait_for_line("took the code the cluster compiled", LIMIT)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(line.contains("toolbox"), "{name}: {line}");
    }
    // The replicas run that code.
    let reply = cluster
        .ok(&["invoke", "tools/toolbox", "--data", "env MODE"])
        .unwrap();
    assert_eq!(reply.trim(), "<unset>");

    // The same bytes again, with more replicas: nothing is compiled again.
    let more = cluster
        .spec("more.toml", &TOOLS.replace("replicas = 2", "replicas = 4"))
        .unwrap();
    cluster.ok(&["apply", "--wait", &more]).unwrap();
    assert_eq!(compiles(&mut cluster), 1);
}
