//! Figures for `shoal top`: what each replica has done, as hosts report it
//! in heartbeats ([`ReplicaStats`], counters that only grow), and the rates
//! the API derives from two of them ([`TopRow`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many duration buckets a [`ReplicaStats`] has.
pub const DURATION_BUCKETS: usize = 24;

/// The upper bound of duration bucket `i`: 10 µs × 2^i (about 84 s for the
/// last but one; the last holds everything longer).
pub fn bucket_bound(i: usize) -> Duration {
    Duration::from_micros(10u64.saturating_mul(1u64 << i.min(40)))
}

/// The bucket a duration falls in.
pub fn duration_bucket(d: Duration) -> usize {
    (0..DURATION_BUCKETS - 1)
        .find(|&i| d <= bucket_bound(i))
        .unwrap_or(DURATION_BUCKETS - 1)
}

/// What one replica has done since it started, summed over its components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStats {
    /// Invocations that ended.
    pub invocations: u64,
    /// Of them, those that failed or trapped, or answered an HTTP status
    /// of 500 or more.
    pub errors: u64,
    /// Fuel burned (components with a fuel limit).
    pub fuel: u64,
    /// The most linear memory one invocation held since the previous
    /// heartbeat.
    pub peak_memory: u64,
    /// Invocations by duration bucket ([`duration_bucket`]).
    pub durations: Vec<u64>,
}

impl ReplicaStats {
    /// Adds `other`'s counts (and takes the larger peak).
    pub fn add(&mut self, other: &ReplicaStats) {
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.errors = self.errors.saturating_add(other.errors);
        self.fuel = self.fuel.saturating_add(other.fuel);
        self.peak_memory = self.peak_memory.max(other.peak_memory);
        if self.durations.len() < other.durations.len() {
            self.durations.resize(other.durations.len(), 0);
        }
        for (mine, theirs) in self.durations.iter_mut().zip(&other.durations) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// What happened between `earlier` and this (a restart, which resets
    /// the counters, counts from zero).
    pub fn since(&self, earlier: &ReplicaStats) -> ReplicaStats {
        let reset = self.invocations < earlier.invocations;
        let minus = |now: u64, then: u64| if reset { now } else { now.saturating_sub(then) };
        ReplicaStats {
            invocations: minus(self.invocations, earlier.invocations),
            errors: minus(self.errors, earlier.errors),
            fuel: minus(self.fuel, earlier.fuel),
            peak_memory: self.peak_memory,
            durations: self
                .durations
                .iter()
                .enumerate()
                .map(|(i, n)| minus(*n, earlier.durations.get(i).copied().unwrap_or(0)))
                .collect(),
        }
    }

    /// The duration below which `q` (0 to 1) of the invocations fell, as
    /// the upper bound of its bucket; `None` without invocations.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.durations.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.durations.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(bucket_bound(i));
            }
        }
        None
    }
}

/// What a row of `shoal top` is: `GET /v1/top/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TopKind {
    /// One replica.
    Pods,
    /// One pod of an app: its replicas summed.
    Apps,
    /// One host: its replicas summed.
    Hosts,
}

/// One row of `shoal top`: a replica, an app's component or a host, over
/// a window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TopRow {
    /// What it is about: `ns/app/pod-N`, `ns/app/component` or a host id.
    pub name: String,
    /// Invocations a second.
    pub invocations_per_s: f64,
    /// Failed or trapped invocations a second.
    pub errors_per_s: f64,
    /// Median duration (bucket bound), in ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile duration (bucket bound), in ms.
    pub p99_ms: Option<f64>,
    /// Fuel burned a second.
    pub fuel_per_s: f64,
    /// The most linear memory one invocation held, in bytes.
    pub peak_memory: u64,
    /// Invocations in flight on average.
    pub in_flight: f64,
    /// The window the figures cover, in seconds.
    pub window_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets() {
        let mut s = ReplicaStats {
            durations: vec![0; DURATION_BUCKETS],
            ..Default::default()
        };
        s.durations[duration_bucket(Duration::from_micros(15))] = 98;
        s.durations[duration_bucket(Duration::from_millis(3))] = 2;
        assert_eq!(s.quantile(0.5), Some(Duration::from_micros(20)));
        assert_eq!(
            s.quantile(0.99),
            Some(bucket_bound(duration_bucket(Duration::from_millis(3))))
        );
        assert_eq!(ReplicaStats::default().quantile(0.5), None);
    }

    #[test]
    fn since_counts_a_restart_from_zero() {
        let before = ReplicaStats {
            invocations: 10,
            ..Default::default()
        };
        let after = ReplicaStats {
            invocations: 3,
            ..Default::default()
        };
        assert_eq!(after.since(&before).invocations, 3);
        let later = ReplicaStats {
            invocations: 15,
            ..Default::default()
        };
        assert_eq!(later.since(&before).invocations, 5);
    }
}
