//! The state of the graph (`GET /admin/state`), its history (`GET /admin/history`) and
//! its stream (`GET /admin/events`).
//!
//! A sampler takes the state once per [`INTERVAL`] from the metrics registry and the
//! runtime's own views (queues, sources, stopped readers), appends every counter to a
//! history of at most [`CAPACITY`] samples per series (15 minutes), and hands the state
//! to the streams. Memory is bounded by the number of nodes in the config, and the
//! number of streams by [`MAX_STREAMS`].

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use http::{HeaderValue, StatusCode, header};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use switchyard_api::{
    AdminState, GroupNode, History, NodeCounters, PipelineNode, PluginStats, QueueNode, ReaderNode,
    Readiness, SinkNode, SourceNode,
};
use switchyard_config::SourceConfig;
use switchyard_source_http::{Admin, ApiError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::Shared;
use crate::metrics::{
    PipelineLabels, PluginLabels, PluginOutcomeLabels, SinkLabels, SinkNameLabels, SourceLabels,
};

/// How often the state is sampled and streamed.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept per series: 15 minutes at one per second.
pub const CAPACITY: usize = 900;
/// Open `/admin/events` streams at most; one more gets 429.
pub const MAX_STREAMS: usize = 16;
/// Samples a sink's state looks back over: retries within it make it `retrying` or
/// `failing`.
const RECENT: usize = 10;

/// The sampled history and the latest state, shared by the sampler and the handlers.
pub struct Monitor {
    history: Mutex<Samples>,
    latest: watch::Sender<Option<Arc<AdminState>>>,
    streams: Arc<Semaphore>,
    /// Turns true at shutdown: open streams end so that connections can close.
    stop: watch::Receiver<bool>,
}

#[derive(Default)]
struct Samples {
    times: VecDeque<u64>,
    series: BTreeMap<String, VecDeque<u64>>,
}

impl Samples {
    fn push(&mut self, state: &AdminState) {
        if self.times.len() == CAPACITY {
            self.times.pop_front();
            for values in self.series.values_mut() {
                values.pop_front();
            }
        }
        self.times.push_back(state.time_ms);
        let len = self.times.len();
        for (name, value) in series_of(state) {
            let values = self.series.entry(name).or_default();
            // A series seen for the first time (a work group created since) takes its
            // first value for the earlier samples, so that every series has one value per
            // time and a rate does not leap from zero.
            values.resize(len - 1, value);
            values.push_back(value);
        }
    }

    /// How many samples ago series `name` last rose, looking back [`RECENT`] samples
    /// from `now` (0: it rose since the last sample); `None` when it did not.
    fn last_rise(&self, name: &str, now: u64) -> Option<usize> {
        let values = self.series.get(name)?;
        let mut later = now;
        for (age, value) in values.iter().rev().take(RECENT).enumerate() {
            if later > *value {
                return Some(age);
            }
            later = *value;
        }
        None
    }
}

/// Every counter of a state, by series name.
fn series_of(state: &AdminState) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut add = |kind: &str, name: &str, c: &NodeCounters| {
        for (field, value) in [
            ("events_in", c.events_in),
            ("delivered", c.delivered),
            ("retried", c.retried),
            ("dead_lettered", c.dead_lettered),
            ("errors", c.errors),
        ] {
            out.push((format!("{kind}.{name}.{field}"), value));
        }
    };
    for s in &state.sources {
        add("sources", &s.name, &s.counters);
    }
    for p in &state.pipelines {
        add("pipelines", &p.name, &p.counters);
    }
    for s in &state.sinks {
        add("sinks", &s.name, &s.counters);
    }
    for s in &state.sinks {
        out.push((format!("sinks.{}.latency_sum_us", s.name), s.latency_sum_us));
        out.push((format!("sinks.{}.latency_count", s.name), s.latency_count));
    }
    for s in &state.sources {
        if let Some(lag) = s.slot_lag_bytes {
            out.push((
                format!("sources.{}.slot_lag_bytes", s.name),
                lag.max(0) as u64,
            ));
        }
    }
    for q in &state.queues {
        out.push((format!("queues.{}.produced", q.name), q.produced));
        for g in &q.groups {
            out.push((
                format!("queues.{}.groups.{}.acked", q.name, g.name),
                g.acked,
            ));
        }
    }
    out
}

