//! Outbound HTTP through `wasi:http/outgoing-handler`.
//!
//! No host is allowed yet, so every request is denied before any
//! connection is made.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound HTTP granted to one component.
pub struct OutboundHttp {
    component: Arc<str>,
}

impl OutboundHttp {
    /// No outbound HTTP granted to `component`.
    pub fn new(component: Arc<str>) -> Self {
        OutboundHttp { component }
    }
}

/// The future types `WasiHttpHooks::send_request` deals in.
type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;
type SendFuture =
    Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        tracing::debug!(
            component = %self.component,
            uri = %request.uri(),
            "outbound HTTP denied: no allowed_hosts granted"
        );
        Box::new(async { Err(Error::HttpRequestDenied) })
    }
}
