//! `GET /v1/audit`: the audit trail.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use shoal_api::access::{Resource, Scope, Verb};
use shoal_api::resources::AuditRecord;

use super::guard::{Failure, Guard, scope_of};
use crate::Shared;

/// The query of `GET /v1/audit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only this namespace's records (which the caller must be allowed
    /// to list).
    #[param(value_type = Option<shoal_api::Name>)]
    namespace: Option<String>,
    /// Only records since this time, in ms since the epoch.
    #[serde(default, deserialize_with = "super::numbers::safe")]
    #[param(maximum = 9_007_199_254_740_991_u64)]
    since_ms: u64,
}

/// The audit trail: every mutating call, oldest first.
///
/// A namespace's records need `list audit` there; all of them need it
/// cluster-wide.
#[utoipa::path(
    get, path = "/v1/audit", tag = "auth", operation_id = "list_audit", params(AuditQuery),
    responses((status = 200, description = "the records", body = Vec<AuditRecord>))
)]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Query(query): Query<AuditQuery>,
) -> Result<Json<Vec<AuditRecord>>, Failure> {
    let scope = match &query.namespace {
        Some(ns) => scope_of(ns)?,
        None => Scope::Cluster,
    };
    guard.allow(Verb::List, Resource::Audit, &scope, None)?;
    let namespace = match &scope {
        Scope::Namespace(ns) => Some(ns),
        Scope::Cluster => None,
    };
    Ok(Json(shared.audit.list(namespace, query.since_ms).await?))
}
