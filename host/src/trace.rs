//! Traces on a host: every request and message carries a W3C trace
//! context, and what one invocation does is recorded when asked.
//!
//! - [`Span`]: one hop of a trace (the ingress, an invocation, a guest's
//!   outbound call). Its [`context`](Span::context) is what the next hop
//!   is sent as its `traceparent`. Spans are exported by OTLP only when the
//!   host was started with `--otlp-endpoint` ([`export_to`]); otherwise a
//!   span is just two random ids, and nothing leaves the host.
//! - [`CallContext`]: what one invocation's host calls share: the
//!   component, the invocation's span context (put on the guest's outbound
//!   requests and messages) and, for `shoal invoke --trace`, the
//!   [`HostCallLog`] every capability writes its calls to.

use std::borrow::Cow;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, Status, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SdkTracer,
    SdkTracerProvider,
};
use shoal_api::trace::{CallOutcome, HostCall, TraceParent};

pub use opentelemetry::trace::SpanKind;

use crate::tunables::{MAX_CALL_ERROR_CHARS, MAX_RECORDED_CALLS, SPAN_EXPORT_DELAY};

/// The tracer spans are exported through, once [`export_to`] set it.
static EXPORTER: OnceLock<SdkTracer> = OnceLock::new();

/// Why spans cannot be exported to the endpoint given.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The endpoint is not an `http://` URL.
    #[error(
        "--otlp-endpoint {0:?} is not an http:// URL: give the collector's OTLP/HTTP address, like http://127.0.0.1:4318 (https is not supported: run the collector beside the host)"
    )]
    NotHttp(String),
    /// The exporter could not be built.
    #[error("cannot export spans to {endpoint}: {reason}")]
    Exporter {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Spans are already exported elsewhere in this process.
    #[error("spans are already exported from this process")]
    AlreadySet,
}

/// Spans being exported: flushes the last ones when dropped.
pub struct Exporting {
    provider: SdkTracerProvider,
}

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "the last spans were not exported");
        }
    }
}

/// Exports every span this process starts from now on by OTLP/HTTP to
/// `endpoint` (a collector's base URL, `/v1/traces` added unless given),
/// naming the process `service` and tagging it with `attributes`.
pub fn export_to(
    endpoint: &str,
    service: &'static str,
    attributes: Vec<(&'static str, String)>,
) -> Result<Exporting, ExportError> {
    let base = endpoint.trim_end_matches('/');
    if !base.starts_with("http://") {
        return Err(ExportError::NotHttp(endpoint.to_string()));
    }
    let url = if base.ends_with("/v1/traces") {
        base.to_string()
    } else {
        format!("{base}/v1/traces")
    };
    // The exporter's HTTP client wants a process-wide TLS provider, even
    // for plain http; Shoal's is ring everywhere. Already set is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig as _};
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_headers(Default::default())
        .build()
        .map_err(|e| ExportError::Exporter {
            endpoint: url.clone(),
            reason: e.to_string(),
        })?;
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(SPAN_EXPORT_DELAY)
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(resource)
        .build();
    let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "shoal");
    EXPORTER.set(tracer).map_err(|_| ExportError::AlreadySet)?;
    tracing::info!(endpoint = url, "exporting spans by OTLP");
    Ok(Exporting { provider })
}

/// One hop of a trace. Ends (and is exported, when exporting) when dropped.
pub struct Span {
    context: TraceParent,
    exported: Option<opentelemetry_sdk::trace::Span>,
}

impl Span {
    /// Starts a span under `parent`, or a new trace when there is none.
    /// `describe` names it and gives its attributes; it is only called
    /// when the span is exported, so an unexported span costs two random
    /// ids and nothing else.
    pub fn start(
        kind: SpanKind,
        parent: Option<TraceParent>,
        describe: impl FnOnce() -> (Cow<'static, str>, Vec<KeyValue>),
    ) -> Span {
        let recorded = parent.is_none_or(|p| p.sampled);
        if let (Some(tracer), true) = (EXPORTER.get(), recorded) {
            let cx = match parent {
                Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from_bytes(p.trace_id),
                    SpanId::from_bytes(p.span_id),
                    TraceFlags::SAMPLED,
                    true,
                    TraceState::default(),
                )),
                None => Context::new(),
            };
            let (name, attributes) = describe();
            let span = tracer
                .span_builder(name)
                .with_kind(kind)
                .with_attributes(attributes)
                .start_with_context(tracer, &cx);
            let sc = span.span_context();
            return Span {
                context: TraceParent {
                    trace_id: sc.trace_id().to_bytes(),
                    span_id: sc.span_id().to_bytes(),
                    sampled: sc.is_sampled(),
                },
                exported: Some(span),
            };
        }
        Span {
            context: unexported(parent),
            exported: None,
        }
    }

    /// What the next hop is sent as its `traceparent`.
    pub fn context(&self) -> TraceParent {
        self.context
    }

    /// Marks the span failed, saying why.
    pub fn fail(&mut self, why: impl std::fmt::Display) {
        if let Some(span) = &mut self.exported {
            span.set_status(Status::error(why.to_string()));
        }
    }

    /// Adds an attribute, when exported.
    pub fn set(&mut self, attribute: impl FnOnce() -> KeyValue) {
        if let Some(span) = &mut self.exported {
            span.set_attribute(attribute());
        }
    }
}

/// The context of a span that is never exported: under `parent`, or the
/// root of a new trace. Health checks run in one, so that they do not
/// flood a collector.
pub fn unexported(parent: Option<TraceParent>) -> TraceParent {
    let ids = RandomIdGenerator::default();
    let span_id = ids.new_span_id().to_bytes();
    match parent {
        Some(p) => p.child(span_id),
        None => TraceParent {
            trace_id: ids.new_trace_id().to_bytes(),
            span_id,
            sampled: true,
        },
    }
}

