//! Choosing a host for a replica. Pure logic, no I/O.
//!
//! Filter, then score:
//! - a host must have every label the component asks for, a free slot and
//!   room for the replica's memory (the sum of its limits);
//! - among those, prefer a host running no replica of the same pod (keep
//!   replicas apart), then the least-used value of the spread label (such
//!   as `zone`), then the host with the least memory left after placing
//!   (bin-packing, so large replicas still find room later).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rustc_hash::FxHashMap;

use shoal_api::resources::Unschedulable;
use shoal_api::wire::HostId;

/// What placement knows of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The host.
    pub id: HostId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Memory it offers.
    pub memory: u64,
    /// Memory its replicas (and replicas being started) reserve.
    pub used_memory: u64,
    /// Replicas it may hold.
    pub slots: u32,
    /// Replicas it holds.
    pub used_slots: u32,
}

/// How many replicas of one pod each host runs. Hashed with FxHash: it is
/// looked up once per candidate host for every replica placed, with keys
/// the scheduler made itself.
pub type PodOnHost = FxHashMap<HostId, u32>;

/// What one replica needs.
#[derive(Debug, Clone)]
pub struct Need<'a> {
    /// Memory it reserves.
    pub memory: u64,
    /// Labels a host must have.
    pub labels: &'a BTreeMap<String, String>,
    /// The host label to spread replicas of the pod over.
    pub spread: Option<&'a str>,
    /// How many replicas of the same pod each host already runs.
    pub pod_on_host: &'a PodOnHost,
}

/// How good a host is for a replica: lower is better. Fewer replicas of
/// the same pod, then the least-used value of the spread label, then the
/// least memory left after placing, then the host id (the candidates are
/// sorted by id, so their index orders as the id does).
type Score = (u32, u32, u64, usize);

/// Replicas of the pod per value of its spread label, over every host.
fn spread_counts(hosts: &[Candidate], need: &Need<'_>) -> FxHashMap<String, u32> {
    let mut counts: FxHashMap<String, u32> = FxHashMap::default();
    if let Some(key) = need.spread {
        for c in hosts {
            if let Some(n) = need.pod_on_host.get(&c.id)
                && let Some(value) = c.labels.get(key)
            {
                match counts.get_mut(value.as_str()) {
                    Some(count) => *count += n,
                    None => {
                        counts.insert(value.clone(), *n);
                    }
                }
            }
        }
    }
    counts
}

/// Whether `c` has every label `need` asks for.
fn labelled(c: &Candidate, need: &Need<'_>) -> bool {
    need.labels.iter().all(|(k, v)| c.labels.get(k) == Some(v))
}

/// `c`'s score for `need`, or `None` when it cannot take the replica.
fn score(
    i: usize,
    c: &Candidate,
    need: &Need<'_>,
    spread: &FxHashMap<String, u32>,
) -> Option<Score> {
    let fits = c.used_slots < c.slots && c.memory.saturating_sub(c.used_memory) >= need.memory;
    if !fits || !labelled(c, need) {
        return None;
    }
    let same_pod = if need.pod_on_host.is_empty() {
        0
    } else {
        need.pod_on_host.get(&c.id).copied().unwrap_or(0)
    };
    let spread = need.spread.map_or(0, |key| {
        c.labels
            .get(key)
            .map_or(u32::MAX, |v| spread.get(v.as_str()).copied().unwrap_or(0))
    });
    let left = c.memory - c.used_memory - need.memory;
    Some((same_pod, spread, left, i))
}

/// Picks the index of the best host in `hosts` for `need`, or says why none fits.
///
/// Looks at every host; allocates nothing on the way to a choice (words
/// are made only for a refusal). To place many replicas of one pod, a
/// [`Ranking`] does the same in far less.
pub fn choose(hosts: &[Candidate], need: &Need<'_>) -> Result<usize, Unschedulable> {
    let spread = spread_counts(hosts, need);
    hosts
        .iter()
        .enumerate()
        .filter_map(|(i, c)| score(i, c, need, &spread))
        .min()
        .map(|(.., i)| i)
        .ok_or_else(|| refusal(hosts, need))
}

