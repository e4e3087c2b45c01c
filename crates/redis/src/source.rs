//! `type = "redis"` source: one member of a consumer group per source.
//!
//! Positions are sequential per run (from 1); the feed keeps, for every entry handed out
//! and not yet committed, its entry id (at most what the reader holds in flight), and a
//! commit acknowledges (XACK) exactly the entries below the reader's low watermark.
//!
//! A feed first reads its own pending entries (those a previous run took and did not
//! acknowledge: after a crash they come again, in stream order), then new ones; after a
//! lost connection it reads its pending entries again first (a read whose reply was lost
//! left them pending to it). Every
//! `claim_idle / 2` it claims (XAUTOCLAIM) entries of the group idle for `claim_idle` —
//! a dead member's, or its own that a cancelled read left behind — and hands out those
//! it does not already hold.
//!
//! Redis bounds a read in entries (COUNT), not in bytes, so a read of entries with huge
//! fields could hold any amount of memory. The feed sizes each read's COUNT by the
//! largest entry of the read before, to hold about [`READ_BYTES`] (the bound of a NATS
//! pull), growing it at most twofold per read; an entry above `max_entry_bytes` stops
//! the reader with an error that names it, before it or any later entry is handed out
//! (they stay pending and are read again after a restart).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamId};
use redis::{Client, RedisError, Value};
use switchyard_config::RedisSourceConfig;
use switchyard_connector::{
    Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Position, Source,
};
use switchyard_event::Event;
use tracing::info;

use crate::fields;

/// Kind of the events the source makes, unless the entry says otherwise.
const KIND_MESSAGE: &str = "message";
/// How long one XREADGROUP waits for new entries before the feed looks again.
const BLOCK: Duration = Duration::from_secs(1);
/// Replies and connects wait at most this long (a blocked read adds [`BLOCK`]).
const TIMEOUT: Duration = Duration::from_secs(10);
/// Most entries one read asks for.
const MAX_READ: usize = 1000;
/// About the most bytes of entries one read should hold (as a NATS pull's `max_bytes`).
const READ_BYTES: usize = 8 << 20;
/// Entries the first read asks for, before any size was seen.
const FIRST_READ: usize = 8;
/// Most fields of an entry copied into its event.
const MAX_FIELDS: usize = 256;

/// A configured `redis` source.
pub struct RedisSource {
    name: String,
    cfg: RedisSourceConfig,
    client: Client,
}

/// Builds the `redis` source `name`: the runtime's registration calls this. The URL and
/// TLS files are checked now; nothing connects before the feed is first read.
pub fn build(
    name: &str,
    cfg: &RedisSourceConfig,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    let readers = ctx.readers_of(name);
    if readers.len() > 1 {
        return Err(BuildError::new(format!(
            "redis source `{name}` is read by {} pipelines, but its consumer group `{}` hands each entry to one member; declare one redis source (with its own group) per pipeline",
            readers.len(),
            cfg.group
        )));
    }
    Ok(Box::new(RedisSource {
        name: name.to_owned(),
        cfg: cfg.clone(),
        client: crate::client("source", name, &cfg.url, &cfg.tls)?,
    }))
}

impl Source for RedisSource {
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            Ok(vec![Box::new(RedisFeed {
                name: self.name.clone(),
                cfg: self.cfg.clone(),
                client: self.client.clone(),
                connection: None,
                group_checked: false,
                history: Some("0".to_owned()),
                claim_cursor: "0-0".to_owned(),
                next_claim: Instant::now(),
                next_position: 1,
                in_flight: BTreeMap::new(),
                held: HashSet::new(),
                reading: None,
                gone: Vec::new(),
                sizer: ReadSizer::new(),
                refused: None,
            }) as Box<dyn Feed>])
        })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The COUNT of the next read, from the sizes of the entries read before.
#[derive(Debug)]
struct ReadSizer {
    count: usize,
}

