//! Kafka end to end, against a real Kafka-protocol broker (tansu, installed by
//! `scripts/install-tansu.sh`): the real binary produces to and consumes from it, and
//! the broker is paused, killed and restarted under it.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use switchyard_test_support::kafka::{
    KafkaRecord, Tansu, TlsProxy, durable_tansu_or_skip, produce, produce_with_byte_headers,
    read_topic_with, unique_name,
};
use switchyard_test_support::{
    Behaviour, Options, Report, Switchyard, Tracked, WebhookReceiver, check, free_port, tail,
};
use switchyard_tests::{
    WEBHOOK_SECRET, client, deliveries, runtime, send_batches, send_until, wait_for_all_delivered,
    wait_until,
};

/// An HTTP source `api` (4 partitions) piped into a Kafka sink `out` on `topic`.
fn http_to_kafka(brokers: &str, topic: &str, sink_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.to_kafka]
from = ["api"]
to = ["out"]

[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
{sink_extra}
"#
    )
}

/// A Kafka source `clicks` on `topic` piped into a signed webhook.
fn kafka_to_webhook(brokers: &str, topic: &str, group: &str, url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.clicks]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group = "{group}"
options = {{ "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}

[pipelines.deliver]
from = ["clicks"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
retry = {{ max_attempts = 60, initial = "10ms", max = "200ms" }}
"#
    )
}

/// A record written by the sink as a checker record: id from `switchyard-id`, key and
/// sequence from the JSON payload.
fn tracked(r: &KafkaRecord) -> Option<Tracked> {
    let body: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
    Some(Tracked::new(
        r.header("switchyard-id")?,
        body.get("key")?.as_str()?,
        body.get("seq")?.as_u64()?,
    ))
}

/// Reads `topic` until every id in `acked` is there (or `within` passes), and checks.
fn read_back(brokers: &str, topic: &str, acked: &[Tracked], within: Duration) -> Report {
    read_back_with(brokers, &[], topic, acked, within)
}

/// [`read_back`] with a reader of these librdkafka settings (e.g. TLS).
fn read_back_with(
    brokers: &str,
    options: &[(String, String)],
    topic: &str,
    acked: &[Tracked],
    within: Duration,
) -> Report {
    let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    let mut scanned = 0;
    let records = read_topic_with(brokers, options, topic, within, |records| {
        for r in &records[scanned..] {
            if let Some(id) = r.header("switchyard-id") {
                seen.insert(id.to_owned());
            }
        }
        scanned = records.len();
        wanted.iter().all(|id| seen.contains(*id))
    });
    // Per-key order is per partition; one key lives on one partition, and records
    // come back in partition order.
    let delivered: Vec<Tracked> = records.iter().filter_map(tracked).collect();
    check(acked, &delivered)
}

/// `switchyard_sink_events_total` of `sink` and `outcome` from `/metrics`.
fn sink_events(base: &str, sink: &str, outcome: &str) -> f64 {
    let text = runtime().block_on(async {
        client()
            .get(format!("{base}/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()
    });
    text.unwrap_or_default()
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_sink_events_total{")
                && l.contains(&format!("sink=\"{sink}\""))
                && l.contains(&format!("outcome=\"{outcome}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn kafka_http_to_kafka_100k_events_arrive_in_per_key_order() {
    let broker = Tansu::shared();
    let topic = unique_name("orders");
    broker.create_topic(&topic, 4);
    let switchyard = Switchyard::start(&http_to_kafka(&broker.brokers(), &topic, ""));

    let started = std::time::Instant::now();
    let acked = send_batches(&switchyard.url(), "", 20, 5_000, 500);
    assert_eq!(acked.len(), 100_000);
    let report = read_back(&broker.brokers(), &topic, &acked, Duration::from_secs(300));
    println!(
        "kafka_http_to_kafka: {report} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
}

#[test]
fn kafka_source_to_webhook_delivers_every_message_in_partition_order() {
    let broker = Tansu::shared();
    let topic = unique_name("clicks");
    let group = unique_name("group");
    broker.create_topic(&topic, 3);
    let records: Vec<_> = (0..3000u64)
        .map(|i| {
            let key = format!("k{:02}", i % 30);
            let seq = i / 30;
            (
                Some(key.clone().into_bytes()),
                format!("{{\"key\":\"{key}\",\"seq\":{seq}}}").into_bytes(),
                vec![("trace-id".to_owned(), format!("t{i}"))],
            )
        })
        .collect();
    produce(&broker.brokers(), &topic, &records, Duration::from_secs(60));
    let receiver = WebhookReceiver::start(Behaviour::FailFraction {
        fraction: 0.05,
        seed: 3,
    });
    let switchyard = Switchyard::start(&kafka_to_webhook(
        &broker.brokers(),
        &topic,
        &group,
        &receiver.url(),
    ));
    assert!(
        wait_until(Duration::from_secs(120), || {
            let ids: HashSet<String> = receiver
                .accepted()
                .iter()
                .filter_map(|r| r.header("webhook-id").map(str::to_owned))
                .collect();
            ids.len() >= 3000
        }),
        "not every message reached the webhook: {} requests\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 40)
    );
    let delivered = deliveries(&receiver);
    // Every message id is topic/partition/offset: 3000 distinct.
    let ids: HashSet<&str> = delivered.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids.len(), 3000);
    assert!(ids.iter().all(|id| id.starts_with(&format!("{topic}/"))));
    let acked: Vec<Tracked> = delivered
        .iter()
        .map(|t| Tracked::new(t.id.clone(), t.key.clone(), t.seq))
        .collect();
    let report = check(&acked, &delivered);
    println!("kafka_source_to_webhook: {report}");
    assert_eq!(report.reordered, 0, "{report}");
    // Kafka headers became event headers; the webhook sink does not send those, but the
    // payload and the key did arrive intact.
    let one = receiver
        .accepted()
        .into_iter()
        .find(|r| r.body.starts_with(b"{\"key\":\"k07\",\"seq\":3}"))
        .expect("k07 seq 3 arrived");
    assert_eq!(one.header("content-type"), Some("application/json"));
}

#[test]
fn kafka_broker_paused_past_the_delivery_timeout_loses_nothing_and_acks_nothing_early() {
    let broker = Tansu::start();
    let topic = unique_name("paused");
    broker.create_topic(&topic, 2);
    let mut switchyard = Switchyard::start(&http_to_kafka(
        &broker.brokers(),
        &topic,
        "timeout = \"2s\"\nretry = { initial = \"50ms\", max = \"500ms\", max_attempts = 1000 }",
    ));
    let base = switchyard.url();
    let before = send_batches(&base, "a", 4, 500, 100);
    let report = read_back(&broker.brokers(), &topic, &before, Duration::from_secs(60));
    assert_eq!(report.lost, 0, "before the pause: {report}");

    broker.pause();
    // Accepted while the broker is frozen: durable in switchyard, not in Kafka.
    let during = send_batches(&base, "b", 4, 500, 100);
    // The delivery timeout passes while paused: attempts fail and are retried.
    assert!(
        wait_until(Duration::from_secs(60), || sink_events(
            &base, "out", "retried"
        ) > 0.0),
        "no delivery attempt timed out while the broker was paused\n{}",
        tail(&switchyard.stderr(), 30)
    );
    let delivered = sink_events(&base, "out", "delivered");
    assert!(
        delivered <= before.len() as f64,
        "{delivered} acknowledged deliveries, but only {} events reached the broker before it froze",
        before.len()
    );
    // Crash switchyard while nothing accepted during the pause can have been
    // acknowledged, let the broker go on, and start switchyard again on the same data:
    // if anything had been acked early, it would be missing now.
    switchyard.kill9();
    broker.resume();
    switchyard.restart();
    let mut all = before.clone();
    all.extend(during.iter().cloned());
    let report = read_back(&broker.brokers(), &topic, &all, Duration::from_secs(120));
    println!("kafka_broker_paused: {report} (acknowledged before the crash: {delivered})");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn kafka_broker_paused_mid_stream_keeps_per_key_order_while_producers_go_on() {
    let broker = Tansu::start();
    let topic = unique_name("frozen");
    broker.create_topic(&topic, 4);
    let switchyard = Switchyard::start(&http_to_kafka(
        &broker.brokers(),
        &topic,
        "timeout = \"1s\"\nretry = { initial = \"50ms\", max = \"200ms\", max_attempts = 100000 }",
    ));
    let base = switchyard.url();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let producers = {
        let (base, stop, count) = (base.clone(), stop.clone(), accepted.clone());
        std::thread::spawn(move || {
            // Until told to stop (the cap is far beyond what the steps take).
            send_until(
                &base,
                8,
                20,
                Duration::from_millis(20),
                1_000_000,
                stop,
                count,
            )
        })
    };
    let delivered = || sink_events(&base, "out", "delivered");
    assert!(
        wait_until(Duration::from_secs(60), || delivered() >= 2_000.0),
        "deliveries did not start\n{}",
        tail(&switchyard.stderr(), 30)
    );
    broker.pause();
    // Frozen for several delivery timeouts while HTTP goes on accepting: attempts end
    // unconfirmed and wait again for the same messages, and after 3 timeouts the
    // producer is replaced (its messages purged and sent again by the new one).
    assert!(
        wait_until(Duration::from_secs(60), || switchyard
            .stderr()
            .contains("replaced the kafka producer")),
        "the producer was not replaced while the broker was frozen\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(!producers.is_finished(), "the producers stopped too early");
    let at_resume = delivered();
    broker.resume();
    assert!(
        wait_until(Duration::from_secs(60), || delivered()
            >= at_resume + 2_000.0),
        "deliveries did not resume\n{}",
        tail(&switchyard.stderr(), 30)
    );
    stop.store(true, Ordering::SeqCst);
    let acked = producers.join().expect("the producers");
    assert!(
        wait_until(Duration::from_secs(120), || delivered()
            >= acked.len() as f64),
        "not every accepted event was delivered\n{}",
        tail(&switchyard.stderr(), 30)
    );
    let report = read_back(&broker.brokers(), &topic, &acked, Duration::from_secs(120));
    println!("kafka_broker_paused_mid_stream: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(
        report.reordered, 0,
        "{report} {:?}",
        report.reordered_examples
    );
    assert_eq!(report.unacked, 0, "{report}");
    assert_eq!(switchyard.runs(), 1, "switchyard was not restarted");
}

#[test]
fn kafka_broker_killed_and_restarted_switchyard_keeps_delivering_without_a_restart() {
    let broker = Tansu::start();
    let topic = unique_name("restarted");
    broker.create_topic(&topic, 2);
    let mut switchyard = Switchyard::start(&http_to_kafka(
        &broker.brokers(),
        &topic,
        "timeout = \"2s\"\nretry = { initial = \"50ms\", max = \"500ms\", max_attempts = 100000 }",
    ));
    let base = switchyard.url();
    let before = send_batches(&base, "a", 4, 250, 50);
    let report = read_back(&broker.brokers(), &topic, &before, Duration::from_secs(60));
    assert_eq!(report.lost, 0, "before the broker died: {report}");

    broker.kill();
    // Accepted while there is no broker at all.
    let down = send_batches(&base, "b", 4, 250, 50);
    assert!(
        wait_until(Duration::from_secs(60), || sink_events(
            &base, "out", "retried"
        ) > 0.0),
        "no failed attempt while the broker was down\n{}",
        tail(&switchyard.stderr(), 30)
    );
    // The wheel's tansu keeps data in memory: it comes back empty; recreate the topic.
    broker.restart();
    broker.create_topic(&topic, 2);
    let after = send_batches(&base, "c", 4, 250, 50);
    let mut wanted = down.clone();
    wanted.extend(after.iter().cloned());
    let report = read_back(&broker.brokers(), &topic, &wanted, Duration::from_secs(120));
    println!("kafka_broker_restarted: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 60)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert!(switchyard.is_running(), "switchyard kept running");
    assert_eq!(switchyard.runs(), 1, "switchyard was not restarted");
}

#[test]
fn kafka_switchyard_killed_while_consuming_loses_nothing() {
    let broker = Tansu::shared();
    let topic = unique_name("consumed");
    let group = unique_name("group");
    broker.create_topic(&topic, 3);
    let total = 20_000u64;
    let records: Vec<_> = (0..total)
        .map(|i| {
            let key = format!("k{:02}", i % 40);
            (
                Some(key.clone().into_bytes()),
                format!("{{\"key\":\"{key}\",\"seq\":{}}}", i / 40).into_bytes(),
                vec![],
            )
        })
        .collect();
    produce(&broker.brokers(), &topic, &records, Duration::from_secs(60));
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&kafka_to_webhook(
        &broker.brokers(),
        &topic,
        &group,
        &receiver.url(),
    ));
    assert!(
        wait_until(Duration::from_secs(120), || receiver.count() >= 6_000),
        "deliveries did not start: {}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    switchyard.kill9();
    let at_kill = receiver.count();
    switchyard.restart();
    // Every message: the ids the broker assigned (topic/partition/offset).
    let delivered_ids = || -> HashSet<String> {
        receiver
            .accepted()
            .iter()
            .filter_map(|r| r.header("webhook-id").map(str::to_owned))
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(180), || delivered_ids().len()
            >= total as usize),
        "only {} of {total} distinct messages delivered after the restart\n{}",
        delivered_ids().len(),
        tail(&switchyard.stderr(), 40)
    );
    let delivered = deliveries(&receiver);
    let acked: Vec<Tracked> = {
        let mut seen = HashSet::new();
        delivered
            .iter()
            .filter(|t| seen.insert(t.id.clone()))
            .cloned()
            .collect()
    };
    let report = check(&acked, &delivered);
    println!("kafka_switchyard_kill9: {report} ({at_kill} delivered before the kill)");
    assert_eq!(acked.len(), total as usize);
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn kafka_topic_that_does_not_exist_is_reported_and_delivered_once_created() {
    let broker = Tansu::shared();
    let topic = unique_name("later");
    let switchyard = Switchyard::start(&http_to_kafka(
        &broker.brokers(),
        &topic,
        "timeout = \"2s\"",
    ));
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains(&format!("kafka topic `{topic}` does not exist"))),
        "no clear error about the missing topic:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(switchyard.stderr().contains("create_topics = true"));
    let acked = send_batches(&switchyard.url(), "", 2, 20, 10);
    assert!(
        wait_until(Duration::from_secs(30), || sink_events(
            &switchyard.url(),
            "out",
            "retried"
        ) > 0.0),
        "deliveries to the missing topic are retried"
    );
    assert!(
        !broker.topic_exists(&topic),
        "nothing created the topic implicitly"
    );
    broker.create_topic(&topic, 1);
    let report = read_back(&broker.brokers(), &topic, &acked, Duration::from_secs(60));
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 30)
    );
}

#[test]
fn kafka_broker_down_at_start_switchyard_waits_reports_and_then_delivers() {
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = unique_name("late");
    let group = unique_name("group");
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    // Both directions point at a broker that is not there yet.
    let config = format!(
        "{}\n[sources.clicks]\ntype = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"{topic}\"]\n\
         group = \"{group}\"\noptions = {{ \"session.timeout.ms\" = \"6000\" }}\n\
         [pipelines.deliver]\nfrom = [\"clicks\"]\nto = [\"hook\"]\n\
         [sinks.hook]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"{WEBHOOK_SECRET}\"\n",
        http_to_kafka(&brokers, &topic, "timeout = \"2s\""),
        receiver.url()
    );
    let mut switchyard = Switchyard::start(&config);
    let acked = send_batches(&switchyard.url(), "", 2, 50, 25);
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("kafka client")),
        "no report about the unreachable broker:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(switchyard.is_running(), "switchyard did not crash");

    let broker = Tansu::start_on(port);
    broker.create_topic(&topic, 2);
    // The sink writes the events to the topic; the source reads them back and the
    // webhook gets them: both directions recovered without a restart.
    let report = read_back(&broker.brokers(), &topic, &acked, Duration::from_secs(60));
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(90)),
        "the kafka source did not deliver after the broker came up:\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(switchyard.runs(), 1);
}

#[test]
fn kafka_create_topics_makes_a_templated_topic_before_the_first_event() {
    let broker = Tansu::shared();
    let prefix = unique_name("made");
    let topic = format!("{prefix}.api");
    let switchyard = Switchyard::start(&http_to_kafka(
        &broker.brokers(),
        &format!("{prefix}.{{source}}"),
        "create_topics = true\npartitions = 3",
    ));
    let acked = send_batches(&switchyard.url(), "", 3, 20, 10);
    let report = read_back(&broker.brokers(), &topic, &acked, Duration::from_secs(60));
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        switchyard
            .stderr()
            .contains("created kafka topic (create_topics = true)")
    );
    assert_eq!(
        sink_events(&switchyard.url(), "out", "retried"),
        0.0,
        "the topic existed before the first attempt"
    );
}

#[test]
fn kafka_source_commits_its_offsets_on_sigterm_so_a_restart_redelivers_nothing() {
    let broker = Tansu::shared();
    let topic = unique_name("graceful");
    let group = unique_name("group");
    broker.create_topic(&topic, 2);
    let record = |i: u64| {
        let key = format!("k{}", i % 5);
        (
            Some(key.clone().into_bytes()),
            format!("{{\"key\":\"{key}\",\"seq\":{}}}", i / 5).into_bytes(),
            vec![],
        )
    };
    let first: Vec<_> = (0..500).map(record).collect();
    produce(&broker.brokers(), &topic, &first, Duration::from_secs(30));
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&kafka_to_webhook(
        &broker.brokers(),
        &topic,
        &group,
        &receiver.url(),
    ));
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() >= 500),
        "{} of 500 delivered\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    let status = switchyard.terminate();
    assert!(status.success(), "{status}");
    let second: Vec<_> = (500..600).map(record).collect();
    produce(&broker.brokers(), &topic, &second, Duration::from_secs(30));
    switchyard.restart();
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() >= 600),
        "{} of 600 delivered\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    let delivered = deliveries(&receiver);
    let report = check(&delivered, &delivered);
    println!("kafka_source_sigterm: {report}");
    assert_eq!(
        report.duplicated, 0,
        "a graceful stop commits everything delivered: {report}"
    );
    assert_eq!(report.delivered, 600);
}

