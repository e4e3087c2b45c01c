//! WebAssembly plugins decide where events go: a filter keeps paid orders, a transform
//! masks card numbers, a router sends changes by table, and a plugin that loops forever
//! is stopped at its deadline — its batch is dead-lettered and its pipeline goes on.

use std::path::PathBuf;
use std::time::Duration;

use switchyard_test_support::{Switchyard, switchyard_command};
use switchyard_tests::{client, runtime, wait_until};

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
admin_token = "admin-secret"

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
                .bearer_auth("admin-secret")
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
