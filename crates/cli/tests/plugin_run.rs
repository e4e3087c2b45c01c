//! `switchyard plugin test` and `plugin inspect` on the example and fixture components
//! built by `scripts/build-plugins.sh`.

use std::path::PathBuf;
use std::process::Command;

fn wasm(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        path.display()
    );
    path
}

fn switchyard(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .output()
        .expect("running switchyard");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn plugin_test_prints_each_decision_and_the_cost_of_each_batch() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"id":"a","payload":{"status":"paid"},"content_type":"application/json"}"#,
            "\n",
            r#"{"id":"b","payload":{"status":"open"},"content_type":"application/json"}"#,
            "\n",
            r#"{"id":"c","payload":{"status":"paid"},"content_type":"application/json"}"#,
            "\n",
        ),
    )
    .unwrap();
    let file = wasm("filter_by_field");
    let (ok, stdout, stderr) = switchyard(&[
        "plugin",
        "test",
        file.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--config",
        r#"{"field":"status","equals":"paid"}"#,
        "--batch",
        "2",
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("a\tkeep"), "{stdout}");
    assert!(stdout.contains("b\tdrop"), "{stdout}");
    assert!(stdout.contains("c\tkeep"), "{stdout}");
    assert_eq!(stdout.matches("# batch").count(), 2, "{stdout}");
    assert!(stdout.contains("fuel"), "{stdout}");

    // A config the plugin rejects: its own message, non-zero exit.
    let (ok, _, stderr) = switchyard(&[
        "plugin",
        "test",
        file.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--config",
        r#"{"feild":"status"}"#,
    ]);
    assert!(!ok);
    assert!(stderr.contains("rejected its config"), "{stderr}");
}

#[test]
fn plugin_inspect_names_the_world_and_refused_imports() {
    let (ok, stdout, _) = switchyard(&[
        "plugin",
        "inspect",
        wasm("route_by_table").to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}");
    assert!(stdout.contains("world: router"), "{stdout}");
    assert!(!stdout.contains("NOT GRANTED"), "{stdout}");

    let (ok, stdout, _) = switchyard(&["plugin", "inspect", wasm("imports_fs").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stdout.contains("wasi:filesystem/preopens") && stdout.contains("NOT GRANTED"),
        "{stdout}"
    );
    assert!(
        stdout.contains("unless its [plugins.NAME] config has `allow_dirs`"),
        "{stdout}"
    );
}

/// `plugin test` calls a plugin like a pipeline does: batches of 512, the default limits,
/// and calls that run out of fuel retried as halves. The filter `plugin new` writes needs
/// more than the default fuel for 512 Postgres changes: every event is still decided, the
/// split shows, and the plugin's own log lines (its `init` logs one) reach stderr.
#[test]
fn plugin_test_batches_and_splits_like_a_pipeline_and_shows_the_plugins_logs() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let events: String = (0..1000)
        .map(|seq| {
            serde_json::json!({
                "id": format!("e{seq}"),
                "content_type": "application/json",
                "payload": {
                    "op": "update", "schema": "public", "table": "orders", "lsn": "0/16B3748",
                    "key": {"id": 7},
                    "before": {"id": 7, "status": "new", "total": "42.00"},
                    "after": {"id": 7, "status": "paid", "total": "42.00", "seq": seq},
                },
            })
            .to_string()
                + "\n"
        })
        .collect();
    std::fs::write(&input, events).unwrap();
    let file = wasm("scaffold_filter");
    let (ok, stdout, stderr) = switchyard(&[
        "plugin",
        "test",
        file.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains("in batches of 512"), "{stdout}");
    assert!(stdout.contains("# batch 0 (events 0..512)"), "{stdout}");
    assert!(
        stdout.contains("#   call on events 0..512: ran out of fuel")
            && stdout.contains("split into events 0..256 and events 256..512"),
        "the first batch needs more than one call's fuel: {stdout}"
    );
    assert_eq!(stdout.matches("\tkeep").count(), 1000, "{stdout}");
    assert!(!stdout.contains("FAILED"), "{stdout}");
    assert!(
        stderr.contains(r#"keeping events whose after.status is "paid""#),
        "the plugin's log line is missing: {stderr}"
    );
}
