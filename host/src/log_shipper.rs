//! Ships every replica's log lines to JetStream: guest stdout and stderr,
//! and Shoal's own lifecycle lines about the replica.
//!
//! A guest's line goes into a bounded channel (the guest never waits on
//! it); one task gathers lines into a [`LogBatch`] per replica component
//! and publishes each batch to its namespace's logs stream every
//! [`LOG_FLUSH_INTERVAL`], or sooner when a batch is full, and waits for
//! JetStream's acknowledgement. A batch that is not acknowledged is kept
//! and sent again with the next flush, up to [`LOG_BUFFER_MAX_LINES`]
//! lines; past that, lines are dropped and counted, never waited for. So a
//! host that dies loses at most the lines of its last flush interval and
//! those not yet acknowledged.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_api::logs::{LogBatch, LogRecord, LogStream};
use shoal_api::wire::{HostId, ReplicaId, now_ms};
use shoal_api::{Name, subjects};
use tokio::sync::{mpsc, watch};

use crate::logs::{LogLine, LogSink, Stream, TracingSink};
use crate::tunables::{
    DRAIN_NATS_WAIT, LOG_ACK_TIMEOUT, LOG_BATCH_BYTES, LOG_BUFFER_MAX_LINES, LOG_CHANNEL_LINES,
    LOG_FLUSH_INTERVAL,
};

/// One line on its way.
struct Shipped {
    key: BatchKey,
    record: LogRecord,
}

/// Which batch a line belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BatchKey {
    replica: ReplicaId,
    component: Name,
    incarnation: u32,
}

/// The host's log shipper.
pub struct LogShipper {
    tx: mpsc::Sender<Shipped>,
    dropped: AtomicU64,
}

impl LogShipper {
    /// Starts shipping over `nats` as host `host` until `stop`; the lines
    /// gathered by then are flushed once more on the way out.
    pub fn start(
        nats: async_nats::Client,
        host: HostId,
        stop: watch::Receiver<bool>,
    ) -> (Arc<LogShipper>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(LOG_CHANNEL_LINES);
        let shipper = Arc::new(LogShipper {
            tx,
            dropped: AtomicU64::new(0),
        });
        let task = tokio::spawn(ship(nats, host, rx, stop, shipper.clone()));
        (shipper, task)
    }

    /// Lines dropped so far (the channel or the buffer was full).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The log of one run of `replica`.
    pub fn replica(self: &Arc<Self>, replica: &ReplicaId, incarnation: u32) -> ReplicaLog {
        ReplicaLog {
            shipper: self.clone(),
            replica: replica.clone(),
            incarnation,
        }
    }

