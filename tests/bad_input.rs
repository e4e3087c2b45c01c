//! A user makes mistakes. `switchyard validate` names every mistake in a config file by
//! its key path and line and exits 1 (the example configs pass); a running switchyard
//! answers bad requests with the right status and a useful error, and keeps working.

use std::path::{Path, PathBuf};
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, switchyard_command, tail};
use switchyard_tests::{WEBHOOK_SECRET, client, runtime};

/// A valid config; each bad config below changes one line of it.
const GOOD: &str = r#"[server]
listen = "127.0.0.1:18080"
data_dir = "./data"

[queues.work]
partitions = 2

[sources.api]
type = "http"

[sources.work_in]
type = "queue"
queue = "work"

[pipelines.ingest]
from = ["api"]
to = ["work_queue"]

[pipelines.deliver]
from = ["work_in"]
to = ["hook"]

[sinks.work_queue]
type = "queue"
queue = "work"

[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9/hook"
timeout = "5s"
"#;

/// One mistake: the line to replace, its replacement, and what `validate` must say.
struct Mistake {
    name: &'static str,
    line: &'static str,
    replacement: &'static str,
    /// The key path the problem is reported at.
    path: &'static str,
    /// A piece of the message.
    says: &'static str,
}

const MISTAKES: &[Mistake] = &[
    Mistake {
        name: "unknown key",
        line: "timeout = \"5s\"",
        replacement: "timeout = \"5s\"\nretires = 3",
        path: "sinks.hook.retires",
        says: "unknown key",
    },
    Mistake {
        name: "wrong type",
        line: "partitions = 2",
        replacement: "partitions = \"two\"",
        path: "queues.work.partitions",
        says: "expected a whole number",
    },
    Mistake {
        name: "bad duration",
        line: "timeout = \"5s\"",
        replacement: "timeout = \"5 fortnights\"",
        path: "sinks.hook.timeout",
        says: "invalid duration \"5 fortnights\"",
    },
    Mistake {
        name: "missing sink",
        line: "to = [\"hook\"]",
        replacement: "to = [\"hooks_typo\"]",
        path: "pipelines.deliver.to[0]",
        says: "unknown sink `hooks_typo`",
    },
    Mistake {
        name: "queue feeds itself",
        line: "to = [\"hook\"]",
        replacement: "to = [\"work_queue\"]",
        path: "pipelines.deliver.to",
        says: "feeds itself",
    },
];

fn validate(dir: &Path, name: &str, text: &str) -> (i32, String, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing a config");
    validate_file(&path, &[])
}

fn validate_file(path: &Path, env: &[(&str, &str)]) -> (i32, String, String) {
    let out = switchyard_command()
        .arg("validate")
        .arg("-c")
        .arg(path)
        .envs(env.iter().copied())
        .output()
        .expect("running switchyard validate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The 1-based line of `needle` (its last line; the last such line) in `text`.
fn line_of(text: &str, needle: &str) -> usize {
    let first = needle.lines().last().expect("a needle");
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .rposition(|l| l.trim() == first.trim())
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{first:?} is not in the config"))
}

fn apply(text: &str, m: &Mistake) -> String {
    assert!(text.contains(m.line), "{}: {:?} not found", m.name, m.line);
    // Replace the occurrence in the right section: the last one for `to = ["hook"]`
    // (pipelines.deliver), the only one otherwise.
    match text.rfind(m.line) {
        Some(i) => format!(
            "{}{}{}",
            &text[..i],
            m.replacement,
            &text[i + m.line.len()..]
        ),
        None => unreachable!("checked above"),
    }
}

/// The report line for `m` in `stderr`: `path: message (line N)`.
fn assert_reported(stderr: &str, m: &Mistake, text: &str) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with(&format!("{}: ", m.path)))
        .unwrap_or_else(|| panic!("{}: no problem reported at {}:\n{stderr}", m.name, m.path));
    assert!(line.contains(m.says), "{}: {line}", m.name);
    let n = line_of(text, m.replacement);
    assert!(
        line.contains(&format!("(line {n}")),
        "{}: expected line {n} in {line:?}",
        m.name
    );
}

#[test]
fn validate_names_every_mistake_with_its_key_path_and_line() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (code, stdout, stderr) = validate(dir.path(), "good.toml", GOOD);
    assert_eq!(code, 0, "the base config is valid: {stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");

    for (i, m) in MISTAKES.iter().enumerate() {
        let text = apply(GOOD, m);
        let (code, _, stderr) = validate(dir.path(), &format!("bad{i}.toml"), &text);
        println!("{}:\n{stderr}", m.name);
        assert_eq!(code, 1, "{}: exit code; stderr:\n{stderr}", m.name);
        assert_reported(&stderr, m, &text);
        assert!(
            stderr.trim_end().ends_with(&format!(
                "1 problem in {}",
                dir.path().join(format!("bad{i}.toml")).display()
            )),
            "{}: summary line:\n{stderr}",
            m.name
        );
    }
}

