//! The sink and the consumer against a real Kafka-protocol broker (tansu).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::{CloudEventsMode, KafkaSinkConfig, KafkaSourceConfig, SinkFormat};
use switchyard_connector::{Outcome, Sink};
use switchyard_event::Event;
use switchyard_kafka::{KafkaConsumer, KafkaSink};
use switchyard_test_support::kafka::{Tansu, produce, read_n, read_topic, unique_name};

fn sink_config(brokers: &str, topic: &str) -> KafkaSinkConfig {
    KafkaSinkConfig {
        brokers: brokers.to_owned(),
        topic: topic.to_owned(),
        compression: None,
        options: BTreeMap::new(),
        timeout: Duration::from_secs(5),
        linger: Duration::from_millis(5),
        concurrency: 2,
        retry: None,
        create_topics: false,
        partitions: 1,
        format: SinkFormat::DEFAULT,
        cloudevents_mode: CloudEventsMode::Binary,
    }
}

fn source_config(brokers: &str, topic: &str, group: &str) -> KafkaSourceConfig {
    KafkaSourceConfig {
        brokers: brokers.to_owned(),
        topics: vec![topic.to_owned()],
        group: group.to_owned(),
        options: [
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "500"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

fn event(i: usize, key: &str) -> Arc<Event> {
    Arc::new(Event {
        id: format!("ev-{i}").into(),
        source: "api".into(),
        kind: "message".into(),
        key: Some(key.as_bytes().to_vec()),
        payload: format!("{{\"i\":{i}}}").into_bytes(),
        content_type: "application/json".into(),
        headers: vec![("trace".into(), format!("t{i}"))],
        timestamp_ms: 1_700_000_000_000 + i as u64,
        payload_is_compact_json: false,
    })
}

/// A Postgres change event as the CDC source makes it.
fn change(i: usize, kind: &str, record: &str) -> Arc<Event> {
    Arc::new(Event {
        id: format!("0/16B3748/{i}").into(),
        source: "db".into(),
        kind: kind.into(),
        key: (kind != "schema").then(|| br#"{"id":7}"#.to_vec()),
        payload: record.as_bytes().to_vec(),
        content_type: "application/json".into(),
        headers: vec![("pg-table".into(), "public.orders".into())],
        timestamp_ms: 1_795_600_800_000,
        payload_is_compact_json: true,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debezium_deletes_are_followed_by_a_tombstone_and_schema_events_skipped() {
    let broker = Tansu::shared();
    let topic = unique_name("debezium");
    broker.create_topic(&topic, 1);
    let cfg = KafkaSinkConfig {
        format: SinkFormat::Debezium,
        ..sink_config(&broker.brokers(), &topic)
    };
    let sink = KafkaSink::new("out", &cfg).unwrap();
    let tx = r#""lsn":"0/16B3748","xid":741,"commit_ts":"2026-11-25T10:00:00Z""#;
    let batch = [
        change(
            0,
            "schema",
            r#"{"op":"schema","schema":"public","table":"orders","lsn":"0/16B3748","columns":[],"replica_identity":"default"}"#,
        ),
        change(
            1,
            "insert",
            &format!(
                r#"{{"op":"insert","schema":"public","table":"orders",{tx},"key":{{"id":7}},"before":null,"after":{{"id":7,"status":"paid"}}}}"#
            ),
        ),
        change(
            2,
            "delete",
            &format!(
                r#"{{"op":"delete","schema":"public","table":"orders",{tx},"key":{{"id":7}},"before":{{"id":7}},"after":null}}"#
            ),
        ),
        event(3, "k"),
    ];
    let outcomes = sink.deliver(&batch).await;
    assert_eq!(
        outcomes,
        [
            Outcome::Skipped,
            Outcome::Delivered,
            Outcome::Delivered,
            Outcome::Delivered
        ]
    );
    let brokers = broker.brokers();
    let records =
        tokio::task::spawn_blocking(move || read_n(&brokers, &topic, 4, Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(records.len(), 4, "{records:?}");
    let value = |i: usize| -> serde_json::Value {
        serde_json::from_slice(&records[i].payload).expect("a JSON value")
    };
    assert_eq!(value(0)["op"], "c");
    assert_eq!(value(0)["after"]["status"], "paid");
    assert_eq!(value(1)["op"], "d");
    assert_eq!(value(1)["source"]["txId"], 741);
    for record in &records[..3] {
        assert_eq!(record.key.as_deref(), Some(&br#"{"id":7}"#[..]));
    }
    let tombstone = &records[2];
    assert!(tombstone.payload.is_empty(), "a null value: {tombstone:?}");
    assert!(tombstone.headers.is_empty(), "{tombstone:?}");
    assert_eq!(records[1].header("switchyard-id"), Some("0/16B3748/2"));
    assert_eq!(records[3].payload, b"{\"i\":3}", "a message as it is");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_delivers_with_key_and_headers_on_the_delivery_report() {
    let broker = Tansu::shared();
    let topic = unique_name("sink");
    broker.create_topic(&topic, 3);
    let sink = KafkaSink::new("out", &sink_config(&broker.brokers(), &topic)).unwrap();
    sink.check_topic().await;
    let batch: Vec<_> = (0..50).map(|i| event(i, &format!("k{}", i % 5))).collect();
    let outcomes = sink.deliver(&batch).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Delivered),
        "{outcomes:?}"
    );

    let brokers = broker.brokers();
    let records =
        tokio::task::spawn_blocking(move || read_n(&brokers, &topic, 50, Duration::from_secs(30)))
            .await
            .unwrap();
    assert_eq!(records.len(), 50);
    let r = records
        .iter()
        .find(|r| r.header("switchyard-id") == Some("ev-7"))
        .expect("ev-7 arrived");
    assert_eq!(r.key.as_deref(), Some(&b"k2"[..]));
    assert_eq!(r.payload, b"{\"i\":7}");
    assert_eq!(r.header("switchyard-source"), Some("api"));
    assert_eq!(r.header("switchyard-kind"), Some("message"));
    assert_eq!(
        r.header("switchyard-content-type"),
        Some("application/json")
    );
    assert_eq!(r.header("trace"), Some("t7"));
    // One key → one partition, in order.
    let mut by_key: BTreeMap<Vec<u8>, (i32, Vec<i64>)> = BTreeMap::new();
    for r in &records {
        let i: i64 = r.header("switchyard-id").unwrap()[3..].parse().unwrap();
        let e = by_key
            .entry(r.key.clone().unwrap())
            .or_insert((r.partition, vec![]));
        assert_eq!(e.0, r.partition, "a key stays on one partition");
        e.1.push(i);
    }
    for (_, (_, seq)) in by_key {
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{seq:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_retries_a_missing_topic_with_a_clear_error() {
    let broker = Tansu::shared();
    let topic = unique_name("missing");
    let mut cfg = sink_config(&broker.brokers(), &topic);
    cfg.timeout = Duration::from_secs(3);
    let sink = KafkaSink::new("out", &cfg).unwrap();
    let outcomes = sink.deliver(&[event(1, "k")]).await;
    match &outcomes[..] {
        [Outcome::Retry { error, .. }] => {
            assert!(error.contains("does not exist"), "{error}");
            assert!(error.contains("create_topics"), "{error}");
        }
        other => panic!("expected one retry, got {other:?}"),
    }
    assert!(!broker.topic_exists(&topic), "the sink did not create it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_creates_a_missing_topic_when_asked() {
    let broker = Tansu::shared();
    let topic = unique_name("created");
    let mut cfg = sink_config(&broker.brokers(), &topic);
    cfg.create_topics = true;
    cfg.partitions = 2;
    let sink = KafkaSink::new("out", &cfg).unwrap();
    sink.check_topic().await;
    let mut delivered = false;
    for _ in 0..5 {
        if sink.deliver(&[event(1, "k")]).await == [Outcome::Delivered] {
            delivered = true;
            break;
        }
    }
    assert!(delivered, "delivered once the topic was created");
    assert!(broker.topic_exists(&topic));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_dead_letters_an_event_the_broker_can_never_take() {
    let broker = Tansu::shared();
    let topic = unique_name("big");
    broker.create_topic(&topic, 1);
    let mut cfg = sink_config(&broker.brokers(), &topic);
    cfg.options
        .insert("message.max.bytes".into(), "10000".into());
    let sink = KafkaSink::new("out", &cfg).unwrap();
    let mut big = (*event(1, "k")).clone();
    big.payload = vec![b'x'; 20_000];
    let outcomes = sink.deliver(&[Arc::new(big), event(2, "k")]).await;
    assert!(
        matches!(&outcomes[0], Outcome::Permanent { error } if error.contains("for good")),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1], Outcome::Delivered);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_consumer_commits_only_below_the_low_watermark_and_resumes_there() {
    let broker = Tansu::shared();
    let topic = unique_name("src");
    let group = unique_name("group");
    broker.create_topic(&topic, 3);
    let records: Vec<_> = (0..300)
        .map(|i| {
            (
                Some(format!("k{}", i % 7).into_bytes()),
                format!("{{\"i\":{i}}}").into_bytes(),
                vec![("h".to_owned(), format!("v{i}"))],
            )
        })
        .collect();
    let brokers = broker.brokers();
    let t = topic.clone();
    tokio::task::spawn_blocking(move || produce(&brokers, &t, &records, Duration::from_secs(30)))
        .await
        .unwrap();

    let cfg = source_config(&broker.brokers(), &topic, &group);
    let mut consumer = KafkaConsumer::start("clicks", &group, &cfg).unwrap();
    let mut got = Vec::new();
    while got.len() < 300 {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next(100))
            .await
            .expect("messages within 30s")
            .unwrap()
            .unwrap();
        got.extend(batch);
    }
    // Positions are sequential from 0.
    for (i, (p, _)) in got.iter().enumerate() {
        assert_eq!(*p, i as u64);
    }
    let e = &got[0].1;
    assert_eq!(e.source, "clicks");
    assert_eq!(e.content_type, "application/json");
    assert!(e.id.starts_with(&format!("{topic}/")), "{}", e.id);
    assert!(e.headers.iter().any(|(n, _)| n == "h"));
    // Complete the first 100 positions only, then leave.
    consumer.commit(100).unwrap();
    let consumed_before: std::collections::HashSet<String> =
        got[..100].iter().map(|(_, e)| e.id.to_string()).collect();
    drop(consumer);

    // The same group resumes after what was complete: exactly the other 200 come.
    let mut consumer = KafkaConsumer::start("clicks", &group, &cfg).unwrap();
    let mut again = Vec::new();
    while again.len() < 200 {
        let batch = tokio::time::timeout(Duration::from_secs(30), consumer.next(100))
            .await
            .expect("messages within 30s")
            .unwrap()
            .unwrap();
        again.extend(batch);
    }
    let redelivered = again
        .iter()
        .filter(|(_, e)| consumed_before.contains(e.id.as_str()))
        .count();
    assert_eq!(redelivered, 0, "nothing below the watermark comes again");
    assert_eq!(again.len(), 200);
}

#[test]
fn kafka_sink_refuses_options_librdkafka_cannot_honour_with_its_message() {
    // A CA file that is not there: refused at start, naming the setting.
    let mut cfg = sink_config("127.0.0.1:1", "t");
    for (k, v) in [
        ("security.protocol", "SASL_SSL"),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", "u"),
        ("sasl.password", "p"),
        ("ssl.ca.location", "/nonexistent/switchyard-ca.pem"),
    ] {
        cfg.options.insert(k.into(), v.into());
    }
    let err = KafkaSink::new("out", &cfg)
        .err()
        .expect("refused")
        .to_string();
    println!("{err}");
    assert!(err.contains("sink `out`"), "{err}");
    assert!(
        err.contains("librdkafka refused the configuration"),
        "{err}"
    );
    assert!(err.contains("ssl.ca.location"), "{err}");

    // This build has OpenSSL: TLS and SASL over TLS are accepted (with the system's CAs
    // when no ssl.ca.location is set).
    for protocol in ["ssl", "SASL_SSL"] {
        let mut cfg = sink_config("127.0.0.1:1", "t");
        cfg.options
            .insert("security.protocol".into(), protocol.into());
        if protocol == "SASL_SSL" {
            for (k, v) in [
                ("sasl.mechanisms", "PLAIN"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ] {
                cfg.options.insert(k.into(), v.into());
            }
        }
        if let Err(e) = KafkaSink::new("out", &cfg) {
            panic!("security.protocol = {protocol} refused: {e}");
        }
        let source = KafkaSourceConfig {
            options: cfg.options.clone(),
            ..source_config("127.0.0.1:1", "t", "g")
        };
        if let Err(e) = KafkaConsumer::start("clicks", "g", &source) {
            panic!("source with security.protocol = {protocol} refused: {e}");
        }
    }

    // SASL/PLAIN over plaintext needs no TLS: accepted.
    let mut cfg = sink_config("127.0.0.1:1", "t");
    for (k, v) in [
        ("security.protocol", "SASL_PLAINTEXT"),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", "u"),
        ("sasl.password", "p"),
    ] {
        cfg.options.insert(k.into(), v.into());
    }
    assert!(KafkaSink::new("out", &cfg).is_ok());
}

/// Delivers `batch` the way a delivery lane does: each attempt gets what is left from
/// the first event that was not delivered, until every event is or `within` passes.
async fn deliver_like_a_lane(sink: &KafkaSink, batch: &[Arc<Event>], within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut left = batch.to_vec();
    while !left.is_empty() {
        let outcomes = sink.deliver(&left).await;
        let done = outcomes
            .iter()
            .take_while(|o| **o == Outcome::Delivered)
            .count();
        left.drain(..done);
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} events still not delivered: {outcomes:?}",
            left.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_retry_waits_for_the_queued_message_instead_of_sending_a_copy() {
    let broker = Tansu::start();
    let topic = unique_name("held");
    broker.create_topic(&topic, 1);
    let mut cfg = sink_config(&broker.brokers(), &topic);
    cfg.timeout = Duration::from_secs(3);
    // librdkafka waits for the frozen broker's answer instead of resending the request
    // on a new connection, so what reaches the topic is what the sink sent.
    cfg.options
        .insert("request.timeout.ms".into(), "60000".into());
    let sink = KafkaSink::new("out", &cfg).unwrap();
    deliver_like_a_lane(&sink, &[event(0, "k")], Duration::from_secs(30)).await;

    broker.pause();
    let batch: Vec<_> = (1..=20).map(|i| event(i, "k")).collect();
    for attempt in 1..=2 {
        let outcomes = sink.deliver(&batch).await;
        assert!(
            outcomes.iter().all(|o| matches!(o,
                Outcome::Retry { error, .. } if error.contains("stays queued"))),
            "attempt {attempt} while the broker is frozen: {outcomes:?}"
        );
    }
    broker.resume();
    // The lane's next attempts: the same events, answered by the first messages' reports.
    deliver_like_a_lane(&sink, &batch, Duration::from_secs(30)).await;
    deliver_like_a_lane(&sink, &[event(21, "k")], Duration::from_secs(30)).await;

    let brokers = broker.brokers();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&brokers, &topic, Duration::from_secs(30), |r| {
            r.iter().any(|r| r.header("switchyard-id") == Some("ev-21"))
        })
    })
    .await
    .unwrap();
    let ids: Vec<&str> = records
        .iter()
        .filter_map(|r| r.header("switchyard-id"))
        .collect();
    let expected: Vec<String> = (0..=21).map(|i| format!("ev-{i}")).collect();
    assert_eq!(
        ids, expected,
        "every event once, in order: no copy sent by a retry"
    );
}
