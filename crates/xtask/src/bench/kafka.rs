//! `cargo xtask bench kafka`: switchyard against a raw rdkafka client on the same tansu
//! broker, in the same run, with the same messages.
//!
//! 1. produce: a raw rdkafka producer (idempotent, acks=all, linger 5 ms — the sink's
//!    settings), once connected (one warm-up message), sends N keyed JSON messages with
//!    the sink's four headers; then
//!    `switchyard run` ingests the same N events over HTTP (NDJSON batches of one key
//!    each, so per-key order holds) into a pipeline to a Kafka sink. Each figure is
//!    events/s from the first send to the last delivery report (switchyard: to its
//!    `delivered` counter reaching N, so it includes ingest, fsync and the pipeline).
//!    Then the same N events wait in a durable switchyard queue (put there over HTTP by
//!    a first run) and a second run drains the queue into a Kafka sink: events/s from
//!    its first delivery to the N-th, the queue → Kafka path without HTTP ingest. The
//!    target ratio (≥ 0.9, `docs/design.md`, "Benchmarks") is checked on that one;
//!    the HTTP figure is printed next to it.
//! 2. consume: a raw rdkafka consumer (a group member, manual commits off) reads the N
//!    messages back; then switchyard's Kafka source reads them into a `null` sink (the
//!    raw consumer keeps nothing either). Each figure is events/s from the first
//!    message to the N-th (switchyard: its pipeline's `completed` counter), so the ~3 s
//!    group join of tansu is left out of both. Both read `--consume-rounds` times in
//!    alternation, each time in a new group; the figures are those of the round with the
//!    median ratio. Target: ≥ 0.5 of the raw consumer.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Args;
use http::{Request, header};
use http_body_util::{BodyExt as _, Full};
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::load::json_body;
use super::process::{Profile, ServerProcess, free_addr};
use super::report::{Op, Row, Target};
use super::{build, procfs, report};

/// switchyard / raw producer, on the queue → Kafka path (`docs/design.md`, "Benchmarks").
const TARGET_PRODUCE: f64 = 0.9;
/// switchyard's Kafka source into a discarded sink / raw consumer.
const TARGET_CONSUME: f64 = 0.5;
/// Events per NDJSON request switchyard is sent.
const BATCH: usize = 100;
/// Concurrent HTTP connections ingesting into switchyard.
const CONNECTIONS: usize = 16;
const PARTITIONS: u32 = 4;

/// Options of `bench kafka` (help text: on `Bench::Kafka`).
#[derive(Args)]
pub struct KafkaArgs {
    /// Messages per side (at ~200k/s a run of 200k lasts one second, too short to be
    /// steady on a shared machine).
    #[arg(long, default_value_t = 500_000)]
    events: usize,
    /// Size of each JSON payload in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1024)]
    keys: usize,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<std::path::PathBuf>,
    /// Times to read the messages back with each consumer, alternating (a fresh group
    /// each time); the consume figures are those of the round with the median ratio. One
    /// read of 500k messages lasts about half a second, so a single round moves with
    /// whatever else the machine does in it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    consume_rounds: u32,
    /// Keep the temporary directory (logs, data) and print its path.
    #[arg(long)]
    keep: bool,
}

pub(super) struct Message {
    pub(super) key: String,
    pub(super) payload: Bytes,
}

/// One switchyard measurement: events/s, and the CPU seconds and peak RSS of the process.
#[derive(Clone, Copy)]
pub(super) struct SyRun {
    pub(super) rate: f64,
    pub(super) cpu_s: f64,
    pub(super) peak_rss_kib: u64,
}

impl SyRun {
    pub(super) fn of(rate: f64, pid: u32) -> Self {
        Self {
            rate,
            cpu_s: procfs::cpu_seconds(pid).unwrap_or(f64::NAN),
            peak_rss_kib: procfs::peak_rss_kib(pid).unwrap_or(0),
        }
    }
}

