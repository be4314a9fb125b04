//! `GET /v1/dumps/{namespace}/{app}` and
//! `GET /v1/dumps/{namespace}/{app}/{id}`: an app's core dumps, listed and
//! downloaded. They hold a guest's memory, so both need the `dumps`
//! resource (roles admin and edit), not just read access to the app.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use shoal_api::Name;
use shoal_api::access::{Resource, Verb};
use shoal_api::dumps::{DumpId, DumpInfo};

use super::guard::{Failure, Guard, invalid, scope_of};
use super::openapi::{AppLogsPath, Binary};
use crate::{SchedulerError, Shared};
use shoal_api::resources::ApiError;

/// An app's core dumps, oldest first.
///
/// Components keep them when their spec says `debug = { coredumps = N }`.
/// Needs `list` on `dumps` in the app's namespace.
#[utoipa::path(
    get, path = "/v1/dumps/{namespace}/{app}", tag = "observability",
    operation_id = "list_dumps", params(AppLogsPath),
    responses(
        (status = 200, description = "the dumps kept", body = Vec<DumpInfo>),
        (status = 503, description = "the dump store cannot be reached", body = ApiError),
    )
)]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(AppLogsPath { namespace, app }): Path<AppLogsPath>,
) -> Result<Json<Vec<DumpInfo>>, Failure> {
    guard.allow(
        Verb::List,
        Resource::Dumps,
        &scope_of(&namespace)?,
        Some(app.clone()),
    )?;
    let namespace = Name::new(namespace).map_err(|e| invalid(format!("namespace: {e}")))?;
    let app = Name::new(app).map_err(|e| invalid(format!("app: {e}")))?;
    namespace_exists(&shared, &namespace)?;
    let js = shared.js.clone();
    Ok(Json(crate::dumps::list(&js, &namespace, &app).await?))
}

/// One core dump's bytes: a Wasm module in the core dump format, holding
/// the guest's memory.
///
/// Needs `get` on `dumps` in the app's namespace.
#[utoipa::path(
    get, path = "/v1/dumps/{namespace}/{app}/{id}", tag = "observability",
    params(AppLogsPath, (
        "id" = String, Path,
        pattern = r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?\.[a-z]([a-z0-9-]{0,61}[a-z0-9])?\.[0-9]{1,19}\.[0-9a-f]{8}$",
        description = "As the listing gives it: `APP.COMPONENT.MS.NONCE`"
    )),
    responses(
        (status = 200, description = "the dump", body = inline(Binary), content_type = "application/wasm"),
        (status = 503, description = "the dump store cannot be reached", body = ApiError),
    )
)]
pub async fn download(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, app, id)): Path<(String, String, String)>,
) -> Result<Response, Failure> {
    guard.allow(
        Verb::Get,
        Resource::Dumps,
        &scope_of(&namespace)?,
        Some(app.clone()),
    )?;
    let namespace = Name::new(namespace).map_err(|e| invalid(format!("namespace: {e}")))?;
    let id: DumpId = id.parse().map_err(|e| invalid(format!("{e}")))?;
    if id.app.as_str() != app {
        return Err(SchedulerError::NotFound(format!(
            "dump {id} belongs to app {}, not {app}",
            id.app
        ))
        .into());
    }
    namespace_exists(&shared, &namespace)?;
    let js = shared.js.clone();
    let object = crate::dumps::open(&js, &namespace, &id).await?;
    let size = object.info().size;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(object));
    Ok((
        [
            (header::CONTENT_TYPE, "application/wasm".to_string()),
            (header::CONTENT_LENGTH, size.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{id}.wasm\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// A namespace that does not exist has no dump store: 404, not 503.
fn namespace_exists(shared: &Shared, namespace: &Name) -> Result<(), Failure> {
    if shared.state().namespaces.contains_key(namespace) {
        return Ok(());
    }
    Err(SchedulerError::NotFound(format!(
        "namespace {namespace} does not exist: see `shoal get namespaces`"
    ))
    .into())
}
