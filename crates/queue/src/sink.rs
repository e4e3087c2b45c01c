//! The `queue` sink: appends to one of switchyard's queues; delivered once durable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::QueueSinkConfig;
use switchyard_connector::{BoxFuture, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event;

use crate::queues::QueueHandle;

/// `type = "queue"` sink: appends to an internal queue; delivered once durable.
pub struct QueueSink {
    pub queue: Arc<QueueHandle>,
}

/// Builds a `queue` sink, appending to one of `queues` (the runtime names the sink in
/// front of the error).
pub fn build(
    cfg: &QueueSinkConfig,
    queues: &BTreeMap<String, Arc<QueueHandle>>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let queue = queues.get(&cfg.queue).ok_or_else(|| {
        BuildError::new(format!(
            "queue `{}` is not declared; add [queues.{}]",
            cfg.queue, cfg.queue
        ))
    })?;
    Ok(Arc::new(QueueSink {
        queue: queue.clone(),
    }))
}

impl Sink for QueueSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let events: Vec<Event> = batch.iter().map(|e| (**e).clone()).collect();
            match self.queue.append(&events).await {
                Ok(()) => vec![Outcome::Delivered; batch.len()],
                Err(e) => vec![
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
