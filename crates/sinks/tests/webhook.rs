//! The webhook sink against a real local HTTP receiver.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use switchyard_config::{CloudEventsMode, RetryConfig, SinkFormat, WebhookSinkConfig};
use switchyard_connector::{Outcome, Sink};
use switchyard_event::Event;
use switchyard_sinks::{SinkError, WebhookSink};
use switchyard_test_support::{Behaviour, WebhookReceiver, verify_standard_webhook};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WAIT: Duration = Duration::from_secs(10);

fn config(url: String) -> WebhookSinkConfig {
    WebhookSinkConfig {
        url,
        secret: Some(SECRET.to_owned()),
        timeout: Duration::from_secs(5),
        concurrency: 4,
        retry: RetryConfig::default(),
        headers: BTreeMap::new(),
        envelope: false,
        allow_private: false,
        format: SinkFormat::DEFAULT,
        cloudevents_mode: CloudEventsMode::Binary,
    }
}

fn order_event(id: &str) -> Arc<Event> {
    Arc::new(Event {
        id: id.to_owned().into(),
        source: "api".into(),
        kind: "message".into(),
        key: Some(b"customer-7".to_vec()),
        payload: br#"{"order":7,"status":"paid"}"#.to_vec(),
        content_type: "application/json".into(),
        headers: vec![("x-trace".into(), "abc".into())],
        timestamp_ms: 1_764_064_800_000,
        payload_is_compact_json: false,
    })
}

async fn deliver_one(sink: &WebhookSink, event: Arc<Event>) -> Outcome {
    let outcomes = sink.deliver(&[event]).await;
    assert_eq!(outcomes.len(), 1, "one outcome per event");
    outcomes.into_iter().next().unwrap()
}

fn retry_parts(outcome: Outcome) -> (String, Option<Duration>) {
    match outcome {
        Outcome::Retry { error, retry_after } => (error, retry_after),
        other => panic!("expected Retry, got {other:?}"),
    }
}

fn permanent_error(outcome: Outcome) -> String {
    match outcome {
        Outcome::Permanent { error } => error,
        other => panic!("expected Permanent, got {other:?}"),
    }
}

#[tokio::test]
async fn a_2xx_is_delivered_with_a_signature_receivers_can_verify() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut cfg = config(receiver.url());
    cfg.headers
        .insert("authorization".into(), "Bearer t0ken".into());
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    let event = order_event("01JD-1");

    assert_eq!(deliver_one(&sink, event.clone()).await, Outcome::Delivered);

    assert!(receiver.wait_for_count_async(1, WAIT).await);
    let request = &receiver.accepted()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(
        &request.body[..],
        &event.payload[..],
        "the body is the bare payload"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("webhook-id"), Some("01JD-1"));
    assert_eq!(request.header("x-switchyard-source"), Some("api"));
    assert_eq!(request.header("x-switchyard-kind"), Some("message"));
    assert_eq!(request.header("x-switchyard-key"), Some("customer-7"));
    assert_eq!(request.header("authorization"), Some("Bearer t0ken"));
    let sent_at: u64 = request
        .header("webhook-timestamp")
        .unwrap()
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        sent_at.abs_diff(now) <= 5,
        "timestamp {sent_at} is not now ({now})"
    );
    assert!(
        request
            .header("webhook-signature")
            .unwrap()
            .starts_with("v1,")
    );
    assert!(verify_standard_webhook(
        SECRET,
        &request.headers,
        &request.body
    ));
    // The check can fail: another key or another body does not verify.
    assert!(!verify_standard_webhook(
        "whsec_c2VjcmV0",
        &request.headers,
        &request.body
    ));
    assert!(!verify_standard_webhook(SECRET, &request.headers, b"{}"));
}

#[tokio::test]
async fn without_a_secret_requests_are_unsigned() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut cfg = config(receiver.url());
    cfg.secret = None;
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    let mut event = (*order_event("e-1")).clone();
    event.key = Some(vec![0xff, 0xfe]);
    event.content_type = "text/plain".into();
    event.payload = b"plain text".to_vec();
    assert_eq!(
        deliver_one(&sink, Arc::new(event)).await,
        Outcome::Delivered
    );
    let request = &receiver.accepted()[0];
    assert!(request.header("webhook-signature").is_none());
    assert_eq!(
        request.header("webhook-id"),
        Some("e-1"),
        "the id is sent unsigned too"
    );
    assert!(request.header("webhook-timestamp").is_some());
    assert!(
        request.header("x-switchyard-key").is_none(),
        "a binary key is not sent"
    );
    assert_eq!(request.header("content-type"), Some("text/plain"));
    assert_eq!(request.text(), "plain text");
}

