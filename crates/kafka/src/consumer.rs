//! `type = "kafka"` source: a consumer-group member for one pipeline reader.
//!
//! A thread of its own polls the consumer (about `WAIT_FOR_READER` apart at most, so
//! the group never drops it for being slow: `max.poll.interval.ms`) and forwards
//! messages in chunks (what librdkafka has in hand, up to `CHUNK`) through a bounded
//! channel. When the channel is full it first waits for the reader to take a chunk (up
//! to `WAIT_FOR_READER`); a reader that keeps up does. Past that it holds what it polls
//! (up to `HOLD_BEFORE_PAUSE` messages), then pauses its partitions and keeps polling;
//! librdkafka then resumes each partition at the message after the last one polled.
//! Offsets are committed only as far as [`KafkaConsumer::commit`]'s low watermark
//! allows (see [`OffsetTracker`]), asynchronously while running, synchronously when
//! partitions are revoked and at the end.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError as RdError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode as Code;
use switchyard_config::KafkaSourceConfig;
use switchyard_event::{CompactString, Event, KIND_MESSAGE};
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
/// Bytes (keys, payloads and headers) after which a chunk is handed over even when it
/// has fewer messages.
const CHUNK_BYTES: usize = 1 << 20;
/// What the polling thread holds when the channel is full before it pauses its
/// partitions (messages, bytes of keys, payloads and headers: whichever comes first). Pausing drops
/// librdkafka's prefetched messages and resuming fetches them again, so the thread
/// pauses only with this much work in hand, and resumes when half of it has gone: the
/// refetch overlaps with the pipeline working off the rest.
const HOLD_BEFORE_PAUSE: usize = 65_536;
const HOLD_BYTES_BEFORE_PAUSE: usize = 16 << 20;
/// How long the polling thread waits for the reader to take a chunk once the channel is
/// full, before it polls on and holds what it polls (each time the channel fills up).
/// Consumer callbacks such as a rebalance wait that long at most.
const WAIT_FOR_READER: Duration = Duration::from_millis(100);
/// How often commits that failed or were not confirmed are sent again.
const RECOMMIT_EVERY: Duration = Duration::from_secs(1);
/// How long dropping a consumer waits for its final commit and group leave.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the same poll error is logged.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Messages as the poller thread copied them out of librdkafka: the bytes of their keys,
/// payloads and headers back to back in one buffer, and where each lies. The poller
/// thread is the consumer's bottleneck, so it only copies (one growing buffer per chunk,
/// no allocation per message); the reader builds the events ([`Chunk::event`]).
#[derive(Default)]
struct Chunk {
    data: Vec<u8>,
    messages: Vec<Fetched>,
    headers: Vec<RawHeader>,
    /// Where the reader goes on from (messages before it were handed out).
    next: usize,
}

/// One message of a [`Chunk`]; byte ranges index its `data`.
struct Fetched {
    tp: TopicPartition,
    offset: i64,
    epoch: u32,
    timestamp_ms: Option<i64>,
    key: Option<(usize, usize)>,
    payload: (usize, usize),
    /// Its headers: a range of the chunk's `headers`.
    headers: (usize, usize),
}

/// A header of a [`Fetched`] message: its name and value as ranges of the chunk's data.
struct RawHeader {
    name: (usize, usize),
    value: Option<(usize, usize)>,
}

#[derive(Default)]
struct Shared {
    tracker: Mutex<OffsetTracker>,
    /// A commit that failed since the last [`KafkaConsumer::commit`] call.
    commit_error: Mutex<Option<String>>,
    /// Set on every assignment, so a paused consumer pauses the new partitions too.
    assigned: AtomicBool,
    /// Bumped on every assignment and revocation: an epoch the poller thread looked up
    /// before is current while this has not moved.
    generation: AtomicU64,
    /// Why the polling thread stopped, when it stopped on its own.
    fatal: Mutex<Option<String>>,
}