impl ReadSizer {
    fn new() -> Self {
        Self { count: FIRST_READ }
    }

    /// The COUNT of the next read, at most `max` (and at least 1).
    fn count(&self, max: usize) -> usize {
        self.count.min(max).max(1)
    }

    /// Learns from a read whose largest entry had `largest` bytes (`None`: it had no
    /// entries). The next read asks for as many entries of that size as fit
    /// [`READ_BYTES`], at least 1 and at most [`MAX_READ`]; it shrinks at once and grows
    /// at most twofold, so smaller entries do not open the way to a read of many large
    /// ones in one step.
    fn observe(&mut self, largest: Option<usize>) {
        let Some(largest) = largest else {
            return;
        };
        let fit = READ_BYTES / largest.max(1);
        self.count = fit.min(self.count.saturating_mul(2)).clamp(1, MAX_READ);
    }
}

/// The bytes an entry holds: its field names and values.
fn entry_size(entry: &StreamId) -> usize {
    entry
        .map
        .iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &Value) -> usize {
    match value {
        Value::BulkString(b) => b.len(),
        Value::SimpleString(s) => s.len(),
        Value::Array(items) => items.iter().map(value_size).sum(),
        _ => 8,
    }
}

/// Which read comes next.
enum Read {
    /// This member's own pending entries after this id.
    History(String),
    /// Idle entries of the group from this cursor.
    Claim(String),
    /// New entries.
    New,
}

enum Reply {
    History(Result<Value, RedisError>),
    Claim(Result<Value, RedisError>),
    New(Result<Value, RedisError>),
}

async fn read(
    mut c: MultiplexedConnection,
    cfg: RedisSourceConfig,
    kind: Read,
    count: usize,
) -> Reply {
    let group = |cmd: &mut redis::Cmd| {
        cmd.arg("GROUP")
            .arg(&cfg.group)
            .arg(&cfg.consumer)
            .arg("COUNT")
            .arg(count);
    };
    match kind {
        Read::History(after) => {
            let mut cmd = redis::cmd("XREADGROUP");
            group(&mut cmd);
            cmd.arg("STREAMS").arg(&cfg.stream).arg(after);
            Reply::History(cmd.query_async(&mut c).await)
        }
        Read::Claim(cursor) => Reply::Claim(
            redis::cmd("XAUTOCLAIM")
                .arg(&cfg.stream)
                .arg(&cfg.group)
                .arg(&cfg.consumer)
                .arg(u64::try_from(cfg.claim_idle.as_millis()).unwrap_or(u64::MAX))
                .arg(cursor)
                .arg("COUNT")
                .arg(count)
                .query_async(&mut c)
                .await,
        ),
        Read::New => {
            let mut cmd = redis::cmd("XREADGROUP");
            group(&mut cmd);
            cmd.arg("BLOCK")
                .arg(u64::try_from(BLOCK.as_millis()).unwrap_or(1000))
                .arg("STREAMS")
                .arg(&cfg.stream)
                .arg(">");
            Reply::New(cmd.query_async(&mut c).await)
        }
    }
}

/// The group member as a pipeline reader's [`Feed`].
pub struct RedisFeed {
    name: String,
    cfg: RedisSourceConfig,
    client: Client,
    connection: Option<MultiplexedConnection>,
    group_checked: bool,
    /// While reading this member's own pending entries: the id after which to read on.
    history: Option<String>,
    claim_cursor: String,
    next_claim: Instant,
    next_position: Position,
    /// Handed out, not yet committed: position → entry id.
    in_flight: BTreeMap<Position, String>,
    /// The entry ids of `in_flight`, so a claimed entry is not handed out twice.
    held: HashSet<String>,
    /// The read in progress.
    reading: Option<tokio::task::JoinHandle<Reply>>,
    /// Pending entries that were trimmed from the stream, to acknowledge.
    gone: Vec<String>,
    /// Sizes the COUNT of each read.
    sizer: ReadSizer,
    /// An entry above `max_entry_bytes` was read: why the feed stops (after handing out
    /// the entries before it).
    refused: Option<String>,
}

