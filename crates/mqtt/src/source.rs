//! The `mqtt` source: one persistent session per pipeline reader.
//!
//! The session's client id is stable (`client_id`, or `switchyard-<source name>`) and
//! clean session is off, so the broker keeps the subscriptions and every QoS 1 message
//! not acknowledged while switchyard is away. rumqttc's manual acks hold each message's
//! PUBACK until `commit(low)` passes it. After a reconnect the broker sends again what
//! the old connection had not acknowledged, so deliveries of an earlier connection are
//! never acked (the event loop numbers its connections, and each message carries the
//! number it came on): their resent copies are, and they come again as duplicates.
//!
//! With MQTT 5 the session is kept by clean start off and a session expiry interval
//! (`session_expiry`), and a message's properties become the event's: the user
//! properties a switchyard sink wrote give back its id (so a message delivered again, or
//! sent through MQTT by another switchyard, keeps its event id), kind and key, the
//! content-type property its content type, and the other user properties its headers.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rumqttc::{AsyncClient, Event, Incoming, Publish, QoS};
use switchyard_config::{MqttProtocol, MqttSourceConfig};
use switchyard_connector::{Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Source};
use switchyard_event::Event as SyEvent;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::properties;

/// Messages read ahead of the reader; then rumqttc stops reading the socket.
const READ_AHEAD: usize = 1024;
/// User properties of a message copied into its event's headers, at most (a message is
/// bounded by the packet size; this bounds the per-event work on top).
const MAX_HEADERS: usize = 128;

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
    match cfg.protocol {
        MqttProtocol::V3 => crate::options(&cfg.url, &client_id, cfg.ca_file.as_deref())
            .map(drop)
            .map_err(BuildError::new)?,
        MqttProtocol::V5 => crate::options_v5(&cfg.url, &client_id, cfg.ca_file.as_deref())
            .map(drop)
            .map_err(BuildError::new)?,
    }
    Ok(Box::new(MqttSource {
        name: name.to_owned(),
        config: cfg.clone(),
        client_id,
    }))
}

/// A message of either MQTT version.
enum Message {
    V3(Publish),
    V5(rumqttc::v5::mqttbytes::v5::Publish),
}

