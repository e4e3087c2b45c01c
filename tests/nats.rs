//! NATS JetStream end to end, against the machine's nats-server (JetStream on
//! 127.0.0.1:4222) and private servers started on free ports for restarts: the real
//! binary publishes to and consumes from streams; what it wrote is read back with
//! async-nats.

use std::collections::HashSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;
use switchyard_test_support::{
    Behaviour, Certificates, Report, Switchyard, Tracked, WebhookReceiver, check, free_port, tail,
};
use switchyard_tests::{
    WEBHOOK_SECRET, client, deliveries, metrics, runtime, send_batches, send_until,
    wait_for_all_delivered, wait_until,
};

const SHARED: &str = "nats://127.0.0.1:4222";

/// A name no other test uses: `<prefix>_<pid>_<nanos>`.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// A client of `url`, trusting the CA in `ca` when given (a server that requires TLS).
async fn connect(url: &str, ca: Option<&Path>) -> async_nats::Client {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(ca) = ca {
        options = options.add_root_certificates(ca.to_owned());
    }
    options.connect(url).await.expect("nats")
}

/// A stream `name` holding `<name>.>`, deleted when dropped.
struct TestStream {
    url: String,
    /// The CA to trust, for a server that requires TLS.
    ca: Option<std::path::PathBuf>,
    name: String,
}

impl TestStream {
    fn create(url: &str, name: &str, max_msgs: Option<i64>) -> Self {
        Self::create_trusting(url, None, name, max_msgs)
    }

    fn create_trusting(url: &str, ca: Option<&Path>, name: &str, max_msgs: Option<i64>) -> Self {
        runtime().block_on(async {
            let js = jetstream::new(connect(url, ca).await);
            js.create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec![format!("{name}.>")],
                storage: stream::StorageType::File,
                max_messages: max_msgs.unwrap_or(-1),
                discard: stream::DiscardPolicy::New,
                ..Default::default()
            })
            .await
            .expect("create stream");
        });
        Self {
            url: url.to_owned(),
            ca: ca.map(Path::to_owned),
            name: name.to_owned(),
        }
    }

    /// Every message of the stream, read with an ordered consumer until `done` says so
    /// or `within` passes.
    fn read(&self, within: Duration, mut done: impl FnMut(&[Tracked]) -> bool) -> Vec<Tracked> {
        runtime().block_on(async {
            let js = jetstream::new(connect(&self.url, self.ca.as_deref()).await);
            let stream = js.get_stream(&self.name).await.expect("stream");
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig::default())
                .await
                .expect("ordered consumer");
            let mut messages = consumer.messages().await.expect("messages");
            let mut out = Vec::new();
            let deadline = tokio::time::Instant::now() + within;
            while !done(&out) {
                match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(Ok(m))) => out.extend(tracked(&m)),
                    Ok(Some(Err(e))) => panic!("reading the stream: {e}"),
                    Ok(None) | Err(_) => break,
                }
            }
            out
        })
    }

    /// Deletes the stream and creates it again: its sequences start at 1 again.
    fn recreate(&self) {
        runtime().block_on(async {
            let js = jetstream::new(async_nats::connect(&self.url).await.expect("nats"));
            js.delete_stream(&self.name).await.expect("delete stream");
        });
        std::mem::forget(Self::create(&self.url, &self.name, None));
    }

    fn ack_floor_and_pending(&self, consumer: &str) -> (u64, usize) {
        runtime().block_on(async {
            let js = jetstream::new(connect(&self.url, self.ca.as_deref()).await);
            let stream = js.get_stream(&self.name).await.expect("stream");
            match stream.consumer_info(consumer).await {
                Ok(info) => (info.ack_floor.stream_sequence, info.num_ack_pending),
                Err(_) => (0, 0),
            }
        })
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        let mut options = async_nats::ConnectOptions::new();
        if let Some(ca) = &self.ca {
            options = options.add_root_certificates(ca.clone());
        }
        runtime().block_on(async move {
            if let Ok(client) = options.connect(&url).await {
                let _ = jetstream::new(client).delete_stream(&name).await;
            }
        });
    }
}

