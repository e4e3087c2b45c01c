//! switchyard's configuration: the typed model of the declarative file.
//!
//! The key names are a contract with users: keys may be added, never renamed, because
//! existing files must keep loading. Loading and validation live in [`load`]; every
//! problem is reported at once with its key path.
//!
//! Sources of values, later ones winning: the file (`.toml`, or `.yaml`/`.yml`), then
//! environment variables `SWITCHYARD_SECTION__KEY` (double underscore = one level,
//! e.g. `SWITCHYARD_SINKS__AUDIT__URL`); then `${VAR}` in any string is replaced from the
//! environment. See [`load`] for the details and [`load_str_with_env`] for tests.
//!
//! The structs below are the one definition of the keys: each derives serde's
//! `Deserialize`/`Serialize` with `deny_unknown_fields`, with defaults from the named
//! `DEFAULT_*` constants next to it. The loader's validator takes the key lists from
//! those derives ([`schema`]) and builds the same structs, so a key exists in one place;
//! the set of source and sink types is [`SourceKind`] and [`SinkKind`], and every
//! dispatch on them is an exhaustive `match`.
//!
//! Architecture invariant: no async runtime, no network; the only IO is reading the file.

mod graph;
pub mod load;
mod locate;
pub mod name_template;
pub mod outbound;
pub mod postgres_dsn;
pub mod redact;
pub mod schema;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use load::{ConfigError, Issue, load_file, load_file_with_env, load_str, load_str_with_env};
pub use units::ByteSize;

/// Seven days: a queue's default retention and work-group idle expiry.
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

/// The whole file.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub log: LogOutputConfig,
    pub queues: BTreeMap<String, QueueConfig>,
    pub sources: BTreeMap<String, SourceConfig>,
    pub plugins: BTreeMap<String, PluginConfig>,
    pub pipelines: BTreeMap<String, PipelineConfig>,
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Problems that do not stop a start, in file order (a webhook to a loopback or
    /// private address, to this switchyard's own server…): `switchyard validate` prints
    /// them, `switchyard run` logs each once at start. Empty for a config built in code.
    #[serde(skip)]
    pub warnings: Vec<Issue>,
}

/// `[server]`
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// HTTP ingest, queue API, `/metrics`, `/healthz`, `/readyz`. Default
    /// [`Self::DEFAULT_LISTEN`].
    pub listen: String,
    /// Internal log, checkpoints and dead letters. Default [`Self::DEFAULT_DATA_DIR`].
    pub data_dir: String,
    /// Bearer token for admin and queue-consume endpoints. `None`: each run makes a random
    /// one and keeps it in `<data_dir>/admin-token` (mode 0600).
    pub admin_token: Option<String>,
    /// How long shutdown waits for in-flight deliveries. Default
    /// [`Self::DEFAULT_SHUTDOWN_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub shutdown_timeout: Duration,
    /// Default dead-letter queue for pipelines that name none. Default
    /// [`Self::DEFAULT_DEAD_LETTER`]. It need not be declared under `[queues]`: an
    /// undeclared one is created with [`QueueConfig::default`].
    pub dead_letter: String,
    /// Listening beyond loopback without an ingest token on every `http` source and an
    /// `admin_token` is refused unless this says the user means it. Default false.
    pub insecure: bool,
    /// Open HTTP connections at most; the excess is shed at once. The cap actually used is
    /// lowered to keep file descriptors in reserve for the log, checkpoints and sinks.
    /// Default [`Self::DEFAULT_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (a new connection's first
    /// request included). Default [`Self::DEFAULT_HEADER_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub header_timeout: Duration,
    /// How long a client may take to send a whole request body. Default
    /// [`Self::DEFAULT_BODY_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests. Default
    /// [`Self::DEFAULT_IDLE_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub idle_timeout: Duration,
    /// Request bodies (and what they expand to) held in memory at once across all
    /// connections; past it requests get 429 with `Retry-After`. Default
    /// [`Self::DEFAULT_MAX_REQUEST_MEMORY`].
    pub max_request_memory: ByteSize,
    /// Bearer token `/metrics` asks for. `None`: `/metrics` is open.
    pub metrics_token: Option<String>,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<ServerTlsConfig>,
}

impl ServerConfig {
    /// Loopback only, port 8080: nothing is exposed until the user says so.
    pub const DEFAULT_LISTEN: &'static str = "127.0.0.1:8080";
    /// `./data`, relative to the working directory.
    pub const DEFAULT_DATA_DIR: &'static str = "./data";
    /// 30 seconds.
    pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
    /// `dead-letters`.
    pub const DEFAULT_DEAD_LETTER: &'static str = "dead-letters";
    /// 4096 connections.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
    /// 10 seconds.
    pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// 30 seconds.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
    /// 30 seconds.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
    /// 64 MiB.
    pub const DEFAULT_MAX_REQUEST_MEMORY: ByteSize = ByteSize(64 << 20);
}

/// `[server.tls]`: PEM files, read at start and again on SIGHUP. Both keys are required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerTlsConfig {
    /// Certificate chain, leaf first.
    pub cert: String,
    /// Private key (PKCS#8, PKCS#1 or SEC1).
    pub key: String,
}

/// Tokens shorter than this are refused: a short token can be guessed.
pub const MIN_TOKEN_LEN: usize = 16;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN.into(),
            data_dir: Self::DEFAULT_DATA_DIR.into(),
            admin_token: None,
            shutdown_timeout: Self::DEFAULT_SHUTDOWN_TIMEOUT,
            dead_letter: Self::DEFAULT_DEAD_LETTER.into(),
            insecure: false,
            max_connections: Self::DEFAULT_MAX_CONNECTIONS,
            header_timeout: Self::DEFAULT_HEADER_TIMEOUT,
            body_timeout: Self::DEFAULT_BODY_TIMEOUT,
            idle_timeout: Self::DEFAULT_IDLE_TIMEOUT,
            max_request_memory: Self::DEFAULT_MAX_REQUEST_MEMORY,
            metrics_token: None,
            tls: None,
        }
    }
}

/// `[log]`: the process's own diagnostic output.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogOutputConfig {
    /// `text` or `json`. Default [`Self::DEFAULT_FORMAT`].
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `switchyard=debug`. Default
    /// [`Self::DEFAULT_LEVEL`].
    pub level: String,
}

impl LogOutputConfig {
    /// Human-readable lines.
    pub const DEFAULT_FORMAT: LogFormat = LogFormat::Text;
    /// `info`.
    pub const DEFAULT_LEVEL: &'static str = "info";
}

