//! File-system abstraction: [`FsStorage`] for real files, [`SimStorage`] for fault-injection
//! tests (power loss with torn writes, full disk, failing fsync).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The file operations the log needs. Paths are absolute or relative to the process' working
/// directory, exactly as given to [`crate::PartitionLog::open`] and friends.
///
/// Durability contract (what the log relies on): bytes written to a file survive a power loss
/// only after [`StorageFile::sync_data`] returned Ok; a file's existence (creation, rename,
/// removal) survives only after [`Storage::sync_dir`] on its parent returned Ok.
pub trait Storage: Send + Sync {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the regular files directly inside `dir` (not sub-directories).
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Names of the sub-directories directly inside `dir`.
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Opens an existing file for reading and writing; `create` also creates it when missing.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// True if a file exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes the empty directory `dir`.
    fn remove_dir(&self, dir: &Path) -> io::Result<()>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, renames and removals of entries in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
}

/// An open file. Positional reads and writes so that readers never move a shared cursor.
pub trait StorageFile: Send + Sync {
    fn byte_len(&self) -> io::Result<u64>;
    /// Fills `buf` from `pos`, or fails with `UnexpectedEof`.
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Writes all of `data` at `pos`. On error a prefix of `data` may have been written.
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// fdatasync: the file's data written so far survives a power loss once this returns Ok.
    fn sync_data(&self) -> io::Result<()>;
}

/// Real files through `std::fs`. `sync_data` is `fdatasync`; `sync_dir` opens the directory and
/// fsyncs it. Directories it creates are `0700` and files `0600` (set at creation, not left
/// to the umask): the log holds every event's payload and headers.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

/// Permission bits of the directories [`FsStorage`] creates.
pub const DIR_MODE: u32 = 0o700;
/// Permission bits of the files [`FsStorage`] creates.
pub const FILE_MODE: u32 = 0o600;

impl FsStorage {
    pub fn new() -> Self {
        FsStorage
    }
}

struct FsFile(File);

impl StorageFile for FsFile {
    fn byte_len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, pos)
    }
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, data, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
}

impl Storage for FsStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(dir)
    }
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        list(dir, false)
    }
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        list(dir, true)
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)?;
        Ok(Arc::new(FsFile(file)))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        fs::remove_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }
}