impl Shared {
    /// The offset tracker. An error when a thread panicked while holding it: its state
    /// may be half updated, so nothing is committed from it any more (the events since
    /// the last commit come again after a restart).
    fn tracker(&self) -> Result<std::sync::MutexGuard<'_, OffsetTracker>, String> {
        self.tracker.lock().map_err(|_| {
            "the kafka source's offset tracker is unusable after a panic; restart switchyard (events since the last commit are read again)".to_owned()
        })
    }
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
                match self.shared.tracker() {
                    Ok(mut tracker) => tracker.assign(tps),
                    Err(e) => warn!(source = %name, error = %e, "kafka partitions not tracked"),
                }
                self.shared.assigned.store(true, Ordering::SeqCst);
                self.shared.generation.fetch_add(1, Ordering::SeqCst);
            }
            Rebalance::Revoke(tpl) => {
                let tps = partitions(tpl);
                let commits = self
                    .shared
                    .tracker()
                    .map(|mut tracker| tracker.revoke(tps.clone()))
                    .unwrap_or_default();
                self.shared.generation.fetch_add(1, Ordering::SeqCst);
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
        let Ok(mut tracker) = self.shared.tracker() else {
            return;
        };
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
    rx: mpsc::Receiver<Chunk>,
    /// The chunk being handed out: the rest of it did not fit in the last
    /// [`KafkaConsumer::next`].
    current: Option<Chunk>,
    shared: Arc<Shared>,
    consumer: Option<Arc<BaseConsumer<GroupContext>>>,
    stop: Arc<AtomicBool>,
    done: std::sync::mpsc::Receiver<()>,
    /// The polling thread, woken whenever a chunk is taken: while it holds chunks the
    /// channel had no room for, it waits for that.
    poller: std::thread::Thread,
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
        // Keeps the channel open until a failure of the thread is recorded, so the
        // reader sees the reason, not an ordinary end.
        let open = tx.clone();
        let failed = shared.clone();
        let poller = Poller {
            name: source.to_owned(),
            consumer: consumer.clone(),
            shared: shared.clone(),
            stop: stop.clone(),
            tx,
        };
        let name = source.to_owned();
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{source}"))
            .spawn(move || {
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| poller.run()));
                if let Err(panic) = run {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "a panic without a message".to_owned());
                    error!(source = %name, panic = %what, "the kafka polling thread failed; this source stops");
                    if let Ok(mut fatal) = failed.fatal.lock() {
                        *fatal = Some(format!("the kafka polling thread failed: {what}"));
                    }
                }
                drop(open);
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
            current: None,
            shared,
            consumer: Some(consumer),
            stop,
            done,
            poller: thread.thread().clone(),
        })
    }

    /// Waits for messages and returns up to `max` of them as events, with positions in
    /// order. `Ok(None)`: the consumer has stopped. Cancel-safe.
    pub async fn next(&mut self, max: usize) -> Result<Option<Vec<(u64, Event)>>, String> {
        let max = max.max(1);
        let mut events = Vec::new();
        loop {
            let mut chunk = match self.current.take() {
                Some(chunk) => chunk,
                // A batch under way takes only chunks already waiting.
                None if !events.is_empty() => match self.rx.try_recv() {
                    Ok(chunk) => {
                        self.poller.unpark();
                        chunk
                    }
                    Err(_) => return Ok(Some(events)),
                },
                None => match self.rx.recv().await {
                    Some(chunk) => {
                        self.poller.unpark();
                        chunk
                    }
                    None => {
                        return match self.shared.fatal.lock().expect("fatal lock").take() {
                            Some(e) => Err(e),
                            None => Ok(None),
                        };
                    }
                },
            };
            let mut out =
                Vec::with_capacity((max - events.len()).min(chunk.messages.len() - chunk.next));
            {
                let mut tracker = self.shared.tracker()?;
                // Messages come in runs of one partition: the answer for the message
                // before serves while the partition and epoch are the same.
                let mut last: Option<(&TopicPartition, u32, bool)> = None;
                while events.len() + out.len() < max && chunk.next < chunk.messages.len() {
                    let f = &chunk.messages[chunk.next];
                    chunk.next += 1;
                    let current = match last {
                        Some((tp, epoch, current)) if *tp == f.tp && epoch == f.epoch => current,
                        _ => tracker.is_current(&f.tp, f.epoch),
                    };
                    last = Some((&f.tp, f.epoch, current));
                    // Fetched before a rebalance took the partition: its next owner
                    // (maybe this consumer again) reads it from the committed offset.
                    if current {
                        out.push((
                            tracker.track(f.tp.clone(), f.offset, f.epoch),
                            chunk.next - 1,
                        ));
                    }
                }
            }
            // The events are built after the tracker is released: the poller thread
            // takes it too.
            events.extend(
                out.into_iter()
                    .map(|(position, i)| (position, chunk.event(i, &self.name))),
            );
            if chunk.next < chunk.messages.len() {
                self.current = Some(chunk);
            }
            if events.len() >= max {
                return Ok(Some(events));
            }
        }
    }

    /// Every position below `low` is complete: commits, per partition, the offset after
    /// its last message below `low` (asynchronously; unconfirmed commits are retried).
    /// An error reports a commit that failed since the last call.
    pub fn commit(&mut self, low: u64) -> Result<(), String> {
        let commits = {
            let mut tracker = self.shared.tracker()?;
            tracker.complete_below(low);
            tracker.take_commits()
        };
        if !commits.is_empty()
            && let Some(consumer) = &self.consumer
            && let Err(e) = consumer.commit(&list(&commits), CommitMode::Async)
        {
            let mut tracker = self.shared.tracker()?;
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
            .tracker()
            .map_or(0, |tracker| tracker.next_position())
    }

    /// Positions handed out that are not below the last committed low watermark.
    pub fn in_flight(&self) -> u64 {
        self.shared
            .tracker()
            .map_or(0, |tracker| tracker.in_flight())
    }

    /// The offsets the broker confirmed committed, for tests and diagnostics.
    pub fn committed(&self, topic: &str, partition: i32) -> Option<i64> {
        self.shared
            .tracker()
            .ok()?
            .committed(&(Arc::from(topic), partition))
    }
}

