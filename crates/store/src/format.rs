//! On-disk record format (see `docs/decisions/0002-log-format.md`).
//!
//! ```text
//! [u32 payload_len][u32 crc32c][u64 offset][u64 timestamp_ms][payload]   little endian
//! ```
//! The CRC covers everything after the CRC field (offset, timestamp and payload), so a record
//! that was written at the wrong place or whose length field is damaged fails validation.

use std::io;

use crate::storage::StorageFile;

/// Bytes before the payload.
pub(crate) const HEADER_LEN: usize = 24;

/// Largest payload one record may carry (64 MiB). Larger length fields are treated as corrupt.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;

/// Segment files are named `{base_offset:020}.log`.
pub(crate) const SEGMENT_SUFFIX: &str = ".log";

/// A sparse index entry is added every this many bytes of a segment.
pub(crate) const INDEX_INTERVAL_BYTES: u64 = 4096;

pub(crate) fn segment_file_name(base: u64) -> String {
    format!("{base:020}{SEGMENT_SUFFIX}")
}

pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Appends one encoded record to `buf`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, offset: u64, timestamp_ms: u64, payload: &[u8]) {
    let start = buf.len();
    let len =
        u32::try_from(payload.len()).expect("payload length checked against MAX_PAYLOAD_BYTES");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

pub(crate) fn encoded_len(payload_len: usize) -> u64 {
    (HEADER_LEN + payload_len) as u64
}

/// Buffered positional reader over the first `limit` bytes of a segment file.
pub(crate) struct SegmentReader<'f> {
    file: &'f dyn StorageFile,
    limit: u64,
    chunk: usize,
    /// Size of the next read from the file (grows from [`FIRST_READ`] to `chunk`).
    next_read: usize,
    buf: Vec<u8>,
    buf_start: u64,
}

/// The first read of a [`SegmentReader`].
const FIRST_READ: usize = 64 << 10;

/// One step of walking a segment.
pub(crate) enum Step<'a> {
    Record {
        offset: u64,
        timestamp_ms: u64,
        payload: &'a [u8],
        next_pos: u64,
    },
    /// `pos` is exactly at the limit.
    End,
    /// The bytes at `pos` are not a valid record with the expected offset.
    Bad(String),
}

impl<'f> SegmentReader<'f> {
    pub(crate) fn new(file: &'f dyn StorageFile, limit: u64, chunk: usize) -> Self {
        SegmentReader {
            file,
            limit,
            chunk,
            next_read: 0,
            buf: Vec::new(),
            buf_start: 0,
        }
    }

