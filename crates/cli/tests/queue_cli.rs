//! `switchyard queue` and `switchyard dlq purge`, and docs/openapi.yaml against
//! docs/queues.md.
//!
//! The tests without a server check the description and the command line; the others start
//! the real binary with a config declaring queues and an admin token, and drive it with
//! the CLI only. The pure parts of the CLI (bodies, batching, durations, the stats table,
//! the tail search) have unit tests in src/queue.rs.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_test_support::{Switchyard, switchyard_command};

const TOKEN: &str = "queue-cli-secret-0123456789";

fn repo_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

// ---------------------------------------------------------------------------------------
// docs/openapi.yaml

fn openapi() -> Value {
    let text = std::fs::read_to_string(repo_file("docs/openapi.yaml")).expect("docs/openapi.yaml");
    serde_yaml::from_str(&text).expect("docs/openapi.yaml is YAML whose keys are all strings")
}

/// `(method, path)` of every endpoint docs/queues.md names in a heading of its HTTP API
/// section, such as `POST /queues/{queue}/groups/{group}/{ack|nack|extend}` (three
/// endpoints), plus `` `POST …/replay` `` in a section's text, which is relative to the
/// path of the section's heading. A path without a method gives `None`.
fn documented_endpoints(markdown: &str) -> Vec<(Option<String>, String)> {
    let section = markdown
        .split_once("## HTTP API")
        .expect("docs/queues.md has a `## HTTP API` section")
        .1;
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out = Vec::new();
    let mut heading_path: Option<String> = None;
    for line in section.lines() {
        let is_heading = line.starts_with('#');
        let spans: Vec<&str> = line.split('`').skip(1).step_by(2).collect();
        for span in spans {
            let mut words = span.split_whitespace();
            let (method, path) = match (words.next(), words.next()) {
                (Some(m), Some(p)) if m.chars().all(|c| c.is_ascii_uppercase()) => {
                    (Some(m.to_owned()), p)
                }
                (Some(p), None) => (None, p),
                _ => continue,
            };
            let path = if let Some(rest) = path.strip_prefix('…') {
                match &heading_path {
                    Some(base) if !is_heading => format!("{base}{rest}"),
                    _ => continue,
                }
            } else if path.starts_with('/') {
                path.to_owned()
            } else {
                continue;
            };
            if is_heading {
                heading_path = Some(path.clone());
            }
            for p in expand(&path) {
                out.push((method.clone(), p));
            }
        }
    }
    out
}

/// `/a/{x|y}` → `/a/x`, `/a/y`; `{queue}` stays a parameter.
fn expand(path: &str) -> Vec<String> {
    let mut paths = vec![String::new()];
    for segment in path.split('/').skip(1) {
        let choices: Vec<&str> = match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) if inner.contains('|') => inner.split('|').collect(),
            _ => vec![segment],
        };
        paths = paths
            .iter()
            .flat_map(|p| choices.iter().map(move |c| format!("{p}/{c}")))
            .collect();
    }
    paths
}