#[test]
fn kafka_source_keeps_going_past_a_header_name_that_is_not_utf8() {
    let broker = Tansu::shared();
    let input = unique_name("raw-headers");
    let output = unique_name("raw-headers-out");
    let group = unique_name("group");
    broker.create_topic(&input, 1);
    broker.create_topic(&output, 1);
    // The second message's header name is not UTF-8 (any Kafka client may send that).
    let record = |n: u8, name: &[u8]| {
        (
            format!("{{\"n\":{n}}}").into_bytes(),
            vec![(name.to_vec(), format!("v{n}").into_bytes())],
        )
    };
    let records = [
        record(1, b"trace"),
        record(2, b"tr\xffce"),
        record(3, b"trace"),
    ];
    produce_with_byte_headers(&broker.brokers(), &input, &records, Duration::from_secs(30));
    let switchyard = Switchyard::start(&format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.raw]
type = "kafka"
brokers = "{brokers}"
topics = ["{input}"]
group = "{group}"

[pipelines.copy]
from = ["raw"]
to = ["out"]

[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "{output}"
"#,
        brokers = broker.brokers()
    ));
    let records = read_topic_with(
        &broker.brokers(),
        &[],
        &output,
        Duration::from_secs(60),
        |records| records.len() >= 3,
    );
    assert_eq!(
        records.len(),
        3,
        "every message, the one after the odd header too\n{}",
        tail(&switchyard.stderr(), 30)
    );
    let of = |n: u8| {
        records
            .iter()
            .find(|r| r.payload == format!("{{\"n\":{n}}}").into_bytes())
            .unwrap_or_else(|| panic!("message {n} was not copied: {records:?}"))
    };
    assert_eq!(of(1).header("trace"), Some("v1"));
    // The name is kept, with a replacement character for the byte that is not UTF-8.
    assert_eq!(
        of(2).header("tr\u{fffd}ce"),
        Some("v2"),
        "{:?}",
        of(2).headers
    );
    assert_eq!(of(3).header("trace"), Some("v3"));
}

