//! `cargo xtask bench cdc`: switchyard's Postgres CDC source against `pg_recvlogical`,
//! in one run, on the same WAL (method: docs/decisions/0009-cdc-benchmark.md).
//!
//! 1. A throwaway cluster (`PgCluster`: wal_level=logical, fsync=off) gets a table, a
//!    publication for it and, per round, two pgoutput slots created *before* the load, so
//!    both sides decode exactly the same WAL. Then N rows (~100 bytes) are inserted in
//!    transactions of `--txn-rows`.
//! 2. Throughput, back to back per round (the order alternates between rounds):
//!    `pg_recvlogical --start --endpos=<WAL LSN after the load> -f /dev/null` with
//!    `proto_version=1` and the publication, on its slot; then `switchyard run` with a
//!    `postgres_cdc` source on the other slot (`snapshot = "never"`) and one pipeline to a
//!    stdout sink whose output goes to /dev/null (or `--sink file`). Each figure is rows
//!    divided by the wall time from starting the process until it is done: pg_recvlogical
//!    exits at the end LSN; switchyard is done when its sink's `delivered` counter reaches
//!    N + 1 (the rows and the one `schema` event of the table). Both include process start
//!    and connecting. CPU-seconds and peak RSS of both processes, and of the walsender
//!    serving each, are read from /proc (and wait4 for pg_recvlogical).
//! 3. Latency: a fresh switchyard on a slot created after the throughput rounds (so it is
//!    caught up), with a file sink; a writer inserts `--latency-rate` rows/s as
//!    `--latency-txn-rows`-row transactions on a fixed tick for `--latency-seconds`; a
//!    thread tails the sink file every millisecond. Per row: the time its line was seen
//!    minus its commit time (`commit_ts` of the payload, microseconds; same clock).
//!    The page cache is written back (`sync`) first: the throughput rounds' dirty pages
//!    would otherwise be flushed by the kernel during the window, stalling the sink's
//!    fdatasync behind them.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use switchyard_test_support::PgCluster;
use tokio_postgres::{Client, NoTls};

use super::process::free_addr;
use super::procfs::{cpu_seconds, peak_rss_kib};
use super::report::{Op, Row, Target};
use super::{build, procfs, report};

/// switchyard rows/s / pg_recvlogical rows/s (`docs/design.md`, "Benchmarks").
const TARGET_RATIO: f64 = 0.9;
/// Peak RSS of switchyard at 1M rows (`docs/design.md`, "Benchmarks").
const TARGET_RSS_MIB: f64 = 150.0;
/// switchyard's CPU per row streamed, microseconds.
const TARGET_CPU_US_PER_ROW: f64 = 7.0;
/// commit → line in the sink, p99, at the latency phase's rate (10k rows/s by default).
const TARGET_LATENCY_P99_MS: f64 = 50.0;
const DATABASE: &str = "bench";
const TABLE: &str = "bench_rows";
const PUBLICATION: &str = "bench_pub";
/// How long one side may take to stream every row.
const STREAM_TIMEOUT: Duration = Duration::from_secs(900);

/// Options of `bench cdc` (help text: on `Bench::Cdc`).
#[derive(Args)]
pub struct CdcArgs {
    /// Rows loaded before the throughput rounds.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Rows per transaction of the load.
    #[arg(long, default_value_t = 1000)]
    txn_rows: u64,
    /// Throughput rounds (pg_recvlogical and switchyard each on their own slot, order
    /// alternating); >1 prints every round and medians.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// switchyard's sink in the throughput rounds: `stdout` (discarded, like
    /// pg_recvlogical's /dev/null) or `file` (JSON lines, fsync'd per batch of 512).
    #[arg(long, value_enum, default_value_t = SinkKind::Stdout)]
    sink: SinkKind,
    /// Rows per second written during the latency measurement.
    #[arg(long, default_value_t = 10_000)]
    latency_rate: u64,
    /// Rows per transaction during the latency measurement.
    #[arg(long, default_value_t = 100)]
    latency_txn_rows: u64,
    /// Seconds of steady writing for the latency measurement (0: skip it).
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Keep the temporary directory (configs, logs, sink files) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    Stdout,
    File,
}

