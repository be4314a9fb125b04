//! The web dashboard at `/ui`, served by the scheduler from its own
//! binary: pages rendered on the server ([`maud`]), styles of their own,
//! readable without JavaScript.
//!
//! Signing in takes a token, as the CLI does, and keeps it in a session
//! cookie (`HttpOnly`, `SameSite=Strict`, path `/ui`). The cookie is read
//! for reading pages (`GET` under `/ui`) and for the pages' own forms
//! (`POST` under `/ui/apps/`, and only from the same origin, as the
//! browser's `Sec-Fetch-Site` or `Origin` says): the JSON API never takes
//! it, so no page elsewhere can make a signed-in browser change anything.
//! A form shows only where the principal may use it, and the API's rules
//! decide again when it is sent.
//! Every page shows what the API would show the same principal, decided by
//! the same [`Guard`]: a namespaced user sees its namespaces' apps, and the
//! hosts only with permission to list them.
//!
//! Key pieces: [`router`] (the pages), [`takes_cookie`] and
//! [`session_bearer`] (how the API's gate lets a page in), and `pages`
//! (the markup).

mod pages;

use std::sync::Arc;
use std::time::Instant;

use axum::Form;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use shoal_api::access::{Resource, Scope, Verb};
use shoal_api::subjects;

use crate::Shared;
use crate::api::guard::{Failure, Guard};

/// The session cookie's name.
const SESSION_COOKIE: &str = "shoal_session";

/// The most warning events the overview lists.
const OVERVIEW_EVENTS: usize = 20;

/// The dashboard's routes, behind the API's gate and layers.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/ui", get(overview))
        .route("/ui/apps/{namespace}/{name}", get(app_page))
        .route("/ui/apps/{namespace}/{name}/revisions", get(revisions_page))
        .route("/ui/hosts", get(hosts_page))
        .route("/ui/namespaces/{name}", get(namespace_page))
        .route("/ui/apps/{namespace}/{name}/scale", post(scale))
        .route("/ui/apps/{namespace}/{name}/undo", post(undo))
        .route("/ui/apps/{namespace}/{name}/promote", post(promote))
        .route("/ui/apps/{namespace}/{name}/abort", post(abort))
        .route("/ui/sign-in", get(sign_in_page).post(sign_in))
        .route("/ui/sign-out", post(sign_out))
        .route("/ui/style.css", get(style))
        .route("/ui/live.js", get(live_script))
        // The app's logs as the API gives them (newline-delimited JSON,
        // followed), for the page's live view: the same rules decide.
        .route(
            "/ui/apps/{namespace}/{name}/logs",
            get(crate::api::log_routes::logs),
        )
}

/// Whether anyone may ask for `path`: signing in and out, and the styles.
pub fn is_public(path: &str) -> bool {
    matches!(
        path,
        "/ui/sign-in" | "/ui/sign-out" | "/ui/style.css" | "/ui/live.js"
    )
}

/// Whether the session cookie may authorize a request: reading a page, or
/// a page's own form sent from the same origin.
pub fn takes_cookie(method: &Method, path: &str, headers: &HeaderMap) -> bool {
    let page = path == "/ui" || path.starts_with("/ui/");
    match *method {
        Method::GET | Method::HEAD => page,
        Method::POST => path.starts_with("/ui/apps/") && same_origin(headers),
        _ => false,
    }
}

/// Whether a browser says the request comes from another site (a client
/// that says nothing is not a browser's form).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|site| site != "same-origin" && site != "none")
}

/// Whether the browser says the request comes from a page of this site:
/// `Sec-Fetch-Site: same-origin`, or else an `Origin` naming the `Host`
/// asked. A request that says neither is not a browser's form.
fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get(header::HeaderName::from_static("sec-fetch-site")) {
        return site == "same-origin";
    }
    match (get(header::ORIGIN), get(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host)),
        _ => false,
    }
}

/// The session cookie's token as an `Authorization` value, if there is one.
pub fn session_bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, token)| format!("Bearer {token}"))
}

