//! Loading and validation, as a user meets them: write a file, load it, read the verdict.

use std::collections::HashMap;
use std::time::Duration;

use switchyard_config::{
    ByteSize, CloudEventsMode, Config, ConfigError, Issue, LogFormat, OnError, SinkConfig,
    SinkFormat, SnapshotMode, SourceConfig, load_file, load_file_with_env, load_str_with_env,
};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(text: &str) -> Result<Config, ConfigError> {
    load_str_with_env(text, false, &HashMap::new())
}

fn problems(text: &str) -> Vec<Issue> {
    match load(text) {
        Ok(_) => panic!("expected problems in:\n{text}"),
        Err(error) => error.issues,
    }
}

/// The one issue at `path`; the failure lists them all.
fn at<'a>(issues: &'a [Issue], path: &str) -> &'a Issue {
    let found: Vec<&Issue> = issues.iter().filter(|issue| issue.path == path).collect();
    match found.as_slice() {
        [one] => one,
        _ => panic!("expected one issue at {path}, got:\n{issues:#?}"),
    }
}

fn assert_mentions(issue: &Issue, words: &[&str]) {
    for word in words {
        assert!(
            issue.message.contains(word),
            "{word:?} not in {:?}",
            issue.message
        );
    }
}

const MINIMAL: &str = r#"
[sources.api]
type = "http"

[pipelines.p]
from = ["api"]
to = ["console"]

[sinks.console]
type = "stdout"
"#;

#[test]
fn defaults_are_applied() {
    let config = load(MINIMAL).unwrap();
    assert_eq!(config.server.listen, "127.0.0.1:8080");
    assert_eq!(config.server.data_dir, "./data");
    assert_eq!(config.server.admin_token, None);
    assert_eq!(config.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.server.dead_letter, "dead-letters");
    assert_eq!(config.log.format, LogFormat::Text);
    let SourceConfig::Http(api) = &config.sources["api"] else {
        panic!("http source")
    };
    assert_eq!(api.max_body, ByteSize(1 << 20));
    assert_eq!(
        api.partitions, None,
        "the intake's own count, or 1 for a new one"
    );
    assert_eq!(api.token, None);
    let pipeline = &config.pipelines["p"];
    assert_eq!(pipeline.max_in_flight, 4096);
    assert!(pipeline.filters.is_empty() && pipeline.router.is_none());
    assert_eq!(pipeline.dead_letter, None);

    let config = load(
        r#"
[queues.q]
[sources.s]
type = "queue"
queue = "q"
[sources.db]
type = "postgres_cdc"
dsn = "postgres://localhost/app"
[plugins.f]
path = "f.wasm"
[pipelines.p]
from = ["s", "db"]
filters = ["f"]
to = ["hook"]
[sinks.hook]
type = "webhook"
url = "http://127.0.0.1:9000/hook"
"#,
    )
    .unwrap();
    let queue = &config.queues["q"];
    assert_eq!(queue.partitions, 1);
    assert_eq!(queue.retention, Duration::from_secs(7 * 86_400));
    assert_eq!(queue.max_bytes, ByteSize(1 << 30));
    assert_eq!(queue.max_deliveries, 20);
    let SourceConfig::Queue(source) = &config.sources["s"] else {
        panic!("queue source")
    };
    assert_eq!(source.group, "s", "the group defaults to the source's name");
    let SourceConfig::PostgresCdc(db) = &config.sources["db"] else {
        panic!("cdc source")
    };
    assert_eq!(db.slot, "switchyard_db");
    assert_eq!(db.snapshot, SnapshotMode::Initial);
    let plugin = &config.plugins["f"];
    assert_eq!(plugin.on_error, OnError::DeadLetter);
    assert_eq!(plugin.config, serde_json::json!({}));
    let SinkConfig::Webhook(hook) = &config.sinks["hook"] else {
        panic!("webhook sink")
    };
    assert_eq!(hook.timeout, Duration::from_secs(5));
    assert_eq!(hook.concurrency, 16);
    assert_eq!(hook.retry.max_attempts, 10);
    assert_eq!(hook.retry.initial, Duration::from_millis(200));
    assert_eq!(hook.retry.max, Duration::from_secs(60));
    assert!(!hook.envelope);
}

#[test]
fn values_are_parsed() {
    let config = load(
        r#"
[queues.q]
partitions = 3
retention = "7d"
max_bytes = "500KB"
ack_timeout = "1m"
dedup_window = "0s"
[sinks.hook]
type = "webhook"
url = "https://example.com"
timeout = "200ms"
retry = { max_attempts = 3, initial = "1s", max = "1m" }
headers = { X-Team = "payments" }
envelope = true
"#,
    )
    .unwrap();
    let queue = &config.queues["q"];
    assert_eq!(queue.partitions, 3);
    assert_eq!(queue.max_bytes, ByteSize(500_000));
    assert_eq!(queue.ack_timeout, Duration::from_secs(60));
    assert_eq!(queue.dedup_window, Duration::ZERO);
    let SinkConfig::Webhook(hook) = &config.sinks["hook"] else {
        panic!("webhook sink")
    };
    assert_eq!(hook.timeout, Duration::from_millis(200));
    assert_eq!(hook.retry.max_attempts, 3);
    assert_eq!(hook.headers["X-Team"], "payments");
    assert!(hook.envelope);
}

#[test]
fn unknown_keys_suggest_the_closest_known_key() {
    let issues = problems("[server]\nlistn = \"0.0.0.0:80\"\n");
    let issue = at(&issues, "server.listn");
    assert_eq!(issue.message, "unknown key `listn`, did you mean `listen`?");
    assert_eq!(issue.line, Some(2));

    let issues = problems(
        "[sinks.x]\ntype = \"webhook\"\nurl = \"http://h\"\nretry = { max_atempts = 3 }\n",
    );
    assert_mentions(
        at(&issues, "sinks.x.retry.max_atempts"),
        &["did you mean `max_attempts`?"],
    );
    assert_eq!(at(&issues, "sinks.x.retry.max_atempts").line, Some(4));

    let issues = problems("[sourcs.api]\ntype = \"http\"\n");
    assert_mentions(at(&issues, "sourcs"), &["did you mean `sources`?"]);
}

#[test]
fn keys_of_another_type_are_unknown() {
    // `path` belongs to file sinks, not stdout.
    let issues = problems("[sinks.console]\ntype = \"stdout\"\npath = \"x\"\n");
    assert_mentions(at(&issues, "sinks.console.path"), &["unknown key `path`"]);
}

