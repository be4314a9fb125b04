//! `shoal top`'s figures: each replica's counters as its heartbeats
//! brought them, kept [`TOP_HISTORY`] back, and the rates over a window.
//!
//! Beats are kept [`TOP_SPACING`] apart for the last [`TOP_FINE`]; older
//! ones are thinned to one per [`TOP_COARSE`], so a replica costs a few
//! kilobytes however long it runs and however often its host beats.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use shoal_api::top::{ReplicaStats, TopRow};
use shoal_api::wire::{HostId, ReplicaId, ReplicaStatus};

use crate::tunables::{TOP_COARSE, TOP_FINE, TOP_HISTORY, TOP_SPACING};

/// One beat's figures.
#[derive(Debug, Clone)]
struct Sample {
    at_ms: u64,
    stats: ReplicaStats,
    load_milli: u32,
}

/// A replica's samples, oldest first.
#[derive(Debug, Clone, Default)]
pub struct History {
    host: Option<HostId>,
    samples: VecDeque<Sample>,
    /// When the samples were last thinned.
    thinned_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl History {
    fn push(&mut self, host: &HostId, status: &ReplicaStatus, at_ms: u64) {
        if self.host.as_ref() != Some(host) {
            self.host = Some(host.clone());
        }
        // Beats closer than TOP_SPACING to the sample before the newest
        // replace the newest: a host that beats on every change keeps no
        // more samples than one that beats on time. The counters only
        // grow, so the newest holds what the replaced one did; the peak is
        // carried over.
        // A replica that did nothing since the last two samples keeps two:
        // an idle one costs the same whatever the history's length.
        let len = self.samples.len();
        let idle = |s: &Sample| s.stats == status.stats && s.load_milli == status.load_milli;
        if len >= 2
            && let Some(before) = self.samples.get(len - 2)
            && (at_ms < before.at_ms + ms(TOP_SPACING)
                || (idle(before) && self.samples.back().is_some_and(idle)))
            && let Some(newest) = self.samples.back_mut()
            && newest.at_ms <= at_ms
        {
            let peak = newest.stats.peak_memory.max(status.stats.peak_memory);
            newest.stats.clone_from(&status.stats);
            newest.stats.peak_memory = peak;
            newest.load_milli = status.load_milli;
            newest.at_ms = at_ms;
        } else {
            self.samples.push_back(Sample {
                at_ms,
                stats: status.stats.clone(),
                load_milli: status.load_milli,
            });
        }
        if at_ms < self.thinned_ms + ms(TOP_COARSE) {
            return;
        }
        self.thinned_ms = at_ms;
        while self
            .samples
            .front()
            .is_some_and(|s| s.at_ms + ms(TOP_HISTORY) < at_ms)
        {
            self.samples.pop_front();
        }
        // Thin what is older than the fine window, in place.
        let fine_from = at_ms.saturating_sub(ms(TOP_FINE));
        let mut last_kept: Option<u64> = None;
        self.samples.retain(|s| {
            let coarse = s.at_ms < fine_from;
            let too_close = last_kept.is_some_and(|last| s.at_ms < last + ms(TOP_COARSE));
            if coarse && too_close {
                return false;
            }
            last_kept = Some(s.at_ms);
            true
        });
    }

    /// What happened over the last `window` before `now_ms`: the counters'
    /// difference, the most memory and the average load, and the seconds
    /// covered. `None` without two samples in it.
    fn over(&self, window: Duration, now_ms: u64) -> Option<(ReplicaStats, f64, f64)> {
        let last = self.samples.back()?;
        let from = now_ms.saturating_sub(ms(window));
        let first = self
            .samples
            .iter()
            .rev()
            .skip(1)
            .find(|s| s.at_ms <= from)
            .or_else(|| self.samples.iter().find(|s| s.at_ms < last.at_ms))?;
        let span: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.at_ms > first.at_ms)
            .collect();
        let mut delta = last.stats.since(&first.stats);
        delta.peak_memory = span.iter().map(|s| s.stats.peak_memory).max().unwrap_or(0);
        let seconds = (last.at_ms - first.at_ms) as f64 / 1000.0;
        let load = span.iter().map(|s| f64::from(s.load_milli)).sum::<f64>()
            / (span.len().max(1) as f64 * 1000.0);
        Some((delta, seconds, load))
    }
}

