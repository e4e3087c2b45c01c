//! `cargo xtask bench queue`: durable produce + receive + ack through switchyard's internal
//! queues next to RabbitMQ, NATS JetStream and Redis Streams, one system after the other in
//! the same run, with the same load and the same definitions (docs/decisions/0010).
//!
//! One harness ([`drive`]) runs every system: each system only provides connected
//! [`Producer`]s and [`Consumer`]s. The harness starts the clock once every connection is
//! open, lets each producer send its share of the messages in batches (closed loop: the next
//! batch after the previous one is durable) while the consumers receive and ack, and stops
//! the clock when the ack of the last distinct message has been answered.
//!
//! Every payload is a JSON object of exactly `--message-bytes` bytes,
//! `{"i":INDEX,"t":MICROS,"pad":"xxx…"}`: `i` is the message's index (0..messages, to find
//! lost and duplicated messages), `t` the microseconds since the run's start at which its
//! batch was handed to the client. End-to-end latency is "consumer got it" − `t`.

mod switchyard;

#[cfg(feature = "peers")]
mod nats;
#[cfg(feature = "peers")]
mod rabbitmq;
#[cfg(feature = "peers")]
mod redis;

use std::fmt::Write as _;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use serde::Deserialize;

use super::report::{Op, Row, Target};
use super::{procfs, report};

/// How long a consumer's receive waits for a first message before it looks whether the run
/// is over (long poll; answered at once when messages are there).
const RECEIVE_WAIT: Duration = Duration::from_millis(500);
/// Switchyard's throughput over RabbitMQ's that the target asks for (with a lower p99).
const TARGET_VS_RABBITMQ: f64 = 1.0;
/// Switchyard's throughput over NATS JetStream's (file storage).
const TARGET_VS_NATS: f64 = 2.0;
/// Switchyard's throughput over Redis Streams' (which keeps nothing on disk here).
const TARGET_VS_REDIS: f64 = 0.5;

