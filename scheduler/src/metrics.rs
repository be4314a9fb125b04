//! The scheduler's metrics, in the OpenMetrics text format, on the API's
//! `/metrics`.
//!
//! Counted as they happen: reconcile passes (a duration histogram),
//! placements, and API requests by route template and method (never by
//! path). Read from the state at each scrape: replicas wanted and ready per
//! component, pending replicas, hosts by state. Labels are bounded.

use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::State;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentState {
    namespace: String,
    app: String,
    component: String,
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: String,
}

fn seconds() -> Histogram {
    // 100 µs to about 26 s.
    Histogram::new(exponential_buckets(0.000_1, 4.0, 10))
}

/// Every metric of a scheduler.
pub struct SchedulerMetrics {
    registry: Registry,
    replicas: Family<ComponentState, Gauge>,
    hosts: Family<HostLabels, Gauge>,
    pending: Gauge,
    reconcile: Histogram,
    placements: Counter,
    requests: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("shoal");
        let replicas = Family::<ComponentState, Gauge>::default();
        registry.register(
            "replicas",
            "Replicas per component: wanted, and running and ready",
            replicas.clone(),
        );
        let hosts = Family::<HostLabels, Gauge>::default();
        registry.register("hosts", "Hosts by state", hosts.clone());
        let pending = Gauge::default();
        registry.register(
            "pending_replicas",
            "Replicas no host can take now",
            pending.clone(),
        );
        let reconcile = seconds();
        registry.register(
            "reconcile_duration_seconds",
            "How long each reconcile pass took, commands included",
            reconcile.clone(),
        );
        let placements = Counter::default();
        registry.register(
            "placements",
            "Start commands sent to hosts",
            placements.clone(),
        );
        let requests =
            Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(seconds);
        registry.register(
            "api_request_duration_seconds",
            "API requests by route template and method",
            requests.clone(),
        );
        SchedulerMetrics {
            registry,
            replicas,
            hosts,
            pending,
            reconcile,
            placements,
            requests,
        }
    }
}

impl SchedulerMetrics {
    /// A reconcile pass took `took`.
    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
    }

    /// A start command went out.
    pub fn placed(&self) {
        self.placements.inc();
    }

    /// An API request to `route` (its template) took `took`.
    pub fn request(&self, route: &str, method: &str, took: Duration) {
        self.requests
            .get_or_create(&RouteLabels {
                route: route.to_string(),
                method: method.to_string(),
            })
            .observe(took.as_secs_f64());
    }

    /// Everything, as OpenMetrics text, with the figures read from `state`
    /// now.
    pub fn encode(&self, state: &State) -> String {
        self.replicas.clear();
        let copies = crate::api::running_copies(state);
        for (key, app) in &state.apps {
            let spec = &app.stored.spec;
            for pod in spec.pods() {
                let wanted = state.replicas_of(key, &pod);
                let ready = (0..wanted)
                    .filter(|i| {
                        copies
                            .get(&crate::reconcile::replica_id(spec, &pod.name, *i))
                            .is_some_and(|ready| *ready)
                    })
                    .count();
                for (name, _) in &pod.components {
                    let labels = |state| ComponentState {
                        namespace: spec.namespace.to_string(),
                        app: spec.name.to_string(),
                        component: name.to_string(),
                        state,
                    };
                    self.replicas
                        .get_or_create(&labels("wanted"))
                        .set(i64::from(wanted));
                    self.replicas
                        .get_or_create(&labels("ready"))
                        .set(i64::try_from(ready).unwrap_or(i64::MAX));
                }
            }
        }
        self.pending
            .set(i64::try_from(state.pending.len()).unwrap_or(i64::MAX));
        self.hosts.clear();
        let now = Instant::now();
        for h in state.hosts.values() {
            let host_state = h.state(now);
            self.hosts
                .get_or_create(&HostLabels {
                    state: host_state.word(),
                })
                .inc();
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }
}