impl Default for LogOutputConfig {
    fn default() -> Self {
        Self {
            format: Self::DEFAULT_FORMAT,
            level: Self::DEFAULT_LEVEL.into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

/// `[queues.NAME]`: an internal durable queue. Every key is optional.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Default [`Self::DEFAULT_PARTITIONS`].
    pub partitions: u32,
    /// Delete segments older than this. Default [`Self::DEFAULT_RETENTION`].
    #[serde(with = "crate::units::duration")]
    pub retention: Duration,
    /// When the queue holds this much unconsumed data producers get 429. Default
    /// [`Self::DEFAULT_MAX_BYTES`].
    pub max_bytes: ByteSize,
    /// Work-queue lease, at most [`MAX_QUEUE_DELAY`]. Default
    /// [`Self::DEFAULT_ACK_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub ack_timeout: Duration,
    /// Deliveries before dead-lettering. Default [`Self::DEFAULT_MAX_DELIVERIES`].
    pub max_deliveries: u32,
    /// Queue receiving messages that exhausted `max_deliveries`; must be declared under
    /// `[queues]` and differ from this queue.
    pub dead_letter: Option<String>,
    /// `Idempotency-Key` deduplication window; zero disables it. Default
    /// [`Self::DEFAULT_DEDUP_WINDOW`].
    #[serde(with = "crate::units::duration")]
    pub dedup_window: Duration,
    /// Messages per partition a work group loads and orders by priority. Default
    /// [`Self::DEFAULT_LOOKAHEAD`].
    pub lookahead: u32,
    /// Work groups the queue may have; a receive that would create one more is refused.
    /// Default [`Self::DEFAULT_MAX_GROUPS`].
    pub max_groups: u32,
    /// Bytes of loaded messages all work groups of the queue hold in memory together (their
    /// `lookahead` windows). Default [`Self::DEFAULT_WORK_MEMORY`].
    pub work_memory: ByteSize,
    /// A work group with no receive, ack, nack or extend for this long is deleted. Zero:
    /// never. Default [`Self::DEFAULT_GROUP_IDLE_EXPIRY`].
    #[serde(with = "crate::units::duration")]
    pub group_idle_expiry: Duration,
}

impl QueueConfig {
    /// One partition: one total order.
    pub const DEFAULT_PARTITIONS: u32 = 1;
    /// 7 days.
    pub const DEFAULT_RETENTION: Duration = WEEK;
    /// 1 GiB.
    pub const DEFAULT_MAX_BYTES: ByteSize = ByteSize(1 << 30);
    /// 30 seconds.
    pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_secs(30);
    /// 20 deliveries.
    pub const DEFAULT_MAX_DELIVERIES: u32 = 20;
    /// 5 minutes.
    pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);
    /// 10 000 messages per partition.
    pub const DEFAULT_LOOKAHEAD: u32 = 10_000;
    /// 64 work groups.
    pub const DEFAULT_MAX_GROUPS: u32 = 64;
    /// 256 MiB.
    pub const DEFAULT_WORK_MEMORY: ByteSize = ByteSize(256 << 20);
    /// 7 days.
    pub const DEFAULT_GROUP_IDLE_EXPIRY: Duration = WEEK;
}

/// The longest lease, delay or `ack_timeout` a queue accepts: 7 days.
pub const MAX_QUEUE_DELAY: Duration = WEEK;

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            partitions: Self::DEFAULT_PARTITIONS,
            retention: Self::DEFAULT_RETENTION,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            ack_timeout: Self::DEFAULT_ACK_TIMEOUT,
            max_deliveries: Self::DEFAULT_MAX_DELIVERIES,
            dead_letter: None,
            dedup_window: Self::DEFAULT_DEDUP_WINDOW,
            lookahead: Self::DEFAULT_LOOKAHEAD,
            max_groups: Self::DEFAULT_MAX_GROUPS,
            work_memory: Self::DEFAULT_WORK_MEMORY,
            group_idle_expiry: Self::DEFAULT_GROUP_IDLE_EXPIRY,
        }
    }
}

/// The source types, written as `type = "…"` under `[sources.NAME]`: the one list of
/// them. Each names one variant of [`SourceConfig`] (same spelling as serde's, checked by
/// a test) and the validator dispatches on it with an exhaustive `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Http,
    Queue,
    PostgresCdc,
    Kafka,
    Nats,
    Redis,
    Rabbitmq,
    Mqtt,
}

impl SourceKind {
    /// Every source type, in the order messages list them.
    pub const ALL: [SourceKind; 8] = [
        SourceKind::Http,
        SourceKind::Queue,
        SourceKind::PostgresCdc,
        SourceKind::Kafka,
        SourceKind::Nats,
        SourceKind::Redis,
        SourceKind::Rabbitmq,
        SourceKind::Mqtt,
    ];

    /// The `type` value.
    pub const fn name(self) -> &'static str {
        match self {
            SourceKind::Http => "http",
            SourceKind::Queue => "queue",
            SourceKind::PostgresCdc => "postgres_cdc",
            SourceKind::Kafka => "kafka",
            SourceKind::Nats => "nats",
            SourceKind::Redis => "redis",
            SourceKind::Rabbitmq => "rabbitmq",
            SourceKind::Mqtt => "mqtt",
        }
    }

    /// The type whose `type` value is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The keys of this type's table besides `type`.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            SourceKind::Http => schema::fields::<HttpSourceConfig>(),
            SourceKind::Queue => schema::fields::<QueueSourceConfig>(),
            SourceKind::PostgresCdc => schema::fields::<PostgresCdcSourceConfig>(),
            SourceKind::Kafka => schema::fields::<KafkaSourceConfig>(),
            SourceKind::Nats => schema::fields::<NatsSourceConfig>(),
            SourceKind::Redis => schema::fields::<RedisSourceConfig>(),
            SourceKind::Rabbitmq => schema::fields::<RabbitmqSourceConfig>(),
            SourceKind::Mqtt => schema::fields::<MqttSourceConfig>(),
        }
    }
}

/// `[sources.NAME]`, by its `type`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    Http(HttpSourceConfig),
    Queue(QueueSourceConfig),
    PostgresCdc(PostgresCdcSourceConfig),
    Kafka(KafkaSourceConfig),
    Nats(NatsSourceConfig),
    Redis(RedisSourceConfig),
    Rabbitmq(RabbitmqSourceConfig),
    Mqtt(MqttSourceConfig),
}

impl SourceConfig {
    pub const fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Http(_) => SourceKind::Http,
            SourceConfig::Queue(_) => SourceKind::Queue,
            SourceConfig::PostgresCdc(_) => SourceKind::PostgresCdc,
            SourceConfig::Kafka(_) => SourceKind::Kafka,
            SourceConfig::Nats(_) => SourceKind::Nats,
            SourceConfig::Redis(_) => SourceKind::Redis,
            SourceConfig::Rabbitmq(_) => SourceKind::Rabbitmq,
            SourceConfig::Mqtt(_) => SourceKind::Mqtt,
        }
    }

    /// The `type` value.
    pub const fn type_name(&self) -> &'static str {
        self.kind().name()
    }
}

