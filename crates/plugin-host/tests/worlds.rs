//! Healthy plugins of each world: decisions, stats, logs, instance reuse and pools.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{batch, config, event, load, quantile};
use switchyard_plugin_host::{
    CONTRACT_VERSION, ErrorCause, HostOptions, LoadError, PluginConfig, PluginHost, PluginPool,
    PoolingOptions, World,
};

#[test]
fn a_filter_keeps_events_and_reports_its_cost() {
    let mut plugin = load("keep-all", &config("keep-all"));
    assert_eq!(plugin.world(), World::Filter);
    assert_eq!(plugin.name(), "keep-all");
    let call = plugin.filter(&batch(64)).expect("call");
    assert_eq!(call.output, vec![true; 64]);
    assert!(call.stats.fuel > 0);
    assert!(call.stats.elapsed > Duration::ZERO);
    // An empty batch is a valid call with an empty answer.
    assert!(plugin.filter(&[]).expect("empty").output.is_empty());
}

#[test]
fn a_router_names_sinks_per_event() {
    let mut plugin = load("router", &config("route-by-kind"));
    assert_eq!(plugin.world(), World::Router);
    let mut events = vec![event("a", "{}"), event("b", "{}"), event("c", "{}")];
    events[0].kind = "insert".into();
    events[1].kind = "drop".into();
    events[2].kind = "delete".into();
    let call = plugin.route(&events).expect("route");
    assert_eq!(
        call.output,
        vec![
            vec!["insert".to_string()],
            vec![],
            vec!["delete".to_string()]
        ]
    );
}

#[test]
fn a_transform_splits_and_drops_events() {
    let mut plugin = load("splitter", &config("split"));
    assert_eq!(plugin.world(), World::Transform);
    let input = vec![event("a", "{}"), event("b", "")];
    let call = plugin.transform(&input).expect("transform");
    assert_eq!(call.output.len(), 2);
    let ids: Vec<&str> = call.output[0].iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a-a", "a-b"]);
    assert_eq!(call.output[0][0].header("split"), Some("yes"));
    assert_eq!(call.output[0][0].payload, input[0].payload);
    assert_eq!(call.output[0][0].key, input[0].key);
    assert!(call.output[1].is_empty());

    let err = plugin
        .transform(&[event("x", "fail")])
        .expect_err("plugin returns err");
    assert_eq!(
        err.cause,
        ErrorCause::Returned("event x cannot be split".into())
    );
    assert!(plugin.transform(&input).is_ok());
}

#[test]
fn every_field_of_every_event_reaches_the_plugin_intact() {
    // Events packed into one batch: no key, an empty key, repeated and unicode headers,
    // empty strings, binary payloads, big and small. `split` hands each one back (with a
    // new id and one more header), so what it saw is what comes out.
    let mut odd = event("é-1", "");
    odd.payload = vec![0, 0xff, b'\n', 0x80];
    odd.key = None;
    odd.source = String::new().into();
    odd.headers = vec![
        ("tag".into(), "a".into()),
        ("tag".into(), "b".into()),
        ("ünï".into(), String::new()),
    ];
    odd.timestamp_ms = u64::MAX;
    let mut empty_key = event("k", "{}");
    empty_key.key = Some(Vec::new());
    empty_key.headers.clear();
    empty_key.content_type = "text/plain; charset=utf-8".into();
    let mut big = event("big", "");
    big.payload = vec![b'x'; 100_000];
    let input = vec![odd, empty_key, big, event("last", "{\"n\":1}")];

    let mut plugin = load("splitter", &config("split"));
    for _ in 0..2 {
        // Twice: the host reuses its buffers from call to call.
        let call = plugin.transform(&input).expect("transform");
        for (out, sent) in call.output.iter().zip(&input) {
            let mut back = out[0].clone();
            assert_eq!(back.id, format!("{}-a", sent.id));
            assert_eq!(back.headers.pop(), Some(("split".into(), "yes".into())));
            back.id.clone_from(&sent.id);
            assert_eq!(&back, sent);
        }
    }
}

