//! `format = "cloudevents"` end to end, over real HTTP and a real Kafka-protocol broker
//! (tansu): CloudEvents received by an http source in binary, structured and batch mode,
//! and a plain event, reach webhooks and Kafka topics as CloudEvents in binary and
//! structured mode — received attributes passed through, the others derived from the
//! event.

use std::time::Duration;

use serde_json::{Value, json};
use switchyard_test_support::kafka::{KafkaRecord, Tansu, read_topic, unique_name};
use switchyard_test_support::{Behaviour, ReceivedRequest, Switchyard, WebhookReceiver, tail};
use switchyard_tests::{client, runtime, wait_until};

fn config(binary_hook: &str, structured_hook: &str, brokers: &str, topic: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"

[pipelines.out]
from = ["api"]
to = ["binary_hook", "structured_hook", "binary_topic", "structured_topic"]

[sinks.binary_hook]
type = "webhook"
url = "{binary_hook}"
format = "cloudevents"

[sinks.structured_hook]
type = "webhook"
url = "{structured_hook}"
format = "cloudevents"
cloudevents_mode = "structured"

[sinks.binary_topic]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}-binary"
format = "cloudevents"

[sinks.structured_topic]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}-structured"
format = "cloudevents"
cloudevents_mode = "structured"
"#
    )
}

/// Sends `request`, expecting 200, and adds the ids of its events to `ids`.
async fn post(ids: &mut Vec<String>, request: reqwest::RequestBuilder) {
    let answer = request.send().await.expect("switchyard answers");
    let status = answer.status();
    let body: Value = answer.json().await.expect("a JSON answer");
    assert_eq!(status, 200, "{body}");
    for id in body["ids"].as_array().expect("ids") {
        ids.push(id.as_str().expect("an id").to_owned());
    }
}

/// The four requests sent, in order, and the events they make: a binary CloudEvent, a
/// structured one, a batch of two, a plain JSON event.
async fn send_all(url: &str) -> Vec<String> {
    let http = client();
    let ingest = format!("{url}/ingest/api");
    let mut ids = Vec::new();
    post(
        &mut ids,
        http.post(&ingest)
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", "order-1")
            .header("ce-source", "https://shop.example/orders")
            .header("ce-type", "com.example.order.paid")
            .header("ce-subject", "order%201")
            .header(
                "ce-traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("x-key", "customer-1")
            .body(r#"{"order":1,"total":30}"#),
    )
    .await;
    post(
        &mut ids,
        http.post(&ingest)
            .header("content-type", "application/cloudevents+json")
            .body(
                json!({
                    "specversion": "1.0", "id": "order-2", "source": "https://shop.example/orders",
                    "type": "com.example.order.paid", "partitionkey": "customer-2",
                    "time": "2026-12-04T10:00:00Z", "data": {"order": 2, "total": 40}
                })
                .to_string(),
            ),
    )
    .await;
    post(
        &mut ids,
        http.post(&ingest)
            .header("content-type", "application/cloudevents-batch+json")
            .body(
                json!([
                    {"specversion": "1.0", "id": "order-3", "source": "/pos", "type": "com.example.order.paid",
                     "datacontenttype": "application/octet-stream", "data_base64": "AAEC"},
                    {"specversion": "1.0", "id": "order-4", "source": "/pos", "type": "com.example.order.paid",
                     "datacontenttype": "text/plain", "data": "four"}
                ])
                .to_string(),
            ),
    )
    .await;
    post(
        &mut ids,
        http.post(&ingest)
            .header("content-type", "application/json")
            .header("x-key", "customer-5")
            .body(r#"{"order":5}"#),
    )
    .await;
    ids
}

fn by_id<'a>(requests: &'a [ReceivedRequest], header: &str, id: &str) -> &'a ReceivedRequest {
    requests
        .iter()
        .find(|r| r.header(header) == Some(id))
        .unwrap_or_else(|| panic!("no request with {header}: {id}"))
}

fn record<'a>(records: &'a [KafkaRecord], id: &str) -> &'a KafkaRecord {
    records
        .iter()
        .find(|r| r.header("ce_id") == Some(id))
        .unwrap_or_else(|| panic!("no record with ce_id {id}"))
}

