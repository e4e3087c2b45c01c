//! Durable internal queues: a [`Queue`] of partitions, its group committer, consumer
//! offsets (pub/sub groups), work groups, and wake-ups for readers and long-polls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash as _, Hasher as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use switchyard_connector::IntakeError;
use switchyard_event::Event;
use switchyard_store::{
    Classify, GroupCommitter, LogError, LogOptions, MessageMeta, OffsetStore, PartitionLog, Queue,
    Storage, SubmitError, WorkGroup, WorkOptions,
};
use tokio::sync::{Notify, oneshot, watch};

use crate::dedup::DedupWindow;

/// Header holding a message's priority (0–9) in the stored event.
pub const PRIORITY_HEADER: &str = "switchyard-priority";
/// Header holding the time (ms since the epoch) before which a message is not handed out.
pub const NOT_BEFORE_HEADER: &str = "switchyard-not-before";

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

/// Why a work group could not be had.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "queue `{queue}` has {max} work groups, its limit (queues.{queue}.max_groups); delete groups it no longer needs (DELETE /queues/{queue}/groups/NAME or `switchyard queue groups delete {queue} NAME`) or raise queues.{queue}.max_groups"
    )]
    TooMany { queue: String, max: usize },
    #[error(
        "queue `{queue}` has no work group `{group}`; a work group is created by its first receive (it may have been deleted or expired after being idle)"
    )]
    NotFound { queue: String, group: String },
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Limits of one queue.
#[derive(Clone, Debug)]
pub struct QueueLimits {
    pub partitions: u32,
    pub max_bytes: u64,
    pub retention: Option<Duration>,
    /// Leases, deliveries, window and memory budget of its work groups.
    pub work: WorkOptions,
    /// Work groups a receive may create; more on disk at the start still open.
    pub max_groups: usize,
    /// Work groups idle this long are deleted; `None`: never.
    pub group_idle_expiry: Option<Duration>,
    /// How long a produce's `Idempotency-Key` is remembered (0 = not at all).
    pub dedup_window: Duration,
    /// Most idempotency keys remembered at once (the oldest are forgotten first).
    pub dedup_keys: usize,
}

