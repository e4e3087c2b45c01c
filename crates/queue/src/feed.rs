//! The feeds of the sources that read switchyard's own logs: an `http` source's intake
//! log and a `queue` source's queue, one feed per partition, read with a consumer
//! group's stored offsets.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_config::QueueSourceConfig;
use switchyard_connector::{Batch, BoxFuture, BuildError, Feed, FeedError, Source};
use switchyard_event::{DecodeError, Event};
use switchyard_store::{LogError, PartitionLog};
use tokio::sync::watch;
use tracing::warn;

use crate::queues::QueueHandle;

/// Most records read from a log at once: the largest batch a pipeline reading a queue
/// hands its plugins (`switchyard plugin test` uses the same by default).
pub const READ_BATCH: usize = 512;
/// Most bytes read from a log at once.
const READ_BYTES: usize = 4 << 20;
/// A read of at most this many records just behind the durable end is done on the
/// reader's own task (see [`LogFeed::next_batch`]) …
const TAIL_RECORDS: usize = 256;
/// … and of at most this many bytes.
const TAIL_BYTES: usize = 256 << 10;

/// Builds the `queue` source `name`: the queue `cfg.queue` of `queues` read as the
/// consumer group `cfg.group`.
pub fn build(
    name: &str,
    cfg: &QueueSourceConfig,
    queues: &BTreeMap<String, Arc<QueueHandle>>,
) -> Result<Box<dyn Source>, BuildError> {
    let queue = queues.get(&cfg.queue).ok_or_else(|| {
        BuildError::new(format!(
            "source `{name}` reads queue `{}`, which is not declared; add [queues.{}]",
            cfg.queue, cfg.queue
        ))
    })?;
    Ok(Box::new(LogSource::queue(queue.clone(), cfg.group.clone())))
}

/// Builds what pipelines read of the `http` source `name`: its intake log in `intakes`,
/// read in full by every pipeline.
pub fn build_intake(
    name: &str,
    intakes: &BTreeMap<String, Arc<QueueHandle>>,
) -> Result<Box<dyn Source>, BuildError> {
    let intake = intakes
        .get(name)
        .ok_or_else(|| BuildError::new(format!("the intake log of source `{name}` is not open")))?;
    Ok(Box::new(LogSource::intake(intake.clone())))
}

/// A source read from a durable log of this process.
pub struct LogSource {
    queue: Arc<QueueHandle>,
    /// The consumer group; `None`: one group per pipeline, `pipeline.<name>` (an `http`
    /// source's intake, which every pipeline reading it reads in full).
    group: Option<String>,
}

impl LogSource {
    /// The intake log of an `http` source.
    pub fn intake(queue: Arc<QueueHandle>) -> Self {
        Self { queue, group: None }
    }

    /// A `queue` source: `queue` read as the consumer group `group`.
    pub fn queue(queue: Arc<QueueHandle>, group: String) -> Self {
        Self {
            queue,
            group: Some(group),
        }
    }
}

impl Source for LogSource {
    /// One feed per partition, each resuming at the group's stored offset.
    fn open<'a>(
        &'a self,
        pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        let group = self
            .group
            .clone()
            .unwrap_or_else(|| format!("pipeline.{pipeline}"));
        let feeds = (0..self.queue.partitions().len() as u32)
            .map(|partition| {
                Box::new(LogFeed::new(self.queue.clone(), group.clone(), partition))
                    as Box<dyn Feed>
            })
            .collect();
        Box::pin(std::future::ready(Ok(feeds)))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
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

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, FeedError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let next = self.next;
        if self.durable.wait_for(|end| *end > next).await.is_err() {
            return Ok(None);
        }
        let log = self.queue.partitions()[self.partition as usize].clone();
        let max = max.clamp(1, READ_BATCH);
        // A reader at the tail reads what the group committer wrote a moment ago: those
        // pages are in the page cache, so the read is a copy of a few KiB and is done
        // here. Handing it to the blocking pool would cost two thread wake-ups per
        // commit, more than the read. Further back (a restart, a reader catching up)
        // the pages may have to come from disk: those reads go to the blocking pool.
        let at_tail = log.durable_end().saturating_sub(next) <= TAIL_RECORDS as u64;
        let read = if at_tail {
            read_events(&log, next, max.min(TAIL_RECORDS), TAIL_BYTES)
        } else {
            tokio::task::spawn_blocking(move || read_events(&log, next, max, READ_BYTES))
                .await
                .expect("log read task")
        };
        let (events, undecodable) = read.map_err(|e| {
            let message = format!(
                "cannot read queue `{}` partition {} at offset {next}: {e}",
                self.queue.name, self.partition
            );
            // An I/O error (a descriptor limit, a disk that hiccups) may pass; a record
            // that fails its checks will not.
            if matches!(e, switchyard_store::LogError::Io { .. }) {
                FeedError::Transient(message)
            } else {
                FeedError::Permanent(message)
            }
        })?;
        // Nothing above awaits after this point, so a dropped call changed nothing.
        let mut out = Batch::with_capacity(events.len());
        for (offset, event) in events {
            self.next = offset + 1;
            out.push(offset, event);
        }
        if let Some((offset, e)) = undecodable {
            self.failed = Some(FeedError::Permanent(format!(
                "cannot decode the stored event at offset {offset} of queue `{}` partition {}: {e}",
                self.queue.name, self.partition
            )));
        }
        if out.is_empty() {
            return Err(self.failed.take().unwrap_or_else(|| {
                FeedError::Permanent(format!(
                    "queue `{}` partition {} returned no record at offset {next}",
                    self.queue.name, self.partition
                ))
            }));
        }
        Ok(Some(out))
    }
}

/// The offset of a stored record that does not decode, and why.
type Undecodable = Option<(u64, DecodeError)>;

/// The events of up to `max` records from `next` on, decoded straight from the read
/// buffer (no copy of a record's bytes), and the first record that does not decode, where
/// the events stop.
fn read_events(
    log: &PartitionLog,
    next: u64,
    max: usize,
    max_bytes: usize,
) -> Result<(Vec<(u64, Event)>, Undecodable), LogError> {
    let mut events = Vec::new();
    let mut undecodable = None;
    log.read_each(next, max, max_bytes, |offset, _timestamp_ms, payload| {
        if undecodable.is_some() {
            return;
        }
        match Event::decode_record(payload) {
            Ok(event) => events.push((offset, event)),
            Err(e) => undecodable = Some((offset, e)),
        }
    })?;
    Ok((events, undecodable))
}

impl Feed for LogFeed {
    fn start(&self) -> u64 {
        self.next
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(self.next_batch(max))
    }

    fn commit(&mut self, low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
        let queue = self.queue.clone();
        let group = self.group.clone();
        let partition = self.partition;
        Box::pin(async move {
            let name = queue.name.clone();
            tokio::task::spawn_blocking(move || queue.commit_blocking(&group, &[(partition, low)]))
                .await
                .expect("offset commit task")
                .map_err(|e| FeedError::Transient(format!("queue `{name}`: {e}")))
        })
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
