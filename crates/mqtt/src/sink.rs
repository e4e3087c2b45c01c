//! `type = "mqtt"` sink.
//!
//! Each event is one QoS 1 publish of its payload (or its body in the sink's format) to
//! its topic. The sink has one connection (clean session: it republishes what was not
//! acknowledged itself, through the runtime's retries). rumqttc reports each publish it
//! writes (`Outgoing::Publish(pkid)`) in the order the publishes were queued, and each
//! PUBACK (`Incoming::PubAck(pkid)`): a ticket queued with each publish, in the same
//! order under one lock, is matched to its packet id when it is written and answered by
//! its PUBACK. A connection error answers every ticket still waiting with a retry and
//! replaces the connection, so no PUBACK can be mistaken for another publish's.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, Outgoing, QoS};
use switchyard_config::MqttSinkConfig;
use switchyard_connector::format::{self, Body, Formatter};
use switchyard_connector::template::Template;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event as SyEvent;
use tokio::sync::oneshot;
use tracing::{info, warn};

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
        retry: cfg.retry.as_ref().map_or(
            RetryPolicy {
                max_attempts: u32::MAX,
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            RetryPolicy::from,
        ),
        formatter: Formatter::for_config(cfg.format, ctx.config),
        connection: tokio::sync::Mutex::new(None),
    }))
}

/// What a publish's ticket is answered with: `Ok` on its PUBACK.
type Answer = Result<(), String>;

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
            let _ = ticket.send(Err(error.to_owned()));
        }
    }
}

/// One connection: its client and the tickets its event loop answers.
struct Connection {
    client: AsyncClient,
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
    retry: RetryPolicy,
    formatter: Formatter,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
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
        let mut options = crate::options(&self.url, &self.client_id, self.ca_file.as_deref())?;
        options.set_clean_session(true).set_inflight(self.inflight);
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(self.inflight));
        let tickets = Arc::new(Mutex::new(Tickets::default()));
        let connection = Arc::new(Connection {
            client,
            tickets: tickets.clone(),
            order: tokio::sync::Mutex::new(()),
        });
        let (name, url) = (self.name.clone(), self.url.clone());
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        let mut t = tickets.lock().expect("tickets lock");
                        if let Some(ticket) = t.queued.pop_front() {
                            t.written.insert(pkid, ticket);
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                        let ticket = tickets
                            .lock()
                            .expect("tickets lock")
                            .written
                            .remove(&ack.pkid);
                        if let Some(ticket) = ticket {
                            let _ = ticket.send(Ok(()));
                        }
                    }
                    Ok(Event::Incoming(Incoming::ConnAck(_))) => {
                        info!(sink = %name, "connected to the mqtt broker");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let error = crate::connection_error(&url, &e);
                        warn!(sink = %name, "{error}; unacknowledged events are retried");
                        tickets.lock().expect("tickets lock").fail_all(&error);
                        // This connection is done; the next delivery makes a new one.
                        break;
                    }
                }
            }
        });
        *current = Some(connection.clone());
        Ok(connection)
    }

    /// Queues the publish of `payload` to `topic` with a ticket for its PUBACK.
    async fn publish(
        &self,
        connection: &Connection,
        topic: String,
        payload: Vec<u8>,
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
        if let Err(e) = connection
            .client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
        {
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
        let retry = |error: String| Outcome::Retry {
            error,
            retry_after: None,
        };
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
            let payload = if self.formatter.is_native() {
                event.payload.clone()
            } else {
                let mut body = Vec::new();
                match self.formatter.write(event, now_us, &mut body) {
                    Body::Native => event.payload.clone(),
                    Body::Skip => {
                        waiting.push(Err(Outcome::Skipped));
                        continue;
                    }
                    Body::Written { .. } => body,
                }
            };
            if payload.len() > crate::MAX_PACKET - topic.len() - 16 {
                waiting.push(Err(Outcome::Permanent {
                    error: format!(
                        "event {} is {} bytes, more than the sink's largest MQTT packet ({} bytes)",
                        event.id,
                        payload.len(),
                        crate::MAX_PACKET
                    ),
                }));
                continue;
            }
            match tokio::time::timeout_at(deadline, self.publish(&connection, topic, payload)).await
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
                    Ok(Ok(Ok(()))) => Outcome::Delivered,
                    Ok(Ok(Err(error))) => retry(error),
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
            let _ = connection.client.try_disconnect();
        }
        outcomes
    }
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
