//! Large transactions streamed before their commit (pgoutput protocol version 2).
//!
//! When a transaction outgrows the server's `logical_decoding_work_mem`, Postgres sends
//! its changes in blocks while it is still running, between whole smaller transactions,
//! and ends it with a Stream Commit or a Stream Abort. Nothing of it may be delivered
//! before the commit (an abort voids it; a subtransaction's abort voids that
//! subtransaction's changes), so its messages wait here: in memory up to [`MEMORY`]
//! bytes over all open transactions, then in a spill file per transaction under the
//! source's data directory. At the commit they are read back in order and go through the
//! same path as a small transaction's changes.
//!
//! A spill file holds the messages as written by the server, each framed as
//! `[u32 length][u32 subtransaction xid][message]`. Files are not synced: after a crash
//! the slot has not moved past the transaction, so the server sends it again; leftover
//! files are removed at start.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};
use tracing::{debug, warn};

use crate::setup::CdcError;

/// Bytes of streamed messages held in memory over all open transactions; beyond it the
/// largest transaction's messages move to its spill file.
pub(super) const MEMORY: usize = 16 << 20;
/// Bytes read back from a spill file at a time.
const READ_CHUNK: usize = 4 << 20;
/// The framing of one message: its length and its subtransaction's xid.
const HEADER: usize = 8;

/// The open streamed transactions of a session.
pub(super) struct Streams {
    dir: PathBuf,
    open: HashMap<u32, Streamed>,
    /// The transaction of the block being read, between Stream Start and Stream Stop.
    pub current: Option<u32>,
    /// Bytes in memory over all open transactions.
    memory: usize,
    /// Bytes written to spill files by this process.
    pub spilled_total: u64,
}

/// One open streamed transaction.
#[derive(Default)]
struct Streamed {
    /// Messages not (yet) in the spill file.
    pending: Vec<u8>,
    file: Option<SpillFile>,
    /// Subtransactions that rolled back.
    aborted: HashSet<u32>,
}

/// A spill file, removed when dropped.
struct SpillFile {
    path: PathBuf,
    file: Option<File>,
}

impl Drop for SpillFile {
    fn drop(&mut self) {
        self.file = None;
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            warn!(path = %self.path.display(), error = %e, "cannot remove a spill file");
        }
    }
}

impl Streams {
    /// Streams spilling under `dir`, which is emptied of the files of an earlier run.
    pub(super) fn new(dir: PathBuf) -> Self {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Self {
            dir,
            open: HashMap::new(),
            current: None,
            memory: 0,
            spilled_total: 0,
        }
    }

    /// A session ended: the server sends every open transaction again from its start.
    pub(super) fn clear(&mut self) {
        self.open.clear();
        self.current = None;
        self.memory = 0;
    }

    /// Transactions open, and bytes held in memory.
    pub(super) fn open(&self) -> (usize, usize) {
        (self.open.len(), self.memory)
    }

    /// A block of `xid` starts. A block that is not the transaction's first, of a
    /// transaction whose first block did not come in this session, is an error: its
    /// start is missing and delivering the rest would lose it.
    pub(super) fn start_block(&mut self, xid: u32, first_segment: bool) -> Result<(), CdcError> {
        if first_segment {
            if let Some(old) = self.open.remove(&xid) {
                // Only a server that restarted decoding could do this; start over.
                self.memory -= old.pending.len();
            }
        } else if !self.open.contains_key(&xid) {
            return Err(CdcError::Transient(format!(
                "the server continued streamed transaction {xid} whose start this session \
                 did not receive"
            )));
        }
        self.open.entry(xid).or_default();
        self.current = Some(xid);
        Ok(())
    }

    pub(super) fn stop_block(&mut self) {
        self.current = None;
    }

    /// Keeps one message of the current block; `subxid` is the (sub)transaction the
    /// message names.
    pub(super) async fn append(&mut self, subxid: u32, message: &[u8]) -> Result<(), CdcError> {
        let Some(xid) = self.current else {
            return Err(CdcError::Transient(
                "a streamed change came outside a stream block".into(),
            ));
        };
        let len = u32::try_from(message.len())
            .map_err(|_| CdcError::Transient("a streamed message over 4 GiB".into()))?;
        let txn = self.open.entry(xid).or_default();
        txn.pending.extend_from_slice(&len.to_be_bytes());
        txn.pending.extend_from_slice(&subxid.to_be_bytes());
        txn.pending.extend_from_slice(message);
        self.memory += HEADER + message.len();
        while self.memory > MEMORY {
            let Some((&largest, _)) = self.open.iter().max_by_key(|(_, t)| t.pending.len()) else {
                break;
            };
            self.spill(largest).await?;
        }
        Ok(())
    }

