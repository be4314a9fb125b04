//! Messages between hosts and the scheduler over NATS.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::{ComponentSpec, Digest, Name, SealedSecret, VolumeSpec};

/// Milliseconds since the Unix epoch: the clock of every timestamp on the
/// wire (`started_at_ms`, events' `at_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// How often hosts publish a [`Heartbeat`].
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// A host also beats at once after a change, but no sooner than this after
/// its previous beat: under a burst of starts, changes within the gap go
/// out together in one beat instead of one each, which bounds what every
/// scheduler parses to a few beats per host per second.
pub const HEARTBEAT_MIN_GAP: std::time::Duration = std::time::Duration::from_millis(100);

/// A host's identity: what it is called in subjects, events and `get hosts`.
///
/// 1 to 64 characters of ASCII letters, digits, `-` and `_`: no dots,
/// spaces or wildcards, so it is always one NATS subject token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct HostId(String);

impl HostId {
    /// Checks `value` and wraps it.
    pub fn new(value: impl Into<String>) -> Result<Self, String> {
        let value = value.into();
        let ok = !value.is_empty()
            && value.len() <= 64
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(HostId(value))
        } else {
            Err(format!(
                "invalid host id {value:?}: use 1 to 64 ASCII letters, digits, '-' and '_'"
            ))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HostId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// Names one replica of one pod: the pod's `index`-th copy.
///
/// Replicas are numbered like a StatefulSet's, so the scheduler's desired
/// set is `0..replicas` and reconciling is a set difference: idempotent,
/// and the same after a restart.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
pub struct ReplicaId {
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
    /// The pod within the app.
    pub pod: Name,
    /// Which copy.
    pub index: u32,
}

impl ReplicaId {
    /// The index of a pod's canary replica: the one extra replica that
    /// runs a new revision during a canary rollout, shown as `pod-canary`.
    /// Far above any replica count ([`crate::MAX_REPLICAS`]).
    pub const CANARY: u32 = u32::MAX;

    /// The index of a pod's shadow replica: the one extra replica that
    /// runs a new revision during a shadow rollout, shown as `pod-shadow`.
    pub const SHADOW: u32 = u32::MAX - 1;

    /// Whether this is a pod's canary replica.
    pub fn is_canary(&self) -> bool {
        self.index == ReplicaId::CANARY
    }

    /// Whether this is a pod's shadow replica.
    pub fn is_shadow(&self) -> bool {
        self.index == ReplicaId::SHADOW
    }

    /// Whether this is a canary or a shadow, not one of the pod's
    /// numbered replicas.
    pub fn is_extra(&self) -> bool {
        self.is_canary() || self.is_shadow()
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_canary() {
            return write!(f, "{}/{}/{}-canary", self.namespace, self.app, self.pod);
        }
        if self.is_shadow() {
            return write!(f, "{}/{}/{}-shadow", self.namespace, self.app, self.pod);
        }
        write!(
            f,
            "{}/{}/{}-{}",
            self.namespace, self.app, self.pod, self.index
        )
    }
}

/// What a host can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Capacity {
    /// Memory for replicas, in bytes: the sum of their memory limits may not exceed it.
    pub memory: u64,
    /// How many replicas it runs at most.
    pub slots: u32,
}

/// The state of one replica on a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ReplicaState {
    /// Fetching and loading its components.
    Starting,
    /// Serving (taking work only while also ready).
    Running,
    /// Stopped once; starts again after `retry_in_ms` under its restart
    /// policy.
    Restarting {
        /// Why it stopped.
        reason: String,
        /// The back-off before the next start.
        retry_in_ms: u64,
    },
    /// Stopped twice or more in a row soon after starting: backing off
    /// with growing intervals before each new start.
    CrashLoop {
        /// Why it stopped last.
        reason: String,
        /// The back-off before the next start.
        retry_in_ms: u64,
    },
    /// A job that finished and is not to run again.
    Completed,
    /// Stopped and, under its restart policy, not started again.
    Exited {
        /// Why it stopped.
        reason: String,
    },
    /// Could not start; the scheduler places it again.
    Failed {
        /// Why.
        reason: String,
    },
}

impl ReplicaState {
    /// The state's name, as `get pods` shows it.
    pub fn label(&self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Running => "running",
            ReplicaState::Restarting { .. } => "restarting",
            ReplicaState::CrashLoop { .. } => "crash_loop",
            ReplicaState::Completed => "completed",
            ReplicaState::Exited { .. } => "exited",
            ReplicaState::Failed { .. } => "failed",
        }
    }
}