#[test]
fn validate_reports_all_mistakes_of_one_file_at_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    // The unknown key, the wrong type, the missing sink in one file; then the bad
    // duration and the cycle in another (they touch the same lines as the first ones).
    for group in [[0usize, 1, 3], [2, 4, 1]] {
        let mut text = GOOD.to_owned();
        for &i in &group {
            text = apply(&text, &MISTAKES[i]);
        }
        let (code, _, stderr) = validate(dir.path(), "all.toml", &text);
        println!("{stderr}");
        assert_eq!(code, 1, "{stderr}");
        for &i in &group {
            assert_reported(&stderr, &MISTAKES[i], &text);
        }
        assert!(
            stderr.contains(&format!("{} problems in", group.len())),
            "summary:\n{stderr}"
        );
    }
}

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[test]
fn the_example_configs_validate() {
    // The secrets the examples reference with ${VAR}.
    let env = [
        ("SWITCHYARD_ADMIN_TOKEN", "admin-secret-0123456789"),
        ("API_TOKEN", "api-secret-0123456789"),
        ("PG_PASSWORD", "pg-secret"),
        ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("AUDIT_TOKEN", "audit-secret"),
        ("INGEST_TOKEN", "ingest-secret-0123456789"),
        ("METRICS_TOKEN", "metrics-secret-0123456789"),
        ("RABBIT_PASSWORD", "rabbit-secret"),
        ("MQTT_PASSWORD", "mqtt-secret"),
    ];
    let mut checked = 0;
    for entry in std::fs::read_dir(config_dir()).expect("config/ exists") {
        let path = entry.expect("a directory entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml" | "yaml" | "yml")
        ) {
            continue;
        }
        let (code, stdout, stderr) = validate_file(&path, &env);
        assert_eq!(code, 0, "{}:\n{stderr}", path.display());
        assert!(stdout.contains("ok"), "{stdout}");
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} example configs found");

    // Without its secrets, the reference config names the missing variable.
    let (code, _, stderr) = validate_file(&config_dir().join("reference.toml"), &[]);
    assert_eq!(code, 1);
    assert!(stderr.contains("API_TOKEN"), "{stderr}");
}

#[test]
fn bad_requests_get_clear_answers_and_the_server_keeps_going() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
token = "producer-token-0123456789"
max_body = "1KiB"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
"#,
        url = receiver.url()
    ));
    let url = format!("{}/ingest/api", switchyard.url());

    runtime().block_on(async {
        let client = client();
        // Every request carries the same key: had any bad one been appended, it would be
        // delivered before the good one at the end (same key, same order).
        let post = |body: String, content_type: &str| {
            client
                .post(&url)
                .bearer_auth("producer-token-0123456789")
                .header("x-key", "same")
                .header("content-type", content_type)
                .body(body)
        };
        let answer = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            (
                status,
                body["error"].as_str().unwrap_or_default().to_owned(),
            )
        };

        let (status, error) = answer(
            post("{\"a\": ".into(), "application/json")
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 400, "malformed JSON: {error}");
        assert!(error.contains("invalid JSON"), "{error}");

        let ndjson = "{\"n\": 1}\n{\"n\": 2}\nnot json\n{\"n\": 4}\n".to_owned();
        let (status, error) =
            answer(post(ndjson, "application/x-ndjson").send().await.unwrap()).await;
        assert_eq!(status, 400, "bad NDJSON line: {error}");
        assert!(error.starts_with("line 3:"), "names the line: {error}");

        let big = serde_json::json!({ "pad": "x".repeat(4096) }).to_string();
        let (status, error) = answer(post(big, "application/json").send().await.unwrap()).await;
        assert_eq!(status, 413, "oversized: {error}");
        assert!(error.contains("max_body"), "{error}");

        let r = client
            .post(&url)
            .bearer_auth("not-the-token")
            .header("x-key", "same")
            .json(&serde_json::json!({ "n": 5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "wrong token");
        let r = client
            .post(&url)
            .header("x-key", "same")
            .json(&serde_json::json!({ "n": 5 }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "no token");

        let r = client
            .post(format!("{}/ingest/nope", switchyard.url()))
            .bearer_auth("producer-token-0123456789")
            .json(&serde_json::json!({ "n": 6 }))
            .send()
            .await
            .unwrap();
        let (status, error) = answer(r).await;
        assert_eq!(status, 404, "unknown source: {error}");
        assert!(
            !error.contains("api"),
            "names a configured source to a caller: {error}"
        );

        // Still serving: a good event is accepted and delivered, and it is the only one.
        let r = post("{\"n\": \"good\"}".into(), "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let ids: serde_json::Value = r.json().await.unwrap();
        assert_eq!(ids["ids"].as_array().map(Vec::len), Some(1));
        assert!(
            receiver
                .wait_for_count_async(1, Duration::from_secs(30))
                .await,
            "{}",
            tail(&switchyard.stderr(), 20)
        );
        assert_eq!(
            receiver.received_count(),
            1,
            "only the good event was appended"
        );
        assert_eq!(receiver.accepted()[0].text(), "{\"n\": \"good\"}");
        assert_eq!(
            receiver.accepted()[0].header("webhook-id"),
            ids["ids"][0].as_str()
        );
    });
}

#[test]
fn run_refuses_a_bad_config_and_says_why() {
    let started = std::panic::catch_unwind(|| {
        Switchyard::start(
            "[server]\nlisten = \"{listen}\"\ndata_dir = \"{data_dir}\"\n\n[sinks.out]\ntype = \"carrier-pigeon\"\n",
        )
    });
    let panic = started.expect_err("switchyard must not start on a bad config");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        message.contains("exited with exit status: 1"),
        "exit status 1: {message}"
    );
    assert!(
        message.contains("sinks.out.type") && message.contains("carrier-pigeon"),
        "the problem is shown: {message}"
    );
}
