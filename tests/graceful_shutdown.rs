//! An operator stops switchyard with SIGTERM while it is delivering to a slow webhook and
//! producers are still sending: it drains what is in flight, stores its checkpoints and
//! exits 0; after a restart, every acknowledged event has been delivered and none was
//! delivered twice.

use std::sync::Arc;
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, WebhookReceiver, check, tail};
use switchyard_tests::{
    Load, Progress, WEBHOOK_SECRET, deliveries, runtime, wait_for_all_delivered, wait_until,
};

#[test]
fn sigterm_drains_in_flight_deliveries_and_exits_0() {
    // Each request takes 50 ms: deliveries are in flight when the signal comes.
    let receiver = WebhookReceiver::start(Behaviour::Slow(Duration::from_millis(50)));
    let mut switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
shutdown_timeout = "60s"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 4
retry = {{ max_attempts = 20, initial = "10ms", max = "100ms" }}
"#,
        url = receiver.url()
    ));

    let load = Load {
        base: switchyard.url(),
        source: "api".into(),
        keys: 8,
        per_key: 40,
        producers: 4,
        pad: 16,
        give_up_after: Duration::from_secs(60),
    };
    let total = load.keys * load.per_key as usize;
    let progress = Arc::new(Progress::default());
    let rt = runtime();
    let producers = rt.spawn(load.run(progress.clone()));

    // Producers are half done and the receiver is busy: stop switchyard.
    assert!(wait_until(Duration::from_secs(60), || {
        progress.acked_count() >= total / 2 && receiver.received_count() > 0
    }));
    let acked_at_signal = progress.acked_count();
    let status = switchyard.terminate();
    let delivered_at_exit = receiver.count();
    println!(
        "SIGTERM with {acked_at_signal} acked; exited {status} after {delivered_at_exit} deliveries"
    );
    assert!(
        status.success(),
        "switchyard must exit 0 on SIGTERM, got {status}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    // Drained: no request was abandoned half way (the receiver answered every one).
    let abandoned = receiver
        .received()
        .iter()
        .filter(|r| r.status.is_none())
        .count();
    assert_eq!(abandoned, 0, "requests cut off by the shutdown");

    // Producers keep retrying while it is down; start it again and let them finish.
    switchyard.restart();
    rt.block_on(producers).expect("producers");
    assert_eq!(progress.gave_up(), None, "a producer gave up");
    let acked = progress.acked();
    assert_eq!(acked.len(), total);

    let all_arrived = wait_for_all_delivered(&receiver, &acked, Duration::from_secs(60));
    let report = check(&acked, &deliveries(&receiver));
    println!("graceful_shutdown: {report}");
    assert!(all_arrived, "{report}\n{}", tail(&switchyard.stderr(), 40));
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    // A clean stop stores the checkpoint of everything delivered: nothing comes twice.
    assert_eq!(report.duplicated, 0, "{report}");
    assert!(
        switchyard.stderr().contains("shutting down"),
        "the log says it is shutting down"
    );
}