/// One side of one round.
#[derive(Clone, Copy, Default)]
struct Run {
    seconds: f64,
    rows_per_s: f64,
    cpu_s: f64,
    peak_rss_kib: u64,
    walsender_cpu_s: f64,
}

pub fn run(args: CdcArgs) -> anyhow::Result<Vec<Row>> {
    if args.rows == 0 || args.txn_rows == 0 || args.latency_txn_rows == 0 || args.rounds == 0 {
        bail!("--rows, --txn-rows, --latency-txn-rows and --rounds must be at least 1");
    }
    if args.rounds > 15 {
        bail!("--rounds: at most 15 (two replication slots each)");
    }
    let switchyard = build::switchyard_binary(args.bin.as_deref())?;
    let tmp = super::temp_dir("switchyard-bench-cdc-", None, args.keep)?;
    let root = tmp.path().to_path_buf();

    eprintln!("starting a throwaway Postgres cluster");
    let pg = PgCluster::start();
    let recvlogical = pg_recvlogical(pg.bin_dir())?;
    let dsn = pg.create_database(DATABASE);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting a runtime")?;
    let client = rt.block_on(connect(&dsn))?;
    let version: String = rt
        .block_on(client.query_one("SHOW server_version", &[]))?
        .get(0);

    rt.block_on(client.batch_execute(&format!(
        "CREATE TABLE {TABLE} (
            id bigint PRIMARY KEY,
            account integer NOT NULL,
            amount numeric(12, 2) NOT NULL,
            note text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE PUBLICATION {PUBLICATION} FOR TABLE {TABLE};"
    )))
    .context("creating the table and the publication")?;
    for round in 1..=args.rounds {
        for slot in [recv_slot(round), switchyard_slot(round)] {
            rt.block_on(client.execute(
                "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                &[&slot],
            ))
            .with_context(|| format!("creating slot {slot}"))?;
        }
    }
    let start_lsn = current_lsn(&rt, &client)?;
    eprintln!(
        "loading {} rows in {}-row transactions",
        args.rows, args.txn_rows
    );
    let load_started = Instant::now();
    rt.block_on(insert_rows(&client, 0, args.rows, args.txn_rows))?;
    let load_seconds = load_started.elapsed().as_secs_f64();
    let end_lsn = current_lsn(&rt, &client)?;
    let wal_bytes: i64 = rt
        .block_on(client.query_one(
            "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)::bigint",
            &[&end_lsn, &start_lsn],
        ))?
        .get(0);
    let row_bytes: f64 = rt
        .block_on(client.query_one(
            &format!(
                "SELECT avg(pg_column_size(t.*))::float8 FROM (SELECT * FROM {TABLE} LIMIT 1000) t"
            ),
            &[],
        ))?
        .get(0);

    let sink_desc = match args.sink {
        SinkKind::Stdout => "stdout sink → /dev/null",
        SinkKind::File => "file sink (fsync per batch of 512)",
    };
    println!("# switchyard bench cdc");
    println!("machine:    {}", report::machine());
    println!(
        "postgres:   {version} ({}), wal_level=logical, fsync=off; pg_recvlogical {}",
        pg.bin_dir().display(),
        recvlogical.display()
    );
    println!(
        "data:       {} rows (~{row_bytes:.0} bytes each) in {}-row transactions, loaded in \
         {load_seconds:.1} s; {:.0} MiB of WAL ({start_lsn} → {end_lsn})",
        args.rows,
        args.txn_rows,
        wal_bytes as f64 / (1024.0 * 1024.0)
    );
    println!("switchyard: {} — {sink_desc}", switchyard.display());
    println!(
        "tmp:        {} — {}",
        root.display(),
        report::filesystem(&root)
    );
    println!(
        "reproduce:  {}",
        report::reproduce_command(&std::env::args().skip(1).collect::<Vec<_>>())
    );
    println!();

    let mut recv_runs = Vec::new();
    let mut sy_runs = Vec::new();
    for round in 1..=args.rounds {
        let recv_first = round % 2 == 1;
        for side in 0..2 {
            if (side == 0) == recv_first {
                eprintln!("round {round}: pg_recvlogical");
                let r =
                    run_recvlogical(&rt, &client, &recvlogical, &pg, round, &end_lsn, args.rows)?;
                recv_runs.push(r);
            } else {
                eprintln!("round {round}: switchyard");
                let dir = root.join(format!("round-{round}"));
                let r = run_switchyard(
                    &rt,
                    &client,
                    &switchyard,
                    &dsn,
                    &dir,
                    round,
                    args.sink,
                    args.rows,
                )?;
                sy_runs.push(r);
                if !args.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
        }
        if args.rounds > 1 {
            let (r, s) = (recv_runs[recv_runs.len() - 1], sy_runs[sy_runs.len() - 1]);
            println!(
                "round {round}: pg_recvlogical {:>9.0} rows/s   switchyard {:>9.0} rows/s   ratio {:.2}",
                r.rows_per_s,
                s.rows_per_s,
                s.rows_per_s / r.rows_per_s
            );
        }
    }

    let latency = if args.latency_seconds > 0 {
        // The throughput rounds leave the cluster's writes (hundreds of MB: it runs with
        // fsync=off) dirty in the page cache; the kernel writes them back ~30 s later, which
        // can fall inside the latency window and hold the file sink's fdatasync for a
        // quarter of a second. Written back now, so the window measures switchyard rather
        // than the previous phase's leftovers.
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        eprintln!(
            "latency: {} rows/s for {} s",
            args.latency_rate, args.latency_seconds
        );
        Some(run_latency(
            &rt,
            &client,
            &switchyard,
            &dsn,
            &root.join("latency"),
            &args,
        )?)
    } else {
        None
    };
    drop(client);
    drop(pg);

    let recv = median_run(&recv_runs);
    let sy = median_run(&sy_runs);
    if args.rounds > 1 {
        println!();
        println!("medians of {} rounds:", args.rounds);
    }
    println!(
        "{:<36} {:>10} {:>8} {:>8} {:>10} {:>14}",
        "throughput", "rows/s", "wall s", "CPU s", "peak RSS", "walsender CPU s"
    );
    for (name, r) in [
        ("pg_recvlogical (pgoutput, /dev/null)", recv),
        (
            match args.sink {
                SinkKind::Stdout => "switchyard → stdout sink (/dev/null)",
                SinkKind::File => "switchyard → file sink",
            },
            sy,
        ),
    ] {
        println!(
            "{name:<36} {:>10.0} {:>8.2} {:>8.2} {:>6.1} MiB {:>14.2}",
            r.rows_per_s,
            r.seconds,
            r.cpu_s,
            r.peak_rss_kib as f64 / 1024.0,
            r.walsender_cpu_s
        );
    }
    println!();
    println!(
        "{}",
        report::ratio_line(
            "switchyard / pg_recvlogical rows/s",
            sy.rows_per_s / recv.rows_per_s,
            TARGET_RATIO
        )
    );
    println!(
        "{}",
        report::at_most_line(
            "switchyard peak RSS",
            sy.peak_rss_kib as f64 / 1024.0,
            TARGET_RSS_MIB,
            " MiB"
        )
    );
    println!(
        "{:<34} {:>6.2}   (µs of CPU per row: {:.1})",
        "switchyard CPU s / pg_recvlogical",
        sy.cpu_s / recv.cpu_s.max(1e-9),
        sy.cpu_s * 1e6 / args.rows as f64
    );
    println!(
        "{}",
        report::at_most_line(
            "switchyard CPU per row",
            sy.cpu_s * 1e6 / args.rows as f64,
            TARGET_CPU_US_PER_ROW,
            " µs"
        )
    );
    let rows = rows(&args, &recv, &sy, latency.as_ref());
    if let Some(l) = latency {
        println!();
        println!(
            "latency, commit → line in switchyard's file sink, {} rows/s asked ({:.0} achieved) \
             as {}-row transactions for {} s, {} rows:",
            args.latency_rate,
            l.achieved_rate,
            args.latency_txn_rows,
            args.latency_seconds,
            l.samples
        );
        println!(
            "  p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
            l.p50_ms, l.p99_ms, l.max_ms
        );
        println!(
            "{}",
            report::at_most_line("commit → sink p99", l.p99_ms, TARGET_LATENCY_P99_MS, " ms")
        );
    }
    if args.keep {
        println!("kept {}", root.display());
    }
    Ok(rows)
}

/// The rows of `bench all`: throughput, CPU and RSS next to pg_recvlogical; the latency.
fn rows(args: &CdcArgs, recv: &Run, sy: &Run, latency: Option<&Latency>) -> Vec<Row> {
    let n = args.rows as f64;
    let note = format!(
        "{} rows{}",
        args.rows,
        if args.rounds > 1 {
            format!(", medians of {} rounds", args.rounds)
        } else {
            String::new()
        }
    );
    let row = |metric: &str| {
        Row::new("cdc", metric)
            .cpu(sy.cpu_s, n)
            .rss_kib(sy.peak_rss_kib)
            .note(note.clone())
    };
    let mut rows = vec![
        row("rows/s")
            .baseline("pg_recvlogical", recv.rows_per_s)
            .value(sy.rows_per_s)
            .target(Target::ratio(Op::AtLeast, TARGET_RATIO)),
        row("CPU µs/row")
            .baseline("pg_recvlogical", recv.cpu_s * 1e6 / n)
            .value(sy.cpu_s * 1e6 / n)
            .target(Target::value(Op::AtMost, TARGET_CPU_US_PER_ROW, "µs/row")),
        row("peak RSS MiB")
            .baseline("pg_recvlogical", recv.peak_rss_kib as f64 / 1024.0)
            .value(sy.peak_rss_kib as f64 / 1024.0)
            .target(Target::value(Op::AtMost, TARGET_RSS_MIB, "MiB")),
    ];
    if let Some(l) = latency {
        rows.push(
            Row::new(
                "cdc",
                &format!("commit → sink p99 ms at {} rows/s", args.latency_rate),
            )
            .value(l.p99_ms)
            .target(Target::value(Op::AtMost, TARGET_LATENCY_P99_MS, "ms"))
            .note(format!(
                "file sink; {:.0} rows/s achieved, {} s; p50 {:.1} ms",
                l.achieved_rate, args.latency_seconds, l.p50_ms
            )),
        );
    }
    rows
}

fn recv_slot(round: u32) -> String {
    format!("bench_recvlogical_{round}")
}

fn switchyard_slot(round: u32) -> String {
    format!("bench_switchyard_{round}")
}

/// pg_recvlogical next to the server binaries, else the one on PATH (/usr/bin).
fn pg_recvlogical(bin_dir: &Path) -> anyhow::Result<PathBuf> {
    let next_to_server = bin_dir.join("pg_recvlogical");
    if next_to_server.is_file() {
        return Ok(next_to_server);
    }
    let usr = Path::new("/usr/bin/pg_recvlogical");
    if usr.is_file() {
        return Ok(usr.to_path_buf());
    }
    bail!(
        "pg_recvlogical not found in {} or /usr/bin; install the PostgreSQL client tools",
        bin_dir.display()
    )
}

async fn connect(dsn: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(dsn, NoTls)
        .await
        .with_context(|| format!("connecting to {dsn}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("bench connection to postgres: {e}");
        }
    });
    Ok(client)
}