/// tansu (no TLS of its own) behind a TLS-terminating proxy; the broker advertises the
/// proxy's address, so clients that bootstrap through the proxy reconnect through it and
/// every byte they exchange with the broker is TLS.
fn broker_behind_tls() -> (Tansu, TlsProxy) {
    let proxy_port = free_port();
    let broker = Tansu::start_advertising(proxy_port);
    let proxy = TlsProxy::start(proxy_port, &broker.brokers());
    (broker, proxy)
}

/// The sink's `options` for TLS with `ca` as the trusted CA.
fn tls_options(ca: &std::path::Path) -> String {
    format!(
        "options = {{ \"security.protocol\" = \"ssl\", \"ssl.ca.location\" = \"{}\" }}",
        ca.display()
    )
}

#[test]
fn kafka_tls_sink_delivers_through_a_tls_listener_it_verifies_with_ssl_ca_location() {
    let (broker, proxy) = broker_behind_tls();
    let topic = unique_name("tls");
    broker.create_topic(&topic, 2);
    let switchyard = Switchyard::start(&http_to_kafka(
        &proxy.brokers(),
        &topic,
        &tls_options(&proxy.ca_file()),
    ));
    let acked = send_batches(&switchyard.url(), "", 4, 500, 100);
    assert_eq!(acked.len(), 2000);
    // Read back by a plain rdkafka consumer that also goes through the TLS proxy.
    let report = read_back_with(
        &proxy.brokers(),
        &proxy.client_options(),
        &topic,
        &acked,
        Duration::from_secs(120),
    );
    println!(
        "kafka_tls_sink: {report}; {} TLS connections through the proxy",
        proxy.connections()
    );
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}\n{}",
        tail(&switchyard.stderr(), 40),
        tail(&proxy.log(), 20)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
    assert_eq!(
        sink_events(&switchyard.url(), "out", "delivered"),
        2000.0,
        "every event acknowledged on its delivery report"
    );
    // The sink and the reader connected through TLS: bootstrap and the advertised broker
    // of each (at least 2 connections each).
    assert!(
        proxy.connections() >= 4,
        "only {} TLS connections:\n{}",
        proxy.connections(),
        proxy.log()
    );
    assert!(
        !switchyard.stderr().contains("SSL handshake failed"),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
}