#[test]
fn wrong_types_say_what_was_found() {
    let issues = problems(
        r#"
[server]
listen = 8080
[queues.q]
partitions = "four"
[sinks.h]
type = "webhook"
url = "http://h"
envelope = "yes"
[pipelines.p]
from = "api"
to = ["h"]
"#,
    );
    assert_mentions(
        at(&issues, "server.listen"),
        &["expected a string, found an integer"],
    );
    assert_mentions(
        at(&issues, "queues.q.partitions"),
        &["expected a whole number, found a string"],
    );
    assert_mentions(at(&issues, "sinks.h.envelope"), &["expected true or false"]);
    assert_mentions(at(&issues, "pipelines.p.from"), &["write [\"api\"]"]);
    assert_eq!(at(&issues, "queues.q.partitions").line, Some(5));
}

#[test]
fn missing_required_keys() {
    let issues = problems(
        r#"
[sources.q]
type = "queue"
[sinks.h]
type = "webhook"
[sinks.f]
type = "file"
[plugins.x]
fuel = 5
[pipelines.p]
to = ["h"]
"#,
    );
    assert_mentions(
        at(&issues, "sources.q.queue"),
        &["missing required key `queue`"],
    );
    assert_mentions(at(&issues, "sinks.h.url"), &["missing required key `url`"]);
    assert_mentions(
        at(&issues, "sinks.f.path"),
        &["missing required key `path`"],
    );
    assert_mentions(
        at(&issues, "plugins.x.path"),
        &["missing required key `path`"],
    );
    assert_mentions(
        at(&issues, "pipelines.p.from"),
        &["missing required key `from`"],
    );
    // The line of the table the key belongs in.
    assert_eq!(at(&issues, "sinks.h.url").line, Some(4));
}

#[test]
fn unknown_and_missing_types_list_the_valid_ones() {
    let issues =
        problems("[sources.a]\ntype = \"htp\"\n[sinks.b]\ntype = \"s3\"\n[sinks.c]\nurl = \"x\"\n");
    let issue = at(&issues, "sources.a.type");
    assert_mentions(
        issue,
        &[
            "unknown source type \"htp\"",
            "http, queue, postgres_cdc, kafka",
            "did you mean `http`?",
        ],
    );
    assert_mentions(
        at(&issues, "sinks.b.type"),
        &["webhook, queue, stdout, file, kafka"],
    );
    assert_mentions(
        at(&issues, "sinks.c.type"),
        &["missing required key `type`", "webhook"],
    );
    // Keys of a table whose type is unknown are not judged.
    assert!(
        issues.iter().all(|issue| issue.path != "sinks.c.url"),
        "{issues:#?}"
    );
}

#[test]
fn bad_durations_and_sizes() {
    let issues = problems(
        r#"
[queues.q]
retention = "a week"
ack_timeout = 30
max_bytes = "lots"
[sources.api]
type = "http"
max_body = -1
[plugins.p]
path = "p.wasm"
memory = "16 parsecs"
timeout = "0s"
"#,
    );
    assert_mentions(
        at(&issues, "queues.q.retention"),
        &["invalid duration \"a week\"", "\"30s\""],
    );
    assert_mentions(
        at(&issues, "queues.q.ack_timeout"),
        &["needs a unit", "\"30s\""],
    );
    assert_mentions(
        at(&issues, "queues.q.max_bytes"),
        &["invalid size \"lots\"", "\"64MiB\""],
    );
    assert_mentions(at(&issues, "sources.api.max_body"), &["expected a size"]);
    assert_mentions(at(&issues, "plugins.p.memory"), &["invalid size"]);
    assert_mentions(at(&issues, "plugins.p.timeout"), &["longer than zero"]);
}

#[test]
fn zero_counts_are_rejected() {
    let issues = problems(
        r#"
[queues.q]
partitions = 0
max_deliveries = 0
max_bytes = 0
[sinks.h]
type = "webhook"
url = "http://h"
concurrency = 0
retry = { max_attempts = 0 }
[pipelines.p]
from = ["api"]
to = ["h"]
max_in_flight = -5
[sources.api]
type = "http"
"#,
    );
    for path in [
        "queues.q.partitions",
        "queues.q.max_deliveries",
        "sinks.h.concurrency",
        "sinks.h.retry.max_attempts",
        "pipelines.p.max_in_flight",
    ] {
        assert_mentions(at(&issues, path), &["must be at least 1"]);
    }
    assert_mentions(at(&issues, "queues.q.max_bytes"), &["larger than zero"]);
    assert_eq!(issues.len(), 6, "{issues:#?}");
}

#[test]
fn names_must_be_url_and_directory_safe() {
    let issues = problems(
        r#"
[queues."my queue"]
[sources."a/b"]
type = "http"
[pipelines.p]
from = ["a/b"]
to = ["c"]
dead_letter = "../etc"
[sinks.c]
type = "stdout"
"#,
    );
    assert_mentions(
        at(&issues, "queues.my queue"),
        &[
            "invalid queue name \"my queue\"",
            "letters, digits, `_` and `-`",
        ],
    );
    assert_mentions(at(&issues, "sources.a/b"), &["invalid source name"]);
    assert_mentions(
        at(&issues, "pipelines.p.dead_letter"),
        &["invalid queue name \"../etc\""],
    );
}

#[test]
fn pipelines_must_name_declared_sources_sinks_and_plugins() {
    let issues = problems(
        r#"
[sources.api]
type = "http"
[plugins.keep]
path = "keep.wasm"
[pipelines.p]
from = ["apj"]
filters = ["kep"]
transforms = ["zzzzzz"]
router = "pick"
to = ["console"]
[sinks.consol]
type = "stdout"
"#,
    );
    assert_mentions(
        at(&issues, "pipelines.p.from[0]"),
        &["unknown source `apj`, did you mean `api`?"],
    );
    assert_mentions(
        at(&issues, "pipelines.p.filters[0]"),
        &["unknown plugin `kep`, did you mean `keep`?"],
    );
    assert_mentions(
        at(&issues, "pipelines.p.transforms[0]"),
        &["unknown plugin `zzzzzz`", "keep"],
    );
    assert_mentions(
        at(&issues, "pipelines.p.router"),
        &["unknown plugin `pick`"],
    );
    assert_mentions(
        at(&issues, "pipelines.p.to[0]"),
        &["unknown sink `console`, did you mean `consol`?"],
    );
    assert_eq!(at(&issues, "pipelines.p.to[0]").line, Some(11));
}

