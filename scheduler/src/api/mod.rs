//! The scheduler's HTTP API (JSON). `GET /openapi.json` describes it.
//!
//! Every route but `/healthz` and `/openapi.json` passes [`guard::gate`]:
//! its handler asks the [`guard::Guard`] for the permission the call needs
//! before it reads or changes anything.

mod audit_routes;
mod dump_routes;
pub mod guard;
mod json_body;
pub(crate) mod log_routes;
pub(crate) mod namespace_routes;
mod numbers;
mod openapi;
mod rejections;
mod token_routes;

use shoal_api::resources::EventReason;
use shoal_api::trace::{HostCalls, TRACEPARENT, TraceParent};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Deserialize;
use shoal_api::access::{Resource, Scope, Verb};
use shoal_api::resources::{
    ApiError, AppDetail, AppStatus, AppSummary, ApplyRequest, ApplyResponse, ComponentSummary,
    HostInfo, InvokeRequest, InvokeResponse, Plan, PodInfo, PodState, RevisionInfo,
    RollbackRequest, RolloutStatus, ScaleRequest, SchedulerInfo,
};
use shoal_api::top::{TopKind, TopRow};
use shoal_api::wire::{HostId, ReplicaId, ReplicaState, ReplicaStatus};
use shoal_api::{AppSpec, ComponentKind, Digest, MAX_REPLICAS, Name, subjects};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::reconcile::replica_id;
use crate::state::{App, State as SchedulerState, StoredApp, event, millis};
use crate::tunables::{
    DESCRIBE_LAST_LINES, INVOKE_START_POLL, INVOKE_START_WAIT, INVOKE_TIMEOUT, MAX_COMPONENT_BYTES,
    QUEUE_ACK_MARGIN,
};
use crate::{SchedulerError, Shared, artifact, namespaces};
use guard::{Failure, Guard, Visible, invalid, scope_of};
use json_body::JsonBody;
use openapi::{AppPath, Binary};

type Shared_ = Arc<Shared>;

/// The API's routes, the dashboard's pages, and `/openapi.json`
/// describing the former.
pub fn router(shared: Arc<Shared>) -> Router {
    let (api, doc) = routes().split_for_parts();
    let doc = Bytes::from(openapi::finish(doc).to_json().unwrap_or_else(|e| {
        format!(r#"{{"kind":"internal","error":"the OpenAPI document: {e}"}}"#)
    }));
    api.route(
        "/openapi.json",
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], doc) }),
    )
    .merge(crate::ui::router())
    .fallback(rejections::no_route)
    .layer(DefaultBodyLimit::max(MAX_COMPONENT_BYTES))
    .layer(middleware::from_fn(rejections::json_errors))
    .layer(middleware::from_fn_with_state(shared.clone(), guard::gate))
    .layer(middleware::from_fn_with_state(shared.clone(), timed))
    .with_state(shared)
}

/// The API's OpenAPI document, as `GET /openapi.json` serves it.
pub fn document() -> utoipa::openapi::OpenApi {
    openapi::finish(routes().into_openapi())
}

/// Every route, registered through its handler's `#[utoipa::path]`: the
/// router and the document are made from the same attributes.
fn routes() -> OpenApiRouter<Shared_> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(put_component))
        .routes(routes!(apply, list_apps))
        .routes(routes!(describe, delete))
        .routes(routes!(scale))
        .routes(routes!(rollout_status))
        .routes(routes!(revisions))
        .routes(routes!(rollback))
        .routes(routes!(promote_canary))
        .routes(routes!(abort_canary))
        .routes(routes!(invoke))
        .routes(routes!(list_secrets))
        .routes(routes!(put_secret))
        .routes(routes!(list_pods))
        .routes(routes!(list_hosts))
        .routes(routes!(list_schedulers))
        .routes(routes!(token_routes::whoami))
        .routes(routes!(token_routes::can_i))
        .routes(routes!(token_routes::create, token_routes::list))
        .routes(routes!(token_routes::revoke))
        .routes(routes!(namespace_routes::list))
        .routes(routes!(
            namespace_routes::describe,
            namespace_routes::put,
            namespace_routes::delete
        ))
        .routes(routes!(audit_routes::list))
        .routes(routes!(metrics))
        .routes(routes!(top))
        .routes(routes!(log_routes::logs))
        .routes(routes!(log_routes::events))
        .routes(routes!(dump_routes::list))
        .routes(routes!(dump_routes::download))
}

/// Liveness of the API: `ok` while the process serves. Needs no token.
#[utoipa::path(
    get, path = "/healthz", tag = "cluster", security(()),
    responses((status = 200, description = "ok", body = String, content_type = "text/plain"))
)]
async fn healthz() -> &'static str {
    "ok\n"
}

/// `?namespace=NS` on list routes: only that namespace.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NamespaceFilter {
    /// Only this namespace (which the caller must be allowed to list).
    #[param(value_type = Option<Name>)]
    namespace: Option<String>,
}

impl NamespaceFilter {
    /// The namespaces to list: the one asked for (which the caller must
    /// be allowed to see), or all the caller may see.
    fn visible(&self, guard: &Guard, verb: Verb, resource: Resource) -> Result<Visible, Failure> {
        match &self.namespace {
            Some(ns) => {
                let scope = scope_of(ns)?;
                guard.allow(verb, resource, &scope, None)?;
                let Scope::Namespace(ns) = scope else {
                    return Ok(Visible::All);
                };
                Ok(Visible::Only([ns].into()))
            }
            None => guard.visible(verb, resource),
        }
    }
}

/// Upload a component's bytes under their sha256.
///
/// Whoever may create apps somewhere may upload. Uploads are not audited:
/// bytes under their own digest change nothing until an apply names them,
/// and the apply is audited. The scheduler compiles the component once for
/// the cluster's hosts on the way in, so a component wasmtime cannot
/// compile is refused here, with its reason.
#[utoipa::path(
    put, path = "/v1/components/{digest}", tag = "apps",
    params(("digest" = Digest, Path, description = "The sha256 of the body")),
    request_body(
        description = "The component's bytes",
        content((inline(Binary) = "application/wasm"), (inline(Binary) = "application/octet-stream")),
    ),
    responses((status = 204, description = "stored"))
)]
async fn put_component(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(digest): Path<String>,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    guard.may_upload()?;
    let digest = Digest::from_hex(&digest).ok_or_else(|| {
        invalid(format!(
            "{digest:?} is not a sha256 digest (64 hex characters)"
        ))
    })?;
    let actual = Digest::of(&body);
    if actual != digest {
        return Err(invalid(format!(
            "the uploaded bytes have digest {actual}, not {digest}: the upload was corrupted"
        )));
    }
    let inspected = artifact::inspect(&body)
        .map_err(|why| invalid(format!("the uploaded component is {why}")))?;
    if let Some(compiler) = &shared.compiler {
        crate::compiled::compile(
            &shared.store.artifacts,
            compiler,
            &shared.compiles,
            &digest,
            body.clone(),
        )
        .await
        .map_err(|why| invalid(format!("the uploaded component does not compile: {why}")))?;
    }
    shared.store.put_component(&digest, &body).await?;
    shared.remember_exports(digest, inspected);
    Ok(StatusCode::NO_CONTENT)
}

