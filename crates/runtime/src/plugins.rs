//! Plugin stages of a pipeline: filters, transforms and a router, run on WebAssembly
//! plugins (`switchyard-plugin-host`) on blocking threads, one call per batch.
//!
//! A call that runs out of fuel or memory is retried as two halves (by the host, a
//! bounded number of times per batch), so a batch too big for one call is still decided
//! whole. A failed call (trap, deadline, error, wrong number of decisions, or a limit hit
//! by events that exceed it on their own) affects only its events: they follow the
//! stage's `on_error` and the pipeline goes on (the host has already replaced the
//! instance).

use std::collections::HashMap;
use std::sync::Arc;

use switchyard_config::OnError;
use switchyard_event::Event;
use switchyard_plugin_host::{Decided, ErrorCause, PluginError, PluginPool};

use crate::delivery::SinkHandle;
use crate::metrics::{Metrics, PluginLabels, PluginOutcomeLabels};
use crate::pipeline::{Fate, StopPipeline};

/// One plugin as used by one pipeline.
pub struct Stage {
    pub name: String,
    pub pool: Arc<PluginPool>,
    pub on_error: OnError,
}

/// The plugin part of a pipeline.
#[derive(Default)]
pub struct Stages {
    pub filters: Vec<Stage>,
    pub transforms: Vec<Stage>,
    pub router: Option<Stage>,
}

impl Stages {
    pub fn is_empty(&self) -> bool {
        self.filters.is_empty() && self.transforms.is_empty() && self.router.is_none()
    }
}

type PoolCall<T> = fn(&PluginPool, &[Event]) -> Decided<T>;

/// The decisions of one stage for a flat batch: per event, its decision, or the failure of
/// the call that carried it.
type Outcomes<T> = Vec<Result<T, Arc<PluginError>>>;

impl Stage {
    /// Decides a batch on a blocking thread (splitting calls that run out of fuel or
    /// memory, see `switchyard_plugin_host::max_splits`) and records the metrics of every
    /// call made.
    async fn call<T: Send + 'static>(
        &self,
        events: Vec<Event>,
        f: PoolCall<T>,
        metrics: &Metrics,
    ) -> Outcomes<T> {
        let pool = self.pool.clone();
        let decided = tokio::task::spawn_blocking(move || f(&pool, &events))
            .await
            .expect("plugin call task");
        let labels = PluginLabels {
            plugin: self.name.clone(),
        };
        for attempt in &decided.attempts {
            metrics.plugin_calls.get_or_create(&labels).inc();
            metrics
                .plugin_events
                .get_or_create(&labels)
                .inc_by(attempt.range.len() as u64);
            let stats = match &attempt.result {
                Ok(call) => call.stats,
                Err(e) => {
                    let kind = if attempt.split {
                        tracing::debug!(plugin = %self.name, error = %e,
                            "plugin call ran out of a limit on a batch; retrying it as two halves");
                        "split"
                    } else {
                        cause_label(&e.cause)
                    };
                    metrics
                        .plugin_errors
                        .get_or_create(&PluginOutcomeLabels {
                            plugin: self.name.clone(),
                            kind,
                        })
                        .inc();
                    e.stats
                }
            };
            metrics
                .plugin_fuel
                .get_or_create(&labels)
                .observe(stats.fuel as f64);
            metrics
                .plugin_seconds
                .get_or_create(&labels)
                .observe(stats.elapsed.as_secs_f64());
        }
        let mut outcomes = Vec::new();
        for attempt in decided.into_outcomes() {
            match attempt.result {
                Ok(call) => outcomes.extend(call.output.into_iter().map(Ok)),
                Err(e) => {
                    tracing::warn!(plugin = %self.name, error = %e, on_error = ?self.on_error,
                        events = attempt.range.len(),
                        "plugin call failed; its events follow on_error");
                    let e = Arc::new(e);
                    outcomes.extend(attempt.range.map(|_| Err(e.clone())));
                }
            }
        }
        outcomes
    }
}