fn list(dir: &Path, dirs: bool) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() == dirs
            && let Some(name) = entry.file_name().to_str()
        {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------------------------------------

/// In-memory storage for tests. Tracks, per file, the bytes that are synced and the bytes that
/// are only written, and per directory the entries whose creation/removal was synced.
///
/// [`SimStorage::power_loss`] keeps only synced state (optionally plus a random prefix of each
/// file's unsynced appended bytes: a torn write). Handles opened before a power loss fail
/// afterwards, like a process that died. Directories themselves are always durable.
#[derive(Clone)]
pub struct SimStorage {
    inner: Arc<Mutex<SimState>>,
}

struct SimFileData {
    synced: Vec<u8>,
    current: Vec<u8>,
}

struct SimState {
    generation: u64,
    next_id: u64,
    data: HashMap<u64, SimFileData>,
    /// What a process sees: path → file id.
    entries: BTreeMap<PathBuf, u64>,
    /// What survives a power loss: path → file id.
    durable_entries: BTreeMap<PathBuf, u64>,
    dirs: BTreeSet<PathBuf>,
    space_limit: Option<u64>,
    fail_next_sync: bool,
    rng: u64,
}

impl SimState {
    fn used(&self) -> u64 {
        self.data.values().map(|f| f.current.len() as u64).sum()
    }
    fn next_random(&mut self) -> u64 {
        // xorshift64*: deterministic per seed, good enough to pick tear points.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn take_sync_failure(&mut self) -> io::Result<()> {
        if std::mem::take(&mut self.fail_next_sync) {
            return Err(io::Error::other("simulated fsync failure (EIO)"));
        }
        Ok(())
    }
}

impl Default for SimStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl SimStorage {
    pub fn new() -> Self {
        Self::with_seed(0x5EED_1234_ABCD_0001)
    }

    /// A storage whose torn writes are chosen by a generator seeded with `seed`.
    pub fn with_seed(seed: u64) -> Self {
        SimStorage {
            inner: Arc::new(Mutex::new(SimState {
                generation: 0,
                next_id: 0,
                data: HashMap::new(),
                entries: BTreeMap::new(),
                durable_entries: BTreeMap::new(),
                dirs: BTreeSet::new(),
                space_limit: None,
                fail_next_sync: false,
                rng: seed | 1,
            })),
        }
    }

    fn state(&self) -> MutexGuard<'_, SimState> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Simulates a power loss: unsynced bytes and unsynced directory entries are dropped. With
    /// `torn`, each file keeps a random prefix of the bytes written since its last sync
    /// (appended or overwritten), and what it had at the sync after that.
    /// Every handle opened before becomes unusable.
    pub fn power_loss(&self, torn: bool) {
        let mut st = self.state();
        st.generation += 1;
        let durable: Vec<(PathBuf, u64)> = st
            .durable_entries
            .iter()
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        let mut data = HashMap::new();
        let mut entries = BTreeMap::new();
        for (path, id) in durable {
            let (synced, current) = match st.data.get(&id) {
                Some(f) => (f.synced.clone(), f.current.clone()),
                None => (Vec::new(), Vec::new()),
            };
            let mut kept = synced;
            if torn {
                // The writes since the last sync reached the disk up to a random point:
                // before it the file reads as written, after it as it was at the sync.
                let first_change = current
                    .iter()
                    .zip(&kept)
                    .position(|(a, b)| a != b)
                    .unwrap_or(current.len().min(kept.len()));
                if first_change < current.len() {
                    let extra = (current.len() - first_change) as u64;
                    let upto = first_change + (st.next_random() % (extra + 1)) as usize;
                    if upto > kept.len() {
                        kept.resize(upto, 0);
                    }
                    kept[first_change..upto].copy_from_slice(&current[first_change..upto]);
                }
            }
            let new_id = st.next_id;
            st.next_id += 1;
            data.insert(
                new_id,
                SimFileData {
                    synced: kept.clone(),
                    current: kept,
                },
            );
            entries.insert(path, new_id);
        }
        st.data = data;
        st.durable_entries = entries.clone();
        st.entries = entries;
        st.fail_next_sync = false;
    }

    /// Writes that would make the total size of all files exceed `limit` fail like ENOSPC
    /// (after writing what fits, as a real file system may).
    pub fn set_space_limit(&self, limit: Option<u64>) {
        self.state().space_limit = limit;
    }

    /// Total bytes currently stored (synced or not).
    pub fn used_bytes(&self) -> u64 {
        self.state().used()
    }

    /// The next `sync_data` or `sync_dir` fails with an I/O error (and syncs nothing).
    pub fn fail_next_sync(&self) {
        self.state().fail_next_sync = true;
    }

    /// XORs `mask` into the byte at `pos` of the file at `path`, in both its synced and its
    /// current content (bit rot). Returns false if there is no such byte.
    pub fn corrupt_byte(&self, path: &Path, pos: u64, mask: u8) -> bool {
        let mut st = self.state();
        let Some(id) = st.entries.get(path).copied() else {
            return false;
        };
        let Some(f) = st.data.get_mut(&id) else {
            return false;
        };
        let mut hit = false;
        for bytes in [&mut f.synced, &mut f.current] {
            if let Some(b) = bytes.get_mut(pos as usize) {
                *b ^= mask;
                hit = true;
            }
        }
        hit
    }

    /// Current length of the file at `path`, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let st = self.state();
        let id = st.entries.get(path)?;
        st.data.get(id).map(|f| f.current.len() as u64)
    }

    /// Paths of all files that currently exist.
    pub fn files(&self) -> Vec<PathBuf> {
        self.state().entries.keys().cloned().collect()
    }

    fn children(st: &SimState, dir: &Path) -> Vec<String> {
        st.entries
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect()
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} does not exist", path.display()),
    )
}

