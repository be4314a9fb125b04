//! Outbound HTTP through `wasi:http/outgoing-handler`, only to the hosts the
//! spec lists in `allowed_hosts` (a name, or a name and port). Anything else
//! is denied before a connection is made.

use std::sync::Arc;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The outbound HTTP provider of one invocation.
pub struct OutboundHttp {
    component: Arc<str>,
    allowed: Arc<Vec<String>>,
}

impl OutboundHttp {
    /// Requests to `allowed` hosts only.
    pub fn new(component: Arc<str>, allowed: Arc<Vec<String>>) -> Self {
        OutboundHttp { component, allowed }
    }

    fn allows(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else {
            return false;
        };
        let host = authority.host();
        let with_port = authority.port_u16().map(|p| format!("{host}:{p}"));
        self.allowed
            .iter()
            .any(|a| a.eq_ignore_ascii_case(host) || Some(a.to_ascii_lowercase()) == with_port)
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
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            tracing::warn!(
                component = %self.component,
                uri = %request.uri(),
                "outbound HTTP denied: the host is not in allowed_hosts"
            );
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((
                response.map(BodyExt::boxed_unsync),
                Box::new(io) as IoFuture,
            ))
        })
    }
}