/// One open durable queue.
pub struct QueueHandle {
    pub name: String,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    queue: Queue,
    committer: GroupCommitter,
    offsets: OffsetStore,
    durable: Vec<watch::Receiver<u64>>,
    limits: QueueLimits,
    work_groups: Mutex<BTreeMap<String, Arc<WorkGroup>>>,
    /// Idempotency keys of recent produces, and those being stored right now
    /// (`produce.rs`).
    pub(crate) dedup: Mutex<(DedupWindow, HashSet<String>)>,
    /// Woken when messages become durable or work-group state frees a message.
    pub changed: Arc<Notify>,
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
        let offsets = OffsetStore::open(storage.clone(), &dir.join("offsets"))?;
        let (senders, durable): (Vec<_>, Vec<_>) = queue
            .partitions()
            .iter()
            .map(|p| watch::channel(p.durable_end()))
            .unzip();
        let changed = Arc::new(Notify::new());
        let committer = GroupCommitter::start(
            name,
            queue.partitions().to_vec(),
            MAX_PENDING_SUBMISSIONS,
            Arc::new({
                let changed = changed.clone();
                move |partition, end| {
                    if let Some(tx) = senders.get(partition as usize) {
                        tx.send_replace(end);
                    }
                    changed.notify_waiters();
                }
            }),
        );
        let handle = Self {
            name: name.to_owned(),
            storage,
            dir: dir.to_path_buf(),
            queue,
            committer,
            offsets,
            durable,
            limits: limits.clone(),
            work_groups: Mutex::new(BTreeMap::new()),
            dedup: Mutex::new((
                DedupWindow::new(limits.dedup_window, limits.dedup_keys),
                HashSet::new(),
            )),
            changed,
        };
        // Work groups created earlier take part in retention and stats from the start, also
        // past `max_groups` (it only limits creating new ones).
        if let Ok(entries) = std::fs::read_dir(dir.join("groups")) {
            let mut groups = handle.work_groups.lock().unwrap_or_else(|e| e.into_inner());
            for entry in entries.flatten() {
                if let Some(group) = entry.file_name().to_str() {
                    let g = handle.open_group(group)?;
                    groups.insert(group.to_owned(), g);
                }
            }
        }
        Ok(Arc::new(handle))
    }

    fn open_group(&self, group: &str) -> Result<Arc<WorkGroup>, LogError> {
        Ok(Arc::new(WorkGroup::open(
            self.storage.clone(),
            &self.dir.join("groups").join(group),
            group,
            self.queue.partitions().to_vec(),
            self.limits.work.clone(),
            classify(),
        )?))
    }

    /// The work group `group`, created when it does not exist yet and the queue has fewer
    /// than `max_groups`. Blocking IO.
    pub fn work_group(&self, group: &str) -> Result<Arc<WorkGroup>, GroupError> {
        let mut groups = self.work_groups.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(g) = groups.get(group) {
            return Ok(g.clone());
        }
        if groups.len() >= self.limits.max_groups {
            return Err(GroupError::TooMany {
                queue: self.name.clone(),
                max: self.limits.max_groups,
            });
        }
        let g = self.open_group(group)?;
        groups.insert(group.to_owned(), g.clone());
        Ok(g)
    }

    /// The existing work group `group`.
    pub fn existing_work_group(&self, group: &str) -> Result<Arc<WorkGroup>, GroupError> {
        self.work_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(group)
            .cloned()
            .ok_or_else(|| GroupError::NotFound {
                queue: self.name.clone(),
                group: group.to_owned(),
            })
    }

    /// The existing work group `group`, when the map of groups is free right now: `None`
    /// when there is no such group, and also while an open or a delete holds the map (they
    /// do blocking IO under its lock; an async caller then asks again from a blocking
    /// thread).
    pub fn try_existing_work_group(&self, group: &str) -> Option<Arc<WorkGroup>> {
        let groups = match self.work_groups.try_lock() {
            Ok(groups) => groups,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        groups.get(group).cloned()
    }

    /// Deletes the work group `group`: its journal under `data_dir`, its memory, its
    /// leases. A later receive with the name starts a new group. Blocking IO.
    pub fn delete_work_group(&self, group: &str) -> Result<(), GroupError> {
        let mut groups = self.work_groups.lock().unwrap_or_else(|e| e.into_inner());
        let Some(g) = groups.get(group).cloned() else {
            return Err(GroupError::NotFound {
                queue: self.name.clone(),
                group: group.to_owned(),
            });
        };
        // Under the map's lock, so no receive opens the name while its files go.
        g.delete()?;
        groups.remove(group);
        drop(groups);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Deletes the work groups idle for the queue's `group_idle_expiry`; returns their
    /// names and the time each was last active. Blocking IO.
    pub fn expire_idle_groups(&self, now_ms: u64) -> Vec<(String, u64)> {
        let Some(expiry) = self.limits.group_idle_expiry else {
            return Vec::new();
        };
        let idle_ms = u64::try_from(expiry.as_millis()).unwrap_or(u64::MAX);
        let idle: Vec<Arc<WorkGroup>> = self
            .work_groups()
            .into_iter()
            .filter(|g| g.is_idle(now_ms, idle_ms))
            .collect();
        let mut expired = Vec::new();
        for g in idle {
            let mut groups = self.work_groups.lock().unwrap_or_else(|e| e.into_inner());
            // Checked again under the lock: a receive may have used it meanwhile.
            if !groups.get(g.name()).is_some_and(|c| Arc::ptr_eq(c, &g))
                || !g.is_idle(now_ms, idle_ms)
            {
                continue;
            }
            match g.delete() {
                Ok(()) => {
                    groups.remove(g.name());
                    expired.push((g.name().to_owned(), g.last_active_ms()));
                }
                Err(e) => {
                    tracing::warn!(queue = %self.name, group = %g.name(), error = %e,
                        "cannot delete idle work group; trying again later");
                }
            }
        }
        expired
    }

    /// The work groups opened so far, by name.
    pub fn work_groups(&self) -> Vec<Arc<WorkGroup>> {
        self.work_groups
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Names of the pub/sub groups with committed offsets.
    pub fn pubsub_groups(&self) -> Vec<String> {
        self.offsets.groups()
    }

    pub fn limits(&self) -> &QueueLimits {
        &self.limits
    }

    /// Records in the queue (retained, durable).
    pub fn retained_records(&self) -> u64 {
        self.queue
            .partitions()
            .iter()
            .map(|p| p.durable_end() - p.start_offset())
            .sum()
    }

    /// Per partition, the offset every group (pub/sub and work) has finished; `None` when no
    /// group reads the queue.
    fn consumed(&self, partition: u32) -> Option<u64> {
        let pubsub = self
            .offsets
            .groups()
            .into_iter()
            .map(|g| self.offsets.get(&g, partition).unwrap_or(0));
        let work = self
            .work_groups()
            .into_iter()
            .map(|g| g.consumed()[partition as usize]);
        pubsub.chain(work).min()
    }

    /// Appends `events` durably (fsync'd) or not at all. Events with the same key go to the
    /// same partition, so their order is kept.
    pub async fn append(&self, events: &[Event]) -> Result<(), AppendError> {
        self.append_positions(events).await.map(|_| ())
    }

    /// Like [`QueueHandle::append`], returning each event's (partition, offset).
    pub async fn append_positions(&self, events: &[Event]) -> Result<Vec<(u32, u64)>, AppendError> {
        let bytes = self.queue.size_bytes();
        if bytes > self.limits.max_bytes {
            return Err(AppendError::Full {
                queue: self.name.clone(),
                bytes,
                max: self.limits.max_bytes,
            });
        }
        // Per event: (index into `parts`, position within that part).
        let mut slots = Vec::with_capacity(events.len());
        let mut index: HashMap<u32, usize> = HashMap::new();
        let mut parts: switchyard_store::Parts = Vec::new();
        for e in events {
            let p = self.queue.partition_for(e.key.as_deref());
            let i = *index.entry(p).or_insert_with(|| {
                parts.push((p, Vec::new()));
                parts.len() - 1
            });
            slots.push((i, parts[i].1.len()));
            parts[i].1.push((e.timestamp_ms, e.encode_record()));
        }
        let partitions: Vec<u32> = parts.iter().map(|(p, _)| *p).collect();
        let (tx, rx) = oneshot::channel();
        let done = Box::new(move |r| {
            let _ = tx.send(r);
        });
        match self.committer.try_submit(parts, done) {
            Ok(()) => {}
            Err(SubmitError::Full) => return Err(AppendError::Busy(self.name.clone())),
            Err(SubmitError::Closed) => return Err(AppendError::Closed(self.name.clone())),
        }
        let ranges = match rx.await {
            Ok(r) => r?,
            Err(_) => return Err(AppendError::Closed(self.name.clone())),
        };
        Ok(slots
            .into_iter()
            .map(|(i, pos)| (partitions[i], ranges[i].start + pos as u64))
            .collect())
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
        self.queue
            .partitions()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let slowest = self
                    .consumed(i as u32)
                    .unwrap_or_else(|| p.start_offset())
                    .max(p.start_offset());
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
        let now = now_ms();
        let mut removed = 0;
        for (i, p) in self.queue.partitions().iter().enumerate() {
            let consumed = self.consumed(i as u32);
            removed += p.enforce_retention(now, self.limits.retention, consumed)?;
        }
        Ok(removed)
    }

    /// Finishes pending appends and stops the committer.
    pub fn shutdown(&self) {
        self.committer.shutdown();
    }
}

/// Priority, key and delay of a stored event, for work groups.
fn classify() -> Classify {
    Arc::new(|record| {
        let Ok(event) = Event::decode_record(&record.payload) else {
            return MessageMeta::default();
        };
        MessageMeta {
            priority: event
                .header(PRIORITY_HEADER)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            key: event.key.as_deref().map(key_hash),
            not_before_ms: event
                .header(NOT_BEFORE_HEADER)
                .and_then(|t| t.parse().ok())
                .unwrap_or(0),
        }
    })
}

fn key_hash(key: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