/// `type = "http"`: `POST /ingest/{name}`. Every key is optional.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSourceConfig {
    /// Optional bearer token producers must send (at least [`MIN_TOKEN_LEN`] characters).
    pub token: Option<String>,
    /// Largest accepted request body. Default [`Self::DEFAULT_MAX_BODY`].
    pub max_body: ByteSize,
    /// Partitions of the source's durable intake log. `None` (the default): the count the
    /// intake already has in the data dir, [`Self::DEFAULT_PARTITIONS`] for a new one.
    /// Every partition has its own reader and costs its own fdatasync per group commit.
    pub partitions: Option<u32>,
    /// `Idempotency-Key` deduplication window; zero disables it. Default
    /// [`Self::DEFAULT_DEDUP_WINDOW`].
    #[serde(with = "crate::units::duration")]
    pub dedup_window: Duration,
    /// Unconsumed intake data above which producers get 429. Default
    /// [`Self::DEFAULT_MAX_BYTES`].
    pub max_bytes: ByteSize,
    /// Events one request may carry (NDJSON lines); more get 413. Default
    /// [`Self::DEFAULT_MAX_EVENTS`].
    pub max_events: usize,
}

impl HttpSourceConfig {
    /// 1 MiB.
    pub const DEFAULT_MAX_BODY: ByteSize = ByteSize(1 << 20);
    /// 1 partition: one fdatasync per group commit.
    pub const DEFAULT_PARTITIONS: u32 = 1;
    /// 5 minutes.
    pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(300);
    /// 1 GiB.
    pub const DEFAULT_MAX_BYTES: ByteSize = ByteSize(1 << 30);
    /// 10 000 events.
    pub const DEFAULT_MAX_EVENTS: usize = 10_000;
}

impl Default for HttpSourceConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body: Self::DEFAULT_MAX_BODY,
            partitions: None,
            dedup_window: Self::DEFAULT_DEDUP_WINDOW,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_events: Self::DEFAULT_MAX_EVENTS,
        }
    }
}

/// `type = "queue"`: read an internal queue as a consumer group.
///
/// `Default` leaves the required `queue` empty: the loader reports it missing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSourceConfig {
    /// The `[queues.NAME]` to read. Required.
    pub queue: String,
    /// Consumer group; the loader defaults it to the source's name.
    pub group: String,
}

/// `type = "postgres_cdc"`: changes of Postgres tables from a logical replication slot.
///
/// `Default` leaves the required `dsn` empty (the loader reports it missing) and `slot`
/// and `publication` empty (the loader derives them from the source's name).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresCdcSourceConfig {
    /// Connection string of the database (`postgres://user:password@host:port/db`).
    /// Required.
    pub dsn: String,
    /// Logical replication slot (pgoutput), created when missing. Default
    /// [`Self::default_slot`] of the source's name.
    pub slot: String,
    /// Publication, created when missing for `tables`. Default: the slot's name.
    pub publication: String,
    /// `schema.table` entries; empty = the tables of an existing publication.
    pub tables: Vec<String>,
    /// Default [`Self::DEFAULT_SNAPSHOT`].
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk. Default [`Self::DEFAULT_SNAPSHOT_CHUNK`].
    pub snapshot_chunk: u32,
    /// Chunks of a table with a key read at once, over as many connections sharing one
    /// snapshot. Default 1, at most [`Self::MAX_SNAPSHOT_PARALLEL`].
    pub snapshot_parallel: u32,
    /// WAL the slot may hold back before a warning. Default
    /// [`Self::DEFAULT_MAX_SLOT_LAG`].
    pub max_slot_lag: ByteSize,
    /// An invalidated or dropped slot is created again with a new snapshot instead of
    /// stopping the source. Default false.
    pub recreate_slot: bool,
    /// The columns whose values make the `key` of a table's events, by `schema.table`
    /// (a table without a schema is in `public`). Default: the table's primary key (or
    /// its replica identity index); a table without one has the key `null`, or with
    /// `REPLICA IDENTITY FULL` the whole row.
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// How often a standby (an instance whose peer holds the source's leader lock) tries
    /// to take the lock. Default [`Self::DEFAULT_STANDBY_RETRY`].
    #[serde(with = "crate::units::duration")]
    pub standby_retry: Duration,
    /// How often the leader checks its lock connection; a check failed, or unanswered for
    /// `leader_release − 2 × leader_check`, ends its leadership, and so does the end of
    /// the connection. Default [`Self::DEFAULT_LEADER_CHECK`].
    #[serde(with = "crate::units::duration")]
    pub leader_check: Duration,
    /// How long the server keeps the lock of a leader it no longer hears from (the lock
    /// session's idle and TCP timeouts; the replication session's `wal_sender_timeout`).
    /// At least [`Self::LEADER_RELEASE_CHECKS`] × `leader_check`, so that a cut-off
    /// leader always stops reading before the lock is free. Default
    /// [`Self::DEFAULT_LEADER_RELEASE`].
    #[serde(with = "crate::units::duration")]
    pub leader_release: Duration,
}

impl PostgresCdcSourceConfig {
    /// 1 second.
    pub const DEFAULT_STANDBY_RETRY: Duration = Duration::from_secs(1);
    /// 1 second.
    pub const DEFAULT_LEADER_CHECK: Duration = Duration::from_secs(1);
    /// 5 seconds.
    pub const DEFAULT_LEADER_RELEASE: Duration = Duration::from_secs(5);
    /// A leader stops sending and gives up at most `leader_release − leader_check` after
    /// its last answered check; the server frees its lock no sooner than
    /// `leader_release` after it: one check of margin.
    pub const LEADER_RELEASE_CHECKS: u32 = 3;
    /// Copy the tables' rows first, then stream changes.
    pub const DEFAULT_SNAPSHOT: SnapshotMode = SnapshotMode::Initial;
    /// 1024 rows.
    pub const DEFAULT_SNAPSHOT_CHUNK: u32 = 1024;
    /// Connections a snapshot may use at once.
    pub const MAX_SNAPSHOT_PARALLEL: u32 = 16;
    /// 10 GiB.
    pub const DEFAULT_MAX_SLOT_LAG: ByteSize = ByteSize(10 << 30);

    /// The slot of a source that names none: `switchyard_<source name>`, lower-cased,
    /// `-` written as `_` (Postgres allows lower-case letters, digits and `_`).
    pub fn default_slot(source_name: &str) -> String {
        format!(
            "switchyard_{}",
            source_name.to_ascii_lowercase().replace('-', "_")
        )
    }
}

impl Default for PostgresCdcSourceConfig {
    fn default() -> Self {
        Self {
            dsn: String::new(),
            slot: String::new(),
            publication: String::new(),
            tables: Vec::new(),
            snapshot: Self::DEFAULT_SNAPSHOT,
            snapshot_chunk: Self::DEFAULT_SNAPSHOT_CHUNK,
            snapshot_parallel: 1,
            max_slot_lag: Self::DEFAULT_MAX_SLOT_LAG,
            recreate_slot: false,
            key_columns: BTreeMap::new(),
            standby_retry: Self::DEFAULT_STANDBY_RETRY,
            leader_check: Self::DEFAULT_LEADER_CHECK,
            leader_release: Self::DEFAULT_LEADER_RELEASE,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotMode {
    Initial,
    Never,
}

/// `type = "kafka"` source: a member of a consumer group.
///
/// `Default` leaves the required `brokers` and `topics` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers. Required.
    pub brokers: String,
    /// At least one. Required.
    pub topics: Vec<String>,
    /// Consumer group. Default [`Self::DEFAULT_GROUP`].
    pub group: String,
    /// Passed through to librdkafka (SASL/TLS and tuning).
    pub options: BTreeMap<String, String>,
}

impl KafkaSourceConfig {
    /// `switchyard`.
    pub const DEFAULT_GROUP: &'static str = "switchyard";
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topics: Vec::new(),
            group: Self::DEFAULT_GROUP.into(),
            options: BTreeMap::new(),
        }
    }
}

