//! `hello-http`: answers GET with a greeting.
//!
//! The greeting comes from the `GREETING` environment variable when the
//! spec sets it. `GET /healthz` answers 200, or 503 when `READY` is
//! `false`: a health-check path for rollouts to wait on. A query of
//! `sleep_ms=N` (up to 1000) makes it take N ms, to load it for
//! autoscaling. With `FAIL_PERCENT=N` it answers 500 to about N% of
//! requests (the same ones each time), a bad version to try canaries
//! with. It uses no Shoal import, so the same component also runs
//! under a plain `wasmtime serve` (the HTTP benchmark's baseline).

use shoal_sdk::http::{Handler, Request, Response};

struct Hello;

impl Handler for Hello {
    fn handle(req: Request) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "hello-http answers GET only\n")
                .with_header("allow", "GET, HEAD");
        }
        if req.path == "/healthz" {
            return match std::env::var("READY").as_deref() {
                Ok("false") => Response::text(503, "not ready\n"),
                _ => Response::text(200, "ok\n"),
            };
        }
        let sleep_ms = req
            .query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("sleep_ms=")))
            .and_then(|ms| ms.parse::<u64>().ok());
        if let Some(ms) = sleep_ms {
            std::thread::sleep(std::time::Duration::from_millis(ms.min(1000)));
        }
        if fails(&req) {
            return Response::text(500, "failing on purpose (FAIL_PERCENT)\n");
        }
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from Shoal".into());
        Response::text(200, format!("{greeting}! You asked for {}\n", req.path))
    }
}

/// Whether this request is one of the `FAIL_PERCENT` percent that fail
/// (500): chosen by a hash of the path and query, so the same request
/// always gets the same answer and distinct requests fail at that rate.
fn fails(req: &Request) -> bool {
    let percent: u64 = match std::env::var("FAIL_PERCENT").ok().and_then(|p| p.parse().ok()) {
        Some(p) => p,
        None => return false,
    };
    // FNV-1a: no dependency, and spread enough for a test's request ids.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in req.path.bytes().chain(req.query.as_deref().unwrap_or("").bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash % 100 < percent
}

shoal_sdk::export_http!(Hello);