impl RedisFeed {
    fn error(&mut self, what: &str, e: &RedisError) -> FeedError {
        if crate::connection_lost(e) {
            self.connection = None;
            // A read whose reply was lost left its entries pending to this member: read
            // the member's pending entries again first (those it holds are skipped), so
            // they come before newer ones instead of after `claim_idle`.
            self.history = Some("0".to_owned());
        }
        FeedError::Transient(format!("source `{}`: {what}: {e}", self.name))
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, FeedError> {
        if let Some(c) = &self.connection {
            return Ok(c.clone());
        }
        let c = crate::connect(&self.client, TIMEOUT + BLOCK)
            .await
            .map_err(|e| {
                FeedError::Transient(format!(
                    "source `{}`: cannot connect to redis at {}: {e}",
                    self.name,
                    switchyard_config::redact::url(&self.cfg.url)
                ))
            })?;
        self.connection = Some(c.clone());
        Ok(c)
    }

    /// With `create`: makes the group (and the stream) reading from the start; an
    /// existing group is kept.
    async fn ensure_group(&mut self, c: &mut MultiplexedConnection) -> Result<(), FeedError> {
        if self.group_checked || !self.cfg.create {
            return Ok(());
        }
        let created: Result<Value, RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.cfg.stream)
            .arg(&self.cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(c)
            .await;
        match created {
            Ok(_) => info!(source = %self.name, stream = %self.cfg.stream, group = %self.cfg.group,
                "created redis consumer group (create = true)"),
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(self.error("cannot create the consumer group", &e)),
        }
        self.group_checked = true;
        Ok(())
    }

    fn no_group(&self) -> FeedError {
        FeedError::Transient(format!(
            "source `{}`: redis stream `{}` has no consumer group `{}`; create it with \
             `redis-cli XGROUP CREATE {} {} 0 MKSTREAM`, or set create = true",
            self.name, self.cfg.stream, self.cfg.group, self.cfg.stream, self.cfg.group
        ))
    }

    /// Hands out `entries` not already held, up to the first one above `max_entry_bytes`
    /// (which sets `refused`; it and those after it stay pending to this member).
    fn take(&mut self, entries: Vec<StreamId>, batch: &mut Batch) {
        let max_entry = usize::try_from(self.cfg.max_entry_bytes.as_u64()).unwrap_or(usize::MAX);
        self.sizer.observe(entries.iter().map(entry_size).max());
        for entry in entries {
            if self.held.contains(&entry.id) {
                continue;
            }
            let size = entry_size(&entry);
            if size > max_entry {
                self.refused = Some(self.too_large(&entry.id, size));
                return;
            }
            if entry.map.is_empty() {
                // Pending, but trimmed from the stream (XTRIM, MAXLEN): nothing to hand
                // out; acknowledged with the next commit.
                self.gone.push(entry.id);
                continue;
            }
            let position = self.next_position;
            self.next_position += 1;
            let event = to_event(&self.name, &self.cfg.stream, &entry);
            self.held.insert(entry.id.clone());
            self.in_flight.insert(position, entry.id);
            batch.push(position, event);
        }
    }

    fn too_large(&self, id: &str, size: usize) -> String {
        let stream = &self.cfg.stream;
        format!(
            "source `{}`: entry {id} of redis stream `{stream}` holds {size} bytes, above \
             max_entry_bytes = {} ({} bytes); raise max_entry_bytes of this source above \
             {size} and restart, or delete the entry (`redis-cli XDEL {stream} {id}`: it is \
             then acknowledged without being handed out) and restart. Nothing after it was \
             handed out: it and the entries after it stay pending and are read again",
            self.name,
            self.cfg.max_entry_bytes,
            self.cfg.max_entry_bytes.as_u64(),
        )
    }

    /// Starts the next read as a task: the reader drops a `next` on every tick of its
    /// commit timer, and a dropped XREADGROUP would leave its entries pending to this
    /// member until they are claimed back; a task's reply is kept for the next call.
    fn start_read(&mut self, c: MultiplexedConnection, max: usize) {
        let count = self.sizer.count(max.min(MAX_READ));
        let cfg = self.cfg.clone();
        let kind = if let Some(after) = self.history.clone() {
            Read::History(after)
        } else if Instant::now() >= self.next_claim {
            Read::Claim(self.claim_cursor.clone())
        } else {
            Read::New
        };
        self.reading = Some(tokio::spawn(read(c, cfg, kind, count)));
    }

    async fn read(&mut self, max: usize) -> Result<Batch, FeedError> {
        if let Some(why) = &self.refused {
            return Err(FeedError::Permanent(why.clone()));
        }
        if self.reading.is_none() {
            let mut c = self.connection().await?;
            self.ensure_group(&mut c).await?;
            self.start_read(c, max);
        }
        let task = self.reading.as_mut().expect("started");
        let done = task.await;
        self.reading = None;
        let reply = done.map_err(|e| {
            FeedError::Transient(format!("source `{}`: read task failed: {e}", self.name))
        })?;
        let mut batch = Batch::with_capacity(self.sizer.count(max.min(MAX_READ)));
        match reply {
            Reply::History(entries) => {
                let entries = self.entries(entries)?;
                self.history = entries.last().map(|last| last.id.clone());
                self.take(entries, &mut batch);
            }
            Reply::Claim(claimed) => {
                let reply = match claimed {
                    Ok(r) => claim_reply(&r),
                    Err(e) if e.code() == Some("NOGROUP") => return Err(self.no_group()),
                    Err(e) => return Err(self.error("XAUTOCLAIM failed", &e)),
                };
                if reply.next_stream_id == "0-0" {
                    self.next_claim = Instant::now() + self.cfg.claim_idle / 2;
                }
                self.claim_cursor = reply.next_stream_id;
                self.take(reply.claimed, &mut batch);
                if !batch.is_empty() {
                    info!(source = %self.name, entries = batch.len(),
                        "claimed redis entries left idle for claim_idle");
                }
            }
            Reply::New(entries) => {
                let entries = self.entries(entries)?;
                self.take(entries, &mut batch);
            }
        }
        Ok(batch)
    }

    fn entries(&mut self, reply: Result<Value, RedisError>) -> Result<Vec<StreamId>, FeedError> {
        match reply {
            Ok(r) => Ok(read_reply(&r)),
            Err(e) if e.code() == Some("NOGROUP") => Err(self.no_group()),
            Err(e) => Err(self.error("XREADGROUP failed", &e)),
        }
    }
}

/// The entries of an XREADGROUP reply (one stream), read from the raw reply rather than
/// redis-rs's typed one: an entry whose field names are not UTF-8 would make the typed
/// parse fail the whole reply — read again after the error, failing again, forever.
/// Here such names are taken lossily, like values.
fn read_reply(value: &Value) -> Vec<StreamId> {
    match value {
        // RESP2: [[key, entries], …]
        Value::Array(streams) => streams
            .iter()
            .flat_map(|stream| match stream {
                Value::Array(pair) => pair.get(1).map(entry_list).unwrap_or_default(),
                _ => Vec::new(),
            })
            .collect(),
        // RESP3: {key: entries, …}
        Value::Map(streams) => streams.iter().flat_map(|(_, e)| entry_list(e)).collect(),
        // Nil: BLOCK timed out.
        _ => Vec::new(),
    }
}

/// An XAUTOCLAIM reply: [next cursor, entries, deleted ids].
fn claim_reply(value: &Value) -> StreamAutoClaimReply {
    let Value::Array(parts) = value else {
        return StreamAutoClaimReply::default();
    };
    StreamAutoClaimReply {
        next_stream_id: parts.first().and_then(text).unwrap_or_else(|| "0-0".into()),
        claimed: parts.get(1).map(entry_list).unwrap_or_default(),
        deleted_ids: match parts.get(2) {
            Some(Value::Array(ids)) => ids.iter().filter_map(text).collect(),
            _ => Vec::new(),
        },
        ..Default::default()
    }
}

/// `[[id, [field, value, …]], …]`; an entry trimmed from the stream comes as `[id, nil]`
/// (no fields).
fn entry_list(value: &Value) -> Vec<StreamId> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(pair) = entry else {
                return None;
            };
            let id = text(pair.first()?)?;
            let map = match pair.get(1) {
                Some(Value::Array(fields)) => fields
                    .chunks_exact(2)
                    .filter_map(|kv| Some((text(&kv[0])?, kv[1].clone())))
                    .collect(),
                Some(Value::Map(fields)) => fields
                    .iter()
                    .filter_map(|(k, v)| Some((text(k)?, v.clone())))
                    .collect(),
                _ => HashMap::new(),
            };
            Some(StreamId {
                id,
                map,
                ..Default::default()
            })
        })
        .collect()
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn bytes(value: &Value) -> Vec<u8> {
    match value {
        Value::BulkString(b) => b.clone(),
        other => text(other).unwrap_or_default().into_bytes(),
    }
}

