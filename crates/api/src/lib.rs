//! The types of switchyard's HTTP API: what each endpoint takes and answers, written once
//! and shared by the server (`switchyard-runtime`, `switchyard-source-http`), the CLI and
//! the benchmarks (`xtask`). The field names are a user contract (`README.md`,
//! `docs/queues.md`, `docs/openapi.yaml`): add fields, never rename them.
//!
//! Serde only: no IO, no async runtime, no HTTP stack. The server turns [`ErrorBody`]
//! into an HTTP answer (`switchyard_source_http::ApiError`, which the runtime shares), so
//! this crate stays free of axum and the CLI does not build a server to read answers.
//!
//! # Strict requests, lenient answers
//!
//! * **Requests** are `#[serde(deny_unknown_fields)]`: a misspelt field is a mistake the
//!   sender must hear about (the server answers 400 naming it), never silently ignored.
//! * **Answers** accept unknown fields and default what is missing. The CLI of one version
//!   talks to servers of other versions: a server that adds a field to an answer (allowed
//!   by the contract) must not break an older CLI. Answers are still written from these
//!   types by the server, so what the server sends and what clients read cannot drift.
//!
//! # Events in answers
//!
//! An answer that carries an event (receive, admin listings) carries its JSON wire form,
//! defined once by [`switchyard_event::WireEvent`]. The server writes it from the event
//! ([`EventOut`]); clients read the same fields back ([`EventView`], [`ReceivedMessage`]),
//! with the payload kept as JSON (or as a type of the client's choice).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchyard_event::WireEvent;

/// Every error answer, whatever the endpoint: a 4xx/5xx status and
/// `{"error": "what went wrong and how to fix it"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

fn is_false(b: &bool) -> bool {
    !*b
}

// ---------------------------------------------------------------------------------------
// Ingest: POST /ingest/{source}

/// `200` to `POST /ingest/{source}`: the ids of the events, in the order of the body.
/// `duplicate` is present (and `true`) only when an `Idempotency-Key` repeated a request
/// within the source's `dedup_window`: the ids are those of the first request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngestAnswer {
    pub ids: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

// ---------------------------------------------------------------------------------------
// Queues: produce

/// One message of `POST /queues/{queue}/messages` (`docs/queues.md`). Exactly one of
/// `payload` (any JSON value, `null` included) and `payload_base64` is given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceMessage {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub payload: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_base64: Option<String>,
    /// Default `application/json`, or `application/octet-stream` with `payload_base64`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Partition and FIFO key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// 0..=9, higher first; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// A duration such as `"30s"`, at most 7 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Milliseconds since the Unix epoch (instead of `delay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// Header name → value, in order. Names starting with `switchyard-` are reserved.
    #[serde(default, with = "ordered_map", skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

impl ProduceMessage {
    /// The field names a message may have, in the order they are written.
    pub const FIELDS: &'static [&'static str] = &[
        "payload",
        "payload_base64",
        "content_type",
        "key",
        "priority",
        "delay",
        "not_before",
        "headers",
        "idempotency_key",
    ];
}

/// `{"messages": [...]}`: 1 to 1000 messages in one produce.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProduceBatch {
    pub messages: Vec<ProduceMessage>,
}

impl ProduceBatch {
    /// The field names of a batch.
    pub const FIELDS: &'static [&'static str] = &["messages"];
}

/// The body of `POST /queues/{queue}/messages`: one message, or a batch.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ProduceRequest {
    One(Box<ProduceMessage>),
    Batch(ProduceBatch),
}

/// `201` to a produce, once the messages are durable: one entry per message, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProduceAnswer {
    pub messages: Vec<Produced>,
}

/// Where one produced message was stored; for a duplicate (its idempotency key was
/// produced within the queue's `dedup_window`) only the first message's `id`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Produced {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default)]
    pub duplicate: bool,
}

// ---------------------------------------------------------------------------------------
// Queues: receive, ack, nack, extend

/// The body of `POST /queues/{queue}/groups/{group}/receive` (all optional; an empty
/// body is `{}`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiveRequest {
    /// 1..=1000, default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// Long-poll up to this duration (at most 60s) for at least one message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// The lease of these messages instead of the queue's `ack_timeout` (at most 7d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_timeout: Option<String>,
}

impl ReceiveRequest {
    pub const FIELDS: &'static [&'static str] = &["max", "wait", "ack_timeout"];
}

/// `200` to a receive: the leased messages (possibly none). `P` is how the client wants
/// the payloads (any JSON by default).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(bound(deserialize = "P: Deserialize<'de>"))]
pub struct ReceiveAnswer<P = Value> {
    pub messages: Vec<ReceivedMessage<P>>,
}