impl Monitor {
    pub fn new(stop: watch::Receiver<bool>) -> Arc<Self> {
        Arc::new(Self {
            history: Mutex::new(Samples::default()),
            latest: watch::channel(None).0,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
            stop,
        })
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, Samples> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Samples the state every [`INTERVAL`] until aborted (at shutdown).
pub async fn sampler(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let state = Arc::new(take_state(&shared));
        shared.monitor.samples().push(&state);
        shared.monitor.latest.send_replace(Some(state));
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The state now: the graph from the config, counters from the metrics registry, states
/// from the runtime.
fn take_state(shared: &Shared) -> AdminState {
    let sinks = sink_nodes(shared);
    AdminState {
        time_ms: now_ms(),
        ready: match crate::server::readiness(shared) {
            Ok(()) => Readiness {
                ready: true,
                reason: None,
            },
            Err(why) => Readiness {
                ready: false,
                reason: Some(why),
            },
        },
        sources: source_nodes(shared),
        pipelines: pipeline_nodes(shared),
        sinks,
        queues: queue_nodes(shared),
    }
}

fn source_nodes(shared: &Shared) -> Vec<SourceNode> {
    let m = &shared.metrics;
    shared
        .config
        .sources
        .iter()
        .map(|(name, cfg)| {
            let mut counters = NodeCounters::default();
            let mut state = "running";
            let mut reason = shared.sources.get(name).and_then(|s| s.stopped());
            if reason.is_some() {
                state = "stopped";
            }
            if let SourceConfig::Http(_) = cfg {
                let labels = SourceLabels {
                    source: name.clone(),
                };
                counters.events_in = m.source_events.get(&labels).map_or(0, |c| c.get());
                counters.errors = refused_requests(shared, name);
            }
            let mut slot_lag_bytes = None;
            let mut max_slot_lag_bytes = None;
            if let SourceConfig::PostgresCdc(pg) = cfg {
                max_slot_lag_bytes = Some(pg.max_slot_lag.as_u64());
            }
            if let Some(cdc) = shared.cdc.get(name) {
                let view = cdc.status.view();
                slot_lag_bytes = Some(view.slot_lag_bytes);
                counters.events_in = view.events;
                if view.stopped {
                    state = "stopped";
                } else if !view.connected {
                    state = "disconnected";
                }
                if reason.is_none() {
                    reason = view
                        .last_error
                        .map(|e| switchyard_config::redact::text(&e).into_owned());
                }
            }
            SourceNode {
                name: name.clone(),
                kind: cfg.type_name().to_owned(),
                state: state.to_owned(),
                reason,
                counters,
                slot_lag_bytes,
                max_slot_lag_bytes,
            }
        })
        .collect()
}

/// HTTP ingest answers of `source` with a 4xx or 5xx status.
fn refused_requests(shared: &Shared, source: &str) -> u64 {
    // Every 4xx and 5xx: a lookup that finds nothing creates nothing.
    (400..600)
        .filter_map(|status| {
            let labels = crate::metrics::HttpLabels {
                source: source.to_owned(),
                status,
            };
            shared.metrics.http_requests.get(&labels).map(|c| c.get())
        })
        .sum()
}

fn pipeline_nodes(shared: &Shared) -> Vec<PipelineNode> {
    let m = &shared.metrics;
    let stopped = shared.stopped_readers.list();
    let readers = m.readers.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let count = |pipeline: &str, outcome: &'static str| {
        let labels = PipelineLabels {
            pipeline: pipeline.to_owned(),
            outcome,
        };
        m.pipeline_events.get(&labels).map_or(0, |c| c.get())
    };
    shared
        .config
        .pipelines
        .iter()
        .map(|(name, p)| {
            let plugins: Vec<String> = p
                .filters
                .iter()
                .map(|f| format!("filter:{f}"))
                .chain(p.transforms.iter().map(|t| format!("transform:{t}")))
                .chain(p.router.iter().map(|r| format!("router:{r}")))
                .collect();
            let plugin_stats: Vec<PluginStats> = p
                .filters
                .iter()
                .map(|f| ("filter", f))
                .chain(p.transforms.iter().map(|t| ("transform", t)))
                .chain(p.router.iter().map(|r| ("router", r)))
                .map(|(kind, plugin)| plugin_stats(shared, kind, plugin))
                .collect();
            let errors = plugin_stats
                .iter()
                .flat_map(|s| s.errors.iter())
                .filter(|(cause, _)| *cause != "split")
                .map(|(_, n)| n)
                .sum();
            let prefix = format!("pipeline `{name}` ");
            PipelineNode {
                name: name.clone(),
                sources: p.from.clone(),
                plugins,
                sinks: p.to.clone(),
                dead_letter: p
                    .dead_letter
                    .clone()
                    .unwrap_or_else(|| shared.config.server.dead_letter.clone()),
                state: if stopped.iter().any(|s| s.starts_with(&prefix)) {
                    "stopped"
                } else {
                    "running"
                }
                .to_owned(),
                counters: NodeCounters {
                    events_in: count(name, "read"),
                    delivered: count(name, "completed"),
                    errors,
                    ..NodeCounters::default()
                },
                readers: readers
                    .range((name.clone(), String::new(), 0)..)
                    .take_while(|((pipeline, _, _), _)| pipeline == name)
                    .map(|((_, source, partition), r)| ReaderNode {
                        source: source.clone(),
                        partition: *partition,
                        checkpoint: r.checkpoint.load(Ordering::Relaxed),
                        committed: r.committed.load(Ordering::Relaxed),
                        in_flight: r.in_flight.load(Ordering::Relaxed),
                        lag: r.lag.load(Ordering::Relaxed),
                    })
                    .collect(),
                plugin_stats,
            }
        })
        .collect()
}

/// What plugin `name` did, from its metrics; `errors` holds the causes that happened.
fn plugin_stats(shared: &Shared, kind: &str, name: &str) -> PluginStats {
    // The causes `switchyard_plugin_errors` counts (crate::plugins); `split` is a batch
    // that ran out of a limit and was tried again as two halves, not a failure.
    const CAUSES: &[&str] = &[
        "trap",
        "fuel",
        "timeout",
        "memory",
        "returned_error",
        "wrong_decision_count",
        "split",
    ];
    let m = &shared.metrics;
    let labels = PluginLabels {
        plugin: name.to_owned(),
    };
    let counter = |f: &Family<PluginLabels, Counter>| f.get(&labels).map_or(0, |c| c.get());
    PluginStats {
        plugin: format!("{kind}:{name}"),
        calls: counter(&m.plugin_calls),
        events: counter(&m.plugin_events),
        fuel: m.plugin_fuel.get(&labels).map_or(0, |h| h.sum() as u64),
        time_us: m
            .plugin_seconds
            .get(&labels)
            .map_or(0, |h| (h.sum() * 1e6) as u64),
        errors: CAUSES
            .iter()
            .filter_map(|kind| {
                let labels = PluginOutcomeLabels {
                    plugin: name.to_owned(),
                    kind,
                };
                let n = m.plugin_errors.get(&labels).map(|c| c.get())?;
                (n > 0).then(|| ((*kind).to_owned(), n))
            })
            .collect(),
    }
}

fn sink_nodes(shared: &Shared) -> Vec<SinkNode> {
    let count = |sink: &str, outcome: &'static str| {
        let labels = SinkLabels {
            sink: sink.to_owned(),
            outcome,
        };
        shared
            .metrics
            .sink_events
            .get(&labels)
            .map_or(0, |c| c.get())
    };
    let samples = shared.monitor.samples();
    shared
        .config
        .sinks
        .iter()
        .map(|(name, cfg)| {
            let counters = NodeCounters {
                events_in: count(name, "delivered")
                    + count(name, "dead_lettered")
                    + count(name, "skipped"),
                delivered: count(name, "delivered"),
                retried: count(name, "retried"),
                dead_lettered: count(name, "dead_lettered"),
                errors: 0,
            };
            let rose =
                |field: &str, now: u64| samples.last_rise(&format!("sinks.{name}.{field}"), now);
            let failed = [
                rose("retried", counters.retried),
                rose("dead_lettered", counters.dead_lettered),
            ]
            .into_iter()
            .flatten()
            .min();
            let stopped = shared.sinks.get(name).is_none_or(|s| s.is_stopped());
            let state = sink_state(stopped, rose("delivered", counters.delivered), failed);
            let (latency_sum_us, latency_count) = shared
                .metrics
                .sink_latency
                .get(&SinkNameLabels { sink: name.clone() })
                .map_or((0, 0), |h| ((h.sum() * 1e6) as u64, h.count()));
            SinkNode {
                name: name.clone(),
                kind: cfg.type_name().to_owned(),
                state: state.to_owned(),
                counters,
                latency_sum_us,
                latency_count,
            }
        })
        .collect()
}

/// A sink's state from how many samples ago it last delivered and last failed (a retry
/// or a dead letter), within the last [`RECENT`] samples: `failing` when nothing was
/// delivered since the last failure, `retrying` when deliveries go on between failures.
fn sink_state(stopped: bool, delivered: Option<usize>, failed: Option<usize>) -> &'static str {
    match (stopped, delivered, failed) {
        (true, _, _) => "stopped",
        (false, _, None) => "running",
        (false, Some(d), Some(f)) if d <= f => "retrying",
        (false, _, Some(_)) => "failing",
    }
}

