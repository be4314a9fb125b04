//! Replica logs: the batches hosts publish to JetStream, and the entries
//! the API streams to `shoal logs`.
//!
//! A host publishes one [`LogBatch`] per replica component at a time, on
//! [`subjects::logs`](crate::subjects::logs), into its namespace's logs
//! stream ([`subjects::logs_stream`](crate::subjects::logs_stream)). The
//! API flattens batches into [`LogEntry`]s, each with a [`LogCursor`] (the
//! stream sequence and the index in the batch) that a follower resumes
//! from after a dropped connection, so no line is shown twice or lost.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::Name;
use crate::wire::{HostId, ReplicaId};

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// The guest's standard output.
    Stdout,
    /// The guest's standard error.
    Stderr,
    /// Shoal, about the replica: started, ready, trapped, restarting,
    /// stopped.
    Lifecycle,
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
            LogStream::Lifecycle => "lifecycle",
        })
    }
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// When it was written, in ms since the epoch.
    pub at_ms: u64,
    /// Which stream.
    pub stream: LogStream,
    /// The text, without its newline.
    pub text: String,
}

/// Lines of one replica's component, as a host publishes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogBatch {
    /// The host that ran it.
    pub host: HostId,
    /// The replica.
    pub replica: ReplicaId,
    /// The component.
    pub component: Name,
    /// Which run of the replica on that host: 0 for the first, one more
    /// after each restart.
    pub incarnation: u32,
    /// The lines, oldest first.
    pub lines: Vec<LogRecord>,
}

/// Where a line sits in its namespace's logs stream.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub struct LogCursor {
    /// The stream sequence of its batch.
    pub seq: u64,
    /// Its index in the batch.
    pub index: u32,
}

impl fmt::Display for LogCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.seq, self.index)
    }
}

impl std::str::FromStr for LogCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || format!("{text:?} is not a log cursor (SEQ:INDEX)");
        let (seq, index) = text.split_once(':').ok_or_else(bad)?;
        Ok(LogCursor {
            seq: seq.parse().map_err(|_| bad())?,
            index: index.parse().map_err(|_| bad())?,
        })
    }
}

/// One line as `GET /v1/logs/...` streams it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    /// When it was written, in ms since the epoch.
    pub at_ms: u64,
    /// The replica.
    pub replica: ReplicaId,
    /// The component.
    pub component: Name,
    /// Which run of the replica.
    pub incarnation: u32,
    /// The host that ran it.
    pub host: HostId,
    /// Which stream.
    pub stream: LogStream,
    /// The text.
    pub text: String,
    /// Where it sits: resume after it with `after=`.
    pub cursor: LogCursor,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_by_sequence_then_index() {
        let a = LogCursor { seq: 7, index: 2 };
        assert_eq!("7:2".parse::<LogCursor>(), Ok(a));
        assert!(a < LogCursor { seq: 7, index: 3 });
        assert!(a < LogCursor { seq: 8, index: 0 });
        assert!("7".parse::<LogCursor>().is_err());
    }
}
