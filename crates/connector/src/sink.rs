//! The sink contract.

use std::sync::Arc;
use std::time::Duration;

use switchyard_event::Event;

use crate::{BoxFuture, RetryPolicy};

/// What happened to one event in one delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The destination has it durably (2xx, fsync'd, appended, confirmed by the broker).
    /// The runtime acknowledges the event: its source may move its checkpoint past it.
    Delivered,
    /// A transient failure (timeout, connection error, 408/429/5xx, broker down): the
    /// runtime tries again after a backoff, not before `retry_after` when the
    /// destination said so, and no later event of the same key overtakes it.
    Retry {
        error: String,
        retry_after: Option<Duration>,
    },
    /// A definite failure (another 4xx, an event the destination can never take):
    /// retrying cannot help; the runtime puts the event in the dead-letter queue.
    Permanent { error: String },
    /// Left out on purpose: the sink's `format` has no form for the event (a schema
    /// event in Debezium's, [`crate::format::Body::Skip`]), so nothing was written. The
    /// runtime acknowledges it like a delivered event and counts it as skipped.
    Skipped,
}

/// A destination for events.
///
/// The runtime owns everything around a delivery: it splits events into
/// [`Sink::concurrency`] ordering lanes by key, hands each lane's events to
/// [`Sink::deliver`] in batches of at most [`Sink::max_batch`], retries by
/// [`Sink::retry_policy`], dead-letters, and acknowledges. A sink only makes attempts.
///
/// Contract:
/// * `deliver` gets the events of one ordering lane, in source order, and answers
///   exactly one [`Outcome`] per event, in the same order. Events of one key are always
///   in the same lane and a lane has one attempt in flight at a time, so a sink that
///   writes a batch in order keeps every key in order.
/// * [`Outcome::Delivered`] means durable at the destination. Answering it earlier
///   breaks at-least-once: the source's checkpoint moves past the event.
///   [`Outcome::Skipped`] is for an event the sink's format says not to write, nothing
///   else.
/// * An event may be delivered more than once (after a retry, a restart, a crash):
///   destinations deduplicate by the event id when they must.
/// * `deliver` does not retry by itself and finishes in bounded time: a sink applies
///   its own timeouts and answers [`Outcome::Retry`] when one expires.
/// * A sink never panics on what an event holds.
pub trait Sink: Send + Sync + 'static {
    /// One delivery attempt of `batch`.
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>>;

    /// Most events handed to one `deliver` call.
    fn max_batch(&self) -> usize {
        1
    }

    /// Independent ordering lanes delivering at the same time. Events of one key always
    /// use the same lane.
    fn concurrency(&self) -> usize {
        1
    }

    /// How failed attempts are retried.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }
}
