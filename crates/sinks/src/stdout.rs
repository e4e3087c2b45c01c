//! `type = "stdout"`: one JSON wire line per event on standard output.
//!
//! A batch is written with one `write_all` and flushed before its events count as
//! delivered. Logs must go to stderr, or they would interleave with the events.

use std::sync::Arc;

use switchyard_config::StdoutSinkConfig;
use switchyard_event::Event;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::SinkError;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, Sink};

/// Events per batch: large enough to amortise the flush, small enough to bound memory.
pub const STDOUT_MAX_BATCH: usize = 512;

type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Writes events as JSON lines to standard output (or any writer, see
/// [`StdoutSink::with_writer`]).
pub struct StdoutSink {
    name: String,
    // Held across the write and the flush so batches never interleave.
    out: Mutex<Writer>,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// The sink called `name`, writing to the process's standard output.
    pub fn new(name: &str, _cfg: &StdoutSinkConfig) -> Result<Self, SinkError> {
        Ok(Self::with_writer(name, tokio::io::stdout()))
    }

    /// The same sink writing to `writer` instead (tests, embedding).
    pub fn with_writer(name: &str, writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self {
            name: name.to_owned(),
            out: Mutex::new(Box::new(writer)),
        }
    }
}

/// The batch as wire lines, each ending in `\n`.
pub(crate) fn wire_lines(batch: &[Arc<Event>]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(batch.len() * 256);
    for event in batch {
        event.write_wire_line(&mut buf);
        buf.push(b'\n');
    }
    buf
}

impl Sink for StdoutSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let buf = wire_lines(batch);
            let mut out = self.out.lock().await;
            let written = async {
                out.write_all(&buf).await?;
                out.flush().await
            }
            .await;
            let outcome = match written {
                Ok(()) => Outcome::Delivered,
                Err(e) => Outcome::Retry {
                    error: format!("sink `{}`: cannot write to standard output: {e}", self.name),
                    retry_after: None,
                },
            };
            vec![outcome; batch.len()]
        })
    }

    fn max_batch(&self) -> usize {
        STDOUT_MAX_BATCH
    }
}

/// Builds the `stdout` sink `name`: the runtime's registration calls this.
pub fn build(
    name: &str,
    cfg: &StdoutSinkConfig,
    _ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    Ok(Arc::new(
        StdoutSink::new(name, cfg).map_err(|e| BuildError::from_error(&e))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::sync::Mutex as StdMutex;
    use std::task::{Context, Poll};

    /// A writer that collects into shared memory, or fails every write.
    #[derive(Clone, Default)]
    struct Capture {
        bytes: Arc<StdMutex<Vec<u8>>>,
        flushes: Arc<StdMutex<usize>>,
        broken: bool,
    }

    impl AsyncWrite for Capture {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            if self.broken {
                return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            *self.flushes.lock().unwrap() += 1;
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn event(n: u32) -> Arc<Event> {
        Arc::new(Event {
            id: format!("ev-{n}"),
            source: "api".into(),
            kind: "message".into(),
            key: Some(b"k".to_vec()),
            payload: format!(r#"{{"n":{n}}}"#).into_bytes(),
            content_type: "application/json".into(),
            headers: vec![],
            timestamp_ms: 1,
            payload_is_compact_json: false,
        })
    }

    #[tokio::test]
    async fn writes_one_flushed_line_per_event() {
        let capture = Capture::default();
        let sink = StdoutSink::with_writer("console", capture.clone());
        let batch: Vec<_> = (0..3).map(event).collect();
        let outcomes = sink.deliver(&batch).await;
        assert_eq!(outcomes, vec![Outcome::Delivered; 3]);
        assert_eq!(*capture.flushes.lock().unwrap(), 1);
        let text = String::from_utf8(capture.bytes.lock().unwrap().clone()).unwrap();
        let parsed: Vec<Event> = text
            .lines()
            .map(|l| Event::from_wire_json(&serde_json::from_str(l).unwrap()).unwrap())
            .collect();
        let expected: Vec<Event> = batch.iter().map(|e| (**e).clone()).collect();
        assert_eq!(parsed, expected);
        assert!(sink.max_batch() > 1);
    }

    #[tokio::test]
    async fn a_write_error_retries_the_batch() {
        let capture = Capture {
            broken: true,
            ..Capture::default()
        };
        let sink = StdoutSink::with_writer("console", capture);
        let outcomes = sink.deliver(&[event(1), event(2)]).await;
        assert_eq!(outcomes.len(), 2);
        for outcome in outcomes {
            assert!(
                matches!(&outcome, Outcome::Retry { error, .. } if error.contains("console")),
                "{outcome:?}"
            );
        }
    }
}
