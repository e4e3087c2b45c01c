//! `type = "nats"` source: a durable JetStream pull consumer per source.
//!
//! Positions are stream sequences, so they only grow along a consumer's delivery order.
//! The consumer acknowledges with `AckPolicy::All`: a commit acknowledges the highest
//! handed-out sequence below the reader's low watermark with a double ack (it waits for
//! the server's confirmation), which acknowledges everything before it too.
//!
//! At each start the source recreates its consumer from the acknowledged floor (the
//! floor is first written under the data directory, so a crash between the delete and
//! the create resumes from it): the server would otherwise send the previous run's
//! unacknowledged messages only after `ack_wait`, behind newer ones, which would break
//! both the order of positions and the order per key. A message the server sends again
//! while it is still in flight (its `ack_wait` passed) is not handed out twice; one below
//! the committed floor is acknowledged again at once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::ServerAddr;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind, ErrorCode};
use base64::Engine as _;
use futures::{FutureExt as _, StreamExt as _};
use switchyard_config::NatsSourceConfig;
use switchyard_connector::{
    Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Position, Source,
};
use switchyard_event::Event;
use tracing::{info, warn};

use crate::headers;

/// Kind of the events the source makes, unless the message says otherwise.
const KIND_MESSAGE: &str = "message";
/// Most messages one pull request asks for.
const PULL_BATCH: usize = 500;
/// Most bytes one pull request asks for, unless the server's `max_payload` is larger (a
/// pull must fit one message of it, or the server never sends that message): with
/// messages of up to `max_payload` (1 MiB by default, up to 64 MiB), a pull of
/// [`PULL_BATCH`] could otherwise bring hundreds of MiB at once. The client keeps about
/// two pulls buffered.
const PULL_BYTES: usize = 8 << 20;
/// Headers of a message copied into its event, at most (a message is bounded by the
/// server's `max_payload`; this bounds the per-event work on top).
const MAX_HEADERS: usize = 128;

/// A configured `nats` source.
pub struct NatsSource {
    name: String,
    cfg: NatsSourceConfig,
    servers: Vec<ServerAddr>,
    state_dir: PathBuf,
}

/// Builds the `nats` source `name`: the runtime's registration calls this. The URL is
/// checked now; nothing connects before the feed is first read.
pub fn build(
    name: &str,
    cfg: &NatsSourceConfig,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    let readers = ctx.readers_of(name);
    if readers.len() > 1 {
        return Err(BuildError::new(format!(
            "nats source `{name}` is read by {} pipelines, but its durable consumer `{}` hands each message to one reader; declare one nats source (with its own consumer) per pipeline",
            readers.len(),
            cfg.consumer
        )));
    }
    Ok(Box::new(NatsSource {
        name: name.to_owned(),
        cfg: cfg.clone(),
        servers: crate::servers("source", name, &cfg.url)?,
        state_dir: ctx.state_dir("nats", name),
    }))
}

