//! Pipeline readers: one task per (pipeline, feed). A reader reads events ahead of its
//! checkpoint (at most `max_in_flight`), routes each event to its sinks, and hands the
//! low watermark of completed positions to the feed as its checkpoint (a consumer
//! group's offset, a replication slot's flush LSN). A restart resumes from that offset, so an event is never skipped; events
//! after it may be delivered again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
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
/// Events taken from a feed at once: one batch, so one plugin call carries at most this
/// many; `max_in_flight` may allow several batches in flight.
const MAX_READ: usize = 1024;

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
    /// Where a reader that stops itself says why (shared by every pipeline).
    pub stopped: Arc<StoppedReaders>,
}

/// Readers that stopped themselves (a permanent feed error, a plugin with
/// `on_error = "stop"`), with why: `/readyz` answers 503 while there is one.
#[derive(Default)]
pub struct StoppedReaders(std::sync::Mutex<Vec<String>>);

impl StoppedReaders {
    fn record(&self, why: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(why);
    }

    /// Why each stopped reader stopped, in the order they did.
    pub fn list(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
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
        let this = ReaderCtx::new(plan, source, metrics);
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
        let progress = this
            .metrics
            .reader_progress(&this.plan.name, &this.source, partition);
        // `reading`: more events may be read. It turns false at shutdown, when the feed
        // ends, and when the reader stops itself (a permanent feed error, a plugin with
        // `on_error = "stop"`); the shutdown signal is heard in every case, so its drain
        // deadline always holds.
        let mut reading = !*stop.borrow();
        let mut stop_heard = !reading;
        let mut drain_deadline = stop_heard.then(|| tokio::time::Instant::now() + drain_timeout);
        // After a transient feed failure: no read before this instant.
        let mut backoff = Backoff::new(FEED_BACKOFF_MIN, FEED_BACKOFF_MAX);
        let mut paused_until: Option<tokio::time::Instant> = None;
        loop {
            if !reading && mark.held() == 0 {
                break;
            }
            let can_read =
                reading && paused_until.is_none() && mark.held() < this.plan.max_in_flight;
            let budget = this
                .plan
                .max_in_flight
                .saturating_sub(mark.held())
                .min(MAX_READ);
            tokio::select! {
                biased;
                Some(first) = ack_rx.recv() => {
                    this.complete(&mut mark, first);
                    while let Ok(p) = ack_rx.try_recv() {
                        this.complete(&mut mark, p);
                    }
                    if let Some(after) = feed.commit_after()
                        && mark.low_watermark().saturating_sub(committed) >= after.max(1)
                    {
                        committed = this.commit(&mut feed, &mark, committed).await;
                    }
                }
                _ = stop.changed(), if !stop_heard => {
                    stop_heard = true;
                    reading = false;
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
                    let low = mark.low_watermark();
                    let behind = feed.lag(low);
                    lag.set(behind as i64);
                    progress.checkpoint.store(low, Ordering::Relaxed);
                    progress.committed.store(committed, Ordering::Relaxed);
                    progress.in_flight.store(mark.held() as u64, Ordering::Relaxed);
                    progress.lag.store(behind, Ordering::Relaxed);
                }
                read = feed.next(budget), if can_read => {
                    let records = match read {
                        Ok(Some(r)) => r,
                        Ok(None) => {
                            reading = false;
                            continue;
                        }
                        Err(e) if e.is_transient() => {
                            let wait = backoff.next_delay();
                            warn!(pipeline = %this.plan.name, source = %this.source, partition,
                                error = %e, retry_in = ?wait, failures = backoff.failures(),
                                "the source failed for now; reading again after a pause");
                            paused_until = Some(tokio::time::Instant::now() + wait);
                            continue;
                        }
                        Err(e) => {
                            reading = false;
                            this.stopped_by(partition, format!("its source failed: {e}"));
                            continue;
                        }
                    };
                    backoff.reset();
                    if records.len() > budget.max(1) {
                        reading = false;
                        this.stopped_by(partition, format!(
                            "its feed handed out {} events where at most {} were asked for", records.len(), budget.max(1)));
                        continue;
                    }
                    let (Some(&first), Some(&last)) = (records.positions().first(), records.positions().last()) else {
                        continue;
                    };
                    let tracked = if records.positions().windows(2).all(|w| w[0] < w[1]) {
                        mark.track_range(first, last, records.len()).map_err(|e| e.to_string())
                    } else {
                        Err(format!("positions {first}..={last} do not increase within the batch"))
                    };
                    if let Err(e) = tracked {
                        reading = false;
                        this.stopped_by(partition, format!("its feed handed out positions out of order: {e}"));
                        continue;
                    }
                    let events: Vec<Arc<Event>> = records.into_iter().map(|(_, e)| Arc::new(e)).collect();
                    this.read.inc_by(events.len() as u64);
                    if this.plan.stages.is_empty() {
                        this.deliver_to_all(first, events, &ack_tx).await;
                        continue;
                    }
                    let fates = match this.plan.decide(&events).await {
                        Ok(f) => f,
                        Err(e) => {
                            reading = false;
                            this.stopped_by(partition, format!(
                                "a plugin with on_error = \"stop\" failed ({e}); its events stay unacknowledged"));
                            continue;
                        }
                    };
                    if fates.len() != events.len() {
                        // Completing the batch would pass events nobody decided on.
                        reading = false;
                        this.stopped_by(partition, format!(
                            "its plugins decided {} fates for {} events; its events stay unacknowledged",
                            fates.len(), events.len()));
                        continue;
                    }
                    this.apply(first, fates, &ack_tx).await;
                }
            }
        }
        let committed = this.commit(&mut feed, &mark, committed).await;
        progress
            .checkpoint
            .store(mark.low_watermark(), Ordering::Relaxed);
        progress.committed.store(committed, Ordering::Relaxed);
        progress
            .in_flight
            .store(mark.held() as u64, Ordering::Relaxed);
        info!(pipeline = %this.plan.name, source = %this.source, partition,
            checkpoint = mark.low_watermark(), "reader stopped");
    }
}

