//! Every refusal in the API's own words: a JSON [`ApiError`] body.
//!
//! Handlers answer with [`Failure`](super::guard::Failure), which is JSON
//! already. What axum refuses before a handler runs is not: a body that is
//! not JSON or not the expected shape (400, 415, 422), a path or query
//! that does not parse (400), a method the path does not take (405), a
//! body over the limit (413), a path no route matches (404). Those come
//! as plain text or with no body at all. [`json_errors`] rewrites them
//! into the same JSON every other error has, keeping the status and
//! axum's text (which says what was wrong), so a client parses one shape
//! whatever refused it.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_api::resources::ApiError;

use super::guard::Failure;
use crate::tunables::MAX_REJECTION_TEXT;

/// Rewrites an error answer that is not JSON into an [`ApiError`].
pub(crate) async fn json_errors(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&response) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REJECTION_TEXT)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let error = match (status, text.is_empty()) {
        (StatusCode::NOT_FOUND, true) => {
            format!("no route {method} {path}: see /openapi.json for the API's routes")
        }
        (StatusCode::METHOD_NOT_ALLOWED, _) => format!(
            "{path} does not take {method}{}: see /openapi.json",
            allowed(&parts.headers)
        ),
        (_, false) => text,
        (_, true) => status
            .canonical_reason()
            .unwrap_or("refused")
            .to_lowercase(),
    };
    let mut answer = Failure(
        status,
        ApiError {
            kind: kind_of(status).into(),
            error,
        },
    )
    .into_response();
    // What the refusal said besides its body (`Allow` on a 405) holds.
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    answer
}

/// A 404 for a path no route matches (the router's fallback).
pub(crate) async fn no_route() -> Response {
    (StatusCode::NOT_FOUND, Body::empty()).into_response()
}

/// Whether the answer is JSON already, or a page of the dashboard.
fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json") || v.starts_with("text/html"))
}

fn allowed(headers: &axum::http::HeaderMap) -> String {
    headers
        .get(header::ALLOW)
        .and_then(|v: &HeaderValue| v.to_str().ok())
        .map(|v| format!(" (it takes {v})"))
        .unwrap_or_default()
}

/// The [`ApiError::kind`] of a status axum refused with.
fn kind_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::CONFLICT => "conflict",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "invalid",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_keeps_its_class() {
        assert_eq!(kind_of(StatusCode::UNSUPPORTED_MEDIA_TYPE), "invalid");
        assert_eq!(kind_of(StatusCode::UNPROCESSABLE_ENTITY), "invalid");
        assert_eq!(kind_of(StatusCode::PAYLOAD_TOO_LARGE), "invalid");
        assert_eq!(kind_of(StatusCode::NOT_FOUND), "not_found");
        assert_eq!(kind_of(StatusCode::BAD_GATEWAY), "internal");
    }
}