/// One replica as its host reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Which replica.
    pub id: ReplicaId,
    /// The app revision it runs.
    pub revision: u64,
    /// The memory it reserves (the sum of its components' limits).
    pub memory: u64,
    /// How it is doing.
    #[serde(flatten)]
    pub state: ReplicaState,
    /// Running and passing its readiness checks: it takes work.
    #[serde(default)]
    pub ready: bool,
    /// Times its host restarted it.
    #[serde(default)]
    pub restarts: u32,
    /// Why it last stopped or failed a check, if it did.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Requests it had in flight on average since the previous heartbeat,
    /// in thousandths: what http autoscaling follows.
    #[serde(default)]
    pub load_milli: u32,
    /// What it has done since it started, for `shoal top`.
    #[serde(default)]
    pub stats: crate::top::ReplicaStats,
}

impl ReplicaStatus {
    /// Equal in everything but the load and work figures, which change
    /// every beat.
    pub fn same_apart_from_load(&self, other: &ReplicaStatus) -> bool {
        let ReplicaStatus {
            id,
            revision,
            memory,
            state,
            ready,
            restarts,
            last_error,
            load_milli: _,
            stats: _,
        } = self;
        *id == other.id
            && *revision == other.revision
            && *memory == other.memory
            && *state == other.state
            && *ready == other.ready
            && *restarts == other.restarts
            && *last_error == other.last_error
    }
}

/// Published by every host every heartbeat interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Who.
    pub host: HostId,
    /// Labels placement constraints match against.
    pub labels: BTreeMap<String, String>,
    /// What it can hold.
    pub capacity: Capacity,
    /// Where its HTTP ingress listens, if it has one.
    pub http: Option<String>,
    /// When this host process started (ms since the epoch): a new value
    /// means the host restarted and lost its replicas.
    pub started_at_ms: u64,
    /// Every replica it runs.
    pub replicas: Vec<ReplicaStatus>,
    /// Shutting down: place nothing here, and place its replicas elsewhere
    /// now. They keep serving until their replacements are up, then stop
    /// gracefully.
    #[serde(default)]
    pub draining: bool,
    /// The public key secrets for this host's replicas are sealed to
    /// ([`crate::SealingKey`]). Authentic because only this host may
    /// publish its heartbeat.
    #[serde(default)]
    pub seal_key: Option<String>,
    /// The newest scheduler lease epoch this host has seen: a scheduler
    /// that leads with an older one learns from it that it lost its lease.
    #[serde(default)]
    pub epoch: u64,
    /// This beat's number since the host process started (from 1).
    #[serde(default)]
    pub seq: u64,
    /// What `replicas` holds: every replica, a page of them, or what
    /// changed since the beat before ([`crate::beats`]).
    #[serde(default)]
    pub content: crate::beats::BeatContent,
    /// With changes: the copies that stopped since the beat before.
    #[serde(default)]
    pub stopped: Vec<crate::beats::CopyRef>,
    /// How many replicas a receiver holds of this host after this beat.
    #[serde(default)]
    pub total: u32,
    /// [`crate::beats::digest`] of what a receiver holds after this beat.
    #[serde(default)]
    pub digest: u64,
    /// What this host's ingress found copying requests to shadows: each
    /// shadow's counts since the host began copying for it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shadows: Vec<crate::resources::ShadowReport>,
}

/// An HTTP route: where requests go, and whether anything serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    /// The path prefix.
    pub prefix: String,
    /// The host name it is limited to, if any.
    #[serde(default)]
    pub host: Option<String>,
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
    /// The http component.
    pub component: Name,
    /// Whether a replica behind it is running and ready.
    pub ready: bool,
}

impl Heartbeat {
    /// The memory its replicas reserve.
    pub fn used_memory(&self) -> u64 {
        self.replicas.iter().map(|r| r.memory).sum()
    }
}

/// One route of the cluster's route table, which the leading scheduler
/// keeps in the routes bucket ([`crate::subjects::ROUTES_BUCKET`], one key
/// per component, [`crate::subjects::route_key`]) and every ingress
/// follows. Every route an app declares is there, served or not: a request
/// whose longest matching route has no ready replica anywhere gets 503 (or
/// wakes a component at zero), never a shorter route of another app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteEntry {
    /// The route; `ready` when a replica behind it is ready somewhere.
    pub route: HttpRoute,
    /// The hosts with a ready replica behind it.
    #[serde(default)]
    pub ready_on: Vec<HostId>,
    /// Scaled to zero: a request for it asks the scheduler for a replica
    /// ([`Activate`]).
    #[serde(default)]
    pub dormant: bool,
    /// During a canary whose replica is ready: the share of requests to
    /// send it. `ready_on` then lists the stable replicas' hosts only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryRoute>,
    /// During a shadow whose replica is ready: the share of requests to
    /// copy to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<CanaryRoute>,
}

