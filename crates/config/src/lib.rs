//! switchyard's configuration: the typed model of the declarative file.
//!
//! The key names are a contract with users (see `DESIGN.md`): keys may be added,
//! never renamed. Loading and validation live in [`load`]; every problem is reported
//! at once with its key path.
//!
//! Sources of values, later ones winning: the file (`.toml`, or `.yaml`/`.yml`), then
//! environment variables `SWITCHYARD_SECTION__KEY` (double underscore = one level,
//! e.g. `SWITCHYARD_SINKS__AUDIT__URL`); then `${VAR}` in any string is replaced from the
//! environment. See [`load`] for the details and [`load_str_with_env`] for tests.
//!
//! Architecture invariant: no async runtime, no network; the only IO is reading the file.

mod graph;
pub mod load;
mod locate;
pub mod outbound;
pub mod postgres_dsn;
pub mod redact;
pub mod units;
mod validate;

use std::collections::BTreeMap;
use std::time::Duration;

pub use load::{ConfigError, Issue, load_file, load_file_with_env, load_str, load_str_with_env};
pub use units::ByteSize;

/// The whole file.
#[derive(Clone, Debug, Default)]
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
    pub warnings: Vec<Issue>,
}

/// `[server]`
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// HTTP ingest, queue API, `/metrics`, `/healthz`, `/readyz`. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Internal log, checkpoints and dead letters. Default `./data`.
    pub data_dir: String,
    /// Bearer token for admin and queue-consume endpoints. `None` disables them.
    pub admin_token: Option<String>,
    /// How long shutdown waits for in-flight deliveries. Default 30s.
    pub shutdown_timeout: Duration,
    /// Default dead-letter queue for pipelines that name none. Default `dead-letters`.
    /// It need not be declared under `[queues]`: an undeclared one is created with
    /// [`QueueConfig::default`].
    pub dead_letter: String,
    /// Listening beyond loopback without an ingest token on every `http` source and an
    /// `admin_token` is refused unless this says the user means it. Default false.
    pub insecure: bool,
    /// Open HTTP connections at most; the excess is shed at once. The cap actually used is
    /// lowered to keep file descriptors in reserve for the log, checkpoints and sinks.
    /// Default 4096.
    pub max_connections: usize,
    /// How long a client may take to send a request's headers (a new connection's first
    /// request included). Default 10s.
    pub header_timeout: Duration,
    /// How long a client may take to send a whole request body. Default 30s.
    pub body_timeout: Duration,
    /// How long a keep-alive connection may sit idle between requests. Default 30s.
    pub idle_timeout: Duration,
    /// Request bodies (and what they expand to) held in memory at once across all
    /// connections; past it requests get 429 with `Retry-After`. Default 64 MiB.
    pub max_request_memory: ByteSize,
    /// Bearer token `/metrics` asks for. `None`: `/metrics` is open.
    pub metrics_token: Option<String>,
    /// Serve HTTPS instead of HTTP.
    pub tls: Option<ServerTlsConfig>,
}

/// `[server.tls]`: PEM files, read at start and again on SIGHUP.
#[derive(Clone, Debug, PartialEq, Eq)]
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
            listen: "127.0.0.1:8080".into(),
            data_dir: "./data".into(),
            admin_token: None,
            shutdown_timeout: Duration::from_secs(30),
            dead_letter: "dead-letters".into(),
            insecure: false,
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_request_memory: ByteSize(64 << 20),
            metrics_token: None,
            tls: None,
        }
    }
}

/// `[log]`: the process's own diagnostic output.
#[derive(Clone, Debug)]
pub struct LogOutputConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// An `EnvFilter` directive, e.g. `info` or `switchyard=debug`.
    pub level: String,
}

impl Default for LogOutputConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// `[queues.NAME]`: an internal durable queue.
#[derive(Clone, Debug)]
pub struct QueueConfig {
    /// Default 1.
    pub partitions: u32,
    /// Delete segments older than this. Default 7 days.
    pub retention: Duration,
    /// When the queue holds this much unconsumed data producers get 429. Default 1 GiB.
    pub max_bytes: ByteSize,
    /// Work-queue lease. Default 30s.
    pub ack_timeout: Duration,
    /// Deliveries before dead-lettering. Default 20.
    pub max_deliveries: u32,
    /// Queue receiving messages that exhausted `max_deliveries`; must be declared under
    /// `[queues]` and differ from this queue.
    pub dead_letter: Option<String>,
    /// `Idempotency-Key` deduplication window. Default 5 minutes.
    pub dedup_window: Duration,
    /// Messages per partition a work group loads and orders by priority. Default 10000.
    pub lookahead: u32,
    /// Work groups the queue may have; a receive that would create one more is refused.
    /// Default 64.
    pub max_groups: u32,
    /// Bytes of loaded messages all work groups of the queue hold in memory together (their
    /// `lookahead` windows). Default 256 MiB.
    pub work_memory: ByteSize,
    /// A work group with no receive, ack, nack or extend for this long is deleted. Zero:
    /// never. Default 7 days.
    pub group_idle_expiry: Duration,
}

