//! Group commit: one thread per queue appends every pending submission (the single-part ones
//! of a partition in one write), fsyncs each touched partition once, then acknowledges the
//! submissions.

use std::collections::VecDeque;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tracing::{error, warn};

use crate::error::LogError;
use crate::format::MAX_PAYLOAD_BYTES;
use crate::lock;
use crate::partition::PartitionLog;

/// A submission: records per partition, `(partition, [(timestamp_ms, payload)])`.
pub type Parts = Vec<(u32, Vec<(u64, Vec<u8>)>)>;

/// Called once per submission with one offset range per part (same order as the parts), or
/// the error that prevented the submission from becoming durable.
pub type Done = Box<dyn FnOnce(Result<Vec<Range<u64>>, LogError>) + Send>;

/// Why a submission was not accepted. Nothing of it was written.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(
        "the log's commit queue is full; retry later (HTTP callers answer 429/503 with Retry-After)"
    )]
    Full,
    #[error("the log's group committer is shut down; no more writes are accepted")]
    Closed,
}

struct Submission {
    parts: Parts,
    done: Done,
}

struct State {
    pending: VecDeque<Submission>,
    closed: bool,
    /// The commit thread is waiting for work. A submission wakes it only then: while it
    /// writes or syncs, it takes what arrived when it comes back, and a wake-up would be
    /// a system call per submission for nothing.
    idle: bool,
    /// Submitters waiting in [`GroupCommitter::submit`] for room.
    blocked: usize,
}

struct Shared {
    state: Mutex<State>,
    not_empty: Condvar,
    not_full: Condvar,
    max_pending: usize,
}

/// Group commit for the partitions of one queue, on a dedicated std thread.
///
/// The thread takes every pending submission at once and appends them: the submissions with
/// one part (an ingest request whose events share a key, a produce to one partition) with one
/// write per partition, all or nothing, so a failed write fails exactly the submissions it
/// carried; a submission with several parts on its own, all-or-nothing across its parts (if
/// one part fails, the parts already appended are truncated back). Per partition, records
/// keep the order of their submissions. It then fsyncs every
/// touched partition once (all at the same time), calls `on_durable(partition, durable_end)`
/// for each successful sync, and only then calls the submissions' [`Done`] callbacks: `Ok`
/// means every part is durable. Callbacks run on the commit thread and must be quick (e.g. send on a channel).
pub struct GroupCommitter {
    name: String,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for GroupCommitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommitter")
            .field("name", &self.name)
            .finish()
    }
}

impl GroupCommitter {
    /// Starts the commit thread for `partitions` (index = partition number). At most
    /// `max_pending` submissions wait while a commit is in progress (at least 1).
    /// `on_durable(partition, durable_end)` is called after every successful sync, so readers
    /// can wake up.
    pub fn start(
        name: &str,
        partitions: Vec<Arc<PartitionLog>>,
        max_pending: usize,
        on_durable: Arc<dyn Fn(u32, u64) + Send + Sync>,
    ) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                pending: VecDeque::new(),
                closed: false,
                idle: false,
                blocked: 0,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            max_pending: max_pending.max(1),
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("log-commit-{name}"))
            .spawn(move || run(&thread_shared, &partitions, &*on_durable))
            .expect("the OS refused to start the group commit thread");
        GroupCommitter {
            name: name.to_owned(),
            shared,
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Queues a submission, or returns [`SubmitError::Full`] at once when `max_pending`
    /// submissions are already waiting. `done` is called exactly once if this returns Ok.
    pub fn try_submit(&self, parts: Parts, done: Done) -> Result<(), SubmitError> {
        let mut st = lock(&self.shared.state);
        if st.closed {
            return Err(SubmitError::Closed);
        }
        if st.pending.len() >= self.shared.max_pending {
            return Err(SubmitError::Full);
        }
        st.pending.push_back(Submission { parts, done });
        if st.idle {
            self.shared.not_empty.notify_one();
        }
        Ok(())
    }

    /// Like [`GroupCommitter::try_submit`] but waits for room instead of returning `Full`.
    pub fn submit(&self, parts: Parts, done: Done) -> Result<(), SubmitError> {
        let mut st = lock(&self.shared.state);
        loop {
            if st.closed {
                return Err(SubmitError::Closed);
            }
            if st.pending.len() < self.shared.max_pending {
                break;
            }
            st.blocked += 1;
            st = self
                .shared
                .not_full
                .wait(st)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.blocked -= 1;
        }
        st.pending.push_back(Submission { parts, done });
        if st.idle {
            self.shared.not_empty.notify_one();
        }
        Ok(())
    }

    /// Refuses new submissions, finishes the pending ones and stops the thread. Idempotent.
    /// (Called from a callback it only stops accepting; the thread then exits on its own.)
    pub fn shutdown(&self) {
        {
            let mut st = lock(&self.shared.state);
            st.closed = true;
            self.shared.not_empty.notify_all();
            self.shared.not_full.notify_all();
        }
        let handle = lock(&self.thread).take();
        if let Some(handle) = handle {
            if handle.thread().id() == std::thread::current().id() {
                return;
            }
            if handle.join().is_err() {
                error!(name = %self.name, "group commit thread panicked");
            }
        }
    }
}

