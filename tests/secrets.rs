//! Credentials in the configuration never leave the process: a webhook whose URL carries a
//! password and a `?token=` fails every attempt, retries and dead-letters; the log, every
//! byte under the data directory, the dead-letter answers, `switchyard dlq list` and
//! `/metrics` show the URL only in its masked form. Everything switchyard writes is its
//! owner's only (0600 files, 0700 directories), the file sink's output included.
//!
//! `switchyard validate` on a config whose invalid URL holds a password shows the URL
//! without it.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, switchyard_command};
use switchyard_tests::{client, runtime, wait_until};

const QUERY_SECRET: &str = "SECRETVALUE123";
const PASSWORD: &str = "PASSWORD456";
const HEADER_SECRET: &str = "HEADERSECRET789";
const ADMIN_TOKEN: &str = "ADMINTOKEN321-0123456789";
const SECRETS: [&str; 4] = [QUERY_SECRET, PASSWORD, HEADER_SECRET, ADMIN_TOKEN];

/// Every file and directory below `root` (itself included), with its permission bits.
fn walk(root: &Path) -> Vec<(PathBuf, u32, bool)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).expect("metadata");
        out.push((
            path.clone(),
            meta.permissions().mode() & 0o7777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read_dir") {
                stack.push(entry.expect("entry").path());
            }
        }
    }
    out
}

/// Each secret that occurs in `haystack`, for an assertion message.
fn leaked(haystack: &[u8]) -> Vec<&'static str> {
    SECRETS
        .into_iter()
        .filter(|s| haystack.windows(s.len()).any(|w| w == s.as_bytes()))
        .collect()
}

#[test]
fn a_failing_webhook_with_credentials_in_its_url_leaks_them_nowhere() {
    let receiver = WebhookReceiver::start(Behaviour::Status(500));
    let url = format!(
        "http://user:{PASSWORD}@{}/hook?token={QUERY_SECRET}",
        receiver.addr()
    );
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "{ADMIN_TOKEN}"

[log]
level = "debug"

[sources.api]
type = "http"
partitions = 2

[pipelines.deliver]
from = ["api"]
to = ["hook", "archive"]

[sinks.hook]
type = "webhook"
url = "{url}"
headers = {{ Authorization = "Bearer {HEADER_SECRET}" }}
retry = {{ max_attempts = 3, initial = "10ms", max = "20ms" }}

[sinks.archive]
type = "file"
path = "{{dir}}/out/archive.jsonl"
"#
    ));

    let events = 3;
    let rt = runtime();
    let admin = |path: String| {
        let url = format!("{}{path}", switchyard.url());
        rt.block_on(async {
            let resp = client()
                .get(url)
                .bearer_auth(ADMIN_TOKEN)
                .send()
                .await
                .expect("admin answers");
            assert_eq!(resp.status(), 200);
            resp.text().await.expect("a body")
        })
    };
    rt.block_on(async {
        for seq in 0..events {
            let resp = client()
                .post(format!("{}/ingest/api", switchyard.url()))
                .header("x-key", format!("k{seq}"))
                .json(&serde_json::json!({ "seq": seq }))
                .send()
                .await
                .expect("ingest answers");
            assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
        }
    });

    // Every event fails 3 attempts and is dead-lettered.
    let mut dlq = String::new();
    let dead_lettered = wait_until(Duration::from_secs(30), || {
        dlq = admin("/admin/dlq/dead-letters".into());
        let answer: serde_json::Value = serde_json::from_str(&dlq).expect("JSON");
        answer["dead_letters"].as_array().map_or(0, Vec::len) == events
    });
    assert!(dead_lettered, "dead letters: {dlq}\n{}", switchyard.logs());
    assert!(
        receiver.received_count() >= 3 * events,
        "every attempt reached the receiver"
    );
    // The error is still useful: it names the destination, masked.
    assert!(
        dlq.contains("http://user:***@") && dlq.contains("/hook?token=***"),
        "the dead letter's error names the masked URL: {dlq}"
    );
    let metrics = admin("/metrics".into());
    assert!(metrics.contains("switchyard_sink_events"), "{metrics}");
    let listing = switchyard.cli(&["dlq", "list"]);
    assert!(listing.status.success(), "{listing:?}");

    let mut switchyard = switchyard;
    switchyard.terminate();
    let logs = switchyard.logs();
    assert!(logs.contains("dead-lettering event"), "{logs}");
    assert!(logs.contains("delivery failed; retrying"), "{logs}");

    assert_eq!(
        leaked(logs.as_bytes()),
        Vec::<&str>::new(),
        "in the log:\n{logs}"
    );
    assert_eq!(
        leaked(dlq.as_bytes()),
        Vec::<&str>::new(),
        "in /admin/dlq: {dlq}"
    );
    assert_eq!(
        leaked(metrics.as_bytes()),
        Vec::<&str>::new(),
        "in /metrics"
    );
    for out in [&listing.stdout, &listing.stderr] {
        assert_eq!(
            leaked(out),
            Vec::<&str>::new(),
            "in `dlq list`: {}",
            String::from_utf8_lossy(out)
        );
    }

    let data = walk(switchyard.data_dir());
    let files = data.iter().filter(|(_, _, dir)| !dir).count();
    assert!(files >= 4, "segments, offsets, queue.json: {data:?}");
    for (path, mode, is_dir) in &data {
        if !is_dir {
            let bytes = std::fs::read(path).expect("read");
            assert_eq!(leaked(&bytes), Vec::<&str>::new(), "in {}", path.display());
        }
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:04o}", path.display());
    }

    let archive = switchyard.dir().join("out/archive.jsonl");
    let out = walk(&switchyard.dir().join("out"));
    assert!(out.iter().any(|(p, _, _)| *p == archive), "{out:?}");
    for (path, mode, is_dir) in &out {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{} is {mode:04o}", path.display());
    }
}

#[test]
fn validate_does_not_echo_a_password_or_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("switchyard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "${{LISTEN}}"

[sources.db]
type = "postgres_cdc"
dsn = "postgres://app:{PASSWORD}@db:5432/shop"
slot = "Bad Slot"

[sources.api]
type = "http"

[pipelines.p]
from = ["api", "db"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "ftp://user:{PASSWORD}@hooks.example.com/in?token={QUERY_SECRET}"
"#
        ),
    )
    .expect("write config");
    let output = switchyard_command()
        .arg("validate")
        .arg("-c")
        .arg(&config)
        .env("LISTEN", format!("no-port-{HEADER_SECRET}"))
        .output()
        .expect("switchyard validate runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!output.status.success(), "{text}");
    // The problems are reported, with the values in their safe form.
    assert!(
        text.contains("sinks.hook.url")
            && text.contains("ftp://user:***@hooks.example.com/in?token=***"),
        "{text}"
    );
    assert!(
        text.contains("server.listen") && text.contains("${LISTEN}"),
        "{text}"
    );
    assert!(text.contains("sources.db.slot"), "{text}");
    assert_eq!(leaked(text.as_bytes()), Vec::<&str>::new(), "{text}");
}
