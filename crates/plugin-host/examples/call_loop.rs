//! Calls one filter plugin in a loop on batches like `cargo xtask bench plugin`'s, for
//! profiling the host's cost per call (`perf record -g`, `valgrind --tool=callgrind`).
//!
//! ```text
//! cargo build --release -p switchyard-plugin-host --example call_loop
//! perf record -g target/release/examples/call_loop plugins/target/wasm32-wasip2/release/keep_all.wasm 64 20000
//! ```
//!
//! Arguments: the component, events per call (default 64), calls (default 20000). It prints
//! the wall time per event, which is only a hint on a shared machine: use it for profiles
//! and instruction counts, and `cargo xtask bench plugin` for figures.

use std::time::{Duration, Instant};

use switchyard_plugin_host::{Event, PluginConfig, PluginHost};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: call_loop FILE.wasm [BATCH] [CALLS]");
    let batch: usize = args.next().map_or(64, |a| a.parse().expect("BATCH"));
    let calls: usize = args.next().map_or(20_000, |a| a.parse().expect("CALLS"));

    let events: Vec<Event> = (0..4096)
        .map(|i| Event {
            id: format!("bench-{i}").into(),
            source: "bench".into(),
            kind: "message".into(),
            key: Some(format!("key-{:05}", i % 1024).into_bytes()),
            payload: payload(i, if i % 2 == 0 { "paid" } else { "new" }),
            content_type: "application/json".into(),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i as u64,
            payload_is_compact_json: false,
        })
        .collect();
    let chunks: Vec<&[Event]> = events.chunks_exact(batch).collect();

    let host = PluginHost::new().expect("a plugin host");
    let config = PluginConfig {
        path: path.clone(),
        config: serde_json::json!({ "field": "status", "equals": "paid" }),
        fuel: 1_000_000_000_000,
        timeout: Duration::from_secs(10),
        ..PluginConfig::default()
    };
    let mut plugin = host.load("call_loop", &config).expect("the plugin loads");

    let start = Instant::now();
    let mut kept = 0usize;
    for i in 0..calls {
        let call = plugin.filter(chunks[i % chunks.len()]).expect("a call");
        kept += call.output.iter().filter(|k| **k).count();
    }
    let elapsed = start.elapsed();
    println!(
        "{path}: {calls} calls of {batch}: {:.0} ns/event ({kept} kept)",
        elapsed.as_nanos() as f64 / (calls * batch) as f64
    );
}

/// A 200-byte JSON body like the bench's: `{"conn","seq","status","pad"}`.
fn payload(i: usize, status: &str) -> Vec<u8> {
    let mut body = format!(
        r#"{{"conn":{},"seq":{i},"status":"{status}","pad":""#,
        i % 64
    );
    while body.len() < 198 {
        body.push('x');
    }
    body.push_str("\"}");
    body.into_bytes()
}
