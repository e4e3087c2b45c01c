//! A queue: N partitions in `dir/p0`, `dir/p1`, … and `dir/queue.json` pinning N.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::offsets::{read_whole_file, write_file_atomically};
use crate::partition::{LogOptions, PartitionLog};
use crate::storage::Storage;

const META_FILE: &str = "queue.json";
const META_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct QueueMeta {
    format: u32,
    partitions: u32,
}

/// N partitions sharing one directory. The partition count is fixed when the queue is created:
/// reopening with another count is an error, because it would move keys to other partitions
/// and break per-key order.
pub struct Queue {
    dir: PathBuf,
    partitions: Vec<Arc<PartitionLog>>,
    next: AtomicU32,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("dir", &self.dir)
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl Queue {
    /// Opens or creates the queue in `dir` with `partitions` partitions, recovering each one
    /// (see [`PartitionLog::open`]).
    pub fn open(
        storage: Arc<dyn Storage>,
        dir: &Path,
        partitions: u32,
        opts: LogOptions,
    ) -> Result<Self, LogError> {
        if partitions == 0 {
            return Err(LogError::InvalidArgument {
                path: dir.to_path_buf(),
                reason: "a queue needs at least 1 partition".into(),
            });
        }
        storage
            .create_dir_all(dir)
            .map_err(|e| LogError::io(dir, e))?;
        match Self::stored_partitions(&*storage, dir)? {
            Some(stored) if stored != partitions => {
                return Err(LogError::PartitionCountChanged {
                    path: dir.to_path_buf(),
                    stored,
                    requested: partitions,
                });
            }
            _ => {}
        }
        let meta_path = dir.join(META_FILE);
        if !storage
            .exists(&meta_path)
            .map_err(|e| LogError::io(&meta_path, e))?
        {
            let meta = QueueMeta {
                format: META_FORMAT,
                partitions,
            };
            let bytes = serde_json::to_vec(&meta).expect("queue metadata serializes");
            write_file_atomically(&*storage, &meta_path, &bytes)?;
        }
        let partitions = (0..partitions)
            .map(|i| {
                PartitionLog::open(storage.clone(), &dir.join(format!("p{i}")), opts.clone())
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Queue {
            dir: dir.to_path_buf(),
            partitions,
            next: AtomicU32::new(0),
        })
    }

    /// The partition count of the queue in `dir` as stored there: from its metadata, or
    /// from its partition directories when an older version left no metadata; `None` when
    /// `dir` holds no queue yet.
    pub fn stored_partitions(storage: &dyn Storage, dir: &Path) -> Result<Option<u32>, LogError> {
        let meta_path = dir.join(META_FILE);
        let exists = storage
            .exists(&meta_path)
            .map_err(|e| LogError::io(&meta_path, e))?;
        if exists {
            let bytes = read_whole_file(storage, &meta_path)?;
            let meta: QueueMeta =
                serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
                    path: meta_path.clone(),
                    offset: 0,
                    reason: format!("queue metadata is not valid: {e}"),
                })?;
            if meta.format != META_FORMAT {
                return Err(LogError::Corrupt {
                    path: meta_path,
                    offset: 0,
                    reason: format!(
                        "unknown queue metadata format {} (this version reads {META_FORMAT})",
                        meta.format
                    ),
                });
            }
            if meta.partitions == 0 {
                return Err(LogError::Corrupt {
                    path: meta_path,
                    offset: 0,
                    reason: "queue metadata says 0 partitions".into(),
                });
            }
            Ok(Some(meta.partitions))
        } else {
            // Partition directories without metadata: trust what is on disk over the config.
            let names = match storage.list_dirs(dir) {
                Ok(names) => names,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(LogError::io(dir, e)),
            };
            let mut numbers: Vec<u32> = names
                .iter()
                .filter_map(|n| n.strip_prefix('p')?.parse::<u32>().ok())
                .collect();
            numbers.sort_unstable();
            let existing = numbers.len() as u32;
            // Partitions are p0..p{n-1}: a gap means a partition's directory is missing,
            // and guessing the count from the others would leave data unread.
            if numbers.iter().enumerate().any(|(i, &n)| n != i as u32) {
                return Err(LogError::Corrupt {
                    path: dir.to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "partition directories {} are not p0..p{}; restore the missing ones",
                        numbers
                            .iter()
                            .map(|n| format!("p{n}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        existing.saturating_sub(1)
                    ),
                });
            }
            Ok((existing != 0).then_some(existing))
        }
    }

    /// The queue's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The partitions, index = partition number.
    pub fn partitions(&self) -> &[Arc<PartitionLog>] {
        &self.partitions
    }

    /// The partition for `key`: crc32c of the key modulo the partition count (stable across
    /// restarts and versions); `None` spreads round robin.
    pub fn partition_for(&self, key: Option<&[u8]>) -> u32 {
        let n = self.partitions.len() as u32;
        match key {
            Some(k) => crc32c::crc32c(k) % n,
            None => self.next.fetch_add(1, Ordering::Relaxed) % n,
        }
    }

    /// Bytes in all partitions' segment files.
    pub fn size_bytes(&self) -> u64 {
        self.partitions.iter().map(|p| p.size_bytes()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FsStorage;

    #[test]
    fn the_stored_count_comes_from_metadata_or_from_partition_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let missing = tmp.path().join("missing");
        assert_eq!(Queue::stored_partitions(&*storage, &missing).unwrap(), None);

        let made = tmp.path().join("made");
        drop(Queue::open(storage.clone(), &made, 3, LogOptions::default()).unwrap());
        assert_eq!(Queue::stored_partitions(&*storage, &made).unwrap(), Some(3));

        // An older layout: partition directories, no metadata.
        let bare = tmp.path().join("bare");
        for p in ["p0", "p1"] {
            std::fs::create_dir_all(bare.join(p)).unwrap();
        }
        assert_eq!(Queue::stored_partitions(&*storage, &bare).unwrap(), Some(2));
        let err = Queue::open(storage.clone(), &bare, 1, LogOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            LogError::PartitionCountChanged {
                stored: 2,
                requested: 1,
                ..
            }
        ));
        drop(Queue::open(storage.clone(), &bare, 2, LogOptions::default()).unwrap());
        assert!(bare.join(META_FILE).exists(), "metadata written on open");

        // A missing partition directory is not guessed around.
        let gap = tmp.path().join("gap");
        for p in ["p0", "p1", "p3"] {
            std::fs::create_dir_all(gap.join(p)).unwrap();
        }
        let err = Queue::stored_partitions(&*storage, &gap).unwrap_err();
        assert!(err.to_string().contains("p0, p1, p3"), "{err}");

        let zero = tmp.path().join("zero");
        std::fs::create_dir_all(&zero).unwrap();
        std::fs::write(zero.join(META_FILE), r#"{"format":1,"partitions":0}"#).unwrap();
        assert!(matches!(
            Queue::stored_partitions(&*storage, &zero),
            Err(LogError::Corrupt { .. })
        ));
    }
}
