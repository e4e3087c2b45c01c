//! What a connector gets while it is built, and how it says it cannot be.

use std::path::{Path, PathBuf};

use switchyard_config::Config;

/// What a connector's `build(name, &config, &ctx)` may use.
#[derive(Clone, Copy, Debug)]
pub struct BuildContext<'a> {
    /// The whole validated configuration, for checks across components (how many
    /// pipelines read a source, which queues exist).
    pub config: &'a Config,
    /// `server.data_dir`, created and owned by this process.
    pub data_dir: &'a Path,
}

impl<'a> BuildContext<'a> {
    pub fn new(config: &'a Config, data_dir: &'a Path) -> Self {
        Self { config, data_dir }
    }

    /// Where the connector `name` of `kind` (e.g. `cdc`) keeps its own state
    /// (checkpoints, snapshot progress): `<data_dir>/<kind>/<name>`. Not created here.
    pub fn state_dir(&self, kind: &str, name: &str) -> PathBuf {
        self.data_dir.join(kind).join(name)
    }

    /// Names of the pipelines that read the source `source`, in name order.
    pub fn readers_of(&self, source: &str) -> Vec<&'a str> {
        self.config
            .pipelines
            .iter()
            .filter(|(_, p)| p.from.iter().any(|s| s == source))
            .map(|(name, _)| name.as_str())
            .collect()
    }
}

/// A connector could not be built or started from its configuration. The message says
/// what is wrong and how to fix it; the runtime names the component in front of it.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    pub message: String,
}

impl BuildError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The error's own message (sources keep theirs: they already say how to fix it).
    pub fn from_error(error: &dyn std::error::Error) -> Self {
        Self::new(error.to_string())
    }
}
