//! Every timing and sizing knob of the scheduler, in one place.

use std::time::Duration;

/// How often hosts heartbeat (the host side uses the same value).
pub const HEARTBEAT_INTERVAL: Duration = shoal_api::wire::HEARTBEAT_INTERVAL;

/// A host silent for this long is lost: its replicas are placed elsewhere.
pub const HOST_TIMEOUT: Duration = Duration::from_secs(3);

/// The most heartbeats read off the subscription at once; of several from
/// one host in such a batch, only the newest is parsed.
pub const HEARTBEAT_BATCH: usize = 256;

/// After a (re)start, the scheduler listens this long before acting, so it
/// knows every live host's replicas and neither duplicates nor stops any.
/// Two heartbeats and a margin. Skipped when no app is stored (a fresh
/// cluster): then no host runs anything a placement could duplicate.
pub const STARTUP_GRACE: Duration = Duration::from_millis(2_500);

/// The reconciler runs at once on any change and at least this often,
/// then looking at the apps with something due: starts unconfirmed for
/// too long, back-offs over, rollouts to follow, replicas pending.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(200);

/// Every app is reconciled at least this often, whether or not anything
/// was queued for it: the level-triggered net under the work queue.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(1);

/// How long a start command may go unconfirmed by a heartbeat before the
/// replica counts as missing again.
pub const START_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the leader lease lasts unrenewed: a scheduler that sees the
/// lease record unchanged for this long takes it over. Kubernetes' leader
/// election uses 15 s; Shoal's schedulers share one NATS cluster and take
/// over within 5 s.
pub const LEASE_DURATION: Duration = Duration::from_millis(2_500);

/// A leader that could not renew its lease for this long stops acting,
/// before anyone may take the lease over ([`LEASE_DURATION`]).
pub const LEASE_RENEW_DEADLINE: Duration = Duration::from_millis(1_500);

/// How often the leader renews its lease, and others look at it.
pub const LEASE_RETRY: Duration = Duration::from_millis(400);

/// A new leader waits this long before acting, so that the heartbeats of
/// hosts show the last commands of the leader before it. The first leader
/// of a cluster acts at once.
pub const LEADER_SETTLE: Duration = Duration::from_millis(500);

/// How often the leader announces its epoch to hosts.
pub const LEADER_ANNOUNCE_INTERVAL: Duration = Duration::from_secs(2);

/// How often each scheduler says it is there (`shoal get schedulers`).
pub const SCHEDULER_PRESENCE_INTERVAL: Duration = Duration::from_secs(2);

/// A scheduler that has not said it is there for this long is gone from
/// `shoal get schedulers`.
pub const SCHEDULER_PRESENCE_TTL: Duration = Duration::from_secs(10);

/// When more than half of the hosts (and at least two) fall silent at
/// once, the trouble is NATS, not the hosts: none is declared lost until
/// they return or the silence lasts this long.
pub const OUTAGE_BOUND: Duration = Duration::from_secs(60);

/// At most one host is declared lost per this interval, so a wave of
/// silent hosts is not evicted all at once.
pub const HOST_LOSS_INTERVAL: Duration = Duration::from_millis(500);

/// A replica that mounts volumes waits this long for its lost host to
/// come back (its data is there) before it is placed elsewhere without it.
pub const VOLUME_RETURN_WAIT: Duration = Duration::from_secs(30);

/// How long a host may take to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// Commands in flight at once, over all hosts.
pub const MAX_COMMANDS_IN_FLIGHT: usize = 512;

/// Commands in flight at once to one host: a host that does not answer
/// holds no more of [`MAX_COMMANDS_IN_FLIGHT`] than this.
pub const MAX_COMMANDS_PER_HOST: usize = 64;

/// After a failed start, wait this long before placing the replica again.
pub const START_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// Events kept per app in memory (and per app subject in the stream).
pub const EVENTS_PER_APP: usize = 100;

/// How long `invoke` through the API waits for a reply.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest component the API accepts.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// The most of a refusal's text (axum's, before a handler ran) put into
/// the API's JSON error.
pub const MAX_REJECTION_TEXT: usize = 8 << 10;

/// Added to a queue worker's timeout to get its consumer's ack wait: how
/// long a delivery may go unacknowledged before it is redelivered.
pub const QUEUE_ACK_MARGIN: Duration = Duration::from_secs(4);

/// How often the autoscaler reads queue depths.
pub const AUTOSCALE_INTERVAL: Duration = Duration::from_millis(250);

/// How long fewer replicas must be wanted (with work still waiting) before
/// the autoscaler scales down: a dip in the backlog is not a trend.
pub const SCALE_DOWN_WINDOW: Duration = Duration::from_secs(10);

/// How long an invocation waits for a replica that is still starting
/// before it answers "no replica is running".
pub const INVOKE_START_WAIT: Duration = Duration::from_secs(5);

/// How often a waiting invocation looks for a replica again.
pub const INVOKE_START_POLL: Duration = Duration::from_millis(50);

/// The most an app's key-value bucket holds. A put past it fails in the
/// guest with "the bucket is full"; nothing already stored is dropped.
pub const KV_BUCKET_MAX_BYTES: i64 = 64 << 20;

/// The largest value one key of an app's bucket holds.
pub const KV_MAX_VALUE_BYTES: i32 = 1 << 20;

/// The most one work-queue stream holds; a publish past it is refused
/// (its publisher sees the error) rather than old work dropped.
pub const QUEUE_STREAM_MAX_BYTES: i64 = 256 << 20;

/// The largest message a work queue takes: NATS's default `max_payload`.
/// The nats-server Shoal starts carries larger messages for HTTP between
/// hosts; a queue keeps the bound a guest's worker was written for.
pub const QUEUE_MAX_MESSAGE_BYTES: i32 = 1 << 20;

