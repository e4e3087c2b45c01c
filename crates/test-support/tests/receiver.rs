//! The receiver answers as told and records only 2xx answers as accepted.

use std::time::Duration;

use switchyard_test_support::{Behaviour, WebhookReceiver};

const WAIT: Duration = Duration::from_secs(10);

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(url)
        .header("x-test", "1")
        .body(body.to_owned())
        .send()
        .await
}

#[tokio::test]
async fn ok_records_headers_and_body() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let client = reqwest::Client::new();
    let response = post(&client, &receiver.url(), "hello").await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(receiver.wait_for_count_async(1, WAIT).await);
    let accepted = receiver.accepted();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].text(), "hello");
    assert_eq!(accepted[0].header("x-test"), Some("1"));
    assert_eq!(accepted[0].path, "/hook");
    assert_eq!(accepted[0].status, Some(200));
    // It can also say "not reached".
    assert!(
        !receiver
            .wait_for_count_async(2, Duration::from_millis(50))
            .await
    );
}

#[tokio::test]
async fn failing_a_fraction_is_repeatable_with_a_seed() {
    let behaviour = Behaviour::FailFraction {
        fraction: 0.5,
        seed: 42,
    };
    let client = reqwest::Client::new();
    let mut runs = Vec::new();
    for _ in 0..2 {
        let receiver = WebhookReceiver::start(behaviour.clone());
        let mut statuses = Vec::new();
        for i in 0..40 {
            let r = post(&client, &receiver.url(), &i.to_string())
                .await
                .unwrap();
            statuses.push(r.status().as_u16());
        }
        let ok = statuses.iter().filter(|s| **s == 200).count();
        assert_eq!(receiver.count(), ok, "only 2xx answers are accepted");
        assert_eq!(receiver.received_count(), 40);
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let failed = runs[0].iter().filter(|s| **s == 500).count();
    assert!(
        (8..=32).contains(&failed),
        "{failed} of 40 failed for fraction 0.5"
    );
}

#[tokio::test]
async fn behaviour_changes_at_run_time() {
    let receiver = WebhookReceiver::start(Behaviour::FailFirst(2));
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            post(&client, &receiver.url(), "x")
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [500, 500, 200]);

    receiver.set_behaviour(Behaviour::TooManyRequests {
        retry_after_secs: 7,
    });
    let r = post(&client, &receiver.url(), "x").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "7");

    receiver.set_behaviour(Behaviour::Status(404));
    let r = post(&client, &receiver.url(), "x").await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("404"));

    assert_eq!(receiver.count(), 1);
    assert_eq!(receiver.received_count(), 5);
}

#[tokio::test]
async fn close_drops_the_connection_without_an_answer() {
    let receiver = WebhookReceiver::start(Behaviour::Close);
    let client = reqwest::Client::new();
    let err = post(&client, &receiver.url(), "x").await.unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    assert_eq!(receiver.received_count(), 1);
    assert_eq!(receiver.received()[0].status, None);
    assert_eq!(receiver.count(), 0);
    // The server itself is still fine.
    receiver.set_behaviour(Behaviour::Ok);
    assert_eq!(
        post(&client, &receiver.url(), "x").await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn hang_outlasts_the_client_timeout() {
    let receiver = WebhookReceiver::start(Behaviour::Hang(Duration::from_secs(30)));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = post(&client, &receiver.url(), "x").await.unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(receiver.count(), 0);
    // Dropping the receiver must not wait for the 30 s hang.
    let started = std::time::Instant::now();
    drop(receiver);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn blocking_tests_can_wait_for_deliveries() {
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let url = receiver.url();
    let sender = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let client = reqwest::Client::new();
            for i in 0..3 {
                post(&client, &url, &i.to_string()).await.unwrap();
            }
        });
    });
    assert!(receiver.wait_for_count(3, WAIT));
    sender.join().unwrap();
    let bodies: Vec<_> = receiver.accepted().iter().map(|r| r.text()).collect();
    assert_eq!(bodies, ["0", "1", "2"]);
    assert!(!receiver.wait_for_count(4, Duration::from_millis(50)));
}

#[tokio::test]
async fn a_status_for_bodies_that_contain_a_needle() {
    let receiver = WebhookReceiver::start(Behaviour::StatusIfBodyContains {
        needle: "\"poison\":true".into(),
        status: 404,
    });
    let client = reqwest::Client::new();
    let r = post(&client, &receiver.url(), r#"{"poison":true}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = post(&client, &receiver.url(), r#"{"poison":false}"#)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(receiver.count(), 1);
    assert_eq!(receiver.accepted()[0].text(), r#"{"poison":false}"#);
}