fn queue_nodes(shared: &Shared) -> Vec<QueueNode> {
    let dead_letters: std::collections::BTreeSet<&str> = shared
        .config
        .pipelines
        .values()
        .filter_map(|p| p.dead_letter.as_deref())
        .chain(
            shared
                .config
                .queues
                .values()
                .filter_map(|q| q.dead_letter.as_deref()),
        )
        .chain(std::iter::once(shared.config.server.dead_letter.as_str()))
        .collect();
    let now = switchyard_queue::now_ms();
    let node = |name: &str, role: &str, q: &switchyard_queue::QueueHandle| {
        // Records appended: the durable end of every partition (the log keeps it anyway).
        let produced: u64 = q.partitions().iter().map(|p| p.durable_end()).sum();
        QueueNode {
            name: name.to_owned(),
            role: role.to_owned(),
            depth: q.depth(),
            bytes: q.size_bytes(),
            produced,
            groups: q
                .work_groups()
                .iter()
                .map(|g| {
                    let stats = g.stats(now);
                    GroupNode {
                        name: g.name().to_owned(),
                        depth: stats.depth,
                        in_flight: stats.in_flight,
                        delayed: stats.delayed,
                        dead_lettered: stats.dead_lettered,
                        acked: acked(produced, stats.depth, stats.dead_lettered),
                        oldest_ms: stats.oldest_age_ms,
                    }
                })
                .collect(),
        }
    };
    let queues = shared.queues.iter().map(|(name, q)| {
        let role = if dead_letters.contains(name.as_str()) {
            "dead_letter"
        } else {
            "queue"
        };
        node(name, role, q)
    });
    let intakes = shared
        .intakes
        .iter()
        .map(|(name, q)| node(&format!("intake.{name}"), "intake", q));
    queues.chain(intakes).collect()
}