impl History {
    /// The counters' difference between the samples last before `from_ms`
    /// and `to_ms` (or the first one, for a replica that started since).
    fn between(&self, from_ms: u64, to_ms: u64) -> Option<ReplicaStats> {
        let last = self.samples.iter().rev().find(|s| s.at_ms <= to_ms)?;
        let first = self
            .samples
            .iter()
            .rev()
            .find(|s| s.at_ms <= from_ms)
            .or_else(|| self.samples.front())?;
        (first.at_ms < last.at_ms).then(|| last.stats.since(&first.stats))
    }
}

/// One point of a chart: what a set of replicas did over one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// The step's end, in ms since the epoch.
    pub at_ms: u64,
    /// Invocations a second.
    pub invocations_per_s: f64,
    /// Failures a second (errors, traps, HTTP answers of 500 or more).
    pub errors_per_s: f64,
    /// The 99th percentile duration (bucket bound), in ms.
    pub p99_ms: Option<f64>,
}

/// Every replica's history.
#[derive(Debug, Default)]
pub struct Top {
    replicas: HashMap<ReplicaId, History>,
    /// When histories past [`TOP_HISTORY`] were last dropped.
    pruned_ms: u64,
}

impl Top {
    /// Records a host's heartbeat.
    pub fn record(&mut self, host: &HostId, replicas: &[ReplicaStatus], at_ms: u64) {
        for r in replicas {
            match self.replicas.get_mut(&r.id) {
                Some(history) => history.push(host, r, at_ms),
                None => self
                    .replicas
                    .entry(r.id.clone())
                    .or_default()
                    .push(host, r, at_ms),
            }
        }
        // Every replica's history is looked over at most once per
        // TOP_COARSE, not on every heartbeat of every host.
        if at_ms >= self.pruned_ms + ms(TOP_COARSE) {
            self.pruned_ms = at_ms;
            self.replicas.retain(|_, h| {
                h.samples
                    .back()
                    .is_some_and(|s| s.at_ms + ms(TOP_HISTORY) >= at_ms)
            });
        }
    }

    /// One row per replica that `keep` accepts.
    pub fn pods(
        &self,
        window: Duration,
        now_ms: u64,
        keep: impl Fn(&ReplicaId) -> bool,
    ) -> Vec<TopRow> {
        self.replicas
            .iter()
            .filter(|(id, _)| keep(id))
            .filter_map(|(id, h)| {
                let (delta, seconds, load) = h.over(window, now_ms)?;
                Some(row(id.to_string(), &delta, seconds, load))
            })
            .collect()
    }

    /// `points` points `step` apart ending at `now_ms`, each summing what
    /// the replicas `keep` accepts did over its step: the dashboard's
    /// charts.
    pub fn series(
        &self,
        keep: impl Fn(&ReplicaId) -> bool,
        now_ms: u64,
        step: Duration,
        points: usize,
    ) -> Vec<Point> {
        let step_ms = ms(step).max(1);
        let kept: Vec<&History> = self
            .replicas
            .iter()
            .filter(|(id, _)| keep(id))
            .map(|(_, h)| h)
            .collect();
        (0..points)
            .rev()
            .map(|back| {
                let to = now_ms.saturating_sub(back as u64 * step_ms);
                let from = to.saturating_sub(step_ms);
                let mut sum = ReplicaStats::default();
                for h in &kept {
                    if let Some(delta) = h.between(from, to) {
                        sum.add(&delta);
                    }
                }
                let seconds = step_ms as f64 / 1000.0;
                Point {
                    at_ms: to,
                    invocations_per_s: sum.invocations as f64 / seconds,
                    errors_per_s: sum.errors as f64 / seconds,
                    p99_ms: sum.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
                }
            })
            .collect()
    }