/// The hosts ranked for the replicas of one pod, best first, so that
/// placing N replicas over H hosts costs about H + N log H, not N times H.
///
/// Within a pass, what changes a host's score is a replica of the pod
/// placed on it or memory reserved on it. A placement only makes scores
/// worse: the host has one more replica of the pod (the first criterion)
/// and its spread value one more. So the heap holds, for every host, an
/// entry no better than its score now, and the best host is the top once
/// its score is checked afresh. Memory reserved can make a host's score
/// better (less left over), so [`Ranking::reserved`] pushes a fresh entry.
#[derive(Debug)]
pub struct Ranking {
    heap: BinaryHeap<Reverse<Score>>,
    /// Replicas of the pod per value of its spread label.
    spread: FxHashMap<String, u32>,
}

impl Ranking {
    /// Ranks `hosts` for `need`.
    pub fn new(hosts: &[Candidate], need: &Need<'_>) -> Ranking {
        let spread = spread_counts(hosts, need);
        let heap = hosts
            .iter()
            .enumerate()
            .filter_map(|(i, c)| score(i, c, need, &spread).map(Reverse))
            .collect();
        Ranking { heap, spread }
    }

    /// The index of the best host for `need` now, or why none fits.
    pub fn best(&mut self, hosts: &[Candidate], need: &Need<'_>) -> Result<usize, Unschedulable> {
        while let Some(&Reverse(stored)) = self.heap.peek() {
            let i = stored.3;
            let now = hosts.get(i).and_then(|c| score(i, c, need, &self.spread));
            match now {
                Some(now) if now == stored => return Ok(i),
                Some(now) => {
                    self.heap.pop();
                    self.heap.push(Reverse(now));
                }
                None => {
                    self.heap.pop();
                }
            }
        }
        Err(refusal(hosts, need))
    }

    /// A replica of the pod was placed on host `i`.
    pub fn placed(&mut self, hosts: &[Candidate], need: &Need<'_>, i: usize) {
        if let (Some(key), Some(c)) = (need.spread, hosts.get(i))
            && let Some(value) = c.labels.get(key)
        {
            *self.spread.entry(value.clone()).or_default() += 1;
        }
        self.reserved(hosts, need, i);
    }

    /// Memory or a slot was reserved on host `i`.
    pub fn reserved(&mut self, hosts: &[Candidate], need: &Need<'_>, i: usize) {
        if let Some(now) = hosts.get(i).and_then(|c| score(i, c, need, &self.spread)) {
            self.heap.push(Reverse(now));
        }
    }
}

