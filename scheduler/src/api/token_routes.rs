//! `/v1/auth`: who the caller is, what it may do, and API tokens.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use shoal_api::Name;
use shoal_api::access::{Principal, Resource, Verb, scope_for};
use shoal_api::resources::{CanI, CreateTokenRequest, CreatedToken, TokenInfo, WhoAmI};
use shoal_api::token::TokenId;
use shoal_api::wire::now_ms;

use super::guard::{Failure, Guard, Visible, invalid};
use super::json_body::JsonBody;
use crate::{SchedulerError, Shared};

/// Names only Shoal gives: the first admin, and the caller when
/// authentication is off.
const RESERVED_PRINCIPALS: &[&str] = &["admin", "anonymous"];

/// Who the token names, and its roles.
#[utoipa::path(
    get, path = "/v1/auth/whoami", tag = "auth",
    responses((status = 200, description = "the caller", body = WhoAmI))
)]
pub async fn whoami(guard: Guard) -> Json<WhoAmI> {
    let caller = guard.caller();
    Json(WhoAmI {
        principal: caller.principal.clone(),
        token: caller.token.clone(),
        expires_ms: caller.expires_ms,
    })
}

/// The query of `GET /v1/auth/can-i`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CanIQuery {
    /// The verb.
    #[param(value_type = Verb)]
    verb: String,
    /// The resource.
    #[param(value_type = Resource)]
    resource: String,
    /// Where; without it, cluster-wide.
    #[param(value_type = Option<Name>)]
    namespace: Option<String>,
}

/// Whether the caller may use a verb on a resource, and the rule that
/// decided.
///
/// Decided by the very check the routes make.
#[utoipa::path(
    get, path = "/v1/auth/can-i", tag = "auth", params(CanIQuery),
    responses((status = 200, description = "the decision", body = CanI))
)]
pub async fn can_i(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Query(query): Query<CanIQuery>,
) -> Result<Json<CanI>, Failure> {
    let verb: Verb = query.verb.parse().map_err(invalid)?;
    let resource: Resource = query.resource.parse().map_err(invalid)?;
    let namespace = query
        .namespace
        .map(Name::new)
        .transpose()
        .map_err(|e| invalid(format!("namespace: {e}")))?;
    let scope = scope_for(verb, resource, namespace);
    let principal = &guard.caller().principal;
    let decision = shared
        .access
        .roles
        .decide(principal, verb, resource, &scope);
    Ok(Json(CanI {
        allowed: decision.allowed(),
        reason: decision.reason(principal),
    }))
}

/// Make a token (shown once).
///
/// The caller must be allowed to create tokens where each binding
/// applies, and hold every permission it grants.
#[utoipa::path(
    post, path = "/v1/auth/tokens", tag = "auth", operation_id = "create_token",
    request_body = CreateTokenRequest,
    responses((status = 200, description = "the token, whose secret is shown this once", body = CreatedToken))
)]
pub async fn create(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    JsonBody(req): JsonBody<CreateTokenRequest>,
) -> Result<Json<CreatedToken>, Failure> {
    if req.bindings.is_empty() {
        return Err(invalid(
            "a token needs at least one role: give --role R with --namespace NS or --cluster",
        ));
    }
    for binding in &req.bindings {
        guard.allow(
            Verb::Create,
            Resource::Tokens,
            &binding.scope(),
            Some(req.principal.to_string()),
        )?;
        shared
            .access
            .roles
            .may_grant(&guard.caller().principal, binding)
            .map_err(|why| {
                Failure(
                    StatusCode::FORBIDDEN,
                    shoal_api::resources::ApiError {
                        kind: "forbidden".into(),
                        error: why,
                    },
                )
            })?;
    }
    if RESERVED_PRINCIPALS.contains(&req.principal.as_str()) {
        return Err(invalid(format!(
            "{} is a name Shoal keeps for itself: choose another principal name",
            req.principal
        )));
    }
    // No token outlives the one that made it.
    let mut ttl_ms = req.ttl_seconds.saturating_mul(1000);
    if let Some(expires) = guard.caller().expires_ms {
        ttl_ms = ttl_ms.min(expires.saturating_sub(now_ms()));
    }
    let principal = Principal {
        name: req.principal,
        kind: req.kind,
        bindings: req.bindings,
    };
    let created_by = guard.caller().principal.name.to_string();
    let (token, record) = shared.access.mint(principal, ttl_ms, &created_by).await?;
    tracing::info!(token = %token.id(), principal = %record.principal, by = created_by, "token created");
    Ok(Json(CreatedToken {
        token: token.reveal().to_string(),
        info: record.info(token.id(), now_ms()),
    }))
}

/// Whether every binding of a token lies where the caller may see tokens.
fn shows(visible: &Visible, principal: &Principal) -> bool {
    principal.bindings.iter().all(|b| match &b.namespace {
        Some(ns) => visible.shows(ns),
        None => *visible == Visible::All,
    })
}

/// List the tokens whose every binding lies where the caller may list
/// tokens.
#[utoipa::path(
    get, path = "/v1/auth/tokens", tag = "auth", operation_id = "list_tokens",
    responses((status = 200, description = "the tokens, without their secrets", body = Vec<TokenInfo>))
)]
pub async fn list(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
) -> Result<Json<Vec<TokenInfo>>, Failure> {
    let visible = guard.visible(Verb::List, Resource::Tokens)?;
    let now = now_ms();
    Ok(Json(
        shared
            .access
            .list()
            .into_iter()
            .filter(|(_, record)| shows(&visible, &record.principal))
            .map(|(id, record)| record.info(&id, now))
            .collect(),
    ))
}

/// Revoke a token.
///
/// The caller must be allowed to delete tokens wherever it applies.
#[utoipa::path(
    delete, path = "/v1/auth/tokens/{id}", tag = "auth",
    params(("id" = TokenId, Path, description = "The token's id, as `shoal auth token list` shows it")),
    responses((status = 200, description = "the token, revoked", body = TokenInfo))
)]
pub async fn revoke(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, Failure> {
    let id = TokenId::parse(&id).ok_or_else(|| {
        invalid(format!(
            "{id:?} is not a token id (16 hex digits): see `shoal auth token list`"
        ))
    })?;
    let record = shared.access.record(&id).ok_or_else(|| {
        SchedulerError::NotFound(format!(
            "there is no token {id}: see `shoal auth token list`"
        ))
    })?;
    for binding in &record.principal.bindings {
        guard.allow(
            Verb::Delete,
            Resource::Tokens,
            &binding.scope(),
            Some(id.to_string()),
        )?;
    }
    let record = shared.access.revoke(&id).await?;
    tracing::info!(token = %id, principal = %record.principal, "token revoked");
    Ok(Json(record.info(&id, now_ms())))
}
