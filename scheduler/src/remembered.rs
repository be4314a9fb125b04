//! What the leader decides and must remember, kept in the control bucket
//! so that the next leader (or this one, restarted) continues exactly: the
//! autoscaler's counts and last decision, each rollout's progress and
//! deadline, the jobs that finished, and where each replica with volume
//! data keeps it.
//!
//! The leader writes after each reconcile pass and autoscaler round what
//! changed since its last write ([`Keeper::save`]); the other schedulers
//! follow the bucket ([`apply`]). Times are stored as wall-clock
//! milliseconds, so a deadline is absolute and survives a restart.
//!
//! Keys: `scale.<ns>.<app>.<pod>`, `rollout.<ns>.<app>.<pod>`,
//! `job.<ns>.<app>.<pod>.<index>`, `home.<ns>.<app>.<pod>.<index>` (names
//! hold no dots).

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use shoal_api::Name;
use shoal_api::wire::{HostId, ReplicaId, now_ms};

use crate::Shared;
use crate::state::{JobDone, Rollout, ScaleState, State};

/// One remembered decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Record {
    /// A pod's autoscaled replica count.
    Scale {
        desired: u32,
        last_active_ms: u64,
        #[serde(default)]
        low_since_ms: Option<u64>,
        #[serde(default)]
        last_decision: Option<String>,
    },
    /// A pod's rollout in progress.
    Rollout {
        generation: u64,
        done: u32,
        last_progress_ms: u64,
        rolled_back: bool,
        /// A canary's step (from 0), while one runs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary_step: Option<u32>,
        /// When that step began, once its replica was ready.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary_since_ms: Option<u64>,
    },
    /// A job replica that completed.
    JobDone { revision: u64, host: HostId },
    /// Where a replica with persistent volume data was last started.
    DataHome { host: HostId },
}

/// Converts between this process's monotonic clock and wall-clock
/// milliseconds, from one fixed reading so that the same instant always
/// gives the same figure (and an unchanged record is not written again).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    instant: Instant,
    ms: u64,
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            instant: Instant::now(),
            ms: now_ms(),
        }
    }
}

impl Clock {
    fn ms(&self, at: Instant) -> u64 {
        if at >= self.instant {
            self.ms + crate::state::millis(at - self.instant)
        } else {
            self.ms
                .saturating_sub(crate::state::millis(self.instant - at))
        }
    }
}

/// The instant of wall-clock time `ms`, on this process's clock.
fn instant_of(ms: u64) -> Instant {
    let now = Instant::now();
    let ago = std::time::Duration::from_millis(now_ms().saturating_sub(ms));
    now.checked_sub(ago).unwrap_or(now)
}

fn split(rest: &str) -> Option<(String, Name)> {
    let mut parts = rest.split('.');
    let (ns, app, pod) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some((format!("{ns}.{app}"), Name::new(pod.to_string()).ok()?))
}

fn replica(rest: &str) -> Option<ReplicaId> {
    let mut parts = rest.split('.');
    let id = ReplicaId {
        namespace: Name::new(parts.next()?.to_string()).ok()?,
        app: Name::new(parts.next()?.to_string()).ok()?,
        pod: Name::new(parts.next()?.to_string()).ok()?,
        index: parts.next()?.parse().ok()?,
    };
    parts.next().is_none().then_some(id)
}

/// Every record `state` holds, by key, serialized.
fn snapshot(state: &State, clock: &Clock) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut put = |key: String, record: Record| {
        if let Ok(bytes) = serde_json::to_vec(&record) {
            out.insert(key, bytes);
        }
    };
    for ((app, pod), s) in &state.scale {
        put(
            format!("scale.{app}.{pod}"),
            Record::Scale {
                desired: s.desired,
                last_active_ms: clock.ms(s.last_active),
                low_since_ms: s.low_since.map(|t| clock.ms(t)),
                last_decision: s.last_decision.clone(),
            },
        );
    }
    for ((app, pod), r) in &state.rollouts {
        put(
            format!("rollout.{app}.{pod}"),
            Record::Rollout {
                generation: r.generation,
                done: r.done,
                last_progress_ms: clock.ms(r.last_progress),
                rolled_back: r.rolled_back,
                canary_step: r.canary.as_ref().map(|c| c.step),
                canary_since_ms: r.canary.as_ref().and_then(|c| c.since).map(|t| clock.ms(t)),
            },
        );
    }
    for (id, done) in &state.jobs_done {
        put(
            format!("job.{}.{}.{}.{}", id.namespace, id.app, id.pod, id.index),
            Record::JobDone {
                revision: done.revision,
                host: done.host.clone(),
            },
        );
    }
    for (id, host) in &state.data_homes {
        put(
            format!("home.{}.{}.{}.{}", id.namespace, id.app, id.pod, id.index),
            Record::DataHome { host: host.clone() },
        );
    }
    out
}

