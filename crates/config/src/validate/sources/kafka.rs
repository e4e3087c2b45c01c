//! `type = "kafka"`, and the librdkafka `options` a Kafka source and sink share.

use std::collections::BTreeMap;

use super::super::walk::{Ctx, Table, did_you_mean};
use crate::KafkaSourceConfig;

/// librdkafka's `security.protocol` values (case does not matter to it).
const KAFKA_SECURITY_PROTOCOLS: &[&str] = &["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> KafkaSourceConfig {
    let topics = table.strings(cx, "topics");
    if topics.is_none() && table.get("topics").is_none() {
        table.missing(cx, "topics", "the Kafka topics to read, e.g. [\"clicks\"]");
    } else if topics.as_ref().is_some_and(Vec::is_empty) {
        cx.issue(
            &table.child("topics"),
            "`topics` is empty: name at least one topic",
        );
    }
    KafkaSourceConfig {
        brokers: table
            .required_string(cx, "brokers", "bootstrap servers, e.g. \"127.0.0.1:9092\"")
            .unwrap_or_default(),
        topics: topics.unwrap_or_default(),
        group: table
            .non_empty_string(cx, "group")
            .unwrap_or_else(|| KafkaSourceConfig::DEFAULT_GROUP.to_string()),
        options: options(cx, table),
    }
}

/// `options` of a Kafka sink or source. They go to librdkafka as they are (it refuses
/// what it does not know at start); `security.protocol` is checked here so that a typo
/// is reported with its line before a start.
pub(crate) fn options(cx: &mut Ctx<'_>, table: &Table<'_>) -> BTreeMap<String, String> {
    let options = table.string_map(cx, "options").unwrap_or_default();
    if let Some(protocol) = options.get("security.protocol")
        && !KAFKA_SECURITY_PROTOCOLS.contains(&protocol.to_ascii_lowercase().as_str())
    {
        cx.issue(
            &table.child("options"),
            format!(
                "\"security.protocol\" = {protocol:?} is not a Kafka security protocol{}: use \
                 plaintext, ssl (TLS; with \"ssl.ca.location\" for a private CA), \
                 sasl_plaintext or sasl_ssl (SASL over TLS)",
                did_you_mean(
                    &protocol.to_ascii_lowercase(),
                    KAFKA_SECURITY_PROTOCOLS.iter().copied()
                )
            ),
        );
    }
    options
}
