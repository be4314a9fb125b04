//! `/v1/namespaces`: namespaces as objects, with quotas, claimed routes
//! and usage.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use shoal_api::access::{Resource, Scope, Verb};
use shoal_api::resources::{ApiError, NamespaceInfo, NamespaceRequest, NamespaceSpec, RouteClaim};
use shoal_api::wire::now_ms;
use shoal_api::{DEFAULT_NAMESPACE, Digest, Name};

use super::guard::{Failure, Guard, invalid};
use super::json_body::JsonBody;
use super::openapi::NamespacePath;
use crate::namespaces::{self, StoredNamespace};
use crate::{SchedulerError, Shared};

fn parse(name: &str) -> Result<Name, Failure> {
    Name::new(name).map_err(|e| invalid(format!("namespace: {e}")))
}

fn not_found(name: &Name) -> SchedulerError {
    SchedulerError::NotFound(format!(
        "there is no namespace {name}: see `shoal get namespaces`"
    ))
}

/// A namespace with its usage now.
pub(crate) async fn info(shared: &Shared, name: &Name) -> Result<NamespaceInfo, SchedulerError> {
    let digests: Vec<Digest> = {
        let state = shared.state();
        state
            .apps
            .values()
            .filter(|a| &a.stored.spec.namespace == name)
            .flat_map(|a| a.stored.digests.values().copied())
            .collect()
    };
    let sizes = shared.component_sizes(&digests).await?;
    let state = shared.state();
    let stored = state.namespaces.get(name).ok_or_else(|| not_found(name))?;
    Ok(NamespaceInfo {
        name: name.clone(),
        created_ms: stored.created_ms,
        spec: stored.spec.clone(),
        usage: namespaces::usage(&state, name, None, &sizes),
        apps: state
            .apps
            .values()
            .filter(|a| &a.stored.spec.namespace == name)
            .count() as u32,
    })
}

/// List the namespaces the caller may see, with usage and quotas.
#[utoipa::path(
    get, path = "/v1/namespaces", tag = "namespaces", operation_id = "list_namespaces",
    responses((status = 200, description = "the namespaces", body = Vec<NamespaceInfo>))
)]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
) -> Result<Json<Vec<NamespaceInfo>>, Failure> {
    let visible = guard.visible(Verb::List, Resource::Namespaces)?;
    let names: Vec<Name> = shared
        .state()
        .namespaces
        .keys()
        .filter(|n| visible.shows(n))
        .cloned()
        .collect();
    let mut out = Vec::with_capacity(names.len());
    for name in &names {
        out.push(info(&shared, name).await?);
    }
    Ok(Json(out))
}

/// A namespace with its usage.
#[utoipa::path(
    get, path = "/v1/namespaces/{name}", tag = "namespaces", operation_id = "describe_namespace",
    params(NamespacePath),
    responses((status = 200, description = "the namespace", body = NamespaceInfo))
)]
pub async fn describe(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(NamespacePath { name }): Path<NamespacePath>,
) -> Result<Json<NamespaceInfo>, Failure> {
    let name = parse(&name)?;
    guard.allow(
        Verb::Get,
        Resource::Namespaces,
        &Scope::Namespace(name.clone()),
        None,
    )?;
    Ok(Json(info(&shared, &name).await?))
}

/// Create a namespace (`create = true`) or replace its settings.
///
/// Cluster-wide permission only, so nobody sets their own quota.
#[utoipa::path(
    put, path = "/v1/namespaces/{name}", tag = "namespaces", operation_id = "put_namespace",
    params(NamespacePath), request_body = NamespaceRequest,
    responses(
        (status = 200, description = "the namespace as stored", body = NamespaceInfo),
        (status = 409, description = "`create` was set and the namespace exists already", body = ApiError),
    )
)]
pub async fn put(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(NamespacePath { name }): Path<NamespacePath>,
    JsonBody(req): JsonBody<NamespaceRequest>,
) -> Result<Json<NamespaceInfo>, Failure> {
    let name = parse(&name)?;
    let existing = shared.state().namespaces.get(&name).cloned();
    let verb = if existing.is_some() {
        Verb::Update
    } else {
        Verb::Create
    };
    guard.allow(
        verb,
        Resource::Namespaces,
        &Scope::Cluster,
        Some(name.to_string()),
    )?;
    if req.create && existing.is_some() {
        return Err(SchedulerError::Conflict(format!(
            "namespace {name} exists already: change it with `shoal update namespace {name}`"
        ))
        .into());
    }
    if !req.create && existing.is_none() {
        return Err(not_found(&name).into());
    }
    let problems = claim_problems(&shared, &name, &req.spec);
    if !problems.is_empty() {
        return Err(invalid(format!(
            "namespace {name} cannot claim those routes:\n  {}",
            problems.join("\n  ")
        )));
    }
    let stored = StoredNamespace {
        spec: req.spec,
        created_ms: existing.as_ref().map_or_else(now_ms, |e| e.created_ms),
    };
    let js = shared.js.clone();
    crate::namespaces::ensure_storage(&js, &name, &stored.spec).await?;
    shared
        .namespaces
        .put(name.as_str(), &stored, existing.as_ref())
        .await?;
    shared.state().namespaces.insert(name.clone(), stored);
    tracing::info!(namespace = %name, "namespace {}", if req.create { "created" } else { "updated" });
    Ok(Json(info(&shared, &name).await?))
}

