//! The crate's errors: [`LoadError`] when a plugin cannot start, [`PluginError`] when a
//! call fails.

use std::fmt;
use std::path::PathBuf;

use crate::{CallStats, World};

/// Why a plugin could not be loaded. Every variant is permanent: retrying with the same
/// file and config fails the same way (except [`LoadError::Io`], which may be transient).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The `.wasm` file could not be read.
    #[error("cannot read plugin `{plugin}` from {}: {source}", path.display())]
    Io {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component wasmtime can compile.
    #[error(
        "plugin `{plugin}` at {} is not a valid WebAssembly component (build it for wasm32-wasip2): {message}",
        path.display()
    )]
    Compile {
        plugin: String,
        path: PathBuf,
        message: String,
    },
    /// The component imports interfaces the host does not grant. Found before compiling.
    #[error(
        "plugin `{plugin}` imports {} which {} not granted; a plugin may import only \
         switchyard:plugin/host@0.2 (plus the wasi:cli and wasi:io interfaces std guests \
         bring along), and wasi:filesystem/{{types,preopens}} and wasi:clocks/wall-clock \
         when its config has `allow_dirs`; sockets, random and other clocks are never granted{}",
        imports.join(", "),
        if imports.len() == 1 { "is" } else { "are" },
        hints.iter().map(|h| format!("\n  {h}")).collect::<String>()
    )]
    ImportNotGranted {
        plugin: String,
        /// Every refused import in the component's order, e.g.
        /// `wasi:filesystem/preopens@0.2.6`.
        imports: Vec<String>,
        /// How to build the component without them, for the toolchain that built it:
        /// one line per distinct advice, e.g. the componentize-py flag `--stub-wasi`.
        hints: Vec<String>,
    },
    /// The component was built for another version of the plugin contract
    /// (`wit/plugin.wit`), e.g. 0.1.x, whose batches were a `list<event>`.
    #[error(
        "plugin `{plugin}` was built for {found}, but this switchyard runs plugins built for \
         switchyard:plugin@{}: rebuild it against the current wit/plugin.wit — for a plugin \
         using switchyard-plugin-sdk, update the SDK and run \
         `cargo build --release --target wasm32-wasip2`; no code changes are needed",
        crate::CONTRACT_VERSION
    )]
    OtherContract {
        plugin: String,
        /// The contract it imports, e.g. `switchyard:plugin/types@0.1.0`.
        found: String,
    },
    /// The component exports none, or more than one, of the worlds.
    #[error(
        "plugin `{plugin}` must export exactly one of the worlds filter, router, transform of \
         switchyard:plugin@{}; it exports: {exports}",
        crate::CONTRACT_VERSION
    )]
    UnknownWorld { plugin: String, exports: String },
    /// The component looks like a world but its exports or imports do not type-check
    /// against it (e.g. built against another version of the WIT).
    #[error(
        "plugin `{plugin}` does not match the {world} world of switchyard:plugin@{}: {message}",
        crate::CONTRACT_VERSION
    )]
    Link {
        plugin: String,
        world: World,
        message: String,
    },
    /// A capability in the plugin's config cannot be granted (e.g. an `allow_dirs` host
    /// directory does not exist).
    #[error("plugin `{plugin}` cannot be given what its config grants: {message}")]
    Grant { plugin: String, message: String },
    /// The plugin's `init` returned `err`: usually a bad `config` table.
    #[error("plugin `{plugin}` rejected its config: {message}")]
    Init { plugin: String, message: String },
    /// Instantiating or `init` trapped or hit a limit.
    #[error("plugin `{plugin}` failed while starting: {cause}")]
    Start { plugin: String, cause: ErrorCause },
    /// The wasmtime engine could not be configured (e.g. pooling allocator limits).
    #[error("cannot configure the WebAssembly engine: {0}")]
    Engine(String),
}

/// A call on a plugin failed. The batch it carried failed as a whole (its events follow
/// the plugin's `on_error`); the instance that failed was discarded and the next call runs
/// on a fresh one.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` failed on a batch of {batch} events: {cause}")]
pub struct PluginError {
    /// The plugin's name.
    pub plugin: String,
    /// How many events the failed call carried.
    pub batch: usize,
    /// What went wrong.
    pub cause: ErrorCause,
    /// Fuel and time spent before the failure.
    pub stats: CallStats,
}

impl PluginError {
    /// Whether retrying the same batch may succeed. Only a timeout may be a matter of a
    /// loaded machine; traps, fuel, memory and wrong answers are deterministic for a given
    /// batch, so retrying them wastes time.
    pub fn is_transient(&self) -> bool {
        matches!(self.cause, ErrorCause::Timeout { .. })
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorCause {
    /// The guest trapped (a Rust panic shows up as `unreachable`), or called an import
    /// that is stubbed out (e.g. wrote to stdout).
    Trap(String),
    /// The call used up its fuel budget (`fuel` in the plugin's config).
    OutOfFuel { budget: u64 },
    /// The call ran past its wall-clock deadline (`timeout` in the plugin's config).
    Timeout { limit: std::time::Duration },
    /// The guest tried to grow its linear memory past `memory` in the plugin's config.
    MemoryLimit { limit: u64 },
    /// The plugin returned `err` with this message.
    Returned(String),
    /// The plugin returned a different number of decisions than events it was given.
    WrongDecisionCount { expected: usize, got: usize },
    /// The method called does not belong to the plugin's world (e.g. `route` on a filter).
    WrongWorld { world: World, called: World },
    /// A fresh instance could not be started to replace a failed one.
    Restart(Box<ErrorCause>),
    /// What the config grants could not be set up for an instance (e.g. a granted
    /// directory was removed after the load).
    Grant(String),
}

impl fmt::Display for ErrorCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Trap(msg) => write!(f, "trapped: {msg}"),
            Self::OutOfFuel { budget } => {
                write!(
                    f,
                    "ran out of fuel (budget {budget}; raise `fuel` if this is expected)"
                )
            }
            Self::Timeout { limit } => {
                write!(f, "ran past its deadline of {limit:?} (`timeout`)")
            }
            Self::MemoryLimit { limit } => {
                write!(
                    f,
                    "tried to use more than its memory limit of {limit} bytes (`memory`)"
                )
            }
            Self::Returned(msg) => write!(f, "returned an error: {msg}"),
            Self::WrongDecisionCount { expected, got } => write!(
                f,
                "returned {got} decisions for {expected} events (a plugin must return exactly one per event)"
            ),
            Self::WrongWorld { world, called } => {
                write!(f, "is a {world} plugin, it cannot be called as a {called}")
            }
            Self::Restart(cause) => write!(f, "could not start a fresh instance: {cause}"),
            Self::Grant(msg) => write!(f, "could not set up what its config grants: {msg}"),
        }
    }
}
