use super::*;
use axum::http::Request;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard_config::ByteSize;
use switchyard_connector::BoxFuture;
use tower::ServiceExt;

/// An intake that stores events in memory (each idempotency key once, forever), or
/// fails the way it is told to.
#[derive(Default)]
struct MemoryIntake {
    events: Mutex<Vec<Event>>,
    keys: Mutex<HashMap<String, Vec<String>>>,
    fail: Mutex<Option<fn() -> IntakeError>>,
}

impl Intake for MemoryIntake {
    fn seen(&self, key: &str) -> Option<Seen> {
        let keys = self.keys.lock().unwrap();
        keys.get(key)
            .map(|ids| Seen::new(key.to_owned(), ids.clone()))
    }

    fn append(
        &self,
        events: Vec<Event>,
        key: Option<String>,
    ) -> BoxFuture<'_, Result<Appended, IntakeError>> {
        Box::pin(async move {
            if let Some(f) = *self.fail.lock().unwrap() {
                return Err(f());
            }
            if let Some(key) = key {
                if let Some(seen) = self.seen(&key) {
                    return Ok(Appended::Duplicate(seen));
                }
                let ids = events.iter().map(|e| e.id.to_string()).collect();
                self.keys.lock().unwrap().insert(key, ids);
            }
            self.events.lock().unwrap().extend(events);
            Ok(Appended::Stored)
        })
    }
}

#[derive(Default)]
struct CountingObserver(AtomicUsize);

impl IngestObserver for CountingObserver {
    fn request(&self, _source: &str, _status: u16, events: usize) {
        self.0.fetch_add(events, Ordering::SeqCst);
    }
}

