//! Kafka for switchyard, on rdkafka with its bundled librdkafka.
//!
//! * [`KafkaSink`] — a [`switchyard_connector::Sink`]: an idempotent producer with
//!   `acks=all`; an event is [`Outcome::Delivered`](switchyard_connector::Outcome) only
//!   when its delivery report says the broker has it. Errors about the event itself
//!   (too large, invalid topic name) are permanent and dead-letter it; everything else
//!   (timeouts, brokers down, a topic that does not exist yet) is retried.
//! * [`KafkaConsumer`] — a consumer-group member for a pipeline reader: it hands out
//!   messages with sequential positions and commits, per partition, only offsets below
//!   the reader's low watermark ([`offsets::OffsetTracker`]), also when partitions are
//!   revoked. It keeps polling while the reader applies backpressure (paused
//!   partitions), so it never drops out of its group for being slow.
//!
//! * [`source::build`] and [`sink::build`] — the connectors the runtime registers: the
//!   `kafka` source (a [`switchyard_connector::Source`] whose feed is a consumer) and the
//!   `kafka` sink.
//!
//! This crate knows no runtime: it implements the contracts of `switchyard-connector`.

mod consumer;
mod context;
pub mod offsets;
pub mod sink;
pub mod source;
mod topic;

pub use consumer::{KafkaConsumer, message_event_id};
pub use sink::KafkaSink;
pub use switchyard_connector::template::TABLE_HEADER;
pub use topic::TopicTemplate;

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

/// `reason` (a librdkafka message, which quotes the values it refuses) with the values
/// of secret-named `options` (`sasl.password`, `ssl.key.password`, …) masked.
pub(crate) fn without_secrets(
    reason: &str,
    options: &std::collections::BTreeMap<String, String>,
) -> String {
    let secrets = options
        .iter()
        .filter(|(name, _)| switchyard_config::redact::is_secret_name(name))
        .map(|(_, value)| value.as_str());
    switchyard_config::redact::scrub(reason, secrets).into_owned()
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

#[cfg(test)]
mod secret_tests {
    use std::collections::BTreeMap;

    #[test]
    fn refused_configuration_messages_do_not_quote_secret_options() {
        let options: BTreeMap<String, String> = [
            ("sasl.password", "Sup3rSecret"),
            ("ssl.key.password", "keypass99"),
            ("sasl.mechanism", "PLAIN"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let reason = "Invalid value \"Sup3rSecret\" for configuration property \"sasl.password\"; keypass99; PLAIN";
        let shown = super::without_secrets(reason, &options);
        assert!(!shown.contains("Sup3rSecret"), "{shown}");
        assert!(!shown.contains("keypass99"), "{shown}");
        assert!(shown.contains("PLAIN"), "{shown}");
        assert!(shown.contains("sasl.password"), "{shown}");
    }
}
