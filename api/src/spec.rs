//! The app spec: what users write in TOML to describe an app.
//!
//! Parsing is strict: unknown keys are errors, names and quantities are
//! checked as they are read, and every problem in a file is reported at
//! once with its line and key (see [`SpecError`]).

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use serde::de::{IgnoredAny, IntoDeserializer};
use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::bounds::{
    MAX_ALLOWED_HOSTS, MAX_CANARY_MIN_REQUESTS, MAX_CANARY_STEPS, MAX_COMPONENTS, MAX_CONCURRENCY,
    MAX_CONFIG_VALUE_LEN, MAX_COREDUMPS, MAX_DELIVER, MAX_ENTRIES, MAX_ENV_VALUE_LEN,
    MAX_FAILURE_THRESHOLD, MAX_FUEL, MAX_HEALTH_INTERVAL, MAX_HEALTH_TIMEOUT, MAX_HOST_LEN,
    MAX_IDLE, MAX_KEY_LEN, MAX_PATH_LEN, MAX_PROGRESS_DEADLINE, MAX_PUBLISH_PATTERNS,
    MAX_SCALE_TARGET, MAX_SECRETS, MAX_SPEC_BYTES, MAX_SUBJECT_LEN, MAX_TIMEOUT, MAX_VOLUME_SIZE,
    MAX_VOLUMES,
};
use crate::diagnostics::{Collector, span_of};
use crate::subjects::USER_PREFIX;
use crate::{ByteSize, DurationSpec, Fuel, Name, Share, SpecError};

/// The namespace an app lands in when its spec names none.
pub const DEFAULT_NAMESPACE: &str = "default";

pub use crate::bounds::{MAX_MEMORY, MAX_REPLICAS, MIN_MEMORY};

/// An application: named components deployed, scaled and updated together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    /// The app's name, unique within its namespace.
    pub name: Name,
    /// The namespace the app lives in.
    #[serde(default = "default_namespace")]
    pub namespace: Name,
    /// The app's components by name.
    #[serde(default)]
    pub components: BTreeMap<Name, ComponentSpec>,
    /// Volumes the app's components may mount, by name.
    #[serde(default)]
    pub volumes: BTreeMap<Name, VolumeSpec>,
}

/// A pod: the components of an app placed together, as one unit.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSpec<'a> {
    /// The pod's name: its `pod` key, or its one component's name.
    pub name: Name,
    /// Replicas wanted: the largest of its components'.
    pub replicas: u32,
    /// Its components, by name.
    pub components: Vec<(&'a Name, &'a ComponentSpec)>,
}

impl PodSpec<'_> {
    /// How the pod restarts (see [`RestartPolicy::of_pod`]).
    pub fn restart_policy(&self) -> RestartPolicy {
        RestartPolicy::of_pod(self.components.iter().map(|(_, c)| *c))
    }

    /// How the pod rolls out: the first `rollout` its components set, else
    /// the defaults.
    pub fn rollout(&self) -> RolloutSpec {
        self.components
            .iter()
            .find_map(|(_, c)| c.rollout.clone())
            .unwrap_or_default()
    }

    /// The memory one replica reserves: the sum of its components' limits.
    pub fn memory(&self) -> u64 {
        self.components.iter().fold(0, |sum, (_, c)| {
            sum.saturating_add(c.limits.memory.as_u64())
        })
    }

    /// The memory one replica may hold at its busiest: the sum of its
    /// components' [`ComponentSpec::reserved_memory`].
    pub fn reserved_memory(&self) -> u64 {
        self.components
            .iter()
            .fold(0, |sum, (_, c)| sum.saturating_add(c.reserved_memory()))
    }
}

/// What a component exports, and so how Shoal feeds it work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ComponentKind {
    /// Exports `wasi:http/incoming-handler`: serves requests on its `route`.
    Http,
    /// Exports `shoal:workload/handler`: handles messages.
    Worker,
    /// Exports `wasi:cli/run`: runs to completion.
    Job,
}

impl ComponentKind {
    /// The WIT world a component of this kind targets.
    pub fn world(self) -> &'static str {
        match self {
            ComponentKind::Http => "shoal:workload/http",
            ComponentKind::Worker => "shoal:workload/worker",
            ComponentKind::Job => "shoal:workload/job",
        }
    }
}

/// The export names that tell a component's kind, as the component model
/// spells them.
pub mod exports {
    /// Exported by `worker` components.
    pub const HANDLER: &str = "shoal:workload/handler@0.1.0";
    /// Optionally exported by any component.
    pub const HEALTH: &str = "shoal:workload/health@0.1.0";
    /// Exported by `http` components.
    pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler@0.2.12";
    /// Exported by `job` components.
    pub const CLI_RUN: &str = "wasi:cli/run@0.2.12";
}

impl ComponentKind {
    /// Tells a component's kind from the names of its exports; `None` when
    /// it exports none of the interfaces Shoal runs.
    pub fn from_exports<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let names: Vec<&str> = names.into_iter().collect();
        let has = |wanted: &str| names.iter().any(|n| same_interface(n, wanted));
        if has(exports::HANDLER) {
            Some(ComponentKind::Worker)
        } else if has(exports::INCOMING_HANDLER) {
            Some(ComponentKind::Http)
        } else if has(exports::CLI_RUN) {
            Some(ComponentKind::Job)
        } else {
            None
        }
    }

    /// The export a component of this kind must have.
    pub fn required_export(self) -> &'static str {
        match self {
            ComponentKind::Http => exports::INCOMING_HANDLER,
            ComponentKind::Worker => exports::HANDLER,
            ComponentKind::Job => exports::CLI_RUN,
        }
    }
}

/// Compares interface names ignoring the patch version (`@0.2.3` matches
/// `@0.2.12`), as the component model's semver rules do.
fn same_interface(found: &str, wanted: &str) -> bool {
    let base = |s: &str| -> String {
        match s.split_once('@') {
            Some((name, version)) => {
                let mut parts = version.split('.');
                format!(
                    "{name}@{}.{}",
                    parts.next().unwrap_or(""),
                    parts.next().unwrap_or("")
                )
            }
            None => s.to_string(),
        }
    };
    base(found) == base(wanted)
}

impl std::fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            ComponentKind::Http => "http",
            ComponentKind::Worker => "worker",
            ComponentKind::Job => "job",
        })
    }
}

/// One component of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ComponentSpec {
    /// Where the component's `.wasm` is, relative to the spec file.
    pub source: String,
    /// What the component exports.
    pub kind: ComponentKind,
    /// For `http` components: the path prefix it serves, such as `/orders`.
    #[serde(default)]
    pub route: Option<String>,
    /// For `http` components: serve only requests for this host name (the
    /// `Host` header, without port), such as `shop.example.com`.
    #[serde(default)]
    pub host: Option<String>,
    /// How many replicas to run (ignored when `autoscale` is set).
    #[serde(default = "one")]
    pub replicas: u32,
    /// Components naming the same pod are scheduled together on one host.
    /// Without it, a component is a pod of its own.
    #[serde(default)]
    pub pod: Option<Name>,
    /// Hard limits for every invocation.
    #[serde(default)]
    pub limits: Limits,
    /// Environment variables the guest sees through `wasi:cli/environment`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Configuration values the guest reads with `shoal_sdk::config`.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// Secrets the guest may read with `shoal_sdk::secrets`.
    #[serde(default)]
    pub secrets: Vec<Name>,
    /// Volumes mounted into the guest.
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Where replicas may run.
    #[serde(default)]
    pub placement: Placement,
    /// How the host checks the replicas.
    #[serde(default)]
    pub health: Option<HealthSpec>,
    /// When a replica that stopped is started again (default: `always` for
    /// http and worker components, `on-failure` for jobs).
    #[serde(default)]
    pub restart: Option<RestartPolicy>,
    /// How a new revision replaces the running replicas.
    #[serde(default)]
    pub rollout: Option<RolloutSpec>,
    /// For `worker` components: the subject of the JetStream work queue to consume.
    #[serde(default)]
    pub queue: Option<String>,
    /// For queue workers: deliveries of one message before it goes to the
    /// dead-letter subject.
    #[serde(default = "ComponentSpec::default_max_deliver")]
    pub max_deliver: u32,
    /// Scale by load (queue depth, or requests in flight for http
    /// components) instead of a fixed replica count.
    #[serde(default)]
    pub autoscale: Option<Autoscale>,
    /// Subjects the component may publish to.
    #[serde(default)]
    pub messaging: Option<MessagingGrant>,
    /// Access to the app's key-value bucket: `true`, or a table.
    #[serde(default)]
    pub keyvalue: Option<KeyValueGrant>,
    /// Hosts (`name` or `name:port`) the component may send HTTP requests to.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Debugging aids: core dumps of trapping invocations.
    #[serde(default)]
    pub debug: Option<DebugSpec>,
}

/// Debugging aids for one component.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DebugSpec {
    /// Keep a Wasm core dump of each trapping invocation, at most this
    /// many per replica (`shoal debug dumps APP` lists them). They hold the
    /// guest's memory, secrets it read included: only roles that may read
    /// `dumps` can fetch them.
    #[serde(default)]
    pub coredumps: u32,
}

/// What a component may publish.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessagingGrant {
    /// Subject patterns, with NATS wildcards (`orders.*`, `orders.>`).
    #[serde(default)]
    pub publish: Vec<String>,
}

impl MessagingGrant {
    /// Whether `subject` matches one of the publish patterns.
    pub fn allows(&self, subject: &str) -> bool {
        self.publish.iter().any(|p| subject_matches(p, subject))
    }
}