    /// Moves the pending messages of `xid` to its spill file.
    async fn spill(&mut self, xid: u32) -> Result<(), CdcError> {
        let dir = self.dir.clone();
        let txn = self
            .open
            .get_mut(&xid)
            .expect("spilled transaction is open");
        let pending = std::mem::take(&mut txn.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let bytes = pending.len();
        self.memory -= bytes;
        let mut spill = match txn.file.take() {
            Some(f) => f,
            None => {
                let path = dir.join(format!("txn-{xid}.spill"));
                debug!(xid, path = %path.display(), "a large transaction spills to disk");
                SpillFile { path, file: None }
            }
        };
        let path = spill.path.clone();
        let file = spill.file.take();
        let written = tokio::task::spawn_blocking(move || -> std::io::Result<(File, Vec<u8>)> {
            let mut file = match file {
                Some(f) => f,
                None => {
                    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
                    File::options()
                        .create(true)
                        .truncate(true)
                        .read(true)
                        .write(true)
                        .open(&path)?
                }
            };
            file.write_all(&pending)?;
            Ok((file, pending))
        })
        .await
        .map_err(|e| CdcError::Transient(format!("spill writer: {e}")))?;
        let (file, pending) = written.map_err(|e| {
            CdcError::Transient(format!(
                "cannot write the spill file {} of a large transaction: {e}; make room in \
                 the data directory",
                spill.path.display()
            ))
        })?;
        spill.file = Some(file);
        // Not reused: its capacity would stay allocated beyond the memory bound.
        drop(pending);
        let txn = self
            .open
            .get_mut(&xid)
            .expect("spilled transaction is open");
        txn.file = Some(spill);
        self.spilled_total += bytes as u64;
        Ok(())
    }

    /// A (sub)transaction rolled back.
    pub(super) fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(txn) = self.open.remove(&xid) {
                self.memory -= txn.pending.len();
            }
        } else if let Some(txn) = self.open.get_mut(&xid) {
            txn.aborted.insert(subxid);
        }
        if self.current == Some(xid) && xid == subxid {
            self.current = None;
        }
    }

    /// The transaction committed: its messages, to be read back in order. `None` when
    /// none of its blocks came in this session.
    pub(super) fn commit(&mut self, xid: u32) -> Option<Replay> {
        let txn = self.open.remove(&xid)?;
        self.memory -= txn.pending.len();
        if self.current == Some(xid) {
            self.current = None;
        }
        Some(Replay {
            file: txn.file,
            started: false,
            eof: false,
            buf: BytesMut::new(),
            tail: Bytes::from(txn.pending),
            aborted: txn.aborted,
        })
    }
}

/// The messages of a committed streamed transaction, spill file first, then memory.
pub(super) struct Replay {
    file: Option<SpillFile>,
    started: bool,
    eof: bool,
    buf: BytesMut,
    tail: Bytes,
    aborted: HashSet<u32>,
}

impl Replay {
    /// Whether `subxid`'s changes were rolled back.
    pub(super) fn aborted(&self, subxid: u32) -> bool {
        self.aborted.contains(&subxid)
    }

    /// The next message and its (sub)transaction.
    pub(super) async fn next(&mut self) -> Result<Option<(u32, Bytes)>, CdcError> {
        while self.file.is_some() {
            if let Some(record) = split_record(&mut self.buf)? {
                return Ok(Some(record));
            }
            if self.eof {
                if !self.buf.is_empty() {
                    return Err(CdcError::Transient(
                        "a spill file ended inside a message".into(),
                    ));
                }
                self.file = None;
                break;
            }
            self.read_more().await?;
        }
        if self.tail.is_empty() {
            return Ok(None);
        }
        if self.tail.len() < HEADER {
            return Err(CdcError::Transient(
                "a streamed transaction's buffer ended inside a message".into(),
            ));
        }
        let len =
            u32::from_be_bytes([self.tail[0], self.tail[1], self.tail[2], self.tail[3]]) as usize;
        if self.tail.len() < HEADER + len {
            return Err(CdcError::Transient(
                "a streamed transaction's buffer ended inside a message".into(),
            ));
        }
        let mut record = self.tail.split_to(HEADER + len);
        record.advance(4);
        let subxid = record.get_u32();
        Ok(Some((subxid, record)))
    }

