//! Health checks: asking a component whether it is live and ready.
//!
//! A component answers through its `shoal:workload/health` export, called
//! in a fresh instance like any invocation, or, for an http component whose
//! spec names a `health.path`, through a GET of that path: 2xx and 3xx mean
//! live and ready, 503 means live but not ready, anything else (or a trap,
//! or no answer in time) fails both. [`Checks`] turns a series of answers
//! into decisions, with the spec's failure threshold.

use crate::trace::{CallContext, unexported};
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;

use crate::component::LoadedComponent;
use crate::error::InvokeError;

/// One check's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthReport {
    /// The replica is not broken.
    pub live: bool,
    /// The replica should get work.
    pub ready: bool,
}

/// How a replica is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Through the `shoal:workload/health` export.
    Export,
    /// Through a GET of this path.
    Path(String),
}

impl LoadedComponent {
    /// Runs one check, giving up after `timeout`.
    pub async fn check_health(
        &self,
        probe: &Probe,
        timeout: Duration,
    ) -> Result<HealthReport, String> {
        let check = async {
            match probe {
                Probe::Export => self.call_health().await.map_err(|e| e.to_string()),
                Probe::Path(path) => self.get_health_path(path).await,
            }
        };
        match tokio::time::timeout(timeout, check).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "no answer within the health timeout of {}ms",
                timeout.as_millis()
            )),
        }
    }

    async fn call_health(&self) -> Result<HealthReport, InvokeError> {
        let Some(pre) = &self.health else {
            return Err(InvokeError::Instantiate(format!(
                "{} exports no shoal:workload/health",
                self.name()
            )));
        };
        let _permit = self.permit().await?;
        let call = CallContext::new(self.name().into(), unexported(None), None);
        let (mut store, _) = self.new_store(&call)?;
        let outcome = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let health = instance.shoal_workload_health();
            let live = health.call_live(&mut store).await?;
            let ready = health.call_ready(&mut store).await?;
            wasmtime::Result::Ok(HealthReport { live, ready })
        }
        .await;
        outcome.map_err(|err| self.classify(&err, &store))
    }

    async fn get_health_path(&self, path: &str) -> Result<HealthReport, String> {
        let request = hyper::Request::builder()
            .method("GET")
            .uri(format!("http://localhost{path}"))
            .header(hyper::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("cannot build a GET of {path}: {e}"))?;
        let call = CallContext::new(self.name().into(), unexported(None), None);
        let response = self
            .probe_http(request, &call)
            .await
            .map_err(|e| format!("GET {path} failed: {e}"))?;
        let status = response.status();
        if status.is_success() || status.is_redirection() {
            Ok(HealthReport {
                live: true,
                ready: true,
            })
        } else if status == hyper::StatusCode::SERVICE_UNAVAILABLE {
            Ok(HealthReport {
                live: true,
                ready: false,
            })
        } else {
            Err(format!("GET {path} answered {status}"))
        }
    }
}

/// Consecutive check results of one component, and what they add up to.
#[derive(Debug, Clone, Default)]
pub struct Checks {
    threshold: u32,
    passed_once: bool,
    not_ready: u32,
    not_live: u32,
    ready: bool,
    last_error: Option<String>,
}

/// What a check changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Healthy,
    /// Readiness changed to the value given.
    Readiness(bool),
    /// Liveness failed `threshold` times in a row: restart, for this reason.
    Dead(String),
}

impl Checks {
    /// Acting after `threshold` failures in a row. Not ready until the
    /// first check passes.
    pub fn new(threshold: u32) -> Self {
        Checks {
            threshold: threshold.max(1),
            ..Default::default()
        }
    }

    /// Whether the component takes work.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// Why the last check failed, if it did.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Counts one check's outcome. A failed check (an error) counts
    /// against both liveness and readiness.
    pub fn record(&mut self, outcome: Result<HealthReport, String>) -> Verdict {
        let (live, ready) = match &outcome {
            Ok(report) => (report.live, report.ready),
            Err(_) => (false, false),
        };
        self.last_error = match outcome {
            Err(why) => Some(why),
            Ok(r) if !r.live => Some("the liveness check answered false".into()),
            Ok(r) if !r.ready => Some("the readiness check answered false".into()),
            Ok(_) => None,
        };
        self.not_live = if live { 0 } else { self.not_live + 1 };
        self.not_ready = if ready { 0 } else { self.not_ready + 1 };
        if self.not_live >= self.threshold {
            let why = self.last_error.clone().unwrap_or_default();
            return Verdict::Dead(format!(
                "liveness failed {} checks in a row: {why}",
                self.not_live
            ));
        }
        let was = self.ready;
        if ready {
            self.passed_once = true;
            self.ready = true;
        } else if self.not_ready >= self.threshold || !self.passed_once {
            self.ready = false;
        }
        if was == self.ready {
            Verdict::Healthy
        } else {
            Verdict::Readiness(self.ready)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: Result<HealthReport, String> = Ok(HealthReport {
        live: true,
        ready: true,
    });
    const UNREADY: Result<HealthReport, String> = Ok(HealthReport {
        live: true,
        ready: false,
    });

    #[test]
    fn ready_after_the_first_pass_and_out_after_threshold_failures() {
        let mut checks = Checks::new(2);
        assert!(!checks.ready());
        assert_eq!(checks.record(OK), Verdict::Readiness(true));
        assert_eq!(checks.record(UNREADY), Verdict::Healthy);
        assert!(checks.ready(), "one failure is below the threshold");
        assert_eq!(checks.record(UNREADY), Verdict::Readiness(false));
        assert_eq!(checks.record(OK), Verdict::Readiness(true));
    }

    #[test]
    fn liveness_failures_in_a_row_mean_dead() {
        let mut checks = Checks::new(3);
        assert_eq!(checks.record(OK), Verdict::Readiness(true));
        assert_eq!(checks.record(Err("trap".into())), Verdict::Healthy);
        assert_eq!(checks.record(OK), Verdict::Healthy);
        assert_eq!(checks.record(Err("trap".into())), Verdict::Healthy);
        assert!(matches!(
            checks.record(Err("trap".into())),
            Verdict::Healthy
        ));
        match checks.record(Err("trap".into())) {
            Verdict::Dead(why) => assert!(why.contains("3 checks in a row: trap"), "{why}"),
            other => panic!("expected dead, got {other:?}"),
        }
    }
}