fn cause_label(cause: &ErrorCause) -> &'static str {
    match cause {
        ErrorCause::Trap(_) => "trap",
        ErrorCause::OutOfFuel { .. } => "fuel",
        ErrorCause::Timeout { .. } => "timeout",
        ErrorCause::MemoryLimit { .. } => "memory",
        ErrorCause::Returned(_) => "returned_error",
        ErrorCause::WrongDecisionCount { .. } => "wrong_decision_count",
        _ => "other",
    }
}

/// The events still alive after the stages so far: a flat batch, for each of its events
/// the index of the input event it came from, and the same events as shared.
fn live(
    fates: &[Option<Fate>],
    current: &[Vec<Arc<Event>>],
) -> (Vec<Event>, Vec<usize>, Vec<Arc<Event>>) {
    let mut flat = Vec::new();
    let mut owners = Vec::new();
    let mut shared = Vec::new();
    for (i, outs) in current.iter().enumerate() {
        if fates[i].is_some() {
            continue;
        }
        for e in outs {
            flat.push((**e).clone());
            owners.push(i);
            shared.push(e.clone());
        }
    }
    (flat, owners, shared)
}

/// Applies a stage's `on_error` to every input with an event in a failed call; returns
/// the successful decisions by flat index (`None` for the events of a failed call). An
/// input with several events (split by a transform) fails as a whole when one of them
/// fails. Inputs whose events all succeeded are untouched.
fn settle<T>(
    stage: &Stage,
    outcomes: Outcomes<T>,
    owners: &[usize],
    inputs: &[Arc<Event>],
    fates: &mut [Option<Fate>],
) -> Result<Vec<Option<T>>, StopPipeline> {
    let mut decisions = Vec::with_capacity(outcomes.len());
    for (outcome, &owner) in outcomes.into_iter().zip(owners) {
        match outcome {
            Ok(decision) => decisions.push(Some(decision)),
            Err(error) => {
                decisions.push(None);
                if fates[owner].is_none() {
                    fates[owner] = Some(on_error(stage, &error, &inputs[owner])?);
                }
            }
        }
    }
    Ok(decisions)
}

/// The fate of an input whose event was in a failed call.
fn on_error(stage: &Stage, error: &PluginError, input: &Arc<Event>) -> Result<Fate, StopPipeline> {
    Ok(match stage.on_error {
        OnError::DeadLetter => Fate::DeadLetter {
            event: input.clone(),
            error: error.to_string(),
            by: stage.name.clone(),
        },
        OnError::Drop => Fate::Drop,
        OnError::Stop => {
            return Err(StopPipeline {
                stage: format!("plugin `{}`", stage.name),
                error: error.to_string(),
            });
        }
    })
}

fn decided(metrics: &Metrics, plugin: &str, kind: &'static str, n: u64) {
    if n > 0 {
        metrics
            .plugin_decisions
            .get_or_create(&PluginOutcomeLabels {
                plugin: plugin.to_owned(),
                kind,
            })
            .inc_by(n);
    }
}

