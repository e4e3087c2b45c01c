//! `bench connectors`: each broker connector next to the broker's own client crate, on the
//! same broker, with the same N keyed JSON messages.
//!
//! Per broker (NATS JetStream, Redis Streams, RabbitMQ, MQTT):
//! 1. sink: the raw client publishes the N messages (4 tasks, up to 256 unconfirmed each:
//!    JetStream PubAcks / pipelined XADD replies / publisher confirms; MQTT: one
//!    connection with 100 QoS 1 publishes awaiting their PUBACK, as the sink) vs switchyard draining a durable queue
//!    that already holds the same messages into the sink (from its first delivery to the
//!    last, as `bench kafka` does). Target ≥ 0.8 of the raw client.
//! 2. source: the raw client reads the N messages the raw publisher wrote (a JetStream
//!    pull consumer acking each batch, XREADGROUP + XACK per batch, a RabbitMQ consumer
//!    with a prefetch of 1000 acking every 500, an MQTT persistent session acking each
//!    message) vs switchyard's source
//!    into a `null` sink (from the first completed event to the N-th). No target.

use std::collections::VecDeque;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use futures::StreamExt as _;

use super::kafka::{
    Message, SyRun, queue_drain, rate_from_first, source_to_null_config, start_switchyard,
};
use super::load::json_body;
use super::report::{Op, Row, Target};
use super::{build, report};

mod mqtt;
mod rabbitmq;

/// switchyard's queue → sink / the raw client publishing the same messages.
const TARGET_SINK: f64 = 0.8;
/// Tasks publishing at once, for the raw clients (the sinks' default concurrency is 8
/// lanes; 4 tasks with 256 unconfirmed each keep the broker as busy).
const PUBLISHERS: usize = 4;
/// Unconfirmed publishes per raw task.
const WINDOW: usize = 256;
/// Messages per read of the raw consumers.
const READ_BATCH: usize = 1000;

/// What the sinks write beside a message's key and payload — its event id, source, kind
/// and content type — the raw publishers write too, under the same names, so both sides
/// send the same messages: the ratio is switchyard's cost over the client's, not the
/// price of the envelope. The events of the drain come from the http source `bench`.
pub(super) const ENVELOPE_SOURCE: &str = "bench";
pub(super) const ENVELOPE_KIND: &str = "message";
pub(super) const ENVELOPE_CONTENT_TYPE: &str = "application/json";

/// An event id shaped like the http source's (36 characters, unique per message).
pub(super) fn envelope_id(i: usize) -> String {
    format!("0193a1b2-c3d4-7e5f-8a6b-{i:012x}")
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Broker {
    Nats,
    Redis,
    Rabbitmq,
    Mqtt,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Nats => "NATS",
            Broker::Redis => "Redis",
            Broker::Rabbitmq => "RabbitMQ",
            Broker::Mqtt => "MQTT",
        }
    }

    /// The client crate of the raw side.
    fn client(self) -> &'static str {
        match self {
            Broker::Nats => "async-nats",
            Broker::Redis => "redis-rs",
            Broker::Rabbitmq => "lapin",
            Broker::Mqtt => "rumqttc",
        }
    }
}

/// Options of `bench connectors` (help text: on `Bench::Connectors`).
#[derive(Args)]
pub struct ConnectorsArgs {
    /// Messages per side.
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    /// Size of each JSON payload in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1024)]
    keys: usize,
    /// Only these brokers, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Broker>,
    /// NATS server with JetStream.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Redis server.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
    /// RabbitMQ server (AMQP 0-9-1). MQTT runs on a private mosquitto started for the run.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq_url: String,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<std::path::PathBuf>,
    /// Keep the temporary directory (logs, data) and print its path.
    #[arg(long)]
    keep: bool,
}

/// One broker's four figures.
struct Measured {
    raw_publish: f64,
    sy_sink: SyRun,
    raw_read: f64,
    sy_source: SyRun,
}

