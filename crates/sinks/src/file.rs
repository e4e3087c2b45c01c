//! `type = "file"`: append one JSON wire line per event to a file, fsync'd before ack
//! (with `format = "debezium"`, Postgres changes as Debezium's change events).
//!
//! A batch is one `write` followed by `sync_data`; only then are its events delivered.
//! The file IO runs in [`tokio::task::spawn_blocking`]: fsync can take tens of
//! milliseconds and must not stall a runtime worker, and unlike `block_in_place` it also
//! works on a current-thread runtime.
//!
//! Failures are transient (`Retry` for the whole batch): a full disk can be freed. When a
//! write or fsync fails the file is cut back to its length before the batch, so the
//! retry neither duplicates lines nor leaves half a line behind, and no data whose fsync
//! failed is trusted (after a failed fsync the kernel may have dropped the dirty pages).
//!
//! This process must be the only writer of the file. It keeps the file open, so after an
//! external rotation (rename) it keeps appending to the renamed file.
//!
//! A file the sink creates gets the configured `mode` (default `0600`: events often hold
//! personal data), set at creation rather than left to the process umask; directories it
//! creates get the same read bits plus search (`0700` for `0600`, `0750` for `0640`). An
//! existing file or directory keeps its permissions.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use switchyard_config::FileSinkConfig;
use switchyard_event::Event;

use crate::SinkError;
use crate::stdout::{lines, outcomes};
use switchyard_connector::format::Formatter;
use switchyard_connector::{BoxFuture, BuildContext, BuildError, Outcome, Sink};

/// Events per batch: one write and one fsync for up to this many events.
pub const FILE_MAX_BATCH: usize = 512;

/// Appends events as JSON lines to a file.
#[derive(Clone, Debug)]
pub struct FileSink {
    name: Arc<str>,
    path: Arc<Path>,
    // std Mutex: only ever locked inside the blocking task, never across an await.
    file: Arc<Mutex<File>>,
    formatter: Formatter,
}

impl FileSink {
    /// Opens (creating it and its parent directories if needed) the file for appending.
    pub fn new(name: &str, cfg: &FileSinkConfig) -> Result<Self, SinkError> {
        let path = PathBuf::from(&cfg.path);
        let err = |source| SinkError::File {
            sink: name.to_owned(),
            path: cfg.path.clone(),
            source,
        };
        if cfg.path.is_empty() {
            return Err(SinkError::InvalidSetting {
                sink: name.to_owned(),
                key: "path",
                problem: "is empty; set it to the file to append events to",
            });
        }
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(parent) = parent {
            create_dirs(parent, dir_mode(cfg.mode)).map_err(err)?;
        }
        let existed = path.exists();
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, cfg.mode);
        let file = options.open(&path).map_err(err)?;
        if !existed {
            // Make the new directory entry durable too, or a crash could lose the file
            // along with events already acknowledged into it.
            sync_dir(parent.unwrap_or(Path::new("."))).map_err(err)?;
        }
        Ok(Self {
            name: name.into(),
            path: path.into(),
            file: Arc::new(Mutex::new(file)),
            formatter: Formatter::new(cfg.format),
        })
    }

    /// The sink writing each event in `formatter`'s format ([`Self::new`] takes the
    /// config's `format` without knowing the sources: Debezium's `source.db` is null).
    pub fn with_formatter(self, formatter: Formatter) -> Self {
        Self { formatter, ..self }
    }

    /// Where events go.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Directory bits for a file mode: each class that may read the file may also search
/// the directories leading to it.
fn dir_mode(file_mode: u32) -> u32 {
    let read = file_mode & 0o444;
    (file_mode | read >> 2) & 0o777
}

#[cfg(unix)]
fn create_dirs(dir: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

#[cfg(not(unix))]
fn create_dirs(dir: &Path, _mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    // Directories cannot be opened for syncing on this platform; NTFS journals entries.
    Ok(())
}

/// Appends `buf` and syncs; on failure restores the previous length (best effort).
fn append_durably(file: &Mutex<File>, buf: &[u8]) -> std::io::Result<()> {
    // A poisoned lock only means an earlier batch panicked mid-write; the length check
    // below is what keeps the file consistent, not the lock.
    let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let before = file.metadata()?.len();
    let result = file.write_all(buf).and_then(|()| file.sync_data());
    if result.is_err() {
        let _ = file.set_len(before);
    }
    result
}

impl Sink for FileSink {
    fn deliver<'a>(&'a self, batch: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Vec::new();
            }
            let (buf, skipped) = lines(batch, &self.formatter);
            let file = Arc::clone(&self.file);
            let result = tokio::task::spawn_blocking(move || append_durably(&file, &buf)).await;
            let outcome = match result {
                Ok(Ok(())) => Outcome::Delivered,
                Ok(Err(e)) => Outcome::Retry {
                    error: format!(
                        "sink `{}`: cannot append to {}: {e}",
                        self.name,
                        self.path.display()
                    ),
                    retry_after: None,
                },
                Err(e) => Outcome::Retry {
                    error: format!("sink `{}`: the file write task failed: {e}", self.name),
                    retry_after: None,
                },
            };
            outcomes(outcome, batch.len(), skipped)
        })
    }

    fn max_batch(&self) -> usize {
        FILE_MAX_BATCH
    }
}

/// Builds the `file` sink `name`: the runtime's registration calls this.
pub fn build(
    name: &str,
    cfg: &FileSinkConfig,
    ctx: &BuildContext<'_>,
) -> Result<Arc<dyn Sink>, BuildError> {
    let sink = FileSink::new(name, cfg).map_err(|e| BuildError::from_error(&e))?;
    Ok(Arc::new(sink.with_formatter(Formatter::for_config(
        cfg.format, ctx.config,
    ))))
}

#[cfg(test)]
mod tests {
    use super::dir_mode;

    #[test]
    fn directories_are_searchable_by_whoever_may_read_the_file() {
        assert_eq!(dir_mode(0o600), 0o700);
        assert_eq!(dir_mode(0o640), 0o750);
        assert_eq!(dir_mode(0o644), 0o755);
        assert_eq!(dir_mode(0o660), 0o770);
    }
}