/// Create or update an app, or plan it with `dry_run`.
#[utoipa::path(
    post, path = "/v1/apps", tag = "apps", request_body = ApplyRequest,
    responses(
        (status = 200, description = "what was stored, or would be", body = ApplyResponse),
        (status = 409, description = "the app changed meanwhile (another apply, scale or rollback, through any scheduler): nothing was written; the message says which revision it is at now", body = ApiError),
    )
)]
async fn apply(
    State(shared): State<Shared_>,
    guard: Guard,
    JsonBody(req): JsonBody<ApplyRequest>,
) -> Result<Json<ApplyResponse>, Failure> {
    let spec = AppSpec::from_toml(&req.spec, &req.file).map_err(|e| invalid(e.to_string()))?;
    let exists = shared
        .state()
        .apps
        .contains_key(&subjects::app_key(&spec.namespace, &spec.name));
    guard.allow(
        if exists { Verb::Update } else { Verb::Create },
        Resource::Apps,
        &Scope::Namespace(spec.namespace.clone()),
        Some(spec.name.to_string()),
    )?;
    let mut problems = Vec::new();
    if !shared.state().namespaces.contains_key(&spec.namespace) {
        problems.push(format!(
            "namespace {} does not exist: an admin creates it with `shoal create namespace {}`",
            spec.namespace, spec.namespace
        ));
    }
    for (name, component) in &spec.components {
        let Some(digest) = req.digests.get(name) else {
            problems.push(format!("component {name}: no bytes were uploaded for it"));
            continue;
        };
        let known = shared
            .kinds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(digest);
        if !known && !shared.store.has_component(digest).await {
            problems.push(format!(
                "component {name}: {digest} is not in the component store: upload it first"
            ));
            continue;
        }
        let inspected = match shared.exports_of(digest).await {
            Err(SchedulerError::Invalid(why)) => {
                problems.push(format!("component {name} ({}): {why}", component.source));
                continue;
            }
            Err(other) => return Err(other.into()),
            Ok(inspected) => inspected,
        };
        if inspected.kind != Some(component.kind) {
            problems.push(format!(
                "component {name} ({}) is declared kind = \"{}\" but does not export {}{}",
                component.source,
                component.kind,
                component.kind.required_export(),
                inspected
                    .kind
                    .map(|k| format!(
                        ": it is {} {k} component",
                        if k == ComponentKind::Http { "an" } else { "a" }
                    ))
                    .unwrap_or_default()
            ));
        }
        if component.health.as_ref().is_some_and(|h| h.path.is_none()) && !inspected.health {
            problems.push(format!(
                "component {name} ({}) sets `health` but exports no {}: export one with shoal_sdk::export_health!{}",
                component.source,
                shoal_api::exports::HEALTH,
                if component.kind == ComponentKind::Http {
                    ", or name a health.path to GET"
                } else {
                    ""
                }
            ));
        }
    }
    problems.extend(route_claims(&shared.state(), &spec));
    if !problems.is_empty() {
        return Err(invalid(format!(
            "{} cannot be applied:\n  {}",
            req.file,
            problems.join("\n  ")
        )));
    }
    let key = subjects::app_key(&spec.namespace, &spec.name);
    let app_name = format!("{}/{}", spec.namespace, spec.name);
    let previous = shared.state().apps.get(&key).cloned();
    let based_on = previous.as_ref().map_or(0, |p| p.kv);
    let current = previous.as_ref().map_or(0, |p| p.revision);
    if let Some(expected) = req.if_revision
        && expected != current
    {
        return Err(SchedulerError::Conflict(format!(
            "app {app_name} is at revision {current}, not {expected} as the apply expects: look at it again and retry"
        ))
        .into());
    }
    let digests: BTreeMap<Name, Digest> = spec
        .components
        .keys()
        .filter_map(|n| req.digests.get(n).map(|d| (n.clone(), *d)))
        .collect();
    let stored = StoredApp {
        spec,
        digests,
        file: req.file.clone(),
        generations: BTreeMap::new(),
        templates: BTreeMap::new(),
        cause: format!("applied from {}", req.file),
        number: 0,
        canary_base: BTreeMap::new(),
        promotes: None,
    }
    .with_generations(previous.as_ref().map(|p| &p.stored))
    .with_canary_bases(previous.as_ref().map(|p| &p.stored));
    let _writing = shared.writes.lock().await;
    check_quota(&shared, &key, &stored, &req.file).await?;
    let plan = plan(previous.as_ref(), &stored);
    let unchanged = previous.as_ref().is_some_and(|p| {
        p.stored.spec == stored.spec
            && p.stored.digests == stored.digests
            && p.stored.file == stored.file
    });
    if req.dry_run || unchanged {
        return Ok(Json(ApplyResponse {
            app: app_name,
            revision: previous.map_or(0, |p| p.revision),
            dry_run: req.dry_run,
            unchanged,
            plan,
        }));
    }
    ensure_queues(&shared, &stored).await?;
    let kv = shared.store.put_app(&key, &stored, based_on).await?;
    let app = App::from_kv(stored, kv);
    let revision = app.revision;
    let e = event(
        &app.stored.spec.namespace,
        &app.stored.spec.name,
        EventReason::Applied,
        format!("revision {revision} applied from {}", req.file),
    );
    remember_app(&shared, key, app);
    shared.wake_app(&e.namespace, &e.app);
    shared.record(e).await;
    Ok(Json(ApplyResponse {
        app: app_name,
        revision,
        dry_run: false,
        unchanged: false,
        plan,
    }))
}

/// Routes of `spec` that other apps already own: a namespace owns the
/// routes its apps serve and every path beneath them, so another
/// namespace may not claim the same route or one beneath it (it would take
/// that app's traffic). Within a namespace only the very same route is
/// refused.
pub(crate) fn route_claims(state: &crate::state::State, spec: &AppSpec) -> Vec<String> {
    let mut problems = Vec::new();
    let claims = |spec: &AppSpec| -> Vec<(Name, Option<String>, String)> {
        spec.components
            .iter()
            .filter_map(|(name, c)| {
                let route = c.route.as_deref()?.trim_end_matches('/').to_string();
                Some((
                    name.clone(),
                    c.host.as_ref().map(|h| h.to_ascii_lowercase()),
                    route,
                ))
            })
            .collect()
    };
    let mine = claims(spec);
    if mine.is_empty() {
        return problems;
    }
    for (namespace, stored) in &state.namespaces {
        if namespace == &spec.namespace {
            continue;
        }
        for claim in &stored.spec.routes {
            for (component, host, route) in &mine {
                if claim.covers(host.as_deref(), route) {
                    problems.push(format!(
                        "component {component}: route {:?}{} lies within {claim}, which namespace {namespace} claims: choose another route",
                        if route.is_empty() { "/" } else { route.as_str() },
                        host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default(),
                    ));
                }
            }
        }
    }
    for other in state.apps.values() {
        let theirs = &other.stored.spec;
        if theirs.namespace == spec.namespace && theirs.name == spec.name {
            continue;
        }
        let same_namespace = theirs.namespace == spec.namespace;
        for (component, host, route) in &mine {
            for (_, their_host, their_route) in claims(theirs) {
                let hosts_overlap = host.is_none() || their_host.is_none() || host == &their_host;
                let beneath =
                    |a: &str, b: &str| a == b || b.is_empty() || a.starts_with(&format!("{b}/"));
                // A route with a host name outranks any route without one at
                // the ingress, however long: so a host-specific route above
                // another namespace's host-less route would take its traffic.
                let outranks =
                    host.is_some() && their_host.is_none() && beneath(&their_route, route);
                let conflict = if same_namespace {
                    route == &their_route && host == &their_host
                } else {
                    hosts_overlap && (beneath(route, &their_route) || outranks)
                };
                if conflict {
                    let shown = |r: &str| {
                        if r.is_empty() {
                            "/".to_string()
                        } else {
                            r.to_string()
                        }
                    };
                    if same_namespace {
                        problems.push(format!(
                            "component {component}: route {:?}{} is the same as that of app {}/{}: choose another route",
                            shown(route),
                            host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default(),
                            theirs.namespace,
                            theirs.name,
                        ));
                        continue;
                    }
                    // Another namespace's apps are not named: they are none
                    // of this caller's business.
                    problems.push(format!(
                        "component {component}: route {:?}{} overlaps route {:?}{}, which another namespace serves: choose another route",
                        shown(route),
                        host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default(),
                        shown(&their_route),
                        their_host.as_ref().map(|h| format!(" on {h}")).unwrap_or_default(),
                    ));
                }
            }
        }
    }
    problems
}