/// The trace context in a `traceparent` header value, if it is a valid one.
pub fn parse_traceparent(value: Option<&str>) -> Option<TraceParent> {
    value.and_then(|v| v.parse().ok())
}

/// The host calls of one invocation, for `shoal invoke --trace`. At most
/// [`MAX_RECORDED_CALLS`] are kept; later ones are counted.
#[derive(Clone, Default)]
pub struct HostCallLog {
    inner: Arc<Mutex<CallLogInner>>,
}

#[derive(Default)]
struct CallLogInner {
    calls: Vec<HostCall>,
    dropped: u64,
}

impl HostCallLog {
    fn push(&self, call: HostCall) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if inner.calls.len() < MAX_RECORDED_CALLS {
            inner.calls.push(call);
        } else {
            inner.dropped += 1;
        }
    }

    /// The calls recorded, in the order they began, and how many more
    /// were made past the limit.
    pub fn take(&self) -> (Vec<HostCall>, u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut calls = std::mem::take(&mut inner.calls);
        calls.sort_by_key(|c| c.at_us);
        (calls, std::mem::take(&mut inner.dropped))
    }
}

/// What one invocation's host calls share.
pub struct CallContext {
    component: Arc<str>,
    trace: TraceParent,
    log: Option<HostCallLog>,
    began: Instant,
}

/// One host call being made, for [`CallContext::record`].
pub struct CallSite<'a> {
    /// The interface (`keyvalue`, `messaging`, …).
    pub capability: &'static str,
    /// The function.
    pub function: &'static str,
    /// What it names (a key, a subject); never a value.
    pub target: &'a str,
    /// Bytes the guest passed in.
    pub sent_bytes: usize,
}

impl CallContext {
    /// The context of one invocation of `component` in span `trace`,
    /// recording its calls into `log` when given.
    pub fn new(component: Arc<str>, trace: TraceParent, log: Option<HostCallLog>) -> Arc<Self> {
        Arc::new(CallContext {
            component,
            trace,
            log,
            began: Instant::now(),
        })
    }

    /// The component making the calls.
    pub fn component(&self) -> &Arc<str> {
        &self.component
    }

    /// The invocation's span context: the parent of its outbound calls.
    pub fn trace(&self) -> TraceParent {
        self.trace
    }

    /// Whether calls are being recorded.
    pub fn recording(&self) -> bool {
        self.log.is_some()
    }

    /// Runs `call`, recording it when this invocation's calls are
    /// recorded. `received` tells how many bytes a success hands back.
    pub async fn record<T, E: std::fmt::Display>(
        &self,
        site: CallSite<'_>,
        received: impl FnOnce(&T) -> usize,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let Some(log) = &self.log else {
            return call.await;
        };
        let at = self.began.elapsed();
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(value) => CallOutcome::Ok {
                bytes: received(value) as u64,
            },
            Err(e) => CallOutcome::Error {
                error: e.to_string().chars().take(MAX_CALL_ERROR_CHARS).collect(),
            },
        };
        log.push(HostCall {
            capability: site.capability.to_string(),
            function: site.function.to_string(),
            target: site.target.chars().take(MAX_CALL_ERROR_CHARS).collect(),
            sent_bytes: site.sent_bytes as u64,
            outcome,
            at_us: micros(at),
            took_us: micros(started.elapsed()),
        });
        result
    }
}

fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nothing() -> (Cow<'static, str>, Vec<KeyValue>) {
        ("test".into(), Vec::new())
    }

    #[test]
    fn a_span_continues_its_parents_trace_or_starts_one() {
        let root = Span::start(SpanKind::Server, None, nothing);
        assert!(root.context().sampled);
        let child = Span::start(SpanKind::Internal, Some(root.context()), nothing);
        assert_eq!(child.context().trace_id, root.context().trace_id);
        assert_ne!(child.context().span_id, root.context().span_id);
        let other = Span::start(SpanKind::Server, None, nothing);
        assert_ne!(other.context().trace_id, root.context().trace_id);
    }

    #[tokio::test]
    async fn recorded_calls_say_what_happened_and_unrecorded_ones_cost_nothing() {
        let trace = Span::start(SpanKind::Internal, None, nothing).context();
        let log = HostCallLog::default();
        let cx = CallContext::new("c".into(), trace, Some(log.clone()));
        let site = |function| CallSite {
            capability: "keyvalue",
            function,
            target: "k",
            sent_bytes: 3,
        };
        let ok: Result<Vec<u8>, String> = cx
            .record(site("get"), Vec::len, async { Ok(vec![1, 2]) })
            .await;
        assert_eq!(ok.unwrap(), vec![1, 2]);
        let failed: Result<(), String> = cx
            .record(site("set"), |_| 0, async { Err("full".to_string()) })
            .await;
        assert!(failed.is_err());
        let (calls, dropped) = log.take();
        assert_eq!(dropped, 0);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].outcome, CallOutcome::Ok { bytes: 2 });
        assert_eq!(
            calls[1].outcome,
            CallOutcome::Error {
                error: "full".into()
            }
        );
        assert_eq!(
            (calls[1].function.as_str(), calls[1].sent_bytes),
            ("set", 3)
        );

        let quiet = CallContext::new("c".into(), trace, None);
        let _: Result<(), String> = quiet.record(site("get"), |_| 0, async { Ok(()) }).await;
        assert!(!quiet.recording());
    }
}
