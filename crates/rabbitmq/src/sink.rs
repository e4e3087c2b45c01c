//! `type = "rabbitmq"` sink.
//!
//! Each event is one persistent message (`delivery_mode = 2`) published with
//! `mandatory` to the sink's exchange under its routing key (a template), with the
//! event's id as `message_id`, its content type, its timestamp, the `switchyard-*`
//! headers and the event's own. A lane publishes its batch on a channel in confirm mode
//! and then waits for each confirm: an event is delivered when the broker has confirmed
//! it (for a durable queue: written to disk).
//!
//! With `format = "cloudevents"` in binary mode (the default `cloudevents_mode`) the
//! payload goes as it is, with its content type, and the attributes as
//! `cloudEvents_<name>` headers, as CloudEvents' AMQP binding names them; in structured
//! mode the body is one `application/cloudevents+json` object.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ExchangeKind};
use switchyard_config::RabbitmqSinkConfig;
use switchyard_connector::format::{self, Binding, Body, Formatter};
use switchyard_connector::template::Template;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event;
use switchyard_event::formats::cloudevents;
use tracing::{debug, info, warn};

use crate::headers;

/// Most events handed to one delivery attempt (one lane).
const MAX_BATCH: usize = 500;
/// Longest routing key AMQP allows (a short string).
const MAX_ROUTING_KEY: usize = 255;

