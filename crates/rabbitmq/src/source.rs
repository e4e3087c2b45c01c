//! The `rabbitmq` source: one consumer of a queue per pipeline reader.
//!
//! A delivery's position is its delivery tag plus the last position of the channels
//! before it, so positions keep increasing when a broken connection is replaced (the
//! broker hands the new channel what the old one had not acknowledged, from tag 1).
//! `commit(low)` acknowledges, with one `multiple` ack, every delivery of the current
//! channel below `low`; nothing at or above it is acknowledged, nothing is ever nacked,
//! so what a crash or a lost connection interrupts is redelivered by the broker.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::{FutureExt as _, StreamExt as _};
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection};
use switchyard_config::RabbitmqSourceConfig;
use switchyard_connector::{Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Source};
use switchyard_event::Event;
use tracing::{debug, info, warn};

use crate::{MAX_HEADERS, headers};

/// How long connecting and starting the consumer may take: a broker that accepts the
/// TCP connection but does not answer (booting, shutting down) is tried again.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A configured `rabbitmq` source.
pub struct RabbitmqSource {
    name: String,
    config: RabbitmqSourceConfig,
}

/// Builds the `rabbitmq` source `name`: the runtime's registration calls this. Nothing
/// connects before [`Source::open`].
pub fn build(
    name: &str,
    cfg: &RabbitmqSourceConfig,
    _ctx: &BuildContext<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    crate::check_ca_file(cfg.ca_file.as_deref())?;
    Ok(Box::new(RabbitmqSource {
        name: name.to_owned(),
        config: cfg.clone(),
    }))
}

impl Source for RabbitmqSource {
    /// One feed; it connects on its first read (a broker that is down is waited for).
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            Ok(vec![Box::new(RabbitmqFeed {
                name: self.name.clone(),
                config: self.config.clone(),
                live: None,
                setting_up: None,
                last: 0,
                handed: VecDeque::new(),
                lost_at: None,
            }) as Box<dyn Feed>])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The connection a feed reads from.
struct Live {
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    /// Added to this channel's delivery tags to make positions.
    base: u64,
}

/// A queue consumer as a pipeline reader's [`Feed`].
pub struct RabbitmqFeed {
    name: String,
    config: RabbitmqSourceConfig,
    live: Option<Live>,
    /// The connection being made, when `live` is `None`.
    setting_up: Option<tokio::task::JoinHandle<Result<Opened, FeedError>>>,
    /// The last position handed out.
    last: u64,
    /// Positions and delivery tags of the current channel handed out and not acked.
    handed: VecDeque<(u64, u64)>,
    /// When the last connection was lost (`None` before the first and once replaced).
    lost_at: Option<Instant>,
}

/// A connection, its channel and the queue's consumer on it.
type Opened = (Connection, Channel, lapin::Consumer);

/// Connects, sets the prefetch and starts consuming: run as a task of its own, so a
/// `next` the reader drops meanwhile (it does on every tick of its commit timer) does
/// not leave behind a connection whose consumer holds `prefetch` deliveries that nobody
/// reads or acknowledges (the broker would not hand them to the next consumer while that
/// connection lives).
async fn open_consumer(name: String, cfg: RabbitmqSourceConfig) -> Result<Opened, FeedError> {
    let connection = crate::connect(&cfg.url, cfg.ca_file.as_deref(), &name)
        .await
        .map_err(FeedError::Transient)?;
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| FeedError::Transient(format!("cannot open a RabbitMQ channel: {e}")))?;
    channel
        .basic_qos(cfg.prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| FeedError::Transient(format!("cannot set the prefetch: {e}")))?;
    let consumer = channel
        .basic_consume(
            cfg.queue.as_str().into(),
            format!("switchyard-{name}").into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| {
            let e = e.to_string();
            FeedError::Transient(if e.contains("NOT_FOUND") || e.contains("404") {
                format!(
                    "rabbitmq queue `{}` does not exist on {}: declare it, e.g. \
                     `rabbitmqadmin declare queue name={} durable=true`, and bind it to an \
                     exchange; waiting for it",
                    cfg.queue,
                    switchyard_config::redact::url(&cfg.url),
                    cfg.queue
                )
            } else {
                format!("cannot consume queue `{}`: {e}", cfg.queue)
            })
        })?;
    Ok((connection, channel, consumer))
}

impl RabbitmqFeed {
    /// Connects and starts consuming, within [`CONNECT_TIMEOUT`].
    async fn connect(&mut self) -> Result<(), FeedError> {
        let (name, config) = (self.name.clone(), self.config.clone());
        let setting_up = self.setting_up.get_or_insert_with(|| {
            tokio::spawn(async move {
                let (shown, queue) = (
                    switchyard_config::redact::url(&config.url),
                    config.queue.clone(),
                );
                tokio::time::timeout(CONNECT_TIMEOUT, open_consumer(name, config))
                    .await
                    .map_err(|_| {
                        FeedError::Transient(format!(
                            "connecting to RabbitMQ at {shown} and consuming queue `{queue}` \
                             took longer than {CONNECT_TIMEOUT:?}"
                        ))
                    })?
            })
        });
        let opened = setting_up.await;
        self.setting_up = None;
        let (connection, channel, consumer) = opened.map_err(|e| {
            FeedError::Transient(format!("setting up the rabbitmq consumer failed: {e}"))
        })??;
        // What the old channel had not acknowledged comes again on this one.
        let again = self.handed.len();
        self.handed.clear();
        let shown = switchyard_config::redact::url(&self.config.url);
        match self.lost_at.take() {
            Some(lost) => info!(source = %self.name, url = %shown, queue = %self.config.queue,
                down_for = ?lost.elapsed(), unacked_handed_out = again,
                "reconnected to rabbitmq; consuming again (what was not acknowledged comes again)"),
            None => info!(source = %self.name, url = %shown, queue = %self.config.queue,
                "consuming rabbitmq queue"),
        }
        self.live = Some(Live {
            _connection: connection,
            channel,
            consumer,
            base: self.last,
        });
        Ok(())
    }

