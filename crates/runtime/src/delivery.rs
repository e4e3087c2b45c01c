//! Delivery to sinks: ordering lanes, retries with backoff, dead letters, and the
//! acknowledgement that travels with every event.

use std::collections::VecDeque;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

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

/// Completion of one event read from a source position: it completes when every sink it
/// was routed to has acknowledged it (or dead-lettered it). Then the position is sent
/// back to the reader that tracks the checkpoint.
pub struct AckToken {
    remaining: AtomicUsize,
    position: u64,
    to_reader: mpsc::UnboundedSender<u64>,
}

impl AckToken {
    pub fn new(sinks: usize, position: u64, to_reader: mpsc::UnboundedSender<u64>) -> Arc<Self> {
        let token = Arc::new(Self {
            remaining: AtomicUsize::new(sinks),
            position,
            to_reader,
        });
        if sinks == 0 {
            token.complete_now();
        }
        token
    }

    /// One sink is done with the event.
    pub fn ack(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete_now();
        }
    }

    fn complete_now(&self) {
        // The reader is gone only when shutting down; its checkpoint then stays behind,
        // so the event is delivered again after the restart.
        let _ = self.to_reader.send(self.position);
    }
}

/// One event on its way to one sink.
pub struct Delivery {
    pub event: Arc<Event>,
    pub ack: Arc<AckToken>,
    pub pipeline: Arc<str>,
    pub dead_letter: Arc<QueueHandle>,
}

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
        let capacity = (sink.max_batch().max(1) * 2).max(64);
        let senders = (0..lanes)
            .map(|_| {
                let (tx, rx) = mpsc::channel(capacity);
                let lane = Lane {
                    sink_name: name.to_owned(),
                    sink: sink.clone(),
                    metrics: metrics.clone(),
                };
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

    /// Queues `delivery` on its key's lane, waiting while the lane is full (backpressure).
    pub async fn dispatch(&self, delivery: Delivery) -> Result<(), Delivery> {
        let lane = match &delivery.event.key {
            Some(key) => {
                let mut h = std::hash::DefaultHasher::new();
                key.hash(&mut h);
                (h.finish() % self.lanes.len() as u64) as usize
            }
            None => self.next_lane.fetch_add(1, Ordering::Relaxed) % self.lanes.len(),
        };
        self.lanes[lane].send(delivery).await.map_err(|e| e.0)
    }
}

struct Lane {
    sink_name: String,
    sink: Arc<dyn Sink>,
    metrics: Arc<Metrics>,
}

impl Lane {
    async fn run(self, mut inbox: mpsc::Receiver<Delivery>) {
        let max_batch = self.sink.max_batch().max(1);
        while let Some(first) = inbox.recv().await {
            let mut batch = VecDeque::with_capacity(max_batch);
            batch.push_back(first);
            while batch.len() < max_batch {
                match inbox.try_recv() {
                    Ok(d) => batch.push_back(d),
                    Err(_) => break,
                }
            }
            self.deliver(batch).await;
        }
    }

    /// Delivers `pending` in order. A failed event holds back the events after it in this
    /// lane (per-key order) until it is delivered or dead-lettered.
    async fn deliver(&self, mut pending: VecDeque<Delivery>) {
        let policy = self.sink.retry_policy();
        let latency = self
            .metrics
            .sink_latency
            .get_or_create(&SinkNameLabels {
                sink: self.sink_name.clone(),
            })
            .clone();
        // Attempts made for the event at the head of `pending`.
        let mut attempts = 0u32;
        while !pending.is_empty() {
            attempts += 1;
            let events: Vec<Arc<Event>> = pending.iter().map(|d| d.event.clone()).collect();
            let started = Instant::now();
            let mut outcomes = self.sink.deliver(&events).await;
            latency.observe(started.elapsed().as_secs_f64());
            if outcomes.len() != events.len() {
                warn!(sink = %self.sink_name, expected = events.len(), got = outcomes.len(),
                    "sink returned the wrong number of outcomes; retrying the batch");
                outcomes = vec![
                    Outcome::Retry {
                        error: "sink returned the wrong number of outcomes".into(),
                        retry_after: None,
                    };
                    events.len()
                ];
            }
            let mut delivered = 0;
            let mut retry = None;
            for outcome in outcomes {
                match outcome {
                    Outcome::Delivered => {
                        let d = pending.pop_front().expect("one outcome per pending event");
                        d.ack.ack();
                        delivered += 1;
                        attempts = 1;
                    }
                    Outcome::Permanent { error } => {
                        let d = pending.pop_front().expect("one outcome per pending event");
                        self.dead_letter(d, &error, attempts).await;
                        attempts = 1;
                    }
                    Outcome::Retry { error, retry_after } => {
                        retry = Some((error, retry_after));
                        break;
                    }
                }
            }
            if delivered > 0 {
                self.metrics
                    .sink_outcome(&self.sink_name, "delivered", delivered);
            }
            let Some((error, retry_after)) = retry else {
                continue;
            };
            self.metrics.sink_outcome(&self.sink_name, "retried", 1);
            if policy.exhausted(attempts) {
                let d = pending.pop_front().expect("the failed event is pending");
                self.dead_letter(d, &error, attempts).await;
                attempts = 0;
                continue;
            }
            let delay = policy.delay(attempts, retry_after);
            debug!(sink = %self.sink_name, attempts, ?delay, error = %redact::text(&error),
                "delivery failed; retrying");
            tokio::time::sleep(delay).await;
        }
    }

    /// Dead-letters the event (durably), then acknowledges it.
    async fn dead_letter(&self, d: Delivery, error: &str, attempts: u32) {
        let reason = DeadLetterReason {
            pipeline: &d.pipeline,
            sink: Some(&self.sink_name),
            plugin: None,
            error,
            attempts,
        };
        append_dead_letter(&d.dead_letter, &d.event, &reason).await;
        self.metrics
            .sink_outcome(&self.sink_name, "dead_lettered", 1);
        d.ack.ack();
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
            id: format!("{key}-{seq}"),
            source: "test".into(),
            kind: "message".into(),
            key: Some(format!("k{key}").into_bytes()),
            payload: payload.to_vec(),
            content_type: "text/plain".into(),
            headers: vec![],
            timestamp_ms: 0,
        })
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
                    event: event(key, seq, payload),
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
        // First deliveries per key are in sequence order.
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
        assert_eq!(seen.len(), (keys * per_key - 1) as usize);
        let dead = dlq.partitions()[0].read(0, 10, 1 << 20).unwrap();
        assert_eq!(dead.len(), 1);
        let dead = Event::decode_record(&dead[0].payload).unwrap();
        assert_eq!(dead.id, "3-7");
        assert_eq!(dead.header(dlq_headers::SINK), Some("flaky"));
        assert_eq!(dead.header(dlq_headers::ERROR), Some("404 not found"));
        assert_eq!(dead.header(dlq_headers::PIPELINE), Some("p"));
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
            event: event(1, 1, b"x"),
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

    #[test]
    fn ack_token_completes_after_every_sink() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let token = AckToken::new(3, 42, tx.clone());
        token.ack();
        token.ack();
        assert!(rx.try_recv().is_err());
        token.ack();
        assert_eq!(rx.try_recv().unwrap(), 42);
        // Routed nowhere: complete at once.
        let _ = AckToken::new(0, 43, tx);
        assert_eq!(rx.try_recv().unwrap(), 43);
    }
}