pub fn run(args: KafkaArgs) -> anyhow::Result<Vec<Row>> {
    let tansu = build::workspace_root().join(".tools/bin/tansu");
    if !tansu.is_file() {
        bail!(
            "the tansu broker is missing ({}); run scripts/install-tansu.sh",
            tansu.display()
        );
    }
    let switchyard = build::switchyard_binary(args.bin.as_deref())?;
    let tmp = super::temp_dir("switchyard-bench-kafka-", None, args.keep)?;
    let root = tmp.path().to_path_buf();
    let broker_addr = free_addr()?;
    let brokers = broker_addr.to_string();
    let url = format!("tcp://{brokers}");
    let mut cmd = Command::new(&tansu);
    cmd.args([
        "broker",
        "--listener-url",
        &url,
        "--advertised-listener-url",
        &url,
    ])
    .env("RUST_LOG", "warn");
    let log = root.join("tansu.log");
    let mut broker = ServerProcess::spawn("tansu", cmd, &log)?;
    broker.wait_ready(broker_addr, Duration::from_secs(30), &log)?;
    for topic in ["bench-raw", "bench-switchyard", "bench-switchyard-queue"] {
        let out = Command::new(&tansu)
            .args(["topic", "create", topic, "--partitions"])
            .arg(PARTITIONS.to_string())
            .args(["--broker", &url])
            .output()
            .context("running tansu topic create")?;
        if !out.status.success() {
            bail!(
                "tansu topic create {topic}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let messages: Vec<Message> = (0..args.events)
        .map(|i| Message {
            key: format!("key-{:05}", i % args.keys.max(1)),
            payload: json_body(i % 64, i as u64, args.body_bytes, None),
        })
        .collect();

    println!("# switchyard bench kafka");
    println!("machine:    {}", report::machine());
    println!(
        "broker:     tansu 0.6.0 (memory storage) on {brokers}, {PARTITIONS} partitions per topic"
    );
    println!("switchyard: {}", switchyard.display());
    println!(
        "messages:   {} × {}-byte JSON, {} keys; producers idempotent, acks=all, linger 5 ms",
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
    let raw_produce = rt.block_on(raw_producer(&brokers, &messages))?;
    let sy_produce = switchyard_produce(&rt, &switchyard, &root, &brokers, &messages)?;
    let sy_queue = switchyard_queue_produce(&rt, &switchyard, &root, &brokers, &messages)?;
    let mut consumed: Vec<(f64, SyRun)> = Vec::new();
    for round in 1..=args.consume_rounds {
        // Which consumer reads first alternates, so neither always gets the quieter
        // half of a round.
        let (raw, sy) = if round % 2 == 1 {
            let raw = raw_consumer(&brokers, args.events, round)?;
            (
                raw,
                switchyard_consume(&rt, &switchyard, &root, &brokers, args.events, round)?,
            )
        } else {
            let sy = switchyard_consume(&rt, &switchyard, &root, &brokers, args.events, round)?;
            (raw_consumer(&brokers, args.events, round)?, sy)
        };
        if args.consume_rounds > 1 {
            println!(
                "consume round {round}: raw {raw:.0}/s, switchyard {:.0}/s ({:.2})",
                sy.rate,
                sy.rate / raw
            );
        }
        consumed.push((raw, sy));
    }
    broker.stop(Duration::from_secs(5))?;
    // The round of the median ratio (the ratio is what the alternation keeps fair), with
    // its own rates, CPU and memory.
    consumed.sort_by(|a, b| (a.1.rate / a.0).total_cmp(&(b.1.rate / b.0)));
    let (raw_consume, sy_consume) = consumed[consumed.len() / 2];
    let consume_note = if args.consume_rounds > 1 {
        format!(", the median of {} rounds", args.consume_rounds)
    } else {
        String::new()
    };

    println!("{:<44} {:>12}", "", "events/s");
    println!(
        "{:<44} {:>12.0}",
        "produce  raw rdkafka FutureProducer", raw_produce
    );
    println!(
        "{:<44} {:>12.0}",
        "produce  switchyard HTTP → Kafka sink", sy_produce.rate
    );
    println!(
        "{:<44} {:>12.0}",
        "produce  switchyard queue → Kafka sink", sy_queue.rate
    );
    if args.consume_rounds > 1 {
        println!();
    }
    println!(
        "{:<44} {:>12.0}",
        "consume  raw rdkafka BaseConsumer", raw_consume
    );
    println!(
        "{:<44} {:>12.0}",
        "consume  switchyard Kafka source → null sink", sy_consume.rate
    );
    println!();
    println!(
        "{}",
        report::ratio_line(
            "switchyard queue → Kafka / raw",
            sy_queue.rate / raw_produce,
            TARGET_PRODUCE
        )
    );
    println!(
        "{:<34} {:>6.2}   (no target: includes HTTP ingest with fsync)",
        "switchyard HTTP → Kafka / raw",
        sy_produce.rate / raw_produce
    );
    println!(
        "{}",
        report::ratio_line(
            "switchyard source / raw consumer",
            sy_consume.rate / raw_consume,
            TARGET_CONSUME
        )
    );
    if args.keep {
        println!("kept {}", root.display());
    }
    let n = args.events as f64;
    let note = format!("{} × {} B messages, tansu", args.events, args.body_bytes);
    let row = |metric: &str, sy: SyRun| {
        Row::new("kafka", metric)
            .value(sy.rate)
            .cpu(sy.cpu_s, n)
            .rss_kib(sy.peak_rss_kib)
            .note(note.clone())
    };
    Ok(vec![
        row("queue → Kafka sink events/s", sy_queue)
            .baseline("raw rdkafka producer", raw_produce)
            .target(Target::ratio(Op::AtLeast, TARGET_PRODUCE)),
        row("HTTP ingest → Kafka sink events/s", sy_produce)
            .baseline("raw rdkafka producer", raw_produce),
        row("Kafka source → null events/s", sy_consume)
            .note(format!("{note}{consume_note}"))
            .baseline("raw rdkafka consumer", raw_consume)
            .target(Target::ratio(Op::AtLeast, TARGET_CONSUME)),
    ])
}

fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "60000")
        .create()
        .context("creating the raw producer")
}

/// Events/s of a raw producer sending `messages` to `bench-raw`.
async fn raw_producer(brokers: &str, messages: &[Message]) -> anyhow::Result<f64> {
    let producer = producer(brokers)?;
    // Connected, with the topic's metadata and a producer id, before the clock starts:
    // switchyard's figures start at its first delivery, so neither pays for that.
    producer
        .send(
            FutureRecord::to("bench-raw").key("warm-up").payload("{}"),
            Duration::from_secs(30),
        )
        .await
        .map_err(|(e, _)| anyhow::anyhow!("raw producer: the warm-up message failed: {e}"))?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let id = format!("raw-{i}");
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "switchyard-id",
                value: Some(id.as_str()),
            })
            .insert(Header {
                key: "switchyard-source",
                value: Some("bench"),
            })
            .insert(Header {
                key: "switchyard-kind",
                value: Some("message"),
            })
            .insert(Header {
                key: "switchyard-content-type",
                value: Some("application/json"),
            });
        let mut record = FutureRecord::to("bench-raw")
            .key(m.key.as_str())
            .payload(&m.payload[..])
            .headers(headers);
        loop {
            match producer.send_result(record) {
                Ok(f) => {
                    pending.push(f);
                    break;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err((e, _)) => bail!("raw producer: {e}"),
            }
        }
    }
    for f in pending {
        if let Err((e, _)) = f.await.context("delivery report")? {
            bail!("raw producer: a message failed: {e}");
        }
    }
    Ok(messages.len() as f64 / started.elapsed().as_secs_f64())
}

