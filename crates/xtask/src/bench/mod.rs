//! `cargo xtask bench …`: benchmarks that print switchyard's figures next to a baseline
//! measured in the same run, back to back on the same machine, and the ratio.
//!
//! A benchmark is a subcommand of [`Bench`] with its own module; the shared parts are the
//! HTTP load generator ([`load`]), server processes ([`process`]), what `/proc` tells of a
//! process ([`procfs`]), the release build and the switchyard binary a bench runs
//! ([`build`]) and reporting ([`report`]).

mod all;
mod build;
mod cdc;
#[cfg(feature = "peers")]
mod connectors;
mod ingest;
mod kafka;
mod load;
mod plugin;
mod process;
mod procfs;
mod queue;
mod report;

use clap::{Args, Subcommand};

/// `cargo xtask bench <which>` (help text: on `Command::Bench` in main.rs).
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable HTTP ingest vs an fdatasync group-commit axum server and a no-op axum server.
    ///
    /// Requests/s, p50/p99 latency and peak RSS of three servers, each its own process,
    /// loaded back to back by the same generator (64 keep-alive connections, one request in
    /// flight each, 200-byte JSON events with an `x-key` spread over 1024 keys):
    ///
    ///   baseline-durable  axum; per POST appends the body to a file and answers 200 after an
    ///                     fdatasync, with group commit (one writer thread: one write and one
    ///                     fdatasync for all pending appends, then answers them all)
    ///   noop              axum answering 200 at once
    ///   switchyard        `switchyard run` with one http source and a pipeline to a sink
    ///                     (--sink), fresh data dir next to the baseline's file
    ///
    /// Prints the table and the ratios switchyard/baseline-durable (target ≥ 0.85) and
    /// switchyard/noop (target ≥ 0.45). It never fails on a ratio; it prints PASS or BELOW.
    #[command(verbatim_doc_comment)]
    Ingest(ingest::IngestArgs),
    /// WebAssembly plugins: per-event cost, host overhead, end-to-end cost and isolation.
    ///
    /// One run prints four parts, each next to its baseline measured in the same run:
    ///
    ///   1  filter_by_field.wasm vs a native Rust closure doing the same work (parse the
    ///      JSON payload with serde_json, look up `status`, compare to "paid"), same
    ///      200-byte events, batches of 64, in this process: ns/event and the ratio
    ///      (target ≤ 2×)
    ///   2  host cost: keep_all.wasm (does nothing), total call time / events at batch 1,
    ///      64 and 256 (target < 300 ns/event at 64)
    ///   3  `switchyard run`, http source -> pipeline -> file sink, without and with the
    ///      filter: ingest req/s, delivered events/s and their ratios (no target)
    ///   4  two http sources: a healthy pipeline (filter_by_field -> file) alone, then
    ///      while a side load sends `loop` to a hostile pipeline (loop_forever.wasm, 20 ms
    ///      deadline, fuel 1e12, on_error dead_letter): healthy delivered/s and req/s and
    ///      the ratios (target ≥ 0.8)
    ///
    /// The components come from plugins/target/wasm32-wasip2/release (built by
    /// scripts/build-plugins.sh when missing). It never fails on a figure; it prints PASS or
    /// BELOW.
    #[command(verbatim_doc_comment)]
    Plugin(plugin::PluginArgs),
    /// Kafka: switchyard's sink and source next to a raw rdkafka client, same broker.
    ///
    /// Starts a tansu broker (.tools/bin/tansu; scripts/install-tansu.sh installs it) and
    /// measures, back to back, with the same N keyed 200-byte JSON messages:
    ///
    ///   produce  a raw rdkafka FutureProducer (idempotent, acks=all, linger 5 ms, the
    ///            sink's four headers) vs `switchyard run` ingesting them over HTTP
    ///            (NDJSON batches, 16 connections) into a Kafka sink: events/s until the
    ///            last delivery report / the sink's `delivered` counter (no target: it
    ///            includes HTTP ingest with fsync); and switchyard draining a durable
    ///            queue that holds the same events into a Kafka sink, from its first
    ///            delivery to the last (target ≥ 0.9)
    ///   consume  a raw rdkafka consumer vs switchyard's Kafka source into a `null`
    ///            sink: events/s from the first message to the N-th, each read
    ///            --consume-rounds times in alternation (fresh groups); the round
    ///            with the median ratio counts (target ≥ 0.5)
    ///
    /// It never fails on a ratio; it prints PASS or BELOW.
    #[command(verbatim_doc_comment)]
    Kafka(kafka::KafkaArgs),
    /// Postgres CDC: switchyard's postgres_cdc source vs pg_recvlogical, same WAL.
    ///
    /// Starts a throwaway cluster (wal_level=logical, fsync=off), creates a table, a
    /// publication and, per round, two pgoutput slots, then loads --rows rows (~100 bytes)
    /// in --txn-rows-row transactions. Measured, back to back on the same WAL:
    ///
    ///   pg_recvlogical  --start --endpos=<WAL LSN after the load> -f /dev/null,
    ///                   proto_version=1, the publication; rows / wall time to exit
    ///   switchyard      `switchyard run`, postgres_cdc source (snapshot = "never") on the
    ///                   other slot -> one pipeline -> stdout sink into /dev/null (or
    ///                   --sink file); rows / wall time from start until the sink's
    ///                   delivered counter counts every row (and the schema event)
    ///
    /// Prints rows/s, CPU-seconds and peak RSS of both processes and of the walsender
    /// serving each, the ratio switchyard/pg_recvlogical (target ≥ 0.9), switchyard's CPU
    /// per row (target ≤ 7 µs) and peak RSS (target ≤ 150 MiB). Then the latency: a
    /// caught-up switchyard with a file sink while a writer inserts --latency-rate rows/s
    /// (--latency-txn-rows-row transactions on a fixed tick) for --latency-seconds;
    /// p50/p99 of the time each row's line appears in the sink file minus its commit time
    /// (commit_ts; target p99 ≤ 50 ms). It never fails on a figure; it prints PASS or BELOW.
    #[command(verbatim_doc_comment)]
    Cdc(cdc::CdcArgs),
    /// Internal queues: durable produce + receive + ack vs RabbitMQ, NATS JetStream, Redis.
    ///
    /// The same load for every system, one after the other: --producers connections each
    /// sending its share of --messages persistent --message-bytes messages in batches of
    /// --batch (one request / one confirm wait per batch, the next batch after the last
    /// one is durable), while --consumers connections receive up to --batch at a time
    /// and ack them (one ack call per received batch). Systems:
    ///
    ///   switchyard  `switchyard run` (release) with one queue of --partitions partitions;
    ///               POST /queues/Q/messages (201 after fsync), POST
    ///               /queues/Q/groups/G/receive {max, wait}, POST …/ack (fsync'd)
    ///   rabbitmq    a durable queue (--rabbitmq-queue-type), persistent messages,
    ///               publisher confirms awaited per batch, manual acks (multiple) with
    ///               prefetch = --batch
    ///   nats        a JetStream file-storage stream, async publish with the PubAcks
    ///               awaited per batch, a durable pull consumer with explicit acks
    ///               (double_ack: answered by the server)
    ///   redis       XADD pipelined per batch, XREADGROUP COUNT/BLOCK, XACK; a
    ///               non-durable reference when the server keeps nothing on disk
    ///
    /// Figures: msgs/s = --messages / (time from the first produce to the answer of the
    /// ack of the last distinct message); end-to-end latency = consumer received − stamp
    /// the producer wrote into the payload just before sending its batch (p50/p99 over
    /// every received message); produce latency = one batch's produce call until it is
    /// durable (p50/p99 over every batch). It prints the ratio switchyard/RabbitMQ and the
    /// verdict for the target "switchyard ≥ RabbitMQ throughput at a lower end-to-end p99",
    /// and the ratios to NATS (target ≥ 2) and Redis (target ≥ 0.5) (PASS/BELOW); it never
    /// fails on a figure. A peer that fails (e.g. its server is down) is left out of the
    /// table with its error, and the others are measured.
    ///
    /// The peers' clients are behind xtask's `peers` feature: `cargo xtask bench queue`
    /// builds its release self with it.
    #[command(verbatim_doc_comment)]
    Queue(queue::QueueArgs),
    /// Broker connectors (NATS JetStream, Redis Streams, RabbitMQ, MQTT) next to each
    /// broker's own client.
    ///
    /// Per broker, on the machine's own server (MQTT: a private mosquitto started for the
    /// run, which queues without limit), with the same N keyed 200-byte JSON messages:
    ///
    ///   sink    the raw client publishing them (4 tasks × 256 unconfirmed: PubAcks,
    ///           pipelined XADD replies, publisher confirms; MQTT: one connection with
    ///           100 QoS 1 publishes awaiting PUBACK) vs switchyard draining a durable
    ///           queue that holds them into its sink, first delivery to last (target ≥ 0.8)
    ///   source  the raw client reading what it published (a pull consumer acking per
    ///           batch; XREADGROUP + XACK per batch; a RabbitMQ consumer with prefetch
    ///           1000; an MQTT persistent session) vs switchyard's source into a `null`
    ///           sink, first event to the N-th (no target)
    ///
    ///   --only nats,redis,rabbitmq,mqtt   a subset
    ///
    /// Builds its release self with the `peers` feature (the brokers' clients).
    #[cfg(feature = "peers")]
    #[command(verbatim_doc_comment)]
    Connectors(connectors::ConnectorsArgs),
    /// Every benchmark in one run, and one table of every figure against its target.
    ///
    /// Runs ingest, cdc, kafka, queue and plugin one after the other (switchyard built
    /// once), each with sizes that keep the whole run bounded (ingest: the medians of three
    /// alternated rounds, its figure moves most between runs; --quick: smaller, --full:
    /// more rounds and larger sizes), then prints one table:
    /// per figure the baseline and switchyard's value, the ratio, the target and the
    /// verdict (PASS, BELOW, — for no target, or ERROR: why when the bench could not
    /// measure it, e.g. a peer broker is down; the run goes on with the next bench),
    /// switchyard's CPU and peak RSS, the machine's 1-minute load before and after the
    /// bench and its cores, the commit and the date.
    ///
    /// The table goes to target/bench/bench.md and bench.json. Every single `bench X`
    /// writes its rows there too, replacing that bench's earlier rows, so one bench can be
    /// run again without the others. What each row measures: docs/benchmarks.md.
    ///
    /// Builds its release self with the `peers` feature (the queue bench's clients).
    #[command(verbatim_doc_comment)]
    All(all::AllArgs),
}