#[tokio::test]
async fn envelope_mode_sends_the_wire_form() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut cfg = config(receiver.url());
    cfg.envelope = true;
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    let event = order_event("01JD-2");
    assert_eq!(deliver_one(&sink, event.clone()).await, Outcome::Delivered);

    let request = &receiver.accepted()[0];
    assert_eq!(request.header("content-type"), Some("application/json"));
    let json: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(json["payload"]["status"], "paid");
    assert_eq!(Event::from_wire_json(&json).unwrap(), *event);
    assert!(verify_standard_webhook(
        SECRET,
        &request.headers,
        &request.body
    ));
}

#[tokio::test]
async fn a_500_is_retried_with_the_response_in_the_error() {
    let receiver = WebhookReceiver::start(Behaviour::Status(500));
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    let (error, retry_after) = retry_parts(deliver_one(&sink, order_event("e-1")).await);
    assert!(error.contains("500"), "{error}");
    assert!(error.contains("switchyard test receiver"), "{error}");
    assert_eq!(retry_after, None);
    assert_eq!(receiver.count(), 0);

    // Once the receiver recovers, the same event goes through with the same id.
    receiver.set_behaviour(Behaviour::Ok);
    assert_eq!(
        deliver_one(&sink, order_event("e-1")).await,
        Outcome::Delivered
    );
    let ids: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["e-1", "e-1"]);
}

#[tokio::test]
async fn a_429_is_retried_no_sooner_than_retry_after() {
    let receiver = WebhookReceiver::start(Behaviour::TooManyRequests {
        retry_after_secs: 7,
    });
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    let (error, retry_after) = retry_parts(deliver_one(&sink, order_event("e-1")).await);
    assert!(error.contains("429"), "{error}");
    assert_eq!(retry_after, Some(Duration::from_secs(7)));
    let policy = sink.retry_policy();
    assert!(policy.delay(1, retry_after) >= Duration::from_secs(7));
}

#[tokio::test]
async fn a_408_is_retried() {
    let receiver = WebhookReceiver::start(Behaviour::Status(408));
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    retry_parts(deliver_one(&sink, order_event("e-1")).await);
}

#[tokio::test]
async fn a_404_is_permanent() {
    let receiver = WebhookReceiver::start(Behaviour::Status(404));
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    let error = permanent_error(deliver_one(&sink, order_event("e-1")).await);
    assert!(error.contains("404"), "{error}");
    assert!(
        error.contains("switchyard test receiver answered 404"),
        "{error}"
    );
}

#[tokio::test]
async fn a_redirect_is_permanent_and_says_to_fix_the_url() {
    let receiver = WebhookReceiver::start(Behaviour::Status(308));
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    let error = permanent_error(deliver_one(&sink, order_event("e-1")).await);
    assert!(error.contains("308"), "{error}");
    assert!(error.contains("final address"), "{error}");
    assert_eq!(receiver.received_count(), 1, "the redirect is not followed");
}

#[tokio::test]
async fn a_hanging_receiver_is_retried_after_the_timeout() {
    let receiver = WebhookReceiver::start(Behaviour::Hang(Duration::from_secs(30)));
    let mut cfg = config(receiver.url());
    cfg.timeout = Duration::from_millis(300);
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    let started = Instant::now();
    let (error, _) = retry_parts(deliver_one(&sink, order_event("e-1")).await);
    let took = started.elapsed();
    assert!(error.contains("did not answer within"), "{error}");
    assert!(
        took >= Duration::from_millis(300),
        "gave up early: {took:?}"
    );
    assert!(
        took < Duration::from_secs(5),
        "the timeout was not applied: {took:?}"
    );
}

#[tokio::test]
async fn a_closed_connection_is_retried() {
    let receiver = WebhookReceiver::start(Behaviour::Close);
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    let (error, _) = retry_parts(deliver_one(&sink, order_event("e-1")).await);
    assert!(error.contains("cannot reach"), "{error}");
}

#[tokio::test]
async fn connection_refused_is_retried() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let sink = WebhookSink::new("audit", &config(format!("http://127.0.0.1:{port}/hook"))).unwrap();
    let (error, retry_after) = retry_parts(deliver_one(&sink, order_event("e-1")).await);
    assert!(error.contains("cannot reach"), "{error}");
    assert_eq!(retry_after, None);
}

