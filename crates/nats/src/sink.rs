//! `type = "nats"` sink.
//!
//! Each event is one JetStream publish: its payload (or what the sink's `format` writes),
//! `Nats-Msg-Id` = the event id, the `switchyard-*` headers and the event's own. A lane's
//! batch is published in order on one connection, its PubAcks awaited together; an event
//! is delivered once its PubAck says the stream stored it (or already had it: a duplicate
//! inside the stream's duplicate window, after a retry or a restart).

use std::collections::{HashMap, VecDeque};
use std::future::IntoFuture;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::header::{HeaderName, HeaderValue};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, ServerAddr, Subject};
use base64::Engine as _;
use bytes::Bytes;
use switchyard_config::NatsSinkConfig;
use switchyard_connector::format::{self, Binding, Body, Formatter};
use switchyard_connector::template::NameTemplate;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, RetryPolicy, Sink};
use switchyard_event::Event;
use switchyard_event::formats::cloudevents;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::headers;

/// Most events handed to one delivery attempt (one lane).
const MAX_BATCH: usize = 500;
/// Failed attempts whose retry is remembered (more than the sink's lanes ever are).
const MAX_REFUSED: usize = 1024;
/// How often the same "no stream holds this subject" warning is logged.
const WARN_EVERY: Duration = Duration::from_secs(30);

/// Builds the `nats` sink `name`: the runtime's registration calls this. The URL is
/// checked now; the server is connected to in the background.
pub fn build(
    name: &str,
    cfg: &NatsSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let servers = crate::servers("sink", name, &cfg.url)?;
    Ok(Arc::new(NatsSink::new(
        name,
        cfg,
        servers,
        Formatter::for_config(cfg.format, ctx.config).with_cloudevents_mode(cfg.cloudevents_mode),
    )))
}

/// Publishes events to JetStream; see the module docs for the contract.
pub struct NatsSink {
    name: String,
    cfg: NatsSinkConfig,
    servers: Vec<ServerAddr>,
    template: NameTemplate,
    js: OnceCell<jetstream::Context>,
    /// Whether `create` made (or found) the stream.
    stream_ready: tokio::sync::Mutex<bool>,
    warned: Mutex<HashMap<String, Instant>>,
    /// The first event to retry of each attempt that had an event refused or
    /// unconfirmed (at most [`MAX_REFUSED`], the oldest forgotten). The attempt that
    /// starts with one of them is that lane's retry: it first publishes that event alone
    /// and waits for its PubAck before it sends the rest, so that a server still
    /// recovering (a restart, a full stream) cannot refuse it again and store later
    /// events of the lane ahead of it. Kept per event, not per sink: lanes fail and
    /// retry independently, and one lane's success must not cancel another's probe.
    refused: Mutex<VecDeque<String>>,
    retry: RetryPolicy,
    formatter: Formatter,
}

impl NatsSink {
    fn new(
        name: &str,
        cfg: &NatsSinkConfig,
        servers: Vec<ServerAddr>,
        formatter: Formatter,
    ) -> Self {
        let retry = cfg.retry.as_ref().map_or(
            RetryPolicy {
                max_attempts: u32::MAX,
                initial: Duration::from_millis(200),
                max: Duration::from_secs(10),
            },
            RetryPolicy::from,
        );
        Self {
            name: name.to_owned(),
            cfg: cfg.clone(),
            servers,
            template: NameTemplate::parse("subject", &cfg.subject),
            js: OnceCell::new(),
            stream_ready: tokio::sync::Mutex::new(false),
            warned: Mutex::new(HashMap::new()),
            refused: Mutex::new(VecDeque::new()),
            retry,
            formatter,
        }
    }

    /// The JetStream context, its client connecting in the background.
    async fn context(&self) -> Result<&jetstream::Context, String> {
        self.js
            .get_or_try_init(|| async {
                let client = crate::connect(
                    "sink",
                    &self.name,
                    self.servers.clone(),
                    &self.cfg.tls,
                    self.cfg.timeout,
                )
                .await?;
                // Publishes wait for a free PubAck slot instead of failing: every lane
                // may have a whole batch waiting for its acks.
                let inflight = self.cfg.concurrency.max(1).saturating_mul(MAX_BATCH);
                Ok(jetstream::ContextBuilder::new()
                    .timeout(self.cfg.timeout)
                    .max_ack_inflight(inflight)
                    .backpressure_on_inflight(true)
                    .build(client))
            })
            .await
    }