#[test]
fn openapi_describes_every_endpoint_of_docs_queues_md() {
    let markdown = std::fs::read_to_string(repo_file("docs/queues.md")).expect("docs/queues.md");
    let spec = openapi();
    assert!(
        spec["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi: {}",
        spec["openapi"]
    );
    let endpoints = documented_endpoints(&markdown);
    // The parse itself: what the document names today (more is fine, less is a bug here).
    for expected in [
        ("POST", "/queues/{queue}/messages"),
        ("POST", "/queues/{queue}/groups/{group}/receive"),
        ("POST", "/queues/{queue}/groups/{group}/ack"),
        ("POST", "/queues/{queue}/groups/{group}/nack"),
        ("POST", "/queues/{queue}/groups/{group}/extend"),
        ("GET", "/queues"),
        ("GET", "/queues/{queue}/stats"),
        ("POST", "/admin/dlq/{queue}/replay"),
        ("POST", "/admin/dlq/{queue}/purge"),
    ] {
        assert!(
            endpoints
                .iter()
                .any(|(m, p)| m.as_deref() == Some(expected.0) && p == expected.1),
            "{expected:?} not found in docs/queues.md; found {endpoints:?}"
        );
    }
    assert!(endpoints.iter().any(|(_, p)| p == "/admin/dlq/{queue}"));

    let paths = spec["paths"].as_object().expect("paths");
    for (method, path) in &endpoints {
        let item = paths.get(path).unwrap_or_else(|| {
            panic!(
                "docs/queues.md names {path}, docs/openapi.yaml does not describe it (paths: {:?})",
                paths.keys().collect::<Vec<_>>()
            )
        });
        match method {
            Some(m) => assert!(
                item.get(m.to_lowercase()).is_some(),
                "docs/openapi.yaml has no {m} {path}"
            ),
            None => assert!(
                ["get", "post", "put", "delete"]
                    .iter()
                    .any(|m| item.get(*m).is_some()),
                "docs/openapi.yaml has {path} without an operation"
            ),
        }
    }
}

/// Every `$ref` of `value`.
fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get("$ref") {
                out.push(r);
            }
            o.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The status codes an operation answers, with `$ref`'d responses left as they are.
fn statuses(op: &Value) -> Vec<String> {
    op["responses"]
        .as_object()
        .map(|r| r.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn openapi_references_resolve_and_errors_are_described() {
    let spec = openapi();
    let mut all = Vec::new();
    refs(&spec, &mut all);
    assert!(!all.is_empty());
    for r in all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is not a local reference"));
        assert!(spec.pointer(pointer).is_some(), "{r} does not resolve");
    }

    // Bearer auth for everything.
    let scheme = &spec["components"]["securitySchemes"]["adminToken"];
    assert_eq!(
        (scheme["type"].as_str(), scheme["scheme"].as_str()),
        (Some("http"), Some("bearer"))
    );
    assert_eq!(spec["security"][0]["adminToken"], serde_json::json!([]));

    // `{"error": string}`.
    let error = &spec["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error"]));
    assert_eq!(error["properties"]["error"]["type"], "string");

    let paths = spec["paths"].as_object().unwrap();
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let codes = statuses(op);
            let has = |c: &str| codes.iter().any(|x| x == c);
            assert!(has("401") && has("403"), "{method} {path}: {codes:?}");
            if path.contains("{queue}") {
                assert!(has("404"), "{method} {path}: {codes:?}");
            }
            if path.contains("{group}") {
                assert!(has("409"), "{method} {path}: {codes:?}");
                assert!(has("400"), "{method} {path}: {codes:?}");
            }
            for (code, response) in op["responses"].as_object().unwrap() {
                if code.starts_with('4') || code.starts_with('5') {
                    let schema = response
                        .get("$ref")
                        .and_then(|r| spec.pointer(r.as_str()?.strip_prefix('#')?))
                        .unwrap_or(response);
                    assert_eq!(
                        schema["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/Error",
                        "{method} {path} {code}"
                    );
                }
            }
        }
    }
    let produce = &paths["/queues/{queue}/messages"]["post"];
    let codes = statuses(produce);
    for c in ["201", "400", "413", "429", "507"] {
        assert!(codes.iter().any(|x| x == c), "produce lacks {c}: {codes:?}");
    }
    assert!(produce["responses"]["429"]["headers"]["Retry-After"].is_object());
    let receive = &paths["/queues/{queue}/groups/{group}/receive"]["post"];
    assert!(statuses(receive).iter().any(|c| c == "200"));
}

// ---------------------------------------------------------------------------------------
// The command line without a server.