fn app(config: HttpSourceConfig) -> (Router, Arc<MemoryIntake>, Arc<CountingObserver>) {
    let intake = Arc::new(MemoryIntake::default());
    let observer = Arc::new(CountingObserver::default());
    let source = Arc::new(HttpSource::new("api", config, intake.clone()));
    let budget = MemoryBudget::new(64 << 20);
    (
        router(vec![source], observer.clone(), budget),
        intake,
        observer,
    )
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, HeaderMap, serde_json::Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

fn post(content_type: &str, body: &'static str) -> http::request::Builder {
    Request::post("/ingest/api")
        .header("content-type", content_type)
        .header("content-length", body.len().to_string())
}

#[tokio::test]
async fn json_event_is_appended_before_the_answer() {
    let (app, intake, observer) = app(HttpSourceConfig::default());
    let req = post("application/json", r#"{"a":1}"#)
        .header("x-key", "k1")
        .body(Body::from(r#"{"a":1}"#))
        .unwrap();
    let (status, _, body) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let events = intake.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(body["ids"][0], events[0].id.as_str());
    assert_eq!(events[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(events[0].payload, br#"{"a":1}"#);
    assert_eq!(events[0].source, "api");
    assert_eq!(observer.0.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn ndjson_batch_becomes_one_event_per_line() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let body = "{\"n\":1}\n\n{\"n\":2}\r\n{\"n\":3}\n";
    let req = post("application/x-ndjson", body)
        .body(Body::from(body))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(resp["ids"].as_array().unwrap().len(), 3);
    let payloads: Vec<_> = intake
        .events
        .lock()
        .unwrap()
        .iter()
        .map(|e| String::from_utf8(e.payload.clone()).unwrap())
        .collect();
    assert_eq!(payloads, [r#"{"n":1}"#, r#"{"n":2}"#, r#"{"n":3}"#]);
}

#[tokio::test]
async fn bad_ndjson_line_is_named_and_nothing_is_appended() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let body = "{\"n\":1}\n{\"n\":\n";
    let req = post("application/x-ndjson", body)
        .body(Body::from(body))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        resp["error"].as_str().unwrap().starts_with("line 2:"),
        "{resp}"
    );
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let req = post("application/json", "{oops")
        .body(Body::from("{oops"))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(resp["error"].as_str().unwrap().contains("invalid JSON"));
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn opaque_bytes_keep_their_content_type() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let req = post("text/plain", "hello")
        .body(Body::from("hello"))
        .unwrap();
    let (status, _, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    let e = intake.events.lock().unwrap()[0].clone();
    assert_eq!(e.content_type, "text/plain");
    assert_eq!(e.payload, b"hello");
}

#[tokio::test]
async fn oversized_body_is_413() {
    let (app, intake, _) = app(HttpSourceConfig {
        max_body: ByteSize(8),
        ..Default::default()
    });
    let req = post("text/plain", "0123456789")
        .body(Body::from("0123456789"))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(resp["error"].as_str().unwrap().contains("max_body"));
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn token_is_required_when_configured() {
    let (app, intake, _) = app(HttpSourceConfig {
        token: Some("s3cret-0123456789".into()),
        ..Default::default()
    });
    let req = post("application/json", "{}")
        .header("authorization", "Bearer wrong")
        .body(Body::from("{}"))
        .unwrap();
    let (status, headers, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer");
    let req = post("application/json", "{}")
        .header("authorization", "bearer s3cret-0123456789")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(intake.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn idempotency_key_is_the_id_and_repeats_are_not_appended() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    for _ in 0..2 {
        let req = post("application/json", "{}")
            .header("idempotency-key", "order-7")
            .body(Body::from("{}"))
            .unwrap();
        let (status, _, resp) = send(&app, req).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(resp["ids"][0], "order-7");
    }
    assert_eq!(intake.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn full_disk_and_busy_log_answer_with_retry_after() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let cases: [(fn() -> IntakeError, StatusCode); 4] = [
        (
            || IntakeError::Busy {
                retry_after: Duration::from_secs(1),
            },
            StatusCode::TOO_MANY_REQUESTS,
        ),
        (
            || IntakeError::NoSpace("no space left on device".into()),
            StatusCode::INSUFFICIENT_STORAGE,
        ),
        (
            || IntakeError::Unavailable("an fsync failed".into()),
            StatusCode::SERVICE_UNAVAILABLE,
        ),
        (
            || IntakeError::InFlight("order-7".into()),
            StatusCode::CONFLICT,
        ),
    ];
    for (fail, expected) in cases {
        *intake.fail.lock().unwrap() = Some(fail);
        let req = post("application/json", "{}")
            .body(Body::from("{}"))
            .unwrap();
        let (status, headers, _) = send(&app, req).await;
        assert_eq!(status, expected);
        assert!(headers.contains_key("retry-after"));
    }
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn unknown_source_is_404_and_names_no_configured_source() {
    let (app, _, _) = app(HttpSourceConfig::default());
    let req = Request::post("/ingest/nope")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!resp["error"].as_str().unwrap().contains("api"), "{resp}");
}

#[tokio::test]
async fn more_events_than_max_events_is_413_and_nothing_is_appended() {
    let (app, intake, _) = app(HttpSourceConfig {
        max_events: 3,
        ..Default::default()
    });
    let body = "{}\n{}\n{}\n{}\n";
    let req = post("application/x-ndjson", body)
        .body(Body::from(body))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let message = resp["error"].as_str().unwrap();
    assert!(
        message.contains("4 events") && message.contains("max_events"),
        "{message}"
    );
    assert!(intake.events.lock().unwrap().is_empty());
    let body = "{}\n{}\n{}\n";
    let req = post("application/x-ndjson", body)
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_long_idempotency_key_is_400() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    for (len, expected) in [
        (MAX_IDEMPOTENCY_KEY + 1, StatusCode::BAD_REQUEST),
        (MAX_IDEMPOTENCY_KEY, StatusCode::OK),
    ] {
        let req = post("application/json", "{}")
            .header("idempotency-key", "k".repeat(len))
            .body(Body::from("{}"))
            .unwrap();
        let (status, _, resp) = send(&app, req).await;
        assert_eq!(status, expected, "{resp}");
    }
    assert_eq!(intake.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_declared_length_over_max_body_is_refused_before_reading() {
    let (app, _, _) = app(HttpSourceConfig {
        max_body: ByteSize(8),
        ..Default::default()
    });
    // The body never ends: only the declared length can answer this request.
    let (_tx, rx) = futures::channel::mpsc::unbounded::<Result<Bytes, std::io::Error>>();
    let req = Request::post("/ingest/api")
        .header("content-type", "text/plain")
        .header("content-length", "1000")
        .body(Body::from_stream(rx))
        .unwrap();
    let (status, _, _) = send(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn requests_past_the_memory_budget_get_429_or_413() {
    let intake = Arc::new(MemoryIntake::default());
    let observer = Arc::new(CountingObserver::default());
    let source = Arc::new(HttpSource::new(
        "api",
        HttpSourceConfig::default(),
        intake.clone(),
    ));
    let budget = MemoryBudget::new(1 << 20);
    let app = router(vec![source], observer, budget.clone());
    // Another request holds most of the budget.
    let held = budget.try_reserve(budget.total()).unwrap();
    let body = "{\"a\":1}";
    let req = post("application/json", body)
        .body(Body::from(body))
        .unwrap();
    let (status, headers, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{resp}");
    assert_eq!(headers["retry-after"], "1");
    drop(held);
    let req = post("application/json", body)
        .body(Body::from(body))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    // 1,000 events whose key is 2 KiB would hold far more than the whole budget.
    let lines = "{}\n".repeat(1000);
    let req = Request::post("/ingest/api")
        .header("content-type", "application/x-ndjson")
        .header("x-key", "k".repeat(2048))
        .body(Body::from(lines))
        .unwrap();
    let (status, _, resp) = send(&app, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{resp}");
    assert!(
        resp["error"]
            .as_str()
            .unwrap()
            .contains("max_request_memory"),
        "{resp}"
    );
    assert_eq!(
        budget.available(),
        budget.total(),
        "every reservation was returned"
    );
}

#[tokio::test]
async fn a_binary_cloudevent_keeps_its_attributes_as_headers() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let body = r#"{"total":3}"#;
    let req = post("application/json", body)
        .header("ce-specversion", "1.0")
        .header("ce-id", "A-1")
        .header("ce-source", "https://shop.example/orders")
        .header("CE-Type", "com.example.order.paid")
        .header("ce-subject", "order%209")
        .header("ce-partitionkey", "customer-9")
        .header(
            "user-agent",
            HeaderValue::from_bytes(b"\xffnot text").unwrap(),
        )
        .body(Body::from(body))
        .unwrap();
    let (status, _, answer) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let events = intake.events.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.payload, body.as_bytes());
    assert_eq!(e.content_type, "application/json");
    assert_eq!(e.header("ce-type"), Some("com.example.order.paid"));
    assert_eq!(e.header("ce-subject"), Some("order 9"), "percent-decoded");
    assert_eq!(e.header("ce-specversion"), Some("1.0"));
    assert_eq!(
        e.key.as_deref(),
        Some(&b"customer-9"[..]),
        "partitionkey is the key"
    );
}

#[tokio::test]
async fn an_incomplete_binary_cloudevent_is_400_with_the_missing_attribute() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let req = post("application/json", "{}")
        .header("ce-specversion", "1.0")
        .header("ce-id", "A-1")
        .header("ce-source", "s")
        .body(Body::from("{}"))
        .unwrap();
    let (status, _, answer) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("`type`") && message.contains("ce-*"),
        "{message}"
    );
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn structured_cloudevents_one_or_a_batch_become_events() {
    let (app, intake, observer) = app(HttpSourceConfig::default());
    let one = r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":{"n":1}}"#;
    let req = post("application/cloudevents+json; charset=utf-8", one)
        .header("x-key", "k")
        .body(Body::from(one))
        .unwrap();
    assert_eq!(send(&app, req).await.0, StatusCode::OK);
    let batch = r#"[{"specversion":"1.0","id":"2","source":"s","type":"t","data_base64":"AAE="},
                    {"specversion":"1.0","id":"3","source":"s","type":"t","datacontenttype":"text/plain","data":"hi"}]"#;
    let req = post("application/cloudevents-batch+json", batch)
        .body(Body::from(batch))
        .unwrap();
    let (status, _, answer) = send(&app, req).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["ids"].as_array().unwrap().len(), 2);
    let events = intake.events.lock().unwrap().clone();
    let parts: Vec<_> = events
        .iter()
        .map(|e| {
            (
                e.payload.clone(),
                e.content_type.as_str(),
                e.header("ce-id"),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            (br#"{"n":1}"#.to_vec(), "application/json", Some("1")),
            (vec![0, 1], "application/octet-stream", Some("2")),
            (b"hi".to_vec(), "text/plain", Some("3")),
        ]
    );
    assert_eq!(events[0].key.as_deref(), Some(&b"k"[..]));
    assert_eq!(observer.0.load(Ordering::SeqCst), 3);

    let bad = r#"[{"specversion":"1.0","id":"4","source":"s","type":"t"},{"id":"5"}]"#;
    let req = post("application/cloudevents-batch+json", bad)
        .body(Body::from(bad))
        .unwrap();
    let (status, _, answer) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains("CloudEvent 2 of the batch"), "{message}");
    assert_eq!(
        intake.events.lock().unwrap().len(),
        3,
        "nothing of it appended"
    );
}

#[tokio::test]
async fn a_binary_cloudevent_is_one_event_not_an_ndjson_batch() {
    let (app, intake, _) = app(HttpSourceConfig::default());
    let body = "{\"n\":1}\n{\"n\":2}\n";
    let req = post("application/x-ndjson", body)
        .header("ce-specversion", "1.0")
        .header("ce-id", "A-1")
        .header("ce-source", "s")
        .header("ce-type", "t")
        .body(Body::from(body))
        .unwrap();
    let (status, _, answer) = send(&app, req).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = answer["error"].as_str().unwrap();
    assert!(message.contains("cloudevents-batch+json"), "{message}");
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn structured_cloudevents_reserve_what_their_attributes_cost() {
    const BUDGET: u64 = 128 << 10;
    let config = HttpSourceConfig::default();
    let intake = Arc::new(MemoryIntake::default());
    let source = Arc::new(HttpSource::new("api", config, intake.clone()));
    // Room for a body read twice, not for what 20 times its size would cost.
    let app = router(
        vec![source],
        Arc::new(CountingObserver::default()),
        MemoryBudget::new(BUDGET),
    );
    let attributes: String = (0..60).map(|i| format!(",\"x{i}\":1")).collect();
    let one = format!(r#"{{"specversion":"1.0","id":"1","source":"s","type":"t"{attributes}}}"#);
    let batch = format!("[{}]", vec![one; 20].join(","));
    let body = batch.len() as u64;
    assert!(body * 4 < BUDGET && BUDGET < body * 20, "{body}");
    let req = Request::post("/ingest/api")
        .header("content-type", "application/cloudevents-batch+json")
        .header("content-length", batch.len().to_string())
        .body(Body::from(batch))
        .unwrap();
    let (status, _, answer) = send(&app, req).await;
    assert!(
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::PAYLOAD_TOO_LARGE,
        "{status} {answer}"
    );
    assert!(intake.events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn every_source_is_reached_by_its_name_plain_or_escaped_and_no_other_name_is() {
    let observer = Arc::new(CountingObserver::default());
    let names = ["orders", "a.b-c_D", "with space", "{braces}", "..", "a%2Fb"];
    let intakes: Vec<_> = names
        .iter()
        .map(|_| Arc::new(MemoryIntake::default()))
        .collect();
    let sources = names
        .iter()
        .zip(&intakes)
        .map(|(name, intake)| {
            Arc::new(HttpSource::new(
                name,
                HttpSourceConfig::default(),
                intake.clone(),
            ))
        })
        .collect();
    let app = router(sources, observer, MemoryBudget::new(64 << 20));
    let paths = [
        "/ingest/orders",
        "/ingest/a.b-c_D",
        "/ingest/with%20space",
        "/ingest/%7Bbraces%7D",
        "/ingest/%2E%2E",
        "/ingest/a%252Fb",
    ];
    for (i, path) in paths.iter().enumerate() {
        let req = Request::post(*path)
            .header("content-type", "application/json")
            .body(Body::from(format!(r#"{{"n":{i}}}"#)))
            .unwrap();
        let (status, _, _) = send(&app, req).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        let events = intakes[i].events.lock().unwrap().clone();
        assert_eq!(events.len(), 1, "{path} reached source {:?}", names[i]);
        assert_eq!(events[0].source, names[i]);
        assert_eq!(events[0].payload, format!(r#"{{"n":{i}}}"#).as_bytes());
    }
    for path in ["/ingest/Orders", "/ingest/order", "/ingest/orders2"] {
        let req = Request::post(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let (status, _, _) = send(&app, req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    assert!(plain_path_segment("orders") && plain_path_segment("a.b-c_D"));
    for name in ["", ".", "..", "with space", "{x}", "a/b", "*all", "é"] {
        assert!(!plain_path_segment(name), "{name:?}");
    }
}
