//! Guest stdout and stderr, captured line by line and tagged with the
//! component and invocation they came from.
//!
//! A guest writes bytes; the host cuts them into lines and hands each line
//! to a [`LogSink`]. Output not ended by a newline is delivered when the
//! invocation ends. Lines longer than [`MAX_LOG_LINE`] are cut.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::tunables::{LOG_WRITE_BUDGET, MAX_LOG_LINE};

/// Which of the guest's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl std::fmt::Display for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
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

/// The line buffer shared by every handle the guest opens on one stream.
struct LineBuffer {
    sink: Arc<dyn LogSink>,
    component: Arc<str>,
    invocation: u64,
    stream: Stream,
    pending: Vec<u8>,
    cut: bool,
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
        let mut text = String::from_utf8_lossy(&self.pending).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        if self.cut {
            text.push_str(" …[line cut]");
        }
        self.pending.clear();
        self.cut = false;
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
    }
}

/// A guest output stream that delivers whole lines to a [`LogSink`].
#[derive(Clone)]
pub struct GuestOutput {
    buffer: Arc<Mutex<LineBuffer>>,
}

impl GuestOutput {
    /// A stream for `stream` of invocation `invocation` of `component`.
    pub fn new(
        sink: Arc<dyn LogSink>,
        component: Arc<str>,
        invocation: u64,
        stream: Stream,
    ) -> Self {
        GuestOutput {
            buffer: Arc::new(Mutex::new(LineBuffer {
                sink,
                component,
                invocation,
                stream,
                pending: Vec::new(),
                cut: false,
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
    async fn ready(&mut self) {}
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
}
