//! switchyard is killed with SIGKILL five times while producers send and deliveries run
//! (HTTP → durable queue → webhook). Producers retry what was not acknowledged, with the
//! same `Idempotency-Key`. In the end every acknowledged event was delivered at least
//! once and no key's events were first delivered out of order; duplicates are allowed
//! and reported.

use std::sync::Arc;
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, check, tail};
use switchyard_tests::{
    Load, Progress, WEBHOOK_SECRET, deliveries, runtime, wait_for_all_delivered, wait_until,
};

const KILLS: usize = 5;

#[test]
fn nothing_acknowledged_is_lost_across_five_kill_9s() {
    let receiver = WebhookReceiver::start(Behaviour::FailFraction {
        fraction: 0.1,
        seed: 11,
    });
    let mut switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 2

[queues.events]
partitions = 3

[pipelines.ingest]
from = ["api"]
to = ["events_queue"]

[sinks.events_queue]
type = "queue"
queue = "events"

[sources.events_in]
type = "queue"
queue = "events"
group = "deliver"

[pipelines.deliver]
from = ["events_in"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
retry = {{ max_attempts = 60, initial = "10ms", max = "200ms" }}
"#,
        url = receiver.url()
    ));

    let load = Load {
        base: switchyard.url(),
        source: "api".into(),
        keys: 40,
        per_key: 100,
        producers: 16,
        pad: 32,
        give_up_after: Duration::from_secs(90),
    };
    let total = load.keys * load.per_key as usize;
    let step = total / (KILLS + 1);
    let progress = Arc::new(Progress::default());
    let rt = runtime();
    let producers = rt.spawn(load.run(progress.clone()));

    // Kill whenever another sixth of the events was acknowledged; restart at once.
    for kill in 1..=KILLS {
        let target = kill * step;
        assert!(
            wait_until(Duration::from_secs(90), || progress.acked_count() >= target
                || progress.gave_up().is_some()),
            "producers stalled at {} acked before kill {kill}\n{}",
            progress.acked_count(),
            tail(&switchyard.stderr(), 40)
        );
        assert_eq!(progress.gave_up(), None, "a producer gave up");
        let delivered_before = receiver.count();
        switchyard.kill9();
        println!(
            "kill -9 #{kill}: {} acked, {delivered_before} delivered",
            progress.acked_count()
        );
        switchyard.restart();
    }
    rt.block_on(producers).expect("producers");
    assert_eq!(progress.gave_up(), None, "a producer gave up");
    let acked = progress.acked();
    assert_eq!(
        acked.len(),
        total,
        "every event was acknowledged in the end"
    );

    let all_arrived = wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120));
    let report = check(&acked, &deliveries(&receiver));
    println!(
        "kill9_during_load ({KILLS} × kill -9, {} failed ingest attempts): {report}",
        progress.failed_attempts()
    );
    assert!(
        all_arrived,
        "delivery did not catch up: {report}\n{}",
        tail(&switchyard.stderr(), 60)
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(switchyard.runs(), KILLS as u32 + 1);
}