/// Options of `bench queue` (help text: on `Bench::Queue`).
#[derive(Args)]
pub struct QueueArgs {
    /// Messages per system and round (each produced once, received and acked).
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Producer connections; each sends an equal share of the messages.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Consumer connections, all in one consumer group / on one queue.
    #[arg(long, default_value_t = 4)]
    consumers: usize,
    /// Messages per produce call (one HTTP request, one pipeline, one confirm wait) and the
    /// most a consumer receives before it acks (also RabbitMQ's prefetch and NATS's pull
    /// batch).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Size of each message's payload in bytes (a JSON object, at least 64).
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Partitions of switchyard's queue.
    #[arg(long, default_value_t = 1)]
    partitions: u32,
    /// Offered load of the latency phase in messages/s over all producers: each producer
    /// sends a batch every producers × batch / rate seconds, stamped with the time it was
    /// due (so a producer that falls behind shows up in the latency). 0 skips the phase.
    #[arg(long, default_value_t = 2000.0)]
    latency_rate: f64,
    /// Seconds of the latency phase (its messages: rate × seconds).
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Systems to run, comma-separated (default: all four), e.g. `--only switchyard,rabbitmq`.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SYSTEM,…")]
    only: Vec<System>,
    /// Times to run the systems in turn; >1 prints every round and the medians.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Seconds a system may take for one round before the run fails.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Parent of the temporary directory holding switchyard's data dir (default: the
    /// system temp dir).
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Keep the temporary directory (switchyard's log and data) and print its path.
    #[arg(long)]
    keep: bool,
    /// RabbitMQ (AMQP 0-9-1) URL.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    rabbitmq_url: String,
    /// RabbitMQ queue type: classic (durable) or quorum (Raft, fsync'd on every node).
    #[arg(long, value_enum, default_value_t = RabbitQueueType::Classic)]
    rabbitmq_queue_type: RabbitQueueType,
    /// NATS server URL (JetStream enabled).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379/")]
    redis_url: String,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum System {
    Switchyard,
    Rabbitmq,
    Nats,
    Redis,
}

impl System {
    const ALL: [System; 4] = [
        System::Switchyard,
        System::Rabbitmq,
        System::Nats,
        System::Redis,
    ];

    fn name(self) -> &'static str {
        match self {
            System::Switchyard => "switchyard",
            System::Rabbitmq => "rabbitmq",
            System::Nats => "nats",
            System::Redis => "redis",
        }
    }

    /// The server process's `comm`, to read its CPU time (switchyard: our own child).
    #[cfg_attr(not(feature = "peers"), allow(dead_code))]
    fn server_comm(self) -> Option<&'static str> {
        match self {
            System::Switchyard => None,
            System::Rabbitmq => Some("beam.smp"),
            System::Nats => Some("nats-server"),
            System::Redis => Some("redis-server"),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum RabbitQueueType {
    Classic,
    Quorum,
}

/// The load, the same for every system.
#[derive(Clone, Copy)]
pub struct Spec {
    pub messages: usize,
    pub producers: usize,
    pub consumers: usize,
    pub batch: usize,
    pub message_bytes: usize,
    /// Paced: the offered messages/s over all producers (each sends a batch on a fixed
    /// schedule, stamped with its scheduled time); `None`: as fast as they are answered.
    pub rate: Option<f64>,
}

/// What a payload carries for the measurement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub struct Stamp {
    /// Index of the message in the run.
    pub i: u64,
    /// Microseconds since the run's start when its batch was handed to the client.
    pub t: u64,
}

impl Stamp {
    /// Reads `{"i":…,"t":…` at the start of a payload written by [`payload`].
    #[cfg_attr(not(feature = "peers"), allow(dead_code))]
    pub fn parse(payload: &[u8]) -> anyhow::Result<Stamp> {
        fn number(b: &[u8], prefix: &[u8]) -> Option<(u64, usize)> {
            let rest = b.strip_prefix(prefix)?;
            let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
            let n = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
            Some((n, prefix.len() + digits))
        }
        let parsed = number(payload, br#"{"i":"#)
            .and_then(|(i, used)| number(&payload[used..], br#","t":"#).map(|(t, _)| (i, t)));
        match parsed {
            Some((i, t)) => Ok(Stamp { i, t }),
            None => bail!(
                "a received payload is not one this benchmark sent: {:?}",
                String::from_utf8_lossy(&payload[..payload.len().min(60)])
            ),
        }
    }
}

/// `{"i":I,"t":T,"pad":"xxx…"}` of exactly `len` bytes (at least 64).
pub fn payload(i: u64, t: u64, len: usize) -> Bytes {
    let head = format!(r#"{{"i":{i},"t":{t},"pad":""#);
    let mut b = Vec::with_capacity(len.max(head.len() + 2));
    b.extend_from_slice(head.as_bytes());
    b.resize(len.saturating_sub(2).max(head.len()), b'x');
    b.extend_from_slice(b"\"}");
    Bytes::from(b)
}

/// A connection that produces. `send` returns once every payload of the batch is durable
/// by the system's definition (switchyard: 201; RabbitMQ: every confirm; NATS: every
/// PubAck; Redis: every XADD reply).
pub trait Producer: Send + 'static {
    fn send(&mut self, payloads: Vec<Bytes>) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Produce calls the system refused for now (429/503) and that were sent again.
    fn retries(&self) -> u64 {
        0
    }
}

/// A connection that consumes.
pub trait Consumer: Send + 'static {
    /// Up to `max` messages, waiting up to `wait` for the first one (possibly none).
    fn receive(
        &mut self,
        max: usize,
        wait: Duration,
    ) -> impl Future<Output = anyhow::Result<Vec<Stamp>>> + Send;
    /// Acks every message of the last `receive`; returns when the system answered (or, where
    /// the protocol has no answer to an ack, when it was written). The result lists the
    /// positions (in the last receive) of messages the system did not take the ack for.
    fn ack(&mut self) -> impl Future<Output = anyhow::Result<Vec<usize>>> + Send;
}

/// What one system's round measured.
#[derive(Default)]
pub struct RunResult {
    /// From the clock's start to the answer of the ack that completed the last message.
    pub elapsed: Duration,
    /// From the clock's start until the last producer's last batch was durable.
    pub produced: Duration,
    /// One per batch, µs, sorted.
    pub produce_us: Vec<u32>,
    /// One per received message, µs, sorted.
    pub e2e_us: Vec<u32>,
    /// Messages received and acked more than once.
    pub duplicates: u64,
    /// Acks the system did not take (switchyard's `stale`).
    pub stale: u64,
    /// Produce calls answered 429/503 and sent again.
    pub retries: u64,
    /// utime+stime of the server process(es) during the round, seconds.
    pub server_cpu_s: Option<f64>,
    /// utime+stime of this process (load generator and clients) during the round.
    pub client_cpu_s: f64,
    /// Peak RSS (VmHWM) of the server process, where it is our own child.
    pub peak_rss_kib: Option<u64>,
}

impl RunResult {
    fn per_second(&self, messages: usize) -> f64 {
        messages as f64 / self.elapsed.as_secs_f64()
    }
}

/// The `q` quantile (0..=1) of sorted µs figures, in ms (nearest rank); NaN when empty.
fn quantile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

/// Which messages were acked (how often), and when the last one was.
struct Tracker {
    start: Instant,
    acked: Vec<AtomicU8>,
    distinct: AtomicUsize,
    finished_us: AtomicU64,
    done: AtomicBool,
}

impl Tracker {
    fn now_us(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    fn mark_acked(&self, i: u64) -> anyhow::Result<()> {
        let slot = self
            .acked
            .get(usize::try_from(i).unwrap_or(usize::MAX))
            .with_context(|| format!("received message index {i}, which was never sent"))?;
        if slot.fetch_add(1, Ordering::AcqRel) == 0 {
            let n = self.distinct.fetch_add(1, Ordering::AcqRel) + 1;
            if n == self.acked.len() {
                self.finished_us.store(self.now_us(), Ordering::Release);
                self.done.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    fn duplicates(&self) -> u64 {
        self.acked
            .iter()
            .map(|a| u64::from(a.load(Ordering::Acquire).saturating_sub(1)))
            .sum()
    }
}

enum TaskOutput {
    Producer {
        latencies_us: Vec<u32>,
        finished_us: u64,
        retries: u64,
    },
    Consumer {
        latencies_us: Vec<u32>,
        stale: u64,
    },
}

/// Runs the load through connected producers and consumers: the clock starts now.
pub async fn drive<P: Producer, C: Consumer>(
    spec: Spec,
    producers: Vec<P>,
    consumers: Vec<C>,
    deadline: Duration,
) -> anyhow::Result<RunResult> {
    let tracker = Arc::new(Tracker {
        start: Instant::now(),
        acked: (0..spec.messages).map(|_| AtomicU8::new(0)).collect(),
        distinct: AtomicUsize::new(0),
        finished_us: AtomicU64::new(0),
        done: AtomicBool::new(spec.messages == 0),
    });
    let mut tasks = tokio::task::JoinSet::new();
    let n_producers = producers.len();
    for (p, mut producer) in producers.into_iter().enumerate() {
        let tracker = tracker.clone();
        let range = (spec.messages * p / n_producers)..(spec.messages * (p + 1) / n_producers);
        // Paced: producer p's k-th batch is due at offset + k × interval.
        let schedule = spec.rate.map(|rate| {
            let interval = Duration::from_secs_f64(spec.batch as f64 * n_producers as f64 / rate);
            (interval.mul_f64(p as f64 / n_producers as f64), interval)
        });
        tasks.spawn(async move {
            let mut latencies_us = Vec::with_capacity(range.len() / spec.batch.max(1) + 1);
            let mut next = range.start;
            let mut k = 0u32;
            while next < range.end {
                let end = (next + spec.batch).min(range.end);
                let t = match schedule {
                    Some((offset, interval)) => {
                        let due = offset + interval * k;
                        k += 1;
                        tokio::time::sleep_until(tokio::time::Instant::from_std(
                            tracker.start + due,
                        ))
                        .await;
                        u64::try_from(due.as_micros()).unwrap_or(u64::MAX)
                    }
                    None => tracker.now_us(),
                };
                let payloads = (next..end)
                    .map(|i| payload(i as u64, t, spec.message_bytes))
                    .collect();
                let sent = Instant::now();
                producer.send(payloads).await?;
                latencies_us.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                next = end;
            }
            Ok::<_, anyhow::Error>(TaskOutput::Producer {
                latencies_us,
                finished_us: tracker.now_us(),
                retries: producer.retries(),
            })
        });
    }
    for mut consumer in consumers {
        let tracker = tracker.clone();
        tasks.spawn(async move {
            let mut latencies_us = Vec::with_capacity(spec.messages / spec.consumers.max(1));
            let mut stale = 0;
            while !tracker.is_done() {
                let stamps = consumer.receive(spec.batch, RECEIVE_WAIT).await?;
                if stamps.is_empty() {
                    continue;
                }
                let now = tracker.now_us();
                latencies_us.extend(
                    stamps
                        .iter()
                        .map(|s| u32::try_from(now.saturating_sub(s.t)).unwrap_or(u32::MAX)),
                );
                let not_taken = consumer.ack().await?;
                stale += not_taken.len() as u64;
                for (pos, s) in stamps.iter().enumerate() {
                    if !not_taken.contains(&pos) {
                        tracker.mark_acked(s.i)?;
                    }
                }
            }
            Ok::<_, anyhow::Error>(TaskOutput::Consumer {
                latencies_us,
                stale,
            })
        });
    }
    let mut result = RunResult::default();
    let collect = async {
        while let Some(joined) = tasks.join_next().await {
            match joined.context("a producer or consumer task panicked")?? {
                TaskOutput::Producer {
                    latencies_us,
                    finished_us,
                    retries,
                } => {
                    result.produce_us.extend(latencies_us);
                    result.retries += retries;
                    result.produced = result.produced.max(Duration::from_micros(finished_us));
                }
                TaskOutput::Consumer {
                    latencies_us,
                    stale,
                } => {
                    result.e2e_us.extend(latencies_us);
                    result.stale += stale;
                }
            }
        }
        Ok::<_, anyhow::Error>(())
    };
    match tokio::time::timeout(deadline, collect).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tasks.abort_all();
            return Err(e);
        }
        Err(_) => {
            tasks.abort_all();
            bail!(
                "only {} of {} messages were acked within {deadline:?}",
                tracker.distinct.load(Ordering::Acquire),
                spec.messages
            );
        }
    }
    result.elapsed = Duration::from_micros(tracker.finished_us.load(Ordering::Acquire));
    result.duplicates = tracker.duplicates();
    result.produce_us.sort_unstable();
    result.e2e_us.sort_unstable();
    Ok(result)
}

/// A unique name for this run's queue/stream/key on a shared broker.
#[cfg_attr(not(feature = "peers"), allow(dead_code))]
fn unique_name(tag: &str) -> String {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!("switchyard-bench-{}-{ms}-{tag}", std::process::id())
}

/// CPU seconds of several processes (NaN-free: `None` when none was found).
fn total_cpu_s(pids: &[u32]) -> Option<f64> {
    let v: Vec<f64> = pids
        .iter()
        .filter_map(|&p| procfs::cpu_seconds(p))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum())
}

/// utime+stime of this process so far, seconds.
fn self_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Measures `f` (one system's round) with the CPU time of this process and of `server_pids`.
pub async fn with_cpu<F>(server_pids: &[u32], f: F) -> anyhow::Result<RunResult>
where
    F: Future<Output = anyhow::Result<RunResult>>,
{
    let server_before = total_cpu_s(server_pids);
    let client_before = self_cpu_s();
    let mut result = f.await?;
    result.client_cpu_s = self_cpu_s() - client_before;
    result.server_cpu_s = match (server_before, total_cpu_s(server_pids)) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(result)
}

/// The two measurements of every system and round.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Producers as fast as they are answered: msgs/s (and the latency at that load).
    Throughput,
    /// Producers paced at `--latency-rate`: the latency at the same offered load.
    Latency,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Throughput => "throughput",
            Phase::Latency => "latency",
        }
    }
}

/// Everything a system's round needs besides the load.
pub struct RoundCtx<'a> {
    pub args: &'a QueueArgs,
    pub spec: Spec,
    pub round: u32,
    pub phase: Phase,
    pub deadline: Duration,
}

impl RoundCtx<'_> {
    /// `r1-throughput`: names this round's queue, stream, key or data dir.
    pub fn tag(&self) -> String {
        format!("r{}-{}", self.round, self.phase.name())
    }
}

pub fn run(args: QueueArgs) -> anyhow::Result<Vec<Row>> {
    let systems: Vec<System> = if args.only.is_empty() {
        System::ALL.to_vec()
    } else {
        System::ALL
            .into_iter()
            .filter(|s| args.only.contains(s))
            .collect()
    };
    if args.producers == 0 || args.consumers == 0 || args.batch == 0 {
        bail!("--producers, --consumers and --batch must be at least 1");
    }
    if args.message_bytes < 64 {
        bail!("--message-bytes must be at least 64 (the payload carries its index and stamp)");
    }
    if !cfg!(feature = "peers") && systems.iter().any(|s| *s != System::Switchyard) {
        bail!(
            "this xtask was built without its `peers` feature, which holds the RabbitMQ, NATS \
             and Redis clients. `cargo xtask bench queue …` builds its release self with it; \
             for a binary run directly, build it with `cargo build --release -p xtask \
             --features peers`, or run only switchyard with `--only switchyard`"
        );
    }
    let spec = Spec {
        messages: args.messages,
        producers: args.producers,
        consumers: args.consumers,
        batch: args.batch,
        message_bytes: args.message_bytes,
        rate: None,
    };
    let latency_messages = (args.latency_rate * args.latency_seconds as f64).round() as usize;
    let mut phases = vec![(Phase::Throughput, spec)];
    if args.latency_rate > 0.0 && latency_messages > 0 {
        phases.push((
            Phase::Latency,
            Spec {
                messages: latency_messages,
                rate: Some(args.latency_rate),
                ..spec
            },
        ));
    }
    let sy = if systems.contains(&System::Switchyard) {
        Some(switchyard::prepare(&args)?)
    } else {
        None
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    println!("# switchyard bench queue");
    println!("machine:    {}", report::machine());
    if let Some(sy) = &sy {
        println!(
            "switchyard: {} — data in {} ({})",
            sy.bin.display(),
            sy.root().display(),
            report::filesystem(sy.root())
        );
    }
    println!(
        "load:       {} messages × {} B JSON payload per system; {} producers (batches of {}, \
         the next after the last is durable), {} consumers (receive ≤ {}, then ack them); \
         {} round(s)",
        args.messages,
        args.message_bytes,
        args.producers,
        args.batch,
        args.consumers,
        args.batch,
        args.rounds
    );
    if let Some((_, lat)) = phases.get(1) {
        println!(
            "latency:    then the same with the producers paced: {} msgs/s offered for {} s \
             ({} messages), each batch stamped with the time it was due",
            args.latency_rate, args.latency_seconds, lat.messages
        );
    }
    println!("systems:    {}", describe_systems(&args, &systems));
    println!(
        "figures:    msgs/s = messages / (first produce → answer of the last message's ack); \
         e2e = consumer received − stamp written just before its batch was sent (paced: the \
         time it was due) (every message); produce = one batch's call until durable (every \
         batch)"
    );
    println!("reproduce:  {}", report::reproduce_command(&argv));
    println!();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-queue")
        .build()
        .context("starting the load generator's runtime")?;
    // results[phase][system]: one RunResult per round.
    let mut results: Vec<Vec<Vec<RunResult>>> = phases
        .iter()
        .map(|_| systems.iter().map(|_| Vec::new()).collect())
        .collect();
    #[cfg_attr(not(feature = "peers"), allow(unused_mut))]
    let mut notes: Vec<String> = Vec::new();
    // Peers that failed, with why: left out of the rest of the run and of the tables.
    let mut failed: Vec<(System, String)> = Vec::new();
    for round in 1..=args.rounds {
        for (ph, &(phase, spec)) in phases.iter().enumerate() {
            for (k, &system) in systems.iter().enumerate() {
                if failed.iter().any(|(s, _)| *s == system) {
                    continue;
                }
                eprintln!(
                    "round {round}/{}, {}: {}…",
                    args.rounds,
                    phase.name(),
                    system.name()
                );
                let ctx = RoundCtx {
                    args: &args,
                    spec,
                    round,
                    phase,
                    deadline: Duration::from_secs(args.timeout),
                };
                let r = match system {
                    System::Switchyard => {
                        let sy = sy.as_ref().expect("prepared above");
                        switchyard::round(&rt, sy, &ctx)
                    }
                    #[cfg(feature = "peers")]
                    System::Rabbitmq | System::Nats | System::Redis => {
                        rt.block_on(peer_round(system, &ctx)).map(|(note, r)| {
                            if round == 1 && ph == 0 {
                                notes.extend(note);
                            }
                            r
                        })
                    }
                    #[cfg(not(feature = "peers"))]
                    System::Rabbitmq | System::Nats | System::Redis => {
                        unreachable!("refused above without the peers feature")
                    }
                }
                .with_context(|| {
                    format!(
                        "measuring {} (round {round}, {})",
                        system.name(),
                        phase.name()
                    )
                });
                let r = match r {
                    Ok(r) => r,
                    // A peer that is down or misbehaves costs its own figures, not the
                    // others'.
                    Err(e) if system != System::Switchyard => {
                        eprintln!("{} failed; going on without it: {e:#}", system.name());
                        failed.push((system, format!("{e:#}")));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if args.rounds > 1 {
                    println!(
                        "round {round} {:<10} {}",
                        phase.name(),
                        row(system.name(), &r, spec.messages)
                    );
                }
                results[ph][k].push(r);
            }
        }
    }
    if args.rounds > 1 {
        println!();
    }
    let kept: Vec<usize> = (0..systems.len())
        .filter(|&k| !failed.iter().any(|(s, _)| *s == systems[k]))
        .collect();
    let systems: Vec<System> = kept.iter().map(|&k| systems[k]).collect();
    let results: Vec<Vec<Vec<RunResult>>> = results
        .into_iter()
        .map(|mut per_system| {
            kept.iter()
                .map(|&k| std::mem::take(&mut per_system[k]))
                .collect()
        })
        .collect();
    let mut figures = Vec::new();
    for (ph, &(phase, spec)) in phases.iter().enumerate() {
        let title = match phase {
            Phase::Throughput => format!(
                "throughput phase ({} messages, producers unpaced)",
                spec.messages
            ),
            Phase::Latency => format!(
                "latency phase ({} messages at {} msgs/s offered)",
                spec.messages, args.latency_rate
            ),
        };
        let (text, f) = table(&args, &title, &systems, &results[ph], spec.messages);
        print!("{text}");
        println!();
        figures.push(f);
    }
    print!("{}", verdict(&systems, &figures));
    for (system, why) in &failed {
        println!("{} failed and is left out: {why}", system.name());
    }
    for n in notes {
        println!("note: {n}");
    }
    if let Some(sy) = sy {
        sy.finish();
    }
    Ok(rows(&args, &systems, &figures, &failed))
}

/// The rows of `bench all`: switchyard's msgs/s next to each peer's, and the end-to-end
/// p99 next to RabbitMQ's; a peer that failed gives its row with the error.
fn rows(
    args: &QueueArgs,
    systems: &[System],
    phases: &[Figures],
    failed: &[(System, String)],
) -> Vec<Row> {
    let idx = |s: System| systems.iter().position(|x| *x == s);
    let Some(sy) = idx(System::Switchyard) else {
        return Vec::new();
    };
    let thr = &phases[0];
    let (lat, which) = match phases.get(1) {
        Some(l) => (
            l,
            format!("latency phase, {} msgs/s offered", args.latency_rate),
        ),
        None => (thr, "throughput phase".to_owned()),
    };
    let rounds = if args.rounds > 1 {
        format!(", medians of {} rounds", args.rounds)
    } else {
        String::new()
    };
    let note = format!(
        "{} × {} B, {}p/{}c, batch {}{rounds}",
        args.messages, args.message_bytes, args.producers, args.consumers, args.batch
    );
    let metric = "durable produce+receive+ack msgs/s";
    let mut rows = Vec::new();
    for (other, baseline, target) in [
        (System::Rabbitmq, "RabbitMQ", TARGET_VS_RABBITMQ),
        (System::Nats, "NATS JetStream (file)", TARGET_VS_NATS),
        (
            System::Redis,
            "Redis Streams (not durable)",
            TARGET_VS_REDIS,
        ),
    ] {
        if let Some((_, why)) = failed.iter().find(|(s, _)| *s == other) {
            rows.push(
                Row::error("queue", metric, why)
                    .baseline(baseline, f64::NAN)
                    .target(Target::ratio(Op::AtLeast, target)),
            );
            if other == System::Rabbitmq {
                rows.push(
                    Row::error("queue", "end-to-end p99 ms", why)
                        .baseline(baseline, f64::NAN)
                        .target(Target::ratio(Op::Below, 1.0)),
                );
            }
            continue;
        }
        let Some(o) = idx(other) else { continue };
        let row = |metric: &str| {
            Row::new("queue", metric)
                .cpu(thr.cpu_s[sy], args.messages as f64)
                .rss_mib(thr.rss_mib[sy])
        };
        rows.push(
            row(metric)
                .baseline(baseline, thr.rate[o])
                .value(thr.rate[sy])
                .target(Target::ratio(Op::AtLeast, target))
                .note(note.clone()),
        );
        if other == System::Rabbitmq {
            rows.push(
                row("end-to-end p99 ms")
                    .baseline(baseline, lat.p99[o])
                    .value(lat.p99[sy])
                    .target(Target::ratio(Op::Below, 1.0))
                    .note(format!("lower than RabbitMQ's; {which}")),
            );
        }
    }
    rows
}

/// One round of a peer broker: its module sets up, [`drive`]s and cleans up; the note
/// (its version, its durability) is printed under the table.
#[cfg(feature = "peers")]
async fn peer_round(
    system: System,
    ctx: &RoundCtx<'_>,
) -> anyhow::Result<(Option<String>, RunResult)> {
    let pids = procfs::pids_named(system.server_comm().expect("a peer has a server process"));
    match system {
        System::Rabbitmq => rabbitmq::round(ctx, &pids).await,
        System::Nats => nats::round(ctx, &pids).await,
        System::Redis => redis::round(ctx, &pids).await,
        System::Switchyard => unreachable!("not a peer"),
    }
}

fn describe_systems(args: &QueueArgs, systems: &[System]) -> String {
    systems
        .iter()
        .map(|s| match s {
            System::Switchyard => format!(
                "switchyard (1 queue with partitions = {}, a work group; 201 after fsync, acks fsync'd)",
                args.partitions
            ),
            System::Rabbitmq => format!(
                "rabbitmq ({} durable queue, delivery_mode 2, confirms per batch, prefetch {}, \
                 ack multiple)",
                match args.rabbitmq_queue_type {
                    RabbitQueueType::Classic => "classic",
                    RabbitQueueType::Quorum => "quorum",
                },
                args.batch
            ),
            System::Nats => "nats (JetStream file stream, PubAcks per batch, durable pull \
                             consumer, explicit double_ack)"
                .to_owned(),
            System::Redis => "redis (XADD pipelined per batch, XREADGROUP, XACK)".to_owned(),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn row(name: &str, r: &RunResult, messages: usize) -> String {
    format!(
        "{name:<11} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>7} {:>7.1} {:>9}",
        r.per_second(messages),
        quantile_ms(&r.e2e_us, 0.5),
        quantile_ms(&r.e2e_us, 0.99),
        quantile_ms(&r.produce_us, 0.5),
        quantile_ms(&r.produce_us, 0.99),
        messages as f64 / r.produced.as_secs_f64(),
        r.server_cpu_s
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.1}")),
        r.client_cpu_s,
        format!("{}/{}", r.duplicates, r.stale),
    )
}

/// Medians of one phase per system: msgs/s, end-to-end p99 (ms), server CPU seconds and
/// peak RSS (MiB; NaN when not known).
struct Figures {
    rate: Vec<f64>,
    p99: Vec<f64>,
    cpu_s: Vec<f64>,
    rss_mib: Vec<f64>,
}

fn table(
    args: &QueueArgs,
    title: &str,
    systems: &[System],
    results: &[Vec<RunResult>],
    n: usize,
) -> (String, Figures) {
    let med = |k: usize, f: &dyn Fn(&RunResult) -> f64| {
        report::median(&results[k].iter().map(f).collect::<Vec<_>>())
    };
    let mut out = String::new();
    let what = if args.rounds > 1 {
        format!("medians of {} rounds", args.rounds)
    } else {
        "one round".to_owned()
    };
    let _ = writeln!(
        out,
        "{title}, {what}; latencies in ms, CPU in seconds (server process / this load generator):"
    );
    let _ = writeln!(
        out,
        "{:<11} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>7} {:>7} {:>9}",
        "system",
        "msgs/s",
        "e2e p50",
        "e2e p99",
        "prod p50",
        "prod p99",
        "prod/s",
        "srv CPU",
        "cli CPU",
        "dup/stale"
    );
    let mut figures = Figures {
        rate: Vec::new(),
        p99: Vec::new(),
        cpu_s: Vec::new(),
        rss_mib: Vec::new(),
    };
    for (k, system) in systems.iter().enumerate() {
        figures.rate.push(med(k, &|r| r.per_second(n)));
        figures.p99.push(med(k, &|r| quantile_ms(&r.e2e_us, 0.99)));
        let srv = med(k, &|r| r.server_cpu_s.unwrap_or(f64::NAN));
        figures.cpu_s.push(srv);
        figures.rss_mib.push(med(k, &|r| {
            r.peak_rss_kib.map_or(f64::NAN, |v| v as f64 / 1024.0)
        }));
        let _ = writeln!(
            out,
            "{:<11} {:>9.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9.0} {:>7} {:>7.1} {:>9}",
            system.name(),
            figures.rate[k],
            med(k, &|r| quantile_ms(&r.e2e_us, 0.5)),
            figures.p99[k],
            med(k, &|r| quantile_ms(&r.produce_us, 0.5)),
            med(k, &|r| quantile_ms(&r.produce_us, 0.99)),
            med(k, &|r| n as f64 / r.produced.as_secs_f64()),
            if srv.is_nan() {
                "-".to_owned()
            } else {
                format!("{srv:.1}")
            },
            med(k, &|r| r.client_cpu_s),
            format!(
                "{}/{}",
                results[k].iter().map(|r| r.duplicates).sum::<u64>(),
                results[k].iter().map(|r| r.stale).sum::<u64>()
            ),
        );
    }
    let _ = writeln!(
        out,
        "(msgs/s: produce+receive+ack of every message; prod/s: messages / time until the last \
         batch was durable; dup/stale: messages acked twice / acks not taken, all rounds; 429 \
         retries: {})",
        systems
            .iter()
            .enumerate()
            .map(|(k, s)| format!(
                "{} {}",
                s.name(),
                results[k].iter().map(|r| r.retries).sum::<u64>()
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (k, system) in systems.iter().enumerate() {
        let rss = med(k, &|r| {
            r.peak_rss_kib.map_or(f64::NAN, |v| v as f64 / 1024.0)
        });
        if !rss.is_nan() {
            let _ = writeln!(out, "peak RSS of {}: {rss:.1} MiB", system.name());
        }
    }
    (out, figures)
}

/// Ratios to the peers and the target: throughput from the throughput phase, the p99 from
/// the latency phase (the same offered load for every system) when it ran.
fn verdict(systems: &[System], phases: &[Figures]) -> String {
    let mut out = String::new();
    let idx = |s: System| systems.iter().position(|x| *x == s);
    let Some(sy) = idx(System::Switchyard) else {
        return out;
    };
    let thr = &phases[0];
    let (lat, which) = match phases.get(1) {
        Some(l) => (l, "latency phase"),
        None => (thr, "throughput phase"),
    };
    for other in [System::Rabbitmq, System::Nats, System::Redis] {
        let Some(o) = idx(other) else { continue };
        let label = format!("switchyard / {} msgs/s", other.name());
        let ratio = thr.rate[sy] / thr.rate[o];
        if other == System::Rabbitmq {
            let _ = writeln!(
                out,
                "{}",
                report::ratio_line(&label, ratio, TARGET_VS_RABBITMQ)
            );
            let lower = lat.p99[sy] < lat.p99[o];
            let _ = writeln!(
                out,
                "{:<34} {:>6.1} ms vs {:.1} ms ({:.2}×, {which})   target lower   {}",
                "switchyard vs rabbitmq e2e p99",
                lat.p99[sy],
                lat.p99[o],
                lat.p99[sy] / lat.p99[o],
                if lower { "PASS" } else { "BELOW" }
            );
            let _ = writeln!(
                out,
                "target \"switchyard ≥ RabbitMQ throughput at a lower p99\": {}",
                if ratio >= TARGET_VS_RABBITMQ && lower {
                    "PASS"
                } else {
                    "BELOW"
                }
            );
        } else {
            let target = if other == System::Nats {
                TARGET_VS_NATS
            } else {
                TARGET_VS_REDIS
            };
            let _ = writeln!(out, "{}", report::ratio_line(&label, ratio, target));
            let _ = writeln!(
                out,
                "{:<34} {:.1} ms vs {:.1} ms ({which}; no target{})",
                format!("  e2e p99 vs {}", other.name()),
                lat.p99[sy],
                lat.p99[o],
                if other == System::Redis {
                    "; Redis here is not durable"
                } else {
                    ""
                }
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_exact_size_and_their_stamp_parses() {
        for (i, t) in [(0, 0), (7, 123), (199_999, 9_876_543_210)] {
            for len in [64, 200, 1024] {
                let p = payload(i, t, len);
                assert_eq!(p.len(), len);
                let v: serde_json::Value = serde_json::from_slice(&p).expect("valid JSON");
                assert_eq!(v["i"], i);
                assert_eq!(Stamp::parse(&p).expect("a stamp"), Stamp { i, t });
                let s: Stamp = serde_json::from_slice(&p).expect("deserialises");
                assert_eq!(s, Stamp { i, t });
            }
        }
        assert!(Stamp::parse(b"{\"x\":1}").is_err());
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v = [1000, 2000, 3000, 4000];
        assert_eq!(quantile_ms(&v, 0.5), 2.0);
        assert_eq!(quantile_ms(&v, 0.99), 4.0);
        assert!(quantile_ms(&[], 0.5).is_nan());
    }

    /// An in-memory system: the harness counts every message once and stops.
    #[derive(Clone)]
    struct Mem(Arc<std::sync::Mutex<std::collections::VecDeque<Bytes>>>);

    impl Producer for Mem {
        async fn send(&mut self, payloads: Vec<Bytes>) -> anyhow::Result<()> {
            self.0.lock().unwrap().extend(payloads);
            Ok(())
        }
    }

    struct MemConsumer(Mem, usize);

    impl Consumer for MemConsumer {
        async fn receive(&mut self, max: usize, wait: Duration) -> anyhow::Result<Vec<Stamp>> {
            let got: Vec<Bytes> = {
                let mut q = (self.0).0.lock().unwrap();
                let n = q.len().min(max);
                q.drain(..n).collect()
            };
            if got.is_empty() {
                tokio::time::sleep(wait.min(Duration::from_millis(1))).await;
            }
            self.1 = got.len();
            got.iter().map(|p| Stamp::parse(p)).collect()
        }

        async fn ack(&mut self) -> anyhow::Result<Vec<usize>> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn the_harness_counts_every_message_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let q = Mem(Default::default());
        let spec = Spec {
            messages: 1003,
            producers: 3,
            consumers: 2,
            batch: 10,
            message_bytes: 100,
            rate: None,
        };
        let r = rt
            .block_on(drive(
                spec,
                vec![q.clone(), q.clone(), q.clone()],
                vec![MemConsumer(q.clone(), 0), MemConsumer(q, 0)],
                Duration::from_secs(10),
            ))
            .unwrap();
        assert_eq!(r.e2e_us.len(), 1003);
        assert_eq!(r.produce_us.len(), 34 + 34 + 34);
        assert_eq!(r.duplicates, 0);
        assert!(r.elapsed > Duration::ZERO);
    }

    #[test]
    fn paced_producers_keep_to_the_offered_rate() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let q = Mem(Default::default());
        let spec = Spec {
            messages: 2000,
            producers: 2,
            consumers: 1,
            batch: 50,
            message_bytes: 100,
            rate: Some(10_000.0),
        };
        let r = rt
            .block_on(drive(
                spec,
                vec![q.clone(), q.clone()],
                vec![MemConsumer(q, 0)],
                Duration::from_secs(10),
            ))
            .unwrap();
        // 40 batches at 200 per second: the last is due at 195 ms.
        assert!(r.produced >= Duration::from_millis(195), "{:?}", r.produced);
        assert_eq!(r.e2e_us.len(), 2000);
    }
}