/// Whether the NATS subject `subject` matches `pattern` (`*` one token,
/// `>` the rest).
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for p in pattern.split('.') {
        match (p, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(t)) if !t.is_empty() => {}
            (p, Some(t)) if p == t => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

/// Why a subject or subject pattern from a spec or a guest is refused
/// (see [`check_user_subject`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Nothing was given.
    #[error("subject is empty: write dot-separated tokens, like \"orders.created\"")]
    Empty,
    /// Longer than [`MAX_SUBJECT_LEN`](crate::bounds::MAX_SUBJECT_LEN).
    #[error(
        "subject {subject:?} is {len} bytes long, more than the {max} allowed: use fewer or shorter tokens",
        len = subject.len(),
        max = MAX_SUBJECT_LEN
    )]
    TooLong {
        /// The subject.
        subject: String,
    },
    /// Two dots in a row, or a dot at either end.
    #[error(
        "subject {subject:?} has an empty token: separate tokens with single dots, with none at either end, like \"orders.created\""
    )]
    EmptyToken {
        /// The subject.
        subject: String,
    },
    /// A wildcard where none is allowed, or `>` before the last token.
    #[error("subject {subject:?} {why}")]
    Wildcard {
        /// The subject.
        subject: String,
        /// What is wrong with the wildcard and what to write instead.
        why: &'static str,
    },
    /// A token with a character outside the safe set.
    #[error(
        "subject {subject:?} has the token {token:?}: tokens may hold only ASCII letters, digits, '-' and '_', and a pattern may use `*` or `>` as a whole token"
    )]
    BadToken {
        /// The subject.
        subject: String,
        /// The offending token.
        token: String,
    },
    /// A subject in a space that belongs to Shoal or to NATS.
    #[error("subject {subject:?} is refused: {why}")]
    Reserved {
        /// The subject.
        subject: String,
        /// Whose space it is and what to write instead.
        why: &'static str,
    },
    /// A subject that starts with the token namespaces are put under
    /// ([`subjects::USER_PREFIX`](crate::subjects::USER_PREFIX)), as if to
    /// name a namespace.
    #[error(
        "subject {subject:?} is refused: {prefix:?} is the token Shoal puts namespaces under; subjects in a spec are already relative to the app's namespace, so leave the namespace out",
        prefix = USER_PREFIX
    )]
    NamespacePrefix {
        /// The subject.
        subject: String,
    },
}

/// Checks a subject (or, with `wildcards`, a subject pattern) that a spec
/// or a guest names. Such subjects are relative to the app's namespace: on
/// the wire Shoal puts them under the namespace's own prefix.
///
/// Refused, whatever the prefix, so that no spec can even name them:
/// - a first token `shoal` (any case): Shoal's control space;
/// - a first token starting with `$` (`$JS`, `$KV`, `$SYS`, `$O`, …): the
///   NATS server's and JetStream's own subjects;
/// - any token starting with `_INBOX` (any case): NATS reply inboxes;
/// - a first token `ns` (any case, [`USER_PREFIX`](crate::subjects::USER_PREFIX)):
///   the token namespaces are put under; subjects are already relative to
///   the namespace;
/// - tokens that are empty or hold anything but ASCII letters, digits, `-`
///   and `_`, and subjects longer than
///   [`MAX_SUBJECT_LEN`](crate::bounds::MAX_SUBJECT_LEN) bytes.
///
/// With `wildcards`, `*` may stand for one token and a final `>` for the
/// rest, so a bare `>` means "everything within the namespace". Without,
/// neither may appear: that is how a queue subject, or a subject a guest
/// publishes to, is checked.
pub fn check_user_subject(subject: &str, wildcards: bool) -> Result<(), SubjectError> {
    let owned = || subject.to_string();
    if subject.is_empty() {
        return Err(SubjectError::Empty);
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(SubjectError::TooLong { subject: owned() });
    }
    let reserved = |why| {
        Err(SubjectError::Reserved {
            subject: owned(),
            why,
        })
    };
    let wildcard = |why| {
        Err(SubjectError::Wildcard {
            subject: owned(),
            why,
        })
    };
    let count = subject.split('.').count();
    for (i, token) in subject.split('.').enumerate() {
        if token.is_empty() {
            return Err(SubjectError::EmptyToken { subject: owned() });
        }
        if token == "*" || token == ">" {
            if !wildcards {
                return wildcard(
                    "has a wildcard: only `messaging.publish` patterns take `*` and `>`; name one subject, like \"orders.created\"",
                );
            }
            if token == ">" && i + 1 != count {
                return wildcard(
                    "has `>` before its last token: `>` matches the rest of a subject, so it comes last, like \"orders.>\"",
                );
            }
            continue;
        }
        if i == 0 && token.eq_ignore_ascii_case("shoal") {
            return reserved(
                "\"shoal\" is Shoal's own control space; subjects in a spec are relative to the app's namespace, so start with a token of your own, like \"orders.created\"",
            );
        }
        if i == 0 && token.starts_with('$') {
            return reserved(
                "subjects starting with '$' ($JS, $KV, $SYS, $O, ...) belong to the NATS server and JetStream; start with a token of your own, like \"orders.created\"",
            );
        }
        if token
            .get(..6)
            .is_some_and(|start| start.eq_ignore_ascii_case("_INBOX"))
        {
            return reserved(
                "tokens starting with \"_INBOX\" are NATS reply inboxes, where a publish would forge replies to other clients' requests; pick another token",
            );
        }
        if i == 0 && token.eq_ignore_ascii_case(USER_PREFIX) {
            return Err(SubjectError::NamespacePrefix { subject: owned() });
        }
        if !token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(SubjectError::BadToken {
                subject: owned(),
                token: token.to_string(),
            });
        }
    }
    Ok(())
}

/// Access to the app's key-value bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeyValueGrant {
    /// Keep the bucket when the app is deleted.
    pub retain: bool,
}

impl<'de> Deserialize<'de> for KeyValueGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            retain: bool,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Flag(bool),
            Table(Table),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("expected `keyvalue = true` or `keyvalue = { retain = true }`")
        })? {
            Raw::Flag(true) => Ok(KeyValueGrant { retain: false }),
            Raw::Flag(false) => Err(serde::de::Error::custom(
                "`keyvalue = false` is the default: leave the key out",
            )),
            Raw::Table(t) => Ok(KeyValueGrant { retain: t.retain }),
        }
    }
}

impl ComponentSpec {
    /// A component of `kind` at `source` with every other setting at its
    /// default: no capability granted, one replica.
    pub fn new(source: impl Into<String>, kind: ComponentKind) -> Self {
        ComponentSpec {
            source: source.into(),
            kind,
            route: None,
            host: None,
            replicas: one(),
            pod: None,
            limits: Limits::default(),
            env: BTreeMap::new(),
            config: BTreeMap::new(),
            secrets: Vec::new(),
            volumes: Vec::new(),
            placement: Placement::default(),
            health: None,
            restart: None,
            rollout: None,
            queue: None,
            max_deliver: ComponentSpec::default_max_deliver(),
            autoscale: None,
            messaging: None,
            keyvalue: None,
            allowed_hosts: Vec::new(),
            debug: None,
        }
    }

    fn default_max_deliver() -> u32 {
        5
    }

    /// The memory placement reserves for one replica of this component:
    /// `limits.memory × limits.concurrency`, saturating. Each concurrent
    /// invocation gets its own instance, which may grow to the full memory
    /// limit, so a replica running `concurrency` invocations may hold this
    /// much at once.
    pub fn reserved_memory(&self) -> u64 {
        self.limits
            .memory
            .as_u64()
            .saturating_mul(u64::from(self.limits.concurrency))
    }
}

/// Hard limits applied to every invocation of a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most linear memory (and tables) one instance may hold.
    #[serde(default = "Limits::default_memory")]
    pub memory: ByteSize,
    /// CPU budget per invocation, in fuel units, or "off".
    #[serde(default = "Limits::default_fuel")]
    pub fuel: Fuel,
    /// Wall-clock deadline per invocation.
    #[serde(default = "Limits::default_timeout")]
    pub timeout: DurationSpec,
    /// The most invocations one replica runs at once.
    #[serde(default = "Limits::default_concurrency")]
    pub concurrency: u32,
}

impl Limits {
    fn default_memory() -> ByteSize {
        ByteSize::mib(64)
    }
    fn default_fuel() -> Fuel {
        Fuel::Units(1_000_000_000)
    }
    fn default_timeout() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(5))
    }
    fn default_concurrency() -> u32 {
        64
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: Limits::default_memory(),
            fuel: Limits::default_fuel(),
            timeout: Limits::default_timeout(),
            concurrency: Limits::default_concurrency(),
        }
    }
}

/// A volume mounted into a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// The volume, declared under `[volumes.<name>]`.
    pub name: Name,
    /// Where the guest sees it: an absolute path such as `/data`.
    pub path: String,
    /// Mount without write access.
    #[serde(default)]
    pub read_only: bool,
}

/// A volume declared by the app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeSpec {
    /// The most the volume may hold.
    #[serde(default = "VolumeSpec::default_size")]
    pub size: ByteSize,
    /// `app`: persistent, shared by the app's replicas on a host.
    /// `pod`: scratch space for one pod's components, removed with the pod.
    #[serde(default)]
    pub scope: VolumeScope,
    /// Keep the data when the app is deleted.
    #[serde(default)]
    pub retain: bool,
}

impl VolumeSpec {
    fn default_size() -> ByteSize {
        ByteSize::mib(1024)
    }
}

/// How long a volume's data lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeScope {
    /// As long as the app, across replica restarts.
    #[default]
    App,
    /// As long as one pod.
    Pod,
}

/// Constraints on where replicas run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Only hosts with all of these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Spread replicas evenly over the values of this host label (such as `zone`).
    #[serde(default)]
    pub spread: Option<String>,
}

/// Health checking of a component's replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// How often to check.
    #[serde(default = "HealthSpec::default_interval")]
    pub interval: DurationSpec,
    /// How long one check may take.
    #[serde(default = "HealthSpec::default_timeout")]
    pub timeout: DurationSpec,
    /// Consecutive failures before acting.
    #[serde(default = "HealthSpec::default_failure_threshold")]
    pub failure_threshold: u32,
    /// For `http` components: a path to GET instead of the `health` export.
    #[serde(default)]
    pub path: Option<String>,
}

impl HealthSpec {
    fn default_interval() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(5))
    }
    fn default_timeout() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(1))
    }
    fn default_failure_threshold() -> u32 {
        3
    }
}

impl HealthSpec {
    /// The checks a component gets when it exports `shoal:workload/health`
    /// but its spec sets no `health` table.
    pub fn defaults() -> HealthSpec {
        HealthSpec {
            interval: HealthSpec::default_interval(),
            timeout: HealthSpec::default_timeout(),
            failure_threshold: HealthSpec::default_failure_threshold(),
            path: None,
        }
    }
}

/// When a stopped replica is started again, like a Kubernetes pod's
/// `restartPolicy`. Restarts back off exponentially.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Whenever it stops, even after a job exits 0.
    Always,
    /// When it fails: a job exits non-zero or traps, a liveness check
    /// fails, invocations keep trapping.
    OnFailure,
    /// Never: a stopped replica stays stopped and shows why.
    Never,
}

impl RestartPolicy {
    /// The policy a component of `kind` gets when its spec names none.
    pub fn default_for(kind: ComponentKind) -> RestartPolicy {
        match kind {
            ComponentKind::Job => RestartPolicy::OnFailure,
            ComponentKind::Http | ComponentKind::Worker => RestartPolicy::Always,
        }
    }