    /// One row per group of replicas, as `group` names them (an app, a
    /// host): their counts summed.
    pub fn grouped(
        &self,
        window: Duration,
        now_ms: u64,
        group: impl Fn(&ReplicaId, Option<&HostId>) -> Option<String>,
    ) -> Vec<TopRow> {
        let mut sums: HashMap<String, (ReplicaStats, f64, f64)> = HashMap::new();
        for (id, h) in &self.replicas {
            let Some(name) = group(id, h.host.as_ref()) else {
                continue;
            };
            let Some((delta, seconds, load)) = h.over(window, now_ms) else {
                continue;
            };
            let sum = sums.entry(name).or_default();
            sum.0.add(&delta);
            sum.1 = sum.1.max(seconds);
            sum.2 += load;
        }
        sums.into_iter()
            .map(|(name, (delta, seconds, load))| row(name, &delta, seconds, load))
            .collect()
    }
}

fn row(name: String, delta: &ReplicaStats, seconds: f64, load: f64) -> TopRow {
    let per_s = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    TopRow {
        name,
        invocations_per_s: per_s(delta.invocations),
        errors_per_s: per_s(delta.errors),
        p50_ms: delta.quantile(0.5).map(|d| d.as_secs_f64() * 1000.0),
        p99_ms: delta.quantile(0.99).map(|d| d.as_secs_f64() * 1000.0),
        fuel_per_s: per_s(delta.fuel),
        peak_memory: delta.peak_memory,
        in_flight: load,
        window_s: seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{replica_id, running};

    fn status(invocations: u64, peak_memory: u64) -> ReplicaStatus {
        ReplicaStatus {
            stats: ReplicaStats {
                invocations,
                peak_memory,
                ..Default::default()
            },
            ..running(replica_id("web", "web", 0), 1, true)
        }
    }

    #[test]
    fn beats_closer_than_the_spacing_keep_the_newest_counts_and_the_peak() {
        let host = HostId::new("h1").unwrap();
        let mut top = Top::default();
        // A beat every 10 ms for 2 s, 10 invocations each, one big peak.
        for i in 0..=200u64 {
            let peak = if i == 57 { 900 } else { 100 };
            top.record(&host, &[status(i * 10, peak)], 1_000_000 + i * 10);
        }
        let history = top.replicas.values().next().unwrap();
        assert!(
            history.samples.len() <= 10,
            "{} samples kept of 201 beats",
            history.samples.len()
        );
        let rows = top.pods(Duration::from_secs(2), 1_002_000, |_| true);
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert!(
            (row.invocations_per_s - 1000.0).abs() < 1.0,
            "{}",
            row.invocations_per_s
        );
        assert_eq!(row.peak_memory, 900, "the replaced beat's peak is kept");
    }

    #[test]
    fn a_series_sums_each_step_of_the_replicas_kept() {
        let host = HostId::new("h1").unwrap();
        let mut top = Top::default();
        let start = 1_000_000u64;
        // 10 invocations a second for 60 s, a beat a second.
        for s in 0..=60u64 {
            top.record(&host, &[status(s * 10, 1)], start + s * 1000);
        }
        let points = top.series(|_| true, start + 60_000, Duration::from_secs(30), 3);
        assert_eq!(points.len(), 3);
        assert_eq!(points[2].at_ms, start + 60_000);
        assert!(
            (points[2].invocations_per_s - 10.0).abs() < 0.01,
            "{points:?}"
        );
        assert!(
            (points[1].invocations_per_s - 10.0).abs() < 0.01,
            "{points:?}"
        );
        // Before the replica's first beat: nothing.
        assert_eq!(points[0].invocations_per_s, 0.0, "{points:?}");
        assert!(
            top.series(|_| false, start + 60_000, Duration::from_secs(30), 3)
                .iter()
                .all(|p| p.invocations_per_s == 0.0)
        );
    }
}
