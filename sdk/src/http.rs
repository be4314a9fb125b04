//! HTTP components: take a request, return a response.
//!
//! The request body is read in full before [`Handler::handle`] is called and
//! the response body is written in full after it returns: simple, and right
//! for the small request/response work Shoal's HTTP components do.

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasip2::io::streams::StreamError;

/// An HTTP request, body included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, upper case (`GET`, `POST`, …).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string without its `?`, if any.
    pub query: Option<String>,
    /// Headers in the order they arrived; names are lower case.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole request body.
    pub body: Vec<u8>,
}

impl Request {
    /// The value of the first header called `name` (case-insensitive), if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// An HTTP response, body included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers to send.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The whole response body.
    pub body: Vec<u8>,
}

impl Response {
    /// A response with `status` and `body` and no headers.
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    /// A `text/plain; charset=utf-8` response.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status, body.into()).with_header("content-type", "text/plain; charset=utf-8")
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Sends a GET request to `url` (`http://host[:port]/path` or `https://…`)
/// through `wasi:http/outgoing-handler` and reads the whole response.
///
/// The host must be listed in the component's `allowed_hosts`; any other
/// is refused with `HttpRequestDenied` before a connection is made.
pub fn get(url: &str) -> Result<Response, String> {
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{OutgoingRequest, Scheme};

    let (scheme, rest) = match url.split_once("://") {
        Some(("http", rest)) => (Scheme::Http, rest),
        Some(("https", rest)) => (Scheme::Https, rest),
        _ => return Err(format!("{url:?} is not an http:// or https:// URL")),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&scheme))
        .and_then(|()| request.set_authority(Some(authority)))
        .and_then(|()| request.set_path_with_query(Some(path)))
        .map_err(|()| format!("{url:?} is not a valid request target"))?;
    let body = request
        .body()
        .map_err(|()| "the request body was already taken".to_string())?;
    let pending = outgoing_handler::handle(request, None)
        .map_err(|code| format!("request to {authority} refused: {code:?}"))?;
    OutgoingBody::finish(body, None)
        .map_err(|code| format!("request to {authority} failed: {code:?}"))?;
    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(format!("request to {authority} failed: {code:?}")),
        Some(Err(())) | None => return Err(format!("request to {authority} got no response")),
    };
    let status = response.status();
    let headers = response.headers().entries();
    let incoming = response
        .consume()
        .map_err(|()| "the response body was already taken".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|()| "the response body stream was already taken".to_string())?;
    let bytes = read_all(&stream)?;
    Ok(Response {
        status,
        headers,
        body: bytes,
    })
}

/// A workload that serves HTTP.
pub trait Handler {
    /// Answer one request. Each request gets a fresh instance.
    fn handle(req: Request) -> Response;
}

/// Exports a type implementing [`http::Handler`](crate::http::Handler) as
/// this component's `wasi:http/incoming-handler`.
#[macro_export]
macro_rules! export_http {
    ($ty:ident) => {
        impl $crate::__wasip2::exports::http::incoming_handler::Guest for $ty {
            fn handle(
                request: $crate::__wasip2::http::types::IncomingRequest,
                response_out: $crate::__wasip2::http::types::ResponseOutparam,
            ) {
                $crate::http::__serve::<$ty>(request, response_out)
            }
        }

        $crate::__wasip2::http::proxy::export!($ty with_types_in $crate::__wasip2);
    };
}

/// Reads the request, calls the handler and writes its response. Used by
/// [`export_http!`]; not for direct use.
#[doc(hidden)]
pub fn __serve<H: Handler>(request: IncomingRequest, response_out: ResponseOutparam) {
    let response = match read_request(&request) {
        Ok(req) => H::handle(req),
        Err(why) => Response::text(400, format!("could not read the request: {why}\n")),
    };
    write_response(response, response_out);
}

fn read_request(request: &IncomingRequest) -> Result<Request, String> {
    let method = match request.method() {
        Method::Get => "GET".to_string(),
        Method::Head => "HEAD".to_string(),
        Method::Post => "POST".to_string(),
        Method::Put => "PUT".to_string(),
        Method::Delete => "DELETE".to_string(),
        Method::Connect => "CONNECT".to_string(),
        Method::Options => "OPTIONS".to_string(),
        Method::Trace => "TRACE".to_string(),
        Method::Patch => "PATCH".to_string(),
        Method::Other(other) => other,
    };
    let path_with_query = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let (path, query) = match path_with_query.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (path_with_query, None),
    };
    let headers = request.headers().entries();
    let body = read_body(request)?;
    Ok(Request {
        method,
        path,
        query,
        headers,
        body,
    })
}

fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let incoming = request
        .consume()
        .map_err(|()| "the request body was already taken".to_string())?;
    let stream = incoming
        .stream()
        .map_err(|()| "the request body stream was already taken".to_string())?;
    let body = read_all(&stream)?;
    drop(stream);
    IncomingBody::finish(incoming);
    Ok(body)
}

/// Reads a body stream to its end.
fn read_all(stream: &wasip2::io::streams::InputStream) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
        }
    }
}

fn write_response(response: Response, response_out: ResponseOutparam) {
    let headers = Fields::new();
    for (name, value) in &response.headers {
        // A header the host refuses (a forbidden or malformed name) is
        // dropped rather than failing the whole response.
        let _ = headers.append(name, value);
    }
    let outgoing = OutgoingResponse::new(headers);
    if outgoing.set_status_code(response.status).is_err() {
        let _ = outgoing.set_status_code(500);
    }
    let Ok(body) = outgoing.body() else {
        return;
    };
    ResponseOutparam::set(response_out, Ok(outgoing));
    if let Ok(stream) = body.write() {
        // `blocking_write_and_flush` takes at most 4096 bytes at a time.
        for chunk in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(chunk).is_err() {
                break;
            }
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}
