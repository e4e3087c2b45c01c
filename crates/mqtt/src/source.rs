//! The `mqtt` source: one persistent session per pipeline reader.
//!
//! The session's client id is stable (`client_id`, or `switchyard-<source name>`) and
//! clean session is off, so the broker keeps the subscriptions and every QoS 1 message
//! not acknowledged while switchyard is away. rumqttc's manual acks hold each message's
//! PUBACK until `commit(low)` passes it. After a reconnect the broker sends again what
//! the old connection had not acknowledged, so deliveries of an earlier connection are
//! never acked (the event loop numbers its connections, and each message carries the
//! number it came on): their resent copies are, and they come again as duplicates.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rumqttc::{AsyncClient, Event, Incoming, Publish, QoS};
use switchyard_config::MqttSourceConfig;
use switchyard_connector::{Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Source};
use switchyard_event::Event as SyEvent;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// Messages read ahead of the reader; then rumqttc stops reading the socket.
const READ_AHEAD: usize = 1024;

/// A configured `mqtt` source.
pub struct MqttSource {
    name: String,
    config: MqttSourceConfig,
    client_id: String,
}

/// Builds the `mqtt` source `name`: the runtime's registration calls this. Nothing
/// connects before [`Source::open`].
pub fn build(
    name: &str,
    cfg: &MqttSourceConfig,
    _ctx: &BuildContext<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("switchyard-{name}"));
    crate::options(&cfg.url, &client_id, cfg.ca_file.as_deref()).map_err(BuildError::new)?;
    Ok(Box::new(MqttSource {
        name: name.to_owned(),
        config: cfg.clone(),
        client_id,
    }))
}

/// A message and the number of the connection it came on.
type Delivered = (Publish, u64);

impl Source for MqttSource {
    /// Starts the session's event loop (a broker that is down is waited for) and
    /// answers its one feed.
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            let mut options = crate::options(
                &self.config.url,
                &self.client_id,
                self.config.ca_file.as_deref(),
            )
            .map_err(BuildError::new)?;
            options.set_clean_session(false).set_manual_acks(true);
            // Room for the acks of every message the reader can hold, so they rarely wait
            // for the next commit (the queue is not allocated up front).
            let (client, mut eventloop) = AsyncClient::new(options, usize::from(u16::MAX));
            let (tx, rx) = mpsc::channel::<Delivered>(READ_AHEAD);
            let connection = Arc::new(AtomicU64::new(0));
            let current = connection.clone();
            let (name, url) = (self.name.clone(), self.config.url.clone());
            let topics = self.config.topics.clone();
            let subscriber = client.clone();
            tokio::spawn(async move {
                loop {
                    match eventloop.poll().await {
                        Ok(Event::Incoming(Incoming::Publish(p))) => {
                            let number = current.load(Ordering::SeqCst);
                            if tx.send((p, number)).await.is_err() {
                                return;
                            }
                        }
                        Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                            info!(source = %name, session_present = ack.session_present, "connected to the mqtt broker");
                            // From now on, acks of earlier connections' messages are not
                            // sent: the broker sends those messages again.
                            current.fetch_add(1, Ordering::SeqCst);
                            if !ack.session_present {
                                let filters = topics.iter().map(|t| {
                                    rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce)
                                });
                                if let Err(e) = subscriber.try_subscribe_many(filters) {
                                    warn!(source = %name, "cannot subscribe: {e}");
                                }
                            }
                        }
                        Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                            if ack
                                .return_codes
                                .iter()
                                .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                            {
                                warn!(source = %name, ?topics, "the mqtt broker refused a subscription: check the topic filters and the user's permissions");
                            }
                        }
                        Ok(_) => {}
                        Err(e) => {
                            current.fetch_add(1, Ordering::SeqCst);
                            warn!(source = %name, "{}; reconnecting", crate::connection_error(&url, &e));
                            if tx.is_closed() {
                                return;
                            }
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
            });
            Ok(vec![Box::new(MqttFeed {
                client,
                rx,
                connection,
                name: self.name.clone(),
                last: 0,
                handed: VecDeque::new(),
            }) as Box<dyn Feed>])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A persistent MQTT session as a pipeline reader's [`Feed`].
pub struct MqttFeed {
    client: AsyncClient,
    rx: mpsc::Receiver<Delivered>,
    /// The number of the event loop's connection (changed on every loss and connect).
    connection: Arc<AtomicU64>,
    name: String,
    /// The last position handed out.
    last: u64,
    /// Positions handed out and not committed, with the message to acknowledge and the
    /// connection it came on.
    handed: VecDeque<(u64, Delivered)>,
}

impl MqttFeed {
    fn event(&self, p: &Publish) -> SyEvent {
        let topic = p.topic.clone();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        SyEvent {
            id: uuid::Uuid::now_v7().to_string().into(),
            source: self.name.clone().into(),
            kind: "message".into(),
            // MQTT keeps order per topic.
            key: Some(topic.clone().into_bytes()),
            payload: p.payload.to_vec(),
            content_type: "application/octet-stream".into(),
            headers: vec![("mqtt-topic".to_owned(), topic)],
            timestamp_ms: now_ms,
            payload_is_compact_json: false,
        }
    }

    fn take(&mut self, delivered: Delivered, batch: &mut Batch) {
        self.last += 1;
        batch.push(self.last, self.event(&delivered.0));
        self.handed.push_back((self.last, delivered));
    }

    async fn read(&mut self, max: usize) -> Result<Option<Batch>, FeedError> {
        let mut batch = Batch::with_capacity(max.min(READ_AHEAD));
        while batch.is_empty() {
            let Some(first) = self.rx.recv().await else {
                return Ok(None);
            };
            self.take(first, &mut batch);
        }
        while batch.len() < max {
            match self.rx.try_recv() {
                Ok(d) => self.take(d, &mut batch),
                Err(_) => break,
            }
        }
        Ok(Some(batch))
    }
}

impl Feed for MqttFeed {
    fn start(&self) -> u64 {
        1
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(self.read(max))
    }

    /// Queues the PUBACK of every message below `low`. Never waits for room in the
    /// client's request queue: while the event loop is held up handing messages to a
    /// reader that is not reading (it waits for this very commit), waiting would never
    /// end. What does not fit is acknowledged by the next commit.
    fn commit(&mut self, low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
        let current = self.connection.load(Ordering::SeqCst);
        while let Some((position, (publish, connection))) = self.handed.front()
            && *position < low
        {
            // A message of an earlier connection comes again under the same packet id:
            // its copy is acked, never the original (a second ack could hit a new
            // message that reuses the id).
            if *connection == current && self.client.try_ack(publish).is_err() {
                break;
            }
            self.handed.pop_front();
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn lag(&self, low: u64) -> u64 {
        (self.last + 1).saturating_sub(low)
    }

    fn partition(&self) -> u32 {
        0
    }

    /// A broker keeps only a few QoS 1 messages in flight per session (mosquitto: 20 by
    /// default) and sends the next one for each PUBACK: ack whatever is complete at once.
    fn commit_after(&self) -> Option<u64> {
        Some(1)
    }
}