/// A client of either MQTT version.
enum Client {
    V3(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

impl Client {
    /// Queues the PUBACK of `message` without waiting; `false` when the request queue is
    /// full.
    fn try_ack(&self, message: &Message) -> bool {
        match (self, message) {
            (Client::V3(client), Message::V3(p)) => client.try_ack(p).is_ok(),
            (Client::V5(client), Message::V5(p)) => client.try_ack(p).is_ok(),
            // One source speaks one version.
            _ => true,
        }
    }
}

/// A message and the number of the connection it came on.
type Delivered = (Message, u64);

impl Source for MqttSource {
    /// Starts the session's event loop (a broker that is down is waited for) and
    /// answers its one feed.
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            let (tx, rx) = mpsc::channel::<Delivered>(READ_AHEAD);
            let connection = Arc::new(AtomicU64::new(0));
            let client = match self.config.protocol {
                MqttProtocol::V3 => self.start_v3(tx, connection.clone())?,
                MqttProtocol::V5 => self.start_v5(tx, connection.clone())?,
            };
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

impl MqttSource {
    /// Starts an MQTT 3.1.1 session's event loop, handing its messages to `tx`.
    fn start_v3(
        &self,
        tx: mpsc::Sender<Delivered>,
        current: Arc<AtomicU64>,
    ) -> Result<Client, BuildError> {
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
        let (name, url) = (self.name.clone(), self.config.url.clone());
        let topics = self.config.topics.clone();
        let subscriber = client.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let number = current.load(Ordering::SeqCst);
                        if tx.send((Message::V3(p), number)).await.is_err() {
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
                        } else {
                            info!(source = %name, ?topics, "subscribed to the mqtt topics");
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
        Ok(Client::V3(client))
    }

    /// [`MqttSource::start_v3`] for MQTT 5: clean start off and a session expiry
    /// interval keep the session while switchyard is away.
    fn start_v5(
        &self,
        tx: mpsc::Sender<Delivered>,
        current: Arc<AtomicU64>,
    ) -> Result<Client, BuildError> {
        use rumqttc::v5::mqttbytes::v5::{Filter, SubscribeReasonCode};
        use rumqttc::v5::{Event, Incoming};
        let mut options = crate::options_v5(
            &self.config.url,
            &self.client_id,
            self.config.ca_file.as_deref(),
        )
        .map_err(BuildError::new)?;
        let expiry = u32::try_from(self.config.session_expiry.as_secs()).unwrap_or(u32::MAX - 1);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(expiry))
            .set_manual_acks(true);
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, usize::from(u16::MAX));
        let (name, url) = (self.name.clone(), self.config.url.clone());
        let topics = self.config.topics.clone();
        let subscriber = client.clone();
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Incoming::Publish(p))) => {
                        let number = current.load(Ordering::SeqCst);
                        if tx.send((Message::V5(p), number)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                        info!(source = %name, protocol = "5", session_present = ack.session_present, "connected to the mqtt broker");
                        current.fetch_add(1, Ordering::SeqCst);
                        if !ack.session_present {
                            let filters = topics.iter().map(|t| {
                                Filter::new(t.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                            });
                            if let Err(e) = subscriber.try_subscribe_many(filters) {
                                warn!(source = %name, "cannot subscribe: {e}");
                            }
                        }
                    }
                    Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                        let refused: Vec<String> = ack
                            .return_codes
                            .iter()
                            .filter(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                            .map(|c| format!("{c:?}"))
                            .collect();
                        if refused.is_empty() {
                            info!(source = %name, ?topics, "subscribed to the mqtt topics");
                        } else {
                            warn!(source = %name, ?topics, ?refused, "the mqtt broker refused a subscription: check the topic filters and the user's permissions");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        current.fetch_add(1, Ordering::SeqCst);
                        warn!(source = %name, "{}; reconnecting", crate::connection_error_v5(&url, &e));
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
        Ok(Client::V5(client))
    }
}

/// A persistent MQTT session as a pipeline reader's [`Feed`].
pub struct MqttFeed {
    client: Client,
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
    fn event(&self, message: &Message) -> SyEvent {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        match message {
            Message::V3(p) => {
                let topic = p.topic.clone();
                SyEvent {
                    id: uuid::Uuid::now_v7().to_string().into(),
                    source: self.name.as_str().into(),
                    kind: "message".into(),
                    // MQTT keeps order per topic.
                    key: Some(topic.clone().into_bytes()),
                    payload: p.payload.to_vec(),
                    content_type: "application/octet-stream".into(),
                    headers: vec![(properties::TOPIC.to_owned(), topic)],
                    timestamp_ms: now_ms,
                    payload_is_compact_json: false,
                }
            }
            Message::V5(p) => event_v5(&self.name, p, now_ms),
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
            if *connection == current && !self.client.try_ack(publish) {
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

/// The event of an MQTT 5 message: what a switchyard `mqtt` sink wrote is mapped back
/// (id, kind, key, content type); other messages get a new id, kind `message`, their
/// topic as key (MQTT keeps order per topic) and their user properties as headers.
fn event_v5(source: &str, p: &rumqttc::v5::mqttbytes::v5::Publish, now_ms: u64) -> SyEvent {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let (mut id, mut kind, mut key, mut content_type) = (None, None, None, None);
    let mut headers = Vec::new();
    if let Some(props) = &p.properties {
        content_type = props.content_type.clone();
        for (name, value) in &props.user_properties {
            match name.as_str() {
                properties::ID => id = Some(value.clone()),
                properties::KIND => kind = Some(value.clone()),
                properties::KEY => key = Some(value.clone().into_bytes()),
                properties::KEY_BASE64 => {
                    key = base64::engine::general_purpose::STANDARD.decode(value).ok();
                }
                // The event gets this source's own name and the topic it came on.
                properties::SOURCE | properties::TOPIC => {}
                _ if headers.len() < MAX_HEADERS => headers.push((name.clone(), value.clone())),
                _ => {}
            }
        }
    }
    headers.push((properties::TOPIC.to_owned(), topic.clone()));
    SyEvent {
        id: id
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
            .into(),
        source: source.into(),
        kind: kind
            .filter(|k| !k.is_empty())
            .map_or_else(|| "message".into(), Into::into),
        key: Some(key.unwrap_or_else(|| topic.into_bytes())),
        payload: p.payload.to_vec(),
        content_type: content_type
            .filter(|c| !c.is_empty())
            .map_or_else(|| "application/octet-stream".into(), Into::into),
        headers,
        timestamp_ms: now_ms,
        payload_is_compact_json: false,
    }
}

#[cfg(test)]
mod tests {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::{Publish, PublishProperties};

    use super::*;

    fn publish(properties: Option<PublishProperties>) -> Publish {
        Publish::new("sensors/k1", QoS::AtLeastOnce, "{}", properties)
    }

    #[test]
    fn a_switchyard_message_gives_back_its_event() {
        let user = [
            (properties::ID, "0/1/7"),
            (properties::SOURCE, "api"),
            (properties::KIND, "insert"),
            (properties::KEY_BASE64, "/wA="),
            ("x-trace", "abc"),
            (properties::TOPIC, "forged"),
        ];
        let p = publish(Some(PublishProperties {
            content_type: Some("application/json".into()),
            user_properties: user
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            ..PublishProperties::default()
        }));
        let e = event_v5("sensors", &p, 5);
        assert_eq!(e.id, "0/1/7");
        assert_eq!(e.source, "sensors");
        assert_eq!(e.kind, "insert");
        assert_eq!(e.key.as_deref(), Some(&[0xff, 0x00][..]));
        assert_eq!(e.content_type, "application/json");
        assert_eq!(
            e.headers,
            [
                ("x-trace".to_owned(), "abc".to_owned()),
                (properties::TOPIC.to_owned(), "sensors/k1".to_owned())
            ]
        );
        assert_eq!(e.payload, b"{}");
    }

    #[test]
    fn another_publishers_message_gets_a_new_id_and_its_topic_as_key() {
        let e = event_v5("sensors", &publish(None), 5);
        let again = event_v5("sensors", &publish(None), 5);
        assert_ne!(e.id, again.id);
        assert_eq!(e.kind, "message");
        assert_eq!(e.key.as_deref(), Some(&b"sensors/k1"[..]));
        assert_eq!(e.content_type, "application/octet-stream");
        assert_eq!(
            e.headers,
            [(properties::TOPIC.to_owned(), "sensors/k1".to_owned())]
        );
    }
}