/// Events/s of a raw group consumer reading `n` messages of `bench-raw` (a group of
/// its own for each `round`).
fn raw_consumer(brokers: &str, n: usize, round: u32) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-raw-consumer-{round}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the raw consumer")?;
    consumer.subscribe(&["bench-raw"])?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut first = None;
    let mut got = 0;
    while got < n {
        if Instant::now() > deadline {
            bail!("raw consumer: only {got} of {n} messages in 5 minutes");
        }
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            got += 1;
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |f| f.elapsed());
    Ok((n - 1) as f64 / elapsed.as_secs_f64())
}

pub(super) fn start_switchyard(
    bin: &Path,
    dir: &Path,
    config: &str,
) -> anyhow::Result<(ServerProcess, SocketAddr)> {
    std::fs::create_dir_all(dir)?;
    let addr = free_addr()?;
    let config = config
        .replace("{listen}", &addr.to_string())
        .replace("{data_dir}", &dir.join("data").display().to_string());
    let path = dir.join("switchyard.toml");
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("-c").arg(&path).env("RUST_LOG", "warn");
    let log = dir.join("switchyard.log");
    let mut process = ServerProcess::spawn("switchyard", cmd, &log)?;
    process.wait_ready(addr, Duration::from_secs(30), &log)?;
    Ok((process, addr))
}