/// Applies one control-bucket entry (a put, or `None` for a delete) to the
/// memory of a scheduler that does not lead.
pub fn apply(state: &mut State, key: &str, value: Option<&[u8]>) {
    let Some((kind, rest)) = key.split_once('.') else {
        return;
    };
    let record = match value.map(serde_json::from_slice::<Record>) {
        Some(Ok(record)) => Some(record),
        Some(Err(e)) => {
            tracing::warn!(key, error = %e, "skipping an unreadable control record");
            return;
        }
        None => None,
    };
    match (kind, record) {
        ("scale", record) => {
            let Some(slot) = split(rest) else { return };
            match record {
                Some(Record::Scale {
                    desired,
                    last_active_ms,
                    low_since_ms,
                    last_decision,
                }) => {
                    let mut s = ScaleState::new(desired, instant_of(last_active_ms));
                    s.low_since = low_since_ms.map(instant_of);
                    s.last_decision = last_decision;
                    state.scale.insert(slot, s);
                }
                _ => {
                    state.scale.remove(&slot);
                }
            }
        }
        ("rollout", record) => {
            let Some(slot) = split(rest) else { return };
            match record {
                Some(Record::Rollout {
                    generation,
                    done,
                    last_progress_ms,
                    rolled_back,
                    canary_step,
                    canary_since_ms,
                }) => {
                    state.rollouts.insert(
                        slot,
                        Rollout {
                            generation,
                            done,
                            last_progress: instant_of(last_progress_ms),
                            rolled_back,
                            canary: canary_step.map(|step| crate::canary::CanaryProgress {
                                step,
                                since: canary_since_ms.map(instant_of),
                                ..Default::default()
                            }),
                        },
                    );
                }
                _ => {
                    state.rollouts.remove(&slot);
                }
            }
        }
        ("job", record) => {
            let Some(id) = replica(rest) else { return };
            match record {
                Some(Record::JobDone { revision, host }) => {
                    state.jobs_done.insert(id, JobDone { revision, host });
                }
                _ => {
                    state.jobs_done.remove(&id);
                }
            }
        }
        ("home", record) => {
            let Some(id) = replica(rest) else { return };
            match record {
                Some(Record::DataHome { host }) => {
                    state.data_homes.insert(id, host);
                }
                _ => {
                    state.data_homes.remove(&id);
                }
            }
        }
        _ => {}
    }
}

/// The leader's writer of the control bucket.
#[derive(Default)]
pub struct Keeper {
    clock: Clock,
    /// What the bucket holds, as this leader last wrote it.
    written: tokio::sync::Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Keeper {
    /// Forgets what was written: after leading again, everything is
    /// written anew (another leader may have written meanwhile).
    pub async fn reset(&self) {
        self.written.lock().await.clear();
    }

    /// Writes what changed since the last save. Only the leader calls it.
    pub async fn save(&self, shared: &Shared) {
        let mut written = self.written.lock().await;
        let now = snapshot(&shared.state(), &self.clock);
        crate::store::sync_bucket(&shared.store.control, &mut written, &now, "a decision").await;
    }
}

/// Loads every record the control bucket holds into `state`.
pub async fn load(
    bucket: &async_nats::jetstream::kv::Store,
    state: &mut State,
) -> Result<(), crate::SchedulerError> {
    for (key, value) in crate::store::kv_entries(bucket, "control records").await? {
        if key != shoal_api::subjects::LEADER_KEY {
            apply(state, &key, Some(&value));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn id(index: u32) -> ReplicaId {
        ReplicaId {
            namespace: Name::new("default").unwrap(),
            app: Name::new("web").unwrap(),
            pod: Name::new("api").unwrap(),
            index,
        }
    }

    #[test]
    fn what_one_leader_writes_another_reads_back() {
        let clock = Clock::default();
        let now = Instant::now();
        let pod = Name::new("api").unwrap();
        let mut leader = State::default();
        let mut scale = ScaleState::new(4, now);
        scale.last_decision = Some("api scaled from 1 to 4".into());
        leader
            .scale
            .insert(("default.web".into(), pod.clone()), scale);
        leader.rollouts.insert(
            ("default.web".into(), pod.clone()),
            Rollout {
                generation: 3,
                done: 1,
                last_progress: now - Duration::from_secs(20),
                rolled_back: false,
                canary: Some(crate::canary::CanaryProgress {
                    step: 1,
                    since: Some(now - Duration::from_secs(5)),
                    ..Default::default()
                }),
            },
        );
        let h1 = HostId::new("h1").unwrap();
        leader.jobs_done.insert(
            id(0),
            JobDone {
                revision: 3,
                host: h1.clone(),
            },
        );
        leader.data_homes.insert(id(1), h1.clone());

        let mut standby = State::default();
        for (key, bytes) in snapshot(&leader, &clock) {
            apply(&mut standby, &key, Some(&bytes));
        }
        let slot = ("default.web".to_string(), pod);
        assert_eq!(standby.scale[&slot].desired, 4);
        assert_eq!(
            standby.scale[&slot].last_decision.as_deref(),
            Some("api scaled from 1 to 4")
        );
        let r = &standby.rollouts[&slot];
        assert_eq!((r.generation, r.done, r.rolled_back), (3, 1, false));
        let canary = r.canary.as_ref().expect("the canary's progress");
        assert_eq!(canary.step, 1);
        let step_age = now.duration_since(canary.since.expect("the step's start"));
        assert!(step_age.abs_diff(Duration::from_secs(5)) < Duration::from_millis(50));
        // The deadline is absolute: the progress is as old as it was.
        let age = now.duration_since(r.last_progress);
        assert!(
            age.abs_diff(Duration::from_secs(20)) < Duration::from_millis(50),
            "{age:?}"
        );
        assert_eq!(standby.jobs_done[&id(0)].revision, 3);
        assert_eq!(standby.data_homes[&id(1)], h1);

        // A deleted record is forgotten.
        apply(&mut standby, "job.default.web.api.0", None);
        assert!(standby.jobs_done.is_empty());
        // Keys that are not Shoal's are ignored.
        apply(&mut standby, "job.too.many.parts.here.0", Some(b"{}"));
        apply(&mut standby, "nonsense", Some(b"{}"));
        assert_eq!(standby.data_homes.len(), 1);
    }
}