    /// The policy of a pod made of `components`: the first one a component
    /// names, else the default for the first component's kind. A pod
    /// restarts as one.
    pub fn of_pod<'a>(components: impl IntoIterator<Item = &'a ComponentSpec>) -> RestartPolicy {
        let mut first_kind = None;
        for c in components {
            if let Some(policy) = c.restart {
                return policy;
            }
            first_kind.get_or_insert(c.kind);
        }
        first_kind.map_or(RestartPolicy::Always, RestartPolicy::default_for)
    }
}

impl std::fmt::Display for RestartPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        })
    }
}

/// How a new revision replaces running replicas: a few at a time, each new
/// replica ready before an old one goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// New replicas that may run beside the old ones, above `replicas`.
    #[serde(default = "RolloutSpec::default_max_surge")]
    pub max_surge: u32,
    /// Replicas that may be out of service at once during the rollout.
    #[serde(default)]
    pub max_unavailable: u32,
    /// A rollout that makes no progress for this long is rolled back.
    #[serde(default = "RolloutSpec::default_progress_deadline")]
    pub progress_deadline: DurationSpec,
    /// Replace replicas a few at a time (`rolling`), or first send a share
    /// of the traffic to one replica of the new revision (`canary`).
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// A canary's shares of requests, in order, like `["5%", "25%", "50%"]`;
    /// after the last one passes, the new revision rolls out to every
    /// replica.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<Share>,
    /// How long each canary step lasts at least.
    #[serde(default = "RolloutSpec::default_step_interval")]
    pub step_interval: DurationSpec,
    /// What a canary step must show to go on.
    #[serde(default)]
    pub analysis: Analysis,
    /// A shadow's share of requests: each of them is also sent to the new
    /// revision, whose answer is compared and thrown away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<Share>,
    /// How long a shadow copies requests.
    #[serde(default = "RolloutSpec::default_duration")]
    pub duration: DurationSpec,
}

impl RolloutSpec {
    fn default_max_surge() -> u32 {
        1
    }
    fn default_progress_deadline() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(60))
    }
    fn default_step_interval() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(30))
    }
    fn default_duration() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(300))
    }

    /// Whether a new revision goes out as a canary first.
    pub fn is_canary(&self) -> bool {
        self.strategy == RolloutStrategy::Canary && !self.steps.is_empty()
    }

    /// Whether a new revision first runs as a shadow.
    pub fn is_shadow(&self) -> bool {
        self.strategy == RolloutStrategy::Shadow
    }

    /// Whether a new revision first runs beside the stable one, as a
    /// canary or a shadow, in one extra replica.
    pub fn is_staged(&self) -> bool {
        self.is_canary() || self.is_shadow()
    }

    /// The share of requests a shadow copies (10% unless set).
    pub fn shadow_share(&self) -> Share {
        self.share.unwrap_or(Share::percent(10))
    }
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            max_surge: RolloutSpec::default_max_surge(),
            max_unavailable: 0,
            progress_deadline: RolloutSpec::default_progress_deadline(),
            strategy: RolloutStrategy::default(),
            steps: Vec::new(),
            step_interval: RolloutSpec::default_step_interval(),
            analysis: Analysis::default(),
            share: None,
            duration: RolloutSpec::default_duration(),
        }
    }
}

/// How a new revision reaches a pod's replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RolloutStrategy {
    /// Replicas are replaced a few at a time, each new one ready before an
    /// old one goes.
    #[default]
    Rolling,
    /// One extra replica runs the new revision and takes `steps` shares of
    /// the requests in turn, judged by `analysis` at each; it rolls out
    /// when the last step passes and is rolled back at once when one fails.
    Canary,
    /// One extra replica runs the new revision and gets a copy of `share`
    /// of the requests for `duration`: its answers are compared with the
    /// stable replicas' and thrown away, and its side effects are held
    /// back. It rolls out only when promoted.
    Shadow,
}

/// What a canary must show over a step: judged on the canary replica's own
/// invocations during that step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Analysis {
    /// The most of its invocations that may fail (an error, a trap, or an
    /// HTTP status of 500 or more).
    #[serde(default = "Analysis::default_max_error_rate")]
    pub max_error_rate: Share,
    /// The longest its 99th percentile duration may be.
    #[serde(default = "Analysis::default_max_p99")]
    pub max_p99: DurationSpec,
    /// Invocations a step needs before it can pass: a step waits past its
    /// interval until it has them.
    #[serde(default = "Analysis::default_min_requests")]
    pub min_requests: u32,
}

impl Analysis {
    fn default_max_error_rate() -> Share {
        Share::percent(1)
    }
    fn default_max_p99() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(1))
    }
    fn default_min_requests() -> u32 {
        100
    }
}

impl Default for Analysis {
    fn default() -> Self {
        Analysis {
            max_error_rate: Analysis::default_max_error_rate(),
            max_p99: Analysis::default_max_p99(),
            min_requests: Analysis::default_min_requests(),
        }
    }
}

/// Scaling by load: queue depth for queue workers, requests in flight for
/// http components.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Autoscale {
    /// Fewest replicas; 0 allows scaling to zero.
    #[serde(default)]
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// Queue workers: pending messages one replica should have at most.
    #[serde(default = "Autoscale::default_target")]
    pub target_queue_depth: u32,
    /// Http components: requests in flight one replica should have at
    /// most, on average.
    #[serde(default = "Autoscale::default_in_flight")]
    pub target_in_flight: u32,
    /// Scale to `min` after this long without messages or requests.
    #[serde(default = "Autoscale::default_idle")]
    pub idle: DurationSpec,
}

impl Autoscale {
    fn default_target() -> u32 {
        100
    }
    fn default_in_flight() -> u32 {
        10
    }
    fn default_idle() -> DurationSpec {
        DurationSpec::new(Duration::from_secs(60))
    }
}

fn default_namespace() -> Name {
    Name::trusted(DEFAULT_NAMESPACE)
}

fn one() -> u32 {
    1
}

/// The top level alone: components and volumes are read one by one so that
/// a problem in one does not hide problems in the others.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopLevel {
    #[allow(dead_code)]
    name: Name,
    #[allow(dead_code)]
    #[serde(default = "default_namespace")]
    namespace: Name,
    #[allow(dead_code)]
    #[serde(default)]
    components: Option<IgnoredAny>,
    #[allow(dead_code)]
    #[serde(default)]
    volumes: Option<IgnoredAny>,
}

impl AppSpec {
    /// Parses and checks a spec. `file` names the source in error messages.
    ///
    /// On failure the error lists every problem found, each with its line,
    /// column and key.
    pub fn from_toml(text: &str, file: &str) -> Result<AppSpec, SpecError> {
        if text.len() > MAX_SPEC_BYTES {
            let mut problems = Collector::new(file, text);
            problems.at(
                None,
                format!(
                    "the spec is {} bytes, more than the {MAX_SPEC_BYTES} allowed: split the app, or move large values out of `config`",
                    text.len()
                ),
            );
            return Err(problems
                .finish()
                .err()
                .unwrap_or_else(|| unreachable_spec_error(file)));
        }
        let doc = match DeTable::parse(text) {
            Ok(doc) => doc,
            Err(err) => {
                let mut problems = Collector::new(file, text);
                problems.toml_error(&err, 0..0);
                return Err(problems
                    .finish()
                    .err()
                    .unwrap_or_else(|| unreachable_spec_error(file)));
            }
        };
        let mut problems = Collector::new(file, text).with_document(&doc);
        let whole = doc.span();

        if let Err(err) = TopLevel::deserialize(doc.clone().into_deserializer()) {
            problems.toml_error(&err, whole.clone());
        }
        read_section::<ComponentSpec>(&doc, "components", &mut problems);
        read_section::<VolumeSpec>(&doc, "volumes", &mut problems);

        // Read the whole thing once more for the result; the sections above
        // already reported anything this could fail on.
        let spec = AppSpec::deserialize(doc.clone().into_deserializer()).ok();
        if let Some(spec) = &spec {
            spec.check(&doc, &mut problems);
        } else if problems.is_empty() {
            problems.at(Some(whole), "the spec could not be read");
        }
        problems.finish()?;
        spec.ok_or_else(|| unreachable_spec_error(file))
    }