impl Bench {
    fn name(&self) -> &'static str {
        match self {
            Bench::Ingest(_) => "ingest",
            Bench::Plugin(_) => "plugin",
            Bench::Kafka(_) => "kafka",
            Bench::Cdc(_) => "cdc",
            Bench::Queue(_) => "queue",
            #[cfg(feature = "peers")]
            Bench::Connectors(_) => "connectors",
            Bench::All(_) => "all",
        }
    }
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // Only `bench queue` (and `bench all`, which runs it) needs the peer brokers' clients
    // (xtask's `peers` feature); the other benches keep the release xtask they always had.
    let features: &[&str] = match args.which {
        Bench::Queue(_) | Bench::All(_) => &["peers"],
        #[cfg(feature = "peers")]
        Bench::Connectors(_) => &["peers"],
        _ => &[],
    };
    build::reexec_release_if_debug(features)?;
    let which = match args.which {
        Bench::All(a) => return all::run(a),
        one => one,
    };
    let name = which.name();
    let (rows, error) = measured(name, || match which {
        Bench::Ingest(a) => ingest::run(a),
        Bench::Plugin(a) => plugin::run(a),
        Bench::Kafka(a) => kafka::run(a),
        Bench::Cdc(a) => cdc::run(a),
        Bench::Queue(a) => queue::run(a),
        #[cfg(feature = "peers")]
        Bench::Connectors(a) => connectors::run(a),
        Bench::All(_) => unreachable!("run above"),
    });
    let dir = bench_dir()?;
    report::record(&dir, &rows)?;
    println!();
    print!("{}", report::markdown(&rows));
    println!("(these rows are now in {})", dir.join("bench.md").display());
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `target/bench` (next to the release directory, so it honours CARGO_TARGET_DIR).
fn bench_dir() -> anyhow::Result<std::path::PathBuf> {
    let release = build::release_dir()?;
    Ok(release
        .parent()
        .map_or_else(|| release.join("bench"), |t| t.join("bench")))
}

