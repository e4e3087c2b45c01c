//! What a plugin may import, and the WASI capabilities its config grants.
//!
//! Every plugin gets the contract (`switchyard:plugin/{host,types}`) and the wasi:cli/io
//! interfaces every std guest imports, backed by a context that grants nothing: no
//! arguments, no environment, stdin empty, `exit` a trap, and stdout and stderr written
//! into switchyard's log (see the `output` module). Two keys of `[plugins.NAME]` grant
//! more, through wasmtime-wasi's sync WASI 0.2 bindings:
//!
//! * `allow_env = ["NAME", …]`: `wasi:cli/environment` holds those variables (read from
//!   switchyard's environment at load; unset ones are absent).
//! * `allow_dirs = { "/guest" = "host/dir", … }`: `wasi:filesystem/{types,preopens}`
//!   with each host directory preopened **read-only** under its guest path, and
//!   `wasi:clocks/wall-clock` (file times are wall-clock datetimes, so std's file API
//!   imports it).
//!
//! Sockets, random, the monotonic WASI clock and anything else are never granted: a
//! component importing them is refused at load, naming the import.

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, ResourceTable};
use wasmtime_wasi::cli::{WasiCli, WasiCliView};
use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
use wasmtime_wasi::filesystem::{WasiFilesystem, WasiFilesystemView};
use wasmtime_wasi::p2::bindings as wasi;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxView, WasiView};

use crate::output::{GuestOutput, Stream};
use crate::{ErrorCause, LoadError, PluginConfig};

/// Versions of the plugin contract this host runs: `switchyard:plugin@0.2.x`.
const CONTRACT_SERIES: &str = "0.2.";

/// The first import of the plugin contract in another version than this host's, if any:
/// such a plugin was built against another `wit/plugin.wit` and must be rebuilt.
pub(crate) fn other_contract<'a>(imports: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    imports.into_iter().find(|name| {
        name.strip_prefix("switchyard:plugin/")
            .and_then(|rest| rest.split_once('@'))
            .is_some_and(|(_, version)| !version.starts_with(CONTRACT_SERIES))
    })
}

/// The capabilities of one plugin, resolved at load.
#[derive(Clone, Debug, Default)]
pub(crate) struct Grants {
    /// The granted variables that were set, with their values.
    env: Vec<(String, String)>,
    /// Host directory → guest path, read-only.
    dirs: Vec<(PathBuf, String)>,
}

