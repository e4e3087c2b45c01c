//! The crate's single error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in the log.
///
/// Transient errors ([`LogError::is_transient`]) leave the log consistent and usable: the caller
/// may retry later (for HTTP intake: answer 503 with `Retry-After`). All other errors are
/// definite for the operation that returned them.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation failed for a reason other than a full disk.
    #[error(
        "i/o error on {path}: {source}; check that the disk is healthy and the directory is writable"
    )]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The disk or quota is full (ENOSPC / EDQUOT). Nothing was half-written: the partition was
    /// truncated back to where it was before the call. Transient.
    #[error(
        "no space left writing {path}: {source}; nothing was written, free disk space or lower the queue retention, then retry"
    )]
    NoSpace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An fsync failed earlier. The kernel may have dropped the dirty pages, so data that was
    /// written but not synced may be gone even though reads could still return it; the log
    /// refuses every later write until it is reopened (restart the process).
    #[error(
        "log {path} refuses writes because an fsync failed earlier ({reason}); restart the process to recover from what is on disk"
    )]
    Poisoned { path: PathBuf, reason: String },
    /// A stored record (or metadata file) failed validation. The record is never returned.
    #[error(
        "corrupt data in {path} at offset {offset}: {reason}; the record cannot be served, restore the file from a backup or remove the segment to skip it"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// A queue was reopened with a different partition count than it was created with.
    #[error(
        "queue {path} was created with {stored} partitions but {requested} are configured; changing the count would break per-key order, configure {stored} partitions or use a new queue directory"
    )]
    PartitionCountChanged {
        path: PathBuf,
        stored: u32,
        requested: u32,
    },
    /// A single payload is larger than [`crate::MAX_PAYLOAD_BYTES`].
    #[error(
        "record of {size} bytes for {path} exceeds the maximum of {max} bytes; split the payload or send it by reference"
    )]
    RecordTooLarge {
        path: PathBuf,
        size: usize,
        max: usize,
    },
    /// An argument is outside what the operation allows (a programming error in the caller).
    #[error("invalid request to log {path}: {reason}")]
    InvalidArgument { path: PathBuf, reason: String },
    /// The component was shut down.
    #[error("the log is closed; it was shut down, reopen it to continue")]
    Closed,
    /// The work group was deleted (by request or after being idle) while the operation ran.
    #[error(
        "work group `{group}` was deleted; its leases are gone, a receive with this name starts a new group"
    )]
    GroupDeleted { group: String },
}

impl LogError {
    /// True for ENOSPC / quota errors: nothing was written and the log stays usable.
    pub fn is_no_space(&self) -> bool {
        matches!(self, LogError::NoSpace { .. })
    }

    /// True when the log refuses writes until it is reopened.
    pub fn is_poisoned(&self) -> bool {
        matches!(self, LogError::Poisoned { .. })
    }

    /// True when retrying later may succeed without operator action on the log itself.
    pub fn is_transient(&self) -> bool {
        matches!(self, LogError::NoSpace { .. })
    }

    /// A copy of this error, for reporting one failure to several waiters (`io::Error` is not
    /// `Clone`, so the I/O source is rebuilt with the same kind and message).
    pub fn duplicate(&self) -> LogError {
        fn dup_io(e: &io::Error) -> io::Error {
            io::Error::new(e.kind(), e.to_string())
        }
        match self {
            LogError::Io { path, source } => LogError::Io {
                path: path.clone(),
                source: dup_io(source),
            },
            LogError::NoSpace { path, source } => LogError::NoSpace {
                path: path.clone(),
                source: dup_io(source),
            },
            LogError::Poisoned { path, reason } => LogError::Poisoned {
                path: path.clone(),
                reason: reason.clone(),
            },
            LogError::Corrupt {
                path,
                offset,
                reason,
            } => LogError::Corrupt {
                path: path.clone(),
                offset: *offset,
                reason: reason.clone(),
            },
            LogError::PartitionCountChanged {
                path,
                stored,
                requested,
            } => LogError::PartitionCountChanged {
                path: path.clone(),
                stored: *stored,
                requested: *requested,
            },
            LogError::RecordTooLarge { path, size, max } => LogError::RecordTooLarge {
                path: path.clone(),
                size: *size,
                max: *max,
            },
            LogError::InvalidArgument { path, reason } => LogError::InvalidArgument {
                path: path.clone(),
                reason: reason.clone(),
            },
            LogError::Closed => LogError::Closed,
            LogError::GroupDeleted { group } => LogError::GroupDeleted {
                group: group.clone(),
            },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source,
        }
    }

    /// Classifies a failed write: a full disk or quota becomes [`LogError::NoSpace`].
    pub(crate) fn write(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        let path = path.into();
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                LogError::NoSpace { path, source }
            }
            _ => LogError::Io { path, source },
        }
    }
}
