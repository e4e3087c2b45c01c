//! MQTT end to end, against a private mosquitto per test (a free port, its own data
//! directory, no limit on the messages it queues for a subscriber, so the broker itself
//! drops nothing): the real binary publishes to it, and a subscriber made with rumqttc
//! before the start reads everything back. For the TLS tests the broker has a second
//! listener that requires TLS (a CA and certificate made for the test); the binary uses
//! that one (`mqtts://`), the test's own clients the plain one.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS};
use switchyard_test_support::{
    Behaviour, Certificates, Report, Switchyard, Tracked, WebhookReceiver, check, free_port, tail,
};
use switchyard_tests::{WEBHOOK_SECRET, runtime, send_batches, wait_until};

/// What a subscriber got: (topic, payload), in arrival order.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// A mosquitto of this test only, stopped on drop.
struct Mosquitto {
    port: u16,
    /// A second listener that requires TLS, with the certificates it presents.
    tls: Option<(u16, Certificates)>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Mosquitto {
    fn start() -> Self {
        Self::launch(None)
    }

    /// With a TLS listener besides the plain one, its certificate signed by a CA made
    /// for this broker.
    fn start_with_tls() -> Self {
        Self::launch(Some((free_port(), Certificates::make())))
    }

    fn launch(tls: Option<(u16, Certificates)>) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let mut broker = Self {
            port: free_port(),
            tls,
            dir,
            child: None,
        };
        broker.run();
        broker
    }

    fn config(&self) -> PathBuf {
        let path = self.dir.path().join("mosquitto.conf");
        let mut config = format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
             persistence_location {data}/\nmax_queued_messages 0\nmax_inflight_messages 100\n\
             log_dest file {data}/mosquitto.log\n",
            port = self.port,
            data = self.dir.path().display()
        );
        if let Some((port, certs)) = &self.tls {
            config.push_str(&format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\n",
                certs.ca_file().display(),
                certs.server_cert().display(),
                certs.server_key().display()
            ));
        }
        std::fs::write(&path, config).expect("writing the mosquitto config");
        path
    }

    fn run(&mut self) {
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| std::path::Path::new(p).is_file())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(self.config())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto is installed");
        self.child = Some(child);
        let ports = [Some(self.port), self.tls.as_ref().map(|(port, _)| *port)];
        for port in ports.into_iter().flatten() {
            assert!(
                wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                    "127.0.0.1",
                    port
                ))
                .is_ok()),
                "mosquitto did not listen on {port}\n{}",
                self.log()
            );
        }
    }

    /// SIGTERM (it saves its sessions and queued messages), then starts it again.
    fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: a plain signal to our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        self.run();
    }

    /// The end of the broker's log.
    fn log(&self) -> String {
        tail(
            &std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default(),
            30,
        )
    }

    fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The TLS listener's `mqtts://` URL and the certificates behind it.
    fn tls(&self) -> (String, &Certificates) {
        let (port, certs) = self.tls.as_ref().expect("started with TLS");
        (format!("mqtts://127.0.0.1:{port}"), certs)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A QoS 1 subscriber to `filter`, collecting the payloads it gets, in order. Runs on
/// `rt` until dropped with it.
fn subscribe(rt: &tokio::runtime::Runtime, port: u16, filter: &str) -> Received {
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut options = MqttOptions::new(format!("reader-{port}"), "127.0.0.1", port);
    options
        .set_clean_session(false)
        .set_max_packet_size(1 << 24, 1 << 24);
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
    let filter = filter.to_owned();
    let sink = got.clone();
    rt.spawn(async move {
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribing");
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    sink.lock()
                        .unwrap()
                        .push((p.topic.clone(), p.payload.to_vec()));
                }
                Ok(_) => {}
                // The broker restarting: the session resumes on reconnect.
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    subscribed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the subscription was acknowledged");
    got
}

/// What arrived as checker records. MQTT 3.1.1 has no headers: the id is the one
/// [`send_batches`] gave the event, rebuilt from its key and sequence (requests of
/// `batch` events).
fn tracked(got: &[(String, Vec<u8>)], batch: u64) -> Vec<Tracked> {
    got.iter()
        .map(|(_, payload)| {
            let body: serde_json::Value = serde_json::from_slice(payload).expect("json");
            let key = body["key"].as_str().expect("key");
            let seq = body["seq"].as_u64().expect("seq");
            Tracked::new(
                format!("{key}-b{}-{}", seq - seq % batch, seq % batch),
                key,
                seq,
            )
        })
        .collect()
}

/// Waits until every id of `acked` arrived (or `within` passed) and checks.
fn read_back(got: &Received, acked: &[Tracked], batch: u64, within: Duration) -> Report {
    let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    wait_until(within, || {
        let have: HashSet<String> = tracked(&got.lock().unwrap(), batch)
            .into_iter()
            .map(|t| t.id)
            .collect();
        wanted.iter().all(|id| have.contains(*id))
    });
    check(acked, &tracked(&got.lock().unwrap(), batch))
}

/// An HTTP source `api` (4 partitions) piped into an MQTT sink `out`.
fn http_to_mqtt(url: &str, extra: &str) -> String {
    http_to_mqtt_topic(url, "events/{source}/{key}", extra)
}

/// [`http_to_mqtt`] publishing to `topic`.
fn http_to_mqtt_topic(url: &str, topic: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.to_mqtt]
from = ["api"]
to = ["out"]

[sinks.out]
type = "mqtt"
url = "{url}"
topic = "{topic}"
{extra}
"#
    )
}

