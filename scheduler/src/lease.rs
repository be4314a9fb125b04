//! Many schedulers, one leader: a lease in JetStream KV.
//!
//! Every scheduler serves the API; only the one holding the lease
//! reconciles, autoscales and commands hosts. The lease is one key of the
//! control bucket, written only by compare-and-set on its revision, so two
//! schedulers can never both take it. A scheduler that sees the record
//! unchanged for [`LEASE_DURATION`] (on its own clock: clocks of different
//! machines are not compared) takes it over with the next epoch. The
//! leader renews it every [`LEASE_RETRY`] and stops acting when it could
//! not renew for [`LEASE_RENEW_DEADLINE`], which is shorter than the
//! lease: by the time anyone else may take over, it has stopped.
//!
//! The epoch is a fencing token: every host command carries it, and a host
//! refuses epochs older than the newest it has seen. A leader that was
//! paused past its lease and wakes up finds its lease gone (its renewal
//! loses the compare-and-set, or a host's heartbeat reports a newer epoch)
//! and steps down; until then its own clock already tells it not to act.
//!
//! Key types: [`Leadership`] (what this scheduler knows of the lease),
//! [`LeaseRecord`] (what the bucket holds).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use shoal_api::resources::SchedulerInfo;
use shoal_api::subjects::{LEADER_ANNOUNCEMENTS, LEADER_KEY};
use shoal_api::wire::{LeaderAnnouncement, now_ms};
use tokio::sync::watch;

use crate::SchedulerError;
use crate::store::unavailable;
use crate::tunables::{
    LEADER_ANNOUNCE_INTERVAL, LEADER_SETTLE, LEASE_DURATION, LEASE_RENEW_DEADLINE, LEASE_RETRY,
    SCHEDULER_PRESENCE_INTERVAL,
};

/// The leader lease as the control bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The id of the scheduler holding it.
    pub holder: String,
    /// Where that scheduler's API listens.
    pub api: String,
    /// Bumped by every takeover: the fencing token.
    pub epoch: u64,
    /// When it was last renewed, by the holder's clock (for people only:
    /// expiry is judged on each reader's own clock).
    pub renewed_at_ms: u64,
    /// The holder stopped and gave the lease up: take it at once.
    #[serde(default)]
    pub released: bool,
}

/// A running scheduler as the schedulers bucket holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Presence {
    id: String,
    api: String,
    started_at_ms: u64,
}

/// The lease while this scheduler holds it.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    /// The record's revision: the next renewal is a CAS against it.
    revision: u64,
    /// When the last successful renewal was sent (before, not after, the
    /// round trip: the lease is counted from the earliest moment).
    renewed: Instant,
    /// A new leader acts from here on (see [`LEADER_SETTLE`]).
    acting_from: Instant,
}

/// The lease record last read, and since when this scheduler has seen
/// that very revision.
#[derive(Debug, Clone)]
struct Observed {
    record: Option<LeaseRecord>,
    revision: u64,
    since: Instant,
}

#[derive(Debug, Default)]
struct LeaseState {
    held: Option<Held>,
    observed: Option<Observed>,
}

/// What this scheduler knows of the lease, shared by its tasks.
pub struct Leadership {
    id: String,
    api: String,
    started_at_ms: u64,
    state: Mutex<LeaseState>,
}

impl Leadership {
    /// A scheduler that does not lead yet; `api` is where its API listens.
    pub fn new(api: String) -> Leadership {
        Leadership {
            id: new_id(),
            api,
            started_at_ms: now_ms(),
            state: Mutex::default(),
        }
    }

    /// This scheduler's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn state(&self) -> MutexGuard<'_, LeaseState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The epoch to act with, when this scheduler leads and may act now:
    /// it holds the lease, renewed it within [`LEASE_RENEW_DEADLINE`], and
    /// its settling time is over. Read before every decision and command.
    pub fn epoch(&self) -> Option<u64> {
        let now = Instant::now();
        self.state().held.and_then(|h| {
            (now.duration_since(h.renewed) < LEASE_RENEW_DEADLINE && now >= h.acting_from)
                .then_some(h.epoch)
        })
    }

