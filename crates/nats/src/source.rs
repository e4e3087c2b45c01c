//! `type = "nats"` source: a durable JetStream pull consumer per source.
//!
//! Positions are stream sequences (plus an offset once the stream was deleted and created
//! again, see below), so they only grow along a consumer's delivery order.
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
//!
//! The floor file also records which stream its floor belongs to (the stream's creation
//! time). A stream deleted and created again under the same name numbers its messages
//! from 1 again: a floor of the old stream would skip the new one's first messages, and
//! its sequences would fall below what the feed already handed out. The set-up notices
//! the new creation time (or a floor past the stream's last sequence), logs a warning,
//! reads the new stream from its start and continues its positions above the old ones.
//! The file is written and read on a blocking thread, never on an async worker.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::ServerAddr;
use async_nats::jetstream::consumer::pull::MessagesErrorKind;
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
                base: 0,
                stream_created: None,
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
    /// The creation time of the stream the consumer reads.
    stream: StreamIdentity,
}

/// Which stream (of a name) a set-up found: a stream deleted and created again has a new
/// creation time, and its sequences start again at 1.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StreamIdentity {
    /// Unix nanoseconds.
    created: i128,
    /// For messages.
    created_text: String,
    /// The last sequence the stream assigned, as the set-up found it.
    last_sequence: u64,
}

/// What the floor file holds: the acknowledged floor and the stream it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FloorRecord {
    floor: u64,
    /// The stream's creation time in Unix nanoseconds; `None` in a file of a version that
    /// wrote the floor alone.
    stream_created: Option<i128>,
}

impl FloorRecord {
    fn to_text(self) -> String {
        match self.stream_created {
            Some(created) => format!("{} {created}\n", self.floor),
            None => format!("{}\n", self.floor),
        }
    }

    /// `<floor>` or `<floor> <stream created, Unix ns>`.
    fn parse(text: &str) -> Option<Self> {
        let mut words = text.split_whitespace();
        let floor = words.next()?.parse().ok()?;
        let stream_created = match words.next() {
            Some(word) => Some(word.parse().ok()?),
            None => None,
        };
        if words.next().is_some() {
            return None;
        }
        Some(Self {
            floor,
            stream_created,
        })
    }
}

/// Where a consumer that does not exist resumes: `Ok(Some(floor))` from the recorded
/// floor, `Ok(None)` from the stream's start (no floor recorded), `Err(why)` from the
/// stream's start because the recorded floor belongs to a stream deleted since (the
/// caller warns with `why`). `known_created` is the creation time of the stream this
/// process read before, if any.
fn resume_floor(
    record: Option<FloorRecord>,
    stream: &StreamIdentity,
    known_created: Option<i128>,
) -> Result<Option<u64>, String> {
    if known_created.is_some_and(|known| known != stream.created) {
        return Err(format!(
            "the stream was deleted and created again (now created at {}) while the source read it",
            stream.created_text
        ));
    }
    let Some(record) = record else {
        return Ok(None);
    };
    match record.stream_created {
        Some(created) if created != stream.created => Err(format!(
            "the recorded floor {} belongs to an earlier stream of this name (created at {} Unix ns); \
             the stream now was created at {}",
            record.floor, created, stream.created_text
        )),
        _ if record.floor > stream.last_sequence => Err(format!(
            "the recorded floor {} is past the stream's last sequence {}: the stream was deleted \
             and created again",
            record.floor, stream.last_sequence
        )),
        _ => Ok(Some(record.floor)),
    }
}

/// Writes `record` to `file` so that a crash leaves the old record or the new one: a
/// temporary file is written and fsync'd, renamed over `file`, and the directory fsync'd.
/// Blocking: run it on a blocking thread.
fn write_floor_file(dir: &Path, file: &Path, record: FloorRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tmp");
    let mut out = std::fs::File::create(&tmp)?;
    out.write_all(record.to_text().as_bytes())?;
    out.sync_all()?;
    drop(out);
    std::fs::rename(&tmp, file)?;
    std::fs::File::open(dir)?.sync_all()
}

/// The record in `file`: `Ok(None)` when there is none, `Err(None)` when the file holds
/// no record. Blocking: run it on a blocking thread.
fn read_floor_file(file: &Path) -> Result<Option<FloorRecord>, Option<std::io::Error>> {
    match std::fs::read_to_string(file) {
        Ok(text) => FloorRecord::parse(&text).map(Some).ok_or(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Some(e)),
    }
}

/// [`write_floor_file`] on a blocking thread.
async fn store_floor(dir: PathBuf, file: PathBuf, record: FloorRecord) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || write_floor_file(&dir, &file, record))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
}

