//! Work-queue consumer groups: within a group each message goes to one consumer at a time.
//!
//! A [`WorkGroup`] reads the partitions of a queue and hands messages out under a *lease*:
//! the consumer acks (done), nacks (give back, optionally after a delay) or extends it; a
//! lease that runs out is handed out again with a higher delivery count, and after
//! `max_deliveries` the message is handed to the caller for dead-lettering.
//!
//! Ordering: among the loaded messages (a window of `lookahead` per partition), a higher
//! priority goes first, equal priorities oldest first; a message with a key is only handed
//! out when it is the oldest unfinished message of that key (FIFO per key).
//!
//! State is journaled in a [`PartitionLog`] of its own: acks, dead letters, delivery counts and
//! nack delays as small binary records, with a snapshot record from time to time after which
//! older journal segments are deleted. Recovery replays from the last snapshot. Acks are
//! fsync'd before [`WorkGroup::ack`] returns; delivery counts and nacks ride along with the
//! next fsync. Leases are not journaled: after a restart every unfinished message is due.
//!
//! Memory: the loaded windows of all groups sharing a [`MemoryBudget`] (in the runtime: the
//! groups of one queue) hold at most its bytes, plus one message per partition and group so
//! that a group always makes progress. A group past the budget loads less lookahead.
//! [`WorkGroup::delete`] frees a group's memory and removes its journal.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::lock;
use crate::partition::{LogOptions, PartitionLog, Record};
use crate::storage::Storage;

/// What the group needs to know of a message to order it. Computed by the caller from the
/// record (the log does not know the event format).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MessageMeta {
    /// 0..=9, higher first.
    pub priority: u8,
    /// Hash of the message key; messages with the same hash are handed out in order.
    pub key: Option<u64>,
    /// Not handed out before this time (ms since the epoch); 0 = at once.
    pub not_before_ms: u64,
}

/// Turns a stored record into its [`MessageMeta`].
pub type Classify = Arc<dyn Fn(&Record) -> MessageMeta + Send + Sync>;

/// Bytes that the loaded windows of a set of work groups may hold together. Shared (`Arc`)
/// by the groups it bounds; each group takes a message's [`entry_cost`] when it loads it and
/// gives it back when the message is finished or the group is deleted or dropped.
#[derive(Debug)]
pub struct MemoryBudget {
    max: usize,
    used: AtomicUsize,
}

impl MemoryBudget {
    pub fn new(max_bytes: usize) -> Arc<Self> {
        Arc::new(MemoryBudget {
            max: max_bytes,
            used: AtomicUsize::new(0),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Bytes taken now (may exceed [`MemoryBudget::max`] by the one-message-per-partition
    /// allowance).
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn available(&self) -> usize {
        self.max.saturating_sub(self.used())
    }

    /// Takes `n` bytes if they fit.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    /// Takes `n` bytes whether they fit or not (the progress allowance).
    fn take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    fn give_back(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                Some(u.saturating_sub(n))
            });
    }
}

/// What a loaded message counts against a [`MemoryBudget`]: its payload plus the bookkeeping
/// around it (entry, indexes, record header).
pub fn entry_cost(record: &Record) -> usize {
    record.payload.len() + ENTRY_OVERHEAD
}

/// Bytes of bookkeeping per loaded message (the `Entry`, its `Record`, its places in the
/// ordered sets and maps), rounded up.
const ENTRY_OVERHEAD: usize = 256;

/// Tuning of a work group.
#[derive(Clone, Debug)]
pub struct WorkOptions {
    /// Default lease, in milliseconds.
    pub ack_timeout_ms: u64,
    /// Deliveries after which a message is dead-lettered instead of handed out again.
    pub max_deliveries: u32,
    /// Messages per partition loaded and ordered at once.
    pub lookahead: usize,
    /// Bytes of payload per partition loaded at once.
    pub window_bytes: usize,
    /// Journal operations after which a snapshot is written and older segments deleted.
    pub snapshot_every: u64,
    /// Shared by the groups whose windows it bounds together (clones share it).
    pub budget: Arc<MemoryBudget>,
}

impl Default for WorkOptions {
    fn default() -> Self {
        WorkOptions {
            ack_timeout_ms: 30_000,
            max_deliveries: 20,
            lookahead: 10_000,
            window_bytes: 32 << 20,
            snapshot_every: 100_000,
            budget: MemoryBudget::new(256 << 20),
        }
    }
}

/// Names one delivery of one message: handed out with it, given back to ack, nack or extend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    pub partition: u32,
    pub offset: u64,
    /// Which delivery (1 = the first).
    pub delivery: u32,
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.partition, self.offset, self.delivery)
    }
}

