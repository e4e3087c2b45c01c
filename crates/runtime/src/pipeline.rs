//! Pipeline readers: one task per (pipeline, feed). A reader reads events ahead of its
//! checkpoint (at most `max_in_flight`), routes each event to its sinks, and hands the
//! low watermark of completed positions to the feed as its checkpoint (a consumer
//! group's offset, a replication slot's flush LSN). A restart resumes from that offset, so an event is never skipped; events
//! after it may be delivered again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_ack::Watermark;
use switchyard_connector::{Backoff, Feed};
use switchyard_event::Event;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::delivery::{AckToken, DeadLetterReason, Delivery, SinkHandle, append_dead_letter};
use crate::metrics::{Metrics, ReaderLabels};
use crate::plugins::Stages;
use switchyard_queue::QueueHandle;

/// How often a moved checkpoint is written.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// What a pipeline does with an event: its plugin stages and its sinks.
pub struct PipelinePlan {
    pub name: Arc<str>,
    /// Sinks of every event when there is no router (`to`).
    pub sinks: Vec<Arc<SinkHandle>>,
    /// Every configured sink, for the router's choices.
    pub all_sinks: Arc<HashMap<String, Arc<SinkHandle>>>,
    pub stages: Stages,
    pub metrics: Arc<Metrics>,
    pub dead_letter: Arc<QueueHandle>,
    pub max_in_flight: usize,
}

/// What happens to one event read from a source.
pub enum Fate {
    /// Deliver to these sinks (a transform may have replaced the event by several); the
    /// source position completes when every delivery is acknowledged. Empty = drop.
    Deliver(Vec<(Arc<SinkHandle>, Arc<Event>)>),
    /// Dropped on purpose (a filter, a router choosing no sink, `on_error = "drop"`).
    Drop,
    /// Put in the dead-letter queue with the error of the stage `by`.
    DeadLetter {
        event: Arc<Event>,
        error: String,
        by: String,
    },
}

/// A stage failed with `on_error = "stop"`: the pipeline must not go on.
#[derive(Debug, thiserror::Error)]
#[error("{stage}: {error}")]
pub struct StopPipeline {
    pub stage: String,
    pub error: String,
}

impl PipelinePlan {
    /// Decides the fate of each event of a batch, in order (one fate per event).
    pub async fn decide(&self, events: &[Arc<Event>]) -> Result<Vec<Fate>, StopPipeline> {
        if self.stages.is_empty() {
            return Ok(events
                .iter()
                .map(|e| Fate::Deliver(self.sinks.iter().map(|s| (s.clone(), e.clone())).collect()))
                .collect());
        }
        crate::plugins::decide(
            &self.stages,
            events,
            &self.sinks,
            &self.all_sinks,
            &self.metrics,
        )
        .await
    }
}

/// Waits after a transient feed failure: from this, doubling up to [`FEED_BACKOFF_MAX`].
const FEED_BACKOFF_MIN: Duration = Duration::from_millis(200);
const FEED_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Reads one feed (a queue partition, a replication slot, …) for one pipeline.
pub struct Reader {
    pub plan: Arc<PipelinePlan>,
    pub source: String,
    pub feed: Box<dyn Feed>,
    pub metrics: Arc<Metrics>,
}