/// Where a page sends a browser that is not signed in.
pub fn to_sign_in() -> Response {
    redirect("/ui/sign-in")
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

/// A refusal as a page, in the words the API would use.
fn refused(failure: Failure) -> Response {
    let Failure(status, error) = failure;
    (status, pages::refused(status, &error.error)).into_response()
}

async fn overview(State(shared): State<Arc<Shared>>, guard: Guard) -> Response {
    let started = Instant::now();
    let apps_visible = match guard.visible(Verb::List, Resource::Apps) {
        Ok(v) => v,
        Err(f) => return refused(f),
    };
    let hosts_allowed = guard
        .allow(Verb::List, Resource::Hosts, &Scope::Cluster, None)
        .is_ok();
    let view = {
        let state = shared.state();
        let copies = crate::api::copies(&state, |id| apps_visible.shows(&id.namespace));
        let apps: Vec<_> = state
            .apps
            .values()
            .filter(|a| apps_visible.shows(&a.stored.spec.namespace))
            .map(|a| crate::api::summary(&state, a, &copies))
            .collect();
        let mut pending: Vec<(String, String)> = state
            .pending
            .iter()
            .filter(|(id, _)| apps_visible.shows(&id.namespace))
            .map(|(id, why)| (id.to_string(), why.to_string()))
            .collect();
        pending.sort();
        let mut warnings: Vec<_> = state
            .events
            .values()
            .flatten()
            .filter(|e| e.reason.is_warning() && apps_visible.shows(&e.namespace))
            .cloned()
            .collect();
        warnings.sort_by_key(|e| std::cmp::Reverse(e.at_ms));
        warnings.truncate(OVERVIEW_EVENTS);
        pages::Overview {
            principal: guard.caller().principal.name.to_string(),
            hosts: hosts_allowed.then(|| crate::api::hosts_info(&state)),
            apps,
            pending,
            warnings,
            now_ms: shoal_api::wire::now_ms(),
        }
    };
    let page = pages::overview(&view);
    tracing::debug!(took = ?started.elapsed(), "rendered the overview");
    page.into_response()
}

/// Which two revisions the revisions page compares.
#[derive(Deserialize)]
struct Compare {
    from: Option<u64>,
    to: Option<u64>,
}

/// An app's stored revisions, and what changed between two of them (by
/// default the one before the current and the current).
async fn revisions_page(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
    axum::extract::Query(compare): axum::extract::Query<Compare>,
) -> Response {
    if let Err(f) = guard.allow_app(Verb::Get, &namespace, &name) {
        return refused(f);
    }
    let key = {
        let state = shared.state();
        let Some(app) = state.apps.get(&format!("{namespace}.{name}")) else {
            return refused(
                crate::SchedulerError::NotFound(format!("no app {namespace}/{name}")).into(),
            );
        };
        subjects::app_key(&app.stored.spec.namespace, &app.stored.spec.name)
    };
    let history = match shared.store.app_history(&key).await {
        Ok(history) => history,
        Err(e) => return refused(e.into()),
    };
    let Some(last) = history.last().map(|(r, _, _)| *r) else {
        return refused(
            crate::SchedulerError::NotFound(format!("no app {namespace}/{name}")).into(),
        );
    };
    let to = compare.to.unwrap_or(last);
    let from = compare
        .from
        .or_else(|| history.iter().map(|(r, _, _)| *r).filter(|r| *r < to).max());
    let text = |revision: Option<u64>| {
        history
            .iter()
            .find(|(r, _, _)| Some(*r) == revision)
            .map(|(_, _, stored)| pages::spec_text(stored))
    };
    let Some(after) = text(Some(to)) else {
        return refused(crate::api::guard::invalid(format!(
            "revision {to} of {namespace}/{name} is not kept: the list below shows those that are"
        )));
    };
    let before = text(from).unwrap_or_default();
    let view = pages::RevisionsView {
        principal: guard.caller().principal.name.to_string(),
        namespace,
        name,
        revisions: history
            .iter()
            .rev()
            .map(|(r, at, stored)| (*r, *at, stored.cause.clone()))
            .collect(),
        from,
        to,
        diff: pages::line_diff(&before, &after),
        now_ms: shoal_api::wire::now_ms(),
    };
    pages::revisions(&view).into_response()
}

/// The most replicas the hosts page lists for one host: a host of ten
/// thousand shows its first ones and how many more it runs.
const HOST_PAGE_REPLICAS: usize = 200;

async fn hosts_page(State(shared): State<Arc<Shared>>, guard: Guard) -> Response {
    if let Err(f) = guard.allow(Verb::List, Resource::Hosts, &Scope::Cluster, None) {
        return refused(f);
    }
    let view = {
        let state = shared.state();
        let hosts = crate::api::hosts_info(&state)
            .into_iter()
            .map(|info| {
                let all = state
                    .hosts
                    .get(&info.id)
                    .map(|h| h.heartbeat.replicas.as_slice())
                    .unwrap_or_default();
                let shown = all.iter().take(HOST_PAGE_REPLICAS).cloned().collect();
                pages::HostView {
                    more: all.len().saturating_sub(HOST_PAGE_REPLICAS),
                    info,
                    replicas: shown,
                }
            })
            .collect();
        pages::HostsView {
            principal: guard.caller().principal.name.to_string(),
            hosts,
        }
    };
    pages::hosts(&view).into_response()
}

async fn namespace_page(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(name): Path<String>,
) -> Response {
    let name = match shoal_api::Name::new(name) {
        Ok(name) => name,
        Err(e) => return refused(crate::api::guard::invalid(format!("namespace: {e}"))),
    };
    if let Err(f) = guard.allow(
        Verb::Get,
        Resource::Namespaces,
        &Scope::Namespace(name.clone()),
        None,
    ) {
        return refused(f);
    }
    let info = match crate::api::namespace_routes::info(&shared, &name).await {
        Ok(info) => info,
        Err(e) => return refused(e.into()),
    };
    let apps_visible = guard
        .visible(Verb::List, Resource::Apps)
        .is_ok_and(|v| v.shows(&name));
    let apps = if apps_visible {
        let state = shared.state();
        let copies = crate::api::copies(&state, |id| id.namespace == name);
        state
            .apps
            .values()
            .filter(|a| a.stored.spec.namespace == name)
            .map(|a| crate::api::summary(&state, a, &copies))
            .collect()
    } else {
        Vec::new()
    };
    pages::namespace(&pages::NamespaceView {
        principal: guard.caller().principal.name.to_string(),
        info,
        apps,
    })
    .into_response()
}

async fn app_page(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    if let Err(f) = guard.allow_app(Verb::Get, &namespace, &name) {
        return refused(f);
    }
    let view = {
        let state = shared.state();
        let Some(app) = state.apps.get(&format!("{namespace}.{name}")) else {
            return refused(
                crate::SchedulerError::NotFound(format!("no app {namespace}/{name}")).into(),
            );
        };
        let spec = &app.stored.spec;
        let copies = crate::api::copies(&state, |id| {
            id.namespace == spec.namespace && id.app == spec.name
        });
        let key = subjects::app_key(&spec.namespace, &spec.name);
        let mut events: Vec<_> = state
            .events
            .get(&key)
            .map(|e| e.iter().cloned().collect())
            .unwrap_or_default();
        events.reverse();
        pages::AppView {
            may_scale: guard.allow_app(Verb::Scale, &namespace, &name).is_ok(),
            may_read_logs: guard
                .allow(
                    Verb::Logs,
                    Resource::Logs,
                    &Scope::Namespace(spec.namespace.clone()),
                    Some(name.clone()),
                )
                .is_ok(),
            may_roll_back: guard.allow_app(Verb::Rollout, &namespace, &name).is_ok(),
            principal: guard.caller().principal.name.to_string(),
            summary: crate::api::summary(&state, app, &copies),
            rollout: crate::rollout::status(&state, app, Instant::now()),
            charts: state.top.series(
                |id| id.namespace == spec.namespace && id.app == spec.name,
                shoal_api::wire::now_ms(),
                crate::tunables::CHART_STEP,
                crate::tunables::CHART_POINTS,
            ),
            spec: spec.clone(),
            pods: crate::api::pods_of(&state, app, &copies),
            events,
            now_ms: shoal_api::wire::now_ms(),
        }
    };
    pages::app(&view).into_response()
}

/// The scale form.
#[derive(Deserialize)]
struct ScaleForm {
    component: shoal_api::Name,
    replicas: u32,
}

async fn scale(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
    Form(form): Form<ScaleForm>,
) -> Response {
    let req = shoal_api::resources::ScaleRequest {
        component: form.component,
        replicas: form.replicas,
    };
    match crate::api::scale_app(&shared, &guard, &namespace, &name, req).await {
        Ok(_) => back_to(&namespace, &name),
        Err(f) => refused(f),
    }
}

async fn undo(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    let req = shoal_api::resources::RollbackRequest { to: None };
    match crate::api::rollback_app(&shared, &guard, &namespace, &name, req).await {
        Ok(_) => back_to(&namespace, &name),
        Err(f) => refused(f),
    }
}

async fn promote(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match crate::api::promote_app(&shared, &guard, &namespace, &name).await {
        Ok(_) => back_to(&namespace, &name),
        Err(f) => refused(f),
    }
}

async fn abort(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path((namespace, name)): Path<(String, String)>,
) -> Response {
    match crate::api::abort_app(&shared, &guard, &namespace, &name).await {
        Ok(_) => back_to(&namespace, &name),
        Err(f) => refused(f),
    }
}

/// Back to an app's page after a form.
fn back_to(namespace: &str, name: &str) -> Response {
    let to = format!("/ui/apps/{namespace}/{name}");
    match HeaderValue::from_str(&to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => redirect("/ui"),
    }
}

async fn sign_in_page(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.access.enabled() {
        return redirect("/ui");
    }
    pages::sign_in(None).into_response()
}

/// The sign-in form.
#[derive(Deserialize)]
struct SignIn {
    token: String,
}

async fn sign_in(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Form(form): Form<SignIn>,
) -> Response {
    // A form on another site must not sign this browser in as someone
    // else (login forgery): a browser says where a form came from.
    if cross_site(&headers) {
        return (
            StatusCode::FORBIDDEN,
            pages::sign_in(Some("sign in from this page, not from another site")),
        )
            .into_response();
    }
    let token = form.token.trim();
    let bearer = format!("Bearer {token}");
    match shared.access.authenticate(Some(&bearer)) {
        Ok(_) => {
            let cookie = format!(
                "{SESSION_COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{}",
                if shared.serves_tls { "; Secure" } else { "" }
            );
            let mut response = redirect("/ui");
            match HeaderValue::from_str(&cookie) {
                Ok(v) => {
                    response.headers_mut().insert(header::SET_COOKIE, v);
                    response
                }
                Err(_) => (
                    StatusCode::UNAUTHORIZED,
                    pages::sign_in(Some(
                        "that is not a token: paste it as `shoal auth token create` printed it",
                    )),
                )
                    .into_response(),
            }
        }
        Err(why) => (
            StatusCode::UNAUTHORIZED,
            pages::sign_in(Some(&why.to_string())),
        )
            .into_response(),
    }
}

async fn sign_out() -> Response {
    let mut response = redirect("/ui/sign-in");
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("shoal_session=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    response
}

async fn live_script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("live.js"),
    )
        .into_response()
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("style.css"),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_read_among_others() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; shoal_session=shoal_ab_cd; other=1"),
        );
        assert_eq!(
            session_bearer(&headers).as_deref(),
            Some("Bearer shoal_ab_cd")
        );
        assert_eq!(session_bearer(&HeaderMap::new()), None);
    }

    #[test]
    fn the_cookie_reads_pages_and_sends_their_forms_from_the_same_origin_only() {
        let none = HeaderMap::new();
        assert!(takes_cookie(&Method::GET, "/ui", &none));
        assert!(takes_cookie(&Method::GET, "/ui/apps/default/web", &none));
        assert!(!takes_cookie(&Method::GET, "/v1/apps", &none));
        assert!(!takes_cookie(&Method::GET, "/uix", &none));
        let scale = "/ui/apps/default/web/scale";
        assert!(!takes_cookie(&Method::POST, scale, &none));
        let mut fetch = HeaderMap::new();
        fetch.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(takes_cookie(&Method::POST, scale, &fetch));
        fetch.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!takes_cookie(&Method::POST, scale, &fetch));
        let mut origin = HeaderMap::new();
        origin.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7000"));
        origin.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7000"),
        );
        assert!(takes_cookie(&Method::POST, scale, &origin));
        origin.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(!takes_cookie(&Method::POST, scale, &origin));
        assert!(!takes_cookie(
            &Method::POST,
            "/v1/apps/default/web/scale",
            &fetch
        ));
        assert!(!takes_cookie(
            &Method::DELETE,
            "/ui/apps/default/web",
            &fetch
        ));
    }
}
