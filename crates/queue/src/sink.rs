//! The `queue` sink: appends to one of switchyard's queues; delivered once durable.
//!
//! With `format = "debezium"` a Postgres change is appended with Debezium's change event
//! as its payload (`application/json`; key, kind and headers kept), a schema event is
//! skipped, and other events are appended as they are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::QueueSinkConfig;
use switchyard_connector::format::{self, Body, Formatter};
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event;

use crate::queues::QueueHandle;

/// `type = "queue"` sink: appends to an internal queue; delivered once durable.
pub struct QueueSink {
    pub queue: Arc<QueueHandle>,
    pub formatter: Formatter,
}

/// Builds a `queue` sink, appending to one of `queues` (the runtime names the sink in
/// front of the error).
pub fn build(
    cfg: &QueueSinkConfig,
    queues: &BTreeMap<String, Arc<QueueHandle>>,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let queue = queues.get(&cfg.queue).ok_or_else(|| {
        BuildError::new(format!(
            "queue `{}` is not declared; add [queues.{}]",
            cfg.queue, cfg.queue
        ))
    })?;
    Ok(Arc::new(QueueSink {
        queue: queue.clone(),
        formatter: Formatter::for_config(cfg.format, ctx.config),
    }))
}

impl QueueSink {
    /// The events to append for `batch` in the sink's format, and which of the batch
    /// were skipped (`None`: none were).
    fn messages(&self, batch: &[Arc<Event>]) -> (Vec<Event>, Option<Vec<bool>>) {
        if self.formatter.is_native() {
            return (batch.iter().map(|e| (**e).clone()).collect(), None);
        }
        let now = format::now_us();
        let mut skipped = vec![false; batch.len()];
        let mut events = Vec::with_capacity(batch.len());
        for (event, skipped) in batch.iter().zip(&mut skipped) {
            let mut body = Vec::new();
            match self.formatter.write(event, now, &mut body) {
                Body::Native => events.push((**event).clone()),
                Body::Skip => *skipped = true,
                Body::Written { .. } => events.push(Event {
                    payload: body,
                    content_type: self.formatter.written_content_type().into(),
                    payload_is_compact_json: false,
                    ..(**event).clone()
                }),
            }
        }
        (events, skipped.contains(&true).then_some(skipped))
    }
}

impl Sink for QueueSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let (events, skipped) = self.messages(batch);
            let appended = if events.is_empty() {
                Ok(())
            } else {
                self.queue.append(&events).await
            };
            match (appended, skipped) {
                (Ok(()), None) => vec![Outcome::Delivered; batch.len()],
                (Ok(()), Some(skipped)) => skipped
                    .into_iter()
                    .map(|s| {
                        if s {
                            Outcome::Skipped
                        } else {
                            Outcome::Delivered
                        }
                    })
                    .collect(),
                (Err(e), _) => vec![
                    Outcome::Retry {
                        error: e.to_string(),
                        retry_after: None,
                    };
                    batch.len()
                ],
            }
        })
    }

    fn max_batch(&self) -> usize {
        256
    }

    fn concurrency(&self) -> usize {
        4
    }

    fn retry_policy(&self) -> RetryPolicy {
        // An internal queue that is full or out of disk recovers when consumers catch up or
        // space frees: keep trying, never dead-letter for that.
        RetryPolicy {
            max_attempts: u32::MAX,
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
        }
    }
}
