//! `type = "null"`: discards every event and reports it delivered.
//!
//! For events a pipeline routes away on purpose (they are counted like any delivery, in
//! `switchyard_sink_events_total{outcome="delivered"}`), and for measuring a source and
//! its pipeline without the cost of a real destination (`cargo xtask bench`).

use std::sync::Arc;

use switchyard_config::NullSinkConfig;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, Sink};
use switchyard_event::Event;

/// Events handed to one call: there is nothing to wait for, so as many as a reader
/// hands out at once.
const NULL_MAX_BATCH: usize = 4096;

/// The `null` sink.
#[derive(Debug, Default)]
pub struct NullSink;

impl Sink for NullSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(std::future::ready(vec![Outcome::Delivered; batch.len()]))
    }

    fn max_batch(&self) -> usize {
        NULL_MAX_BATCH
    }
}

/// Builds the `null` sink `name`: the runtime's registration calls this.
pub fn build(
    _name: &str,
    _cfg: &NullSinkConfig,
    _ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    Ok(Arc::new(NullSink))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_is_delivered() {
        let event = Arc::new(Event {
            id: "1".into(),
            source: "s".into(),
            kind: "message".into(),
            key: None,
            payload: b"{}".to_vec(),
            content_type: "application/json".into(),
            headers: Vec::new(),
            timestamp_ms: 0,
            payload_is_compact_json: false,
        });
        let batch = vec![event; 3];
        let outcomes = futures::executor::block_on(NullSink.deliver(&batch));
        assert_eq!(outcomes.len(), 3);
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Delivered)));
    }
}
