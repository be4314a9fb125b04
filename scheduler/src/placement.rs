//! Choosing a host for a replica. Pure logic, no I/O.
//!
//! Filter, then score:
//! - a host must have every label the component asks for, a free slot and
//!   room for the replica's memory (the sum of its limits);
//! - among those, prefer a host running no replica of the same pod (keep
//!   replicas apart), then the least-used value of the spread label (such
//!   as `zone`), then the host with the least memory left after placing
//!   (bin-packing, so large replicas still find room later).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use shoal_api::ByteSize;
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

/// Picks the index of the best host in `hosts` for `need`, or says why none fits.
///
/// Runs once per replica placed, over every candidate host: it allocates
/// nothing on the way to a choice; words are made only for a refusal.
pub fn choose(hosts: &[Candidate], need: &Need<'_>) -> Result<usize, String> {
    let labelled = |c: &Candidate| {
        need.labels
            .iter()
            .all(|(k, v)| c.labels.get(k) == Some(v))
    };
    let fits = |c: &Candidate| {
        c.used_slots < c.slots && c.memory.saturating_sub(c.used_memory) >= need.memory
    };
    // Replicas per value of the spread label, over every host.
    let mut spread_count: FxHashMap<&str, u32> = FxHashMap::default();
    if let Some(key) = need.spread {
        for c in hosts {
            if let Some(n) = need.pod_on_host.get(&c.id)
                && let Some(value) = c.labels.get(key)
            {
                *spread_count.entry(value.as_str()).or_default() += n;
            }
        }
    }
    let best = hosts
        .iter()
        .enumerate()
        .filter(|(_, c)| labelled(c) && fits(c))
        .min_by_key(|(_, c)| {
            let same_pod = if need.pod_on_host.is_empty() {
                0
            } else {
                need.pod_on_host.get(&c.id).copied().unwrap_or(0)
            };
            let spread = need.spread.map_or(0, |key| {
                c.labels.get(key).map_or(u32::MAX, |v| {
                    spread_count.get(v.as_str()).copied().unwrap_or(0)
                })
            });
            let left = c.memory - c.used_memory - need.memory;
            (same_pod, spread, left, &c.id)
        });
    if let Some((i, _)) = best {
        return Ok(i);
    }
    let with = describe_labels(need.labels);
    let mut labelled_hosts = hosts.iter().filter(|c| labelled(c)).peekable();
    if labelled_hosts.peek().is_none() {
        return Err(if hosts.is_empty() {
            "no host has joined the cluster".to_string()
        } else {
            format!(
                "no host has {with}",
                with = with.trim_start_matches("with ")
            )
        });
    }
    let size = ByteSize::bytes(need.memory);
    Err(if labelled_hosts.all(|c| c.used_slots >= c.slots) {
        format!("every host {with} is full (no free replica slot)")
    } else {
        format!("no host has {size} free {with}")
    }
    .replace("  ", " ")
    .trim_end()
    .to_string())
}

fn describe_labels(labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("with {}", pairs.join(","))
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
            choose(&hosts, &need(64, &eu, None, &on)).unwrap_err(),
            "no host has region=eu"
        );
        let zone_a: BTreeMap<String, String> = [("zone".to_string(), "a".to_string())].into();
        assert_eq!(
            choose(&hosts, &need(256, &zone_a, None, &on)).unwrap_err(),
            "no host has 256MiB free with zone=a"
        );
        let none = BTreeMap::new();
        assert_eq!(
            choose(&hosts, &need(256, &none, None, &on)).unwrap_err(),
            "no host has 256MiB free"
        );
        assert_eq!(
            choose(&[], &need(1, &none, None, &on)).unwrap_err(),
            "no host has joined the cluster"
        );
    }
}
