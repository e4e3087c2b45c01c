//! `type = "mqtt"` sink.
//!
//! Each event is one QoS 1 publish of its payload (or its body in the sink's format) to
//! its topic; with MQTT 5 also its id, source, kind, key and headers as user properties
//! and its content type as the content-type property (CloudEvents in binary mode: the
//! payload as it is, the attributes as user properties named as the CloudEvents MQTT
//! binding names them). The sink has one connection (clean session: it republishes what was not
//! acknowledged itself, through the runtime's retries). rumqttc reports each publish it
//! writes (`Outgoing::Publish(pkid)`) in the order the publishes were queued, and each
//! PUBACK (`Incoming::PubAck(pkid)`): a ticket queued with each publish, in the same
//! order under one lock, is matched to its packet id when it is written and answered by
//! its PUBACK. A connection error answers every ticket still waiting with a retry and
//! replaces the connection, so no PUBACK can be mistaken for another publish's. An MQTT 5
//! PUBACK with a failure reason code answers its ticket with a retry or a permanent
//! failure, as the code says.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use rumqttc::v5::mqttbytes::v5::{PubAck, PubAckReason, PublishProperties};
use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use switchyard_config::{MqttProtocol, MqttSinkConfig};
use switchyard_connector::format::{self, Binding, Body, Formatter};
use switchyard_connector::template::Template;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event as SyEvent;
use switchyard_event::formats::cloudevents;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::properties;

/// Most events handed to one delivery attempt (one lane).
const MAX_BATCH: usize = 500;

/// Builds the `mqtt` sink `name`: the runtime's registration calls this. Nothing
/// connects before the first delivery.
pub fn build(
    name: &str,
    cfg: &MqttSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let template =
        Template::parse(&cfg.topic).map_err(|e| BuildError::new(format!("topic {e}")))?;
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("switchyard-{name}"));
    // Checked now, so a bad url or ca_file stops the start with its reason.
    crate::options(&cfg.url, &client_id, cfg.ca_file.as_deref()).map_err(BuildError::new)?;
    Ok(Arc::new(MqttSink {
        name: name.to_owned(),
        url: cfg.url.clone(),
        client_id,
        ca_file: cfg.ca_file.clone(),
        inflight: cfg.inflight.max(1),
        template,
        timeout: cfg.timeout,
        concurrency: cfg.concurrency.max(1),
        protocol: cfg.protocol,
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
        broker_max_packet: Arc::new(AtomicU32::new(0)),
    }))
}

/// What a publish's ticket is answered with: [`Outcome::Delivered`] on its PUBACK.
type Answer = Outcome;

/// The tickets of one connection.
#[derive(Default)]
struct Tickets {
    /// Queued to the client, not yet written, in queue order.
    queued: VecDeque<oneshot::Sender<Answer>>,
    /// Written, waiting for the PUBACK of their packet id.
    written: HashMap<u16, oneshot::Sender<Answer>>,
    /// Why the connection broke; no ticket is taken after it.
    broken: Option<String>,
}

impl Tickets {
    fn fail_all(&mut self, error: &str) {
        self.broken = Some(error.to_owned());
        for ticket in self
            .queued
            .drain(..)
            .chain(self.written.drain().map(|(_, t)| t))
        {
            let _ = ticket.send(retry(error.to_owned()));
        }
    }
}

/// Gives a connection up when a publish is dropped between queuing its ticket and the
/// client taking it (see [`MqttSink::publish`]).
struct Abandoned<'a> {
    connection: &'a Connection,
    armed: bool,
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.connection
            .tickets
            .lock()
            .expect("tickets lock")
            .fail_all("a publish was abandoned before the mqtt client took it");
        match &self.connection.client {
            Client::V3(client) => {
                let _ = client.try_disconnect();
            }
            Client::V5(client) => {
                let _ = client.try_disconnect();
            }
        }
    }
}

