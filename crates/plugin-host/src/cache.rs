//! The compilation cache: compiled components kept on disk, so a plugin compiles once
//! per content and engine instead of at every start.
//!
//! Compiling a component is the slow part of a start: a 117 KB Rust plugin takes well
//! under a second, a 12–18 MB JavaScript or Python component 11–14 s on two cores.
//! With a cache directory ([`crate::HostOptions::cache_dir`]) the first load writes the
//! compiled code to `DIR/NAME-KEY.cwasm`, and later loads of the same bytes by an engine
//! with the same settings read it back instead of compiling.
//!
//! * `KEY` is the SHA-256 of the component's bytes and of the engine's compatibility
//!   hash (wasmtime version, target, settings such as fuel and epochs), so a changed
//!   file or a new switchyard binary misses the cache and compiles afresh.
//! * A file starts with the SHA-256 of the rest, checked before the code is used: a torn
//!   or damaged file is removed and the component compiled again. Files are written to a
//!   temporary name and renamed, so readers never see a partial one.
//! * One file per plugin name: writing `NAME-KEY.cwasm` removes the other
//!   `NAME-*.cwasm`, so the directory holds at most one entry per plugin, and at most
//!   [`MAX_ENTRIES`] in all (the least recently written go first: plugins renamed or
//!   removed from the config, files once tried with `plugin test`).
//!
//! Loading compiled code runs it as native code, so the cache is used only when its
//! directory is a real directory (not a symlink) owned by switchyard's user and writable
//! by no one else (it is created `0700`, files `0600`); entries must be regular files
//! owned by that user too. Anything else turns the cache off with a warning: compiling
//! every time is slow, never unsafe. Every cache failure (unwritable directory, disk
//! full) is logged and the plugin is compiled as if there were no cache. Temporary files
//! left by a crash are removed once they are an hour old.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tracing::{debug, warn};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Entries kept in one cache directory.
pub(crate) const MAX_ENTRIES: usize = 32;

/// Where a cached component comes from, for logs and `plugin test`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compiled {
    /// Compiled now (no cache, or a miss).
    Fresh,
    /// Read from the compilation cache.
    Cached,
}

