//! `cargo xtask bench ingest`: durable HTTP ingest, switchyard against two baselines.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use super::load::{self, BodyKind, LoadResult, LoadSpec};
use super::process::{ServerProcess, free_addr};
use super::report::{Op, Row, Target};
use super::{build, procfs, report};
use crate::serve::ServerKind;

/// switchyard / durable baseline: requests/s it should reach (`docs/design.md`,
/// "Benchmarks").
const TARGET_VS_DURABLE: f64 = 0.85;
/// switchyard / no-op baseline.
const TARGET_VS_NOOP: f64 = 0.45;
const SOURCE: &str = "bench";

/// Options of `bench ingest` (help text: on `Bench::Ingest`).
#[derive(Args)]
pub struct IngestArgs {
    /// Seconds measured per server (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Warm-up seconds per server before measuring (connections open, caches warm).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Times to run the three servers in alternation; >1 prints every round and medians.
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Size of each JSON event in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Distinct `x-key` values (switchyard partitions by key).
    #[arg(long, default_value_t = 1024)]
    keys: usize,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
    /// Where switchyard's pipeline delivers: `null` (discarded: ingest is measured
    /// without a sink of its own, as the baselines have none), `stdout` (JSON lines,
    /// discarded), `file` (JSON lines, fsync'd per batch) or `queue` (an internal durable
    /// queue).
    #[arg(long, value_enum, default_value_t = SinkKind::Null)]
    sink: SinkKind,
    /// Run switchyard alone, without the baselines: a long run to watch its memory
    /// (e.g. `--switchyard-only --seconds 600`). Gives one row with no ratio.
    #[arg(long)]
    switchyard_only: bool,
    /// Partitions of the http source's intake log (default: switchyard's default for a new
    /// intake, 1).
    #[arg(long, value_name = "N")]
    intake_partitions: Option<u32>,
    /// Parent of the temporary directory holding the baseline's file and switchyard's data
    /// dir (both on the same filesystem). Default: the system temp dir.
    #[arg(long, value_name = "DIR")]
    tmp_dir: Option<PathBuf>,
    /// Keep the temporary directory (server logs, data) and print its path.
    #[arg(long)]
    keep: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum SinkKind {
    Null,
    Stdout,
    File,
    Queue,
}

impl SinkKind {
    /// The sink adds no fsync stream of its own: ingest is measured as the baselines are.
    fn without_fsync(self) -> bool {
        matches!(self, SinkKind::Null | SinkKind::Stdout)
    }

