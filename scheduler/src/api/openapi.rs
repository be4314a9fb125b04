//! The API's OpenAPI document, generated, never written by hand.
//!
//! Each handler carries a `#[utoipa::path]` with its method, path and the
//! answers only it gives; the request and response schemas come from the
//! `shoal-api` types' `ToSchema` derives, which read the same serde
//! attributes the wire does. The routes are registered through the same
//! attributes (`utoipa_axum::routes!`), so a route cannot exist without
//! its documentation, nor the other way round.
//!
//! [`finish`] then adds what every operation but the public ones shares,
//! once: the bearer token, and the refusals that come from the gate, the
//! store and the extractors rather than from the handler (see
//! [`super::rejections`]): 400, 401, 403, 421 and 503 everywhere; 404
//! where the path names something; 413, 415 and 422 where a JSON body is
//! read.

use std::collections::BTreeMap;

use serde::Deserialize;
use shoal_api::Name;
use shoal_api::resources::ApiError;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, RefOr};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// What the document says of the API as a whole.
const DESCRIPTION: &str = "Apply, inspect, scale and invoke Shoal apps. \
Send `Authorization: Bearer <token>`: `shoal up` makes the first admin token, \
`shoal auth token create` more.\n\n\
Every refusal, whatever refuses it (a handler, the router, a body that does \
not parse), is an `ApiError` in JSON with one of the statuses listed; a \
method a path does not take is 405 with `Allow`, and a path no route matches \
is 404.";

/// `{namespace}/{name}`: the app a route acts on.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AppPath {
    /// The app's namespace.
    #[param(value_type = Name)]
    pub namespace: String,
    /// The app's name.
    #[param(value_type = Name)]
    pub name: String,
}

/// `{namespace}/{app}`: the app whose logs or dumps a route reads.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct AppLogsPath {
    /// The app's namespace.
    #[param(value_type = Name)]
    pub namespace: String,
    /// The app's name. (`{name}` where the dashboard serves the same
    /// handler under its app pages.)
    #[param(value_type = Name)]
    #[serde(alias = "name")]
    pub app: String,
}

/// `{name}`: the namespace a route acts on.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct NamespacePath {
    /// The namespace.
    #[param(value_type = Name)]
    pub name: String,
}

/// Any bytes, at least one, as a body that is not JSON (a component, a
/// secret's value, a core dump).
pub(crate) enum Binary {}

impl PartialSchema for Binary {
    fn schema() -> RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .min_length(Some(1))
            .into()
    }
}

impl ToSchema for Binary {}

/// Fills in the document [`utoipa_axum`] collected from the handlers.
pub(crate) fn finish(mut doc: OpenApi) -> OpenApi {
    doc.info.title = "Shoal scheduler API".into();
    doc.info.version = "1".into();
    doc.info.description = Some(DESCRIPTION.into());
    doc.info.license = None;
    doc.info.contact = None;
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "token",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(
                    "An API token: `shoal up` writes the first admin's to the client config",
                ))
                .build(),
        ),
    );
    components
        .schemas
        .entry(ApiError::name().into_owned())
        .or_insert_with(ApiError::schema);
    doc.security = Some(vec![SecurityRequirement::new::<&str, [&str; 0], &str>(
        "token",
        [],
    )]);
    for (path, item) in doc.paths.paths.iter_mut() {
        for operation in operations(item).filter(|op| !public(op)) {
            add_refusals(path, operation);
        }
    }
    doc
}

/// The operations of one path.
fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Whether `operation` needs no token (`security(())` on its handler):
/// the gate lets it through untouched, so none of the gate's refusals
/// apply.
fn public(operation: &Operation) -> bool {
    operation
        .security
        .as_ref()
        .is_some_and(|s| s.contains(&SecurityRequirement::default()))
}

/// The refusals `operation` can meet before or besides its handler, unless
/// the handler's attribute says them in its own words.
fn add_refusals(path: &str, operation: &mut Operation) {
    let json_body = operation
        .request_body
        .as_ref()
        .is_some_and(|body| body.content.contains_key("application/json"));
    let any_body = operation.request_body.is_some();
    let mut refusals: BTreeMap<&str, &str> = BTreeMap::from([
        (
            "400",
            "invalid request: a parameter, the body or a value in it is wrong (the message says which)",
        ),
        (
            "401",
            "no token, or one that is unknown, expired or revoked",
        ),
        (
            "403",
            "the caller lacks the permission (the message names it and the roles that grant it), or a quota would be exceeded",
        ),
        (
            "421",
            "the Host header names a host the API does not answer to",
        ),
        (
            "503",
            "the cluster's store (NATS) cannot be reached, or the token cannot be checked yet: try again",
        ),
    ]);
    if path.contains('{') {
        refusals.insert("404", "nothing by that name, or not one the caller may see");
    }
    if any_body {
        refusals.insert("413", "the body is larger than the API takes");
    }
    if json_body {
        refusals.insert("415", "the body is not sent as `application/json`");
        refusals.insert(
            "422",
            "the body is JSON but not of the expected shape (the message names the field)",
        );
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in refusals {
        responses
            .entry(status.to_string())
            .or_insert_with(|| RefOr::T(error(description)));
    }
}

/// An answer carrying an [`ApiError`].
fn error(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                    ApiError::name(),
                ))))
                .build(),
        )
        .build()
}