    /// Semantic checks that types alone cannot express.
    fn check(&self, doc: &Spanned<DeTable<'_>>, problems: &mut Collector<'_>) {
        if self.components.is_empty() {
            problems.at(
                Some(doc.span()),
                "the app has no components: add a [components.<name>] table with at least `source` and `kind`",
            );
        }
        check_len(
            problems,
            span_of(doc, &["components"]),
            "the app",
            self.components.len(),
            MAX_COMPONENTS,
            "components",
            "split it into several apps",
        );
        check_len(
            problems,
            span_of(doc, &["volumes"]),
            "the app",
            self.volumes.len(),
            MAX_VOLUMES,
            "volumes",
            "let components share fewer, larger volumes",
        );
        for (name, volume) in &self.volumes {
            check_max(
                problems,
                span_of(doc, &["volumes", name.as_str(), "size"])
                    .or_else(|| span_of(doc, &["volumes", name.as_str()])),
                "size",
                volume.size,
                (ByteSize::bytes(0), MAX_VOLUME_SIZE),
                "every host that runs the app sets this much disk aside: ask for less",
            );
        }
        let mut routes: BTreeMap<(&str, &str), &Name> = BTreeMap::new();
        for (name, c) in &self.components {
            let at = |key: &str| {
                span_of(doc, &["components", name.as_str(), key])
                    .or_else(|| span_of(doc, &["components", name.as_str()]))
            };
            let at_in = |table: &str, key: &str| {
                span_of(doc, &["components", name.as_str(), table, key]).or_else(|| at(table))
            };
            check_bounds(c, &at, &at_in, problems);
            if c.source.trim().is_empty() {
                problems.at(
                    at("source"),
                    "`source` is empty: give the path of the component's .wasm file",
                );
            }
            match (c.kind, &c.route) {
                (ComponentKind::Http, None) => problems.at(
                    at("kind"),
                    "an http component needs a `route`, the path prefix it serves, such as \"/orders\"",
                ),
                (ComponentKind::Http, Some(route)) => {
                    let host = c.host.as_deref().unwrap_or("");
                    if !route.starts_with('/') {
                        problems.at(at("route"), format!("route {route:?} must start with '/'"));
                    } else if let Some(other) = routes.insert((host, route.as_str()), name) {
                        problems.at(
                            at("route"),
                            format!("route {route:?} is already served by component {other}"),
                        );
                    }
                }
                (kind, Some(_)) => problems.at(
                    at("route"),
                    format!("a {kind} component takes no `route`: only http components serve HTTP"),
                ),
                _ => {}
            }
            if c.host.is_some() && c.kind != ComponentKind::Http {
                problems.at(
                    at("host"),
                    format!(
                        "a {} component takes no `host`: only http components serve HTTP",
                        c.kind
                    ),
                );
            }
            if let Some(host) = &c.host
                && (host.is_empty() || host.contains(['/', ':', ' ']))
            {
                problems.at(
                    at("host"),
                    format!("{host:?} is not a host name: write it without scheme, port or path, like \"shop.example.com\""),
                );
            }
            if c.queue.is_some() && c.kind != ComponentKind::Worker {
                problems.at(
                    at("queue"),
                    format!(
                        "a {} component takes no `queue`: only workers consume queues",
                        c.kind
                    ),
                );
            }
            if let Some(queue) = &c.queue
                && let Err(err) = check_user_subject(queue, false)
            {
                problems.at(at("queue"), format!("queue {err}"));
            }
            if c.max_deliver == 0 {
                problems.at(
                    at("max_deliver"),
                    format!("max_deliver must be between 1 and {MAX_DELIVER}"),
                );
            }
            self.check_limits(
                &c.limits,
                &|k| {
                    span_of(doc, &["components", name.as_str(), "limits", k])
                        .or_else(|| at("limits"))
                },
                problems,
            );
            if let Some(auto) = &c.autoscale {
                if auto.max == 0 || auto.min > auto.max {
                    problems.at(
                        at("autoscale"),
                        format!(
                            "autoscale needs 0 <= min <= max and max >= 1 (got min = {}, max = {})",
                            auto.min, auto.max
                        ),
                    );
                }
                if auto.target_queue_depth == 0 || auto.target_in_flight == 0 {
                    problems.at(
                        at("autoscale"),
                        "autoscale.target_queue_depth and autoscale.target_in_flight must be at least 1",
                    );
                }
                let scalable = c.kind == ComponentKind::Http
                    || (c.kind == ComponentKind::Worker && c.queue.is_some());
                if !scalable {
                    problems.at(
                        at("autoscale"),
                        format!(
                            "autoscale follows queue depth or requests in flight: give this {} component a `queue`, or set `replicas` instead",
                            c.kind
                        ),
                    );
                }
            }
            for key in c.env.keys() {
                if key.is_empty() || key.contains('=') || key.contains('\0') {
                    problems.at(at("env"), format!("environment variable name {key:?} may not be empty or contain '=' or NUL"));
                }
            }
            if let Some(grant) = &c.messaging {
                for pattern in &grant.publish {
                    if let Err(err) = check_user_subject(pattern, true) {
                        problems.at(
                            at_in("messaging", "publish"),
                            format!("in messaging.publish, {err}"),
                        );
                    }
                }
            }
            for host in &c.allowed_hosts {
                if host.is_empty() || host.contains('/') || host.contains(' ') {
                    problems.at(
                        at("allowed_hosts"),
                        format!("{host:?} is not a host: write a name or name:port, like \"api.example.com\" or \"127.0.0.1:8080\""),
                    );
                }
            }
            for mount in &c.volumes {
                if !self.volumes.contains_key(&mount.name) {
                    problems.at(
                        at("volumes"),
                        format!(
                            "volume {} is not declared: add a [volumes.{}] table",
                            mount.name, mount.name
                        ),
                    );
                }
                if !mount.path.starts_with('/') || mount.path.split('/').any(|p| p == "..") {
                    problems.at(
                        at("volumes"),
                        format!(
                            "mount path {:?} must be absolute and may not contain '..'",
                            mount.path
                        ),
                    );
                }
            }
            if let Some(health) = &c.health {
                if health.failure_threshold == 0 {
                    problems.at(at("health"), "health.failure_threshold must be at least 1");
                }
                if health.interval.get().is_zero() {
                    problems.at(at("health"), "health.interval must be longer than 0s");
                }
                if health.timeout.get().is_zero() {
                    problems.at(at("health"), "health.timeout must be longer than 0s");
                }
                if let Some(path) = &health.path {
                    if c.kind != ComponentKind::Http {
                        problems.at(
                            at("health"),
                            format!("health.path is for http components; a {} component exports shoal:workload/health instead", c.kind),
                        );
                    } else if !path.starts_with('/') {
                        problems.at(
                            at("health"),
                            format!("health.path {path:?} must start with '/', like \"/healthz\""),
                        );
                    }
                }
            }
            if let Some(debug) = &c.debug {
                check_max(
                    problems,
                    at_in("debug", "coredumps"),
                    "debug.coredumps",
                    debug.coredumps,
                    (0, MAX_COREDUMPS),
                    "a few dumps of a trap tell as much as many",
                );
            }
            if let Some(rollout) = &c.rollout {
                if rollout.max_surge == 0 && rollout.max_unavailable == 0 {
                    problems.at(
                        at("rollout"),
                        "rollout.max_surge and rollout.max_unavailable cannot both be 0: nothing could be replaced",
                    );
                }
                if rollout.progress_deadline.get().is_zero() {
                    problems.at(
                        at("rollout"),
                        "rollout.progress_deadline must be longer than 0s",
                    );
                }
                match rollout.strategy {
                    RolloutStrategy::Canary if rollout.steps.is_empty() => problems.at(
                        at_in("rollout", "steps"),
                        "a canary needs its steps: add steps = [\"5%\", \"25%\", \"50%\"] (shares of requests, rising, each below 100%)",
                    ),
                    RolloutStrategy::Canary => {
                        let rising = rollout.steps.windows(2).all(|w| w[0] < w[1]);
                        let inside = rollout
                            .steps
                            .iter()
                            .all(|s| s.as_basis_points() > 0 && s.as_basis_points() < Share::WHOLE);
                        if !rising || !inside {
                            problems.at(
                                at_in("rollout", "steps"),
                                "rollout.steps must rise, each above 0% and below 100%, like [\"5%\", \"25%\", \"50%\"]: after the last one the canary rolls out to every replica",
                            );
                        }
                        if rollout.step_interval.get().is_zero() {
                            problems.at(
                                at_in("rollout", "step_interval"),
                                "rollout.step_interval must be longer than 0s",
                            );
                        }
                        if c.kind == ComponentKind::Job {
                            problems.at(
                                at_in("rollout", "strategy"),
                                "a job takes no requests to share: use strategy = \"rolling\"",
                            );
                        }
                        if c.queue.is_some() {
                            problems.at(
                                at_in("rollout", "strategy"),
                                "a queue worker's messages are pulled by its replicas, not routed, so no share of them can go to a canary: use strategy = \"rolling\"",
                            );
                        }
                    }
                    RolloutStrategy::Rolling if !rollout.steps.is_empty() => problems.at(
                        at_in("rollout", "steps"),
                        "rollout.steps apply to a canary only: add strategy = \"canary\", or remove them",
                    ),
                    RolloutStrategy::Shadow => {
                        if rollout.share.is_some_and(|s| s.as_basis_points() == 0) {
                            problems.at(
                                at_in("rollout", "share"),
                                "rollout.share must be above 0%: it is the share of requests copied to the shadow",
                            );
                        }
                        if rollout.duration.get().is_zero() {
                            problems.at(
                                at_in("rollout", "duration"),
                                "rollout.duration must be longer than 0s",
                            );
                        }
                        if c.kind == ComponentKind::Job || c.queue.is_some() {
                            problems.at(
                                at_in("rollout", "strategy"),
                                "a shadow copies requests and invocations: a job or a queue worker has none to copy; use strategy = \"rolling\"",
                            );
                        }
                    }
                    RolloutStrategy::Rolling => {}
                }
                if rollout.share.is_some() && rollout.strategy != RolloutStrategy::Shadow {
                    problems.at(
                        at_in("rollout", "share"),
                        "rollout.share applies to a shadow only: add strategy = \"shadow\", or remove it",
                    );
                }
            }
        }
    }

    fn check_limits(
        &self,
        limits: &Limits,
        at: &dyn Fn(&str) -> Option<Range<usize>>,
        problems: &mut Collector<'_>,
    ) {
        if limits.memory < MIN_MEMORY || limits.memory > MAX_MEMORY {
            problems.at(
                at("memory"),
                format!(
                    "memory limit {} is outside what a component can use: allowed {MIN_MEMORY} to {MAX_MEMORY}",
                    limits.memory
                ),
            );
        }
        if limits.timeout.get().is_zero() {
            problems.at(at("timeout"), "timeout must be longer than 0s, like \"2s\"");
        }
        check_max(
            problems,
            at("timeout"),
            "limits.timeout",
            limits.timeout,
            (
                DurationSpec::new(Duration::from_millis(1)),
                DurationSpec::new(MAX_TIMEOUT),
            ),
            "do long work in steps, such as a queue worker taking one step per message",
        );
        if limits.concurrency == 0 {
            problems.at(at("concurrency"), "concurrency must be at least 1");
        }
        check_max(
            problems,
            at("concurrency"),
            "limits.concurrency",
            limits.concurrency,
            (1, MAX_CONCURRENCY),
            "run more replicas instead",
        );
        if let Some(units) = limits.fuel.units() {
            check_max(
                problems,
                at("fuel"),
                "limits.fuel",
                units,
                (1, MAX_FUEL),
                "no guest burns that much before its deadline: write fuel = \"off\" to rely on the deadline alone",
            );
        }
    }

    /// The app's pods: components grouped by `pod` (a component without one
    /// is a pod of its own), each with its replica count: the largest of
    /// its components'.
    pub fn pods(&self) -> Vec<PodSpec<'_>> {
        let mut pods: BTreeMap<Name, PodSpec<'_>> = BTreeMap::new();
        for (name, c) in &self.components {
            let pod = c.pod.clone().unwrap_or_else(|| name.clone());
            let entry = pods.entry(pod.clone()).or_insert_with(|| PodSpec {
                name: pod,
                replicas: 0,
                components: Vec::new(),
            });
            entry.replicas = entry.replicas.max(c.replicas);
            entry.components.push((name, c));
        }
        pods.into_values().collect()
    }

    /// The component called `name`, if the app has one.
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.components
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, c)| c)
    }
}