    /// The newest epoch this scheduler knows of: its own while it holds
    /// the lease, else the leader's. Commands that any scheduler may send
    /// on a user's behalf (after a delete) carry it.
    pub fn known_epoch(&self) -> u64 {
        let state = self.state();
        match state.held {
            Some(h) => h.epoch,
            None => state
                .observed
                .as_ref()
                .and_then(|o| o.record.as_ref())
                .map_or(0, |r| r.epoch),
        }
    }

    /// Whether this scheduler holds the lease (even if it is settling or
    /// late renewing).
    pub fn holds(&self) -> bool {
        self.state().held.is_some()
    }

    /// A host or the bucket showed an epoch newer than ours: someone else
    /// leads. Steps down.
    pub fn saw_epoch(&self, epoch: u64) {
        let mut state = self.state();
        if let Some(h) = state.held
            && epoch > h.epoch
        {
            tracing::warn!(
                epoch = h.epoch,
                newer = epoch,
                "another scheduler leads with a newer epoch: stepping down"
            );
            state.held = None;
            state.observed = None;
        }
    }

    /// Every scheduler that said it is there lately, the leader marked.
    pub async fn schedulers(
        &self,
        bucket: &kv::Store,
    ) -> Result<Vec<SchedulerInfo>, SchedulerError> {
        use futures::StreamExt;
        let leader = self
            .state()
            .observed
            .as_ref()
            .and_then(|o| o.record.clone());
        let mut keys = bucket
            .keys()
            .await
            .map_err(|e| unavailable("listing schedulers", e))?;
        let mut out = Vec::new();
        let now = now_ms();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| unavailable("listing schedulers", e))?;
            let Some(entry) = bucket
                .entry(key)
                .await
                .map_err(|e| unavailable("reading a scheduler", e))?
            else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(p) = serde_json::from_slice::<Presence>(&entry.value) else {
                continue;
            };
            let seen_ms =
                u64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
            let leading = leader.as_ref().filter(|l| l.holder == p.id && !l.released);
            out.push(SchedulerInfo {
                leader: leading.is_some(),
                epoch: leading.map(|l| l.epoch),
                last_seen_ms: now.saturating_sub(seen_ms),
                id: p.id,
                api: p.api,
                started_at_ms: p.started_at_ms,
            });
        }
        out.sort_by(|a, b| (!a.leader, &a.id).cmp(&(!b.leader, &b.id)));
        Ok(out)
    }

    /// One look at the lease: renew it when held, else take it when it is
    /// free, released or lapsed. Returns whether this scheduler just began
    /// to lead.
    async fn contend(&self, control: &kv::Store) -> bool {
        let now = Instant::now();
        let held = self.state().held;
        if let Some(h) = held {
            let record = self.record(h.epoch, false);
            match control.update(LEADER_KEY, record, h.revision).await {
                Ok(revision) => {
                    if let Some(held) = self.state().held.as_mut() {
                        held.revision = revision;
                        held.renewed = now;
                    }
                }
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    tracing::warn!(
                        epoch = h.epoch,
                        "the lease was taken over while this scheduler could not renew it: stepping down"
                    );
                    self.state().held = None;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew the leader lease");
                }
            }
            return false;
        }
        let entry = match control.entry(LEADER_KEY).await {
            Ok(entry) => entry,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the leader lease");
                return false;
            }
        };
        let (record, revision) = match &entry {
            Some(e) if e.operation == kv::Operation::Put => (
                serde_json::from_slice::<LeaseRecord>(&e.value).ok(),
                e.revision,
            ),
            Some(e) => (None, e.revision),
            None => (None, 0),
        };
        let free = {
            let mut state = self.state();
            let fresh = state
                .observed
                .as_ref()
                .is_none_or(|o| o.revision != revision);
            if fresh {
                state.observed = Some(Observed {
                    record: record.clone(),
                    revision,
                    since: now,
                });
            }
            let lapsed = state
                .observed
                .as_ref()
                .is_some_and(|o| now.duration_since(o.since) >= LEASE_DURATION);
            record.as_ref().is_none_or(|r| r.released) || lapsed
        };
        if !free {
            return false;
        }
        let epoch = record.as_ref().map_or(0, |r| r.epoch) + 1;
        let taken = if revision == 0 {
            control
                .create(LEADER_KEY, self.record(epoch, false))
                .await
                .map_err(|e| e.to_string())
        } else {
            control
                .update(LEADER_KEY, self.record(epoch, false), revision)
                .await
                .map_err(|e| e.to_string())
        };
        match taken {
            Ok(revision) => {
                let mut state = self.state();
                state.held = Some(Held {
                    epoch,
                    revision,
                    renewed: now,
                    // The first leader a cluster ever has follows no one:
                    // no command of an earlier leader can be on its way.
                    acting_from: if record.is_none() {
                        now
                    } else {
                        now + LEADER_SETTLE
                    },
                });
                state.observed = Some(Observed {
                    record: Some(LeaseRecord {
                        holder: self.id.clone(),
                        api: self.api.clone(),
                        epoch,
                        renewed_at_ms: now_ms(),
                        released: false,
                    }),
                    revision,
                    since: now,
                });
                tracing::info!(scheduler = self.id, epoch, "this scheduler leads now");
                true
            }
            // Another scheduler was quicker: it leads.
            Err(why) => {
                tracing::debug!(error = why, "did not take the lease");
                false
            }
        }
    }

    fn record(&self, epoch: u64, released: bool) -> bytes::Bytes {
        let record = LeaseRecord {
            holder: self.id.clone(),
            api: self.api.clone(),
            epoch,
            renewed_at_ms: now_ms(),
            released,
        };
        serde_json::to_vec(&record).unwrap_or_default().into()
    }

    /// Gives the lease up, so another scheduler takes over at once.
    async fn release(&self, control: &kv::Store) {
        let held = self.state().held.take();
        if let Some(h) = held {
            match control
                .update(LEADER_KEY, self.record(h.epoch, true), h.revision)
                .await
            {
                Ok(_) => tracing::info!(epoch = h.epoch, "gave the leader lease up"),
                Err(e) => tracing::warn!(error = %e, "could not give the leader lease up"),
            }
        }
    }
}

