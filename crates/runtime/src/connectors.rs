//! The registry of connectors: one line per source type and one per sink type.
//!
//! Each arm hands a component's typed configuration to its connector's
//! `build(name, &config, &ctx)`. The matches are exhaustive, so a new variant of
//! `SourceConfig` or `SinkConfig` does not compile until it is registered here
//! (ARCHITECTURE.md, "Adding a sink", walks through it).

use std::collections::BTreeMap;
use std::sync::Arc;

use switchyard_config::{SinkConfig, SourceConfig};
use switchyard_connector::{BuildContext, BuildError, Sink, Source};
use switchyard_queue::QueueHandle;

/// What the connectors of switchyard's own queues are built from.
pub(crate) struct Queues<'a> {
    /// Declared and dead-letter queues, by name.
    pub queues: &'a BTreeMap<String, Arc<QueueHandle>>,
    /// Intake logs of `http` sources, by source name.
    pub intakes: &'a BTreeMap<String, Arc<QueueHandle>>,
}

/// Builds the sink `name`.
pub(crate) fn build_sink(
    name: &str,
    cfg: &SinkConfig,
    ctx: &BuildContext<'_>,
    own: &Queues<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    match cfg {
        SinkConfig::Webhook(c) => switchyard_sinks::webhook::build(name, c, ctx),
        SinkConfig::Stdout(c) => switchyard_sinks::stdout::build(name, c, ctx),
        SinkConfig::File(c) => switchyard_sinks::file::build(name, c, ctx),
        SinkConfig::Kafka(c) => switchyard_kafka::sink::build(name, c, ctx),
        SinkConfig::Nats(c) => switchyard_nats::sink::build(name, c, ctx),
        SinkConfig::Redis(c) => switchyard_redis::sink::build(name, c, ctx),
        SinkConfig::Queue(c) => switchyard_queue::sink::build(c, own.queues, ctx),
        SinkConfig::Null(c) => switchyard_sinks::null::build(name, c, ctx),
        SinkConfig::Rabbitmq(c) => switchyard_rabbitmq::sink::build(name, c, ctx),
        SinkConfig::Mqtt(c) => switchyard_mqtt::sink::build(name, c, ctx),
    }
}

/// Builds the source `name`; nothing connects before its `open`.
pub(crate) fn build_source(
    name: &str,
    cfg: &SourceConfig,
    ctx: &BuildContext<'_>,
    own: &Queues<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    match cfg {
        SourceConfig::Http(_) => switchyard_queue::feed::build_intake(name, own.intakes),
        SourceConfig::Queue(c) => switchyard_queue::feed::build(name, c, own.queues),
        SourceConfig::PostgresCdc(c) => switchyard_source_postgres::build(name, c, ctx),
        SourceConfig::Kafka(c) => switchyard_kafka::source::build(name, c, ctx),
        SourceConfig::Nats(c) => switchyard_nats::source::build(name, c, ctx),
        SourceConfig::Redis(c) => switchyard_redis::source::build(name, c, ctx),
        SourceConfig::Rabbitmq(c) => switchyard_rabbitmq::source::build(name, c, ctx),
        SourceConfig::Mqtt(c) => switchyard_mqtt::source::build(name, c, ctx),
    }
}
