//! Prometheus metrics, encoded by `prometheus-client`.
//!
//! Labels hold only names from the config (sources, pipelines, sinks, queues, groups,
//! plugins) and table names, never a URL, a DSN or an error message: a scrape is often
//! less protected than the admin API, so nothing that may carry a credential goes there.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

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
pub struct GroupLabels {
    pub queue: String,
    pub group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReaderLabels {
    pub pipeline: String,
    pub source: String,
    pub partition: u32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub source: String,
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginOutcomeLabels {
    pub plugin: String,
    pub kind: &'static str,
}

fn fuel_histogram() -> Histogram {
    // 1k … ~1G fuel per call
    Histogram::new(exponential_buckets(1000.0, 4.0, 16))
}

fn call_histogram() -> Histogram {
    // 10 µs … ~1.3 s
    Histogram::new(exponential_buckets(0.00001, 2.0, 18))
}

fn latency_histogram() -> Histogram {
    // 0.5 ms … ~65 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Where a pipeline's reader of one source partition stands, written by the reader at
/// each commit tick (not per event) and read by the console's sampler.
#[derive(Debug, Default)]
pub struct ReaderProgress {
    /// The low watermark of completed positions.
    pub checkpoint: AtomicU64,
    /// The checkpoint the feed last stored.
    pub committed: AtomicU64,
    /// Events held: read and not completed, or completed after one that is not.
    pub in_flight: AtomicU64,
    /// What `checkpoint_lag` shows.
    pub lag: AtomicU64,
}

/// Every metric switchyard exports.
pub struct Metrics {
    registry: Registry,
    /// Every reader's progress, by (pipeline, source, partition): not exported, read by
    /// the console.
    pub readers: Mutex<BTreeMap<(String, String, u32), Arc<ReaderProgress>>>,
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
    /// Work groups: unfinished, leased and dead-lettered messages.
    pub group_depth: Family<GroupLabels, Gauge>,
    pub group_in_flight: Family<GroupLabels, Gauge>,
    pub group_dead_lettered: Family<GroupLabels, Gauge>,
    /// Records between a reader's checkpoint and the partition's durable end.
    pub checkpoint_lag: Family<ReaderLabels, Gauge>,
    /// WAL a Postgres source's replication slot holds back on the server.
    pub slot_lag_bytes: Family<SourceLabels, Gauge>,
    /// Whether a Postgres source's replication session is up (1) or not (0).
    pub replication_connected: Family<SourceLabels, Gauge>,
    /// Whether this instance leads a Postgres source (holds its slot's lock: 1) or waits
    /// as a standby (0).
    pub cdc_leader: Family<SourceLabels, Gauge>,
    /// Bytes of large in-progress transactions a Postgres source holds in memory.
    pub replication_streaming_bytes: Family<SourceLabels, Gauge>,
    /// Bytes a Postgres source wrote to spill files since the start.
    pub replication_spilled_bytes: Family<SourceLabels, Gauge>,
    /// Rows of a table's snapshot emitted and acknowledged so far.
    pub snapshot_rows: Family<TableLabels, Gauge>,
    /// 1 while a table's snapshot is not complete.
    pub snapshot_pending: Family<TableLabels, Gauge>,
    /// Rows the planner expects a table's snapshot to read.
    pub snapshot_rows_estimate: Family<TableLabels, Gauge>,
    /// Seconds a running snapshot needs at its current rate (absent when unknown).
    pub snapshot_eta_seconds: Family<TableLabels, Gauge>,
    /// Plugin calls (one per batch) and the events they carried.
    pub plugin_calls: Family<PluginLabels, Counter>,
    pub plugin_events: Family<PluginLabels, Counter>,
    /// Decisions by kind: keep, drop (filters), emit (transforms), route (routers).
    pub plugin_decisions: Family<PluginOutcomeLabels, Counter>,
    /// Failed calls by cause: trap, fuel, timeout, memory, returned_error, ...
    pub plugin_errors: Family<PluginOutcomeLabels, Counter>,
    pub plugin_fuel: Family<PluginLabels, Histogram, fn() -> Histogram>,
    pub plugin_seconds: Family<PluginLabels, Histogram, fn() -> Histogram>,
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
        let group_depth = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "queue_group_depth",
            "Messages a work group has not finished (in flight and delayed included)",
            group_depth.clone(),
        );
        let group_in_flight = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "queue_group_in_flight",
            "Messages of a work group leased to consumers",
            group_in_flight.clone(),
        );
        let group_dead_lettered = Family::<GroupLabels, Gauge>::default();
        registry.register(
            "queue_group_dead_lettered",
            "Messages a work group moved to its dead-letter queue",
            group_dead_lettered.clone(),
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
        let slot_lag_bytes = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "replication_slot_lag_bytes",
            "WAL a Postgres source's replication slot holds back on the server",
            slot_lag_bytes.clone(),
        );
        let replication_connected = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "replication_connected",
            "1 while a Postgres source's replication session is up",
            replication_connected.clone(),
        );
        let cdc_leader = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "cdc_leader",
            "1 while this instance holds a Postgres source's leader lock and reads its slot, 0 \
             as a standby",
            cdc_leader.clone(),
        );
        let replication_streaming_bytes = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "replication_streaming_buffered_bytes",
            "Bytes of large in-progress transactions a Postgres source holds in memory until \
             their commit",
            replication_streaming_bytes.clone(),
        );
        let replication_spilled_bytes = Family::<SourceLabels, Gauge>::default();
        registry.register(
            "replication_spilled_bytes",
            "Bytes of large in-progress transactions a Postgres source wrote to spill files \
             since the start",
            replication_spilled_bytes.clone(),
        );
        let snapshot_rows = Family::<TableLabels, Gauge>::default();
        registry.register(
            "snapshot_rows",
            "Rows of a table's snapshot emitted and acknowledged",
            snapshot_rows.clone(),
        );
        let snapshot_pending = Family::<TableLabels, Gauge>::default();
        registry.register(
            "snapshot_pending",
            "1 while a table's snapshot is not complete",
            snapshot_pending.clone(),
        );
        let snapshot_rows_estimate = Family::<TableLabels, Gauge>::default();
        registry.register(
            "snapshot_rows_estimate",
            "Rows the planner expects a table's snapshot (or filtered backfill) to read",
            snapshot_rows_estimate.clone(),
        );
        let snapshot_eta_seconds = Family::<TableLabels, Gauge>::default();
        registry.register(
            "snapshot_eta_seconds",
            "Seconds a running snapshot needs at its current rate",
            snapshot_eta_seconds.clone(),
        );
        let plugin_calls = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin calls (one per batch)",
            plugin_calls.clone(),
        );
        let plugin_events = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_events",
            "Events handed to a plugin",
            plugin_events.clone(),
        );
        let plugin_decisions = Family::<PluginOutcomeLabels, Counter>::default();
        registry.register(
            "plugin_decisions",
            "Plugin decisions by kind: keep, drop, emit, route",
            plugin_decisions.clone(),
        );
        let plugin_errors = Family::<PluginOutcomeLabels, Counter>::default();
        registry.register(
            "plugin_errors",
            "Failed plugin calls by cause (trap, fuel, timeout, memory, returned_error, wrong_decision_count)",
            plugin_errors.clone(),
        );
        let plugin_fuel: Family<PluginLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(fuel_histogram);
        registry.register(
            "plugin_fuel",
            "Fuel consumed per plugin call",
            plugin_fuel.clone(),
        );
        let plugin_seconds: Family<PluginLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(call_histogram);
        registry.register(
            "plugin_call_seconds",
            "Duration of one plugin call",
            plugin_seconds.clone(),
        );
        Self {
            registry,
            readers: Mutex::default(),
            plugin_calls,
            plugin_events,
            plugin_decisions,
            plugin_errors,
            plugin_fuel,
            plugin_seconds,
            source_events,
            http_requests,
            pipeline_events,
            sink_events,
            sink_latency,
            queue_depth,
            queue_bytes,
            group_depth,
            group_in_flight,
            group_dead_lettered,
            checkpoint_lag,
            slot_lag_bytes,
            replication_connected,
            cdc_leader,
            replication_streaming_bytes,
            replication_spilled_bytes,
            snapshot_rows,
            snapshot_pending,
            snapshot_rows_estimate,
            snapshot_eta_seconds,
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing metrics into a String");
        out
    }

    /// The progress of a reader, registered once when it starts.
    pub fn reader_progress(
        &self,
        pipeline: &str,
        source: &str,
        partition: u32,
    ) -> Arc<ReaderProgress> {
        self.readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((pipeline.to_owned(), source.to_owned(), partition))
            .or_default()
            .clone()
    }

    pub fn sink_outcome(&self, sink: &str, outcome: &'static str, n: u64) {
        self.sink_events
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc_by(n);
    }

    /// The counter of `sink`'s events with `outcome`, to keep and bump on a hot path
    /// without a label lookup per event.
    pub fn sink_counter(&self, sink: &str, outcome: &'static str) -> Counter {
        self.sink_events
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .clone()
    }

    /// The counter of `pipeline`'s events with `outcome` (see [`Metrics::sink_counter`]).
    pub fn pipeline_counter(&self, pipeline: &str, outcome: &'static str) -> Counter {
        self.pipeline_events
            .get_or_create(&PipelineLabels {
                pipeline: pipeline.to_owned(),
                outcome,
            })
            .clone()
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
