//! `[sinks.NAME]`: `type` picks the [`SinkKind`], then the table is read as that type's
//! struct, with that type's keys known.

mod file;
mod kafka;
pub(super) mod mqtt;
mod nats;
mod queue;
pub(super) mod rabbitmq;
mod redis;
mod stdout;
mod webhook;

use serde_json::Value;

use super::walk::{Ctx, Table, join};
use crate::{CloudEventsMode, NullSinkConfig, RetryConfig, SinkConfig, SinkFormat, SinkKind};

pub(super) fn sink(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<SinkConfig> {
    let mut table = Table::open(cx, path, value, &["type"])?;
    // Other keys cannot be judged without a type.
    let kind = table.type_of(cx, "sink", &SinkKind::ALL, SinkKind::name)?;
    table.know(kind.fields());
    let sink = match kind {
        SinkKind::Webhook => SinkConfig::Webhook(webhook::read(cx, &table)),
        SinkKind::Queue => SinkConfig::Queue(queue::read(cx, &table)),
        SinkKind::Stdout => SinkConfig::Stdout(stdout::read(cx, &table)),
        SinkKind::File => SinkConfig::File(file::read(cx, &table)),
        SinkKind::Kafka => SinkConfig::Kafka(kafka::read(cx, &table)),
        // No keys of its own: anything else is an unknown key.
        SinkKind::Null => SinkConfig::Null(NullSinkConfig {}),
        SinkKind::Nats => SinkConfig::Nats(nats::read(cx, &table)),
        SinkKind::Redis => SinkConfig::Redis(redis::read(cx, &table)),
        SinkKind::Rabbitmq => SinkConfig::Rabbitmq(rabbitmq::read(cx, &table)),
        SinkKind::Mqtt => SinkConfig::Mqtt(mqtt::read(cx, &table)),
    };
    table.finish(cx);
    Some(sink)
}

/// `format = "…"` of any sink: one of [`SinkFormat`]'s values (an unknown one is reported
/// with the list of them).
fn format(cx: &mut Ctx<'_>, table: &Table<'_>) -> SinkFormat {
    table.choice_of(cx, "format").unwrap_or(SinkFormat::DEFAULT)
}

/// `cloudevents_mode = "…"` of a sink whose protocol has headers; only meaningful with
/// `format = "cloudevents"`.
fn cloudevents_mode(cx: &mut Ctx<'_>, table: &Table<'_>, format: SinkFormat) -> CloudEventsMode {
    let mode = table.choice_of(cx, "cloudevents_mode");
    if let Some(mode) = mode
        && format != SinkFormat::CloudEvents
    {
        let mode: CloudEventsMode = mode;
        cx.warn(
            &table.child("cloudevents_mode"),
            format!(
                "cloudevents_mode = \"{}\" is ignored: it applies to format = \"cloudevents\" and this sink's format is \"{}\"; set format = \"cloudevents\" or remove `cloudevents_mode`",
                mode.name(),
                format.name()
            ),
        );
    }
    mode.unwrap_or_default()
}

/// `retry = { … }` of a webhook or Kafka sink.
fn retry(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<RetryConfig> {
    let table = Table::of::<RetryConfig>(cx, path, value)?;
    let retry = RetryConfig {
        max_attempts: table
            .positive_u32(cx, "max_attempts", "; it counts the first attempt too")
            .unwrap_or(RetryConfig::DEFAULT_MAX_ATTEMPTS),
        initial: table
            .duration(cx, "initial", true)
            .unwrap_or(RetryConfig::DEFAULT_INITIAL),
        max: table
            .duration(cx, "max", false)
            .unwrap_or(RetryConfig::DEFAULT_MAX),
    };
    if retry.initial > retry.max {
        cx.issue(
            &join(path, "initial"),
            format!(
                "the first delay ({}) is longer than `max` ({}): lower `initial` or raise `max`",
                humantime::format_duration(retry.initial),
                humantime::format_duration(retry.max)
            ),
        );
    }
    table.finish(cx);
    Some(retry)
}