#[test]
fn mqtt_http_to_mqtt_50k_events_arrive_in_per_key_order() {
    let broker = Mosquitto::start();
    let rt = runtime();
    let got = subscribe(&rt, broker.port, "events/#");
    let switchyard = Switchyard::start(&http_to_mqtt(&broker.url(), ""));
    let acked = send_batches(&switchyard.url(), "", 20, 2_500, 250);
    assert_eq!(acked.len(), 50_000);
    let report = read_back(&got, &acked, 250, Duration::from_secs(300));
    println!("mqtt_http_to_mqtt: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
    let topics: HashSet<String> = got.lock().unwrap().iter().map(|(t, _)| t.clone()).collect();
    assert!(topics.contains("events/api/k007"), "{topics:?}");
}

#[test]
fn mqtt_broker_restarted_mid_stream_loses_nothing() {
    let mut broker = Mosquitto::start();
    let rt = runtime();
    let got = subscribe(&rt, broker.port, "events/#");
    let switchyard = Switchyard::start(&http_to_mqtt(
        &broker.url(),
        "timeout = \"2s\"\nretry = { max_attempts = 1000, initial = \"50ms\", max = \"500ms\" }",
    ));
    let base = switchyard.url();
    let producer = std::thread::spawn(move || send_batches(&base, "", 10, 2_000, 100));
    assert!(
        wait_until(Duration::from_secs(60), || got.lock().unwrap().len()
            >= 2_000),
        "deliveries did not start\n{}",
        tail(&switchyard.stderr(), 30)
    );
    broker.restart();
    let acked = producer.join().expect("producer");
    assert_eq!(acked.len(), 20_000);
    let report = read_back(&got, &acked, 100, Duration::from_secs(240));
    println!("mqtt_broker_restart: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}\nbroker:\n{}\n{}",
        tail(&switchyard.stderr(), 40),
        broker.log(),
        switchyard_tests::metrics(&switchyard.url())
            .lines()
            .filter(|l| l.starts_with("switchyard_sink_events_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// An MQTT source `sensors` subscribed to `filter`, piped into a signed webhook.
fn mqtt_to_webhook(url: &str, filter: &str, hook: &str) -> String {
    mqtt_to_webhook_with(url, filter, hook, "", "")
}

/// [`mqtt_to_webhook`] with more keys for the source and the webhook sink.
fn mqtt_to_webhook_with(
    url: &str,
    filter: &str,
    hook: &str,
    source_extra: &str,
    hook_extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.sensors]
type = "mqtt"
url = "{url}"
topics = ["{filter}"]
client_id = "switchyard-e2e-sensors"
{source_extra}

[pipelines.deliver]
from = ["sensors"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
retry = {{ max_attempts = 60, initial = "10ms", max = "200ms" }}
{hook_extra}
"#
    )
}

/// Publishes `total` QoS 1 messages `{"key":"k<i%20>","seq":<i/20>}` to
/// `sensors/<key>` on the plain listener at `port`, and waits for every PUBACK.
fn publish(port: u16, total: u64) {
    runtime().block_on(async {
        let mut options = MqttOptions::new("e2e-publisher", "127.0.0.1", port);
        options.set_inflight(100);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let publisher = tokio::spawn(async move {
            for i in 0..total {
                let key = format!("k{:02}", i % 20);
                let body = format!("{{\"key\":\"{key}\",\"seq\":{}}}", i / 20);
                client
                    .publish(format!("sensors/{key}"), QoS::AtLeastOnce, false, body)
                    .await
                    .expect("publishing");
            }
            client
        });
        let mut acked = 0;
        while acked < total {
            if let Ok(Event::Incoming(Incoming::PubAck(_))) = eventloop.poll().await {
                acked += 1;
            }
        }
        publisher.await.expect("publisher");
    });
}

#[test]
fn mqtt_source_killed_mid_stream_delivers_every_message() {
    let broker = Mosquitto::start();
    let receiver = WebhookReceiver::start(Behaviour::FailFraction {
        fraction: 0.05,
        seed: 11,
    });
    let mut switchyard = Switchyard::start(&mqtt_to_webhook(
        &broker.url(),
        "sensors/#",
        &receiver.url(),
    ));
    // The session exists once switchyard has subscribed; from then on the broker keeps
    // what it does not get acknowledged.
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("connected to the mqtt broker")),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let total = 10_000u64;
    publish(broker.port, total);
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() >= 2_000),
        "deliveries did not start: {}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    switchyard.kill9();
    let at_kill = receiver.count();
    switchyard.restart();
    let received = || -> Vec<Tracked> {
        switchyard_tests::deliveries(&receiver)
            .into_iter()
            .map(|t| Tracked::new(format!("{}-{}", t.key, t.seq), t.key, t.seq))
            .collect()
    };
    let distinct = || {
        received()
            .into_iter()
            .map(|t| t.id)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(180), || distinct() >= total as usize),
        "only {} of {total} messages delivered after the restart\n{}\n{}",
        distinct(),
        tail(&switchyard.stderr(), 40),
        switchyard_tests::metrics(&switchyard.url())
            .lines()
            .filter(|l| !l.starts_with('#') && (l.contains("sensors") || l.contains("hook")))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let delivered = received();
    let acked: Vec<Tracked> = {
        let mut seen = HashSet::new();
        delivered
            .iter()
            .filter(|t| seen.insert(t.id.clone()))
            .cloned()
            .collect()
    };
    let report = check(&acked, &delivered);
    println!("mqtt_source_kill9: {report} ({at_kill} delivered before the kill)");
    assert_eq!(acked.len(), total as usize);
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn mqtt_sink_switchyard_killed_mid_stream_loses_nothing() {
    let broker = Mosquitto::start();
    let rt = runtime();
    let got = subscribe(&rt, broker.port, "events/#");
    let mut switchyard = Switchyard::start(&http_to_mqtt(&broker.url(), ""));
    let base = switchyard.url();
    let producer = std::thread::spawn(move || send_batches(&base, "", 10, 2_000, 50));
    assert!(
        wait_until(Duration::from_secs(60), || got.lock().unwrap().len()
            >= 3_000),
        "deliveries did not start\n{}",
        tail(&switchyard.stderr(), 30)
    );
    switchyard.kill9();
    switchyard.restart();
    let acked = producer.join().expect("producer");
    assert_eq!(acked.len(), 20_000);
    let report = read_back(&got, &acked, 50, Duration::from_secs(240));
    println!("mqtt_sink_kill9: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn mqtt_source_broker_restarted_mid_stream_delivers_every_message() {
    let mut broker = Mosquitto::start();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&mqtt_to_webhook(
        &broker.url(),
        "sensors/#",
        &receiver.url(),
    ));
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("connected to the mqtt broker")),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let total = 10_000u64;
    // Published with QoS 1 and confirmed by the broker before the restart: the broker
    // keeps them for the session (it saves its state when it stops).
    publish(broker.port, total);
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() >= 1_000),
        "deliveries did not start: {}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    broker.restart();
    let at_restart = receiver.count();
    let received = || -> Vec<Tracked> {
        switchyard_tests::deliveries(&receiver)
            .into_iter()
            .map(|t| Tracked::new(format!("{}-{}", t.key, t.seq), t.key, t.seq))
            .collect()
    };
    let distinct = || {
        received()
            .into_iter()
            .map(|t| t.id)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(180), || distinct() >= total as usize),
        "only {} of {total} messages delivered after the broker restart\n{}",
        distinct(),
        tail(&switchyard.stderr(), 40)
    );
    let delivered = received();
    let acked: Vec<Tracked> = {
        let mut seen = HashSet::new();
        delivered
            .iter()
            .filter(|t| seen.insert(t.id.clone()))
            .cloned()
            .collect()
    };
    let report = check(&acked, &delivered);
    println!("mqtt_source_broker_restart: {report} ({at_restart} delivered before the restart)");
    assert_eq!(acked.len(), total as usize);
}