impl FromStr for Receipt {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a receipt (receipts look like `0-17-1`)");
        let mut it = s.split('-');
        let (Some(p), Some(o), Some(d), None) = (it.next(), it.next(), it.next(), it.next()) else {
            return Err(bad());
        };
        Ok(Receipt {
            partition: p.parse().map_err(|_| bad())?,
            offset: o.parse().map_err(|_| bad())?,
            delivery: d.parse().map_err(|_| bad())?,
        })
    }
}

/// A message handed out by [`WorkGroup::receive`].
#[derive(Clone, Debug)]
pub struct Leased {
    pub receipt: Receipt,
    pub record: Arc<Record>,
    pub priority: u8,
    pub lease_expires_ms: u64,
}

/// A message that used up its deliveries; the caller appends it to the dead-letter queue and
/// then calls [`WorkGroup::dead_lettered`].
#[derive(Clone, Debug)]
pub struct Exhausted {
    pub partition: u32,
    pub offset: u64,
    pub record: Arc<Record>,
    pub deliveries: u32,
    pub reason: String,
}

/// What a group holds, for stats.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct GroupStats {
    /// Unfinished messages: not acked and not dead-lettered (in flight and delayed included).
    pub depth: u64,
    pub in_flight: u64,
    pub delayed: u64,
    /// Age of the oldest unfinished loaded message, ms.
    pub oldest_age_ms: Option<u64>,
    /// Messages this group sent to the dead-letter queue (since the group was created).
    pub dead_lettered: u64,
    /// Bytes its loaded window counts against the [`MemoryBudget`].
    pub memory_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waits for an earlier message of its key.
    Blocked,
    Ready,
    Delayed,
    Leased {
        deadline: u64,
    },
    /// Out of deliveries; waiting to be dead-lettered.
    Dying,
}

struct Entry {
    record: Arc<Record>,
    priority: u8,
    key: Option<u64>,
    not_before: u64,
    deliveries: u32,
    /// Set by a nack with a delay, so a snapshot keeps it.
    nacked_until: u64,
    state: State,
}

type ReadyKey = (Reverse<u8>, u64, u32, u64);

#[derive(Default)]
struct Part {
    /// Next offset to load from the log.
    scan: u64,
    /// Loaded, unfinished messages.
    entries: BTreeMap<u64, Entry>,
    bytes: usize,
    /// Unfinished loaded offsets per key, oldest first.
    keys: HashMap<u64, VecDeque<u64>>,
    /// From the journal, for offsets not loaded yet: finished ranges, start → end (exclusive).
    done: BTreeMap<u64, u64>,
    counts: HashMap<u64, u32>,
    nacked: HashMap<u64, u64>,
}

impl Part {
    fn low(&self) -> u64 {
        self.entries
            .first_key_value()
            .map_or(self.scan, |(o, _)| *o)
    }

    /// The end of the finished range holding `offset`, if it is finished per the journal.
    fn done_end(&self, offset: u64) -> Option<u64> {
        let (_, &end) = self.done.range(..=offset).next_back()?;
        (offset < end).then_some(end)
    }

    /// Moves `scan` past finished ranges and forgets the ranges behind it.
    fn skip_done(&mut self) {
        while let Some(end) = self.done_end(self.scan) {
            self.scan = end;
        }
        while let Some((_, &end)) = self.done.first_key_value() {
            if end > self.scan {
                break;
            }
            self.done.pop_first();
        }
    }

    /// Finished offsets at or after `scan` and before `end`, per the journal.
    fn done_between(&self, end: u64) -> u64 {
        self.done
            .iter()
            .map(|(&s, &e)| e.min(end).saturating_sub(s.max(self.scan)))
            .sum()
    }

    /// Finished ranges from `low()` on: the gaps between loaded entries, then the journal's.
    fn done_ranges(&self) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut prev = self.low();
        for &o in self.entries.keys() {
            if o > prev {
                out.push((prev, o));
            }
            prev = o + 1;
        }
        if self.scan > prev {
            out.push((prev, self.scan));
        }
        out.extend(self.done.iter().map(|(&s, &e)| (s, e)));
        out
    }
}

struct Inner {
    parts: Vec<Part>,
    ready: BTreeSet<ReadyKey>,
    delayed: BTreeSet<(u64, u32, u64)>,
    leases: BTreeSet<(u64, u32, u64)>,
    dying: Vec<(u32, u64, String)>,
    dead_lettered: u64,
    ops_since_snapshot: u64,
    /// Bytes taken from the budget for the loaded entries.
    held: usize,
    /// Set by [`WorkGroup::delete`]: every later operation is refused.
    deleted: bool,
}

