//! `type = "kafka"` sink.
//!
//! Each event is one message: its key, its payload as the value (with `format =
//! "debezium"`, a Postgres change's Debezium change event, followed after a delete by a
//! tombstone of the same key — a null value, no headers — for log compaction; a schema
//! event is skipped), the `switchyard-*` headers and the event's own. An event with a
//! tombstone is delivered once both messages are confirmed. With `format =
//! "cloudevents"`, CloudEvents' Kafka binding: in binary mode the payload as the value
//! with `ce_*` attribute headers and `content-type`, in structured mode the
//! `application/cloudevents+json` object as the value.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode as Code;
use switchyard_config::{KafkaSinkConfig, SinkFormat};
use switchyard_connector::format::{self, Binding, Body, Formatter};
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event;
use switchyard_event::formats::cloudevents;
use tracing::{error, info, warn};

use crate::context::LogContext;
use crate::topic::TopicTemplate;
use crate::{KafkaError, headers};

/// Builds the `kafka` sink `name`: the runtime's registration calls this. A missing topic
/// or unreachable brokers are reported in the background; they never fail the start.
pub fn build(
    name: &str,
    cfg: &KafkaSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let sink = KafkaSink::new(name, cfg).map_err(|e| BuildError::from_error(&e))?;
    let sink = Arc::new(sink.with_formatter(
        Formatter::for_config(cfg.format, ctx.config).with_cloudevents_mode(cfg.cloudevents_mode),
    ));
    tokio::spawn({
        let sink = sink.clone();
        async move { sink.check_topic().await }
    });
    Ok(sink)
}

/// The header CloudEvents' Kafka binding gives the content type in: the data's in binary
/// mode, `application/cloudevents+json` in structured mode.
const CLOUDEVENTS_CONTENT_TYPE: &str = "content-type";

/// Most events handed to one delivery attempt (one lane).
const MAX_BATCH: usize = 1000;
/// How often the same "topic does not exist" warning is logged.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// How many delivery timeouts may pass with attempts failing and no event confirmed
/// before the producer is replaced by a fresh one. An idempotent producer whose producer
/// id the cluster forgot (a broker that lost its state) is rejected forever with
/// `UnknownProducerId`; a new one gets a new id. During a plain outage the replacement
/// is harmless: the new producer waits for the brokers the same way, and sends again
/// what the old one still held.
const REPLACE_AFTER_TIMEOUTS: u32 = 3;

type Producer_ = FutureProducer<LogContext>;

/// The producer in use, and how many producers were replaced before it.
#[derive(Clone)]
struct Current {
    generation: u64,
    producer: Arc<Producer_>,
}

/// What the sink remembers of an event between two attempts of its lane (the lane
/// retries the same `Arc`s, in order, from the first event that was not delivered).
struct Held {
    /// Held so the event's address, the key, is not reused while the entry exists.
    event: Arc<Event>,
    state: State,
}

enum State {
    /// Handed to the producer; its delivery report had not come when the attempt ended.
    /// librdkafka goes on sending it (the sink sets no message timeout): the next attempt
    /// waits for this report instead of sending a copy, which could reach the partition
    /// after later events of the same key.
    Queued {
        generation: u64,
        topic: String,
        report: Reports,
    },
    /// Confirmed in an attempt in which an earlier event of the lane was not: the lane
    /// hands it over again with that one, and it is answered without a second copy.
    Confirmed,
    /// Refused for good in such an attempt: answered the same again, not sent again
    /// behind the later events still queued.
    Refused(String),
}

/// One event of an attempt, between sending and answering.
enum Pending {
    /// Answered without waiting for a report.
    Answered(Outcome),
    /// Confirmed by an earlier attempt's report.
    Confirmed,
    Sent(String, Reports),
}

/// The delivery reports an event's messages will get: its own message's and, for a
/// Debezium delete, its tombstone's. A report that came and said delivered is `None`.
struct Reports {
    message: Option<DeliveryFuture>,
    tombstone: Option<DeliveryFuture>,
}