/// A message the sink wrote as a checker record: id from `switchyard-id`, key and
/// sequence from the JSON payload.
fn tracked(m: &async_nats::jetstream::Message) -> Option<Tracked> {
    let id = m
        .headers
        .as_ref()?
        .get("switchyard-id")?
        .as_str()
        .to_owned();
    let body: serde_json::Value = serde_json::from_slice(&m.payload).ok()?;
    Some(Tracked::new(
        id,
        body.get("key")?.as_str()?,
        body.get("seq")?.as_u64()?,
    ))
}

/// Reads the stream until every acknowledged event is there, and checks.
fn read_back(stream: &TestStream, acked: &[Tracked], within: Duration) -> Report {
    let wanted: HashSet<&str> = acked.iter().map(|t| t.id.as_str()).collect();
    let delivered = stream.read(within, |got| {
        got.len() >= wanted.len() && {
            let seen: HashSet<&str> = got.iter().map(|t| t.id.as_str()).collect();
            wanted.iter().all(|id| seen.contains(id))
        }
    });
    check(acked, &delivered)
}

/// `switchyard_sink_events_total{outcome="retried"}` of `sink`.
fn retried(base: &str, sink: &str) -> f64 {
    metrics(base)
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_sink_events_total{")
                && l.contains(&format!("sink=\"{sink}\""))
                && l.contains("outcome=\"retried\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn http_to_nats(url: &str, subject: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.api]
type = "http"
partitions = 4

[pipelines.to_nats]
from = ["api"]
to = ["out"]

[sinks.out]
type = "nats"
url = "{url}"
subject = "{subject}"
timeout = "2s"
"#
    )
}

/// A private `nats-server -js` on a free port with its own store directory.
struct PrivateNats {
    port: u16,
    dir: tempfile::TempDir,
    /// Certificate and key: the server requires TLS.
    tls: Option<(std::path::PathBuf, std::path::PathBuf)>,
    child: Option<Child>,
}

impl PrivateNats {
    fn start() -> Self {
        Self::start_with_tls(None)
    }

    fn start_with_tls(tls: Option<(std::path::PathBuf, std::path::PathBuf)>) -> Self {
        let mut server = Self {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            tls,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut command = Command::new("nats-server");
        command
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path());
        if let Some((cert, key)) = &self.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server is installed");
        self.child = Some(child);
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        assert!(
            wait_until(Duration::from_secs(20), || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }),
            "private nats-server did not start"
        );
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// `tls://…`: the URL of a server started with TLS.
    fn tls_url(&self) -> String {
        format!("tls://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn store(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn nats_http_to_nats_50k_events_arrive_in_per_key_order() {
    let name = unique("sy_sink");
    let stream = TestStream::create(SHARED, &name, None);
    let switchyard = Switchyard::start(&http_to_nats(SHARED, &format!("{name}.{{source}}")));
    let acked = send_batches(&switchyard.url(), "", 20, 2_500, 500);
    assert_eq!(acked.len(), 50_000);
    let report = read_back(&stream, &acked, Duration::from_secs(180));
    println!("nats_http_to_nats: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
    // Nats-Msg-Id: a retried publish is dropped by the stream's duplicate window.
    assert_eq!(report.duplicated, 0, "{report}");
}

#[test]
fn nats_sink_waits_for_a_missing_stream_and_then_delivers() {
    let name = unique("sy_late");
    let switchyard = Switchyard::start(&http_to_nats(SHARED, &format!("{name}.{{source}}")));
    let acked = send_batches(&switchyard.url(), "", 2, 50, 50);
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains(&format!("nats stream add EVENTS --subjects '{name}.>'"))),
        "no hint naming the command that creates the stream:\n{}",
        tail(&switchyard.stderr(), 20)
    );
    let stream = TestStream::create(SHARED, &name, None);
    let report = read_back(&stream, &acked, Duration::from_secs(60));
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn nats_sink_killed_mid_stream_loses_nothing() {
    let name = unique("sy_kill");
    let stream = TestStream::create(SHARED, &name, None);
    let mut switchyard = Switchyard::start(&http_to_nats(SHARED, &format!("{name}.{{source}}")));
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let base = switchyard.url();
    let producer = {
        let (stop, count) = (stop.clone(), count.clone());
        std::thread::spawn(move || {
            send_until(&base, 8, 50, Duration::from_millis(5), 100_000, stop, count)
        })
    };
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= 5_000));
    switchyard.kill9();
    switchyard.restart();
    let at_restart = count.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= at_restart + 5_000));
    stop.store(true, Ordering::SeqCst);
    let acked = producer.join().expect("producer");
    let report = read_back(&stream, &acked, Duration::from_secs(180));
    println!("nats_sink_killed_mid_stream: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn nats_server_restarted_mid_stream_loses_nothing() {
    let mut server = PrivateNats::start();
    let name = unique("sy_restart");
    let stream = TestStream::create(&server.url(), &name, None);
    let switchyard = Switchyard::start(&http_to_nats(&server.url(), &format!("{name}.{{source}}")));
    let (stop, count) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let base = switchyard.url();
    let producer = {
        let (stop, count) = (stop.clone(), count.clone());
        std::thread::spawn(move || {
            send_until(&base, 8, 50, Duration::from_millis(5), 100_000, stop, count)
        })
    };
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= 4_000));
    server.kill();
    let at_kill = count.load(Ordering::SeqCst);
    // Switchyard keeps accepting (its queue is durable) while the server is down.
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= at_kill + 2_000));
    server.spawn();
    assert!(server.store().exists());
    let at_restart = count.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(60), || count
        .load(Ordering::SeqCst)
        >= at_restart + 2_000));
    stop.store(true, Ordering::SeqCst);
    let acked = producer.join().expect("producer");
    let report = read_back(&stream, &acked, Duration::from_secs(180));
    println!("nats_server_restarted_mid_stream: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
}