impl Drop for GroupCommitter {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(
    shared: &Shared,
    partitions: &[Arc<PartitionLog>],
    on_durable: &(dyn Fn(u32, u64) + Send + Sync),
) {
    loop {
        let batch = {
            let mut st = lock(&shared.state);
            while st.pending.is_empty() && !st.closed {
                st.idle = true;
                st = shared
                    .not_empty
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st.idle = false;
            }
            if st.pending.is_empty() {
                return;
            }
            let batch = std::mem::take(&mut st.pending);
            if st.blocked > 0 {
                shared.not_full.notify_all();
            }
            batch
        };
        commit_batch(batch, partitions, on_durable);
    }
}

fn call(done: Done, result: Result<Vec<Range<u64>>, LogError>) {
    if catch_unwind(AssertUnwindSafe(|| done(result))).is_err() {
        error!("a log commit callback panicked; continuing with the next one");
    }
}

/// Bytes of payload one combined write may carry: a batch of many small submissions is one
/// write per partition, a batch of large ones several, never one unbounded buffer.
const MAX_COMBINED_BYTES: usize = 4 << 20;

/// A submission that was appended: its callback, its ranges (one per part) and the
/// partitions it touched.
type Appended = (Done, Vec<Range<u64>>, Vec<u32>);

/// The records of a single-part submission: `(timestamp_ms, payload)`.
type Records = Vec<(u64, Vec<u8>)>;

/// Single-part submissions waiting to be appended to one partition in one write.
#[derive(Default)]
struct Combined {
    subs: Vec<(Done, Records)>,
    bytes: usize,
}

fn commit_batch(
    batch: VecDeque<Submission>,
    partitions: &[Arc<PartitionLog>],
    on_durable: &(dyn Fn(u32, u64) + Send + Sync),
) {
    let mut touched = vec![false; partitions.len()];
    let mut appended: Vec<Appended> = Vec::with_capacity(batch.len());
    let mut combined: Vec<Combined> = (0..partitions.len()).map(|_| Combined::default()).collect();
    for Submission { mut parts, done } in batch {
        // The common case, one part on an existing partition with records of a valid size,
        // waits to share one write with the other submissions to its partition. Submission
        // order per partition is kept: a submission written on its own first flushes what
        // waits for the partitions it touches.
        let single = match parts.as_slice() {
            [(p, records)] => {
                (*p as usize) < partitions.len()
                    && records.iter().all(|(_, b)| b.len() <= MAX_PAYLOAD_BYTES)
            }
            _ => false,
        };
        if single {
            let (p, records) = parts.pop().expect("one part");
            let p = p as usize;
            let size: usize = records.iter().map(|(_, b)| b.len()).sum();
            if combined[p].bytes + size > MAX_COMBINED_BYTES && !combined[p].subs.is_empty() {
                flush(p, &mut combined[p], partitions, &mut touched, &mut appended);
            }
            combined[p].bytes += size;
            combined[p].subs.push((done, records));
            continue;
        }
        for (p, _) in &parts {
            if let Some(c) = combined.get_mut(*p as usize)
                && !c.subs.is_empty()
            {
                flush(*p as usize, c, partitions, &mut touched, &mut appended);
            }
        }
        append_alone(parts, done, partitions, &mut touched, &mut appended);
    }
    for (p, c) in combined.iter_mut().enumerate() {
        if !c.subs.is_empty() {
            flush(p, c, partitions, &mut touched, &mut appended);
        }
    }

    let mut synced: Vec<Option<Result<u64, LogError>>> =
        (0..partitions.len()).map(|_| None).collect();
    let to_sync: Vec<usize> = (0..partitions.len()).filter(|&p| touched[p]).collect();
    for (p, result) in sync_all(partitions, &to_sync) {
        let p = p as u32;
        if let Ok(end) = result
            && catch_unwind(AssertUnwindSafe(|| on_durable(p, end))).is_err()
        {
            error!("the log's on_durable callback panicked");
        }
        synced[p as usize] = Some(result);
    }

    for (done, ranges, ps) in appended {
        let failed = ps.iter().find_map(|&p| match &synced[p as usize] {
            Some(Err(e)) => Some(e.duplicate()),
            _ => None,
        });
        match failed {
            Some(e) => call(done, Err(e)),
            None => call(done, Ok(ranges)),
        }
    }
}

/// Appends the single-part submissions waiting for partition `p` in one write. The write is
/// all or nothing, so a failure fails exactly these submissions and stores none of them.
fn flush(
    p: usize,
    combined: &mut Combined,
    partitions: &[Arc<PartitionLog>],
    touched: &mut [bool],
    appended: &mut Vec<Appended>,
) {
    let subs = std::mem::take(&mut combined.subs);
    combined.bytes = 0;
    let records: Vec<(u64, &[u8])> = subs
        .iter()
        .flat_map(|(_, records)| records.iter().map(|(t, b)| (*t, b.as_slice())))
        .collect();
    match partitions[p].append(&records) {
        Ok(range) => {
            touched[p] = true;
            let mut start = range.start;
            for (done, records) in subs {
                let end = start + records.len() as u64;
                appended.push((done, std::iter::once(start..end).collect(), vec![p as u32]));
                start = end;
            }
        }
        Err(e) => {
            for (done, _) in subs {
                call(done, Err(e.duplicate()));
            }
        }
    }
}

/// Appends one submission part by part; if a part fails, the parts already appended are
/// truncated back and the submission fails.
fn append_alone(
    parts: Parts,
    done: Done,
    partitions: &[Arc<PartitionLog>],
    touched: &mut [bool],
    appended: &mut Vec<Appended>,
) {
    let mut ranges = Vec::with_capacity(parts.len());
    let mut failure = None;
    for (p, records) in &parts {
        let Some(log) = partitions.get(*p as usize) else {
            failure = Some(LogError::InvalidArgument {
                path: partitions
                    .first()
                    .map(|l| l.dir().to_path_buf())
                    .unwrap_or_default(),
                reason: format!(
                    "partition {p} does not exist (the queue has {})",
                    partitions.len()
                ),
            });
            break;
        };
        let records: Vec<(u64, &[u8])> = records.iter().map(|(t, b)| (*t, b.as_slice())).collect();
        match log.append(&records) {
            Ok(r) => ranges.push(r),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    match failure {
        Some(err) => {
            // Undo this submission's parts, newest first, so a partition named twice ends
            // at the start of its first part.
            for ((p, _), r) in parts.iter().zip(&ranges).rev() {
                let log = &partitions[*p as usize];
                if let Err(e) = log.truncate_unsynced(r.start) {
                    warn!(dir = %log.dir().display(), error = %e,
                        "could not undo a failed submission's part; it may be delivered");
                }
            }
            call(done, Err(err));
        }
        None => {
            let ps: Vec<u32> = parts.iter().map(|(p, _)| *p).collect();
            for &p in &ps {
                touched[p as usize] = true;
            }
            appended.push((done, ranges, ps));
        }
    }
}

/// fdatasyncs the partitions `to_sync` at the same time, one thread each beyond the first:
/// the file system commits concurrent syncs together (one journal commit on ext4/xfs), so a
/// batch touching N partitions waits about one sync instead of N in a row. Results come back
/// in the order of `to_sync`.
fn sync_all(
    partitions: &[Arc<PartitionLog>],
    to_sync: &[usize],
) -> Vec<(usize, Result<u64, LogError>)> {
    let Some((&first, rest)) = to_sync.split_first() else {
        return Vec::new();
    };
    if rest.is_empty() {
        return vec![(first, partitions[first].sync())];
    }
    std::thread::scope(|s| {
        let others: Vec<_> = rest
            .iter()
            .map(|&p| {
                let log = &partitions[p];
                (p, s.spawn(move || log.sync()))
            })
            .collect();
        let mut out = Vec::with_capacity(to_sync.len());
        out.push((first, partitions[first].sync()));
        for (p, handle) in others {
            match handle.join() {
                Ok(result) => out.push((p, result)),
                // Same as a panic in a sequential sync: it unwinds the commit thread.
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}
