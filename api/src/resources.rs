//! What the scheduler's HTTP API takes and returns.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::access::{Binding, Principal, PrincipalKind, Resource, Verb};
use crate::token::TokenId;
use crate::wire::{Capacity, HostId, ReplicaId, ReplicaState};
use crate::{AppSpec, ByteSize, ComponentKind, Digest, Name};

/// `POST /v1/apps`: create or update an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyRequest {
    /// The file the spec came from, for error messages.
    pub file: String,
    /// The spec's TOML text.
    pub spec: String,
    /// The sha256 of each component's bytes, uploaded beforehand with
    /// `PUT /v1/components/{digest}`.
    pub digests: BTreeMap<Name, Digest>,
    /// Only say what would change.
    #[serde(default)]
    pub dry_run: bool,
    /// Apply only if the app is at this revision now (0: only if it does
    /// not exist), else answer 409. Without it, the revision the scheduler
    /// read when the call began is the one expected.
    #[serde(default)]
    #[schema(maximum = 9_007_199_254_740_991_u64)]
    pub if_revision: Option<u64>,
}

/// What an apply did, or would do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Plan {
    /// Replicas to create.
    pub create: Vec<String>,
    /// Replicas to replace with the new revision.
    pub change: Vec<String>,
    /// Replicas to stop.
    pub stop: Vec<String>,
}

/// The answer to an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApplyResponse {
    /// `namespace/name`.
    pub app: String,
    /// The revision stored (for a dry run: the current one, 0 if none).
    pub revision: u64,
    /// True when nothing was stored.
    pub dry_run: bool,
    /// True when the spec and components are the same as the stored revision.
    pub unchanged: bool,
    /// What changes.
    pub plan: Plan,
}

/// One component of an app, in lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ComponentSummary {
    /// Its name.
    pub name: Name,
    /// Its kind.
    pub kind: ComponentKind,
    /// Its pod.
    pub pod: Name,
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas running.
    pub running: u32,
    /// The autoscaler's last decision, with the numbers it used.
    #[serde(default)]
    pub last_scale: Option<String>,
}

/// An app, in lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppSummary {
    /// Its namespace.
    pub namespace: Name,
    /// Its name.
    pub name: Name,
    /// The stored revision.
    pub revision: u64,
    /// Its components.
    pub components: Vec<ComponentSummary>,
    /// Whether its replicas run.
    pub status: AppStatus,
}

/// Whether an app's replicas run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    /// Every replica runs.
    Running,
    /// Some replicas run, not all.
    Degraded,
    /// No replica runs yet.
    Pending,
}

/// Whether a host takes replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HostState {
    /// Heartbeating, and takes replicas.
    Ready,
    /// Shutting down: its replicas move elsewhere.
    Draining,
    /// Silent for longer than the host timeout.
    Lost,
}

/// Where a pod's rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Every copy runs the new template and is ready.
    Complete,
    /// Old copies remain, or new ones are not ready yet.
    Progressing,
}

/// What an [`Event`] tells of, as one word (snake_case in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EventReason {
    /// An app was applied (created or changed).
    Applied,
    /// A replica was placed on a host.
    Placed,
    /// A replica found no host.
    Pending,
    /// A copy was stopped.
    Stopped,
    /// A replica failed to start or run.
    Failed,
    /// A component was scaled, by hand or by its autoscaler.
    Scaled,
    /// The app was deleted.
    Deleted,
    /// A host running its replicas went silent.
    HostLost,
    /// A host restarted a replica.
    Restarted,
    /// A replica keeps failing and is restarted with back-off.
    CrashLoop,
    /// A rollout began.
    RolloutStarted,
    /// A rollout finished.
    RolloutComplete,
    /// A rollout was rolled back.
    RolledBack,
    /// A rollout could not be rolled back.
    RollbackFailed,
    /// A canary passed a step and takes the next share.
    CanaryAdvanced,
    /// A canary passed its last step and rolls out to every replica.
    CanaryPromoted,
    /// A canary failed its analysis and is rolled back.
    CanaryFailed,
    /// A shadow stopped copying requests: its report is final.
    ShadowFinished,
    /// The namespace's quota held a change back.
    QuotaReached,
    /// A volume's data stayed on a host the replica left.
    VolumeLeftBehind,
    /// A replica passed its readiness check and takes work again.
    Ready,
    /// A replica failed its readiness check and takes no work for now.
    Unready,
    /// A reason this version does not know (written by a newer one).
    #[serde(other)]
    Other,
}