/// The most the dead-letter stream holds; the oldest letters go first.
pub const DEAD_LETTER_MAX_BYTES: i64 = 256 << 20;

/// The most the events stream holds; the oldest events go first.
pub const EVENTS_MAX_BYTES: i64 = 64 << 20;

/// The most the component store holds (every version of every component).
pub const COMPONENT_STORE_MAX_BYTES: i64 = 8 << 30;

/// The most the store of components compiled for the cluster holds:
/// machine code is a few times the size of its component.
pub const ARTIFACT_STORE_MAX_BYTES: i64 = 32 << 30;

/// Components the scheduler compiles for the cluster at once: a burst of
/// uploads waits its turn rather than taking every core from the API and
/// the reconciler.
pub const COMPILES_AT_ONCE: usize = 1;

/// How long loading the stored events waits for the next one before it
/// takes what it has.
pub const EVENTS_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Template generations remembered per pod: enough for `rollout undo` to
/// find every revision the apps bucket keeps.
pub const TEMPLATES_KEPT: usize = 32;

/// How long a client may take over its TLS handshake with the API before
/// the connection is dropped, so a silent client cannot hold a task and a
/// socket for ever.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After the API listener fails to accept (out of file descriptors, say),
/// wait this long before trying again rather than spinning.
pub const API_ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// On shutdown, how long open API connections get to finish their requests
/// before they are closed.
pub const API_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a token may live.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(366 * 86_400);

/// How long the first admin token lives: a year, so a new cluster's owner
/// is not locked out, yet it still expires.
pub const BOOTSTRAP_TOKEN_TTL: Duration = Duration::from_secs(365 * 86_400);

/// Versions of each token record the bucket keeps (made, then revoked).
pub const TOKENS_HISTORY: i64 = 2;

/// How long the audit trail keeps a record.
pub const AUDIT_MAX_AGE: Duration = Duration::from_secs(90 * 86_400);

/// The most the audit stream holds; the oldest records go first.
pub const AUDIT_MAX_BYTES: i64 = 256 << 20;

/// The most audit records one `shoal audit` returns (the newest).
pub const AUDIT_LIST_LIMIT: usize = 10_000;

/// How long listing the audit trail waits for the next record before it
/// returns what it has.
pub const AUDIT_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a namespace's logs are kept unless it says otherwise.
pub const LOGS_MAX_AGE: Duration = Duration::from_secs(7 * 86_400);

/// The most a namespace's logs stream holds unless it says otherwise; the
/// oldest lines go first.
pub const LOGS_MAX_BYTES: i64 = 256 << 20;

/// The most a namespace's core dumps take; past it, new dumps are refused
/// until old ones age out with the namespace's logs.
pub const DUMPS_MAX_BYTES: i64 = 512 << 20;

/// The most lines one read of the stored logs returns (the newest).
pub const LOGS_READ_MAX_LINES: usize = 100_000;

/// How long a read of the stored logs or events waits for the next message
/// before it counts as caught up.
pub const LOGS_WAIT: Duration = Duration::from_millis(250);

/// The largest compiled `--grep` pattern the logs API accepts.
pub const LOGS_GREP_MAX_BYTES: usize = 1 << 20;

/// Entries a streaming answer (logs, events) buffers ahead of a slow
/// client; past it the reader waits for the client.
pub const STREAM_BUFFER: usize = 256;

/// Lines `describe app` shows of each replica that is restarting,
/// crash-looping, exited or failed.
pub const DESCRIBE_LAST_LINES: usize = 10;

/// How far back `shoal top` can look.
pub const TOP_HISTORY: Duration = Duration::from_secs(15 * 60 + 30);

/// `shoal top` keeps every heartbeat's figures this far back ...
pub const TOP_FINE: Duration = Duration::from_secs(60);

/// ... and one per this much before that.
pub const TOP_COARSE: Duration = Duration::from_secs(10);

/// `shoal top` keeps samples at least this far apart: a host beats on
/// every change as well as on time, and under a burst of starts that is
/// many times a second.
pub const TOP_SPACING: Duration = Duration::from_millis(250);

/// The dashboard's charts: one point per this much ...
pub const CHART_STEP: Duration = Duration::from_secs(30);

/// ... this many points back (ten minutes, within [`TOP_HISTORY`]).
pub const CHART_POINTS: usize = 20;

/// The window `shoal top` shows without `--since`: the last beats.
pub const TOP_WINDOW: Duration = Duration::from_secs(2);

/// The longest object name an audit record keeps (names come from request
/// paths); longer ones are cut.
pub const AUDIT_NAME_MAX: usize = 256;

/// How often a scheduler whose watch of a bucket ended tries to watch it
/// again (meanwhile, without the tokens watch, it refuses calls: it could
/// miss a revocation).
pub const REWATCH_INTERVAL: Duration = Duration::from_secs(1);

/// How often a following stream (logs, events) checks that the token it
/// began with is still valid.
pub const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// The most copies Shoal's JetStream resources keep when left to choose:
/// three survive the loss of any one node, as Kubernetes' etcd does.
pub const MAX_COPIES: usize = 3;

/// How long a starting scheduler waits for JetStream to be ready (a fresh
/// cluster electing its leader) before giving up.
pub const JETSTREAM_READY_WAIT: Duration = Duration::from_secs(30);

/// How often a starting scheduler looks whether its NATS connection (made
/// in the background) is up yet.
pub const CONNECTED_POLL: Duration = Duration::from_millis(5);

/// How often a starting scheduler looks again while JetStream is not ready.
pub const JETSTREAM_RETRY: Duration = Duration::from_millis(250);