/// Why `spec`'s route claims cannot be `name`'s: malformed, overlapping
/// another namespace's claim, or covering a route another namespace's app
/// serves already.
fn claim_problems(shared: &Shared, name: &Name, spec: &NamespaceSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let state = shared.state();
    for claim in &spec.routes {
        if !claim.prefix.starts_with('/') {
            problems.push(format!(
                "route claim {claim}: the prefix must start with '/'"
            ));
            continue;
        }
        if let Some(host) = &claim.host
            && (host.is_empty()
                || !host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
        {
            problems.push(format!(
                "route claim {claim}: {host:?} is not a host name (letters, digits, '.' and '-')"
            ));
            continue;
        }
        for (other, stored) in &state.namespaces {
            if other == name {
                continue;
            }
            for theirs in &stored.spec.routes {
                if overlaps(claim, theirs) {
                    problems.push(format!(
                        "route claim {claim} overlaps {theirs}, which namespace {other} claims"
                    ));
                }
            }
        }
        for app in state.apps.values() {
            let spec = &app.stored.spec;
            if &spec.namespace == name {
                continue;
            }
            for (component, c) in &spec.components {
                if let Some(route) = &c.route
                    && claim.covers(c.host.as_deref(), route)
                {
                    problems.push(format!(
                        "route claim {claim} covers route {route:?} of {}/{}/{component}, which namespace {} serves already",
                        spec.namespace, spec.name, spec.namespace
                    ));
                }
            }
        }
    }
    problems
}

/// Whether two claims share any route.
fn overlaps(a: &RouteClaim, b: &RouteClaim) -> bool {
    a.covers(b.host.as_deref(), &b.prefix) || b.covers(a.host.as_deref(), &a.prefix)
}

/// Delete an empty namespace and its secrets.
#[utoipa::path(
    delete, path = "/v1/namespaces/{name}", tag = "namespaces", operation_id = "delete_namespace",
    params(NamespacePath),
    responses(
        (status = 204, description = "deleted"),
        (status = 409, description = "the namespace still holds apps: delete them first", body = ApiError),
    )
)]
pub async fn delete(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(NamespacePath { name }): Path<NamespacePath>,
) -> Result<StatusCode, Failure> {
    let name = parse(&name)?;
    guard.allow(
        Verb::Delete,
        Resource::Namespaces,
        &Scope::Cluster,
        Some(name.to_string()),
    )?;
    if name.as_str() == DEFAULT_NAMESPACE {
        return Err(
            SchedulerError::Conflict("the default namespace cannot be deleted".into()).into(),
        );
    }
    let (apps, secrets) = {
        let state = shared.state();
        if !state.namespaces.contains_key(&name) {
            return Err(not_found(&name).into());
        }
        let apps: Vec<String> = state
            .apps
            .values()
            .filter(|a| a.stored.spec.namespace == name)
            .map(|a| a.stored.spec.name.to_string())
            .collect();
        let prefix = format!("{name}.");
        let secrets: Vec<String> = state
            .secrets
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        (apps, secrets)
    };
    if !apps.is_empty() {
        return Err(SchedulerError::Conflict(format!(
            "namespace {name} still holds apps {}: delete them first",
            apps.join(", ")
        ))
        .into());
    }
    for key in &secrets {
        shared.store.delete_secret(key).await?;
        shared.state().secrets.remove(key);
    }
    shared.namespaces.delete(name.as_str()).await?;
    crate::namespaces::delete_storage(&shared.js, &name).await;
    shared.state().namespaces.remove(&name);
    tracing::info!(namespace = %name, secrets = secrets.len(), "namespace deleted");
    Ok(StatusCode::NO_CONTENT)
}