/// Events/s of switchyard ingesting `messages` over HTTP into a Kafka sink.
fn switchyard_produce(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    root: &Path,
    brokers: &str,
    messages: &[Message],
) -> anyhow::Result<SyRun> {
    let config = produce_config(brokers);
    let (process, addr) = start_switchyard(bin, &root.join("produce"), &config)?;
    let started = Instant::now();
    rt.block_on(ingest_until_delivered(addr, messages))?;
    let rate = messages.len() as f64 / started.elapsed().as_secs_f64();
    let run = SyRun::of(rate, process.pid());
    process.stop(Duration::from_secs(10))?;
    Ok(run)
}

/// Events/s of switchyard draining a queue that holds `messages` into a Kafka sink
/// (from its first delivery to the last).
fn switchyard_queue_produce(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    root: &Path,
    brokers: &str,
    messages: &[Message],
) -> anyhow::Result<SyRun> {
    let sink = format!(
        "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopic = \"bench-switchyard-queue\"\nlinger = \"5ms\"\n"
    );
    queue_drain(rt, bin, &root.join("queue-produce"), &sink, messages)
}

/// Events/s of switchyard draining a queue that holds `messages` into the sink whose
/// table is `sink` (from its first delivery to the last). A first run puts them into
/// the queue over HTTP; the second, on the same data directory, reads the queue into
/// the sink.
pub(super) fn queue_drain(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    sink: &str,
    messages: &[Message],
) -> anyhow::Result<SyRun> {
    let (process, addr) = start_switchyard(bin, dir, &queue_fill_config(messages.len()))?;
    rt.block_on(ingest_until_delivered(addr, messages))?;
    process.stop(Duration::from_secs(10))?;

    let (process, addr) = start_switchyard(bin, dir, &queue_drain_config(sink))?;
    let n = messages.len() as f64;
    // The sink's type names the profile: `<type>-sink.perf.data`.
    let kind = sink
        .lines()
        .find_map(|l| l.strip_prefix("type = ")?.split('"').nth(1))
        .unwrap_or("queue");
    let profile = Profile::start(process.pid(), &format!("{kind}-sink"));
    let rate = rt.block_on(rate_from_first(
        addr,
        "switchyard_sink_events_total",
        "outcome=\"delivered\"",
        n,
    ));
    if let Some(p) = profile {
        p.stop();
    }
    let run = SyRun::of(rate?, process.pid());
    process.stop(Duration::from_secs(10))?;
    Ok(run)
}

