//! `format = "debezium"` end to end, against a real, throwaway Postgres cluster and a real
//! Kafka-protocol broker (tansu): snapshot rows, inserts, updates, deletes and a truncate
//! of a table reach a Kafka topic as Debezium's change events (keys as Debezium's key
//! JSON, a tombstone after each delete), and a file sink writes the same events, schema
//! events left out; a file sink in switchyard's format next to them is the reference.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_test_support::kafka::{KafkaRecord, Tansu, read_topic};
use switchyard_test_support::{PgCluster, Switchyard, tail};
use switchyard_tests::{read_jsonl, wait_until};

const TOPIC: &str = "db.public.orders";

fn config(dsn: &str, brokers: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "admin-secret-0123456789"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "sy_debezium"
tables = ["public.orders"]
snapshot = "initial"

[pipelines.cdc]
from = ["db"]
to = ["topic", "debezium_file", "switchyard_file"]

[sinks.topic]
type = "kafka"
brokers = "{brokers}"
topic = "{{source}}.{{table}}"
format = "debezium"

[sinks.debezium_file]
type = "file"
path = "{{dir}}/debezium.jsonl"
format = "debezium"

[sinks.switchyard_file]
type = "file"
path = "{{dir}}/switchyard.jsonl"
"#
    )
}

/// The row events (not `schema`) of the file sink in switchyard's format.
fn reference(switchyard: &Switchyard) -> Vec<Value> {
    read_jsonl(&switchyard.dir().join("switchyard.jsonl"))
        .into_iter()
        .filter(|e| e["kind"] != "schema")
        .collect()
}

fn debezium_lines(switchyard: &Switchyard) -> Vec<Value> {
    read_jsonl(&switchyard.dir().join("debezium.jsonl"))
}

/// Waits until the file sinks hold `n` row events each and the topic `n` messages plus
/// `tombstones`; returns the reference events, the Debezium lines and the records.
fn wait_for(
    switchyard: &Switchyard,
    brokers: &str,
    n: usize,
    tombstones: usize,
) -> (Vec<Value>, Vec<Value>, Vec<KafkaRecord>) {
    let files = wait_until(Duration::from_secs(90), || {
        reference(switchyard).len() >= n && debezium_lines(switchyard).len() >= n
    });
    let records = read_topic(brokers, TOPIC, Duration::from_secs(60), |r| {
        r.len() >= n + tombstones
    });
    let (reference, lines) = (reference(switchyard), debezium_lines(switchyard));
    assert!(
        files && records.len() == n + tombstones,
        "expected {n} events and {tombstones} tombstones; files: {} and {}, topic: {}\n\
         --- debezium.jsonl ---\n{}\n--- log ---\n{}",
        reference.len(),
        lines.len(),
        records.len(),
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        tail(&switchyard.logs(), 40)
    );
    (reference, lines, records)
}

/// A Debezium value without the envelope's processing times (each sink has its own).
fn without_processing_time(value: &Value) -> Value {
    let mut value = value.clone();
    for field in ["ts_ms", "ts_us", "ts_ns"] {
        assert!(
            value[field].is_u64(),
            "`{field}` is a number of the sink's clock: {value}"
        );
        value.as_object_mut().unwrap().remove(field);
    }
    value
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

fn lsn_number(lsn: &str) -> u64 {
    let (high, low) = lsn.split_once('/').unwrap();
    u64::from_str_radix(high, 16).unwrap() << 32 | u64::from_str_radix(low, 16).unwrap()
}

/// Checks a Debezium value against the switchyard event it was made from.
fn assert_maps(value: &Value, event: &Value) {
    let record = &event["payload"];
    let op = match record["op"].as_str().unwrap() {
        "insert" => "c",
        "update" => "u",
        "delete" => "d",
        "read" => "r",
        "truncate" => "t",
        other => panic!("unexpected op {other}"),
    };
    assert_eq!(value["op"], op, "{value}\n{event}");
    let source = &value["source"];
    let expected_source = json!({
        "version": format!("switchyard-{}", env!("CARGO_PKG_VERSION")),
        "connector": "postgresql",
        "name": "db",
        "ts_ms": event["timestamp_ms"],
        "snapshot": if op == "r" { "incremental" } else { "false" },
        "db": "app",
        "sequence": null,
        "ts_us": source["ts_us"],
        "ts_ns": source["ts_ns"],
        "schema": "public",
        "table": "orders",
        "txId": record["xid"],
        "lsn": lsn_number(record["lsn"].as_str().unwrap()),
        "xmin": null,
    });
    assert_eq!(source, &expected_source, "{value}\n{event}");
    assert_eq!(
        source["ts_us"].as_u64().unwrap() / 1000,
        source["ts_ms"].as_u64().unwrap()
    );
    assert_eq!(
        source["ts_ns"].as_u64().unwrap(),
        source["ts_us"].as_u64().unwrap() * 1000
    );
    if op == "t" {
        assert_eq!(value["before"], Value::Null);
        assert_eq!(value["after"], Value::Null);
    } else {
        assert_eq!(value["before"], record["before"], "{value}\n{event}");
        assert_eq!(value["after"], record["after"], "{value}\n{event}");
    }
    assert_eq!(value["transaction"], Value::Null);
    let names: Vec<&str> = value
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        [
            "before",
            "after",
            "source",
            "transaction",
            "op",
            "ts_ms",
            "ts_us",
            "ts_ns"
        ]
    );
}