/// Creates (or updates) the work-queue streams `stored` consumes, and its
/// key-value bucket when a component is granted one.
pub(crate) async fn ensure_queues(
    shared: &Shared,
    stored: &StoredApp,
) -> Result<(), SchedulerError> {
    if stored
        .spec
        .components
        .values()
        .any(|c| c.keyvalue.is_some())
    {
        let bucket = subjects::app_bucket(&stored.spec.namespace, &stored.spec.name);
        shared.store.ensure_bucket(&bucket).await?;
    }
    // A shadow's key-value writes go to a scratch bucket of its own.
    if stored
        .spec
        .components
        .values()
        .any(|c| c.keyvalue.is_some() && c.rollout.as_ref().is_some_and(|r| r.is_shadow()))
    {
        let bucket = subjects::shadow_bucket(&stored.spec.namespace, &stored.spec.name);
        shared.store.ensure_bucket(&bucket).await?;
    }
    for (name, component) in &stored.spec.components {
        if let Some(queue) = &component.queue {
            let stream = subjects::queue_stream(&stored.spec.namespace, &stored.spec.name, name);
            // A delivery not acked within the deadline and a margin is
            // handed to another replica: the one holding it is gone.
            let ack_wait = component.limits.timeout.get() + QUEUE_ACK_MARGIN;
            let subject = subjects::user_subject(&stored.spec.namespace, queue);
            // Deliveries in flight at once: every replica there may be,
            // each as busy as its concurrency lets it be.
            let most = component
                .autoscale
                .as_ref()
                .map_or(component.replicas, |a| a.max.max(component.replicas));
            let in_flight = i64::from(most.max(1)) * i64::from(component.limits.concurrency.max(1));
            shared
                .store
                .ensure_queue(&stream, &subject, ack_wait, in_flight)
                .await?;
        }
    }
    Ok(())
}

/// What applying `next` over `previous` changes, replica by replica.
/// Refuses `stored` (replacing the app at `key`) if it would take its
/// namespace past a quota, naming each quota, the usage it would make, and
/// `what` was asked.
pub(crate) async fn check_quota(
    shared: &Shared,
    key: &str,
    stored: &StoredApp,
    what: &str,
) -> Result<(), SchedulerError> {
    let namespace = &stored.spec.namespace;
    let quota = match shared.state().namespaces.get(namespace) {
        Some(ns) if ns.spec.quota != Default::default() => ns.spec.quota.clone(),
        _ => return Ok(()),
    };
    let sizes = if quota.component_bytes.is_some() {
        let digests: Vec<Digest> = {
            let state = shared.state();
            state
                .apps
                .values()
                .filter(|a| &a.stored.spec.namespace == namespace)
                .flat_map(|a| a.stored.digests.values().copied())
                .chain(stored.digests.values().copied())
                .collect()
        };
        shared.component_sizes(&digests).await?
    } else {
        HashMap::new()
    };
    let over = {
        let state = shared.state();
        let usage = namespaces::usage_with(&state, key, stored, &sizes);
        namespaces::exceeded(namespace, &quota, &usage)
    };
    if over.is_empty() {
        return Ok(());
    }
    Err(SchedulerError::OverQuota(format!(
        "{what} is refused:\n  {}\n(see `shoal describe namespace {namespace}`; an admin can raise the quota)",
        over.join("\n  ")
    )))
}

fn plan(previous: Option<&App>, next: &StoredApp) -> Plan {
    // During a canary or shadow the numbered replicas keep the stable
    // generation, and one extra replica runs the new one.
    let replicas = |stored: &StoredApp| -> BTreeMap<ReplicaId, u64> {
        let mut out = BTreeMap::new();
        for pod in stored.spec.pods() {
            let generation = stored.generation(&pod.name);
            let rollout = pod.rollout();
            let stable = rollout
                .is_staged()
                .then(|| stored.canary_of(&pod.name))
                .flatten();
            let numbered = stable.map_or(generation, |s| s.generation);
            for i in 0..pod.replicas {
                out.insert(replica_id(&stored.spec, &pod.name, i), numbered);
            }
            if stable.is_some() {
                let extra = if rollout.is_shadow() {
                    ReplicaId::SHADOW
                } else {
                    ReplicaId::CANARY
                };
                out.insert(replica_id(&stored.spec, &pod.name, extra), generation);
            }
        }
        out
    };
    let before = previous.map(|p| replicas(&p.stored)).unwrap_or_default();
    let after = replicas(next);
    let mut plan = Plan::default();
    for (id, generation) in &after {
        match before.get(id) {
            None => plan.create.push(id.to_string()),
            Some(old) if old != generation => plan.change.push(id.to_string()),
            Some(_) => {}
        }
    }
    for id in before.keys() {
        if !after.contains_key(id) {
            plan.stop.push(id.to_string());
        }
    }
    plan
}

/// List apps.
#[utoipa::path(
    get, path = "/v1/apps", tag = "apps", params(NamespaceFilter),
    responses((status = 200, description = "every app the caller may list", body = Vec<AppSummary>))
)]
async fn list_apps(
    State(shared): State<Shared_>,
    guard: Guard,
    Query(filter): Query<NamespaceFilter>,
) -> Result<Json<Vec<AppSummary>>, Failure> {
    let visible = filter.visible(&guard, Verb::List, Resource::Apps)?;
    let state = shared.state();
    let copies = copies(&state, |id| visible.shows(&id.namespace));
    Ok(Json(
        state
            .apps
            .values()
            .filter(|app| visible.shows(&app.stored.spec.namespace))
            .map(|app| summary(&state, app, &copies))
            .collect(),
    ))
}

/// Whether each replica's leading copy runs and is ready, for the metrics.
pub(crate) fn running_copies(state: &SchedulerState) -> HashMap<ReplicaId, bool> {
    copies(state, |_| true)
        .into_iter()
        .map(|(id, list)| {
            let up = list
                .first()
                .is_some_and(|(_, r)| matches!(r.state, ReplicaState::Running) && r.ready);
            (id.clone(), up)
        })
        .collect()
}

/// Every copy live hosts report of each replica, by replica.
pub(crate) type Copies<'s> = HashMap<&'s ReplicaId, Vec<(&'s HostId, &'s ReplicaStatus)>>;

/// Every copy of every replica `wanted` that live hosts report, by
/// replica: the copy to show first (running and ready, then the newest)
/// leads. Built once per request: one pass over the hosts' pictures.
pub(crate) fn copies<'s>(
    state: &'s SchedulerState,
    wanted: impl Fn(&ReplicaId) -> bool,
) -> Copies<'s> {
    let now = Instant::now();
    let mut out: Copies<'s> = HashMap::new();
    for (host, entry) in &state.hosts {
        if !entry.is_live(now) {
            continue;
        }
        for r in entry.heartbeat.replicas.iter().filter(|r| wanted(&r.id)) {
            out.entry(&r.id).or_default().push((host, r));
        }
    }
    for list in out.values_mut() {
        list.sort_by_key(|(host, r)| {
            (
                !matches!(r.state, ReplicaState::Running),
                !r.ready,
                std::cmp::Reverse(r.revision),
                *host,
            )
        });
    }
    out
}