/// [`read_floor_file`] on a blocking thread.
async fn load_floor(file: PathBuf) -> Result<Option<FloorRecord>, Option<std::io::Error>> {
    tokio::task::spawn_blocking(move || read_floor_file(&file))
        .await
        .unwrap_or_else(|e| Err(Some(std::io::Error::other(e))))
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
    /// Handed out and not yet committed: position → how to acknowledge it. At most
    /// `max_ack_pending` entries (the server sends no more).
    in_flight: BTreeMap<u64, Acker>,
    /// The position of the last message handed out.
    last: u64,
    /// Everything below this is acknowledged.
    committed: u64,
    /// Messages the server still holds for the consumer, as of the last one received.
    pending: u64,
    /// Added to a stream sequence to make its position: raised when the stream was
    /// deleted and created again, so the new stream's positions (from 1 again) continue
    /// above those handed out before. `in_flight`, `last` and `committed` are positions.
    base: u64,
    /// The creation time of the stream read so far, once a set-up found it.
    stream_created: Option<i128>,
}

/// What setting the consumer up needs, owned so it can run as a task.
struct Setup {
    name: String,
    cfg: NatsSourceConfig,
    servers: Vec<ServerAddr>,
    state_dir: PathBuf,
    floor_file: PathBuf,
    /// The creation time of the stream the feed read before, if any.
    known_created: Option<i128>,
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
        let info = stream.cached_info();
        let identity = StreamIdentity {
            created: info.created.unix_timestamp_nanos(),
            created_text: info.created.to_string(),
            last_sequence: info.state.last_sequence,
        };
        let consumer_name = &self.cfg.consumer;
        let floor = match stream.consumer_info(consumer_name).await {
            Ok(info) => {
                let floor = info.ack_floor.stream_sequence;
                // Recorded before the delete: a crash before the create resumes from it.
                self.write_floor(FloorRecord {
                    floor,
                    stream_created: Some(identity.created),
                })
                .await?;
                stream.delete_consumer(consumer_name).await.map_err(|e| {
                    FeedError::Transient(format!(
                        "source `{}`: cannot recreate nats consumer `{consumer_name}`: {e}",
                        self.name
                    ))
                })?;
                Some(floor)
            }
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                let record = self.read_floor().await?;
                match resume_floor(record, &identity, self.known_created) {
                    Ok(floor) => floor,
                    Err(why) => {
                        warn!(source = %self.name, stream = %stream_name, consumer = %consumer_name,
                            "{why}; the old stream's acknowledged floor does not apply: reading \
                             the new stream from its first message (events of the old stream \
                             still in flight are delivered, but can no longer be acknowledged)");
                        None
                    }
                }
            }
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
            stream: identity,
        })
    }

    async fn write_floor(&self, record: FloorRecord) -> Result<(), FeedError> {
        store_floor(self.state_dir.clone(), self.floor_file.clone(), record)
            .await
            .map_err(|e| {
                FeedError::Transient(format!(
                    "source `{}`: cannot write {}: {e}",
                    self.name,
                    self.floor_file.display()
                ))
            })
    }

    /// The floor written before a consumer was deleted, if the process stopped before it
    /// was created again; `None` on a first start (the consumer reads the whole stream).
    async fn read_floor(&self) -> Result<Option<FloorRecord>, FeedError> {
        load_floor(self.floor_file.clone())
            .await
            .map_err(|e| match e {
                None => FeedError::Permanent(format!(
                    "source `{}`: {} does not hold a sequence number; remove it to read the \
                 stream from its start",
                    self.name,
                    self.floor_file.display()
                )),
                Some(e) => FeedError::Transient(format!(
                    "source `{}`: cannot read {}: {e}",
                    self.name,
                    self.floor_file.display()
                )),
            })
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
                    known_created: self.stream_created,
                };
                tokio::spawn(async move { setup.run().await })
            });
            let done = task.await;
            self.setting_up = None;
            let reader = done.map_err(|e| {
                FeedError::Transient(format!("source `{}`: set-up task failed: {e}", self.name))
            })??;
            if self
                .stream_created
                .is_some_and(|created| created != reader.stream.created)
            {
                self.start_over();
            }
            self.stream_created = Some(reader.stream.created);
            self.reader = Some(reader);
        }
        Ok(self.reader.as_mut().expect("set up"))
    }

    /// The stream was deleted and created again: its sequences start at 1 again. Its
    /// positions continue above everything handed out so far; what is in flight of the
    /// old stream cannot be acknowledged any more (its consumer went with it), so its
    /// ackers are dropped and its commits acknowledge nothing.
    fn start_over(&mut self) {
        warn!(source = %self.name, stream = %self.cfg.stream, handed_out = self.last,
            "nats stream was deleted and created again; reading the new stream from its start");
        self.base = self.last;
        self.in_flight.clear();
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
        let position = self.base + seq;
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
        if position <= self.last {
            if position < self.committed {
                // Complete already; the server missed the ack (a reconnect).
                tokio::spawn(async move { acker.ack().await });
            } else {
                // Still in flight: its ack_wait passed. Acknowledge through the newest
                // delivery, never hand it out twice.
                self.in_flight.insert(position, acker);
            }
            return Ok(());
        }
        self.last = position;
        self.in_flight.insert(position, acker);
        let timestamp_ms = u64::try_from(published.unix_timestamp_nanos() / 1_000_000)
            .unwrap_or_else(|_| now_ms());
        batch.push(
            position,
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
        kind: kind.map_or_else(|| KIND_MESSAGE.into(), Into::into),
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
                        if matches!(
                            e.kind(),
                            MessagesErrorKind::ConsumerDeleted | MessagesErrorKind::NoResponders
                        ) {
                            // The consumer is gone (deleted, or with its stream): pulling
                            // again cannot help; set it up again.
                            self.reader = None;
                        }
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
            let Some((&position, acker)) = self.in_flight.range(..low).next_back() else {
                return Ok(());
            };
            let seq = position - self.base;
            // AckPolicy::All: acknowledging `seq` acknowledges everything before it; the
            // double ack waits until the server has it.
            acker.double_ack_with(AckKind::Ack).await.map_err(|e| {
                FeedError::Transient(format!(
                    "source `{}`: the nats server did not confirm the ack of sequence {seq}: {e}",
                    self.name
                ))
            })?;
            self.in_flight = self.in_flight.split_off(&low);
            self.committed = self.committed.max(position + 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(created: i128, last_sequence: u64) -> StreamIdentity {
        StreamIdentity {
            created,
            created_text: format!("t{created}"),
            last_sequence,
        }
    }

    fn record(floor: u64, stream_created: Option<i128>) -> FloorRecord {
        FloorRecord {
            floor,
            stream_created,
        }
    }

    #[test]
    fn the_floor_file_holds_the_floor_and_its_stream() {
        let r = record(42, Some(1_700_000_000_123_456_789));
        assert_eq!(FloorRecord::parse(&r.to_text()), Some(r));
        // A file of a version that wrote the floor alone.
        assert_eq!(FloorRecord::parse("17\n"), Some(record(17, None)));
        assert_eq!(FloorRecord::parse("seventeen"), None);
        assert_eq!(FloorRecord::parse("1 2 3"), None);
        assert_eq!(FloorRecord::parse(""), None);
    }

    #[test]
    fn a_floor_resumes_only_on_the_stream_it_was_recorded_for() {
        let now = stream(200, 50);
        assert_eq!(resume_floor(None, &now, None), Ok(None), "first start");
        assert_eq!(
            resume_floor(Some(record(30, Some(200))), &now, Some(200)),
            Ok(Some(30))
        );
        // Recorded for a stream that was deleted since: the new one is read from its start.
        let why = resume_floor(Some(record(30, Some(100))), &now, None).unwrap_err();
        assert!(why.contains("earlier stream"), "{why}");
        // A floor of the old format past the stream's end cannot be this stream's.
        assert_eq!(
            resume_floor(Some(record(30, None)), &now, None),
            Ok(Some(30))
        );
        let why = resume_floor(Some(record(80, None)), &now, None).unwrap_err();
        assert!(why.contains("past the stream's last sequence 50"), "{why}");
        // This process read a stream created at another time: whatever the file says.
        let why = resume_floor(None, &now, Some(100)).unwrap_err();
        assert!(why.contains("deleted and created again"), "{why}");
    }

    #[test]
    fn the_floor_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("nats").join("src");
        let file = state.join("floor");
        write_floor_file(&state, &file, record(7, Some(9))).unwrap();
        write_floor_file(&state, &file, record(8, Some(9))).unwrap();
        assert_eq!(read_floor_file(&file).unwrap(), Some(record(8, Some(9))));
        assert!(!file.with_extension("tmp").exists());
        assert!(read_floor_file(&state.join("none")).unwrap().is_none());
        std::fs::write(&file, "garbage").unwrap();
        assert!(matches!(read_floor_file(&file), Err(None)));
    }

    /// The floor's temporary file is a FIFO, so writing it blocks until someone reads it.
    /// On a runtime with one worker, a write done on that worker would keep every other
    /// task from running until then.
    #[test]
    fn writing_the_floor_leaves_the_async_worker_free() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("floor");
        let fifo = file.with_extension("tmp");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let (state, floor_file) = (dir.path().to_owned(), file.clone());
        let writer = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let other = tokio::spawn(async move { ran_tx.send(()).unwrap() });
                // Fails once unblocked (a FIFO cannot be fsync'd); only the wait matters.
                let _ = store_floor(state, floor_file, record(3, Some(1))).await;
                other.await.unwrap();
            });
        });
        let ran = ran_rx.recv_timeout(Duration::from_secs(10));
        // Unblock the writer either way.
        let written = std::fs::read_to_string(&fifo).unwrap();
        writer.join().unwrap();
        assert!(
            ran.is_ok(),
            "another task could not run while the floor was written"
        );
        assert_eq!(written, "3 1\n");
    }
}
