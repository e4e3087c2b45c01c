//! One partition: a directory of segment files, each named by the offset of its first record.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tracing::{debug, error, warn};

use crate::error::LogError;
use crate::format::{
    INDEX_INTERVAL_BYTES, MAX_PAYLOAD_BYTES, SegmentReader, Step, encode_record, encoded_len,
    parse_segment_file_name, scan_segment, segment_file_name,
};
use crate::storage::{Storage, StorageFile};
use crate::{lock, read_lock, write_lock};

/// A record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    pub timestamp_ms: u64,
    pub payload: Vec<u8>,
}

/// Tuning of a partition.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// A new segment is started when an append would grow the active segment past this many
    /// bytes (a single append larger than this gets a segment of its own). Default 64 MiB.
    pub segment_bytes: u64,
    /// Zeros written ahead of the active segment's end, at most this many bytes at a
    /// time (0: none). Appends then overwrite bytes the file already has, so the
    /// fdatasync of a group commit flushes data only: the file's size, and with it its
    /// inode, changes only when an append reaches the end of the zeros. The first
    /// stretch of a segment is 64 KiB, each later one twice the last, up to this.
    /// Only while the syncs are small (64 KiB of records or less per sync, on a moving
    /// average): a log that syncs more at a time writes each byte once. Default 1 MiB.
    pub zero_ahead_bytes: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            zero_ahead_bytes: 1 << 20,
        }
    }
}

/// The first stretch of zeros written ahead of a new or reopened segment's end.
const FIRST_ZERO_AHEAD: u64 = 64 << 10;

impl LogOptions {
    /// The first stretch of zeros ahead of a segment's end (0 when there are none).
    fn first_zero_ahead(&self) -> u64 {
        FIRST_ZERO_AHEAD.min(self.zero_ahead_bytes)
    }
}

/// Zeros are written ahead only while the syncs are small: at most this many bytes of
/// records per sync, on a moving average over the log's last syncs (each weighs 1/8). A
/// sync's inode write costs about as much as writing some tens of KiB more; a log whose
/// syncs carry more than this would pay more for writing every byte twice (zeros, then
/// records) than it saves.
const ZERO_AHEAD_MAX_SYNC_BYTES: u64 = 64 << 10;

/// Zeros are written from this buffer, one piece at a time.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

struct Segment {
    base: u64,
    path: PathBuf,
    file: Arc<dyn StorageFile>,
    /// Bytes readers may look at: everything up to the last successful sync.
    readable_len: AtomicU64,
    /// Bytes in the file, synced or not.
    size: AtomicU64,
    /// Sparse index: (offset, byte position), first entry is always (base, 0).
    index: RwLock<Vec<(u64, u64)>>,
    max_timestamp_ms: AtomicU64,
}

impl Segment {
    /// The indexed (offset, position) closest at or before `offset`.
    fn lookup(&self, offset: u64) -> (u64, u64) {
        let index = read_lock(&self.index);
        let i = index.partition_point(|(o, _)| *o <= offset);
        index[i.saturating_sub(1)]
    }
}

/// State only the single writer touches.
struct Writer {
    buf: Vec<u8>,
    /// Bytes written to the active segment.
    active_size: u64,
    /// Position of the last sparse-index entry of the active segment.
    last_indexed: u64,
    /// Length of the active segment's file: `active_size` plus the zeros written ahead.
    file_len: u64,
    /// The next stretch of zeros to write ahead.
    zero_chunk: u64,
    /// Writing zeros ahead failed in the active segment (a full disk): appends go on
    /// without until the next segment.
    zero_ahead_failed: bool,
    /// Bytes of records appended since the last sync.
    unsynced_bytes: u64,
    /// Moving average of the bytes of records per sync (`None` until the first sync
    /// since the log was opened): what decides whether zeros ahead are worth writing.
    sync_bytes: Option<u64>,
    /// Bytes were written since the last sync.
    unsynced: bool,
    /// A segment file was created since the last directory sync.
    dir_dirty: bool,
}