pub(crate) fn summary(state: &SchedulerState, app: &App, copies: &Copies<'_>) -> AppSummary {
    let spec = &app.stored.spec;
    let key = subjects::app_key(&spec.namespace, &spec.name);
    let mut components = Vec::new();
    let mut all_running = true;
    let mut any_running = false;
    for pod in spec.pods() {
        let desired = state.replicas_of(&key, &pod);
        let last_scale = state
            .scale
            .get(&(key.clone(), pod.name.clone()))
            .and_then(|s| s.last_decision.clone());
        let up = (0..desired)
            .filter(|i| {
                copies
                    .get(&replica_id(spec, &pod.name, *i))
                    .and_then(|list| list.first())
                    .is_some_and(|(_, r)| {
                        matches!(r.state, ReplicaState::Running | ReplicaState::Completed)
                    })
            })
            .count() as u32;
        all_running &= up == desired;
        any_running |= up > 0;
        for (name, c) in &pod.components {
            components.push(ComponentSummary {
                name: (*name).clone(),
                kind: c.kind,
                pod: pod.name.clone(),
                desired,
                running: up,
                last_scale: last_scale.clone(),
            });
        }
    }
    let status = if all_running {
        AppStatus::Running
    } else if any_running {
        AppStatus::Degraded
    } else {
        AppStatus::Pending
    };
    AppSummary {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        revision: app.revision,
        components,
        status,
    }
}

/// Every replica of `app`: each copy hosts report, or a pending entry.
pub(crate) fn pods_of(state: &SchedulerState, app: &App, copies: &Copies<'_>) -> Vec<PodInfo> {
    let spec = &app.stored.spec;
    let key = subjects::app_key(&spec.namespace, &spec.name);
    let mut pods = Vec::new();
    for pod in spec.pods() {
        let components: Vec<Name> = pod.components.iter().map(|(n, _)| (*n).clone()).collect();
        // A canary's or shadow's replica is listed while a copy of it runs.
        let extra = [ReplicaId::CANARY, ReplicaId::SHADOW]
            .into_iter()
            .filter(|i| copies.contains_key(&replica_id(spec, &pod.name, *i)));
        for i in (0..state.replicas_of(&key, &pod)).chain(extra) {
            let id = replica_id(spec, &pod.name, i);
            match copies.get(&id) {
                Some(list) => pods.extend(list.iter().map(|(host, r)| PodInfo {
                    id: id.clone(),
                    components: components.clone(),
                    host: Some((*host).clone()),
                    revision: r.revision,
                    state: PodState::Host(r.state.clone()),
                    ready: r.ready,
                    restarts: r.restarts,
                    last_error: r.last_error.clone(),
                })),
                None => pods.push(PodInfo {
                    id: id.clone(),
                    components: components.clone(),
                    host: state.starting.get(&id).map(|s| s.host.clone()),
                    revision: app.stored.generation(&pod.name),
                    state: PodState::Pending {
                        reason: state
                            .pending
                            .get(&id)
                            .map_or_else(|| "being placed".into(), ToString::to_string),
                    },
                    ready: false,
                    restarts: 0,
                    last_error: None,
                }),
            }
        }
    }
    pods
}

/// Describe an app: spec, revision, replicas per host, recent events.
#[utoipa::path(
    get, path = "/v1/apps/{namespace}/{name}", tag = "apps", params(AppPath),
    responses((status = 200, description = "the app", body = AppDetail))
)]
async fn describe(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
) -> Result<Json<AppDetail>, Failure> {
    guard.allow_app(Verb::Get, &namespace, &name)?;
    let mut detail = {
        let state = shared.state();
        let app = find(&state, &namespace, &name)?;
        let spec = &app.stored.spec;
        let copies = copies(&state, |id| {
            id.namespace == spec.namespace && id.app == spec.name
        });
        let key = subjects::app_key(&app.stored.spec.namespace, &app.stored.spec.name);
        AppDetail {
            summary: summary(&state, app, &copies),
            spec: app.stored.spec.clone(),
            digests: app.stored.digests.clone(),
            pods: pods_of(&state, app, &copies),
            events: state
                .events
                .get(&key)
                .map(|e| e.iter().cloned().collect())
                .unwrap_or_default(),
            last_output: Vec::new(),
        }
    };
    // What a replica said before it went: the first thing to look at.
    let troubled: BTreeSet<String> = detail
        .pods
        .iter()
        .filter(|p| {
            matches!(
                &p.state,
                PodState::Host(
                    ReplicaState::Restarting { .. }
                        | ReplicaState::CrashLoop { .. }
                        | ReplicaState::Exited { .. }
                        | ReplicaState::Failed { .. }
                )
            )
        })
        .map(|p| p.id.to_string())
        .collect();
    for replica in troubled {
        let (tx, mut rx) = tokio::sync::mpsc::channel(DESCRIBE_LAST_LINES);
        let query = crate::logs::LogQuery {
            replica: Some(replica),
            tail: Some(DESCRIBE_LAST_LINES),
            ..Default::default()
        };
        let js = shared.js.clone();
        let (spec_ns, spec_name) = (detail.spec.namespace.clone(), detail.spec.name.clone());
        let reading =
            tokio::spawn(
                async move { crate::logs::read(&js, &spec_ns, &spec_name, query, tx).await },
            );
        while let Some(entry) = rx.recv().await {
            detail.last_output.push(entry);
        }
        if let Ok(Err(e)) = reading.await {
            tracing::warn!(error = %e, "describe could not read a replica's last lines");
        }
    }
    Ok(Json(detail))
}

/// Puts an app just written into memory, unless the KV watch brought a
/// newer revision already.
pub(crate) fn remember_app(shared: &Shared, key: String, app: App) {
    let mut state = shared.state();
    if state.apps.get(&key).is_none_or(|a| a.kv < app.kv) {
        state.apps.insert(key, app);
    }
}

/// The app `namespace/name`, cloned out of the state, and its key.
fn app_and_key(shared: &Shared, namespace: &str, name: &str) -> Result<(String, App), Failure> {
    let state = shared.state();
    let app = find(&state, namespace, name)?;
    let key = subjects::app_key(&app.stored.spec.namespace, &app.stored.spec.name);
    Ok((key, app.clone()))
}

fn find<'a>(state: &'a SchedulerState, namespace: &str, name: &str) -> Result<&'a App, Failure> {
    state
        .apps
        .get(&format!("{namespace}.{name}"))
        .ok_or_else(|| {
            SchedulerError::NotFound(format!("no app {namespace}/{name}: see `shoal get apps`"))
                .into()
        })
}

/// Delete an app and stop its replicas.
#[utoipa::path(
    delete, path = "/v1/apps/{namespace}/{name}", tag = "apps", params(AppPath),
    responses((status = 204, description = "deleted"), (status = 409, description = "the app changed meanwhile (another apply, scale or rollback, through any scheduler): nothing was written; the message says which revision it is at now", body = ApiError))
)]
async fn delete(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
) -> Result<StatusCode, Failure> {
    guard.allow_app(Verb::Delete, &namespace, &name)?;
    let (key, spec, kv) = {
        let state = shared.state();
        let app = find(&state, &namespace, &name)?;
        let spec = app.stored.spec.clone();
        (subjects::app_key(&spec.namespace, &spec.name), spec, app.kv)
    };
    shared.store.delete_app(&key, kv).await?;
    {
        let mut state = shared.state();
        if state.apps.get(&key).is_some_and(|a| a.kv == kv) {
            state.apps.remove(&key);
        }
    }
    forget(&shared, &spec).await;
    shared
        .record(event(
            &spec.namespace,
            &spec.name,
            EventReason::Deleted,
            "app deleted: stopping its replicas".into(),
        ))
        .await;
    shared.wake_app(&spec.namespace, &spec.name);
    Ok(StatusCode::NO_CONTENT)
}

