//! `type = "rabbitmq"`, and the URL and CA file checks its source shares.

use super::super::walk::{Ctx, Table};
use super::{cloudevents_mode, format, retry};
use crate::{RabbitmqSinkConfig, name_template, redact};

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> RabbitmqSinkConfig {
    let exchange = match table.get("exchange") {
        None => {
            table.missing(
                cx,
                "exchange",
                "the exchange to publish to, e.g. \"events\"; \"\" is the default exchange",
            );
            String::new()
        }
        Some(_) => table.string(cx, "exchange").unwrap_or_default(),
    };
    let routing_key = table
        .string(cx, "routing_key")
        .unwrap_or_else(|| RabbitmqSinkConfig::DEFAULT_ROUTING_KEY.to_owned());
    if let Err(problem) = name_template::parse(&routing_key) {
        cx.issue(
            &table.child("routing_key"),
            format!("routing_key {problem}"),
        );
    }
    let format = format(cx, table);
    RabbitmqSinkConfig {
        url: amqp_url(cx, table),
        exchange,
        routing_key,
        ca_file: ca_file(cx, table),
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(RabbitmqSinkConfig::DEFAULT_TIMEOUT),
        concurrency: table
            .positive_usize(cx, "concurrency", "; at least one lane must deliver")
            .unwrap_or(RabbitmqSinkConfig::DEFAULT_CONCURRENCY),
        retry: table
            .get("retry")
            .and_then(|value| retry(cx, &table.child("retry"), value)),
        format,
        cloudevents_mode: cloudevents_mode(cx, table, format),
    }
}

/// `url` of a RabbitMQ sink or source: `amqp://` or `amqps://`.
pub(crate) fn amqp_url(cx: &mut Ctx<'_>, table: &Table<'_>) -> String {
    let url = table
        .required_string(
            cx,
            "url",
            "the broker, e.g. \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
        )
        .unwrap_or_default();
    if !(url.is_empty() || url.starts_with("amqp://") || url.starts_with("amqps://")) {
        cx.issue(
            &table.child("url"),
            format!(
                "invalid url {:?}: it must start with amqp:// (or amqps:// for TLS), e.g. \
                 \"amqp://user:password@host:5672/vhost\" (the default vhost is %2f)",
                redact::url(&url)
            ),
        );
    }
    url
}

/// `ca_file` of a broker sink or source: a path (the connector reads it at start, and
/// a file it cannot read stops the start with the reason).
pub(crate) fn ca_file(cx: &mut Ctx<'_>, table: &Table<'_>) -> Option<String> {
    table.non_empty_string(cx, "ca_file")
}
