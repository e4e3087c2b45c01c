//! `type = "kafka"` source: a consumer-group member for one pipeline reader.
//!
//! A thread of its own polls the consumer without pause (so the group never drops it
//! for being slow: `max.poll.interval.ms`) and forwards messages in chunks (what
//! librdkafka has in hand, up to `CHUNK`) through a bounded channel. When the channel is
//! full it holds what it polled (up to
//! `HOLD_BEFORE_PAUSE` messages), then pauses its partitions and keeps polling;
//! librdkafka then resumes each partition at the message after the last one polled. Offsets are committed only as far as [`KafkaConsumer::commit`]'s low watermark
//! allows (see [`OffsetTracker`]), asynchronously while running, synchronously when
//! partitions are revoked and at the end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as RdError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode as Code;
use switchyard_config::KafkaSourceConfig;
use switchyard_event::{Event, KIND_MESSAGE};
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::context::LogContext;
use crate::offsets::{OffsetTracker, TopicPartition};
use crate::{KafkaError, headers};

/// Chunks of messages buffered between the polling thread and the reader.
const CHANNEL: usize = 16;
/// Messages the polling thread gathers (polling without waiting while librdkafka has
/// messages in hand) before it hands them over as one chunk: one channel message and
/// one wake-up per chunk, not per message.
const CHUNK: usize = 256;
/// Payload bytes after which a chunk is handed over even when it has fewer messages.
const CHUNK_BYTES: usize = 1 << 20;
/// What the polling thread holds when the channel is full before it pauses its
/// partitions (messages, payload bytes: whichever comes first). Pausing drops
/// librdkafka's prefetched messages and resuming fetches them again, so the thread
/// pauses only with this much work in hand, and resumes when half of it has gone: the
/// refetch overlaps with the pipeline working off the rest.
const HOLD_BEFORE_PAUSE: usize = 65_536;
const HOLD_BYTES_BEFORE_PAUSE: usize = 16 << 20;
/// How often commits that failed or were not confirmed are sent again.
const RECOMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long dropping a consumer waits for its final commit and group leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the same poll error is logged.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// A message as the poller thread copied it out of librdkafka: an [`Event`] whose `id`
/// (without a `switchyard-id` header), `source`, `kind` and `content_type` (without a
/// content-type header) are still empty. The reader fills them in ([`finish`]), off the
/// poller thread, which is the consumer's bottleneck.
struct Fetched {
    tp: TopicPartition,
    offset: i64,
    epoch: u32,
    event: Event,
}

#[derive(Default)]
struct Shared {
    tracker: Mutex<OffsetTracker>,
    /// A commit that failed since the last [`KafkaConsumer::commit`] call.
    commit_error: Mutex<Option<String>>,
    /// Set on every assignment, so a paused consumer pauses the new partitions too.
    assigned: AtomicBool,
    /// Why the polling thread stopped, when it stopped on its own.
    fatal: Mutex<Option<String>>,
}

struct GroupContext {
    log: LogContext,
    shared: Arc<Shared>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.log.log(level, fac, message);
    }

    fn error(&self, error: RdError, reason: &str) {
        self.log.error(error, reason);
    }
}

