//! Every call's gate: the `Host` header, the caller's token, its
//! permission for what it asks, and the audit record of every change.
//!
//! [`gate`] runs before every handler: it refuses a `Host` the API does
//! not answer to (DNS rebinding) and a missing or bad token (401), and
//! hands the handler a [`Guard`]. The handler, which alone knows what a
//! call is about (an apply's namespace is in its body), asks the guard with
//! [`Guard::allow`]; a refusal is a 403 that names the missing permission
//! and the roles that grant it. Every call that is not a read (any method
//! but GET) and reached a permission check is appended to the audit trail
//! once the handler has answered, allowed or not.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shoal_api::Name;
use shoal_api::access::{Resource, Scope, Verb};
use shoal_api::resources::{ApiError, AuditRecord, Outcome};
use shoal_api::wire::now_ms;

use crate::auth::Caller;
use crate::tunables::AUDIT_NAME_MAX;
use crate::{SchedulerError, Shared};

/// An API failure as a status and a JSON body.
pub struct Failure(pub StatusCode, pub ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<SchedulerError> for Failure {
    fn from(e: SchedulerError) -> Self {
        let (status, kind) = match &e {
            SchedulerError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            SchedulerError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            SchedulerError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            SchedulerError::OverQuota(_) => (StatusCode::FORBIDDEN, "over_quota"),
            SchedulerError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            SchedulerError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        Failure(
            status,
            ApiError {
                kind: kind.into(),
                error: e.to_string(),
            },
        )
    }
}

/// A 400 with `message`.
pub fn invalid(message: impl Into<String>) -> Failure {
    SchedulerError::Invalid(message.into()).into()
}

/// What a handler was allowed or refused, for the audit trail.
#[derive(Debug, Clone)]
struct Note {
    verb: Verb,
    resource: Resource,
    namespace: Option<Name>,
    name: Option<String>,
    denied: bool,
}

/// The caller of one request, and its permission checks.
#[derive(Clone)]
pub struct Guard {
    shared: Arc<Shared>,
    caller: Arc<Caller>,
    mutating: bool,
    note: Arc<Mutex<Option<Note>>>,
}

/// The namespaces a caller may see something in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visible {
    /// Every namespace.
    All,
    /// These only.
    Only(BTreeSet<Name>),
}

impl Visible {
    /// Whether `namespace` is visible.
    pub fn shows(&self, namespace: &Name) -> bool {
        match self {
            Visible::All => true,
            Visible::Only(set) => set.contains(namespace),
        }
    }
}

impl Guard {
    /// Who is calling.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }

    /// Allows `verb` on `resource` in `scope`, or refuses with a 403 that
    /// says what is missing. A change (any method but GET) is noted for the
    /// audit trail either way; `name` says which object it is about.
    pub fn allow(
        &self,
        verb: Verb,
        resource: Resource,
        scope: &Scope,
        name: Option<String>,
    ) -> Result<(), Failure> {
        let decision =
            self.shared
                .access
                .roles
                .decide(&self.caller.principal, verb, resource, scope);
        let allowed = decision.allowed();
        if self.mutating {
            let namespace = match scope {
                Scope::Cluster => None,
                Scope::Namespace(ns) => Some(ns.clone()),
            };
            // Names come from paths: a few hundred kilobytes of one must
            // not fill the trail that every namespace shares.
            let name = name.map(|mut n| {
                if n.len() > AUDIT_NAME_MAX {
                    let mut cut = AUDIT_NAME_MAX;
                    while !n.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    n.truncate(cut);
                    n.push('…');
                }
                n
            });
            *self.note.lock().unwrap_or_else(|p| p.into_inner()) = Some(Note {
                verb,
                resource,
                namespace,
                name,
                denied: !allowed,
            });
        }
        if allowed {
            Ok(())
        } else {
            Err(forbidden(decision.reason(&self.caller.principal)))
        }
    }

    /// [`Guard::allow`] for `verb` on the app `name` in `namespace` (as a
    /// path gives them).
    pub fn allow_app(&self, verb: Verb, namespace: &str, name: &str) -> Result<(), Failure> {
        let scope = scope_of(namespace)?;
        for part in name.split('/') {
            Name::new(part).map_err(|e| invalid(e.to_string()))?;
        }
        self.allow(verb, Resource::Apps, &scope, Some(name.to_string()))
    }

    /// Whether the caller may upload components: whoever may create apps
    /// in some namespace may.
    pub fn may_upload(&self) -> Result<(), Failure> {
        self.visible(Verb::Create, Resource::Apps)
            .map(|_| ())
            .map_err(|_| {
                let principal = &self.caller.principal;
                let held: Vec<String> = principal.bindings.iter().map(|b| b.to_string()).collect();
                forbidden(format!(
                    "{principal} may not upload components: that needs permission create on apps in at least one namespace, and roles admin, edit grant it (it holds {})",
                    if held.is_empty() { "no role".to_string() } else { held.join(", ") }
                ))
            })
    }

    /// Where the caller may use `verb` on `resource`: everywhere (a
    /// cluster-wide grant), some namespaces, or nowhere (a 403).
    pub fn visible(&self, verb: Verb, resource: Resource) -> Result<Visible, Failure> {
        let roles = &self.shared.access.roles;
        let principal = &self.caller.principal;
        let cluster = roles.decide(principal, verb, resource, &Scope::Cluster);
        if cluster.allowed() {
            return Ok(Visible::All);
        }
        let some: BTreeSet<Name> = principal
            .bindings
            .iter()
            .filter_map(|b| b.namespace.clone())
            .filter(|ns| {
                roles
                    .decide(principal, verb, resource, &Scope::Namespace(ns.clone()))
                    .allowed()
            })
            .collect();
        if some.is_empty() {
            return Err(forbidden(cluster.reason(principal)));
        }
        Ok(Visible::Only(some))
    }
}

/// The scope of a namespace named in a path or a query.
pub fn scope_of(namespace: &str) -> Result<Scope, Failure> {
    Name::new(namespace)
        .map(Scope::Namespace)
        .map_err(|e| invalid(format!("namespace: {e}")))
}

/// A 403 with `reason`.
fn forbidden(reason: String) -> Failure {
    Failure(
        StatusCode::FORBIDDEN,
        ApiError {
            kind: "forbidden".into(),
            error: reason,
        },
    )
}

impl<S: Send + Sync> FromRequestParts<S> for Guard {
    type Rejection = Failure;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Guard>().cloned().ok_or_else(|| {
            SchedulerError::Internal("the request did not pass the gate".into()).into()
        })
    }
}