/// Runs one bench (`f` returns its rows) and stamps its rows with the load before and
/// after, the cores, the commit and the date. A bench that fails or panics gives one row
/// with the verdict `ERROR: why` (and the error, to return or print); `bench all` goes on.
fn measured(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<Vec<report::Row>>,
) -> (Vec<report::Row>, Option<anyhow::Error>) {
    let load_before = report::loadavg_1m();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let load_after = report::loadavg_1m();
    let (mut rows, error) = match outcome {
        Ok(Ok(rows)) => (rows, None),
        Ok(Err(e)) => (
            vec![report::Row::error(name, "(the bench)", &format!("{e:#}"))],
            Some(e),
        ),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("a panic")
                .to_owned();
            (
                vec![report::Row::error(
                    name,
                    "(the bench)",
                    &format!("panicked: {why}"),
                )],
                Some(anyhow::anyhow!("{name} panicked: {why}")),
            )
        }
    };
    report::RunInfo {
        load_before,
        load_after,
        cores: report::cores(),
        commit: report::git_commit(&build::workspace_root()),
        date: report::utc_now(),
    }
    .stamp(&mut rows);
    (rows, error)
}

/// A temporary directory for one benchmark run (in `dir` when given), kept after the run
/// when `keep` is set.
fn temp_dir(
    prefix: &str,
    dir: Option<&std::path::Path>,
    keep: bool,
) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context as _;
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    let mut tmp = match dir {
        Some(d) => builder.tempdir_in(d),
        None => builder.tempdir(),
    }
    .context("creating the temporary directory")?;
    if keep {
        tmp.disable_cleanup(true);
    }
    Ok(tmp)
}