/// A fresh scheduler id: `scheduler-` and 8 random hex digits.
fn new_id() -> String {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 4];
    let _ = SystemRandom::new().fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("scheduler-{hex}")
}

/// Contends for the lease, announces the epoch while leading and says
/// this scheduler is there, until `stop`; then gives the lease up.
pub async fn run(
    leadership: Arc<Leadership>,
    control: kv::Store,
    presence: kv::Store,
    nats: async_nats::Client,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_announced: Option<Instant> = None;
    let mut last_present: Option<Instant> = None;
    let me = serde_json::to_vec(&Presence {
        id: leadership.id.clone(),
        api: leadership.api.clone(),
        started_at_ms: leadership.started_at_ms,
    })
    .unwrap_or_default();
    loop {
        if leadership.contend(&control).await {
            last_announced = None;
        }
        let now = Instant::now();
        let held = leadership.state().held.map(|h| h.epoch);
        if let Some(epoch) = held
            && last_announced.is_none_or(|t| now.duration_since(t) >= LEADER_ANNOUNCE_INTERVAL)
        {
            let announcement = LeaderAnnouncement {
                epoch,
                scheduler: leadership.id.clone(),
            };
            if let Ok(payload) = serde_json::to_vec(&announcement) {
                let _ = nats.publish(LEADER_ANNOUNCEMENTS, payload.into()).await;
                last_announced = Some(now);
            }
        }
        if last_present.is_none_or(|t| now.duration_since(t) >= SCHEDULER_PRESENCE_INTERVAL) {
            match presence.put(&leadership.id, me.clone().into()).await {
                Ok(_) => last_present = Some(now),
                Err(e) => tracing::debug!(error = %e, "cannot say this scheduler is there"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LEASE_RETRY) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    leadership.release(&control).await;
    let _ = presence.purge(&leadership.id).await;
}
