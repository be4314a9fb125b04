//! The bound of every number, duration, size, list and string in an app
//! spec, in one place.
//!
//! [`AppSpec::from_toml`](crate::AppSpec::from_toml) checks each value
//! against its bound and reports every value over one, so the scheduler and
//! the hosts never see more. A spec comes from a tenant the cluster does not
//! trust: without these a single `apply` could ask the reconciler for four
//! billion replica ids, or a host for a deadline that overflows its clock.
//!
//! Each bound says why it is what it is. Raising one is a decision about
//! what the scheduler and every host must be able to carry, not a tweak.

use std::time::Duration;

use crate::ByteSize;

/// The largest spec file read, in bytes. An app is stored as one JetStream
/// key-value entry, and NATS refuses messages over its `max_payload`
/// (1 MiB by default); this leaves room for the stored record around the
/// spec, and keeps a hostile spec from costing much to parse.
pub const MAX_SPEC_BYTES: usize = 256 << 10;

/// The most components one app may have. Each one gets its own subjects,
/// stream, consumer and reconcile work.
pub const MAX_COMPONENTS: usize = 64;

/// The most volumes one app may declare, and the most mounts one component
/// may have. Each one is a directory and a quota on every host that runs
/// the app.
pub const MAX_VOLUMES: usize = 16;

/// The most replicas one component may ask for, directly, through
/// `autoscale.min`/`max`, or as `rollout.max_surge`/`max_unavailable`.
/// The reconciler makes an id and a placement decision for each one.
pub const MAX_REPLICAS: u32 = 10_000;

/// The largest whole number every JSON reader keeps exactly (2^53 − 1,
/// JavaScript's `Number.MAX_SAFE_INTEGER`): the bound of every count and
/// time the API reads from a query.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// The largest memory cap a component may ask for: all a 32-bit Wasm
/// memory can address.
pub const MAX_MEMORY: ByteSize = ByteSize::bytes(4 << 30);

/// The smallest memory cap: a Rust guest needs a few pages to start at all.
pub const MIN_MEMORY: ByteSize = ByteSize::mib(1);

/// The most invocations one replica may run at once. Each may hold the
/// whole memory limit (placement reserves memory × concurrency, see
/// [`ComponentSpec::reserved_memory`](crate::ComponentSpec::reserved_memory)),
/// and a host's instance pool holds far fewer slots than this.
pub const MAX_CONCURRENCY: u32 = 10_000;

/// The longest wall-clock deadline of one invocation. Longer work belongs in
/// a queue worker that does it in steps; a longer deadline also holds a
/// slot and its memory that long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60 * 60);

/// The largest fuel budget of one invocation. Fuel is a `u64` that the host
/// only subtracts from with saturation, so no value overflows; but a guest
/// cannot burn more than this within [`MAX_TIMEOUT`] even at ten billion
/// instructions a second, so a larger budget could never run out and is a
/// mistake: write `fuel = "off"` to rely on the deadline alone. It also
/// stays far below `i64::MAX`, which wasmtime counts fuel in.
pub const MAX_FUEL: u64 = 100_000_000_000_000;

/// The most deliveries of one queue message before it is dead-lettered.
/// A poison message is retried at most this often.
pub const MAX_DELIVER: u32 = 100;

/// The largest `autoscale.target_queue_depth` and
/// `autoscale.target_in_flight`. The autoscaler divides load by the target;
/// a target above this would never ask for a second replica.
pub const MAX_SCALE_TARGET: u32 = 1_000_000;

/// The longest `autoscale.idle`: a day without work is the longest a
/// scaled-up component keeps its replicas.
pub const MAX_IDLE: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest `health.interval`. A replica checked less often than hourly
/// is not being checked.
pub const MAX_HEALTH_INTERVAL: Duration = Duration::from_secs(60 * 60);

/// The longest `health.timeout`: one check may take as long as the longest
/// interval, no longer.
pub const MAX_HEALTH_TIMEOUT: Duration = MAX_HEALTH_INTERVAL;

/// The most consecutive failed health checks before Shoal acts.
pub const MAX_FAILURE_THRESHOLD: u32 = 100;

/// Core dumps one replica keeps at most (`debug.coredumps`).
pub const MAX_COREDUMPS: u32 = 100;

/// The longest `rollout.progress_deadline`: a rollout stuck for a day is
/// rolled back.
pub const MAX_PROGRESS_DEADLINE: Duration = Duration::from_secs(24 * 60 * 60);

/// The most steps a canary takes (`rollout.steps`).
pub const MAX_CANARY_STEPS: usize = 20;

/// The most invocations a canary step may ask for
/// (`rollout.analysis.min_requests`).
pub const MAX_CANARY_MIN_REQUESTS: u32 = 1_000_000;

/// The largest volume: every host that runs the app must be able to set
/// this much disk aside for it.
pub const MAX_VOLUME_SIZE: ByteSize = ByteSize::bytes(1 << 40);

/// The most entries in one component's `env`, in its `config`, and in its
/// `placement.labels`. Each entry is copied into every instance the
/// component starts.
pub const MAX_ENTRIES: usize = 128;

/// The longest key of an `env`, `config` or `placement.labels` entry, and
/// the longest `placement.labels` value and `placement.spread`, in bytes.
pub const MAX_KEY_LEN: usize = 256;

/// The longest `env` value, in bytes. Environment variables are short
/// settings; documents go in `config`.
pub const MAX_ENV_VALUE_LEN: usize = 4 << 10;

/// The longest `config` value, in bytes: room for a certificate or a small
/// JSON document. The whole spec is still bound by [`MAX_SPEC_BYTES`].
pub const MAX_CONFIG_VALUE_LEN: usize = 64 << 10;

/// The most secrets one component may read. Each is unsealed for every
/// instance.
pub const MAX_SECRETS: usize = 64;

/// The most entries in one component's `allowed_hosts`. Every outbound
/// request is matched against the list.
pub const MAX_ALLOWED_HOSTS: usize = 64;

/// The longest host name, in bytes: the DNS limit. Applies to `host`, and to
/// `allowed_hosts` entries before an optional `:port`.
pub const MAX_HOST_LEN: usize = 253;

/// The most `messaging.publish` patterns of one component. Every publish is
/// matched against the list.
pub const MAX_PUBLISH_PATTERNS: usize = 64;

/// The longest subject or subject pattern in a spec, in bytes. Shoal puts it
/// under a namespace prefix on the wire, and NATS limits a message's
/// control line (4 KiB by default).
pub const MAX_SUBJECT_LEN: usize = 256;

/// The longest path in a spec (`source`, `route`, `health.path`, a mount
/// path), in bytes.
pub const MAX_PATH_LEN: usize = 1024;

/// The longest duration Shoal reads at all, in a spec or a flag: a week.
/// Longer than every key's own bound, so a spec that asks for too much gets
/// the key's message, and short enough that adding it to any clock reading
/// cannot overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// The largest size Shoal reads at all, in a spec or a flag: 1 PiB. Larger
/// than every key's own bound and any host's memory, so sums of sizes stay
/// far from `u64::MAX`.
pub const MAX_SIZE: ByteSize = ByteSize::bytes(1 << 50);
