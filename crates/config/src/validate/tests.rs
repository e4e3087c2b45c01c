//! Unit tests of the walk; `tests/load.rs` holds the tests through the public API.

use std::time::Duration;

use super::server::{listen_is_loopback, valid_listen};
use super::walk::closest;
use crate::load::Issue;
use crate::validate::walk::valid_name;
use crate::{ByteSize, ServerTlsConfig, SinkConfig, SinkKind, SourceConfig, SourceKind};

#[test]
fn work_group_bounds_of_a_queue() {
    let env = std::collections::HashMap::new();
    let load = |text: &str| crate::load_str_with_env(text, false, &env);
    let config = load("[queues.q]\n").unwrap();
    let q = &config.queues["q"];
    assert_eq!(q.max_groups, 64);
    assert_eq!(q.work_memory, ByteSize(256 << 20));
    assert_eq!(q.group_idle_expiry, Duration::from_secs(7 * 86_400));

    let config = load(
        "[queues.q]\nmax_groups = 3\nwork_memory = \"8MiB\"\ngroup_idle_expiry = \"0s\"\nack_timeout = \"7d\"\n",
    )
    .unwrap();
    let q = &config.queues["q"];
    assert_eq!(
        (q.max_groups, q.work_memory, q.group_idle_expiry),
        (3, ByteSize(8 << 20), Duration::ZERO)
    );

    let issues = load(
        "[queues.q]\nmax_groups = 0\nwork_memory = \"0\"\nack_timeout = \"8d\"\ngroup_idle_expiry = \"soon\"\n",
    )
    .unwrap_err()
    .issues;
    let at = |path: &str| {
        issues
            .iter()
            .find(|i| i.path == path)
            .unwrap_or_else(|| panic!("no issue at {path}: {issues:?}"))
            .message
            .clone()
    };
    assert!(
        at("queues.q.max_groups").contains("at least 1"),
        "{issues:?}"
    );
    assert!(at("queues.q.work_memory").contains("zero"), "{issues:?}");
    assert!(
        at("queues.q.ack_timeout").contains("at most 7d"),
        "{issues:?}"
    );
    assert!(
        at("queues.q.group_idle_expiry").contains("duration"),
        "{issues:?}"
    );
}

#[test]
fn suggestions() {
    assert_eq!(closest("listn", ["listen", "data_dir"]), Some("listen"));
    assert_eq!(
        closest("htp", SourceKind::ALL.map(SourceKind::name)),
        Some("http")
    );
    assert_eq!(
        closest("webhok", SinkKind::ALL.map(SinkKind::name)),
        Some("webhook")
    );
    assert_eq!(closest("zzzzzz", ["listen"]), None);
}

#[test]
fn names() {
    assert!(valid_name("orders-dlq_2"));
    assert!(!valid_name(""));
    assert!(!valid_name("my sink"));
    assert!(!valid_name("a/b"));
    assert!(!valid_name("é"));
}

#[test]
fn a_kafka_source_feeds_one_pipeline() {
    let text = r#"
[sources.clicks]
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["clicks"]
group = "fanout"
[sources.clicks_audit]
type = "kafka"
brokers = "127.0.0.1:9092"
topics = ["clicks"]
group = "audit"
[pipelines.a]
from = ["clicks"]
to = ["out"]
[pipelines.b]
from = ["clicks"]
to = ["out"]
[pipelines.c]
from = ["clicks_audit"]
to = ["out"]
[sinks.out]
type = "stdout"
"#;
    let issues = crate::load_str(text, false)
        .expect_err("a kafka source in two pipelines is refused")
        .issues;
    assert_eq!(issues.len(), 1, "{issues:#?}");
    let issue = &issues[0];
    assert_eq!(issue.path, "pipelines.b.from");
    for words in [
        "kafka source `clicks` is read by pipelines `a` and `b`",
        "consumer group `fanout`",
        "declare a second kafka source",
        "its own `group`",
    ] {
        assert!(issue.message.contains(words), "{words:?} not in {issue:?}");
    }
    assert!(issue.line.is_some(), "{issue:?}");

    // One source per pipeline, each with its own group: accepted.
    let fixed = text.replace(
        "[pipelines.b]\nfrom = [\"clicks\"]",
        "[pipelines.b]\nfrom = [\"clicks_audit\"]",
    );
    let fixed = fixed.replace(
        "[pipelines.c]\nfrom = [\"clicks_audit\"]\nto = [\"out\"]\n",
        "",
    );
    crate::load_str(&fixed, false).expect("one pipeline per kafka source is valid");
}

