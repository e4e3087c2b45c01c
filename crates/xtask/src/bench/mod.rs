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
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    build::reexec_release_if_debug()?;
    match args.which {
        Bench::Ingest(a) => ingest::run(a),
    }
}
