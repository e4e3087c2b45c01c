//! `type = "kafka"`.

use super::super::sources::kafka::options;
use super::super::walk::{Ctx, Table};
use super::{cloudevents_mode, format, retry};
use crate::name_template::{self, Placeholders};
use crate::{KAFKA_COMPRESSIONS, KafkaSinkConfig};

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> KafkaSinkConfig {
    let topic = table
        .required_string(
            cx,
            "topic",
            "the topic to produce to; may use {source}, {kind}, {table}, {header:NAME}",
        )
        .unwrap_or_default();
    if let Some(problem) = template_problem("topic", &topic) {
        cx.issue(&table.child("topic"), problem);
    }
    let format = format(cx, table);
    KafkaSinkConfig {
        brokers: table
            .required_string(cx, "brokers", "bootstrap servers, e.g. \"127.0.0.1:9092\"")
            .unwrap_or_default(),
        topic,
        compression: table
            .choice(cx, "compression", KAFKA_COMPRESSIONS)
            .map(str::to_string),
        options: options(cx, table),
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(KafkaSinkConfig::DEFAULT_TIMEOUT),
        linger: table
            .duration(cx, "linger", true)
            .unwrap_or(KafkaSinkConfig::DEFAULT_LINGER),
        concurrency: table
            .positive_usize(cx, "concurrency", "; at least one lane must deliver")
            .unwrap_or(KafkaSinkConfig::DEFAULT_CONCURRENCY),
        retry: table
            .get("retry")
            .and_then(|value| retry(cx, &table.child("retry"), value)),
        create_topics: table.boolean(cx, "create_topics").unwrap_or(false),
        partitions: table
            .positive_u32(cx, "partitions", "; a topic has at least one partition")
            .unwrap_or(KafkaSinkConfig::DEFAULT_PARTITIONS),
        format,
        cloudevents_mode: cloudevents_mode(cx, table, format),
    }
}

/// What is wrong with a sink's `key` template (a Kafka topic, a NATS subject, a Redis
/// stream), if anything: placeholders other than `{source}`, `{kind}`, `{table}` and
/// `{header:NAME}`, or an unclosed `{`.
pub(super) fn template_problem(key: &str, topic: &str) -> Option<String> {
    name_template::parse_with(topic, Placeholders::Names)
        .err()
        .map(|problem| format!("{key} {problem}"))
}
