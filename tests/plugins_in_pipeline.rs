//! WebAssembly plugins decide where events go: a filter keeps paid orders, a transform
//! masks card numbers, a router sends changes by table, and a plugin that loops forever
//! is stopped at its deadline — its batch is dead-lettered and its pipeline goes on.
//! Hostile plugins (a memory bomb, a panic, a wrong number of decisions) cost only their
//! batches while a healthy pipeline on the same source delivers everything; `on_error`
//! drop and stop, and a router naming a sink that does not exist.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, check, switchyard_command, tail};
use switchyard_tests::{
    Load, Progress, Tracked, WEBHOOK_SECRET, WebhookReceiver, client, deliveries, runtime,
    wait_for_all_delivered, wait_until,
};

/// A plugin built by `scripts/build-plugins.sh`.
fn wasm(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path.canonicalize().unwrap().display().to_string()
}

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn post(base: &str, content_type: &str, body: &str) -> u16 {
    runtime().block_on(async {
        client()
            .post(format!("{base}/ingest/api"))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("switchyard answers")
            .status()
            .as_u16()
    })
}

#[test]
fn filters_transforms_and_routers_shape_what_each_sink_gets() {
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"

[plugins.paid_only]
path = "{filter}"
config = {{ field = "status", equals = "paid" }}

[plugins.mask_cards]
path = "{redact}"
config = {{ fields = ["card"] }}

[plugins.by_table]
path = "{router}"
config = {{ routes = {{ "public.orders" = ["orders"] }}, default = ["rest"] }}

[pipelines.billing]
from = ["api"]
filters = ["paid_only"]
transforms = ["mask_cards"]
to = ["paid"]

[pipelines.tables]
from = ["api"]
router = "by_table"

[sinks.paid]
type = "file"
path = "{{dir}}/paid.jsonl"

[sinks.orders]
type = "file"
path = "{{dir}}/orders.jsonl"

[sinks.rest]
type = "file"
path = "{{dir}}/rest.jsonl"
"#,
        filter = wasm("filter_by_field"),
        redact = wasm("redact_fields"),
        router = wasm("route_by_table"),
    ));
    let base = switchyard.url();
    let events = [
        r#"{"status":"paid","card":"4111-1111","schema":"public","table":"orders"}"#,
        r#"{"status":"open","card":"5500-0000","schema":"public","table":"orders"}"#,
        r#"{"status":"paid","card":"3400-0000","schema":"public","table":"customers"}"#,
    ];
    for e in events {
        assert_eq!(post(&base, "application/json", e), 200);
    }
    let dir = switchyard.dir().to_path_buf();
    assert!(
        wait_until(Duration::from_secs(30), || {
            lines(&dir.join("paid.jsonl")).len() == 2
                && lines(&dir.join("orders.jsonl")).len() + lines(&dir.join("rest.jsonl")).len()
                    == 3
        }),
        "deliveries did not arrive; log:\n{}",
        switchyard.logs()
    );
    let paid = lines(&dir.join("paid.jsonl"));
    for e in &paid {
        assert_eq!(e["payload"]["status"], "paid", "the filter let {e} through");
        assert_eq!(e["payload"]["card"], "***", "the card of {e} is not masked");
    }
    let orders = lines(&dir.join("orders.jsonl"));
    assert_eq!(orders.len(), 2);
    assert!(orders.iter().all(|e| e["payload"]["table"] == "orders"));
    // The router pipeline has no transform: cards are untouched there.
    assert!(orders.iter().any(|e| e["payload"]["card"] == "4111-1111"));
    let rest = lines(&dir.join("rest.jsonl"));
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["payload"]["table"], "customers");

    let metrics = runtime().block_on(async {
        client()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.contains(r#"switchyard_plugin_decisions_total{plugin="paid_only",kind="drop"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"switchyard_plugin_calls_total{plugin="by_table"}"#));
}

#[test]
fn a_runaway_plugin_is_stopped_its_batch_dead_lettered_and_the_pipeline_goes_on() {
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "admin-secret-0123456789"

[sources.api]
type = "http"

[plugins.runaway]
path = "{runaway}"
timeout = "20ms"
fuel = 1_000_000_000_000
on_error = "dead_letter"

[pipelines.guarded]
from = ["api"]
filters = ["runaway"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#,
        runaway = wasm("loop_forever"),
    ));
    let base = switchyard.url();
    // The payload `loop` makes the plugin spin forever.
    assert_eq!(post(&base, "text/plain", "loop"), 200);
    let dead_letters = || {
        runtime().block_on(async {
            client()
                .get(format!("{base}/admin/dlq/dead-letters"))
                .bearer_auth("admin-secret-0123456789")
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()["dead_letters"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
    };
    assert!(
        wait_until(Duration::from_secs(30), || dead_letters().len() == 1),
        "the runaway batch was not dead-lettered; log:\n{}",
        switchyard.logs()
    );
    let letter = &dead_letters()[0]["event"];
    assert_eq!(
        letter["headers"]["x-switchyard-dead-letter-plugin"],
        "runaway"
    );
    let error = letter["headers"]["x-switchyard-dead-letter-error"]
        .as_str()
        .unwrap();
    assert!(error.contains("deadline"), "{error}");

    // The same pipeline keeps working with a fresh instance.
    for n in 0..5 {
        assert_eq!(
            post(&base, "application/json", &format!(r#"{{"n":{n}}}"#)),
            200
        );
    }
    let out = switchyard.dir().join("out.jsonl");
    assert!(
        wait_until(Duration::from_secs(30), || lines(&out).len() == 5),
        "healthy events after the trap were not delivered; log:\n{}",
        switchyard.logs()
    );
}

#[test]
fn a_plugin_that_rejects_its_config_stops_the_start_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bad.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
data_dir = "{data}"

[sources.api]
type = "http"

[plugins.picky]
path = "{bad}"

[pipelines.p]
from = ["api"]
filters = ["picky"]
to = ["out"]

[sinks.out]
type = "stdout"
"#,
            data = dir.path().join("data").display(),
            bad = wasm("filter_by_field"),
        ),
    )
    .unwrap();
    let output = switchyard_command()
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .expect("running switchyard");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("plugin `picky` rejected its config"),
        "{stderr}"
    );
}

// ── Hostile plugins in the real binary ─────────────────────────────────────────────────

const ADMIN: &str = "admin-secret-0123456789";

fn get_text(url: &str) -> String {
    runtime().block_on(async {
        client()
            .get(url)
            .send()
            .await
            .expect("switchyard answers")
            .text()
            .await
            .expect("a body")
    })
}

/// Every record of the default dead-letter queue.
fn dead_letters(base: &str) -> Vec<serde_json::Value> {
    runtime().block_on(async {
        client()
            .get(format!("{base}/admin/dlq/dead-letters?limit=10000"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("switchyard answers")
            .json::<serde_json::Value>()
            .await
            .expect("JSON")["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
}

/// Posts one opaque event with id `id`; the status.
fn post_with_id(base: &str, id: &str, body: &str) -> u16 {
    runtime().block_on(async {
        client()
            .post(format!("{base}/ingest/api"))
            .header("content-type", "text/plain")
            .header("idempotency-key", id)
            .body(body.to_owned())
            .send()
            .await
            .expect("switchyard answers")
            .status()
            .as_u16()
    })
}

/// The value of the metric line starting with `prefix` (name and labels), if present.
fn metric(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(prefix))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A checker record keyed by its own id: only loss is counted (the order of a file sink
/// and a dead-letter queue together means nothing).
fn seen(id: &str) -> Tracked {
    Tracked::new(id, id, 0)
}

/// A pipeline with a hostile filter and a healthy pipeline on the same source, under a
/// small keyed load with `triggers` mixed in. The trigger batches are dead-lettered with
/// the error, nothing acknowledged is lost from either pipeline, the healthy one delivers
/// everything, the process keeps running, and the error shows on /metrics by cause.
fn hostile_plugin_costs_only_its_batches(
    fixture: &str,
    trigger: &str,
    error_words: &str,
    cause: &str,
) {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{ADMIN}"

[sources.api]
type = "http"

[plugins.hostile]
path = "{hostile}"
memory = "16MiB"                # the bomb must hit this, not fuel or the deadline
fuel = 1_000_000_000_000
timeout = "2s"

[plugins.healthy]
path = "{healthy}"

[pipelines.hostile]
from = ["api"]
filters = ["hostile"]
to = ["kept"]

[pipelines.healthy]
from = ["api"]
filters = ["healthy"]
to = ["hook"]

[sinks.kept]
type = "file"
path = "{{dir}}/kept.jsonl"

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
"#,
        hostile = wasm(fixture),
        healthy = wasm("keep_all"),
        url = receiver.url(),
    ));
    let base = switchyard.url();
    let load = Load {
        base: base.clone(),
        source: "api".into(),
        keys: 4,
        per_key: 40,
        producers: 4,
        pad: 8,
        give_up_after: Duration::from_secs(30),
    };
    let progress = Arc::new(Progress::default());
    let rt = runtime();
    let producers = rt.spawn(load.run(progress.clone()));
    let triggers: Vec<String> = (0..3).map(|n| format!("trigger-{n}")).collect();
    for id in &triggers {
        assert_eq!(post_with_id(&base, id, trigger), 200);
    }
    rt.block_on(producers).expect("producers");
    assert_eq!(progress.gave_up(), None, "a producer gave up");
    let acked_load = progress.acked();
    assert_eq!(acked_load.len(), 160);

    // The healthy pipeline delivers every acknowledged event.
    let all_arrived = wait_for_all_delivered(&receiver, &acked_load, Duration::from_secs(60));
    let report = check(&acked_load, &deliveries(&receiver));
    assert!(
        all_arrived && report.lost == 0,
        "healthy pipeline: {report}\n{}",
        tail(&switchyard.logs(), 40)
    );
    assert_eq!(report.reordered, 0, "healthy pipeline: {report}");

    // The hostile pipeline: every acknowledged event was delivered or dead-lettered.
    let mut acked: Vec<Tracked> = acked_load.iter().map(|t| seen(&t.id)).collect();
    acked.extend(triggers.iter().map(|id| seen(id)));
    let kept = switchyard.dir().join("kept.jsonl");
    let outcomes = || {
        let mut got: Vec<Tracked> = lines(&kept)
            .iter()
            .map(|e| seen(e["id"].as_str().expect("an id")))
            .collect();
        got.extend(
            dead_letters(&base)
                .iter()
                .map(|l| seen(l["event"]["id"].as_str().expect("an id"))),
        );
        got
    };
    assert!(
        wait_until(Duration::from_secs(60), || check(&acked, &outcomes()).lost
            == 0),
        "hostile pipeline: {}\n{}",
        check(&acked, &outcomes()),
        tail(&switchyard.logs(), 40)
    );
    let letters = dead_letters(&base);
    for id in &triggers {
        let letter = letters
            .iter()
            .map(|l| &l["event"])
            .find(|e| e["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{id} is not dead-lettered: {letters:?}"));
        assert_eq!(
            letter["headers"]["x-switchyard-dead-letter-plugin"],
            "hostile"
        );
        let error = letter["headers"]["x-switchyard-dead-letter-error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains(error_words), "{id}: {error}");
    }
    assert!(
        lines(&kept)
            .iter()
            .all(|e| !triggers.iter().any(|t| e["id"] == t.as_str())),
        "a trigger was delivered"
    );
    // Only trigger batches failed: the healthy events of other batches went through.
    assert!(
        !lines(&kept).is_empty(),
        "the hostile pipeline delivered nothing"
    );

    let metrics = get_text(&format!("{base}/metrics"));
    let errors = metric(
        &metrics,
        &format!(r#"switchyard_plugin_errors_total{{plugin="hostile",kind="{cause}"}}"#),
    );
    assert!(
        errors.is_some_and(|n| n >= 1.0),
        "no {cause} errors:\n{metrics}"
    );
    for histogram in ["switchyard_plugin_fuel", "switchyard_plugin_call_seconds"] {
        for plugin in ["hostile", "healthy"] {
            let count = metric(
                &metrics,
                &format!(r#"{histogram}_count{{plugin="{plugin}"}}"#),
            );
            assert!(
                count.is_some_and(|n| n >= 1.0),
                "no {histogram} for {plugin}:\n{metrics}"
            );
        }
    }
    assert!(switchyard.is_running(), "switchyard exited");
}

#[test]
fn a_memory_bomb_costs_only_its_batches() {
    hostile_plugin_costs_only_its_batches("memory_bomb", "bomb", "memory limit", "memory");
}

#[test]
fn a_panicking_plugin_costs_only_its_batches() {
    hostile_plugin_costs_only_its_batches("panics", "panic", "trapped", "trap");
}

#[test]
fn a_plugin_returning_the_wrong_number_of_decisions_costs_only_its_batches() {
    hostile_plugin_costs_only_its_batches(
        "wrong_count",
        "short",
        "decisions for",
        "wrong_decision_count",
    );
}

/// A config with a pipeline `guarded` (the `panics` filter with `on_error`) and a healthy
/// pipeline `plain`, both on `api`, each to its own file. One partition: `stop` halts the
/// reader of the failed batch's partition, so with one the whole pipeline halts.
fn with_on_error(on_error: &str) -> Switchyard {
    Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{ADMIN}"

[sources.api]
type = "http"
partitions = 1

[plugins.fragile]
path = "{panics}"
on_error = "{on_error}"

[pipelines.guarded]
from = ["api"]
filters = ["fragile"]
to = ["guarded"]

[pipelines.plain]
from = ["api"]
to = ["plain"]

[sinks.guarded]
type = "file"
path = "{{dir}}/guarded.jsonl"

[sinks.plain]
type = "file"
path = "{{dir}}/plain.jsonl"
"#,
        panics = wasm("panics"),
    ))
}

fn errors_of(base: &str, plugin: &str) -> f64 {
    let metrics = get_text(&format!("{base}/metrics"));
    metric(
        &metrics,
        &format!(r#"switchyard_plugin_errors_total{{plugin="{plugin}",kind="trap"}}"#),
    )
    .unwrap_or(0.0)
}

#[test]
fn on_error_drop_drops_the_failed_batch_and_goes_on() {
    let mut switchyard = with_on_error("drop");
    let base = switchyard.url();
    assert_eq!(post_with_id(&base, "boom", "panic"), 200);
    assert!(
        wait_until(Duration::from_secs(30), || errors_of(&base, "fragile")
            >= 1.0),
        "the panic was not counted; log:\n{}",
        switchyard.logs()
    );
    for n in 0..5 {
        assert_eq!(post_with_id(&base, &format!("after-{n}"), "fine"), 200);
    }
    let dir = switchyard.dir().to_path_buf();
    assert!(
        wait_until(Duration::from_secs(30), || lines(
            &dir.join("guarded.jsonl")
        )
        .len()
            == 5
            && lines(&dir.join("plain.jsonl")).len() == 6),
        "deliveries after the dropped batch did not arrive; log:\n{}",
        switchyard.logs()
    );
    assert!(
        lines(&dir.join("guarded.jsonl"))
            .iter()
            .all(|e| e["id"] != "boom"),
        "the failed event was delivered"
    );
    assert!(
        dead_letters(&base).is_empty(),
        "on_error = drop dead-lettered"
    );
    assert!(switchyard.is_running());
}

#[test]
fn on_error_stop_halts_only_that_pipeline_with_its_events_unacknowledged() {
    let mut switchyard = with_on_error("stop");
    let base = switchyard.url();
    assert_eq!(post_with_id(&base, "boom", "panic"), 200);
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .logs()
            .contains("on_error = \\\"stop\\\" failed")
            || switchyard.logs().contains("on_error = \"stop\" failed")),
        "the pipeline did not stop; log:\n{}",
        switchyard.logs()
    );
    for n in 0..5 {
        assert_eq!(post_with_id(&base, &format!("after-{n}"), "fine"), 200);
    }
    let dir = switchyard.dir().to_path_buf();
    assert!(
        wait_until(Duration::from_secs(30), || lines(&dir.join("plain.jsonl"))
            .len()
            == 6),
        "the other pipeline stopped too; log:\n{}",
        switchyard.logs()
    );
    // The plain pipeline has delivered events posted after the stop; the stopped one has
    // not read them (its checkpoint stays before the failed batch).
    assert!(
        lines(&dir.join("guarded.jsonl")).is_empty(),
        "the stopped pipeline delivered"
    );
    assert!(
        dead_letters(&base).is_empty(),
        "on_error = stop dead-lettered"
    );
    assert!(
        switchyard.is_running(),
        "stop halts a pipeline, not the process"
    );
}

#[test]
fn a_router_naming_an_unknown_sink_dead_letters_that_event() {
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{ADMIN}"

[sources.api]
type = "http"

[plugins.by_table]
path = "{router}"
config = {{ routes = {{ "public.ghosts" = ["nowhere"] }}, default = ["rest"] }}

[pipelines.tables]
from = ["api"]
router = "by_table"

[sinks.rest]
type = "file"
path = "{{dir}}/rest.jsonl"
"#,
        router = wasm("route_by_table"),
    ));
    let base = switchyard.url();
    assert_eq!(
        post(
            &base,
            "application/json",
            r#"{"schema":"public","table":"ghosts"}"#
        ),
        200
    );
    assert_eq!(
        post(
            &base,
            "application/json",
            r#"{"schema":"public","table":"orders"}"#
        ),
        200
    );
    let rest = switchyard.dir().join("rest.jsonl");
    assert!(
        wait_until(Duration::from_secs(30), || lines(&rest).len() == 1
            && dead_letters(&base).len() == 1),
        "log:\n{}",
        switchyard.logs()
    );
    assert_eq!(lines(&rest)[0]["payload"]["table"], "orders");
    let letter = &dead_letters(&base)[0]["event"];
    assert_eq!(letter["payload"]["table"], "ghosts");
    assert_eq!(
        letter["headers"]["x-switchyard-dead-letter-plugin"],
        "by_table"
    );
    let error = letter["headers"]["x-switchyard-dead-letter-error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("chose sink `nowhere`, which does not exist"),
        "{error}"
    );
}

// ── Limits never hurt good traffic ─────────────────────────────────────────────────────

/// The filter `switchyard plugin new NAME --world filter` writes (the fixture compiles the
/// template itself), with its defaults (`after.status` equals `paid`) and DEFAULT limits,
/// gets a burst of 1,000 good events on one key in one request: one durable append, so
/// the pipeline reads them in batches of 512, each more than one call's `fuel` can decide.
/// Every event is delivered, in order, and none is dead-lettered: the calls that ran out
/// of fuel were retried as halves.
#[test]
fn a_burst_on_one_key_through_the_scaffolded_filter_with_default_limits_is_all_delivered() {
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{ADMIN}"

[sources.api]
type = "http"

[plugins.paid]
path = "{scaffold}"

[pipelines.orders]
from = ["api"]
filters = ["paid"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#,
        scaffold = wasm("scaffold_filter"),
    ));
    let base = switchyard.url();
    const BURST: u64 = 1_000;
    // Postgres changes like the scaffold's sample events, all paid (so all kept).
    let body: String = (0..BURST)
        .map(|seq| {
            serde_json::json!({
                "op": "update", "schema": "public", "table": "orders", "lsn": "0/16B3748",
                "key": {"id": 7},
                "before": {"id": 7, "status": "new", "total": "42.00"},
                "after": {"id": 7, "status": "paid", "total": "42.00", "seq": seq},
            })
            .to_string()
                + "\n"
        })
        .collect();
    let status = runtime().block_on(async {
        client()
            .post(format!("{base}/ingest/api"))
            .header("content-type", "application/x-ndjson")
            .header("x-key", "order-7")
            .body(body)
            .send()
            .await
            .expect("switchyard answers")
            .status()
            .as_u16()
    });
    assert_eq!(status, 200);

    let out = switchyard.dir().join("out.jsonl");
    let settled = || lines(&out).len() as u64 + dead_letters(&base).len() as u64 >= BURST;
    assert!(
        wait_until(Duration::from_secs(60), settled),
        "{} delivered, {} dead-lettered; log:\n{}",
        lines(&out).len(),
        dead_letters(&base).len(),
        tail(&switchyard.logs(), 40)
    );
    let letters = dead_letters(&base);
    assert!(
        letters.is_empty(),
        "{} good events were dead-lettered, e.g. {}",
        letters.len(),
        letters[0]["event"]["headers"]["x-switchyard-dead-letter-error"]
    );
    let seqs: Vec<u64> = lines(&out)
        .iter()
        .map(|e| e["payload"]["after"]["seq"].as_u64().expect("a seq"))
        .collect();
    assert_eq!(seqs, (0..BURST).collect::<Vec<_>>(), "all, once, in order");

    // The burst did need more than one call's fuel per batch: calls were split, and no
    // event ran out on its own. (If this fails because nothing was split, the scaffold got
    // cheaper: make the events bigger so the test still covers the case.)
    let metrics = get_text(&format!("{base}/metrics"));
    let errors = |kind: &str| {
        metric(
            &metrics,
            &format!(r#"switchyard_plugin_errors_total{{plugin="paid",kind="{kind}"}}"#),
        )
        .unwrap_or(0.0)
    };
    assert!(errors("split") >= 1.0, "no call was split:\n{metrics}");
    assert_eq!(errors("fuel"), 0.0, "{metrics}");
}

/// A plugin rebuilt while switchyard runs is picked up without a restart: a stream of
/// events goes through a filter that keeps `paid` ones while its file is replaced by a
/// build that keeps everything. Every paid event arrives, in order; the other events are
/// dropped up to one point and kept after it — each batch ran wholly on one build.
#[test]
fn a_plugin_rebuilt_while_running_is_reloaded_without_losing_or_reordering_events() {
    let files = tempfile::tempdir().expect("temp dir");
    let live = files.path().join("gate.wasm");
    std::fs::copy(wasm("filter_by_field"), &live).expect("copying the first build");
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"

[plugins.gate]
path = "{live}"
config = {{ field = "status", equals = "paid" }}

[pipelines.gated]
from = ["api"]
filters = ["gate"]
to = ["out"]

[sinks.out]
type = "file"
path = "{{dir}}/out.jsonl"
"#,
        live = live.display()
    ));
    let base = switchyard.url();
    let out = switchyard.dir().join("out.jsonl");
    let posted = std::sync::atomic::AtomicU64::new(0);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            // Eight events per request (one per line), so the plugin gets batches that
            // mix kept and dropped events.
            let mut seq = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let body: String = (seq..seq + 8)
                    .map(|s| {
                        let status = if s.is_multiple_of(2) { "paid" } else { "open" };
                        format!("{{\"status\":\"{status}\",\"seq\":{s}}}\n")
                    })
                    .collect();
                assert_eq!(post(&base, "application/x-ndjson", &body), 200);
                seq += 8;
                posted.store(seq, std::sync::atomic::Ordering::Relaxed);
            }
        });
        assert!(
            wait_until(Duration::from_secs(30), || lines(&out).len() >= 40),
            "nothing delivered before the reload; log:\n{}",
            switchyard.logs()
        );
        // The first build filters: no open (odd) event got through so far.
        let before: Vec<u64> = lines(&out)
            .iter()
            .map(|e| e["payload"]["seq"].as_u64().expect("a seq"))
            .collect();
        assert!(
            before.iter().all(|s| s.is_multiple_of(2)),
            "the first build let open events through: {before:?}"
        );
        // What a build does: the new file appears whole, under the same name.
        let next = files.path().join("gate.wasm.new");
        std::fs::copy(wasm("keep_all"), &next).expect("copying the second build");
        std::fs::rename(&next, &live).expect("replacing the component");
        assert!(
            wait_until(Duration::from_secs(60), || switchyard
                .logs()
                .contains("plugin reloaded")),
            "the new build was not loaded; log:\n{}",
            switchyard.logs()
        );
        let at_reload = posted.load(std::sync::atomic::Ordering::Relaxed);
        assert!(wait_until(Duration::from_secs(30), || {
            posted.load(std::sync::atomic::Ordering::Relaxed) >= at_reload + 80
        }));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let last = posted.load(std::sync::atomic::Ordering::Relaxed) - 1;
    assert!(
        wait_until(Duration::from_secs(30), || lines(&out)
            .last()
            .is_some_and(|e| e["payload"]["seq"] == last)),
        "the last event ({last}) did not arrive; log:\n{}",
        switchyard.logs()
    );
    let seqs: Vec<u64> = lines(&out)
        .iter()
        .map(|e| e["payload"]["seq"].as_u64().expect("a seq"))
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order or duplicated: {seqs:?}"
    );
    let delivered: std::collections::HashSet<u64> = seqs.iter().copied().collect();
    for paid in (0..=last).step_by(2) {
        assert!(
            delivered.contains(&paid),
            "paid event {paid} was lost: {seqs:?}"
        );
    }
    let first_open = seqs
        .iter()
        .copied()
        .find(|s| s % 2 == 1)
        .expect("the new build keeps open events");
    for open in (first_open..=last).filter(|s| s % 2 == 1) {
        assert!(
            delivered.contains(&open),
            "open event {open} came after the switch but was dropped: {seqs:?}"
        );
    }
}