/// One received message as a client reads it: the event's wire form plus its lease.
/// A record that could not be decoded has only `decode_error` of the event's fields.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ReceivedMessage<P = Value> {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_encoding: Option<String>,
    #[serde(default)]
    pub timestamp_ms: u64,
    #[serde(default)]
    pub content_type: String,
    #[serde(default, with = "ordered_map")]
    pub headers: Vec<(String, String)>,
    #[serde(default = "none")]
    pub payload: Option<P>,
    #[serde(default)]
    pub payload_encoding: Option<String>,
    #[serde(default)]
    pub decode_error: Option<String>,
    /// Opaque; what ack, nack and extend take.
    pub receipt: String,
    pub partition: u32,
    pub offset: u64,
    pub priority: u8,
    /// 1 on the first delivery.
    pub deliveries: u32,
    pub lease_expires_ms: u64,
}

fn none<P>() -> Option<P> {
    None
}

/// A received message as the server writes it: the event's wire form, then the lease.
#[derive(Serialize)]
pub struct ReceivedOut<'a> {
    #[serde(flatten)]
    pub event: EventOut<'a>,
    pub receipt: String,
    pub partition: u32,
    pub offset: u64,
    pub priority: u8,
    pub deliveries: u32,
    pub lease_expires_ms: u64,
}

/// The answer to a receive as the server writes it.
#[derive(Serialize)]
pub struct ReceiveAnswerOut<'a> {
    pub messages: Vec<ReceivedOut<'a>>,
}

/// The body of `POST .../ack`, `.../nack` and `.../extend`: the receipts of a receive;
/// `delay` only for nack (redeliver no sooner), `by` only for extend (the new lease,
/// from now; default the queue's `ack_timeout`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettleRequest {
    pub receipts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

impl SettleRequest {
    /// The fields every settle call takes; `delay` (nack) and `by` (extend) come on top.
    pub const FIELDS: &'static [&'static str] = &["receipts"];
}

/// `200` to an ack: how many were acked; `stale` lists receipts whose lease was lost
/// (nothing changed for those).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AckAnswer {
    #[serde(default)]
    pub acked: u64,
    #[serde(default)]
    pub stale: Vec<String>,
}

/// `200` to a nack.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NackAnswer {
    #[serde(default)]
    pub nacked: u64,
    #[serde(default)]
    pub stale: Vec<String>,
}

/// `200` to an extend: the latest new lease end, `null` when none was extended.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtendAnswer {
    #[serde(default)]
    pub extended: u64,
    #[serde(default)]
    pub lease_expires_ms: Option<u64>,
    #[serde(default)]
    pub stale: Vec<String>,
}

/// `200` to `DELETE /queues/{queue}/groups/{group}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupDeleted {
    pub queue: String,
    pub group: String,
    pub deleted: bool,
}

// ---------------------------------------------------------------------------------------
// Queues: stats

/// `GET /queues/{queue}/stats`, and each entry of `GET /queues`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStats {
    pub queue: String,
    #[serde(default)]
    pub partitions: Option<u64>,
    #[serde(default)]
    pub messages: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub max_bytes: Option<u64>,
    #[serde(default)]
    pub oldest_age_ms: Option<u64>,
    /// By group name, in order: pub/sub groups (sorted), then work groups.
    #[serde(default, with = "ordered_map")]
    pub groups: Vec<(String, GroupStats)>,
    #[serde(default)]
    pub work_groups: Option<u64>,
    #[serde(default)]
    pub max_groups: Option<u64>,
    #[serde(default)]
    pub work_memory_bytes: Option<u64>,
    #[serde(default)]
    pub max_work_memory: Option<u64>,
    /// Where this queue's dead letters go, `null` when it has none (or is its own).
    #[serde(default)]
    pub dead_letter: Option<DeadLetterStats>,
}

/// One group in [`QueueStats`]. A pub/sub group has only `mode` and `depth`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStats {
    /// `pubsub` or `work`.
    pub mode: String,
    /// What the group has not finished.
    #[serde(default)]
    pub depth: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delayed: Option<u64>,
    /// Work groups only; `null` when nothing is loaded.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub oldest_age_ms: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_lettered: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

impl GroupStats {
    /// Whether this is a work group (not a pipeline's pub/sub group).
    pub fn is_work(&self) -> bool {
        self.mode == "work"
    }
}

/// The dead-letter queue of a queue in [`QueueStats`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterStats {
    pub queue: String,
    #[serde(default)]
    pub messages: Option<u64>,
}

/// `GET /queues`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueList {
    pub queues: Vec<QueueStats>,
}

