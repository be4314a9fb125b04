//! `GET /v1/logs/{namespace}/{app}` and `GET /v1/events`: stored logs and
//! events, as newline-delimited JSON, once or following.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use shoal_api::access::{Resource, Verb};
use shoal_api::logs::LogCursor;
use shoal_api::{Name, subjects};
use tokio::sync::mpsc;

use super::guard::{Failure, Guard, Visible, invalid, scope_of};
use super::openapi::AppLogsPath;
use crate::Shared;
use crate::logs::{LogQuery, read, read_events};
use crate::tunables::{LOGS_GREP_MAX_BYTES, STREAM_BUFFER, TOKEN_RECHECK};
use shoal_api::logs::LogEntry;
use shoal_api::resources::Event;

/// The query of `GET /v1/logs/{namespace}/{app}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this component.
    #[param(value_type = Option<Name>)]
    component: Option<String>,
    /// Only this replica (`pod-N`).
    replica: Option<String>,
    /// Only lines written since (ms since the epoch).
    #[param(maximum = 9_007_199_254_740_991_u64)]
    #[serde(default, deserialize_with = "super::numbers::safe_opt")]
    since_ms: Option<u64>,
    /// Only lines after this cursor (`SEQ:INDEX`), to resume a follow.
    #[param(pattern = "^[0-9]{1,19}:[0-9]{1,9}$")]
    after: Option<String>,
    /// Only the last N lines of the backlog.
    #[param(maximum = 9_007_199_254_740_991_u64)]
    #[serde(default, deserialize_with = "super::numbers::safe_opt")]
    tail: Option<u64>,
    /// Only lines matching this regular expression.
    #[param(format = Regex)]
    grep: Option<String>,
    /// Only each replica's run before its latest.
    #[serde(default)]
    previous: bool,
    /// Keep streaming new lines.
    #[serde(default)]
    follow: bool,
}

/// Streams what `out` receives as newline-delimited JSON, while `work`
/// fills it; an error of `work` ends the body with one `{"error": …}` line.
/// Completes when the caller's token stops being valid (it expired or was
/// revoked): a follow must not outlive the permission it started with.
fn token_lapses(shared: Arc<Shared>, guard: &Guard) -> futures::future::BoxFuture<'static, ()> {
    let token = guard.caller().token.clone();
    Box::pin(async move {
        let Some(id) = token else {
            return std::future::pending().await;
        };
        loop {
            tokio::time::sleep(TOKEN_RECHECK).await;
            let active = shared.access.record(&id).is_some_and(|r| {
                r.state(shoal_api::wire::now_ms()) == shoal_api::resources::TokenState::Active
            });
            if !active {
                return;
            }
        }
    })
}

fn ndjson<T: Serialize + Send + 'static>(
    lapses: futures::future::BoxFuture<'static, ()>,
    work: impl FnOnce(
        mpsc::Sender<T>,
    ) -> futures::future::BoxFuture<'static, Result<(), crate::SchedulerError>>
    + Send
    + 'static,
) -> Response {
    let (tx, rx) = mpsc::channel::<T>(STREAM_BUFFER);
    let (lines_tx, lines_rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut rx = rx;
        let forward = async {
            while let Some(item) = rx.recv().await {
                let Ok(mut line) = serde_json::to_vec(&item) else {
                    continue;
                };
                line.push(b'\n');
                if lines_tx.send(line.into()).await.is_err() {
                    return;
                }
            }
        };
        let working = async {
            tokio::select! {
                result = work(tx) => result,
                () = lapses => Err(crate::SchedulerError::Invalid(
                    "the token this stream began with expired or was revoked".into(),
                )),
            }
        };
        let (result, ()) = tokio::join!(working, forward);
        if let Err(e) = result {
            let line = serde_json::json!({ "error": e.to_string() });
            let _ = lines_tx.send(format!("{line}\n").into()).await;
        }
    });
    let body = futures::stream::unfold(lines_rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(body),
    )
        .into_response()
}