pub fn run(args: ConnectorsArgs) -> anyhow::Result<Vec<Row>> {
    let switchyard = build::switchyard_binary(args.bin.as_deref())?;
    let tmp = super::temp_dir("switchyard-bench-connectors-", None, args.keep)?;
    let root = tmp.path().to_path_buf();
    let messages: Vec<Message> = (0..args.events)
        .map(|i| Message {
            key: format!("key-{:05}", i % args.keys.max(1)),
            payload: json_body(i % 64, i as u64, args.body_bytes, None),
        })
        .collect();
    println!("# switchyard bench connectors");
    println!("machine:    {}", report::machine());
    println!("switchyard: {}", switchyard.display());
    println!(
        "messages:   {} × {}-byte JSON, {} keys; raw publishers: {PUBLISHERS} tasks × {WINDOW} unconfirmed",
        args.events, args.body_bytes, args.keys
    );
    println!(
        "reproduce:  {}",
        report::reproduce_command(&std::env::args().skip(1).collect::<Vec<_>>())
    );
    println!();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let brokers: Vec<Broker> = if args.only.is_empty() {
        Broker::value_variants().to_vec()
    } else {
        args.only.clone()
    };
    let note = format!("{} × {} B messages", args.events, args.body_bytes);
    let mut rows = Vec::new();
    for broker in brokers {
        let dir = root.join(broker.name().to_lowercase());
        let measured = match broker {
            Broker::Nats => nats(&rt, &args, &switchyard, &dir, &messages),
            Broker::Redis => redis_streams(&rt, &args, &switchyard, &dir, &messages),
            Broker::Rabbitmq => rabbitmq::measure(&rt, &args, &switchyard, &dir, &messages),
            Broker::Mqtt => mqtt::measure(&rt, &switchyard, &dir, &messages),
        };
        let name = broker.name();
        let m = match measured {
            Ok(m) => m,
            Err(e) => {
                println!("{name}: {e:#}");
                rows.push(Row::error(
                    "connectors",
                    &format!("queue → {name} sink events/s"),
                    &format!("{e:#}"),
                ));
                continue;
            }
        };
        println!("{:<46} {:>12}", name, "events/s");
        println!(
            "{:<46} {:>12.0}",
            "  sink    raw client publishing", m.raw_publish
        );
        println!(
            "{:<46} {:>12.0}",
            "  sink    switchyard queue → sink", m.sy_sink.rate
        );
        println!(
            "{:<46} {:>12.0}",
            "  source  raw client reading", m.raw_read
        );
        println!(
            "{:<46} {:>12.0}",
            "  source  switchyard source → null sink", m.sy_source.rate
        );
        println!(
            "{}",
            report::ratio_line(
                &format!("{name} queue → sink / raw"),
                m.sy_sink.rate / m.raw_publish,
                TARGET_SINK
            )
        );
        println!(
            "{:<34} {:>6.2}   (no target)",
            format!("{name} source / raw reader"),
            m.sy_source.rate / m.raw_read
        );
        println!();
        let n = args.events as f64;
        let row = |metric: String, sy: SyRun| {
            Row::new("connectors", &metric)
                .value(sy.rate)
                .cpu(sy.cpu_s, n)
                .rss_kib(sy.peak_rss_kib)
                .note(note.clone())
        };
        let client = broker.client();
        rows.push(
            row(format!("queue → {name} sink events/s"), m.sy_sink)
                .baseline(&format!("raw {client} publisher"), m.raw_publish)
                .target(Target::ratio(Op::AtLeast, TARGET_SINK)),
        );
        rows.push(
            row(format!("{name} source → null events/s"), m.sy_source)
                .baseline(&format!("raw {client} reader"), m.raw_read),
        );
    }
    if args.keep {
        println!("kept {}", root.display());
    }
    Ok(rows)
}

/// A name of this run, for streams and keys.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}{}{nanos}", std::process::id())
}

/// switchyard's source of `source` into a null sink, `n` events (events/s from the first
/// completed to the n-th).
fn sy_source(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    source: &str,
    n: usize,
) -> anyhow::Result<SyRun> {
    let (process, addr) =
        start_switchyard(bin, &dir.join("source"), &source_to_null_config(source))?;
    let rate = rt.block_on(rate_from_first(
        addr,
        "switchyard_pipeline_events_total",
        "outcome=\"completed\"",
        n as f64,
    ))?;
    let run = SyRun::of(rate, process.pid());
    process.stop(Duration::from_secs(10))?;
    Ok(run)
}