impl Grants {
    /// Reads what `config` grants; a granted directory that does not exist fails the load.
    pub(crate) fn from_config(plugin: &str, config: &PluginConfig) -> Result<Self, LoadError> {
        let env = config
            .allow_env
            .iter()
            .filter_map(|name| std::env::var(name).ok().map(|value| (name.clone(), value)))
            .collect();
        let mut dirs = Vec::new();
        for (guest, host) in &config.allow_dirs {
            let path = PathBuf::from(host);
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => dirs.push((path, guest.clone())),
                Ok(_) => {
                    return Err(LoadError::Grant {
                        plugin: plugin.to_owned(),
                        message: format!("allow_dirs: {host} (for {guest}) is not a directory"),
                    });
                }
                Err(e) => {
                    return Err(LoadError::Grant {
                        plugin: plugin.to_owned(),
                        message: format!("allow_dirs: cannot open {host} (for {guest}): {e}"),
                    });
                }
            }
        }
        Ok(Self { env, dirs })
    }

    /// Whether a component may import `name` (`package/interface@version`).
    pub(crate) fn allows(&self, name: &str) -> bool {
        let Some((path, version)) = name.split_once('@') else {
            return false;
        };
        let Some((package, interface)) = path.split_once('/') else {
            return false;
        };
        let wasi_02 = version.starts_with("0.2.");
        match package {
            "switchyard:plugin" => {
                version.starts_with(CONTRACT_SERIES) && matches!(interface, "host" | "types")
            }
            "wasi:cli" => {
                wasi_02
                    && matches!(
                        interface,
                        "environment"
                            | "exit"
                            | "stdin"
                            | "stdout"
                            | "stderr"
                            | "terminal-input"
                            | "terminal-output"
                            | "terminal-stdin"
                            | "terminal-stdout"
                            | "terminal-stderr"
                    )
            }
            "wasi:io" => wasi_02 && matches!(interface, "poll" | "error" | "streams"),
            "wasi:filesystem" => {
                wasi_02 && !self.dirs.is_empty() && matches!(interface, "types" | "preopens")
            }
            "wasi:clocks" => wasi_02 && !self.dirs.is_empty() && interface == "wall-clock",
            _ => false,
        }
    }

    /// Links WASI: the wasi:cli and wasi:io interfaces every std guest imports, backed by
    /// a context that holds only what is granted (the granted variables; stdin empty,
    /// stdout and stderr into the log, no arguments), plus the filesystem and wall clock
    /// when directories are granted. Sockets and random are never linked.
    pub(crate) fn add_to_linker<T: WasiView>(&self, l: &mut Linker<T>) -> wasmtime::Result<()> {
        use wasi::cli;
        cli::environment::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::exit::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_input::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_output::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stdin::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stdout::add_to_linker::<T, WasiCli>(l, T::cli)?;
        cli::terminal_stderr::add_to_linker::<T, WasiCli>(l, T::cli)?;
        wasmtime_wasi_io::bindings::wasi::io::error::add_to_linker::<T, Table>(l, table)?;
        wasi::sync::io::poll::add_to_linker::<T, Table>(l, table)?;
        wasi::sync::io::streams::add_to_linker::<T, Table>(l, table)?;
        if !self.dirs.is_empty() {
            wasi::clocks::wall_clock::add_to_linker::<T, WasiClocks>(l, T::clocks)?;
            wasi::filesystem::preopens::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
            wasi::sync::filesystem::types::add_to_linker::<T, WasiFilesystem>(l, T::filesystem)?;
        }
        Ok(())
    }

    /// A fresh WASI context for one instance of the plugin `plugin`.
    pub(crate) fn context(&self, plugin: &Arc<str>) -> Result<Box<Wasi>, ErrorCause> {
        let stdout = GuestOutput::new(plugin.clone(), Stream::Stdout);
        let stderr = GuestOutput::new(plugin.clone(), Stream::Stderr);
        let mut builder = WasiCtx::builder();
        // Calls already run on a blocking thread: do file IO right there.
        builder
            .allow_blocking_current_thread(true)
            .envs(self.env.as_slice())
            .stdout(stdout.clone())
            .stderr(stderr.clone());
        for (host, guest) in &self.dirs {
            builder
                .preopened_dir(host, guest, FsPerms::ReadOnly)
                .map_err(|e| {
                    ErrorCause::Grant(format!(
                        "cannot open the granted directory {} for {guest}: {e:#}",
                        host.display()
                    ))
                })?;
        }
        Ok(Box::new(Wasi {
            ctx: builder.build(),
            table: ResourceTable::new(),
            stdout,
            stderr,
        }))
    }
}

/// The `[plugins.NAME]` key that would grant `import`, when a plain plugin may not import
/// it but a config can grant it (`allow_dirs` for the filesystem and the wall clock).
/// `None` for imports that are always granted or never.
pub fn grant_key(import: &str) -> Option<&'static str> {
    let dirs = Grants {
        dirs: vec![(PathBuf::new(), String::new())],
        ..Grants::default()
    };
    (!Grants::default().allows(import) && dirs.allows(import)).then_some("allow_dirs")
}

/// The WASI state of one instance.
pub(crate) struct Wasi {
    pub(crate) ctx: WasiCtx,
    pub(crate) table: ResourceTable,
    /// The guest's stdout and stderr, as log lines.
    pub(crate) stdout: GuestOutput,
    pub(crate) stderr: GuestOutput,
}