/// Tells every live host to drop the deleted app's volumes (but those it
/// retains), and removes its key-value bucket unless retained.
async fn forget(shared: &Shared, spec: &AppSpec) {
    let retain: Vec<Name> = spec
        .volumes
        .iter()
        .filter(|(_, v)| v.retain)
        .map(|(n, _)| n.clone())
        .collect();
    let hosts: Vec<shoal_api::wire::HostId> = {
        let state = shared.state();
        let now = Instant::now();
        state
            .hosts
            .iter()
            .filter(|(_, h)| h.is_live(now))
            .map(|(id, _)| id.clone())
            .collect()
    };
    let command = shoal_api::wire::HostCommand::Forget {
        namespace: spec.namespace.clone(),
        app: spec.name.clone(),
        retain,
    };
    for host in hosts {
        let epoch = shared.leadership.known_epoch();
        if let Err(e) = crate::commands::send(shared, &host, &command, epoch).await {
            tracing::warn!(%host, error = %e, "could not remove the deleted app's volumes");
        }
    }
    let uses_kv = spec.components.values().any(|c| c.keyvalue.is_some());
    let retains_kv = spec
        .components
        .values()
        .any(|c| c.keyvalue.as_ref().is_some_and(|k| k.retain));
    if uses_kv && !retains_kv {
        shared
            .store
            .delete_bucket(&subjects::app_bucket(&spec.namespace, &spec.name))
            .await;
    }
    if uses_kv {
        // A shadow's scratch writes are never kept.
        shared
            .store
            .delete_bucket(&subjects::shadow_bucket(&spec.namespace, &spec.name))
            .await;
    }
}

/// Set a component's replica count.
#[utoipa::path(
    post, path = "/v1/apps/{namespace}/{name}/scale", tag = "apps", params(AppPath),
    request_body = ScaleRequest,
    responses((status = 200, description = "the revision stored", body = ApplyResponse), (status = 409, description = "the app changed meanwhile (another apply, scale or rollback, through any scheduler): nothing was written; the message says which revision it is at now", body = ApiError))
)]
async fn scale(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
    JsonBody(req): JsonBody<ScaleRequest>,
) -> Result<Json<ApplyResponse>, Failure> {
    scale_app(&shared, &guard, &namespace, &name, req)
        .await
        .map(Json)
}

/// Sets a component's replicas (`shoal scale`, the dashboard's form), as
/// `guard` may.
pub(crate) async fn scale_app(
    shared: &Shared,
    guard: &Guard,
    namespace: &str,
    name: &str,
    req: ScaleRequest,
) -> Result<ApplyResponse, Failure> {
    guard.allow_app(Verb::Scale, namespace, name)?;
    if req.replicas > MAX_REPLICAS {
        return Err(invalid(format!(
            "{} replicas is more than the {MAX_REPLICAS} allowed",
            req.replicas
        )));
    }
    let (key, previous) = app_and_key(shared, namespace, name)?;
    let mut stored = previous.stored.clone();
    let Some(component) = stored.spec.components.get_mut(&req.component) else {
        return Err(SchedulerError::NotFound(format!(
            "app {namespace}/{name} has no component {}",
            req.component
        ))
        .into());
    };
    let from = component.replicas;
    component.replicas = req.replicas;
    stored.cause = format!("{} scaled from {from} to {}", req.component, req.replicas);
    let stored = stored.with_generations(Some(&previous.stored));
    let _writing = shared.writes.lock().await;
    check_quota(shared, &key, &stored, &format!("scaling {}", req.component)).await?;
    let plan = plan(Some(&previous), &stored);
    let kv = shared.store.put_app(&key, &stored, previous.kv).await?;
    let app = App::from_kv(stored, kv);
    let revision = app.revision;
    let e = event(
        &app.stored.spec.namespace,
        &app.stored.spec.name,
        EventReason::Scaled,
        format!(
            "{} scaled from {from} to {} replicas (revision {revision})",
            req.component, req.replicas
        ),
    );
    remember_app(shared, key, app);
    shared.wake_app(&e.namespace, &e.app);
    shared.record(e).await;
    Ok(ApplyResponse {
        app: format!("{namespace}/{name}"),
        revision,
        dry_run: false,
        unchanged: false,
        plan,
    })
}

/// Where each pod's rollout stands.
#[utoipa::path(
    get, path = "/v1/apps/{namespace}/{name}/rollout", tag = "rollouts", params(AppPath),
    responses((status = 200, description = "each pod's rollout", body = RolloutStatus))
)]
async fn rollout_status(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
) -> Result<Json<RolloutStatus>, Failure> {
    guard.allow_app(Verb::Get, &namespace, &name)?;
    let state = shared.state();
    let app = find(&state, &namespace, &name)?;
    Ok(Json(crate::rollout::status(&state, app, Instant::now())))
}

/// The app's stored revisions, oldest first, and why each was stored.
#[utoipa::path(
    get, path = "/v1/apps/{namespace}/{name}/revisions", tag = "rollouts", params(AppPath),
    responses((status = 200, description = "the revisions kept", body = Vec<RevisionInfo>))
)]
async fn revisions(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
) -> Result<Json<Vec<RevisionInfo>>, Failure> {
    guard.allow_app(Verb::Get, &namespace, &name)?;
    let key = {
        let state = shared.state();
        let app = find(&state, &namespace, &name)?;
        subjects::app_key(&app.stored.spec.namespace, &app.stored.spec.name)
    };
    Ok(Json(crate::rollout::history(&shared, &key).await?))
}

/// Store an earlier revision again (by default the one before the current), rolling the app back to it.
#[utoipa::path(
    post, path = "/v1/apps/{namespace}/{name}/rollback", tag = "rollouts", params(AppPath),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "the revision stored", body = ApplyResponse),
        (status = 404, description = "no such app, or the revision asked for is not kept", body = ApiError),
        (status = 409, description = "the app changed meanwhile, or it has no earlier revision to go back to, or it is at that revision already: nothing was written", body = ApiError),
    )
)]
async fn rollback(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
    JsonBody(req): JsonBody<RollbackRequest>,
) -> Result<Json<ApplyResponse>, Failure> {
    rollback_app(&shared, &guard, &namespace, &name, req)
        .await
        .map(Json)
}

/// Rolls an app back (`shoal rollout undo`, the dashboard's button), as
/// `guard` may.
pub(crate) async fn rollback_app(
    shared: &Shared,
    guard: &Guard,
    namespace: &str,
    name: &str,
    req: RollbackRequest,
) -> Result<ApplyResponse, Failure> {
    guard.allow_app(Verb::Rollout, namespace, name)?;
    let (key, previous) = app_and_key(shared, namespace, name)?;
    let (revision, _) =
        crate::rollout::roll_back(shared, &key, req.to, None, "rollout undo").await?;
    let plan = {
        let state = shared.state();
        state
            .apps
            .get(&key)
            .map(|now| plan(Some(&previous), &now.stored))
            .unwrap_or_default()
    };
    Ok(ApplyResponse {
        app: format!("{namespace}/{name}"),
        revision,
        dry_run: false,
        unchanged: false,
        plan,
    })
}

/// Promote the app's canary or shadow now.
///
/// A canary rolls out to every replica without waiting for its remaining
/// steps (`shoal rollout promote`); a shadow's revision rolls out.
#[utoipa::path(
    post, path = "/v1/apps/{namespace}/{name}/rollout/promote", tag = "rollouts", params(AppPath),
    responses(
        (status = 200, description = "the revision stored", body = ApplyResponse),
        (status = 409, description = "no canary or shadow runs in the app, or it changed meanwhile: nothing was written", body = ApiError),
    )
)]
async fn promote_canary(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
) -> Result<Json<ApplyResponse>, Failure> {
    promote_app(&shared, &guard, &namespace, &name)
        .await
        .map(Json)
}

