//! The host's metrics, in the OpenMetrics text format, on an address of
//! their own (never the ingress, whose paths belong to the apps).
//!
//! Per component: invocations by outcome, and per invocation its duration,
//! the fuel it burned and the most linear memory it held (histograms), and
//! the invocations in flight. Per host: memory and slots offered and used,
//! and log lines dropped. Labels are bounded: namespace, app, component
//! and outcome, never a replica or a request path.

use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_api::wire::ReplicaId;

use crate::tunables::ACCEPT_RETRY;

/// A component's labels.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    namespace: String,
    app: String,
    component: String,
}

/// How an invocation ended: the label values of `outcome`.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Outcome {
    /// It answered.
    ok,
    /// It failed without trapping (bad input, a handler error, a non-zero exit).
    error,
    /// It trapped on a fault of its own (`unreachable`, out of bounds, …).
    trap,
    /// It ran out of fuel.
    fuel_exhausted,
    /// It asked for memory past its limit.
    memory_limit,
    /// It ran past its deadline.
    deadline,
}

impl Outcome {
    /// Every outcome, in the order [`ComponentMetrics`] keeps them.
    const ALL: [Outcome; 6] = [
        Outcome::ok,
        Outcome::error,
        Outcome::trap,
        Outcome::fuel_exhausted,
        Outcome::memory_limit,
        Outcome::deadline,
    ];

    /// How `result` ended.
    pub fn of<T>(result: &Result<T, crate::InvokeError>) -> Outcome {
        use crate::InvokeError as E;
        match result {
            Ok(_) => Outcome::ok,
            Err(E::FuelExhausted { .. }) => Outcome::fuel_exhausted,
            Err(E::MemoryLimit { .. }) => Outcome::memory_limit,
            Err(E::Deadline { .. }) => Outcome::deadline,
            Err(E::Trap { .. }) => Outcome::trap,
            Err(_) => Outcome::error,
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    namespace: String,
    app: String,
    component: String,
    outcome: Outcome,
}

type Histograms = Family<ComponentLabels, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

fn fuel() -> Histogram {
    // A thousand to ten billion units.
    Histogram::new(exponential_buckets(1_000.0, 10.0, 8))
}

fn bytes() -> Histogram {
    // 64 KiB to 16 GiB.
    Histogram::new(exponential_buckets(65_536.0, 4.0, 10))
}

/// Every metric of a host.
pub struct HostMetrics {
    registry: Registry,
    invocations: Family<OutcomeLabels, Counter>,
    duration: Histograms,
    fuel: Histograms,
    memory: Histograms,
    in_flight: Family<ComponentLabels, Gauge>,
    /// Memory the host offers to replicas, in bytes.
    pub memory_offered: Gauge,
    /// Memory its replicas reserve, in bytes.
    pub memory_used: Gauge,
    /// Replicas it runs at most.
    pub slots_offered: Gauge,
    /// Replicas it runs.
    pub slots_used: Gauge,
    /// Guest log lines dropped (over budget, or the logs stream away).
    pub log_lines_dropped: Gauge,
}

impl HostMetrics {
    /// Every family, registered.
    pub fn new() -> Arc<HostMetrics> {
        let mut registry = Registry::with_prefix("shoal");
        let invocations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations, by how they ended",
            invocations.clone(),
        );
        let duration = Histograms::new_with_constructor(seconds);
        registry.register(
            "invocation_duration_seconds",
            "How long each invocation took, from instantiation to its answer",
            duration.clone(),
        );
        let fuel_family = Histograms::new_with_constructor(fuel);
        registry.register(
            "invocation_fuel",
            "Fuel each invocation burned (components with a fuel limit)",
            fuel_family.clone(),
        );
        let memory = Histograms::new_with_constructor(bytes);
        registry.register(
            "invocation_memory_bytes",
            "The most linear memory each invocation held",
            memory.clone(),
        );
        let in_flight = Family::<ComponentLabels, Gauge>::default();
        registry.register("in_flight", "Invocations running now", in_flight.clone());
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let memory_offered = gauge(
            &mut registry,
            "host_memory_offered_bytes",
            "Memory the host offers to replicas",
        );
        let memory_used = gauge(
            &mut registry,
            "host_memory_used_bytes",
            "Memory the host's replicas reserve",
        );
        let slots_offered = gauge(
            &mut registry,
            "host_slots_offered",
            "Replicas the host runs at most",
        );
        let slots_used = gauge(&mut registry, "host_slots_used", "Replicas the host runs");
        let log_lines_dropped = gauge(
            &mut registry,
            "log_lines_dropped",
            "Guest log lines dropped since the host started",
        );
        Arc::new(HostMetrics {
            registry,
            invocations,
            duration,
            fuel: fuel_family,
            memory,
            in_flight,
            memory_offered,
            memory_used,
            slots_offered,
            slots_used,
            log_lines_dropped,
        })
    }

    /// The metrics of `component` of `replica`'s app, labelled without the
    /// replica.
    pub fn component(&self, replica: &ReplicaId, component: &str) -> ComponentMetrics {
        let labels = ComponentLabels {
            namespace: replica.namespace.to_string(),
            app: replica.app.to_string(),
            component: component.to_string(),
        };
        let outcome = |outcome| {
            self.invocations
                .get_or_create(&OutcomeLabels {
                    namespace: labels.namespace.clone(),
                    app: labels.app.clone(),
                    component: labels.component.clone(),
                    outcome,
                })
                .clone()
        };
        ComponentMetrics {
            outcomes: Outcome::ALL.map(outcome),
            duration: self.duration.get_or_create(&labels).clone(),
            fuel: self.fuel.get_or_create(&labels).clone(),
            memory: self.memory.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
        }
    }

    /// Everything, as OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

/// One component's metrics, resolved once when it is loaded.
#[derive(Debug, Clone)]
pub struct ComponentMetrics {
    /// By outcome, in the order of [`Outcome::ALL`].
    outcomes: [Counter; 6],
    duration: Histogram,
    fuel: Histogram,
    memory: Histogram,
    in_flight: Gauge,
}

impl ComponentMetrics {
    /// An invocation began.
    pub fn started(&self) {
        self.in_flight.inc();
    }

    /// An invocation ended after `seconds`, with `outcome`.
    pub fn ended(&self, outcome: Outcome, seconds: f64) {
        self.in_flight.dec();
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.outcomes[i].inc();
        }
        self.duration.observe(seconds);
    }

    /// What an invocation used: fuel, when metered, and its peak memory.
    pub fn used(&self, fuel: Option<u64>, peak_memory: u64) {
        if let Some(fuel) = fuel {
            self.fuel.observe(fuel as f64);
        }
        self.memory.observe(peak_memory as f64);
    }
}

/// Serves `GET /metrics` on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<HostMetrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "the metrics listener failed to accept");
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &metrics)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(req: &Request<B>, metrics: &HostMetrics) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    if req.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
        *response.body_mut() = Full::new(Bytes::from_static(b"only /metrics here\n"));
        return response;
    }
    *response.body_mut() = Full::new(Bytes::from(metrics.encode()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
    );
    response
}

/// Binds the metrics address.
pub async fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