fn current_lsn(rt: &tokio::runtime::Runtime, client: &Client) -> anyhow::Result<String> {
    Ok(rt
        .block_on(client.query_one("SELECT pg_current_wal_lsn()::text", &[]))?
        .get(0))
}

/// Inserts ids `first..first + n` in transactions of `txn_rows` (each statement its own
/// transaction).
async fn insert_rows(client: &Client, first: u64, n: u64, txn_rows: u64) -> anyhow::Result<()> {
    let insert = client.prepare(&insert_sql()).await?;
    let mut id = first;
    while id < first + n {
        let last = (id + txn_rows).min(first + n) - 1;
        client
            .execute(&insert, &[&(id as i64), &(last as i64)])
            .await
            .context("inserting rows")?;
        id = last + 1;
    }
    Ok(())
}

/// One statement (one transaction) inserting ids `$1..=$2`, ~100 bytes a row.
fn insert_sql() -> String {
    format!(
        "INSERT INTO {TABLE} (id, account, amount, note) \
         SELECT g, (g % 1000)::int, (g % 100000)::numeric / 100, repeat(md5(g::text), 2) \
         FROM generate_series($1::bigint, $2::bigint) g"
    )
}

/// The pid of the walsender serving `slot`, once a client streams from it.
fn walsender_pid(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    slot: &str,
    mut exited: impl FnMut() -> bool,
) -> anyhow::Result<Option<u32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pid: Option<i32> = rt
            .block_on(client.query_one(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            ))?
            .get(0);
        if let Some(pid) = pid {
            return Ok(Some(pid as u32));
        }
        if exited() || Instant::now() > deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Samples a process's CPU seconds every 20 ms until it exits or [`CpuSampler::finish`].