/// The event of an entry: what a switchyard `redis` sink wrote is mapped back (id, kind,
/// key, content type, payload, headers); an entry without a `payload` field becomes a
/// JSON object of its fields.
fn to_event(source: &str, stream: &str, entry: &StreamId) -> Event {
    let map = &entry.map;
    let header_fields: BTreeMap<&str, String> = map
        .iter()
        .filter_map(|(name, value)| {
            name.strip_prefix(fields::HEADER_PREFIX)
                .map(|n| (n, text(value).unwrap_or_default()))
        })
        .take(MAX_FIELDS)
        .collect();
    let mut headers: Vec<(String, String)> = header_fields
        .into_iter()
        .map(|(n, v)| (n.to_owned(), v))
        .collect();
    headers.push((fields::ENTRY_ID_HEADER.to_owned(), entry.id.clone()));
    let (payload, content_type) = match map.get(fields::PAYLOAD) {
        Some(p) => (
            bytes(p),
            map.get(fields::CONTENT_TYPE)
                .and_then(text)
                .unwrap_or_else(|| "application/octet-stream".into()),
        ),
        None => {
            let object: serde_json::Map<String, serde_json::Value> = map
                .iter()
                .take(MAX_FIELDS)
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::Value::String(text(v).unwrap_or_default()),
                    )
                })
                .collect::<HashMap<_, _>>()
                .into_iter()
                .collect();
            (
                serde_json::to_vec(&object).unwrap_or_default(),
                "application/json".into(),
            )
        }
    };
    let timestamp_ms = entry
        .id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        });
    Event {
        id: map
            .get(fields::ID)
            .and_then(text)
            .unwrap_or_else(|| format!("{stream}/{}", entry.id))
            .into(),
        source: source.into(),
        kind: map
            .get(fields::KIND)
            .and_then(text)
            .map_or_else(|| KIND_MESSAGE.into(), Into::into),
        key: map.get(fields::KEY).map(bytes),
        payload,
        content_type: content_type.into(),
        headers,
        timestamp_ms,
        payload_is_compact_json: false,
    }
}

