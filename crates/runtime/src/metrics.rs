//! Prometheus metrics, encoded by `prometheus-client`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub source: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PipelineLabels {
    pub pipeline: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabels {
    pub sink: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkNameLabels {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    pub pipeline: String,
    pub source: String,
    pub partition: u32,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Every metric switchyard exports.
pub struct Metrics {
    registry: Registry,
    /// Events accepted durably per source.
    pub source_events: Family<SourceLabels, Counter>,
    /// HTTP ingest answers per source and status.
    pub http_requests: Family<HttpLabels, Counter>,
    /// Events per pipeline: `read`, `completed`.
    pub pipeline_events: Family<PipelineLabels, Counter>,
    /// Events per sink: `delivered`, `retried`, `dead_lettered`.
    pub sink_events: Family<SinkLabels, Counter>,
    /// Seconds per delivery attempt.
    pub sink_latency: Family<SinkNameLabels, Histogram, fn() -> Histogram>,
    /// Records behind the slowest consumer group.
    pub queue_depth: Family<QueueLabels, Gauge>,
    pub queue_bytes: Family<QueueLabels, Gauge>,
    /// Records between a reader's checkpoint and the partition's durable end.
    pub checkpoint_lag: Family<ReaderLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("switchyard");
        let source_events = Family::<SourceLabels, Counter>::default();
        registry.register(
            "source_events",
            "Events accepted durably by a source",
            source_events.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP ingest requests by source and answer status",
            http_requests.clone(),
        );
        let pipeline_events = Family::<PipelineLabels, Counter>::default();
        registry.register(
            "pipeline_events",
            "Events a pipeline read, and completed (acknowledged by every sink or dead-lettered)",
            pipeline_events.clone(),
        );
        let sink_events = Family::<SinkLabels, Counter>::default();
        registry.register(
            "sink_events",
            "Events per sink by outcome: delivered, retried, dead_lettered",
            sink_events.clone(),
        );
        let sink_latency: Family<SinkNameLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "sink_attempt_seconds",
            "Duration of one delivery attempt",
            sink_latency.clone(),
        );
        let queue_depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Records not yet consumed by the slowest consumer group",
            queue_depth.clone(),
        );
        let queue_bytes = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_bytes",
            "Bytes a queue holds on disk",
            queue_bytes.clone(),
        );
        let checkpoint_lag = Family::<ReaderLabels, Gauge>::default();
        registry.register(
            "checkpoint_lag",
            "Records between a pipeline's checkpoint and the end of its source partition",
            checkpoint_lag.clone(),
        );
        Self {
            registry,
            source_events,
            http_requests,
            pipeline_events,
            sink_events,
            sink_latency,
            queue_depth,
            queue_bytes,
            checkpoint_lag,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing metrics into a String");
        out
    }

    pub fn sink_outcome(&self, sink: &str, outcome: &'static str, n: u64) {
        self.sink_events
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc_by(n);
    }

    pub fn pipeline_outcome(&self, pipeline: &str, outcome: &'static str, n: u64) {
        self.pipeline_events
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.to_owned(),
                outcome,
            })
            .inc_by(n);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