/// Promotes an app's canary or shadow (`shoal rollout promote`, the
/// dashboard's button), as `guard` may.
pub(crate) async fn promote_app(
    shared: &Shared,
    guard: &Guard,
    namespace: &str,
    name: &str,
) -> Result<ApplyResponse, Failure> {
    guard.allow_app(Verb::Rollout, namespace, name)?;
    let (key, previous) = app_and_key(shared, namespace, name)?;
    let cause = format!("canary promoted by {}", guard.caller().principal.name);
    let revision = crate::rollout::promote(shared, &key, None, None, &cause).await?;
    Ok(changed(shared, &key, &previous, revision))
}

/// Abort the app's canary or shadow now.
///
/// The revision before it is stored again and the extra replica stops
/// (`shoal rollout abort`).
#[utoipa::path(
    post, path = "/v1/apps/{namespace}/{name}/rollout/abort", tag = "rollouts", params(AppPath),
    responses(
        (status = 200, description = "the revision stored", body = ApplyResponse),
        (status = 409, description = "no canary or shadow runs in the app, or it changed meanwhile: nothing was written", body = ApiError),
    )
)]
async fn abort_canary(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(AppPath { namespace, name }): Path<AppPath>,
) -> Result<Json<ApplyResponse>, Failure> {
    abort_app(&shared, &guard, &namespace, &name)
        .await
        .map(Json)
}

/// Aborts an app's canary or shadow (`shoal rollout abort`, the
/// dashboard's button), as `guard` may.
pub(crate) async fn abort_app(
    shared: &Shared,
    guard: &Guard,
    namespace: &str,
    name: &str,
) -> Result<ApplyResponse, Failure> {
    guard.allow_app(Verb::Rollout, namespace, name)?;
    let (key, previous) = app_and_key(shared, namespace, name)?;
    if previous.stored.canary_base.is_empty() {
        return Err(SchedulerError::Conflict(format!(
            "no canary or shadow runs in {namespace}/{name}: `shoal rollout undo` goes back to an earlier revision"
        ))
        .into());
    }
    let cause = format!("canary aborted by {}", guard.caller().principal.name);
    let (revision, _) = crate::rollout::roll_back(shared, &key, None, None, &cause).await?;
    Ok(changed(shared, &key, &previous, revision))
}

/// What a change of the app at `key` from `previous` to `revision` does.
fn changed(shared: &Shared, key: &str, previous: &App, revision: u64) -> ApplyResponse {
    let state = shared.state();
    let spec = &previous.stored.spec;
    ApplyResponse {
        app: format!("{}/{}", spec.namespace, spec.name),
        revision,
        dry_run: false,
        unchanged: false,
        plan: state
            .apps
            .get(key)
            .map(|now| plan(Some(previous), &now.stored))
            .unwrap_or_default(),
    }
}

/// Call a worker component and return its reply.
#[utoipa::path(
    post, path = "/v1/apps/{namespace}/{name}/invoke/{component}", tag = "apps",
    params(AppPath, ("component" = Name, Path, description = "The worker component")),
    request_body = InvokeRequest,
    responses(
        (status = 200, description = "the component's reply", body = InvokeResponse),
        (status = 502, description = "the component failed: trapped, ran out of fuel or time, or returned an error (the kind says which)", body = ApiError),
        (status = 503, description = "no replica of the component is running, or the cluster cannot be reached", body = ApiError),
        (status = 504, description = "no reply within the invoke timeout", body = ApiError),
    )
)]
async fn invoke(
    State(shared): State<Shared_>,
    guard: Guard,
    Path((namespace, name, component)): Path<(String, String, String)>,
    http_headers: axum::http::HeaderMap,
    JsonBody(req): JsonBody<InvokeRequest>,
) -> Result<Json<InvokeResponse>, Failure> {
    guard.allow_app(Verb::Invoke, &namespace, &format!("{name}/{component}"))?;
    let (subject, copy) = {
        let state = shared.state();
        let app = find(&state, &namespace, &name)?;
        let spec = &app.stored.spec;
        let Some((cname, c)) = spec
            .components
            .iter()
            .find(|(n, _)| n.as_str() == component)
        else {
            return Err(SchedulerError::NotFound(format!(
                "app {namespace}/{name} has no component {component}"
            ))
            .into());
        };
        if c.kind != ComponentKind::Worker {
            return Err(invalid(format!(
                "{component} is a {} component: only workers take invocations (an http component answers on its route)",
                c.kind
            )));
        }
        let key = subjects::app_key(&spec.namespace, &spec.name);
        let pod = c.pod.as_ref().unwrap_or(cname);
        let now = Instant::now();
        let subject = if crate::canary::takes_invocation(&state, &key, app, pod, now) {
            subjects::invoke_canary(&spec.namespace, &spec.name, cname)
        } else {
            subjects::invoke(&spec.namespace, &spec.name, cname)
        };
        let copy = crate::shadow::copy_invocation(&state, &key, app, (pod, cname), now).map(
            |(subject, generation)| {
                let names = (spec.namespace.clone(), spec.name.clone(), cname.clone());
                (subject, (key.clone(), generation), names)
            },
        );
        (subject, copy)
    };
    let payload: bytes::Bytes = req.data.into();
    // A replica that is still starting (the app was applied a moment ago)
    // is waited for briefly, like `kubectl run` then `exec`, instead of
    // failing at once.
    let started = tokio::time::Instant::now();
    let mut header_map = subjects::headers::from_pairs(&req.headers).map_err(invalid)?;
    if req.trace {
        header_map.insert(subjects::headers::TRACE_CALLS, "1");
    }
    // The caller's trace continues into the invocation, unless its
    // message headers name one themselves.
    if header_map.get(TRACEPARENT).is_none()
        && let Some(parent) = http_headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<TraceParent>().ok())
    {
        header_map.insert(TRACEPARENT, parent.to_string().as_str());
    }
    let replied = loop {
        let request = async_nats::Request::new()
            .headers(header_map.clone())
            .payload(payload.clone())
            .timeout(Some(INVOKE_TIMEOUT));
        match shared.nats.send_request(subject.clone(), request).await {
            Err(e)
                if e.kind() == async_nats::RequestErrorKind::NoResponders
                    && started.elapsed() < INVOKE_START_WAIT =>
            {
                tokio::time::sleep(INVOKE_START_POLL).await;
            }
            other => break other,
        }
    };
    let reply = replied.map_err(|e| {
        let (status, message) = match e.kind() {
            async_nats::RequestErrorKind::NoResponders => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("no replica of {namespace}/{name}/{component} is running: see `shoal describe app {name}`"),
            ),
            async_nats::RequestErrorKind::TimedOut => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("{namespace}/{name}/{component} did not answer within {INVOKE_TIMEOUT:?}"),
            ),
            _ => (StatusCode::SERVICE_UNAVAILABLE, format!("invoking {component}: {e}")),
        };
        Failure(status, ApiError { kind: "unavailable".into(), error: message })
    })?;
    let mut headers = subjects::headers::to_pairs(reply.headers.as_ref());
    let calls = req.trace.then(|| {
        headers
            .iter()
            .find(|(k, _)| k == subjects::headers::HOST_CALLS)
            .and_then(|(_, v)| serde_json::from_str::<HostCalls>(v).ok())
            .unwrap_or_default()
    });
    headers.retain(|(k, _)| k != subjects::headers::HOST_CALLS);
    let data = reply.payload.to_vec();
    if let Some((shadow_subject, at, (ns, app, comp))) = copy {
        // The copy goes once the caller's answer is in, and the caller
        // does not wait for it.
        let failed = reply
            .headers
            .as_ref()
            .is_some_and(|h| h.get(subjects::headers::ERROR).is_some());
        let (shared, stable) = (shared.clone(), (failed, reply.payload.clone()));
        let (copied, request) = (
            payload.clone(),
            String::from_utf8_lossy(&payload).into_owned(),
        );
        tokio::spawn(async move {
            let request_ = async_nats::Request::new()
                .headers(header_map)
                .payload(copied)
                .timeout(Some(INVOKE_TIMEOUT));
            let answer = shared
                .nats
                .send_request(shadow_subject, request_)
                .await
                .ok();
            let shadow = answer.as_ref().map(|m| {
                let failed = m
                    .headers
                    .as_ref()
                    .is_some_and(|h| h.get(subjects::headers::ERROR).is_some());
                (failed, &m.payload[..])
            });
            crate::shadow::note_invocation(
                &mut shared.state(),
                at,
                (&ns, &app, &comp),
                &request,
                (stable.0, &stable.1[..]),
                shadow,
            );
        });
    }
    if let Some((_, label)) = headers.iter().find(|(k, _)| k == subjects::headers::ERROR) {
        return Err(Failure(
            StatusCode::BAD_GATEWAY,
            ApiError {
                kind: format!("invoke_{label}"),
                error: String::from_utf8_lossy(&data).into_owned(),
            },
        ));
    }
    Ok(Json(InvokeResponse {
        data,
        headers,
        calls,
    }))
}

