//! Guest stdout and stderr, captured line by line and tagged with the
//! component and invocation they came from.
//!
//! A guest writes bytes; the host cuts them into lines and hands each line
//! to a [`LogSink`]. Output not ended by a newline is delivered when the
//! invocation ends. Lines longer than [`MAX_LOG_LINE`] are cut.
//!
//! Every replica's output goes through a [`LogBudget`]: a token bucket of
//! lines per second and one of bytes per second, shared by all the
//! invocations of the replica. A line over the budget is dropped, never
//! waited for (the guest does not block on its own logging), and counted;
//! when lines pass again, one marker line says how many were dropped.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::tunables::{
    LOG_BUDGET_BURST, LOG_BUDGET_BYTES_PER_SEC, LOG_BUDGET_LINES_PER_SEC, LOG_WRITE_BUDGET,
    MAX_LOG_LINE,
};

/// Which of the guest's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Shoal, about the replica (a trap, a restart): not the guest's.
    Lifecycle,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Lifecycle => "lifecycle",
        })
    }
}

/// One line a guest wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The component that wrote it.
    pub component: Arc<str>,
    /// The invocation it belongs to, unique per runtime.
    pub invocation: u64,
    /// The stream it was written to.
    pub stream: Stream,
    /// The line, without its newline; invalid UTF-8 is replaced.
    pub text: String,
}

/// Where guest log lines go.
pub trait LogSink: Send + Sync + 'static {
    /// Takes one line. Called from the thread running the guest: keep it quick.
    fn line(&self, line: LogLine);
}

/// Sends guest lines to `tracing` under the target `guest`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl LogSink for TracingSink {
    fn line(&self, line: LogLine) {
        tracing::info!(
            target: "guest",
            component = %line.component,
            invocation = line.invocation,
            stream = %line.stream,
            "{}",
            line.text
        );
    }
}

/// Keeps every line in memory; for tests and for `shoal run`'s own output.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    lines: Arc<Mutex<Vec<LogLine>>>,
}

impl MemorySink {
    /// The lines taken so far.
    pub fn lines(&self) -> Vec<LogLine> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl LogSink for MemorySink {
    fn line(&self, line: LogLine) {
        if let Ok(mut lines) = self.lines.lock() {
            lines.push(line);
        }
    }
}

/// A replica's allowance of guest log output: [`LOG_BUDGET_LINES_PER_SEC`]
/// lines and [`LOG_BUDGET_BYTES_PER_SEC`] bytes per second by default, with
/// bursts of up to [`LOG_BUDGET_BURST`] worth of either.
///
/// Cheap to clone: clones share one bucket, so one budget handed to every
/// invocation of a replica bounds the replica as a whole, however many
/// invocations run at once.
///
/// Why a token bucket and dropping rather than back-pressure: a guest that
/// logs in a loop must neither grow the host's memory nor the log stream,
/// and must not be slowed by a log pipeline it does not control. Dropping
/// with a count keeps both the host and the guest's latency predictable,
/// and the marker line tells whoever reads the logs that lines are missing.
#[derive(Clone)]
pub struct LogBudget {
    inner: Arc<BudgetInner>,
}

struct BudgetInner {
    lines_per_sec: f64,
    bytes_per_sec: f64,
    max_lines: f64,
    max_bytes: f64,
    state: Mutex<Bucket>,
    dropped: AtomicU64,
}

/// The tokens left, as of `at`, and the lines dropped since a line last
/// passed.
struct Bucket {
    lines: f64,
    bytes: f64,
    at: Instant,
    unreported: u64,
}

/// What the budget says about one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The line passes. `dropped_before` lines were dropped since the last
    /// line that passed: when it is not zero, a marker line is due first.
    Pass {
        /// Lines dropped since the last line that passed.
        dropped_before: u64,
    },
    /// The line is over the budget and is dropped.
    Drop,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget::new(
            LOG_BUDGET_LINES_PER_SEC,
            LOG_BUDGET_BYTES_PER_SEC,
            LOG_BUDGET_BURST,
        )
    }
}

