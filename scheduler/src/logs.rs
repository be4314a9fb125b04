//! Reading what JetStream keeps: replica logs (one stream per namespace,
//! with that namespace's retention) and events, once or following.
//!
//! Readers are ordered consumers, made per request and gone with it: a
//! follower sees lines of replicas started after it began (the filter is
//! the app's subjects, not a list of replicas), and one that lost its
//! connection resumes after the last [`LogCursor`] it saw.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use regex::Regex;
use shoal_api::logs::{LogBatch, LogCursor, LogEntry};
use shoal_api::resources::{Event, LogRetention};
use shoal_api::{Name, subjects};
use tokio::sync::mpsc;

use crate::SchedulerError;
use crate::jetstream::JetStream;
use crate::store::unavailable;
use crate::tunables::{LOGS_MAX_AGE, LOGS_MAX_BYTES, LOGS_READ_MAX_LINES, LOGS_WAIT};

/// Makes sure `namespace`'s logs stream exists with `retention` (or the
/// defaults, [`LOGS_MAX_AGE`] and [`LOGS_MAX_BYTES`]); the oldest lines go
/// first when it is full.
pub async fn ensure_stream(
    js: &JetStream,
    namespace: &Name,
    retention: &LogRetention,
) -> Result<(), SchedulerError> {
    let config = js.stream(stream::Config {
        name: subjects::logs_stream(namespace),
        description: Some(format!("Shoal logs of namespace {namespace}")),
        subjects: vec![subjects::namespace_logs(namespace)],
        max_age: retention.max_age.map_or(LOGS_MAX_AGE, |d| d.get()),
        max_bytes: retention.max_bytes.map_or(LOGS_MAX_BYTES, |b| {
            i64::try_from(b.as_u64()).unwrap_or(i64::MAX)
        }),
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        ..Default::default()
    });
    match js.get_stream(config.name.clone()).await {
        Ok(_) => js.update_stream(config).await.map(|_| ()),
        Err(_) => js.create_stream(config).await.map(|_| ()),
    }
    .map_err(|e| unavailable(&format!("making the logs stream of {namespace}"), e))
}

/// Removes `namespace`'s logs stream.
pub async fn delete_stream(js: &jetstream::Context, namespace: &Name) {
    if let Err(e) = js.delete_stream(subjects::logs_stream(namespace)).await {
        tracing::warn!(%namespace, error = %e, "cannot delete the logs stream");
    }
}

/// What to read.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Only this component.
    pub component: Option<Name>,
    /// Only this replica (`pod-N`, or the whole `ns/app/pod-N`).
    pub replica: Option<String>,
    /// Only lines written since then (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only lines after this cursor (a follower resuming).
    pub after: Option<LogCursor>,
    /// Only the last N lines (of those before a follow begins).
    pub tail: Option<usize>,
    /// Only lines matching.
    pub grep: Option<Regex>,
    /// Only lines of each replica's run before its latest.
    pub previous: bool,
    /// Keep going: send new lines as they come.
    pub follow: bool,
}

impl LogQuery {
    fn keeps(&self, entry: &LogEntry) -> bool {
        if self.after.is_some_and(|after| entry.cursor <= after) {
            return false;
        }
        if self.since_ms.is_some_and(|since| entry.at_ms < since) {
            return false;
        }
        if let Some(replica) = &self.replica {
            let full = entry.replica.to_string();
            let short = format!("{}-{}", entry.replica.pod, entry.replica.index);
            if replica != &full && replica != &short {
                return false;
            }
        }
        self.grep.as_ref().is_none_or(|re| re.is_match(&entry.text))
    }
}

fn entries(seq: u64, batch: LogBatch) -> impl Iterator<Item = LogEntry> {
    batch
        .lines
        .into_iter()
        .enumerate()
        .map(move |(index, line)| LogEntry {
            at_ms: line.at_ms,
            replica: batch.replica.clone(),
            component: batch.component.clone(),
            incarnation: batch.incarnation,
            host: batch.host.clone(),
            stream: line.stream,
            text: line.text,
            cursor: LogCursor {
                seq,
                index: u32::try_from(index).unwrap_or(u32::MAX),
            },
        })
}