/// One partition: segmented append-only files.
///
/// `Send + Sync`, shared as `Arc<PartitionLog>`. One writer at a time (an internal mutex
/// serialises `append`, `sync`, `truncate_unsynced` and `enforce_retention`); readers take no
/// writer lock, so they are never blocked by an fsync in progress. Readers only see records
/// below [`PartitionLog::durable_end`].
///
/// Invariant: a segment is sealed (a newer one is created) only after its data and directory
/// entry were synced, so everything before the active segment is durable and a damaged sealed
/// segment always means real corruption, never a torn write.
pub struct PartitionLog {
    storage: Arc<dyn Storage>,
    dir: PathBuf,
    opts: LogOptions,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Arc<Segment>>>,
    end: AtomicU64,
    durable_end: AtomicU64,
    poison: OnceLock<String>,
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.dir)
            .field("start", &self.start_offset())
            .field("durable_end", &self.durable_end())
            .field("end", &self.end())
            .finish()
    }
}

impl PartitionLog {
    /// Opens (creating if needed) the partition in `dir` and recovers it: every segment is
    /// scanned and CRC-checked to rebuild the sparse index; a torn or corrupt tail of the last
    /// segment is truncated (logged with the byte count) and what remains is synced, so after
    /// `open` everything in the log is durable. Corruption inside a sealed segment is logged and
    /// kept: reading it returns [`LogError::Corrupt`].
    pub fn open(storage: Arc<dyn Storage>, dir: &Path, opts: LogOptions) -> Result<Self, LogError> {
        if opts.segment_bytes == 0 {
            return Err(LogError::InvalidArgument {
                path: dir.to_path_buf(),
                reason: "segment_bytes must be greater than 0".into(),
            });
        }
        storage
            .create_dir_all(dir)
            .map_err(|e| LogError::io(dir, e))?;
        let mut bases: Vec<u64> = storage
            .list_files(dir)
            .map_err(|e| LogError::io(dir, e))?
            .iter()
            .filter_map(|n| parse_segment_file_name(n))
            .collect();
        bases.sort_unstable();

        let mut segments = Vec::with_capacity(bases.len().max(1));
        let mut end = 0;
        let mut active_size = 0;
        let mut last_indexed = 0;
        let mut file_len = 0;
        if bases.is_empty() {
            let path = dir.join(segment_file_name(0));
            let file = storage
                .open(&path, true)
                .map_err(|e| LogError::write(&path, e))?;
            storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
            segments.push(Arc::new(Segment {
                base: 0,
                path,
                file,
                readable_len: AtomicU64::new(0),
                size: AtomicU64::new(0),
                index: RwLock::new(vec![(0, 0)]),
                max_timestamp_ms: AtomicU64::new(0),
            }));
        } else {
            for (i, &base) in bases.iter().enumerate() {
                let path = dir.join(segment_file_name(base));
                let file = storage
                    .open(&path, false)
                    .map_err(|e| LogError::io(&path, e))?;
                let len = file.byte_len().map_err(|e| LogError::io(&path, e))?;
                let scan = scan_segment(&*file, base, len).map_err(|e| LogError::io(&path, e))?;
                // Zeros after the last record, no more than the log writes ahead, are the
                // zeros an append had not reached yet (see `LogOptions::zero_ahead_bytes`),
                // not damage. Anything else after it is treated as before: a torn tail.
                let zero_tail = scan.valid_len < len
                    && len - scan.valid_len <= opts.zero_ahead_bytes
                    && zeros_from(&*file, scan.valid_len, len);
                let size = if let Some(&next_base) = bases.get(i + 1) {
                    if zero_tail && scan.next_offset == next_base {
                        debug!(path = %path.display(), zero_bytes = len - scan.valid_len,
                            "sealed segment ends in zeros (its roll was cut short); reading stops before them");
                        scan.valid_len
                    } else {
                        if let Some(reason) = &scan.bad {
                            warn!(path = %path.display(), offset = scan.next_offset, %reason,
                                "sealed segment is corrupt; reading from that offset will fail until the segment is restored or removed");
                        } else if scan.next_offset != next_base {
                            warn!(path = %path.display(), offset = scan.next_offset, next_base,
                                "sealed segment ends before the next segment starts; reading from that offset will fail");
                        }
                        len
                    }
                } else {
                    if zero_tail {
                        file_len = len;
                    } else {
                        if scan.valid_len < len {
                            warn!(path = %path.display(), dropped_bytes = len - scan.valid_len,
                                offset = scan.next_offset, reason = scan.bad.as_deref().unwrap_or(""),
                                "truncating torn or corrupt tail of the last segment");
                            file.set_len(scan.valid_len)
                                .map_err(|e| LogError::io(&path, e))?;
                        }
                        file_len = scan.valid_len;
                    }
                    // A crashed process may have left unsynced bytes in the page cache: make
                    // everything that is now in the log durable before anyone reads it.
                    file.sync_data().map_err(|e| LogError::io(&path, e))?;
                    end = scan.next_offset;
                    active_size = scan.valid_len;
                    last_indexed = scan.index.last().map_or(0, |e| e.1);
                    scan.valid_len
                };
                segments.push(Arc::new(Segment {
                    base,
                    path,
                    file,
                    readable_len: AtomicU64::new(size),
                    size: AtomicU64::new(size),
                    index: RwLock::new(scan.index),
                    max_timestamp_ms: AtomicU64::new(scan.max_timestamp_ms),
                }));
            }
            storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
        }
        let zero_chunk = opts.first_zero_ahead();
        Ok(PartitionLog {
            storage,
            dir: dir.to_path_buf(),
            opts,
            writer: Mutex::new(Writer {
                buf: Vec::new(),
                active_size,
                last_indexed,
                file_len,
                zero_chunk,
                zero_ahead_failed: false,
                unsynced_bytes: 0,
                sync_bytes: None,
                unsynced: false,
                dir_dirty: false,
            }),
            segments: RwLock::new(segments),
            end: AtomicU64::new(end),
            durable_end: AtomicU64::new(end),
            poison: OnceLock::new(),
        })
    }

