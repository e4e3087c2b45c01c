//! Kafka for switchyard, on rdkafka with its bundled librdkafka.
//!
//! * [`KafkaSink`] — a [`switchyard_sinks::Sink`]: an idempotent producer with
//!   `acks=all`; an event is [`Outcome::Delivered`](switchyard_sinks::Outcome) only
//!   when its delivery report says the broker has it. Errors about the event itself
//!   (too large, invalid topic name) are permanent and dead-letter it; everything else
//!   (timeouts, brokers down, a topic that does not exist yet) is retried.
//! * [`KafkaConsumer`] — a consumer-group member for a pipeline reader: it hands out
//!   messages with sequential positions and commits, per partition, only offsets below
//!   the reader's low watermark ([`offsets::OffsetTracker`]), also when partitions are
//!   revoked. It keeps polling while the reader applies backpressure (paused
//!   partitions), so it never drops out of its group for being slow.
//!
//! This crate knows no runtime: the runtime wraps [`KafkaConsumer`] in its `Feed`.

mod consumer;
mod context;
pub mod offsets;
mod sink;
mod topic;

pub use consumer::{KafkaConsumer, message_event_id};
pub use sink::KafkaSink;
pub use topic::{TABLE_HEADER, TopicTemplate};

/// Message headers the sink sets from the event's fields (the event's own headers
/// follow them). The consumer maps them back: `switchyard-id` becomes the event id,
/// `switchyard-content-type` the content type.
pub mod headers {
    pub const ID: &str = "switchyard-id";
    pub const SOURCE: &str = "switchyard-source";
    pub const KIND: &str = "switchyard-kind";
    pub const CONTENT_TYPE: &str = "switchyard-content-type";
    /// The names above, which the sink does not copy again from the event's headers.
    pub const ALL: [&str; 4] = [ID, SOURCE, KIND, CONTENT_TYPE];
}

/// Why a Kafka client could not be set up from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error(
        "{what} `{name}`: librdkafka refused the configuration: {reason}; check `options` and `compression`"
    )]
    Client {
        what: &'static str,
        name: String,
        reason: String,
    },
    #[error("source `{name}`: cannot subscribe to {topics:?}: {reason}")]
    Subscribe {
        name: String,
        topics: Vec<String>,
        reason: String,
    },
    #[error("source `{name}`: cannot start the consumer thread: {source}")]
    Thread {
        name: String,
        #[source]
        source: std::io::Error,
    },
}