#[test]
fn kafka_tls_source_consumes_through_a_tls_listener_and_delivers_every_message() {
    let (broker, proxy) = broker_behind_tls();
    let topic = unique_name("tls-in");
    let group = unique_name("group");
    broker.create_topic(&topic, 2);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    // HTTP → Kafka sink → the topic → Kafka source → webhook: both clients of the broker
    // are switchyard's, and both speak TLS to it (tansu advertises only the proxy).
    let tls = tls_options(&proxy.ca_file());
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 2

[sources.clicks]
type = "kafka"
brokers = "{brokers}"
topics = ["{topic}"]
group = "{group}"
options = {{ "security.protocol" = "ssl", "ssl.ca.location" = "{ca}", "session.timeout.ms" = "6000", "heartbeat.interval.ms" = "500" }}

[pipelines.to_kafka]
from = ["api"]
to = ["out"]

[pipelines.from_kafka]
from = ["clicks"]
to = ["hook"]

[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
{tls}

[sinks.hook]
type = "webhook"
url = "{url}"
secret = "{WEBHOOK_SECRET}"
concurrency = 4
"#,
        brokers = proxy.brokers(),
        ca = proxy.ca_file().display(),
        url = receiver.url(),
    );
    let switchyard = Switchyard::start(&config);
    let acked = send_batches(&switchyard.url(), "", 4, 250, 50);
    assert_eq!(acked.len(), 1000);
    assert!(
        wait_until(Duration::from_secs(120), || {
            let ids: HashSet<String> = deliveries(&receiver).into_iter().map(|t| t.id).collect();
            acked.iter().all(|t| ids.contains(&t.id))
        }),
        "not every event came back through the TLS consumer: {} requests\n{}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 40),
        tail(&proxy.log(), 20)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!(
        "kafka_tls_source: {report}; {} TLS connections through the proxy",
        proxy.connections()
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert!(
        proxy.connections() >= 4,
        "only {} TLS connections:\n{}",
        proxy.connections(),
        proxy.log()
    );
}

#[test]
fn kafka_tls_sink_with_the_wrong_ca_reports_it_acks_nothing_and_delivers_once_fixed() {
    let (broker, proxy) = broker_behind_tls();
    let topic = unique_name("tlsca");
    broker.create_topic(&topic, 2);
    let config = |ca: &std::path::Path| {
        http_to_kafka(
            &proxy.brokers(),
            &topic,
            &format!(
                "timeout = \"2s\"\nretry = {{ initial = \"50ms\", max = \"500ms\", max_attempts = 100000 }}\n{}",
                tls_options(ca)
            ),
        )
    };
    let mut wrong = Switchyard::start(&config(&proxy.wrong_ca_file()));
    // Accepted: durable in switchyard; nothing can reach the broker.
    let acked = send_batches(&wrong.url(), "", 2, 50, 25);
    assert!(
        wait_until(Duration::from_secs(60), || wrong
            .stderr()
            .contains("certificate verify failed")),
        "no clear TLS error in the log:\n{}",
        tail(&wrong.stderr(), 40)
    );
    let log = wrong.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("kafka client:") && l.contains("certificate verify failed"))
        .unwrap_or_else(|| panic!("no client error about the CA:\n{}", tail(&log, 30)));
    println!("kafka_tls_wrong_ca: {line}");
    assert!(
        line.contains("sink") && line.contains("out"),
        "names the sink: {line}"
    );
    assert!(
        line.contains("options.\"ssl.ca.location\""),
        "says what to set: {line}"
    );
    assert!(
        wait_until(Duration::from_secs(60), || sink_events(
            &wrong.url(),
            "out",
            "retried"
        ) > 0.0),
        "deliveries are retried while the CA is wrong\n{}",
        tail(&wrong.stderr(), 30)
    );
    assert_eq!(sink_events(&wrong.url(), "out", "delivered"), 0.0);
    assert_eq!(
        sink_events(&wrong.url(), "out", "dead_lettered"),
        0.0,
        "a TLS problem is the cluster's, not the events': nothing is dead-lettered"
    );
    assert!(wrong.is_running(), "switchyard did not crash");
    // (A SIGTERM would wait out `shutdown_timeout` for deliveries that cannot succeed.)
    wrong.kill9();

    // The fix: the right CA, on the same data directory. Every event accepted while the
    // CA was wrong arrives, because none was acknowledged.
    let fixed = Switchyard::start_with(
        &config(&proxy.ca_file()),
        Options {
            data_dir: Some(wrong.data_dir().to_path_buf()),
            ..Options::default()
        },
    );
    let report = read_back_with(
        &proxy.brokers(),
        &proxy.client_options(),
        &topic,
        &acked,
        Duration::from_secs(60),
    );
    println!("kafka_tls_wrong_ca then fixed: {report}");
    assert_eq!(report.lost, 0, "{report}\n{}", tail(&fixed.stderr(), 30));
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn kafka_durable_broker_killed_mid_stream_keeps_every_acked_event() {
    let test = "kafka_durable_broker_killed_mid_stream_keeps_every_acked_event";
    let Some(bin) = durable_tansu_or_skip(test) else {
        return;
    };
    let started = std::time::Instant::now();
    let step = |what: &str| println!("{test}: {:>6.1}s {what}", started.elapsed().as_secs_f64());
    let broker = Tansu::start_durable(&bin);
    let topic = unique_name("durable");
    broker.create_topic(&topic, 3);
    let switchyard = Switchyard::start(&http_to_kafka(
        &broker.brokers(),
        &topic,
        // The default, idempotent sink. tansu 0.6.0's libSQL storage panics on a
        // producer epoch bump (lite.rs:503; an InitProducerId bump is todo!()), which
        // librdkafka makes by itself after a timed-out message (KIP-360); the sink never
        // lets a message time out, so across this outage the producer keeps its epoch,
        // its unconfirmed requests stay queued and go out, in order, when the broker is
        // back.
        "retry = { initial = \"50ms\", max = \"500ms\", max_attempts = 100000 }",
    ));
    let base = switchyard.url();
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let producers = {
        let (base, stop, count) = (base.clone(), stop.clone(), accepted.clone());
        // At most 8 × 10 events per 50 ms (1.6k/s), until told to stop, and 12k in all:
        // tansu's libSQL storage serves fetches slowly, so the read-back below is kept
        // to a bounded number of events however long the steps take on a busy machine.
        std::thread::spawn(move || {
            send_until(&base, 8, 10, Duration::from_millis(50), 1_500, stop, count)
        })
    };
    // Mid-stream: some events delivered (acknowledged by the broker, so past the
    // pipeline's checkpoint: only the broker has them now), producers still sending.
    assert!(
        wait_until(Duration::from_secs(120), || sink_events(
            &base,
            "out",
            "delivered"
        ) >= 1_000.0),
        "deliveries did not start\n{}",
        tail(&switchyard.stderr(), 30)
    );
    let down_reports = || switchyard.stderr().matches("brokers are down").count();
    let reports_before = down_reports();
    broker.kill();
    step("broker SIGKILLed");
    let delivered_at_kill = sink_events(&base, "out", "delivered");
    assert!(
        !producers.is_finished(),
        "the producers stopped before the broker was killed"
    );
    assert!(
        wait_until(Duration::from_secs(30), || down_reports() > reports_before),
        "switchyard did not report the broker down\n{}",
        tail(&switchyard.stderr(), 30)
    );
    // HTTP goes on accepting (durable in switchyard) while there is no broker.
    let accepted_at_kill = accepted.load(Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(30), || accepted.load(Ordering::SeqCst)
            >= accepted_at_kill + 1_000),
        "producers stalled while the broker was down"
    );
    let accepted_while_down = accepted.load(Ordering::SeqCst) - accepted_at_kill;
    // The same data: no topic is created again.
    broker.restart();
    step("broker restarted");
    // Deliveries go on after the restart, producers still sending; then they stop.
    assert!(
        wait_until(Duration::from_secs(120), || sink_events(
            &base,
            "out",
            "delivered"
        ) >= delivered_at_kill + 500.0),
        "deliveries did not resume after the broker restart\n{}\n{}",
        tail(&switchyard.stderr(), 40),
        tail(&broker.log(), 20)
    );
    stop.store(true, Ordering::SeqCst);
    let acked = producers.join().expect("the producers");
    step(&format!("{} events accepted", acked.len()));
    let mut last = (std::time::Instant::now(), 0.0);
    assert!(
        wait_until(Duration::from_secs(240), || {
            let n = sink_events(&base, "out", "delivered");
            if last.0.elapsed() >= Duration::from_secs(5) {
                step(&format!("{n} delivered"));
                last = (std::time::Instant::now(), n);
            }
            n >= acked.len() as f64
        }),
        "switchyard did not deliver every accepted event\n{}\n{}",
        tail(&switchyard.stderr(), 40),
        tail(&broker.log(), 20)
    );
    step("every event delivered (by the sink's count); reading them back");
    // tansu's libSQL storage serves fetches slowly (~200 records/s here): at most 12k
    // events to read.
    let report = read_back(&broker.brokers(), &topic, &acked, Duration::from_secs(300));
    step("read back");
    println!(
        "kafka_durable_broker_kill9: {report} ({delivered_at_kill} acknowledged by the broker \
         before its SIGKILL, {accepted_while_down} accepted while it was down, {} broker runs)",
        broker.runs()
    );
    assert_eq!(
        report.lost,
        0,
        "{report} lost e.g. {:?}\n{}\n{}",
        report.lost_examples,
        tail(&switchyard.stderr(), 40),
        tail(&broker.log(), 20)
    );
    assert_eq!(
        report.reordered, 0,
        "{report} {:?}",
        report.reordered_examples
    );
    assert_eq!(report.unacked, 0, "{report}");
    assert_eq!(sink_events(&base, "out", "dead_lettered"), 0.0);
    assert_eq!(broker.runs(), 2);
}
