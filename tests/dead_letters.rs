//! A webhook endpoint rejects some events for good (404): those go to the dead-letter
//! queue, the others are delivered. `switchyard dlq list` shows the rejected ones with
//! the sink and the error; once the endpoint is fixed, `switchyard dlq replay` delivers
//! them and the list is empty.

use std::collections::HashSet;
use std::time::Duration;

use switchyard_test_support::{Behaviour, Switchyard, Tracked, WebhookReceiver, check, tail};
use switchyard_tests::{WEBHOOK_SECRET, client, deliveries, event_id, runtime, wait_until};

const POISON: &str = "\"poison\":true";

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn rejected_events_are_dead_lettered_listed_and_replayed() {
    let receiver = WebhookReceiver::start(Behaviour::StatusIfBodyContains {
        needle: POISON.into(),
        status: 404,
    });
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
admin_token = "admin-secret-0123456789"

[sources.api]
type = "http"

[pipelines.deliver]
from = ["api"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
retry = {{ max_attempts = 5, initial = "10ms", max = "50ms" }}
"#,
        url = receiver.url()
    ));

    // 3 keys × 10 events; every fifth event of a key is one the endpoint rejects.
    let mut good = Vec::new();
    let mut poison = Vec::new();
    runtime().block_on(async {
        let client = client();
        for seq in 0..10u64 {
            for key in ["a", "b", "c"] {
                let rejected = seq % 5 == 2;
                let body = serde_json::json!({ "key": key, "seq": seq, "poison": rejected });
                let id = event_id(key, seq);
                let resp = client
                    .post(format!("{}/ingest/api", switchyard.url()))
                    .header("x-key", key)
                    .header("idempotency-key", &id)
                    .json(&body)
                    .send()
                    .await
                    .expect("ingest answers");
                assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
                let t = Tracked::new(id, key, seq);
                if rejected {
                    poison.push(t)
                } else {
                    good.push(t)
                }
            }
        }
    });
    assert_eq!((good.len(), poison.len()), (24, 6));

    // The good events arrive, in key order, although events before them were rejected.
    assert!(
        receiver.wait_for_count(good.len(), Duration::from_secs(30)),
        "{} of {} good events delivered\n{}",
        receiver.count(),
        good.len(),
        tail(&switchyard.stderr(), 30)
    );
    let report = check(&good, &deliveries(&receiver));
    println!("dead_letters, before replay: {report}");
    assert_eq!(
        (report.lost, report.reordered, report.unacked),
        (0, 0, 0),
        "{report}"
    );
    // Permanent failures are not retried: one request per rejected event.
    let rejections = receiver
        .received()
        .iter()
        .filter(|r| r.status == Some(404))
        .count();
    assert_eq!(rejections, poison.len());

    // The dead letters are listed with their sink and error.
    let mut listing = String::new();
    let listed = wait_until(Duration::from_secs(30), || {
        let out = switchyard.cli(&["dlq", "list"]);
        assert!(
            out.status.success(),
            "dlq list failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        listing = stdout(&out);
        listing.lines().filter(|l| l.contains("sink=")).count() == poison.len()
    });
    assert!(listed, "dlq list shows:\n{listing}");
    println!("switchyard dlq list:\n{listing}");
    for t in &poison {
        let line = listing
            .lines()
            .find(|l| l.starts_with(&format!("{}\t", t.id)))
            .unwrap_or_else(|| panic!("{} is not listed:\n{listing}", t.id));
        assert!(line.contains("sink=hook"), "{line}");
        assert!(line.contains("attempts=1"), "{line}");
        assert!(line.contains("404"), "the error names the status: {line}");
    }
    for t in &good {
        assert!(
            !listing.contains(&format!("{}\t", t.id)),
            "{} was delivered, not dead-lettered",
            t.id
        );
    }

    // `dlq show` prints the whole event, headers included.
    let shown = switchyard.cli(&["dlq", "show", &poison[0].id]);
    assert!(shown.status.success());
    let event: serde_json::Value =
        serde_json::from_slice(&shown.stdout).expect("dlq show prints JSON");
    assert_eq!(event["id"], poison[0].id.as_str());
    assert_eq!(event["headers"]["x-switchyard-dead-letter-sink"], "hook");
    assert_eq!(
        event["headers"]["x-switchyard-dead-letter-pipeline"],
        "deliver"
    );
    assert_eq!(event["payload"]["poison"], true);

    // The endpoint is fixed; replay delivers the dead letters.
    receiver.set_behaviour(Behaviour::Ok);
    let replay = switchyard.cli(&["dlq", "replay"]);
    assert!(
        replay.status.success(),
        "dlq replay failed: {}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(
        stdout(&replay).contains("replayed 6 dead letters"),
        "{}",
        stdout(&replay)
    );
    assert!(receiver.wait_for_count(good.len() + poison.len(), Duration::from_secs(30)));
    let delivered: HashSet<String> = deliveries(&receiver).into_iter().map(|t| t.id).collect();
    for t in &poison {
        assert!(delivered.contains(&t.id), "{} was not replayed", t.id);
    }
    // Replayed events carry no dead-letter bookkeeping headers.
    for r in receiver.accepted() {
        assert!(
            r.headers
                .keys()
                .all(|h| !h.as_str().starts_with("x-switchyard-dead-letter")),
            "{:?}",
            r.headers
        );
    }

    let after = stdout(&switchyard.cli(&["dlq", "list"]));
    assert!(
        after.contains("no dead letters"),
        "the list is empty after the replay:\n{after}"
    );
    // A second replay has nothing to do.
    let again = stdout(&switchyard.cli(&["dlq", "replay"]));
    assert!(again.contains("replayed 0 dead letters"), "{again}");
}