/// The canary (or shadow) side of a route: its share and where its
/// replica is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryRoute {
    /// The generation the canary runs.
    pub generation: u64,
    /// The share of requests it takes.
    pub share: crate::Share,
    /// The hosts where the canary replica is ready.
    pub ready_on: Vec<HostId>,
}

/// An ingress asks the scheduler (by request/reply) for a replica of a
/// component scaled to zero, because a request for it arrived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activate {
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
    /// The http component.
    pub component: Name,
    /// The path asked for, for the event.
    pub path: String,
}

/// One component of a replica to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodComponent {
    /// Its name in the app.
    pub name: Name,
    /// Its bytes' sha256, to fetch from the component store.
    pub digest: Digest,
    /// Its spec.
    pub spec: ComponentSpec,
    /// The values of the secrets its spec lists that have been set, each
    /// sealed to the host that runs it.
    #[serde(default)]
    pub secrets: BTreeMap<Name, SealedSecret>,
}

/// Start one replica: every component of its pod, together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartReplica {
    /// Which replica.
    pub id: ReplicaId,
    /// The app revision.
    pub revision: u64,
    /// The pod's components.
    pub components: Vec<PodComponent>,
    /// The app's volumes that the pod's components mount.
    #[serde(default)]
    pub volumes: BTreeMap<Name, VolumeSpec>,
}

impl StartReplica {
    /// The memory the replica reserves: what its components may hold at
    /// their busiest, each `limits.memory` × `limits.concurrency`.
    pub fn memory(&self) -> u64 {
        self.components
            .iter()
            .fold(0, |sum, c| sum.saturating_add(c.spec.reserved_memory()))
    }
}

/// A host command with the lease epoch of the scheduler that sent it: a
/// fencing token. A host refuses a command from an epoch older than the
/// newest it has seen, so a leader that lost its lease (paused, cut off)
/// cannot undo what its successor decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FencedCommand {
    /// The sender's lease epoch.
    pub epoch: u64,
    /// What to do.
    pub command: HostCommand,
}

/// Published by the leading scheduler on
/// [`crate::subjects::LEADER_ANNOUNCEMENTS`] when it takes the lease and
/// while it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAnnouncement {
    /// The lease epoch.
    pub epoch: u64,
    /// The leading scheduler's id.
    pub scheduler: String,
}

/// A command from the scheduler to a host, sent as a NATS request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum HostCommand {
    /// Start a copy of a replica at a revision. Copies at other revisions
    /// keep running until stopped, so a rollout can start the new copy
    /// before it stops the old one.
    Start(StartReplica),
    /// Stop a replica, gracefully: it leaves load balancing and its
    /// queues, finishes the work it holds, then goes.
    Stop {
        /// Which.
        id: ReplicaId,
        /// Only the copy running this revision; every copy when `None`.
        #[serde(default)]
        revision: Option<u64>,
    },
    /// An app was deleted: remove its volumes on this host, but those kept.
    Forget {
        /// The app's namespace.
        namespace: Name,
        /// The app.
        app: Name,
        /// Volumes whose spec says `retain = true`.
        retain: Vec<Name>,
    },
}

/// A host's answer to a [`HostCommand`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CommandReply {
    /// Done (for a start: accepted; the replica reports `running` once loaded).
    Ok,
    /// Refused, with the reason.
    Failed {
        /// Why.
        reason: String,
    },
    /// Refused: the sender's lease epoch is older than one the host has
    /// seen, so the sender is no longer the leader.
    StaleEpoch {
        /// The command's epoch.
        epoch: u64,
        /// The newest epoch the host has seen.
        newest: u64,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_are_one_subject_token() {
        assert!(HostId::new("host-1_a").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(HostId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn commands_round_trip_as_json() {
        let id = ReplicaId {
            namespace: Name::new("default").unwrap(),
            app: Name::new("shop").unwrap(),
            pod: Name::new("web").unwrap(),
            index: 2,
        };
        assert_eq!(id.to_string(), "default/shop/web-2");
        let cmd = HostCommand::Stop { id, revision: None };
        let json = serde_json::to_string(&cmd).unwrap();
        assert_eq!(serde_json::from_str::<HostCommand>(&json).unwrap(), cmd);
        let failed = CommandReply::Failed {
            reason: "no".into(),
        };
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(json, r#"{"result":"failed","reason":"no"}"#);
    }
}
