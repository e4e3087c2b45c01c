//! RabbitMQ end to end, against the broker on 127.0.0.1:5672 (guest/guest) and, for
//! the tests that stop and restart the broker, a private node of the test's own
//! ([`RabbitNode`]: free ports, its own database): the real binary publishes to an
//! exchange made for the test, and what arrives in the queue bound to it is read back
//! with lapin. Each test declares its own exchange and queue (a random name) and deletes
//! them. The TLS tests put a TLS-terminating proxy (`socat`, with a CA made for the test)
//! in front of the machine's broker and point the binary at it with `amqps://`.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use switchyard_test_support::kafka::TlsProxy;
use switchyard_test_support::{
    Behaviour, RabbitNode, Report, Switchyard, Tracked, WebhookReceiver, check, free_port, tail,
};
use switchyard_tests::{
    WEBHOOK_SECRET, deliveries, runtime, send_batches, send_until, unique, wait_until,
};

const URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// An exchange and a queue bound to it with `#` on the broker at `url`, deleted on drop.
struct Topology {
    url: String,
    exchange: String,
    queue: String,
}

async fn channel(url: &str) -> (Connection, Channel) {
    let connection = Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("the test broker at {url}: {e}"));
    let channel = connection.create_channel().await.expect("a channel");
    (connection, channel)
}

impl Topology {
    /// Declares them on the machine's broker; `queue_arguments` e.g. a length limit.
    fn declare(test: &str, queue_arguments: FieldTable) -> Self {
        Self::declare_on(URL, test, queue_arguments)
    }

