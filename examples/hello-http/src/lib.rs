//! `hello-http`: answers GET with a greeting.
//!
//! The greeting comes from the spec's `config.greeting` when set.

use shoal_sdk::http::{Handler, Request, Response};

struct Hello;

impl Handler for Hello {
    fn handle(req: Request) -> Response {
        if req.method != "GET" && req.method != "HEAD" {
            return Response::text(405, "hello-http answers GET only\n").with_header("allow", "GET, HEAD");
        }
        let greeting = shoal_sdk::config::get("greeting").unwrap_or_else(|| "Hello from Shoal".into());
        Response::text(200, format!("{greeting}! You asked for {}\n", req.path))
    }
}

shoal_sdk::export_http!(Hello);
