//! Logs as deployments read them: the real binary with its stderr and stdout going to
//! files (as under systemd, Docker or Kubernetes) writes no ANSI colour codes, in text
//! or JSON, and `log.format = "json"` writes one JSON object per line.

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver};
use switchyard_tests::{WEBHOOK_SECRET, client, runtime};

/// An HTTP source into a webhook on loopback (which logs a warning at start), in
/// `format`.
fn config(format: &str, url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[log]
format = "{format}"
level = "debug,hyper=info,h2=info,reqwest=info,cranelift=info,wasmtime=info"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
"#
    )
}

/// Starts switchyard in `format`, sends events, stops it with SIGTERM, and returns the
/// bytes it wrote to stderr and stdout (both files).
fn run_and_collect(format: &str) -> (Vec<u8>, Vec<u8>) {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&config(format, &receiver.url()));
    let base = switchyard.url();
    runtime().block_on(async {
        for n in 0..5 {
            let r = client()
                .post(format!("{base}/ingest/api"))
                .header("content-type", "application/json")
                .header("x-key", "k")
                .body(format!("{{\"n\":{n}}}"))
                .send()
                .await
                .expect("an answer");
            assert!(r.status().is_success(), "ingest answered {}", r.status());
        }
    });
    assert!(
        receiver.wait_for_count(5, std::time::Duration::from_secs(30)),
        "the events were not delivered"
    );
    let status = switchyard.terminate();
    assert!(status.success(), "switchyard exited with {status}");
    let stderr = std::fs::read(switchyard.dir().join("stderr.log")).expect("the stderr file");
    let stdout = std::fs::read(switchyard.dir().join("stdout.log")).unwrap_or_default();
    (stderr, stdout)
}

const ESC: u8 = 0x1b;

#[test]
fn logs_to_a_file_carry_no_colour_codes_in_text_format() {
    let (stderr, stdout) = run_and_collect("text");
    let text = String::from_utf8_lossy(&stderr);
    assert!(
        text.contains(" INFO ") && text.contains(" WARN "),
        "the log has INFO and WARN lines:\n{text}"
    );
    assert!(
        !stderr.contains(&ESC) && !stdout.contains(&ESC),
        "an ESC byte (a colour code) in output written to a file:\n{}",
        text.escape_debug()
    );
}

#[test]
fn logs_in_json_format_are_one_object_per_line_without_colour_codes() {
    let (stderr, stdout) = run_and_collect("json");
    assert!(
        !stderr.contains(&ESC) && !stdout.contains(&ESC),
        "an ESC byte in JSON logs:\n{}",
        String::from_utf8_lossy(&stderr).escape_debug()
    );
    let text = String::from_utf8_lossy(&stderr);
    let mut levels = std::collections::HashSet::new();
    // The test harness writes a `===== switchyard run N =====` line before each run.
    for line in text
        .lines()
        .filter(|l| !l.starts_with("=====") && !l.is_empty())
    {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        assert!(value.get("timestamp").is_some(), "no timestamp: {line}");
        assert!(value.get("fields").is_some(), "no fields: {line}");
        levels.insert(value["level"].as_str().unwrap_or_default().to_owned());
    }
    assert!(
        levels.contains("INFO") && levels.contains("WARN"),
        "levels seen: {levels:?}\n{text}"
    );
}
