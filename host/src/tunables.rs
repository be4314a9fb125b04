//! Every timing and sizing knob of the host, in one place, each with its
//! default and the reason for it.

use std::time::Duration;

/// How often the engine's epoch advances. Deadlines are measured in these
/// ticks, and a busy guest yields to the async runtime once per tick, so
/// this is both the deadline's precision and the longest a guest can hog a
/// worker thread without a pause.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Fuel units added to a store when a component's fuel limit is "off":
/// fuel is metered engine-wide, so "off" means "more than any deadline
/// allows a guest to burn".
pub const UNMETERED_FUEL: u64 = u64::MAX;

/// Longest guest log line kept; the rest of the line is cut and marked, so
/// a guest printing without newlines cannot grow the host's memory.
pub const MAX_LOG_LINE: usize = 16 * 1024;

/// Largest table (funcref elements) a guest may grow to.
pub const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Instances the pooling allocator keeps slots for (per host). Bounds the
/// number of invocations running at once across every component.
pub const POOL_INSTANCES: u32 = 1_000;

/// Largest linear memory a pooled slot can hold: the most any spec may ask
/// for (4 GiB, all a 32-bit memory addresses).
pub const POOL_MAX_MEMORY: usize = 4 << 30;

/// Bytes of each pooled linear memory reset in place (only the pages the
/// guest touched, where the kernel's `PAGEMAP_SCAN` tells which) rather
/// than returned to the kernel. Returning them costs a `madvise`, a TLB
/// shootdown on every core and a page fault per page on the next use: the
/// largest per-request cost under load before this was set. The price is
/// memory: a slot keeps up to this much resident between uses, and the
/// pool keeps at most 100 unused slots warm (wasmtime's default), so about
/// 200 MiB at most is held for reuse beyond the slots in use.
pub const POOL_KEEP_RESIDENT: usize = 2 << 20;

/// The same for each pooled table.
pub const POOL_TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Bytes a guest may buffer in one write to stdout/stderr.
pub const LOG_WRITE_BUDGET: usize = 64 * 1024;

/// Largest HTTP request body an ingress takes: a request whose
/// `Content-Length` is over it gets 413 before its body is read, and a
/// body without one that grows past it gets 413 when forwarded.
pub const MAX_HTTP_BODY: usize = 16 << 20;

/// Room kept for the headers in a forwarded request's NATS message: a body
/// longer than the server's `max_payload` less this gets 413 at once.
pub const FORWARD_HEADERS_ROOM: usize = 64 << 10;

/// How long an ingress waits for another host to answer a forwarded request.
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a graceful HTTP shutdown waits for requests in flight.
pub const HTTP_DRAIN: Duration = Duration::from_secs(5);

/// The wait before a stopped replica's first restart. Starting a component
/// takes milliseconds, so Shoal can retry far sooner than the 10 s a
/// container orchestrator waits.
pub const RESTART_BACKOFF_FIRST: Duration = Duration::from_millis(500);

/// The longest wait between restarts of a crash-looping replica.
pub const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// A run this long resets the back-off: the replica was healthy.
pub const RESTART_BACKOFF_RESET: Duration = Duration::from_secs(30);

/// Invocations in a row that trap before the replica counts as failed and
/// restarts under its policy. High enough that one poison message, tried
/// `max_deliver` times, never causes it.
pub const TRAPS_BEFORE_RESTART: u32 = 10;

/// How often a replica without health checks is looked at for trapping
/// invocations (a health-checked one is looked at every check).
pub const TRAP_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What a stopping replica waits, beyond its components' timeout, for its
/// subscriptions to drain and its work in flight to finish.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long an ingress holds a request for a component scaled to zero
/// while a replica starts.
pub const ACTIVATION_WAIT: Duration = Duration::from_secs(10);

/// How often a held request looks for the woken replica.
pub const ACTIVATION_POLL: Duration = Duration::from_millis(5);

/// How long a host that is shutting down keeps serving after announcing
/// it, so that the scheduler's replacements elsewhere are up before its
/// own replicas leave their queue groups.
pub const DRAIN_HANDOFF: Duration = Duration::from_secs(1);

/// The longest a host that is shutting down waits for its replicas to
/// finish the work they hold.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How long a host that is shutting down waits on NATS for each of its
/// last words (its announcement, its final heartbeat, its last log lines)
/// before it leaves without them: with NATS unreachable, a host told to
/// stop still stops.
pub const DRAIN_NATS_WAIT: Duration = Duration::from_secs(2);

/// Guest log lines per second a replica may write, all its invocations
/// together; lines beyond it are dropped and counted (see
/// [`LogBudget`](crate::logs::LogBudget)). Generous for request logging,
/// far below what a guest printing in a loop produces.
pub const LOG_BUDGET_LINES_PER_SEC: u32 = 200;

/// Guest log bytes per second a replica may write, with the same rule.
pub const LOG_BUDGET_BYTES_PER_SEC: u64 = 256 * 1024;

/// How much unused log budget a replica may save up for a burst: this
/// many seconds' worth of lines and of bytes (never less than one longest
/// line, [`MAX_LOG_LINE`]).
pub const LOG_BUDGET_BURST: Duration = Duration::from_secs(2);

