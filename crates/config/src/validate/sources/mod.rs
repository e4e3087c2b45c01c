//! `[sources.NAME]`: `type` picks the [`SourceKind`], then the table is read as that
//! type's struct, with that type's keys known.

pub(super) mod broker;
mod http;
pub(super) mod kafka;
mod mqtt;
pub(super) mod nats;
mod postgres_cdc;
mod queue;
mod rabbitmq;
pub(super) mod redis;

use serde_json::Value;

use super::walk::{Ctx, Table};
use crate::{SourceConfig, SourceKind};

pub(super) fn source(
    cx: &mut Ctx<'_>,
    name: &str,
    path: &str,
    value: &Value,
) -> Option<SourceConfig> {
    let mut table = Table::open(cx, path, value, &["type"])?;
    // Other keys cannot be judged without a type.
    let kind = table.type_of(cx, "source", &SourceKind::ALL, SourceKind::name)?;
    table.know(kind.fields());
    let source = match kind {
        SourceKind::Http => SourceConfig::Http(http::read(cx, &table)),
        SourceKind::Queue => SourceConfig::Queue(queue::read(cx, &table, name)),
        SourceKind::PostgresCdc => SourceConfig::PostgresCdc(postgres_cdc::read(cx, &table, name)),
        SourceKind::Kafka => SourceConfig::Kafka(kafka::read(cx, &table)),
        SourceKind::Nats => SourceConfig::Nats(nats::read(cx, &table)),
        SourceKind::Redis => SourceConfig::Redis(redis::read(cx, &table)),
        SourceKind::Rabbitmq => SourceConfig::Rabbitmq(rabbitmq::read(cx, &table)),
        SourceKind::Mqtt => SourceConfig::Mqtt(mqtt::read(cx, &table)),
    };
    table.finish(cx);
    Some(source)
}