impl Reader {
    /// Runs until `stop` turns true and everything read has completed (or `drain_timeout`
    /// passed after `stop`), then writes the final checkpoint.
    pub async fn run(self, mut stop: watch::Receiver<bool>, drain_timeout: Duration) {
        let Reader {
            plan,
            source,
            mut feed,
            metrics,
        } = self;
        let this = ReaderCtx {
            plan,
            source,
            metrics,
        };
        let partition = feed.partition();
        let mut mark = Watermark::new(feed.start());
        let mut committed = mark.low_watermark();
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lag = this
            .metrics
            .checkpoint_lag
            .get_or_create(&ReaderLabels {
                pipeline: this.plan.name.to_string(),
                source: this.source.clone(),
                partition,
            })
            .clone();
        let mut stopping = *stop.borrow();
        let mut drain_deadline = None;
        // After a transient feed failure: no read before this instant.
        let mut backoff = Backoff::new(FEED_BACKOFF_MIN, FEED_BACKOFF_MAX);
        let mut paused_until: Option<tokio::time::Instant> = None;
        loop {
            if stopping && mark.held() == 0 {
                break;
            }
            let can_read =
                !stopping && paused_until.is_none() && mark.held() < this.plan.max_in_flight;
            let budget = this.plan.max_in_flight.saturating_sub(mark.held());
            tokio::select! {
                biased;
                Some(position) = ack_rx.recv() => {
                    this.complete(&mut mark, position);
                    while let Ok(p) = ack_rx.try_recv() {
                        this.complete(&mut mark, p);
                    }
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                }
                _ = async { tokio::time::sleep_until(drain_deadline.expect("set")).await }, if drain_deadline.is_some() => {
                    warn!(pipeline = %this.plan.name, source = %this.source, partition,
                        in_flight = mark.in_flight(),
                        "shutdown timeout: stopping with deliveries in flight; they are delivered again after the restart");
                    break;
                }
                _ = async { tokio::time::sleep_until(paused_until.expect("set")).await }, if paused_until.is_some() => {
                    paused_until = None;
                }
                _ = tick.tick() => {
                    committed = this.commit(&mut feed, &mark, committed).await;
                    lag.set(feed.lag(mark.low_watermark()) as i64);
                }
                read = feed.next(budget), if can_read => {
                    let records = match read {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            stopping = true;
                            continue;
                        }
                        Err(e) if e.is_transient() => {
                            let wait = backoff.next_delay();
                            warn!(pipeline = %this.plan.name, source = %this.source, partition,
                                error = %e, retry_in = ?wait, "the source failed for now; reading again after a pause");
                            paused_until = Some(tokio::time::Instant::now() + wait);
                            continue;
                        }
                        Err(e) => {
                            error!(pipeline = %this.plan.name, source = %this.source, partition,
                                error = %e, "this pipeline reader stops here; its checkpoint stays before the failure");
                            stopping = true;
                            continue;
                        }
                    };
                    backoff.reset();
                    let mut positions = Vec::with_capacity(records.len());
                    let mut events: Vec<Arc<Event>> = Vec::with_capacity(records.len());
                    for (position, event) in records {
                        if let Err(e) = mark.track(position) {
                            error!(pipeline = %this.plan.name, source = %this.source, partition,
                                error = %e, "a feed handed out positions out of order; this reader stops");
                            stopping = true;
                            break;
                        }
                        positions.push(position);
                        events.push(Arc::new(event));
                    }
                    this.metrics.pipeline_outcome(&this.plan.name, "read", events.len() as u64);
                    let fates = match this.plan.decide(&events).await {
                        Ok(f) => f,
                        Err(e) => {
                            error!(pipeline = %this.plan.name, error = %e,
                                "a plugin with on_error = \"stop\" failed; this pipeline reader stops here and its events stay unacknowledged");
                            stopping = true;
                            continue;
                        }
                    };
                    for (position, fate) in positions.into_iter().zip(fates) {
                        this.apply(position, fate, &ack_tx).await;
                    }
                }
            }
        }
        this.commit(&mut feed, &mark, committed).await;
        info!(pipeline = %this.plan.name, source = %this.source, partition,
            checkpoint = mark.low_watermark(), "reader stopped");
    }
}

/// What a reader's helpers need besides the feed.
struct ReaderCtx {
    plan: Arc<PipelinePlan>,
    source: String,
    metrics: Arc<Metrics>,
}

impl ReaderCtx {
    /// Carries out one event's fate; its position completes when that is done.
    async fn apply(&self, position: u64, fate: Fate, ack_tx: &mpsc::UnboundedSender<u64>) {
        match fate {
            Fate::Deliver(targets) => {
                let ack = AckToken::new(targets.len(), position, ack_tx.clone());
                for (sink, event) in targets {
                    let delivery = Delivery {
                        event,
                        ack: ack.clone(),
                        pipeline: self.plan.name.clone(),
                        dead_letter: self.plan.dead_letter.clone(),
                    };
                    if sink.dispatch(delivery).await.is_err() {
                        warn!(sink = %sink.name, "sink stopped; the event stays unacknowledged");
                    }
                }
            }
            Fate::Drop => {
                self.metrics.pipeline_outcome(&self.plan.name, "dropped", 1);
                let _ = ack_tx.send(position);
            }
            Fate::DeadLetter { event, error, by } => {
                let reason = DeadLetterReason {
                    pipeline: &self.plan.name,
                    sink: None,
                    plugin: Some(&by),
                    error: &error,
                    attempts: 1,
                };
                append_dead_letter(&self.plan.dead_letter, &event, &reason).await;
                self.metrics
                    .pipeline_outcome(&self.plan.name, "dead_lettered", 1);
                let _ = ack_tx.send(position);
            }
        }
    }

    fn complete(&self, mark: &mut Watermark, position: u64) {
        if let Err(e) = mark.complete(position) {
            error!(pipeline = %self.plan.name, error = %e, "acknowledgement bookkeeping error");
        }
        self.metrics
            .pipeline_outcome(&self.plan.name, "completed", 1);
    }

    /// Writes the checkpoint when it moved; returns what is stored now.
    async fn commit(&self, feed: &mut Box<dyn Feed>, mark: &Watermark, committed: u64) -> u64 {
        let low = mark.low_watermark();
        if low == committed {
            return committed;
        }
        match feed.commit(low).await {
            Ok(()) => low,
            Err(e) => {
                warn!(pipeline = %self.plan.name, source = %self.source, error = %e,
                    "could not store the checkpoint; will retry");
                committed
            }
        }
    }
}
