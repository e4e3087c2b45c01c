//! `cargo xtask bench …`: benchmarks that print switchyard's figures next to a baseline
//! measured in the same run, back to back on the same machine, and the ratio.
//!
//! A benchmark is a subcommand of [`Bench`] with its own module; the shared parts are the
//! HTTP load generator ([`load`]), server processes ([`process`]), the release build
//! ([`build`]) and reporting ([`report`]).

mod build;
mod ingest;
mod load;
mod process;
mod report;

use clap::{Args, Subcommand};

#[derive(Args)]
#[command(verbatim_doc_comment)]
/// Benchmarks: switchyard next to a baseline measured in the same run, and their ratio.
///
/// Machines are shared and noisy, so every benchmark measures its baseline back to back with
/// switchyard, with the same load generator, and prints both figures and the ratio with its
/// target (PASS/BELOW). Use --rounds to alternate them several times and compare medians.
///
/// Everything under test is built in release mode first: when xtask itself runs as a debug
/// build (the `cargo xtask` alias), it builds its release self and re-executes it, so the
/// baselines and the load generator are optimised just like switchyard.
pub struct BenchArgs {
    #[command(subcommand)]
    which: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Durable HTTP ingest: switchyard vs an axum append+fdatasync group-commit server and a
    /// no-op axum server, 64 keep-alive connections posting 200-byte JSON events.
    #[command(verbatim_doc_comment)]
    Ingest(ingest::IngestArgs),
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    build::reexec_release_if_debug()?;
    match args.which {
        Bench::Ingest(a) => ingest::run(a),
    }
}
