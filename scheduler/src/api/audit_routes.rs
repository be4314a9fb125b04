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
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Only this namespace's records.
    namespace: Option<String>,
    /// Only records since this time, in ms since the epoch.
    #[serde(default)]
    since_ms: u64,
}

/// `GET /v1/audit`: a namespace's records need `list audit` there; all of
/// them need it cluster-wide.
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