/// Sends `messages` to the HTTP source `bench` (one NDJSON body per run of one key's
/// events, in order, over [`CONNECTIONS`] connections) and waits until its sink counted
/// every one delivered.
pub(super) async fn ingest_until_delivered(
    addr: SocketAddr,
    messages: &[Message],
) -> anyhow::Result<()> {
    let mut by_key: std::collections::BTreeMap<&str, Vec<&Message>> = Default::default();
    for m in messages {
        by_key.entry(m.key.as_str()).or_default().push(m);
    }
    let mut bodies: Vec<Vec<(String, Bytes)>> = vec![Vec::new(); CONNECTIONS];
    for (k, (key, ms)) in by_key.into_iter().enumerate() {
        for chunk in ms.chunks(BATCH) {
            let mut body = Vec::new();
            for m in chunk {
                body.extend_from_slice(&m.payload);
                body.push(b'\n');
            }
            bodies[k % CONNECTIONS].push((key.to_owned(), Bytes::from(body)));
        }
    }
    let tasks: Vec<_> = bodies
        .into_iter()
        .map(|bodies| tokio::spawn(send_all(addr, bodies)))
        .collect();
    for t in tasks {
        t.await.context("an ingest task panicked")??;
    }
    wait_for_counter(
        addr,
        "switchyard_sink_events_total",
        "outcome=\"delivered\"",
        messages.len() as f64,
    )
    .await?;
    Ok(())
}

