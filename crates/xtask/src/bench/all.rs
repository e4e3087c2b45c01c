//! `cargo xtask bench all`: every bench one after the other, with sizes that keep the run
//! bounded, and one table of their rows (target/bench/bench.{md,json}).
//!
//! Each bench runs as if typed on its own (`bench cdc --rows 200000 …`: the same argument
//! parser, so every size below is a flag a user can type) and keeps its own printing; `all`
//! collects the rows its `run` returns.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use clap::{Args, FromArgMatches, ValueEnum};

use super::{build, report};

/// Options of `bench all` (help text: on `Bench::All`).
#[derive(Args)]
pub struct AllArgs {
    /// Smaller sizes, for a look in a few minutes (the figures are noisier).
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Larger sizes and more rounds where a bench has rounds (medians; ingest 5, the
    /// others 3): about three times as long.
    #[arg(long)]
    full: bool,
    /// Only these benches, comma-separated, e.g. `--only cdc,kafka`.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "BENCH,…")]
    only: Vec<Which>,
    /// A switchyard binary to use instead of building `switchyard-cli` in release mode.
    #[arg(long, value_name = "PATH")]
    bin: Option<PathBuf>,
}

/// The benches `all` runs, in this order.
#[derive(Clone, Copy, PartialEq, Eq, Debug, ValueEnum)]
pub enum Which {
    Ingest,
    Cdc,
    Kafka,
    Queue,
    Plugin,
}

impl Which {
    const ALL: [Which; 5] = [
        Which::Ingest,
        Which::Cdc,
        Which::Kafka,
        Which::Queue,
        Which::Plugin,
    ];