    /// Drops the broken connection, saying why once.
    fn lose(&mut self, error: &str) {
        self.live = None;
        if self.lost_at.is_none() {
            self.lost_at = Some(Instant::now());
            warn!(source = %self.name, queue = %self.config.queue,
                error = %switchyard_config::redact::text(error),
                "lost the rabbitmq consumer; reconnecting with backoff (deliveries not \
                 acknowledged are redelivered by the broker)");
        }
    }

    fn event(&self, d: &Delivery) -> Event {
        let header = |table: &FieldTable, name: &str| -> Option<Vec<u8>> {
            match table.inner().get(name)? {
                AMQPValue::LongString(s) => Some(s.as_bytes().to_vec()),
                AMQPValue::ShortString(s) => Some(s.as_str().as_bytes().to_vec()),
                AMQPValue::ByteArray(b) => Some(b.as_slice().to_vec()),
                _ => None,
            }
        };
        let empty = FieldTable::default();
        let table = d.properties.headers().as_ref().unwrap_or(&empty);
        let text =
            |name: &str| header(table, name).map(|b| String::from_utf8_lossy(&b).into_owned());
        let id = text(headers::ID)
            .or_else(|| d.properties.message_id().as_ref().map(|m| m.to_string()))
            .unwrap_or_else(|| format!("{}/{}", self.config.queue, uuid::Uuid::now_v7()));
        let mut event_headers = Vec::new();
        for (name, value) in table.inner() {
            if event_headers.len() >= MAX_HEADERS {
                break;
            }
            let name = name.as_str();
            if headers::ALL.contains(&name) {
                continue;
            }
            let value = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.to_string(),
                AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
                AMQPValue::Boolean(b) => b.to_string(),
                AMQPValue::LongLongInt(n) => n.to_string(),
                AMQPValue::LongInt(n) => n.to_string(),
                AMQPValue::LongUInt(n) => n.to_string(),
                AMQPValue::ShortInt(n) => n.to_string(),
                AMQPValue::Timestamp(n) => n.to_string(),
                // Nested tables, arrays and floats have no one text form: left out.
                _ => continue,
            };
            event_headers.push((name.to_owned(), value));
        }
        event_headers.push(("amqp-routing-key".to_owned(), d.routing_key.to_string()));
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        Event {
            id: id.into(),
            source: self.name.as_str().into(),
            kind: text(headers::KIND).map_or_else(|| "message".into(), Into::into),
            key: header(table, headers::KEY),
            payload: d.data.clone(),
            content_type: d
                .properties
                .content_type()
                .as_ref()
                .map_or_else(|| "application/octet-stream".to_owned(), |c| c.to_string())
                .into(),
            headers: event_headers,
            timestamp_ms: d
                .properties
                .timestamp()
                .map_or(now_ms, |s| s.saturating_mul(1000)),
            payload_is_compact_json: false,
        }
    }

    async fn read(&mut self, max: usize) -> Result<Option<Batch>, FeedError> {
        if self.live.is_none() {
            self.connect().await?;
        }
        let live = self.live.as_mut().expect("connected above");
        let mut deliveries = Vec::new();
        let queue = &self.config.queue;
        let lost = |e: String| FeedError::Transient(format!("rabbitmq consumer of `{queue}`: {e}"));
        match live.consumer.next().await {
            Some(Ok(d)) => deliveries.push(d),
            Some(Err(e)) => {
                let error = lost(e.to_string());
                self.lose(&error.to_string());
                return Err(error);
            }
            None => {
                let error = lost(
                    "the broker cancelled the consumer (the queue was deleted, or the \
                     connection closed)"
                        .into(),
                );
                self.lose(&error.to_string());
                return Err(error);
            }
        }
        while deliveries.len() < max {
            match live.consumer.next().now_or_never() {
                Some(Some(Ok(d))) => deliveries.push(d),
                _ => break,
            }
        }
        let base = live.base;
        let mut batch = Batch::with_capacity(deliveries.len());
        for d in &deliveries {
            let position = base + d.delivery_tag;
            self.handed.push_back((position, d.delivery_tag));
            self.last = position;
            batch.push(position, self.event(d));
        }
        Ok(Some(batch))
    }
}

impl Feed for RabbitmqFeed {
    fn start(&self) -> u64 {
        1
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(self.read(max))
    }

    fn commit(&mut self, low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
        Box::pin(async move {
            let mut tag = None;
            while let Some(&(position, t)) = self.handed.front()
                && position < low
            {
                tag = Some(t);
                self.handed.pop_front();
            }
            let (Some(tag), Some(live)) = (tag, &self.live) else {
                return Ok(());
            };
            if !live.channel.status().connected() {
                // The broker requeued this channel's deliveries when it closed; they come
                // again on the next channel and are acknowledged there.
                debug!(source = %self.name, tag, "not acking on a closed channel");
                return Ok(());
            }
            live.channel
                .basic_ack(tag, BasicAckOptions { multiple: true })
                .await
                .map_err(|e| FeedError::Transient(format!("acking on RabbitMQ: {e}")))
        })
    }

    fn lag(&self, low: u64) -> u64 {
        (self.last + 1).saturating_sub(low)
    }

    fn partition(&self) -> u32 {
        0
    }

    /// The broker sends no more than `prefetch` unacknowledged deliveries: ack every
    /// half of it.
    fn commit_after(&self) -> Option<u64> {
        Some(u64::from(self.config.prefetch / 2))
    }
}