/// A client of either MQTT version.
enum Client {
    V3(AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// One connection: its client and the tickets its event loop answers.
struct Connection {
    client: Client,
    tickets: Arc<Mutex<Tickets>>,
    /// Held from taking a ticket to queueing its publish, so tickets and publishes are
    /// queued in the same order.
    order: tokio::sync::Mutex<()>,
}

/// Publishes events to an MQTT broker; see the module docs.
pub struct MqttSink {
    name: String,
    url: String,
    client_id: String,
    ca_file: Option<String>,
    inflight: u16,
    template: Template,
    timeout: Duration,
    concurrency: usize,
    protocol: MqttProtocol,
    retry: RetryPolicy,
    formatter: Formatter,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
    /// The largest packet the broker takes, as its last MQTT 5 CONNACK said (0: not
    /// said).
    broker_max_packet: Arc<AtomicU32>,
}

impl MqttSink {
    /// The connection in use, or a new one when there is none or it broke.
    async fn connection(&self) -> Result<Arc<Connection>, String> {
        let mut current = self.connection.lock().await;
        if let Some(c) = current.as_ref()
            && c.tickets.lock().expect("tickets lock").broken.is_none()
        {
            return Ok(c.clone());
        }
        let tickets = Arc::new(Mutex::new(Tickets::default()));
        let (name, url) = (self.name.clone(), self.url.clone());
        let client = match self.protocol {
            MqttProtocol::V3 => {
                let mut options =
                    crate::options(&self.url, &self.client_id, self.ca_file.as_deref())?;
                options.set_clean_session(true).set_inflight(self.inflight);
                let (client, eventloop) = AsyncClient::new(options, usize::from(self.inflight));
                on_own_thread(
                    &self.name,
                    tickets.clone(),
                    drive_v3(eventloop, tickets.clone(), name, url),
                )?;
                Client::V3(client)
            }
            MqttProtocol::V5 => {
                let mut options =
                    crate::options_v5(&self.url, &self.client_id, self.ca_file.as_deref())?;
                options
                    .set_clean_start(true)
                    .set_outgoing_inflight_upper_limit(self.inflight);
                let (client, eventloop) =
                    rumqttc::v5::AsyncClient::new(options, usize::from(self.inflight));
                let max = self.broker_max_packet.clone();
                on_own_thread(
                    &self.name,
                    tickets.clone(),
                    drive_v5(eventloop, tickets.clone(), max, name, url),
                )?;
                Client::V5(client)
            }
        };
        let connection = Arc::new(Connection {
            client,
            tickets,
            order: tokio::sync::Mutex::new(()),
        });
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// Queues the publish of `payload` to `topic` (with `properties` in MQTT 5) with a
    /// ticket for its PUBACK.
    async fn publish(
        &self,
        connection: &Connection,
        topic: String,
        payload: Vec<u8>,
        properties: Option<PublishProperties>,
    ) -> Result<oneshot::Receiver<Answer>, String> {
        let _order = connection.order.lock().await;
        let (tx, rx) = oneshot::channel();
        {
            let mut t = connection.tickets.lock().expect("tickets lock");
            if let Some(error) = &t.broken {
                return Err(error.clone());
            }
            t.queued.push_back(tx);
        }
        // Tickets are matched to publishes by their order: a publish dropped (its
        // attempt timed out) after its ticket was queued but before the client took it
        // would shift every later answer by one. Then the connection is given up.
        let mut guard = Abandoned {
            connection,
            armed: true,
        };
        let queued = match (&connection.client, properties) {
            (Client::V3(client), _) => client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .map_err(|e| e.to_string()),
            (Client::V5(client), properties) => {
                let qos = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;
                match properties {
                    Some(p) => {
                        client
                            .publish_with_properties(topic, qos, false, payload, p)
                            .await
                    }
                    None => client.publish(topic, qos, false, payload).await,
                }
                .map_err(|e| e.to_string())
            }
        };
        guard.armed = false;
        if let Err(e) = queued {
            let mut t = connection.tickets.lock().expect("tickets lock");
            if t.broken.is_none() {
                // Still the last one queued: the order lock is held.
                t.queued.pop_back();
            }
            return Err(format!("the mqtt connection is closed: {e}"));
        }
        Ok(rx)
    }

    /// The topic of `event`, or why it has none.
    fn topic(&self, event: &SyEvent) -> Result<String, String> {
        self.template
            .render(event, |value| {
                if value.is_empty() {
                    Err("is empty".into())
                } else if value.contains(['/', '+', '#', '\0']) {
                    Err("has `/`, `+`, `#` or NUL, which would change the topic's levels".into())
                } else {
                    Ok(())
                }
            })
            .map_err(|e| format!("topic {e}"))
    }

    async fn deliver_batch(&self, batch: &[Arc<SyEvent>]) -> Vec<Outcome> {
        let connection = match self.connection().await {
            Ok(c) => c,
            Err(error) => return batch.iter().map(|_| retry(error.clone())).collect(),
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        let now_us = if self.formatter.is_native() {
            0
        } else {
            format::now_us()
        };
        let mut waiting = Vec::with_capacity(batch.len());
        let mut failed: Option<String> = None;
        for event in batch.iter() {
            if let Some(error) = &failed {
                waiting.push(Err(retry(format!(
                    "not attempted: an earlier event of the batch failed ({error})"
                ))));
                continue;
            }
            let topic = match self.topic(event) {
                Ok(topic) => topic,
                Err(error) => {
                    waiting.push(Err(Outcome::Permanent { error }));
                    continue;
                }
            };
            // CloudEvents in binary mode (MQTT 5 only): the payload as it is, the
            // attributes as user properties.
            let attributes = match self.protocol {
                MqttProtocol::V5 => self.formatter.binary_headers(event, Binding::Mqtt),
                MqttProtocol::V3 => None,
            };
            let (payload, content_type) = if self.formatter.is_native() || attributes.is_some() {
                (event.payload.clone(), event.content_type.as_str())
            } else {
                let mut body = Vec::new();
                match self.formatter.write(event, now_us, &mut body) {
                    Body::Native => (event.payload.clone(), event.content_type.as_str()),
                    Body::Skip => {
                        waiting.push(Err(Outcome::Skipped));
                        continue;
                    }
                    Body::Written { .. } => (body, self.formatter.written_content_type()),
                }
            };
            let properties = match self.protocol {
                MqttProtocol::V3 => None,
                MqttProtocol::V5 => match user_properties(event, content_type, attributes) {
                    Ok(p) => Some(p),
                    Err(error) => {
                        waiting.push(Err(Outcome::Permanent { error }));
                        continue;
                    }
                },
            };
            let size = packet_size(&topic, payload.len(), properties.as_ref());
            // The broker's own limit (MQTT 5 says it in its CONNACK): rumqttc refuses a
            // larger publish by closing the connection, which would fail every publish
            // waiting on it, attempt after attempt.
            let broker_max = match self.broker_max_packet.load(Ordering::Relaxed) {
                0 => crate::MAX_PACKET,
                max => usize::try_from(max)
                    .unwrap_or(usize::MAX)
                    .min(crate::MAX_PACKET),
            };
            if size > broker_max {
                waiting.push(Err(Outcome::Permanent {
                    error: format!(
                        "event {} makes an mqtt packet of {size} bytes, more than the largest \
                         the sink or the broker takes ({broker_max} bytes)",
                        event.id
                    ),
                }));
                continue;
            }
            match tokio::time::timeout_at(
                deadline,
                self.publish(&connection, topic, payload, properties),
            )
            .await
            {
                Ok(Ok(rx)) => waiting.push(Ok(rx)),
                Ok(Err(error)) => {
                    failed = Some(error.clone());
                    waiting.push(Err(retry(error)));
                }
                Err(_) => {
                    let error = format!(
                        "the mqtt client did not take the publish within {:?}",
                        self.timeout
                    );
                    failed = Some(error.clone());
                    waiting.push(Err(retry(error)));
                }
            }
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut timed_out = false;
        for w in waiting {
            outcomes.push(match w {
                Err(outcome) => outcome,
                Ok(rx) => match tokio::time::timeout_at(deadline, rx).await {
                    Ok(Ok(outcome)) => outcome,
                    Ok(Err(_)) => retry("the mqtt connection closed before the PUBACK".into()),
                    Err(_) => {
                        timed_out = true;
                        retry(format!("no PUBACK within {:?}; retried", self.timeout))
                    }
                },
            });
        }
        if timed_out {
            // A PUBACK that comes later is for a publish the runtime retries: start over
            // on a new connection rather than track both.
            connection
                .tickets
                .lock()
                .expect("tickets lock")
                .fail_all("replaced after a PUBACK timeout");
            match &connection.client {
                Client::V3(client) => {
                    let _ = client.try_disconnect();
                }
                Client::V5(client) => {
                    let _ = client.try_disconnect();
                }
            }
        }
        outcomes
    }
}

/// Runs a connection's event loop on a thread of its own, with a runtime of its own: the
/// loop writes each PUBLISH and reads each PUBACK, and with a window of `inflight`
/// publishes its turnaround is the sink's rate — it must not wait behind the lanes and
/// readers on the process's workers. The thread ends with the loop (when the
/// connection breaks).
fn on_own_thread(
    sink: &str,
    tickets: Arc<Mutex<Tickets>>,
    event_loop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let name = sink.to_owned();
    std::thread::Builder::new()
        .name(format!(
            "mqtt-{}",
            sink.chars().take(10).collect::<String>()
        ))
        .spawn(move || {
            // Made and dropped on this thread: a runtime may not be dropped inside
            // another one's tasks.
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime.block_on(event_loop),
                Err(e) => broken(
                    &tickets,
                    &name,
                    format!("cannot start the mqtt connection's runtime: {e}"),
                ),
            }
        })
        .map(drop)
        .map_err(|e| format!("cannot start the mqtt connection's thread: {e}"))
}

/// Runs an MQTT 3.1.1 connection's event loop: matches written publishes to their
/// tickets and answers them on their PUBACK, until the connection breaks.
async fn drive_v3(
    mut eventloop: rumqttc::EventLoop,
    tickets: Arc<Mutex<Tickets>>,
    name: String,
    url: String,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => written(&tickets, pkid),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                answer(&tickets, ack.pkid, Outcome::Delivered)
            }
            Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                info!(sink = %name, "connected to the mqtt broker");
            }
            Ok(_) => {}
            Err(e) => {
                broken(&tickets, &name, crate::connection_error(&url, &e));
                return;
            }
        }
    }
}

