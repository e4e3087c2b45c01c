//! The `postgres_cdc` connector: builds the source and turns a running replication
//! stream into a pipeline reader's [`Feed`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use switchyard_config::PostgresCdcSourceConfig;
use switchyard_connector::{Batch, BoxFuture, BuildContext, BuildError, Feed, FeedError, Source};
use tokio::sync::{mpsc, watch};

use crate::stream::{CdcHandle, Command, Sent, Status};

/// A configured `postgres_cdc` source.
pub struct PostgresSource {
    name: String,
    config: PostgresCdcSourceConfig,
    state_dir: PathBuf,
    control: Mutex<Option<Control>>,
}

/// What the admin API and the metrics see of a running source.
#[derive(Clone)]
pub struct Control {
    pub status: Arc<Status>,
    pub commands: mpsc::Sender<Command>,
}

/// Builds the `postgres_cdc` source `name`; it keeps its snapshot progress in
/// `<data_dir>/cdc/<name>`. Nothing connects before [`Source::open`].
///
/// A replication slot has one position: a source read by two pipelines would hand each
/// change to one of them and confirm the slot past changes the other never saw, so that
/// is refused here.
pub fn build(
    name: &str,
    cfg: &PostgresCdcSourceConfig,
    ctx: &BuildContext<'_>,
) -> Result<Box<dyn Source>, BuildError> {
    let readers = ctx.readers_of(name);
    if readers.len() > 1 {
        return Err(BuildError::new(format!(
            "postgres_cdc source `{name}` is read by {} pipelines ({}), but its slot `{}` has one position; read it from one pipeline (route from there), or declare one source with its own slot per pipeline",
            readers.len(),
            readers.join(", "),
            cfg.slot
        )));
    }
    Ok(Box::new(PostgresSource {
        name: name.to_string(),
        config: cfg.clone(),
        state_dir: ctx.state_dir("cdc", name),
        control: Mutex::new(None),
    }))
}

impl PostgresSource {
    /// The running stream's status and command channel, once opened.
    pub fn control(&self) -> Option<Control> {
        self.control.lock().expect("control lock").clone()
    }
}

impl Source for PostgresSource {
    /// Checks and sets up the database (a problem the user must fix fails here with the
    /// fix), then streams in the background: one feed, the slot's changes in commit order.
    fn open<'a>(
        &'a self,
        _pipeline: &'a str,
    ) -> BoxFuture<'a, Result<Vec<Box<dyn Feed>>, BuildError>> {
        Box::pin(async move {
            let handle = crate::start(&self.name, self.config.clone(), self.state_dir.clone())
                .await
                .map_err(|e| BuildError::from_error(&e))?;
            *self.control.lock().expect("control lock") = Some(Control {
                status: handle.status.clone(),
                commands: handle.commands.clone(),
            });
            Ok(vec![Box::new(CdcFeed::new(handle)) as Box<dyn Feed>])
        })
    }

    fn stopped(&self) -> Option<String> {
        let control = self.control()?;
        let view = control.status.view();
        view.stopped
            .then(|| view.last_error.unwrap_or_else(|| "stopped".into()))
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// A replication stream as a pipeline reader's feed. Positions are handed out by the
/// stream in order; the low watermark goes back to it, and it confirms the slot's flush
/// LSN up to the commits entirely below it.
///
/// Events of an older leadership term (this instance lost the slot's lock after sending
/// them) are dropped here and never reported complete: the stream confirms nothing from
/// them on, and the slot sends them again to the next leader.
pub struct CdcFeed {
    events: mpsc::Receiver<Sent>,
    term: Arc<AtomicU64>,
    complete: watch::Sender<u64>,
    /// Position after the last event handed out.
    handed_out: u64,
    failed: Option<FeedError>,
}

impl CdcFeed {
    pub fn new(handle: CdcHandle) -> Self {
        Self {
            events: handle.events,
            term: handle.term,
            complete: handle.complete,
            handed_out: 0,
            failed: None,
        }
    }

    async fn next_batch(&mut self, max: usize) -> Result<Option<Batch>, FeedError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // The stream reconnects by itself: what reaches the feed is final, but for events
        // of a term that ended.
        let (position, event) = loop {
            match self.events.recv().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(FeedError::Permanent(e)),
                Some(Ok((term, position, event))) => {
                    if self.current(term) {
                        break (position, event);
                    }
                }
            }
        };
        // Nothing below awaits, so a dropped call loses nothing.
        let mut out = Batch::with_capacity(max.clamp(1, 1024));
        out.push(position, event);
        while out.len() < max.max(1) {
            match self.events.try_recv() {
                Ok(Ok((term, position, event))) => {
                    if self.current(term) {
                        out.push(position, event);
                    }
                }
                Ok(Err(e)) => {
                    self.failed = Some(FeedError::Permanent(e));
                    break;
                }
                Err(_) => break,
            }
        }
        self.handed_out = out.end().unwrap_or(self.handed_out);
        Ok(Some(out))
    }

    /// Whether an event of `term` may still be handed out.
    fn current(&self, term: u64) -> bool {
        term >= self.term.load(Ordering::Acquire)
    }
}

impl Feed for CdcFeed {
    fn start(&self) -> u64 {
        0
    }

    fn next(&mut self, max: usize) -> BoxFuture<'_, Result<Option<Batch>, FeedError>> {
        Box::pin(self.next_batch(max))
    }

    fn commit(&mut self, low: u64) -> BoxFuture<'_, Result<(), FeedError>> {
        self.complete.send_replace(low);
        Box::pin(std::future::ready(Ok(())))
    }

    fn lag(&self, low: u64) -> u64 {
        self.handed_out.saturating_sub(low)
    }

    fn partition(&self) -> u32 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_event::Event;

    fn event(n: u32) -> Event {
        crate::change::event("db", 1, n, "insert", None, &serde_json::json!({}), 0)
    }

    #[tokio::test]
    async fn events_of_an_ended_term_are_dropped_and_never_reported_complete() {
        let (tx, events) = mpsc::channel(16);
        let (complete, mut low) = watch::channel(0);
        let term = Arc::new(AtomicU64::new(0));
        let mut feed = CdcFeed::new(CdcHandle {
            events,
            term: term.clone(),
            complete,
            status: Arc::new(Status::default()),
            commands: mpsc::channel(1).0,
        });
        tx.send(Ok((0, 0, event(0)))).await.unwrap();
        let first = feed.next_batch(1).await.unwrap().unwrap();
        assert_eq!(first.positions(), &[0]);
        // Two more of term 0 queued, then the lock is lost and term 1 starts.
        tx.send(Ok((0, 1, event(1)))).await.unwrap();
        tx.send(Ok((0, 2, event(2)))).await.unwrap();
        term.store(1, Ordering::Release);
        tx.send(Ok((1, 3, event(3)))).await.unwrap();
        tx.send(Ok((1, 4, event(4)))).await.unwrap();
        let next = feed.next_batch(10).await.unwrap().unwrap();
        assert_eq!(next.positions(), &[3, 4]);
        assert_eq!(next.events()[0], event(3));
        // Only what was handed out is reported back by the pipeline; the dropped
        // positions never were, and the feed reports nothing by itself.
        assert!(!low.has_changed().unwrap());
        assert_eq!(*low.borrow_and_update(), 0);
        // Dropped ones do not count as lag either.
        assert_eq!(feed.lag(3), 2);
    }
}
