//! Shadow traffic at the ingress: a share of a route's requests is also
//! sent, as a copy, to the pod's shadow replica, which runs a new revision.
//! The caller always gets the stable replicas' answer; the shadow's is
//! compared with it and thrown away, and what differed is counted in a
//! [`ShadowReport`] that heartbeats carry to the scheduler.
//!
//! The copy leaves once the stable answer is in, on a task of its own, so
//! the caller never waits for the shadow. Both answers are read whole to
//! compare them (bounded by [`MAX_FORWARDED_RESPONSE_BODY`]): a shadowed
//! request is answered in one piece rather than streamed. What a shadow
//! does besides answering is held back by its capabilities (see
//! [`crate::capabilities`]): its messages and outbound calls are refused,
//! and its key-value writes go to a scratch bucket.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use shoal_api::resources::{SHADOW_EXAMPLE_BODY, SHADOW_EXAMPLES, ShadowDifference, ShadowReport};

use crate::component::LoadedComponent;
use crate::forward::{self, Unsent};
use crate::http::{Routes, Target};
use crate::invoke::{HttpResponse, text_response};
use crate::tunables::MAX_FORWARDED_RESPONSE_BODY;

/// One route's shadow counts, shared by the requests copied for it.
pub type ShadowTally = Arc<Mutex<ShadowReport>>;

/// Where a request's copy goes.
pub struct ShadowCopy {
    /// The shadow replica on this host, if it runs here.
    pub local: Option<Arc<LoadedComponent>>,
    /// Else its subject, over this connection.
    pub remote: Option<(async_nats::Client, String)>,
    /// `namespace/app/component (shadow)`, for messages.
    pub name: String,
    /// Where the comparison is counted.
    pub tally: ShadowTally,
}

/// Serves `req` from `primary` (a local replica or another host's) and
/// sends a copy to `shadow`, comparing the answers once both are in.
pub(crate) async fn mirror(
    routes: &dyn Routes,
    primary: Target,
    shadow: ShadowCopy,
    req: hyper::Request<Incoming>,
) -> HttpResponse {
    let (parts, body) = req.into_parts();
    let body = match forward::read_body(body).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let answer = match primary {
        Target::Local(component) => {
            let req = hyper::Request::from_parts(copy_parts(&parts), Full::new(body.clone()));
            crate::http::serve_local(routes, &component, req).await
        }
        Target::Remote {
            nats,
            subject,
            name,
            fallback,
        } => forward::forward_read(&nats, (subject, fallback), &name, &parts, body.clone()).await,
        _ => return text_response(503, "no replica is ready; try again shortly\n".into()),
    };
    let (head, answer_body) = answer.into_parts();
    let stable = match read_answer(answer_body).await {
        Some(stable) => stable,
        None => {
            return text_response(
                502,
                format!(
                    "the answer was over {MAX_FORWARDED_RESPONSE_BODY} bytes or broke off while being read to compare with a shadow's\n"
                ),
            );
        }
    };
    let request = format!(
        "{} {}",
        parts.method,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let status = head.status.as_u16();
    tokio::spawn(copy(shadow, parts, body, (status, stable.clone()), request));
    hyper::Response::from_parts(
        head,
        Full::new(stable)
            .map_err(|never| match never {})
            .boxed_unsync(),
    )
}

/// Sends the copy to the shadow and counts how its answer compares with
/// the stable one.
async fn copy(
    shadow: ShadowCopy,
    parts: hyper::http::request::Parts,
    body: Bytes,
    stable: (u16, Bytes),
    request: String,
) {
    let answer = match (&shadow.local, &shadow.remote) {
        (Some(component), _) => {
            let req = hyper::Request::from_parts(parts, Full::new(body));
            match component.handle_http(req).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    read_answer(response.into_body()).await.map(|b| (status, b))
                }
                Err(err) => Some((500, Bytes::from(err.to_string()))),
            }
        }
        (None, Some((nats, subject))) => {
            match forward::send(nats, subject.clone(), &shadow.name, &parts, body).await {
                Ok(reply) => {
                    let response = forward::response_of(&shadow.name, reply);
                    let status = response.status().as_u16();
                    read_answer(response.into_body()).await.map(|b| (status, b))
                }
                Err(Unsent::NoResponders | Unsent::Refused(_)) => None,
            }
        }
        (None, None) => None,
    };
    let mut report = shadow.tally.lock().unwrap_or_else(|p| p.into_inner());
    note(&mut report, &request, &stable, answer.as_ref());
}

/// Counts one comparison.
fn note(
    report: &mut ShadowReport,
    request: &str,
    (stable_status, stable_body): &(u16, Bytes),
    shadow: Option<&(u16, Bytes)>,
) {
    let Some((shadow_status, shadow_body)) = shadow else {
        report.unanswered += 1;
        return;
    };
    report.compared += 1;
    let differs = if stable_status != shadow_status {
        report.status_differed += 1;
        true
    } else if stable_body != shadow_body {
        report.body_differed += 1;
        true
    } else {
        false
    };
    if differs && report.examples.len() < SHADOW_EXAMPLES {
        let start = |b: &Bytes| {
            String::from_utf8_lossy(&b[..b.len().min(SHADOW_EXAMPLE_BODY)]).into_owned()
        };
        report.examples.push(ShadowDifference {
            request: request.to_string(),
            stable_status: *stable_status,
            shadow_status: *shadow_status,
            stable_body: start(stable_body),
            shadow_body: start(shadow_body),
        });
    }
}

/// An answer's body, read whole up to [`MAX_FORWARDED_RESPONSE_BODY`].
async fn read_answer<B>(body: B) -> Option<Bytes>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    Limited::new(body, MAX_FORWARDED_RESPONSE_BODY)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

/// A request's method, target and headers again, for its copy.
fn copy_parts(parts: &hyper::http::request::Parts) -> hyper::http::request::Parts {
    let mut copy = hyper::Request::new(());
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = parts.version;
    *copy.headers_mut() = parts.headers.clone();
    copy.into_parts().0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> ShadowReport {
        ShadowReport::new(
            shoal_api::Name::new("default").unwrap(),
            shoal_api::Name::new("web").unwrap(),
            shoal_api::Name::new("web").unwrap(),
            2,
        )
    }

    #[test]
    fn differences_are_counted_by_status_then_body_with_a_few_examples() {
        let mut r = report();
        let ok = (200, Bytes::from_static(b"hello"));
        note(&mut r, "GET /a", &ok, Some(&ok));
        note(
            &mut r,
            "GET /b",
            &ok,
            Some(&(500, Bytes::from_static(b"boom"))),
        );
        note(
            &mut r,
            "GET /c",
            &ok,
            Some(&(200, Bytes::from_static(b"howdy"))),
        );
        note(&mut r, "GET /d", &ok, None);
        for i in 0..10 {
            note(
                &mut r,
                &format!("GET /e{i}"),
                &ok,
                Some(&(201, Bytes::new())),
            );
        }
        assert_eq!(
            (r.compared, r.status_differed, r.body_differed, r.unanswered),
            (13, 11, 1, 1)
        );
        assert_eq!(r.examples.len(), SHADOW_EXAMPLES);
        assert_eq!(r.examples[0].request, "GET /b");
        assert_eq!(
            (r.examples[0].stable_status, r.examples[0].shadow_status),
            (200, 500)
        );
        assert_eq!(r.examples[1].shadow_body, "howdy");
    }
}