/// [`drive_v3`] for MQTT 5, where a PUBACK has a reason code.
async fn drive_v5(
    mut eventloop: rumqttc::v5::EventLoop,
    tickets: Arc<Mutex<Tickets>>,
    broker_max_packet: Arc<AtomicU32>,
    name: String,
    url: String,
) {
    use rumqttc::v5::{Event, Incoming};
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => written(&tickets, pkid),
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                answer(&tickets, ack.pkid, puback_outcome(&ack))
            }
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                let max = ack.properties.and_then(|p| p.max_packet_size);
                broker_max_packet.store(max.unwrap_or(0), Ordering::Relaxed);
                info!(sink = %name, protocol = "5", "connected to the mqtt broker");
            }
            Ok(_) => {}
            Err(e) => {
                broken(&tickets, &name, crate::connection_error_v5(&url, &e));
                return;
            }
        }
    }
}

/// The size of the QoS 1 PUBLISH packet of a `payload_len` bytes payload to `topic` with
/// `properties` (MQTT 5), at most a few bytes over.
fn packet_size(topic: &str, payload_len: usize, properties: Option<&PublishProperties>) -> usize {
    let properties_len = properties.map_or(0, |p| {
        // 4: the properties' length; 1 + 2: each property's identifier and a string's
        // length.
        4 + p.content_type.as_ref().map_or(0, |c| 3 + c.len())
            + p.user_properties
                .iter()
                .map(|(n, v)| 5 + n.len() + v.len())
                .sum::<usize>()
    });
    // 5: the fixed header; 2 + 2: the topic's length and the packet id.
    5 + 2 + topic.len() + 2 + properties_len + payload_len
}

