//! A producer sends 10,000 keyed events over 16 connections to an HTTP source; a
//! webhook receiver that fails one request in five still gets every accepted event, in
//! per-key order, signed.

use std::sync::Arc;
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, check, verify_standard_webhook};
use switchyard_tests::{
    Load, Progress, WEBHOOK_SECRET, deliveries, runtime, wait_for_all_delivered,
};

#[test]
fn every_accepted_event_reaches_a_flaky_webhook_in_key_order() {
    let receiver = switchyard_test_support::WebhookReceiver::start(Behaviour::FailFraction {
        fraction: 0.2,
        seed: 7,
    });
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 16
retry = {{ max_attempts = 60, initial = "10ms", max = "200ms" }}
"#,
        url = receiver.url()
    ));

    // 100 keys × 100 events, 16 producers; each key's events in sequence.
    let load = Load {
        base: switchyard.url(),
        source: "api".into(),
        keys: 100,
        per_key: 100,
        producers: 16,
        pad: 64,
        give_up_after: Duration::from_secs(60),
    };
    let progress = Arc::new(Progress::default());
    runtime().block_on(load.run(progress.clone()));
    assert_eq!(progress.gave_up(), None, "a producer gave up");
    let acked = progress.acked();
    assert_eq!(acked.len(), 10_000, "every event was accepted once");
    assert_eq!(
        progress.failed_attempts(),
        0,
        "no ingest request should fail here: {:?}",
        progress.refusals()
    );

    let all_arrived = wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120));
    let report = check(&acked, &deliveries(&receiver));
    println!("http_to_webhook (20% of requests answered 500): {report}");
    assert!(
        all_arrived,
        "not every accepted event arrived: {report}\n{}",
        switchyard_test_support::tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    // The receiver really failed requests, so retries happened.
    let failed = receiver
        .received()
        .iter()
        .filter(|r| r.status == Some(500))
        .count();
    assert!(
        failed > 1000,
        "expected about 20% of requests to fail, {failed} did"
    );

    // Every request names its key and source, and a sample checks out as signed.
    let accepted = receiver.accepted();
    for (i, request) in accepted.iter().enumerate() {
        let body: serde_json::Value = serde_json::from_slice(&request.body).expect("JSON body");
        assert_eq!(request.header("x-switchyard-key"), body["key"].as_str());
        assert_eq!(request.header("x-switchyard-source"), Some("api"));
        if i % 97 == 0 {
            assert!(
                verify_standard_webhook(WEBHOOK_SECRET, &request.headers, &request.body),
                "request {i} is not correctly signed: {:?}",
                request.headers
            );
            assert!(
                !verify_standard_webhook(
                    "whsec_c2VjcmV0LWtleS1vZi10aGUtd3JvbmctcGFydHk=",
                    &request.headers,
                    &request.body
                ),
                "a wrong secret must not verify"
            );
        }
    }
}