#[test]
fn names_live_in_separate_namespaces() {
    // A source, a sink, a plugin and a queue may all be called `orders`.
    load(
        r#"
[queues.orders]
[sources.orders]
type = "queue"
queue = "orders"
[plugins.orders]
path = "orders.wasm"
[pipelines.orders]
from = ["orders"]
filters = ["orders"]
to = ["orders"]
[sinks.orders]
type = "stdout"
"#,
    )
    .unwrap();
    // A sink name is not a source name.
    let issues =
        problems("[sinks.x]\ntype = \"stdout\"\n[pipelines.p]\nfrom = [\"x\"]\nto = [\"x\"]\n");
    assert_mentions(
        at(&issues, "pipelines.p.from[0]"),
        &["unknown source `x`", "add [sources.x]"],
    );
}

#[test]
fn a_name_listed_twice_is_an_error() {
    let issues = problems(
        r#"
[sources.api]
type = "http"
[pipelines.p]
from = ["api", "api"]
to = ["c", "c"]
[sinks.c]
type = "stdout"
"#,
    );
    assert_mentions(
        at(&issues, "pipelines.p.from[1]"),
        &["source `api` is listed twice"],
    );
    assert_mentions(
        at(&issues, "pipelines.p.to[1]"),
        &["sink `c` is listed twice"],
    );
}

#[test]
fn a_pipeline_needs_to_or_router() {
    let issues = problems("[sources.api]\ntype = \"http\"\n[pipelines.p]\nfrom = [\"api\"]\n");
    assert_mentions(at(&issues, "pipelines.p"), &["neither `to` nor `router`"]);
    assert_eq!(at(&issues, "pipelines.p").line, Some(3));

    let with_router = "[sources.api]\ntype = \"http\"\n[plugins.r]\npath = \"r.wasm\"\n[pipelines.p]\nfrom = [\"api\"]\nrouter = \"r\"\n";
    load(with_router).unwrap();
}

#[test]
fn queues_must_be_declared() {
    let issues = problems(
        r#"
[queues.orders]
dead_letter = "orders-dlq"
[sources.jobs]
type = "queue"
queue = "jobs"
[pipelines.p]
from = ["jobs"]
to = ["w"]
[sinks.w]
type = "queue"
queue = "order"
"#,
    );
    assert_mentions(
        at(&issues, "sources.jobs.queue"),
        &["queue `jobs` is not declared", "add [queues.jobs]"],
    );
    assert_mentions(
        at(&issues, "sinks.w.queue"),
        &["did you mean `orders`?", "add [queues.order]"],
    );
    assert_mentions(
        at(&issues, "queues.orders.dead_letter"),
        &["add [queues.orders-dlq]"],
    );
}

#[test]
fn pipeline_and_server_dead_letter_queues_may_be_undeclared() {
    let config = load(
        r#"
[server]
dead_letter = "all-failures"
[sources.api]
type = "http"
[pipelines.p]
from = ["api"]
to = ["c"]
dead_letter = "p-failures"
[sinks.c]
type = "stdout"
"#,
    )
    .unwrap();
    assert_eq!(
        config.pipelines["p"].dead_letter.as_deref(),
        Some("p-failures")
    );
    assert!(config.queues.is_empty());
}

#[test]
fn a_queue_cannot_be_its_own_dead_letter() {
    let issues = problems("[queues.q]\ndead_letter = \"q\"\n");
    assert_mentions(
        at(&issues, "queues.q.dead_letter"),
        &["own dead-letter queue"],
    );
}

#[test]
fn a_queue_that_feeds_itself_is_a_cycle() {
    let issues = problems(
        r#"
[queues.orders]
[sources.jobs]
type = "queue"
queue = "orders"
[pipelines.fanout]
from = ["jobs"]
to = ["back"]
[sinks.back]
type = "queue"
queue = "orders"
"#,
    );
    let issue = at(&issues, "pipelines.fanout.to");
    assert_mentions(issue, &["orders → pipeline fanout → orders"]);
    assert_eq!(issues.len(), 1, "{issues:#?}");
}

#[test]
fn a_cycle_through_several_pipelines_is_printed_whole() {
    let issues = problems(
        r#"
[queues.a]
[queues.b]
[queues.c]
[sources.from_a]
type = "queue"
queue = "a"
[sources.from_b]
type = "queue"
queue = "b"
[sources.from_c]
type = "queue"
queue = "c"
[sinks.to_a]
type = "queue"
queue = "a"
[sinks.to_b]
type = "queue"
queue = "b"
[sinks.to_c]
type = "queue"
queue = "c"
[sinks.out]
type = "stdout"
[pipelines.one]
from = ["from_a"]
to = ["to_b", "out"]
[pipelines.two]
from = ["from_b"]
to = ["to_c"]
[pipelines.three]
from = ["from_c"]
to = ["to_a"]
"#,
    );
    let issue = at(&issues, "pipelines.one.to");
    assert_mentions(
        issue,
        &["a → pipeline one → b → pipeline two → c → pipeline three → a"],
    );
    assert_eq!(
        issues.len(),
        1,
        "reported once, not once per queue: {issues:#?}"
    );

    // Break the loop: no error.
    let fixed = r#"
[queues.a]
[queues.b]
[sources.from_a]
type = "queue"
queue = "a"
[sources.from_b]
type = "queue"
queue = "b"
[sinks.to_b]
type = "queue"
queue = "b"
[sinks.out]
type = "stdout"
[pipelines.one]
from = ["from_a"]
to = ["to_b"]
[pipelines.two]
from = ["from_b"]
to = ["out"]
"#;
    load(fixed).unwrap();
}

#[test]
fn every_problem_is_reported_at_once() {
    let text = r#"[server]
listn = "0.0.0.0:80"

[queues.orders]
partitions = 0

[sources.api]
type = "htp"

[pipelines.p]
from = ["api", "ghost"]
to = ["audit"]

[sinks.audit]
type = "webhook"
url = "http://h"
timeout = "5 parsecs"
"#;
    let error = load_str_with_env(text, false, &HashMap::new()).unwrap_err();
    let paths: Vec<&str> = error
        .issues
        .iter()
        .map(|issue| issue.path.as_str())
        .collect();
    assert_eq!(
        paths,
        [
            "server.listn",
            "queues.orders.partitions",
            "sources.api.type",
            "pipelines.p.from[1]",
            "sinks.audit.timeout",
        ],
        "in file order: {error}"
    );
    let lines: Vec<Option<usize>> = error.issues.iter().map(|issue| issue.line).collect();
    assert_eq!(lines, [Some(2), Some(5), Some(8), Some(11), Some(17)]);
    let display = error.to_string();
    let printed: Vec<&str> = display.lines().collect();
    assert_eq!(printed.len(), 6);
    assert_eq!(
        printed[0],
        "server.listn: unknown key `listn`, did you mean `listen`? (line 2)"
    );
    assert_eq!(printed[5], "5 problems in the configuration");
}