/// The oldest queued ticket is the publish written under `pkid`.
fn written(tickets: &Mutex<Tickets>, pkid: u16) {
    let mut t = tickets.lock().expect("tickets lock");
    if let Some(ticket) = t.queued.pop_front() {
        t.written.insert(pkid, ticket);
    }
}

/// Answers the ticket of the publish written under `pkid`.
fn answer(tickets: &Mutex<Tickets>, pkid: u16, outcome: Outcome) {
    let ticket = tickets.lock().expect("tickets lock").written.remove(&pkid);
    if let Some(ticket) = ticket {
        let _ = ticket.send(outcome);
    }
}

/// The connection is done: every waiting ticket is answered with a retry, and the next
/// delivery makes a new connection.
fn broken(tickets: &Mutex<Tickets>, name: &str, error: String) {
    warn!(sink = %name, "{error}; unacknowledged events are retried");
    tickets.lock().expect("tickets lock").fail_all(&error);
}

/// What an MQTT 5 PUBACK says of its publish. "No matching subscribers" is a success:
/// the broker took the message. A refusal that a retry cannot change (not authorized, a
/// topic name or payload the broker does not take) is permanent; the others (quota
/// exceeded, an unspecified or implementation-specific error, a packet id in use) may
/// clear and are retried.
fn puback_outcome(ack: &PubAck) -> Outcome {
    let reason = match ack.reason {
        PubAckReason::Success | PubAckReason::NoMatchingSubscribers => return Outcome::Delivered,
        other => other,
    };
    let said = ack
        .properties
        .as_ref()
        .and_then(|p| p.reason_string.as_deref())
        .map(|s| format!(" ({})", s.chars().take(200).collect::<String>()))
        .unwrap_or_default();
    let error = format!("the mqtt broker refused the publish: PUBACK reason {reason:?}{said}");
    match reason {
        PubAckReason::NotAuthorized => Outcome::Permanent {
            error: format!("{error}; check the user's permissions for the topic"),
        },
        PubAckReason::TopicNameInvalid | PubAckReason::PayloadFormatInvalid => {
            Outcome::Permanent { error }
        }
        _ => retry(error),
    }
}