// ---------------------------------------------------------------------------------------
// Admin API

/// The query of `GET /admin/queues/{queue}/messages` and `GET /admin/dlq/{queue}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Only records at or after this offset (per partition); default: from the replay
    /// position (dead letters) or the oldest record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many records in all (default 100, at most 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

impl ListQuery {
    pub const DEFAULT_LIMIT: usize = 100;
    pub const MAX_LIMIT: usize = 10_000;
}

/// An event in an answer, as the server writes it: its wire form, or why its stored
/// record could not be decoded.
#[derive(Serialize)]
#[serde(untagged)]
pub enum EventOut<'a> {
    Event(WireEvent<'a>),
    Undecodable { decode_error: String },
}

impl<'a> EventOut<'a> {
    /// A stored event's answer: its wire form, or why its record could not be decoded.
    pub fn of(event: &'a Result<switchyard_event::Event, switchyard_event::DecodeError>) -> Self {
        match event {
            Ok(e) => EventOut::Event(e.wire()),
            Err(e) => EventOut::Undecodable {
                decode_error: e.to_string(),
            },
        }
    }
}

/// A stored record in an admin answer, as the server writes it.
#[derive(Serialize)]
pub struct RecordOut<'a> {
    pub partition: u32,
    pub offset: u64,
    pub event: EventOut<'a>,
}

/// A stored record in an admin answer, as a client reads it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Record {
    #[serde(default)]
    pub partition: u32,
    #[serde(default)]
    pub offset: u64,
    pub event: EventView,
}

/// An event's wire form as a client reads it (see [`switchyard_event::Event::wire`]);
/// `decode_error` instead of the event for a record that could not be decoded. Written
/// back, it is the wire form again (field order and optional fields as the server's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct EventView {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_error: Option<String>,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_encoding: Option<String>,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub timestamp_ms: u64,
    #[serde(default)]
    pub content_type: String,
    #[serde(default, with = "ordered_map")]
    pub headers: Vec<(String, String)>,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_encoding: Option<String>,
}