/// Runs `stages` over a batch and returns one fate per input event. `default_sinks` are
/// used when there is no router; the router may name any sink in `all_sinks`.
pub async fn decide(
    stages: &Stages,
    inputs: &[Arc<Event>],
    default_sinks: &[Arc<SinkHandle>],
    all_sinks: &HashMap<String, Arc<SinkHandle>>,
    metrics: &Metrics,
) -> Result<Vec<Fate>, StopPipeline> {
    let mut fates: Vec<Option<Fate>> = inputs.iter().map(|_| None).collect();
    let mut current: Vec<Vec<Arc<Event>>> = inputs.iter().map(|e| vec![e.clone()]).collect();

    for stage in &stages.filters {
        let (flat, owners, shared) = live(&fates, &current);
        if flat.is_empty() {
            break;
        }
        let outcomes = stage.call(flat, PluginPool::filter_split, metrics).await;
        let keep = settle(stage, outcomes, &owners, inputs, &mut fates)?;
        let mut next: Vec<Vec<Arc<Event>>> = inputs.iter().map(|_| Vec::new()).collect();
        let (mut kept, mut dropped) = (0, 0);
        for ((decision, &owner), event) in keep.into_iter().zip(&owners).zip(shared) {
            match decision {
                Some(true) => {
                    kept += 1;
                    next[owner].push(event);
                }
                Some(false) => dropped += 1,
                None => {}
            }
        }
        decided(metrics, &stage.name, "keep", kept);
        decided(metrics, &stage.name, "drop", dropped);
        // Inputs that failed have their fate; what stays in `next` for them is ignored.
        current = next;
    }

    for stage in &stages.transforms {
        let (flat, owners, _) = live(&fates, &current);
        if flat.is_empty() {
            break;
        }
        let outcomes = stage.call(flat, PluginPool::transform_split, metrics).await;
        let outputs = settle(stage, outcomes, &owners, inputs, &mut fates)?;
        let mut next: Vec<Vec<Arc<Event>>> = inputs.iter().map(|_| Vec::new()).collect();
        let mut emitted = 0;
        for (owner, outs) in owners.iter().zip(outputs) {
            let Some(outs) = outs else { continue };
            emitted += outs.len() as u64;
            next[*owner].extend(outs.into_iter().map(Arc::new));
        }
        decided(metrics, &stage.name, "emit", emitted);
        for (i, outs) in next.into_iter().enumerate() {
            if fates[i].is_none() {
                current[i] = outs;
            }
        }
    }

    let mut targets: Vec<Vec<(Arc<SinkHandle>, Arc<Event>)>> =
        inputs.iter().map(|_| Vec::new()).collect();
    match &stages.router {
        Some(stage) => {
            let (flat, owners, shared) = live(&fates, &current);
            if !flat.is_empty() {
                let outcomes = stage.call(flat, PluginPool::route_split, metrics).await;
                let routes = settle(stage, outcomes, &owners, inputs, &mut fates)?;
                for ((owner, event), names) in owners.iter().zip(shared).zip(routes) {
                    let Some(names) = names else { continue };
                    decided(metrics, &stage.name, "route", 1);
                    for name in names {
                        match all_sinks.get(&name) {
                            Some(sink) => targets[*owner].push((sink.clone(), event.clone())),
                            None => {
                                let mut known: Vec<_> = all_sinks.keys().cloned().collect();
                                known.sort();
                                fates[*owner] = Some(Fate::DeadLetter {
                                    event: inputs[*owner].clone(),
                                    error: format!(
                                        "router `{}` chose sink `{name}`, which does not exist; sinks: {}",
                                        stage.name,
                                        known.join(", ")
                                    ),
                                    by: stage.name.clone(),
                                });
                            }
                        }
                    }
                }
            }
        }
        None => {
            for (i, outs) in current.iter().enumerate() {
                for e in outs {
                    for sink in default_sinks {
                        targets[i].push((sink.clone(), e.clone()));
                    }
                }
            }
        }
    }
    Ok(fates
        .into_iter()
        .zip(targets)
        .map(|(fate, targets)| match fate {
            Some(f) => f,
            None if targets.is_empty() => Fate::Drop,
            None => Fate::Deliver(targets),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use switchyard_config::PluginConfig;
    use switchyard_plugin_host::PluginHost;

    use super::*;

    /// A plugin built by `scripts/build-plugins.sh`, as a stage of one pipeline.
    fn stage(host: &PluginHost, name: &str, file: &str, config: serde_json::Value) -> Stage {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../plugins/target/wasm32-wasip2/release")
            .join(format!("{file}.wasm"));
        assert!(
            path.exists(),
            "{} is missing: run scripts/build-plugins.sh first",
            path.display()
        );
        let plugin = host
            .load(
                name,
                &PluginConfig {
                    path: path.display().to_string(),
                    config,
                    // These tests are about fuel and errors, not the wall clock: a loaded
                    // machine must not turn a slow call into a deadline failure.
                    timeout: std::time::Duration::from_secs(30),
                    ..PluginConfig::default()
                },
            )
            .expect("fixture loads");
        Stage {
            name: name.to_owned(),
            pool: Arc::new(PluginPool::new(plugin, 1)),
            on_error: OnError::DeadLetter,
        }
    }

    fn event(id: &str, payload: &str) -> Arc<Event> {
        Arc::new(Event {
            id: id.into(),
            source: "api".into(),
            kind: "message".into(),
            key: None,
            payload: payload.as_bytes().to_vec(),
            content_type: "application/json".into(),
            headers: Vec::new(),
            timestamp_ms: 0,
            payload_is_compact_json: false,
        })
    }

    /// A burst bigger than one call's fuel is decided whole; of its events only one that
    /// exceeds the budget on its own is dead-lettered, by the stage, with the cause.
    #[test]
    fn only_an_event_over_the_fuel_budget_alone_is_dead_lettered_from_a_big_batch() {
        let host = PluginHost::new().expect("host");
        let stages = Stages {
            // Spins N times for a payload of N; default limits.
            filters: vec![stage(
                &host,
                "costly",
                "fuel_per_event",
                serde_json::json!({}),
            )],
            transforms: Vec::new(),
            router: None,
        };
        let heavy = 300;
        let inputs: Vec<Arc<Event>> = (0..512)
            .map(|i| match i {
                // Ten times the default budget in spins alone.
                i if i == heavy => event("heavy", "100000000"),
                // 512 of these need several times the default budget together.
                i => event(&format!("e{i}"), "30000"),
            })
            .collect();
        let metrics = Metrics::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let fates = rt
            .block_on(decide(&stages, &inputs, &[], &HashMap::new(), &metrics))
            .expect("dead_letter does not stop the pipeline");
        assert_eq!(fates.len(), 512);
        for (i, fate) in fates.iter().enumerate() {
            match fate {
                Fate::DeadLetter { event, by, error } => {
                    assert_eq!(i, heavy, "{} was dead-lettered: {error}", event.id);
                    assert_eq!(event.id, "heavy");
                    assert_eq!(by, "costly");
                    assert!(error.contains("ran out of fuel"), "{error}");
                    assert!(error.contains("a batch of 1 events"), "{error}");
                }
                // Kept, and with no sinks configured here, dropped after the stages.
                Fate::Drop => assert_ne!(i, heavy, "the heavy event was not dead-lettered"),
                Fate::Deliver(_) => panic!("no sinks were given"),
            }
        }
    }

    #[test]
    fn an_event_dropped_earlier_stays_dropped_when_a_later_stage_fails() {
        let host = PluginHost::new().expect("host");
        let stages = Stages {
            // Drops events that have a `drop` field; keeps the others (and non-JSON).
            filters: vec![stage(
                &host,
                "no_drop",
                "filter_by_field",
                serde_json::json!({ "field": "drop", "exists": false }),
            )],
            // Fails the whole call on a payload of `fail`.
            transforms: vec![stage(&host, "split", "split", serde_json::json!({}))],
            router: None,
        };
        let inputs = [event("dropped", r#"{"drop":1}"#), event("failing", "fail")];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let fates = rt
            .block_on(decide(
                &stages,
                &inputs,
                &[],
                &HashMap::new(),
                &Metrics::new(),
            ))
            .expect("dead_letter does not stop the pipeline");
        assert!(
            matches!(fates[0], Fate::Drop),
            "the filter dropped it before the transform failed"
        );
        match &fates[1] {
            Fate::DeadLetter { event, by, error } => {
                assert_eq!(event.id, "failing");
                assert_eq!(by, "split");
                assert!(error.contains("cannot be split"), "{error}");
            }
            _ => panic!("the event of the failed call is dead-lettered"),
        }
    }
}