impl Drop for KafkaConsumer {
    fn drop(&mut self) {
        // The polling thread is to hold the last reference: it commits and leaves the
        // group. So this one goes before the thread is told to stop (and woken), or it
        // could end first and leave the closing to this thread.
        self.consumer = None;
        self.rx.close();
        self.stop.store(true, Ordering::SeqCst);
        self.poller.unpark();
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
    tx: mpsc::Sender<Chunk>,
}

impl Poller {
    fn run(self) {
        let mut held: VecDeque<Chunk> = VecDeque::new();
        let (mut held_messages, mut held_bytes) = (0usize, 0usize);
        let mut paused = false;
        let mut last_recommit = Instant::now();
        let mut last_warn: Option<(String, Instant)> = None;
        let mut last = LastPartition::default();
        // Sized by the chunk before, so a steady stream grows no buffer.
        let mut reserve = (0usize, 0usize);
        // Since when the channel has had no room for a chunk.
        let mut full_since: Option<Instant> = None;
        while !self.stop.load(Ordering::SeqCst) {
            while let Some(chunk) = held.pop_front() {
                let (messages, bytes) = (chunk.messages.len(), chunk.data.len());
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
            if held.is_empty() {
                full_since = None;
            } else if !paused {
                // A reader that keeps up takes a chunk within moments (and wakes this
                // thread): wait for it rather than poll ahead. Polling ahead would fill
                // the hold and pause, and a pause makes librdkafka drop what it
                // prefetched (up to `queued.max.messages.kbytes`) and fetch it again.
                let since = *full_since.get_or_insert_with(Instant::now);
                if let Some(left) = WAIT_FOR_READER.checked_sub(since.elapsed())
                    && !left.is_zero()
                {
                    std::thread::park_timeout(left);
                    continue;
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
            let mut chunk = Chunk {
                data: Vec::with_capacity(reserve.0),
                messages: Vec::with_capacity(reserve.1),
                ..Chunk::default()
            };
            while chunk.messages.len() < CHUNK && chunk.data.len() < CHUNK_BYTES {
                match self.consumer.poll(timeout) {
                    Some(Ok(m)) => {
                        if let Some((tp, epoch)) = self.assigned(&m, &mut last) {
                            chunk.copy(&m, tp, epoch);
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
            if !chunk.messages.is_empty() {
                // At most a chunk's worth: one large message must not make every
                // chunk after it reserve as much.
                reserve = (chunk.data.len().min(CHUNK_BYTES), chunk.messages.len());
                held_messages += chunk.messages.len();
                held_bytes += chunk.data.len();
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

    /// The partition of `m` and the epoch it was fetched in, when it is assigned.
    /// `last` keeps the answer for the partition of the message before: messages come in
    /// runs of one partition, and the assignment changes only inside `poll` (the
    /// rebalance callbacks run on this thread), which bumps the generation it checks.
    fn assigned(
        &self,
        m: &BorrowedMessage<'_>,
        last: &mut LastPartition,
    ) -> Option<(TopicPartition, u32)> {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        if let Some((tp, epoch)) = &last.tp
            && last.generation == generation
            && tp.1 == m.partition()
            && &*tp.0 == m.topic()
        {
            return epoch.map(|epoch| (tp.clone(), epoch));
        }
        let name = match &last.tp {
            Some((tp, _)) if &*tp.0 == m.topic() => tp.0.clone(),
            _ => Arc::from(m.topic()),
        };
        let tp: TopicPartition = (name, m.partition());
        let epoch = self.shared.tracker.lock().expect("tracker lock").epoch(&tp);
        *last = LastPartition {
            tp: Some((tp.clone(), epoch)),
            generation,
        };
        epoch.map(|epoch| (tp, epoch))
    }
}

/// The partition of the message polled before, and its epoch then (`None`: not
/// assigned), as of an assignment generation.
#[derive(Default)]
struct LastPartition {
    tp: Option<(TopicPartition, Option<u32>)>,
    generation: u64,
}

/// The headers of `m` as they came, names and values as bytes. librdkafka parses them
/// into a list on first access and frees it with the message. (rdkafka's own header
/// reader insists on UTF-8 names and panics on any other, which any producer can send.)
/// librdkafka keeps names as C strings and gives no length: a name ends at its first
/// NUL byte.
fn raw_headers<'m>(
    m: &'m BorrowedMessage<'_>,
) -> impl Iterator<Item = (&'m [u8], Option<&'m [u8]>)> + 'm {
    use rdkafka::bindings as rd;
    let mut list: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m` is a live message; the list it gives lives as long as the message
    // and is only read here, while `m` is borrowed.
    let count = unsafe {
        match rd::rd_kafka_message_headers(m.ptr(), &mut list) {
            rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR if !list.is_null() => {
                rd::rd_kafka_header_cnt(list)
            }
            _ => 0,
        }
    };
    (0..count).filter_map(move |i| {
        let mut name: *const std::ffi::c_char = std::ptr::null();
        let mut value: *const std::ffi::c_void = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `i` is below the list's count; librdkafka keeps each name
        // NUL-terminated and each value `size` bytes long (null: no value), inside the
        // list, which lives as long as `m`.
        unsafe {
            if rd::rd_kafka_header_get_all(list, i, &mut name, &mut value, &mut size)
                != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                return None;
            }
            let name = std::ffi::CStr::from_ptr(name).to_bytes();
            let value =
                (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
            Some((name, value))
        }
    })
}

impl Chunk {
    /// Appends `bytes` to the data; returns their range.
    fn push(&mut self, bytes: &[u8]) -> (usize, usize) {
        let start = self.data.len();
        self.data.extend_from_slice(bytes);
        (start, self.data.len())
    }

    fn bytes(&self, (start, end): (usize, usize)) -> &[u8] {
        &self.data[start..end]
    }

    /// Copies what the event of `m` needs.
    fn copy(&mut self, m: &BorrowedMessage<'_>, tp: TopicPartition, epoch: u32) {
        let key = m.key().map(|k| self.push(k));
        let payload = self.push(m.payload().unwrap_or_default());
        let first = self.headers.len();
        for (name, value) in raw_headers(m) {
            let name = self.push(name);
            let value = value.map(|v| self.push(v));
            self.headers.push(RawHeader { name, value });
        }
        self.messages.push(Fetched {
            tp,
            offset: m.offset(),
            epoch,
            timestamp_ms: m.timestamp().to_millis(),
            key,
            payload,
            headers: (first, self.headers.len()),
        });
    }

    /// The event of message `i`, read by source `source`: its id from the
    /// `switchyard-id` header or else `topic/partition/offset`; its content type from
    /// the `switchyard-content-type` or `content-type` header, or else JSON when the
    /// payload parses as JSON. Header names and values that are not UTF-8 are kept with
    /// replacement characters.
    fn event(&self, i: usize, source: &str) -> Event {
        let f = &self.messages[i];
        let mut id = None;
        let mut content_type = None;
        let mut event_headers = Vec::new();
        for h in &self.headers[f.headers.0..f.headers.1] {
            let name = self.bytes(h.name);
            let bytes = h.value.map_or(&[][..], |v| self.bytes(v));
            let value = || String::from_utf8_lossy(bytes).into_owned();
            let text = || CompactString::from_utf8_lossy(bytes);
            let owned_name = || String::from_utf8_lossy(name).into_owned();
            match name {
                n if n == headers::ID.as_bytes() => id = Some(text()),
                n if n == headers::CONTENT_TYPE.as_bytes() => content_type = Some(text()),
                b"content-type" if content_type.is_none() => {
                    content_type = Some(text());
                    event_headers.push((owned_name(), value()));
                }
                // Written by a switchyard Kafka sink; the event gets this source's own.
                n if n == headers::SOURCE.as_bytes() || n == headers::KIND.as_bytes() => {}
                _ => event_headers.push((owned_name(), value())),
            }
        }
        let payload = self.bytes(f.payload).to_vec();
        let content_type = content_type.filter(|c| !c.is_empty()).unwrap_or_else(|| {
            let json = serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok();
            if json {
                "application/json"
            } else {
                "application/octet-stream"
            }
            .into()
        });
        let timestamp_ms = f
            .timestamp_ms
            .and_then(|t| u64::try_from(t).ok())
            .unwrap_or_else(|| {
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64)
            });
        Event {
            id: id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| message_event_id(&f.tp.0, f.tp.1, f.offset)),
            source: source.into(),
            kind: KIND_MESSAGE.into(),
            key: f.key.map(|k| self.bytes(k).to_vec()),
            payload,
            content_type,
            headers: event_headers,
            timestamp_ms,
            payload_is_compact_json: false,
        }
    }
}

/// The id of a message without a `switchyard-id` header: `topic/partition/offset`,
/// the same every time the message is read.
pub fn message_event_id(topic: &str, partition: i32, offset: i64) -> CompactString {
    switchyard_event::format_compact!("{topic}/{partition}/{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk of one message at offset 7 of partition 2 of `t`, with these headers.
    fn chunk(payload: &[u8], with_headers: &[(&str, Option<&str>)]) -> Chunk {
        let with_headers: Vec<(&[u8], Option<&str>)> = with_headers
            .iter()
            .map(|(name, value)| (name.as_bytes(), *value))
            .collect();
        chunk_of_bytes(payload, &with_headers)
    }

    /// [`chunk`] with header names given as bytes.
    fn chunk_of_bytes(payload: &[u8], with_headers: &[(&[u8], Option<&str>)]) -> Chunk {
        let mut c = Chunk::default();
        let key = Some(c.push(b"k1"));
        let payload = c.push(payload);
        for (name, value) in with_headers {
            let name = c.push(name);
            let value = value.map(|v| c.push(v.as_bytes()));
            c.headers.push(RawHeader { name, value });
        }
        c.messages.push(Fetched {
            tp: (Arc::from("t"), 2),
            offset: 7,
            epoch: 1,
            timestamp_ms: Some(1_000),
            key,
            payload,
            headers: (0, c.headers.len()),
        });
        c
    }

    #[test]
    fn a_message_without_switchyard_headers_gets_its_position_as_id_and_a_guessed_type() {
        let c = chunk(br#"{"a":1}"#, &[("trace", Some("x"))]);
        let e = c.event(0, "orders");
        assert_eq!(e.id, "t/2/7");
        assert_eq!(e.source, "orders");
        assert_eq!(e.kind, KIND_MESSAGE);
        assert_eq!(e.content_type, "application/json");
        assert_eq!(e.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(e.payload, br#"{"a":1}"#);
        assert_eq!(e.headers, vec![("trace".to_owned(), "x".to_owned())]);
        assert_eq!(e.timestamp_ms, 1_000);
        let binary = chunk(b"\xff\x00", &[]);
        assert_eq!(
            binary.event(0, "orders").content_type,
            "application/octet-stream"
        );
    }

    #[test]
    fn switchyard_headers_give_id_and_type_and_empty_ones_are_ignored() {
        let c = chunk(
            b"plain",
            &[
                (headers::ID, Some("ev-1")),
                (headers::SOURCE, Some("elsewhere")),
                (headers::KIND, Some("insert")),
                (headers::CONTENT_TYPE, Some("text/plain")),
            ],
        );
        let e = c.event(0, "orders");
        assert_eq!(
            (e.id.as_str(), e.content_type.as_str()),
            ("ev-1", "text/plain")
        );
        assert_eq!(e.source, "orders", "the reading source names the event");
        assert!(e.headers.is_empty(), "{:?}", e.headers);
        // Empty (or valueless) headers say nothing: the message's own id and a guess.
        let empty = chunk(
            br#"[1]"#,
            &[(headers::ID, Some("")), (headers::CONTENT_TYPE, None)],
        );
        let e = empty.event(0, "orders");
        assert_eq!(
            (e.id.as_str(), e.content_type.as_str()),
            ("t/2/7", "application/json")
        );
        // A plain content-type header is kept as a header and gives the type.
        let plain = chunk(b"x", &[("content-type", Some("text/csv"))]);
        let e = plain.event(0, "orders");
        assert_eq!(e.content_type, "text/csv");
        assert_eq!(
            e.headers,
            vec![("content-type".to_owned(), "text/csv".to_owned())]
        );
    }

    #[test]
    fn a_header_name_that_is_not_utf8_is_kept_with_a_replacement_character() {
        let c = chunk_of_bytes(b"x", &[(b"tr\xffce", Some("1")), (b"ok", Some("2"))]);
        assert_eq!(
            c.event(0, "orders").headers,
            vec![
                ("tr\u{fffd}ce".to_owned(), "1".to_owned()),
                ("ok".to_owned(), "2".to_owned())
            ]
        );
    }
}
