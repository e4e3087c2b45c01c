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
        // The compilation cache of `plugin test`, inside target/ rather than ~/.cache.
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
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

/// `plugin test --watch` runs again when the input (or the component) changes, until
/// stopped.
#[test]
fn plugin_test_watch_runs_again_when_a_file_changes() {
    use std::io::BufRead as _;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("events.jsonl");
    let event = |id: &str, status: &str| {
        format!(
            r#"{{"id":"{id}","payload":{{"status":"{status}"}},"content_type":"application/json"}}"#
        )
    };
    std::fs::write(
        &input,
        format!("{}\n{}\n", event("a", "paid"), event("b", "open")),
    )
    .unwrap();
    let file = wasm("filter_by_field");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "plugin",
            "test",
            "--watch",
            file.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--config",
            r#"{"field":"status","equals":"paid"}"#,
        ])
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting plugin test --watch");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Lines up to and including the next "# watching" line.
    let next_run = |rx: &mpsc::Receiver<String>| -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let done = line.starts_with("# watching");
                    lines.push(line);
                    if done {
                        return lines;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no complete run within 120 s; got {lines:?}");
    };
    let first = next_run(&rx);
    assert!(first.contains(&"a\tkeep".to_owned()), "{first:?}");
    assert!(first.contains(&"b\tdrop".to_owned()), "{first:?}");

    // A new input, appearing whole.
    let next = dir.path().join("events.jsonl.new");
    std::fs::write(
        &next,
        format!(
            "{}\n{}\n{}\n",
            event("c", "open"),
            event("d", "paid"),
            event("e", "paid")
        ),
    )
    .unwrap();
    std::fs::rename(&next, &input).unwrap();
    let second = next_run(&rx);
    let _ = child.kill();
    let _ = child.wait();
    assert!(second.contains(&"c\tdrop".to_owned()), "{second:?}");
    assert!(second.contains(&"d\tkeep".to_owned()), "{second:?}");
    assert!(second.contains(&"e\tkeep".to_owned()), "{second:?}");
    assert!(
        second.iter().any(|l| l.contains("read from the cache")),
        "the second run should not compile again: {second:?}"
    );
}
