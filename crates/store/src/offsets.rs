//! Durable consumer-group offsets, and the small-file helpers the queue metadata shares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::error::LogError;
use crate::lock;
use crate::storage::Storage;

const OFFSETS_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize, Default, Clone)]
struct OffsetsFile {
    format: u32,
    /// group → partition → next offset to consume.
    groups: BTreeMap<String, BTreeMap<u32, u64>>,
}

/// Durable consumer-group offsets in one JSON file, replaced atomically on every commit
/// (write a temporary file, fdatasync it, rename it over the old one, fsync the directory).
/// After a crash the file holds either the previous or the new state, never a mix.
pub struct OffsetStore {
    storage: Arc<dyn Storage>,
    path: PathBuf,
    state: Mutex<OffsetsFile>,
}

impl std::fmt::Debug for OffsetStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OffsetStore")
            .field("path", &self.path)
            .finish()
    }
}

impl OffsetStore {
    /// Opens the store at `path` (a file; its directory is created if needed). A missing file
    /// means no offsets committed yet.
    pub fn open(storage: Arc<dyn Storage>, path: &Path) -> Result<Self, LogError> {
        let dir = parent_dir(path);
        storage
            .create_dir_all(dir)
            .map_err(|e| LogError::io(dir, e))?;
        let tmp = temp_path(path);
        if storage.exists(&tmp).map_err(|e| LogError::io(&tmp, e))? {
            // Left over from a commit that crashed before its rename: never part of the state.
            storage
                .remove_file(&tmp)
                .map_err(|e| LogError::io(&tmp, e))?;
        }
        let state = if storage.exists(path).map_err(|e| LogError::io(path, e))? {
            let bytes = read_whole_file(&*storage, path)?;
            let file: OffsetsFile =
                serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
                    path: path.to_path_buf(),
                    offset: 0,
                    reason: format!("consumer offsets file is not valid: {e}"),
                })?;
            if file.format != OFFSETS_FORMAT {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    offset: 0,
                    reason: format!(
                        "unknown offsets format {} (this version reads {OFFSETS_FORMAT})",
                        file.format
                    ),
                });
            }
            file
        } else {
            OffsetsFile {
                format: OFFSETS_FORMAT,
                groups: BTreeMap::new(),
            }
        };
        Ok(OffsetStore {
            storage,
            path: path.to_path_buf(),
            state: Mutex::new(state),
        })
    }

    /// The committed offset (next offset to consume) of `group` in `partition`.
    pub fn get(&self, group: &str, partition: u32) -> Option<u64> {
        lock(&self.state)
            .groups
            .get(group)?
            .get(&partition)
            .copied()
    }

    /// Names of all groups with committed offsets, sorted.
    pub fn groups(&self) -> Vec<String> {
        lock(&self.state).groups.keys().cloned().collect()
    }

    /// Sets `group`'s offsets for the given partitions (other partitions keep theirs). Durable
    /// when it returns Ok; on error the previous state stays in effect (in memory; on disk it
    /// is the previous or, if only the final directory sync failed, the new state).
    pub fn commit(&self, group: &str, offsets: &[(u32, u64)]) -> Result<(), LogError> {
        let mut state = lock(&self.state);
        let mut next = state.clone();
        let entry = next.groups.entry(group.to_owned()).or_default();
        for &(partition, offset) in offsets {
            entry.insert(partition, offset);
        }
        let bytes = serde_json::to_vec(&next).expect("offsets serialize");
        write_file_atomically(&*self.storage, &self.path, &bytes)?;
        *state = next;
        Ok(())
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads a small file completely.
pub(crate) fn read_whole_file(storage: &dyn Storage, path: &Path) -> Result<Vec<u8>, LogError> {
    let file = storage
        .open(path, false)
        .map_err(|e| LogError::io(path, e))?;
    let len = file.byte_len().map_err(|e| LogError::io(path, e))?;
    let mut buf = vec![0; len as usize];
    file.read_exact_at(&mut buf, 0)
        .map_err(|e| LogError::io(path, e))?;
    Ok(buf)
}

/// Replaces `path` with `bytes` atomically and durably: temp file, fdatasync, rename, fsync dir.
pub(crate) fn write_file_atomically(
    storage: &dyn Storage,
    path: &Path,
    bytes: &[u8],
) -> Result<(), LogError> {
    let tmp = temp_path(path);
    let file = storage
        .open(&tmp, true)
        .map_err(|e| LogError::write(&tmp, e))?;
    let written = file
        .set_len(0)
        .and_then(|()| file.write_all_at(bytes, 0))
        .map_err(|e| LogError::write(&tmp, e))
        .and_then(|()| file.sync_data().map_err(|e| LogError::io(&tmp, e)));
    if let Err(e) = written {
        // Best effort: free the space a partial temp file holds (open() removes leftovers too).
        let _ = storage.remove_file(&tmp);
        return Err(e);
    }
    storage
        .rename(&tmp, path)
        .map_err(|e| LogError::io(path, e))?;
    let dir = parent_dir(path);
    storage.sync_dir(dir).map_err(|e| LogError::io(dir, e))?;
    Ok(())
}
