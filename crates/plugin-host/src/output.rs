//! A plugin's stdout and stderr, written into switchyard's log.
//!
//! Every instance gets WASI stdout and stderr streams that turn what the guest prints
//! into log lines tagged with the plugin's name (`stream = "stdout"` at info,
//! `"stderr"` at warn). That is how a Rust panic message, a `println!` left in while
//! debugging, or a JavaScript `console.error` reach the operator.
//!
//! What one call may cost is bounded: one write may carry at most [`PERMIT`] bytes (the
//! WASI permit; a bigger one traps), lines are cut at [`MAX_LINE`] bytes, and past
//! [`MAX_PER_CALL`] bytes or [`MAX_LINES_PER_CALL`] lines per stream in one call the rest
//! is counted, not logged (one line says how much was left out). The last [`TAIL`] bytes
//! a call wrote to stderr are kept, so a trap can carry the message the guest printed
//! just before it (a panic).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError, StreamResult};

/// Longest line logged; the rest of a longer line is cut (with `…`).
pub(crate) const MAX_LINE: usize = 1024;
/// Bytes per stream and call written into the log; the rest is counted and dropped.
pub(crate) const MAX_PER_CALL: usize = 16 * 1024;
/// Lines per stream and call written into the log; the rest is counted and dropped.
pub(crate) const MAX_LINES_PER_CALL: usize = 64;
/// Bytes of stderr kept for the message of a trap.
pub(crate) const TAIL: usize = 1024;
/// The most one write may carry (what `check-write` grants).
pub(crate) const PERMIT: usize = 64 * 1024;

/// Which standard stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// One stream of one instance. Clones share the same state (WASI may ask for several
/// handles on stdout; they all write to the same place).
#[derive(Clone)]
pub(crate) struct GuestOutput {
    state: Arc<Mutex<OutputState>>,
}

struct OutputState {
    plugin: Arc<str>,
    stream: Stream,
    /// The line being written (up to [`MAX_LINE`] bytes).
    line: Vec<u8>,
    /// Whether the current line was cut.
    line_cut: bool,
    /// Bytes logged in the current call.
    logged: usize,
    /// Lines logged in the current call.
    lines: usize,
    /// Bytes left out of the log in the current call.
    dropped: usize,
    /// The last bytes written in the current call (stderr only).
    tail: VecDeque<u8>,
}