#[test]
fn nats_stream_full_with_discard_new_is_backpressure_not_loss() {
    let name = unique("sy_full");
    let stream = TestStream::create(SHARED, &name, Some(1_000));
    let switchyard = Switchyard::start(&http_to_nats(SHARED, &format!("{name}.{{source}}")));
    let acked = send_batches(&switchyard.url(), "", 4, 500, 100);
    assert_eq!(acked.len(), 2_000);
    // The stream takes 1000; the rest is refused (maximum messages exceeded), retried.
    assert!(
        wait_until(Duration::from_secs(60), || retried(
            &switchyard.url(),
            "out"
        ) > 0.0),
        "{}",
        tail(&switchyard.stderr(), 20)
    );
    let first = stream.read(Duration::from_secs(5), |got| got.len() >= 1_000);
    assert_eq!(first.len(), 1_000, "the stream holds what its limit allows");
    // Room again: raise the limit; everything refused arrives, nothing lost.
    runtime().block_on(async {
        let js = jetstream::new(async_nats::connect(SHARED).await.unwrap());
        let mut config = js
            .get_stream(&name)
            .await
            .unwrap()
            .cached_info()
            .config
            .clone();
        config.max_messages = -1;
        js.update_stream(config).await.expect("raise the limit");
    });
    let report = read_back(&stream, &acked, Duration::from_secs(120));
    println!("nats_stream_full: {report}");
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 40)
    );
}

fn nats_to_webhook(url: &str, stream: &str, consumer: &str, hook: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"

[sources.events]
type = "nats"
url = "{url}"
stream = "{stream}"
consumer = "{consumer}"
ack_wait = "5s"

[pipelines.deliver]
from = ["events"]
to = ["hook"]

[sinks.hook]
type = "webhook"
url = "{hook}"
secret = "{WEBHOOK_SECRET}"
concurrency = 8
retry = {{ max_attempts = 1000, initial = "10ms", max = "200ms" }}
"#
    )
}

/// Publishes `n` messages (`{"key":"k<i%keys>","seq":<i/keys>}`) and waits for the acks.
fn publish(url: &str, subject: &str, n: u64, keys: u64) -> Vec<Tracked> {
    publish_trusting(url, None, subject, n, keys)
}