/// TLS to a broker (NATS, Redis): PEM files, each optional. A `tls://` / `rediss://` URL
/// (or a server that requires TLS) turns TLS on; `ca` trusts that private CA instead of
/// the system's roots; `cert` with `key` is the client certificate of mutual TLS.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerTlsConfig {
    /// CA certificate(s) to trust.
    pub ca: Option<String>,
    /// Client certificate chain (with `key`).
    pub cert: Option<String>,
    /// Client private key (with `cert`).
    pub key: Option<String>,
}

/// `type = "nats"` source: a durable JetStream pull consumer with explicit acks.
///
/// `Default` leaves the required `url` and `stream` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSourceConfig {
    /// Server URL(s), comma-separated; user and password or a token may be in it
    /// (`nats://user:pass@host:4222`). Required.
    pub url: String,
    /// The JetStream stream to read. Required.
    pub stream: String,
    /// The durable consumer's name; the source owns it (it recreates it at each start
    /// from its acknowledged floor). Default [`Self::DEFAULT_CONSUMER`].
    pub consumer: String,
    /// Only messages of this subject (wildcards allowed). Default: every subject.
    pub filter_subject: Option<String>,
    /// How long the server waits for an ack before it sends a message again. Default
    /// [`Self::DEFAULT_ACK_WAIT`].
    #[serde(with = "crate::units::duration")]
    pub ack_wait: Duration,
    /// Messages delivered and not yet acknowledged, at most. Default
    /// [`Self::DEFAULT_MAX_ACK_PENDING`].
    pub max_ack_pending: u32,
    /// TLS files.
    pub tls: BrokerTlsConfig,
}

impl NatsSourceConfig {
    /// `switchyard`.
    pub const DEFAULT_CONSUMER: &'static str = "switchyard";
    /// 30 seconds.
    pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
    /// 10 000 messages.
    pub const DEFAULT_MAX_ACK_PENDING: u32 = 10_000;
}

impl Default for NatsSourceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            stream: String::new(),
            consumer: Self::DEFAULT_CONSUMER.into(),
            filter_subject: None,
            ack_wait: Self::DEFAULT_ACK_WAIT,
            max_ack_pending: Self::DEFAULT_MAX_ACK_PENDING,
            tls: BrokerTlsConfig::default(),
        }
    }
}

/// `type = "redis"` source: a member of a Redis Streams consumer group.
///
/// `Default` leaves the required `url` and `stream` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSourceConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. Required.
    pub url: String,
    /// The stream key to read. Required.
    pub stream: String,
    /// Consumer group. Default [`Self::DEFAULT_GROUP`].
    pub group: String,
    /// This member's name in the group. Default [`Self::DEFAULT_CONSUMER`].
    pub consumer: String,
    /// Create the group (and the stream) when missing, reading from the stream's start.
    /// Default false: a missing group is an error naming the command that creates it.
    pub create: bool,
    /// Entries another member of the group took and has not acknowledged for this long
    /// are claimed (XAUTOCLAIM) and read here. Default [`Self::DEFAULT_CLAIM_IDLE`].
    #[serde(with = "crate::units::duration")]
    pub claim_idle: Duration,
    /// Largest entry (its field names and values) the source hands out; a larger one
    /// stops the reader with an error naming it, before any later entry is handed out.
    /// Default [`Self::DEFAULT_MAX_ENTRY_BYTES`].
    pub max_entry_bytes: ByteSize,
    /// TLS files (with a `rediss://` URL).
    pub tls: BrokerTlsConfig,
}

impl RedisSourceConfig {
    /// `switchyard`.
    pub const DEFAULT_GROUP: &'static str = "switchyard";
    /// `switchyard`.
    pub const DEFAULT_CONSUMER: &'static str = "switchyard";
    /// 60 seconds.
    pub const DEFAULT_CLAIM_IDLE: Duration = Duration::from_secs(60);
    /// 16 MiB: twice what one read aims to hold, far above the 1 MiB an HTTP source
    /// accepts per request by default.
    pub const DEFAULT_MAX_ENTRY_BYTES: ByteSize = ByteSize(16 << 20);
}

impl Default for RedisSourceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            stream: String::new(),
            group: Self::DEFAULT_GROUP.into(),
            consumer: Self::DEFAULT_CONSUMER.into(),
            create: false,
            claim_idle: Self::DEFAULT_CLAIM_IDLE,
            max_entry_bytes: Self::DEFAULT_MAX_ENTRY_BYTES,
            tls: BrokerTlsConfig::default(),
        }
    }
}

/// `[plugins.NAME]`: a WebAssembly component used as a filter, transform or router.
///
/// `Default` leaves the required `path` empty: the loader reports it missing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginConfig {
    /// The `.wasm` component. Required.
    pub path: String,
    /// Handed to the plugin's `init` as JSON. Default `{}`.
    pub config: serde_json::Value,
    /// Fuel per call (about one unit per WebAssembly instruction). Default
    /// [`Self::DEFAULT_FUEL`].
    /// A call carries a batch of events; one that runs out of fuel (or `memory`) is
    /// retried as two halves, a bounded number of times per batch, so this bounds what
    /// one event may cost, not how many fit in a batch: only an event that needs more on
    /// its own follows `on_error` (docs/plugins.md, "Limits").
    pub fuel: u64,
    /// Linear memory limit. Default [`Self::DEFAULT_MEMORY`]. Retried on halves like
    /// `fuel`.
    pub memory: ByteSize,
    /// Wall-clock deadline per call. Default [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// What happens to the events of a call that traps, errs or hits a limit (for fuel
    /// and memory: with one event alone). Default [`Self::DEFAULT_ON_ERROR`].
    pub on_error: OnError,
    /// Host environment variables the plugin may read (`wasi:cli/environment`), by name.
    /// Default none: without this key, reading the environment traps.
    pub allow_env: Vec<String>,
    /// Host directories the plugin may read (`wasi:filesystem`), read-only: guest path
    /// (absolute, e.g. `/data`) → host directory (relative to the working directory).
    /// Default none: a plugin that imports the filesystem is refused at start.
    pub allow_dirs: BTreeMap<String, String>,
}

impl PluginConfig {
    /// 10 000 000 units per call.
    pub const DEFAULT_FUEL: u64 = 10_000_000;
    /// 64 MiB.
    pub const DEFAULT_MEMORY: ByteSize = ByteSize(64 << 20);
    /// 100 milliseconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
    /// Failed events go to the pipeline's dead-letter queue.
    pub const DEFAULT_ON_ERROR: OnError = OnError::DeadLetter;
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            config: serde_json::Value::Object(Default::default()),
            fuel: Self::DEFAULT_FUEL,
            memory: Self::DEFAULT_MEMORY,
            timeout: Self::DEFAULT_TIMEOUT,
            on_error: Self::DEFAULT_ON_ERROR,
            allow_env: Vec::new(),
            allow_dirs: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    DeadLetter,
    Drop,
    Stop,
}