struct Out {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn output(out: std::process::Output) -> Out {
    Out {
        ok: out.status.success(),
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `switchyard <args>` (no `-c` added), stdin from `stdin` or empty.
fn run(args: &[&str], stdin: Option<&str>) -> Out {
    let mut cmd = switchyard_command();
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting switchyard");
    let mut input = child.stdin.take().expect("stdin");
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).expect("writing stdin");
    }
    drop(input);
    output(child.wait_with_output().expect("waiting for switchyard"))
}

#[test]
fn every_queue_command_has_help_with_an_example() {
    let top = run(&["queue", "--help"], None);
    assert!(top.ok, "{}", top.stderr);
    for sub in ["produce", "consume", "tail", "stats"] {
        assert!(top.stdout.contains(sub), "{}", top.stdout);
        let help = run(&["queue", sub, "--help"], None);
        assert!(help.ok, "{}", help.stderr);
        assert!(help.stdout.contains("Examples:"), "{sub}:\n{}", help.stdout);
        assert!(
            help.stdout.contains(&format!("switchyard queue {sub} ")),
            "{sub}:\n{}",
            help.stdout
        );
    }
    let purge = run(&["dlq", "purge", "--help"], None);
    assert!(purge.ok, "{}", purge.stderr);
    assert!(purge.stdout.contains("--yes"), "{}", purge.stdout);
    assert!(
        purge.stdout.contains("switchyard dlq purge"),
        "{}",
        purge.stdout
    );
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn bad_arguments_and_missing_servers_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &[
            "queue",
            "produce",
            "orders",
            "1",
            "--priority",
            "12",
            "-c",
            "x.toml",
        ],
        None,
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--priority"), "{}", out.stderr);

    let out = run(
        &[
            "queue", "consume", "orders", "--group", "w", "--wait", "2m", "-c", "x.toml",
        ],
        None,
    );
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("60s"), "{}", out.stderr);

    // No admin token: the CLI says so without asking.
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:9\"\n\n[queues.orders]\n",
    );
    let out = run(&["queue", "stats", "-c", config.to_str().unwrap()], None);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("server.admin_token is not set"),
        "{}",
        out.stderr
    );

    // Nothing listening.
    let port = switchyard_test_support::free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"{TOKEN}\"\n\n[queues.orders]\n"
        ),
    );
    let out = run(
        &[
            "queue",
            "produce",
            "orders",
            "{}",
            "-c",
            config.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("cannot reach switchyard"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Against the real binary.

const CONFIG: &str = r#"
[server]
listen = "{listen}"
data_dir = "{data_dir}"
admin_token = "queue-cli-secret-0123456789"

[queues.orders]
partitions = 2

[queues.jobs]
max_deliveries = 1
dead_letter = "jobs-dlq"
ack_timeout = "30s"

[queues.jobs-dlq]
"#;

/// `switchyard <args> -c <config>` of `sy`.
fn cli(sy: &Switchyard, args: &[&str], stdin: Option<&str>) -> Out {
    let mut all: Vec<&str> = args.to_vec();
    let config = sy.config_path().to_str().unwrap().to_owned();
    all.extend(["-c", &config]);
    run(&all, stdin)
}

/// Polls `f` until it answers `Some`, for at most `timeout`; panics with `what` and the
/// last value seen.
fn eventually<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what} did not happen within {timeout:?}; last: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn stats_json(sy: &Switchyard, queue: &str) -> Value {
    let out = cli(sy, &["queue", "stats", queue, "--json"], None);
    assert!(out.ok, "queue stats: {}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", out.stdout))
}

/// Lines of `id partition offset`: the ids.
fn produced_ids(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "not `id partition offset`: {line:?}");
            assert!(fields[1].parse::<u32>().is_ok_and(|p| p < 2), "{line:?}");
            assert!(fields[2].parse::<u64>().is_ok(), "{line:?}");
            fields[0].to_owned()
        })
        .collect()
}

