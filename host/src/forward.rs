//! HTTP over NATS: an ingress forwards a request for a route it does not
//! serve to the replicas that do, in their queue group, and relays the
//! answer. Request and response travel whole (bodies up to
//! [`MAX_HTTP_BODY`]); HTTP headers ride as NATS headers.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use shoal_api::subjects::headers;

use crate::component::LoadedComponent;
use crate::invoke::{HttpResponse, text_response};
use crate::tunables::{FORWARD_TIMEOUT, MAX_HTTP_BODY};

/// HTTP headers that describe one hop's connection, not the message.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Forwards `req` to `subject` and turns the reply into a response.
pub async fn forward(
    nats: &async_nats::Client,
    subject: String,
    name: &str,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_HTTP_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => {
            return text_response(
                413,
                format!("request bodies are limited to {MAX_HTTP_BODY} bytes\n"),
            );
        }
    };
    let mut h = async_nats::HeaderMap::new();
    h.insert(headers::HTTP_METHOD, parts.method.as_str());
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    h.insert(headers::HTTP_PATH, path);
    for (k, v) in &parts.headers {
        if let Ok(v) = v.to_str()
            && !HOP_BY_HOP.contains(&k.as_str())
        {
            h.append(k.as_str(), v);
        }
    }
    let request = async_nats::Request::new()
        .headers(h)
        .payload(body)
        .timeout(Some(FORWARD_TIMEOUT));
    let reply = match nats.send_request(subject, request).await {
        Ok(reply) => reply,
        Err(e) => {
            let (status, why) = match e.kind() {
                async_nats::RequestErrorKind::NoResponders => (
                    503,
                    format!("no replica of {name} is ready; try again shortly"),
                ),
                async_nats::RequestErrorKind::TimedOut => (
                    504,
                    format!("{name} did not answer within {FORWARD_TIMEOUT:?}"),
                ),
                _ => (502, format!("forwarding to {name} failed: {e}")),
            };
            return text_response(status, format!("{why}\n"));
        }
    };
    let pairs = headers::to_pairs(reply.headers.as_ref());
    let status = pairs
        .iter()
        .find(|(k, _)| k == headers::HTTP_STATUS)
        .and_then(|(_, v)| v.parse::<u16>().ok())
        .unwrap_or(502);
    let mut response = text_response(status, String::new());
    *response.body_mut() = Full::new(reply.payload)
        .map_err(|never| match never {})
        .boxed_unsync();
    let out = response.headers_mut();
    out.clear();
    for (k, v) in pairs {
        if k == headers::HTTP_STATUS || k == headers::REPLICA {
            continue;
        }
        if let (Ok(k), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_str(&v),
        ) {
            out.append(k, v);
        }
    }
    response
}

/// Answers one request another host forwarded to a local http replica.
pub(crate) async fn answer_forwarded(
    nats: async_nats::Client,
    component: Arc<LoadedComponent>,
    msg: async_nats::Message,
    replica: Arc<str>,
    host: Arc<str>,
) {
    let Some(reply_to) = msg.reply.clone() else {
        return;
    };
    let (status, mut out, body) = answer(&component, msg).await;
    out.insert(headers::HTTP_STATUS, status.to_string().as_str());
    out.insert(headers::REPLICA, replica.as_ref());
    out.insert(headers::SERVED_BY, host.as_ref());
    if let Err(e) = nats.publish_with_headers(reply_to, out, body).await {
        tracing::debug!(error = %e, "forwarded response not sent");
    }
}

/// Runs one forwarded request through the component.
async fn answer(
    component: &LoadedComponent,
    msg: async_nats::Message,
) -> (u16, async_nats::HeaderMap, Bytes) {
    let pairs = headers::to_pairs(msg.headers.as_ref());
    let get = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let method = get(headers::HTTP_METHOD).unwrap_or_else(|| "GET".into());
    let path = get(headers::HTTP_PATH).unwrap_or_else(|| "/".into());
    let mut builder = hyper::Request::builder()
        .method(method.as_str())
        .uri(format!("http://forwarded{path}"));
    for (k, v) in &pairs {
        if !k.starts_with("Shoal-") {
            builder = builder.header(k.as_str(), v.as_str());
        }
    }
    let request = match builder.body(Full::new(msg.payload)) {
        Ok(request) => request,
        Err(e) => {
            return (
                400,
                async_nats::HeaderMap::new(),
                Bytes::from(format!("bad forwarded request: {e}\n")),
            );
        }
    };
    let response = match component.handle_http(request).await {
        Ok(response) => response,
        Err(err) => {
            let status = if matches!(err, crate::InvokeError::Deadline { .. }) {
                504
            } else {
                500
            };
            return (
                status,
                async_nats::HeaderMap::new(),
                Bytes::from(format!("component {} failed: {err}\n", component.name())),
            );
        }
    };
    let (parts, body) = response.into_parts();
    let body = match tokio::time::timeout(
        component.limits().timeout.get() + Duration::from_secs(1),
        body.collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        _ => {
            return (
                502,
                async_nats::HeaderMap::new(),
                Bytes::from("the component's response body failed\n"),
            );
        }
    };
    let mut out = async_nats::HeaderMap::new();
    for (k, v) in &parts.headers {
        if let Ok(v) = v.to_str() {
            out.append(k.as_str(), v);
        }
    }
    (parts.status.as_u16(), out, body)
}