/// Sends the log lines of `app` in `namespace` that `query` asks for to
/// `out`, oldest first; following, until `out` is closed.
pub async fn read(
    js: &jetstream::Context,
    namespace: &Name,
    app: &Name,
    query: LogQuery,
    out: mpsc::Sender<LogEntry>,
) -> Result<(), SchedulerError> {
    let failed = |e: &dyn std::fmt::Display| {
        SchedulerError::Unavailable(format!("reading the logs of {namespace}/{app}: {e}"))
    };
    let stream = js
        .get_stream(subjects::logs_stream(namespace))
        .await
        .map_err(|e| failed(&e))?;
    let deliver_policy = match (query.after, query.since_ms) {
        (Some(after), _) => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: after.seq,
        },
        (None, Some(since)) => consumer::DeliverPolicy::ByStartTime {
            start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(since) * 1_000_000,
            )
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        },
        (None, None) => consumer::DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy,
            filter_subject: subjects::app_logs(namespace, app, query.component.as_ref()),
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
    // The backlog first: everything stored when the read began.
    let mut backlog: VecDeque<LogEntry> = VecDeque::new();
    let caught_up = consumer_is_empty(&mut messages, &query, &mut backlog).await?;
    let mut backlog: Vec<LogEntry> = backlog.into();
    if query.previous {
        let mut latest: HashMap<String, u32> = HashMap::new();
        for e in &backlog {
            let run = latest.entry(e.replica.to_string()).or_default();
            *run = (*run).max(e.incarnation);
        }
        backlog.retain(|e| {
            latest
                .get(&e.replica.to_string())
                .is_some_and(|&last| last > 0 && e.incarnation == last - 1)
        });
    }
    if let Some(tail) = query.tail {
        let skip = backlog.len().saturating_sub(tail);
        backlog.drain(..skip);
    }
    for entry in backlog {
        if out.send(entry).await.is_err() {
            return Ok(());
        }
    }
    if !query.follow || !caught_up {
        return Ok(());
    }
    loop {
        let next = tokio::select! {
            next = messages.next() => next,
            () = out.closed() => return Ok(()),
        };
        let Some(Ok(msg)) = next else {
            return Err(failed(&"the stream ended"));
        };
        let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        let Ok(batch) = serde_json::from_slice::<LogBatch>(&msg.payload) else {
            continue;
        };
        for entry in entries(seq, batch).filter(|e| query.keeps(e)) {
            if out.send(entry).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Reads what the consumer holds now into `backlog` (the newest
/// [`LOGS_READ_MAX_LINES`] that `query` keeps). False if it stopped at the
/// line limit's time bound instead of catching up.
async fn consumer_is_empty(
    messages: &mut consumer::pull::Ordered,
    query: &LogQuery,
    backlog: &mut VecDeque<LogEntry>,
) -> Result<bool, SchedulerError> {
    loop {
        let next = match tokio::time::timeout(LOGS_WAIT, messages.next()).await {
            Err(_) => return Ok(true),
            Ok(next) => next,
        };
        let Some(Ok(msg)) = next else {
            return Ok(false);
        };
        let info = msg.info().ok().map(|i| (i.stream_sequence, i.pending));
        let (seq, pending) = info.unwrap_or((0, 0));
        if let Ok(batch) = serde_json::from_slice::<LogBatch>(&msg.payload) {
            for entry in entries(seq, batch).filter(|e| query.keeps(e)) {
                if backlog.len() == LOGS_READ_MAX_LINES {
                    backlog.pop_front();
                }
                backlog.push_back(entry);
            }
        }
        if pending == 0 {
            return Ok(true);
        }
    }
}

/// Sends the stored events of `subject` (one app's, or every app's) since
/// `since_ms` to `out`, oldest first; following, until `out` is closed.
pub async fn read_events(
    js: &jetstream::Context,
    subject: String,
    since_ms: u64,
    follow: bool,
    keep: impl Fn(&Event) -> bool,
    out: mpsc::Sender<Event>,
) -> Result<(), SchedulerError> {
    let failed =
        |e: &dyn std::fmt::Display| SchedulerError::Unavailable(format!("reading the events: {e}"));
    let stream = js
        .get_stream(subjects::EVENTS_STREAM)
        .await
        .map_err(|e| failed(&e))?;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(since_ms) * 1_000_000,
                )
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
            },
            filter_subject: subject,
            ..Default::default()
        })
        .await
        .map_err(|e| failed(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| failed(&e))?;
    let mut caught_up = false;
    loop {
        let wait = if caught_up || follow {
            Duration::MAX
        } else {
            LOGS_WAIT
        };
        let next = tokio::select! {
            next = tokio::time::timeout(wait, messages.next()) => next,
            () = out.closed() => return Ok(()),
        };
        let msg = match next {
            Err(_) => return Ok(()),
            Ok(Some(Ok(msg))) => msg,
            Ok(_) => return Err(failed(&"the stream ended")),
        };
        let pending = msg.info().map(|i| i.pending).unwrap_or(0);
        if let Ok(event) = serde_json::from_slice::<Event>(&msg.payload)
            && event.at_ms >= since_ms
            && keep(&event)
            && out.send(event).await.is_err()
        {
            return Ok(());
        }
        if pending == 0 {
            caught_up = true;
            if !follow {
                return Ok(());
            }
        }
    }
}
