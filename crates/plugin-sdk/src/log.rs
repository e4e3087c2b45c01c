//! Logging through switchyard's log (the `host.log` import), tagged with the plugin's name.
//! Format the message yourself: `log::info(&format!("kept {n} events"))`.
//!
//! Inside switchyard the line goes to the host; when the plugin's code runs natively (its
//! unit tests on the build machine) it goes to stderr instead, so the same code is testable
//! without a host.

pub use crate::bindings::host::Level;

/// Writes one line at this level.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::host::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

pub fn trace(message: &str) {
    log(Level::Trace, message);
}

pub fn debug(message: &str) {
    log(Level::Debug, message);
}

pub fn info(message: &str) {
    log(Level::Info, message);
}

pub fn warn(message: &str) {
    log(Level::Warn, message);
}

pub fn error(message: &str) {
    log(Level::Error, message);
}
