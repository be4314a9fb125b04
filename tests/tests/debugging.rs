//! Traces and debugging, end to end: a W3C traceparent carried from an
//! ingress through a forward to another host and out of a guest's
//! outbound call, with both hosts' spans exported by OTLP; the host calls
//! of one invocation shown by `shoal invoke --trace`. Real nats-server,
//! scheduler and hosts, real components, a real (if small) upstream and
//! collector.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use shoal_api::resources::InvokeResponse;
use shoal_api::trace::{CallOutcome, TraceParent};
use shoal_tests::cluster::Cluster;
use shoal_tests::recorder::Recorder;

const LIMIT: Duration = Duration::from_secs(60);

/// One exported span, with the host that exported it.
#[derive(Debug, Clone)]
struct Exported {
    host: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
}

/// Every span the collector was sent.
fn exported(collector: &Recorder) -> Vec<Exported> {
    let mut out = Vec::new();
    for request in collector.requests() {
        assert_eq!(request.path, "/v1/traces");
        assert_eq!(
            request.header("content-type"),
            Some("application/x-protobuf")
        );
        let export = ExportTraceServiceRequest::decode(request.body.as_slice()).unwrap();
        for resource in export.resource_spans {
            let host = resource
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "shoal.host")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push(Exported {
                    host: host.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent: span.parent_span_id,
                });
            }
        }
    }
    out
}

#[test]
fn a_traceparent_crosses_the_ingress_a_forward_and_the_guests_outbound_call() {
    let upstream = Recorder::start(200, "text/plain", "from upstream").unwrap();
    let collector = Recorder::start(200, "application/x-protobuf", "").unwrap();
    let otlp = format!("http://{}", collector.addr());
    let mut cluster = Cluster::start().unwrap();
    let edge = cluster
        .start_host_with("edge", "role=edge", &["--otlp-endpoint", &otlp])
        .unwrap();
    cluster
        .start_host_with("back", "role=back", &["--otlp-endpoint", &otlp])
        .unwrap();
    let up = upstream.addr();
    // The gateway runs on `back` only: a request to `edge` is forwarded.
    let spec = cluster
        .spec(
            "relay.toml",
            &format!(
                "name = \"relay\"\n[components.gateway]\nsource = \"SOURCE(relay-http)\"\nkind = \"http\"\nroute = \"/api\"\nplacement = {{ labels = {{ role = \"back\" }} }}\nenv = {{ UPSTREAM = \"http://{up}\" }}\nallowed_hosts = [\"{up}\"]\n"
            ),
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let sent: TraceParent = format!("00-{trace_id}-00f067aa0ba902b7-01")
        .parse()
        .unwrap();
    let reply = cluster
        .wait_until("the edge relays /api", LIMIT, |_| {
            let reply = shoal_tests::http_request_with(
                edge,
                &edge.to_string(),
                &[("traceparent", &sent.to_string())],
                "GET",
                "/api/orders",
                LIMIT,
            )?;
            Ok((reply.status == 200).then_some(reply))
        })
        .unwrap();
    assert_eq!(reply.body, "from upstream");
    assert_eq!(reply.header("shoal-served-by"), Some("back"), "{reply:?}");
    // The guest read the same trace through the SDK.
    assert_eq!(reply.header("x-trace-id"), Some(trace_id), "{reply:?}");

    // The guest's outbound call carried it on, from a span of its own.
    let requests = upstream.requests();
    let relayed = requests.last().unwrap();
    assert_eq!(relayed.path, "/api/orders");
    let arrived: TraceParent = relayed
        .header("traceparent")
        .expect("the outbound call carries a traceparent")
        .parse()
        .unwrap();
    assert_eq!(arrived.trace_id_hex(), trace_id);
    assert_ne!(arrived.span_id, sent.span_id);

    // Both hosts exported their spans of it, chained parent to child:
    // the caller's span -> the edge's ingress -> back's invocation -> the
    // outbound call the upstream saw.
    let chain = cluster
        .wait_until("both hosts export their spans", LIMIT, |_| {
            let spans = exported(&collector);
            let find = |id: &[u8]| spans.iter().find(|s| s.span_id == id).cloned();
            let Some(call) = find(&arrived.span_id) else {
                return Ok(None);
            };
            let Some(invoke) = find(&call.parent) else {
                return Ok(None);
            };
            let Some(ingress) = find(&invoke.parent) else {
                return Ok(None);
            };
            Ok(Some([ingress, invoke, call]))
        })
        .unwrap();
    let [ingress, invoke, call] = chain;
    for span in [&ingress, &invoke, &call] {
        assert_eq!(span.trace_id, sent.trace_id, "{span:?}");
    }
    assert_eq!(
        (ingress.host.as_str(), ingress.name.as_str()),
        ("edge", "ingress GET")
    );
    assert_eq!(ingress.parent, sent.span_id);
    assert_eq!(
        (invoke.host.as_str(), invoke.name.as_str()),
        ("back", "invoke gateway")
    );
    assert_eq!(
        (call.host.as_str(), call.name.as_str()),
        ("back", "HTTP GET")
    );
}

#[test]
fn a_guests_published_message_carries_the_trace_on() {
    use futures::StreamExt;

    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = cluster
        .spec(
            "tools.toml",
            "name = \"tools\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nmessaging = { publish = [\"audit.>\"] }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut audit = rt.block_on(async {
        let nats = cluster.nats.admin().await.unwrap();
        let sub = nats.subscribe("ns.default.audit.>").await.unwrap();
        nats.flush().await.unwrap();
        (nats, sub)
    });
    let sent: TraceParent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        .parse()
        .unwrap();
    let header = format!("traceparent={sent}");
    cluster
        .wait_until("the toolbox publishes", LIMIT, |c| {
            let out = c.shoal(&[
                "invoke",
                "tools/toolbox",
                "--header",
                &header,
                "--data",
                "publish audit.login alice",
            ])?;
            Ok((out.code == Some(0)).then_some(()))
        })
        .unwrap();
    let message = rt
        .block_on(async { tokio::time::timeout(LIMIT, audit.1.next()).await })
        .unwrap()
        .unwrap();
    assert_eq!(&message.payload[..], b"alice");
    let carried: TraceParent = message
        .headers
        .as_ref()
        .and_then(|h| h.get("traceparent"))
        .expect("the message carries a traceparent")
        .as_str()
        .parse()
        .unwrap();
    // The same trace, sent on from the invocation's own span.
    assert_eq!(carried.trace_id, sent.trace_id);
    assert_ne!(carried.span_id, sent.span_id);
    drop(audit.0);
}