    /// Bytes `[pos, pos + n)`, or None when they extend past the limit.
    fn get(&mut self, pos: u64, n: usize) -> io::Result<Option<&[u8]>> {
        let end = pos + n as u64;
        if end > self.limit {
            return Ok(None);
        }
        let buf_end = self.buf_start + self.buf.len() as u64;
        if pos < self.buf_start || end > buf_end {
            // The first read of a walk is small, each refill twice the last, up to
            // `chunk`: a caller that wants a few hundred records does not pay for
            // reading (and zeroing) a whole chunk it then throws away.
            self.next_read = if self.buf.is_empty() {
                self.chunk.min(FIRST_READ)
            } else {
                self.next_read.saturating_mul(2).min(self.chunk)
            };
            let want = (n.max(self.next_read) as u64).min(self.limit - pos) as usize;
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, pos)?;
            self.buf_start = pos;
        }
        let s = (pos - self.buf_start) as usize;
        Ok(Some(&self.buf[s..s + n]))
    }

    /// Decodes and verifies the record at `pos`, which must carry offset `expected`.
    pub(crate) fn step(&mut self, pos: u64, expected: u64) -> io::Result<Step<'_>> {
        if pos >= self.limit {
            return Ok(Step::End);
        }
        let remaining = self.limit - pos;
        let Some(h) = self.get(pos, HEADER_LEN)? else {
            return Ok(Step::Bad(format!(
                "truncated record header: only {remaining} bytes remain"
            )));
        };
        let len = u32::from_le_bytes(h[0..4].try_into().expect("4 bytes")) as usize;
        let stored_crc = u32::from_le_bytes(h[4..8].try_into().expect("4 bytes"));
        let offset = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
        let timestamp_ms = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
        if len > MAX_PAYLOAD_BYTES {
            return Ok(Step::Bad(format!(
                "length field {len} exceeds the maximum payload of {MAX_PAYLOAD_BYTES} bytes"
            )));
        }
        let total = HEADER_LEN + len;
        let Some(rec) = self.get(pos, total)? else {
            return Ok(Step::Bad(format!(
                "record of {total} bytes extends past the end of the data ({remaining} bytes remain)"
            )));
        };
        let crc = crc32c::crc32c(&rec[8..]);
        if crc != stored_crc {
            return Ok(Step::Bad(format!(
                "crc32c mismatch (stored {stored_crc:#010x}, computed {crc:#010x})"
            )));
        }
        if offset != expected {
            return Ok(Step::Bad(format!(
                "record carries offset {offset} where {expected} was expected"
            )));
        }
        Ok(Step::Record {
            offset,
            timestamp_ms,
            payload: &rec[HEADER_LEN..],
            next_pos: pos + total as u64,
        })
    }
}

/// What a full scan of a segment found.
pub(crate) struct Scan {
    pub(crate) index: Vec<(u64, u64)>,
    /// Bytes up to the end of the last valid record.
    pub(crate) valid_len: u64,
    /// Offset after the last valid record.
    pub(crate) next_offset: u64,
    pub(crate) max_timestamp_ms: u64,
    /// Why scanning stopped before the end of the file, if it did.
    pub(crate) bad: Option<String>,
}

/// Walks a whole segment from its start, verifying every record and building the sparse index.
pub(crate) fn scan_segment(file: &dyn StorageFile, base: u64, len: u64) -> io::Result<Scan> {
    let mut reader = SegmentReader::new(file, len, 1 << 20);
    let mut scan = Scan {
        index: vec![(base, 0)],
        valid_len: 0,
        next_offset: base,
        max_timestamp_ms: 0,
        bad: None,
    };
    let mut last_indexed = 0u64;
    loop {
        match reader.step(scan.valid_len, scan.next_offset)? {
            Step::End => break,
            Step::Bad(reason) => {
                scan.bad = Some(reason);
                break;
            }
            Step::Record {
                offset,
                timestamp_ms,
                next_pos,
                ..
            } => {
                if scan.valid_len - last_indexed >= INDEX_INTERVAL_BYTES {
                    scan.index.push((offset, scan.valid_len));
                    last_indexed = scan.valid_len;
                }
                scan.max_timestamp_ms = scan.max_timestamp_ms.max(timestamp_ms);
                scan.next_offset = offset + 1;
                scan.valid_len = next_pos;
            }
        }
    }
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(segment_file_name(42), "00000000000000000042.log");
        assert_eq!(
            parse_segment_file_name("00000000000000000042.log"),
            Some(42)
        );
        assert_eq!(parse_segment_file_name("42.log"), None);
        assert_eq!(parse_segment_file_name("0000000000000000004x.log"), None);
    }

    #[test]
    fn encoded_record_layout() {
        let mut buf = Vec::new();
        encode_record(&mut buf, 7, 9, b"hi");
        assert_eq!(buf.len() as u64, encoded_len(2));
        assert_eq!(&buf[0..4], &2u32.to_le_bytes());
        assert_eq!(&buf[8..16], &7u64.to_le_bytes());
        assert_eq!(&buf[16..24], &9u64.to_le_bytes());
        assert_eq!(&buf[24..], b"hi");
        assert_eq!(&buf[4..8], &crc32c::crc32c(&buf[8..]).to_le_bytes());
    }
}