#[test]
fn syntax_errors_have_line_and_column() {
    let error = load("[server]\nlisten = \"x\n").unwrap_err();
    assert_eq!(error.issues.len(), 1);
    let issue = &error.issues[0];
    assert_eq!(issue.line, Some(2));
    assert!(issue.column.is_some());
    assert!(
        issue.message.starts_with("TOML syntax error"),
        "{}",
        issue.message
    );

    let error = load_str_with_env("server:\n  listen: [1\n", true, &HashMap::new()).unwrap_err();
    assert!(
        error.issues[0].message.starts_with("YAML syntax error"),
        "{error}"
    );
    assert_eq!(error.issues[0].line, Some(3));
}

#[test]
fn environment_overrides_use_double_underscores() {
    let text = r#"
[server]
listen = "127.0.0.1:8080"
[sources.api]
type = "http"
[pipelines.p]
from = ["api"]
to = ["audit"]
[sinks.audit]
type = "webhook"
url = "http://127.0.0.1:9000/hook"
"#;
    let vars = env(&[
        ("SWITCHYARD_SERVER__LISTEN", "0.0.0.0:9000"),
        (
            "SWITCHYARD_SINKS__AUDIT__URL",
            "https://hooks.example.com/in",
        ),
        ("SWITCHYARD_SINKS__AUDIT__CONCURRENCY", "4"),
        ("SWITCHYARD_SINKS__AUDIT__ENVELOPE", "true"),
        ("SWITCHYARD_SOURCES__API__TOKEN", "0123456789012345"),
        // Beyond loopback without an admin token: allowed only when meant.
        ("SWITCHYARD_SERVER__INSECURE", "true"),
        ("SWITCHYARD_QUEUES__EXTRA__PARTITIONS", "3"),
        // No double underscore: secrets, not overrides, and no unknown-key errors.
        ("SWITCHYARD_ADMIN_TOKEN", "secret"),
        ("SWITCHYARD_LOG", "debug"),
    ]);
    let config = load_str_with_env(text, false, &vars).unwrap();
    assert_eq!(config.server.listen, "0.0.0.0:9000");
    let SinkConfig::Webhook(audit) = &config.sinks["audit"] else {
        panic!("webhook")
    };
    assert_eq!(audit.url, "https://hooks.example.com/in");
    assert_eq!(audit.concurrency, 4);
    assert!(audit.envelope);
    let SourceConfig::Http(api) = &config.sources["api"] else {
        panic!("http")
    };
    assert_eq!(
        api.token.as_deref(),
        Some("0123456789012345"),
        "text stays text"
    );
    assert_eq!(config.queues["extra"].partitions, 3);
    assert_eq!(config.server.admin_token, None);

    let vars = env(&[
        ("SWITCHYARD_PIPELINES__P__TO", "[audit, console]"),
        ("SWITCHYARD_SINKS__CONSOLE__TYPE", "stdout"),
    ]);
    let config = load_str_with_env(text, false, &vars).unwrap();
    assert_eq!(config.pipelines["p"].to, ["audit", "console"]);
}

#[test]
fn bad_environment_overrides_name_the_variable() {
    let vars = env(&[
        ("SWITCHYARD_SERVER__LISTN", "x"),
        ("SWITCHYARD_QUEUES__Q__PARTITIONS", "0"),
    ]);
    let error = load_str_with_env("", false, &vars).unwrap_err();
    let issue = at(&error.issues, "server.listn");
    assert_mentions(
        issue,
        &["did you mean `listen`?", "SWITCHYARD_SERVER__LISTN"],
    );
    assert_eq!(issue.line, None);
    // Keys from the environment are lower-cased.
    assert_mentions(
        at(&error.issues, "queues.q.partitions"),
        &["must be at least 1", "SWITCHYARD_QUEUES__Q__PARTITIONS"],
    );
}

#[test]
fn variables_are_substituted() {
    let text = r#"
[server]
admin_token = "${ADMIN}"
[sources.api]
type = "http"
[pipelines.p]
from = ["api"]
to = ["audit"]
[sinks.audit]
type = "webhook"
url = "${HOOK_BASE:-http://127.0.0.1:9000}/hook"
secret = "${SECRET}"
headers = { Authorization = "Bearer ${TOKEN}" }
"#;
    let vars = env(&[
        ("ADMIN", "a1-0123456789abcdef"),
        ("SECRET", "whsec_c2VjcmV0"),
        ("TOKEN", "t0k"),
    ]);
    let config = load_str_with_env(text, false, &vars).unwrap();
    assert_eq!(
        config.server.admin_token.as_deref(),
        Some("a1-0123456789abcdef")
    );
    let SinkConfig::Webhook(audit) = &config.sinks["audit"] else {
        panic!("webhook")
    };
    assert_eq!(audit.url, "http://127.0.0.1:9000/hook");
    assert_eq!(audit.secret.as_deref(), Some("whsec_c2VjcmV0"));
    assert_eq!(audit.headers["Authorization"], "Bearer t0k");
}

#[test]
fn a_missing_variable_is_an_error_at_its_key() {
    let text = r#"
[sources.api]
type = "http"
[pipelines.p]
from = ["api"]
to = ["audit"]
[sinks.audit]
type = "webhook"
url = "${HOOK_URL}"
headers = { Authorization = "Bearer ${TOKEN}" }
"#;
    let error = load_str_with_env(text, false, &HashMap::new()).unwrap_err();
    let url = at(&error.issues, "sinks.audit.url");
    assert_mentions(url, &["environment variable `HOOK_URL` is not set"]);
    assert_eq!(url.line, Some(9));
    assert_mentions(
        at(&error.issues, "sinks.audit.headers.Authorization"),
        &["`TOKEN`"],
    );
    // No second complaint that "${HOOK_URL}" is not an http:// URL.
    assert_eq!(error.issues.len(), 2, "{error}");
}

#[test]
fn yaml_is_accepted_and_validated() {
    let text = "\
sources:
  api:
    type: http
    max_body: 64KiB
pipelines:
  p:
    from: [api]
    to: [console]
sinks:
  console:
    type: stdout
";
    let config = load_str_with_env(text, true, &HashMap::new()).unwrap();
    let SourceConfig::Http(api) = &config.sources["api"] else {
        panic!("http")
    };
    assert_eq!(api.max_body, ByteSize(64 << 10));

    let bad = "\
server:
  listn: 0.0.0.0:80
sinks:
  console:
    type: stdot
";
    let error = load_str_with_env(bad, true, &HashMap::new()).unwrap_err();
    assert_eq!(at(&error.issues, "server.listn").line, Some(2));
    assert_mentions(
        at(&error.issues, "sinks.console.type"),
        &["did you mean `stdout`?"],
    );
    assert_eq!(at(&error.issues, "sinks.console.type").line, Some(5));
}