impl GuestOutput {
    pub(crate) fn new(plugin: Arc<str>, stream: Stream) -> Self {
        Self {
            state: Arc::new(Mutex::new(OutputState {
                plugin,
                stream,
                line: Vec::new(),
                line_cut: false,
                logged: 0,
                lines: 0,
                dropped: 0,
                tail: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutputState> {
        // A panic while holding the lock cannot leave the state inconsistent in a way
        // that matters for log lines.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the previous call: logs a pending partial line and how much was left out,
    /// and starts counting afresh.
    pub(crate) fn start_call(&self) {
        let mut s = self.lock();
        s.end_line();
        s.report_dropped();
        s.logged = 0;
        s.lines = 0;
        s.dropped = 0;
        s.tail.clear();
    }

    /// Ends the current call: logs a pending partial line and what was left out.
    pub(crate) fn end_call(&self) {
        let mut s = self.lock();
        s.end_line();
        s.report_dropped();
    }

    /// What the current call wrote last to this stream, trimmed; empty if nothing.
    pub(crate) fn tail(&self) -> String {
        let s = self.lock();
        let bytes: Vec<u8> = s.tail.iter().copied().collect();
        String::from_utf8_lossy(&bytes).trim().to_owned()
    }

    fn write_bytes(&self, bytes: &[u8]) {
        let mut s = self.lock();
        if s.stream == Stream::Stderr {
            let recent = &bytes[bytes.len().saturating_sub(TAIL)..];
            s.tail.extend(recent.iter().copied());
            let excess = s.tail.len().saturating_sub(TAIL);
            s.tail.drain(..excess);
        }
        for piece in bytes.split_inclusive(|&b| b == b'\n') {
            let (text, ends_line) = match piece.strip_suffix(b"\n") {
                Some(text) => (text, true),
                None => (piece, false),
            };
            if s.logged >= MAX_PER_CALL || s.lines >= MAX_LINES_PER_CALL {
                s.dropped += piece.len();
                continue;
            }
            s.logged += piece.len();
            let room = MAX_LINE.saturating_sub(s.line.len());
            if text.len() > room {
                s.line.extend_from_slice(&text[..room]);
                s.line_cut = true;
            } else {
                s.line.extend_from_slice(text);
            }
            if ends_line {
                s.end_line();
            }
        }
    }
}

impl OutputState {
    fn end_line(&mut self) {
        if self.line.is_empty() && !self.line_cut {
            return;
        }
        let mut text = String::from_utf8_lossy(&self.line).into_owned();
        if self.line_cut {
            // The cut may have split a character: drop its remains.
            while text.ends_with('\u{FFFD}') {
                text.pop();
            }
            text.push('…');
        }
        self.lines += 1;
        let text = text.trim_end_matches('\r');
        let plugin = &*self.plugin;
        match self.stream {
            Stream::Stdout => {
                tracing::info!(target: "switchyard::plugin", plugin, stream = "stdout", "{text}");
            }
            Stream::Stderr => {
                tracing::warn!(target: "switchyard::plugin", plugin, stream = "stderr", "{text}");
            }
        }
        self.line.clear();
        self.line_cut = false;
    }

    fn report_dropped(&mut self) {
        if self.dropped > 0 {
            let (plugin, dropped) = (&*self.plugin, self.dropped);
            let stream = match self.stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            tracing::warn!(target: "switchyard::plugin", plugin, stream, dropped,
                "the plugin wrote more than {MAX_PER_CALL} bytes or {MAX_LINES_PER_CALL} lines in one call; the rest ({dropped} bytes) was not logged");
            self.dropped = 0;
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

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > PERMIT {
            return Err(StreamError::trap(
                "wrote more than check-write permitted to stdout/stderr",
            ));
        }
        self.write_bytes(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // What the guest may write at once: WASI's usual permit. The bytes go straight
        // into the line buffer, which stays bounded.
        Ok(PERMIT)
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
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
    fn the_stderr_tail_keeps_the_last_bytes_of_the_call() {
        let out = GuestOutput::new("p".into(), Stream::Stderr);
        out.write_bytes(b"first line\n");
        out.write_bytes(b"thread panicked at src/lib.rs:3:5:\nboom\n");
        assert!(out.tail().ends_with("boom"), "{}", out.tail());
        out.write_bytes(&vec![b'x'; 3 * TAIL]);
        assert_eq!(out.tail().len(), TAIL);
        out.start_call();
        assert_eq!(out.tail(), "");
    }

    #[test]
    fn what_one_call_logs_is_bounded() {
        let out = GuestOutput::new("p".into(), Stream::Stdout);
        let line = [vec![b'y'; 5000], vec![b'\n']].concat();
        for _ in 0..100 {
            out.write_bytes(&line);
        }
        let s = out.lock();
        assert!(s.logged <= MAX_PER_CALL + line.len());
        assert_eq!(s.logged + s.dropped, 100 * line.len());
        assert!(s.line.len() <= MAX_LINE);
        drop(s);
        // Many short lines: bounded by count.
        out.start_call();
        for _ in 0..1000 {
            out.write_bytes(b"x\n");
        }
        let s = out.lock();
        assert_eq!(s.lines, MAX_LINES_PER_CALL);
        assert_eq!(s.dropped, 2 * (1000 - MAX_LINES_PER_CALL));
    }

    #[test]
    fn a_write_beyond_the_permit_traps() {
        let mut out = GuestOutput::new("p".into(), Stream::Stdout);
        assert!(OutputStream::write(&mut out, Bytes::from(vec![b'x'; PERMIT + 1])).is_err());
        assert!(OutputStream::write(&mut out, Bytes::from_static(b"ok\n")).is_ok());
    }
}