/// How long an ingress connection may take to send a request's headers,
/// counted from its first byte. Closes slow-header ("slowloris")
/// connections that would otherwise hold a slot forever.
pub const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an ingress keep-alive connection may sit idle (no request in
/// flight, no byte of a new one) before it is closed. Kept above the 60 s
/// idle timeout common to load balancers, so that a proxy in front closes
/// an idle connection first and never sends a request down one that Shoal
/// is closing (nginx's `keepalive_timeout` default is the same 75 s).
pub const HTTP_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Ingress connections open at once; more are closed as soon as they are
/// accepted (with a `503` if the socket takes it at once), counted, and
/// logged at most once per [`HTTP_REFUSED_LOG_INTERVAL`]. With the common
/// open-file limit of 1024, accepting fails before this is reached: raise
/// `ulimit -n` along with this.
pub const HTTP_MAX_CONNECTIONS: usize = 1024;

/// The least time between two log lines about refused ingress connections.
pub const HTTP_REFUSED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Largest response body relayed for a request forwarded to another host;
/// a bigger one is answered `502`. (NATS's own `max_payload`, 1 MiB unless
/// the server raises it, bounds the reply message too: a replica answers
/// `502` itself when its response does not fit.)
pub const MAX_FORWARDED_RESPONSE_BODY: usize = 16 << 20;

/// How long a guest's outbound HTTP request waits for the host name to
/// resolve.
pub const OUTBOUND_DNS_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a guest's outbound HTTP request waits to connect (TCP and TLS),
/// and the most a guest may ask for in its request options.
pub const OUTBOUND_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a guest's outbound HTTP request waits for the first byte of
/// the response and between two chunks of its body, and the most a guest
/// may ask for. The invocation's own deadline usually comes first.
pub const OUTBOUND_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The first redelivery delay of a failed queue message; it doubles per
/// attempt up to [`QUEUE_MAX_BACKOFF`].
pub const QUEUE_FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// The longest redelivery delay of a failed queue message.
pub const QUEUE_MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Wait between attempts to reach a work queue that is not there yet.
pub const QUEUE_RETRY: Duration = Duration::from_secs(1);

/// How long one pull request for queue messages waits for them before it
/// is made again; also how long a stopping replica waits for messages
/// still on their way to it, to hand them back.
pub const QUEUE_PULL_WAIT: Duration = Duration::from_secs(1);

/// How often a queue invocation still running tells JetStream it is at
/// work, well within the shortest ack wait (the timeout plus a margin of
/// seconds).
pub const QUEUE_PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// Wait before subscribing again after NATS refused a subscription.
pub const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// Another host not heard from for this long is probably gone (three
/// missed heartbeats): a draining host does not count on it.
pub const PEER_TTL: Duration = Duration::from_secs(3);

/// How long the route table's follower waits before watching again after
/// its watch ended or could not start.
pub const ROUTES_REWATCH: Duration = Duration::from_secs(1);

/// What a replica answering a forwarded request allows beyond its
/// component's timeout for the response body to be read.
pub const FORWARD_REPLY_MARGIN: Duration = Duration::from_secs(1);

/// Wait after a failed accept (out of file descriptors and the like)
/// before the ingress accepts again.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// How often a host publishes the log lines it gathered: a host that dies
/// loses at most this long's lines, and those not yet acknowledged.
pub const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// A replica component's batch is published at once past this many bytes
/// (well under NATS's 1 MiB message limit, with the longest line).
pub const LOG_BATCH_BYTES: usize = 256 * 1024;

/// Lines waiting for the shipper at most; a guest's line past it is
/// dropped and counted, never waited for.
pub const LOG_CHANNEL_LINES: usize = 16_384;

/// Lines kept for another try when JetStream did not acknowledge them (the
/// stream is away): past this, they are dropped and counted.
pub const LOG_BUFFER_MAX_LINES: usize = 100_000;

/// How long a flush waits for JetStream to acknowledge a batch.
pub const LOG_ACK_TIMEOUT: Duration = Duration::from_secs(2);

/// Core dumps waiting to be stored at most; a trap past them keeps none.
pub const DUMP_UPLOADS_PENDING: usize = 4;

/// A core dump bigger than this is not kept (it would hold a guest's
/// whole linear memory).
pub const MAX_COREDUMP_BYTES: usize = 256 << 20;

/// How often spans are exported when `--otlp-endpoint` is given: a span
/// reaches the collector at most this long after it ends.
pub const SPAN_EXPORT_DELAY: Duration = Duration::from_secs(1);

/// Host calls one invocation records for `shoal invoke --trace` at most;
/// later ones are counted, not kept.
pub const MAX_RECORDED_CALLS: usize = 256;

/// A recorded call's target and error are cut to this many characters.
pub const MAX_CALL_ERROR_CHARS: usize = 200;

/// Shadow reports one heartbeat carries at most (each at most a few KiB
/// with its examples): a heartbeat stays bounded however many apps are
/// shadowed at once. Reports with nothing compared yet are not sent.
pub const MAX_SHADOW_REPORTS_PER_BEAT: usize = 8;