/// Why no host in `hosts` can take a replica with `need`.
fn refusal(hosts: &[Candidate], need: &Need<'_>) -> Unschedulable {
    let labels = need.labels.clone();
    let mut labelled_hosts = hosts.iter().filter(|c| labelled(c, need)).peekable();
    if labelled_hosts.peek().is_none() {
        return if hosts.is_empty() {
            Unschedulable::NoHosts
        } else {
            Unschedulable::NoHostWithLabels { labels }
        };
    }
    if labelled_hosts.all(|c| c.used_slots >= c.slots) {
        Unschedulable::NoFreeSlot { labels }
    } else {
        Unschedulable::NoFreeMemory {
            memory: need.memory,
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(id: &str, zone: &str, memory_mib: u64) -> Candidate {
        Candidate {
            id: HostId::new(id).unwrap(),
            labels: [("zone".to_string(), zone.to_string())].into(),
            memory: memory_mib << 20,
            used_memory: 0,
            slots: 100,
            used_slots: 0,
        }
    }

    fn need<'a>(
        memory_mib: u64,
        labels: &'a BTreeMap<String, String>,
        spread: Option<&'a str>,
        on: &'a PodOnHost,
    ) -> Need<'a> {
        Need {
            memory: memory_mib << 20,
            labels,
            spread,
            pod_on_host: on,
        }
    }

    #[test]
    fn spreads_over_zones_and_keeps_replicas_apart() {
        let hosts = vec![
            host("a1", "a", 1024),
            host("a2", "a", 1024),
            host("b1", "b", 1024),
        ];
        let none = BTreeMap::new();
        let mut on = PodOnHost::default();
        let first = choose(&hosts, &need(64, &none, Some("zone"), &on)).unwrap();
        on.insert(hosts[first].id.clone(), 1);
        let second = choose(&hosts, &need(64, &none, Some("zone"), &on)).unwrap();
        assert_ne!(hosts[first].labels["zone"], hosts[second].labels["zone"]);
        on.insert(hosts[second].id.clone(), 1);
        let third = choose(&hosts, &need(64, &none, Some("zone"), &on)).unwrap();
        assert!(third != first && third != second, "a third host is free");
    }

    /// Places `n` replicas one after another with `pick`, as the reconciler
    /// does: reserve and count each one. Returns the hosts chosen.
    fn place_all(
        mut hosts: Vec<Candidate>,
        n: usize,
        spread: Option<&str>,
        mut pick: impl FnMut(&[Candidate], &Need<'_>, Option<usize>) -> Result<usize, Unschedulable>,
    ) -> Vec<String> {
        let none = BTreeMap::new();
        let mut on = PodOnHost::default();
        let mut out = Vec::new();
        let mut last = None;
        for _ in 0..n {
            let Ok(i) = pick(&hosts, &need(300, &none, spread, &on), last) else {
                out.push("refused".to_string());
                break;
            };
            hosts[i].used_memory += 300 << 20;
            hosts[i].used_slots += 1;
            *on.entry(hosts[i].id.clone()).or_default() += 1;
            out.push(hosts[i].id.to_string());
            last = Some(i);
        }
        out
    }

    #[test]
    fn a_ranking_chooses_as_choosing_afresh_each_time_does() {
        // Uneven hosts, some partly used, two zones: every criterion and
        // running out of room are exercised.
        let hosts: Vec<Candidate> = (0..12)
            .map(|i| {
                let mut h = host(
                    &format!("h{i:02}"),
                    if i % 3 == 0 { "a" } else { "b" },
                    1024 + (i * 397 % 5) * 512,
                );
                h.used_memory = (i * 131 % 4) * (200 << 20);
                h.slots = 3 + (i as u32 % 4);
                h
            })
            .collect();
        for spread in [None, Some("zone")] {
            let afresh = place_all(hosts.clone(), 60, spread, |h, need, _| choose(h, need));
            let mut ranking: Option<Ranking> = None;
            let ranked = place_all(hosts.clone(), 60, spread, |h, need, last| {
                let r = ranking.get_or_insert_with(|| Ranking::new(h, need));
                if let Some(i) = last {
                    r.placed(h, need, i);
                }
                r.best(h, need)
            });
            assert_eq!(ranked, afresh, "spread {spread:?}");
            assert_eq!(afresh.last().map(String::as_str), Some("refused"));
        }
    }

    #[test]
    fn bin_packs_by_memory() {
        let mut hosts = vec![host("big", "a", 4096), host("small", "a", 1024)];
        hosts[1].used_memory = 512 << 20;
        let none = BTreeMap::new();
        let on = PodOnHost::default();
        let i = choose(&hosts, &need(256, &none, None, &on)).unwrap();
        assert_eq!(
            hosts[i].id.as_str(),
            "small",
            "the fuller host that fits wins"
        );
        let i = choose(&hosts, &need(600, &none, None, &on)).unwrap();
        assert_eq!(hosts[i].id.as_str(), "big");
    }

    #[test]
    fn says_why_nothing_fits() {
        let hosts = vec![host("a1", "a", 128)];
        let on = PodOnHost::default();
        let eu: BTreeMap<String, String> = [("region".to_string(), "eu".to_string())].into();
        assert_eq!(
            choose(&hosts, &need(64, &eu, None, &on))
                .unwrap_err()
                .to_string(),
            "no host has region=eu"
        );
        let zone_a: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert_eq!(
            choose(&hosts, &need(256, &zone_a, None, &on)).unwrap_err(),
            Unschedulable::NoFreeMemory {
                memory: 256 << 20,
                labels: zone_a.clone()
            }
        );
        assert_eq!(
            choose(&hosts, &need(256, &zone_a, None, &on))
                .unwrap_err()
                .to_string(),
            "no host has 256MiB free with zone=a"
        );
        let none = BTreeMap::new();
        assert_eq!(
            choose(&hosts, &need(256, &none, None, &on))
                .unwrap_err()
                .to_string(),
            "no host has 256MiB free"
        );
        assert_eq!(
            choose(&[], &need(1, &none, None, &on)).unwrap_err(),
            Unschedulable::NoHosts
        );
    }
}