#[test]
fn kafka_security_protocol_is_checked_and_tls_options_pass_through() {
    let text = |protocol: &str| {
        format!(
            r#"
[sources.clicks]
type = "kafka"
brokers = "b:9093"
topics = ["clicks"]
options = {{ "security.protocol" = "{protocol}", "ssl.ca.location" = "/etc/kafka/ca.pem" }}
[pipelines.a]
from = ["clicks"]
to = ["out"]
[sinks.out]
type = "kafka"
brokers = "b:9093"
topic = "t"
options = {{ "security.protocol" = "{protocol}", "ssl.ca.location" = "/etc/kafka/ca.pem" }}
"#
        )
    };
    for ok in ["ssl", "SASL_SSL", "plaintext", "SASL_PLAINTEXT"] {
        let config = crate::load_str(&text(ok), false).expect(ok);
        let Some(SinkConfig::Kafka(sink)) = config.sinks.get("out") else {
            panic!("a kafka sink")
        };
        assert_eq!(sink.options["security.protocol"], ok);
        assert_eq!(sink.options["ssl.ca.location"], "/etc/kafka/ca.pem");
    }
    let issues = crate::load_str(&text("tls"), false)
        .expect_err("not a protocol")
        .issues;
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["sources.clicks.options", "sinks.out.options"],
        "{issues:#?}"
    );
    assert!(
        issues[0]
            .message
            .contains("\"tls\" is not a Kafka security protocol")
    );
    assert!(issues[0].message.contains("ssl (TLS"), "{:?}", issues[0]);
    assert!(issues[0].line.is_some(), "{:?}", issues[0]);
    let issues = crate::load_str(&text("sasl_ssll"), false)
        .expect_err("a typo")
        .issues;
    assert!(
        issues[0].message.contains("did you mean `sasl_ssl`?"),
        "{issues:#?}"
    );
}

#[test]
fn listen_addresses() {
    assert!(valid_listen("127.0.0.1:8080"));
    assert!(valid_listen("[::1]:8080"));
    assert!(valid_listen("localhost:80"));
    assert!(!valid_listen("8080"));
    assert!(!valid_listen("host:http"));
}

#[test]
fn loopback_listeners() {
    for local in [
        "127.0.0.1:8080",
        "127.1.2.3:1",
        "[::1]:8080",
        "localhost:80",
    ] {
        assert!(listen_is_loopback(local), "{local}");
    }
    for exposed in ["0.0.0.0:8080", "[::]:8080", "10.0.0.5:80", "example.com:80"] {
        assert!(!listen_is_loopback(exposed), "{exposed}");
    }
}

fn issues_of(text: &str) -> Vec<Issue> {
    match crate::load_str(text, false) {
        Ok(_) => Vec::new(),
        Err(e) => e.issues,
    }
}

const PIPELINE: &str = "[sources.api]\ntype = \"http\"\n\n[pipelines.p]\nfrom = [\"api\"]\nto = [\"out\"]\n\n[sinks.out]\ntype = \"stdout\"\n";

#[test]
fn an_exposed_listener_needs_every_token_or_insecure() {
    let exposed = format!("[server]\nlisten = \"0.0.0.0:8080\"\n{PIPELINE}");
    let issues = issues_of(&exposed);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "server.listen");
    for named in [
        "server.admin_token",
        "sources.api.token",
        "server.insecure = true",
    ] {
        assert!(issues[0].message.contains(named), "{}", issues[0].message);
    }
    let meant = exposed.replace("[server]\n", "[server]\ninsecure = true\n");
    assert!(issues_of(&meant).is_empty());
    let guarded = exposed
        .replace(
            "[server]\n",
            "[server]\nadmin_token = \"0123456789abcdef\"\n",
        )
        .replace(
            "type = \"http\"\n",
            "type = \"http\"\ntoken = \"fedcba9876543210\"\n",
        );
    assert!(issues_of(&guarded).is_empty(), "{:?}", issues_of(&guarded));
    let half = exposed.replace(
        "[server]\n",
        "[server]\nadmin_token = \"0123456789abcdef\"\n",
    );
    let issues = issues_of(&half);
    assert_eq!(issues.len(), 1);
    assert!(
        issues[0].message.contains("sources.api.token is not set"),
        "{}",
        issues[0].message
    );
    assert!(issues_of(&format!("[server]\nlisten = \"127.0.0.1:9\"\n{PIPELINE}")).is_empty());
}

#[test]
fn short_tokens_are_refused_without_being_echoed() {
    for (key, text) in [
        (
            "server.admin_token",
            "[server]\nadmin_token = \"tiny-secret\"\n".to_owned(),
        ),
        (
            "server.metrics_token",
            "[server]\nmetrics_token = \"tiny-secret\"\n".to_owned(),
        ),
        (
            "sources.api.token",
            PIPELINE.replace(
                "type = \"http\"\n",
                "type = \"http\"\ntoken = \"tiny-secret\"\n",
            ),
        ),
    ] {
        let issues = issues_of(&text);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, key);
        assert!(
            issues[0].message.contains("at least 16"),
            "{}",
            issues[0].message
        );
        assert!(
            !issues[0].message.contains("tiny-secret"),
            "{}",
            issues[0].message
        );
    }
}