#[test]
fn cloudevents_in_every_mode_reach_webhooks_and_kafka_as_cloudevents() {
    let binary_hook = WebhookReceiver::start(Behaviour::Ok);
    let structured_hook = WebhookReceiver::start(Behaviour::Ok);
    let broker = Tansu::shared();
    let topic = unique_name("ce");
    broker.create_topic(&format!("{topic}-binary"), 1);
    broker.create_topic(&format!("{topic}-structured"), 1);
    let switchyard = Switchyard::start(&config(
        &binary_hook.url(),
        &structured_hook.url(),
        &broker.brokers(),
        &topic,
    ));
    let ids = runtime().block_on(send_all(&switchyard.url()));
    assert_eq!(ids.len(), 5);
    let plain_id = ids[4].clone();

    let all_there = wait_until(Duration::from_secs(60), || {
        binary_hook.received().len() >= 5 && structured_hook.received().len() >= 5
    });
    assert!(all_there, "{}", tail(&switchyard.stderr(), 40));

    // Webhook, binary mode: the data as the body, the attributes as ce-* headers.
    let binary = binary_hook.received();
    let first = by_id(&binary, "ce-id", "order-1");
    assert_eq!(first.text(), r#"{"order":1,"total":30}"#);
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.header("ce-specversion"), Some("1.0"));
    assert_eq!(
        first.header("ce-source"),
        Some("https://shop.example/orders")
    );
    assert_eq!(first.header("ce-type"), Some("com.example.order.paid"));
    assert_eq!(
        first.header("ce-subject"),
        Some("order%201"),
        "percent-encoded again"
    );
    assert_eq!(
        first.header("ce-traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        "extensions pass through"
    );
    assert_eq!(first.header("ce-partitionkey"), Some("customer-1"));
    let second = by_id(&binary, "ce-id", "order-2");
    assert_eq!(second.header("ce-time"), Some("2026-12-04T10:00:00Z"));
    assert_eq!(second.header("ce-partitionkey"), Some("customer-2"));
    let third = by_id(&binary, "ce-id", "order-3");
    assert_eq!(&third.body[..], &[0, 1, 2]);
    assert_eq!(
        third.header("content-type"),
        Some("application/octet-stream")
    );
    let plain = by_id(&binary, "ce-id", &plain_id);
    assert_eq!(plain.header("ce-source"), Some("/switchyard/api"));
    assert_eq!(plain.header("ce-type"), Some("switchyard.message"));
    assert_eq!(plain.header("ce-subject"), Some("customer-5"));
    assert!(plain.header("ce-time").is_some_and(|t| t.ends_with('Z')));

    // Webhook, structured mode: one application/cloudevents+json object per event.
    let structured: Vec<Value> = structured_hook
        .received()
        .iter()
        .map(|r| {
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/cloudevents+json")),
                "{:?}",
                r.header("content-type")
            );
            serde_json::from_slice(&r.body).expect("a JSON body")
        })
        .collect();
    let find = |id: &str| {
        structured
            .iter()
            .find(|v| v["id"] == id)
            .unwrap_or_else(|| panic!("no structured event {id}"))
            .clone()
    };
    let first = find("order-1");
    assert_eq!(first["subject"], "order 1");
    assert_eq!(first["data"], json!({"order": 1, "total": 30}));
    assert_eq!(first["datacontenttype"], "application/json");
    assert_eq!(find("order-3")["data_base64"], "AAEC");
    assert_eq!(
        find("order-4")["data_base64"],
        "Zm91cg==",
        "text that is not JSON"
    );
    let plain = find(&plain_id);
    assert_eq!(plain["type"], "switchyard.message");
    assert_eq!(plain["data"], json!({"order": 5}));

    // Kafka, binary mode: ce_* headers, content-type, the payload as the value.
    let records = read_topic(
        &broker.brokers(),
        &format!("{topic}-binary"),
        Duration::from_secs(60),
        |r| r.len() >= 5,
    );
    let first = record(&records, "order-1");
    assert_eq!(first.payload, br#"{"order":1,"total":30}"#);
    assert_eq!(
        first.header("ce_subject"),
        Some("order 1"),
        "not percent-encoded"
    );
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.key.as_deref(), Some(&b"customer-1"[..]));
    assert_eq!(
        first.header("ce-id"),
        None,
        "the received attributes are not repeated"
    );
    let plain = record(&records, &plain_id);
    assert_eq!(plain.header("ce_type"), Some("switchyard.message"));

    // Kafka, structured mode: the JSON object as the value.
    let records = read_topic(
        &broker.brokers(),
        &format!("{topic}-structured"),
        Duration::from_secs(60),
        |r| r.len() >= 5,
    );
    let values: Vec<Value> = records
        .iter()
        .map(|r| {
            assert!(
                r.header("content-type")
                    .is_some_and(|c| c.starts_with("application/cloudevents+json"))
            );
            serde_json::from_slice(&r.payload).expect("JSON")
        })
        .collect();
    let second = values
        .iter()
        .find(|v| v["id"] == "order-2")
        .expect("order-2");
    assert_eq!(second["data"], json!({"order": 2, "total": 40}));
    assert_eq!(second["source"], "https://shop.example/orders");
}