/// One work-queue consumer group of a queue.
pub struct WorkGroup {
    name: String,
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    logs: Vec<Arc<PartitionLog>>,
    journal: PartitionLog,
    classify: Classify,
    opts: WorkOptions,
    inner: Mutex<Inner>,
    /// Serialises fsyncs of the journal so concurrent acks share one (group commit).
    sync_lock: Mutex<()>,
    /// Per partition: every offset below is finished durably (for retention).
    durable_low: Mutex<Vec<u64>>,
    /// Time (ms since the epoch) of the last receive, ack, nack or extend, for idle expiry.
    last_active: AtomicU64,
}

impl fmt::Debug for WorkGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkGroup")
            .field("name", &self.name)
            .finish()
    }
}

impl Drop for WorkGroup {
    fn drop(&mut self) {
        let inner = lock(&self.inner);
        self.opts.budget.give_back(inner.held);
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

const OP_ACK: u8 = 1;
const OP_DELIVER: u8 = 2;
const OP_NACK: u8 = 3;
const OP_DEAD: u8 = 4;
const REC_OPS: u8 = 1;
const REC_SNAPSHOT: u8 = 2;
const OP_LEN: usize = 1 + 4 + 8 + 8;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    parts: Vec<PartSnapshot>,
    dead_lettered: u64,
}

#[derive(Serialize, Deserialize)]
struct PartSnapshot {
    low: u64,
    /// Finished ranges (start, end exclusive) at or above `low`.
    done: Vec<(u64, u64)>,
    /// (offset, deliveries) of unfinished messages delivered at least once.
    counts: Vec<(u64, u32)>,
    /// (offset, not before) of nacked messages waiting for their delay.
    nacked: Vec<(u64, u64)>,
}

fn push_op(buf: &mut Vec<u8>, op: u8, partition: u32, offset: u64, value: u64) {
    if buf.is_empty() {
        buf.push(REC_OPS);
    }
    buf.push(op);
    buf.extend_from_slice(&partition.to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&value.to_le_bytes());
}

impl WorkGroup {
    /// Opens (recovering its journal) or creates the group `name` in `dir` over `logs`, the
    /// queue's partitions.
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        name: &str,
        logs: Vec<Arc<PartitionLog>>,
        opts: WorkOptions,
        classify: Classify,
    ) -> Result<Self, LogError> {
        let journal = PartitionLog::open(
            storage.clone(),
            &dir.join("journal"),
            LogOptions {
                segment_bytes: 4 << 20,
                ..LogOptions::default()
            },
        )?;
        let mut parts: Vec<Part> = logs
            .iter()
            .map(|l| Part {
                scan: l.start_offset(),
                ..Part::default()
            })
            .collect();
        let mut dead_lettered = 0;
        let mut ops = 0u64;
        // Journal records carry the time of their operation: the newest one is when the
        // group was last active before this open.
        let mut last_active = 0u64;
        let mut from = journal.start_offset();
        loop {
            let records = journal.read(from, 1024, 8 << 20)?;
            let Some(last) = records.last() else { break };
            from = last.offset + 1;
            for r in &records {
                last_active = last_active.max(r.timestamp_ms);
                match r.payload.first() {
                    Some(&REC_SNAPSHOT) => {
                        let snap: Snapshot =
                            serde_json::from_slice(&r.payload[1..]).map_err(|e| {
                                LogError::Corrupt {
                                    path: dir.join("journal"),
                                    offset: r.offset,
                                    reason: format!("group snapshot is not valid: {e}"),
                                }
                            })?;
                        dead_lettered = snap.dead_lettered;
                        ops = 0;
                        for (part, s) in parts.iter_mut().zip(snap.parts) {
                            part.scan = s.low.max(part.scan);
                            part.done = s.done.into_iter().filter(|(a, b)| a < b).collect();
                            part.counts = s.counts.into_iter().collect();
                            part.nacked = s.nacked.into_iter().collect();
                        }
                    }
                    Some(&REC_OPS) => {
                        for op in r.payload[1..].chunks_exact(OP_LEN) {
                            let p = u32::from_le_bytes(op[1..5].try_into().expect("4 bytes"));
                            let offset = u64::from_le_bytes(op[5..13].try_into().expect("8"));
                            let value = u64::from_le_bytes(op[13..21].try_into().expect("8"));
                            let Some(part) = parts.get_mut(p as usize) else {
                                continue;
                            };
                            ops += 1;
                            match op[0] {
                                OP_ACK | OP_DEAD => {
                                    if op[0] == OP_DEAD {
                                        dead_lettered += 1;
                                    }
                                    part.counts.remove(&offset);
                                    part.nacked.remove(&offset);
                                    if offset >= part.scan && part.done_end(offset).is_none() {
                                        part.done.insert(offset, offset + 1);
                                    }
                                }
                                OP_DELIVER => {
                                    part.counts.insert(offset, value as u32);
                                }
                                OP_NACK => {
                                    part.nacked.insert(offset, value);
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {
                        return Err(LogError::Corrupt {
                            path: dir.join("journal"),
                            offset: r.offset,
                            reason: "unknown group journal record".into(),
                        });
                    }
                }
            }
        }
        for part in &mut parts {
            // Finished offsets right at the start need no loading.
            part.skip_done();
        }
        let lows = parts.iter().map(Part::low).collect();
        if last_active == 0 {
            // A new group (or one that never did anything): idle from now on.
            last_active = wall_ms();
        }
        Ok(WorkGroup {
            name: name.to_owned(),
            storage,
            dir: dir.to_path_buf(),
            logs,
            journal,
            classify,
            opts,
            inner: Mutex::new(Inner {
                parts,
                ready: BTreeSet::new(),
                delayed: BTreeSet::new(),
                leases: BTreeSet::new(),
                dying: Vec::new(),
                dead_lettered,
                ops_since_snapshot: ops,
                held: 0,
                deleted: false,
            }),
            sync_lock: Mutex::new(()),
            durable_low: Mutex::new(lows),
            last_active: AtomicU64::new(last_active),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn options(&self) -> &WorkOptions {
        &self.opts
    }

    /// Time (ms since the epoch) of the group's last receive, ack, nack or extend; after a
    /// reopen, of its last journaled operation (or of the open, when it has none).
    pub fn last_active_ms(&self) -> u64 {
        self.last_active.load(Ordering::Relaxed)
    }

    /// Whether the group saw no receive, ack, nack or extend for `idle_ms` up to `now_ms`.
    pub fn is_idle(&self, now_ms: u64, idle_ms: u64) -> bool {
        now_ms.saturating_sub(self.last_active_ms()) >= idle_ms
    }

    /// Deletes the group: frees its loaded messages (giving their memory back to the
    /// budget), refuses every later operation with [`LogError::GroupDeleted`], and removes
    /// its journal and directory. Opening a group of the same name afterwards starts a new
    /// group at the oldest retained message. The caller makes sure nobody opens that name
    /// while this runs.
    pub fn delete(&self) -> Result<(), LogError> {
        // No sync (snapshot, journal retention) runs while the files go.
        let _sync = lock(&self.sync_lock);
        {
            let mut inner = lock(&self.inner);
            if !inner.deleted {
                inner.deleted = true;
                self.opts.budget.give_back(inner.held);
                inner.held = 0;
                for part in &mut inner.parts {
                    *part = Part::default();
                }
                inner.ready.clear();
                inner.delayed.clear();
                inner.leases.clear();
                inner.dying.clear();
            }
        }
        // The files go also when an earlier delete already ran and stopped halfway (an I/O
        // error): what it removed is not found now, which is fine; what it left goes now.
        // Left behind, they would be this group again the next time the name is opened.
        let gone_is_fine = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            r => r,
        };
        // Newest segment first: a crash halfway leaves a shorter journal (an older state of
        // the group), never one with a hole.
        let journal = self.journal.dir();
        let listed = match self.storage.list_files(journal) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            r => r,
        };
        let mut segments: Vec<(u64, String)> = listed
            .map_err(|e| LogError::io(journal, e))?
            .into_iter()
            .map(|n| {
                let base = n
                    .strip_suffix(".log")
                    .and_then(|b| b.parse().ok())
                    .unwrap_or(u64::MAX);
                (base, n)
            })
            .collect();
        segments.sort();
        for (_, name) in segments.iter().rev() {
            let path = journal.join(name);
            gone_is_fine(self.storage.remove_file(&path)).map_err(|e| LogError::io(&path, e))?;
        }
        // The removals are durable before the directories go.
        gone_is_fine(self.storage.sync_dir(journal)).map_err(|e| LogError::io(journal, e))?;
        for d in [journal, self.dir.as_path()] {
            gone_is_fine(self.storage.remove_dir(d)).map_err(|e| LogError::io(d, e))?;
        }
        if let Some(parent) = self.dir.parent() {
            self.storage
                .sync_dir(parent)
                .map_err(|e| LogError::io(parent, e))?;
        }
        Ok(())
    }

    fn check_live(&self, inner: &Inner) -> Result<(), LogError> {
        if inner.deleted {
            return Err(LogError::GroupDeleted {
                group: self.name.clone(),
            });
        }
        Ok(())
    }

    fn touch(&self, now_ms: u64) {
        self.last_active.fetch_max(now_ms, Ordering::Relaxed);
    }

    /// Hands out up to `max` messages under a lease of `lease_ms` (the group's `ack_timeout`
    /// when `None`). Expired leases and due delays are handled first.
    pub fn receive(
        &self,
        now_ms: u64,
        max: usize,
        lease_ms: Option<u64>,
    ) -> Result<Vec<Leased>, LogError> {
        let lease = lease_ms.unwrap_or(self.opts.ack_timeout_ms);
        let mut inner = lock(&self.inner);
        self.check_live(&inner)?;
        self.touch(now_ms);
        self.promote(&mut inner, now_ms);
        self.fill(&mut inner, now_ms)?;
        let mut out = Vec::with_capacity(max.min(inner.ready.len()));
        let mut ops = Vec::new();
        while out.len() < max {
            let Some(k) = inner.ready.pop_first() else {
                break;
            };
            let (_, _, p, offset) = k;
            let deadline = now_ms.saturating_add(lease);
            let entry = inner.parts[p as usize]
                .entries
                .get_mut(&offset)
                .expect("a ready offset is loaded");
            entry.deliveries += 1;
            entry.state = State::Leased { deadline };
            push_op(&mut ops, OP_DELIVER, p, offset, u64::from(entry.deliveries));
            out.push(Leased {
                receipt: Receipt {
                    partition: p,
                    offset,
                    delivery: entry.deliveries,
                },
                record: entry.record.clone(),
                priority: entry.priority,
                lease_expires_ms: deadline,
            });
            inner.leases.insert((deadline, p, offset));
        }
        if !ops.is_empty() {
            inner.ops_since_snapshot += out.len() as u64;
            self.journal.append(&[(now_ms, &ops)])?;
        }
        Ok(out)
    }

    /// Marks the messages of `receipts` finished. Returns, per receipt, whether it was
    /// accepted (false: stale — acked already, or handed out again since). Durable on return.
    pub fn ack(&self, receipts: &[Receipt], now_ms: u64) -> Result<Vec<bool>, LogError> {
        let mut result = Vec::with_capacity(receipts.len());
        {
            let mut inner = lock(&self.inner);
            self.check_live(&inner)?;
            self.touch(now_ms);
            let mut ops = Vec::new();
            for r in receipts {
                let ok = Self::current(&inner, r).is_some_and(|s| s != State::Dying);
                if ok {
                    self.finish(&mut inner, r.partition, r.offset, now_ms);
                    push_op(&mut ops, OP_ACK, r.partition, r.offset, 0);
                }
                result.push(ok);
            }
            if !ops.is_empty() {
                inner.ops_since_snapshot += result.iter().filter(|&&b| b).count() as u64;
                self.journal.append(&[(now_ms, &ops)])?;
            }
        }
        self.sync()?;
        Ok(result)
    }

    /// Gives messages back: they are handed out again after `delay_ms` (or dead-lettered if
    /// they used up their deliveries). Returns, per receipt, whether it was accepted.
    pub fn nack(
        &self,
        receipts: &[Receipt],
        delay_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<bool>, LogError> {
        let mut inner = lock(&self.inner);
        self.check_live(&inner)?;
        self.touch(now_ms);
        let mut ops = Vec::new();
        let mut result = Vec::with_capacity(receipts.len());
        for r in receipts {
            let current = Self::current(&inner, r);
            let leased = matches!(current, Some(State::Leased { .. }));
            if let Some(State::Leased { deadline }) = current {
                inner.leases.remove(&(deadline, r.partition, r.offset));
                let until = now_ms.saturating_add(delay_ms);
                if delay_ms > 0 {
                    push_op(&mut ops, OP_NACK, r.partition, r.offset, until);
                }
                let entry = inner.parts[r.partition as usize]
                    .entries
                    .get_mut(&r.offset)
                    .expect("leased entry");
                if delay_ms > 0 {
                    entry.not_before = until;
                    entry.nacked_until = until;
                }
                let used = entry.deliveries;
                self.retry_or_die(
                    &mut inner,
                    r.partition,
                    r.offset,
                    now_ms,
                    format!("nacked on delivery {used}"),
                );
            }
            result.push(leased);
        }
        if !ops.is_empty() {
            self.journal.append(&[(now_ms, &ops)])?;
        }
        Ok(result)
    }

    /// Renews leases to run `by_ms` from now. Returns, per receipt, the new expiry, or `None`
    /// when the lease was lost.
    /// A deleted group has no leases: every receipt is lost.
    pub fn extend(&self, receipts: &[Receipt], by_ms: u64, now_ms: u64) -> Vec<Option<u64>> {
        let mut inner = lock(&self.inner);
        self.touch(now_ms);
        receipts
            .iter()
            .map(|r| {
                let Some(State::Leased { deadline }) = Self::current(&inner, r) else {
                    return None;
                };
                let new = now_ms.saturating_add(by_ms);
                inner.leases.remove(&(deadline, r.partition, r.offset));
                inner.leases.insert((new, r.partition, r.offset));
                inner.parts[r.partition as usize]
                    .entries
                    .get_mut(&r.offset)
                    .expect("leased entry")
                    .state = State::Leased { deadline: new };
                Some(new)
            })
            .collect()
    }

    /// Messages that used up their deliveries (expired leases are checked first). Each is
    /// returned once; it stays unfinished until [`WorkGroup::dead_lettered`].
    pub fn take_exhausted(&self, now_ms: u64) -> Vec<Exhausted> {
        let mut inner = lock(&self.inner);
        self.promote(&mut inner, now_ms);
        let dying = std::mem::take(&mut inner.dying);
        dying
            .into_iter()
            .filter_map(|(p, offset, reason)| {
                let e = inner.parts[p as usize].entries.get(&offset)?;
                (e.state == State::Dying).then(|| Exhausted {
                    partition: p,
                    offset,
                    record: e.record.clone(),
                    deliveries: e.deliveries,
                    reason,
                })
            })
            .collect()
    }

    /// Gives messages returned by [`WorkGroup::take_exhausted`] back for a later call, when
    /// they could not be stored in the dead-letter queue.
    pub fn requeue_exhausted(&self, exhausted: &[Exhausted]) {
        let mut inner = lock(&self.inner);
        inner.dying.extend(
            exhausted
                .iter()
                .map(|x| (x.partition, x.offset, x.reason.clone())),
        );
    }

    /// Finishes messages returned by [`WorkGroup::take_exhausted`] once they are durable in
    /// the dead-letter queue. Durable on return.
    pub fn dead_lettered(&self, done: &[(u32, u64)], now_ms: u64) -> Result<(), LogError> {
        {
            let mut inner = lock(&self.inner);
            self.check_live(&inner)?;
            let mut ops = Vec::new();
            for &(p, offset) in done {
                let dying = inner
                    .parts
                    .get(p as usize)
                    .and_then(|part| part.entries.get(&offset))
                    .is_some_and(|e| e.state == State::Dying);
                if dying {
                    self.finish(&mut inner, p, offset, now_ms);
                    inner.dead_lettered += 1;
                    push_op(&mut ops, OP_DEAD, p, offset, 0);
                }
            }
            if !ops.is_empty() {
                self.journal.append(&[(now_ms, &ops)])?;
            }
        }
        self.sync()
    }

    /// The earliest time something becomes due (a lease expiry or a delay), if any.
    pub fn next_due_ms(&self) -> Option<u64> {
        let inner = lock(&self.inner);
        let a = inner.leases.first().map(|l| l.0);
        let b = inner.delayed.first().map(|d| d.0);
        a.into_iter().chain(b).min()
    }

    /// Whether `receive` would hand something out now without reading the log.
    pub fn has_ready(&self) -> bool {
        !lock(&self.inner).ready.is_empty()
    }

    pub fn stats(&self, now_ms: u64) -> GroupStats {
        let mut inner = lock(&self.inner);
        self.promote(&mut inner, now_ms);
        let mut depth = 0u64;
        let mut oldest: Option<u64> = None;
        for (part, log) in inner.parts.iter().zip(&self.logs) {
            let end = log.durable_end();
            let beyond = end.saturating_sub(part.scan);
            depth += part.entries.len() as u64 + beyond.saturating_sub(part.done_between(end));
            if let Some((_, e)) = part.entries.first_key_value() {
                let ts = e.record.timestamp_ms;
                oldest = Some(oldest.map_or(ts, |o| o.min(ts)));
            } else if beyond > 0
                && let Ok(r) = log.read(part.scan, 1, 1)
                && let Some(r) = r.first()
            {
                oldest = Some(oldest.map_or(r.timestamp_ms, |o| o.min(r.timestamp_ms)));
            }
        }
        GroupStats {
            depth,
            in_flight: inner.leases.len() as u64,
            delayed: inner.delayed.len() as u64,
            oldest_age_ms: oldest.map(|ts| now_ms.saturating_sub(ts)),
            dead_lettered: inner.dead_lettered,
            memory_bytes: inner.held as u64,
        }
    }

    /// Per partition, the offset below which every message is durably finished.
    pub fn consumed(&self) -> Vec<u64> {
        lock(&self.durable_low).clone()
    }

    /// fsyncs the journal (shared by concurrent callers), then writes a snapshot when enough
    /// operations piled up.
    fn sync(&self) -> Result<(), LogError> {
        let target = self.journal.end();
        let _g = lock(&self.sync_lock);
        if self.journal.durable_end() >= target {
            return Ok(());
        }
        let (lows, at) = {
            let mut inner = lock(&self.inner);
            // Its files may be gone; what was acked before the deletion no longer matters.
            self.check_live(&inner)?;
            let lows: Vec<u64> = inner.parts.iter().map(Part::low).collect();
            // Appended under the lock, so no operation lands between what the snapshot
            // saw and where it is in the journal.
            let mut at = None;
            if inner.ops_since_snapshot >= self.opts.snapshot_every {
                inner.ops_since_snapshot = 0;
                let bytes = self.snapshot(&inner);
                // Stamped with the last activity, so that it survives the segments the
                // snapshot replaces (idle expiry after a restart reads it).
                let stamp = self.last_active.load(Ordering::Relaxed);
                at = Some(self.journal.append(&[(stamp, &bytes)])?.start);
            }
            (lows, at)
        };
        self.journal.sync()?;
        *lock(&self.durable_low) = lows;
        if let Some(at) = at {
            // Everything before the snapshot is in it.
            self.journal.enforce_retention(0, None, Some(at))?;
        }
        Ok(())
    }

    fn snapshot(&self, inner: &Inner) -> Vec<u8> {
        let parts = inner
            .parts
            .iter()
            .map(|part| {
                let low = part.low();
                let done = part.done_ranges();
                let mut counts: Vec<(u64, u32)> = part
                    .entries
                    .iter()
                    .filter(|(_, e)| e.deliveries > 0)
                    .map(|(o, e)| (*o, e.deliveries))
                    .collect();
                counts.extend(part.counts.iter().map(|(o, c)| (*o, *c)));
                let mut nacked: Vec<(u64, u64)> = part
                    .entries
                    .iter()
                    .filter(|(_, e)| e.nacked_until > 0)
                    .map(|(o, e)| (*o, e.nacked_until))
                    .collect();
                nacked.extend(part.nacked.iter().map(|(o, t)| (*o, *t)));
                PartSnapshot {
                    low,
                    done,
                    counts,
                    nacked,
                }
            })
            .collect();
        let mut out = vec![REC_SNAPSHOT];
        serde_json::to_writer(
            &mut out,
            &Snapshot {
                parts,
                dead_lettered: inner.dead_lettered,
            },
        )
        .expect("snapshot serializes");
        out
    }

    /// The state of the delivery `r` names, if it is still the message's current one.
    fn current(inner: &Inner, r: &Receipt) -> Option<State> {
        let e = inner
            .parts
            .get(r.partition as usize)?
            .entries
            .get(&r.offset)?;
        (e.deliveries == r.delivery).then_some(e.state)
    }

    /// Expired leases go back (or die); due delays become ready.
    fn promote(&self, inner: &mut Inner, now_ms: u64) {
        while let Some(&(deadline, p, offset)) = inner.leases.first() {
            if deadline > now_ms {
                break;
            }
            inner.leases.pop_first();
            let used = inner.parts[p as usize].entries[&offset].deliveries;
            self.retry_or_die(
                inner,
                p,
                offset,
                now_ms,
                format!("lease expired {used} times (max_deliveries)"),
            );
        }
        while let Some(&(at, p, offset)) = inner.delayed.first() {
            if at > now_ms {
                break;
            }
            inner.delayed.pop_first();
            let e = inner.parts[p as usize]
                .entries
                .get_mut(&offset)
                .expect("delayed entry");
            e.state = State::Ready;
            let k = (Reverse(e.priority), e.record.timestamp_ms, p, offset);
            inner.ready.insert(k);
        }
    }

    /// After a failed delivery: hand it out again, or mark it for dead-lettering.
    fn retry_or_die(&self, inner: &mut Inner, p: u32, offset: u64, now_ms: u64, reason: String) {
        let e = inner.parts[p as usize]
            .entries
            .get_mut(&offset)
            .expect("entry");
        if e.deliveries >= self.opts.max_deliveries {
            e.state = State::Dying;
            inner.dying.push((p, offset, reason));
        } else {
            Self::release(inner, p, offset, now_ms);
        }
    }

    /// Makes the head of its key available: ready, or delayed until its time.
    fn release(inner: &mut Inner, p: u32, offset: u64, now_ms: u64) {
        let e = inner.parts[p as usize]
            .entries
            .get_mut(&offset)
            .expect("entry");
        if e.not_before > now_ms {
            e.state = State::Delayed;
            inner.delayed.insert((e.not_before, p, offset));
        } else {
            e.state = State::Ready;
            let k = (Reverse(e.priority), e.record.timestamp_ms, p, offset);
            inner.ready.insert(k);
        }
    }

    /// Removes a finished message and lets the next one of its key go.
    fn finish(&self, inner: &mut Inner, p: u32, offset: u64, now_ms: u64) {
        let part = &mut inner.parts[p as usize];
        let e = part.entries.remove(&offset).expect("entry");
        part.bytes -= e.record.payload.len();
        let cost = entry_cost(&e.record);
        inner.held -= cost;
        self.opts.budget.give_back(cost);
        match e.state {
            State::Leased { deadline } => {
                inner.leases.remove(&(deadline, p, offset));
            }
            State::Ready => {
                inner
                    .ready
                    .remove(&(Reverse(e.priority), e.record.timestamp_ms, p, offset));
            }
            State::Delayed => {
                inner.delayed.remove(&(e.not_before, p, offset));
            }
            State::Blocked | State::Dying => {}
        }
        let Some(k) = e.key else { return };
        let part = &mut inner.parts[p as usize];
        let queue = part.keys.get_mut(&k).expect("key of a loaded entry");
        let was_head = queue.front() == Some(&offset);
        queue.retain(|o| *o != offset);
        let next = queue.front().copied();
        if queue.is_empty() {
            part.keys.remove(&k);
        }
        if was_head
            && let Some(next) = next
            && part.entries[&next].state == State::Blocked
        {
            Self::release(inner, p, next, now_ms);
        }
    }

    /// Loads messages from the log into each partition's window.
    fn fill(&self, inner: &mut Inner, now_ms: u64) -> Result<(), LogError> {
        for (p, log) in self.logs.iter().enumerate() {
            let p32 = p as u32;
            'part: loop {
                let part = &mut inner.parts[p];
                part.skip_done();
                let start = log.start_offset();
                if part.scan < start {
                    // The age limit (`retention`) deleted messages this group never loaded.
                    let lost = (start - part.scan).saturating_sub(part.done_between(start));
                    tracing::warn!(group = %self.name, partition = p, lost,
                        "retention deleted messages this group had not finished");
                    part.scan = start;
                    part.skip_done();
                }
                let room = self.opts.lookahead.saturating_sub(part.entries.len());
                if room == 0
                    || part.bytes >= self.opts.window_bytes
                    || part.scan >= log.durable_end()
                {
                    break;
                }
                // Past the shared budget a partition still loads its one message, so the
                // group makes progress; it loads no more until memory is given back.
                let spare = self.opts.budget.available();
                if spare == 0 && !part.entries.is_empty() {
                    break;
                }
                let records = log.read(part.scan, room.min(512), spare.clamp(1, 4 << 20))?;
                if records.is_empty() {
                    break;
                }
                for r in records {
                    let offset = r.offset;
                    let part = &mut inner.parts[p];
                    if part.done_end(offset).is_some() {
                        part.scan = offset + 1;
                        continue;
                    }
                    let cost = entry_cost(&r);
                    if !self.opts.budget.try_take(cost) {
                        if !part.entries.is_empty() {
                            // `scan` stays here: this message is loaded once memory is free.
                            break 'part;
                        }
                        self.opts.budget.take(cost);
                    }
                    part.scan = offset + 1;
                    inner.held += cost;
                    let part = &mut inner.parts[p];
                    let meta = (self.classify)(&r);
                    let deliveries = part.counts.remove(&offset).unwrap_or(0);
                    let nacked_until = part.nacked.remove(&offset).unwrap_or(0);
                    part.bytes += r.payload.len();
                    let mut head = true;
                    if let Some(k) = meta.key {
                        let q = part.keys.entry(k).or_default();
                        head = q.is_empty();
                        q.push_back(offset);
                    }
                    part.entries.insert(
                        offset,
                        Entry {
                            record: Arc::new(r),
                            priority: meta.priority.min(9),
                            key: meta.key,
                            not_before: meta.not_before_ms.max(nacked_until),
                            deliveries,
                            nacked_until,
                            state: State::Blocked,
                        },
                    );
                    if deliveries >= self.opts.max_deliveries {
                        part.entries.get_mut(&offset).expect("inserted").state = State::Dying;
                        inner.dying.push((
                            p32,
                            offset,
                            format!("delivered {deliveries} times (max_deliveries)"),
                        ));
                    } else if head {
                        Self::release(inner, p32, offset, now_ms);
                    }
                }
            }
            inner.parts[p].skip_done();
        }
        Ok(())
    }
}