/// What the webhook got from the source, one record per request: the id from the key
/// and sequence in the payload (a redelivered message is the same record again).
fn received(receiver: &WebhookReceiver) -> Vec<Tracked> {
    switchyard_tests::deliveries(receiver)
        .into_iter()
        .map(|t| Tracked::new(format!("{}-{}", t.key, t.seq), t.key, t.seq))
        .collect()
}

#[test]
fn mqtt_sink_over_tls_delivers_everything_trusting_the_configured_ca() {
    let broker = Mosquitto::start_with_tls();
    let (url, certs) = broker.tls();
    let rt = runtime();
    let got = subscribe(&rt, broker.port, "events/#");
    let switchyard = Switchyard::start(&http_to_mqtt(
        &url,
        &format!("ca_file = \"{}\"", certs.ca_file().display()),
    ));
    let acked = send_batches(&switchyard.url(), "", 4, 500, 100);
    assert_eq!(acked.len(), 2_000);
    let report = read_back(&got, &acked, 100, Duration::from_secs(120));
    println!("mqtt_sink_over_tls: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}\nbroker:\n{}",
        tail(&switchyard.stderr(), 40),
        broker.log()
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
}

#[test]
fn mqtt_source_over_tls_delivers_every_message() {
    let broker = Mosquitto::start_with_tls();
    let (url, certs) = broker.tls();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let config = mqtt_to_webhook(&url, "sensors/#", &receiver.url()).replace(
        "client_id = ",
        &format!("ca_file = \"{}\"\nclient_id = ", certs.ca_file().display()),
    );
    let switchyard = Switchyard::start(&config);
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("connected to the mqtt broker")),
        "{}\nbroker:\n{}",
        tail(&switchyard.stderr(), 30),
        broker.log()
    );
    let total = 2_000u64;
    publish(broker.port, total);
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
    println!("mqtt_source_over_tls: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
}