#[test]
fn a_plugin_built_for_the_old_contract_is_refused_with_how_to_rebuild_it() {
    let host = PluginHost::new().expect("host");
    let err = host
        .load("legacy", &config("contract-0-1"))
        .expect_err("a 0.1 plugin does not load");
    assert!(
        matches!(&err, LoadError::OtherContract { found, .. } if found.contains("@0.1.0")),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("plugin `legacy` was built for switchyard:plugin/")
            && msg.contains(&format!("switchyard:plugin@{CONTRACT_VERSION}"))
            && msg.contains("cargo build --release --target wasm32-wasip2"),
        "{msg}"
    );
}

#[test]
fn calling_the_wrong_world_is_an_error_not_a_panic() {
    let mut plugin = load("keep-all", &config("keep-all"));
    let err = plugin.route(&batch(1)).expect_err("not a router");
    assert_eq!(
        err.cause,
        ErrorCause::WrongWorld {
            world: World::Filter,
            called: World::Router
        }
    );
    assert!(plugin.transform(&batch(1)).is_err());
    assert!(plugin.filter(&batch(1)).is_ok());
}

#[test]
fn a_pool_serves_several_threads() {
    let plugin = load("keep-all", &config("keep-all"));
    let pool = Arc::new(PluginPool::new(plugin, 4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                for _ in 0..50 {
                    let call = pool.filter(&batch(16)).expect("call");
                    assert_eq!(call.output.len(), 16);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert!((1..=4).contains(&pool.idle()));
    assert_eq!(pool.world(), World::Filter);
}

#[test]
fn the_pooling_allocator_runs_plugins_and_enforces_limits() {
    let host = PluginHost::with_options(&HostOptions {
        pooling: Some(PoolingOptions {
            instances: 8,
            max_memory: 64 << 20,
        }),
        ..HostOptions::default()
    })
    .expect("pooling host");
    let mut keep = host.load("keep-all", &config("keep-all")).expect("load");
    assert_eq!(keep.filter(&batch(8)).expect("call").output, vec![true; 8]);

    let mut bomb = host
        .load(
            "memory-bomb",
            &PluginConfig {
                memory: switchyard_config::ByteSize(16 << 20),
                fuel: u64::MAX,
                ..config("memory-bomb")
            },
        )
        .expect("load");
    for _ in 0..5 {
        let err = bomb.filter(&[event("boom", "bomb")]).expect_err("limit");
        assert_eq!(err.cause, ErrorCause::MemoryLimit { limit: 16 << 20 });
        assert!(bomb.filter(&batch(1)).is_ok());
    }
}

/// Prints the per-call overhead: an empty batch, and a batch of 64 events through a
/// filter that does nothing but answer. Timings are printed, not asserted.
#[test]
fn per_call_overhead() {
    let mut plugin = load("keep-all", &config("keep-all"));
    let events = batch(64);
    for _ in 0..200 {
        plugin.filter(&events).expect("warm up");
    }
    for (label, input) in [("empty batch", &[][..]), ("batch of 64", &events[..])] {
        let mut samples = Vec::with_capacity(2000);
        let started = Instant::now();
        for _ in 0..2000 {
            samples.push(plugin.filter(input).expect("call").stats.elapsed);
        }
        let mean = started.elapsed() / 2000;
        println!(
            "{label}: mean {mean:?} per call (wall), call p50 {:?}, p99 {:?}",
            quantile(&mut samples, 0.5),
            quantile(&mut samples, 0.99)
        );
    }
    let mut fresh = Vec::new();
    for _ in 0..50 {
        let mut p = plugin.fork();
        let started = Instant::now();
        p.warm_up().expect("start");
        fresh.push(started.elapsed());
    }
    println!("fresh instance + init: p50 {:?}", quantile(&mut fresh, 0.5));
}

#[test]
fn a_plugin_too_big_for_the_pool_is_refused_at_load() {
    let host = PluginHost::with_options(&HostOptions {
        pooling: Some(PoolingOptions {
            instances: 2,
            max_memory: 8 << 20,
        }),
        ..HostOptions::default()
    })
    .expect("pooling host");
    let err = host
        .load("keep-all", &config("keep-all"))
        .expect_err("64 MiB does not fit an 8 MiB slot");
    assert!(
        err.to_string().contains("PoolingOptions::max_memory"),
        "{err}"
    );
}