    /// With `create = true`: makes the stream for `subject` unless it exists.
    async fn ensure_stream(&self, js: &jetstream::Context) -> Result<(), String> {
        let (true, Some(stream)) = (self.cfg.create, &self.cfg.stream) else {
            return Ok(());
        };
        let mut ready = self.stream_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let Some(subjects) = NatsSinkConfig::created_subjects(&self.cfg.subject) else {
            return Ok(());
        };
        let config = stream::Config {
            name: stream.clone(),
            subjects: vec![subjects.clone()],
            storage: stream::StorageType::File,
            ..Default::default()
        };
        js.get_or_create_stream(config)
            .await
            .map_err(|e| format!("cannot create nats stream `{stream}` (create = true): {e}"))?;
        info!(sink = %self.name, %stream, %subjects, "nats stream ready (create = true)");
        *ready = true;
        Ok(())
    }

    fn warn_no_stream(&self, subject: &str) {
        let mut warned = self.warned.lock().expect("warned lock");
        let now = Instant::now();
        if warned
            .get(subject)
            .is_some_and(|at| now.duration_since(*at) < WARN_EVERY)
        {
            return;
        }
        warned.insert(subject.to_owned(), now);
        let subjects =
            NatsSinkConfig::created_subjects(&self.cfg.subject).unwrap_or_else(|| subject.into());
        warn!(sink = %self.name, %subject,
            "no nats stream holds subject `{subject}`; its events wait and are retried: create one \
             with `nats stream add EVENTS --subjects '{subjects}' --storage file --defaults`, or set \
             create = true and stream = \"EVENTS\" on sink `{}`", self.name);
    }

    /// The message of `event`: subject, headers and payload, or why it cannot be sent.
    fn message(
        &self,
        event: &Event,
        now_us: u64,
        buf: &mut Vec<u8>,
    ) -> Result<Option<(Subject, PublishMessage)>, Outcome> {
        let permanent = |error: String| Outcome::Permanent { error };
        let subject = self.template.render(event).map_err(permanent)?;
        check_subject(&self.template, &subject, &event.id).map_err(permanent)?;
        buf.clear();
        // CloudEvents in binary mode: the payload as it is, the attributes as `ce-*`
        // headers (NATS headers are HTTP-style: the HTTP binding's encoding).
        let attributes = self.formatter.binary_headers(event, Binding::Http);
        let (payload, content_type) = if self.formatter.is_native() || attributes.is_some() {
            (
                Bytes::copy_from_slice(&event.payload),
                event.content_type.as_str(),
            )
        } else {
            match self.formatter.write(event, now_us, buf) {
                Body::Skip => return Ok(None),
                Body::Native => (
                    Bytes::copy_from_slice(&event.payload),
                    event.content_type.as_str(),
                ),
                Body::Written { .. } => (
                    Bytes::copy_from_slice(buf),
                    self.formatter.written_content_type(),
                ),
            }
        };
        let mut h = HeaderMap::new();
        // The stream's duplicate window is per stream, and ids are unique per source
        // only (two Postgres sources of one database share commit LSNs).
        let mut msg_id = String::with_capacity(event.source.len() + 1 + event.id.len());
        msg_id.push_str(&event.source);
        msg_id.push('/');
        msg_id.push_str(&event.id);
        // The names are constants (no allocation, nothing to check); the values come
        // from the event and must fit a header line.
        for (name, text, value) in [
            (&ID_NAME, headers::ID, event.id.as_str()),
            (&SOURCE_NAME, headers::SOURCE, event.source.as_str()),
            (&KIND_NAME, headers::KIND, event.kind.as_str()),
            (&CONTENT_TYPE_NAME, headers::CONTENT_TYPE, content_type),
        ] {
            if !header_value_ok(value) {
                return Err(permanent(bad_header(text, &event.id)));
            }
            h.append(name.clone(), value);
        }
        if !header_value_ok(&msg_id) {
            return Err(permanent(bad_header(headers::MSG_ID, &event.id)));
        }
        h.append(MSG_ID_NAME.clone(), HeaderValue::from(msg_id));
        if let Some(key) = &event.key {
            match std::str::from_utf8(key) {
                Ok(text) if header_value_ok(text) => h.append(KEY_NAME.clone(), text),
                _ => {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(key);
                    insert(&mut h, headers::KEY_BASE64, &encoded, &event.id).map_err(permanent)?
                }
            }
        }
        for (name, value) in attributes.iter().flatten() {
            insert(&mut h, name, value, &event.id).map_err(permanent)?;
        }
        let received_attributes = attributes.is_some();
        for (name, value) in &event.headers {
            // The event's own `ce-*` headers are in the attributes above.
            let attribute = received_attributes && name.starts_with(cloudevents::HEADER_PREFIX);
            // `Nats-*` headers are instructions to JetStream (expected sequences, rollups,
            // TTLs), never copied from an event that may come from anyone.
            let instruction = name
                .get(..5)
                .is_some_and(|p| p.eq_ignore_ascii_case("nats-"));
            if !attribute && !instruction && !headers::ALL.contains(&name.as_str()) {
                insert(&mut h, name, value, &event.id).map_err(permanent)?;
            }
        }
        Ok(Some((
            Subject::from(subject),
            PublishMessage::build().payload(payload).headers(h),
        )))
    }

