//! Invoking a loaded component: a worker's handler, a job's `run`, and an
//! HTTP request. Each call gets a fresh store and instance from the pool,
//! its own fuel budget, deadline and memory cap; nothing outlives it.

use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Bytes;
use wasmtime::Store;
use wasmtime_wasi::I32Exit;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use std::sync::Arc;

use shoal_api::subjects::headers;
use shoal_api::trace::{TRACEPARENT, TraceParent};

use crate::bindings::types::{HandlerError, Message, Reply};
use crate::component::{Entry, LoadedComponent, Usage, trap_message};
use crate::error::InvokeError;
use crate::state::InvocationState;
use crate::trace::{CallContext, HostCallLog, Span, SpanKind, parse_traceparent};
use crate::tunables::EPOCH_TICK;

/// An HTTP response from a component, its body streamed from the guest.
pub type HttpResponse = hyper::Response<HyperOutgoingBody>;

impl LoadedComponent {
    /// Calls a worker's handler with `msg` in a fresh instance.
    pub async fn invoke(&self, msg: Message) -> Result<(Reply, Usage), InvokeError> {
        self.invoke_recorded(msg, None).await
    }

    /// [`invoke`](Self::invoke), recording the host calls the guest makes
    /// into `log` when given. The invocation continues the trace of the
    /// message's `traceparent` (or starts one), and the guest sees its own
    /// span there.
    pub async fn invoke_recorded(
        &self,
        mut msg: Message,
        log: Option<HostCallLog>,
    ) -> Result<(Reply, Usage), InvokeError> {
        let started = std::time::Instant::now();
        self.begin();
        let parent = parse_traceparent(
            msg.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
                .map(|(_, v)| v.as_str()),
        );
        let mut span = self.span(parent);
        msg.headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case(TRACEPARENT) && k != headers::TRACE_CALLS);
        msg.headers
            .push((TRACEPARENT.to_string(), span.context().to_string()));
        let call = self.call_context(&span, log);
        let outcome = self.invoke_once(msg, &call).await;
        if let Err(e) = &outcome {
            span.fail(e);
        }
        self.note(started, &outcome, false);
        outcome
    }

    async fn invoke_once(
        &self,
        msg: Message,
        call: &Arc<CallContext>,
    ) -> Result<(Reply, Usage), InvokeError> {
        let Entry::Worker(pre) = &self.entry else {
            return Err(self.wrong_kind("only worker components handle messages"));
        };
        let _permit = self.permit().await?;
        let (mut store, started) = self.new_store(call)?;
        let call = async {
            let worker = pre.instantiate_async(&mut store).await?;
            worker
                .shoal_workload_handler()
                .call_handle(&mut store, &msg)
                .await
        };
        let result = self.within_deadline(call).await;
        let usage = self.usage(&store, started);
        match result {
            None => Err(self.deadline()),
            Some(Ok(Ok(reply))) => Ok((reply, usage)),
            Some(Ok(Err(HandlerError::InvalidInput(why)))) => Err(InvokeError::InvalidInput(why)),
            Some(Ok(Err(HandlerError::Failed(why)))) => Err(InvokeError::HandlerFailed(why)),
            Some(Err(err)) => {
                self.dump(&err, &mut store);
                Err(self.classify(&err, &store))
            }
        }
    }

    /// Runs a job to completion in a fresh instance.
    pub async fn run_job(&self) -> Result<Usage, InvokeError> {
        let Entry::Job(pre) = &self.entry else {
            return Err(self.wrong_kind("only job components run to completion"));
        };
        let _permit = self.permit().await?;
        let mut span = self.span(None);
        let call_context = self.call_context(&span, None);
        let (mut store, started) = self.new_store(&call_context)?;
        let call = async {
            let command = pre.instantiate_async(&mut store).await?;
            command.wasi_cli_run().call_run(&mut store).await
        };
        let result = self.within_deadline(call).await;
        let usage = self.usage(&store, started);
        if let Some(Err(e)) = &result {
            span.fail(e);
        }
        match result {
            None => Err(self.deadline()),
            Some(Ok(Ok(()))) => Ok(usage),
            Some(Ok(Err(()))) => Err(InvokeError::Exit { code: 1 }),
            Some(Err(err)) => match err.downcast_ref::<I32Exit>() {
                Some(I32Exit(0)) => Ok(usage),
                Some(I32Exit(code)) => Err(InvokeError::Exit { code: *code }),
                None => {
                    self.dump(&err, &mut store);
                    Err(self.classify(&err, &store))
                }
            },
        }
    }

    /// Serves one HTTP request in a fresh instance. The response arrives as
    /// soon as the guest sets it; its body streams while the guest writes it,
    /// still under the same deadline.
    ///
    /// The request continues the trace of its `traceparent` (or starts
    /// one), and the guest sees its own span there.
    pub async fn handle_http<B>(
        &self,
        mut request: hyper::Request<B>,
    ) -> Result<HttpResponse, InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let started = std::time::Instant::now();
        self.begin();
        let parent = parse_traceparent(
            request
                .headers()
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok()),
        );
        let mut span = self.span(parent);
        if let Ok(value) = hyper::header::HeaderValue::from_str(&span.context().to_string()) {
            request.headers_mut().insert(TRACEPARENT, value);
        }
        let call = self.call_context(&span, None);
        let outcome = self.handle_http_once(request, &call).await;
        match &outcome {
            Ok(response) => span.set(|| {
                opentelemetry::KeyValue::new(
                    "http.response.status_code",
                    i64::from(response.status().as_u16()),
                )
            }),
            Err(e) => span.fail(e),
        }
        let answered_failure = matches!(&outcome, Ok(r) if r.status().is_server_error());
        self.note(started, &outcome, answered_failure);
        outcome
    }

    /// The span of one invocation of this component, under `parent`.
    fn span(&self, parent: Option<TraceParent>) -> Span {
        Span::start(SpanKind::Internal, parent, || {
            (
                format!("invoke {}", self.name()).into(),
                vec![opentelemetry::KeyValue::new(
                    "shoal.component",
                    self.name().to_string(),
                )],
            )
        })
    }

    /// Serves one HTTP request as [`handle_http`](Self::handle_http) does,
    /// without counting it as an invocation: a health probe's `GET`, which
    /// must not weigh in `shoal top`, load or a canary's figures.
    pub(crate) async fn probe_http<B>(
        &self,
        request: hyper::Request<B>,
        call: &Arc<CallContext>,
    ) -> Result<HttpResponse, InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        self.handle_http_once(request, call).await
    }

    async fn handle_http_once<B>(
        &self,
        request: hyper::Request<B>,
        call: &Arc<CallContext>,
    ) -> Result<HttpResponse, InvokeError>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Entry::Http(pre) = &self.entry else {
            return Err(self.wrong_kind("only http components serve HTTP"));
        };
        let permit = self.permit().await?;
        let (mut store, _) = self.new_store(call)?;
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| -> wasmtime::Result<_> {
            let req = store
                .data_mut()
                .http()
                .new_incoming_request(Scheme::Http, request)?;
            let out = store.data_mut().http().new_response_outparam(sender)?;
            Ok((req, out))
        })();
        let (req, out) = prepared.map_err(|e| InvokeError::Instantiate(format!("{e:#}")))?;
        let pre = pre.clone();
        let timeout = self.limits().timeout.get();
        let task = tokio::spawn(async move {
            let _permit = permit;
            let call = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            };
            let result = tokio::time::timeout(timeout + EPOCH_TICK * 4, call).await;
            // The store goes back only to explain a failure. Otherwise it
            // is dropped here, off the response's path: dropping it
            // resets the instance's memory, which the caller would
            // otherwise do before its response could go out.
            let failed = !matches!(result, Ok(Ok(())));
            (result, failed.then_some(store))
        });
        match receiver.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(InvokeError::Trap {
                message: format!(
                    "the guest answered with an error instead of a response: {code:?}"
                ),
            }),
            Err(_) => {
                // The guest dropped its response-outparam without setting it:
                // find out why from the task.
                let (result, store) = task.await.map_err(|e| InvokeError::Trap {
                    message: format!("the request task failed: {e}"),
                })?;
                Err(self.outcome_without_response(result, store))
            }
        }
    }

    /// What went wrong when no response came: `store` is there for a
    /// failed call.
    fn outcome_without_response(
        &self,
        result: Result<wasmtime::Result<()>, tokio::time::error::Elapsed>,
        store: Option<Store<InvocationState>>,
    ) -> InvokeError {
        match (result, store) {
            (Err(_), _) => self.deadline(),
            (Ok(Err(err)), Some(mut store)) => {
                self.dump(&err, &mut store);
                self.classify(&err, &store)
            }
            (Ok(Err(err)), None) => InvokeError::Trap {
                message: trap_message(&err),
            },
            (Ok(Ok(())), _) => InvokeError::Trap {
                message: "the guest returned without setting a response".into(),
            },
        }
    }

    /// Runs `call` under the wall-clock deadline. The epoch callback stops
    /// Wasm code at the deadline; this catches a guest waiting in a host
    /// call. `None` means the deadline passed.
    async fn within_deadline<F, T>(&self, call: F) -> Option<T>
    where
        F: std::future::Future<Output = T>,
    {
        // A few ticks of slack so the epoch trap, which says more, wins.
        let limit = self.limits().timeout.get() + EPOCH_TICK * 4;
        tokio::time::timeout(limit, call).await.ok()
    }
}

/// A plain-text response for errors the host answers itself.
pub fn text_response(status: u16, body: String) -> HttpResponse {
    let body: UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error> =
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed_unsync();
    let mut response = hyper::Response::new(body);
    *response.status_mut() =
        hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
