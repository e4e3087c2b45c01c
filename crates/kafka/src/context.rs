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
        match fix_for(reason) {
            Some(fix) => warn!(kafka = self.what, name = %self.name, %error,
                "kafka client: {reason}; {fix}"),
            None => warn!(kafka = self.what, name = %self.name, %error, "kafka client: {reason}"),
        }
    }
}

/// What to do about a client error librdkafka reports in its own terms, when the fix is
/// in switchyard's config.
pub(crate) fn fix_for(reason: &str) -> Option<&'static str> {
    if reason.contains("certificate verify failed") || reason.contains("unable to get local issuer")
    {
        Some(
            "the broker's TLS certificate is not signed by a CA this client trusts: set \
             options.\"ssl.ca.location\" to the PEM file of the CA that signed the brokers' \
             certificates (or check that the one set is that CA)",
        )
    } else if reason.contains("hostname") && reason.contains("SSL") {
        Some(
            "the broker's TLS certificate does not name the address connected to: use the \
             broker host names of its certificate in `brokers` (or, for a test cluster only, \
             options.\"ssl.endpoint.identification.algorithm\" = \"none\")",
        )
    } else if reason.contains("SSL handshake failed") {
        Some(
            "the TLS handshake with the broker failed: check that the listener speaks TLS \
             and that options.\"security.protocol\" (ssl / sasl_ssl) and the ssl.* options \
             match it",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::fix_for;

    #[test]
    fn tls_failures_say_what_to_set() {
        let wrong_ca = "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: \
                        error:0A000086:SSL routines::certificate verify failed: broker \
                        certificate could not be verified, verify that ssl.ca.location is \
                        correctly configured or root CA certificates are installed";
        assert!(fix_for(wrong_ca).unwrap().contains("ssl.ca.location"));
        let plain = "ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: Disconnected: connecting \
             to a PLAINTEXT broker listener?";
        assert!(fix_for(plain).unwrap().contains("security.protocol"));
        assert_eq!(
            fix_for("127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed"),
            None
        );
    }
}