/// [`publish`] to a server that requires TLS, trusting the CA in `ca`.
fn publish_trusting(
    url: &str,
    ca: Option<&Path>,
    subject: &str,
    n: u64,
    keys: u64,
) -> Vec<Tracked> {
    runtime().block_on(async {
        let js = jetstream::new(connect(url, ca).await);
        let mut out = Vec::new();
        // In chunks: the context allows a bounded number of PubAcks outstanding.
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let mut acks = Vec::new();
            for i in chunk {
                let (key, seq) = (format!("k{:02}", i % keys), i / keys);
                let body = format!("{{\"key\":\"{key}\",\"seq\":{seq}}}");
                // The ordering key travels in the header a switchyard sink writes it in.
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("switchyard-key", key.as_str());
                let ack = js
                    .publish_with_headers(subject.to_owned(), headers, body.into())
                    .await
                    .expect("publish");
                acks.push((ack, key, seq));
            }
            for (ack, key, seq) in acks {
                let ack = ack.await.expect("puback");
                out.push(Tracked::new(
                    format!("{}/{}", ack.stream, ack.sequence),
                    key,
                    seq,
                ));
            }
        }
        out
    })
}

#[test]
fn nats_source_to_webhook_delivers_everything_and_acks_only_after_delivery() {
    let name = unique("sy_src");
    let stream = TestStream::create(SHARED, &name, None);
    let acked = publish(SHARED, &format!("{name}.in"), 3_000, 30);
    // The webhook refuses everything first: nothing may be acknowledged meanwhile.
    let receiver = WebhookReceiver::start(Behaviour::Status(503));
    let switchyard = Switchyard::start(&nats_to_webhook(SHARED, &name, "sy", &receiver.url()));
    assert!(
        wait_until(Duration::from_secs(30), || receiver.received_count() >= 20),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    let (floor, pending) = stream.ack_floor_and_pending("sy");
    assert_eq!(floor, 0, "acknowledged before delivery");
    assert!(pending > 0, "the consumer holds messages in flight");
    receiver.set_behaviour(Behaviour::FailFraction {
        fraction: 0.05,
        seed: 7,
    });
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("nats_source_to_webhook: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    assert!(
        wait_until(Duration::from_secs(30), || stream
            .ack_floor_and_pending("sy")
            .0
            == 3_000),
        "the consumer's ack floor stays at {:?}",
        stream.ack_floor_and_pending("sy")
    );
}

#[test]
fn nats_source_killed_mid_stream_loses_nothing() {
    let name = unique("sy_srckill");
    let _stream = TestStream::create(SHARED, &name, None);
    let acked = publish(SHARED, &format!("{name}.in"), 20_000, 20);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&nats_to_webhook(SHARED, &name, "sy", &receiver.url()));
    assert!(wait_until(Duration::from_secs(60), || receiver.count() >= 3_000));
    switchyard.kill9();
    switchyard.restart();
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(180)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("nats_source_killed_mid_stream: {report}");
    assert_eq!(report.lost, 0, "{report}");
}

#[test]
fn nats_server_restarted_while_the_source_reads_loses_nothing() {
    let mut server = PrivateNats::start();
    let name = unique("sy_srcrestart");
    let _stream = TestStream::create(&server.url(), &name, None);
    let acked = publish(&server.url(), &format!("{name}.in"), 20_000, 20);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&nats_to_webhook(
        &server.url(),
        &name,
        "sy",
        &receiver.url(),
    ));
    assert!(wait_until(Duration::from_secs(60), || receiver.count() >= 3_000));
    server.kill();
    server.spawn();
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(180)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("nats_server_restarted_while_the_source_reads: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn nats_sink_over_tls_trusts_the_configured_ca() {
    let certs = Certificates::make();
    let server = PrivateNats::start_with_tls(Some((certs.server_cert(), certs.server_key())));
    let name = unique("sy_tls");
    let url = server.tls_url();
    runtime().block_on(async {
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(certs.ca_file())
            .connect(&url)
            .await
            .expect("tls connect");
        jetstream::new(client)
            .create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                ..Default::default()
            })
            .await
            .expect("create stream");
    });
    let config = http_to_nats(&url, &format!("{name}.{{source}}")).replace(
        "timeout = \"2s\"",
        &format!(
            "timeout = \"2s\"\ntls = {{ ca = \"{}\" }}",
            certs.ca_file().display()
        ),
    );
    let switchyard = Switchyard::start(&config);
    let acked = send_batches(&switchyard.url(), "", 4, 250, 50);
    let delivered = runtime().block_on(async {
        let client = async_nats::ConnectOptions::new()
            .add_root_certificates(certs.ca_file())
            .connect(&url)
            .await
            .expect("tls connect");
        let js = jetstream::new(client);
        let stream = js.get_stream(&name).await.expect("stream");
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while out.len() < acked.len() {
            match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(m))) => out.extend(tracked(&m)),
                _ => break,
            }
        }
        out
    });
    let report = check(&acked, &delivered);
    assert_eq!(
        report.lost,
        0,
        "{report}\n{}",
        tail(&switchyard.stderr(), 20)
    );
    assert_eq!(report.reordered, 0, "{report}");
}