impl Source for NatsSource {
    /// One feed: the consumer is set up when it is first read (a server that is down is
    /// waited for by the reader's backoff).
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            Ok(vec![Box::new(NatsFeed {
                name: self.name.clone(),
                cfg: self.cfg.clone(),
                servers: self.servers.clone(),
                floor_file: self.state_dir.join("floor"),
                state_dir: self.state_dir.clone(),
                reader: None,
                setting_up: None,
                in_flight: BTreeMap::new(),
                last: 0,
                committed: 0,
                pending: 0,
            }) as Box<dyn Feed>])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

struct Reader {
    messages: pull::Stream,
    /// The consumer sequence of the last delivery taken: deliveries are numbered without
    /// gaps, so a jump means one was sent and lost on the way (a dropped connection).
    /// With AckPolicy::All the next ack would cover it: the reader is set up again
    /// instead, from the acknowledged floor, and the lost delivery comes again.
    consumer_seq: Option<u64>,
    /// A jump was seen: the reader is set up again before anything else is taken.
    gap: bool,
}

/// The consumer as a pipeline reader's [`Feed`].
pub struct NatsFeed {
    name: String,
    cfg: NatsSourceConfig,
    servers: Vec<ServerAddr>,
    state_dir: PathBuf,
    /// Where the acknowledged floor is kept while the consumer is recreated.
    floor_file: PathBuf,
    reader: Option<Reader>,
    /// The set-up in progress: a task, so a `next` the reader drops (it does on every
    /// tick of its commit timer) does not start it over.
    setting_up: Option<tokio::task::JoinHandle<Result<Reader, FeedError>>>,
    /// Handed out and not yet committed: stream sequence → how to acknowledge it. At
    /// most `max_ack_pending` entries (the server sends no more).
    in_flight: BTreeMap<u64, Acker>,
    /// The last stream sequence handed out.
    last: u64,
    /// Everything below this is acknowledged.
    committed: u64,
    /// Messages the server still holds for the consumer, as of the last one received.
    pending: u64,
}

/// What setting the consumer up needs, owned so it can run as a task.
struct Setup {
    name: String,
    cfg: NatsSourceConfig,
    servers: Vec<ServerAddr>,
    state_dir: PathBuf,
    floor_file: PathBuf,
}

impl Setup {
    /// Connects and recreates the consumer from its acknowledged floor.
    async fn run(self) -> Result<Reader, FeedError> {
        let transient = FeedError::Transient;
        let client = crate::connect(
            "source",
            &self.name,
            self.servers.clone(),
            &self.cfg.tls,
            self.cfg.ack_wait.min(Duration::from_secs(10)),
        )
        .await
        .map_err(transient)?;
        let pull_bytes = PULL_BYTES.max(client.server_info().max_payload + 4096);
        let js = jetstream::new(client);
        let stream_name = &self.cfg.stream;
        let stream = js.get_stream(stream_name).await.map_err(|e| match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                FeedError::Transient(format!(
                    "source `{}`: nats stream `{stream_name}` does not exist; create it with \
                     `nats stream add {stream_name} --subjects 'events.>' --storage file --defaults` \
                     (with your subjects); reading starts once it exists",
                    self.name
                ))
            }
            _ => FeedError::Transient(format!(
                "source `{}`: cannot reach nats stream `{stream_name}`: {e}",
                self.name
            )),
        })?;
        let consumer_name = &self.cfg.consumer;
        let floor = match stream.consumer_info(consumer_name).await {
            Ok(info) => {
                let floor = info.ack_floor.stream_sequence;
                self.write_floor(floor)?;
                stream.delete_consumer(consumer_name).await.map_err(|e| {
                    FeedError::Transient(format!(
                        "source `{}`: cannot recreate nats consumer `{consumer_name}`: {e}",
                        self.name
                    ))
                })?;
                Some(floor)
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => self.read_floor()?,
            Err(e) => {
                return Err(FeedError::Transient(format!(
                    "source `{}`: cannot read nats consumer `{consumer_name}`: {e}",
                    self.name
                )));
            }
        };
        let deliver_policy = match floor {
            Some(floor) => DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            },
            None => DeliverPolicy::All,
        };
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(consumer_name.clone()),
                deliver_policy,
                ack_policy: AckPolicy::All,
                ack_wait: self.cfg.ack_wait,
                // Never give a message up: an unacknowledged one comes again until it is.
                max_deliver: -1,
                max_ack_pending: i64::from(self.cfg.max_ack_pending),
                filter_subject: self.cfg.filter_subject.clone().unwrap_or_default(),
                ..Default::default()
            })
            .await
            .map_err(|e| {
                FeedError::Transient(format!(
                    "source `{}`: cannot create nats consumer `{consumer_name}` on stream \
                     `{stream_name}`: {e}",
                    self.name
                ))
            })?;
        let messages = consumer
            .stream()
            .max_messages_per_batch(PULL_BATCH.min(self.cfg.max_ack_pending as usize))
            .max_bytes_per_batch(pull_bytes)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| {
                FeedError::Transient(format!(
                    "source `{}`: cannot pull from nats consumer `{consumer_name}`: {e}",
                    self.name
                ))
            })?;
        info!(source = %self.name, stream = %stream_name, consumer = %consumer_name,
            from = floor.map_or(1, |f| f + 1), "reading nats stream");
        Ok(Reader {
            messages,
            consumer_seq: None,
            gap: false,
        })
    }

    fn write_floor(&self, floor: u64) -> Result<(), FeedError> {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.state_dir)?;
            let tmp = self.floor_file.with_extension("tmp");
            std::fs::write(&tmp, floor.to_string())?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &self.floor_file)?;
            std::fs::File::open(&self.state_dir)?.sync_all()
        };
        write().map_err(|e| {
            FeedError::Transient(format!(
                "source `{}`: cannot write {}: {e}",
                self.name,
                self.floor_file.display()
            ))
        })
    }

    /// The floor written before a consumer was deleted, if the process stopped before it
    /// was created again; `None` on a first start (the consumer reads the whole stream).
    fn read_floor(&self) -> Result<Option<u64>, FeedError> {
        match std::fs::read_to_string(&self.floor_file) {
            Ok(text) => text.trim().parse().map(Some).map_err(|_| {
                FeedError::Permanent(format!(
                    "source `{}`: {} does not hold a sequence number; remove it to read the \
                     stream from its start",
                    self.name,
                    self.floor_file.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FeedError::Transient(format!(
                "source `{}`: cannot read {}: {e}",
                self.name,
                self.floor_file.display()
            ))),
        }
    }
}

impl NatsFeed {
    /// The reader, once the set-up task (started on the first call) has made it.
    async fn reader(&mut self) -> Result<&mut Reader, FeedError> {
        if self.reader.is_none() {
            let task = self.setting_up.get_or_insert_with(|| {
                let setup = Setup {
                    name: self.name.clone(),
                    cfg: self.cfg.clone(),
                    servers: self.servers.clone(),
                    state_dir: self.state_dir.clone(),
                    floor_file: self.floor_file.clone(),
                };
                tokio::spawn(async move { setup.run().await })
            });
            let done = task.await;
            self.setting_up = None;
            let reader = done.map_err(|e| {
                FeedError::Transient(format!("source `{}`: set-up task failed: {e}", self.name))
            })??;
            self.reader = Some(reader);
        }
        Ok(self.reader.as_mut().expect("set up"))
    }

    /// Takes `message` into `batch` unless it was handed out already.
    fn take(&mut self, message: jetstream::Message, batch: &mut Batch) -> Result<(), FeedError> {
        let info = message.info().map_err(|e| {
            FeedError::Transient(format!(
                "source `{}`: a message without ack info: {e}",
                self.name
            ))
        })?;
        let seq = info.stream_sequence;
        let reader = self.reader.as_mut().expect("set up");
        if reader
            .consumer_seq
            .is_some_and(|last| info.consumer_sequence != last + 1)
        {
            warn!(source = %self.name, after = ?reader.consumer_seq, got = info.consumer_sequence,
                "a nats delivery did not arrive; setting the consumer up again from its acknowledged floor");
            reader.gap = true;
            return Ok(());
        }
        reader.consumer_seq = Some(info.consumer_sequence);
        let delivered = info.delivered;
        let published = info.published;
        self.pending = info.pending;
        let (message, acker) = message.split();
        if seq <= self.last {
            if seq < self.committed {
                // Complete already; the server missed the ack (a reconnect).
                tokio::spawn(async move { acker.ack().await });
            } else {
                // Still in flight: its ack_wait passed. Acknowledge through the newest
                // delivery, never hand it out twice.
                self.in_flight.insert(seq, acker);
            }
            return Ok(());
        }
        self.last = seq;
        self.in_flight.insert(seq, acker);
        let timestamp_ms = u64::try_from(published.unix_timestamp_nanos() / 1_000_000)
            .unwrap_or_else(|_| now_ms());
        batch.push(
            seq,
            to_event(
                &self.name,
                &self.cfg.stream,
                seq,
                delivered,
                timestamp_ms,
                message,
            ),
        );
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The event of a message: what a switchyard `nats` sink wrote is mapped back (id, kind,
/// key, content type); other messages get `<stream>/<sequence>` as their id.
fn to_event(
    source: &str,
    stream: &str,
    seq: u64,
    delivered: i64,
    timestamp_ms: u64,
    message: async_nats::Message,
) -> Event {
    let mut id = None;
    let mut kind = None;
    let mut key = None;
    let mut content_type = None;
    let mut event_headers = Vec::new();
    if let Some(h) = &message.headers {
        for (name, values) in h.iter() {
            let value = values
                .last()
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            let name = name.to_string();
            match name.as_str() {
                headers::ID => id = Some(value),
                headers::KIND => kind = Some(value),
                headers::CONTENT_TYPE => content_type = Some(value),
                headers::KEY => key = Some(value.into_bytes()),
                headers::KEY_BASE64 => {
                    key = base64::engine::general_purpose::STANDARD.decode(value).ok()
                }
                // Written by a sink; the event gets this source's own.
                headers::SOURCE | headers::MSG_ID => {}
                other => {
                    for v in values {
                        if event_headers.len() < MAX_HEADERS {
                            event_headers.push((other.to_owned(), v.as_str().to_owned()));
                        }
                    }
                }
            }
        }
    }
    event_headers.push((headers::SUBJECT.to_owned(), message.subject.to_string()));
    event_headers.push((headers::DELIVERED.to_owned(), delivered.to_string()));
    let payload = message.payload.to_vec();
    let content_type = content_type.unwrap_or_else(|| {
        if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok() {
            "application/json".into()
        } else {
            "application/octet-stream".into()
        }
    });
    Event {
        id: id.unwrap_or_else(|| format!("{stream}/{seq}")).into(),
        source: source.into(),
        kind: kind.unwrap_or_else(|| KIND_MESSAGE.to_owned()).into(),
        key,
        payload,
        content_type: content_type.into(),
        headers: event_headers,
        timestamp_ms,
        payload_is_compact_json: false,
    }
}

impl Feed for NatsFeed {
    fn start(&self) -> Position {
        0
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(async move {
            if self.reader.as_ref().is_some_and(|r| r.gap) {
                self.reader = None;
                return Err(FeedError::Transient(format!(
                    "source `{}`: a delivery did not arrive; setting the consumer up again",
                    self.name
                )));
            }
            self.reader().await?;
            let mut batch = Batch::with_capacity(max.min(PULL_BATCH));
            while batch.is_empty() && !self.reader.as_ref().is_some_and(|r| r.gap) {
                // Waiting for the first message is the only await: a call dropped here
                // loses nothing (the pull stream keeps what it received).
                let reader = self.reader.as_mut().expect("set up");
                let first = reader.messages.next().await;
                let message = match first {
                    None => {
                        // The pull stream gave up (the server went away for longer than
                        // it waits): set the consumer up again. What is in flight comes
                        // back at or below `last` and is not handed out twice.
                        self.reader = None;
                        return Err(FeedError::Transient(format!(
                            "source `{}`: the nats pull stream ended; setting it up again",
                            self.name
                        )));
                    }
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        return Err(FeedError::Transient(format!(
                            "source `{}`: pulling from nats: {e}",
                            self.name
                        )));
                    }
                };
                self.take(message, &mut batch)?;
                while batch.len() < max {
                    let reader = self.reader.as_mut().expect("set up");
                    if reader.gap {
                        break;
                    }
                    match reader.messages.next().now_or_never() {
                        Some(Some(Ok(m))) => self.take(m, &mut batch)?,
                        // An error or the end is answered by the next call.
                        _ => break,
                    }
                }
            }
            if batch.is_empty() {
                // The first delivery taken showed a gap.
                self.reader = None;
                return Err(FeedError::Transient(format!(
                    "source `{}`: a delivery did not arrive; setting the consumer up again",
                    self.name
                )));
            }
            Ok(Some(batch))
        })
    }

    fn commit(&mut self, low: Position) -> BoxFuture<'_, Result<(), FeedError>> {
        Box::pin(async move {
            let Some((&seq, acker)) = self.in_flight.range(..low).next_back() else {
                return Ok(());
            };
            // AckPolicy::All: acknowledging `seq` acknowledges everything before it; the
            // double ack waits until the server has it.
            acker.double_ack_with(AckKind::Ack).await.map_err(|e| {
                FeedError::Transient(format!(
                    "source `{}`: the nats server did not confirm the ack of sequence {seq}: {e}",
                    self.name
                ))
            })?;
            self.in_flight = self.in_flight.split_off(&low);
            self.committed = self.committed.max(seq + 1);
            Ok(())
        })
    }

    fn lag(&self, low: Position) -> u64 {
        self.in_flight.range(low..).count() as u64 + self.pending
    }

    fn partition(&self) -> u32 {
        0
    }

    /// The server sends nothing past `max_ack_pending` unacknowledged messages: ack
    /// every half of it (positions are stream sequences, so gaps count too, which only
    /// acks sooner).
    fn commit_after(&self) -> Option<u64> {
        Some(u64::from(self.cfg.max_ack_pending / 2))
    }
}