/// Builds the `rabbitmq` sink `name`: the runtime's registration calls this. A broker
/// that is down or an exchange that does not exist are reported in the background; they
/// never fail the start.
pub fn build(
    name: &str,
    cfg: &RabbitmqSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let template = Template::parse(&cfg.routing_key)
        .map_err(|e| BuildError::new(format!("routing_key {e}")))?;
    crate::check_ca_file(cfg.ca_file.as_deref())?;
    let sink = Arc::new(RabbitmqSink {
        name: name.to_owned(),
        url: cfg.url.clone(),
        exchange: cfg.exchange.clone(),
        template,
        ca_file: cfg.ca_file.clone(),
        timeout: cfg.timeout,
        concurrency: cfg.concurrency.max(1),
        retry: cfg.retry.as_ref().map_or(
            RetryPolicy {
                max_attempts: u32::MAX,
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            RetryPolicy::from,
        ),
        formatter: Formatter::for_config(cfg.format, ctx.config)
            .with_cloudevents_mode(cfg.cloudevents_mode),
        connection: tokio::sync::Mutex::new(None),
        idle: Mutex::new(Vec::new()),
        careful: AtomicBool::new(false),
        down_since: Mutex::new(None),
        last_failure: Mutex::new(None),
    });
    tokio::spawn({
        let sink = sink.clone();
        async move { sink.check_exchange().await }
    });
    Ok(sink)
}

/// Publishes events to a RabbitMQ exchange; see the module docs.
pub struct RabbitmqSink {
    name: String,
    url: String,
    exchange: String,
    template: Template,
    ca_file: Option<String>,
    timeout: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    formatter: Formatter,
    /// The one connection of the sink, made on first use and again after it broke.
    connection: tokio::sync::Mutex<Option<Connection>>,
    /// Channels in confirm mode no lane is using.
    idle: Mutex<Vec<Channel>>,
    /// Set by a nack: attempts publish one event at a time until one goes through.
    careful: AtomicBool,
    /// Since when the broker is unreachable (a lost connection, a failed reconnect): the
    /// loss and the recovery are logged once each, not once per lane and attempt.
    down_since: Mutex<Option<Instant>>,
    /// The error of the last failed attempt, which names the cause of a lost connection.
    last_failure: Mutex<Option<String>>,
}

/// One event of an attempt, between publishing and answering.
enum Pending {
    Answered(Outcome),
    Published(lapin::PublisherConfirm),
}

impl RabbitmqSink {
    /// Checks (passively) that a named exchange exists, logging what to do when it does
    /// not. Never fails: a broker that is down at start is reported and waited for.
    async fn check_exchange(&self) {
        if self.exchange.is_empty() {
            return;
        }
        // A broker that does not answer was logged by `channel`.
        let Ok(channel) = self.channel().await else {
            return;
        };
        let passive = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        match channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                passive,
                FieldTable::default(),
            )
            .await
        {
            Ok(()) => {
                info!(sink = %self.name, exchange = %self.exchange, "rabbitmq exchange found");
                self.idle.lock().expect("idle lock").push(channel);
            }
            Err(e) => warn!(sink = %self.name, "{}", self.missing_exchange(&e.to_string())),
        }
    }

    /// What a failure naming the exchange means, and what to do.
    fn missing_exchange(&self, error: &str) -> String {
        if error.contains("NOT_FOUND") || error.contains("404") {
            format!(
                "rabbitmq exchange `{}` does not exist on {}: declare it, e.g. \
                 `rabbitmqadmin declare exchange name={} type=topic durable=true`, and bind \
                 queues to it; deliveries are retried until it exists",
                self.exchange,
                switchyard_config::redact::url(&self.url),
                self.exchange
            )
        } else {
            format!("rabbitmq refused exchange `{}`: {error}", self.exchange)
        }
    }

    /// An idle channel in confirm mode, or a new one (connecting when needed). Making
    /// one is bounded by `timeout`: a broker that accepts the TCP connection but does not
    /// answer (still booting, shutting down) cannot hold every lane.
    async fn channel(&self) -> Result<Channel, String> {
        loop {
            let idle = self.idle.lock().expect("idle lock").pop();
            match idle {
                Some(channel) if channel.status().connected() => return Ok(channel),
                // A channel of a connection that broke: dropped, try the next.
                Some(_) => continue,
                None => break,
            }
        }
        match tokio::time::timeout(self.timeout, self.open_channel()).await {
            Ok(made) => made,
            Err(_) => {
                let error = format!(
                    "opening a channel to RabbitMQ at {} took longer than {:?}",
                    switchyard_config::redact::url(&self.url),
                    self.timeout
                );
                self.note_down(&error);
                Err(error)
            }
        }
    }

    /// A new channel in confirm mode on the sink's connection, connecting first when
    /// there is none or it broke.
    async fn open_channel(&self) -> Result<Channel, String> {
        let mut connection = self.connection.lock().await;
        if !connection.as_ref().is_some_and(|c| c.status().connected()) {
            if connection.take().is_some() {
                let why = self.last_failure.lock().expect("failure lock").take();
                self.note_down(why.as_deref().unwrap_or("the connection was closed"));
            }
            let made = crate::connect(&self.url, self.ca_file.as_deref(), &self.name)
                .await
                .inspect_err(|e| self.note_down(e))?;
            *connection = Some(made);
            if self.down_since.lock().expect("down lock").is_none() {
                info!(sink = %self.name, url = %switchyard_config::redact::url(&self.url),
                    "connected to rabbitmq");
            }
        }
        let conn = connection.as_ref().expect("connected above");
        let channel = conn
            .create_channel()
            .await
            .map_err(|e| format!("cannot open a RabbitMQ channel: {e}"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| format!("cannot enable publisher confirms: {e}"))?;
        self.note_up();
        Ok(channel)
    }

    /// Records that the broker cannot be reached: the first time since it last could,
    /// a warning saying why and what happens to the events.
    fn note_down(&self, error: &str) {
        let mut down_since = self.down_since.lock().expect("down lock");
        if down_since.is_none() {
            *down_since = Some(Instant::now());
            warn!(sink = %self.name, url = %switchyard_config::redact::url(&self.url),
                error = %switchyard_config::redact::text(error),
                "rabbitmq unreachable; reconnecting with backoff, and the events it did not \
                 confirm are published again once it answers (duplicates possible, never loss)");
        } else {
            debug!(sink = %self.name, error = %switchyard_config::redact::text(error),
                "rabbitmq still unreachable");
        }
    }

    /// Records a new channel: after an outage, says how long it lasted.
    fn note_up(&self) {
        if let Some(since) = self.down_since.lock().expect("down lock").take() {
            info!(sink = %self.name, url = %switchyard_config::redact::url(&self.url),
                down_for = ?since.elapsed(), "reconnected to rabbitmq; publishing again");
        }
    }

    /// The message properties of `event`, with `content_type` for its body and, for
    /// CloudEvents in binary mode, the `cloudEvents_*` attribute headers.
    fn properties(
        event: &Event,
        content_type: &str,
        attributes: Option<Vec<(String, String)>>,
    ) -> BasicProperties {
        let mut table = FieldTable::default();
        for (name, value) in [
            (headers::ID, event.id.as_str()),
            (headers::SOURCE, event.source.as_str()),
            (headers::KIND, event.kind.as_str()),
        ] {
            table.insert(name.into(), AMQPValue::LongString(value.into()));
        }
        if let Some(key) = &event.key {
            table.insert(
                headers::KEY.into(),
                AMQPValue::LongString(key.as_slice().into()),
            );
        }
        let binary = attributes.is_some();
        for (name, value) in &event.headers {
            // In binary mode the attributes are written below, under the binding's
            // names: the forms a CloudEvents source or sink may have left on the event
            // are not written twice.
            let attribute = binary
                && (name.starts_with(cloudevents::HEADER_PREFIX)
                    || name.starts_with("ce_")
                    || name.starts_with(Binding::Amqp.prefix()));
            if !attribute && !headers::ALL.contains(&name.as_str()) && name.len() <= 255 {
                table.insert(
                    name.as_str().into(),
                    AMQPValue::LongString(value.as_str().into()),
                );
            }
        }
        for (name, value) in attributes.into_iter().flatten() {
            if name.len() <= 255 {
                table.insert(name.into(), AMQPValue::LongString(value.into()));
            }
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(ShortString::from(content_type))
            .with_timestamp(event.timestamp_ms / 1000)
            .with_headers(table);
        if event.id.len() <= 255 {
            properties = properties.with_message_id(event.id.as_str().into());
        }
        properties
    }

    /// Publishes `event` (its body in the sink's format): its pending confirm, or why it
    /// was not published (`Err` with a broken channel).
    async fn publish(
        &self,
        channel: &Channel,
        event: &Event,
        body: &mut Vec<u8>,
        now_us: u64,
    ) -> Result<Pending, String> {
        let routing_key = match self.template.render(event, |value| {
            if value.len() > MAX_ROUTING_KEY {
                Err(format!("is longer than {MAX_ROUTING_KEY} bytes"))
            } else {
                Ok(())
            }
        }) {
            Ok(key) if key.len() <= MAX_ROUTING_KEY => key,
            Ok(key) => {
                return Ok(Pending::Answered(Outcome::Permanent {
                    error: format!(
                        "routing key of event {} is {} bytes, more than AMQP's {MAX_ROUTING_KEY}",
                        event.id,
                        key.len()
                    ),
                }));
            }
            Err(error) => {
                return Ok(Pending::Answered(Outcome::Permanent {
                    error: format!("routing_key {error}"),
                }));
            }
        };
        body.clear();
        // CloudEvents in binary mode: the payload as it is, the attributes as headers.
        let attributes = self.formatter.binary_headers(event, Binding::Amqp);
        let (payload, content_type) = if self.formatter.is_native() || attributes.is_some() {
            (&event.payload[..], event.content_type.as_str())
        } else {
            match self.formatter.write(event, now_us, body) {
                Body::Native => (&event.payload[..], event.content_type.as_str()),
                Body::Skip => return Ok(Pending::Answered(Outcome::Skipped)),
                Body::Written { .. } => (&body[..], self.formatter.written_content_type()),
            }
        };
        let confirm = channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                payload,
                Self::properties(event, content_type, attributes),
            )
            .await
            .map_err(|e| self.failure(&e.to_string()))?;
        Ok(Pending::Published(confirm))
    }

    /// A failed publish or confirm, said with what to do.
    fn failure(&self, error: &str) -> String {
        if error.contains("NOT_FOUND") || error.contains("404") {
            self.missing_exchange(error)
        } else {
            format!(
                "rabbitmq at {} did not confirm the event: {}",
                switchyard_config::redact::url(&self.url),
                switchyard_config::redact::text(error)
            )
        }
    }

    /// Waits (until `deadline`) for the confirm of one publish: its outcome. A channel
    /// error or a timeout sets `broken` (the channel is not used again).
    async fn confirmed(
        &self,
        confirm: lapin::PublisherConfirm,
        deadline: tokio::time::Instant,
        broken: &mut Option<String>,
    ) -> Outcome {
        match tokio::time::timeout_at(deadline, confirm).await {
            Ok(Ok(Confirmation::Ack(None))) => Outcome::Delivered,
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Outcome::Permanent {
                error: format!(
                    "rabbitmq returned the message as unroutable ({} {}): exchange `{}` has no \
                     queue bound for routing key `{}`; bind a queue that matches it",
                    returned.reply_code,
                    returned.reply_text,
                    self.exchange,
                    returned.delivery.routing_key
                ),
            },
            Ok(Ok(Confirmation::Nack(_))) => {
                // Later publishes of this attempt may be confirmed before this one is
                // retried; publish one at a time until an attempt goes through.
                self.careful.store(true, Ordering::Relaxed);
                Outcome::Retry {
                    error: "rabbitmq refused the message (nack): a queue it routes to is full \
                            (x-overflow = reject-publish) or the broker is out of memory or \
                            disk; retried"
                        .into(),
                    retry_after: None,
                }
            }
            Ok(Ok(Confirmation::NotRequested)) => Outcome::Retry {
                error: "the channel was not in confirm mode".into(),
                retry_after: None,
            },
            Ok(Err(e)) => {
                let error = self.failure(&e.to_string());
                broken.get_or_insert_with(|| error.clone());
                Outcome::Retry {
                    error,
                    retry_after: None,
                }
            }
            Err(_) => {
                broken.get_or_insert_with(|| "confirm timed out".into());
                Outcome::Retry {
                    error: format!(
                        "rabbitmq did not confirm the event within {:?}; retried",
                        self.timeout
                    ),
                    retry_after: None,
                }
            }
        }
    }

    async fn deliver_batch(&self, batch: &[Arc<Event>]) -> Vec<Outcome> {
        let retry_all = |error: String| {
            batch
                .iter()
                .map(|_| Outcome::Retry {
                    error: error.clone(),
                    retry_after: None,
                })
                .collect::<Vec<_>>()
        };
        let channel = match self.channel().await {
            Ok(channel) => channel,
            Err(error) => return retry_all(error),
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let now_us = if self.formatter.is_native() {
            0
        } else {
            format::now_us()
        };
        let mut body = Vec::new();
        let mut pending = Vec::with_capacity(batch.len());
        let mut broken = None;
        // After a nack, one publish at a time (each confirmed before the next), so that a
        // refused event cannot be overtaken by a later one of its key.
        let careful = self.careful.load(Ordering::Relaxed);
        for event in batch {
            if let Some(error) = &broken {
                // Publishing later events after one could not be would put them ahead
                // of it.
                pending.push(Pending::Answered(Outcome::Retry {
                    error: format!("not attempted: an earlier event of the batch failed ({error})"),
                    retry_after: None,
                }));
                continue;
            }
            match self.publish(&channel, event, &mut body, now_us).await {
                Ok(Pending::Published(confirm)) if careful => {
                    let outcome = self.confirmed(confirm, deadline, &mut broken).await;
                    if let Outcome::Retry { error, .. } = &outcome {
                        broken.get_or_insert_with(|| error.clone());
                    }
                    pending.push(Pending::Answered(outcome));
                }
                Ok(p) => pending.push(p),
                Err(error) => {
                    pending.push(Pending::Answered(Outcome::Retry {
                        error: error.clone(),
                        retry_after: None,
                    }));
                    broken = Some(error);
                }
            }
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for p in pending {
            let outcome = match p {
                Pending::Answered(outcome) => outcome,
                Pending::Published(confirm) => self.confirmed(confirm, deadline, &mut broken).await,
            };
            outcomes.push(outcome);
        }
        if careful && !outcomes.iter().any(|o| matches!(o, Outcome::Retry { .. })) {
            self.careful.store(false, Ordering::Relaxed);
        }
        // A channel with a confirm still to come would answer it to the next attempt's
        // publish: only a channel whose every confirm came goes back to the pool.
        if broken.is_none() && channel.status().connected() {
            self.idle.lock().expect("idle lock").push(channel);
        } else {
            // Why, for the log line when this turns out to be a lost connection.
            if let Some(error) = broken {
                *self.last_failure.lock().expect("failure lock") = Some(error);
            }
            let closing = channel.close(200, "switchyard: attempt failed".into());
            let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
        }
        outcomes
    }
}

impl Sink for RabbitmqSink {
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
