//! Runs switchyard's WebAssembly plugins.
//!
//! A plugin is a WebAssembly component (wasm32-wasip2) exporting one world of
//! `wit/plugin.wit`: `filter`, `router` or `transform`. This crate loads it, checks what it
//! imports, and calls it on batches of [`Event`]s under per-call limits.
//!
//! ```text
//! PluginHost ──load(name, &PluginConfig)──▶ Plugin ──fork()──▶ Plugin …
//!   (one Engine,                             (compiled once;      (same compiled code,
//!    one epoch ticker)                        one live instance)   its own instance)
//!                                            PluginPool: idle Plugins shared by threads
//! ```
//!
//! * [`PluginHost`] owns the wasmtime `Engine` and a ticker thread that advances the
//!   engine's epoch every millisecond (it stops when the last engine handle is dropped).
//! * [`PluginHost::load`] reads and compiles the component once, refuses imports beyond
//!   `switchyard:plugin/host`, the harmless wasi:cli/io interfaces a Rust std guest
//!   carries (linked to stubs that trap if called) and what the config grants
//!   (`allow_env`: environment variables; `allow_dirs`: read-only directories, i.e.
//!   wasi:filesystem and the wall clock — real WASI from wasmtime-wasi), finds its world,
//!   and starts a first instance, calling `init(config-json)`: a bad config fails here
//!   with the plugin's own message.
//! * [`Plugin::filter`], [`Plugin::route`], [`Plugin::transform`] take a batch and return
//!   one decision per event, with the [`CallStats`] of the call. The instance is reused
//!   from call to call. Every call runs under the plugin's `fuel`, `memory` and `timeout`
//!   (the timeout through epoch interruption). A trap, a limit hit, an `err` or a wrong
//!   number of decisions returns a [`PluginError`]; the instance is then dropped and the
//!   next call starts a fresh one from the pre-linked template (instantiation also runs
//!   under the limits, and `init` runs again).
//! * [`Plugin::filter_split`], [`Plugin::route_split`], [`Plugin::transform_split`] decide
//!   a batch of any size: a call that runs out of fuel or memory is retried as two halves
//!   (a bounded number of times per batch: [`max_splits`]), so `fuel` and `memory` bound
//!   what one event may cost rather than how many events fit in a call. This is what the
//!   runtime and `switchyard plugin test` use.
//! * [`PluginPool`] keeps idle instances for callers on several threads.
//!
//! Calls are synchronous and block their thread for at most about `timeout`: call them
//! from a blocking thread (`tokio::task::spawn_blocking`), never on an async worker.
//!
//! Architecture invariant: no tokio of its own (wasmtime-wasi brings it along for granted
//! WASI calls, which still run on the calling thread), no IO besides reading the `.wasm`
//! file and the directories a config grants, and the host never panics because of what a
//! plugin does.

mod bindings;
mod cache;
mod error;
mod grants;
mod host;
mod output;
mod outside;
mod plugin;
mod pool;
mod split;

use std::fmt;
use std::time::Duration;

pub use cache::Compiled;
pub use error::{ErrorCause, LoadError, PluginError};
pub use grants::grant_key;
pub use host::{HostOptions, Inspection, PluginHost, PoolingOptions, precheck};
pub use outside::{Toolchain, removal_hint, toolchain};
pub use plugin::Plugin;
pub use pool::PluginPool;
pub use split::{Attempt, Decided, max_splits};
pub use switchyard_config::PluginConfig;
pub use switchyard_event::Event;

/// The version of `wit/plugin.wit` (`switchyard:plugin@…`) this host runs plugins of.
/// Plugins built for another minor version (e.g. 0.1.x) are refused at load with
/// [`LoadError::OtherContract`].
pub const CONTRACT_VERSION: &str = "0.2.0";

/// Which world of `switchyard:plugin` ([`CONTRACT_VERSION`]) a plugin exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum World {
    /// `filter(events) -> list<bool>`
    Filter,
    /// `route(events) -> list<list<string>>`
    Router,
    /// `transform(events) -> list<list<event>>`
    Transform,
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Filter => "filter",
            Self::Router => "router",
            Self::Transform => "transform",
        })
    }
}

/// What one call cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallStats {
    /// Fuel the guest consumed (roughly one unit per WebAssembly instruction).
    pub fuel: u64,
    /// Wall-clock time of the call, including copying the batch in and out.
    pub elapsed: Duration,
}

/// The result of a successful call: the plugin's decisions and what they cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call<T> {
    /// One entry per input event, in order.
    pub output: T,
    /// Fuel and time used.
    pub stats: CallStats,
}