impl EventView {
    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /admin/queues/{queue}/messages`.
#[derive(Serialize)]
pub struct MessagesOut<'a> {
    pub queue: &'a str,
    pub messages: Vec<RecordOut<'a>>,
}

/// `GET /admin/queues/{queue}/messages`, as a client reads it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Messages {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub messages: Vec<Record>,
}

/// `GET /admin/dlq/{queue}`: dead letters not yet replayed.
#[derive(Serialize)]
pub struct DeadLettersOut<'a> {
    pub queue: &'a str,
    pub dead_letters: Vec<RecordOut<'a>>,
}

/// `GET /admin/dlq/{queue}`, as a client reads it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct DeadLetters {
    #[serde(default)]
    pub queue: String,
    #[serde(default)]
    pub dead_letters: Vec<Record>,
}

/// The body of `POST /admin/dlq/{queue}/replay` (optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Only dead letters of this sink (others are skipped over and stay listed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// At most this many (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Only the dead letters with these event ids (others are skipped over and stay
    /// listed, like those of another sink).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

impl ReplayRequest {
    pub const DEFAULT_LIMIT: usize = 1000;
}

/// `200` to a replay, once every replayed event completed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayAnswer {
    pub queue: String,
    #[serde(default)]
    pub replayed: u64,
    #[serde(default)]
    pub skipped: u64,
}

/// `200` to `POST /admin/dlq/{queue}/purge`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeAnswer {
    pub queue: String,
    #[serde(default)]
    pub purged: u64,
}

/// `GET /admin/sources/{source}/status` of a `postgres_cdc` source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStatus {
    pub source: String,
    pub status: CdcStatus,
}

/// A Postgres source's replication and snapshot status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CdcStatus {
    #[serde(default)]
    pub slot: String,
    /// `leader` (this instance reads the slot), `standby` (another one does) or
    /// `starting`.
    #[serde(default)]
    pub role: String,
    /// The slot's advisory lock key in the source database (held by the leader).
    #[serde(default)]
    pub lock_key: i64,
    #[serde(default)]
    pub connected: bool,
    /// The LSN last confirmed to the server.
    #[serde(default)]
    pub confirmed_lsn: String,
    /// WAL the slot holds back on the server, in bytes.
    #[serde(default)]
    pub slot_lag_bytes: i64,
    #[serde(default)]
    pub events: u64,
    /// Large transactions the server streams before their commit, held until it.
    #[serde(default)]
    pub streaming_transactions: u64,
    /// Bytes of them held in memory (bounded; the rest waits in spill files).
    #[serde(default)]
    pub streaming_buffered_bytes: u64,
    /// Bytes written to spill files since the start.
    #[serde(default)]
    pub spilled_bytes: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Stopped for good (a problem the user must fix).
    #[serde(default)]
    pub stopped: bool,
    #[serde(default)]
    pub reconnects: u64,
    /// Snapshot progress by table.
    #[serde(default, with = "ordered_map")]
    pub snapshot: Vec<(String, SnapshotProgress)>,
}

/// Snapshot progress of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotProgress {
    /// `pending`, `running`, `paused`, `cancelled`, `done`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub rows_emitted: u64,
    #[serde(default)]
    pub rows_acknowledged: u64,
    /// Rows the planner expects the snapshot to read.
    #[serde(default)]
    pub rows_estimate: Option<u64>,
    /// Rows acknowledged per second, measured since this process started the table.
    #[serde(default)]
    pub rows_per_second: Option<u64>,
    /// Seconds left at that rate.
    #[serde(default)]
    pub eta_seconds: Option<u64>,
    /// The condition of a filtered backfill (`switchyard snapshot TABLE --where …`).
    #[serde(default)]
    pub filter: Option<String>,
    /// Why the snapshot paused on its own: the server refused a chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The body of `POST /admin/sources/{source}/snapshot`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// `schema.table`.
    pub table: String,
    /// `start` (the default: the snapshot starts over), `pause`, `resume` or `cancel`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// With `start`: only rows for which this SQL condition holds.
    #[serde(default, rename = "where", skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// `200` to a snapshot request: `snapshot` is `started`, `paused`, `resumed` or
/// `cancelled`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStarted {
    pub source: String,
    pub table: String,
    pub snapshot: String,
}

// ---------------------------------------------------------------------------------------
// The operator console: GET /admin/state, /admin/events, /admin/history, /admin/config,
// POST /admin/config/validate

/// `200` to `GET /admin/state`, and each `state` event of `GET /admin/events`: the graph
/// of sources, pipelines and sinks with their counters (totals since the start), and
/// what `/readyz` says.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminState {
    /// When the state was taken, in milliseconds since the Unix epoch.
    #[serde(default)]
    pub time_ms: u64,
    #[serde(default)]
    pub ready: Readiness,
    #[serde(default)]
    pub sources: Vec<SourceNode>,
    #[serde(default)]
    pub pipelines: Vec<PipelineNode>,
    #[serde(default)]
    pub sinks: Vec<SinkNode>,
    #[serde(default)]
    pub queues: Vec<QueueNode>,
}

/// What `/readyz` answers: `ready`, or why not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Counters of one node, totals since the start (a rate is the difference of two).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Events in: accepted by a source, read by a pipeline, handed to a sink.
    #[serde(default)]
    pub events_in: u64,
    #[serde(default)]
    pub delivered: u64,
    #[serde(default)]
    pub retried: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    /// Refused requests (sources), failed plugin calls (pipelines).
    #[serde(default)]
    pub errors: u64,
}

/// A source: its name, `type` and state (`running`, `disconnected`, `stopped`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceNode {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state: String,
    /// Why it is not running, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default)]
    pub counters: NodeCounters,
    /// Postgres sources: bytes of WAL the slot holds back, as last measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot_lag_bytes: Option<i64>,
    /// Postgres sources: `max_slot_lag` in bytes, beyond which the source warns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_slot_lag_bytes: Option<u64>,
}

/// A pipeline: where it reads, its plugins in order, where it delivers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineNode {
    pub name: String,
    #[serde(default)]
    pub sources: Vec<String>,
    /// Filters, then transforms, then the router, each `kind:name` (`filter:only-paid`).
    #[serde(default)]
    pub plugins: Vec<String>,
    #[serde(default)]
    pub sinks: Vec<String>,
    #[serde(default)]
    pub dead_letter: String,
    /// `running`, or `stopped` when one of its readers stopped.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub counters: NodeCounters,
    /// One per source partition the pipeline reads: its checkpoint and what is in flight.
    #[serde(default)]
    pub readers: Vec<ReaderNode>,
    /// What each of its plugins did, in the order of `plugins` (totals since the start).
    #[serde(default)]
    pub plugin_stats: Vec<PluginStats>,
}

/// A pipeline's reader of one source partition, as it was at its last commit tick (every
/// 200 ms).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReaderNode {
    pub source: String,
    #[serde(default)]
    pub partition: u32,
    /// The low watermark: every position before it completed (delivered, dropped or
    /// dead-lettered).
    #[serde(default)]
    pub checkpoint: u64,
    /// The checkpoint the feed last stored: a restart reads again from here.
    #[serde(default)]
    pub committed: u64,
    /// Events read and not yet completed, or completed after an earlier one that is not.
    #[serde(default)]
    pub in_flight: u64,
    /// Events the source holds beyond the checkpoint, where the feed can tell.
    #[serde(default)]
    pub lag: u64,
}

/// What one plugin did (totals since the start; a plugin shared by pipelines counts for
/// all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginStats {
    /// `kind:name`, as in `plugins`.
    pub plugin: String,
    #[serde(default)]
    pub calls: u64,
    #[serde(default)]
    pub events: u64,
    /// Fuel burnt by all calls.
    #[serde(default)]
    pub fuel: u64,
    /// Time spent in calls, in microseconds.
    #[serde(default)]
    pub time_us: u64,
    /// Failed calls by cause (`trap`, `fuel`, `timeout`, `memory`, `returned_error`,
    /// `wrong_decision_count`); causes that never happened are left out.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
}

/// A sink: its name, `type` and state: `running`, `retrying` (retries recently, and
/// deliveries too), `failing` (retries or dead letters recently, no delivery) or
/// `stopped`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkNode {
    pub name: String,
    #[serde(default, rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub counters: NodeCounters,
    /// The sum of the delivery latencies of its batches, in microseconds: with
    /// `latency_count`, the mean latency between two samples.
    #[serde(default)]
    pub latency_sum_us: u64,
    /// Deliveries whose latency was measured.
    #[serde(default)]
    pub latency_count: u64,
}

/// A queue (declared, dead-letter, or a source's intake) and its work groups.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueNode {
    pub name: String,
    /// `queue`, `dead_letter` or `intake`.
    #[serde(default)]
    pub role: String,
    /// Records not yet consumed by the slowest consumer group.
    #[serde(default)]
    pub depth: u64,
    #[serde(default)]
    pub bytes: u64,
    /// Records appended since the queue was created (a rate is the difference of two).
    #[serde(default)]
    pub produced: u64,
    #[serde(default)]
    pub groups: Vec<GroupNode>,
}

/// A work group of a queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupNode {
    pub name: String,
    #[serde(default)]
    pub depth: u64,
    #[serde(default)]
    pub in_flight: u64,
    /// Messages waiting for their delay (`delay`, `not_before`, a nack with a delay).
    #[serde(default)]
    pub delayed: u64,
    #[serde(default)]
    pub dead_lettered: u64,
    /// A counter whose difference between two samples is the messages the group acked
    /// in between: the queue's `produced` less the group's `depth` and `dead_lettered`
    /// (its value also counts what was in the queue before the group began).
    #[serde(default)]
    pub acked: u64,
    /// Age of the oldest unfinished message, in milliseconds, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ms: Option<u64>,
}

/// `200` to `GET /admin/history`: one sample per `interval_ms` of every counter, the
/// oldest first, at most `capacity` samples. Series are named `sources.NAME.events_in`,
/// `pipelines.NAME.delivered`, `sinks.NAME.retried`, …; each has one value per time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default)]
    pub interval_ms: u64,
    #[serde(default)]
    pub capacity: usize,
    /// Milliseconds since the Unix epoch of each sample.
    #[serde(default)]
    pub times: Vec<u64>,
    #[serde(default)]
    pub series: std::collections::BTreeMap<String, Vec<u64>>,
}

/// `200` to `POST /admin/config/validate`: `ok`, or every problem found (nothing is
/// applied either way).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateAnswer {
    #[serde(default)]
    pub ok: bool,
    #[serde(default)]
    pub issues: Vec<ConfigIssue>,
    /// Problems that do not stop a start.
    #[serde(default)]
    pub warnings: Vec<ConfigIssue>,
}

/// One problem of a configuration: its key path (empty for the file as a whole), the
/// message, and where in the text when known.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigIssue {
    #[serde(default)]
    pub path: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

/// Any value, `null` included: the field was present.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A JSON object as name/value pairs in their order (names given twice keep both).
mod ordered_map {
    use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
    use serde::ser::{Serialize, SerializeMap, Serializer};

    pub fn serialize<S: Serializer, V: Serialize>(
        pairs: &[(String, V)],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(pairs.len()))?;
        for (k, v) in pairs {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>, V: Deserialize<'de>>(
        d: D,
    ) -> Result<Vec<(String, V)>, D::Error> {
        struct Pairs<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Pairs<V> {
            type Value = Vec<(String, V)>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Vec::new())
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
                while let Some(entry) = map.next_entry()? {
                    out.push(entry);
                }
                Ok(out)
            }
        }
        d.deserialize_any(Pairs(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests;