/// An app's stored logs, every replica on every host, oldest first.
///
/// With `follow`, new lines as they come. Newline-delimited JSON: one
/// `LogEntry` a line; an `{"error": …}` line ends a stream that failed.
/// Needs `logs` on `logs` in the app's namespace.
#[utoipa::path(
    get, path = "/v1/logs/{namespace}/{app}", tag = "observability",
    params(AppLogsPath, LogsQuery),
    responses((status = 200, description = "one LogEntry a line", body = LogEntry, content_type = "application/x-ndjson"))
)]
pub async fn logs(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Path(AppLogsPath { namespace, app }): Path<AppLogsPath>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, Failure> {
    guard.allow(
        Verb::Logs,
        Resource::Logs,
        &scope_of(&namespace)?,
        Some(app.clone()),
    )?;
    let namespace = Name::new(namespace).map_err(|e| invalid(format!("namespace: {e}")))?;
    let app = Name::new(app).map_err(|e| invalid(format!("app: {e}")))?;
    let component = q
        .component
        .map(Name::new)
        .transpose()
        .map_err(|e| invalid(format!("component: {e}")))?;
    let grep = match q.grep {
        Some(pattern) => Some(
            regex::RegexBuilder::new(&pattern)
                .size_limit(LOGS_GREP_MAX_BYTES)
                .build()
                .map_err(|e| invalid(format!("--grep {pattern:?}: {e}")))?,
        ),
        None => None,
    };
    let after = q
        .after
        .map(|a| a.parse::<LogCursor>())
        .transpose()
        .map_err(invalid)?;
    let query = LogQuery {
        component,
        replica: q.replica,
        since_ms: q.since_ms,
        after,
        tail: q.tail.map(|t| usize::try_from(t).unwrap_or(usize::MAX)),
        grep,
        previous: q.previous,
        follow: q.follow,
    };
    let js = shared.js.clone();
    let lapses = token_lapses(shared.clone(), &guard);
    Ok(ndjson(lapses, move |tx| {
        Box::pin(async move { read(&js, &namespace, &app, query, tx).await })
    }))
}

/// The query of `GET /v1/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this namespace.
    #[param(value_type = Option<Name>)]
    namespace: Option<String>,
    /// Only this app (with `namespace`).
    #[param(value_type = Option<Name>)]
    app: Option<String>,
    /// Only events since (ms since the epoch).
    #[serde(default, deserialize_with = "super::numbers::safe")]
    #[param(maximum = 9_007_199_254_740_991_u64)]
    since_ms: u64,
    /// Keep streaming new events.
    #[serde(default)]
    follow: bool,
}

/// Stored events, oldest first: one app's, one namespace's, or every
/// visible namespace's.
///
/// With `follow`, new ones as they come. Newline-delimited JSON: one
/// `Event` a line.
#[utoipa::path(
    get, path = "/v1/events", tag = "observability", params(EventsQuery),
    responses((status = 200, description = "one Event a line", body = Event, content_type = "application/x-ndjson"))
)]
pub async fn events(
    State(shared): State<Arc<Shared>>,
    guard: Guard,
    Query(q): Query<EventsQuery>,
) -> Result<Response, Failure> {
    let (subject, visible) = match &q.namespace {
        Some(ns) => {
            guard.allow(Verb::List, Resource::Events, &scope_of(ns)?, q.app.clone())?;
            let ns = Name::new(ns.as_str()).map_err(|e| invalid(format!("namespace: {e}")))?;
            let subject = match &q.app {
                Some(app) => {
                    let app = Name::new(app.as_str()).map_err(|e| invalid(format!("app: {e}")))?;
                    subjects::events(&ns, &app)
                }
                None => format!("{}.events.{ns}.>", subjects::PREFIX),
            };
            (subject, Visible::Only([ns].into()))
        }
        None => (
            subjects::ALL_EVENTS.to_string(),
            guard.visible(Verb::List, Resource::Events)?,
        ),
    };
    let js = shared.js.clone();
    let (since_ms, follow) = (q.since_ms, q.follow);
    let lapses = token_lapses(shared.clone(), &guard);
    Ok(ndjson(lapses, move |tx| {
        Box::pin(async move {
            read_events(
                &js,
                subject,
                since_ms,
                follow,
                move |e| visible.shows(&e.namespace),
                tx,
            )
            .await
        })
    }))
}