impl Feed for RedisFeed {
    fn start(&self) -> Position {
        1
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(async move {
            loop {
                let batch = self.read(max).await?;
                if !batch.is_empty() {
                    return Ok(Some(batch));
                }
            }
        })
    }

    fn commit(&mut self, low: Position) -> BoxFuture<'_, Result<(), FeedError>> {
        Box::pin(async move {
            let done: Vec<(Position, String)> = self
                .in_flight
                .range(..low)
                .map(|(p, id)| (*p, id.clone()))
                .collect();
            if done.is_empty() && self.gone.is_empty() {
                return Ok(());
            }
            let mut c = self.connection().await?;
            if !self.gone.is_empty() {
                let acked: Result<u64, RedisError> = redis::cmd("XACK")
                    .arg(&self.cfg.stream)
                    .arg(&self.cfg.group)
                    .arg(&self.gone)
                    .query_async(&mut c)
                    .await;
                if let Err(e) = acked {
                    return Err(self.error("XACK failed", &e));
                }
                self.gone.clear();
            }
            for chunk in done.chunks(MAX_READ) {
                let acked: Result<u64, RedisError> = redis::cmd("XACK")
                    .arg(&self.cfg.stream)
                    .arg(&self.cfg.group)
                    .arg(chunk.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>())
                    .query_async(&mut c)
                    .await;
                if let Err(e) = acked {
                    return Err(self.error("XACK failed", &e));
                }
                for (position, id) in chunk {
                    self.in_flight.remove(position);
                    self.held.remove(id);
                }
            }
            Ok(())
        })
    }

    fn lag(&self, low: Position) -> u64 {
        self.in_flight.range(low..).count() as u64
    }

    fn partition(&self) -> u32 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, fields: &[(&str, &str)]) -> StreamId {
        StreamId {
            id: id.into(),
            map: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::BulkString(v.as_bytes().to_vec())))
                .collect(),
            milliseconds_elapsed_from_delivery: None,
            delivered_count: None,
        }
    }

    fn feed(max_entry_bytes: u64) -> RedisFeed {
        let cfg = RedisSourceConfig {
            url: "redis://127.0.0.1:1".into(),
            stream: "s".into(),
            max_entry_bytes: max_entry_bytes.into(),
            ..RedisSourceConfig::default()
        };
        RedisFeed {
            name: "src".into(),
            client: Client::open(cfg.url.as_str()).unwrap(),
            cfg,
            connection: None,
            group_checked: false,
            history: None,
            claim_cursor: "0-0".into(),
            next_claim: Instant::now(),
            next_position: 1,
            in_flight: BTreeMap::new(),
            held: HashSet::new(),
            reading: None,
            gone: Vec::new(),
            sizer: ReadSizer::new(),
            refused: None,
        }
    }

    #[test]
    fn a_read_asks_for_as_many_entries_as_fit_its_bytes() {
        let mut sizer = ReadSizer::new();
        assert_eq!(sizer.count(1000), FIRST_READ, "before any size is known");
        assert_eq!(sizer.count(3), 3, "never more than the reader asks for");
        // Small entries: the count grows, at most twofold per read, up to MAX_READ.
        let mut counts = Vec::new();
        for _ in 0..10 {
            sizer.observe(Some(100));
            counts.push(sizer.count(usize::MAX));
        }
        assert_eq!(counts[..3], [16, 32, 64]);
        assert_eq!(*counts.last().unwrap(), MAX_READ);
        // An empty read teaches nothing.
        sizer.observe(None);
        assert_eq!(sizer.count(usize::MAX), MAX_READ);
        // Large entries: it shrinks at once, so a read holds about READ_BYTES.
        sizer.observe(Some(1 << 20));
        assert_eq!(sizer.count(usize::MAX), READ_BYTES / (1 << 20));
        // An entry above READ_BYTES is read alone.
        sizer.observe(Some(READ_BYTES * 4));
        assert_eq!(sizer.count(usize::MAX), 1);
        sizer.observe(Some(1 << 20));
        assert_eq!(
            sizer.count(usize::MAX),
            2,
            "grows twofold, not to 8 at once"
        );
    }

    #[test]
    fn an_entry_above_max_entry_bytes_stops_the_feed_after_those_before_it() {
        let mut feed = feed(100);
        let big = "x".repeat(200);
        let mut batch = Batch::default();
        feed.take(
            vec![
                entry("1-0", &[("payload", "a")]),
                entry("2-0", &[("payload", big.as_str())]),
                entry("3-0", &[("payload", "c")]),
            ],
            &mut batch,
        );
        assert_eq!(batch.len(), 1, "only the entry before the large one");
        assert_eq!(feed.in_flight.len(), 1);
        let why = feed.refused.clone().expect("refused");
        assert!(why.contains("entry 2-0 of redis stream `s`"), "{why}");
        assert!(why.contains("207 bytes"), "{why}");
        assert!(why.contains("max_entry_bytes"), "{why}");
        assert!(why.contains("redis-cli XDEL s 2-0"), "{why}");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let next = runtime.block_on(feed.read(10));
        assert!(
            matches!(next, Err(FeedError::Permanent(ref m)) if m == &why),
            "{next:?}"
        );
    }

    #[test]
    fn what_a_redis_sink_wrote_comes_back_as_the_event() {
        let e = to_event(
            "src",
            "s",
            &entry(
                "1700000000000-3",
                &[
                    ("id", "e-1"),
                    ("source", "api"),
                    ("kind", "insert"),
                    ("content-type", "application/json"),
                    ("key", "k1"),
                    ("payload", "{\"a\":1}"),
                    ("header:trace", "t1"),
                ],
            ),
        );
        assert_eq!(e.id, "e-1");
        assert_eq!(e.source, "src", "the event is this source's");
        assert_eq!(e.kind, "insert");
        assert_eq!(e.key.as_deref(), Some(&b"k1"[..]));
        assert_eq!(e.payload, b"{\"a\":1}");
        assert_eq!(e.content_type, "application/json");
        assert_eq!(e.header("trace"), Some("t1"));
        assert_eq!(e.header("redis-entry-id"), Some("1700000000000-3"));
        assert_eq!(e.timestamp_ms, 1_700_000_000_000);
    }

    #[test]
    fn an_entry_of_another_writer_becomes_a_json_object_of_its_fields() {
        let e = to_event(
            "src",
            "orders",
            &entry("5-0", &[("order", "7"), ("status", "paid")]),
        );
        assert_eq!(e.id, "orders/5-0");
        assert_eq!(e.kind, "message");
        assert_eq!(e.key, None);
        assert_eq!(e.content_type, "application/json");
        let body: serde_json::Value = serde_json::from_slice(&e.payload).unwrap();
        assert_eq!(body, serde_json::json!({"order": "7", "status": "paid"}));
    }

    #[test]
    fn a_field_name_that_is_not_utf8_does_not_fail_the_reply() {
        let bulk = |b: &[u8]| Value::BulkString(b.to_vec());
        let entry = |id: &str, fields: Vec<Value>| {
            Value::Array(vec![bulk(id.as_bytes()), Value::Array(fields)])
        };
        let reply = Value::Array(vec![Value::Array(vec![
            bulk(b"s"),
            Value::Array(vec![
                entry("1-0", vec![bulk(b"\xffname"), bulk(b"x")]),
                Value::Array(vec![bulk(b"2-0"), Value::Nil]),
                entry("3-0", vec![bulk(b"payload"), bulk(b"{}")]),
            ]),
        ])]);
        let entries = read_reply(&reply);
        let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1-0", "2-0", "3-0"]);
        assert!(
            entries[0].map.contains_key("\u{fffd}name"),
            "{:?}",
            entries[0].map
        );
        assert!(entries[1].map.is_empty(), "a trimmed entry has no fields");
        assert!(read_reply(&Value::Nil).is_empty());

        let claimed = claim_reply(&Value::Array(vec![
            bulk(b"5-0"),
            Value::Array(vec![entry("4-0", vec![bulk(b"\xfe"), bulk(b"y")])]),
            Value::Array(vec![bulk(b"0-1")]),
        ]));
        assert_eq!(claimed.next_stream_id, "5-0");
        assert_eq!(claimed.claimed.len(), 1);
        assert_eq!(claimed.deleted_ids, ["0-1"]);
    }
}