impl EventReason {
    /// Whether the event asks for attention (`Warning` in `shoal events`).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventReason::Pending
                | EventReason::Failed
                | EventReason::HostLost
                | EventReason::CrashLoop
                | EventReason::RolledBack
                | EventReason::RollbackFailed
                | EventReason::CanaryFailed
                | EventReason::QuotaReached
        )
    }
}

/// Why no host can take a replica: what a pending replica waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Unschedulable {
    /// No host has joined the cluster.
    NoHosts,
    /// No host has the labels the replica asks for.
    NoHostWithLabels {
        /// The labels asked for.
        labels: BTreeMap<String, String>,
    },
    /// Every host with the labels has all its replica slots taken.
    NoFreeSlot {
        /// The labels asked for (none: any host).
        labels: BTreeMap<String, String>,
    },
    /// No host with the labels has the memory free.
    NoFreeMemory {
        /// The memory the replica reserves, in bytes.
        memory: u64,
        /// The labels asked for (none: any host).
        labels: BTreeMap<String, String>,
    },
}

impl std::fmt::Display for Unschedulable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pairs = |labels: &BTreeMap<String, String>| -> String {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let with = |labels: &BTreeMap<String, String>| -> String {
            if labels.is_empty() {
                String::new()
            } else {
                format!(" with {}", pairs(labels))
            }
        };
        match self {
            Unschedulable::NoHosts => f.write_str("no host has joined the cluster"),
            Unschedulable::NoHostWithLabels { labels } => {
                write!(f, "no host has {}", pairs(labels))
            }
            Unschedulable::NoFreeSlot { labels } => {
                write!(
                    f,
                    "every host{} is full (no free replica slot)",
                    with(labels)
                )
            }
            Unschedulable::NoFreeMemory { memory, labels } => write!(
                f,
                "no host has {} free{}",
                crate::ByteSize::bytes(*memory),
                with(labels)
            ),
        }
    }
}

/// Each state's word: the same in JSON, tables and messages.
macro_rules! words {
    ($($t:ty { $($variant:ident => $word:literal),* $(,)? })*) => {$(
        impl $t {
            /// The state's word, as JSON and `get` show it.
            pub fn word(self) -> &'static str {
                match self {
                    $(<$t>::$variant => $word,)*
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.pad(self.word())
            }
        }
    )*};
}

words! {
    AppStatus { Running => "running", Degraded => "degraded", Pending => "pending" }
    HostState { Ready => "ready", Draining => "draining", Lost => "lost" }
    RolloutState { Complete => "complete", Progressing => "progressing" }
    TokenState { Active => "active", Expired => "expired", Revoked => "revoked" }
    Outcome { Allowed => "allowed", Denied => "denied", Failed => "failed" }
    EventReason {
        Applied => "applied",
        Placed => "placed",
        Pending => "pending",
        Stopped => "stopped",
        Failed => "failed",
        Scaled => "scaled",
        Deleted => "deleted",
        HostLost => "host_lost",
        Restarted => "restarted",
        CrashLoop => "crash_loop",
        RolloutStarted => "rollout_started",
        RolloutComplete => "rollout_complete",
        RolledBack => "rolled_back",
        RollbackFailed => "rollback_failed",
        CanaryAdvanced => "canary_advanced",
        CanaryPromoted => "canary_promoted",
        CanaryFailed => "canary_failed",
        ShadowFinished => "shadow_finished",
        QuotaReached => "quota_reached",
        VolumeLeftBehind => "volume_left_behind",
        Ready => "ready",
        Unready => "unready",
        Other => "other",
    }
}

/// One replica, in lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PodInfo {
    /// Which replica.
    pub id: ReplicaId,
    /// The components it runs.
    pub components: Vec<Name>,
    /// Where it runs; `None` while pending.
    pub host: Option<HostId>,
    /// The revision it runs.
    pub revision: u64,
    /// How it is doing; `pending` has the reason.
    pub state: PodState,
    /// Running and passing its readiness checks.
    #[serde(default)]
    pub ready: bool,
    /// Times its host restarted it.
    #[serde(default)]
    pub restarts: u32,
    /// Why it last stopped or failed a check.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A replica's state as the API shows it.