fn nats(
    rt: &tokio::runtime::Runtime,
    args: &ConnectorsArgs,
    bin: &Path,
    dir: &Path,
    messages: &[Message],
) -> anyhow::Result<Measured> {
    let url = args.nats_url.as_str();
    let raw = unique("swb_raw_");
    let sy = unique("swb_sy_");
    let js = rt.block_on(async {
        let js = jetstream::new(
            async_nats::connect(url)
                .await
                .with_context(|| format!("connecting to NATS at {url}"))?,
        );
        for name in [&raw, &sy] {
            js.create_stream(stream::Config {
                name: name.clone(),
                subjects: vec![format!("{name}.>")],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("creating the JetStream stream {name}"))?;
        }
        anyhow::Ok(js)
    })?;
    let measured = (|| {
        let raw_publish = rt.block_on(nats_publish(url, &format!("{raw}.bench"), messages))?;
        let sink = format!("type = \"nats\"\nurl = \"{url}\"\nsubject = \"{sy}.{{source}}\"\n");
        let sy_sink = queue_drain(rt, bin, &dir.join("sink"), &sink, messages)?;
        let raw_read = rt.block_on(nats_read(&js, &raw, messages.len()))?;
        let source = format!(
            "type = \"nats\"\nurl = \"{url}\"\nstream = \"{raw}\"\nconsumer = \"switchyard\"\n"
        );
        let sy_source = sy_source(rt, bin, dir, &source, messages.len())?;
        anyhow::Ok(Measured {
            raw_publish,
            sy_sink,
            raw_read,
            sy_source,
        })
    })();
    rt.block_on(async {
        for name in [&raw, &sy] {
            let _ = js.delete_stream(name).await;
        }
    });
    measured
}

/// Events/s of async-nats publishing `messages` to `subject` (PubAcks awaited, each
/// message with its `Nats-Msg-Id`, as the sink sends them).
async fn nats_publish(url: &str, subject: &str, messages: &[Message]) -> anyhow::Result<f64> {
    let js = jetstream::new(async_nats::connect(url).await?);
    let chunk = messages.len().div_ceil(PUBLISHERS).max(1);
    // Made before the clock starts: the ids are the events', not the client's work.
    let parts: Vec<Vec<(String, String, Bytes)>> = messages
        .chunks(chunk)
        .enumerate()
        .map(|(t, part)| {
            part.iter()
                .enumerate()
                .map(|(i, m)| (envelope_id(t * chunk + i), m.key.clone(), m.payload.clone()))
                .collect()
        })
        .collect();
    let start = Instant::now();
    let tasks = parts.into_iter().map(|part| {
        let (js, subject) = (js.clone(), subject.to_owned());
        tokio::spawn(async move {
            let mut acks = VecDeque::with_capacity(WINDOW);
            for (id, key, payload) in part {
                // The headers the nats sink writes (docs/decisions/0027).
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("{ENVELOPE_SOURCE}/{id}").as_str());
                headers.insert("switchyard-id", id.as_str());
                headers.insert("switchyard-source", ENVELOPE_SOURCE);
                headers.insert("switchyard-kind", ENVELOPE_KIND);
                headers.insert("switchyard-content-type", ENVELOPE_CONTENT_TYPE);
                headers.insert("switchyard-key", key.as_str());
                let ack = js
                    .publish_with_headers(subject.clone(), headers, payload)
                    .await
                    .context("publishing")?;
                acks.push_back(ack);
                if acks.len() >= WINDOW
                    && let Some(ack) = acks.pop_front()
                {
                    ack.await.context("a PubAck")?;
                }
            }
            for ack in acks {
                ack.await.context("a PubAck")?;
            }
            anyhow::Ok(())
        })
    });
    for task in futures::future::join_all(tasks).await {
        task.context("a publisher panicked")??;
    }
    Ok(messages.len() as f64 / start.elapsed().as_secs_f64())
}

/// Events/s of a durable pull consumer reading the `n` messages of `stream`, acking the
/// last of each batch (AckPolicy::All, as switchyard's source).
async fn nats_read(js: &jetstream::Context, stream: &str, n: usize) -> anyhow::Result<f64> {
    let consumer: consumer::PullConsumer = js
        .get_stream(stream)
        .await?
        .create_consumer(consumer::pull::Config {
            durable_name: Some("raw".to_owned()),
            ack_policy: consumer::AckPolicy::All,
            ..Default::default()
        })
        .await
        .context("creating the raw consumer")?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(READ_BATCH)
        .messages()
        .await?;
    let mut read = 0;
    let mut start = None;
    while read < n {
        let m = tokio::time::timeout(Duration::from_secs(60), messages.next())
            .await
            .context("no message for 60 s")?
            .context("the pull stream ended")?
            .map_err(|e| anyhow::anyhow!("pulling: {e}"))?;
        start.get_or_insert_with(Instant::now);
        read += 1;
        if read % READ_BATCH == 0 || read == n {
            m.double_ack()
                .await
                .map_err(|e| anyhow::anyhow!("acking: {e}"))?;
        }
    }
    let start = start.unwrap_or_else(Instant::now);
    Ok((n - 1).max(1) as f64 / start.elapsed().as_secs_f64())
}

