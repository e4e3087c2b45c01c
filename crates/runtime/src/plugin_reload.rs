//! Reloading a plugin whose component file changed while switchyard runs.
//!
//! One task per loaded plugin looks at its file every [`POLL`] (modification time and
//! size). Once a change has held still for one more look (a build writes in several
//! steps), the new build is loaded like at start — compiled or read from the compilation
//! cache, imports checked, `init` run — on a blocking thread, while the old build keeps
//! deciding batches. Then [`PluginPool::replace`] swaps it in: calls already running
//! finish on the old build, every later call runs the new one. Batches are decided and
//! their events' fates applied in the order read either way, so nothing is lost or
//! reordered. A new build that fails to load, or exports another world, is logged and
//! the running build stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use switchyard_config::PluginConfig;
use switchyard_plugin_host::{PluginHost, PluginPool};
use tokio::task::JoinHandle;
use tracing::{error, info};

/// How often a plugin's file is looked at.
pub(crate) const POLL: Duration = Duration::from_secs(1);

/// What tells a file changed: its modification time, size and inode (a build that
/// renames a new file into place changes the inode even when it keeps the time and size;
/// `None` while missing).
pub(crate) type Stamp = Option<(SystemTime, u64, u64)>;

pub(crate) fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len(), meta.ino()))
}

/// Starts watching `pool`'s file (`config.path`), whose running build was read when the
/// file's stamp was `loaded` (taken before reading it, so a build that lands while the
/// first one compiles is not missed); abort the handle to stop. A build that fails to
/// load is not tried again until the file changes again.
pub(crate) fn watch(
    host: PluginHost,
    name: String,
    config: PluginConfig,
    pool: Arc<PluginPool>,
    mut loaded: Stamp,
) -> JoinHandle<()> {
    let path = PathBuf::from(&config.path);
    tokio::spawn(async move {
        let mut last = loaded;
        loop {
            tokio::time::sleep(POLL).await;
            let now = stamp(&path);
            let settled = now == last;
            last = now;
            if now.is_none() || now == loaded || !settled {
                continue;
            }
            loaded = now;
            info!(plugin = %name, path = %path.display(), "plugin file changed; loading the new build");
            let (host, task_name, task_config) = (host.clone(), name.clone(), config.clone());
            let result =
                tokio::task::spawn_blocking(move || host.load(&task_name, &task_config)).await;
            match result {
                Ok(Ok(plugin)) => {
                    let world = plugin.world();
                    match pool.replace(plugin) {
                        Ok(()) => info!(plugin = %name, %world,
                            "plugin reloaded: calls from now on run the new build"),
                        Err(new) => {
                            error!(plugin = %name, %new, running = %pool.world(),
                            "the new build exports another world than the running one; keeping the running build (restart to change a plugin's world)")
                        }
                    }
                }
                Ok(Err(e)) => error!(plugin = %name, error = %e,
                    "cannot load the new build; keeping the running one"),
                Err(e) => error!(plugin = %name, error = %e,
                    "loading the new build failed; keeping the running one"),
            }
        }
    })
}