///
/// Its schema is written in `schema.rs`: utoipa cannot say "one tagged
/// variant, or the host's state as it is".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PodState {
    /// Not placed.
    Pending {
        /// Why not.
        reason: String,
    },
    /// As its host reports it.
    #[serde(untagged)]
    Host(ReplicaState),
}

/// A host, in lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HostInfo {
    /// Its id.
    pub id: HostId,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// What it can hold.
    pub capacity: Capacity,
    /// Memory its replicas reserve.
    pub used_memory: u64,
    /// Replicas it runs.
    pub replicas: u32,
    /// Its HTTP ingress.
    pub http: Option<String>,
    /// Whether it takes replicas.
    pub state: HostState,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
}

/// A running scheduler, in `shoal get schedulers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SchedulerInfo {
    /// Its id, made when it starts.
    pub id: String,
    /// Where its API listens.
    pub api: String,
    /// When it started, in ms since the epoch.
    pub started_at_ms: u64,
    /// Whether it holds the leader lease, and so acts.
    pub leader: bool,
    /// The lease epoch it leads with, when it leads.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// Milliseconds since it last said it is there.
    pub last_seen_ms: u64,
}

/// Something the scheduler did or could not do, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Event {
    /// When, in ms since the epoch.
    pub at_ms: u64,
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
    /// What happened.
    pub reason: EventReason,
    /// In words.
    pub message: String,
}

/// `GET /v1/apps/{namespace}/{name}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppDetail {
    /// The summary.
    pub summary: AppSummary,
    /// The stored spec.
    pub spec: AppSpec,
    /// The components' digests.
    pub digests: BTreeMap<Name, Digest>,
    /// Every replica, desired or running.
    pub pods: Vec<PodInfo>,
    /// Recent events, oldest first.
    pub events: Vec<Event>,
    /// The last lines of each replica that is restarting, crash-looping,
    /// exited or failed: what it said before it went.
    #[serde(default)]
    pub last_output: Vec<crate::logs::LogEntry>,
}

/// `POST /v1/apps/{namespace}/{name}/scale`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScaleRequest {
    /// The component.
    pub component: Name,
    /// Replicas wanted.
    // `MAX_REPLICAS`: the attribute takes a literal; a test holds the two together.
    #[schema(maximum = 10_000)]
    pub replicas: u32,
}

/// `POST /v1/apps/{namespace}/{name}/invoke/{component}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvokeRequest {
    /// The payload: any bytes, base64 in JSON.
    #[serde(with = "crate::base64_serde")]
    #[schema(value_type = String, format = Byte)]
    pub data: Vec<u8>,
    /// Headers to send.
    #[serde(default)]
    #[schema(schema_with = crate::schema::header_pairs)]
    pub headers: Vec<(String, String)>,
    /// Record the host calls the invocation makes and return them
    /// (`shoal invoke --trace`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub trace: bool,
}

/// The reply to an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InvokeResponse {
    /// The reply payload: any bytes, base64 in JSON.
    #[serde(with = "crate::base64_serde")]
    #[schema(value_type = String, format = Byte)]
    pub data: Vec<u8>,
    /// Reply headers.
    #[schema(schema_with = crate::schema::header_pairs)]
    pub headers: Vec<(String, String)>,
    /// The host calls the invocation made, when `trace` was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calls: Option<crate::trace::HostCalls>,
}

/// Every API error: what went wrong, in a class a client can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    /// `invalid`, `not_found`, `unavailable`, `unauthorized`, `forbidden`,
    /// `over_quota`, `conflict` or `internal`.
    pub kind: String,
    /// What is wrong and what to do.
    pub error: String,
}

/// `GET /v1/apps/{namespace}/{name}/rollout`: where each pod's rollout stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RolloutStatus {
    /// `namespace/name`.
    pub app: String,
    /// The stored revision the pods are rolling towards.
    pub revision: u64,
    /// One entry per pod.
    pub pods: Vec<PodRollout>,
    /// The revision whose canary this one promoted: waiting for that one
    /// goes on with this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotes: Option<u64>,
}

/// One pod's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PodRollout {
    /// The pod.
    pub pod: Name,
    /// The pod template's generation the replicas should run.
    pub generation: u64,
    /// Replicas wanted.
    pub desired: u32,
    /// Replicas running the wanted generation.
    pub updated: u32,
    /// Of those, replicas ready.
    pub ready: u32,
    /// Copies of older generations still running.
    pub old: u32,
    /// Whether the rollout is done.
    pub state: RolloutState,
    /// In words: what the rollout waits for.
    pub message: String,
    /// While it progresses: when it is rolled back unless a replica of
    /// the new generation gets ready first (ms since the epoch).
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// While a canary runs: its step, its share and the figures of both
    /// revisions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<CanaryStatus>,
    /// While a shadow runs: its share and what its copies showed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStatus>,
}