/// A directory of compiled components.
#[derive(Clone, Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The component for `bytes`, from the cache when it holds it, else compiled with
    /// `compile` and stored.
    pub(crate) fn get_or_compile(
        &self,
        engine: &Engine,
        name: &str,
        bytes: &[u8],
        compile: impl FnOnce() -> wasmtime::Result<Component>,
    ) -> wasmtime::Result<(Component, Compiled)> {
        if let Err(why) = self.trusted() {
            warn!(plugin = name, dir = %self.dir.display(), "{why}; compiling without the cache");
            return compile().map(|c| (c, Compiled::Fresh));
        }
        let stem = file_stem(name);
        let path = self
            .dir
            .join(format!("{stem}-{}.cwasm", key(engine, bytes)));
        match read_checked(&path) {
            Ok(Some(code)) => {
                // SAFETY: the file is a regular file owned by switchyard's user, in a
                // directory only that user can write (both checked above), so only
                // switchyard (or that user) wrote it; its checksum shows it is whole; its
                // name holds this content and these engine settings, and wasmtime checks
                // the version and settings again.
                match unsafe { Component::deserialize(engine, &code) } {
                    Ok(component) => {
                        debug!(plugin = name, path = %path.display(), "compiled plugin read from the cache");
                        return Ok((component, Compiled::Cached));
                    }
                    Err(e) => {
                        warn!(plugin = name, path = %path.display(), error = %format!("{e:#}"),
                            "cached compiled plugin is unusable; compiling it again");
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                warn!(plugin = name, path = %path.display(), error = %e,
                    "cannot read the compiled plugin from the cache; compiling it again");
                let _ = std::fs::remove_file(&path);
            }
        }
        let component = compile()?;
        match component.serialize() {
            Ok(code) => {
                if let Err(e) = self.store(&stem, &path, &code) {
                    warn!(plugin = name, dir = %self.dir.display(), error = %e,
                        "cannot write the compiled plugin to the cache; the next start compiles it again");
                }
            }
            Err(e) => warn!(plugin = name, error = %format!("{e:#}"),
                "cannot serialize the compiled plugin for the cache"),
        }
        Ok((component, Compiled::Fresh))
    }

    /// Creates the directory if it is missing, then checks that only switchyard's user
    /// can have put files in it: `Err` says why not.
    fn trusted(&self) -> Result<(), String> {
        if let Err(e) = create_private_dir(&self.dir) {
            return Err(format!("cannot create the plugin cache directory: {e}"));
        }
        owned_privately(&self.dir, true)
    }

    /// Writes `code` to `path` (checksum first, via a temporary file and a rename) and
    /// removes the plugin's other entries and stale temporary files.
    fn store(&self, stem: &str, path: &Path, code: &[u8]) -> std::io::Result<()> {
        let tmp = self
            .dir
            .join(format!(".{stem}-{}-{}.tmp", std::process::id(), unique()));
        let written = (|| {
            let mut file = private_file(&tmp)?;
            file.write_all(&Sha256::digest(code))?;
            file.write_all(code)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
            return written;
        }
        let keep = path.file_name();
        let mut entries = Vec::new();
        for entry in std::fs::read_dir(&self.dir)?.flatten() {
            let file_name = entry.file_name();
            let Some(text) = file_name.to_str() else {
                continue;
            };
            let same_plugin = text
                .strip_prefix(stem)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(is_key_file);
            if same_plugin && Some(file_name.as_os_str()) != keep {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if text.ends_with(".cwasm") && Some(file_name.as_os_str()) != keep {
                let written = entry.metadata().ok().and_then(|m| m.modified().ok());
                entries.push((written, entry.path()));
            }
            // A crash between creating a temporary file and renaming it leaves one.
            let stale = text.starts_with('.')
                && text.ends_with(".tmp")
                && entry
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|t| {
                        t.elapsed()
                            .is_ok_and(|age| age > std::time::Duration::from_secs(3600))
                    });
            if stale {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        // Room for the one just written: the oldest others go.
        entries.sort();
        let excess = (entries.len() + 1).saturating_sub(MAX_ENTRIES);
        for (_, old) in entries.into_iter().take(excess) {
            let _ = std::fs::remove_file(old);
        }
        Ok(())
    }
}

/// `KEY.cwasm` where KEY is 64 hex digits.
fn is_key_file(rest: &str) -> bool {
    rest.strip_suffix(".cwasm")
        .is_some_and(|key| key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The code stored at `path` when the file exists, is switchyard's own (see
/// [`owned_privately`]) and its checksum holds.
fn read_checked(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    owned_privately(path, false).map_err(std::io::Error::other)?;
    let mut bytes = std::fs::read(path)?;
    if bytes.len() < 32 || Sha256::digest(&bytes[32..]).as_slice() != &bytes[..32] {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "checksum mismatch (a damaged or partly written file)",
        ));
    }
    bytes.drain(..32);
    Ok(Some(bytes))
}

/// SHA-256 of the engine's compatibility hash and the component's bytes, in hex.
fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut sha = Sha256::new();
    sha.update(engine_hash.finish().to_le_bytes());
    sha.update(bytes);
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A plugin name as a file name: ASCII letters, digits, `_` and `-` kept, anything else
/// `_`, at most 64 characters.
fn file_stem(name: &str) -> String {
    let stem: String = name
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if stem.is_empty() {
        "plugin".to_owned()
    } else {
        stem
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether `path` (not followed if a symlink) is a directory (`dir`) or regular file owned
/// by this process's user that no one else may write.
#[cfg(unix)]
fn owned_privately(path: &Path, dir: bool) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let what = if dir { "directory" } else { "file" };
    let right_type = if dir {
        meta.file_type().is_dir()
    } else {
        meta.file_type().is_file()
    };
    if !right_type {
        return Err(format!("{} is not a {what} (a symlink?)", path.display()));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "{} belongs to user {}, not to switchyard's user {me}",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "others may write to the {what} {} (mode {:04o}); make it {}",
            path.display(),
            meta.mode() & 0o7777,
            if dir { "0700" } else { "0600" }
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn owned_privately(_path: &Path, _dir: bool) -> Result<(), String> {
    Ok(())
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_safe_file_stems() {
        assert_eq!(file_stem("filter-by_field2"), "filter-by_field2");
        assert_eq!(file_stem("../etc/passwd"), "___etc_passwd");
        assert_eq!(file_stem(""), "plugin");
        assert_eq!(file_stem(&"x".repeat(500)).len(), 64);
        assert!(is_key_file(&format!("{}.cwasm", "ab".repeat(32))));
        assert!(!is_key_file("other-plugin-abcd.cwasm"));
    }
}