    fn name(self) -> &'static str {
        match self {
            Which::Ingest => "ingest",
            Which::Cdc => "cdc",
            Which::Kafka => "kafka",
            Which::Queue => "queue",
            Which::Plugin => "plugin",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Size {
    Quick,
    Default,
    Full,
}

/// The flags of `bench <which>` at a size (besides `--bin`). The default sizes are the
/// benches' own defaults, which the targets of docs/design.md are stated for (1M CDC rows,
/// 200k queue messages, …), except that ingest runs three alternated rounds instead of
/// one; together they take about seven minutes on 2 cores.
fn sizes(which: Which, size: Size) -> &'static [&'static str] {
    match (which, size) {
        (Which::Ingest, Size::Quick) => &["--seconds", "5", "--warmup", "1"],
        // Three alternated rounds: one 10-second round of the same binary moves by a
        // fifth from run to run on two shared cores (docs/benchmarks.md).
        (Which::Ingest, Size::Default) => &["--rounds", "3"],
        (Which::Ingest, Size::Full) => &["--rounds", "5"],
        (Which::Cdc, Size::Quick) => &["--rows", "200000", "--latency-seconds", "5"],
        (Which::Cdc, Size::Default) => &[],
        (Which::Cdc, Size::Full) => &["--rounds", "3", "--latency-seconds", "30"],
        (Which::Kafka, Size::Quick) => &["--events", "100000"],
        (Which::Kafka, Size::Default) => &[],
        (Which::Kafka, Size::Full) => &["--events", "1000000"],
        (Which::Queue, Size::Quick) => &["--messages", "50000", "--latency-seconds", "5"],
        (Which::Queue, Size::Default) => &[],
        (Which::Queue, Size::Full) => &["--rounds", "3"],
        (Which::Plugin, Size::Quick) => &["--micro-rounds", "3", "--seconds", "5", "--warmup", "1"],
        (Which::Plugin, Size::Default) => &[],
        (Which::Plugin, Size::Full) => &["--micro-rounds", "9", "--seconds", "20"],
    }
}

/// `argv` parsed as the options of one bench, exactly as `cargo xtask bench <name> argv…`.
fn parse<A: Args + FromArgMatches>(name: &'static str, argv: &[String]) -> anyhow::Result<A> {
    let cmd = A::augment_args(clap::Command::new(name).no_binary_name(true));
    let matches = cmd
        .try_get_matches_from(argv)
        .with_context(|| format!("the options of bench {name}: {argv:?}"))?;
    Ok(A::from_arg_matches(&matches)?)
}

fn run_bench(which: Which, argv: &[String]) -> anyhow::Result<Vec<report::Row>> {
    let name = which.name();
    match which {
        Which::Ingest => super::ingest::run(parse(name, argv)?),
        Which::Cdc => super::cdc::run(parse(name, argv)?),
        Which::Kafka => super::kafka::run(parse(name, argv)?),
        Which::Queue => super::queue::run(parse(name, argv)?),
        Which::Plugin => super::plugin::run(parse(name, argv)?),
    }
}

pub fn run(args: AllArgs) -> anyhow::Result<()> {
    let size = if args.quick {
        Size::Quick
    } else if args.full {
        Size::Full
    } else {
        Size::Default
    };
    let benches: Vec<Which> = Which::ALL
        .into_iter()
        .filter(|w| args.only.is_empty() || args.only.contains(w))
        .collect();
    // Built (or checked) once; every bench gets it as its --bin.
    let switchyard = build::switchyard_binary(args.bin.as_deref())?;
    let dir = super::bench_dir()?;
    let started = Instant::now();
    println!("# switchyard bench all");
    println!("machine:    {}", report::machine());
    println!(
        "commit:     {}",
        report::git_commit(&build::workspace_root())
    );
    println!("switchyard: {}", switchyard.display());
    println!(
        "benches:    {} ({size:?} sizes)",
        benches
            .iter()
            .map(|w| w.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();

    let mut rows = Vec::new();
    let mut times = Vec::new();
    for which in benches {
        let mut argv: Vec<String> = sizes(which, size).iter().map(|s| (*s).to_owned()).collect();
        argv.push("--bin".into());
        argv.push(switchyard.display().to_string());
        let mut typed = vec!["bench".to_owned(), which.name().to_owned()];
        typed.extend(argv.iter().cloned());
        println!("=================================================================");
        println!("as:         {}", report::reproduce_command(&typed));
        let bench_started = Instant::now();
        let (bench_rows, error) = super::measured(which.name(), || run_bench(which, &argv));
        if let Some(e) = error {
            eprintln!("bench {} failed, going on: {e:#}", which.name());
            println!("bench {} failed: {e:#}", which.name());
        }
        times.push((which.name(), bench_started.elapsed()));
        // After every bench, so what is measured is kept even if the run stops later.
        report::record(&dir, &bench_rows)?;
        rows.extend(bench_rows);
        println!();
    }

    println!("=================================================================");
    println!(
        "bench all: {} rows in {:.1} min ({})",
        rows.len(),
        started.elapsed().as_secs_f64() / 60.0,
        times
            .iter()
            .map(|(n, t)| format!("{n} {:.0} s", t.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!();
    print!("{}", report::markdown(&rows));
    println!();
    println!(
        "written: {} and {}",
        dir.join("bench.md").display(),
        dir.join("bench.json").display()
    );
    let errors = rows
        .iter()
        .filter(|r| matches!(r.verdict, report::Verdict::Error(_)))
        .count();
    if errors > 0 {
        anyhow::bail!("{errors} row(s) could not be measured (ERROR in the table)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size of every bench is a command line its own parser takes.
    #[test]
    fn every_size_parses_as_the_benchs_own_options() {
        for size in [Size::Quick, Size::Default, Size::Full] {
            for which in Which::ALL {
                let mut argv: Vec<String> =
                    sizes(which, size).iter().map(|s| (*s).to_owned()).collect();
                argv.extend(["--bin".to_owned(), "/tmp/switchyard".to_owned()]);
                let name = which.name();
                let parsed = match which {
                    Which::Ingest => {
                        parse::<super::super::ingest::IngestArgs>(name, &argv).map(drop)
                    }
                    Which::Cdc => parse::<super::super::cdc::CdcArgs>(name, &argv).map(drop),
                    Which::Kafka => parse::<super::super::kafka::KafkaArgs>(name, &argv).map(drop),
                    Which::Queue => parse::<super::super::queue::QueueArgs>(name, &argv).map(drop),
                    Which::Plugin => {
                        parse::<super::super::plugin::PluginArgs>(name, &argv).map(drop)
                    }
                };
                if let Err(e) = parsed {
                    panic!("{name} {size:?}: {e:#}");
                }
            }
        }
    }

    #[test]
    fn a_wrong_flag_is_refused() {
        let argv = vec!["--no-such-flag".to_owned()];
        assert!(parse::<super::super::ingest::IngestArgs>("ingest", &argv).is_err());
    }
}
