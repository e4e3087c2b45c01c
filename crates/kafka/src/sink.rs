//! `type = "kafka"` sink.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::KafkaError as RdError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode as Code;
use switchyard_config::KafkaSinkConfig;
use switchyard_event::Event;
use switchyard_sinks::{BoxFuture, Outcome, RetryPolicy, Sink};
use tracing::{error, info, warn};

use crate::context::LogContext;
use crate::topic::TopicTemplate;
use crate::{KafkaError, headers};

/// Most events handed to one delivery attempt (one lane).
const MAX_BATCH: usize = 1000;
/// How often the same "topic does not exist" warning is logged.
const WARN_EVERY: Duration = Duration::from_secs(30);
/// Attempts in a row that got no delivery report at all (every event timed out or
/// failed) after which the producer is replaced by a fresh one. An idempotent producer
/// whose producer id the cluster forgot (a broker that lost its state) is rejected
/// forever with `UnknownProducerId`; a new one gets a new id. During a plain outage
/// the replacement is harmless: the new producer waits for the brokers the same way.
const REPLACE_AFTER_FAILURES: u32 = 3;

type Producer_ = FutureProducer<LogContext>;

/// Produces events to Kafka; see the crate docs for the contract.
pub struct KafkaSink {
    name: String,
    brokers: String,
    template: TopicTemplate,
    client_config: ClientConfig,
    producer: RwLock<Arc<Producer_>>,
    timeout: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    creator: Option<TopicCreator>,
    warned: Mutex<HashMap<String, Instant>>,
    /// Attempts in a row in which not one event was confirmed.
    failures_in_a_row: AtomicU32,
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
            .set(
                "message.timeout.ms",
                cfg.timeout.as_millis().max(1).to_string(),
            )
            .set(
                "request.timeout.ms",
                cfg.timeout.as_millis().clamp(1, 30_000).to_string(),
            )
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
            reason: e.to_string(),
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
            producer: RwLock::new(Arc::new(producer)),
            timeout: cfg.timeout,
            concurrency: cfg.concurrency.max(1),
            retry,
            creator,
            warned: Mutex::new(HashMap::new()),
            failures_in_a_row: AtomicU32::new(0),
        })
    }

    /// For a topic without placeholders: checks that it exists (or creates it with
    /// `create_topics`), logging what to do when it does not. Never fails: a broker that
    /// is down at start is reported and waited for.
    pub async fn check_topic(&self) {
        let Some(topic) = self.template.fixed().map(str::to_owned) else {
            return;
        };
        let producer = self.current();
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

    fn current(&self) -> Arc<Producer_> {
        self.producer.read().expect("producer lock").clone()
    }

    /// Replaces `used` when it hit a fatal error (an idempotent producer that lost its
    /// sequence: it cannot send any more) or failed [`REPLACE_AFTER_FAILURES`] attempts
    /// in a row.
    fn replace_if_broken(&self, used: &Arc<Producer_>) {
        let reason = match used.client().fatal_error() {
            Some((code, reason)) => format!("fatal error {code:?}: {reason}"),
            None if self.failures_in_a_row.load(Ordering::SeqCst) >= REPLACE_AFTER_FAILURES => {
                format!("{REPLACE_AFTER_FAILURES} delivery attempts in a row failed")
            }
            None => return,
        };
        let mut slot = self.producer.write().expect("producer lock");
        if !Arc::ptr_eq(&slot, used) {
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
                self.failures_in_a_row.store(0, Ordering::SeqCst);
                warn!(sink = %self.name, %reason,
                    "replaced the kafka producer with a new one (with a new producer id); unconfirmed events are retried");
                let old = std::mem::replace(&mut *slot, Arc::new(fresh));
                // Dropping a producer waits for its queue: not on this thread.
                std::thread::spawn(move || drop(old));
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

    /// Queues `event` in the producer, waiting while its queue is full (at most the
    /// delivery timeout).
    async fn enqueue(
        &self,
        producer: &Producer_,
        event: &Event,
    ) -> Result<(String, DeliveryFuture), Outcome> {
        let topic = self
            .template
            .render(event)
            .map_err(|error| Outcome::Permanent { error })?;
        let mut h = OwnedHeaders::new_with_capacity(4 + event.headers.len());
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
        for (name, value) in &event.headers {
            if !headers::ALL.contains(&name.as_str()) {
                h = h.insert(Header {
                    key: name,
                    value: Some(value),
                });
            }
        }
        let mut record = FutureRecord::to(&topic)
            .payload(&event.payload)
            .headers(h)
            .timestamp(i64::try_from(event.timestamp_ms).unwrap_or(i64::MAX));
        if let Some(key) = &event.key {
            record = record.key(key);
        }
        let deadline = Instant::now() + self.timeout;
        loop {
            match producer.send_result(record) {
                Ok(fut) => return Ok((topic, fut)),
                Err((RdError::MessageProduction(Code::QueueFull), r))
                    if Instant::now() < deadline =>
                {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                Err((e, _)) => return Err(self.classify(&topic, &e)),
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

    async fn deliver_batch(&self, batch: &[Arc<Event>]) -> Vec<Outcome> {
        self.ensure_topics(batch).await;
        let producer = self.current();
        let mut pending = Vec::with_capacity(batch.len());
        let mut stopped = false;
        for event in batch {
            if stopped {
                // An earlier event of this lane failed before it was sent: sending later
                // ones now could put them ahead of it.
                pending.push(Err(Outcome::Retry {
                    error: "not attempted: an earlier event of the batch failed".into(),
                    retry_after: None,
                }));
                continue;
            }
            let sent = self.enqueue(&producer, event).await;
            if matches!(sent, Err(Outcome::Retry { .. })) {
                stopped = true;
            }
            pending.push(sent);
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut missing = Vec::new();
        let (mut failed, mut confirmed, mut reported_failure) = (false, false, false);
        for p in pending {
            let outcome = match p {
                Err(o) => o,
                Ok((topic, fut)) => match fut.await {
                    Ok(Ok(_)) => {
                        confirmed = true;
                        Outcome::Delivered
                    }
                    Ok(Err((e, _))) => {
                        reported_failure = true;
                        let o = self.classify(&topic, &e);
                        if matches!(
                            e.rdkafka_error_code(),
                            Some(Code::UnknownTopicOrPartition | Code::UnknownTopic)
                        ) {
                            missing.push(topic);
                        }
                        o
                    }
                    Err(_) => Outcome::Retry {
                        error: "the kafka producer was replaced before it reported".into(),
                        retry_after: None,
                    },
                },
            };
            failed |= !matches!(outcome, Outcome::Delivered);
            outcomes.push(outcome);
        }
        if confirmed {
            self.failures_in_a_row.store(0, Ordering::SeqCst);
        } else if reported_failure {
            self.failures_in_a_row.fetch_add(1, Ordering::SeqCst);
        }
        if failed {
            self.replace_if_broken(&producer);
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
            p.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        }
    }
}