/// Events/s of switchyard's Kafka source reading `n` messages of `bench-raw` (a group
/// of its own for each `round`).
fn switchyard_consume(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    root: &Path,
    brokers: &str,
    n: usize,
    round: u32,
) -> anyhow::Result<SyRun> {
    let config = consume_config(brokers, round);
    let dir = root.join(format!("consume-{round}"));
    std::fs::create_dir_all(&dir)?;
    let addr = free_addr()?;
    let path = dir.join("switchyard.toml");
    std::fs::write(
        &path,
        config
            .replace("{listen}", &addr.to_string())
            .replace("{data_dir}", &dir.join("data").display().to_string()),
    )?;
    // A `null` sink: this measures the source and the pipeline.
    let mut child = Command::new(bin)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("switchyard.log"))?)
        .spawn()
        .context("starting switchyard")?;
    let pid = child.id();
    let result = rt
        .block_on(async {
            let (metric, label) = ("switchyard_pipeline_events_total", "outcome=\"completed\"");
            let first = wait_for_counter(addr, metric, label, 1.0).await?;
            // One profile: the first round's.
            let profile = (round == 1)
                .then(|| Profile::start(pid, "kafka-source"))
                .flatten();
            let at_first = Instant::now();
            wait_for_counter(addr, metric, label, n as f64).await?;
            let rate = (n as f64 - first) / at_first.elapsed().as_secs_f64();
            if let Some(profile) = profile {
                profile.stop();
            }
            anyhow::Ok(rate)
        })
        .map(|rate| SyRun::of(rate, pid));
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn send_all(addr: SocketAddr, bodies: Vec<(String, Bytes)>) -> anyhow::Result<()> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    for (key, body) in bodies {
        loop {
            sender.ready().await?;
            let req = Request::post("/ingest/bench")
                .header(header::HOST, addr.to_string())
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .header("x-key", key.as_str())
                .body(Full::new(body.clone()))?;
            let resp = sender.send_request(req).await?;
            let status = resp.status();
            resp.into_body().collect().await?;
            if status.is_success() {
                break;
            }
            if status.as_u16() != 429 && status.as_u16() != 503 {
                bail!("switchyard answered {status} to an ingest request");
            }
            // Overloaded: the answer asks to come back shortly.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Events/s of a counter from the first time it is seen above zero until it reaches `n`
/// (what was counted before that first look is left out of both sides of the rate).
pub(super) async fn rate_from_first(
    addr: SocketAddr,
    metric: &str,
    label: &str,
    n: f64,
) -> anyhow::Result<f64> {
    let first = wait_for_counter(addr, metric, label, 1.0).await?;
    let at_first = Instant::now();
    wait_for_counter(addr, metric, label, n).await?;
    Ok((n - first) / at_first.elapsed().as_secs_f64())
}

/// Polls `/metrics` until the sum of `metric` lines containing `label` reaches `at_least`
/// (5-minute deadline); returns the value seen.
pub(super) async fn wait_for_counter(
    addr: SocketAddr,
    metric: &str,
    label: &str,
    at_least: f64,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let value = counter(addr, metric, label).await.unwrap_or(0.0);
        if value >= at_least {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{metric}{{{label}}} reached only {value} of {at_least} in 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn counter(addr: SocketAddr, metric: &str, label: &str) -> anyhow::Result<f64> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let body = sender
        .send_request(req)
        .await?
        .into_body()
        .collect()
        .await?;
    let text = String::from_utf8_lossy(&body.to_bytes()).into_owned();
    Ok(text
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// HTTP source → Kafka sink on `bench-switchyard`.
fn produce_config(brokers: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
[log]
level = "warn"
[sources.bench]
type = "http"
[pipelines.to_kafka]
from = ["bench"]
to = ["out"]
[sinks.out]
type = "kafka"
brokers = "{brokers}"
topic = "bench-switchyard"
linger = "5ms"
"#
    )
}

/// HTTP source → the durable queue `backlog` (the fill run of the queue → Kafka phase),
/// sized for `events`: a full queue stops its producers, and the default 1 GiB holds
/// about 3.4M of the bench's events.
fn queue_fill_config(events: usize) -> String {
    let mib = (events / 1024).max(1024);
    r#"
[server]
listen = "{listen}"
data_dir = "{data_dir}"
[log]
level = "warn"
[queues.backlog]
partitions = 4
max_bytes = "{max}MiB"
[sources.bench]
type = "http"
[pipelines.fill]
from = ["bench"]
to = ["to_backlog"]
[sinks.to_backlog]
type = "queue"
queue = "backlog"
"#
    .replace("{max}", &mib.to_string())
}

/// The queue `backlog`, read by a consumer group → the sink whose table is `sink`.
fn queue_drain_config(sink: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
[log]
level = "warn"
[queues.backlog]
partitions = 4
[sources.from_backlog]
type = "queue"
queue = "backlog"
group = "to-sink"
[pipelines.drain]
from = ["from_backlog"]
to = ["out"]
[sinks.out]
{sink}
"#
    )
}

/// Kafka source on `bench-raw` (group `bench-switchyard-consumer-<round>`) → null sink.
fn consume_config(brokers: &str, round: u32) -> String {
    source_to_null_config(&format!(
        "type = \"kafka\"\nbrokers = \"{brokers}\"\ntopics = [\"bench-raw\"]\ngroup = \"bench-switchyard-consumer-{round}\"\n"
    ))
}

/// The source whose table is `source`, named `bench`, → a null sink.
pub(super) fn source_to_null_config(source: &str) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"
data_dir = "{{data_dir}}"
[log]
level = "warn"
[sources.bench]
{source}
[pipelines.read]
from = ["bench"]
to = ["null"]
[sinks.null]
type = "null"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_pass_switchyard_validation() {
        for text in [
            produce_config("127.0.0.1:9092"),
            queue_fill_config(10_000_000),
            queue_drain_config("type = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\ntopic = \"t\"\n"),
            consume_config("127.0.0.1:9092", 1),
        ] {
            let text = text
                .replace("{listen}", "127.0.0.1:1")
                .replace("{data_dir}", "/tmp/x");
            if let Err(e) = switchyard_config::load_str(&text, false) {
                panic!("{e}\n{text}");
            }
        }
    }
}