/// Checks a component's numbers, durations, lists and strings against
/// their bounds (see [`crate::bounds`]). `at` finds a key of the component,
/// `at_in` a key of one of its tables.
fn check_bounds(
    c: &ComponentSpec,
    at: &dyn Fn(&str) -> Option<Range<usize>>,
    at_in: &dyn Fn(&str, &str) -> Option<Range<usize>>,
    problems: &mut Collector<'_>,
) {
    let replicas = (0, MAX_REPLICAS);
    let duration = |max| {
        (
            DurationSpec::new(Duration::from_millis(1)),
            DurationSpec::new(max),
        )
    };
    check_max(
        problems,
        at("replicas"),
        "replicas",
        c.replicas,
        replicas,
        "run fewer replicas, each with a higher limits.concurrency",
    );
    check_max(
        problems,
        at("max_deliver"),
        "max_deliver",
        c.max_deliver,
        (1, MAX_DELIVER),
        "a message that fails this often will not succeed: let it go to the dead-letter subject sooner",
    );
    check_text(problems, at("source"), "source", &c.source, MAX_PATH_LEN);
    if let Some(route) = &c.route {
        check_text(problems, at("route"), "route", route, MAX_PATH_LEN);
    }
    if let Some(host) = &c.host {
        check_text(problems, at("host"), "host", host, MAX_HOST_LEN);
    }
    if let Some(auto) = &c.autoscale {
        let fix = "the autoscaler runs at most that many replicas: lower it";
        check_max(
            problems,
            at_in("autoscale", "min"),
            "autoscale.min",
            auto.min,
            replicas,
            fix,
        );
        check_max(
            problems,
            at_in("autoscale", "max"),
            "autoscale.max",
            auto.max,
            (1, MAX_REPLICAS),
            fix,
        );
        let fix = "a target this high never asks for a second replica: lower it";
        check_max(
            problems,
            at_in("autoscale", "target_queue_depth"),
            "autoscale.target_queue_depth",
            auto.target_queue_depth,
            (1, MAX_SCALE_TARGET),
            fix,
        );
        check_max(
            problems,
            at_in("autoscale", "target_in_flight"),
            "autoscale.target_in_flight",
            auto.target_in_flight,
            (1, MAX_SCALE_TARGET),
            fix,
        );
        check_max(
            problems,
            at_in("autoscale", "idle"),
            "autoscale.idle",
            auto.idle,
            duration(MAX_IDLE),
            "lower it, or set `replicas` instead of autoscaling",
        );
    }
    if let Some(health) = &c.health {
        check_max(
            problems,
            at_in("health", "interval"),
            "health.interval",
            health.interval,
            duration(MAX_HEALTH_INTERVAL),
            "check more often",
        );
        check_max(
            problems,
            at_in("health", "timeout"),
            "health.timeout",
            health.timeout,
            duration(MAX_HEALTH_TIMEOUT),
            "a check that takes this long has failed: lower it",
        );
        check_max(
            problems,
            at_in("health", "failure_threshold"),
            "health.failure_threshold",
            health.failure_threshold,
            (1, MAX_FAILURE_THRESHOLD),
            "lower it, or check more often",
        );
        if let Some(path) = &health.path {
            check_text(
                problems,
                at_in("health", "path"),
                "health.path",
                path,
                MAX_PATH_LEN,
            );
        }
    }
    if let Some(rollout) = &c.rollout {
        let fix = "no component runs more replicas than that: lower it";
        check_max(
            problems,
            at_in("rollout", "max_surge"),
            "rollout.max_surge",
            rollout.max_surge,
            replicas,
            fix,
        );
        check_max(
            problems,
            at_in("rollout", "max_unavailable"),
            "rollout.max_unavailable",
            rollout.max_unavailable,
            replicas,
            fix,
        );
        check_max(
            problems,
            at_in("rollout", "progress_deadline"),
            "rollout.progress_deadline",
            rollout.progress_deadline,
            duration(MAX_PROGRESS_DEADLINE),
            "a rollout stuck this long will not finish: lower it",
        );
        check_max(
            problems,
            at_in("rollout", "steps"),
            "rollout.steps",
            rollout.steps.len(),
            (0, MAX_CANARY_STEPS),
            "a few steps tell as much as many",
        );
        check_max(
            problems,
            at_in("rollout", "step_interval"),
            "rollout.step_interval",
            rollout.step_interval,
            duration(MAX_PROGRESS_DEADLINE),
            "a step this long will not finish: lower it",
        );
        check_max(
            problems,
            at_in("rollout", "duration"),
            "rollout.duration",
            rollout.duration,
            duration(MAX_PROGRESS_DEADLINE),
            "a shadow this long will not finish: lower it",
        );
        check_max(
            problems,
            at_in("rollout", "analysis"),
            "rollout.analysis.min_requests",
            rollout.analysis.min_requests,
            (0, MAX_CANARY_MIN_REQUESTS),
            "a canary step this demanding may never pass: lower it",
        );
        check_max(
            problems,
            at_in("rollout", "analysis"),
            "rollout.analysis.max_p99",
            rollout.analysis.max_p99,
            duration(MAX_TIMEOUT),
            "no invocation runs longer than the longest timeout: lower it",
        );
    }
    check_entries(
        problems,
        at("env"),
        "env",
        &c.env,
        MAX_ENV_VALUE_LEN,
        "put long settings in `config`",
    );
    check_entries(
        problems,
        at("config"),
        "config",
        &c.config,
        MAX_CONFIG_VALUE_LEN,
        "keep large data in a volume or the key-value bucket",
    );
    check_entries(
        problems,
        at_in("placement", "labels"),
        "placement.labels",
        &c.placement.labels,
        MAX_KEY_LEN,
        "host labels are short: use a shorter value",
    );
    if let Some(spread) = &c.placement.spread {
        check_text(
            problems,
            at_in("placement", "spread"),
            "placement.spread",
            spread,
            MAX_KEY_LEN,
        );
    }
    check_len(
        problems,
        at("secrets"),
        "secrets",
        c.secrets.len(),
        MAX_SECRETS,
        "entries",
        "group related values into one secret",
    );
    check_len(
        problems,
        at("volumes"),
        "volumes",
        c.volumes.len(),
        MAX_VOLUMES,
        "mounts",
        "mount fewer, larger volumes",
    );
    for mount in &c.volumes {
        check_text(
            problems,
            at("volumes"),
            "mount path",
            &mount.path,
            MAX_PATH_LEN,
        );
    }
    check_len(
        problems,
        at("allowed_hosts"),
        "allowed_hosts",
        c.allowed_hosts.len(),
        MAX_ALLOWED_HOSTS,
        "entries",
        "put the hosts behind fewer names",
    );
    for host in &c.allowed_hosts {
        // A host name, then perhaps `:port`.
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host.as_str(), |(name, _)| name);
        check_text(
            problems,
            at("allowed_hosts"),
            "allowed_hosts entry",
            name,
            MAX_HOST_LEN,
        );
    }
    if let Some(grant) = &c.messaging {
        check_len(
            problems,
            at_in("messaging", "publish"),
            "messaging.publish",
            grant.publish.len(),
            MAX_PUBLISH_PATTERNS,
            "patterns",
            "use wildcards, like \"orders.>\", to cover many subjects with one pattern",
        );
    }
}

/// Records a problem when `value` is above the top of `range`. The message
/// names the key, the value, the allowed range and what to do (`fix`).
fn check_max<T: PartialOrd + std::fmt::Display>(
    problems: &mut Collector<'_>,
    span: Option<Range<usize>>,
    key: &str,
    value: T,
    range: (T, T),
    fix: &str,
) {
    let (min, max) = range;
    if value > max {
        problems.at(
            span,
            format!("{key} = {value} is out of range: allowed {min} to {max}; {fix}"),
        );
    }
}

/// Records a problem when `what` has more than `max` `items`.
fn check_len(
    problems: &mut Collector<'_>,
    span: Option<Range<usize>>,
    what: &str,
    len: usize,
    max: usize,
    items: &str,
    fix: &str,
) {
    if len > max {
        problems.at(
            span,
            format!("{what} has {len} {items}, more than the {max} allowed: {fix}"),
        );
    }
}

/// Records a problem when the string `what` is longer than `max` bytes.
fn check_text(
    problems: &mut Collector<'_>,
    span: Option<Range<usize>>,
    what: &str,
    text: &str,
    max: usize,
) {
    if text.len() > max {
        problems.at(
            span,
            format!(
                "{what} {} is {} bytes long, more than the {max} allowed: shorten it",
                shown(text),
                text.len()
            ),
        );
    }
}

/// Records a problem for a table of strings (`env`, `config`, labels) with
/// more than [`MAX_ENTRIES`] entries, a key longer than [`MAX_KEY_LEN`] or
/// a value longer than `max_value` bytes.
fn check_entries(
    problems: &mut Collector<'_>,
    span: Option<Range<usize>>,
    what: &str,
    entries: &BTreeMap<String, String>,
    max_value: usize,
    fix: &str,
) {
    check_len(
        problems,
        span.clone(),
        what,
        entries.len(),
        MAX_ENTRIES,
        "entries",
        fix,
    );
    for (key, value) in entries {
        if key.len() > MAX_KEY_LEN {
            problems.at(
                span.clone(),
                format!(
                    "{what} key {} is {} bytes long, more than the {MAX_KEY_LEN} allowed: shorten it",
                    shown(key),
                    key.len()
                ),
            );
        }
        if value.len() > max_value {
            problems.at(
                span.clone(),
                format!(
                    "{what} value of {} is {} bytes long, more than the {max_value} allowed: {fix}",
                    shown(key),
                    value.len()
                ),
            );
        }
    }
}

/// `text` quoted for a message, cut to its first 32 characters when longer,
/// so an oversized value does not fill the message.
fn shown(text: &str) -> String {
    const SHOWN: usize = 32;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{:?}...", text.get(..end).unwrap_or_default()),
        None => format!("{text:?}"),
    }
}

/// Reads each entry of a section (`components`, `volumes`) on its own,
/// reporting every bad entry.
fn read_section<T: for<'de> Deserialize<'de>>(
    doc: &Spanned<DeTable<'_>>,
    section: &str,
    problems: &mut Collector<'_>,
) {
    let Some((_, value)) = doc.get_ref().iter().find(|(k, _)| k.get_ref() == section) else {
        return;
    };
    let DeValue::Table(table) = value.get_ref() else {
        problems.at(
            Some(value.span()),
            format!("`{section}` must be a table: write [{section}.<name>] sections"),
        );
        return;
    };
    for (key, entry) in table.iter() {
        if let Err(err) = Name::new(key.get_ref().to_string()) {
            problems.at(Some(key.span()), err.to_string());
        }
        if let Err(err) = T::deserialize(entry.clone().into_deserializer()) {
            problems.toml_error(&err, entry.span());
        }
    }
}