/// A counter of a work group's acks: every record appended is unfinished (`depth`),
/// dead-lettered, acked, or was there before the group began (a constant, gone from any
/// difference of two samples).
fn acked(produced: u64, depth: u64, dead_lettered: u64) -> u64 {
    produced.saturating_sub(depth).saturating_sub(dead_lettered)
}

/// `GET /admin/state`
pub(super) async fn state(State(shared): State<Arc<Shared>>, _: Admin) -> Json<AdminState> {
    Json(take_state(&shared))
}

/// `GET /admin/history`
pub(super) async fn history(State(shared): State<Arc<Shared>>, _: Admin) -> Json<History> {
    let samples = shared.monitor.samples();
    Json(History {
        interval_ms: INTERVAL.as_millis() as u64,
        capacity: CAPACITY,
        times: samples.times.iter().copied().collect(),
        series: samples
            .series
            .iter()
            .map(|(name, values)| (name.clone(), values.iter().copied().collect()))
            .collect(),
    })
}

/// `GET /admin/events`: the state now, then each new sample, as `state` events.
pub(super) async fn events(
    State(shared): State<Arc<Shared>>,
    _: Admin,
) -> Result<Response, ApiError> {
    let Ok(permit) = shared.monitor.streams.clone().try_acquire_owned() else {
        let mut r = switchyard_source_http::error(
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "{MAX_STREAMS} event streams are open already; close a console tab or poll \
                 GET /admin/state instead"
            ),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return Ok(r);
    };
    let first = take_state(&shared);
    let stream = stream_states(
        permit,
        first,
        shared.monitor.latest.subscribe(),
        shared.monitor.stop.clone(),
    );
    let mut r = Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies must pass each event on as it comes.
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(r)
}

