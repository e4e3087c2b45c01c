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
//!   [`MAX_ENTRIES`] in all unless more were used in the last hour (the least recently
//!   used go first: plugins renamed or removed from the config, files once tried with
//!   `plugin test`).
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
                        // Used now: the eviction goes by this time.
                        let _ = std::fs::File::options()
                            .write(true)
                            .open(&path)
                            .and_then(|f| f.set_modified(std::time::SystemTime::now()));
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
                    "cannot use the compiled plugin in the cache; compiling it again");
                // A damaged or foreign entry goes; a passing error (no file descriptors
                // left, say) leaves it for the next start.
                if e.kind() == std::io::ErrorKind::InvalidData {
                    let _ = std::fs::remove_file(&path);
                }
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
        owned_privately(&self.dir, true)?;
        safe_ancestors(&self.dir)
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
        // Room for the one just written: the least recently used others go, but never one
        // used in the last hour (the plugins of this start, however many).
        entries.sort();
        let excess = (entries.len() + 1).saturating_sub(MAX_ENTRIES);
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for (_, old) in entries
            .into_iter()
            .take(excess)
            .filter(|(used, _)| used.is_none_or(|t| t < hour_ago))
        {
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
    owned_privately(path, false)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::InvalidData, why))?;
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
    let mut stem: String = name
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
        stem.push_str("plugin");
    }
    // Two names that come out the same (cut at 64 characters, or differing only in
    // replaced characters) must not share entries: the name's hash tells them apart.
    if stem != name {
        let digest = Sha256::digest(name.as_bytes());
        stem.push('_');
        stem.extend(digest[..4].iter().map(|b| format!("{b:02x}")));
    }
    stem
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

/// Whether no other user can replace the cache directory by renaming one of the
/// directories above it: each is owned by root or switchyard's user, and writable by
/// others only with the sticky bit (like /tmp, where only an entry's owner may rename it).
#[cfg(unix)]
fn safe_ancestors(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = dir
        .canonicalize()
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    for ancestor in dir.ancestors().skip(1) {
        let meta =
            std::fs::metadata(ancestor).map_err(|e| format!("{}: {e}", ancestor.display()))?;
        let sticky = meta.mode() & 0o1000 != 0;
        if (meta.uid() != 0 && meta.uid() != me) || (meta.mode() & 0o022 != 0 && !sticky) {
            return Err(format!(
                "{} (above the plugin cache) may be changed by other users (owner {}, mode {:04o})",
                ancestor.display(),
                meta.uid(),
                meta.mode() & 0o7777
            ));
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn safe_ancestors(_dir: &Path) -> Result<(), String> {
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
        assert!(file_stem("../etc/passwd").starts_with("___etc_passwd_"));
        assert_ne!(file_stem("a.b"), file_stem("a_b"));
        assert!(file_stem("").starts_with("plugin_"));
        let long = file_stem(&"x".repeat(500));
        assert_eq!(long.len(), 64 + 9);
        assert_ne!(long, file_stem(&"x".repeat(501)));
        assert!(is_key_file(&format!("{}.cwasm", "ab".repeat(32))));
        assert!(!is_key_file("other-plugin-abcd.cwasm"));
    }
}
