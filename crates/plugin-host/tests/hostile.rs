//! Plugins that misbehave: each failure fails its batch only, with the right cause, and
//! the next call on the same `Plugin` runs on a fresh instance and succeeds.

mod common;

use std::time::Duration;

use common::{batch, config, event, load, quantile};
use switchyard_plugin_host::{ErrorCause, LoadError, PluginConfig, PluginHost};

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    // Long enough that starting an instance (under the same deadline) never hits it on
    // a loaded machine; the loop itself never ends, so only the deadline stops it.
    let deadline = Duration::from_millis(200);
    let mut plugin = load(
        "loop-forever",
        &PluginConfig {
            timeout: deadline,
            fuel: u64::MAX,
            ..config("loop-forever")
        },
    );
    let mut overshoot = Vec::new();
    for i in 0..20 {
        let err = plugin
            .filter(&[event("ok", "{}"), event("spin", "loop")])
            .expect_err("the loop must be interrupted");
        assert_eq!(
            err.cause,
            ErrorCause::Timeout { limit: deadline },
            "call {i}: {err}"
        );
        assert!(err.is_transient());
        overshoot.push(err.stats.elapsed.saturating_sub(deadline));

        let ok = plugin
            .filter(&batch(4))
            .expect("a fresh instance serves the next batch");
        assert_eq!(ok.output, vec![true; 4]);
    }
    let p50 = quantile(&mut overshoot, 0.5);
    let p99 = quantile(&mut overshoot, 0.99);
    println!(
        "deadline {deadline:?}: overshoot over 20 calls p50 {p50:?}, p99 {p99:?}, max {:?}",
        overshoot[overshoot.len() - 1]
    );
}

#[test]
fn an_infinite_loop_runs_out_of_fuel() {
    let mut plugin = load(
        "loop-forever",
        &PluginConfig {
            fuel: 1_000_000,
            ..config("loop-forever")
        },
    );
    let err = plugin
        .filter(&[event("spin", "loop")])
        .expect_err("out of fuel");
    assert_eq!(err.cause, ErrorCause::OutOfFuel { budget: 1_000_000 });
    assert_eq!(err.stats.fuel, 1_000_000);
    assert!(!err.is_transient());
    let ok = plugin.filter(&batch(3)).expect("next call succeeds");
    assert_eq!(ok.output, vec![true; 3]);
    assert!(ok.stats.fuel > 0 && ok.stats.fuel < 1_000_000);
}

#[test]
fn a_memory_bomb_stops_at_the_limit() {
    let limit = 16 << 20;
    let mut plugin = load(
        "memory-bomb",
        &PluginConfig {
            memory: switchyard_config::ByteSize(limit),
            // Filling 1 MiB blocks burns fuel; let the memory limit be what stops it.
            fuel: u64::MAX,
            ..config("memory-bomb")
        },
    );
    let err = plugin
        .filter(&[event("boom", "bomb")])
        .expect_err("limit hit");
    assert_eq!(err.cause, ErrorCause::MemoryLimit { limit }, "{err}");
    println!("memory bomb stopped after {:?}", err.stats.elapsed);
    let ok = plugin.filter(&batch(2)).expect("next call succeeds");
    assert_eq!(ok.output, vec![true; 2]);
}

#[test]
fn a_panic_traps() {
    let mut plugin = load("panics", &config("panics"));
    let err = plugin
        .filter(&[event("a", "{}"), event("b", "panic")])
        .expect_err("a panic traps");
    let ErrorCause::Trap(message) = &err.cause else {
        panic!("expected a trap, got {err}");
    };
    // The panic message the guest printed to stderr comes with the trap.
    assert!(
        message.contains("unreachable") && message.contains("event b asked for a panic"),
        "{message}"
    );
    println!("{err}");
    let ok = plugin.filter(&batch(2)).expect("next call succeeds");
    assert_eq!(ok.output, vec![true; 2]);
}

#[test]
fn a_wrong_number_of_decisions_is_rejected() {
    let mut plugin = load("wrong-count", &config("wrong-count"));
    let err = plugin
        .filter(&[event("a", "{}"), event("b", "short"), event("c", "{}")])
        .expect_err("one decision short");
    assert_eq!(
        err.cause,
        ErrorCause::WrongDecisionCount {
            expected: 3,
            got: 2
        }
    );
    assert_eq!(err.batch, 3);
    let ok = plugin.filter(&batch(3)).expect("next call succeeds");
    assert_eq!(ok.output, vec![true; 3]);
}

#[test]
fn a_bad_config_fails_the_load_with_the_plugins_message() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load("strict", &config("bad-init"))
        .expect_err("init returns err");
    assert!(matches!(err, LoadError::Init { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("plugin `strict`")
            && msg.contains(r#"bad-init needs a "field" key in its config, got {}"#),
        "{msg}"
    );

    let mut plugin = host
        .load(
            "strict",
            &PluginConfig {
                config: serde_json::json!({"field": "status"}),
                ..config("bad-init")
            },
        )
        .expect("a good config loads");
    assert_eq!(plugin.filter(&batch(1)).expect("call").output, vec![true]);
}

#[test]
fn a_plugin_importing_the_filesystem_is_refused() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load("reader", &config("imports-fs"))
        .expect_err("filesystem is not granted");
    let LoadError::ImportNotGranted { imports, .. } = &err else {
        panic!("expected ImportNotGranted, got {err:?}");
    };
    assert!(
        imports
            .iter()
            .any(|i| i.starts_with("wasi:filesystem/preopens@0.2")),
        "{imports:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("plugin `reader` imports ")
            && msg.contains("wasi:filesystem/preopens@0.2")
            && msg.contains("not granted"),
        "{msg}"
    );
    println!("{msg}");
}

#[test]
fn a_missing_or_invalid_file_fails_the_load() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load(
            "ghost",
            &PluginConfig {
                path: "/nonexistent/ghost.wasm".into(),
                ..PluginConfig::default()
            },
        )
        .expect_err("no file");
    assert!(matches!(err, LoadError::Io { .. }), "{err:?}");

    let err = host
        .load_bytes(
            "junk",
            std::path::Path::new("junk.wasm"),
            b"not wasm",
            &PluginConfig::default(),
        )
        .expect_err("not a component");
    assert!(matches!(err, LoadError::Compile { .. }), "{err:?}");
}

#[test]
fn a_runaway_init_is_stopped_by_the_deadline_and_fails_the_load() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load(
            "slow-start",
            &PluginConfig {
                config: serde_json::json!({"init": "loop"}),
                timeout: Duration::from_millis(20),
                fuel: u64::MAX,
                ..config("loop-forever")
            },
        )
        .expect_err("init never returns");
    let LoadError::Start { cause, .. } = &err else {
        panic!("expected a start failure, got {err:?}");
    };
    assert_eq!(
        *cause,
        ErrorCause::Timeout {
            limit: Duration::from_millis(20)
        }
    );
}