/// `[pipelines.NAME]`
///
/// `Default` has no sources and no sinks, which the loader refuses.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineConfig {
    /// Source names. Required, at least one.
    pub from: Vec<String>,
    /// Filter plugins; all must keep an event.
    pub filters: Vec<String>,
    /// Transform plugins, in order.
    pub transforms: Vec<String>,
    /// Router plugin choosing sink names per event.
    pub router: Option<String>,
    /// Sinks for every event when there is no router.
    pub to: Vec<String>,
    /// Dead-letter queue; defaults to `server.dead_letter`. It need not be declared under
    /// `[queues]`: an undeclared one is created with [`QueueConfig::default`]. It must not be
    /// a queue the pipeline reads (failures would come back forever).
    pub dead_letter: Option<String>,
    /// Events read ahead of the checkpoint per source partition. Default
    /// [`Self::DEFAULT_MAX_IN_FLIGHT`].
    pub max_in_flight: usize,
}

impl PipelineConfig {
    /// 4096 events: enough to keep a sink with a few milliseconds of latency per batch
    /// (Kafka's linger and acks) busy from a single source partition.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            from: Vec::new(),
            filters: Vec::new(),
            transforms: Vec::new(),
            router: None,
            to: Vec::new(),
            dead_letter: None,
            max_in_flight: Self::DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// The sink types, written as `type = "…"` under `[sinks.NAME]`: the one list of them.
/// Each names one variant of [`SinkConfig`] (same spelling as serde's, checked by a test)
/// and the validator dispatches on it with an exhaustive `match`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    Webhook,
    Queue,
    Stdout,
    File,
    Kafka,
    Null,
    Nats,
    Redis,
    Rabbitmq,
    Mqtt,
}

impl SinkKind {
    /// Every sink type, in the order messages list them.
    pub const ALL: [SinkKind; 10] = [
        SinkKind::Webhook,
        SinkKind::Queue,
        SinkKind::Stdout,
        SinkKind::File,
        SinkKind::Kafka,
        SinkKind::Null,
        SinkKind::Nats,
        SinkKind::Redis,
        SinkKind::Rabbitmq,
        SinkKind::Mqtt,
    ];

    /// The `type` value.
    pub const fn name(self) -> &'static str {
        match self {
            SinkKind::Webhook => "webhook",
            SinkKind::Queue => "queue",
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Kafka => "kafka",
            SinkKind::Null => "null",
            SinkKind::Nats => "nats",
            SinkKind::Redis => "redis",
            SinkKind::Rabbitmq => "rabbitmq",
            SinkKind::Mqtt => "mqtt",
        }
    }

    /// The type whose `type` value is `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// The keys of this type's table besides `type`.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            SinkKind::Webhook => schema::fields::<WebhookSinkConfig>(),
            SinkKind::Queue => schema::fields::<QueueSinkConfig>(),
            SinkKind::Stdout => schema::fields::<StdoutSinkConfig>(),
            SinkKind::File => schema::fields::<FileSinkConfig>(),
            SinkKind::Kafka => schema::fields::<KafkaSinkConfig>(),
            SinkKind::Null => schema::fields::<NullSinkConfig>(),
            SinkKind::Nats => schema::fields::<NatsSinkConfig>(),
            SinkKind::Redis => schema::fields::<RedisSinkConfig>(),
            SinkKind::Rabbitmq => schema::fields::<RabbitmqSinkConfig>(),
            SinkKind::Mqtt => schema::fields::<MqttSinkConfig>(),
        }
    }
}

/// `[sinks.NAME]`, by its `type`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    Webhook(WebhookSinkConfig),
    Queue(QueueSinkConfig),
    Stdout(StdoutSinkConfig),
    File(FileSinkConfig),
    Kafka(KafkaSinkConfig),
    Null(NullSinkConfig),
    Nats(NatsSinkConfig),
    Redis(RedisSinkConfig),
    Rabbitmq(RabbitmqSinkConfig),
    Mqtt(MqttSinkConfig),
}

impl SinkConfig {
    pub const fn kind(&self) -> SinkKind {
        match self {
            SinkConfig::Webhook(_) => SinkKind::Webhook,
            SinkConfig::Queue(_) => SinkKind::Queue,
            SinkConfig::Stdout(_) => SinkKind::Stdout,
            SinkConfig::File(_) => SinkKind::File,
            SinkConfig::Kafka(_) => SinkKind::Kafka,
            SinkConfig::Null(_) => SinkKind::Null,
            SinkConfig::Nats(_) => SinkKind::Nats,
            SinkConfig::Redis(_) => SinkKind::Redis,
            SinkConfig::Rabbitmq(_) => SinkKind::Rabbitmq,
            SinkConfig::Mqtt(_) => SinkKind::Mqtt,
        }
    }

    /// The `type` value.
    pub const fn type_name(&self) -> &'static str {
        self.kind().name()
    }
}

/// `format` of a sink: the shape of what it writes for each event (a Kafka message's
/// value, a webhook's body, a file or stdout line, a queue message's payload).
///
/// One variant per format; the connector crate maps each to its encoder
/// (`switchyard_connector::format`), and a format is one variant here, one encoder in
/// `switchyard_event::formats` and one arm there.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// switchyard's own: the payload as it is (Kafka, webhooks, queues), the JSON wire
    /// envelope (files, stdout, webhooks with `envelope = true`).
    #[default]
    Switchyard,
    /// Postgres change events as Debezium's PostgreSQL connector writes them (its JSON
    /// without schemas), schema events left out; other events as with `switchyard`
    /// (`docs/decisions/0022-debezium-envelope.md`).
    Debezium,
    /// CloudEvents 1.0: the event's attributes (`id`, `source`, `type`, `subject`,
    /// `time`, …) beside its data, as headers (binary mode, where the protocol has
    /// headers) or in one JSON object (structured mode)
    /// (`docs/decisions/0029-cloudevents.md`).
    #[serde(rename = "cloudevents")]
    CloudEvents,
}

impl SinkFormat {
    /// `switchyard`: today's bytes.
    pub const DEFAULT: SinkFormat = SinkFormat::Switchyard;

    /// The `format` value.
    pub const fn name(self) -> &'static str {
        match self {
            SinkFormat::Switchyard => "switchyard",
            SinkFormat::Debezium => "debezium",
            SinkFormat::CloudEvents => "cloudevents",
        }
    }
}

/// `cloudevents_mode` of a sink whose protocol has headers (webhook, Kafka): how
/// `format = "cloudevents"` puts an event on the wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloudEventsMode {
    /// The attributes as headers (`ce-id`, … over HTTP; `ce_id`, … in Kafka), the data as
    /// the body with its own content type: receivers that ignore CloudEvents still get
    /// the payload as it is.
    #[default]
    Binary,
    /// One `application/cloudevents+json` object holding the attributes and the data.
    Structured,
}