    /// The outcome of a publish from its PubAck.
    async fn confirm(
        &self,
        subject: &str,
        ack: PublishAckFuture,
        deadline: tokio::time::Instant,
    ) -> Outcome {
        match tokio::time::timeout_at(deadline, ack.into_future()).await {
            Ok(Ok(_)) => Outcome::Delivered,
            Ok(Err(e)) => {
                if e.kind() == PublishErrorKind::StreamNotFound {
                    self.warn_no_stream(subject);
                }
                // A stream at its limits (discard new), storage that is full, a server
                // restarting: all of it may clear; the event is retried, never lost.
                retry(format!("jetstream refused the message on `{subject}`: {e}"))
            }
            Err(_) => retry(format!(
                "no PubAck from jetstream for `{subject}` within {:?}",
                self.cfg.timeout
            )),
        }
    }

    async fn attempt(&self, batch: &[Arc<Event>]) -> Vec<Outcome> {
        let retry_all = |error: String| {
            batch
                .iter()
                .map(|_| Outcome::Retry {
                    error: error.clone(),
                    retry_after: None,
                })
                .collect()
        };
        let js = match self.context().await {
            Ok(js) => js,
            Err(error) => return retry_all(error),
        };
        if let Err(error) = self.ensure_stream(js).await {
            warn!(sink = %self.name, %error, "events wait and are retried");
            return retry_all(error);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.timeout;
        let now_us = format::now_us();
        let mut buf = Vec::new();
        let mut outcomes: Vec<Option<Outcome>> = vec![None; batch.len()];
        let mut acks: Vec<(usize, Subject, PublishAckFuture)> = Vec::with_capacity(batch.len());
        let mut stopped: Option<String> = None;
        let mut probe = batch.first().is_some_and(|e| self.take_refused(&e.id));
        for (i, event) in batch.iter().enumerate() {
            if let Some(error) = &stopped {
                outcomes[i] = Some(retry(error.clone()));
                continue;
            }
            let (subject, message) = match self.message(event, now_us, &mut buf) {
                Ok(Some(m)) => m,
                Ok(None) => {
                    outcomes[i] = Some(Outcome::Skipped);
                    continue;
                }
                Err(outcome) => {
                    outcomes[i] = Some(outcome);
                    continue;
                }
            };
            match tokio::time::timeout_at(deadline, js.send_publish(subject.clone(), message)).await
            {
                Ok(Ok(ack)) if probe => {
                    probe = false;
                    let outcome = self.confirm(&subject, ack, deadline).await;
                    if let Outcome::Retry { error, .. } = &outcome {
                        stopped = Some(error.clone());
                    }
                    outcomes[i] = Some(outcome);
                }
                Ok(Ok(ack)) => acks.push((i, subject, ack)),
                Ok(Err(e)) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    outcomes[i] = Some(Outcome::Permanent {
                        error: format!(
                            "event {} is larger than the nats server's max_payload: {e}",
                            event.id
                        ),
                    });
                }
                Ok(Err(e)) => {
                    // Later events of the lane wait for this one: sending them first
                    // could store them ahead of it.
                    let error = format!("publish to `{subject}` failed: {e}");
                    outcomes[i] = Some(retry(error.clone()));
                    stopped = Some(error);
                }
                Err(_) => {
                    let error = format!("publish to `{subject}` timed out");
                    outcomes[i] = Some(retry(error.clone()));
                    stopped = Some(error);
                }
            }
        }
        for (i, subject, ack) in acks {
            outcomes[i] = Some(self.confirm(&subject, ack, deadline).await);
        }
        let first_retry = outcomes
            .iter()
            .position(|o| matches!(o, Some(Outcome::Retry { .. })));
        if let Some(i) = first_retry {
            self.remember_refused(&batch[i].id);
        }
        outcomes
            .into_iter()
            .map(|o| o.expect("every event answered"))
            .collect()
    }
}

impl NatsSink {
    /// Whether `id` starts a lane's retry after a refusal (and forgets it).
    fn take_refused(&self, id: &str) -> bool {
        let mut refused = self.refused.lock().expect("refused lock");
        match refused.iter().position(|r| r == id) {
            Some(i) => {
                refused.remove(i);
                true
            }
            None => false,
        }
    }

