//! Feeds: where a pipeline reader's events come from and where its checkpoint goes.
//!
//! A [`Feed`] is one ordered stream of events with positions — a partition of a durable
//! queue, a Postgres replication slot, a Kafka consumer. The [`Reader`](crate::pipeline::Reader)
//! tracks the positions it hands out in a low-watermark tracker and tells the feed, with
//! [`Feed::commit`], how far everything is complete. What "commit" means is the feed's
//! business: a consumer-group offset, a slot's confirmed flush LSN, a Kafka offset.

use std::future::Future;
use std::sync::Arc;

use switchyard_event::Event;
use tokio::sync::watch;
use tracing::warn;

use crate::queues::QueueHandle;

/// Most records read from a log at once: the largest batch a pipeline reading a queue
/// hands its plugins (`switchyard plugin test` uses the same by default).
pub const READ_BATCH: usize = 512;
/// Most bytes read from a log at once.
const READ_BYTES: usize = 4 << 20;

/// A feed failed for good: the reader stops and its checkpoint stays where it is.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FeedError(pub String);

/// One ordered stream of events for one pipeline reader.
///
/// Contract:
/// * positions strictly increase along the feed (gaps are allowed);
/// * `commit(low)` says every position below `low` is complete — delivered to every sink
///   it was routed to, dead-lettered or dropped on purpose. The feed may make that its
///   durable checkpoint; it must never resume past a position that was not committed so;
/// * [`Feed::next`] is cancel-safe: a call dropped before it finishes loses nothing.
pub trait Feed: Send + 'static {
    /// Position of the first event [`Feed::next`] returns: where the reader resumes.
    fn start(&self) -> u64;

    /// Waits for events and returns up to `max` of them, in position order. `Ok(None)`:
    /// the feed has ended (its source is shutting down).
    fn next(
        &mut self,
        max: usize,
    ) -> impl Future<Output = Result<Option<Vec<(u64, Event)>>, FeedError>> + Send;

    /// Everything below `low` is complete. An error is logged and the commit is retried
    /// with the next one.
    fn commit(&mut self, low: u64) -> impl Future<Output = Result<(), String>> + Send;

    /// Events available but not complete, for the `checkpoint_lag` gauge.
    fn lag(&self, low: u64) -> u64;

    /// Partition label of the metrics (0 for a feed without partitions).
    fn partition(&self) -> u32;
}

/// One partition of a durable queue (or an HTTP source's intake log), read with a
/// consumer group's stored offsets.
pub struct LogFeed {
    queue: Arc<QueueHandle>,
    group: String,
    partition: u32,
    next: u64,
    durable: watch::Receiver<u64>,
    /// A decoding failure found after events that were returned first.
    failed: Option<FeedError>,
}

impl LogFeed {
    /// Resumes `group` on `partition` of `queue` at its stored offset.
    pub fn new(queue: Arc<QueueHandle>, group: String, partition: u32) -> Self {
        let log = &queue.partitions()[partition as usize];
        let mut next = queue.committed(&group, partition);
        if next < log.start_offset() {
            warn!(queue = %queue.name, group = %group, partition, checkpoint = next,
                oldest = log.start_offset(),
                "records before the oldest retained one were removed by retention before this group read them");
            next = log.start_offset();
        }
        let durable = queue.durable_watch(partition);
        Self {
            queue,
            group,
            partition,
            next,
            durable,
            failed: None,
        }
    }
}

impl Feed for LogFeed {
    fn start(&self) -> u64 {
        self.next
    }

    async fn next(&mut self, max: usize) -> Result<Option<Vec<(u64, Event)>>, FeedError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let next = self.next;
        if self.durable.wait_for(|end| *end > next).await.is_err() {
            return Ok(None);
        }
        let log = self.queue.partitions()[self.partition as usize].clone();
        let records = tokio::task::spawn_blocking(move || {
            log.read(next, max.clamp(1, READ_BATCH), READ_BYTES)
        })
        .await
        .expect("log read task")
        .map_err(|e| {
            FeedError(format!(
                "cannot read queue `{}` partition {} at offset {next}: {e}",
                self.queue.name, self.partition
            ))
        })?;
        // Nothing above awaits after this point, so a dropped call changed nothing.
        let mut out = Vec::with_capacity(records.len());
        for record in records {
            match Event::decode_record(&record.payload) {
                Ok(e) => {
                    self.next = record.offset + 1;
                    out.push((record.offset, e));
                }
                Err(e) => {
                    self.failed = Some(FeedError(format!(
                        "cannot decode the stored event at offset {} of queue `{}` partition {}: {e}",
                        record.offset, self.queue.name, self.partition
                    )));
                    break;
                }
            }
        }
        if out.is_empty() {
            return Err(self.failed.take().unwrap_or_else(|| {
                FeedError(format!(
                    "queue `{}` partition {} returned no record at offset {next}",
                    self.queue.name, self.partition
                ))
            }));
        }
        Ok(Some(out))
    }

    async fn commit(&mut self, low: u64) -> Result<(), String> {
        let queue = self.queue.clone();
        let group = self.group.clone();
        let partition = self.partition;
        tokio::task::spawn_blocking(move || queue.commit_blocking(&group, &[(partition, low)]))
            .await
            .expect("offset commit task")
            .map_err(|e| format!("queue `{}`: {e}", self.queue.name))
    }

    fn lag(&self, low: u64) -> u64 {
        self.queue.partitions()[self.partition as usize]
            .durable_end()
            .saturating_sub(low)
    }

    fn partition(&self) -> u32 {
        self.partition
    }
}

/// A Postgres source's replication stream (see `switchyard_source_postgres::stream`).
/// Positions are handed out by the source in order; the low watermark goes back to it,
/// and it confirms the slot's flush LSN up to the commits entirely below it.
pub struct CdcFeed {
    events: tokio::sync::mpsc::Receiver<Result<(u64, Event), String>>,
    complete: watch::Sender<u64>,
    /// Position after the last event handed out.
    handed_out: u64,
    failed: Option<FeedError>,
}

impl CdcFeed {
    pub fn new(handle: switchyard_source_postgres::CdcHandle) -> Self {
        Self {
            events: handle.events,
            complete: handle.complete,
            handed_out: 0,
            failed: None,
        }
    }
}

impl Feed for CdcFeed {
    fn start(&self) -> u64 {
        0
    }

    async fn next(&mut self, max: usize) -> Result<Option<Vec<(u64, Event)>>, FeedError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let first = match self.events.recv().await {
            None => return Ok(None),
            Some(Err(e)) => return Err(FeedError(e)),
            Some(Ok(event)) => event,
        };
        // Nothing below awaits, so a dropped call loses nothing.
        let mut out = vec![first];
        while out.len() < max.max(1) {
            match self.events.try_recv() {
                Ok(Ok(event)) => out.push(event),
                Ok(Err(e)) => {
                    self.failed = Some(FeedError(e));
                    break;
                }
                Err(_) => break,
            }
        }
        self.handed_out = out.last().map_or(self.handed_out, |(p, _)| p + 1);
        Ok(Some(out))
    }

    async fn commit(&mut self, low: u64) -> Result<(), String> {
        self.complete.send_replace(low);
        Ok(())
    }

    fn lag(&self, low: u64) -> u64 {
        self.handed_out.saturating_sub(low)
    }

    fn partition(&self) -> u32 {
        0
    }
}
