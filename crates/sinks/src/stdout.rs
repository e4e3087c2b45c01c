//! `type = "stdout"`: one JSON wire line per event on standard output (with
//! `format = "debezium"`, Postgres changes as Debezium's change events, one per line).
//!
//! A batch is written with one `write_all` and flushed before its events count as
//! delivered. Logs must go to stderr, or they would interleave with the events.

use std::sync::Arc;

use switchyard_config::StdoutSinkConfig;
use switchyard_connector::format::{self, Body, Formatter};
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
    formatter: Formatter,
}

impl std::fmt::Debug for StdoutSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdoutSink")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StdoutSink {
    /// The sink called `name`, writing to the process's standard output in the
    /// configured `format` (Debezium's `source.db` unknown: see [`Self::with_formatter`]).
    pub fn new(name: &str, cfg: &StdoutSinkConfig) -> Result<Self, SinkError> {
        Ok(Self::with_writer(name, tokio::io::stdout()).with_formatter(Formatter::new(cfg.format)))
    }

    /// The same sink writing wire lines to `writer` instead (tests, embedding).
    pub fn with_writer(name: &str, writer: impl AsyncWrite + Send + Unpin + 'static) -> Self {
        Self {
            name: name.to_owned(),
            out: Mutex::new(Box::new(writer)),
            formatter: Formatter::default(),
        }
    }

    /// The sink writing each event in `formatter`'s format.
    pub fn with_formatter(self, formatter: Formatter) -> Self {
        Self { formatter, ..self }
    }
}

/// The batch as lines, each ending in `\n`: wire lines, or with another format its lines
/// (wire lines for events it leaves as they are, none for those it skips). Also whether
/// each event was skipped, when the format skipped any.
pub(crate) fn lines(batch: &[Arc<Event>], formatter: &Formatter) -> (Vec<u8>, Option<Vec<bool>>) {
    let mut buf = Vec::with_capacity(batch.len() * 256);
    if formatter.is_native() {
        for event in batch {
            event.write_wire_line(&mut buf);
            buf.push(b'\n');
        }
        return (buf, None);
    }
    let now = format::now_us();
    let mut skipped = vec![false; batch.len()];
    for (event, skipped) in batch.iter().zip(&mut skipped) {
        match formatter.write(event, now, &mut buf) {
            Body::Native => event.write_wire_line(&mut buf),
            Body::Skip => {
                *skipped = true;
                continue;
            }
            Body::Written { .. } => {}
        }
        buf.push(b'\n');
    }
    (buf, skipped.contains(&true).then_some(skipped))
}

/// One outcome per event of a batch written at once: `written` for each, except
/// [`Outcome::Skipped`] for the skipped ones when the write succeeded.
pub(crate) fn outcomes(written: Outcome, n: usize, skipped: Option<Vec<bool>>) -> Vec<Outcome> {
    match (written, skipped) {
        (Outcome::Delivered, Some(skipped)) => skipped
            .into_iter()
            .map(|s| {
                if s {
                    Outcome::Skipped
                } else {
                    Outcome::Delivered
                }
            })
            .collect(),
        (written, _) => vec![written; n],
    }
}

impl Sink for StdoutSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let (buf, skipped) = lines(batch, &self.formatter);
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
            outcomes(outcome, batch.len(), skipped)
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
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let sink = StdoutSink::new(name, cfg).map_err(|e| BuildError::from_error(&e))?;
    Ok(Arc::new(sink.with_formatter(Formatter::for_config(
        cfg.format, ctx.config,
    ))))
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
            id: switchyard_event::format_compact!("ev-{n}"),
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

    fn change(n: u32, kind: &str, record: &str) -> Arc<Event> {
        Arc::new(Event {
            id: switchyard_event::format_compact!("0/1/{n}"),
            source: "db".into(),
            kind: kind.into(),
            key: Some(br#"{"id":1}"#.to_vec()),
            payload: record.as_bytes().to_vec(),
            content_type: "application/json".into(),
            headers: vec![],
            timestamp_ms: 1,
            payload_is_compact_json: true,
        })
    }

    #[tokio::test]
    async fn debeziums_format_writes_changes_as_its_events_and_skips_schema_events() {
        let capture = Capture::default();
        let sink = StdoutSink::with_writer("console", capture.clone())
            .with_formatter(Formatter::new(switchyard_config::SinkFormat::Debezium));
        let batch = [
            change(
                0,
                "schema",
                r#"{"op":"schema","schema":"public","table":"t","lsn":"0/1","columns":[],"replica_identity":"default"}"#,
            ),
            change(
                1,
                "delete",
                r#"{"op":"delete","schema":"public","table":"t","lsn":"0/1","xid":5,"commit_ts":"1970-01-01T00:00:01Z","key":{"id":1},"before":{"id":1},"after":null}"#,
            ),
            event(2),
        ];
        let outcomes = sink.deliver(&batch).await;
        assert_eq!(
            outcomes,
            [Outcome::Skipped, Outcome::Delivered, Outcome::Delivered]
        );
        let text = String::from_utf8(capture.bytes.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["op"], "d");
        assert_eq!(lines[0]["before"], serde_json::json!({"id": 1}));
        assert_eq!(lines[0]["source"]["txId"], 5);
        assert_eq!(lines[0]["source"]["ts_ms"], 1000);
        assert_eq!(
            Event::from_wire_json(&lines[1]).unwrap(),
            *batch[2],
            "a message is written as with switchyard's format"
        );
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