    fn name(self) -> &'static str {
        match self {
            SinkKind::Null => "null",
            SinkKind::Stdout => "stdout",
            SinkKind::File => "file",
            SinkKind::Queue => "queue",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Server {
    Durable,
    Noop,
    Switchyard,
}

impl Server {
    const ALL: [Server; 3] = [Server::Durable, Server::Noop, Server::Switchyard];

    fn name(self) -> &'static str {
        match self {
            Server::Durable => "baseline-durable",
            Server::Noop => "noop",
            Server::Switchyard => "switchyard",
        }
    }
}

struct Measurement {
    load: LoadResult,
    peak_rss_kib: u64,
    /// CPU seconds of the server in the measured window (from the end of the warm-up).
    cpu_s: f64,
}

pub fn run(args: IngestArgs) -> anyhow::Result<Vec<Row>> {
    let switchyard = build::switchyard_binary(args.bin.as_deref())?;
    let xtask = std::env::current_exe().context("locating the xtask executable")?;
    let tmp = super::temp_dir("switchyard-bench-", args.tmp_dir.as_deref(), args.keep)?;
    let root = tmp.path().to_path_buf();
    let argv: Vec<String> = std::env::args().skip(1).collect();

    println!("# switchyard bench ingest");
    println!("machine:    {}", report::machine());
    println!(
        "data:       {} — {}",
        root.display(),
        report::filesystem(&root)
    );
    println!("switchyard: {}", switchyard.display());
    println!(
        "load:       {} keep-alive HTTP/1.1 connections, one request in flight each; {}-byte JSON \
         events, x-key over {} keys; {} s warm-up, {} s measured per server; {} round(s)",
        args.connections, args.body_bytes, args.keys, args.warmup, args.seconds, args.rounds
    );
    println!(
        "switchyard: http source `{SOURCE}` ({}) -> pipeline -> {} sink",
        match args.intake_partitions {
            Some(n) => format!("{n} intake partitions"),
            None => "1 intake partition, the default for a new intake".to_owned(),
        },
        match args.sink {
            SinkKind::Null => "null (discarded)",
            SinkKind::Stdout => "stdout (JSON lines, discarded)",
            SinkKind::File => "file (JSON lines, fsync'd per batch)",
            SinkKind::Queue => "queue (internal durable queue, 1 partition)",
        }
    );
    println!("reproduce:  {}", report::reproduce_command(&argv));
    println!();

    let mut results: Vec<Vec<Measurement>> = Server::ALL.iter().map(|_| Vec::new()).collect();
    for round in 1..=args.rounds {
        for (i, server) in Server::ALL.into_iter().enumerate() {
            if args.switchyard_only && server != Server::Switchyard {
                continue;
            }
            let dir = root.join(format!("round{round}-{}", server.name()));
            std::fs::create_dir_all(&dir)?;
            eprintln!(
                "round {round}/{}: {} ({} s)…",
                args.rounds,
                server.name(),
                args.warmup + args.seconds
            );
            let m = measure(&args, server, &xtask, &switchyard, &dir).with_context(|| {
                format!("measuring {} (files in {})", server.name(), dir.display())
            })?;
            if args.rounds > 1 {
                println!("round {round}: {}", row(server.name(), &m));
            }
            results[i].push(m);
        }
    }
    if args.rounds > 1 {
        println!();
    }
    print!("{}", table(&args, &results));
    if args.keep {
        println!("\nkept: {}", root.display());
    }
    Ok(rows(&args, &results))
}

/// The rows of `bench all`: switchyard's req/s against each baseline.
fn rows(args: &IngestArgs, results: &[Vec<Measurement>]) -> Vec<Row> {
    let med = |i: usize, f: &dyn Fn(&Measurement) -> f64| {
        report::median(&results[i].iter().map(f).collect::<Vec<_>>())
    };
    let sy = 2;
    let note = format!(
        "{} conns, {} s, {} sink{}",
        args.connections,
        args.seconds,
        args.sink.name(),
        if args.rounds > 1 {
            format!(", medians of {} rounds", args.rounds)
        } else {
            String::new()
        }
    );
    if args.switchyard_only {
        return vec![
            Row::new("ingest", "durable HTTP ingest req/s, switchyard alone")
                .value(med(sy, &|m| m.load.per_second()))
                .cpu(med(sy, &|m| m.cpu_s), med(sy, &|m| m.load.ok as f64))
                .rss_mib(med(sy, &|m| m.peak_rss_kib as f64 / 1024.0))
                .note(note),
        ];
    }
    [
        (
            "baseline-durable (fdatasync group commit)",
            0,
            TARGET_VS_DURABLE,
        ),
        ("noop", 1, TARGET_VS_NOOP),
    ]
    .into_iter()
    .map(|(baseline, i, target)| {
        let row = Row::new("ingest", "durable HTTP ingest req/s")
            .baseline(baseline, med(i, &|m| m.load.per_second()))
            .value(med(sy, &|m| m.load.per_second()))
            .cpu(med(sy, &|m| m.cpu_s), med(sy, &|m| m.load.ok as f64))
            .rss_mib(med(sy, &|m| m.peak_rss_kib as f64 / 1024.0))
            .note(note.clone());
        // The targets compare ingest alone: a sink with its own fsync stream (file,
        // queue) measures a different pipeline.
        if args.sink.without_fsync() {
            row.target(Target::ratio(Op::AtLeast, target))
        } else {
            row
        }
    })
    .collect()
}

fn measure(
    args: &IngestArgs,
    server: Server,
    xtask: &Path,
    switchyard: &Path,
    dir: &Path,
) -> anyhow::Result<Measurement> {
    let addr = free_addr()?;
    let log = dir.join("server.log");
    let cmd = match server {
        Server::Durable | Server::Noop => {
            let kind = if server == Server::Durable {
                ServerKind::Durable
            } else {
                ServerKind::Noop
            };
            let mut c = Command::new(xtask);
            c.args(["serve", kind.arg(), "--listen", &addr.to_string()]);
            if kind == ServerKind::Durable {
                c.arg("--file").arg(dir.join("events.log"));
            }
            c
        }
        Server::Switchyard => {
            let config = dir.join("switchyard.toml");
            std::fs::write(
                &config,
                switchyard_config(args.sink, args.intake_partitions, &addr.to_string(), dir),
            )?;
            let mut c = Command::new(switchyard);
            c.arg("run").arg("-c").arg(&config).env("RUST_LOG", "warn");
            c
        }
    };
    let mut process = if server == Server::Switchyard && args.sink == SinkKind::Stdout {
        ServerProcess::spawn_discarding_stdout(server.name(), cmd, &log)?
    } else {
        ServerProcess::spawn(server.name(), cmd, &log)?
    };
    process.wait_ready(addr, Duration::from_secs(30), &log)?;
    // The server's CPU time at the end of the warm-up, read while the load runs.
    let pid = process.pid();
    let warmup = Duration::from_secs(args.warmup);
    let cpu_at_warmup = std::thread::spawn(move || {
        std::thread::sleep(warmup);
        procfs::cpu_seconds(pid)
    });
    let load = load::run(LoadSpec {
        addr,
        path: format!("/ingest/{SOURCE}"),
        connections: args.connections,
        body_bytes: args.body_bytes,
        keys: args.keys,
        warmup: Duration::from_secs(args.warmup),
        measure: Duration::from_secs(args.seconds),
        body: BodyKind::Padded,
        pause: None,
    })?;
    let peak_rss_kib = process.peak_rss_kib()?;
    let cpu_s = match (
        cpu_at_warmup.join().ok().flatten(),
        procfs::cpu_seconds(pid),
    ) {
        (Some(a), Some(b)) => b - a,
        _ => f64::NAN,
    };
    process.stop(Duration::from_secs(15))?;
    Ok(Measurement {
        load,
        peak_rss_kib,
        cpu_s,
    })
}

fn switchyard_config(
    sink: SinkKind,
    intake_partitions: Option<u32>,
    listen: &str,
    dir: &Path,
) -> String {
    let partitions = intake_partitions.map_or(String::new(), |n| format!("partitions = {n}\n"));
    let data = dir.join("data");
    let sink = match sink {
        SinkKind::Null => "type = \"null\"\n".to_owned(),
        SinkKind::Stdout => "type = \"stdout\"\n".to_owned(),
        SinkKind::File => format!(
            "type = \"file\"\npath = {:?}\n",
            dir.join("out.jsonl").display().to_string()
        ),
        SinkKind::Queue => {
            "type = \"queue\"\nqueue = \"out\"\n\n[queues.out]\npartitions = 1\n".into()
        }
    };
    format!(
        "# Written by `cargo xtask bench ingest`.\n\
         [server]\nlisten = {listen:?}\ndata_dir = {:?}\n\n\
         [sources.{SOURCE}]\ntype = \"http\"\n{partitions}\n\
         [pipelines.{SOURCE}]\nfrom = [\"{SOURCE}\"]\nto = [\"out\"]\n\n\
         [sinks.out]\n{sink}",
        data.display().to_string()
    )
}

fn row(name: &str, m: &Measurement) -> String {
    format!(
        "{name:<18} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>9} {:>7}",
        m.load.per_second(),
        m.load.latency_ms(0.5),
        m.load.latency_ms(0.99),
        m.peak_rss_kib as f64 / 1024.0,
        m.load.ok,
        m.load.error_count(),
    )
}

fn table(args: &IngestArgs, results: &[Vec<Measurement>]) -> String {
    let med = |i: usize, f: &dyn Fn(&Measurement) -> f64| {
        report::median(&results[i].iter().map(f).collect::<Vec<_>>())
    };
    let mut out = String::new();
    let what = if args.rounds > 1 {
        format!("medians of {} rounds", args.rounds)
    } else {
        "one round".to_owned()
    };
    let _ = writeln!(out, "{what}, {} s measured each:", args.seconds);
    let _ = writeln!(
        out,
        "{:<18} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
        "server", "req/s", "p50 ms", "p99 ms", "RSS MiB", "2xx", "errors"
    );
    let mut rps = [0.0; 3];
    for (i, server) in Server::ALL.into_iter().enumerate() {
        if results[i].is_empty() {
            continue;
        }
        rps[i] = med(i, &|m| m.load.per_second());
        let _ = writeln!(
            out,
            "{:<18} {:>10.0} {:>9.2} {:>9.2} {:>9.1} {:>9.0} {:>7.0}",
            server.name(),
            rps[i],
            med(i, &|m| m.load.latency_ms(0.5)),
            med(i, &|m| m.load.latency_ms(0.99)),
            med(i, &|m| m.peak_rss_kib as f64 / 1024.0),
            med(i, &|m| m.load.ok as f64),
            med(i, &|m| m.load.error_count() as f64),
        );
    }
    let _ = writeln!(out, "(RSS is the peak, VmHWM of the server process)");
    for (i, server) in Server::ALL.into_iter().enumerate() {
        let mut errors = std::collections::BTreeMap::<&str, u64>::new();
        for m in &results[i] {
            for (k, n) in &m.load.errors {
                *errors.entry(k).or_default() += n;
            }
        }
        for (k, n) in errors {
            let _ = writeln!(out, "errors of {} (all rounds): {n} × {k}", server.name());
        }
    }
    if args.switchyard_only {
        return out;
    }
    let _ = writeln!(out);
    for (label, ratio, target) in [
        (
            "switchyard / baseline-durable req/s",
            rps[2] / rps[0],
            TARGET_VS_DURABLE,
        ),
        ("switchyard / noop req/s", rps[2] / rps[1], TARGET_VS_NOOP),
    ] {
        let line = if args.sink.without_fsync() {
            report::ratio_line(label, ratio, target)
        } else {
            format!(
                "{label:<34} {ratio:>6.2}   (no target: the {} sink adds its own fsync stream)",
                args.sink.name()
            )
        };
        let _ = writeln!(out, "{line}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_configs_pass_switchyard_validation() {
        let dir = Path::new("/tmp/bench");
        for sink in [
            SinkKind::Null,
            SinkKind::Stdout,
            SinkKind::File,
            SinkKind::Queue,
        ] {
            for partitions in [None, Some(1)] {
                let text = switchyard_config(sink, partitions, "127.0.0.1:1", dir);
                if let Err(e) = switchyard_config::load_str(&text, false) {
                    panic!("{e}\n{text}");
                }
            }
        }
    }
}