    /// The partition's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Buffered append (one write syscall, not synced). Records get contiguous offsets, returned
    /// as a range. All records of one call are written or none: on error the partition is
    /// truncated back. A full disk returns [`LogError::NoSpace`] and the log stays usable; after
    /// an fsync failure every call returns [`LogError::Poisoned`].
    pub fn append(&self, records: &[(u64, &[u8])]) -> Result<Range<u64>, LogError> {
        let mut w = lock(&self.writer);
        self.check_poison()?;
        let start = self.end.load(Ordering::Acquire);
        if records.is_empty() {
            return Ok(start..start);
        }
        if let Some((_, p)) = records.iter().find(|(_, p)| p.len() > MAX_PAYLOAD_BYTES) {
            return Err(LogError::RecordTooLarge {
                path: self.dir.clone(),
                size: p.len(),
                max: MAX_PAYLOAD_BYTES,
            });
        }
        let batch_len: u64 = records.iter().map(|(_, p)| encoded_len(p.len())).sum();
        if w.active_size > 0 && w.active_size + batch_len > self.opts.segment_bytes {
            self.roll(&mut w, start)?;
        }
        let seg = self.active();
        let pos = w.active_size;
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        buf.reserve(batch_len as usize);
        let mut new_index = Vec::new();
        let mut last_indexed = w.last_indexed;
        let mut max_ts = 0;
        for (i, (ts, payload)) in records.iter().enumerate() {
            let rec_pos = pos + buf.len() as u64;
            let offset = start + i as u64;
            if rec_pos - last_indexed >= INDEX_INTERVAL_BYTES {
                new_index.push((offset, rec_pos));
                last_indexed = rec_pos;
            }
            encode_record(&mut buf, offset, *ts, payload);
            max_ts = max_ts.max(*ts);
        }
        let written = seg.file.write_all_at(&buf, pos);
        if buf.capacity() > 8 << 20 {
            buf = Vec::new();
        }
        w.buf = buf;
        if let Err(e) = written {
            let err = LogError::write(&seg.path, e);
            // The zeros ahead go too: whatever of the failed write reached the file must
            // not be there to be read back after a crash.
            if let Err(te) = seg.file.set_len(pos) {
                return Err(self.poison_with(
                    &seg.path,
                    "truncating back after a failed write",
                    te,
                ));
            }
            w.file_len = pos;
            return Err(err);
        }
        write_lock(&seg.index).extend(new_index);
        seg.max_timestamp_ms.fetch_max(max_ts, Ordering::Relaxed);
        w.active_size = pos + batch_len;
        w.last_indexed = last_indexed;
        w.unsynced = true;
        w.unsynced_bytes += batch_len;
        if w.active_size > w.file_len {
            // This write grew the file, so this sync writes the inode anyway: the zeros
            // for the next appends go with it.
            w.file_len = w.active_size;
            self.zero_ahead(&mut w, &seg);
        }
        seg.size.store(w.active_size, Ordering::Release);
        let end = start + records.len() as u64;
        self.end.store(end, Ordering::Release);
        Ok(start..end)
    }