/// The longest lease, delay or `ack_timeout` a queue accepts: 7 days.
pub const MAX_QUEUE_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention: Duration::from_secs(7 * 24 * 3600),
            max_bytes: ByteSize(1 << 30),
            ack_timeout: Duration::from_secs(30),
            max_deliveries: 20,
            dead_letter: None,
            dedup_window: Duration::from_secs(300),
            lookahead: 10_000,
            max_groups: 64,
            work_memory: ByteSize(256 << 20),
            group_idle_expiry: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[sources.NAME]`
#[derive(Clone, Debug)]
pub enum SourceConfig {
    Http(HttpSourceConfig),
    Queue(QueueSourceConfig),
    PostgresCdc(PostgresCdcSourceConfig),
    Kafka(KafkaSourceConfig),
}

impl SourceConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            SourceConfig::Http(_) => "http",
            SourceConfig::Queue(_) => "queue",
            SourceConfig::PostgresCdc(_) => "postgres_cdc",
            SourceConfig::Kafka(_) => "kafka",
        }
    }
}

/// `type = "http"`: `POST /ingest/{name}`.
#[derive(Clone, Debug)]
pub struct HttpSourceConfig {
    /// Optional bearer token producers must send.
    pub token: Option<String>,
    /// Largest accepted request body. Default 1 MiB.
    pub max_body: ByteSize,
    /// Partitions of the source's durable intake log. Default 4.
    pub partitions: u32,
    /// `Idempotency-Key` deduplication window. Default 5 minutes.
    pub dedup_window: Duration,
    /// Unconsumed intake data above which producers get 429. Default 1 GiB.
    pub max_bytes: ByteSize,
    /// Events one request may carry (NDJSON lines); more get 413. Default 10000.
    pub max_events: usize,
}

impl Default for HttpSourceConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body: ByteSize(1 << 20),
            partitions: 4,
            dedup_window: Duration::from_secs(300),
            max_bytes: ByteSize(1 << 30),
            max_events: 10_000,
        }
    }
}

/// `type = "queue"`: read an internal queue as a consumer group.
#[derive(Clone, Debug)]
pub struct QueueSourceConfig {
    pub queue: String,
    /// Consumer group; defaults to the source's name.
    pub group: String,
}

/// `type = "postgres_cdc"`: changes of Postgres tables from a logical replication slot.
#[derive(Clone, Debug)]
pub struct PostgresCdcSourceConfig {
    /// Connection string of the database (`postgres://user:password@host:port/db`).
    pub dsn: String,
    /// Logical replication slot (pgoutput), created when missing.
    pub slot: String,
    /// Publication, created when missing for `tables`. Default: the slot's name.
    pub publication: String,
    /// `schema.table` entries; empty = the tables of an existing publication.
    pub tables: Vec<String>,
    pub snapshot: SnapshotMode,
    /// Rows per snapshot chunk. Default 1024.
    pub snapshot_chunk: u32,
    /// WAL the slot may hold back before a warning. Default 10 GiB.
    pub max_slot_lag: ByteSize,
    /// An invalidated or dropped slot is created again with a new snapshot instead of
    /// stopping the source. Default false.
    pub recreate_slot: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    Initial,
    Never,
}

/// `type = "kafka"` source (issue 6; parsed and validated now).
#[derive(Clone, Debug)]
pub struct KafkaSourceConfig {
    pub brokers: String,
    pub topics: Vec<String>,
    pub group: String,
    /// Passed through to librdkafka (SASL/TLS and tuning).
    pub options: BTreeMap<String, String>,
}

/// `[plugins.NAME]` (issue 4; parsed and validated now).
#[derive(Clone, Debug)]
pub struct PluginConfig {
    /// The `.wasm` component. Required.
    pub path: String,
    /// Handed to the plugin's `init` as JSON. Default `{}`.
    pub config: serde_json::Value,
    /// Fuel per call (about one unit per WebAssembly instruction). Default 10 000 000.
    /// A call carries a batch of events; one that runs out of fuel (or `memory`) is
    /// retried as two halves, a bounded number of times per batch, so this bounds what
    /// one event may cost, not how many fit in a batch: only an event that needs more on
    /// its own follows `on_error` (docs/plugins.md, "Limits").
    pub fuel: u64,
    /// Linear memory limit. Default 64 MiB. Retried on halves like `fuel`.
    pub memory: ByteSize,
    /// Wall-clock deadline per call. Default 100ms.
    pub timeout: Duration,
    /// What happens to the events of a call that traps, errs or hits a limit (for fuel
    /// and memory: with one event alone). Default `dead_letter`.
    pub on_error: OnError,
    /// Host environment variables the plugin may read (`wasi:cli/environment`), by name.
    /// Default none: without this key, reading the environment traps.
    pub allow_env: Vec<String>,
    /// Host directories the plugin may read (`wasi:filesystem`), read-only: guest path
    /// (absolute, e.g. `/data`) → host directory (relative to the working directory).
    /// Default none: a plugin that imports the filesystem is refused at start.
    pub allow_dirs: BTreeMap<String, String>,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            path: String::new(),
            config: serde_json::Value::Object(Default::default()),
            fuel: 10_000_000,
            memory: ByteSize(64 << 20),
            timeout: Duration::from_millis(100),
            on_error: OnError::DeadLetter,
            allow_env: Vec::new(),
            allow_dirs: BTreeMap::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnError {
    DeadLetter,
    Drop,
    Stop,
}

/// `[pipelines.NAME]`
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Source names.
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
    /// Events read ahead of the checkpoint per source partition. Default 1024.
    pub max_in_flight: usize,
}