impl CloudEventsMode {
    /// The `cloudevents_mode` value.
    pub const fn name(self) -> &'static str {
        match self {
            CloudEventsMode::Binary => "binary",
            CloudEventsMode::Structured => "structured",
        }
    }
}

/// Exponential backoff with jitter between delivery attempts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included, before dead-lettering. Default
    /// [`Self::DEFAULT_MAX_ATTEMPTS`].
    pub max_attempts: u32,
    /// First delay. Default [`Self::DEFAULT_INITIAL`].
    #[serde(with = "crate::units::duration")]
    pub initial: Duration,
    /// Largest delay. Default [`Self::DEFAULT_MAX`].
    #[serde(with = "crate::units::duration")]
    pub max: Duration,
}

impl RetryConfig {
    /// 10 attempts.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
    /// 200 milliseconds.
    pub const DEFAULT_INITIAL: Duration = Duration::from_millis(200);
    /// 1 minute.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(60);
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial: Self::DEFAULT_INITIAL,
            max: Self::DEFAULT_MAX,
        }
    }
}

/// `type = "webhook"`
///
/// `Default` leaves the required `url` empty: the loader reports it missing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSinkConfig {
    /// Where events are POSTed (`http://` or `https://`). Required.
    pub url: String,
    /// Standard Webhooks secret, `whsec_` + base64 key. Unsigned when absent.
    pub secret: Option<String>,
    /// Per request. Default [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Requests in flight (and key lanes). Default [`Self::DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    pub retry: RetryConfig,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Send the JSON wire envelope instead of the bare payload. Default false. Only with
    /// `format = "switchyard"`.
    pub envelope: bool,
    /// Allow link-local and cloud metadata addresses (169.254/16, fe80::/10,
    /// 169.254.169.254, fd00:ec2::254, `metadata.google.internal`…), written in `url` or
    /// resolved from its host name at connect time. Default false: they are refused.
    /// Loopback and private-network addresses are always allowed (`validate` warns).
    pub allow_private: bool,
    /// What the body of each request is. Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
    /// With `format = "cloudevents"`: attributes as `ce-*` headers (binary) or one JSON
    /// object (structured). Default binary.
    pub cloudevents_mode: CloudEventsMode,
}

impl WebhookSinkConfig {
    /// 5 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
    /// 16 requests.
    pub const DEFAULT_CONCURRENCY: usize = 16;
}

impl Default for WebhookSinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret: None,
            timeout: Self::DEFAULT_TIMEOUT,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: RetryConfig::default(),
            headers: BTreeMap::new(),
            envelope: false,
            allow_private: false,
            format: SinkFormat::DEFAULT,
            cloudevents_mode: CloudEventsMode::Binary,
        }
    }
}

/// `type = "queue"`: append to an internal queue.
///
/// `Default` leaves the required `queue` empty: the loader reports it missing.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSinkConfig {
    /// The `[queues.NAME]` to append to. Required.
    pub queue: String,
    /// What the payload of each appended message is. Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
}

/// `type = "null"`: every event is delivered by being discarded (events routed away on
/// purpose, counted as delivered; the sink of a benchmark that measures a source and its
/// pipeline). No keys besides `type`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NullSinkConfig {}

/// `type = "stdout"`: one JSON event per line.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StdoutSinkConfig {
    /// What each line is. Default [`SinkFormat::DEFAULT`]: the JSON wire envelope.
    pub format: SinkFormat,
}

/// `type = "file"`: one JSON event per line, appended and fsync'd before the ack.
///
/// `Default` leaves the required `path` empty: the loader reports it missing.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileSinkConfig {
    /// The file to append to. Required.
    pub path: String,
    /// Permission bits of the file when the sink creates it (an existing file keeps its
    /// own), written as an octal string such as `"0640"`. Default
    /// [`FileSinkConfig::DEFAULT_MODE`]: only the owner can read the events.
    #[serde(with = "crate::units::octal_mode")]
    pub mode: u32,
    /// What each line is. Default [`SinkFormat::DEFAULT`]: the JSON wire envelope.
    pub format: SinkFormat,
}

impl FileSinkConfig {
    /// `0600`: events often hold personal data.
    pub const DEFAULT_MODE: u32 = 0o600;
}

impl Default for FileSinkConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            mode: Self::DEFAULT_MODE,
            format: SinkFormat::DEFAULT,
        }
    }
}

/// `type = "kafka"` sink: an idempotent producer (`acks=all`); an event is acknowledged
/// on its delivery report.
///
/// `Default` leaves the required `brokers` and `topic` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSinkConfig {
    /// Bootstrap servers. Required.
    pub brokers: String,
    /// May use `{source}`, `{kind}`, `{table}` (`{table}`: the `pg-table` header of
    /// Postgres CDC events, "schema.table") and `{header:NAME}` (the value of the event's
    /// header `NAME`, e.g. one a transform plugin set). Required.
    pub topic: String,
    /// One of [`KAFKA_COMPRESSIONS`]; librdkafka's default when absent.
    pub compression: Option<String>,
    /// Passed through to librdkafka (SASL/TLS and tuning); they win over the defaults.
    pub options: BTreeMap<String, String>,
    /// How long one delivery attempt waits for the broker's confirmations before its
    /// unconfirmed events are retried (the retry waits for the same queued messages;
    /// librdkafka itself never times a message out). Default [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// How long the producer waits to fill a batch (`linger.ms`). Default
    /// [`Self::DEFAULT_LINGER`].
    #[serde(with = "crate::units::duration")]
    pub linger: Duration,
    /// Ordering lanes delivering at once (events of one key share a lane). Default
    /// [`Self::DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Retries of failed attempts. `None`: retry without limit (a broker outage never
    /// dead-letters events; events the broker can never take are dead-lettered at once).
    pub retry: Option<RetryConfig>,
    /// Create a topic that does not exist (with `partitions` partitions) instead of
    /// retrying until someone creates it. Default false.
    pub create_topics: bool,
    /// Partitions of topics made by `create_topics`. Default [`Self::DEFAULT_PARTITIONS`].
    pub partitions: u32,
    /// What each message's value is (and, for Debezium deletes, the tombstone after it).
    /// Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
    /// With `format = "cloudevents"`: attributes as `ce_*` headers (binary) or one JSON
    /// object (structured). Default binary.
    pub cloudevents_mode: CloudEventsMode,
}

impl KafkaSinkConfig {
    /// 30 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 5 milliseconds.
    pub const DEFAULT_LINGER: Duration = Duration::from_millis(5);
    /// 8 lanes.
    pub const DEFAULT_CONCURRENCY: usize = 8;
    /// 1 partition.
    pub const DEFAULT_PARTITIONS: u32 = 1;
}

impl Default for KafkaSinkConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            topic: String::new(),
            compression: None,
            options: BTreeMap::new(),
            timeout: Self::DEFAULT_TIMEOUT,
            linger: Self::DEFAULT_LINGER,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: None,
            create_topics: false,
            partitions: Self::DEFAULT_PARTITIONS,
            format: SinkFormat::DEFAULT,
            cloudevents_mode: CloudEventsMode::Binary,
        }
    }
}