/// A sink and a source trusting a CA that did not sign the broker's certificate: each
/// says that the certificate is not trusted, and nothing is published or subscribed.
#[test]
fn mqtt_tls_with_the_wrong_ca_is_a_certificate_error_not_a_hang() {
    let broker = Mosquitto::start_with_tls();
    let (url, certs) = broker.tls();
    let rt = runtime();
    let got = subscribe(&rt, broker.port, "events/#");
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let wrong = format!("ca_file = \"{}\"", certs.wrong_ca_file().display());
    let source = mqtt_to_webhook(&url, "sensors/#", &receiver.url())
        .replace("client_id = ", &format!("{wrong}\nclient_id = "));
    let sink = http_to_mqtt(&url, &wrong);
    // One file with both: the sink's section and pipeline appended to the source's.
    let both = format!(
        "{source}\n{}",
        &sink[sink.find("[sources.api]").expect("the sink's config")..]
    );
    let switchyard = Switchyard::start(&both);
    send_batches(&switchyard.url(), "", 1, 10, 10);
    let refused = |component: &str| {
        switchyard
            .stderr()
            .lines()
            .any(|l| l.contains(component) && l.contains("mqtts://") && l.contains("certificate"))
    };
    assert!(
        wait_until(Duration::from_secs(30), || refused("sink=out")
            && refused("source=sensors")),
        "no certificate error from both the sink `out` and the source `sensors`:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        !switchyard.stderr().contains("connected to the mqtt broker"),
        "a connection over an untrusted TLS:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        got.lock().unwrap().is_empty(),
        "the sink published over an untrusted TLS"
    );
    assert_eq!(receiver.count(), 0);
}