impl Reports {
    fn of(message: DeliveryFuture) -> Self {
        Self {
            message: Some(message),
            tombstone: None,
        }
    }

    /// Whether every report still to come is still to come (each polled once, not waited
    /// for). One that came makes the entry one to sweep out: a report is never polled
    /// again once it came.
    fn pending(&mut self, cx: &mut Context<'_>) -> bool {
        [&mut self.message, &mut self.tombstone]
            .into_iter()
            .flatten()
            .all(|report| Pin::new(report).poll(cx).is_pending())
    }
}

/// Produces events to Kafka; see the crate docs for the contract.
pub struct KafkaSink {
    name: String,
    brokers: String,
    template: TopicTemplate,
    client_config: ClientConfig,
    producer: RwLock<Current>,
    /// By the address of the event.
    held: Mutex<HashMap<usize, Held>>,
    timeout: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    creator: Option<TopicCreator>,
    warned: Mutex<HashMap<String, Instant>>,
    /// Since when attempts have failed with no event confirmed (`None`: the last attempt
    /// confirmed something).
    failing_since: Mutex<Option<Instant>>,
    /// The `format` of message values.
    formatter: Formatter,
}

struct TopicCreator {
    admin: AdminClient<LogContext>,
    partitions: i32,
    created: Mutex<HashSet<String>>,
}

