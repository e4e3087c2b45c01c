//! Durable internal queues: a [`Queue`] of partitions, its group committer, consumer
//! offsets and a wake-up channel per partition for readers.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_event::Event;
use switchyard_log::{
    GroupCommitter, LogError, LogOptions, OffsetStore, PartitionLog, Queue, Storage, SubmitError,
};
use switchyard_source_http::IntakeError;
use tokio::sync::{oneshot, watch};

/// Submissions waiting for the committer before producers are told to back off.
const MAX_PENDING_SUBMISSIONS: usize = 4096;

/// Why an append did not happen. Nothing was appended in every case.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("queue `{0}` has too many writes in flight")]
    Busy(String),
    #[error("queue `{queue}` holds {bytes} bytes of unconsumed data, its max_bytes is {max}")]
    Full { queue: String, bytes: u64, max: u64 },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("queue `{0}` is shutting down")]
    Closed(String),
}

impl From<AppendError> for IntakeError {
    fn from(e: AppendError) -> Self {
        match e {
            AppendError::Busy(_) => IntakeError::Busy {
                retry_after: Duration::from_secs(1),
            },
            AppendError::Full { .. } => IntakeError::Full(e.to_string()),
            AppendError::Log(l) if l.is_no_space() => IntakeError::NoSpace(l.to_string()),
            other => IntakeError::Unavailable(other.to_string()),
        }
    }
}

/// Limits of one queue.
#[derive(Clone, Debug)]
pub struct QueueLimits {
    pub partitions: u32,
    pub max_bytes: u64,
    pub retention: Option<Duration>,
}

/// One open durable queue.
pub struct QueueHandle {
    pub name: String,
    queue: Queue,
    committer: GroupCommitter,
    offsets: OffsetStore,
    durable: Vec<watch::Receiver<u64>>,
    limits: QueueLimits,
}

impl QueueHandle {
    /// Opens (recovering) or creates the queue in `dir`.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        name: &str,
        limits: QueueLimits,
    ) -> Result<Arc<Self>, LogError> {
        let queue = Queue::open(
            storage.clone(),
            dir,
            limits.partitions,
            LogOptions::default(),
        )?;
        let offsets = OffsetStore::open(storage, &dir.join("offsets"))?;
        let (senders, durable): (Vec<_>, Vec<_>) = queue
            .partitions()
            .iter()
            .map(|p| watch::channel(p.durable_end()))
            .unzip();
        let committer = GroupCommitter::start(
            name,
            queue.partitions().to_vec(),
            MAX_PENDING_SUBMISSIONS,
            Arc::new(move |partition, end| {
                if let Some(tx) = senders.get(partition as usize) {
                    tx.send_replace(end);
                }
            }),
        );
        Ok(Arc::new(Self {
            name: name.to_owned(),
            queue,
            committer,
            offsets,
            durable,
            limits,
        }))
    }

    /// Appends `events` durably (fsync'd) or not at all. Events with the same key go to the
    /// same partition, so their order is kept.
    pub async fn append(&self, events: &[Event]) -> Result<(), AppendError> {
        let bytes = self.queue.size_bytes();
        if bytes > self.limits.max_bytes {
            return Err(AppendError::Full {
                queue: self.name.clone(),
                bytes,
                max: self.limits.max_bytes,
            });
        }
        let mut parts: HashMap<u32, Vec<(u64, Vec<u8>)>> = HashMap::new();
        for e in events {
            let p = self.queue.partition_for(e.key.as_deref());
            parts
                .entry(p)
                .or_default()
                .push((e.timestamp_ms, e.encode_record()));
        }
        let (tx, rx) = oneshot::channel();
        let done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        match self.committer.try_submit(parts.into_iter().collect(), done) {
            Ok(()) => {}
            Err(SubmitError::Full) => return Err(AppendError::Busy(self.name.clone())),
            Err(SubmitError::Closed) => return Err(AppendError::Closed(self.name.clone())),
        }
        match rx.await {
            Ok(r) => r.map(|_| ()).map_err(AppendError::from),
            Err(_) => Err(AppendError::Closed(self.name.clone())),
        }
    }

    pub fn partitions(&self) -> &[Arc<PartitionLog>] {
        self.queue.partitions()
    }

    /// Wakes up when the partition's durable end moves.
    pub fn durable_watch(&self, partition: u32) -> watch::Receiver<u64> {
        self.durable[partition as usize].clone()
    }

    /// Where `group` resumes in `partition`: its committed offset, or the oldest retained
    /// record for a new group.
    pub fn committed(&self, group: &str, partition: u32) -> u64 {
        let log = &self.queue.partitions()[partition as usize];
        self.offsets
            .get(group, partition)
            .unwrap_or_else(|| log.start_offset())
    }

    /// Stores `group`'s offsets durably (blocking IO: call from a blocking context).
    pub fn commit_blocking(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        self.offsets.commit(group, offsets)
    }

    /// Records behind the slowest consumer group (all records when no group reads it).
    pub fn depth(&self) -> u64 {
        let groups = self.offsets.groups();
        self.queue
            .partitions()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let slowest = groups
                    .iter()
                    .filter_map(|g| self.offsets.get(g, i as u32))
                    .min()
                    .unwrap_or_else(|| p.start_offset());
                p.durable_end().saturating_sub(slowest)
            })
            .sum()
    }

    pub fn size_bytes(&self) -> u64 {
        self.queue.size_bytes()
    }

    /// True when the log refuses writes (an fsync failed).
    pub fn is_poisoned(&self) -> bool {
        self.queue.partitions().iter().any(|p| p.is_poisoned())
    }

    /// Deletes sealed segments every consumer group has passed, and those older than the
    /// retention. A queue nobody consumes keeps its data until the age limit.
    pub fn enforce_retention_blocking(&self) -> Result<usize, LogError> {
        let groups = self.offsets.groups();
        let now = now_ms();
        let mut removed = 0;
        for (i, p) in self.queue.partitions().iter().enumerate() {
            let consumed = groups
                .iter()
                .map(|g| self.offsets.get(g, i as u32).unwrap_or(0))
                .min();
            removed += p.enforce_retention(now, self.limits.retention, consumed)?;
        }
        Ok(removed)
    }

    /// Finishes pending appends and stops the committer.
    pub fn shutdown(&self) {
        self.committer.shutdown();
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
