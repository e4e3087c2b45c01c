//! librdkafka's logs and errors, as `tracing` events naming the sink or source.

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use tracing::{debug, error, info, warn};

/// A client context that reports through `tracing`.
#[derive(Clone, Debug)]
pub(crate) struct LogContext {
    /// `sink` or `source`.
    pub what: &'static str,
    pub name: String,
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let (what, name) = (self.what, self.name.as_str());
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(kafka = what, name, fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Warning => warn!(kafka = what, name, fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                info!(kafka = what, name, fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => debug!(kafka = what, name, fac, "librdkafka: {message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        // Brokers down, connection refused, authentication failures: librdkafka keeps
        // retrying by itself; this says why nothing moves.
        warn!(kafka = self.what, name = %self.name, %error, "kafka client: {reason}");
    }
}