// ── MQTT 5 ─────────────────────────────────────────────────────────────────────────────

/// What an MQTT 5 subscriber got of one message.
#[derive(Clone, Debug)]
struct Message5 {
    topic: String,
    payload: Vec<u8>,
    content_type: Option<String>,
    user: Vec<(String, String)>,
}

impl Message5 {
    /// The value of the user property `name`, when there is exactly one.
    fn property(&self, name: &str) -> Option<&str> {
        let mut values = self.user.iter().filter(|(n, _)| n == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Some(v.as_str()),
            _ => None,
        }
    }

    /// The payload's `key` and `seq` (what [`send_batches`] sends).
    fn key_seq(&self) -> (String, u64) {
        let body: serde_json::Value = serde_json::from_slice(&self.payload).expect("json");
        (
            body["key"].as_str().expect("key").to_owned(),
            body["seq"].as_u64().expect("seq"),
        )
    }
}

type Received5 = Arc<Mutex<Vec<Message5>>>;

/// An MQTT 5 QoS 1 subscriber to `filter` (rumqttc's v5 client), collecting what it gets
/// in arrival order. Runs on `rt` until dropped with it.
fn subscribe_v5(rt: &tokio::runtime::Runtime, port: u16, filter: &str) -> Received5 {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let got = Arc::new(Mutex::new(Vec::new()));
    let mut options = MqttOptions::new(format!("reader5-{port}"), "127.0.0.1", port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(600))
        .set_max_packet_size(Some(1 << 24));
    let (client, mut eventloop) = AsyncClient::new(options, 100);
    let (subscribed_tx, subscribed_rx) = std::sync::mpsc::channel();
    let filter = filter.to_owned();
    let sink = got.clone();
    rt.spawn(async move {
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribing");
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::SubAck(_))) => {
                    let _ = subscribed_tx.send(());
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    let properties = p.properties.clone().unwrap_or_default();
                    sink.lock().unwrap().push(Message5 {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload.to_vec(),
                        content_type: properties.content_type,
                        user: properties.user_properties,
                    });
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    subscribed_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the subscription was acknowledged");
    got
}

/// A message to publish with MQTT 5: topic, payload and user properties.
type Outgoing5 = (String, String, Vec<(String, String)>);

/// Publishes `messages` with QoS 1 and MQTT 5, with content type `application/json`, and
/// returns once the broker acknowledged every one.
fn publish_v5(port: u16, messages: Vec<Outgoing5>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::{AsyncClient, Event, Incoming, MqttOptions};
    let total = messages.len();
    runtime().block_on(async {
        let mut options = MqttOptions::new("e2e-publisher5", "127.0.0.1", port);
        options.set_outgoing_inflight_upper_limit(100);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let publisher = tokio::spawn(async move {
            for (topic, payload, user) in messages {
                let properties = PublishProperties {
                    content_type: Some("application/json".to_owned()),
                    user_properties: user,
                    ..PublishProperties::default()
                };
                client
                    .publish_with_properties(topic, QoS::AtLeastOnce, false, payload, properties)
                    .await
                    .expect("publishing");
            }
            client
        });
        let mut acked = 0;
        while acked < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("the publisher lost its connection: {e}"),
            }
        }
        publisher.await.expect("publisher");
    });
}

