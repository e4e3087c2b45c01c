//! The `log` import, and what a plugin prints to stderr, reach `tracing`, tagged with the
//! plugin's name.
//!
//! Alone in its own test binary: tracing caches per-callsite interest process-wide, so a
//! thread-local subscriber can miss events when other tests run in parallel threads.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::{batch, config, load};
use switchyard_plugin_host::PluginConfig;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn plugin_logs_reach_tracing_tagged_with_the_plugin_name() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut plugin = load(
            "audit",
            &PluginConfig {
                config: serde_json::json!({"mode": "all"}),
                ..config("keep-all")
            },
        );
        plugin.filter(&batch(3)).expect("call");
        // A Rust panic prints its message to stderr before it traps.
        let mut panics = load("panicky", &config("panics"));
        let err = panics
            .filter(&[common::event("boom", "panic")])
            .expect_err("a panic traps");
        assert!(err.to_string().contains("asked for a panic"), "{err}");
    });
    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("utf-8");
    assert!(
        logs.contains(r#"keep-all ready with config {"mode":"all"}"#) && logs.contains("INFO"),
        "{logs}"
    );
    assert!(logs.contains("plugin=\"audit\""), "{logs}");
    assert!(logs.contains("kept 3 events in"), "{logs}");
    let stderr_line = logs
        .lines()
        .find(|l| l.contains("event boom asked for a panic"))
        .unwrap_or_else(|| panic!("the panic message is not in the log:\n{logs}"));
    assert!(
        stderr_line.contains("WARN")
            && stderr_line.contains("plugin=\"panicky\"")
            && stderr_line.contains("stream=\"stderr\""),
        "{stderr_line}"
    );
}