#[test]
fn files_are_read_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let toml = dir.path().join("a.toml");
    std::fs::write(&toml, MINIMAL).unwrap();
    load_file(&toml).unwrap();

    let yaml = dir.path().join("a.yml");
    std::fs::write(&yaml, "sinks:\n  c:\n    type: nope\n").unwrap();
    let error = load_file_with_env(&yaml, &HashMap::new()).unwrap_err();
    let origin = yaml.display().to_string();
    assert!(
        error
            .to_string()
            .ends_with(&format!("1 problem in {origin}")),
        "{error}"
    );

    let json = dir.path().join("a.json");
    std::fs::write(&json, "{}").unwrap();
    assert_mentions(
        &load_file(&json).unwrap_err().issues[0],
        &["*.toml, *.yaml or *.yml"],
    );

    let missing = dir.path().join("missing.toml");
    assert_mentions(
        &load_file(&missing).unwrap_err().issues[0],
        &["cannot read"],
    );
}

#[test]
fn dead_letters_must_not_flow_back_into_the_pipeline() {
    let issues = problems(
        r#"
[queues.orders]
[sources.jobs]
type = "queue"
queue = "orders"
[pipelines.p]
from = ["jobs"]
to = ["c"]
dead_letter = "orders"
[sinks.c]
type = "stdout"
"#,
    );
    assert_mentions(
        at(&issues, "pipelines.p.dead_letter"),
        &["reads queue `orders`", "separate dead-letter queue"],
    );
}

#[test]
fn webhook_values_are_checked() {
    let issues = problems(
        r#"
[sinks.h]
type = "webhook"
url = "ftp://example.com"
secret = "hunter2"
retry = { initial = "2m", max = "1m" }
headers = { "bad header" = "x" }
"#,
    );
    assert_mentions(at(&issues, "sinks.h.url"), &["http:// or https://"]);
    assert_mentions(at(&issues, "sinks.h.secret"), &["whsec_"]);
    assert_mentions(at(&issues, "sinks.h.retry.initial"), &["longer than `max`"]);
    assert_mentions(
        at(&issues, "sinks.h.headers.bad header"),
        &["invalid header name"],
    );
}

#[test]
fn plugin_grants_are_parsed_and_default_to_nothing() {
    let config = load(
        r#"
[sources.api]
type = "http"
[plugins.none]
path = "n.wasm"
[plugins.some]
path = "s.wasm"
allow_env = ["TENANT", "REGION"]
allow_dirs = { "/data" = "plugins/data", "/etc/rules" = "/srv/rules" }
[pipelines.p]
from = ["api"]
filters = ["none", "some"]
to = ["out"]
[sinks.out]
type = "stdout"
"#,
    )
    .unwrap();
    let none = &config.plugins["none"];
    assert!(none.allow_env.is_empty());
    assert!(none.allow_dirs.is_empty());
    let some = &config.plugins["some"];
    assert_eq!(some.allow_env, ["TENANT", "REGION"]);
    assert_eq!(some.allow_dirs.len(), 2);
    assert_eq!(some.allow_dirs["/data"], "plugins/data");
    assert_eq!(some.allow_dirs["/etc/rules"], "/srv/rules");
}

#[test]
fn bad_plugin_grants_are_refused() {
    let issues = problems(
        r#"
[plugins.a]
path = "a.wasm"
allow_env = "TENANT"
allow_dirs = ["/data"]
[plugins.b]
path = "b.wasm"
allow_env = ["OK", "A=B", ""]
allow_dirs = { "data" = "plugins/data", "/x" = 3 }
[plugins.c]
path = "c.wasm"
allow_sockets = true
"#,
    );
    assert_mentions(at(&issues, "plugins.a.allow_env"), &["[\"TENANT\"]"]);
    assert_mentions(
        at(&issues, "plugins.a.allow_dirs"),
        &["guest path = host directory", "found a list"],
    );
    assert_mentions(at(&issues, "plugins.b.allow_env[1]"), &["\"A=B\""]);
    assert_mentions(
        at(&issues, "plugins.b.allow_env[2]"),
        &["not an environment"],
    );
    assert_mentions(
        at(&issues, "plugins.b.allow_dirs.data"),
        &["must be absolute"],
    );
    assert_mentions(
        at(&issues, "plugins.b.allow_dirs./x"),
        &["found an integer"],
    );
    assert_mentions(
        at(&issues, "plugins.c.allow_sockets"),
        &["unknown key `allow_sockets`"],
    );
}

#[test]
fn kafka_sink_defaults_and_keys() {
    let config = load(
        "[sinks.k]\ntype = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"cdc.{table}\"\n",
    )
    .unwrap();
    let SinkConfig::Kafka(k) = &config.sinks["k"] else {
        panic!("a kafka sink");
    };
    assert_eq!(k.topic, "cdc.{table}");
    assert_eq!(k.timeout, Duration::from_secs(30));
    assert_eq!(k.linger, Duration::from_millis(5));
    assert_eq!(
        (k.concurrency, k.create_topics, k.partitions),
        (8, false, 1)
    );
    assert_eq!(k.retry, None, "no limit unless configured");

    let config = load(
        "[sinks.k]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"t\"\ntimeout = \"3s\"\n\
         linger = \"0ms\"\nconcurrency = 2\ncreate_topics = true\npartitions = 3\n\
         retry = { max_attempts = 4 }\noptions = { \"security.protocol\" = \"SASL_SSL\" }\n",
    )
    .unwrap();
    let SinkConfig::Kafka(k) = &config.sinks["k"] else {
        panic!("a kafka sink");
    };
    assert_eq!(
        (k.timeout, k.linger),
        (Duration::from_secs(3), Duration::ZERO)
    );
    assert_eq!((k.concurrency, k.create_topics, k.partitions), (2, true, 3));
    assert_eq!(k.retry.as_ref().map(|r| r.max_attempts), Some(4));
    assert_eq!(k.options["security.protocol"], "SASL_SSL");
}

