//! Every timing knob of the command line, in one place, each with its
//! default and the reason for it.

use std::time::Duration;

/// How long a started nats-server may take to accept connections.
pub const NATS_START_TIMEOUT: Duration = Duration::from_secs(15);

/// How often `shoal up` looks whether its nats-server accepts connections.
pub const NATS_START_POLL: Duration = Duration::from_millis(50);

/// How long one attempt to connect to NATS may take.
pub const NATS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a process pings its NATS server when the connection is
/// quiet. Two pings without an answer and it drops the connection and
/// reconnects (to another node of a cluster, if there is one): a hung
/// server is left within about three of these, not the client's default of
/// minutes.
pub const NATS_PING_INTERVAL: Duration = Duration::from_secs(2);

/// How long a NATS request waits for its reply unless told otherwise.
pub const NATS_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopped nats-server may take to exit before it is killed.
pub const NATS_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long `shoal up` waits for the apps it applied to run.
pub const UP_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How often `rollout status --wait` and `shoal up` look again.
pub const WAIT_POLL: Duration = Duration::from_millis(250);

/// How long `shoal up` waits for its host and scheduler to stop.
pub const UP_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest client config, token or CA certificate file the command line
/// reads (1 MiB). Each is a few kilobytes at most, so anything larger is a
/// mistake (a wrong path, a binary) and is refused rather than read whole.
pub const CLIENT_FILE_MAX_BYTES: u64 = 1 << 20;

/// How long `shoal logs -f` waits before following again after its
/// connection dropped (a scheduler restart).
pub const FOLLOW_RETRY: Duration = Duration::from_secs(1);
