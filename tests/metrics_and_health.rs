//! An operator points a load balancer at `/healthz` and `/readyz` and Prometheus at
//! `/metrics`: after some traffic (including a webhook that fails twice), the counters
//! say how many events came in, were delivered and retried, and the gauges are there.

use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, tail};
use switchyard_tests::{Sent, WEBHOOK_SECRET, client, runtime, send_once, wait_until_async};

/// The values of the samples `name{labels…}` in a Prometheus text exposition (labels
/// not named in `labels` may be present too).
fn samples(text: &str, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            let all = labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            (metric == name && all)
                .then(|| value.parse().ok())
                .flatten()
        })
        .collect()
}

/// The value of the one sample `name{labels…}`, if present.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let values = samples(text, name, labels);
    assert!(
        values.len() <= 1,
        "{name} {labels:?} matches several samples"
    );
    values.first().copied()
}

#[test]
fn health_readiness_and_metrics_after_traffic() {
    let receiver = WebhookReceiver::start(Behaviour::FailFirst(2));
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
retry = {{ max_attempts = 10, initial = "10ms", max = "50ms" }}
"#,
        url = receiver.url()
    ));
    let base = switchyard.url();

    runtime().block_on(async {
        let client = client();
        for path in ["/healthz", "/readyz"] {
            let r = client.get(format!("{base}{path}")).send().await.unwrap();
            assert_eq!(r.status(), 200, "{path}");
        }

        for seq in 0..5 {
            assert!(matches!(
                send_once(&client, &base, "api", "k", seq, 0).await,
                Sent::Accepted
            ));
        }
        // A repeat of an idempotency key is a 200 that adds no event.
        for _ in 0..2 {
            let r = client
                .post(format!("{base}/ingest/api"))
                .header("content-type", "application/json")
                .header("idempotency-key", "metrics-repeat")
                .body("{\"n\":1}")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
        // A refused request is counted by status too.
        let r = client
            .post(format!("{base}/ingest/api"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);

        assert!(
            receiver
                .wait_for_count_async(6, Duration::from_secs(30))
                .await
        );
        let metrics = || async {
            let r = client.get(format!("{base}/metrics")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        };
        // Counters are updated right after the receiver answers: poll briefly.
        let delivered = |text: &str| {
            sample(
                text,
                "switchyard_sink_events_total",
                &[("sink", "hook"), ("outcome", "delivered")],
            )
        };
        let settled = wait_until_async(Duration::from_secs(10), || async {
            delivered(&metrics().await) == Some(6.0)
        })
        .await;
        let text = metrics().await;
        assert!(settled, "delivered counter never reached 6:\n{text}");
        println!("{text}");

        assert_eq!(
            sample(
                &text,
                "switchyard_source_events_total",
                &[("source", "api")]
            ),
            Some(6.0),
            "five events and one of the idempotent pair; the repeat adds none"
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_sink_events_total",
                &[("sink", "hook"), ("outcome", "retried")]
            ),
            Some(2.0),
            "the two 500s were retried"
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_sink_events_total",
                &[("sink", "hook"), ("outcome", "dead_lettered")]
            )
            .unwrap_or(0.0),
            0.0
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_http_requests_total",
                &[("source", "api"), ("status", "200")]
            ),
            Some(7.0),
            "the repeat is counted as an answered request"
        );
        assert_eq!(
            sample(
                &text,
                "switchyard_http_requests_total",
                &[("source", "api"), ("status", "400")]
            ),
            Some(1.0)
        );
        for gauge in ["switchyard_queue_depth", "switchyard_checkpoint_lag"] {
            assert!(
                wait_until_async(Duration::from_secs(10), || async {
                    !samples(&metrics().await, gauge, &[]).is_empty()
                })
                .await,
                "{gauge} is missing:\n{}",
                metrics().await
            );
        }
        // The checkpoint catches up once everything is delivered.
        assert!(
            wait_until_async(Duration::from_secs(10), || async {
                let lags = samples(
                    &metrics().await,
                    "switchyard_checkpoint_lag",
                    &[("source", "api")],
                );
                !lags.is_empty() && lags.iter().all(|l| *l == 0.0)
            })
            .await,
            "checkpoint lag stays above 0:\n{}\n{}",
            metrics().await,
            tail(&switchyard.stderr(), 20)
        );
    });
}