fn retry(error: String) -> Outcome {
    Outcome::Retry {
        error,
        retry_after: None,
    }
}

/// The MQTT 5 properties of `event`'s message: its content type, then as user
/// properties its id, source, kind and key, the CloudEvents `attributes` (binary mode)
/// and its own headers. Or why a property cannot carry one of them.
fn user_properties(
    event: &SyEvent,
    content_type: &str,
    attributes: Option<Vec<(String, String)>>,
) -> Result<PublishProperties, String> {
    let refused = |name: &str| {
        format!(
            "event {} has header {:?} that an mqtt 5 user property cannot carry (no control \
             characters, at most 65535 bytes); fix or drop it in a transform plugin",
            event.id,
            name.chars().take(64).collect::<String>()
        )
    };
    let mut user = Vec::with_capacity(5 + event.headers.len());
    for (name, value) in [
        (properties::ID, event.id.as_str()),
        (properties::SOURCE, event.source.as_str()),
        (properties::KIND, event.kind.as_str()),
    ] {
        if !properties::fits(value) {
            return Err(refused(name));
        }
        user.push((name.to_owned(), value.to_owned()));
    }
    if let Some(key) = &event.key {
        match std::str::from_utf8(key) {
            Ok(text) if properties::fits(text) => {
                user.push((properties::KEY.to_owned(), text.to_owned()));
            }
            _ => user.push((
                properties::KEY_BASE64.to_owned(),
                base64::engine::general_purpose::STANDARD.encode(key),
            )),
        }
    }
    let binary = attributes.is_some();
    for (name, value) in attributes.into_iter().flatten() {
        if !properties::fits(&name) || !properties::fits(&value) {
            return Err(refused(&name));
        }
        user.push((name, value));
    }
    for (name, value) in &event.headers {
        // In binary mode the event's own `ce-*` headers are in the attributes above.
        let attribute = binary && name.starts_with(cloudevents::HEADER_PREFIX);
        if attribute || properties::ALL.contains(&name.as_str()) {
            continue;
        }
        if !properties::fits(name) || !properties::fits(value) {
            return Err(refused(name));
        }
        user.push((name.clone(), value.clone()));
    }
    if !properties::fits(content_type) {
        return Err(refused("content-type"));
    }
    Ok(PublishProperties {
        content_type: Some(content_type.to_owned()),
        user_properties: user,
        ..PublishProperties::default()
    })
}