#[test]
fn kafka_topic_templates_name_only_known_placeholders() {
    let issues = problems(
        "[sinks.k]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"{source}.{tabel}\"\n\
         [sinks.j]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"x.{kind\"\n",
    );
    assert_mentions(
        at(&issues, "sinks.k.topic"),
        &[
            "unknown placeholder {tabel}",
            "{source}, {kind}, {table} or {header:NAME}",
        ],
    );
    assert_mentions(at(&issues, "sinks.j.topic"), &["unclosed `{`"]);

    let issues = problems(
        "[sinks.k]\ntype = \"kafka\"\nbrokers = \"b:9092\"\ntopic = \"outbox.{header:}\"\n",
    );
    assert_mentions(at(&issues, "sinks.k.topic"), &["without a header name"]);
    let config = load(
        "[sinks.k]\ntype = \"kafka\"\nbrokers = \"b:9092\"\n\
         topic = \"outbox.event.{header:aggregatetype}\"\n",
    )
    .unwrap();
    let SinkConfig::Kafka(k) = &config.sinks["k"] else {
        panic!("a kafka sink");
    };
    assert_eq!(k.topic, "outbox.event.{header:aggregatetype}");
}

/// The format of one sink of `config`.
fn format_of(config: &Config, sink: &str) -> SinkFormat {
    match &config.sinks[sink] {
        SinkConfig::Webhook(c) => c.format,
        SinkConfig::Queue(c) => c.format,
        SinkConfig::Stdout(c) => c.format,
        SinkConfig::File(c) => c.format,
        SinkConfig::Kafka(c) => c.format,
        SinkConfig::Null(_) => panic!("sink {sink} writes nothing"),
        SinkConfig::Nats(c) => c.format,
        SinkConfig::Redis(c) => c.format,
        SinkConfig::Rabbitmq(c) => c.format,
        SinkConfig::Mqtt(c) => c.format,
    }
}

/// One sink of every type, each with `extra` added to its table.
fn every_sink_type(extra: &str) -> String {
    format!(
        r#"
[queues.q]
[sinks.hook]
type = "webhook"
url = "https://hooks.example.com/in"
{extra}
[sinks.queue]
type = "queue"
queue = "q"
{extra}
[sinks.console]
type = "stdout"
{extra}
[sinks.file]
type = "file"
path = "out.jsonl"
{extra}
[sinks.topic]
type = "kafka"
brokers = "b:9092"
topic = "t"
{extra}
[sinks.subject]
type = "nats"
url = "nats://127.0.0.1:4222"
subject = "events.{{source}}"
{extra}
[sinks.entries]
type = "redis"
url = "redis://127.0.0.1:6379"
stream = "events:{{source}}"
{extra}
[sinks.rabbit]
type = "rabbitmq"
url = "amqp://127.0.0.1:5672/%2f"
exchange = "events"
{extra}
[sinks.mqtt]
type = "mqtt"
url = "mqtt://127.0.0.1:1883"
topic = "events/{{source}}"
{extra}
"#
    )
}

#[test]
fn every_sink_writes_switchyards_format_unless_told_otherwise() {
    let sinks = [
        "hook", "queue", "console", "file", "topic", "subject", "entries", "rabbit", "mqtt",
    ];
    let config = load(&every_sink_type("")).unwrap();
    for sink in sinks {
        assert_eq!(format_of(&config, sink), SinkFormat::Switchyard, "{sink}");
    }
    let config = load(&every_sink_type("format = \"debezium\"")).unwrap();
    for sink in sinks {
        assert_eq!(format_of(&config, sink), SinkFormat::Debezium, "{sink}");
    }
    let config = load(&every_sink_type("format = \"switchyard\"")).unwrap();
    for sink in sinks {
        assert_eq!(format_of(&config, sink), SinkFormat::Switchyard, "{sink}");
    }
}

#[test]
fn an_unknown_format_is_refused_with_the_accepted_ones() {
    let issues = problems(&every_sink_type("format = \"avro\""));
    assert_eq!(issues.len(), 9, "{issues:#?}");
    for sink in [
        "hook", "queue", "console", "file", "topic", "subject", "entries", "rabbit", "mqtt",
    ] {
        let issue = at(&issues, &format!("sinks.{sink}.format"));
        assert_eq!(
            issue.message,
            "unknown value \"avro\", expected one of: switchyard, debezium, cloudevents"
        );
    }
    let issues = problems(&every_sink_type("format = \"debezum\""));
    assert_mentions(
        at(&issues, "sinks.file.format"),
        &[
            "expected one of: switchyard, debezium, cloudevents",
            "did you mean `debezium`?",
        ],
    );
    let issues = problems(&every_sink_type("format = true"));
    assert_mentions(
        at(&issues, "sinks.console.format"),
        &["expected a string, found a boolean"],
    );
    let issues = problems(&every_sink_type("formt = \"debezium\""));
    assert_mentions(
        at(&issues, "sinks.topic.formt"),
        &["unknown key `formt`, did you mean `format`?"],
    );
}

#[test]
fn a_webhook_sends_one_envelope_switchyards_or_the_formats() {
    let issues = problems(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"https://h.example.com/\"\n\
         envelope = true\nformat = \"debezium\"\n",
    );
    assert_eq!(issues.len(), 1, "{issues:#?}");
    assert_mentions(
        at(&issues, "sinks.hook.envelope"),
        &["format = \"debezium\"", "remove `envelope`"],
    );
    let config = load(
        "[sinks.hook]\ntype = \"webhook\"\nurl = \"https://h.example.com/\"\n\
         envelope = true\nformat = \"switchyard\"\n",
    )
    .unwrap();
    let SinkConfig::Webhook(hook) = &config.sinks["hook"] else {
        panic!("a webhook sink")
    };
    assert!(hook.envelope);
}

#[test]
fn a_postgres_source_feeds_one_pipeline_and_a_slot_one_source() {
    let issues = problems(
        r#"
[sources.db]
type = "postgres_cdc"
dsn = "postgres://u@h/app"
tables = ["public.orders"]
[sources.db2]
type = "postgres_cdc"
dsn = "postgres://u@h/app"
slot = "switchyard_db"
tables = ["public.orders"]
[pipelines.a]
from = ["db"]
to = ["out"]
[pipelines.b]
from = ["db", "db2"]
to = ["out"]
[sinks.out]
type = "stdout"
"#,
    );
    assert_mentions(
        at(&issues, "pipelines.b.from"),
        &["`db` is read by pipelines `a` and `b`", "its own `slot`"],
    );
    assert_mentions(
        at(&issues, "sources.db2.slot"),
        &["same replication slot `switchyard_db`"],
    );
    assert_eq!(issues.len(), 2, "{issues:#?}");
}

#[test]
fn postgres_source_keys_have_defaults_and_types() {
    let issues = problems(
        r#"
[sources.db]
type = "postgres_cdc"
dsn = "postgres://u@h/app"
snapshot_chunk = 0
recreate_slot = "yes"
[pipelines.a]
from = ["db"]
to = ["out"]
[sinks.out]
type = "stdout"
"#,
    );
    at(&issues, "sources.db.snapshot_chunk");
    at(&issues, "sources.db.recreate_slot");
    assert_eq!(issues.len(), 2, "{issues:#?}");
}

#[test]
fn postgres_leader_timings_default_and_a_release_shorter_than_three_checks_is_refused() {
    let base = r#"
[sources.db]
type = "postgres_cdc"
dsn = "postgres://u@h/app"
[pipelines.a]
from = ["db"]
to = ["out"]
[sinks.out]
type = "stdout"
"#;
    let config = load(base).unwrap();
    let SourceConfig::PostgresCdc(db) = &config.sources["db"] else {
        panic!("a postgres_cdc source");
    };
    assert_eq!(db.standby_retry, Duration::from_secs(1));
    assert_eq!(db.leader_check, Duration::from_secs(1));
    assert_eq!(db.leader_release, Duration::from_secs(5));

    let text = base.replace(
        "dsn = \"postgres://u@h/app\"",
        "dsn = \"postgres://u@h/app\"\nleader_check = \"2s\"\nleader_release = \"5s\"\nstandby_retry = \"0s\"",
    );
    let issues = problems(&text);
    let release = at(&issues, "sources.db.leader_release");
    assert!(
        release.message.contains("3 × leader_check")
            && release.message.contains("raise leader_release"),
        "{release:?}"
    );
    at(&issues, "sources.db.standby_retry");
    assert_eq!(issues.len(), 2, "{issues:#?}");

    let text = base.replace(
        "dsn = \"postgres://u@h/app\"",
        "dsn = \"postgres://u@h/app\"\nleader_check = \"200ms\"\nleader_release = \"1500ms\"",
    );
    let issues = problems(&text);
    assert!(
        at(&issues, "sources.db.leader_release")
            .message
            .contains("whole seconds")
    );
}

#[test]
fn postgres_tls_settings_in_the_dsn_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not read by validation").unwrap();
    let missing = dir.path().join("missing.pem");
    let issues = problems(&format!(
        r#"
[sources.a]
type = "postgres_cdc"
dsn = "postgres://u:secret@h/app?sslmode=verify"
[sources.b]
type = "postgres_cdc"
dsn = "postgres://u@h/app?sslmode=verify-full&sslrootcert={missing}"
[sources.c]
type = "postgres_cdc"
dsn = "host=h dbname=app sslmode=verify-ca"
[sources.ok]
type = "postgres_cdc"
dsn = "postgres://u@h/app?sslmode=verify-full&sslrootcert={ca}"
[sources.ok2]
type = "postgres_cdc"
dsn = "host=h dbname=app sslmode=require"
[pipelines.p]
from = ["a"]
to = ["out"]
[pipelines.p2]
from = ["b"]
to = ["out"]
[pipelines.p3]
from = ["c"]
to = ["out"]
[pipelines.p4]
from = ["ok"]
to = ["out"]
[pipelines.p5]
from = ["ok2"]
to = ["out"]
[sinks.out]
type = "stdout"
"#,
        missing = missing.display(),
        ca = ca.display()
    ));
    let a = at(&issues, "sources.a.dsn");
    assert_mentions(a, &["unknown sslmode=\"verify\"", "verify-ca, verify-full"]);
    assert!(!a.message.contains("secret"), "{a:?}");
    assert_mentions(
        at(&issues, "sources.b.dsn"),
        &["sslrootcert=", "missing.pem does not exist"],
    );
    assert_mentions(
        at(&issues, "sources.c.dsn"),
        &["sslmode=verify-ca", "add sslrootcert=/path/to/ca.pem"],
    );
    assert_eq!(issues.len(), 3, "{issues:#?}");
}