/// Set a secret: the request body is the value, sealed at rest.
#[utoipa::path(
    put, path = "/v1/secrets/{namespace}/{name}", tag = "secrets",
    params(
        ("namespace" = Name, Path, description = "The secret's namespace"),
        ("name" = Name, Path, description = "The secret's name"),
    ),
    request_body(content = inline(Binary), content_type = "application/octet-stream", description = "The value"),
    responses(
        (status = 204, description = "stored"),
        (status = 400, description = "an empty value or a bad name", body = ApiError),
    )
)]
async fn put_secret(
    State(shared): State<Shared_>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, Failure> {
    guard.allow(
        Verb::SecretsSet,
        Resource::Secrets,
        &scope_of(&namespace)?,
        Some(name.clone()),
    )?;
    let namespace = Name::new(namespace).map_err(|e| invalid(e.to_string()))?;
    let name = Name::new(name).map_err(|e| invalid(e.to_string()))?;
    if body.is_empty() {
        return Err(invalid(format!("secret {name} is empty: give it a value")));
    }
    let value = shoal_api::SecretValue::new(body.to_vec());
    let key = subjects::app_key(&namespace, &name);
    let _writing = shared.writes.lock().await;
    {
        let state = shared.state();
        if !state.namespaces.contains_key(&namespace) {
            return Err(SchedulerError::NotFound(format!(
                "namespace {namespace} does not exist: an admin creates it with `shoal create namespace {namespace}`"
            ))
            .into());
        }
        if !state.secrets.contains_key(&key)
            && let Some(quota) = state
                .namespaces
                .get(&namespace)
                .and_then(|n| n.spec.quota.secrets)
        {
            let usage = namespaces::usage(&state, &namespace, None, &HashMap::new());
            if usage.secrets >= quota {
                return Err(SchedulerError::OverQuota(format!(
                    "namespace {namespace}'s secrets quota is {quota}, and it holds {} already: delete one or ask an admin to raise the quota",
                    usage.secrets
                ))
                .into());
            }
        }
    }
    let sealed = shared
        .secret_box
        .seal(&key, &value)
        .map_err(SchedulerError::Internal)?;
    shared.store.put_secret(&key, sealed).await?;
    shared.state().secrets.insert(key, value);
    tracing::info!(%namespace, secret = %name, "secret set");
    Ok(StatusCode::NO_CONTENT)
}

/// Secret names, as `namespace.name` (never values).
#[utoipa::path(
    get, path = "/v1/secrets", tag = "secrets", params(NamespaceFilter),
    responses((status = 200, description = "the names", body = Vec<String>))
)]
async fn list_secrets(
    State(shared): State<Shared_>,
    guard: Guard,
    Query(filter): Query<NamespaceFilter>,
) -> Result<Json<Vec<String>>, Failure> {
    let visible = filter.visible(&guard, Verb::SecretsList, Resource::Secrets)?;
    let mut names: Vec<String> = shared
        .state()
        .secrets
        .keys()
        .filter(|k| {
            k.split_once('.')
                .and_then(|(ns, _)| Name::new(ns).ok())
                .is_some_and(|ns| visible.shows(&ns))
        })
        .map(|k| k.replacen('.', "/", 1))
        .collect();
    names.sort();
    Ok(Json(names))
}

/// List every replica with its host and state.
#[utoipa::path(
    get, path = "/v1/pods", tag = "cluster", params(NamespaceFilter),
    responses((status = 200, description = "every replica the caller may list", body = Vec<PodInfo>))
)]
async fn list_pods(
    State(shared): State<Shared_>,
    guard: Guard,
    Query(filter): Query<NamespaceFilter>,
) -> Result<Json<Vec<PodInfo>>, Failure> {
    let visible = filter.visible(&guard, Verb::List, Resource::Pods)?;
    let state = shared.state();
    let copies = copies(&state, |id| visible.shows(&id.namespace));
    Ok(Json(
        state
            .apps
            .values()
            .filter(|app| visible.shows(&app.stored.spec.namespace))
            .flat_map(|app| pods_of(&state, app, &copies))
            .collect(),
    ))
}

/// List hosts with capacity, usage and state.
#[utoipa::path(
    get, path = "/v1/hosts", tag = "cluster",
    responses((status = 200, description = "every host", body = Vec<HostInfo>))
)]
async fn list_hosts(
    State(shared): State<Shared_>,
    guard: Guard,
) -> Result<Json<Vec<HostInfo>>, Failure> {
    guard.allow(Verb::List, Resource::Hosts, &Scope::Cluster, None)?;
    Ok(Json(hosts_info(&shared.state())))
}

/// Every host as `shoal get hosts` lists it, in order of id.
pub(crate) fn hosts_info(state: &SchedulerState) -> Vec<HostInfo> {
    let now = Instant::now();
    let mut hosts: Vec<HostInfo> = state
        .hosts
        .iter()
        .map(|(id, h)| HostInfo {
            id: id.clone(),
            labels: h.heartbeat.labels.clone(),
            capacity: h.heartbeat.capacity,
            used_memory: h.heartbeat.used_memory(),
            replicas: h.heartbeat.replicas.len() as u32,
            http: h.heartbeat.http.clone(),
            state: h.state(now),
            last_seen_ms: millis(now.duration_since(h.last_seen)),
        })
        .collect();
    hosts.sort_by(|a, b| a.id.cmp(&b.id));
    hosts
}

/// List running schedulers, the leader first.
///
/// Needs `list hosts`: both are the cluster's machinery.
#[utoipa::path(
    get, path = "/v1/schedulers", tag = "cluster",
    responses((status = 200, description = "every scheduler", body = Vec<SchedulerInfo>))
)]
async fn list_schedulers(
    State(shared): State<Shared_>,
    guard: Guard,
) -> Result<Json<Vec<shoal_api::resources::SchedulerInfo>>, Failure> {
    guard.allow(Verb::List, Resource::Hosts, &Scope::Cluster, None)?;
    Ok(Json(
        shared.leadership.schedulers(&shared.store.presence).await?,
    ))
}