    /// Declares them (durable) on the broker at `url`.
    fn declare_on(url: &str, test: &str, queue_arguments: FieldTable) -> Self {
        let exchange = unique(&format!("{test}-x"));
        let queue = unique(&format!("{test}-q"));
        runtime().block_on(async {
            let (_c, ch) = channel(url).await;
            ch.exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declaring the exchange");
            ch.queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                queue_arguments,
            )
            .await
            .expect("declaring the queue");
            ch.queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("binding the queue");
        });
        Self {
            url: url.to_owned(),
            exchange,
            queue,
        }
    }

    /// Reads the queue (acking) until every id of `acked` arrived or `within` passed.
    fn read_back(&self, acked: &[Tracked], within: Duration) -> Report {
        let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
        let delivered = runtime().block_on(async {
            let (_c, ch) = channel(&self.url).await;
            let mut consumer = ch
                .basic_consume(
                    self.queue.as_str().into(),
                    "read-back".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consuming");
            let mut delivered = Vec::new();
            let mut seen = HashSet::new();
            let deadline = tokio::time::Instant::now() + within;
            while !wanted.iter().all(|id| seen.contains(*id)) {
                let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await
                else {
                    break;
                };
                let headers = d.properties.headers().clone().unwrap_or_default();
                let id = match headers.inner().get("switchyard-id") {
                    Some(AMQPValue::LongString(s)) => s.to_string(),
                    other => panic!("no switchyard-id header: {other:?}"),
                };
                assert_eq!(
                    d.properties.message_id().as_ref().map(|m| m.to_string()),
                    Some(id.clone())
                );
                assert_eq!(d.properties.delivery_mode(), &Some(2), "persistent");
                let body: serde_json::Value = serde_json::from_slice(&d.data).expect("json");
                seen.insert(id.clone());
                delivered.push(Tracked::new(
                    id,
                    body["key"].as_str().expect("key"),
                    body["seq"].as_u64().expect("seq"),
                ));
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            delivered
        });
        check(acked, &delivered)
    }

    /// The next `n` messages of the queue as they arrived (acked): headers, content
    /// type and body.
    fn read_raw(&self, n: usize) -> Vec<(FieldTable, Option<String>, Vec<u8>)> {
        runtime().block_on(async {
            let (_c, ch) = channel(&self.url).await;
            let mut consumer = ch
                .basic_consume(
                    self.queue.as_str().into(),
                    "read-raw".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consuming");
            let mut out = Vec::new();
            while out.len() < n {
                let d = tokio::time::timeout(Duration::from_secs(60), consumer.next())
                    .await
                    .expect("a message within 60 s")
                    .expect("the consumer")
                    .expect("a delivery");
                out.push((
                    d.properties.headers().clone().unwrap_or_default(),
                    d.properties.content_type().as_ref().map(|c| c.to_string()),
                    d.data.clone(),
                ));
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
            out
        })
    }

    /// Messages ready in the queue now.
    fn ready(&self) -> u32 {
        runtime().block_on(async {
            let (_c, ch) = channel(&self.url).await;
            ch.queue_declare(
                self.queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("the queue")
            .message_count()
        })
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        runtime().block_on(async {
            // A private node may be gone already (a failed test): nothing to delete.
            let Ok(c) = Connection::connect(&self.url, ConnectionProperties::default()).await
            else {
                return;
            };
            let Ok(ch) = c.create_channel().await else {
                return;
            };
            let _ = ch
                .queue_delete(self.queue.as_str().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        });
    }
}

/// An HTTP source `api` (4 partitions) piped into a RabbitMQ sink `out` on the machine's
/// broker.
fn http_to_rabbitmq(exchange: &str, extra: &str) -> String {
    http_to_rabbitmq_at(URL, exchange, extra)
}

/// [`http_to_rabbitmq`] for the broker at `url`.
fn http_to_rabbitmq_at(url: &str, exchange: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.to_rabbit]
from = ["api"]
to = ["out"]

[sinks.out]
type = "rabbitmq"
url = "{url}"
exchange = "{exchange}"
routing_key = "{{source}}.{{kind}}.{{key}}"
{extra}
"#
    )
}

#[test]
fn rabbitmq_http_to_rabbitmq_50k_events_arrive_in_per_key_order() {
    let topology = Topology::declare("sink50k", FieldTable::default());
    let switchyard = Switchyard::start(&http_to_rabbitmq(&topology.exchange, ""));
    let acked = send_batches(&switchyard.url(), "", 20, 2_500, 250);
    assert_eq!(acked.len(), 50_000);
    let report = topology.read_back(&acked, Duration::from_secs(300));
    println!("rabbitmq_http_to_rabbitmq: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
}

fn text(headers: &FieldTable, name: &str) -> Option<String> {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => Some(s.to_string()),
        _ => None,
    }
}

/// `format = "cloudevents"`: binary mode (the default) leaves the payload as it is and
/// writes the attributes as `cloudEvents_*` headers; structured mode writes one
/// `application/cloudevents+json` object.
#[test]
fn rabbitmq_cloudevents_binary_headers_and_structured_body() {
    for mode in ["binary", "structured"] {
        let topology = Topology::declare(&format!("ce-{mode}"), FieldTable::default());
        let extra = format!("format = \"cloudevents\"\ncloudevents_mode = \"{mode}\"");
        let switchyard = Switchyard::start(&http_to_rabbitmq(&topology.exchange, &extra));
        let acked = send_batches(&switchyard.url(), "", 1, 3, 3);
        let messages = topology.read_raw(acked.len());
        for ((headers, content_type, body), sent) in messages.iter().zip(&acked) {
            let id = text(headers, "switchyard-id").expect("switchyard-id");
            assert_eq!(id, sent.id, "{mode}: in order");
            match mode {
                "binary" => {
                    assert_eq!(text(headers, "cloudEvents_id"), Some(id.clone()));
                    assert_eq!(
                        text(headers, "cloudEvents_specversion").as_deref(),
                        Some("1.0")
                    );
                    assert_eq!(
                        text(headers, "cloudEvents_source").as_deref(),
                        Some("/switchyard/api")
                    );
                    assert_eq!(
                        text(headers, "cloudEvents_type").as_deref(),
                        Some("switchyard.message")
                    );
                    assert_eq!(content_type.as_deref(), Some("application/json"));
                    let payload: serde_json::Value =
                        serde_json::from_slice(body).expect("the payload as sent");
                    assert_eq!(payload["seq"].as_u64(), Some(sent.seq), "{payload}");
                }
                _ => {
                    assert_eq!(
                        text(headers, "cloudEvents_id"),
                        None,
                        "no attribute headers"
                    );
                    assert!(
                        content_type
                            .as_deref()
                            .is_some_and(|t| t.starts_with("application/cloudevents+json")),
                        "{content_type:?}"
                    );
                    let event: serde_json::Value =
                        serde_json::from_slice(body).expect("a CloudEvent");
                    assert_eq!(event["id"], id.as_str(), "{event}");
                    assert_eq!(event["specversion"], "1.0", "{event}");
                    assert_eq!(event["data"]["seq"].as_u64(), Some(sent.seq), "{event}");
                }
            }
        }
    }
}

#[test]
fn rabbitmq_full_queue_that_rejects_publishes_is_retried_until_there_is_room() {
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(100));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let topology = Topology::declare("full", arguments);
    let switchyard = Switchyard::start(&http_to_rabbitmq(
        &topology.exchange,
        "retry = { max_attempts = 1000, initial = \"20ms\", max = \"200ms\" }",
    ));
    let acked = send_batches(&switchyard.url(), "", 4, 100, 100);
    assert_eq!(acked.len(), 400);
    // The queue takes 100; the rest is nacked and retried, not dead-lettered.
    let retried = || {
        switchyard_tests::metrics(&switchyard.url())
            .lines()
            .filter(|l| {
                l.starts_with("switchyard_sink_events_total{") && l.contains("outcome=\"retried\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert!(
        wait_until(Duration::from_secs(60), || topology.ready() >= 100
            && retried() > 0.0),
        "the queue did not fill and refuse: {} ready, {} retried",
        topology.ready(),
        retried()
    );
    let report = topology.read_back(&acked, Duration::from_secs(120));
    println!("rabbitmq_full_queue: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    let metrics = switchyard_tests::metrics(&switchyard.url());
    assert!(
        !metrics
            .lines()
            .any(|l| l.starts_with("switchyard_sink_events_total")
                && l.contains("outcome=\"dead_lettered\"")
                && !l.ends_with(" 0")),
        "nothing is dead-lettered for a full queue:\n{metrics}"
    );
}

#[test]
fn rabbitmq_unroutable_event_is_dead_lettered_with_the_brokers_reason() {
    let topology = Topology::declare("unroutable", FieldTable::default());
    // No queue is bound for this exchange.
    let lonely = unique("lonely-x");
    runtime().block_on(async {
        let (_c, ch) = channel(URL).await;
        ch.exchange_declare(
            lonely.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("declaring");
    });
    let switchyard = Switchyard::start(&http_to_rabbitmq(&lonely, ""));
    let acked = send_batches(&switchyard.url(), "", 1, 3, 3);
    assert_eq!(acked.len(), 3);
    assert!(
        switchyard_tests::wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("unroutable")),
        "the returned message was not reported:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        switchyard.stderr().contains("bind a queue"),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    runtime().block_on(async {
        let (_c, ch) = channel(URL).await;
        let _ = ch
            .exchange_delete(lonely.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    });
    drop(topology);
}

/// A RabbitMQ source `jobs` on `queue` of the machine's broker piped into a signed
/// webhook.
fn rabbitmq_to_webhook(queue: &str, url: &str) -> String {
    rabbitmq_at_to_webhook(URL, queue, url)
}

/// [`rabbitmq_to_webhook`] for the broker at `broker`.
fn rabbitmq_at_to_webhook(broker: &str, queue: &str, url: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.jobs]
type = "rabbitmq"
url = "{broker}"
queue = "{queue}"
prefetch = 500

[pipelines.deliver]
from = ["jobs"]
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

/// What the webhook got, one record per request: the id from the key and sequence in the
/// payload (a redelivered message is the same record again).
fn received(receiver: &WebhookReceiver) -> Vec<Tracked> {
    deliveries(receiver)
        .into_iter()
        .map(|t| Tracked::new(format!("{}-{}", t.key, t.seq), t.key, t.seq))
        .collect()
}

/// Publishes `total` persistent messages to `queue` (through the default exchange) on
/// the broker at `url`, confirmed: message `m<i>` has key `k<i % keys>` (header
/// `switchyard-key`), a `trace-id` header and the body `{"key":…,"seq":i/keys}`.
/// [`publish_jobs`] to the machine's broker.
fn publish(queue: &str, total: u64, keys: u64) {
    publish_jobs(URL, queue, total, keys)
}

fn publish_jobs(url: &str, queue: &str, total: u64, keys: u64) {
    runtime().block_on(async {
        let (_c, ch) = channel(url).await;
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirms");
        let mut confirms = Vec::new();
        for i in 0..total {
            let key = format!("k{:02}", i % keys);
            let mut headers = FieldTable::default();
            headers.insert(
                "switchyard-key".into(),
                AMQPValue::LongString(key.as_str().into()),
            );
            headers.insert(
                "trace-id".into(),
                AMQPValue::LongString(format!("t{i}").into()),
            );
            let body = format!("{{\"key\":\"{key}\",\"seq\":{}}}", i / keys);
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    BasicProperties::default()
                        .with_delivery_mode(2)
                        .with_message_id(format!("m{i}").into())
                        .with_content_type("application/json".into())
                        .with_headers(headers),
                )
                .await
                .expect("publishing"),
            );
        }
        for c in confirms {
            assert!(c.await.expect("confirm").is_ack());
        }
    });
}

#[test]
fn rabbitmq_source_killed_mid_stream_delivers_every_message_and_acks_only_delivered_ones() {
    let topology = Topology::declare("source", FieldTable::default());
    let total = 20_000u64;
    publish_jobs(URL, &topology.queue, total, 40);
    let receiver = WebhookReceiver::start(Behaviour::FailFraction {
        fraction: 0.05,
        seed: 7,
    });
    let mut switchyard = Switchyard::start(&rabbitmq_to_webhook(&topology.queue, &receiver.url()));
    assert!(
        wait_until(Duration::from_secs(120), || receiver.count() >= 5_000),
        "deliveries did not start: {}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    switchyard.kill9();
    let at_kill = receiver.count();
    switchyard.restart();
    let distinct = || {
        received(&receiver)
            .into_iter()
            .map(|t| t.id)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(180), || distinct() >= total as usize),
        "only {} of {total} messages delivered after the restart\n{}",
        distinct(),
        tail(&switchyard.stderr(), 40)
    );
    let delivered = received(&receiver);
    let acked: Vec<Tracked> = {
        let mut seen = HashSet::new();
        delivered
            .iter()
            .filter(|t| seen.insert(t.id.clone()))
            .cloned()
            .collect()
    };
    let report = check(&acked, &delivered);
    println!("rabbitmq_source_kill9: {report} ({at_kill} delivered before the kill)");
    assert_eq!(acked.len(), total as usize);
    assert_eq!(report.reordered, 0, "{report}");
    // Everything delivered is acknowledged: the queue empties (nothing left unacked
    // once switchyard stops).
    switchyard.terminate();
    assert!(
        wait_until(Duration::from_secs(30), || topology.ready() == 0),
        "{} messages left in the queue",
        topology.ready()
    );
    // AMQP headers became event headers, the message id the event id.
    let one = receiver
        .accepted()
        .into_iter()
        .find(|r| r.body.starts_with(b"{\"key\":\"k07\",\"seq\":3}"))
        .expect("k07 seq 3 arrived");
    assert_eq!(one.header("webhook-id"), Some("m127"));
}

#[test]
fn rabbitmq_sink_switchyard_killed_mid_stream_loses_nothing() {
    let topology = Topology::declare("sinkkill", FieldTable::default());
    let mut switchyard = Switchyard::start(&http_to_rabbitmq(&topology.exchange, ""));
    let base = switchyard.url();
    let producer = std::thread::spawn(move || send_batches(&base, "", 10, 2_000, 50));
    assert!(
        wait_until(Duration::from_secs(60), || topology.ready() >= 3_000),
        "deliveries did not start\n{}",
        tail(&switchyard.stderr(), 30)
    );
    switchyard.kill9();
    switchyard.restart();
    let acked = producer.join().expect("producer");
    assert_eq!(acked.len(), 20_000);
    let report = topology.read_back(&acked, Duration::from_secs(240));
    println!("rabbitmq_sink_kill9: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

/// The broker is shut down while switchyard publishes to it, and started again on the
/// same database. Switchyard keeps accepting events meanwhile (its queue is durable),
/// says that RabbitMQ is unreachable, reconnects and publishes again what was not
/// confirmed: nothing acknowledged to a producer is lost and each key keeps its order
/// (the queue has no length limit, so the broker never nacks); what the broker had
/// stored without confirming it comes twice and is counted as duplicates.
#[test]
fn rabbitmq_node_restarted_mid_stream_the_sink_loses_nothing() {
    let mut node = RabbitNode::start();
    let topology = Topology::declare_on(&node.url(), "restart", FieldTable::default());
    // The sink's default retry: without limit, backing off to 10 s.
    let switchyard = Switchyard::start(&http_to_rabbitmq_at(&node.url(), &topology.exchange, ""));
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let producer = {
        let (base, stop, count) = (switchyard.url(), stop.clone(), count.clone());
        // A steady load (under 800 events/s) rather than a race: what piles up while
        // the broker is down is published within the read-back's minute.
        std::thread::spawn(move || {
            send_until(&base, 8, 10, Duration::from_millis(100), 5_000, stop, count)
        })
    };
    let accepted = || count.load(Ordering::SeqCst);
    assert!(
        wait_until(Duration::from_secs(60), || accepted() >= 2_000
            && topology.ready() >= 1_000),
        "publishing did not start: {} accepted, {} in the queue\n{}",
        accepted(),
        topology.ready(),
        tail(&switchyard.stderr(), 30)
    );
    let stopped_in = node.stop();
    let at_stop = accepted();
    assert!(
        wait_until(Duration::from_secs(30), || accepted() >= at_stop + 1_000),
        "switchyard stopped accepting while the broker was down: {} accepted",
        accepted()
    );
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("rabbitmq unreachable")),
        "the lost connection was not logged:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    node.start_again();
    let at_start = accepted();
    assert!(
        wait_until(Duration::from_secs(60), || switchyard
            .stderr()
            .contains("reconnected to rabbitmq")),
        "no reconnect after the broker came back:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        wait_until(Duration::from_secs(30), || accepted() >= at_start + 1_000),
        "producers stalled after the restart: {} accepted",
        accepted()
    );
    stop.store(true, Ordering::SeqCst);
    let acked = producer.join().expect("producer");
    let report = topology.read_back(&acked, Duration::from_secs(60));
    println!(
        "rabbitmq_node_restarted_mid_stream (sink): {report}; {at_stop} accepted before the \
         stop, {at_start} before the start; node boots {:?}, stop {stopped_in:?}",
        node.boot_times()
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

/// The broker is shut down while the source reads a durable queue of persistent
/// messages, and started again on the same database. The source reconnects and consumes
/// again: every message reaches the webhook (the ones delivered but not yet acknowledged
/// at the stop come again, counted as duplicates), each key's first deliveries keep
/// their order, and every message is acknowledged in the end (the queue is empty).
#[test]
fn rabbitmq_node_restarted_while_the_source_reads_delivers_every_message() {
    let mut node = RabbitNode::start();
    let topology = Topology::declare_on(&node.url(), "srcrestart", FieldTable::default());
    let total = 20_000u64;
    publish_jobs(&node.url(), &topology.queue, total, 40);
    // A little slow, so that the stop lands while most messages wait in the queue.
    let receiver = WebhookReceiver::start(Behaviour::Slow(Duration::from_millis(2)));
    let mut switchyard = Switchyard::start(&rabbitmq_at_to_webhook(
        &node.url(),
        &topology.queue,
        &receiver.url(),
    ));
    let distinct = || {
        received(&receiver)
            .into_iter()
            .map(|t| t.id)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() >= 2_000),
        "deliveries did not start: {}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    let stopped_in = node.stop();
    let at_stop = distinct();
    assert!(
        at_stop < total as usize,
        "every message was delivered before the stop: nothing was read across the restart"
    );
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("lost the rabbitmq consumer")),
        "the lost consumer was not logged:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    node.start_again();
    assert!(
        wait_until(Duration::from_secs(60), || distinct() >= total as usize),
        "only {} of {total} messages delivered after the restart\n{}",
        distinct(),
        tail(&switchyard.stderr(), 40)
    );
    assert!(
        switchyard.stderr().contains("reconnected to rabbitmq"),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    // Every message published, as `received` names them.
    let published: Vec<Tracked> = (0..total)
        .map(|i| {
            let key = format!("k{:02}", i % 40);
            Tracked::new(format!("{key}-{}", i / 40), key, i / 40)
        })
        .collect();
    let report = check(&published, &received(&receiver));
    println!(
        "rabbitmq_node_restarted_mid_stream (source): {report} ({at_stop} delivered before \
         the stop); node boots {:?}, stop {stopped_in:?}",
        node.boot_times()
    );
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    // Acks on the new connection work: once switchyard stops, nothing is left.
    switchyard.terminate();
    assert!(
        wait_until(Duration::from_secs(30), || topology.ready() == 0),
        "{} messages left in the queue",
        topology.ready()
    );
}

/// `config` pointed at `proxy` with `amqps://` (the same broker behind it), trusting
/// `ca` for the components whose `url` it names.
fn over_tls(config: &str, proxy: &TlsProxy, ca: &std::path::Path) -> String {
    let tls_url = format!("amqps://guest:guest@{}/%2f", proxy.brokers());
    config.replace(
        &format!("url = \"{URL}\"\n"),
        &format!("url = \"{tls_url}\"\nca_file = \"{}\"\n", ca.display()),
    )
}

#[test]
fn rabbitmq_sink_over_tls_delivers_everything_trusting_the_configured_ca() {
    let proxy = TlsProxy::start(free_port(), "127.0.0.1:5672");
    let topology = Topology::declare("tls-sink", FieldTable::default());
    let config = over_tls(
        &http_to_rabbitmq(&topology.exchange, ""),
        &proxy,
        &proxy.ca_file(),
    );
    assert!(config.contains("amqps://"), "{config}");
    let switchyard = Switchyard::start(&config);
    let acked = send_batches(&switchyard.url(), "", 4, 500, 100);
    assert_eq!(acked.len(), 2_000);
    let report = topology.read_back(&acked, Duration::from_secs(120));
    println!("rabbitmq_sink_over_tls: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
    assert!(
        proxy.connections() >= 1,
        "the sink did not connect through the TLS proxy:\n{}",
        proxy.log()
    );
}

#[test]
fn rabbitmq_source_over_tls_delivers_every_message_and_acks_them() {
    let proxy = TlsProxy::start(free_port(), "127.0.0.1:5672");
    let topology = Topology::declare("tls-source", FieldTable::default());
    let total = 2_000u64;
    publish(&topology.queue, total, 20);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let config = over_tls(
        &rabbitmq_to_webhook(&topology.queue, &receiver.url()),
        &proxy,
        &proxy.ca_file(),
    );
    assert!(config.contains("amqps://"), "{config}");
    let mut switchyard = Switchyard::start(&config);
    let distinct = || {
        received(&receiver)
            .into_iter()
            .map(|t| t.id)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(120), || distinct() >= total as usize),
        "only {} of {total} messages delivered over TLS\n{}",
        distinct(),
        tail(&switchyard.stderr(), 40)
    );
    let published: Vec<Tracked> = (0..total)
        .map(|i| {
            let (key, seq) = (format!("k{:02}", i % 20), i / 20);
            Tracked::new(format!("{key}-{seq}"), key, seq)
        })
        .collect();
    let report = check(&published, &received(&receiver));
    println!("rabbitmq_source_over_tls: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert!(
        proxy.connections() >= 1,
        "the source did not connect through the TLS proxy:\n{}",
        proxy.log()
    );
    // Delivered means acknowledged: the queue is empty once switchyard stops.
    switchyard.terminate();
    assert!(
        wait_until(Duration::from_secs(30), || topology.ready() == 0),
        "{} messages left in the queue",
        topology.ready()
    );
}

/// Both sides trusting a CA that did not sign the proxy's certificate: each says that
/// the certificate is not trusted, and nothing is published or consumed.
#[test]
fn rabbitmq_tls_with_the_wrong_ca_is_a_certificate_error_not_a_hang() {
    let proxy = TlsProxy::start(free_port(), "127.0.0.1:5672");
    let topology = Topology::declare("tls-wrong", FieldTable::default());
    publish(&topology.queue, 10, 1);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let source = rabbitmq_to_webhook(&topology.queue, &receiver.url());
    let sink = http_to_rabbitmq(&topology.exchange, "");
    // One file with both: the sink's section and pipeline appended to the source's.
    let both = format!(
        "{source}\n{}",
        &sink[sink.find("[sources.api]").expect("the sink's config")..]
    );
    let switchyard = Switchyard::start(&over_tls(&both, &proxy, &proxy.wrong_ca_file()));
    send_batches(&switchyard.url(), "", 1, 10, 10);
    let refused = |component: &str| {
        switchyard
            .stderr()
            .lines()
            .any(|l| l.contains(component) && l.contains("amqps://") && l.contains("certificate"))
    };
    assert!(
        wait_until(Duration::from_secs(30), || refused("sink=out")
            && refused("source=jobs")),
        "no certificate error from both the sink `out` and the source `jobs`:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert_eq!(
        receiver.count(),
        0,
        "the source consumed over an untrusted TLS"
    );
    assert_eq!(
        topology.ready(),
        10,
        "the sink published or the source consumed over an untrusted TLS"
    );
}
