//! `cargo xtask`: switchyard's project automation, written in Rust so it runs wherever
//! cargo does. `cargo xtask` is an alias (see `.cargo/config.toml`) for
//! `cargo run --quiet -p xtask --`.

mod bench;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// switchyard's project automation.
///
/// Benchmarks print figures next to a baseline measured in the same run, and the ratio
/// between them: absolute numbers move with the machine, ratios much less. Nothing here
/// asserts; it measures and prints.
///
/// Examples:
///
///   cargo xtask bench ingest                       # one round, 10 s measured per server
///   cargo xtask bench ingest --rounds 3            # alternate the servers, print medians
///   cargo xtask bench ingest --bin ./switchyard    # an already built binary
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a benchmark against its baseline and print both with their ratio.
    ///
    /// Machines are shared and noisy, so every benchmark measures its baseline back to back
    /// with switchyard, with the same load generator, and prints both figures and the ratio
    /// with its target (PASS/BELOW). Use --rounds to alternate them several times and compare
    /// medians.
    ///
    /// Everything under test is built in release mode first: when xtask itself runs as a
    /// debug build (the `cargo xtask` alias), it builds its release self and re-executes it,
    /// so the baselines and the load generator are optimised just like switchyard.
    Bench(bench::BenchArgs),
    /// Internal: a baseline server under test, started by `bench` as its own process.
    #[command(hide = true)]
    Serve(serve::ServeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench::run(args),
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