/// What a reader's helpers need besides the feed.
struct ReaderCtx {
    plan: Arc<PipelinePlan>,
    source: String,
    metrics: Arc<Metrics>,
    /// The pipeline's event counters, looked up once.
    read: Counter,
    dropped: Counter,
    dead_lettered: Counter,
    completed: Counter,
}

impl ReaderCtx {
    fn new(plan: Arc<PipelinePlan>, source: String, metrics: Arc<Metrics>) -> Self {
        let counter = |outcome| metrics.pipeline_counter(&plan.name, outcome);
        Self {
            read: counter("read"),
            dropped: counter("dropped"),
            dead_lettered: counter("dead_lettered"),
            completed: counter("completed"),
            plan,
            source,
            metrics,
        }
    }

    /// A pipeline without plugins: every event of the batch goes to every sink. The
    /// batch starting at `first` completes when each sink has acknowledged each event.
    async fn deliver_to_all(
        &self,
        first: u64,
        events: Vec<Arc<Event>>,
        ack_tx: &mpsc::UnboundedSender<u64>,
    ) {
        let sinks = &self.plan.sinks;
        let ack = AckToken::new(events.len() * sinks.len(), first, ack_tx.clone());
        let mut events = Some(events);
        for (i, sink) in sinks.iter().enumerate() {
            let events = if i + 1 == sinks.len() {
                events.take().expect("taken by the last sink only")
            } else {
                events.clone().expect("kept until the last sink")
            };
            self.dispatch(sink, events, &ack).await;
        }
    }