/// `[sinks.NAME]`
#[derive(Clone, Debug)]
pub enum SinkConfig {
    Webhook(WebhookSinkConfig),
    Queue(QueueSinkConfig),
    Stdout(StdoutSinkConfig),
    File(FileSinkConfig),
    Kafka(KafkaSinkConfig),
}

impl SinkConfig {
    pub fn type_name(&self) -> &'static str {
        match self {
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Queue(_) => "queue",
            SinkConfig::Stdout(_) => "stdout",
            SinkConfig::File(_) => "file",
            SinkConfig::Kafka(_) => "kafka",
        }
    }
}

/// Exponential backoff with jitter between delivery attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Attempts in all, the first included, before dead-lettering. Default 10.
    pub max_attempts: u32,
    /// First delay. Default 200ms.
    pub initial: Duration,
    /// Largest delay. Default 1 minute.
    pub max: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial: Duration::from_millis(200),
            max: Duration::from_secs(60),
        }
    }
}

/// `type = "webhook"`
#[derive(Clone, Debug)]
pub struct WebhookSinkConfig {
    pub url: String,
    /// Standard Webhooks secret, `whsec_` + base64 key. Unsigned when absent.
    pub secret: Option<String>,
    /// Per request. Default 5s.
    pub timeout: Duration,
    /// Requests in flight (and key lanes). Default 16.
    pub concurrency: usize,
    pub retry: RetryConfig,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// Send the JSON wire envelope instead of the bare payload. Default false.
    pub envelope: bool,
    /// Allow link-local and cloud metadata addresses (169.254/16, fe80::/10,
    /// 169.254.169.254, fd00:ec2::254, `metadata.google.internal`…), written in `url` or
    /// resolved from its host name at connect time. Default false: they are refused.
    /// Loopback and private-network addresses are always allowed (`validate` warns).
    pub allow_private: bool,
}

/// `type = "queue"`: append to an internal queue.
#[derive(Clone, Debug)]
pub struct QueueSinkConfig {
    pub queue: String,
}

/// `type = "stdout"`: one JSON event per line.
#[derive(Clone, Debug, Default)]
pub struct StdoutSinkConfig {}

/// `type = "file"`: one JSON event per line, appended and fsync'd before the ack.
#[derive(Clone, Debug)]
pub struct FileSinkConfig {
    pub path: String,
    /// Permission bits of the file when the sink creates it (an existing file keeps its
    /// own). Default [`FileSinkConfig::DEFAULT_MODE`]: only the owner can read the events.
    pub mode: u32,
}

impl FileSinkConfig {
    /// `0600`: events often hold personal data.
    pub const DEFAULT_MODE: u32 = 0o600;
}

/// `type = "kafka"` sink: an idempotent producer (`acks=all`); an event is acknowledged
/// on its delivery report.
#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    /// May use `{source}`, `{kind}`, `{table}` (`{table}`: the `pg-table` header of
    /// Postgres CDC events, "schema.table").
    pub topic: String,
    pub compression: Option<String>,
    /// Passed through to librdkafka (SASL/TLS and tuning); they win over the defaults.
    pub options: BTreeMap<String, String>,
    /// How long one delivery attempt waits for the broker's confirmations before its
    /// unconfirmed events are retried (the retry waits for the same queued messages;
    /// librdkafka itself never times a message out). Default 30s.
    pub timeout: Duration,
    /// How long the producer waits to fill a batch (`linger.ms`). Default 5ms.
    pub linger: Duration,
    /// Ordering lanes delivering at once (events of one key share a lane). Default 8.
    pub concurrency: usize,
    /// Retries of failed attempts. `None`: retry without limit (a broker outage never
    /// dead-letters events; events the broker can never take are dead-lettered at once).
    pub retry: Option<RetryConfig>,
    /// Create a topic that does not exist (with `partitions` partitions) instead of
    /// retrying until someone creates it. Default false.
    pub create_topics: bool,
    /// Partitions of topics made by `create_topics`. Default 1.
    pub partitions: u32,
}

/// Placeholders a Kafka sink's `topic` may use.
pub const KAFKA_TOPIC_PLACEHOLDERS: &[&str] = &["source", "kind", "table"];