/// A canary in progress, for `rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CanaryStatus {
    /// The generation the canary runs; the stable replicas run
    /// `stable_generation`.
    pub generation: u64,
    /// The generation the other replicas keep running meanwhile.
    pub stable_generation: u64,
    /// The step it is at, from 1.
    pub step: u32,
    /// Steps in all.
    pub steps: u32,
    /// The share of requests it takes now.
    pub share: crate::Share,
    /// Whether its replica is ready (its share goes to the stable replicas
    /// until it is).
    pub ready: bool,
    /// When the step began (ms since the epoch).
    pub step_started_ms: u64,
    /// The canary replica's figures over this step.
    pub canary: Figures,
    /// The stable replicas' figures over the same time.
    pub stable: Figures,
}

/// A shadow in progress, for `rollout status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowStatus {
    /// The generation the shadow runs.
    pub generation: u64,
    /// The generation the pod's replicas keep running and answering with.
    pub stable_generation: u64,
    /// The share of requests copied to it.
    pub share: crate::Share,
    /// Whether its replica is ready (nothing is copied until it is).
    pub ready: bool,
    /// When copying ends or ended (ms since the epoch); `None` until its
    /// replica is first ready.
    pub ends_ms: Option<u64>,
    /// Copying is over: the rollout waits for `promote` or `abort`.
    pub finished: bool,
    /// What the copies showed, summed over every ingress.
    pub report: ShadowReport,
}

/// What copying requests to a shadow showed: how many answers were
/// compared and how many differed from the stable replicas', with a few
/// examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowReport {
    /// The app's namespace.
    pub namespace: Name,
    /// The app.
    pub app: Name,
    /// The component whose requests were copied.
    pub component: Name,
    /// The shadow's generation.
    pub generation: u64,
    /// Requests answered by both and compared.
    pub compared: u64,
    /// Of them, those whose status differed.
    pub status_differed: u64,
    /// Of them, those whose status was the same and body differed.
    pub body_differed: u64,
    /// Copies the shadow did not answer (it was stopping, or failed to
    /// run): not compared.
    pub unanswered: u64,
    /// The first few differences.
    #[serde(default)]
    pub examples: Vec<ShadowDifference>,
}

impl ShadowReport {
    /// Nothing compared yet, for `component` of `namespace/app` at
    /// `generation`.
    pub fn new(namespace: Name, app: Name, component: Name, generation: u64) -> Self {
        ShadowReport {
            namespace,
            app,
            component,
            generation,
            compared: 0,
            status_differed: 0,
            body_differed: 0,
            unanswered: 0,
            examples: Vec::new(),
        }
    }

    /// Adds `other`'s counts, and its examples while there is room for
    /// [`SHADOW_EXAMPLES`], each cut to [`SHADOW_EXAMPLE_BODY`] characters
    /// whatever the host that sent them wrote.
    pub fn add(&mut self, other: &ShadowReport) {
        self.compared = self.compared.saturating_add(other.compared);
        self.status_differed = self.status_differed.saturating_add(other.status_differed);
        self.body_differed = self.body_differed.saturating_add(other.body_differed);
        self.unanswered = self.unanswered.saturating_add(other.unanswered);
        let room = SHADOW_EXAMPLES.saturating_sub(self.examples.len());
        let cut = |s: &String| s.chars().take(SHADOW_EXAMPLE_BODY).collect::<String>();
        self.examples
            .extend(other.examples.iter().take(room).map(|d| ShadowDifference {
                request: cut(&d.request),
                stable_status: d.stable_status,
                shadow_status: d.shadow_status,
                stable_body: cut(&d.stable_body),
                shadow_body: cut(&d.shadow_body),
            }));
    }
}

impl std::fmt::Display for ShadowReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} answers compared: {} with another status, {} with another body",
            self.compared, self.status_differed, self.body_differed
        )?;
        if self.unanswered > 0 {
            write!(f, "; {} copies unanswered", self.unanswered)?;
        }
        Ok(())
    }
}

/// How many differences a [`ShadowReport`] keeps as examples.
pub const SHADOW_EXAMPLES: usize = 5;