impl std::fmt::Debug for LogBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBudget")
            .field("lines_per_sec", &self.inner.lines_per_sec)
            .field("bytes_per_sec", &self.inner.bytes_per_sec)
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl LogBudget {
    /// A budget of `lines_per_sec` lines and `bytes_per_sec` bytes per
    /// second, holding up to `burst` worth of each. The bucket starts full.
    ///
    /// The byte bucket always holds at least one longest line
    /// ([`MAX_LOG_LINE`] and its cut marker), so every line can pass once
    /// the bucket is full, and a rate of zero means "no lines at all".
    pub fn new(lines_per_sec: u32, bytes_per_sec: u64, burst: Duration) -> Self {
        let secs = burst.as_secs_f64();
        let lines_per_sec = f64::from(lines_per_sec);
        // u64 -> f64 loses precision only past 2^53 bytes/s: harmless.
        let bytes_per_sec = bytes_per_sec as f64;
        let longest_line = (MAX_LOG_LINE + CUT_MARK.len()) as f64;
        let max_lines = (lines_per_sec * secs).max(lines_per_sec.min(1.0));
        let max_bytes = if bytes_per_sec > 0.0 {
            (bytes_per_sec * secs).max(longest_line)
        } else {
            0.0
        };
        LogBudget {
            inner: Arc::new(BudgetInner {
                lines_per_sec,
                bytes_per_sec,
                max_lines,
                max_bytes,
                state: Mutex::new(Bucket {
                    lines: max_lines,
                    bytes: max_bytes,
                    at: Instant::now(),
                    unreported: 0,
                }),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Lines dropped over the budget since it was made: for metrics.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Charges one line of `bytes` bytes, now.
    pub fn admit(&self, bytes: usize) -> Admission {
        self.admit_at(Instant::now(), bytes)
    }

    /// Charges one line of `bytes` bytes at `now` (a clock of the caller's
    /// choosing, so tests need no sleeping).
    pub fn admit_at(&self, now: Instant, bytes: usize) -> Admission {
        let inner = &*self.inner;
        let mut bucket = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        inner.refill(&mut bucket, now);
        let cost = bytes as f64;
        if bucket.lines >= 1.0 && bucket.bytes >= cost {
            bucket.lines -= 1.0;
            bucket.bytes -= cost;
            Admission::Pass {
                dropped_before: std::mem::take(&mut bucket.unreported),
            }
        } else {
            bucket.unreported = bucket.unreported.saturating_add(1);
            inner.dropped.fetch_add(1, Ordering::Relaxed);
            Admission::Drop
        }
    }

    /// The count of lines dropped and not yet reported, taken (and one line
    /// charged for the marker) if the budget has room for a line now; for
    /// reporting drops when the output that dropped them ends.
    pub fn take_unreported_at(&self, now: Instant) -> Option<u64> {
        let inner = &*self.inner;
        let mut bucket = inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if bucket.unreported == 0 {
            return None;
        }
        inner.refill(&mut bucket, now);
        if bucket.lines < 1.0 {
            return None;
        }
        bucket.lines -= 1.0;
        Some(std::mem::take(&mut bucket.unreported))
    }

    /// The marker line for `dropped` lines.
    fn marker(&self, dropped: u64) -> String {
        let plural = if dropped == 1 { "" } else { "s" };
        format!(
            "… dropped {dropped} line{plural} over the log budget ({} lines/s, {} bytes/s)",
            self.inner.lines_per_sec, self.inner.bytes_per_sec
        )
    }
}

impl BudgetInner {
    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        // A clock that goes backwards (a test's, or a caller's stale
        // instant) adds nothing rather than panicking.
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        if now > bucket.at {
            bucket.at = now;
        }
        bucket.lines = (bucket.lines + elapsed * self.lines_per_sec).min(self.max_lines);
        bucket.bytes = (bucket.bytes + elapsed * self.bytes_per_sec).min(self.max_bytes);
    }
}

/// What marks a line that was cut at [`MAX_LOG_LINE`].
const CUT_MARK: &str = " …[line cut]";

/// The line buffer shared by every handle the guest opens on one stream.
struct LineBuffer {
    sink: Arc<dyn LogSink>,
    component: Arc<str>,
    invocation: u64,
    stream: Stream,
    pending: Vec<u8>,
    cut: bool,
    budget: Option<LogBudget>,
    /// The last line was dropped over the budget: the guest is made to
    /// yield on its next write, so that a guest writing far past its
    /// budget gives way to its neighbours between lines.
    over_budget: bool,
}

impl LineBuffer {
    fn write(&mut self, mut bytes: &[u8]) {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            self.push(&bytes[..end]);
            self.emit();
            bytes = &bytes[end + 1..];
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LOG_LINE.saturating_sub(self.pending.len());
        if bytes.len() > room {
            self.cut = true;
        }
        self.pending
            .extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self) {
        if self.pending.last() == Some(&b'\r') {
            self.pending.pop();
        }
        let cut = std::mem::take(&mut self.cut);
        if let Some(budget) = &self.budget {
            // Charged before the line is built: a dropped line costs no
            // allocation.
            let len = self.pending.len() + if cut { CUT_MARK.len() } else { 0 };
            match budget.admit(len) {
                Admission::Drop => {
                    self.pending.clear();
                    self.over_budget = true;
                    return;
                }
                Admission::Pass { dropped_before: 0 } => {}
                Admission::Pass { dropped_before } => self.deliver(budget.marker(dropped_before)),
            }
            self.over_budget = false;
        }
        let mut text = String::from_utf8_lossy(&self.pending).into_owned();
        if cut {
            text.push_str(CUT_MARK);
        }
        self.pending.clear();
        self.deliver(text);
    }

    fn deliver(&self, text: String) {
        self.sink.line(LogLine {
            component: self.component.clone(),
            invocation: self.invocation,
            stream: self.stream,
            text,
        });
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if !self.pending.is_empty() || self.cut {
            self.emit();
        }
        // Drops not reported yet, because no line passed after them: say so
        // now if the budget has room, rather than whenever the replica
        // next logs.
        if let Some(budget) = &self.budget
            && let Some(dropped) = budget.take_unreported_at(Instant::now())
        {
            self.deliver(budget.marker(dropped));
        }
    }
}

/// A guest output stream that delivers whole lines to a [`LogSink`].
#[derive(Clone)]
pub struct GuestOutput {
    buffer: Arc<Mutex<LineBuffer>>,
}

impl GuestOutput {
    /// A stream for `stream` of invocation `invocation` of `component`,
    /// without a budget: every line is delivered. For `shoal run` and
    /// tests; a replica's output goes through [`GuestOutput::with_budget`].
    pub fn new(
        sink: Arc<dyn LogSink>,
        component: Arc<str>,
        invocation: u64,
        stream: Stream,
    ) -> Self {
        Self::build(sink, component, invocation, stream, None)
    }

    /// A stream like [`GuestOutput::new`] whose lines are charged to
    /// `budget`, shared with the other invocations of the same replica:
    /// lines over it are dropped and counted.
    pub fn with_budget(
        sink: Arc<dyn LogSink>,
        component: Arc<str>,
        invocation: u64,
        stream: Stream,
        budget: LogBudget,
    ) -> Self {
        Self::build(sink, component, invocation, stream, Some(budget))
    }

    fn build(
        sink: Arc<dyn LogSink>,
        component: Arc<str>,
        invocation: u64,
        stream: Stream,
        budget: Option<LogBudget>,
    ) -> Self {
        GuestOutput {
            buffer: Arc::new(Mutex::new(LineBuffer {
                sink,
                component,
                invocation,
                stream,
                pending: Vec::new(),
                cut: false,
                budget,
                over_budget: false,
            })),
        }
    }

    fn write_bytes(&self, bytes: &[u8]) {
        if let Ok(mut buffer) = self.buffer.lock() {
            buffer.write(bytes);
        }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {
        let over = self.buffer.lock().is_ok_and(|b| b.over_budget);
        if over {
            tokio::task::yield_now().await;
        }
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(LOG_WRITE_BUDGET)
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.write_bytes(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_flushes_the_rest_at_the_end() {
        let sink = MemorySink::default();
        {
            let out = GuestOutput::new(Arc::new(sink.clone()), "echo".into(), 7, Stream::Stdout);
            out.write_bytes(b"one\ntw");
            out.write_bytes(b"o\r\nthree");
        }
        let texts: Vec<_> = sink
            .lines()
            .into_iter()
            .map(|l| (l.invocation, l.text))
            .collect();
        assert_eq!(
            texts,
            vec![(7, "one".into()), (7, "two".into()), (7, "three".into())]
        );
    }

    #[test]
    fn cuts_endless_lines() {
        let sink = MemorySink::default();
        {
            let out = GuestOutput::new(Arc::new(sink.clone()), "c".into(), 1, Stream::Stderr);
            out.write_bytes(&vec![b'x'; MAX_LOG_LINE * 3]);
        }
        let lines = sink.lines();
        assert_eq!(lines.len(), 1);
        assert!(lines[0].text.ends_with("[line cut]"));
        assert!(lines[0].text.len() < MAX_LOG_LINE + 32);
    }

    #[test]
    fn the_budget_drops_what_is_over_it_and_refills_with_time() {
        let budget = LogBudget::new(10, 1 << 20, Duration::from_secs(1));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert_eq!(
                budget.admit_at(t0, 5),
                Admission::Pass { dropped_before: 0 }
            );
        }
        for _ in 0..7 {
            assert_eq!(budget.admit_at(t0, 5), Admission::Drop);
        }
        assert_eq!(budget.dropped(), 7);
        // A tenth of a second brings back one line, and the first line to
        // pass learns how many went missing before it.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(
            budget.admit_at(t1, 5),
            Admission::Pass { dropped_before: 7 }
        );
        assert_eq!(budget.admit_at(t1, 5), Admission::Drop);
        // Refills stop at the burst.
        let later = t0 + Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(matches!(budget.admit_at(later, 5), Admission::Pass { .. }));
        }
        assert_eq!(budget.admit_at(later, 5), Admission::Drop);
        assert_eq!(budget.dropped(), 9);
        // A clock that goes backwards adds nothing and does not panic.
        assert_eq!(budget.admit_at(t0, 5), Admission::Drop);
    }

    #[test]
    fn the_budget_counts_bytes_too() {
        let budget = LogBudget::new(1000, 100, Duration::from_secs(1));
        let t0 = Instant::now();
        // The byte bucket holds at least one longest line.
        assert!(matches!(
            budget.admit_at(t0, MAX_LOG_LINE),
            Admission::Pass { .. }
        ));
        assert_eq!(budget.admit_at(t0, 100), Admission::Drop);
        // 100 bytes a second: one second pays for a 100-byte line.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            budget.admit_at(t1, 100),
            Admission::Pass { dropped_before: 1 }
        );
        // What is left of the burst (the cut marker's room) is not enough
        // for a longer line.
        let left = CUT_MARK.len();
        assert_eq!(budget.admit_at(t1, left + 1), Admission::Drop);
        assert!(matches!(budget.admit_at(t1, left), Admission::Pass { .. }));
    }

    #[test]
    fn a_noisy_guest_is_cut_off_with_a_count_and_a_marker() {
        let sink = MemorySink::default();
        // One line a second, three at once: nothing refills during the test.
        let budget = LogBudget::new(1, 1 << 20, Duration::from_secs(3));
        {
            let out = GuestOutput::with_budget(
                Arc::new(sink.clone()),
                "noisy".into(),
                1,
                Stream::Stdout,
                budget.clone(),
            );
            for i in 0..100 {
                out.write_bytes(format!("line {i}\n").as_bytes());
            }
        }
        let texts: Vec<String> = sink.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(texts[..3], ["line 0", "line 1", "line 2"]);
        assert_eq!(budget.dropped(), 97);
        // The bucket is empty when the output ends, so the marker waits for
        // room; a second later the next invocation's first line brings it.
        let t = Instant::now() + Duration::from_secs(2);
        assert_eq!(
            budget.admit_at(t, 4),
            Admission::Pass { dropped_before: 97 }
        );
        assert_eq!(
            budget.marker(97),
            format!(
                "… dropped 97 lines over the log budget (1 lines/s, {} bytes/s)",
                1 << 20
            )
        );
    }

    #[test]
    fn the_marker_comes_before_the_line_that_ends_the_dropping() {
        let sink = MemorySink::default();
        let budget = LogBudget::new(1, 1 << 20, Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(matches!(budget.admit_at(t0, 1), Admission::Pass { .. }));
        assert_eq!(budget.admit_at(t0, 1), Admission::Drop);
        assert_eq!(budget.admit_at(t0, 1), Admission::Drop);
        // Room for one line again, whatever the real clock says when the
        // line below is written.
        let mut bucket = budget.inner.state.lock().unwrap();
        bucket.lines = 1.0;
        drop(bucket);
        {
            let out = GuestOutput::with_budget(
                Arc::new(sink.clone()),
                "c".into(),
                2,
                Stream::Stderr,
                budget.clone(),
            );
            out.write_bytes(b"back\n");
        }
        let texts: Vec<String> = sink.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert!(texts[0].starts_with("… dropped 2 lines over the log budget"));
        assert_eq!(texts[1], "back");
    }

    #[test]
    fn drops_are_reported_when_the_output_ends_if_there_is_room() {
        let sink = MemorySink::default();
        let budget = LogBudget::new(1000, 10, Duration::from_secs(1));
        {
            let out = GuestOutput::with_budget(
                Arc::new(sink.clone()),
                "c".into(),
                3,
                Stream::Stdout,
                budget.clone(),
            );
            // Over the byte budget (which holds one longest line), not
            // the line budget: lines are left for the marker.
            out.write_bytes(&vec![b'x'; MAX_LOG_LINE]);
            out.write_bytes(b"\nthis line is over the bytes left\n");
        }
        let texts: Vec<String> = sink.lines().into_iter().map(|l| l.text).collect();
        assert_eq!(texts.len(), 2, "{texts:?}");
        assert_eq!(texts[0].len(), MAX_LOG_LINE);
        assert!(texts[1].starts_with("… dropped 1 line over the log budget"));
        assert_eq!(budget.dropped(), 1);
    }
}