    fn remember_refused(&self, id: &str) {
        let mut refused = self.refused.lock().expect("refused lock");
        if refused.len() >= MAX_REFUSED {
            refused.pop_front();
        }
        refused.push_back(id.to_owned());
    }
}

fn retry(error: String) -> Outcome {
    Outcome::Retry {
        error,
        retry_after: None,
    }
}

/// Whether `value` can be a NATS header value as it is (no line breaks; NATS headers are
/// a text protocol).
fn header_value_ok(value: &str) -> bool {
    !value.contains(['\r', '\n'])
}

fn insert(h: &mut HeaderMap, name: &str, value: &str, id: &str) -> Result<(), String> {
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    if !name_ok || !header_value_ok(value) {
        return Err(bad_header(name, id));
    }
    h.append(name, value);
    Ok(())
}

fn bad_header(name: &str, id: &str) -> String {
    format!(
        "event {id} has header {:?} that a nats message cannot carry (a name of visible \
         ASCII without `:`, a value without line breaks); fix or drop it in a transform \
         plugin",
        name.chars().take(64).collect::<String>()
    )
}

// The headers every message carries, as names made once.
static MSG_ID_NAME: HeaderName = HeaderName::from_static(headers::MSG_ID);
static ID_NAME: HeaderName = HeaderName::from_static(headers::ID);
static SOURCE_NAME: HeaderName = HeaderName::from_static(headers::SOURCE);
static KIND_NAME: HeaderName = HeaderName::from_static(headers::KIND);
static CONTENT_TYPE_NAME: HeaderName = HeaderName::from_static(headers::CONTENT_TYPE);
static KEY_NAME: HeaderName = HeaderName::from_static(headers::KEY);

/// A subject made from event parts must be one NATS subject: no wildcards, spaces or
/// empty tokens, so no event can publish outside the template's pattern.
fn check_subject(template: &NameTemplate, subject: &str, id: &str) -> Result<(), String> {
    let ok = !subject.is_empty()
        && subject.len() <= 4096
        && subject.split('.').all(|token| {
            !token.is_empty()
                && token != "*"
                && token != ">"
                && !token
                    .bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        });
    // `$JS.API.…`, `$KV.…`, `_INBOX.…` are the server's own: an event must not turn a
    // publish into a JetStream API request or a reply to someone else's request.
    let first = subject.split('.').next().unwrap_or_default();
    let reserved =
        (first.starts_with('$') || first == "_INBOX") && !template.text().starts_with(first);
    if reserved {
        return Err(format!(
            "subject {:?} gives {:?} for event {id}: subjects starting with `$` or `_INBOX` \
             belong to the server (JetStream's API, replies); start the template with a \
             fixed token",
            template.text(),
            subject.chars().take(80).collect::<String>()
        ));
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "subject {:?} gives {:?} for event {id}, which is not a nats subject (tokens \
             separated by `.`, none empty, no spaces, no `*` or `>` tokens)",
            template.text(),
            subject.chars().take(80).collect::<String>()
        ))
    }
}

impl Sink for NatsSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(self.attempt(batch))
    }

    fn max_batch(&self) -> usize {
        MAX_BATCH
    }

    fn concurrency(&self) -> usize {
        self.cfg.concurrency.max(1)
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_from_events_stay_single_subjects() {
        let t = NameTemplate::parse("subject", "events.{header:t}");
        for bad in ["a b", "", "x..y", "*", ">", "a.>"] {
            assert!(
                check_subject(&t, &format!("events.{bad}"), "e").is_err(),
                "{bad}"
            );
        }
        assert!(check_subject(&t, "events.orders.v1", "e").is_ok());
    }

    #[test]
    fn an_event_cannot_name_a_subject_of_the_server() {
        let t = NameTemplate::parse("subject", "{header:ce-type}");
        for reserved in ["$JS.API.STREAM.DELETE.ORDERS", "$KV.b.k", "_INBOX.abc"] {
            let e = check_subject(&t, reserved, "e").unwrap_err();
            assert!(e.contains("belong to the server"), "{e}");
        }
        assert!(check_subject(&t, "com.example.paid", "e").is_ok());
        let own = NameTemplate::parse("subject", "$MY.{source}");
        assert!(
            check_subject(&own, "$MY.api", "e").is_ok(),
            "the template's own"
        );
    }

    #[test]
    fn headers_a_nats_message_cannot_carry_are_refused() {
        let mut h = HeaderMap::new();
        assert!(insert(&mut h, "ok-name", "value", "e").is_ok());
        assert!(insert(&mut h, "bad:name", "v", "e").is_err());
        assert!(insert(&mut h, "bad name", "v", "e").is_err());
        assert!(insert(&mut h, "name", "line\r\nbreak", "e").is_err());
    }
}