/// How much of each body a [`ShadowDifference`] keeps.
pub const SHADOW_EXAMPLE_BODY: usize = 200;

/// One request whose answers differed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShadowDifference {
    /// The request: method and path.
    pub request: String,
    /// The stable replicas' status, which the caller got.
    pub stable_status: u16,
    /// The shadow's status.
    pub shadow_status: u16,
    /// The start of the stable answer's body (lossy UTF-8).
    pub stable_body: String,
    /// The start of the shadow's body.
    pub shadow_body: String,
}

/// What a set of replicas did over a while: for a canary's analysis.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Figures {
    /// Invocations (requests) that ended.
    pub requests: u64,
    /// Of them, those that failed: an error, a trap or an HTTP status of
    /// 500 or more.
    pub errors: u64,
    /// The 99th percentile duration (the bound of its bucket), in µs.
    pub p99_us: Option<u64>,
}

impl Figures {
    /// The share of requests that failed, from 0 to 1.
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        }
    }
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} of {} requests failed ({:.1}%)",
            self.errors,
            self.requests,
            self.error_rate() * 100.0
        )?;
        if let Some(p99) = self.p99_us {
            write!(
                f,
                ", p99 {}",
                crate::DurationSpec::new(
                    std::time::Duration::from_micros(p99).max(std::time::Duration::from_millis(1))
                )
            )?;
        }
        Ok(())
    }
}

/// One stored revision of an app, for `rollout history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RevisionInfo {
    /// The revision.
    pub revision: u64,
    /// When it was stored, in ms since the epoch.
    pub at_ms: u64,
    /// Why: the file applied, or the rollback that wrote it.
    pub cause: String,
    /// Each pod's template generation in that revision.
    pub generations: BTreeMap<Name, u64>,
    /// True for the revision in force.
    pub current: bool,
}

/// `POST /v1/apps/{namespace}/{name}/rollback`: store an earlier revision
/// again, which rolls the app back to it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RollbackRequest {
    /// The revision to go back to; the one before the current when `None`.
    #[serde(default)]
    #[schema(maximum = 9_007_199_254_740_991_u64)]
    pub to: Option<u64>,
}

#[cfg(test)]
mod state_words {
    use super::*;

    #[test]
    fn states_read_the_same_in_json_and_in_tables() {
        for (state, word) in [
            (AppStatus::Degraded, "degraded"),
            (AppStatus::Running, "running"),
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{word}\"")
            );
            assert_eq!(state.to_string(), word);
        }
        assert_eq!(
            serde_json::to_string(&HostState::Draining).unwrap(),
            "\"draining\""
        );
        assert_eq!(RolloutState::Progressing.to_string(), "progressing");
    }
}

#[cfg(test)]
mod payloads {
    use super::*;

    #[test]
    fn invocation_payloads_carry_any_bytes() {
        let binary = vec![0u8, 159, 146, 150, 255, b'\n'];
        let req = InvokeRequest {
            data: binary.clone(),
            headers: Vec::new(),
            trace: false,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(json, r#"{"data":"AJ+Slv8K","headers":[]}"#);
        let back: InvokeRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.data, binary);
        assert!(serde_json::from_str::<InvokeRequest>(r#"{"data":"not base64!"}"#).is_err());
    }
}

/// `GET /v1/auth/whoami`: who the token names, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WhoAmI {
    /// The principal.
    pub principal: Principal,
    /// The token's id (`None` when authentication is off).
    pub token: Option<TokenId>,
    /// When the token expires, in ms since the epoch.
    pub expires_ms: Option<u64>,
}

/// `GET /v1/auth/can-i?verb=V&resource=R&namespace=NS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CanI {
    /// Whether the API would allow it.
    pub allowed: bool,
    /// The rule that decided, in words.
    pub reason: String,
}

/// `POST /v1/auth/tokens`: make a token for a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateTokenRequest {
    /// The principal the token stands for.
    pub principal: Name,
    /// A person or a program.
    #[serde(default)]
    pub kind: PrincipalKind,
    /// The roles it holds, and where. The caller must hold every
    /// permission it grants.
    #[schema(min_items = 1)]
    pub bindings: Vec<Binding>,
    /// How long it lives, in seconds.
    #[schema(maximum = 9_007_199_254_740_991_u64)]
    pub ttl_seconds: u64,
}