#[tokio::test]
async fn after_a_retry_the_rest_of_a_batch_is_not_attempted() {
    let receiver = WebhookReceiver::start(Behaviour::FailFirst(1));
    let sink = WebhookSink::new("audit", &config(receiver.url())).unwrap();
    let outcomes = sink.deliver(&[order_event("a"), order_event("b")]).await;
    assert_eq!(outcomes.len(), 2);
    assert!(matches!(outcomes[0], Outcome::Retry { .. }));
    assert!(
        matches!(&outcomes[1], Outcome::Retry { error, .. } if error.contains("not attempted"))
    );
    assert_eq!(receiver.received_count(), 1);
}

#[test]
fn settings_come_from_the_config() {
    let mut cfg = config("https://hooks.example.test/in".into());
    cfg.concurrency = 16;
    cfg.retry = RetryConfig {
        max_attempts: 3,
        initial: Duration::from_millis(50),
        max: Duration::from_secs(2),
    };
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    assert_eq!(sink.concurrency(), 16);
    assert_eq!(sink.max_batch(), 1);
    let policy = sink.retry_policy();
    assert_eq!(policy.max_attempts, 3);
    assert_eq!(policy.initial, Duration::from_millis(50));
    assert_eq!(policy.max, Duration::from_secs(2));
}

#[test]
fn bad_configs_are_refused_with_the_fix() {
    let base = config("http://127.0.0.1:9/hook".into());
    let err = |cfg: &WebhookSinkConfig| WebhookSink::new("audit", cfg).unwrap_err();

    let mut cfg = base.clone();
    cfg.secret = Some("hunter2".into());
    let e = err(&cfg);
    assert!(matches!(e, SinkError::InvalidSecret { .. }));
    assert!(e.to_string().contains("whsec_"), "{e}");
    assert!(e.to_string().contains("audit"), "{e}");

    cfg.secret = Some("whsec_***".into());
    assert!(matches!(err(&cfg), SinkError::InvalidSecret { .. }));

    let mut cfg = base.clone();
    cfg.url = "ftp://example.test/x".into();
    assert!(err(&cfg).to_string().contains("http://"));
    cfg.url = "not a url".into();
    assert!(matches!(err(&cfg), SinkError::InvalidUrl { .. }));

    let mut cfg = base.clone();
    cfg.headers
        .insert("webhook-signature".into(), "v1,forged".into());
    assert!(matches!(err(&cfg), SinkError::InvalidHeader { .. }));
    let mut cfg = base.clone();
    cfg.headers.insert("x-ok".into(), "line\nbreak".into());
    assert!(matches!(err(&cfg), SinkError::InvalidHeader { .. }));

    let mut cfg = base.clone();
    cfg.concurrency = 0;
    assert!(err(&cfg).to_string().contains("concurrency"));
    let mut cfg = base;
    cfg.timeout = Duration::ZERO;
    assert!(err(&cfg).to_string().contains("timeout"));
}

#[tokio::test]
async fn passwords_in_the_url_stay_out_of_errors() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let cfg = config(format!("http://user:s3cr3t@127.0.0.1:{port}/hook"));
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    let (error, _) = retry_parts(deliver_one(&sink, order_event("e-1")).await);
    assert!(!error.contains("s3cr3t"), "{error}");
    assert!(error.contains("127.0.0.1"), "{error}");
    assert!(!format!("{sink:?}").contains("s3cr3t"));
    assert!(!sink.url().contains("s3cr3t"));
}

#[tokio::test]
async fn lanes_deliver_concurrently_through_one_sink() {
    let hold = Duration::from_millis(300);
    let receiver = WebhookReceiver::start(Behaviour::Slow(hold));
    let mut cfg = config(receiver.url());
    cfg.concurrency = 8;
    let sink = WebhookSink::new("audit", &cfg).unwrap();
    let events: Vec<_> = (0..8).map(|i| order_event(&format!("e-{i}"))).collect();
    let started = Instant::now();
    let outcomes =
        futures::future::join_all(events.iter().map(|e| sink.deliver(std::slice::from_ref(e))))
            .await;
    let took = started.elapsed();
    assert!(outcomes.iter().all(|o| o == &[Outcome::Delivered]));
    assert_eq!(receiver.count(), 8);
    // One after another would take 8 × 300 ms.
    assert!(took < hold * 4, "deliveries were serialised: {took:?}");
}
