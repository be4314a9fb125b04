//! `relay-http`: a gateway in front of one upstream service.
//!
//! Each GET is relayed to `UPSTREAM` (an `http://host:port` the spec sets
//! and lists in `allowed_hosts`) with the same path, and the upstream's
//! status and body come back. The `x-trace-id` response header names the
//! trace the request belongs to: Shoal carries it from the ingress through
//! the relayed call without this code touching it.

use shoal_sdk::http::{Handler, Request, Response};
use shoal_sdk::trace::TraceContext;

struct Relay;

impl Handler for Relay {
    fn handle(req: Request) -> Response {
        let trace = TraceContext::of_request(&req)
            .map(|t| t.trace_id)
            .unwrap_or_default();
        let Ok(upstream) = std::env::var("UPSTREAM") else {
            return Response::text(500, "relay-http needs UPSTREAM set in its spec's env\n");
        };
        let url = format!("{}{}", upstream.trim_end_matches('/'), req.path);
        match shoal_sdk::http::get(&url) {
            Ok(answer) => Response::new(answer.status, answer.body)
                .with_header("content-type", "text/plain; charset=utf-8")
                .with_header("x-trace-id", trace),
            Err(why) => Response::text(502, format!("the upstream did not answer: {why}\n"))
                .with_header("x-trace-id", trace),
        }
    }
}

shoal_sdk::export_http!(Relay);