fn partitions(tpl: &TopicPartitionList) -> Vec<TopicPartition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn list(offsets: &[(TopicPartition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for ((topic, partition), offset) in offsets {
        // Adding to a fresh list cannot fail for a valid offset.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let name = &self.log.name;
        match rebalance {
            Rebalance::Assign(tpl) => {
                let tps = partitions(tpl);
                info!(source = %name, partitions = ?tps, "kafka partitions assigned");
                self.shared
                    .tracker
                    .lock()
                    .expect("tracker lock")
                    .assign(tps);
                self.shared.assigned.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(tpl) => {
                let tps = partitions(tpl);
                let commits = self
                    .shared
                    .tracker
                    .lock()
                    .expect("tracker lock")
                    .revoke(tps.clone());
                if !commits.is_empty() {
                    match consumer.commit(&list(&commits), CommitMode::Sync) {
                        Ok(()) => info!(source = %name, offsets = ?commits,
                            "committed acknowledged offsets of revoked partitions"),
                        Err(e) => warn!(source = %name, offsets = ?commits, error = %e,
                            "could not commit the offsets of revoked partitions; their new owner reads those events again"),
                    }
                }
                info!(source = %name, partitions = ?tps, "kafka partitions revoked");
            }
            Rebalance::Error(e) => warn!(source = %name, error = %e, "kafka rebalance failed"),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let mut tracker = self.shared.tracker.lock().expect("tracker lock");
        for e in offsets.elements() {
            let Offset::Offset(offset) = e.offset() else {
                continue;
            };
            let tp: TopicPartition = (Arc::from(e.topic()), e.partition());
            match (&result, e.error()) {
                (Ok(()), Ok(())) => tracker.confirmed(&tp, offset),
                _ => tracker.failed(&tp, offset),
            }
        }
        drop(tracker);
        match result {
            Ok(()) | Err(RdError::ConsumerCommit(Code::NoOffset)) => {}
            Err(e) => {
                *self.shared.commit_error.lock().expect("commit error lock") =
                    Some(format!("kafka offset commit failed: {e}"));
            }
        }
    }
}

/// A consumer-group member handing out messages as events with sequential positions;
/// see the module docs.
pub struct KafkaConsumer {
    name: String,
    rx: mpsc::Receiver<Vec<Fetched>>,
    /// The rest of a chunk that did not fit in the last [`KafkaConsumer::next`].
    leftover: VecDeque<Fetched>,
    shared: Arc<Shared>,
    consumer: Option<Arc<BaseConsumer<GroupContext>>>,
    stop: Arc<AtomicBool>,
    done: std::sync::mpsc::Receiver<()>,
}

impl KafkaConsumer {
    /// Joins `cfg.group` as `group` (which may differ: one group per pipeline) and
    /// subscribes to `cfg.topics`. A broker that is down now is waited for.
    pub fn start(source: &str, group: &str, cfg: &KafkaSourceConfig) -> Result<Self, KafkaError> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &cfg.brokers)
            .set("group.id", group)
            .set("client.id", format!("switchyard-{source}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Once librdkafka's prefetch queue is over its thresholds it waits this
            // long before fetching again (1 s by default). The polling thread drains
            // that queue in bursts, so with the default the whole source sat idle for
            // most of a second after each burst: it read at a fraction of its speed.
            .set("fetch.queue.backoff.ms", "10");
        for (k, v) in &cfg.options {
            config.set(k, v);
        }
        let shared = Arc::new(Shared::default());
        let context = GroupContext {
            log: LogContext {
                what: "source",
                name: source.to_owned(),
            },
            shared: shared.clone(),
        };
        let consumer: BaseConsumer<GroupContext> =
            config
                .create_with_context(context)
                .map_err(|source_err| KafkaError::Client {
                    what: "source",
                    name: source.to_owned(),
                    reason: crate::without_secrets(&source_err.to_string(), &cfg.options),
                })?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|e| KafkaError::Subscribe {
                name: source.to_owned(),
                topics: cfg.topics.clone(),
                reason: e.to_string(),
            })?;
        let consumer = Arc::new(consumer);
        let (tx, rx) = mpsc::channel(CHANNEL);
        let stop = Arc::new(AtomicBool::new(false));
        let (done_tx, done) = std::sync::mpsc::channel();
        let poller = Poller {
            name: source.to_owned(),
            consumer: consumer.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
            tx,
        };
        std::thread::Builder::new()
            .name(format!("kafka-{source}"))
            .spawn(move || {
                poller.run();
                let _ = done_tx.send(());
            })
            .map_err(|e| KafkaError::Thread {
                name: source.to_owned(),
                source: e,
            })?;
        info!(source = %source, group, topics = ?cfg.topics, brokers = %cfg.brokers, "kafka consumer started");
        Ok(Self {
            name: source.to_owned(),
            rx,
            leftover: VecDeque::new(),
            shared,
            consumer: Some(consumer),
            stop,
            done,
        })
    }

    /// Waits for messages and returns up to `max` of them as events, with positions in
    /// order. `Ok(None)`: the consumer has stopped. Cancel-safe.
    pub async fn next(&mut self, max: usize) -> Result<Option<Vec<(u64, Event)>>, String> {
        let max = max.max(1);
        loop {
            if self.leftover.is_empty() {
                let Some(chunk) = self.rx.recv().await else {
                    return match self.shared.fatal.lock().expect("fatal lock").take() {
                        Some(e) => Err(e),
                        None => Ok(None),
                    };
                };
                self.leftover.extend(chunk);
            }
            let mut tracker = self.shared.tracker.lock().expect("tracker lock");
            let mut out = Vec::with_capacity(max.min(self.leftover.len()));
            while out.len() < max {
                let f = match self.leftover.pop_front() {
                    Some(f) => f,
                    None => match self.rx.try_recv() {
                        Ok(chunk) => {
                            self.leftover.extend(chunk);
                            continue;
                        }
                        Err(_) => break,
                    },
                };
                // Fetched before a rebalance took the partition: its next owner (maybe
                // this consumer again) reads it from the committed offset.
                if tracker.is_current(&f.tp, f.epoch) {
                    let position = tracker.track(f.tp.clone(), f.offset, f.epoch);
                    out.push((position, f));
                }
            }
            // Filled in after the tracker is released: the poller thread takes it for
            // every message it fetches.
            drop(tracker);
            if !out.is_empty() {
                let name = &self.name;
                return Ok(Some(
                    out.into_iter()
                        .map(|(position, f)| (position, finish(f.event, name, &f.tp, f.offset)))
                        .collect(),
                ));
            }
        }
    }

    /// Every position below `low` is complete: commits, per partition, the offset after
    /// its last message below `low` (asynchronously; unconfirmed commits are retried).
    /// An error reports a commit that failed since the last call.
    pub fn commit(&mut self, low: u64) -> Result<(), String> {
        let commits = {
            let mut tracker = self.shared.tracker.lock().expect("tracker lock");
            tracker.complete_below(low);
            tracker.take_commits()
        };
        if !commits.is_empty()
            && let Some(consumer) = &self.consumer
            && let Err(e) = consumer.commit(&list(&commits), CommitMode::Async)
        {
            let mut tracker = self.shared.tracker.lock().expect("tracker lock");
            for (tp, offset) in &commits {
                tracker.failed(tp, *offset);
            }
            return Err(format!("kafka offset commit failed: {e}"));
        }
        match self
            .shared
            .commit_error
            .lock()
            .expect("commit error lock")
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The position the next message gets (how many were handed out).
    pub fn handed_out(&self) -> u64 {
        self.shared
            .tracker
            .lock()
            .expect("tracker lock")
            .next_position()
    }

    /// Positions handed out that are not below the last committed low watermark.
    pub fn in_flight(&self) -> u64 {
        self.shared
            .tracker
            .lock()
            .expect("tracker lock")
            .in_flight()
    }

    /// The offsets the broker confirmed committed, for tests and diagnostics.
    pub fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.shared
            .tracker
            .lock()
            .expect("tracker lock")
            .committed(&(Arc::from(topic), partition))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The polling thread holds the last reference: it commits and leaves the group.
        self.consumer = None;
        self.rx.close();
        if self.done.recv_timeout(CLOSE_TIMEOUT).is_err() {
            warn!(source = %self.name, "kafka consumer did not close in time; its last offsets may not be committed (those events come again)");
        }
    }
}

struct Poller {
    name: String,
    consumer: Arc<BaseConsumer<GroupContext>>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    tx: mpsc::Sender<Vec<Fetched>>,
}

impl Poller {
    fn run(self) {
        let mut held: VecDeque<Vec<Fetched>> = VecDeque::new();
        let (mut held_messages, mut held_bytes) = (0usize, 0usize);
        let mut paused = false;
        let mut last_recommit = Instant::now();
        let mut last_warn: Option<(String, Instant)> = None;
        let mut topic: Option<Arc<str>> = None;
        while !self.stop.load(Ordering::SeqCst) {
            while let Some(chunk) = held.pop_front() {
                let (messages, bytes) = (chunk.len(), chunk_bytes(&chunk));
                match self.tx.try_send(chunk) {
                    Ok(()) => {
                        held_messages -= messages;
                        held_bytes -= bytes;
                    }
                    Err(mpsc::error::TrySendError::Full(chunk)) => {
                        held.push_front(chunk);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        held.clear();
                        (held_messages, held_bytes) = (0, 0);
                        break;
                    }
                }
            }
            let newly_assigned = self.shared.assigned.swap(false, Ordering::SeqCst);
            let full = held_messages >= HOLD_BEFORE_PAUSE || held_bytes >= HOLD_BYTES_BEFORE_PAUSE;
            let half =
                held_messages <= HOLD_BEFORE_PAUSE / 2 && held_bytes <= HOLD_BYTES_BEFORE_PAUSE / 2;
            if paused && half {
                self.set_paused(false);
                paused = false;
            } else if full && (!paused || newly_assigned) {
                self.set_paused(true);
                paused = true;
            }
            // While holding messages, come back soon to hand them over.
            let mut timeout = if held.is_empty() {
                Duration::from_millis(100)
            } else {
                Duration::from_millis(5)
            };
            // Gather a chunk: wait for the first message, then take what librdkafka
            // already has without waiting.
            let mut chunk = Vec::new();
            let mut bytes = 0;
            while chunk.len() < CHUNK && bytes < CHUNK_BYTES {
                match self.consumer.poll(timeout) {
                    Some(Ok(m)) => {
                        if let Some(f) = self.fetched(&m, &mut topic) {
                            bytes += f.event.payload.len();
                            chunk.push(f);
                        }
                        timeout = Duration::ZERO;
                    }
                    Some(Err(e)) => {
                        if self.poll_failed(e, &mut last_warn) {
                            self.stop.store(true, Ordering::SeqCst);
                        }
                        break;
                    }
                    None => break,
                }
            }
            if !chunk.is_empty() {
                held_messages += chunk.len();
                held_bytes += chunk_bytes(&chunk);
                held.push_back(chunk);
            }
            if last_recommit.elapsed() >= RECOMMIT_EVERY {
                last_recommit = Instant::now();
                let again = self
                    .shared
                    .tracker
                    .lock()
                    .expect("tracker lock")
                    .uncommitted();
                if !again.is_empty() {
                    let _ = self.consumer.commit(&list(&again), CommitMode::Async);
                }
            }
        }
        let last = self
            .shared
            .tracker
            .lock()
            .expect("tracker lock")
            .uncommitted();
        if !last.is_empty() {
            match self.consumer.commit(&list(&last), CommitMode::Sync) {
                Ok(()) => {
                    info!(source = %self.name, offsets = ?last, "committed the final kafka offsets")
                }
                Err(e) => warn!(source = %self.name, error = %e,
                    "could not commit the final kafka offsets; those events are read again"),
            }
        }
        // Dropping the last reference closes the consumer: it leaves the group (the
        // revoke callback commits anything that completed meanwhile).
    }

    fn set_paused(&self, pause: bool) {
        let Ok(assignment) = self.consumer.assignment() else {
            return;
        };
        if assignment.count() == 0 {
            return;
        }
        let result = if pause {
            self.consumer.pause(&assignment)
        } else {
            self.consumer.resume(&assignment)
        };
        if let Err(e) = result {
            warn!(source = %self.name, error = %e, pause, "could not pause/resume kafka partitions");
        }
    }

    /// Reports a poll error; `true` when the consumer failed for good (the reason is in
    /// `shared.fatal` for the reader).
    fn poll_failed(&self, e: RdError, last_warn: &mut Option<(String, Instant)>) -> bool {
        if let Some((code, reason)) = self.consumer.client().fatal_error() {
            error!(source = %self.name, ?code, %reason, "kafka consumer failed fatally; this source stops");
            *self.shared.fatal.lock().expect("fatal lock") =
                Some(format!("kafka consumer failed fatally: {reason}"));
            return true;
        }
        let text = e.to_string();
        let repeat = last_warn
            .as_ref()
            .is_some_and(|(t, at)| *t == text && at.elapsed() < WARN_EVERY);
        if !repeat {
            warn!(source = %self.name, error = %text,
                "kafka consumer: {text}; it keeps trying (a missing topic is read once it exists)");
            *last_warn = Some((text, Instant::now()));
        }
        false
    }

    /// The message as a [`Fetched`], when its partition is assigned. `topic` keeps the
    /// last topic name, shared by the messages of that topic.
    fn fetched(&self, m: &BorrowedMessage<'_>, topic: &mut Option<Arc<str>>) -> Option<Fetched> {
        let name = match topic {
            Some(t) if &**t == m.topic() => t.clone(),
            _ => topic.insert(Arc::from(m.topic())).clone(),
        };
        let tp: TopicPartition = (name, m.partition());
        let epoch = self
            .shared
            .tracker
            .lock()
            .expect("tracker lock")
            .epoch(&tp)?;
        Some(Fetched {
            event: copied(m),
            tp,
            offset: m.offset(),
            epoch,
        })
    }
}

fn chunk_bytes(chunk: &[Fetched]) -> usize {
    chunk.iter().map(|f| f.event.payload.len()).sum()
}

/// The id of a message without a `switchyard-id` header: `topic/partition/offset`,
/// the same every time the message is read.
pub fn message_event_id(topic: &str, partition: i32, offset: i64) -> String {
    format!("{topic}/{partition}/{offset}")
}

/// What only the message's bytes give: the rest is left to [`finish`].
fn copied(m: &BorrowedMessage<'_>) -> Event {
    let mut id = None;
    let mut content_type = None;
    let mut event_headers = Vec::new();
    if let Some(h) = m.headers() {
        for h in h.iter() {
            let value = || String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
            match h.key {
                headers::ID => id = Some(value()),
                headers::CONTENT_TYPE => content_type = Some(value()),
                "content-type" if content_type.is_none() => {
                    let value = value();
                    content_type = Some(value.clone());
                    event_headers.push((h.key.to_owned(), value));
                }
                // Written by a switchyard Kafka sink; the event gets this source's own.
                headers::SOURCE | headers::KIND => {}
                _ => event_headers.push((h.key.to_owned(), value())),
            }
        }
    }
    let payload = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
    let timestamp_ms = m
        .timestamp()
        .to_millis()
        .and_then(|t| u64::try_from(t).ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
    Event {
        id: id.unwrap_or_default(),
        source: String::new(),
        kind: String::new(),
        key: m.key().map(<[u8]>::to_vec),
        payload,
        content_type: content_type.unwrap_or_default(),
        headers: event_headers,
        timestamp_ms,
        payload_is_compact_json: false,
    }
}

/// The event of a [`copied`] message: its source and kind, its id when no header gave
/// one (`topic/partition/offset`), and its content type when no header gave one (JSON
/// when the payload parses as JSON).
fn finish(mut event: Event, source: &str, tp: &TopicPartition, offset: i64) -> Event {
    if event.id.is_empty() {
        event.id = message_event_id(&tp.0, tp.1, offset);
    }
    event.source = source.to_owned();
    event.kind = KIND_MESSAGE.to_owned();
    if event.content_type.is_empty() {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(&event.payload).is_ok();
        event.content_type = if json {
            "application/json"
        } else {
            "application/octet-stream"
        }
        .to_owned();
    }
    event
}
