//! HTTP over NATS: an ingress forwards a request for a route it does not
//! serve to the replicas that do, in their queue group, and relays the
//! answer. Request and response travel whole, each as one NATS message
//! (request bodies up to [`MAX_HTTP_BODY`], response bodies up to
//! [`MAX_FORWARDED_RESPONSE_BODY`], both within the servers' `max_payload`,
//! which a nats-server Shoal starts raises to [`NATS_MAX_PAYLOAD`]); a
//! request body the servers cannot carry gets 413 at once. HTTP headers
//! ride as NATS headers.
//!
//! Both ends enforce the response cap: the replica does not collect more
//! than it from the component, and the ingress does not relay a bigger
//! reply whatever the other host sent, so a misbehaving host cannot make
//! this one buffer or relay more than the cap.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use shoal_api::subjects::{NATS_MAX_PAYLOAD, headers};

use crate::component::LoadedComponent;
use crate::invoke::{HttpResponse, text_response};
use crate::tunables::{
    FORWARD_HEADERS_ROOM, FORWARD_REPLY_MARGIN, FORWARD_TIMEOUT, MAX_FORWARDED_RESPONSE_BODY,
    MAX_HTTP_BODY,
};

/// HTTP headers that describe one hop's connection, not the message.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// Reads a request body to forward or copy: at most [`MAX_HTTP_BODY`]
/// bytes, arriving within [`FORWARD_TIMEOUT`]; else the answer to give.
pub(crate) async fn read_body<B>(body: B) -> Result<Bytes, HttpResponse>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // A client trickling its body must not hold the request forever.
    match tokio::time::timeout(FORWARD_TIMEOUT, Limited::new(body, MAX_HTTP_BODY).collect()).await {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(text_response(
            413,
            format!("request bodies are limited to {MAX_HTTP_BODY} bytes\n"),
        )),
        Ok(Err(e)) => Err(text_response(
            400,
            format!("the request body could not be read: {e}\n"),
        )),
        Err(_) => Err(text_response(
            408,
            format!("the request body did not arrive within {FORWARD_TIMEOUT:?}\n"),
        )),
    }
}

/// Forwards `req` to `subject` (to `fallback` instead when nothing
/// answers there) and turns the reply into a response.
pub async fn forward(
    nats: &async_nats::Client,
    (subject, fallback): (String, Option<String>),
    name: &str,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    forward_read(nats, (subject, fallback), name, &parts, body).await
}

