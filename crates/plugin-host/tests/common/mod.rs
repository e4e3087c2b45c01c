//! Helpers for host tests: fixture paths, configs and events.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use switchyard_plugin_host::{Event, Plugin, PluginConfig, PluginHost};

/// Path of a fixture built by `scripts/build-plugins.sh`, e.g. `keep-all`.
pub fn fixture(name: &str) -> PathBuf {
    let file = format!("{}.wasm", name.replace('-', "_"));
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/target/wasm32-wasip2/release")
        .join(file);
    assert!(
        path.exists(),
        "fixture {} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

/// A config for fixture `name` with generous limits unless the test narrows them.
pub fn config(name: &str) -> PluginConfig {
    PluginConfig {
        path: fixture(name).display().to_string(),
        timeout: Duration::from_secs(5),
        ..PluginConfig::default()
    }
}

pub fn load(name: &str, config: &PluginConfig) -> Plugin {
    let host = PluginHost::new().expect("host");
    host.load(name, config).expect("load")
}

pub fn event(id: &str, payload: &str) -> Event {
    Event {
        id: id.into(),
        source: "orders".into(),
        kind: "message".into(),
        key: Some(id.as_bytes().to_vec()),
        payload: payload.as_bytes().to_vec(),
        content_type: "application/json".into(),
        headers: vec![("trace".into(), id.into())],
        timestamp_ms: 1_700_000_000_000,
        payload_is_compact_json: false,
    }
}

/// `n` ordinary events.
pub fn batch(n: usize) -> Vec<Event> {
    (0..n)
        .map(|i| event(&format!("e{i}"), r#"{"status":"ok","n":1}"#))
        .collect()
}

/// The `q` quantile of `samples` (sorted in place).
pub fn quantile(samples: &mut [Duration], q: f64) -> Duration {
    samples.sort();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}