/// `type = "nats"` sink: JetStream publishes, each delivered on its PubAck.
///
/// `Default` leaves the required `url` and `subject` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSinkConfig {
    /// Server URL(s), comma-separated; user and password or a token may be in it. Required.
    pub url: String,
    /// May use `{source}`, `{kind}`, `{table}` and `{header:NAME}` like a Kafka topic.
    /// Required.
    pub subject: String,
    /// With `create`: the stream made for `subject` when no stream holds it.
    pub stream: Option<String>,
    /// Create `stream` (file storage, the subjects of `subject`) when it does not exist.
    /// Default false: a subject no stream holds is retried, with the command to create
    /// it logged.
    pub create: bool,
    /// How long one attempt waits for its PubAcks. Default [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Ordering lanes delivering at once. Default [`Self::DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Retries of failed attempts. `None`: retry without limit.
    pub retry: Option<RetryConfig>,
    /// What each message's payload is. Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
    /// With `format = "cloudevents"`: attributes as `ce-*` headers (binary) or one JSON
    /// object (structured). Default binary.
    pub cloudevents_mode: CloudEventsMode,
    /// TLS files.
    pub tls: BrokerTlsConfig,
}

impl NatsSinkConfig {
    /// The subject filter of the stream `create = true` makes for `subject`: the subject
    /// itself without placeholders, else its tokens before the first placeholder followed
    /// by `>`. `None` when the first token already has one (a stream of every subject is
    /// never made).
    pub fn created_subjects(subject: &str) -> Option<String> {
        let Some(open) = subject.find('{') else {
            return Some(subject.to_owned());
        };
        let cut = subject[..open].rfind('.')?;
        Some(format!("{}.>", &subject[..cut]))
    }

    /// 10 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// 8 lanes.
    pub const DEFAULT_CONCURRENCY: usize = 8;
}

impl Default for NatsSinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            subject: String::new(),
            stream: None,
            create: false,
            timeout: Self::DEFAULT_TIMEOUT,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: None,
            format: SinkFormat::DEFAULT,
            cloudevents_mode: CloudEventsMode::Binary,
            tls: BrokerTlsConfig::default(),
        }
    }
}

/// `type = "redis"` sink: XADD to a stream, each delivered on its reply (the entry id).
///
/// `Default` leaves the required `url` and `stream` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSinkConfig {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS. Required.
    pub url: String,
    /// The stream key; may use `{source}`, `{kind}`, `{table}` and `{header:NAME}`.
    /// Required.
    pub stream: String,
    /// Trim each stream to about this many entries (`MAXLEN ~`). Default: never trim.
    pub maxlen: Option<u64>,
    /// How long one attempt waits for Redis' replies. Default [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Ordering lanes delivering at once. Default [`Self::DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Retries of failed attempts. `None`: retry without limit.
    pub retry: Option<RetryConfig>,
    /// What each entry's `payload` field is. Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
    /// TLS files (with a `rediss://` URL).
    pub tls: BrokerTlsConfig,
}

impl RedisSinkConfig {
    /// 10 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
    /// 8 lanes.
    pub const DEFAULT_CONCURRENCY: usize = 8;
}

impl Default for RedisSinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            stream: String::new(),
            maxlen: None,
            timeout: Self::DEFAULT_TIMEOUT,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: None,
            format: SinkFormat::DEFAULT,
            tls: BrokerTlsConfig::default(),
        }
    }
}

/// `type = "rabbitmq"` sink: persistent messages published to an exchange with publisher
/// confirms; an event is acknowledged on its confirm.
///
/// `Default` leaves the required `url` and `exchange` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitmqSinkConfig {
    /// `amqp://user:password@host:port/vhost` or `amqps://…` (TLS). Required.
    pub url: String,
    /// The exchange to publish to (`""`: the default exchange, which routes by queue
    /// name). Required.
    pub exchange: String,
    /// May use the placeholders of [`name_template::PLACEHOLDERS`]. Default
    /// [`Self::DEFAULT_ROUTING_KEY`].
    pub routing_key: String,
    /// A PEM file of the CA that signed the broker's certificate (`amqps://`); without it
    /// the system's roots are used.
    pub ca_file: Option<String>,
    /// How long one delivery attempt waits for the broker's confirms. Default
    /// [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Ordering lanes delivering at once, one channel each. Default
    /// [`Self::DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Retries of failed attempts. `None`: retry without limit.
    pub retry: Option<RetryConfig>,
    /// What each message's body is. Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
    /// With `format = "cloudevents"`: attributes as `cloudEvents_*` message headers
    /// (binary) or one JSON object (structured). Default binary.
    pub cloudevents_mode: CloudEventsMode,
}

impl RabbitmqSinkConfig {
    /// `{source}.{kind}`.
    pub const DEFAULT_ROUTING_KEY: &'static str = "{source}.{kind}";
    /// 30 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 4 lanes.
    pub const DEFAULT_CONCURRENCY: usize = 4;
}

impl Default for RabbitmqSinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            exchange: String::new(),
            routing_key: Self::DEFAULT_ROUTING_KEY.into(),
            ca_file: None,
            timeout: Self::DEFAULT_TIMEOUT,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: None,
            format: SinkFormat::DEFAULT,
            cloudevents_mode: CloudEventsMode::Binary,
        }
    }
}

/// `type = "rabbitmq"` source: a consumer of one queue with manual acks.
///
/// `Default` leaves the required `url` and `queue` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RabbitmqSourceConfig {
    /// As the sink's. Required.
    pub url: String,
    /// The queue to consume. Required; it must exist.
    pub queue: String,
    /// Unacknowledged messages the broker hands out at once. Default
    /// [`Self::DEFAULT_PREFETCH`].
    pub prefetch: u16,
    /// As the sink's.
    pub ca_file: Option<String>,
}

impl RabbitmqSourceConfig {
    /// 1000 messages.
    pub const DEFAULT_PREFETCH: u16 = 1000;
}

impl Default for RabbitmqSourceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            queue: String::new(),
            prefetch: Self::DEFAULT_PREFETCH,
            ca_file: None,
        }
    }
}

/// `protocol` of an MQTT sink or source: the MQTT version it speaks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1: no message properties (event ids, headers and content types are not
    /// carried; CloudEvents are structured).
    #[default]
    #[serde(rename = "3.1.1")]
    V3,
    /// MQTT 5: the event's id, source, kind, key and headers as user properties, its
    /// content type as the content-type property, PUBACK reason codes, a session expiry
    /// interval.
    #[serde(rename = "5")]
    V5,
}

impl MqttProtocol {
    /// The `protocol` value.
    pub const fn name(self) -> &'static str {
        match self {
            MqttProtocol::V3 => "3.1.1",
            MqttProtocol::V5 => "5",
        }
    }
}

