//! `hello-http`: answers GET with a greeting.
//!
//! The greeting comes from the `GREETING` environment variable when the
//! spec sets it. `GET /healthz` answers 200, or 503 when `READY` is
//! `false`: a health-check path for rollouts to wait on. A query of
//! `sleep_ms=N` (up to 1000) makes it take N ms, to load it for
//! autoscaling. It uses no Shoal import, so the same component also runs
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
        let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello from Shoal".into());
        Response::text(200, format!("{greeting}! You asked for {}\n", req.path))
    }
}

shoal_sdk::export_http!(Hello);
