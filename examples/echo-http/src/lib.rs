//! `echo-http`: sends back what it is sent, or as many bytes as asked for.
//!
//! `POST` (or `PUT`) answers 200 with the request body, its content type
//! kept; `GET` of a path ending in `/bytes?n=N` answers N bytes (up to
//! 64 MiB) of a repeating pattern a client can check. For large requests
//! and responses through the ingress and between hosts.

use shoal_sdk::http::{Handler, Request, Response};

/// The most bytes `GET /bytes` makes.
const MAX_BYTES: usize = 64 << 20;

struct Echo;

impl Handler for Echo {
    fn handle(req: Request) -> Response {
        match req.method.as_str() {
            "POST" | "PUT" => {
                let kind = req
                    .header("content-type")
                    .unwrap_or("application/octet-stream")
                    .to_string();
                Response::new(200, req.body).with_header("content-type", kind)
            }
            "GET" if req.path.ends_with("/bytes") => {
                let n = req
                    .query
                    .as_deref()
                    .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("n=")))
                    .and_then(|n| n.parse::<usize>().ok());
                match n {
                    Some(n) if n <= MAX_BYTES => {
                        let body: Vec<u8> = (0..n).map(|i| b'a' + (i % 26) as u8).collect();
                        Response::new(200, body)
                            .with_header("content-type", "application/octet-stream")
                    }
                    _ => Response::text(400, format!("ask for n=N bytes, N at most {MAX_BYTES}\n")),
                }
            }
            _ => Response::text(404, "POST a body to have it back, or GET /bytes?n=N\n"),
        }
    }
}

shoal_sdk::export_http!(Echo);