/// What the webhook got, as checker records: the id from `webhook-id`, key and seq from
/// the payload; with `envelope = true` the payload sits in the envelope.
fn delivered_enveloped(receiver: &WebhookReceiver) -> Vec<(Tracked, serde_json::Value)> {
    receiver
        .accepted()
        .iter()
        .filter_map(|r| {
            let id = r.header("webhook-id")?.to_owned();
            let envelope: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
            let payload = &envelope["payload"];
            let key = payload["key"].as_str()?.to_owned();
            let seq = payload["seq"].as_u64()?;
            Some((Tracked::new(id, key, seq), envelope))
        })
        .collect()
}

#[test]
fn mqtt5_http_to_mqtt_every_message_with_its_properties_in_per_key_order() {
    let broker = Mosquitto::start();
    let rt = runtime();
    let got = subscribe_v5(&rt, broker.port, "v5sink/#");
    let switchyard = Switchyard::start(&http_to_mqtt_topic(
        &broker.url(),
        "v5sink/{source}/{key}",
        "protocol = \"5\"",
    ));
    let acked = send_batches(&switchyard.url(), "", 20, 1_000, 250);
    assert_eq!(acked.len(), 20_000);
    let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    let tracked = |got: &[Message5]| -> Vec<Tracked> {
        got.iter()
            .map(|m| {
                let (key, seq) = m.key_seq();
                Tracked::new(m.property("switchyard-id").unwrap_or("no id"), key, seq)
            })
            .collect()
    };
    wait_until(Duration::from_secs(180), || {
        let have: HashSet<String> = tracked(&got.lock().unwrap())
            .into_iter()
            .map(|t| t.id)
            .collect();
        wanted.iter().all(|id| have.contains(*id))
    });
    let messages = got.lock().unwrap().clone();
    let report = check(&acked, &tracked(&messages));
    println!("mqtt5_http_to_mqtt: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
    assert_eq!(report.unacked, 0, "{report}");
    for m in &messages {
        let (key, seq) = m.key_seq();
        let batch = seq - seq % 250;
        assert_eq!(m.topic, format!("v5sink/api/{key}"), "{m:?}");
        assert_eq!(
            m.property("switchyard-id"),
            Some(format!("{key}-b{batch}-{}", seq % 250).as_str()),
            "{m:?}"
        );
        assert_eq!(m.property("switchyard-source"), Some("api"), "{m:?}");
        assert_eq!(m.property("switchyard-kind"), Some("message"), "{m:?}");
        assert_eq!(m.property("switchyard-key"), Some(key.as_str()), "{m:?}");
        // The event's own header (the HTTP source sets it from the request).
        assert_eq!(
            m.property("idempotency-key"),
            Some(format!("{key}-b{batch}").as_str()),
            "{m:?}"
        );
        assert_eq!(m.content_type.as_deref(), Some("application/json"), "{m:?}");
    }
}

#[test]
fn mqtt5_source_to_webhook_keeps_ids_and_headers() {
    let broker = Mosquitto::start();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&mqtt_to_webhook_with(
        &broker.url(),
        "v5src/#",
        &receiver.url(),
        "protocol = \"5\"",
        "envelope = true",
    ));
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("subscribed to the mqtt topics")),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let total = 2_000u64;
    let messages = (0..total)
        .map(|i| {
            let key = format!("k{:02}", i % 10);
            let seq = i / 10;
            let user = vec![
                ("switchyard-id".to_owned(), format!("m-{key}-{seq}")),
                ("switchyard-key".to_owned(), key.clone()),
                ("x-trace".to_owned(), format!("t-{i}")),
            ];
            let body = format!("{{\"key\":\"{key}\",\"seq\":{seq}}}");
            (format!("v5src/{key}"), body, user)
        })
        .collect();
    publish_v5(broker.port, messages);
    let distinct = || {
        delivered_enveloped(&receiver)
            .into_iter()
            .map(|(t, _)| t.id)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(
        wait_until(Duration::from_secs(120), || distinct() >= total as usize),
        "only {} of {total} messages delivered\n{}",
        distinct(),
        tail(&switchyard.stderr(), 40)
    );
    let delivered = delivered_enveloped(&receiver);
    let acked: Vec<Tracked> = (0..total)
        .map(|i| {
            let key = format!("k{:02}", i % 10);
            Tracked::new(format!("m-{key}-{}", i / 10), key, i / 10)
        })
        .collect();
    let records: Vec<Tracked> = delivered.iter().map(|(t, _)| t.clone()).collect();
    let report = check(&acked, &records);
    println!("mqtt5_source_to_webhook: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(
        report.unacked, 0,
        "ids not taken from switchyard-id: {report}"
    );
    assert_eq!(report.reordered, 0, "{report}");
    for (t, envelope) in &delivered {
        assert_eq!(envelope["id"], t.id.as_str(), "{envelope}");
        assert_eq!(envelope["key"], t.key.as_str(), "{envelope}");
        assert_eq!(envelope["source"], "sensors", "{envelope}");
        assert_eq!(envelope["content_type"], "application/json", "{envelope}");
        let i = t.seq * 10 + t.key[1..].parse::<u64>().expect("key number");
        assert_eq!(
            envelope["headers"]["x-trace"],
            format!("t-{i}").as_str(),
            "{envelope}"
        );
        assert_eq!(
            envelope["headers"]["mqtt-topic"],
            format!("v5src/{}", t.key).as_str(),
            "{envelope}"
        );
        assert!(
            envelope["headers"].get("switchyard-id").is_none(),
            "{envelope}"
        );
    }
}

