//! MQTT's side of `bench connectors` (rumqttc, MQTT 3.1.1, QoS 1): a private mosquitto on
//! a free port for this run (no limit on the messages it queues for a session, so it drops
//! nothing: the machine's own broker keeps at most 1000 per session). Two persistent
//! sessions are made before anything is published — one for the raw reader, one with the
//! client id switchyard's source uses — so that each reader later finds all N messages
//! waiting in its session, as a Kafka or JetStream reader finds them in the log.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};

use super::super::kafka::{Message, queue_drain};
use super::{Measured, sy_source, unique};

/// Publishes waiting for their PUBACK, for the raw client (the sink's default `inflight`).
const INFLIGHT: u16 = 100;

pub(super) fn measure(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    messages: &[Message],
) -> anyhow::Result<Measured> {
    let broker = Mosquitto::start(&dir.join("mosquitto"))?;
    let port = broker.port;
    let url = format!("mqtt://127.0.0.1:{port}");
    let raw_topic = unique("swb/raw/");
    let sy_topic = unique("swb/sy/");
    let sy_client = unique("swb-sy-");
    rt.block_on(async {
        subscribe_session(port, "swb-raw-reader", &raw_topic).await?;
        subscribe_session(port, &sy_client, &sy_topic).await
    })?;
    // Each side publishes to a broker that holds no other backlog: the raw messages are
    // read before switchyard's sink runs (mosquitto keeps queued messages in memory, and
    // a second publisher facing the first one's N queued messages measured slower).
    let raw_publish = rt.block_on(publish(port, &raw_topic, messages))?;
    let raw_read = rt.block_on(read(port, "swb-raw-reader", messages.len()))?;
    let sink = format!("type = \"mqtt\"\nurl = \"{url}\"\ntopic = \"{sy_topic}\"\n");
    let sy_sink = queue_drain(rt, bin, &dir.join("sink"), &sink, messages)?;
    let source = format!(
        "type = \"mqtt\"\nurl = \"{url}\"\ntopics = [\"{sy_topic}\"]\nclient_id = \"{sy_client}\"\n"
    );
    let sy_source = sy_source(rt, bin, dir, &source, messages.len())?;
    drop(broker);
    Ok(Measured {
        raw_publish,
        sy_sink,
        raw_read,
        sy_source,
    })
}

/// A mosquitto of this run, stopped on drop.
struct Mosquitto {
    port: u16,
    child: Child,
}

impl Mosquitto {
    fn start(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let port = super::super::process::free_addr()?.port();
        let config = dir.join("mosquitto.conf");
        std::fs::write(
            &config,
            format!(
                "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n\
                 max_queued_messages 0\nmax_inflight_messages {INFLIGHT}\n\
                 log_dest file {}/mosquitto.log\n",
                dir.display()
            ),
        )?;
        // Debian installs it in /usr/sbin, which a user's PATH may lack.
        let bin = ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).is_file())
            .unwrap_or("mosquitto");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting mosquitto (Debian's package mosquitto)")?;
        let broker = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "mosquitto did not listen on {port} (log in {})",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(broker)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn options(port: u16, client_id: &str, clean: bool) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_clean_session(clean)
        .set_inflight(INFLIGHT)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20)
        .set_manual_acks(true);
    options
}

/// Polls `events` until `until` says so (60 s without one is an error).
async fn poll_until(
    events: &mut EventLoop,
    mut until: impl FnMut(&Event) -> bool,
) -> anyhow::Result<()> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), events.poll())
            .await
            .context("mosquitto said nothing for 60 s")?
            .context("the MQTT connection")?;
        if until(&event) {
            return Ok(());
        }
    }
}

/// Makes the persistent session `client_id` with a QoS 1 subscription to `topic`.
async fn subscribe_session(port: u16, client_id: &str, topic: &str) -> anyhow::Result<()> {
    let (client, mut events) = AsyncClient::new(options(port, client_id, false), 16);
    client.subscribe(topic, QoS::AtLeastOnce).await?;
    poll_until(&mut events, |e| {
        matches!(e, Event::Incoming(Incoming::SubAck(_)))
    })
    .await
    .with_context(|| format!("subscribing {client_id} to {topic}"))?;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while events.poll().await.is_ok() {}
    })
    .await;
    Ok(())
}

/// Events/s of rumqttc publishing `messages` to `topic` at QoS 1 ([`INFLIGHT`] awaiting
/// their PUBACK, one connection, as the sink).
async fn publish(port: u16, topic: &str, messages: &[Message]) -> anyhow::Result<f64> {
    let (client, mut events) = AsyncClient::new(options(port, "swb-raw-publisher", true), 256);
    let payloads: Vec<Vec<u8>> = messages.iter().map(|m| m.payload.to_vec()).collect();
    let start = Instant::now();
    let topic = topic.to_owned();
    let sender = tokio::spawn(async move {
        for payload in payloads {
            client
                .publish(&topic, QoS::AtLeastOnce, false, payload)
                .await?;
        }
        anyhow::Ok(client)
    });
    let mut acked = 0;
    poll_until(&mut events, |e| {
        if matches!(e, Event::Incoming(Incoming::PubAck(_))) {
            acked += 1;
        }
        acked == messages.len()
    })
    .await
    .with_context(|| format!("PUBACKs: {acked} of {}", messages.len()))?;
    let rate = messages.len() as f64 / start.elapsed().as_secs_f64();
    let client = sender.await.context("the publisher panicked")??;
    let _ = client.disconnect().await;
    Ok(rate)
}

/// Events/s of the persistent session `client_id` receiving the `n` messages queued for
/// it (each acked once received, as a QoS 1 subscriber must).
async fn read(port: u16, client_id: &str, n: usize) -> anyhow::Result<f64> {
    // The event loop takes requests (the acks) only between the messages it has already
    // read, so the request channel holds up to all of them.
    let (client, mut events) = AsyncClient::new(options(port, client_id, false), n + 16);
    let mut read = 0;
    let mut start = None;
    while read < n {
        let event = tokio::time::timeout(Duration::from_secs(60), events.poll())
            .await
            .context("no message for 60 s")?
            .context("the MQTT connection")?;
        if let Event::Incoming(Incoming::Publish(publish)) = event {
            start.get_or_insert_with(Instant::now);
            read += 1;
            client.try_ack(&publish).context("acking")?;
        }
    }
    let start = start.unwrap_or_else(Instant::now);
    let _ = client.disconnect().await;
    Ok((n - 1).max(1) as f64 / start.elapsed().as_secs_f64())
}