impl Storage for SimStorage {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        let mut d = Some(dir);
        while let Some(p) = d {
            if p.as_os_str().is_empty() {
                break;
            }
            st.dirs.insert(p.to_path_buf());
            d = p.parent();
        }
        Ok(())
    }
    fn list_files(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(Self::children(&st, dir))
    }
    fn list_dirs(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        Ok(st
            .dirs
            .iter()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().map(str::to_owned))
            .collect())
    }
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.state();
        let id = match st.entries.get(path) {
            Some(id) => *id,
            None if create => {
                let parent = path.parent().unwrap_or(Path::new(""));
                if !parent.as_os_str().is_empty() && !st.dirs.contains(parent) {
                    return Err(not_found(parent));
                }
                let id = st.next_id;
                st.next_id += 1;
                st.data.insert(
                    id,
                    SimFileData {
                        synced: Vec::new(),
                        current: Vec::new(),
                    },
                );
                st.entries.insert(path.to_path_buf(), id);
                id
            }
            None => return Err(not_found(path)),
        };
        Ok(Arc::new(SimFile {
            storage: self.clone(),
            id,
            generation: st.generation,
        }))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state().entries.contains_key(path))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state();
        let id = st.entries.remove(path).ok_or_else(|| not_found(path))?;
        // Keep the data while a durable entry may still point at it (power loss before the
        // directory sync brings the file back); otherwise free it now.
        if !st.durable_entries.values().any(|d| *d == id) {
            st.data.remove(&id);
        }
        Ok(())
    }
    fn remove_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        if !st.dirs.contains(dir) {
            return Err(not_found(dir));
        }
        let busy = st.entries.keys().any(|p| p.parent() == Some(dir))
            || st.dirs.iter().any(|p| p.parent() == Some(dir));
        if busy {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                format!("{} is not empty", dir.display()),
            ));
        }
        st.dirs.remove(dir);
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state();
        let id = st.entries.remove(from).ok_or_else(|| not_found(from))?;
        st.entries.insert(to.to_path_buf(), id);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state();
        st.take_sync_failure()?;
        let current: Vec<(PathBuf, u64)> = st
            .entries
            .iter()
            .filter(|(p, _)| p.parent() == Some(dir))
            .map(|(p, id)| (p.clone(), *id))
            .collect();
        st.durable_entries.retain(|p, _| p.parent() != Some(dir));
        st.durable_entries.extend(current);
        let live: BTreeSet<u64> = st
            .entries
            .values()
            .chain(st.durable_entries.values())
            .copied()
            .collect();
        st.data.retain(|id, _| live.contains(id));
        Ok(())
    }
}

struct SimFile {
    storage: SimStorage,
    id: u64,
    generation: u64,
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.storage.state();
        if st.generation != self.generation {
            return Err(io::Error::other(
                "file handle is stale: a simulated power loss happened since it was opened",
            ));
        }
        f(&mut st)
    }
}

fn missing() -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, "file was removed")
}

impl StorageFile for SimFile {
    fn byte_len(&self) -> io::Result<u64> {
        self.with(|st| {
            let f = st.data.get(&self.id).ok_or_else(missing)?;
            Ok(f.current.len() as u64)
        })
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        self.with(|st| {
            let f = st.data.get(&self.id).ok_or_else(missing)?;
            let start = pos as usize;
            let end = start + buf.len();
            if end > f.current.len() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "read past end of file",
                ));
            }
            buf.copy_from_slice(&f.current[start..end]);
            Ok(())
        })
    }
    fn write_all_at(&self, data: &[u8], pos: u64) -> io::Result<()> {
        self.with(|st| {
            let used = st.used();
            let limit = st.space_limit;
            let f = st.data.get_mut(&self.id).ok_or_else(missing)?;
            let start = pos as usize;
            let end = start + data.len();
            let growth = end.saturating_sub(f.current.len()) as u64;
            let mut n = data.len();
            let mut full = false;
            if let Some(limit) = limit
                && used + growth > limit
            {
                let room = limit.saturating_sub(used) as usize;
                // Bytes that overwrite existing content need no new space.
                let overwrite = f.current.len().saturating_sub(start).min(data.len());
                n = (overwrite + room).min(data.len());
                full = true;
            }
            if f.current.len() < start {
                f.current.resize(start, 0);
            }
            let write_end = start + n;
            if f.current.len() < write_end {
                f.current.resize(write_end, 0);
            }
            f.current[start..write_end].copy_from_slice(&data[..n]);
            if full {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "no space left on device (simulated)",
                ));
            }
            Ok(())
        })
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.with(|st| {
            let f = st.data.get_mut(&self.id).ok_or_else(missing)?;
            f.current.resize(len as usize, 0);
            // A truncation below the synced length is metadata the file system may persist at
            // any time; model the pessimistic case for readers of `synced` (it stays until the
            // next sync), which `power_loss` then restores.
            Ok(())
        })
    }
    fn sync_data(&self) -> io::Result<()> {
        self.with(|st| {
            st.take_sync_failure()?;
            let f = st.data.get_mut(&self.id).ok_or_else(missing)?;
            f.synced = f.current.clone();
            Ok(())
        })
    }
}