struct CpuSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<f64>,
}

impl CpuSampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut last = 0.0;
            while let Some(cpu) = cpu_seconds(pid) {
                last = cpu;
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            last
        });
        Self { stop, thread }
    }

    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0.0)
    }
}

/// pg_recvlogical from its slot to the end LSN, into /dev/null.
fn run_recvlogical(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    exe: &Path,
    pg: &PgCluster,
    round: u32,
    end_lsn: &str,
    rows: u64,
) -> anyhow::Result<Run> {
    let slot = recv_slot(round);
    let mut cmd = Command::new(exe);
    cmd.args(["-h", "127.0.0.1", "-p", &pg.port().to_string()])
        .args(["-U", "postgres", "-d", DATABASE, "-S", &slot])
        .args(["-o", "proto_version=1", "-o"])
        .arg(format!("publication_names={PUBLICATION}"))
        .arg("--start")
        .arg(format!("--endpos={end_lsn}"))
        .args(["-n", "-f", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let pid = child.id();
    let walsender = walsender_pid(rt, client, &slot, || {
        // Not reaped yet, so an exited pg_recvlogical is a zombie (state Z).
        procfs::exited(pid)
    })?;
    let sampler = walsender.map(CpuSampler::start);
    let (status, usage) = wait_with_rusage(&mut child, STREAM_TIMEOUT)?;
    let seconds = started.elapsed().as_secs_f64();
    let walsender_cpu_s = sampler.map_or(0.0, CpuSampler::finish);
    if !status_ok(status) {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        bail!("pg_recvlogical failed (wait status {status}): {err}");
    }
    let cpu_s = timeval(usage.ru_utime) + timeval(usage.ru_stime);
    Ok(Run {
        seconds,
        rows_per_s: rows as f64 / seconds,
        cpu_s,
        peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
        walsender_cpu_s,
    })
}

fn timeval(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

fn status_ok(status: i32) -> bool {
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Reaps `child` with wait4 (polling every 2 ms), returning its wait status and resource
/// usage; kills it after `timeout`.
fn wait_with_rusage(child: &mut Child, timeout: Duration) -> anyhow::Result<(i32, libc::rusage)> {
    let pid = child.id() as libc::pid_t;
    let deadline = Instant::now() + timeout;
    loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value of this plain C struct.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, which std has not reaped (we never call wait
        // on it), with valid pointers.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        if r < 0 {
            bail!("wait4: {}", std::io::Error::last_os_error());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("pg_recvlogical did not reach the end LSN within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The switchyard config: the slot → one pipeline → `sink` (TOML of the sink table).
fn config(dsn: &str, slot: &str, data_dir: &Path, listen: &str, sink: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"
data_dir = "{data_dir}"

[log]
level = "warn"

[sources.db]
type = "postgres_cdc"
dsn = "{dsn}"
slot = "{slot}"
publication = "{PUBLICATION}"
tables = ["public.{TABLE}"]
snapshot = "never"

[pipelines.cdc]
from = ["db"]
to = ["out"]

[sinks.out]
{sink}
"#,
        data_dir = data_dir.display()
    )
}

fn file_sink(path: &Path) -> String {
    format!("type = \"file\"\npath = \"{}\"", path.display())
}

/// A running `switchyard run`, killed when dropped.
struct Switchyard {
    child: Child,
    addr: std::net::SocketAddr,
    log: PathBuf,
}

impl Switchyard {
    fn start(
        bin: &Path,
        dir: &Path,
        dsn: &str,
        slot: &str,
        sink: &str,
        stdout: Stdio,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let addr = free_addr()?;
        let path = dir.join("switchyard.toml");
        std::fs::write(
            &path,
            config(dsn, slot, &dir.join("data"), &addr.to_string(), sink),
        )?;
        let log = dir.join("switchyard.log");
        let child = Command::new(bin)
            .arg("run")
            .arg("-c")
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting switchyard")?;
        Ok(Self { child, addr, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until the sink `out` delivered `n` events; fails if switchyard exits.
    fn wait_delivered(&mut self, n: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let delivered = delivered(self.addr).unwrap_or(0.0);
            if delivered >= n as f64 {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "switchyard exited ({status}) after {delivered} of {n} events; its log ({}):\n{}",
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "switchyard delivered {delivered} of {n} events in {timeout:?} (rows + 1 schema \
                     event expected); its log: {}",
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(mut self) {
        // SAFETY: kill(2) on the pid of our own, not yet reaped child.
        unsafe { libc::kill(self.pid() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("switchyard did not stop within 10 s of SIGTERM; killing it");
    }
}

impl Drop for Switchyard {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `switchyard_sink_events_total{sink="out",outcome="delivered"}` from `/metrics`.
fn delivered(addr: std::net::SocketAddr) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| {
            l.starts_with("switchyard_sink_events_total")
                && l.contains("sink=\"out\"")
                && l.contains("outcome=\"delivered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// switchyard from its slot until every row (and the table's schema event) is delivered.
#[allow(clippy::too_many_arguments)]
fn run_switchyard(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    bin: &Path,
    dsn: &str,
    dir: &Path,
    round: u32,
    sink: SinkKind,
    rows: u64,
) -> anyhow::Result<Run> {
    let slot = switchyard_slot(round);
    let (sink_toml, stdout) = match sink {
        SinkKind::Stdout => ("type = \"stdout\"".to_owned(), Stdio::null()),
        SinkKind::File => (file_sink(&dir.join("out.jsonl")), Stdio::null()),
    };
    let started = Instant::now();
    let mut sy = Switchyard::start(bin, dir, dsn, &slot, &sink_toml, stdout)?;
    let pid = sy.pid();
    let walsender = walsender_pid(rt, client, &slot, || cpu_seconds(pid).is_none())?;
    sy.wait_delivered(rows + 1, STREAM_TIMEOUT)?;
    let seconds = started.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds(pid).unwrap_or(0.0);
    let peak_rss_kib = peak_rss_kib(pid).unwrap_or(0);
    let walsender_cpu_s = walsender.and_then(cpu_seconds).unwrap_or(0.0);
    sy.stop();
    Ok(Run {
        seconds,
        rows_per_s: rows as f64 / seconds,
        cpu_s,
        peak_rss_kib,
        walsender_cpu_s,
    })
}

fn median_run(runs: &[Run]) -> Run {
    let m = |f: fn(&Run) -> f64| report::median(&runs.iter().map(f).collect::<Vec<_>>());
    Run {
        seconds: m(|r| r.seconds),
        rows_per_s: m(|r| r.rows_per_s),
        cpu_s: m(|r| r.cpu_s),
        peak_rss_kib: m(|r| r.peak_rss_kib as f64) as u64,
        walsender_cpu_s: m(|r| r.walsender_cpu_s),
    }
}

struct Latency {
    samples: usize,
    achieved_rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

/// Steady writes into a caught-up switchyard with a file sink; commit → line latency.
fn run_latency(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    bin: &Path,
    dsn: &str,
    dir: &Path,
    args: &CdcArgs,
) -> anyhow::Result<Latency> {
    let slot = "bench_switchyard_latency";
    rt.block_on(client.execute(
        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
        &[&slot],
    ))
    .context("creating the latency slot")?;
    let out = dir.join("out.jsonl");
    let mut sy = Switchyard::start(bin, dir, dsn, slot, &file_sink(&out), Stdio::null())?;
    let tail = Tail::start(out);
    // Warm-up: one transaction through (connection, relation, schema event), not measured.
    let warm_first = args.rows + 1_000_000_000;
    let first = warm_first + args.latency_txn_rows;
    rt.block_on(insert_rows(
        client,
        warm_first,
        args.latency_txn_rows,
        args.latency_txn_rows,
    ))?;
    sy.wait_delivered(args.latency_txn_rows + 1, Duration::from_secs(60))?;

    let txns = (args.latency_rate * args.latency_seconds / args.latency_txn_rows).max(1);
    let tick = Duration::from_secs_f64(args.latency_txn_rows as f64 / args.latency_rate as f64);
    let written_started = Instant::now();
    rt.block_on(async {
        let insert = client.prepare(&insert_sql()).await?;
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        for t in 0..txns {
            interval.tick().await;
            let a = first + t * args.latency_txn_rows;
            let b = a + args.latency_txn_rows - 1;
            client.execute(&insert, &[&(a as i64), &(b as i64)]).await?;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    let written_seconds = written_started.elapsed().as_secs_f64();
    let rows = txns * args.latency_txn_rows;
    sy.wait_delivered(args.latency_txn_rows + 1 + rows, Duration::from_secs(120))?;
    // The line of the last delivered event is in the file; let the tail read it.
    let lines = tail.finish(args.latency_txn_rows + 1 + rows);
    sy.stop();

    let mut latencies_us: Vec<i64> = lines
        .iter()
        .filter_map(|(seen_us, line)| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            let p = &v["payload"];
            let id = p["after"]["id"].as_i64()?;
            if id < first as i64 {
                return None;
            }
            let commit_us = p["commit_ts"]
                .as_str()
                .and_then(rfc3339_utc_micros)
                .or_else(|| v["timestamp_ms"].as_i64().map(|ms| ms * 1000))?;
            Some(*seen_us - commit_us)
        })
        .collect();
    if latencies_us.is_empty() {
        bail!("no measured rows were found in {}", dir.display());
    }
    latencies_us.sort_unstable();
    let n = latencies_us.len();
    let pct = |p: f64| {
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        latencies_us[i] as f64 / 1000.0
    };
    Ok(Latency {
        samples: n,
        achieved_rate: rows as f64 / written_seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: latencies_us[n - 1] as f64 / 1000.0,
    })
}

/// Reads a growing file every millisecond; each complete line with the time it was seen
/// (µs since the Unix epoch).
struct Tail {
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<(i64, String)>>,
}

impl Tail {
    fn start(path: PathBuf) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicU64::new(0));
        let (flag, count) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let mut lines = Vec::new();
            let mut file = None;
            let mut partial: Vec<u8> = Vec::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let stopping = flag.load(Ordering::Relaxed);
                if file.is_none() {
                    file = std::fs::File::open(&path).ok();
                }
                let mut got = 0;
                if let Some(f) = file.as_mut() {
                    while let Ok(k) = f.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        got += k;
                        let now = unix_micros();
                        partial.extend_from_slice(&buf[..k]);
                        while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                            let line: Vec<u8> = partial.drain(..=end).collect();
                            lines.push((now, String::from_utf8_lossy(&line).into_owned()));
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                if stopping {
                    return lines;
                }
                if got == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        });
        Self { stop, seen, thread }
    }

    /// Waits (up to 10 s) for `lines` lines, then stops and returns them.
    fn finish(self, lines: u64) -> Vec<(i64, String)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.seen.load(Ordering::Relaxed) < lines && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `2026-11-25T10:00:00.123456Z` (UTC, as the source writes `commit_ts`) → µs since the
/// Unix epoch.
fn rfc3339_utc_micros(s: &str) -> Option<i64> {
    let s = s.strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let micros = if frac.is_empty() {
        0
    } else {
        if frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        frac.parse::<i64>().ok()? * 10i64.pow(6 - frac.len() as u32)
    };
    // Days from 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_timestamps_parse_to_unix_micros() {
        assert_eq!(rfc3339_utc_micros("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            rfc3339_utc_micros("2026-11-25T10:00:00.5Z"),
            Some(1_795_600_800_500_000)
        );
        assert_eq!(
            rfc3339_utc_micros("2000-03-01T00:00:01.000001Z"),
            Some(951_868_801_000_001)
        );
        assert_eq!(rfc3339_utc_micros("2026-11-25T10:00:00+02:00"), None);
    }

    #[test]
    fn generated_configs_pass_switchyard_validation() {
        for sink in [
            "type = \"stdout\"".to_owned(),
            file_sink(Path::new("/tmp/x/out.jsonl")),
        ] {
            let text = config(
                "postgres://postgres@127.0.0.1:5432/bench",
                "bench_switchyard_1",
                Path::new("/tmp/x/data"),
                "127.0.0.1:1",
                &sink,
            );
            if let Err(e) = switchyard_config::load_str(&text, false) {
                panic!("{e}\n{text}");
            }
        }
    }
}