/// Only reachable if the collector and serde disagree; keeps the parser
/// total without a panic.
fn unreachable_spec_error(file: &str) -> SpecError {
    SpecError {
        diagnostics: vec![crate::Diagnostic {
            file: file.to_string(),
            line: 1,
            column: 1,
            key: String::new(),
            message: "the spec could not be read".to_string(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "orders"

[components.api]
source = "api.wasm"
kind = "http"
route = "/orders"
replicas = 2
limits = { memory = "64MiB", fuel = 50_000_000, timeout = "2s", concurrency = 64 }
env = { LOG_LEVEL = "info" }
secrets = ["db-password"]
volumes = [{ name = "data", path = "/data" }]
placement = { labels = { region = "eu" }, spread = "zone" }
health = { interval = "5s", failure_threshold = 3 }

[components.billing]
source = "billing.wasm"
kind = "worker"
queue = "orders.created"
autoscale = { min = 0, max = 20, target_queue_depth = 100, idle = "60s" }

[volumes.data]
size = "1GiB"
"#;

    #[test]
    fn subjects_match_nats_wildcards() {
        assert!(subject_matches("orders.>", "orders.created"));
        assert!(subject_matches("orders.>", "orders.eu.created"));
        assert!(!subject_matches("orders.>", "orders"));
        assert!(subject_matches("orders.*", "orders.created"));
        assert!(!subject_matches("orders.*", "orders.eu.created"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.c"));
        assert!(!subject_matches("a.b", "a.b.c"));
        assert!(check_user_subject("orders.>", true).is_ok());
        assert!(check_user_subject("orders.>.x", true).is_err());
        assert!(check_user_subject("orders..x", true).is_err());
        assert!(check_user_subject("ord*ers", true).is_err());
    }

    #[test]
    fn user_subjects_use_a_safe_charset() {
        for good in [
            "orders",
            "orders.created",
            "Orders.EU-west_1.x",
            "a.b.c.d.e",
            "jobs.in",
        ] {
            assert_eq!(check_user_subject(good, false), Ok(()), "{good}");
            assert_eq!(check_user_subject(good, true), Ok(()), "{good}");
        }
        for pattern in [">", "*", "*.created", "orders.*", "orders.>", "*.*.>"] {
            assert_eq!(check_user_subject(pattern, true), Ok(()), "{pattern}");
            let err = check_user_subject(pattern, false).unwrap_err();
            assert!(matches!(err, SubjectError::Wildcard { .. }), "{pattern}");
            assert!(err.to_string().contains("has a wildcard"), "{err}");
        }
        assert!(
            check_user_subject("orders.>.x", true)
                .unwrap_err()
                .to_string()
                .contains("`>` before its last token")
        );
        assert_eq!(check_user_subject("", true), Err(SubjectError::Empty));
        for empty in [".", "orders.", ".orders", "orders..created"] {
            assert!(
                matches!(
                    check_user_subject(empty, true),
                    Err(SubjectError::EmptyToken { .. })
                ),
                "{empty}"
            );
        }
        for bad in [
            "ord*ers",
            "orders.>x",
            "a b",
            "a\tb",
            "a\nb",
            "é",
            "a/b",
            "a:b",
            "a$b",
            "a.b$",
            "a\r\nPUB",
            "a\0b",
            "or%ders",
        ] {
            let err = check_user_subject(bad, true).unwrap_err();
            assert!(matches!(err, SubjectError::BadToken { .. }), "{bad}: {err}");
            assert!(
                err.to_string()
                    .contains("ASCII letters, digits, '-' and '_'"),
                "{err}"
            );
        }
        let longest = "a".repeat(MAX_SUBJECT_LEN);
        assert_eq!(check_user_subject(&longest, false), Ok(()));
        let err = check_user_subject(&format!("{longest}b"), false).unwrap_err();
        assert!(
            err.to_string()
                .contains("257 bytes long, more than the 256 allowed"),
            "{err}"
        );
    }

    #[test]
    fn reserved_subjects_are_refused() {
        let refused = |subject: &str, why: &str| {
            for wildcards in [true, false] {
                let err = check_user_subject(subject, wildcards).unwrap_err();
                assert!(
                    matches!(
                        err,
                        SubjectError::Reserved { .. } | SubjectError::NamespacePrefix { .. }
                    ),
                    "{subject}: {err:?}"
                );
                let message = err.to_string();
                assert!(message.contains(why), "{subject}: {message}");
                assert!(message.contains(&format!("{subject:?}")), "{message}");
            }
        };
        for shoal in ["shoal", "shoal.v1.hosts.h1.cmd", "SHOAL.v1", "Shoal.x"] {
            refused(shoal, "Shoal's own control space");
        }
        for nats in [
            "$JS.API.STREAM.LIST",
            "$KV.bucket.key",
            "$SYS.REQ.SERVER.PING",
            "$O.x",
            "$G",
        ] {
            refused(nats, "belong to the NATS server and JetStream");
        }
        for inbox in [
            "_INBOX",
            "_INBOX.abc",
            "_INBOX_custom.x",
            "_inbox.x",
            "orders._INBOX.x",
        ] {
            refused(inbox, "NATS reply inboxes");
        }
        for namespace in ["ns", "ns.other.orders", "NS.other.x"] {
            refused(namespace, "already relative to the app's namespace");
        }
        for pattern in ["shoal.>", "$JS.>", "_INBOX.>", "ns.*.>"] {
            assert!(check_user_subject(pattern, true).is_err(), "{pattern}");
        }
        // Only as the first token: elsewhere these are ordinary words.
        for fine in [
            "orders.shoal",
            "orders.ns.x",
            "nsx.y",
            "shoals.x",
            "x.INBOX",
        ] {
            assert_eq!(check_user_subject(fine, false), Ok(()), "{fine}");
        }
    }

    #[test]
    fn specs_naming_reserved_subjects_are_refused() {
        let spec = |queue: &str, publish: &str| {
            format!(
                "name = \"t\"\n[components.w]\nsource = \"w.wasm\"\nkind = \"worker\"\nqueue = \"{queue}\"\nmessaging = {{ publish = [\"{publish}\"] }}\n"
            )
        };
        assert!(AppSpec::from_toml(&spec("jobs.in", ">"), "t.toml").is_ok());
        assert!(AppSpec::from_toml(&spec("jobs.in", "*"), "t.toml").is_ok());
        let all = problems(&spec("shoal.v1.hosts.h1.cmd", "$JS.API.>"))
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            all.contains("components.w.queue: queue subject \"shoal.v1.hosts.h1.cmd\" is refused: \"shoal\" is Shoal's own control space"),
            "{all}"
        );
        assert!(
            all.contains("components.w.messaging.publish: in messaging.publish, subject \"$JS.API.>\" is refused"),
            "{all}"
        );
        let all = problems(&spec("jobs.*", "ns.other.>"))
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            all.contains("queue subject \"jobs.*\" has a wildcard"),
            "{all}"
        );
        assert!(all.contains("leave the namespace out"), "{all}");
        let all = problems(&spec("_INBOX.x", "a.b c"))
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("NATS reply inboxes"), "{all}");
        assert!(all.contains("has the token \"b c\""), "{all}");
    }

    #[test]
    fn capability_grants_parse() {
        let text = r#"name = "t"
[components.w]
source = "w.wasm"
kind = "worker"
messaging = { publish = ["tools.>"] }
keyvalue = true
allowed_hosts = ["127.0.0.1:8080"]
"#;
        let spec = AppSpec::from_toml(text, "t.toml").unwrap();
        let w = spec.component("w").unwrap();
        assert!(w.messaging.as_ref().unwrap().allows("tools.x"));
        assert_eq!(w.keyvalue, Some(KeyValueGrant { retain: false }));
        let bad = text
            .replace("tools.>", "tools..>")
            .replace("keyvalue = true", "keyvalue = \"yes\"");
        let all = AppSpec::from_toml(&bad, "t.toml").unwrap_err().to_string();
        assert!(all.contains("keyvalue = true"), "{all}");
    }

    #[test]
    fn kinds_are_told_from_exports() {
        assert_eq!(
            ComponentKind::from_exports(["wasi:http/incoming-handler@0.2.3"]),
            Some(ComponentKind::Http)
        );
        assert_eq!(
            ComponentKind::from_exports([
                "shoal:workload/health@0.1.0",
                "shoal:workload/handler@0.1.0"
            ]),
            Some(ComponentKind::Worker)
        );
        assert_eq!(
            ComponentKind::from_exports(["wasi:http/incoming-handler@0.3.0"]),
            None
        );
        assert_eq!(
            ComponentKind::from_exports(["wasi:cli/run@0.2.0"]),
            Some(ComponentKind::Job)
        );
    }

    #[test]
    fn reads_the_design_example() {
        let spec = AppSpec::from_toml(GOOD, "app.toml").unwrap();
        assert_eq!(spec.name.as_str(), "orders");
        assert_eq!(spec.namespace.as_str(), "default");
        let api = spec.component("api").unwrap();
        assert_eq!(api.kind, ComponentKind::Http);
        assert_eq!(api.limits.memory, ByteSize::mib(64));
        assert_eq!(api.limits.fuel, Fuel::Units(50_000_000));
        assert_eq!(api.limits.timeout.get(), Duration::from_secs(2));
        let billing = spec.component("billing").unwrap();
        assert_eq!(billing.limits, Limits::default());
        assert_eq!(billing.autoscale.as_ref().unwrap().max, 20);
        assert_eq!(
            spec.volumes[&Name::new("data").unwrap()].size,
            ByteSize::mib(1024)
        );
    }

    fn problems(text: &str) -> Vec<Diagnostic> {
        AppSpec::from_toml(text, "bad.toml")
            .unwrap_err()
            .diagnostics
    }

    use crate::Diagnostic;

    #[test]
    fn malformed_toml_names_line_and_column() {
        let d = problems("name = \"a\"\n[components.api\nsource = 1\n");
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].file.as_str(), d[0].line), ("bad.toml", 2));
    }

    #[test]
    fn every_problem_is_reported_at_once_with_its_key() {
        let text = r#"name = "shop"
colour = "blue"

[components.api]
source = "a.wasm"
kind = "http"
route = "/"
replica = 3

[components.worker]
source = "w.wasm"
kind = "worker"
limits = { memory = "64XB" }

[components.Bad_Name]
source = "b.wasm"
kind = "robot"
"#;
        let d = problems(text);
        let rendered: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        let all = rendered.join("\n");
        assert!(
            all.contains("bad.toml:2:1: colour: unknown field `colour`"),
            "{all}"
        );
        assert!(
            all.contains("bad.toml:8:1: components.api.replica: unknown field `replica`"),
            "{all}"
        );
        assert!(
            all.contains("components.worker.limits.memory: invalid size \"64XB\""),
            "{all}"
        );
        assert!(all.contains("invalid name \"Bad_Name\""), "{all}");
        assert!(all.contains("unknown variant `robot`"), "{all}");
        assert!(d.len() >= 5, "{all}");
        // In file order.
        assert!(d.windows(2).all(|w| w[0].line <= w[1].line), "{all}");
    }

    #[test]
    fn semantic_problems_point_at_the_key() {
        let text = r#"name = "shop"
[components.api]
source = "a.wasm"
kind = "http"
[components.job]
source = "j.wasm"
kind = "job"
route = "/nope"
volumes = [{ name = "missing", path = "data" }]
limits = { memory = "16GiB", timeout = "0s" }
"#;
        let all = problems(text)
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            all.contains("bad.toml:4:8: components.api.kind: an http component needs a `route`"),
            "{all}"
        );
        assert!(
            all.contains("components.job.route: a job component takes no `route`"),
            "{all}"
        );
        assert!(all.contains("volume missing is not declared"), "{all}");
        assert!(
            all.contains("mount path \"data\" must be absolute"),
            "{all}"
        );
        assert!(
            all.contains("components.job.limits.memory: memory limit 16GiB"),
            "{all}"
        );
        assert!(all.contains("timeout must be longer than 0s"), "{all}");
    }

    #[test]
    fn restart_and_rollout_parse_with_defaults() {
        let text = r#"name = "t"
[components.web]
source = "w.wasm"
kind = "http"
route = "/"
rollout = { max_surge = 2, progress_deadline = "10s" }
health = { path = "/healthz" }
[components.job]
source = "j.wasm"
kind = "job"
restart = "never"
"#;
        let spec = AppSpec::from_toml(text, "t.toml").unwrap();
        let pods = spec.pods();
        let web = pods.iter().find(|p| p.name.as_str() == "web").unwrap();
        let job = pods.iter().find(|p| p.name.as_str() == "job").unwrap();
        assert_eq!(web.restart_policy(), RestartPolicy::Always);
        assert_eq!(job.restart_policy(), RestartPolicy::Never);
        let rollout = web.rollout();
        assert_eq!((rollout.max_surge, rollout.max_unavailable), (2, 0));
        assert_eq!(rollout.progress_deadline.get(), Duration::from_secs(10));
        assert_eq!(job.rollout(), RolloutSpec::default());
        assert_eq!(
            RestartPolicy::default_for(ComponentKind::Job),
            RestartPolicy::OnFailure
        );
    }

    #[test]
    fn bad_health_and_rollout_settings_are_refused() {
        let unknown = problems(
            "name = \"t\"\n[components.w]\nsource = \"w.wasm\"\nkind = \"worker\"\nrestart = \"sometimes\"\n",
        );
        assert!(
            unknown[0]
                .to_string()
                .contains("components.w.restart: unknown variant `sometimes`, expected one of `always`, `on-failure`, `never`"),
            "{unknown:?}"
        );
        let text = r#"name = "t"
[components.x]
source = "x.wasm"
kind = "worker"
health = { path = "/healthz", failure_threshold = 0 }
rollout = { max_surge = 0, max_unavailable = 0 }
"#;
        let all = problems(text)
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("health.path is for http components"), "{all}");
        assert!(
            all.contains("failure_threshold must be at least 1"),
            "{all}"
        );
        assert!(all.contains("cannot both be 0"), "{all}");
    }

    #[test]
    fn canary_rollouts_parse_and_bad_ones_are_refused() {
        let spec = AppSpec::from_toml(
            r#"name = "t"
[components.web]
source = "w.wasm"
kind = "http"
route = "/"
rollout = { strategy = "canary", steps = ["5%", "25%", "50%"], step_interval = "30s", analysis = { max_error_rate = "0.5%", max_p99 = "200ms", min_requests = 100 } }
"#,
            "app.toml",
        )
        .unwrap();
        let rollout = spec.components[&Name::new("web").unwrap()]
            .rollout
            .clone()
            .unwrap();
        assert!(rollout.is_canary());
        assert_eq!(
            rollout.steps,
            [Share::percent(5), Share::percent(25), Share::percent(50)]
        );
        assert_eq!(rollout.analysis.max_error_rate, Share::basis_points(50));
        assert_eq!(rollout.analysis.max_p99.get(), Duration::from_millis(200));
        for (rollout, wanted) in [
            (r#"{ strategy = "canary" }"#, "a canary needs its steps"),
            (
                r#"{ strategy = "canary", steps = ["25%", "5%"] }"#,
                "rollout.steps must rise",
            ),
            (
                r#"{ strategy = "canary", steps = ["100%"] }"#,
                "rollout.steps must rise",
            ),
            (r#"{ steps = ["5%"] }"#, "apply to a canary only"),
            (
                r#"{ strategy = "canary", steps = ["5"] }"#,
                "invalid share \"5\"",
            ),
            (
                r#"{ strategy = "blue-green" }"#,
                "unknown variant `blue-green`",
            ),
        ] {
            let all = problems(&format!(
                "name = \"t\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/\"\nrollout = {rollout}\n"
            ))
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
            assert!(all.contains(wanted), "{rollout}: {all}");
        }
        for (rollout, wanted) in [
            (
                r#"{ strategy = "shadow", share = "0%" }"#,
                "rollout.share must be above 0%",
            ),
            (
                r#"{ share = "10%" }"#,
                "rollout.share applies to a shadow only",
            ),
            (
                r#"{ strategy = "shadow", duration = "0s" }"#,
                "rollout.duration must be longer than 0s",
            ),
        ] {
            let all = problems(&format!(
                "name = \"t\"\n[components.web]\nsource = \"w.wasm\"\nkind = \"http\"\nroute = \"/\"\nrollout = {rollout}\n"
            ))
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
            assert!(all.contains(wanted), "{rollout}: {all}");
        }
        let shadow = RolloutSpec {
            strategy: RolloutStrategy::Shadow,
            ..RolloutSpec::default()
        };
        assert!(shadow.is_shadow() && shadow.is_staged() && !shadow.is_canary());
        assert_eq!(shadow.shadow_share(), Share::percent(10));
        assert_eq!(shadow.duration.get(), Duration::from_secs(300));
        let queue = problems(
            "name = \"t\"\n[components.w]\nsource = \"w.wasm\"\nkind = \"worker\"\nqueue = \"jobs\"\nrollout = { strategy = \"canary\", steps = [\"5%\"] }\n",
        );
        assert!(
            queue
                .iter()
                .any(|d| d.to_string().contains("pulled by its replicas, not routed")),
            "{queue:?}"
        );
    }

    /// A worker consuming a queue, so that `autoscale` applies.
    const WORKER: &str = "source = \"w.wasm\"\nkind = \"worker\"\nqueue = \"jobs.in\"\n";
    /// An http component.
    const HTTP: &str = "source = \"w.wasm\"\nkind = \"http\"\nroute = \"/\"\n";

    /// An app whose one component `w` is `body`; `body` may go on with
    /// more tables.
    fn app(body: &str) -> String {
        format!("name = \"t\"\n[components.w]\n{body}\n")
    }

    /// `n` inline-table entries `K0 = "v"`, `K1 = "v"`, ...
    fn entries(n: usize) -> String {
        (0..n)
            .map(|i| format!("K{i} = \"v\""))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `n` quoted strings made by `item`, comma-separated.
    fn list(n: usize, item: impl Fn(usize) -> String) -> String {
        (0..n)
            .map(|i| format!("\"{}\"", item(i)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    #[test]
    fn every_bound_accepts_its_limit_and_refuses_one_more() {
        let a = |n: usize| "a".repeat(n);
        let w = |line: String| app(&format!("{WORKER}{line}"));
        let h = |line: String| app(&format!("{HTTP}{line}"));
        let data = "\n[volumes.data]\n";
        // (at the limit, one over it, what the refusal says)
        let cases: Vec<(String, String, Vec<&str>)> = vec![
            (
                w("replicas = 10000".into()),
                w("replicas = 10001".into()),
                vec!["components.w.replicas: replicas = 10001 is out of range: allowed 0 to 10000"],
            ),
            (
                w("autoscale = { min = 10000, max = 10000 }".into()),
                w("autoscale = { min = 4294967295, max = 4294967295 }".into()),
                vec![
                    "components.w.autoscale.min: autoscale.min = 4294967295 is out of range: allowed 0 to 10000",
                    "components.w.autoscale.max: autoscale.max = 4294967295 is out of range: allowed 1 to 10000",
                ],
            ),
            (
                w("autoscale = { max = 1, target_queue_depth = 1000000 }".into()),
                w("autoscale = { max = 1, target_queue_depth = 1000001 }".into()),
                vec!["autoscale.target_queue_depth = 1000001 is out of range: allowed 1 to 1000000"],
            ),
            (
                h("autoscale = { max = 1, target_in_flight = 1000000 }".into()),
                h("autoscale = { max = 1, target_in_flight = 1000001 }".into()),
                vec!["autoscale.target_in_flight = 1000001 is out of range: allowed 1 to 1000000"],
            ),
            (
                w("autoscale = { max = 1, idle = \"24h\" }".into()),
                w("autoscale = { max = 1, idle = \"1441m\" }".into()),
                vec!["autoscale.idle = 1441m is out of range: allowed 1ms to 24h"],
            ),
            (
                w("limits = { timeout = \"1h\" }".into()),
                w("limits = { timeout = \"3601s\" }".into()),
                vec!["components.w.limits.timeout: limits.timeout = 3601s is out of range: allowed 1ms to 1h; do long work in steps"],
            ),
            (
                w("limits = { timeout = \"60m\" }".into()),
                w("limits = { timeout = \"18446744073709551615s\" }".into()),
                vec!["components.w.limits.timeout: duration \"18446744073709551615s\" is too long: the most Shoal reads is 168h"],
            ),
            (
                w("limits = { concurrency = 10000 }".into()),
                w("limits = { concurrency = 10001 }".into()),
                vec!["limits.concurrency = 10001 is out of range: allowed 1 to 10000; run more replicas instead"],
            ),
            (
                w("limits = { fuel = 100_000_000_000_000 }".into()),
                w("limits = { fuel = 100_000_000_000_001 }".into()),
                vec!["limits.fuel = 100000000000001 is out of range: allowed 1 to 100000000000000; no guest burns that much"],
            ),
            (
                w("health = { interval = \"1h\", timeout = \"1h\", failure_threshold = 100 }".into()),
                w("health = { interval = \"61m\", timeout = \"3601s\", failure_threshold = 101 }".into()),
                vec![
                    "health.interval = 61m is out of range: allowed 1ms to 1h",
                    "health.timeout = 3601s is out of range: allowed 1ms to 1h",
                    "health.failure_threshold = 101 is out of range: allowed 1 to 100",
                ],
            ),
            (
                h(format!("health = {{ path = \"/{}\" }}", a(MAX_PATH_LEN - 1))),
                h(format!("health = {{ path = \"/{}\" }}", a(MAX_PATH_LEN))),
                vec!["health.path \"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"... is 1025 bytes long, more than the 1024 allowed"],
            ),
            (
                w("rollout = { max_surge = 10000, max_unavailable = 10000, progress_deadline = \"24h\" }".into()),
                w("rollout = { max_surge = 10001, max_unavailable = 10001, progress_deadline = \"25h\" }".into()),
                vec![
                    "rollout.max_surge = 10001 is out of range: allowed 0 to 10000",
                    "rollout.max_unavailable = 10001 is out of range: allowed 0 to 10000",
                    "rollout.progress_deadline = 25h is out of range: allowed 1ms to 24h",
                ],
            ),
            (
                w("max_deliver = 100".into()),
                w("max_deliver = 101".into()),
                vec!["max_deliver = 101 is out of range: allowed 1 to 100"],
            ),
            (
                w(format!("env = {{ {} }}", entries(MAX_ENTRIES))),
                w(format!("env = {{ {} }}", entries(MAX_ENTRIES + 1))),
                vec!["components.w.env: env has 129 entries, more than the 128 allowed"],
            ),
            (
                w(format!("env = {{ {} = \"{}\" }}", a(MAX_KEY_LEN), a(MAX_ENV_VALUE_LEN))),
                w(format!("env = {{ {} = \"{}\" }}", a(MAX_KEY_LEN + 1), a(MAX_ENV_VALUE_LEN + 1))),
                vec![
                    "env key \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"... is 257 bytes long, more than the 256 allowed",
                    "is 4097 bytes long, more than the 4096 allowed: put long settings in `config`",
                ],
            ),
            (
                w(format!("config = {{ {}, big = \"{}\" }}", entries(MAX_ENTRIES - 1), a(MAX_CONFIG_VALUE_LEN))),
                w(format!("config = {{ {}, big = \"{}\" }}", entries(MAX_ENTRIES), a(MAX_CONFIG_VALUE_LEN + 1))),
                vec![
                    "config has 129 entries, more than the 128 allowed",
                    "config value of \"big\" is 65537 bytes long, more than the 65536 allowed",
                ],
            ),
            (
                w(format!("placement = {{ labels = {{ {}, zone = \"{}\" }}, spread = \"{}\" }}", entries(MAX_ENTRIES - 1), a(MAX_KEY_LEN), a(MAX_KEY_LEN))),
                w(format!("placement = {{ labels = {{ {}, zone = \"{}\" }}, spread = \"{}\" }}", entries(MAX_ENTRIES), a(MAX_KEY_LEN + 1), a(MAX_KEY_LEN + 1))),
                vec![
                    "components.w.placement.labels: placement.labels has 129 entries",
                    "placement.labels value of \"zone\" is 257 bytes long",
                    "components.w.placement.spread: placement.spread \"aaaa",
                ],
            ),
            (
                w(format!("secrets = [{}]", list(MAX_SECRETS, |i| format!("s{i}")))),
                w(format!("secrets = [{}]", list(MAX_SECRETS + 1, |i| format!("s{i}")))),
                vec!["secrets has 65 entries, more than the 64 allowed"],
            ),
            (
                w(format!("allowed_hosts = [{}, \"{}:8080\"]", list(MAX_ALLOWED_HOSTS - 1, |i| format!("h{i}")), a(MAX_HOST_LEN))),
                w(format!("allowed_hosts = [{}, \"{}:8080\"]", list(MAX_ALLOWED_HOSTS, |i| format!("h{i}")), a(MAX_HOST_LEN + 1))),
                vec![
                    "allowed_hosts has 65 entries, more than the 64 allowed",
                    "allowed_hosts entry \"aaaa",
                    "is 254 bytes long, more than the 253 allowed",
                ],
            ),
            (
                w(format!("messaging = {{ publish = [{}] }}", list(MAX_PUBLISH_PATTERNS, |i| format!("p{i}.>")))),
                w(format!("messaging = {{ publish = [{}] }}", list(MAX_PUBLISH_PATTERNS + 1, |i| format!("p{i}.>")))),
                vec!["components.w.messaging.publish: messaging.publish has 65 patterns, more than the 64 allowed"],
            ),
            (
                w(format!("messaging = {{ publish = [\"{}\"] }}", a(MAX_SUBJECT_LEN))),
                w(format!("messaging = {{ publish = [\"{}\"] }}", a(MAX_SUBJECT_LEN + 1))),
                vec!["is 257 bytes long, more than the 256 allowed: use fewer or shorter tokens"],
            ),
            (
                app(&format!("source = \"w.wasm\"\nkind = \"http\"\nroute = \"/{}\"\nhost = \"{}\"", a(MAX_PATH_LEN - 1), a(MAX_HOST_LEN))),
                app(&format!("source = \"w.wasm\"\nkind = \"http\"\nroute = \"/{}\"\nhost = \"{}\"", a(MAX_PATH_LEN), a(MAX_HOST_LEN + 1))),
                vec![
                    "components.w.route: route \"/aaaa",
                    "is 1025 bytes long, more than the 1024 allowed",
                    "components.w.host: host \"aaaa",
                ],
            ),
            (
                app(&format!("source = \"{}\"\nkind = \"worker\"", a(MAX_PATH_LEN))),
                app(&format!("source = \"{}\"\nkind = \"worker\"", a(MAX_PATH_LEN + 1))),
                vec!["components.w.source: source \"aaaa"],
            ),
            (
                w(format!("volumes = [{}]{data}", vec!["{ name = \"data\", path = \"/d\" }"; MAX_VOLUMES].join(", "))),
                w(format!("volumes = [{}]{data}", vec!["{ name = \"data\", path = \"/d\" }"; MAX_VOLUMES + 1].join(", "))),
                vec!["components.w.volumes: volumes has 17 mounts, more than the 16 allowed"],
            ),
            (
                w(format!("volumes = [{{ name = \"data\", path = \"/{}\" }}]{data}", a(MAX_PATH_LEN - 1))),
                w(format!("volumes = [{{ name = \"data\", path = \"/{}\" }}]{data}", a(MAX_PATH_LEN))),
                vec!["mount path \"/aaaa"],
            ),
            (
                w(format!("{data}size = \"1TiB\"")),
                w(format!("{data}size = \"1025GiB\"")),
                vec!["volumes.data.size: size = 1025GiB is out of range: allowed 0B to 1TiB"],
            ),
            (
                w((0..MAX_VOLUMES).map(|i| format!("\n[volumes.v{i}]\n")).collect()),
                w((0..=MAX_VOLUMES).map(|i| format!("\n[volumes.v{i}]\n")).collect()),
                vec!["the app has 17 volumes, more than the 16 allowed"],
            ),
            (
                w((1..MAX_COMPONENTS).map(|i| format!("\n[components.c{i}]\n{WORKER}")).collect()),
                w((1..=MAX_COMPONENTS).map(|i| format!("\n[components.c{i}]\n{WORKER}")).collect()),
                vec!["the app has 65 components, more than the 64 allowed: split it into several apps"],
            ),
        ];
        for (at_limit, over, expected) in cases {
            if let Err(err) = AppSpec::from_toml(&at_limit, "ok.toml") {
                panic!("at the limit, refused:\n{at_limit}\n{err}");
            }
            let all = match AppSpec::from_toml(&over, "bad.toml") {
                Ok(_) => panic!("over the limit, accepted:\n{over}"),
                Err(err) => err.to_string(),
            };
            for want in expected {
                assert!(all.contains(want), "wanted {want:?} in:\n{all}");
            }
        }
    }

    #[test]
    fn a_spec_file_has_a_size_bound() {
        let head = app(WORKER);
        let padded = |len: usize| format!("{head}#{}\n", "x".repeat(len - head.len() - 2));
        let at_limit = padded(MAX_SPEC_BYTES);
        assert_eq!(at_limit.len(), MAX_SPEC_BYTES);
        assert!(AppSpec::from_toml(&at_limit, "ok.toml").is_ok());
        let all = AppSpec::from_toml(&padded(MAX_SPEC_BYTES + 1), "big.toml")
            .unwrap_err()
            .to_string();
        assert!(
            all.contains("big.toml:1:1: the spec is 262145 bytes, more than the 262144 allowed"),
            "{all}"
        );
    }

    #[test]
    fn placement_reserves_memory_times_concurrency() {
        let spec = AppSpec::from_toml(
            &app(&format!(
                "{WORKER}pod = \"p\"\nlimits = {{ memory = \"64MiB\", concurrency = 10 }}\n[components.v]\n{WORKER}pod = \"p\"\nlimits = {{ memory = \"4GiB\", concurrency = 10000 }}"
            )),
            "t.toml",
        )
        .unwrap();
        let w = spec.component("w").unwrap();
        assert_eq!(w.reserved_memory(), 640 << 20);
        let v = spec.component("v").unwrap();
        assert_eq!(v.reserved_memory(), (4 << 30) * 10_000);
        let pods = spec.pods();
        assert_eq!(pods[0].reserved_memory(), (640 << 20) + (4 << 30) * 10_000);
        assert_eq!(pods[0].memory(), (64 << 20) + (4 << 30));
        let mut huge = w.clone();
        huge.limits.memory = ByteSize::bytes(u64::MAX);
        huge.limits.concurrency = u32::MAX;
        assert_eq!(huge.reserved_memory(), u64::MAX);
    }

    #[test]
    fn the_examples_are_inside_every_bound() {
        let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&examples).unwrap() {
            let file = entry.unwrap().path().join("app.toml");
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            if let Err(err) = AppSpec::from_toml(&text, &file.display().to_string()) {
                panic!("{err}");
            }
            seen += 1;
        }
        assert!(
            seen >= 9,
            "only {seen} examples found in {}",
            examples.display()
        );
    }

    #[test]
    fn an_app_needs_a_name_and_components() {
        let all = problems("namespace = \"x\"\n")
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("missing field `name`"), "{all}");
        let all = problems("name = \"x\"\n")
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(all.contains("no components"), "{all}");
    }
}