/// `first`, then every state the sampler publishes, until shutdown. The permit counts
/// the stream among [`MAX_STREAMS`] while it is open.
fn stream_states(
    permit: OwnedSemaphorePermit,
    first: AdminState,
    mut latest: watch::Receiver<Option<Arc<AdminState>>>,
    stop: watch::Receiver<bool>,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    latest.mark_unchanged();
    let first = Some(Arc::new(first));
    futures::stream::unfold(
        (permit, first, latest, stop),
        |(permit, first, mut latest, mut stop)| async move {
            let state = match first {
                Some(state) => state,
                None => {
                    tokio::select! {
                        changed = latest.changed() => changed.ok()?,
                        _ = stop.wait_for(|s| *s) => return None,
                    }
                    latest.borrow_and_update().clone()?
                }
            };
            let event = SseEvent::default()
                .event("state")
                .json_data(&*state)
                .unwrap_or_else(|_| SseEvent::default().comment("unserializable state"));
            Some((Ok(event), (permit, None, latest, stop)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state_with_sink(delivered: u64, time_ms: u64) -> AdminState {
        AdminState {
            time_ms,
            sinks: vec![SinkNode {
                name: "hook".into(),
                counters: NodeCounters {
                    delivered,
                    ..NodeCounters::default()
                },
                ..SinkNode::default()
            }],
            ..AdminState::default()
        }
    }

    #[test]
    fn the_history_keeps_at_most_its_capacity_oldest_dropped_first() {
        let mut samples = Samples::default();
        for i in 0..(CAPACITY as u64 + 5) {
            samples.push(&state_with_sink(i * 2, i));
        }
        assert_eq!(samples.times.len(), CAPACITY);
        assert_eq!(samples.times.front(), Some(&5));
        let delivered = &samples.series["sinks.hook.delivered"];
        assert_eq!(delivered.len(), CAPACITY);
        assert_eq!(delivered.front(), Some(&10));
    }

    #[test]
    fn the_last_rise_of_a_series_is_found_within_the_recent_samples() {
        let mut samples = Samples::default();
        for (i, delivered) in [0, 3, 3, 3].into_iter().enumerate() {
            samples.push(&state_with_sink(delivered, i as u64));
        }
        let name = "sinks.hook.delivered";
        assert_eq!(
            samples.last_rise(name, 4),
            Some(0),
            "rose since the last sample"
        );
        assert_eq!(
            samples.last_rise(name, 3),
            Some(3),
            "between the first and second sample"
        );
        for i in 4..(4 + RECENT as u64) {
            samples.push(&state_with_sink(3, i));
        }
        assert_eq!(samples.last_rise(name, 3), None, "too long ago");
        assert_eq!(samples.last_rise("sinks.other.delivered", 3), None);
    }

    #[test]
    fn the_history_keeps_latency_sums_slot_lags_and_records_in() {
        let state = AdminState {
            sources: vec![
                SourceNode {
                    name: "db".into(),
                    slot_lag_bytes: Some(-5),
                    ..SourceNode::default()
                },
                SourceNode {
                    name: "api".into(),
                    ..SourceNode::default()
                },
            ],
            sinks: vec![SinkNode {
                name: "hook".into(),
                latency_sum_us: 1500,
                latency_count: 3,
                ..SinkNode::default()
            }],
            queues: vec![QueueNode {
                name: "jobs".into(),
                produced: 7,
                groups: vec![GroupNode {
                    name: "workers".into(),
                    acked: 4,
                    ..GroupNode::default()
                }],
                ..QueueNode::default()
            }],
            ..AdminState::default()
        };
        let series: BTreeMap<String, u64> = series_of(&state).into_iter().collect();
        assert_eq!(series["sinks.hook.latency_sum_us"], 1500);
        assert_eq!(series["sinks.hook.latency_count"], 3);
        assert_eq!(
            series["sources.db.slot_lag_bytes"], 0,
            "a negative lag is none"
        );
        assert!(
            !series.contains_key("sources.api.slot_lag_bytes"),
            "a source without a slot has no lag series"
        );
        assert_eq!(series["queues.jobs.produced"], 7);
        assert_eq!(series["queues.jobs.groups.workers.acked"], 4);
    }

    #[test]
    fn a_series_seen_late_takes_its_first_value_for_the_earlier_samples() {
        let mut samples = Samples::default();
        samples.push(&state_with_sink(1, 1));
        let mut later = state_with_sink(2, 2);
        later.queues = vec![QueueNode {
            name: "jobs".into(),
            groups: vec![GroupNode {
                name: "workers".into(),
                acked: 40,
                ..GroupNode::default()
            }],
            ..QueueNode::default()
        }];
        samples.push(&later);
        let acked: Vec<u64> = samples.series["queues.jobs.groups.workers.acked"]
            .iter()
            .copied()
            .collect();
        assert_eq!(acked, [40, 40], "no leap from zero");
    }

    #[test]
    fn a_groups_acks_are_what_was_appended_less_what_is_unfinished_or_dead_lettered() {
        // 10 appended, 3 unfinished, 1 dead-lettered: 6 acked (or there before).
        assert_eq!(acked(10, 3, 1), 6);
        // Two more appended; of the five unfinished, two remain and one is dead-lettered:
        // two acked.
        assert_eq!(acked(12, 2, 2) - acked(10, 3, 1), 2);
        assert_eq!(acked(0, 0, 0), 0);
        assert_eq!(acked(1, 5, 0), 0, "never below zero");
    }

    #[test]
    fn a_sink_state_follows_what_it_did_last() {
        assert_eq!(sink_state(false, Some(0), None), "running");
        assert_eq!(sink_state(false, None, None), "running");
        assert_eq!(sink_state(false, Some(0), Some(2)), "retrying");
        assert_eq!(sink_state(false, Some(1), Some(1)), "retrying");
        assert_eq!(sink_state(false, Some(3), Some(1)), "failing");
        assert_eq!(sink_state(false, None, Some(0)), "failing");
        assert_eq!(sink_state(true, Some(0), None), "stopped");
    }
}