#[test]
fn invoke_trace_shows_the_key_value_call() {
    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = cluster
        .spec(
            "tools.toml",
            "name = \"tools\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\nkeyvalue = true\n",
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    let out = cluster
        .wait_until("the toolbox answers", LIMIT, |c| {
            let out = c.shoal(&[
                "invoke",
                "tools/toolbox",
                "--data",
                "kv-set greeting hello",
                "--trace",
            ])?;
            Ok((out.code == Some(0)).then_some(out))
        })
        .unwrap();
    assert_eq!(out.stdout.trim(), "ok");
    let table: Vec<&str> = out.stderr.lines().collect();
    assert!(
        table[0].contains("CALL") && table[0].contains("RESULT"),
        "{table:?}"
    );
    let set = table
        .iter()
        .find(|l| l.contains("keyvalue.set"))
        .unwrap_or_else(|| panic!("no key-value call in {table:?}"));
    assert!(
        set.contains("greeting") && set.contains("5 B") && set.contains("ok"),
        "{set}"
    );

    // The same through the API, as JSON; without --trace, nothing is
    // recorded.
    let api = cluster.api().trim_start_matches("http://").parse().unwrap();
    let token = cluster.admin_token().unwrap();
    let without_trace = cluster
        .ok(&["invoke", "tools/toolbox", "--data", "kv-get greeting"])
        .unwrap();
    assert_eq!(without_trace.trim(), "hello");
    let reply = shoal_tests::http_post_json_as(
        api,
        &token,
        "/v1/apps/default/tools/invoke/toolbox",
        // "kv-get greeting"
        &serde_json::json!({ "data": "a3YtZ2V0IGdyZWV0aW5n", "trace": true }),
        LIMIT,
    )
    .unwrap();
    let resp: InvokeResponse = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(resp.data, b"hello");
    let calls = resp.calls.expect("calls, when asked for");
    assert_eq!(calls.calls.len(), 1, "{calls:?}");
    let get = &calls.calls[0];
    assert_eq!(
        (
            get.capability.as_str(),
            get.function.as_str(),
            get.target.as_str()
        ),
        ("keyvalue", "get", "greeting")
    );
    assert_eq!(get.outcome, CallOutcome::Ok { bytes: 5 });
    assert!(
        resp.headers
            .iter()
            .all(|(k, _)| !k.eq_ignore_ascii_case("shoal-host-calls")),
        "{:?}",
        resp.headers
    );
}

#[test]
fn a_trapping_component_leaves_core_dumps_to_list_and_download() {
    use shoal_api::dumps::DumpInfo;
    use std::os::unix::fs::PermissionsExt;

    let mut cluster = Cluster::start().unwrap();
    cluster.start_host("h1", "").unwrap();
    let spec = cluster
        .spec(
            "tools.toml",
            "name = \"tools\"\n[components.toolbox]\nsource = \"SOURCE(toolbox)\"\nkind = \"worker\"\ndebug = { coredumps = 2 }\n",
        )
        .unwrap();
    cluster.ok(&["apply", &spec]).unwrap();
    cluster
        .wait_until("the toolbox answers", LIMIT, |c| {
            let out = c.shoal(&["invoke", "tools/toolbox", "--data", "print 0"])?;
            Ok((out.code == Some(0)).then_some(()))
        })
        .unwrap();
    // Three traps; the spec keeps two.
    for _ in 0..3 {
        let out = cluster
            .shoal(&["invoke", "tools/toolbox", "--data", "trap"])
            .unwrap();
        assert_eq!(out.code, Some(1), "{out:?}");
        assert!(out.stderr.contains("crash_on_purpose"), "{}", out.stderr);
    }
    let dumps: Vec<DumpInfo> = cluster
        .wait_until("two dumps are stored", LIMIT, |c| {
            let out = c.ok(&["debug", "dumps", "tools", "-o", "json"])?;
            let dumps: Vec<DumpInfo> = serde_json::from_str(&out)?;
            Ok((dumps.len() >= 2).then_some(dumps))
        })
        .unwrap();
    // A moment more, and still two: the third was never kept.
    std::thread::sleep(Duration::from_secs(1));
    let again: Vec<DumpInfo> = serde_json::from_str(
        &cluster
            .ok(&["debug", "dumps", "tools", "-o", "json"])
            .unwrap(),
    )
    .unwrap();
    assert_eq!(again.len(), 2, "{again:?}");
    for dump in &dumps {
        assert!(dump.function.contains("crash_on_purpose"), "{dump:?}");
        assert!(dump.trap.contains("unreachable"), "{dump:?}");
        assert_eq!(dump.replica, "default/tools/toolbox-0");
        assert_eq!(dump.host, "h1");
        assert!(dump.bytes > 0);
    }
    let table = cluster.ok(&["debug", "dumps", "tools"]).unwrap();
    assert!(
        table.starts_with("ID")
            && table.contains(&dumps[0].id)
            && table.contains("crash_on_purpose"),
        "{table}"
    );

    // Downloaded, it is a Wasm core dump, readable by its owner only.
    let file = cluster.dir().join("trap.core.wasm");
    let file_arg = file.display().to_string();
    cluster
        .ok(&["debug", "dump", &dumps[0].id, "-o", &file_arg])
        .unwrap();
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(bytes.len() as u64, dumps[0].bytes);
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let mut sections = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        if let wasmparser::Payload::CustomSection(section) = payload.unwrap() {
            sections.push(section.name().to_string());
        }
    }
    assert!(
        sections.iter().any(|s| s == "core") && sections.iter().any(|s| s == "corestack"),
        "{sections:?}"
    );

    // They hold the guest's memory: a viewer may see the app, not them.
    let viewer = cluster.token("viewer", "view", Some("default")).unwrap();
    let refused = cluster
        .shoal_as(&viewer, &["debug", "dumps", "tools"])
        .unwrap();
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("dumps"), "{}", refused.stderr);
    // Nor may an editor of another namespace, nor an id ride under
    // another app's name.
    cluster.create_namespace("other").unwrap();
    let outsider = cluster.token("outsider", "edit", Some("other")).unwrap();
    let refused = cluster
        .shoal_as(&outsider, &["debug", "dumps", "tools", "-n", "default"])
        .unwrap();
    assert_eq!(refused.code, Some(1), "{refused:?}");
    let api = cluster.api().trim_start_matches("http://").parse().unwrap();
    let admin = cluster.admin_token().unwrap();
    let smuggled = shoal_tests::http_request_as(
        api,
        &admin,
        "GET",
        &format!("/v1/dumps/default/elsewhere/{}", dumps[0].id),
        LIMIT,
    )
    .unwrap();
    // A dump of another app is not found under this one.
    assert_eq!(smuggled.status, 404, "{smuggled:?}");
    let no_such = cluster
        .shoal(&["debug", "dump", "tools.toolbox.1.00000000", "-o", &file_arg])
        .unwrap();
    assert_eq!(no_such.code, Some(1));
    assert!(
        no_such.stderr.contains("no core dump"),
        "{}",
        no_such.stderr
    );
}