/// Messages about a value that may hold a secret show its safe form: URLs without their
/// password and query values, `${VAR}` values as `${VAR}`, secret-named keys as `***`.
#[test]
fn problems_never_echo_secrets() {
    let vars = env(&[
        ("LISTEN", "nowhere-SECRET_FROM_ENV"),
        ("HOOK_TOKEN", "TOKEN_FROM_ENV_1"),
        ("BROKEN_URL", "gopher://bob:ENVPASSWORD@example.com/"),
    ]);
    let text = r#"
[server]
listen = "${LISTEN}"

[sources.api]
type = "http"

[sources.k]
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["t"]
options = { "security.protocol" = "sasl_plain", "sasl.password" = "KAFKA_PW_1" }

[pipelines.p]
from = ["api"]
to = ["hook", "other"]

[pipelines.q]
from = ["k"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "ftp://alice:FILEPASSWORD@example.com/in?token=${HOOK_TOKEN}&v=2"

[sinks.other]
type = "webhook"
url = "${BROKEN_URL}"
"#;
    let error = load_str_with_env(text, false, &vars).expect_err("problems");
    let shown = error.to_string();
    for secret in [
        "SECRET_FROM_ENV",
        "TOKEN_FROM_ENV_1",
        "ENVPASSWORD",
        "FILEPASSWORD",
        "KAFKA_PW_1",
    ] {
        assert!(!shown.contains(secret), "{secret} in:\n{shown}");
    }
    let issues = &error.issues;
    assert_mentions(
        at(issues, "sinks.hook.url"),
        &[
            "\"ftp://alice:***@example.com/in?token=***&v=***\"",
            "http://",
        ],
    );
    assert_mentions(
        at(issues, "sinks.other.url"),
        &["\"gopher://bob:***@example.com/\""],
    );
    assert_mentions(at(issues, "server.listen"), &["\"${LISTEN}\"", "host:port"]);
    assert_mentions(at(issues, "sources.k.options"), &["sasl_plain"]);
}

#[test]
fn file_sink_mode() {
    let sink = |mode: &str| {
        format!(
            "{MINIMAL}\n[sinks.archive]\ntype = \"file\"\npath = \"out.jsonl\"\n{mode}\n[pipelines.a]\nfrom = [\"api\"]\nto = [\"archive\"]\n"
        )
    };
    let mode_of = |config: &Config| match &config.sinks["archive"] {
        switchyard_config::SinkConfig::File(file) => file.mode,
        other => panic!("{other:?}"),
    };
    assert_eq!(mode_of(&load(&sink("")).unwrap()), 0o600);
    assert_eq!(mode_of(&load(&sink("mode = \"0640\"")).unwrap()), 0o640);
    assert_eq!(mode_of(&load(&sink("mode = \"600\"")).unwrap()), 0o600);
    for (bad, words) in [
        ("mode = 640", &["octal digits", "\"0640\""][..]),
        ("mode = \"0890\"", &["invalid mode"][..]),
        ("mode = \"0440\"", &["read and write"][..]),
        ("mode = \"4600\"", &["invalid mode"][..]),
    ] {
        let issues = problems(&sink(bad));
        assert_mentions(at(&issues, "sinks.archive.mode"), words);
    }
}

#[test]
fn cloudevents_have_a_mode_where_the_protocol_has_headers() {
    let config = switchyard_config::load_str(&every_sink_type("format = \"cloudevents\""), false)
        .expect("every sink type writes CloudEvents");
    for sink in ["hook", "queue", "console", "file", "topic"] {
        assert_eq!(format_of(&config, sink), SinkFormat::CloudEvents, "{sink}");
    }
    let mode = |config: &Config, sink: &str| match &config.sinks[sink] {
        SinkConfig::Webhook(c) => c.cloudevents_mode,
        SinkConfig::Kafka(c) => c.cloudevents_mode,
        other => panic!("{sink} is {other:?}"),
    };
    assert_eq!(mode(&config, "hook"), CloudEventsMode::Binary);
    assert_eq!(mode(&config, "topic"), CloudEventsMode::Binary);

    let structured = r#"
[sinks.hook]
type = "webhook"
url = "https://hooks.example.com/in"
format = "cloudevents"
cloudevents_mode = "structured"
[sinks.topic]
type = "kafka"
brokers = "b:9092"
topic = "t"
format = "cloudevents"
cloudevents_mode = "structured"
"#;
    let config = switchyard_config::load_str(structured, false).expect("valid");
    assert_eq!(mode(&config, "hook"), CloudEventsMode::Structured);
    assert_eq!(mode(&config, "topic"), CloudEventsMode::Structured);
    assert_eq!(config.warnings, []);

    // Without the format, the mode does nothing: said, not refused.
    let ignored = structured.replace("format = \"cloudevents\"\n", "");
    let config = switchyard_config::load_str(&ignored, false).expect("valid");
    assert_eq!(config.warnings.len(), 2, "{:#?}", config.warnings);
    assert_mentions(
        &config.warnings[0],
        &[
            "cloudevents_mode = \"structured\" is ignored",
            "set format = \"cloudevents\"",
        ],
    );

    // Sinks without headers have no mode.
    let issues = problems(
        "[queues.q]\n[sinks.console]\ntype = \"stdout\"\nformat = \"cloudevents\"\ncloudevents_mode = \"binary\"\n",
    );
    assert_mentions(
        at(&issues, "sinks.console.cloudevents_mode"),
        &["unknown key"],
    );
    let issues = problems(&every_sink_type("").replace(
        "topic = \"t\"\n",
        "topic = \"t\"\nformat = \"cloudevents\"\ncloudevents_mode = \"inline\"\n",
    ));
    assert_mentions(
        at(&issues, "sinks.topic.cloudevents_mode"),
        &["expected one of: binary, structured"],
    );
}

#[test]
fn a_null_sink_has_no_keys() {
    let config =
        switchyard_config::load_str("[sinks.nowhere]\ntype = \"null\"\n", false).expect("valid");
    assert!(matches!(config.sinks["nowhere"], SinkConfig::Null(_)));
    let issues = problems("[sinks.nowhere]\ntype = \"null\"\nformat = \"debezium\"\n");
    assert_mentions(at(&issues, "sinks.nowhere.format"), &["unknown key"]);
}

#[test]
fn nats_and_redis_keys_are_checked_with_their_fixes() {
    let issues = problems(
        "[sinks.n]\ntype = \"nats\"\nurl = \"http://127.0.0.1:4222\"\nsubject = \"e.{nope}\"\ncreate = true\n\
         [sinks.r]\ntype = \"redis\"\nurl = \"127.0.0.1:6379\"\nstream = \"s\"\nmaxlen = 0\n\
         [sources.s]\ntype = \"redis\"\nurl = \"redis://u:hunter2@h:6379\"\nstream = \"s\"\ntls = { cert = \"c.pem\" }\n",
    );
    assert_mentions(
        at(&issues, "sinks.n.url"),
        &["must start with nats:// or tls://"],
    );
    assert_mentions(
        at(&issues, "sinks.n.subject"),
        &["unknown placeholder {nope}"],
    );
    assert_mentions(at(&issues, "sinks.n.create"), &["stream = \"EVENTS\""]);
    assert_mentions(at(&issues, "sinks.r.url"), &["redis:// or rediss://"]);
    assert_mentions(at(&issues, "sinks.r.maxlen"), &["at least 1"]);
    assert_mentions(at(&issues, "sources.s.tls"), &["both `cert`", "`key`"]);
    assert!(
        issues.iter().all(|i| !i.message.contains("hunter2")),
        "{issues:#?}"
    );
}

#[test]
fn broker_connectors_report_bad_urls_templates_and_missing_keys_with_fixes() {
    let error = load(
        r#"
[sources.jobs]
type = "rabbitmq"
url = "http://guest:hunter2@h:5672/"
[sources.sensors]
type = "mqtt"
url = "mqtt://h"
topics = []
[pipelines.p]
from = ["jobs", "sensors"]
to = ["rabbit", "mqtt"]
[sinks.rabbit]
type = "rabbitmq"
url = "amqp://h/%2f"
routing_key = "{source}.{sauce}"
[sinks.mqtt]
type = "mqtt"
url = "mqtts://h:8883"
topic = "events/+/{source}"
"#,
    )
    .unwrap_err()
    .to_string();
    for expected in [
        "sources.jobs.url: invalid url",
        "it must start with amqp:// (or amqps:// for TLS)",
        "missing required key `queue`",
        "sources.sensors.url: invalid url",
        "write mqtt://host:port",
        "`topics` is empty",
        "missing required key `exchange`",
        "unknown placeholder {sauce}",
        "has a wildcard",
    ] {
        assert!(error.contains(expected), "{expected:?} not in:\n{error}");
    }
    assert!(!error.contains("hunter2"), "{error}");
}

#[test]
fn a_rabbitmq_or_mqtt_source_read_by_two_pipelines_is_refused() {
    let error = load(
        r#"
[sources.jobs]
type = "rabbitmq"
url = "amqp://h:5672/%2f"
queue = "jobs"
[pipelines.a]
from = ["jobs"]
to = ["out"]
[pipelines.b]
from = ["jobs"]
to = ["out"]
[sinks.out]
type = "stdout"
"#,
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("consumers of queue `jobs` share its messages"),
        "{error}"
    );
}