#[test]
fn postgres_changes_reach_kafka_and_files_as_debezium_change_events() {
    let broker = Tansu::shared();
    broker.create_topic(TOPIC, 1);
    let pg = PgCluster::start();
    let dsn = pg.create_database("app");
    pg.sql(
        "app",
        "CREATE TABLE orders (id int PRIMARY KEY, status text, total numeric(10, 2), tags text[]);
         ALTER TABLE orders REPLICA IDENTITY FULL;
         INSERT INTO orders VALUES (1, 'new', 9.90, '{a}'), (2, 'new', 20.00, NULL);",
    );
    let switchyard = Switchyard::start(&config(&dsn, &broker.brokers()));

    // The snapshot first, so that what follows comes after it.
    let (reference, lines, records) = wait_for(&switchyard, &broker.brokers(), 2, 0);
    for (i, value) in lines.iter().enumerate() {
        assert_eq!(value["op"], "r");
        assert_maps(value, &reference[i]);
    }

    pg.sql(
        "app",
        "INSERT INTO orders VALUES (3, 'new', 5.00, '{}');
         UPDATE orders SET status = 'paid' WHERE id = 1;
         DELETE FROM orders WHERE id = 2;",
    );
    pg.sql("app", "TRUNCATE orders;");
    let (reference, lines, records_now) = wait_for(&switchyard, &broker.brokers(), 6, 1);
    assert!(records_now.starts_with(&records));
    let records = records_now;

    // The file in Debezium's format: one line per row event, none for the schema event.
    assert_eq!(lines.len(), 6, "{lines:#?}");
    for (value, event) in lines.iter().zip(&reference) {
        assert_maps(value, event);
    }
    let ops: Vec<&str> = lines.iter().map(|v| v["op"].as_str().unwrap()).collect();
    assert_eq!(ops, ["r", "r", "c", "u", "d", "t"]);
    assert_eq!(
        lines[2]["after"],
        json!({"id": 3, "status": "new", "total": "5.00", "tags": []}),
        "values keep switchyard's JSON forms"
    );
    assert_eq!(lines[3]["before"]["status"], "new");
    assert_eq!(lines[3]["after"]["status"], "paid");
    assert_eq!(
        lines[4]["before"],
        json!({"id": 2, "status": "new", "total": "20.00", "tags": null})
    );
    assert_eq!(lines[4]["after"], Value::Null);

    // The topic: the same events as message values, keyed by Debezium's key JSON, each
    // key's in order (keys go to the sink's lanes in parallel), a tombstone right after
    // the delete.
    let mut by_key: Vec<(Option<Value>, Vec<String>)> = Vec::new();
    for record in &records {
        let key = record.key.as_ref().map(|k| json_of(k));
        let op = if record.payload.is_empty() {
            assert!(record.headers.is_empty(), "a bare tombstone: {record:?}");
            "tombstone".to_owned()
        } else {
            json_of(&record.payload)["op"].as_str().unwrap().to_owned()
        };
        match by_key.iter_mut().find(|(k, _)| *k == key) {
            Some((_, ops)) => ops.push(op),
            None => by_key.push((key, vec![op])),
        }
    }
    by_key.sort_by_key(|(key, _)| key.as_ref().map(Value::to_string));
    assert_eq!(
        by_key,
        [
            (None, vec!["t".to_owned()]),
            (Some(json!({"id": 1})), vec!["r".to_owned(), "u".to_owned()]),
            (
                Some(json!({"id": 2})),
                vec!["r".to_owned(), "d".to_owned(), "tombstone".to_owned()]
            ),
            (Some(json!({"id": 3})), vec!["c".to_owned()]),
        ]
    );
    for record in records.iter().filter(|r| !r.payload.is_empty()) {
        let id = record.header("switchyard-id").expect("an event id");
        let i = reference
            .iter()
            .position(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not an event of the reference file"));
        assert_eq!(
            without_processing_time(&json_of(&record.payload)),
            without_processing_time(&lines[i]),
            "{id}"
        );
        assert_eq!(
            record.header("switchyard-kind"),
            reference[i]["kind"].as_str()
        );
    }

    // The schema event of the table was acknowledged without being written, and counted.
    let all = read_jsonl(&switchyard.dir().join("switchyard.jsonl"));
    assert!(all.iter().any(|e| e["kind"] == "schema"), "{all:#?}");
    let metrics = switchyard_tests::metrics(&switchyard.url());
    for sink in ["topic", "debezium_file"] {
        let line = format!("switchyard_sink_events_total{{sink=\"{sink}\",outcome=\"skipped\"}} ");
        let skipped = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in:\n{metrics}"));
        assert!(skipped.parse::<f64>().unwrap() >= 1.0, "{line}{skipped}");
    }
    assert!(
        !metrics
            .contains("switchyard_sink_events_total{sink=\"switchyard_file\",outcome=\"skipped\"}"),
        "switchyard's format skips nothing"
    );
}