#[test]
fn mqtt5_round_trip_through_mqtt_keeps_event_ids() {
    let broker = Mosquitto::start();
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let url = broker.url();
    let config = format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.to_mqtt]
from = ["api"]
to = ["out"]

[sinks.out]
type = "mqtt"
url = "{url}"
topic = "v5trip/{{source}}/{{key}}"
protocol = "5"

[sources.back]
type = "mqtt"
url = "{url}"
topics = ["v5trip/#"]
client_id = "switchyard-e2e-back"
protocol = "5"

[pipelines.from_mqtt]
from = ["back"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
"#,
        hook = receiver.url()
    );
    let switchyard = Switchyard::start(&config);
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("subscribed to the mqtt topics")),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let acked = send_batches(&switchyard.url(), "", 10, 500, 100);
    assert_eq!(acked.len(), 5_000);
    assert!(
        switchyard_tests::wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120)),
        "not every event came back through mqtt\n{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &switchyard_tests::deliveries(&receiver));
    println!("mqtt5_round_trip: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.unacked, 0, "an id changed on the way: {report}");
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn mqtt5_source_killed_mid_stream_loses_nothing_and_keeps_ids() {
    let broker = Mosquitto::start();
    let receiver = WebhookReceiver::start(Behaviour::FailFraction {
        fraction: 0.05,
        seed: 12,
    });
    let mut switchyard = Switchyard::start(&mqtt_to_webhook_with(
        &broker.url(),
        "v5kill/#",
        &receiver.url(),
        "protocol = \"5\"",
        "",
    ));
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("subscribed to the mqtt topics")),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let total = 10_000u64;
    let id = |key: &str, seq: u64| format!("m-{key}-{seq}");
    let messages = (0..total)
        .map(|i| {
            let key = format!("k{:02}", i % 20);
            let seq = i / 20;
            let user = vec![("switchyard-id".to_owned(), id(&key, seq))];
            let body = format!("{{\"key\":\"{key}\",\"seq\":{seq}}}");
            (format!("v5kill/{key}"), body, user)
        })
        .collect();
    publish_v5(broker.port, messages);
    assert!(
        wait_until(Duration::from_secs(60), || receiver.count() >= 2_000),
        "deliveries did not start: {}\n{}",
        receiver.count(),
        tail(&switchyard.stderr(), 30)
    );
    switchyard.kill9();
    let at_kill = receiver.count();
    switchyard.restart();
    let distinct = || {
        switchyard_tests::deliveries(&receiver)
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
    let acked: Vec<Tracked> = (0..total)
        .map(|i| {
            let key = format!("k{:02}", i % 20);
            Tracked::new(id(&key, i / 20), key, i / 20)
        })
        .collect();
    // The id is the message's `switchyard-id`: a redelivered message keeps it, so a
    // duplicate is the same id again (never a new one: `unacked` counts ids that no
    // message had).
    let delivered = switchyard_tests::deliveries(&receiver);
    let report = check(&acked, &delivered);
    println!("mqtt5_source_kill9: {report} ({at_kill} delivered before the kill)");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.unacked, 0, "a delivery got a new id: {report}");
    assert_eq!(report.reordered, 0, "{report}");
    for t in &delivered {
        assert_eq!(t.id, id(&t.key, t.seq), "{t:?}");
    }
}