impl Wasi {
    /// Starts a call: what the streams log is bounded per call.
    pub(crate) fn start_call(&self) {
        self.stdout.start_call();
        self.stderr.start_call();
    }

    /// Ends a call: flushes partial lines into the log.
    pub(crate) fn end_call(&self) {
        self.stdout.end_call();
        self.stderr.end_call();
    }

    pub(crate) fn view(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// `wasi:io` host functions work on the resource table alone.
struct Table;

impl HasData for Table {
    type Data<'a> = &'a mut ResourceTable;
}

fn table<T: WasiView>(state: &mut T) -> &mut ResourceTable {
    state.ctx().table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_grants_only_the_contract_and_std_baggage() {
        let none = Grants::default();
        assert!(none.allows("switchyard:plugin/host@0.2.0"));
        assert!(none.allows("switchyard:plugin/types@0.2.1"));
        assert!(!none.allows("switchyard:plugin/types@0.1.0"));
        assert_eq!(
            other_contract(["wasi:io/streams@0.2.6", "switchyard:plugin/types@0.1.0"]),
            Some("switchyard:plugin/types@0.1.0")
        );
        assert_eq!(other_contract(["switchyard:plugin/host@0.2.0"]), None);
        assert!(none.allows("wasi:cli/stderr@0.2.6"));
        assert!(none.allows("wasi:cli/environment@0.2.6"));
        assert!(none.allows("wasi:io/streams@0.2.0"));
        assert!(!none.allows("switchyard:plugin/host@0.3.0"));
        assert_eq!(
            other_contract(["switchyard:plugin/host@0.3.0"]),
            Some("switchyard:plugin/host@0.3.0")
        );
        assert!(!none.allows("wasi:filesystem/preopens@0.2.6"));
        assert!(!none.allows("wasi:filesystem/types@0.2.6"));
        assert!(!none.allows("wasi:sockets/tcp@0.2.6"));
        assert!(!none.allows("wasi:clocks/wall-clock@0.2.6"));
        assert!(!none.allows("wasi:random/random@0.2.6"));
        assert!(!none.allows("wasi:cli/stderr"));
        assert!(!none.allows("evil"));
    }

    #[test]
    fn dirs_grant_the_filesystem_and_wall_clock_only() {
        let dirs = Grants {
            dirs: vec![(PathBuf::from("."), "/data".into())],
            ..Grants::default()
        };
        assert!(dirs.allows("wasi:filesystem/preopens@0.2.6"));
        assert!(dirs.allows("wasi:filesystem/types@0.2.0"));
        assert!(dirs.allows("wasi:clocks/wall-clock@0.2.6"));
        assert!(!dirs.allows("wasi:clocks/monotonic-clock@0.2.6"));
        assert!(!dirs.allows("wasi:sockets/tcp@0.2.6"));
        assert!(!dirs.allows("wasi:sockets/network@0.2.6"));
        assert!(!dirs.allows("wasi:random/random@0.2.6"));
        assert!(!dirs.allows("wasi:filesystem/preopens@0.3.0"));
    }

    #[test]
    fn only_filesystem_and_wall_clock_imports_have_a_grant_key() {
        assert_eq!(grant_key("wasi:filesystem/types@0.2.6"), Some("allow_dirs"));
        assert_eq!(
            grant_key("wasi:clocks/wall-clock@0.2.6"),
            Some("allow_dirs")
        );
        assert_eq!(grant_key("wasi:cli/environment@0.2.6"), None);
        assert_eq!(grant_key("wasi:sockets/tcp@0.2.6"), None);
    }

    #[test]
    fn env_grants_no_import_beyond_the_baggage() {
        let env = Grants {
            env: vec![("REGION".into(), "eu".into())],
            ..Grants::default()
        };
        assert!(env.allows("wasi:cli/environment@0.2.6"));
        assert!(!env.allows("wasi:filesystem/preopens@0.2.6"));
    }
}