#[test]
fn tokens_must_be_sendable_and_bodies_must_fit_the_request_memory() {
    let issues = issues_of("[server]\nadmin_token = \"0123456789 abcdef\"\n");
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert!(
        issues[0].message.contains("visible ASCII"),
        "{}",
        issues[0].message
    );
    let big = PIPELINE.replace(
        "type = \"http\"\n",
        "type = \"http\"\nmax_body = \"40MiB\"\n",
    );
    let issues = issues_of(&big);
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].path, "sources.api.max_body");
    assert!(
        issues[0].message.contains("server.max_request_memory"),
        "{}",
        issues[0].message
    );
    let raised = format!("[server]\nmax_request_memory = \"128MiB\"\n{big}");
    assert!(issues_of(&raised).is_empty(), "{:?}", issues_of(&raised));
}

#[test]
fn server_limits_and_tls() {
    let config = crate::load_str(
        "[server]\nmax_connections = 10\nheader_timeout = \"2s\"\nbody_timeout = \"3s\"\nidle_timeout = \"4s\"\nmax_request_memory = \"8MiB\"\ntls = { cert = \"c.pem\", key = \"k.pem\" }\n",
        false,
    )
    .unwrap();
    let server = &config.server;
    assert_eq!(server.max_connections, 10);
    assert_eq!(server.header_timeout, Duration::from_secs(2));
    assert_eq!(server.body_timeout, Duration::from_secs(3));
    assert_eq!(server.idle_timeout, Duration::from_secs(4));
    assert_eq!(server.max_request_memory, ByteSize(8 << 20));
    assert_eq!(
        server.tls,
        Some(ServerTlsConfig {
            cert: "c.pem".into(),
            key: "k.pem".into()
        })
    );
    let issues = issues_of("[server]\nheader_timeout = \"0s\"\ntls = { cert = \"c.pem\" }\n");
    let paths: Vec<_> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(
        paths,
        ["server.header_timeout", "server.tls.key"],
        "{issues:?}"
    );
}

#[test]
fn mqtt_protocol_is_3_1_1_or_5() {
    let text = |sink_keys: &str, source_keys: &str| {
        format!(
            r#"
[sources.sensors]
type = "mqtt"
url = "mqtt://127.0.0.1:1883"
topics = ["sensors/#"]
{source_keys}
[pipelines.p]
from = ["sensors"]
to = ["out"]
[sinks.out]
type = "mqtt"
url = "mqtt://127.0.0.1:1883"
topic = "events/{{source}}"
{sink_keys}
"#
        )
    };
    let config = crate::load_str(&text("", ""), false).expect("the default");
    let (Some(SinkConfig::Mqtt(sink)), Some(SourceConfig::Mqtt(source))) =
        (config.sinks.get("out"), config.sources.get("sensors"))
    else {
        panic!("an mqtt sink and source")
    };
    assert_eq!(sink.protocol, crate::MqttProtocol::V3);
    assert_eq!(source.protocol, crate::MqttProtocol::V3);

    let config = crate::load_str(
        &text(
            "protocol = \"5\"\nformat = \"cloudevents\"",
            "protocol = \"5\"\nsession_expiry = \"1h\"",
        ),
        false,
    )
    .expect("mqtt 5");
    let (Some(SinkConfig::Mqtt(sink)), Some(SourceConfig::Mqtt(source))) =
        (config.sinks.get("out"), config.sources.get("sensors"))
    else {
        panic!("an mqtt sink and source")
    };
    assert_eq!(sink.protocol, crate::MqttProtocol::V5);
    assert_eq!(sink.cloudevents_mode, crate::CloudEventsMode::Binary);
    assert_eq!(source.protocol, crate::MqttProtocol::V5);
    assert_eq!(source.session_expiry, Duration::from_secs(3600));

    for (sink_keys, source_keys, path, says) in [
        (
            "protocol = \"4\"",
            "",
            "sinks.out.protocol",
            "expected one of: 3.1.1, 5",
        ),
        (
            "",
            "protocol = 5",
            "sources.sensors.protocol",
            "write the MQTT version as a string, one of: \"3.1.1\", \"5\"",
        ),
        (
            "format = \"cloudevents\"\ncloudevents_mode = \"binary\"",
            "",
            "sinks.out.cloudevents_mode",
            "set protocol = \"5\"",
        ),
        (
            "",
            "protocol = \"5\"\nsession_expiry = \"500ms\"",
            "sources.sensors.session_expiry",
            "at least 1s",
        ),
    ] {
        let issues = issues_of(&text(sink_keys, source_keys));
        assert_eq!(issues.len(), 1, "{issues:#?}");
        assert_eq!(issues[0].path, path, "{issues:#?}");
        assert!(issues[0].message.contains(says), "{issues:#?}");
    }
}