    fn send(&self, key: BatchKey, stream: LogStream, text: String) {
        let shipped = Shipped {
            key,
            record: LogRecord {
                at_ms: now_ms(),
                stream,
                text,
            },
        };
        if self.tx.try_send(shipped).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One run of one replica: hands out its components' sinks and writes its
/// lifecycle lines.
#[derive(Clone)]
pub struct ReplicaLog {
    shipper: Arc<LogShipper>,
    replica: ReplicaId,
    incarnation: u32,
}

impl ReplicaLog {
    /// Where `component`'s guest output goes: the stream, and the host's
    /// own log as before.
    pub fn sink(&self, component: &Name) -> Arc<dyn LogSink> {
        Arc::new(ComponentLog {
            shipper: self.shipper.clone(),
            key: self.key(component),
        })
    }

    /// A line from Shoal about the replica, filed under each of
    /// `components` (so that reading one component's logs shows them).
    pub fn lifecycle<'a>(&self, components: impl IntoIterator<Item = &'a Name>, text: &str) {
        for component in components {
            self.shipper
                .send(self.key(component), LogStream::Lifecycle, text.to_string());
        }
    }

    fn key(&self, component: &Name) -> BatchKey {
        BatchKey {
            replica: self.replica.clone(),
            component: component.clone(),
            incarnation: self.incarnation,
        }
    }
}

/// A component's sink.
struct ComponentLog {
    shipper: Arc<LogShipper>,
    key: BatchKey,
}

impl LogSink for ComponentLog {
    fn line(&self, line: LogLine) {
        let stream = match line.stream {
            Stream::Stdout => LogStream::Stdout,
            Stream::Stderr => LogStream::Stderr,
            Stream::Lifecycle => LogStream::Lifecycle,
        };
        self.shipper
            .send(self.key.clone(), stream, line.text.clone());
        TracingSink.line(line);
    }
}

/// Lines waiting for a flush, by batch.
#[derive(Default)]
struct Pending {
    batches: HashMap<BatchKey, (Vec<LogRecord>, usize)>,
    lines: usize,
}

impl Pending {
    fn add(&mut self, shipped: Shipped) -> bool {
        let bytes = shipped.record.text.len();
        let (records, size) = self.batches.entry(shipped.key).or_default();
        records.push(shipped.record);
        *size += bytes;
        self.lines += 1;
        *size >= LOG_BATCH_BYTES
    }
}

async fn ship(
    nats: async_nats::Client,
    host: HostId,
    mut rx: mpsc::Receiver<Shipped>,
    mut stop: watch::Receiver<bool>,
    shipper: Arc<LogShipper>,
) {
    let js = async_nats::jetstream::new(nats);
    let mut pending = Pending::default();
    let mut tick = tokio::time::interval(LOG_FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Stopping comes first: with NATS away each flush waits out its
        // acknowledgements, and lines and ticks are always ready, so an
        // unbiased choice could put the final flush off again and again.
        tokio::select! {
            biased;
            () = async { let _ = stop.wait_for(|s| *s).await; } => break,
            line = rx.recv() => match line {
                Some(shipped) => {
                    if pending.add(shipped) {
                        flush(&js, &host, &mut pending, &shipper).await;
                    }
                }
                None => break,
            },
            _ = tick.tick() => flush(&js, &host, &mut pending, &shipper).await,
        }
    }
    while let Ok(shipped) = rx.try_recv() {
        pending.add(shipped);
    }
    // The last lines, within a bound: a host told to stop while NATS is
    // away must still stop, and say what it could not store.
    let last = pending.lines;
    let flushed = tokio::time::timeout(DRAIN_NATS_WAIT, flush(&js, &host, &mut pending, &shipper))
        .await
        .is_ok();
    // Cut off mid-flush, any of the last lines may be missing.
    let lost = if flushed { pending.lines } else { last };
    if lost > 0 {
        shipper.dropped.fetch_add(lost as u64, Ordering::Relaxed);
        tracing::warn!(
            lines = lost,
            "NATS is unreachable: up to {lost} last log lines of this host's replicas were not stored"
        );
    }
}

/// Publishes every pending batch and waits for the acknowledgements;
/// keeps what was not acknowledged for the next flush, within bounds.
async fn flush(
    js: &async_nats::jetstream::Context,
    host: &HostId,
    pending: &mut Pending,
    shipper: &LogShipper,
) {
    if pending.lines == 0 {
        return;
    }
    let batches = std::mem::take(&mut pending.batches);
    pending.lines = 0;
    let mut acks = Vec::new();
    for (key, (lines, size)) in batches {
        let subject = subjects::logs(&key.replica.namespace, &key.replica.app, &key.component);
        let batch = LogBatch {
            host: host.clone(),
            replica: key.replica.clone(),
            component: key.component.clone(),
            incarnation: key.incarnation,
            lines,
        };
        let Ok(payload) = serde_json::to_vec(&batch) else {
            continue;
        };
        let ack = js.publish(subject, payload.into()).await;
        acks.push((key, batch.lines, size, Some(ack)));
    }
    // Every batch's acknowledgement is awaited at once: a flush takes at
    // most LOG_ACK_TIMEOUT however many batches NATS leaves unanswered.
    let stored = futures::future::join_all(acks.iter_mut().map(|(_, _, _, ack)| async move {
        match ack.take() {
            Some(Ok(ack)) => matches!(
                tokio::time::timeout(LOG_ACK_TIMEOUT, ack.into_future()).await,
                Ok(Ok(_))
            ),
            _ => false,
        }
    }))
    .await;
    for ((key, lines, size, _), stored) in acks.into_iter().zip(stored) {
        if stored {
            continue;
        }
        if pending.lines + lines.len() > LOG_BUFFER_MAX_LINES {
            shipper
                .dropped
                .fetch_add(lines.len() as u64, Ordering::Relaxed);
            tracing::warn!(replica = %key.replica, lines = lines.len(), "log lines dropped: the logs stream did not take them and the buffer is full");
            continue;
        }
        pending.lines += lines.len();
        let (kept, kept_size) = pending.batches.entry(key).or_default();
        let mut lines = lines;
        lines.append(kept);
        *kept = lines;
        *kept_size += size;
    }
}