/// The answer to a token request: the only time the secret is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The token as a client sends it (`shoal_<id>_<secret>`).
    pub token: String,
    /// What is kept about it.
    pub info: TokenInfo,
}

/// Whether a token still works.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenState {
    /// It authenticates.
    Active,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
}

/// A token, in lists: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenInfo {
    /// Its public id.
    pub id: TokenId,
    /// Who it names.
    pub principal: Principal,
    /// When it was made, in ms since the epoch.
    pub created_ms: u64,
    /// When it expires, in ms since the epoch.
    pub expires_ms: u64,
    /// Who made it.
    pub created_by: String,
    /// Whether it still works.
    pub state: TokenState,
}

/// Limits on what one namespace may use; `None` is no limit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Replicas, summed over every component (autoscaled ones count what
    /// they run now, and may not grow past the quota).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 4_294_967_295_u64)]
    pub replicas: Option<u32>,
    /// Memory reserved: each replica's `limits.memory` × `limits.concurrency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// Bytes of distinct components the namespace's apps use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component_bytes: Option<ByteSize>,
    /// Key-value buckets and work-queue streams, at their size limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ByteSize>,
    /// Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 4_294_967_295_u64)]
    pub secrets: Option<u32>,
}

/// What one namespace uses, in the quota's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// Replicas wanted.
    pub replicas: u32,
    /// Memory reserved.
    pub memory: ByteSize,
    /// Bytes of distinct components.
    pub component_bytes: ByteSize,
    /// Key-value and stream storage.
    pub storage: ByteSize,
    /// Secrets.
    pub secrets: u32,
}

/// A route a namespace owns: no other namespace may serve on it or
/// beneath it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteClaim {
    /// The host name (any when `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The path prefix (`/` for the whole host).
    pub prefix: String,
}

impl RouteClaim {
    /// Whether a route `path` on `host` falls within this claim.
    pub fn covers(&self, host: Option<&str>, path: &str) -> bool {
        let hosts_overlap = match (&self.host, host) {
            (Some(mine), Some(theirs)) => mine.eq_ignore_ascii_case(theirs),
            _ => true,
        };
        let prefix = self.prefix.trim_end_matches('/');
        let path = path.trim_end_matches('/');
        hosts_overlap
            && (prefix.is_empty() || path == prefix || path.starts_with(&format!("{prefix}/")))
    }
}

impl std::fmt::Display for RouteClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            Some(host) => write!(f, "{host}{}", self.prefix),
            None => write!(f, "{}", self.prefix),
        }
    }
}

/// How long a namespace's logs are kept; `None` takes the default (7 days,
/// 256 MiB: the oldest lines go first).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LogRetention {
    /// The oldest line kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<crate::DurationSpec>,
    /// The most bytes kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_bytes: Option<ByteSize>,
}

/// A namespace's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NamespaceSpec {
    /// Its limits.
    #[serde(default)]
    pub quota: Quota,
    /// How long its logs are kept.
    #[serde(default)]
    pub logs: LogRetention,
    /// Routes only it may serve.
    #[serde(default)]
    pub routes: Vec<RouteClaim>,
}

/// `PUT /v1/namespaces/{name}`: create or change a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceRequest {
    /// The settings.
    pub spec: NamespaceSpec,
    /// Fail if it exists already (`shoal create namespace`); otherwise
    /// replace its settings.
    #[serde(default)]
    pub create: bool,
}

/// A namespace, with its usage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NamespaceInfo {
    /// Its name.
    pub name: Name,
    /// When it was made, in ms since the epoch.
    pub created_ms: u64,
    /// Its settings.
    pub spec: NamespaceSpec,
    /// What it uses now.
    pub usage: Usage,
    /// How many apps it holds.
    pub apps: u32,
}

/// Whether an audited call went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Allowed,
    /// Refused for want of a permission.
    Denied,
    /// Allowed, but it failed (bad input, quota, conflict, NATS).
    Failed,
}

/// One mutating API call, as the audit trail keeps it. Never a secret's
/// value, nor a request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// When, in ms since the epoch.
    pub at_ms: u64,
    /// Who (`anonymous` when authentication is off).
    pub principal: String,
    /// The token used, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenId>,
    /// What it did.
    pub verb: Verb,
    /// On what.
    pub resource: Resource,
    /// Where (`None` for cluster-wide resources).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Name>,
    /// Which one (an app, a secret's name, a token id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How it ended.
    pub outcome: Outcome,
    /// The HTTP status answered.
    pub status: u16,
}