    /// fdatasyncs the active segment (and the directory if segments were created) and returns
    /// the durable end offset. Without unsynced writes it returns at once. On failure the log
    /// is poisoned: this and every later write returns [`LogError::Poisoned`] until reopen.
    pub fn sync(&self) -> Result<u64, LogError> {
        let mut w = lock(&self.writer);
        self.sync_locked(&mut w)
    }

    fn sync_locked(&self, w: &mut Writer) -> Result<u64, LogError> {
        self.check_poison()?;
        if !w.unsynced && !w.dir_dirty {
            return Ok(self.durable_end.load(Ordering::Acquire));
        }
        let seg = self.active();
        if w.unsynced {
            seg.file
                .sync_data()
                .map_err(|e| self.poison_with(&seg.path, "fdatasync", e))?;
            let bytes = std::mem::take(&mut w.unsynced_bytes);
            if bytes > 0 {
                w.sync_bytes = Some(match w.sync_bytes {
                    None => bytes,
                    Some(avg) => avg - avg / 8 + bytes / 8,
                });
            }
        }
        if w.dir_dirty {
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| self.poison_with(&self.dir, "fsync of the directory", e))?;
        }
        w.unsynced = false;
        w.dir_dirty = false;
        // Publish the bytes first, then the offset: a reader loads the offset first.
        seg.readable_len.store(w.active_size, Ordering::Release);
        let end = self.end.load(Ordering::Acquire);
        self.durable_end.store(end, Ordering::Release);
        Ok(end)
    }

    /// Writes zeros after the active segment's end (see [`LogOptions::zero_ahead_bytes`])
    /// while the log's syncs are small (`ZERO_AHEAD_MAX_SYNC_BYTES`; before its first
    /// sync a log counts as small: a first stretch is 64 KiB).
    /// A failure (a full disk) is not the append's: what was written is cut back and
    /// appends go on without zeros ahead until the next segment.
    fn zero_ahead(&self, w: &mut Writer, seg: &Segment) {
        if w.sync_bytes
            .is_some_and(|avg| avg > ZERO_AHEAD_MAX_SYNC_BYTES)
        {
            // Start small again if the syncs become small.
            w.zero_chunk = self.opts.first_zero_ahead();
            return;
        }
        if w.zero_chunk == 0 || w.zero_ahead_failed {
            return;
        }
        let from = w.file_len;
        let to = from
            .saturating_add(w.zero_chunk)
            .min(self.opts.segment_bytes.max(from));
        let mut at = from;
        while at < to {
            let n = (to - at).min(ZEROS.len() as u64);
            if let Err(e) = seg.file.write_all_at(&ZEROS[..n as usize], at) {
                warn!(path = %seg.path.display(), error = %e,
                    "cannot write zeros ahead of the log's end; appends go on without (each sync also writes the file's size) until the next segment");
                w.zero_ahead_failed = true;
                // Zeros past the end are harmless; cutting them only gives the space back.
                if let Err(e) = seg.file.set_len(from) {
                    debug!(path = %seg.path.display(), error = %e, "cannot cut the zeros back");
                    w.file_len = at;
                }
                return;
            }
            at += n;
        }
        w.file_len = to;
        w.zero_chunk = w
            .zero_chunk
            .saturating_mul(2)
            .min(self.opts.zero_ahead_bytes);
    }

    /// Seals the active segment (sync) and starts a new one at `base`.
    fn roll(&self, w: &mut Writer, base: u64) -> Result<(), LogError> {
        if w.file_len > w.active_size {
            // A sealed segment ends at its last record.
            let seg = self.active();
            seg.file
                .set_len(w.active_size)
                .map_err(|e| LogError::write(&seg.path, e))?;
            w.file_len = w.active_size;
            w.unsynced = true;
        }
        self.sync_locked(w)?;
        let path = self.dir.join(segment_file_name(base));
        let file = self
            .storage
            .open(&path, true)
            .map_err(|e| LogError::write(&path, e))?;
        // Only a leftover of an aborted earlier roll can exist under this name: it holds no
        // record of the log (its offsets start at the current end).
        file.set_len(0).map_err(|e| LogError::write(&path, e))?;
        write_lock(&self.segments).push(Arc::new(Segment {
            base,
            path,
            file,
            readable_len: AtomicU64::new(0),
            size: AtomicU64::new(0),
            index: RwLock::new(vec![(base, 0)]),
            max_timestamp_ms: AtomicU64::new(0),
        }));
        w.active_size = 0;
        w.last_indexed = 0;
        w.file_len = 0;
        w.zero_chunk = self.opts.first_zero_ahead();
        w.zero_ahead_failed = false;
        w.dir_dirty = true;
        Ok(())
    }

    /// Throws away appended-but-unsynced records at or after `end` (to undo a half-done
    /// multi-partition submission). A no-op if `end >= self.end()`; an error if `end` is below
    /// [`PartitionLog::durable_end`] (synced records are never removed).
    pub fn truncate_unsynced(&self, end: u64) -> Result<(), LogError> {
        let mut w = lock(&self.writer);
        self.check_poison()?;
        let current = self.end.load(Ordering::Acquire);
        if end >= current {
            return Ok(());
        }
        let durable = self.durable_end.load(Ordering::Acquire);
        if end < durable {
            return Err(LogError::InvalidArgument {
                path: self.dir.clone(),
                reason: format!(
                    "cannot truncate to offset {end}: records below {durable} are already synced"
                ),
            });
        }
        let seg = self.active();
        // Everything before the active segment is durable (see the type's invariant).
        debug_assert!(end >= seg.base);
        let (mut off, mut pos) = seg.lookup(end);
        let mut reader = SegmentReader::new(&*seg.file, w.active_size, 64 << 10);
        while off < end {
            match reader.step(pos, off) {
                Ok(Step::Record { next_pos, .. }) => {
                    off += 1;
                    pos = next_pos;
                }
                Ok(Step::End) | Ok(Step::Bad(_)) | Err(_) => {
                    // Our own unsynced bytes do not parse: the file no longer holds what we
                    // wrote, so nothing about it can be trusted any more.
                    return Err(self.poison_with(
                        &seg.path,
                        "re-reading unsynced records",
                        std::io::Error::other(format!("record {off} is unreadable")),
                    ));
                }
            }
        }
        if let Err(e) = seg.file.set_len(pos) {
            return Err(self.poison_with(&seg.path, "truncating unsynced records", e));
        }
        {
            let mut index = write_lock(&seg.index);
            index.retain(|&(o, p)| o < end || p == 0);
            w.last_indexed = index.last().map_or(0, |e| e.1);
        }
        w.unsynced_bytes = w.unsynced_bytes.saturating_sub(w.active_size - pos);
        w.active_size = pos;
        w.file_len = pos;
        w.unsynced = true;
        seg.size.store(pos, Ordering::Release);
        self.end.store(end, Ordering::Release);
        Ok(())
    }

    /// Records with offset >= `from` (or from [`PartitionLog::start_offset`] if `from` is
    /// older), only below [`PartitionLog::durable_end`], at most `max_records`, and stopping
    /// before the payloads exceed `max_bytes` (at least one record is returned if any is
    /// available). Every record's CRC is verified: a corrupt record is never returned. If
    /// records before it were collected they are returned; a read starting at it fails with
    /// [`LogError::Corrupt`] naming the file and offset.
    pub fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let mut out = Vec::new();
        self.read_each(
            from,
            max_records,
            max_bytes,
            |offset, timestamp_ms, payload| {
                out.push(Record {
                    offset,
                    timestamp_ms,
                    payload: payload.to_vec(),
                });
            },
        )?;
        Ok(out)
    }

    /// [`PartitionLog::read`] without copying: `visit` sees each record's offset,
    /// timestamp and payload (borrowed from the read buffer) in offset order, under the
    /// same rules, and the answer is how many it saw. A record that fails its checks
    /// ends the walk: `Ok` with the records before it, or [`LogError::Corrupt`] when it
    /// is the first. An I/O error is an `Err` even after records were visited: a caller
    /// that keeps what it was lent must drop it then.
    pub fn read_each(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
        mut visit: impl FnMut(u64, u64, &[u8]),
    ) -> Result<usize, LogError> {
        let durable = self.durable_end.load(Ordering::Acquire);
        let segs: Vec<Arc<Segment>> = {
            let all = read_lock(&self.segments);
            let from = from.max(all[0].base);
            let i = all.partition_point(|s| s.base <= from).saturating_sub(1);
            all[i..].to_vec()
        };
        let mut next = from.max(segs[0].base);
        let mut count = 0usize;
        if next >= durable || max_records == 0 {
            return Ok(count);
        }
        let mut bytes = 0usize;
        let chunk = max_bytes.clamp(4 << 10, 1 << 20);
        for (i, seg) in segs.iter().enumerate() {
            let limit = seg.readable_len.load(Ordering::Acquire);
            let (mut off, mut pos) = seg.lookup(next);
            let mut reader = SegmentReader::new(&*seg.file, limit, chunk);
            loop {
                if off >= durable || count >= max_records {
                    return Ok(count);
                }
                let step = reader
                    .step(pos, off)
                    .map_err(|e| LogError::io(&seg.path, e))?;
                match step {
                    Step::End => break,
                    Step::Bad(reason) => {
                        return if count == 0 {
                            Err(LogError::Corrupt {
                                path: seg.path.clone(),
                                offset: off,
                                reason,
                            })
                        } else {
                            Ok(count)
                        };
                    }
                    Step::Record {
                        offset,
                        timestamp_ms,
                        payload,
                        next_pos,
                    } => {
                        if offset >= next {
                            if count > 0 && bytes + payload.len() > max_bytes {
                                return Ok(count);
                            }
                            bytes += payload.len();
                            visit(offset, timestamp_ms, payload);
                            count += 1;
                        }
                        off += 1;
                        pos = next_pos;
                    }
                }
            }
            let Some(following) = segs.get(i + 1) else {
                return Ok(count);
            };
            if off != following.base {
                return if count == 0 {
                    Err(LogError::Corrupt {
                        path: seg.path.clone(),
                        offset: off,
                        reason: format!(
                            "segment ends at offset {off} but the next segment starts at {}",
                            following.base
                        ),
                    })
                } else {
                    Ok(count)
                };
            }
            next = next.max(off);
        }
        Ok(count)
    }

    /// The first retained offset.
    pub fn start_offset(&self) -> u64 {
        read_lock(&self.segments)[0].base
    }

    /// The offset after the last synced record; readers see everything below it.
    pub fn durable_end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// The next offset to be appended.
    pub fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// Bytes in all segment files, synced or not.
    pub fn size_bytes(&self) -> u64 {
        read_lock(&self.segments)
            .iter()
            .map(|s| s.size.load(Ordering::Acquire))
            .sum()
    }

    /// Number of segment files, the active one included.
    pub fn segment_count(&self) -> usize {
        read_lock(&self.segments).len()
    }

    /// True once an fsync failed: writes are refused until the log is reopened.
    pub fn is_poisoned(&self) -> bool {
        self.poison.get().is_some()
    }

    /// Deletes whole sealed segments (never the active one), oldest first, while each one has
    /// every record below `consumed_before` (when given) or its newest record older than
    /// `now_ms - max_age` (when given). Deletion stops at the first segment that is not
    /// eligible, so the retained offsets stay contiguous. Returns the number of segments
    /// removed. Concurrent readers of a removed segment finish their read.
    pub fn enforce_retention(
        &self,
        now_ms: u64,
        max_age: Option<Duration>,
        consumed_before: Option<u64>,
    ) -> Result<usize, LogError> {
        let _w = lock(&self.writer);
        let segs: Vec<Arc<Segment>> = read_lock(&self.segments).clone();
        let mut remove = 0;
        for pair in segs.windows(2) {
            let (seg, next) = (&pair[0], &pair[1]);
            let consumed = consumed_before.is_some_and(|c| next.base <= c);
            let expired = max_age.is_some_and(|age| {
                let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
                seg.max_timestamp_ms
                    .load(Ordering::Relaxed)
                    .saturating_add(age_ms)
                    < now_ms
            });
            if !(consumed || expired) {
                break;
            }
            remove += 1;
        }
        if remove == 0 {
            return Ok(0);
        }
        write_lock(&self.segments).drain(..remove);
        // One directory sync per removal keeps the removed set a prefix even across a power
        // loss, so recovery never sees a hole that looks like corruption.
        for seg in &segs[..remove] {
            self.storage
                .remove_file(&seg.path)
                .map_err(|e| LogError::io(&seg.path, e))?;
            self.storage
                .sync_dir(&self.dir)
                .map_err(|e| LogError::io(&self.dir, e))?;
        }
        Ok(remove)
    }

    fn active(&self) -> Arc<Segment> {
        read_lock(&self.segments)
            .last()
            .cloned()
            .expect("a partition always has an active segment")
    }

    fn check_poison(&self) -> Result<(), LogError> {
        match self.poison.get() {
            Some(reason) => Err(LogError::Poisoned {
                path: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_with(&self, path: &Path, what: &str, e: std::io::Error) -> LogError {
        let reason = format!("{what} of {} failed: {e}", path.display());
        error!(dir = %self.dir.display(), %reason, "log poisoned: refusing writes until restart");
        let reason = self.poison.get_or_init(|| reason).clone();
        LogError::Poisoned {
            path: self.dir.clone(),
            reason,
        }
    }
}

/// True if the bytes `[from, to)` of `file` can be read and are all zero. Reads 64 KiB
/// at a time and stops at the first other byte.
fn zeros_from(file: &dyn StorageFile, from: u64, to: u64) -> bool {
    let mut buf = vec![0u8; (to - from).min(64 << 10) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(buf.len() as u64) as usize;
        if file.read_exact_at(&mut buf[..n], at).is_err() || buf[..n].iter().any(|&b| b != 0) {
            return false;
        }
        at += n as u64;
    }
    true
}