/// `type = "mqtt"` sink: QoS 1 publishes (MQTT 3.1.1 or 5); an event is acknowledged on
/// its PUBACK.
///
/// `Default` leaves the required `url` and `topic` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSinkConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS), with `user:password@` for
    /// authentication. Required.
    pub url: String,
    /// May use the placeholders of [`name_template::PLACEHOLDERS`]. Required.
    pub topic: String,
    /// Default: `switchyard-<sink name>`.
    pub client_id: Option<String>,
    /// As the RabbitMQ sink's.
    pub ca_file: Option<String>,
    /// Publishes waiting for their PUBACK at once. Default [`Self::DEFAULT_INFLIGHT`].
    pub inflight: u16,
    /// How long one delivery attempt waits for PUBACKs. Default [`Self::DEFAULT_TIMEOUT`].
    #[serde(with = "crate::units::duration")]
    pub timeout: Duration,
    /// Ordering lanes delivering at once, over the sink's one connection. Default
    /// [`Self::DEFAULT_CONCURRENCY`].
    pub concurrency: usize,
    /// Retries of failed attempts. `None`: retry without limit.
    pub retry: Option<RetryConfig>,
    /// What each message's payload is. Default [`SinkFormat::DEFAULT`].
    pub format: SinkFormat,
    /// With `format = "cloudevents"` and MQTT 5: attributes as user properties (binary)
    /// or one JSON object (structured). Default binary; MQTT 3.1.1 is always structured.
    pub cloudevents_mode: CloudEventsMode,
    /// The MQTT version. Default 3.1.1.
    pub protocol: MqttProtocol,
}

impl MqttSinkConfig {
    /// 100 publishes.
    pub const DEFAULT_INFLIGHT: u16 = 100;
    /// 30 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
    /// 4 lanes.
    pub const DEFAULT_CONCURRENCY: usize = 4;
}

impl Default for MqttSinkConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            topic: String::new(),
            client_id: None,
            ca_file: None,
            inflight: Self::DEFAULT_INFLIGHT,
            timeout: Self::DEFAULT_TIMEOUT,
            concurrency: Self::DEFAULT_CONCURRENCY,
            retry: None,
            format: SinkFormat::DEFAULT,
            cloudevents_mode: CloudEventsMode::Binary,
            protocol: MqttProtocol::V3,
        }
    }
}

/// `type = "mqtt"` source: QoS 1 subscriptions in a persistent session, acknowledged
/// only once delivered.
///
/// `Default` leaves the required `url` and `topics` empty: the loader reports them.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MqttSourceConfig {
    /// As the sink's. Required.
    pub url: String,
    /// Topic filters (`+` and `#` allowed), at least one. Required.
    pub topics: Vec<String>,
    /// The session's id: the broker keeps the session (and what it did not get acked)
    /// under it. Default: `switchyard-<source name>`.
    pub client_id: Option<String>,
    /// As the sink's.
    pub ca_file: Option<String>,
    /// The MQTT version. Default 3.1.1.
    pub protocol: MqttProtocol,
    /// With MQTT 5: how long the broker keeps the session (and the messages it holds for
    /// it) after the connection is lost. Default [`Self::DEFAULT_SESSION_EXPIRY`].
    #[serde(with = "crate::units::duration")]
    pub session_expiry: Duration,
}

impl MqttSourceConfig {
    /// 7 days: a switchyard down over a long weekend finds its messages waiting.
    pub const DEFAULT_SESSION_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
}

impl Default for MqttSourceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            topics: Vec::new(),
            client_id: None,
            ca_file: None,
            protocol: MqttProtocol::V3,
            session_expiry: Self::DEFAULT_SESSION_EXPIRY,
        }
    }
}

/// Values a Kafka sink's `compression` may take.
pub const KAFKA_COMPRESSIONS: &[&str] = &["none", "gzip", "snappy", "lz4", "zstd"];

#[cfg(test)]
mod tests {
    use super::*;

    /// The kind lists are complete and spelled as serde spells the variants, and each
    /// `type` value reads as the variant of that kind.
    #[test]
    fn a_created_nats_stream_holds_the_subjects_of_the_template() {
        let subjects = NatsSinkConfig::created_subjects;
        assert_eq!(subjects("events.{source}").as_deref(), Some("events.>"));
        assert_eq!(subjects("a.b.x{kind}.c").as_deref(), Some("a.b.>"));
        assert_eq!(subjects("orders").as_deref(), Some("orders"));
        assert_eq!(subjects("{source}.events"), None);
        assert_eq!(subjects("ev{source}"), None);
    }

    #[test]
    fn kinds_match_the_serde_variants() {
        let names = SourceKind::ALL.map(SourceKind::name);
        assert_eq!(schema::variants::<SourceKind>(), names);
        for kind in SourceKind::ALL {
            let source: SourceConfig =
                serde_json::from_value(serde_json::json!({ "type": kind.name() }))
                    .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert_eq!(source.kind(), kind);
            assert_eq!(SourceKind::from_name(kind.name()), Some(kind));
            let written = serde_json::to_value(&source).expect("serializable");
            assert_eq!(written["type"], kind.name());
        }
        let names = SinkKind::ALL.map(SinkKind::name);
        assert_eq!(schema::variants::<SinkKind>(), names);
        for kind in SinkKind::ALL {
            let sink: SinkConfig =
                serde_json::from_value(serde_json::json!({ "type": kind.name() }))
                    .unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert_eq!(sink.kind(), kind);
            assert_eq!(SinkKind::from_name(kind.name()), Some(kind));
            let written = serde_json::to_value(&sink).expect("serializable");
            assert_eq!(written["type"], kind.name());
        }
    }

    /// serde refuses a key the type does not have, also inside a tagged source or sink.
    #[test]
    fn serde_denies_unknown_keys() {
        let http = serde_json::json!({ "type": "http", "max_body": "2MiB", "max_bdy": 1 });
        let error = serde_json::from_value::<SourceConfig>(http).unwrap_err();
        assert!(error.to_string().contains("max_bdy"), "{error}");
        let stdout = serde_json::json!({ "type": "stdout", "path": "x" });
        assert!(serde_json::from_value::<SinkConfig>(stdout).is_err());
        let file = serde_json::json!({ "type": "file", "path": "x", "mode": "0640" });
        let Ok(SinkConfig::File(file)) = serde_json::from_value::<SinkConfig>(file) else {
            panic!("a file sink")
        };
        assert_eq!(file.mode, 0o640);
    }

    /// `Default` and a serde read of an empty table agree: both take the `DEFAULT_*`
    /// constants.
    #[test]
    fn defaults_are_the_same_through_serde() {
        let empty = || serde_json::json!({});
        let server: ServerConfig = serde_json::from_value(empty()).unwrap();
        assert_eq!(
            format!("{server:?}"),
            format!("{:?}", ServerConfig::default())
        );
        let queue: QueueConfig = serde_json::from_value(empty()).unwrap();
        assert_eq!(
            format!("{queue:?}"),
            format!("{:?}", QueueConfig::default())
        );
        let written = serde_json::to_value(QueueConfig::default()).unwrap();
        let read: QueueConfig = serde_json::from_value(written).unwrap();
        assert_eq!(format!("{read:?}"), format!("{:?}", QueueConfig::default()));
    }
}