impl Sink for MqttSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<SyEvent>]) -> BoxFuture<'a, Vec<Outcome>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::v5::mqttbytes::v5::PubAckProperties;
    use switchyard_config::SinkFormat;

    fn event(key: &[u8], headers: &[(&str, &str)]) -> SyEvent {
        SyEvent {
            id: "0/1/7".into(),
            source: "api".into(),
            kind: "message".into(),
            key: Some(key.to_vec()),
            payload: br#"{"n":1}"#.to_vec(),
            content_type: "application/json".into(),
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            timestamp_ms: 1_700_000_000_000,
            payload_is_compact_json: true,
        }
    }

    fn property<'p>(p: &'p PublishProperties, name: &str) -> Option<&'p str> {
        p.user_properties
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn fields_and_headers_become_user_properties() {
        let e = event(b"k1", &[("x-trace", "abc"), (properties::ID, "forged")]);
        let p = user_properties(&e, "application/json", None).unwrap();
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(property(&p, properties::ID), Some("0/1/7"));
        assert_eq!(property(&p, properties::SOURCE), Some("api"));
        assert_eq!(property(&p, properties::KIND), Some("message"));
        assert_eq!(property(&p, properties::KEY), Some("k1"));
        assert_eq!(property(&p, "x-trace"), Some("abc"));
        // An event's header never overrides what the sink writes from its fields.
        let ids = p
            .user_properties
            .iter()
            .filter(|(n, _)| n == properties::ID)
            .count();
        assert_eq!(ids, 1);

        let binary_key = event(&[0xff, 0x00], &[]);
        let p = user_properties(&binary_key, "application/json", None).unwrap();
        assert_eq!(property(&p, properties::KEY), None);
        assert_eq!(property(&p, properties::KEY_BASE64), Some("/wA="));
    }

    #[test]
    fn a_header_a_property_cannot_carry_is_permanent() {
        for bad in ["line\nbreak", "nul\0", "\u{FFFF}"] {
            let e = event(b"k", &[("x-bad", bad)]);
            let error = user_properties(&e, "text/plain", None).unwrap_err();
            assert!(error.contains("x-bad"), "{error}");
        }
    }

    #[test]
    fn cloudevents_binary_mode_uses_the_mqtt_bindings_names() {
        let formatter = Formatter::new(SinkFormat::CloudEvents);
        let e = event(b"k1", &[("ce-traceparent", "00-1"), ("x-other", "v")]);
        let attributes = formatter.binary_headers(&e, Binding::Mqtt);
        let p = user_properties(&e, &e.content_type, attributes).unwrap();
        assert_eq!(property(&p, "specversion"), Some("1.0"));
        assert_eq!(property(&p, "id"), Some("0/1/7"));
        assert_eq!(property(&p, "source"), Some("/switchyard/api"));
        assert_eq!(property(&p, "type"), Some("switchyard.message"));
        assert_eq!(property(&p, "x-other"), Some("v"));
        assert_eq!(
            property(&p, "ce-traceparent"),
            None,
            "an attribute, not a header"
        );
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
    }

    #[test]
    fn puback_reason_codes_decide_the_outcome() {
        let ack = |reason, said: Option<&str>| PubAck {
            pkid: 1,
            reason,
            properties: said.map(|s| PubAckProperties {
                reason_string: Some(s.to_owned()),
                user_properties: Vec::new(),
            }),
        };
        assert_eq!(
            puback_outcome(&ack(PubAckReason::Success, None)),
            Outcome::Delivered
        );
        assert_eq!(
            puback_outcome(&ack(PubAckReason::NoMatchingSubscribers, None)),
            Outcome::Delivered
        );
        for permanent in [
            PubAckReason::NotAuthorized,
            PubAckReason::TopicNameInvalid,
            PubAckReason::PayloadFormatInvalid,
        ] {
            let outcome = puback_outcome(&ack(permanent, Some("acl")));
            let Outcome::Permanent { error } = outcome else {
                panic!("{permanent:?}: {outcome:?}")
            };
            assert!(error.contains("(acl)"), "{error}");
        }
        for transient in [
            PubAckReason::QuotaExceeded,
            PubAckReason::UnspecifiedError,
            PubAckReason::ImplementationSpecificError,
            PubAckReason::PacketIdentifierInUse,
        ] {
            assert!(
                matches!(puback_outcome(&ack(transient, None)), Outcome::Retry { .. }),
                "{transient:?}"
            );
        }
    }
}
