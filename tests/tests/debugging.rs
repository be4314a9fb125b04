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