/// [`forward`] of a request whose body was read already.
pub(crate) async fn forward_read(
    nats: &async_nats::Client,
    (subject, fallback): (String, Option<String>),
    name: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> HttpResponse {
    let mut sent = send(nats, subject, name, parts, body.clone()).await;
    let unanswered = matches!(sent, Err(Unsent::NoResponders));
    if let (true, Some(fallback)) = (unanswered, fallback) {
        sent = send(nats, fallback, name, parts, body).await;
    }
    match sent {
        Ok(reply) => response_of(name, reply),
        Err(Unsent::NoResponders) => text_response(
            503,
            format!("no replica of {name} is ready; try again shortly\n"),
        ),
        Err(Unsent::Refused(answer)) => answer,
    }
}

/// Why a request was not answered over NATS.
pub(crate) enum Unsent {
    /// No replica listens on the subject.
    NoResponders,
    /// Not sent, or sent and failed: the answer to give.
    Refused(HttpResponse),
}

/// Sends a request, whose body was read already, to `subject`; the reply.
pub(crate) async fn send(
    nats: &async_nats::Client,
    subject: String,
    name: &str,
    parts: &hyper::http::request::Parts,
    body: Bytes,
) -> Result<async_nats::Message, Unsent> {
    // One NATS message carries the request: a body the server cannot carry
    // is refused here, at once, rather than failing on the way.
    let carried = nats
        .server_info()
        .max_payload
        .saturating_sub(FORWARD_HEADERS_ROOM);
    if body.len() > carried {
        return Err(Unsent::Refused(text_response(
            413,
            format!(
                "{name} runs on another host, and NATS carries at most {carried} bytes of request body \
                 between hosts (its max_payload); this one has {}. Send less, or raise max_payload \
                 on the NATS servers (a nats-server Shoal starts uses {NATS_MAX_PAYLOAD})\n",
                body.len()
            ),
        )));
    }
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
    nats.send_request(subject, request).await.map_err(|e| {
        let (status, why) = match e.kind() {
            async_nats::RequestErrorKind::NoResponders => return Unsent::NoResponders,
            async_nats::RequestErrorKind::TimedOut => (
                504,
                format!("{name} did not answer within {FORWARD_TIMEOUT:?}"),
            ),
            _ => (502, format!("forwarding to {name} failed: {e}")),
        };
        Unsent::Refused(text_response(status, format!("{why}\n")))
    })
}

/// The response a forwarded request's reply carries.
pub(crate) fn response_of(name: &str, reply: async_nats::Message) -> HttpResponse {
    if let Some(refused) = oversized_reply(name, reply.payload.len()) {
        return refused;
    }
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

/// The `502` for a forwarded reply whose body is over the cap, if it is.
fn oversized_reply(name: &str, len: usize) -> Option<HttpResponse> {
    if len <= MAX_FORWARDED_RESPONSE_BODY {
        return None;
    }
    tracing::warn!(
        component = name,
        bytes = len,
        limit = MAX_FORWARDED_RESPONSE_BODY,
        "a forwarded response is over the size limit; answering 502"
    );
    Some(text_response(
        502,
        format!(
            "the response of {name} ({len} bytes) is over the {MAX_FORWARDED_RESPONSE_BODY}-byte limit for responses relayed between hosts\n"
        ),
    ))
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
    let (status, out, body) = answer(&component, msg).await;
    let stamped = |mut out: async_nats::HeaderMap, status: u16| {
        out.insert(headers::HTTP_STATUS, status.to_string().as_str());
        out.insert(headers::REPLICA, replica.as_ref());
        out.insert(headers::SERVED_BY, host.as_ref());
        out
    };
    let sent = nats
        .publish_with_headers(reply_to.clone(), stamped(out, status), body)
        .await;
    match sent {
        Ok(()) => {}
        // Bigger than this NATS lets through: say so, rather than leave
        // the caller waiting for FORWARD_TIMEOUT.
        Err(e) if e.kind() == async_nats::PublishErrorKind::MaxPayloadExceeded => {
            let limit = nats.server_info().max_payload;
            tracing::warn!(
                component = component.name(),
                limit,
                "a forwarded response does not fit in one NATS message; answering 502"
            );
            let why = Bytes::from(format!(
                "the response of component {} does not fit in one NATS message ({limit} bytes with its headers, the servers' max_payload) to be relayed between hosts: raise max_payload (a nats-server Shoal starts uses {NATS_MAX_PAYLOAD})\n",
                component.name()
            ));
            let out = stamped(async_nats::HeaderMap::new(), 502);
            if let Err(e) = nats.publish_with_headers(reply_to, out, why).await {
                tracing::debug!(error = %e, "forwarded response not sent");
            }
        }
        Err(e) => tracing::debug!(error = %e, "forwarded response not sent"),
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
        component.limits().timeout.get() + FORWARD_REPLY_MARGIN,
        Limited::new(body, MAX_FORWARDED_RESPONSE_BODY).collect(),
    )
    .await
    {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return (
                502,
                async_nats::HeaderMap::new(),
                Bytes::from(format!(
                    "the response body of component {} is over the {MAX_FORWARDED_RESPONSE_BODY}-byte limit for responses relayed between hosts\n",
                    component.name()
                )),
            );
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reply_over_the_cap_is_a_502_that_says_why() {
        assert!(oversized_reply("ns/app/web", MAX_FORWARDED_RESPONSE_BODY).is_none());
        let refused = oversized_reply("ns/app/web", MAX_FORWARDED_RESPONSE_BODY + 1).unwrap();
        assert_eq!(refused.status(), 502);
        let body = refused.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(
            body.contains("ns/app/web") && body.contains("limit for responses relayed"),
            "{body}"
        );
    }
}