#[test]
fn produce_stats_consume_and_tail_against_a_running_switchyard() {
    let sy = Switchyard::start(CONFIG);

    // Two payloads from stdin (one JSON, one plain text), one as DATA with a key.
    let out = cli(
        &sy,
        &["queue", "produce", "orders", "--header", "origin=test"],
        Some("{\"order\": 1}\n\nnot json\n"),
    );
    assert!(out.ok, "{}", out.stderr);
    let mut ids = produced_ids(&out.stdout);
    assert_eq!(ids.len(), 2, "{}", out.stdout);
    assert!(out.stderr.contains("produced 2 messages"), "{}", out.stderr);
    let out = cli(
        &sy,
        &[
            "queue",
            "produce",
            "orders",
            r#"{"order": 3}"#,
            "--key",
            "customer-7",
            "--priority",
            "5",
            "--idempotency-key",
            "order-3",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    ids.extend(produced_ids(&out.stdout));
    assert_eq!(ids.len(), 3);

    // The same idempotency key again: not stored, the first id.
    let out = cli(
        &sy,
        &[
            "queue",
            "produce",
            "orders",
            r#"{"order": 3}"#,
            "--idempotency-key",
            "order-3",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("duplicate {}", ids[2]));

    // Errors: the status and the server's text, exit code 1.
    let out = cli(&sy, &["queue", "produce", "nosuch", "1"], None);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("404") && out.stderr.contains("no queue named `nosuch`"),
        "{}",
        out.stderr
    );

    // Stats: three messages, no group yet.
    let stats = eventually("3 messages in the stats", Duration::from_secs(10), || {
        let s = stats_json(&sy, "orders");
        if s["messages"] == 3 {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(stats["queue"], "orders");
    assert_eq!(stats["partitions"], 2);
    let table = cli(&sy, &["queue", "stats", "orders"], None);
    assert!(table.ok, "{}", table.stderr);
    let row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_else(|| panic!("no row for orders:\n{}", table.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..3], ["orders", "2", "3"], "{}", table.stdout);
    let all = cli(&sy, &["queue", "stats"], None);
    assert!(all.ok, "{}", all.stderr);
    for q in ["orders", "jobs", "jobs-dlq"] {
        assert!(
            all.stdout.lines().any(|l| l.starts_with(&format!("{q} "))),
            "{q} missing:\n{}",
            all.stdout
        );
    }

    // Tail: the newest two, oldest first, with where they are stored.
    let out = cli(&sy, &["queue", "tail", "orders", "-n", "2"], None);
    assert!(out.ok, "{}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].contains(&ids[1]) && lines[0].contains("\"not json\""),
        "{}",
        out.stdout
    );
    assert!(
        lines[1].contains(&ids[2]) && lines[1].contains("key=customer-7"),
        "{}",
        out.stdout
    );
    let out = cli(&sy, &["queue", "tail", "orders", "--json"], None);
    assert!(out.ok, "{}", out.stderr);
    let tailed: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(tailed.len(), 3, "{}", out.stdout);
    assert_eq!(
        tailed[0]["event"]["payload"],
        serde_json::json!({"order": 1})
    );
    assert_eq!(tailed[0]["event"]["headers"]["origin"], "test");

    // Consume all three: printed as JSON lines, then acked.
    let out = cli(
        &sy,
        &[
            "queue", "consume", "orders", "--group", "workers", "--count", "3", "--wait", "2s",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    let received: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(received.len(), 3, "{}", out.stdout);
    let mut got: Vec<&str> = received.iter().map(|m| m["id"].as_str().unwrap()).collect();
    got.sort_unstable();
    let mut want: Vec<&str> = ids.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(got, want);
    for m in &received {
        assert!(m["receipt"].is_string(), "{m}");
        assert_eq!(m["deliveries"], 1, "{m}");
    }
    // Priority 5 goes out first.
    assert_eq!(received[0]["id"], ids[2].as_str(), "{}", out.stdout);
    assert!(out.stderr.contains("acked 3"), "{}", out.stderr);

    // Depth 0: all acked.
    let stats = eventually("depth 0 for workers", Duration::from_secs(10), || {
        let s = stats_json(&sy, "orders");
        let g = &s["groups"]["workers"];
        if g["depth"] == 0 && g["mode"] == "work" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(stats["groups"]["workers"]["in_flight"], 0, "{stats}");
    let table = cli(&sy, &["queue", "stats", "orders"], None);
    let row = table
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("workers "))
        .unwrap_or_else(|| panic!("no row for workers:\n{}", table.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["workers", "work", "0", "0"],
        "{}",
        table.stdout
    );
}

/// A child whose stdout lines arrive on a channel.
struct Lines {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Lines {
    fn spawn(sy: &Switchyard, args: &[&str]) -> Self {
        let mut cmd: Command = switchyard_command();
        cmd.args(args)
            .arg("-c")
            .arg(sy.config_path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting switchyard");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines { child, lines }
    }

    fn next(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line within {timeout:?}: {e}"))
    }

    /// SIGINT, as Ctrl-C; the exit status and stderr.
    fn interrupt(mut self) -> (bool, String) {
        let sent = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(sent.success());
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr).expect("reading stderr");
        }
        let status = self.child.wait().expect("waiting");
        (status.success(), stderr)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn consume_and_tail_follow_until_ctrl_c_and_nack_dead_letters_for_purge() {
    let sy = Switchyard::start(CONFIG);

    let produce = |payload: &str| {
        let out = cli(&sy, &["queue", "produce", "jobs", payload], None);
        assert!(out.ok, "{}", out.stderr);
        out.stdout.split(' ').next().unwrap().to_owned()
    };
    let first = produce(r#"{"job": 1}"#);
    // The follower prints the newest message, then follows: what it prints after that
    // was produced later.
    let follower = Lines::spawn(&sy, &["queue", "tail", "jobs", "-n", "1", "--follow"]);
    let line = follower.next(Duration::from_secs(20));
    assert!(
        line.contains(&first) && line.contains(r#"{"job":1}"#),
        "{line}"
    );

    // A consumer without --count: receives, prints and acks until Ctrl-C.
    let consumer = Lines::spawn(
        &sy,
        &["queue", "consume", "jobs", "--group", "w", "--wait", "1s"],
    );
    let received: Value = serde_json::from_str(&consumer.next(Duration::from_secs(20))).unwrap();
    assert_eq!(received["id"], first.as_str());
    assert_eq!(received["payload"], serde_json::json!({"job": 1}));
    let (ok, stderr) = consumer.interrupt();
    assert!(ok, "{stderr}");
    assert!(stderr.contains("received 1 messages"), "{stderr}");
    assert!(stderr.contains("acked 1,"), "{stderr}");

    let second = produce(r#"{"job": 2}"#);
    let line = follower.next(Duration::from_secs(20));
    assert!(
        line.contains(&second) && line.contains(r#"{"job":2}"#),
        "{line}"
    );
    let (ok, stderr) = follower.interrupt();
    assert!(ok, "{stderr}");

    // max_deliveries = 1: a nack dead-letters the second message into jobs-dlq.
    let out = cli(
        &sy,
        &[
            "queue", "consume", "jobs", "--group", "w", "--count", "1", "--nack",
        ],
        None,
    );
    assert!(out.ok, "{}", out.stderr);
    assert!(out.stdout.contains(&second), "{}", out.stdout);
    assert!(out.stderr.contains("nacked 1,"), "{}", out.stderr);
    eventually("a dead letter in jobs-dlq", Duration::from_secs(20), || {
        let s = stats_json(&sy, "jobs-dlq");
        if s["messages"] == 1 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });

    // Purge refuses without --yes and says what it would do; nothing is dropped.
    let out = cli(&sy, &["dlq", "purge", "jobs-dlq"], None);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("would drop the 1 dead letters") && out.stderr.contains("--yes"),
        "{}",
        out.stderr
    );
    let listed = cli(&sy, &["dlq", "list", "jobs-dlq"], None);
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.stdout.lines().count(), 1, "{}", listed.stdout);

    let out = cli(&sy, &["dlq", "purge", "jobs-dlq", "--yes"], None);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), "purged 1 dead letters from `jobs-dlq`");
    let listed = cli(&sy, &["dlq", "list", "jobs-dlq"], None);
    assert!(listed.ok, "{}", listed.stderr);
    assert_eq!(listed.stdout.trim(), "no dead letters in `jobs-dlq`");
}

#[test]
fn a_wrong_token_is_reported_with_the_status() {
    let sy = Switchyard::start(CONFIG);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"{}\"\nadmin_token = \"wrong-token-0123456789\"\n\n[queues.orders]\n",
            sy.addr()
        ),
    );
    let out = run(&["queue", "stats", "-c", config.to_str().unwrap()], None);
    assert_eq!(out.code, Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("401") && out.stderr.contains("admin token"),
        "{}",
        out.stderr
    );
}
