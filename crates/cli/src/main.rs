//! `switchyard`: the command line.

mod cdc;
mod dlq;
mod plugin;
mod plugin_build;
mod plugin_run;
mod queue;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use switchyard_config::{Config, LogFormat};

/// jemalloc instead of the platform's malloc: every event path allocates on one thread
/// and frees on another, and jemalloc's per-thread caches and arenas cost less CPU per
/// event there than glibc's (docs/decisions/0032 has the figures, and what it costs in
/// peak memory).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// switchyard moves events from HTTP, Postgres and its own durable queues to webhooks,
/// Kafka, queues and files — at least once, in order per key, nothing lost on a crash.
///
/// Start with `switchyard validate -c config/quickstart.toml`, then
/// `switchyard run -c config/quickstart.toml`, and send an event:
///
///   curl -d '{"hello":"world"}' -H 'content-type: application/json' \
///        http://127.0.0.1:8080/ingest/api
#[derive(Parser)]
#[command(name = "switchyard", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pipelines of a config file until SIGINT/SIGTERM, then drain in-flight
    /// deliveries and store checkpoints.
    Run {
        /// Config file (TOML or YAML). Keys can be overridden with SWITCHYARD_SECTION__KEY.
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and print every problem with its key path. Exits 1 if any.
    ///
    /// With --connect, also connects to the database of every postgres_cdc source and
    /// explains each captured table: its primary key or replica identity, what updates
    /// and deletes carry, what the events' key is. Nothing is created in the database.
    Validate {
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Connect to each postgres_cdc source's database and explain its tables.
        #[arg(long)]
        connect: bool,
    },
    /// Inspect and replay dead letters of a running switchyard (uses server.listen and
    /// server.admin_token from the config).
    Dlq {
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Produce to, consume from and inspect the internal queues of a running switchyard
    /// (uses server.listen and server.admin_token from the config).
    #[command(after_help = "Examples:
  switchyard queue produce orders '{\"order\": 42}' --key customer-7 -c switchyard.toml
  switchyard queue consume orders --group workers -c switchyard.toml
  switchyard queue tail orders --follow -c switchyard.toml
  switchyard queue stats -c switchyard.toml

The API is described in docs/queues.md and docs/openapi.yaml.")]
    Queue {
        #[command(subcommand)]
        command: queue::QueueCommand,
    },
    /// Replication and snapshot status of the Postgres sources of a running switchyard.
    Cdc {
        #[command(subcommand)]
        command: cdc::CdcCommand,
    },
    /// Take the snapshot of one table again while streaming goes on — all of it, or a
    /// backfill of the rows matching --where — or pause, resume or cancel it (a running
    /// switchyard; uses server.admin_token). Follow it with `switchyard cdc status`.
    ///
    /// Examples:
    ///   switchyard snapshot public.orders -c app.toml
    ///   switchyard snapshot public.orders --where "created_at > now() - interval '7 days'" -c app.toml
    ///   switchyard snapshot public.orders --pause -c app.toml
    #[command(verbatim_doc_comment)]
    Snapshot {
        /// `schema.table` (a bare name means `public.NAME`).
        table: String,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// The postgres_cdc source (default: the only one).
        #[arg(long)]
        source: Option<String>,
        /// Only rows for which this SQL condition on the table holds (one expression,
        /// run in a read-only transaction), e.g. "created_at > now() - interval '7 days'".
        #[arg(long = "where", value_name = "CONDITION", conflicts_with_all = ["pause", "resume", "cancel"])]
        filter: Option<String>,
        /// Pause the table's running snapshot (kept across restarts).
        #[arg(long, conflicts_with_all = ["resume", "cancel"])]
        pause: bool,
        /// Resume a paused snapshot where it stopped.
        #[arg(long, conflicts_with = "cancel")]
        resume: bool,
        /// Cancel the table's snapshot; rows already sent stay sent.
        #[arg(long)]
        cancel: bool,
    },
    /// List or drop the replication slots of a Postgres source's database (connects to
    /// the source's dsn; works while switchyard is stopped).
    Slots {
        #[command(subcommand)]
        command: cdc::SlotsCommand,
    },
    /// Write WebAssembly plugins: `plugin new NAME --world filter` creates one.
    Plugin {
        #[command(subcommand)]
        command: plugin::PluginCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Validate { config, connect } => validate(&config, connect),
        Command::Run { config } => run(&config),
        Command::Dlq { command } => dlq::run(command),
        Command::Queue { command } => queue::run(command),
        Command::Plugin { command } => plugin::run(command),
        Command::Cdc { command } => cdc::run_status(command),
        Command::Snapshot {
            table,
            config,
            source,
            filter,
            pause,
            resume,
            cancel,
        } => {
            let action = if pause {
                Some("pause")
            } else if resume {
                Some("resume")
            } else if cancel {
                Some("cancel")
            } else {
                None
            };
            cdc::run_snapshot(&config, &table, source.as_deref(), action, filter)
        }
        Command::Slots { command } => cdc::run_slots(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn validate(path: &Path, connect: bool) -> anyhow::Result<ExitCode> {
    match switchyard_config::load_file(path) {
        Ok(config) if connect => {
            let code = validate(path, false)?;
            let explained = cdc::explain_tables(&config)?;
            Ok(if explained { code } else { ExitCode::FAILURE })
        }
        Ok(config) => {
            // Warnings do not fail validation: the config runs as it is.
            for warning in &config.warnings {
                eprintln!("warning: {warning}");
            }
            let warnings = match config.warnings.len() {
                0 => String::new(),
                1 => ", 1 warning".to_owned(),
                n => format!(", {n} warnings"),
            };
            println!(
                "{}: ok ({} sources, {} pipelines, {} sinks, {} queues{warnings})",
                path.display(),
                config.sources.len(),
                config.pipelines.len(),
                config.sinks.len(),
                config.queues.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Loads and validates, printing every problem on failure.
pub(crate) fn load(path: &Path) -> anyhow::Result<Config> {
    switchyard_config::load_file(path).map_err(|e| anyhow::anyhow!("{e}"))
}

fn run(path: &Path) -> anyhow::Result<ExitCode> {
    let config = load(path)?;
    init_tracing(&config);
    for warning in &config.warnings {
        tracing::warn!(key = %warning.path, "config: {warning}");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("switchyard")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        switchyard_runtime::run(config, shutdown_signal())
            .await
            .map_err(anyhow::Error::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn init_tracing(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        // One JSON object per line, never colour codes: for containers and collectors.
        LogFormat::Json => builder.json().with_ansi(false).init(),
        // Colours only on a terminal: a file, a pipe or journald gets plain text.
        LogFormat::Text => builder.with_ansi(colour_logs()).init(),
    }
}

/// Whether text logs may carry ANSI colour codes: stderr is a terminal and `NO_COLOR`
/// is not set (<https://no-color.org>).
fn colour_logs() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