#[test]
fn mqtt5_cloudevents_binary_mode_puts_attributes_in_user_properties() {
    let broker = Mosquitto::start();
    let rt = runtime();
    let got = subscribe_v5(&rt, broker.port, "v5ce/#");
    let switchyard = Switchyard::start(&http_to_mqtt_topic(
        &broker.url(),
        "v5ce/{source}/{key}",
        "protocol = \"5\"\nformat = \"cloudevents\"",
    ));
    let acked = send_batches(&switchyard.url(), "", 3, 20, 10);
    assert_eq!(acked.len(), 60);
    assert!(
        wait_until(Duration::from_secs(60), || got.lock().unwrap().len() >= 60),
        "{} of 60 arrived\n{}",
        got.lock().unwrap().len(),
        tail(&switchyard.stderr(), 30)
    );
    for m in got.lock().unwrap().iter() {
        let (key, seq) = m.key_seq();
        // Binary mode: the payload as the HTTP source received it.
        assert_eq!(
            m.payload,
            format!("{{\"key\":\"{key}\",\"seq\":{seq}}}").into_bytes(),
            "{m:?}"
        );
        let id = format!("{key}-b{}-{}", seq - seq % 10, seq % 10);
        assert_eq!(m.property("specversion"), Some("1.0"), "{m:?}");
        assert_eq!(m.property("id"), Some(id.as_str()), "{m:?}");
        assert_eq!(m.property("source"), Some("/switchyard/api"), "{m:?}");
        assert_eq!(m.property("type"), Some("switchyard.message"), "{m:?}");
        assert!(m.property("time").is_some(), "{m:?}");
        // `datacontenttype` is the content-type property, as the MQTT binding says.
        assert_eq!(m.property("datacontenttype"), None, "{m:?}");
        assert_eq!(m.content_type.as_deref(), Some("application/json"), "{m:?}");
        assert_eq!(m.property("switchyard-id"), Some(id.as_str()), "{m:?}");
    }
}