fn redis_streams(
    rt: &tokio::runtime::Runtime,
    args: &ConnectorsArgs,
    bin: &Path,
    dir: &Path,
    messages: &[Message],
) -> anyhow::Result<Measured> {
    let url = args.redis_url.as_str();
    let client = redis::Client::open(url).with_context(|| format!("the Redis URL {url}"))?;
    let raw = unique("swb:raw:");
    let sy = unique("swb:sy:");
    let measured = (|| {
        let raw_publish = rt.block_on(redis_publish(&client, &raw, messages))?;
        let sink = format!("type = \"redis\"\nurl = \"{url}\"\nstream = \"{sy}\"\n");
        let sy_sink = queue_drain(rt, bin, &dir.join("sink"), &sink, messages)?;
        let raw_read = rt.block_on(redis_read(&client, &raw, messages.len()))?;
        let source = format!(
            "type = \"redis\"\nurl = \"{url}\"\nstream = \"{raw}\"\ngroup = \"switchyard\"\ncreate = true\n"
        );
        let sy_source = sy_source(rt, bin, dir, &source, messages.len())?;
        anyhow::Ok(Measured {
            raw_publish,
            sy_sink,
            raw_read,
            sy_source,
        })
    })();
    rt.block_on(async {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            let _ = redis::cmd("DEL")
                .arg(&raw)
                .arg(&sy)
                .query_async::<()>(&mut conn)
                .await;
        }
    });
    measured
}

/// Events/s of redis-rs adding `messages` to `key` with pipelined XADDs ([`WINDOW`] per
/// round trip, [`PUBLISHERS`] connections).
async fn redis_publish(
    client: &redis::Client,
    key: &str,
    messages: &[Message],
) -> anyhow::Result<f64> {
    let chunk = messages.len().div_ceil(PUBLISHERS).max(1);
    let mut parts = Vec::new();
    for (t, part) in messages.chunks(chunk).enumerate() {
        let conn = client.get_multiplexed_async_connection().await?;
        let part: Vec<(String, String, Bytes)> = part
            .iter()
            .enumerate()
            .map(|(i, m)| (envelope_id(t * chunk + i), m.key.clone(), m.payload.clone()))
            .collect();
        parts.push((conn, part));
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut conn, part) in parts {
        let key = key.to_owned();
        tasks.push(tokio::spawn(async move {
            for window in part.chunks(WINDOW) {
                let mut pipe = redis::pipe();
                for (id, k, payload) in window {
                    // The fields the redis sink writes (docs/decisions/0028).
                    pipe.cmd("XADD")
                        .arg(&key)
                        .arg("*")
                        .arg("id")
                        .arg(id)
                        .arg("source")
                        .arg(ENVELOPE_SOURCE)
                        .arg("kind")
                        .arg(ENVELOPE_KIND)
                        .arg("content-type")
                        .arg(ENVELOPE_CONTENT_TYPE)
                        .arg("key")
                        .arg(k)
                        .arg("payload")
                        .arg(&payload[..]);
                }
                let ids: Vec<String> = pipe.query_async(&mut conn).await.context("XADD")?;
                if ids.len() != window.len() {
                    bail!("{} XADD replies for {} entries", ids.len(), window.len());
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await.context("a publisher panicked")??;
    }
    Ok(messages.len() as f64 / start.elapsed().as_secs_f64())
}

/// Events/s of one consumer-group member reading the `n` entries of `key`
/// ([`READ_BATCH`] per XREADGROUP, XACK per batch).
async fn redis_read(client: &redis::Client, key: &str, n: usize) -> anyhow::Result<f64> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg("raw")
        .arg("0")
        .query_async::<()>(&mut conn)
        .await
        .context("XGROUP CREATE")?;
    let mut read = 0;
    let mut start = None;
    while read < n {
        let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg("raw")
            .arg("reader")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(&mut conn)
            .await
            .context("XREADGROUP")?;
        let ids: Vec<String> = reply
            .keys
            .into_iter()
            .flat_map(|k| k.ids.into_iter().map(|e| e.id))
            .collect();
        if ids.is_empty() {
            bail!("the stream {key} ended after {read} of {n} entries");
        }
        start.get_or_insert_with(Instant::now);
        read += ids.len();
        redis::cmd("XACK")
            .arg(key)
            .arg("raw")
            .arg(&ids)
            .query_async::<()>(&mut conn)
            .await
            .context("XACK")?;
    }
    let start = start.unwrap_or_else(Instant::now);
    Ok(n as f64 / start.elapsed().as_secs_f64())
}
