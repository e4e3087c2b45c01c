//! Pipeline readers: one task per (pipeline, source partition). A reader reads durable
//! records ahead of its checkpoint (at most `max_in_flight`), routes each event to its
//! sinks, and stores the low watermark of completed positions as the consumer group's
//! offset. A restart resumes from that offset, so an event is never skipped; events
//! after it may be delivered again.

use std::sync::Arc;
use std::time::Duration;

use switchyard_ack::Watermark;
use switchyard_event::Event;
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::delivery::{AckToken, Delivery, SinkHandle};
use crate::metrics::{Metrics, ReaderLabels};
use crate::queues::QueueHandle;

/// How often a moved checkpoint is written.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);
const READ_BATCH: usize = 512;
const READ_BYTES: usize = 4 << 20;

/// What a pipeline does with an event (the seam where plugins will decide).
pub struct PipelinePlan {
    pub name: Arc<str>,
    pub sinks: Vec<Arc<SinkHandle>>,
    pub dead_letter: Arc<QueueHandle>,
    pub max_in_flight: usize,
}

impl PipelinePlan {
    /// The sinks `event` goes to.
    fn route(&self, _event: &Event) -> &[Arc<SinkHandle>] {
        &self.sinks
    }
}

/// Reads one partition of a queue for one pipeline.
pub struct Reader {
    pub plan: Arc<PipelinePlan>,
    pub source: String,
    pub queue: Arc<QueueHandle>,
    pub group: String,
    pub partition: u32,
    pub metrics: Arc<Metrics>,
}

impl Reader {
    /// Runs until `stop` turns true and everything read has completed (or `drain_timeout`
    /// passed after `stop`), then writes the final checkpoint.
    pub async fn run(self, mut stop: watch::Receiver<bool>, drain_timeout: Duration) {
        let log = self.queue.partitions()[self.partition as usize].clone();
        let mut next = self.queue.committed(&self.group, self.partition);
        if next < log.start_offset() {
            warn!(pipeline = %self.plan.name, queue = %self.queue.name, partition = self.partition,
                checkpoint = next, oldest = log.start_offset(),
                "records before the oldest retained one were removed by retention before this pipeline read them");
            next = log.start_offset();
        }
        let mut mark = Watermark::new(next);
        let mut committed = next;
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel();
        let mut durable = self.queue.durable_watch(self.partition);
        let mut tick = tokio::time::interval(COMMIT_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lag = self
            .metrics
            .checkpoint_lag
            .get_or_create(&ReaderLabels {
                pipeline: self.plan.name.to_string(),
                source: self.source.clone(),
                partition: self.partition,
            })
            .clone();
        let mut stopping = *stop.borrow();
        let mut drain_deadline = None;
        loop {
            if stopping && mark.held() == 0 {
                break;
            }
            let can_read = !stopping && mark.held() < self.plan.max_in_flight;
            tokio::select! {
                biased;
                Some(position) = ack_rx.recv() => {
                    self.complete(&mut mark, position);
                    while let Ok(p) = ack_rx.try_recv() {
                        self.complete(&mut mark, p);
                    }
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    drain_deadline = Some(tokio::time::Instant::now() + drain_timeout);
                }
                _ = async { tokio::time::sleep_until(drain_deadline.expect("set")).await }, if drain_deadline.is_some() => {
                    warn!(pipeline = %self.plan.name, queue = %self.queue.name, partition = self.partition,
                        in_flight = mark.in_flight(),
                        "shutdown timeout: stopping with deliveries in flight; they are delivered again after the restart");
                    break;
                }
                _ = tick.tick() => {
                    committed = self.commit(&mark, committed).await;
                    lag.set(log.durable_end().saturating_sub(mark.low_watermark()) as i64);
                }
                more = async { durable.wait_for(|end| *end > next).await.is_ok() }, if can_read => {
                    if !more {
                        break;
                    }
                    let budget = self.plan.max_in_flight - mark.held();
                    let read = {
                        let log = log.clone();
                        tokio::task::spawn_blocking(move || {
                            log.read(next, budget.min(READ_BATCH), READ_BYTES)
                        })
                        .await
                        .expect("log read task")
                    };
                    let records = match read {
                        Ok(r) => r,
                        Err(e) => {
                            error!(pipeline = %self.plan.name, queue = %self.queue.name,
                                partition = self.partition, offset = next, error = %e,
                                "cannot read the source log; this pipeline partition stops here");
                            stopping = true;
                            continue;
                        }
                    };
                    for record in records {
                        next = record.offset + 1;
                        mark.track(record.offset).expect("log offsets increase");
                        let event = match Event::decode_record(&record.payload) {
                            Ok(e) => Arc::new(e),
                            Err(e) => {
                                error!(pipeline = %self.plan.name, queue = %self.queue.name,
                                    partition = self.partition, offset = record.offset, error = %e,
                                    "cannot decode a stored event; this pipeline partition stops here");
                                stopping = true;
                                break;
                            }
                        };
                        self.metrics.pipeline_outcome(&self.plan.name, "read", 1);
                        let sinks = self.plan.route(&event);
                        let ack = AckToken::new(sinks.len(), record.offset, ack_tx.clone());
                        for sink in sinks {
                            let delivery = Delivery {
                                event: event.clone(),
                                ack: ack.clone(),
                                pipeline: self.plan.name.clone(),
                                dead_letter: self.plan.dead_letter.clone(),
                            };
                            if sink.dispatch(delivery).await.is_err() {
                                warn!(sink = %sink.name, "sink stopped; the event stays unacknowledged");
                            }
                        }
                    }
                }
            }
        }
        self.commit(&mark, committed).await;
        info!(pipeline = %self.plan.name, queue = %self.queue.name, partition = self.partition,
            checkpoint = mark.low_watermark(), "reader stopped");
    }

    fn complete(&self, mark: &mut Watermark, position: u64) {
        if let Err(e) = mark.complete(position) {
            error!(pipeline = %self.plan.name, error = %e, "acknowledgement bookkeeping error");
        }
        self.metrics
            .pipeline_outcome(&self.plan.name, "completed", 1);
    }

    /// Writes the checkpoint when it moved; returns what is stored now.
    async fn commit(&self, mark: &Watermark, committed: u64) -> u64 {
        let low = mark.low_watermark();
        if low == committed {
            return committed;
        }
        let queue = self.queue.clone();
        let group = self.group.clone();
        let partition = self.partition;
        let result =
            tokio::task::spawn_blocking(move || queue.commit_blocking(&group, &[(partition, low)]))
                .await
                .expect("offset commit task");
        match result {
            Ok(()) => low,
            Err(e) => {
                warn!(pipeline = %self.plan.name, queue = %self.queue.name, error = %e,
                    "could not store the checkpoint; will retry");
                committed
            }
        }
    }
}