    async fn read_more(&mut self) -> Result<(), CdcError> {
        let spill = self.file.as_mut().expect("reading a spill file");
        let path = spill.path.clone();
        let file = spill.file.take();
        let rewind = !self.started;
        self.started = true;
        let read = tokio::task::spawn_blocking(move || -> std::io::Result<(File, Vec<u8>)> {
            use std::io::Seek;
            let mut file = match file {
                Some(f) => f,
                None => File::open(&path)?,
            };
            if rewind {
                file.rewind()?;
            }
            let mut chunk = Vec::with_capacity(READ_CHUNK);
            (&mut file)
                .take(READ_CHUNK as u64)
                .read_to_end(&mut chunk)?;
            Ok((file, chunk))
        })
        .await
        .map_err(|e| CdcError::Transient(format!("spill reader: {e}")))?
        .map_err(|e| {
            CdcError::Transient(format!(
                "cannot read the spill file {}: {e}",
                spill.path.display()
            ))
        })?;
        let (file, chunk) = read;
        spill.file = Some(file);
        if chunk.is_empty() {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk);
        Ok(())
    }
}

/// One framed message off the front of `buf`, when it is all there.
fn split_record(buf: &mut BytesMut) -> Result<Option<(u32, Bytes)>, CdcError> {
    if buf.len() < HEADER {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if buf.len() < HEADER + len {
        return Ok(None);
    }
    let mut record = buf.split_to(HEADER + len);
    record.advance(4);
    let subxid = record.get_u32();
    Ok(Some((subxid, record.freeze())))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn drain(replay: &mut Replay) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((x, m)) = replay.next().await.unwrap() {
            out.push((x, m.to_vec()));
        }
        out
    }

    #[tokio::test]
    async fn messages_come_back_in_order_across_memory_and_spill_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut streams = Streams::new(dir.path().join("spill"));
        // Two transactions take turns; the first outgrows memory.
        let big = vec![7u8; 1 << 20];
        let mut expected = Vec::new();
        for block in 0..20u32 {
            streams.start_block(100, block == 0).unwrap();
            for i in 0..2u32 {
                let mut m = big.clone();
                m[..4].copy_from_slice(&(block * 2 + i).to_be_bytes());
                streams.append(100 + i, &m).await.unwrap();
                expected.push((100 + i, m));
            }
            streams.stop_block();
            streams.start_block(200, block == 0).unwrap();
            streams.append(200, b"small").await.unwrap();
            streams.stop_block();
        }
        assert!(streams.spilled_total > 0, "memory is bounded");
        let (open, memory) = streams.open();
        assert_eq!(open, 2);
        assert!(memory <= MEMORY);
        assert!(dir.path().join("spill/txn-100.spill").exists());
        let mut replay = streams.commit(100).unwrap();
        assert_eq!(drain(&mut replay).await, expected);
        drop(replay);
        assert!(
            !dir.path().join("spill/txn-100.spill").exists(),
            "the file goes with its transaction"
        );
        let mut replay = streams.commit(200).unwrap();
        assert_eq!(drain(&mut replay).await.len(), 20);
        assert_eq!(streams.open(), (0, 0));
    }

    #[tokio::test]
    async fn aborts_void_a_transaction_or_only_a_subtransaction() {
        let dir = tempfile::tempdir().unwrap();
        let mut streams = Streams::new(dir.path().to_path_buf());
        streams.start_block(5, true).unwrap();
        streams.append(5, b"a").await.unwrap();
        streams.append(6, b"b").await.unwrap();
        streams.stop_block();
        streams.abort(5, 6);
        let replay = streams.commit(5).unwrap();
        assert!(replay.aborted(6));
        assert!(!replay.aborted(5));

        streams.start_block(9, true).unwrap();
        streams.append(9, b"x").await.unwrap();
        streams.stop_block();
        streams.abort(9, 9);
        assert!(streams.commit(9).is_none());
        assert_eq!(streams.open(), (0, 0));
    }

    #[test]
    fn a_block_of_a_transaction_whose_start_was_not_seen_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut streams = Streams::new(dir.path().to_path_buf());
        assert!(streams.start_block(3, false).is_err());
        streams.start_block(3, true).unwrap();
        streams.stop_block();
        streams.start_block(3, false).unwrap();
    }

    #[test]
    fn leftover_spill_files_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("txn-1.spill"), b"old").unwrap();
        let _streams = Streams::new(dir.path().to_path_buf());
        assert!(!dir.path().join("txn-1.spill").exists());
    }
}