/// Routes anyone may call: health, the API's own description, and the
/// dashboard's sign-in page and style sheet.
fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/openapi.json") || crate::ui::is_public(path)
}

/// The gate every request passes (see the module docs).
pub async fn gate(State(shared): State<Arc<Shared>>, mut request: Request, next: Next) -> Response {
    if let Err(refusal) = check_host(&shared, &request) {
        return refusal.into_response();
    }
    if is_public(request.uri().path()) {
        return next.run(request).await;
    }
    let header_token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    // The dashboard's pages and their same-origin forms use the session
    // cookie; nothing else does, so a page elsewhere cannot make a
    // signed-in browser act.
    let page = crate::ui::takes_cookie(request.method(), request.uri().path(), request.headers());
    let authorization =
        header_token.or_else(|| page.then(|| crate::ui::session_bearer(request.headers()))?);
    let caller = match shared.access.authenticate(authorization.as_deref()) {
        Ok(caller) => caller,
        Err(_) if page => return crate::ui::to_sign_in(),
        Err(why) => {
            tracing::warn!(method = %request.method(), path = request.uri().path(), "refused: {why}");
            let status = match why {
                crate::auth::AuthError::Stale => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::UNAUTHORIZED,
            };
            let mut response = Failure(
                status,
                ApiError {
                    kind: "unauthorized".into(),
                    error: why.to_string(),
                },
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"shoal\""),
            );
            return response;
        }
    };
    let guard = Guard {
        shared: shared.clone(),
        caller: Arc::new(caller),
        mutating: !matches!(*request.method(), Method::GET | Method::HEAD),
        note: Arc::default(),
    };
    request.extensions_mut().insert(guard.clone());
    let response = next.run(request).await;
    let note = guard.note.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(note) = note {
        let status = response.status();
        let record = AuditRecord {
            at_ms: now_ms(),
            principal: guard.caller.principal.name.to_string(),
            token: guard.caller.token.clone(),
            verb: note.verb,
            resource: note.resource,
            namespace: note.namespace,
            name: note.name,
            outcome: if note.denied {
                Outcome::Denied
            } else if status.is_success() {
                Outcome::Allowed
            } else {
                Outcome::Failed
            },
            status: status.as_u16(),
        };
        if let Err(e) = shared.audit.append(&record).await {
            tracing::error!(error = %e, principal = record.principal, verb = %record.verb, "a call went unaudited");
        }
    }
    response
}

/// Refuses a `Host` the API does not answer to: a page on another site
/// whose name was made to resolve to this machine (DNS rebinding) would
/// send its own name. IP literals and `localhost` are always accepted.
fn check_host(shared: &Shared, request: &Request) -> Result<(), Failure> {
    let Some(host) = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let name = host_name(host);
    let accepted = name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || shared
            .api_names
            .iter()
            .any(|n| n.eq_ignore_ascii_case(name));
    if accepted {
        return Ok(());
    }
    Err(Failure(
        StatusCode::MISDIRECTED_REQUEST,
        ApiError {
            kind: "misdirected".into(),
            error: format!(
                "this API does not answer to the name {name:?}: the scheduler's operator can add it with --api-name {name}"
            ),
        },
    ))
}

/// The name part of a `Host` header: without the port, and without the
/// brackets of an IPv6 literal.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::host_name;

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("example.com:7070"), "example.com");
        assert_eq!(host_name("example.com"), "example.com");
        assert_eq!(host_name("[::1]:7070"), "::1");
        assert_eq!(host_name("127.0.0.1:80"), "127.0.0.1");
    }
}
