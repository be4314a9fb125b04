//! [`JsonBody`]: a request's JSON body, read as JSON Schema reads it.
//!
//! JSON has one kind of number. JSON Schema, and so the API's OpenAPI
//! document, calls `2.0` an integer as much as `2`; serde does not, and
//! would refuse `{"replicas": 2.0}`, a body its own document admits (and
//! one a JavaScript client may well send). This extractor reads the body
//! as axum's `Json` does (the same refusals: 415 without
//! `application/json`, 400 for text that is not JSON, 413 over the
//! limit), turns every whole float that is exactly an integer into that
//! integer, then reads the type, answering 422 with the path of the field
//! that did not fit.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Number, Value};
use shoal_api::resources::ApiError;

use super::guard::Failure;

/// Beyond this magnitude a float no longer spells one integer exactly.
const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53

/// A request body of JSON, read into `T`.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let axum::Json(mut value) = axum::Json::<Value>::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        whole_numbers(&mut value);
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|e| {
                Failure(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ApiError {
                        kind: "invalid".into(),
                        error: format!(
                            "Failed to deserialize the JSON body into the target type: {e}"
                        ),
                    },
                )
                .into_response()
            })
    }
}

/// Turns every float in `value` that is exactly a whole number into that
/// integer.
fn whole_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(whole) = whole(n) {
                *n = whole;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        Value::Object(fields) => fields.values_mut().for_each(whole_numbers),
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// `n` as an integer, when it is a float with nothing after the point and
/// small enough to be exact.
fn whole(n: &Number) -> Option<Number> {
    if n.is_i64() || n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    if f.fract() != 0.0 || f.abs() >= EXACT {
        return None;
    }
    // Exact by the checks above: |f| < 2^53 with no fraction.
    #[allow(clippy::cast_possible_truncation)]
    let i = f as i64;
    Some(Number::from(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_floats_become_integers_and_nothing_else_changes() {
        let mut value = serde_json::json!({
            "replicas": 3.0,
            "negative": -2.0,
            "half": 2.5,
            "huge": 1e300,
            "int": 7,
            "nested": [{"ttl": 60.0}, "5.0"],
        });
        whole_numbers(&mut value);
        assert_eq!(
            value,
            serde_json::json!({
                "replicas": 3,
                "negative": -2,
                "half": 2.5,
                "huge": 1e300,
                "int": 7,
                "nested": [{"ttl": 60}, "5.0"],
            })
        );
    }
}
