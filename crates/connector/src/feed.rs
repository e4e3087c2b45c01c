//! The source contract: sources open feeds; a feed yields batches with positions and
//! turns the pipeline's low watermark into its checkpoint.

use switchyard_event::Event;

use crate::{BoxFuture, BuildError};

/// Where an event sits in its feed. Strictly increasing along a feed; gaps allowed.
pub type Position = u64;

/// Events of one feed with their positions, in position order: the `i`th event sits at
/// the `i`th position. Kept as two vectors of the same length (only [`Batch::push`] adds
/// to them), so the events can be lent as one slice ([`Batch::events`]).
#[derive(Debug, Default)]
pub struct Batch {
    positions: Vec<Position>,
    events: Vec<Event>,
}

impl Batch {
    pub fn with_capacity(n: usize) -> Self {
        Self {
            positions: Vec::with_capacity(n),
            events: Vec::with_capacity(n),
        }
    }

    /// Adds `event` at `position` (larger than every position already in the batch).
    pub fn push(&mut self, position: Position, event: Event) {
        self.positions.push(position);
        self.events.push(event);
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The events, in position order.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// The positions, increasing.
    pub fn positions(&self) -> &[Position] {
        &self.positions
    }

    /// Position after the last event, if any.
    pub fn end(&self) -> Option<Position> {
        self.positions.last().map(|p| p + 1)
    }
}

impl IntoIterator for Batch {
    type Item = (Position, Event);
    type IntoIter = std::iter::Zip<std::vec::IntoIter<Position>, std::vec::IntoIter<Event>>;

    /// The events with their positions, in order.
    fn into_iter(self) -> Self::IntoIter {
        self.positions.into_iter().zip(self.events)
    }
}

impl FromIterator<(Position, Event)> for Batch {
    fn from_iter<I: IntoIterator<Item = (Position, Event)>>(iter: I) -> Self {
        let mut batch = Batch::default();
        for (position, event) in iter {
            batch.push(position, event);
        }
        batch
    }
}

/// Why a feed could not hand out events or store its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// Waiting may help (a connection lost, a broker that is down, a checkpoint write
    /// that failed): the reader keeps its checkpoint, backs off and asks again.
    #[error("{0}")]
    Transient(String),
    /// The feed cannot go on (a record that cannot be decoded, a slot that is gone, a
    /// configuration the source refuses): the reader stops; its checkpoint stays before
    /// the failure, so nothing is skipped when the cause is fixed and switchyard
    /// restarted.
    #[error("{0}")]
    Permanent(String),
}

impl FeedError {
    pub fn is_transient(&self) -> bool {
        matches!(self, FeedError::Transient(_))
    }
}

/// One ordered stream of events for one pipeline reader: a partition of a durable
/// queue, a Postgres replication slot, a Kafka consumer.
///
/// The reader tracks the positions it is handed in a low-watermark tracker and tells
/// the feed with [`Feed::commit`] how far everything is complete.
///
/// Contract:
/// * positions strictly increase along the feed (gaps are allowed), across batches;
/// * [`Feed::next`] and [`Feed::commit`] do nothing until their future is polled: the
///   reader creates a `next` future on every turn of its loop and drops most of them
///   unpolled (while it waits for acknowledgements, is paused, or shuts down);
/// * `next(max)` answers at most `max` events; a reader that gets more stops;
/// * an `Err` from `next` hands out nothing and does not move the feed: after a
///   [`FeedError::Transient`] the reader asks again from where it was;
/// * `commit(low)` says every position below `low` is complete: delivered to every sink
///   it was routed to, dead-lettered or dropped on purpose. The feed may make that its
///   durable checkpoint (a consumer-group offset, a slot's confirmed flush LSN, a Kafka
///   offset); it must never resume past a position that was not committed so. After a
///   crash it resumes at or before the last commit: events after it may come again
///   (at least once), none before it is skipped;
/// * [`Feed::next`] is cancel-safe: a call dropped before it finishes loses nothing;
/// * a feed never blocks the async worker it runs on: blocking IO goes to a blocking
///   thread. Dropping a feed may block briefly (a Kafka consumer leaving its group
///   commits its final offsets); it happens once, at shutdown.
pub trait Feed: Send + 'static {
    /// Position of the first event [`Feed::next`] returns: where the reader resumes.
    fn start(&self) -> Position;

    /// Waits for events and returns a batch of 1 to `max` of them, in position order.
    /// `Ok(None)`: the feed has ended (its source is shutting down). Cancel-safe.
    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>>;

    /// Everything below `low` is complete. Always awaited to the end. A failed commit,
    /// transient or permanent, is logged and retried with the next one: the checkpoint
    /// then stays where it was, which only means more events come again after a restart.
    fn commit(&mut self, low: Position) -> BoxFuture<'_, Result<(), FeedError>>;

    /// Events available but not complete, for the `checkpoint_lag` gauge.
    fn lag(&self, low: Position) -> u64;

    /// Partition label of the metrics (0 for a feed without partitions).
    fn partition(&self) -> u32;

    /// Commit as soon as the low watermark is this many positions past the last commit,
    /// instead of at the reader's next tick (a few times a second). For a broker that
    /// hands out only a window of unacknowledged messages (a prefetch, an in-flight
    /// limit): without acks it sends nothing more, and a window acked a few times a
    /// second caps the rate at a few windows a second. `None` (the default): on the tick.
    fn commit_after(&self) -> Option<u64> {
        None
    }
}

/// A configured source: what pipelines read.
///
/// Contract: [`Source::open`] is called once per pipeline that reads the source, at
/// start, and answers the feeds that pipeline reads (one per partition; each gets its
/// own reader). What a pipeline has committed on its feeds is where its feeds resume
/// after a restart. A source whose configuration or peer cannot work answers a
/// [`BuildError`] that says how to fix it; a peer that is merely unreachable is waited
/// for in the background instead.
pub trait Source: Send + Sync + 'static {
    /// The feeds `pipeline` reads.
    fn open<'a>(
        &'a self,
        pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>>;

    /// Why the source stopped for good (`/readyz` answers 503 with it), `None` while it
    /// runs.
    fn stopped(&self) -> Option<String> {
        None
    }

    /// The concrete source, for the admin API of one kind (e.g. a Postgres source's
    /// snapshot commands).
    fn as_any(&self) -> &dyn std::any::Any;
}
