//! Delivery to sinks: ordering lanes, retries with backoff, dead letters, and the
//! acknowledgement that travels with every event.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use switchyard_config::redact;
use switchyard_connector::{Backoff, Outcome, Sink};
use switchyard_event::Event;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::metrics::{Metrics, SinkNameLabels};
use switchyard_queue::{QueueHandle, now_ms};

/// Header names a dead-lettered event carries.
pub use switchyard_queue::dlq_headers;

/// Why an event is dead-lettered.
pub struct DeadLetterReason<'a> {
    pub pipeline: &'a str,
    pub sink: Option<&'a str>,
    pub plugin: Option<&'a str>,
    pub error: &'a str,
    pub attempts: u32,
}

/// Appends `event` with the reason headers to the dead-letter `queue`, retrying until the
/// append is durable: a dead letter is never dropped. Returns once it is durable.
///
/// The error goes to the log and into the stored header in its [`redact::text`] form:
/// sinks already name their destination safely, this also covers errors of libraries
/// that quote a URL or a `password=…` pair.
pub async fn append_dead_letter(queue: &QueueHandle, event: &Event, reason: &DeadLetterReason<'_>) {
    let error = redact::text(reason.error);
    warn!(pipeline = %reason.pipeline, sink = ?reason.sink, plugin = ?reason.plugin,
        event = %event.id, queue = %queue.name, error = %error,
        attempts = reason.attempts, "dead-lettering event");
    let mut event = event.clone();
    if let Some(sink) = reason.sink {
        event.set_header(dlq_headers::SINK, sink);
    }
    if let Some(plugin) = reason.plugin {
        event.set_header(dlq_headers::PLUGIN, plugin);
    }
    event.set_header(dlq_headers::PIPELINE, reason.pipeline);
    event.set_header(dlq_headers::ERROR, error.as_ref());
    event.set_header(dlq_headers::ATTEMPTS, reason.attempts.to_string());
    event.set_header(dlq_headers::AT_MS, now_ms().to_string());
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let batch = [event];
    while let Err(e) = queue.append(&batch).await {
        warn!(queue = %queue.name, error = %e,
            "could not append to the dead-letter queue; retrying");
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Completion of a batch read from a source: it completes when every (event, sink)
/// delivery of the batch is acknowledged (delivered or durably dead-lettered). Then the
/// batch's first position is sent back to the reader, whose watermark tracks the batch
/// as one range. One token, one counter and one message per batch, not per event.
pub struct AckToken {
    remaining: AtomicUsize,
    first: u64,
    to_reader: mpsc::UnboundedSender<u64>,
}

impl AckToken {
    /// A token for `deliveries` deliveries of the batch starting at `first`. With none
    /// (every event dropped or dead-lettered by a plugin) it completes at once.
    pub fn new(deliveries: usize, first: u64, to_reader: mpsc::UnboundedSender<u64>) -> Arc<Self> {
        let token = Arc::new(Self {
            remaining: AtomicUsize::new(deliveries),
            first,
            to_reader,
        });
        if deliveries == 0 {
            token.complete_now();
        }
        token
    }

    /// `n` deliveries are done.
    pub fn ack(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.remaining.fetch_sub(n, Ordering::AcqRel);
        debug_assert!(before >= n, "more acknowledgements than deliveries");
        if before == n {
            self.complete_now();
        }
    }

    fn complete_now(&self) {
        // The reader is gone only when shutting down; its checkpoint then stays behind,
        // so the batch is delivered again after the restart.
        let _ = self.to_reader.send(self.first);
    }
}

/// A run of events of one batch on its way to one sink, in order. Every event of the run
/// acknowledges `ack` once when it is delivered or dead-lettered.
pub struct Delivery {
    pub events: Vec<Arc<Event>>,
    pub ack: Arc<AckToken>,
    pub pipeline: Arc<str>,
    pub dead_letter: Arc<QueueHandle>,
}

/// Runs a lane's inbox holds: with batches of hundreds of events this bounds a lane's
/// backlog by events too (the readers' `max_in_flight` bounds it for good).
const LANE_INBOX_RUNS: usize = 64;

/// A sink's lanes are gone: the process is shutting down.
#[derive(Debug)]
pub struct SinkStopped;

/// A running sink: its lanes and their tasks.
pub struct SinkHandle {
    pub name: String,
    lanes: Vec<mpsc::Sender<Delivery>>,
    next_lane: AtomicUsize,
}

impl SinkHandle {
    /// Starts one task per lane (`sink.concurrency()`), each with a bounded inbox.
    pub fn start(name: &str, sink: Arc<dyn Sink>, metrics: Arc<Metrics>) -> Arc<Self> {
        let lanes = sink.concurrency().max(1);
        let senders = (0..lanes)
            .map(|_| {
                let (tx, rx) = mpsc::channel(LANE_INBOX_RUNS);
                let lane = Lane::new(name, sink.clone(), &metrics);
                tokio::spawn(lane.run(rx));
                tx
            })
            .collect();
        Arc::new(Self {
            name: name.to_owned(),
            lanes: senders,
            next_lane: AtomicUsize::new(0),
        })
    }

    /// Whether every lane has ended (the sink stopped; at shutdown).
    pub fn is_stopped(&self) -> bool {
        self.lanes.iter().all(|lane| lane.is_closed())
    }

    /// Queues the run's events on their keys' lanes, in order, waiting while a lane is
    /// full (backpressure). Events with the same key share a lane, so they reach the
    /// sink in the order given; keyless events are spread over the lanes. On `Err` the
    /// sink has stopped (shutdown) and the events not queued stay unacknowledged.
    pub async fn dispatch(&self, delivery: Delivery) -> Result<(), SinkStopped> {
        if self.lanes.len() == 1 {
            return self.lanes[0].send(delivery).await.map_err(|_| SinkStopped);
        }
        let mut runs: Vec<Vec<Arc<Event>>> = vec![Vec::new(); self.lanes.len()];
        for event in delivery.events {
            let lane = match &event.key {
                Some(key) => {
                    let mut h = std::hash::DefaultHasher::new();
                    key.hash(&mut h);
                    (h.finish() % self.lanes.len() as u64) as usize
                }
                None => self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len(),
            };
            runs[lane].push(event);
        }
        for (lane, events) in runs.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            let run = Delivery {
                events,
                ack: delivery.ack.clone(),
                pipeline: delivery.pipeline.clone(),
                dead_letter: delivery.dead_letter.clone(),
            };
            self.lanes[lane].send(run).await.map_err(|_| SinkStopped)?;
        }
        Ok(())
    }
}

struct Lane {
    sink_name: String,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
    delivered: Counter,
    retried: Counter,
    latency: Histogram,
}

/// The runs a lane delivers in one go, their events laid end to end.
struct Pending {
    runs: Vec<Delivery>,
    events: Vec<Arc<Event>>,
    /// `ends[i]`: index in `events` just past run `i`.
    ends: Vec<usize>,
    /// Events before this index are acknowledged.
    acked: usize,
    /// The run holding `events[acked]`.
    run: usize,
}

impl Pending {
    fn new(mut runs: Vec<Delivery>) -> Self {
        let total = runs.iter().map(|r| r.events.len()).sum();
        let mut events = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(runs.len());
        for r in &mut runs {
            events.append(&mut r.events);
            ends.push(events.len());
        }
        Self {
            runs,
            events,
            ends,
            acked: 0,
            run: 0,
        }
    }

    /// The run that event `i` belongs to.
    fn run_of(&self, i: usize) -> &Delivery {
        &self.runs[self.ends.partition_point(|&end| end <= i)]
    }

    /// Everything before `done` is delivered or dead-lettered: acknowledges it, one
    /// counter update per run.
    fn settle(&mut self, done: usize) {
        while self.acked < done {
            let end = self.ends[self.run];
            let upto = done.min(end);
            self.runs[self.run].ack.ack(upto - self.acked);
            self.acked = upto;
            if upto < end {
                break;
            }
            self.run += 1;
        }
    }
}

impl Lane {
    fn new(name: &str, sink: Arc<dyn Sink>, metrics: &Arc<Metrics>) -> Self {
        let labels = SinkNameLabels {
            sink: name.to_owned(),
        };
        Self {
            sink_name: name.to_owned(),
            sink,
            delivered: metrics.sink_counter(name, "delivered"),
            retried: metrics.sink_counter(name, "retried"),
            latency: metrics.sink_latency.get_or_create(&labels).clone(),
            metrics: metrics.clone(),
        }
    }

    async fn run(self, mut inbox: mpsc::Receiver<Delivery>) {
        let max_batch = self.sink.max_batch().max(1);
        while let Some(first) = inbox.recv().await {
            let mut held = first.events.len();
            let mut runs = vec![first];
            while held < max_batch {
                match inbox.try_recv() {
                    Ok(d) => {
                        held += d.events.len();
                        runs.push(d);
                    }
                    Err(_) => break,
                }
            }
            self.deliver(Pending::new(runs)).await;
        }
    }

    /// Delivers the pending events in order, at most `max_batch` per attempt. A failed
    /// event holds back the events after it in this lane (per-key order) until it is
    /// delivered or dead-lettered.
    async fn deliver(&self, mut pending: Pending) {
        let policy = self.sink.retry_policy();
        let max_batch = self.sink.max_batch().max(1);
        let total = pending.events.len();
        // Index of the first event not yet delivered or dead-lettered.
        let mut head = 0;
        // Attempts made for the event at `head`.
        let mut attempts = 0u32;
        while head < total {
            attempts += 1;
            let n = (total - head).min(max_batch);
            let started = Instant::now();
            let mut outcomes = self.sink.deliver(&pending.events[head..head + n]).await;
            self.latency.observe(started.elapsed().as_secs_f64());
            if outcomes.len() != n {
                warn!(sink = %self.sink_name, expected = n, got = outcomes.len(),
                    "sink returned the wrong number of outcomes; retrying the batch");
                outcomes = vec![
                    Outcome::Retry {
                        error: "sink returned the wrong number of outcomes".into(),
                        retry_after: None,
                    };
                    n
                ];
            }
            let mut delivered = 0u64;
            let mut skipped = 0u64;
            let mut retry = None;
            for outcome in outcomes {
                match outcome {
                    Outcome::Delivered => {
                        head += 1;
                        delivered += 1;
                        attempts = 1;
                    }
                    // Nothing to write in the sink's format: done, as if delivered.
                    Outcome::Skipped => {
                        head += 1;
                        skipped += 1;
                        attempts = 1;
                    }
                    Outcome::Permanent { error } => {
                        self.dead_letter(&pending, head, &error, attempts).await;
                        head += 1;
                        attempts = 1;
                    }
                    Outcome::Retry { error, retry_after } => {
                        retry = Some((error, retry_after));
                        break;
                    }
                }
            }
            pending.settle(head);
            if delivered > 0 {
                self.delivered.inc_by(delivered);
            }
            if skipped > 0 {
                debug!(sink = %self.sink_name, skipped,
                    "events without a form in the sink's format were skipped (acknowledged, not written)");
                self.metrics
                    .sink_outcome(&self.sink_name, "skipped", skipped);
            }
            let Some((error, retry_after)) = retry else {
                // Every event of this attempt is settled: the next one starts a new
                // attempt of its own, its first.
                attempts = 0;
                continue;
            };
            self.retried.inc();
            if policy.exhausted(attempts) {
                self.dead_letter(&pending, head, &error, attempts).await;
                head += 1;
                pending.settle(head);
                attempts = 0;
                continue;
            }
            let delay = policy.delay(attempts, retry_after);
            debug!(sink = %self.sink_name, attempts, ?delay, error = %redact::text(&error),
                "delivery failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Dead-letters event `i` of `pending` (durably); the caller then acknowledges it.
    async fn dead_letter(&self, pending: &Pending, i: usize, error: &str, attempts: u32) {
        let run = pending.run_of(i);
        let reason = DeadLetterReason {
            pipeline: &run.pipeline,
            sink: Some(&self.sink_name),
            plugin: None,
            error,
            attempts,
        };
        append_dead_letter(&run.dead_letter, &pending.events[i], &reason).await;
        self.metrics
            .sink_outcome(&self.sink_name, "dead_lettered", 1);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Mutex;
    use switchyard_connector::{BoxFuture, RetryPolicy};
    use switchyard_store::FsStorage;

    use switchyard_queue::QueueLimits;

    /// Records what it delivered; answers Retry for a deterministic subset of attempts and
    /// Permanent for events whose payload is `poison`.
    struct FlakySink {
        delivered: Mutex<Vec<Arc<Event>>>,
        attempts: AtomicUsize,
        lanes: usize,
    }

    impl Sink for FlakySink {
        fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
            Box::pin(async move {
                let mut out = Vec::new();
                for e in batch {
                    let n = self.attempts.fetch_add(1, Ordering::SeqCst);
                    if e.payload == b"poison" {
                        out.push(Outcome::Permanent {
                            error: "404 not found".into(),
                        });
                    } else if n.is_multiple_of(5) {
                        out.push(Outcome::Retry {
                            error: "503".into(),
                            retry_after: None,
                        });
                        break;
                    } else {
                        self.delivered.lock().unwrap().push(e.clone());
                        out.push(Outcome::Delivered);
                    }
                }
                // The lane expects one outcome per event: the rest were not attempted.
                while out.len() < batch.len() {
                    out.push(Outcome::Retry {
                        error: "not attempted".into(),
                        retry_after: None,
                    });
                }
                out
            })
        }

        fn max_batch(&self) -> usize {
            8
        }

        fn concurrency(&self) -> usize {
            self.lanes
        }

        fn retry_policy(&self) -> RetryPolicy {
            RetryPolicy {
                max_attempts: 100,
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
            }
        }
    }

    fn event(key: u32, seq: u32, payload: &[u8]) -> Arc<Event> {
        Arc::new(Event {
            id: switchyard_event::format_compact!("{key}-{seq}"),
            source: "test".into(),
            kind: "message".into(),
            key: Some(format!("k{key}").into_bytes()),
            payload: payload.to_vec(),
            content_type: "text/plain".into(),
            headers: vec![],
            timestamp_ms: 0,
            payload_is_compact_json: false,
        })
    }

    /// Checks that the first delivery of each event came in sequence order per key (ids
    /// are `key-seq`); returns how many distinct events were delivered.
    fn first_deliveries_in_key_order(sink: &FlakySink) -> usize {
        let mut last: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        for e in sink.delivered.lock().unwrap().iter() {
            if !seen.insert(e.id.clone()) {
                continue;
            }
            let seq: i64 = e.id.split('-').nth(1).unwrap().parse().unwrap();
            let prev = last.insert(e.key.clone().unwrap(), seq).unwrap_or(-1);
            assert!(seq > prev, "key {:?}: {seq} after {prev}", e.key);
        }
        seen.len()
    }

    /// A one-partition queue on disk for a test's dead letters.
    pub(crate) fn dead_letter_queue(dir: &std::path::Path) -> Arc<QueueHandle> {
        QueueHandle::open(
            Arc::new(FsStorage::new()),
            dir,
            "dlq",
            QueueLimits {
                partitions: 1,
                max_bytes: u64::MAX,
                retention: None,
                work: switchyard_store::WorkOptions::default(),
                dedup_window: Duration::ZERO,
                dedup_keys: 1,
                max_groups: 64,
                group_idle_expiry: None,
            },
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn retries_keep_per_key_order_and_poison_goes_to_the_dead_letter_queue() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dead_letter_queue(dir.path());
        let sink = Arc::new(FlakySink {
            delivered: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
            lanes: 4,
        });
        let handle = SinkHandle::start("flaky", sink.clone(), Arc::new(Metrics::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (keys, per_key) = (10u32, 50u32);
        let mut position = 0;
        for seq in 0..per_key {
            for key in 0..keys {
                let payload: &[u8] = if key == 3 && seq == 7 {
                    b"poison"
                } else {
                    b"ok"
                };
                let d = Delivery {
                    events: vec![event(key, seq, payload)],
                    ack: AckToken::new(1, position, tx.clone()),
                    pipeline: Arc::from("p"),
                    dead_letter: dlq.clone(),
                };
                position += 1;
                assert!(handle.dispatch(d).await.is_ok());
            }
        }
        let mut acked = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked.len() < position as usize {
            let p = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("every event is acknowledged in time")
                .unwrap();
            assert!(acked.insert(p), "position {p} acknowledged twice");
        }
        assert_eq!(
            first_deliveries_in_key_order(&sink),
            (keys * per_key - 1) as usize
        );
        let dead = dlq.partitions()[0].read(0, 10, 1 << 20).unwrap();
        assert_eq!(dead.len(), 1);
        let dead = Event::decode_record(&dead[0].payload).unwrap();
        assert_eq!(dead.id, "3-7");
        assert_eq!(dead.header(dlq_headers::SINK), Some("flaky"));
        assert_eq!(dead.header(dlq_headers::ERROR), Some("404 not found"));
        assert_eq!(dead.header(dlq_headers::PIPELINE), Some("p"));
    }

    /// Batches of keyed events, split over four lanes and delivered in attempts of at
    /// most eight: a batch is acknowledged once, only after each of its events reached the
    /// sink (or the dead-letter queue), and every key keeps its order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_acknowledged_once_after_all_its_events() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dead_letter_queue(dir.path());
        let sink = Arc::new(FlakySink {
            delivered: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
            lanes: 4,
        });
        let handle = SinkHandle::start("flaky", sink.clone(), Arc::new(Metrics::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (batches, per_batch, keys) = (40u32, 25u32, 7u32);
        let mut ids_of: HashMap<u64, Vec<String>> = HashMap::new();
        for b in 0..batches {
            let first = u64::from(b) * 1000;
            let events: Vec<Arc<Event>> = (0..per_batch)
                .map(|i| {
                    let seq = b * per_batch + i;
                    let payload: &[u8] = if seq == 333 { b"poison" } else { b"ok" };
                    event(seq % keys, seq, payload)
                })
                .collect();
            ids_of.insert(first, events.iter().map(|e| e.id.to_string()).collect());
            let d = Delivery {
                ack: AckToken::new(events.len(), first, tx.clone()),
                events,
                pipeline: Arc::from("p"),
                dead_letter: dlq.clone(),
            };
            assert!(handle.dispatch(d).await.is_ok());
        }
        let mut acked = std::collections::BTreeSet::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while acked.len() < batches as usize {
            let first = tokio::time::timeout_at(deadline, rx.recv())
                .await
                .expect("every batch is acknowledged in time")
                .unwrap();
            assert!(acked.insert(first), "batch {first} acknowledged twice");
            let delivered: std::collections::HashSet<String> = sink
                .delivered
                .lock()
                .unwrap()
                .iter()
                .map(|e| e.id.to_string())
                .collect();
            for id in &ids_of[&first] {
                let poison = id.ends_with("-333");
                assert!(
                    poison || delivered.contains(id),
                    "batch {first} acknowledged before {id} was delivered"
                );
            }
        }
        assert!(
            rx.try_recv().is_err(),
            "no acknowledgement beyond one per batch"
        );
        assert_eq!(
            first_deliveries_in_key_order(&sink),
            (batches * per_batch - 1) as usize
        );
        let dead = dlq.partitions()[0].read(0, 10, 1 << 20).unwrap();
        assert_eq!(dead.len(), 1);
        assert_eq!(Event::decode_record(&dead[0].payload).unwrap().id, "4-333");
    }

    /// Fails each event's first attempt, delivers its second; one event per attempt.
    struct SecondTimeLucky(Mutex<HashMap<String, u32>>);

    impl Sink for SecondTimeLucky {
        fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
            let mut tries = self.0.lock().unwrap();
            let n = tries.entry(batch[0].id.to_string()).or_default();
            *n += 1;
            let outcome = if *n == 1 {
                Outcome::Retry {
                    error: "503".into(),
                    retry_after: None,
                }
            } else {
                Outcome::Delivered
            };
            Box::pin(std::future::ready(vec![outcome]))
        }

        fn max_batch(&self) -> usize {
            1
        }

        fn retry_policy(&self) -> RetryPolicy {
            RetryPolicy {
                max_attempts: 2,
                initial: Duration::from_millis(1),
                max: Duration::from_millis(2),
            }
        }
    }

    /// A run longer than the sink's batch is delivered in several attempts; each event's
    /// attempts are its own, so with two allowed a single failure never dead-letters it.
    #[tokio::test]
    async fn each_event_of_a_long_run_gets_its_own_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dead_letter_queue(dir.path());
        let sink = Arc::new(SecondTimeLucky(Mutex::new(HashMap::new())));
        let handle = SinkHandle::start("lucky", sink.clone(), Arc::new(Metrics::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events: Vec<Arc<Event>> = (0..5).map(|i| event(1, i, b"ok")).collect();
        let d = Delivery {
            ack: AckToken::new(events.len(), 7, tx),
            events,
            pipeline: Arc::from("p"),
            dead_letter: dlq.clone(),
        };
        assert!(handle.dispatch(d).await.is_ok());
        let acked = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        assert_eq!(acked.expect("acknowledged in time"), Some(7));
        let dead = dlq.partitions()[0].read(0, 10, 1 << 20).unwrap();
        assert!(dead.is_empty(), "{} event(s) dead-lettered", dead.len());
        assert!(sink.0.lock().unwrap().values().all(|&n| n == 2));
    }

    /// Fails every event for good with an error that quotes a URL with credentials, as an
    /// HTTP library's error might.
    struct LeakySink;

    impl Sink for LeakySink {
        fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
            Box::pin(async move {
                vec![
                    Outcome::Permanent {
                        error: "error sending request for url (https://u:PW_IN_URL@h/x?token=TOKEN_IN_URL)"
                            .into(),
                    };
                    batch.len()
                ]
            })
        }
    }

    #[tokio::test]
    async fn dead_letter_errors_are_stored_masked() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dead_letter_queue(dir.path());
        let handle = SinkHandle::start("leaky", Arc::new(LeakySink), Arc::new(Metrics::new()));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let d = Delivery {
            events: vec![event(1, 1, b"x")],
            ack: AckToken::new(1, 0, tx),
            pipeline: Arc::from("p"),
            dead_letter: dlq.clone(),
        };
        assert!(handle.dispatch(d).await.is_ok());
        let acked = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        assert_eq!(acked.expect("acknowledged in time"), Some(0));
        let dead = dlq.partitions()[0].read(0, 10, 1 << 20).unwrap();
        let dead = Event::decode_record(&dead[0].payload).unwrap();
        let error = dead.header(dlq_headers::ERROR).unwrap();
        assert_eq!(
            error,
            "error sending request for url (https://u:***@h/x?token=***)"
        );
    }

    /// Writes nothing for events whose payload is `schema`, as a sink whose format has no
    /// form for them answers.
    struct SkipsSchemas(Mutex<Vec<String>>);

    impl Sink for SkipsSchemas {
        fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
            let mut written = self.0.lock().unwrap();
            let outcomes = batch
                .iter()
                .map(|e| {
                    if e.payload == b"schema" {
                        Outcome::Skipped
                    } else {
                        written.push(e.id.to_string());
                        Outcome::Delivered
                    }
                })
                .collect();
            Box::pin(std::future::ready(outcomes))
        }

        fn max_batch(&self) -> usize {
            4
        }
    }

    #[tokio::test]
    async fn skipped_events_are_acknowledged_and_counted_apart() {
        let dir = tempfile::tempdir().unwrap();
        let dlq = dead_letter_queue(dir.path());
        let sink = Arc::new(SkipsSchemas(Mutex::new(Vec::new())));
        let metrics = Arc::new(Metrics::new());
        let handle = SinkHandle::start("debezium", sink.clone(), metrics.clone());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events: Vec<Arc<Event>> = (0..6)
            .map(|i| event(1, i, if i % 3 == 0 { b"schema" } else { b"row" }))
            .collect();
        let d = Delivery {
            ack: AckToken::new(events.len(), 9, tx),
            events,
            pipeline: Arc::from("p"),
            dead_letter: dlq.clone(),
        };
        assert!(handle.dispatch(d).await.is_ok());
        let acked = tokio::time::timeout(Duration::from_secs(30), rx.recv()).await;
        assert_eq!(acked.expect("acknowledged in time"), Some(9));
        assert_eq!(*sink.0.lock().unwrap(), ["1-1", "1-2", "1-4", "1-5"]);
        assert_eq!(metrics.sink_counter("debezium", "skipped").get(), 2);
        assert_eq!(metrics.sink_counter("debezium", "delivered").get(), 4);
        assert!(dlq.partitions()[0].read(0, 10, 1 << 20).unwrap().is_empty());
    }

    #[test]
    fn ack_token_completes_after_every_sink() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let token = AckToken::new(5, 42, tx.clone());
        token.ack(1);
        token.ack(3);
        assert!(rx.try_recv().is_err());
        token.ack(0);
        assert!(rx.try_recv().is_err());
        token.ack(1);
        assert_eq!(rx.try_recv().unwrap(), 42);
        // Routed nowhere: complete at once.
        let _ = AckToken::new(0, 43, tx);
        assert_eq!(rx.try_recv().unwrap(), 43);
    }
}