/// Prometheus/OpenMetrics text.
///
/// Replicas wanted and ready, hosts, pending replicas, reconcile passes,
/// placements, API request durations. Needs `get metrics` cluster-wide
/// (a Prometheus scrape job sends a token).
#[utoipa::path(
    get, path = "/metrics", tag = "observability",
    responses((status = 200, description = "the metrics", body = String, content_type = "application/openmetrics-text"))
)]
async fn metrics(
    State(shared): State<Shared_>,
    guard: Guard,
) -> Result<impl IntoResponse, Failure> {
    guard.allow(Verb::Get, Resource::Metrics, &Scope::Cluster, None)?;
    let text = shared.metrics.encode(&shared.state());
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    ))
}

/// The query of `GET /v1/top/{kind}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct TopQuery {
    /// Only this namespace (which the caller must be allowed to list).
    #[param(value_type = Option<Name>)]
    namespace: Option<String>,
    /// The window, in seconds, up to 15 minutes (default: the last beats).
    #[param(maximum = 9_007_199_254_740_991_u64)]
    #[serde(default, deserialize_with = "numbers::safe_opt")]
    window_s: Option<u64>,
}

/// Rates per pod, app (by pod) or host over a window, from heartbeats.
///
/// Invocations and errors a second, p50/p99, fuel a second, peak memory,
/// in flight.
#[utoipa::path(
    get, path = "/v1/top/{kind}", tag = "observability",
    params(("kind" = inline(TopKind), Path, description = "What a row is"), TopQuery),
    responses((status = 200, description = "rows, busiest first", body = Vec<TopRow>))
)]
async fn top(
    State(shared): State<Shared_>,
    guard: Guard,
    Path(kind): Path<TopKind>,
    Query(q): Query<TopQuery>,
) -> Result<Json<Vec<shoal_api::top::TopRow>>, Failure> {
    let window = q
        .window_s
        .map_or(crate::tunables::TOP_WINDOW, std::time::Duration::from_secs)
        .min(crate::tunables::TOP_HISTORY);
    // Checked for every kind: hosts are no namespace's, but a bad name is
    // still a bad request.
    if let Some(ns) = &q.namespace {
        scope_of(ns)?;
    }
    let filter = NamespaceFilter {
        namespace: q.namespace,
    };
    let now = shoal_api::wire::now_ms();
    let mut rows = match kind {
        TopKind::Pods => {
            let visible = filter.visible(&guard, Verb::List, Resource::Pods)?;
            shared
                .state()
                .top
                .pods(window, now, |id| visible.shows(&id.namespace))
        }
        TopKind::Apps => {
            let visible = filter.visible(&guard, Verb::List, Resource::Apps)?;
            // By pod: a pod's components share its replicas.
            shared.state().top.grouped(window, now, |id, _| {
                visible
                    .shows(&id.namespace)
                    .then(|| format!("{}/{}/{}", id.namespace, id.app, id.pod))
            })
        }
        TopKind::Hosts => {
            guard.allow(Verb::List, Resource::Hosts, &Scope::Cluster, None)?;
            shared
                .state()
                .top
                .grouped(window, now, |_, host| host.map(|h| h.to_string()))
        }
    };
    rows.sort_by(|a, b| {
        b.invocations_per_s
            .total_cmp(&a.invocations_per_s)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(Json(rows))
}

/// Times every request, by its route template (never its path).
async fn timed(
    State(shared): State<Shared_>,
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        // `:name` rather than `{name}`: braces inside a label value trip up
        // some Prometheus text parsers.
        .map_or_else(
            || "unmatched".to_string(),
            |m| m.as_str().replace('{', ":").replace('}', ""),
        );
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await;
    shared.metrics.request(&route, &method, started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::route_claims;
    use crate::state::{App, State, StoredApp};

    fn app(namespace: &str, host: Option<&str>, route: &str) -> shoal_api::AppSpec {
        let host = host.map(|h| format!("host = {h:?}\n")).unwrap_or_default();
        let text = format!(
            "name = \"a\"\nnamespace = {namespace:?}\n[components.web]\nsource = \"x.wasm\"\nkind = \"http\"\nroute = {route:?}\n{host}"
        );
        shoal_api::AppSpec::from_toml(&text, "test.toml").unwrap_or_else(|e| unreachable!("{e}"))
    }

    fn serving(spec: shoal_api::AppSpec) -> State {
        let mut state = State::default();
        state.apps.insert(
            "team-b.a".into(),
            App {
                stored: StoredApp {
                    spec,
                    digests: Default::default(),
                    file: String::new(),
                    generations: Default::default(),
                    templates: Default::default(),
                    cause: String::new(),
                    number: 1,
                    canary_base: Default::default(),
                    promotes: None,
                },
                revision: 1,
                kv: 1,
            },
        );
        state
    }

    #[test]
    fn a_host_specific_route_may_not_sit_above_another_namespaces_route() {
        let state = serving(app("team-b", None, "/shop"));
        // Above it, with a host name: it would outrank /shop at the ingress.
        let above = route_claims(&state, &app("team-a", Some("shop.example.com"), "/"));
        assert_eq!(above.len(), 1, "{above:?}");
        assert!(above[0].contains("another namespace"), "{above:?}");
        assert!(
            !above[0].contains("team-b"),
            "names no other namespace: {above:?}"
        );
        // Beneath it: refused as before.
        assert_eq!(
            route_claims(&state, &app("team-a", None, "/shop/x")).len(),
            1
        );
        // Beside it, or above it without a host name (longest prefix wins): fine.
        assert!(route_claims(&state, &app("team-a", Some("shop.example.com"), "/cart")).is_empty());
        assert!(route_claims(&state, &app("team-a", None, "/")).is_empty());
    }

    /// Every `$ref` in the document names a schema it holds, and every
    /// operation says what it does.
    #[test]
    fn the_document_is_whole() {
        let doc = serde_json::to_value(super::document()).expect("the document serializes");
        let schemas = doc["components"]["schemas"]
            .as_object()
            .expect("schemas")
            .clone();
        let text = doc.to_string();
        let mut dangling = Vec::new();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            if !schemas.contains_key(name) {
                dangling.push(name.to_string());
            }
        }
        assert!(dangling.is_empty(), "dangling $refs: {dangling:?}");
        let mut unsaid = Vec::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                if op["summary"].as_str().is_none_or(str::is_empty) {
                    unsaid.push(format!("{method} {path}"));
                }
            }
        }
        assert!(unsaid.is_empty(), "no summary: {unsaid:?}");
        assert!(doc["paths"]["/v1/apps"]["post"].is_object());
        assert_eq!(
            doc["components"]["schemas"]["ScaleRequest"]["properties"]["replicas"]["maximum"],
            shoal_api::MAX_REPLICAS,
            "the document's bound on replicas is the one the API holds to"
        );
        assert!(doc["paths"]["/v1/apps/{namespace}/{name}"]["delete"].is_object());
    }

    /// What the router and the extractors refuse with (see `rejections`)
    /// is documented on every operation it can happen to.
    #[test]
    fn openapi_documents_every_refusal() {
        let doc = serde_json::to_value(super::document()).expect("the document serializes");
        let mut missing = Vec::new();
        assert_eq!(
            doc["paths"]["/healthz"]["get"]["responses"]
                .as_object()
                .map(|r| r.len()),
            Some(1),
            "a public route meets none of the gate's refusals"
        );
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            if path == "/healthz" {
                continue;
            }
            for (method, op) in ops.as_object().expect("operations") {
                let documents = |code: &str| op["responses"].get(code).is_some();
                let json_body = op["requestBody"]["content"]
                    .get("application/json")
                    .is_some();
                let mut wanted = vec!["400", "401", "403"];
                if path.contains('{') {
                    wanted.push("404");
                }
                if json_body {
                    wanted.extend(["413", "415", "422"]);
                }
                for code in wanted {
                    if !documents(code) {
                        missing.push(format!("{method} {path}: {code}"));
                    }
                }
            }
        }
        assert!(missing.is_empty(), "undocumented: {missing:?}");
    }
}