    /// Carries out the fates of the batch starting at `first` (one per event, in order):
    /// dead letters are appended durably, then each sink gets its events in one run per
    /// lane. The batch completes when every delivery is acknowledged.
    async fn apply(&self, first: u64, fates: Vec<Fate>, ack_tx: &mpsc::UnboundedSender<u64>) {
        let mut per_sink: Vec<(Arc<SinkHandle>, Vec<Arc<Event>>)> = Vec::new();
        let (mut dropped, mut dead_lettered) = (0u64, 0u64);
        for fate in fates {
            match fate {
                Fate::Deliver(targets) => {
                    for (sink, event) in targets {
                        match per_sink.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &sink)) {
                            Some((_, events)) => events.push(event),
                            None => per_sink.push((sink, vec![event])),
                        }
                    }
                }
                Fate::Drop => dropped += 1,
                Fate::DeadLetter { event, error, by } => {
                    let reason = DeadLetterReason {
                        pipeline: &self.plan.name,
                        sink: None,
                        plugin: Some(&by),
                        error: &error,
                        attempts: 1,
                    };
                    append_dead_letter(&self.plan.dead_letter, &event, &reason).await;
                    dead_lettered += 1;
                }
            }
        }
        self.dropped.inc_by(dropped);
        self.dead_lettered.inc_by(dead_lettered);
        let deliveries = per_sink.iter().map(|(_, events)| events.len()).sum();
        let ack = AckToken::new(deliveries, first, ack_tx.clone());
        for (sink, events) in per_sink {
            self.dispatch(&sink, events, &ack).await;
        }
    }

    async fn dispatch(&self, sink: &SinkHandle, events: Vec<Arc<Event>>, ack: &Arc<AckToken>) {
        let delivery = Delivery {
            events,
            ack: ack.clone(),
            pipeline: self.plan.name.clone(),
            dead_letter: self.plan.dead_letter.clone(),
        };
        if sink.dispatch(delivery).await.is_err() {
            warn!(sink = %sink.name, "sink stopped; the events stay unacknowledged");
        }
    }

    /// The reader stops reading for `why`; `/readyz` reports it until the restart.
    fn stopped_by(&self, partition: u32, why: String) {
        error!(pipeline = %self.plan.name, source = %self.source, partition, reason = %why,
            "this pipeline reader stops here; its checkpoint stays before the failure");
        self.plan.stopped.record(format!(
            "pipeline `{}` reading `{}` (partition {partition}): {why}",
            self.plan.name, self.source
        ));
    }

    /// The batch starting at `first` is done: every event of it is delivered,
    /// dead-lettered or dropped.
    fn complete(&self, mark: &mut Watermark, first: u64) {
        let events = mark.events_of(first).unwrap_or(0);
        match mark.complete(first) {
            Ok(_) => {
                self.completed.inc_by(events as u64);
            }
            Err(e) => {
                error!(pipeline = %self.plan.name, error = %e, "acknowledgement bookkeeping error")
            }
        }
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use super::*;
    use switchyard_connector::{Batch, BoxFuture, FeedError, Outcome, Sink};

    /// Answers its script one step per completed `next`, then ends; records every commit.
    struct ScriptedFeed {
        script: VecDeque<Result<Batch, FeedError>>,
        commits: Arc<Mutex<Vec<u64>>>,
        /// The `max` of every `next` call.
        asked: Arc<Mutex<Vec<usize>>>,
        /// Like a broker with a prefetch: hands out nothing more while this many
        /// positions past the last commit are out (`None`: no limit), and asks for a
        /// commit after as many.
        window: Option<u64>,
        handed: u64,
        committed: watch::Sender<u64>,
    }

    impl Feed for ScriptedFeed {
        fn start(&self) -> u64 {
            0
        }

        fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
            // Cancel-safe like every feed: the step is taken only when the call completes.
            Box::pin(async move {
                if let Some(window) = self.window {
                    let handed = self.handed;
                    let mut committed = self.committed.subscribe();
                    let _ = committed.wait_for(|&c| handed - c < window).await;
                }
                self.asked.lock().unwrap().push(max);
                let step = self.script.pop_front().transpose();
                if let Ok(Some(batch)) = &step {
                    self.handed = batch.positions().last().map_or(self.handed, |p| p + 1);
                }
                step
            })
        }

        fn commit(&mut self, low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
            self.commits.lock().unwrap().push(low);
            self.committed.send_replace(low);
            Box::pin(std::future::ready(Ok(())))
        }

        fn commit_after(&self) -> Option<u64> {
            self.window
        }

        fn lag(&self, _low: u64) -> u64 {
            0
        }

        fn partition(&self) -> u32 {
            0
        }
    }

    struct RecordingSink(Mutex<Vec<String>>);

    impl Sink for RecordingSink {
        fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
            let mut seen = self.0.lock().unwrap();
            seen.extend(batch.iter().map(|e| e.id.to_string()));
            Box::pin(std::future::ready(vec![Outcome::Delivered; batch.len()]))
        }
    }

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            source: "test".into(),
            kind: "message".into(),
            key: None,
            payload: b"{}".to_vec(),
            content_type: "application/json".into(),
            headers: vec![],
            timestamp_ms: 0,
            payload_is_compact_json: false,
        }
    }

    fn batch(first: u64, ids: &[&str]) -> Batch {
        ids.iter()
            .enumerate()
            .map(|(i, id)| (first + i as u64, event(id)))
            .collect()
    }

    async fn read(script: Vec<Result<Batch, FeedError>>) -> (Vec<String>, Vec<u64>) {
        let (seen, commits, _) = read_with(script, 64, None).await;
        (seen, commits)
    }

    /// What the sink saw, the commits and the `max` of every read.
    async fn read_with(
        script: Vec<Result<Batch, FeedError>>,
        max_in_flight: usize,
        window: Option<u64>,
    ) -> (Vec<String>, Vec<u64>, Vec<usize>) {
        read_into(script, max_in_flight, window, Arc::new(Metrics::new())).await
    }

    /// [`read_with`], counting into `metrics`.
    async fn read_into(
        script: Vec<Result<Batch, FeedError>>,
        max_in_flight: usize,
        window: Option<u64>,
        metrics: Arc<Metrics>,
    ) -> (Vec<String>, Vec<u64>, Vec<usize>) {
        let dir = tempfile::tempdir().unwrap();
        let dead_letter = crate::delivery::tests::dead_letter_queue(dir.path());
        let sink = Arc::new(RecordingSink(Mutex::new(Vec::new())));
        let handle = SinkHandle::start("rec", sink.clone(), metrics.clone());
        let plan = Arc::new(PipelinePlan {
            name: Arc::from("p"),
            sinks: vec![handle],
            all_sinks: Arc::new(HashMap::new()),
            stages: Stages::default(),
            metrics: metrics.clone(),
            dead_letter,
            max_in_flight,
            stopped: Arc::new(StoppedReaders::default()),
        });
        let commits = Arc::new(Mutex::new(Vec::new()));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let reader = Reader {
            plan,
            source: "s".into(),
            feed: Box::new(ScriptedFeed {
                script: script.into(),
                commits: commits.clone(),
                asked: asked.clone(),
                window,
                handed: 0,
                committed: watch::channel(0).0,
            }),
            metrics,
        };
        let (_stop_tx, stop_rx) = watch::channel(false);
        tokio::time::timeout(
            Duration::from_secs(30),
            reader.run(stop_rx, Duration::from_secs(10)),
        )
        .await
        .expect("the reader ends when its feed ends");
        let seen = sink.0.lock().unwrap().clone();
        let commits = commits.lock().unwrap().clone();
        let asked = asked.lock().unwrap().clone();
        (seen, commits, asked)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_takes_at_most_one_batch_however_large_max_in_flight_is() {
        let (seen, _, asked) = read_with(
            vec![Ok(batch(0, &["a", "b"])), Ok(batch(2, &["c"]))],
            100_000,
            None,
        )
        .await;
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(asked.first(), Some(&MAX_READ), "{asked:?}");
        assert!(asked.iter().all(|&m| m <= MAX_READ), "{asked:?}");

        let (_, _, asked) = read_with(vec![Ok(batch(0, &["a"]))], 10, None).await;
        assert_eq!(
            asked.first(),
            Some(&10),
            "a smaller max_in_flight bounds the read"
        );
    }

    /// The console reads where a reader stands from its progress, which the reader
    /// writes at its ticks and when it ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_publishes_its_checkpoint_and_what_it_holds() {
        let metrics = Arc::new(Metrics::new());
        let script = vec![Ok(batch(0, &["a", "b"])), Ok(batch(2, &["c"]))];
        let (seen, _, _) = read_into(script, 64, None, metrics.clone()).await;
        assert_eq!(seen, ["a", "b", "c"]);
        let progress = metrics.reader_progress("p", "s", 0);
        assert_eq!(progress.checkpoint.load(Ordering::Relaxed), 3);
        assert_eq!(progress.committed.load(Ordering::Relaxed), 3);
        assert_eq!(progress.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(metrics.readers.lock().unwrap().len(), 1);
    }

    /// A feed whose broker sends nothing more until it gets acks is committed as soon as
    /// its window is complete, not at the next tick: on a paused clock, which moves only
    /// when every task waits for a timer, no time passes at all.
    #[tokio::test(start_paused = true)]
    async fn a_feed_with_a_window_is_committed_as_soon_as_the_window_is_complete() {
        let start = tokio::time::Instant::now();
        let script = vec![
            Ok(batch(0, &["a", "b"])),
            Ok(batch(2, &["c", "d"])),
            Ok(batch(4, &["e", "f"])),
        ];
        let (seen, commits, _) = read_with(script, 64, Some(2)).await;
        assert_eq!(seen, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(commits, [2, 4, 6]);
        assert!(
            start.elapsed() < COMMIT_INTERVAL,
            "the reader waited for its tick to commit: {:?}",
            start.elapsed()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_transient_feed_error_pauses_the_reader_which_then_reads_on() {
        let (seen, commits) = read(vec![
            Ok(batch(0, &["a", "b"])),
            Err(FeedError::Transient("broker down".into())),
            Err(FeedError::Transient("still down".into())),
            Ok(batch(2, &["c"])),
        ])
        .await;
        assert_eq!(seen, ["a", "b", "c"]);
        assert_eq!(commits.last(), Some(&3), "{commits:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_permanent_feed_error_stops_the_reader_with_its_checkpoint_before_the_failure() {
        let (seen, commits) = read(vec![
            Ok(batch(0, &["a", "b"])),
            Err(FeedError::Permanent("slot is gone".into())),
            Ok(batch(2, &["never read"])),
        ])
        .await;
        assert_eq!(seen, ["a", "b"]);
        assert_eq!(commits.last(), Some(&2), "{commits:?}");
    }
}

#[cfg(test)]
mod shutdown_tests {
    use std::collections::VecDeque;

    use switchyard_connector::{Batch, BoxFuture, FeedError, Outcome, Sink};

    use super::*;

    /// Answers its script, then waits forever.
    struct Scripted(VecDeque<Result<Batch, FeedError>>);

    impl Feed for Scripted {
        fn start(&self) -> u64 {
            0
        }

        fn next(&mut self, _max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
            Box::pin(async move {
                match self.0.pop_front() {
                    Some(step) => step.map(Some),
                    None => std::future::pending().await,
                }
            })
        }

        fn commit(&mut self, _low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
            Box::pin(std::future::ready(Ok(())))
        }

        fn lag(&self, _low: u64) -> u64 {
            0
        }

        fn partition(&self) -> u32 {
            0
        }
    }

    /// Never answers: deliveries stay in flight. Counts the attempts it got.
    #[derive(Default)]
    struct Stuck(std::sync::atomic::AtomicUsize);

    impl Sink for Stuck {
        fn deliver<'a>(&'a self, _batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(std::future::pending())
        }
    }

    /// Runs a reader whose one event never completes, signals shutdown, and answers
    /// whether it ended by the drain timeout, with what `/readyz` would name.
    async fn ends_at_the_drain_timeout(
        script: Vec<Result<Batch, FeedError>>,
        stops_itself: bool,
    ) -> (bool, Vec<String>) {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let stopped = Arc::new(StoppedReaders::default());
        let sink = Arc::new(Stuck::default());
        let plan = Arc::new(PipelinePlan {
            name: Arc::from("p"),
            sinks: vec![SinkHandle::start("stuck", sink.clone(), metrics.clone())],
            all_sinks: Arc::new(HashMap::new()),
            stages: Stages::default(),
            metrics: metrics.clone(),
            dead_letter: crate::delivery::tests::dead_letter_queue(dir.path()),
            max_in_flight: 64,
            stopped: stopped.clone(),
        });
        let reader = Reader {
            plan,
            source: "s".into(),
            feed: Box::new(Scripted(script.into())),
            metrics,
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let run = tokio::spawn(reader.run(stop_rx, Duration::from_millis(200)));
        // The event is in flight (and the reader stopped itself, when it should) first.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sink.0.load(std::sync::atomic::Ordering::SeqCst) == 0
            || (stops_itself && stopped.list().is_empty())
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the reader never got going"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        stop_tx.send(true).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(20), run)
            .await
            .is_ok();
        (ended, stopped.list())
    }

    fn one_event() -> Batch {
        [(
            0u64,
            Event {
                id: "a".into(),
                source: "s".into(),
                kind: "message".into(),
                key: None,
                payload: b"{}".to_vec(),
                content_type: "application/json".into(),
                headers: vec![],
                timestamp_ms: 0,
                payload_is_compact_json: false,
            },
        )]
        .into_iter()
        .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_ends_a_reader_with_deliveries_in_flight_at_the_drain_timeout() {
        let (ended, stopped) = ends_at_the_drain_timeout(vec![Ok(one_event())], false).await;
        assert!(ended, "the reader outlived its drain timeout");
        assert!(stopped.is_empty(), "{stopped:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reader_stopped_by_its_feed_still_ends_at_the_drain_timeout_and_says_why() {
        let (ended, stopped) = ends_at_the_drain_timeout(
            vec![
                Ok(one_event()),
                Err(FeedError::Permanent("slot is gone".into())),
            ],
            true,
        )
        .await;
        assert!(
            ended,
            "a reader that stopped itself ignored the shutdown's drain timeout"
        );
        assert_eq!(stopped.len(), 1, "{stopped:?}");
        assert!(stopped[0].contains("slot is gone"), "{stopped:?}");
    }
}
