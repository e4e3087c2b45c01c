//! switchyard-store: the durable log under every internal queue and HTTP intake.
//!
//! * [`PartitionLog`]: one partition, segmented append-only files with a CRC per record
//!   (format: `docs/decisions/0002-log-format.md`), recovery on open, sparse index, retention.
//! * [`Queue`]: N partitions plus a metadata file pinning the partition count.
//! * [`GroupCommitter`]: one thread per queue that appends pending submissions and fsyncs each
//!   touched partition once before acknowledging them.
//! * [`OffsetStore`]: durable consumer-group offsets (pub/sub groups).
//! * [`WorkGroup`]: a work-queue consumer group: leases, ack/nack, redelivery, priority,
//!   FIFO per key, dead-lettering after `max_deliveries`, state journaled in its own log;
//!   the windows of groups sharing a [`MemoryBudget`] hold at most its bytes.
//! * [`Storage`]: the file-system seam; [`FsStorage`] for real files, [`SimStorage`] to inject
//!   power loss, full disks and failing fsyncs in tests.
//!
//! Architecture invariant: std threads and blocking I/O only — no async runtime, no network.

mod commit;
mod error;
mod format;
mod offsets;
mod partition;
mod queue;
mod storage;
mod workq;

pub use commit::{Done, GroupCommitter, Parts, SubmitError};
pub use error::LogError;
pub use format::MAX_PAYLOAD_BYTES;
pub use offsets::OffsetStore;
pub use partition::{LogOptions, PartitionLog, Record};
pub use queue::Queue;
pub use storage::{FsStorage, SimStorage, Storage, StorageFile};
pub use workq::{
    Classify, Exhausted, GroupStats, Leased, MemoryBudget, MessageMeta, Receipt, WorkGroup,
    WorkOptions, entry_cost,
};

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

// A panic while holding one of our locks leaves the protected state consistent (every update
// is a store of already-computed values), so lock poisoning is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn read_lock<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) fn write_lock<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #[test]
    fn shared_types_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::PartitionLog>();
        check::<crate::Queue>();
        check::<crate::GroupCommitter>();
        check::<crate::OffsetStore>();
        check::<crate::SimStorage>();
        check::<crate::FsStorage>();
        check::<crate::LogError>();
    }
}