impl KafkaSink {
    /// Builds the producer (librdkafka connects in the background: a broker that is down
    /// now delays deliveries, it does not fail the start).
    pub fn new(name: &str, cfg: &KafkaSinkConfig) -> Result<Self, KafkaError> {
        let mut client_config = ClientConfig::new();
        client_config
            .set("bootstrap.servers", &cfg.brokers)
            .set("client.id", format!("switchyard-{name}"))
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", cfg.linger.as_millis().to_string())
            // librdkafka never gives up on a message by itself: a message that timed out
            // while later ones of its partition were still queued would leave a gap the
            // later ones fill first (the idempotent producer skips it), and its retry
            // would land after them. The sink bounds each attempt instead (`timeout`)
            // and waits for the same message on the next one.
            .set("message.timeout.ms", "0")
            // A missing topic is created by `create_topics` (with its `partitions`) or by
            // the user, never implicitly by a metadata request with the broker's defaults.
            .set("allow.auto.create.topics", "false")
            // How long a topic may be missing from metadata before its messages fail
            // with "unknown topic" (and are retried) instead of waiting out the timeout.
            .set(
                "topic.metadata.propagation.max.ms",
                (cfg.timeout.as_millis() / 2).clamp(1, 10_000).to_string(),
            );
        if let Some(c) = &cfg.compression {
            client_config.set("compression.type", c);
        }
        for (k, v) in &cfg.options {
            client_config.set(k, v);
        }
        let context = LogContext {
            what: "sink",
            name: name.to_owned(),
        };
        let client_err = |e: RdError| KafkaError::Client {
            what: "sink",
            name: name.to_owned(),
            reason: crate::without_secrets(&e.to_string(), &cfg.options),
        };
        let producer: Producer_ = client_config
            .create_with_context(context.clone())
            .map_err(client_err)?;
        let creator = if cfg.create_topics {
            Some(TopicCreator {
                admin: client_config
                    .create_with_context(context)
                    .map_err(client_err)?,
                partitions: i32::try_from(cfg.partitions).unwrap_or(i32::MAX),
                created: Mutex::new(HashSet::new()),
            })
        } else {
            None
        };
        let retry = cfg.retry.as_ref().map_or(
            RetryPolicy {
                max_attempts: u32::MAX,
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            RetryPolicy::from,
        );
        Ok(Self {
            name: name.to_owned(),
            brokers: cfg.brokers.clone(),
            template: TopicTemplate::parse(&cfg.topic),
            client_config,
            producer: RwLock::new(Current {
                generation: 0,
                producer: Arc::new(producer),
            }),
            held: Mutex::new(HashMap::new()),
            timeout: cfg.timeout,
            concurrency: cfg.concurrency.max(1),
            retry,
            creator,
            warned: Mutex::new(HashMap::new()),
            failing_since: Mutex::new(None),
            formatter: Formatter::new(cfg.format).with_cloudevents_mode(cfg.cloudevents_mode),
        })
    }

    /// The sink writing message values in `formatter`'s format ([`Self::new`] takes the
    /// config's `format` without knowing the sources: Debezium's `source.db` is null).
    pub fn with_formatter(mut self, formatter: Formatter) -> Self {
        self.formatter = formatter;
        self
    }

    /// For a topic without placeholders: checks that it exists (or creates it with
    /// `create_topics`), logging what to do when it does not. Never fails: a broker that
    /// is down at start is reported and waited for.
    pub async fn check_topic(&self) {
        let Some(topic) = self.template.fixed().map(str::to_owned) else {
            return;
        };
        let producer = self.current().producer;
        let t = topic.clone();
        let found = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&t), Duration::from_secs(5))
                .map(|md| {
                    md.topics()
                        .iter()
                        .any(|x| x.name() == t && x.error().is_none() && !x.partitions().is_empty())
                })
        })
        .await
        .expect("metadata task");
        match found {
            Ok(true) => info!(sink = %self.name, %topic, "kafka topic found"),
            Ok(false) if self.creator.is_some() => self.create_topic(&topic).await,
            Ok(false) => warn!(sink = %self.name, %topic, brokers = %self.brokers,
                "kafka topic `{topic}` does not exist; deliveries are retried until it does: \
                 create it, or set create_topics = true on sink `{}`", self.name),
            Err(e) => warn!(sink = %self.name, %topic, brokers = %self.brokers, error = %e,
                "cannot reach the kafka brokers to check the topic; deliveries wait for them"),
        }
    }

    /// How long attempts may fail with nothing confirmed before the producer is replaced.
    fn replace_after(&self) -> Duration {
        self.timeout.saturating_mul(REPLACE_AFTER_TIMEOUTS)
    }

    fn current(&self) -> Current {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces `used` when it hit a fatal error (an idempotent producer that lost its
    /// sequence: it cannot send any more) or has confirmed nothing for
    /// [`REPLACE_AFTER_TIMEOUTS`] delivery timeouts of failing attempts. What the old one still held is dropped with it (purged): those events
    /// are sent again by the new one, in order, duplicates possible.
    fn replace_if_broken(&self, used: &Current) {
        let reason = match used.producer.client().fatal_error() {
            Some((code, reason)) => format!("fatal error {code:?}: {reason}"),
            None if self
                .failing_since
                .lock()
                .expect("failing lock")
                .is_some_and(|t| t.elapsed() >= self.replace_after()) =>
            {
                format!(
                    "no event confirmed for {:?} of failing attempts",
                    self.replace_after()
                )
            }
            None => return,
        };
        let mut slot = self.producer.write().expect("producer lock");
        if slot.generation != used.generation {
            return;
        }
        let context = LogContext {
            what: "sink",
            name: self.name.clone(),
        };
        match self
            .client_config
            .create_with_context::<_, Producer_>(context)
        {
            Ok(fresh) => {
                *self.failing_since.lock().expect("failing lock") = None;
                warn!(sink = %self.name, %reason,
                    "replaced the kafka producer with a new one (with a new producer id); unconfirmed events are retried");
                let old = std::mem::replace(
                    &mut *slot,
                    Current {
                        generation: used.generation + 1,
                        producer: Arc::new(fresh),
                    },
                );
                self.held.lock().expect("held lock").clear();
                // What it still holds fails now (attempts waiting on it end at once, and
                // are retried on the new one) ...
                old.producer
                    .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
                // ... and destroying it (which waits a little) happens off the runtime,
                // once attempts that were using it have let go.
                std::thread::spawn(move || {
                    let mut old = old.producer;
                    loop {
                        match Arc::try_unwrap(old) {
                            Ok(producer) => return drop(producer),
                            Err(shared) => old = shared,
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                });
            }
            Err(e) => error!(sink = %self.name, error = %e, %reason,
                "the kafka producer is broken and a new one cannot be made"),
        }
    }

    async fn create_topic(&self, topic: &str) {
        let Some(creator) = &self.creator else {
            return;
        };
        if creator
            .created
            .lock()
            .expect("created lock")
            .contains(topic)
        {
            return;
        }
        let new = NewTopic::new(topic, creator.partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(self.timeout));
        match creator.admin.create_topics([&new], &opts).await {
            Ok(results) => {
                for r in results {
                    match r {
                        Ok(t) => {
                            info!(sink = %self.name, topic = %t, partitions = creator.partitions,
                                "created kafka topic (create_topics = true)");
                            creator.created.lock().expect("created lock").insert(t);
                        }
                        Err((t, Code::TopicAlreadyExists)) => {
                            creator.created.lock().expect("created lock").insert(t);
                        }
                        Err((t, code)) => warn!(sink = %self.name, topic = %t, ?code,
                            "cannot create kafka topic; deliveries are retried"),
                    }
                }
            }
            Err(e) => warn!(sink = %self.name, %topic, error = %e,
                "cannot create kafka topic; deliveries are retried"),
        }
    }

    /// With `create_topics`: creates each topic of `batch` the sink has not seen yet
    /// before its first event is sent (an existing topic is only remembered).
    async fn ensure_topics(&self, batch: &[Arc<Event>]) {
        let Some(creator) = &self.creator else {
            return;
        };
        let mut new: Vec<String> = {
            let known = creator.created.lock().expect("created lock");
            batch
                .iter()
                .filter_map(|e| self.template.render(e).ok())
                .filter(|t| !known.contains(t))
                .collect()
        };
        new.sort();
        new.dedup();
        for topic in new {
            self.create_topic(&topic).await;
        }
    }

    fn warn_missing(&self, topic: &str) {
        let mut warned = self.warned.lock().expect("warned lock");
        let now = Instant::now();
        if warned
            .get(topic)
            .is_some_and(|at| now.duration_since(*at) < WARN_EVERY)
        {
            return;
        }
        warned.insert(topic.to_owned(), now);
        if self.creator.is_some() {
            warn!(sink = %self.name, %topic, brokers = %self.brokers,
                "kafka topic `{topic}` does not exist; creating it (create_topics = true)");
            return;
        }
        warn!(sink = %self.name, %topic, brokers = %self.brokers,
            "kafka topic `{topic}` does not exist; its events wait and are retried: create it, \
             or set create_topics = true on sink `{}`", self.name);
    }

    /// Queues `event` in the producer with `value`, waiting while its queue is full
    /// (until the attempt's `deadline`). `cloudevents`: the headers of the CloudEvents
    /// format (the event's own `ce-*` headers are then not copied: they are in them).
    async fn enqueue(
        &self,
        producer: &Producer_,
        event: &Event,
        value: &[u8],
        cloudevents: &[(String, String)],
        deadline: tokio::time::Instant,
    ) -> Result<(String, DeliveryFuture), Outcome> {
        let topic = self
            .template
            .render(event)
            .map_err(|error| Outcome::Permanent { error })?;
        let mut h = OwnedHeaders::new_with_capacity(4 + event.headers.len() + cloudevents.len());
        for (name, value) in [
            (headers::ID, event.id.as_str()),
            (headers::SOURCE, event.source.as_str()),
            (headers::KIND, event.kind.as_str()),
            (headers::CONTENT_TYPE, event.content_type.as_str()),
        ] {
            h = h.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let skip_ce = !cloudevents.is_empty();
        for (name, value) in cloudevents {
            h = h.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        for (name, value) in &event.headers {
            // The attributes and content type written above, also in the forms another
            // CloudEvents sink or source may have left on the event.
            let attribute = skip_ce
                && (name.starts_with(cloudevents::HEADER_PREFIX)
                    || name.starts_with("ce_")
                    || name.eq_ignore_ascii_case(CLOUDEVENTS_CONTENT_TYPE));
            if !attribute && !headers::ALL.contains(&name.as_str()) {
                h = h.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
        }
        let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
            .payload(value)
            .headers(h)
            .timestamp(i64::try_from(event.timestamp_ms).unwrap_or(i64::MAX));
        if let Some(key) = &event.key {
            record = record.key(key.as_slice());
        }
        let report = self.send(producer, record, deadline).await?;
        Ok((topic, report))
    }

    /// Queues the tombstone of `key` for `topic` (a null value, no headers), after the
    /// message of the delete it follows.
    async fn enqueue_tombstone(
        &self,
        producer: &Producer_,
        topic: &str,
        key: &[u8],
        timestamp_ms: u64,
        deadline: tokio::time::Instant,
    ) -> Result<DeliveryFuture, Outcome> {
        let record = FutureRecord::<[u8], [u8]>::to(topic)
            .key(key)
            .timestamp(i64::try_from(timestamp_ms).unwrap_or(i64::MAX));
        self.send(producer, record, deadline).await
    }

    /// Hands `record` to the producer, waiting while its queue is full (until
    /// `deadline`).
    async fn send(
        &self,
        producer: &Producer_,
        mut record: FutureRecord<'_, [u8], [u8]>,
        deadline: tokio::time::Instant,
    ) -> Result<DeliveryFuture, Outcome> {
        loop {
            match producer.send_result(record) {
                Ok(fut) => return Ok(fut),
                Err((RdError::MessageProduction(Code::QueueFull), r))
                    if tokio::time::Instant::now() < deadline =>
                {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, r)) => return Err(self.classify(r.topic, &e)),
            }
        }
    }

    /// What a failed produce means for the event.
    fn classify(&self, topic: &str, e: &RdError) -> Outcome {
        let code = e.rdkafka_error_code();
        match code {
            // The event itself can never be taken.
            Some(
                Code::MessageSizeTooLarge
                | Code::InvalidMessageSize
                | Code::InvalidMessage
                | Code::InvalidRecord
                | Code::InvalidTopic
                | Code::BadMessage
                | Code::InvalidTimestamp,
            ) => Outcome::Permanent {
                error: format!("kafka refused the event for topic `{topic}` for good: {e}"),
            },
            Some(Code::UnknownTopicOrPartition | Code::UnknownTopic) => {
                self.warn_missing(topic);
                Outcome::Retry {
                    error: format!(
                        "kafka topic `{topic}` does not exist on {}: create it, or set create_topics = true on sink `{}` ({e})",
                        self.brokers, self.name
                    ),
                    retry_after: None,
                }
            }
            _ => Outcome::Retry {
                error: format!("kafka did not confirm the event on topic `{topic}`: {e}"),
                retry_after: None,
            },
        }
    }

    /// Takes what earlier attempts left for each event of `batch` (`None`: send it).
    /// Once there are many entries, sweeps out those no lane can still need: messages
    /// whose report came (their event was dead-lettered or dropped, not retried) or
    /// that belong to a replaced producer.
    fn take_held(&self, batch: &[Arc<Event>], generation: u64) -> Vec<Option<State>> {
        let mut map = self.held.lock().expect("held lock");
        if map.is_empty() {
            return batch.iter().map(|_| None).collect();
        }
        let taken = batch
            .iter()
            .map(|event| match map.remove(&(Arc::as_ptr(event) as usize)) {
                Some(h) if Arc::ptr_eq(&h.event, event) => match h.state {
                    State::Queued { generation: g, .. } if g != generation => None,
                    state => Some(state),
                },
                _ => None,
            })
            .collect();
        if map.len() > 2 * MAX_BATCH * self.concurrency {
            let mut cx = Context::from_waker(Waker::noop());
            map.retain(|_, h| match &mut h.state {
                State::Queued {
                    generation: g,
                    report,
                    ..
                } => *g == generation && report.pending(&mut cx),
                // Only a duplicate (or a second refusal) if it was needed after all.
                State::Confirmed | State::Refused(_) => false,
            });
        }
        taken
    }

    /// Waits for an event's delivery reports until `deadline`, its message's first: the
    /// event's outcome, or (the time being up) the topic and the reports still to come.
    /// Topics that turned out not to exist are added to `missing`.
    async fn wait_report(
        &self,
        deadline: tokio::time::Instant,
        topic: String,
        mut reports: Reports,
        missing: &mut Vec<String>,
    ) -> Result<Outcome, (String, Reports)> {
        loop {
            let slot = if reports.message.is_some() {
                &mut reports.message
            } else if reports.tombstone.is_some() {
                &mut reports.tombstone
            } else {
                return Ok(Outcome::Delivered);
            };
            let report = slot.as_mut().expect("checked above");
            // `timeout_at` looks at the report before the clock: a report that is there
            // counts even when the attempt's time is up.
            let Ok(reported) = tokio::time::timeout_at(deadline, report).await else {
                return Err((topic, reports));
            };
            *slot = None;
            match reported {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    if matches!(
                        e.rdkafka_error_code(),
                        Some(Code::UnknownTopicOrPartition | Code::UnknownTopic)
                    ) {
                        missing.push(topic.clone());
                    }
                    return Ok(self.classify(&topic, &e));
                }
                Err(_) => {
                    return Ok(Outcome::Retry {
                        error: "the kafka producer was replaced before it reported".into(),
                        retry_after: None,
                    });
                }
            }
        }
    }

    /// Sends `event` (not sent before): its message, in the sink's format, and a
    /// tombstone after it when the format asks for one. `body` is a buffer reused from
    /// event to event; `now_us` the batch's processing time.
    async fn send_event(
        &self,
        producer: &Producer_,
        event: &Event,
        body: &mut Vec<u8>,
        now_us: u64,
        deadline: tokio::time::Instant,
    ) -> Pending {
        body.clear();
        let mut cloudevents = Vec::new();
        let (value, tombstone) = if self.formatter.is_native() {
            (&event.payload[..], false)
        } else if let Some(attributes) = self.formatter.binary_headers(event, Binding::Kafka) {
            // CloudEvents' Kafka binding, binary mode: `ce_*` headers, the payload as it
            // is with its content type.
            cloudevents = attributes;
            cloudevents.push((
                CLOUDEVENTS_CONTENT_TYPE.into(),
                event.content_type.to_string(),
            ));
            (&event.payload[..], false)
        } else {
            match self.formatter.write(event, now_us, body) {
                Body::Native => (&event.payload[..], false),
                Body::Skip => return Pending::Answered(Outcome::Skipped),
                Body::Written { tombstone } => {
                    if self.formatter.format() == SinkFormat::CloudEvents {
                        cloudevents.push((
                            CLOUDEVENTS_CONTENT_TYPE.into(),
                            self.formatter.written_content_type().into(),
                        ));
                    }
                    (&body[..], tombstone)
                }
            }
        };
        let sent = self
            .enqueue(producer, event, value, &cloudevents, deadline)
            .await;
        let (topic, report) = match sent {
            Ok(sent) => sent,
            Err(outcome) => return Pending::Answered(outcome),
        };
        let mut reports = Reports::of(report);
        if tombstone && let Some(key) = &event.key {
            match self
                .enqueue_tombstone(producer, &topic, key, event.timestamp_ms, deadline)
                .await
            {
                Ok(report) => reports.tombstone = Some(report),
                // The message may still be delivered; the retry sends both again.
                Err(outcome) => return Pending::Answered(outcome),
            }
        }
        Pending::Sent(topic, reports)
    }

    async fn deliver_batch(&self, batch: &[Arc<Event>]) -> Vec<Outcome> {
        self.ensure_topics(batch).await;
        let current = self.current();
        let held = self.take_held(batch, current.generation);
        let deadline = attempt_deadline(self.timeout);
        let now_us = if self.formatter.is_native() {
            0
        } else {
            format::now_us()
        };
        let mut body = Vec::new();
        let mut pending = Vec::with_capacity(batch.len());
        let mut stopped = false;
        for (event, held) in batch.iter().zip(held) {
            pending.push(match held {
                Some(State::Confirmed) => Pending::Confirmed,
                Some(State::Refused(error)) => Pending::Answered(Outcome::Permanent { error }),
                // Still in the producer from an earlier attempt, ahead of what follows.
                Some(State::Queued { topic, report, .. }) => Pending::Sent(topic, report),
                // An earlier event of this lane failed before it was sent: sending later
                // ones now could put them ahead of it.
                None if stopped => Pending::Answered(Outcome::Retry {
                    error: "not attempted: an earlier event of the batch failed".into(),
                    retry_after: None,
                }),
                None => {
                    let sent = self
                        .send_event(&current.producer, event, &mut body, now_us, deadline)
                        .await;
                    stopped |= matches!(sent, Pending::Answered(Outcome::Retry { .. }));
                    sent
                }
            });
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut missing = Vec::new();
        let mut keep = Vec::new();
        // `confirmed`: a report of this attempt said delivered (not a remembered one).
        let (mut failed, mut confirmed) = (false, false);
        for (event, p) in batch.iter().zip(pending) {
            let outcome = match p {
                Pending::Answered(o) => o,
                Pending::Confirmed => Outcome::Delivered,
                Pending::Sent(topic, report) => match self
                    .wait_report(deadline, topic, report, &mut missing)
                    .await
                {
                    Ok(outcome) => {
                        confirmed |= outcome == Outcome::Delivered;
                        outcome
                    }
                    Err((topic, report)) => {
                        let error = format!(
                            "kafka has not confirmed the event on topic `{topic}` within {:?} \
                             (brokers {}); it stays queued in the producer and is waited for again",
                            self.timeout, self.brokers
                        );
                        let state = State::Queued {
                            generation: current.generation,
                            topic,
                            report,
                        };
                        keep.push((event.clone(), state));
                        Outcome::Retry {
                            error,
                            retry_after: None,
                        }
                    }
                },
            };
            // The lane stops at the first failure and hands over the rest again.
            match &outcome {
                Outcome::Retry { .. } => failed = true,
                Outcome::Delivered if failed => keep.push((event.clone(), State::Confirmed)),
                Outcome::Permanent { error } if failed => {
                    keep.push((event.clone(), State::Refused(error.clone())));
                }
                Outcome::Delivered | Outcome::Permanent { .. } | Outcome::Skipped => {}
            }
            outcomes.push(outcome);
        }
        if !keep.is_empty() {
            let mut map = self.held.lock().expect("held lock");
            for (event, state) in keep {
                map.insert(Arc::as_ptr(&event) as usize, Held { event, state });
            }
        }
        {
            let mut since = self.failing_since.lock().expect("failing lock");
            if confirmed {
                *since = None;
            } else if failed && since.is_none() {
                *since = Some(Instant::now());
            }
        }
        if failed {
            self.replace_if_broken(&current);
        }
        missing.sort();
        missing.dedup();
        for topic in missing {
            if let Some(creator) = &self.creator {
                // It existed once (or so it seemed) and is gone now: a broker that lost
                // its data, a topic deleted by hand. Create it again.
                creator.created.lock().expect("created lock").remove(&topic);
            }
            self.create_topic(&topic).await;
        }
        outcomes
    }
}

/// `timeout` from now, or a year for a timeout too large to add.
fn attempt_deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600))
}

impl Sink for KafkaSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.deliver_batch(batch))
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn concurrency(&self) -> usize {
        self.concurrency
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Delivered events were acknowledged on their reports; what is still queued is
        // unacknowledged and will be sent again after a restart. Do not wait for it.
        if let Ok(p) = self.producer.get_mut() {
            p.producer
                .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        }
    }
}