#[test]
fn nats_sink_writes_cloudevents_with_ce_headers() {
    let name = unique("sy_ce");
    let stream = TestStream::create(SHARED, &name, None);
    let config = http_to_nats(SHARED, &format!("{name}.{{source}}")).replace(
        "timeout = \"2s\"\n",
        "timeout = \"2s\"\nformat = \"cloudevents\"\n",
    );
    let switchyard = Switchyard::start(&config);
    let answer = runtime().block_on(async {
        client()
            .post(format!("{}/ingest/api", switchyard.url()))
            .header("content-type", "application/json")
            .header("ce-specversion", "1.0")
            .header("ce-id", "order-1")
            .header("ce-source", "https://shop.example/orders")
            .header("ce-type", "com.example.order.paid")
            .header("ce-subject", "order%201")
            .body(r#"{"order":1}"#)
            .send()
            .await
            .expect("switchyard answers")
            .status()
    });
    assert_eq!(answer, 200);
    let message = runtime().block_on(async {
        let js = jetstream::new(async_nats::connect(SHARED).await.expect("nats"));
        let consumer = js
            .get_stream(&name)
            .await
            .expect("stream")
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("messages");
        tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("a message within 30 s")
            .expect("a message")
            .expect("no error")
    });
    let headers = message.headers.as_ref().expect("headers");
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(&message.payload[..], br#"{"order":1}"#, "the data as it is");
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(header("ce-id").as_deref(), Some("order-1"));
    assert_eq!(header("ce-type").as_deref(), Some("com.example.order.paid"));
    assert_eq!(header("ce-subject").as_deref(), Some("order%201"));
    assert_eq!(
        header("switchyard-content-type").as_deref(),
        Some("application/json")
    );
    drop(stream);
}

/// [`nats_to_webhook`] with `tls = { ca = <ca> }` for the source.
fn nats_to_webhook_trusting(url: &str, stream: &str, hook: &str, ca: &Path) -> String {
    nats_to_webhook(url, stream, "sy", hook).replace(
        "ack_wait = \"5s\"",
        &format!("ack_wait = \"5s\"\ntls = {{ ca = \"{}\" }}", ca.display()),
    )
}

#[test]
fn nats_source_over_tls_delivers_everything_trusting_the_configured_ca() {
    let certs = Certificates::make();
    let server = PrivateNats::start_with_tls(Some((certs.server_cert(), certs.server_key())));
    let url = server.tls_url();
    let ca = certs.ca_file();
    let name = unique("sy_srctls");
    let stream = TestStream::create_trusting(&url, Some(&ca), &name, None);
    let acked = publish_trusting(&url, Some(&ca), &format!("{name}.in"), 2_000, 20);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard =
        Switchyard::start(&nats_to_webhook_trusting(&url, &name, &receiver.url(), &ca));
    assert!(
        wait_for_all_delivered(&receiver, &acked, Duration::from_secs(120)),
        "{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&acked, &deliveries(&receiver));
    println!("nats_source_over_tls: {report}");
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
    // Delivered means acknowledged, over the same TLS connection.
    assert!(
        wait_until(Duration::from_secs(30), || stream
            .ack_floor_and_pending("sy")
            .0
            == 2_000),
        "the consumer's ack floor stays at {:?}",
        stream.ack_floor_and_pending("sy")
    );
}

/// A source trusting a CA that did not sign the server's certificate says that the
/// certificate is not trusted, and reads nothing.
#[test]
fn nats_source_with_the_wrong_ca_is_a_certificate_error_not_a_hang() {
    let certs = Certificates::make();
    let server = PrivateNats::start_with_tls(Some((certs.server_cert(), certs.server_key())));
    let url = server.tls_url();
    let name = unique("sy_srcwrong");
    let stream = TestStream::create_trusting(&url, Some(&certs.ca_file()), &name, None);
    publish_trusting(&url, Some(&certs.ca_file()), &format!("{name}.in"), 10, 1);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let switchyard = Switchyard::start(&nats_to_webhook_trusting(
        &url,
        &name,
        &receiver.url(),
        &certs.wrong_ca_file(),
    ));
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .lines()
            .any(|l| l.contains("name=events") && l.contains("certificate"))),
        "no certificate error from the source `events`:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        !switchyard.stderr().contains("connected to nats"),
        "a connection over an untrusted TLS:\n{}",
        tail(&switchyard.stderr(), 30)
    );
    assert_eq!(receiver.count(), 0);
    assert_eq!(stream.ack_floor_and_pending("sy"), (0, 0), "nothing read");
}

/// Publishes `n` messages of the key `generation` with `switchyard-id` set to
/// `<generation>-<i>`, so each event has an id of its own even where a recreated stream
/// repeats sequence numbers.
fn publish_generation(url: &str, subject: &str, generation: &str, n: u64) -> Vec<Tracked> {
    runtime().block_on(async {
        let js = jetstream::new(async_nats::connect(url).await.expect("nats"));
        let mut out = Vec::new();
        for seq in 0..n {
            let id = format!("{generation}-{seq}");
            let body = format!("{{\"key\":\"{generation}\",\"seq\":{seq}}}");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("switchyard-id", id.as_str());
            headers.insert("switchyard-key", generation);
            js.publish_with_headers(subject.to_owned(), headers, body.into())
                .await
                .expect("publish")
                .await
                .expect("puback");
            out.push(Tracked::new(id, generation, seq));
        }
        out
    })
}

#[test]
fn nats_stream_deleted_and_created_again_is_read_from_its_start() {
    let name = unique("sy_recreate");
    let stream = TestStream::create(SHARED, &name, None);
    let subject = format!("{name}.in");
    let first = publish_generation(SHARED, &subject, "first", 10);
    let receiver = WebhookReceiver::start(Behaviour::Ok);
    let mut switchyard = Switchyard::start(&nats_to_webhook(SHARED, &name, "sy", &receiver.url()));
    assert!(
        wait_for_all_delivered(&receiver, &first, Duration::from_secs(60)),
        "{}",
        tail(&switchyard.stderr(), 30)
    );
    assert!(
        wait_until(Duration::from_secs(30), || stream
            .ack_floor_and_pending("sy")
            .0
            == 10),
        "the first stream's messages are acknowledged"
    );
    // A restart records the floor (10) in the data directory and reads on from it.
    switchyard.kill9();
    switchyard.restart();
    assert!(
        wait_until(Duration::from_secs(30), || switchyard
            .stderr()
            .contains("consumer=sy from=11")),
        "{}",
        tail(&switchyard.stderr(), 30)
    );

    // Under the running source: the new stream's messages (sequences 1..=5, all below
    // the old floor) are read.
    stream.recreate();
    let second = publish_generation(SHARED, &subject, "second", 5);
    assert!(
        wait_for_all_delivered(&receiver, &second, Duration::from_secs(60)),
        "the recreated stream's messages were not delivered:\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert!(
        switchyard
            .stderr()
            .contains("reading the new stream from its"),
        "no warning:\n{}",
        tail(&switchyard.stderr(), 40)
    );
    assert!(
        wait_until(Duration::from_secs(30), || stream
            .ack_floor_and_pending("sy")
            .0
            == 5),
        "the new stream's messages are acknowledged: {:?}",
        stream.ack_floor_and_pending("sy")
    );

    // While switchyard is down: the floor recorded for the earlier stream does not apply.
    switchyard.kill9();
    stream.recreate();
    let third = publish_generation(SHARED, &subject, "third", 12);
    switchyard.restart();
    assert!(
        wait_for_all_delivered(&receiver, &third, Duration::from_secs(60)),
        "the stream recreated during the stop was not read from its start:\n{}",
        tail(&switchyard.stderr(), 40)
    );
    let report = check(&third, &deliveries(&receiver));
    assert_eq!(report.lost, 0, "{report}");
    assert_eq!(report.reordered, 0, "{report}");
}
