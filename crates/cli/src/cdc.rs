//! Postgres change data capture from the command line:
//!
//! * `switchyard cdc status` — replication and snapshot progress of a running switchyard;
//! * `switchyard snapshot TABLE` — take one table's snapshot again, while streaming goes on;
//! * `switchyard slots list|drop` — the database's replication slots and the WAL they hold.
//!
//! `status` and `snapshot` use the admin API of the running process; `slots` connects to
//! the database of a source's `dsn` directly, so it works while switchyard is stopped.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use switchyard_api::{SnapshotRequest, SnapshotStarted, SourceStatus};
use switchyard_config::{Config, PostgresCdcSourceConfig, SourceConfig};
use switchyard_source_postgres::slots;

use crate::dlq::Admin;

#[derive(Subcommand)]
pub enum CdcCommand {
    /// Replication status of each Postgres source: connected, confirmed LSN, WAL the slot
    /// holds back, and snapshot progress per table.
    Status {
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// Only this source (default: every postgres_cdc source of the config).
        #[arg(long)]
        source: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum SlotsCommand {
    /// Every replication slot of the database: active or not, confirmed position, WAL held.
    List {
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        /// The source whose `dsn` to use (default: the only postgres_cdc source).
        #[arg(long)]
        source: Option<String>,
    },
    /// Drop a replication slot the server keeps WAL for. Refused while it is in use.
    /// Dropping a source's own slot loses its position: the next start needs
    /// `recreate_slot = true` and takes a new snapshot.
    Drop {
        /// The slot's name.
        slot: String,
        #[arg(short, long, env = "SWITCHYARD_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        source: Option<String>,
    },
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The postgres_cdc sources of `cfg`, or only `wanted`.
fn cdc_sources<'a>(
    cfg: &'a Config,
    path: &Path,
    wanted: Option<&str>,
) -> anyhow::Result<Vec<(&'a String, &'a PostgresCdcSourceConfig)>> {
    let all: Vec<_> = cfg
        .sources
        .iter()
        .filter_map(|(n, s)| match s {
            SourceConfig::PostgresCdc(c) => Some((n, c)),
            _ => None,
        })
        .collect();
    if all.is_empty() {
        bail!("{} has no source of type postgres_cdc", path.display());
    }
    match wanted {
        None => Ok(all),
        Some(w) => {
            let found: Vec<_> = all.iter().copied().filter(|(n, _)| *n == w).collect();
            if found.is_empty() {
                bail!(
                    "no postgres_cdc source `{w}` in {}; there are: {}",
                    path.display(),
                    all.iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Ok(found)
        }
    }
}

fn one_source<'a>(
    cfg: &'a Config,
    path: &Path,
    wanted: Option<&str>,
) -> anyhow::Result<(&'a String, &'a PostgresCdcSourceConfig)> {
    let found = cdc_sources(cfg, path, wanted)?;
    if found.len() > 1 {
        bail!(
            "{} has several postgres_cdc sources ({}): choose one with --source",
            path.display(),
            found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(found[0])
}

/// `validate --connect`: each postgres_cdc source's tables explained, and what would
/// stop the source. False when a source has problems or cannot be reached.
pub fn explain_tables(cfg: &Config) -> anyhow::Result<bool> {
    let runtime = runtime()?;
    let mut ok = true;
    for (name, source) in &cfg.sources {
        let SourceConfig::PostgresCdc(pg) = source else {
            continue;
        };
        println!("source `{name}` (postgres_cdc):");
        match runtime.block_on(switchyard_source_postgres::setup::inspect(pg)) {
            Ok((tables, problems)) => {
                if tables.is_empty() && problems.is_empty() {
                    ok = false;
                    println!(
                        "  error: no tables: list them in `tables`, or create publication `{}`",
                        pg.publication
                    );
                }
                for table in &tables {
                    println!("  {}", table.explain());
                }
                for problem in &problems {
                    ok = false;
                    println!("  error: {problem}");
                }
            }
            Err(e) => {
                ok = false;
                println!("  error: cannot inspect the database: {e}");
            }
        }
    }
    Ok(ok)
}

pub fn run_status(command: CdcCommand) -> anyhow::Result<ExitCode> {
    let CdcCommand::Status { config, source } = command;
    let cfg = crate::load(&config)?;
    let sources = cdc_sources(&cfg, &config, source.as_deref())?;
    let admin = Admin::new(&cfg, &config)?;
    runtime()?.block_on(async {
        for (name, _) in sources {
            let body: SourceStatus = admin.get(&format!("/admin/sources/{name}/status")).await?;
            let s = body.status;
            println!(
                "source {name}: slot {} {}, {} — confirmed {}, slot holds {} of WAL, {} events{}",
                s.slot,
                if s.connected {
                    "connected"
                } else {
                    "NOT connected"
                },
                role_text(&s.role, s.lock_key),
                s.confirmed_lsn,
                human_bytes(s.slot_lag_bytes),
                s.events,
                s.last_error
                    .map(|e| format!("\n  last error: {e}"))
                    .unwrap_or_default()
            );
            if s.streaming_transactions > 0 || s.spilled_bytes > 0 {
                println!(
                    "  large transactions in progress: {} ({} held in memory; {} spilled to \
                     disk since the start)",
                    s.streaming_transactions,
                    human_bytes(i64::try_from(s.streaming_buffered_bytes).unwrap_or(i64::MAX)),
                    human_bytes(i64::try_from(s.spilled_bytes).unwrap_or(i64::MAX)),
                );
            }
            for (table, p) in s.snapshot {
                let mut line = format!(
                    "  snapshot {table}: {} ({} rows emitted, {} acknowledged",
                    p.state, p.rows_emitted, p.rows_acknowledged
                );
                if let Some(estimate) = p.rows_estimate {
                    line.push_str(&format!(" of about {estimate}"));
                }
                if let Some(rate) = p.rows_per_second {
                    line.push_str(&format!(", {rate} rows/s"));
                }
                if let Some(eta) = p.eta_seconds {
                    line.push_str(&format!(", about {} left", human_duration(eta)));
                }
                line.push(')');
                if let Some(filter) = p.filter {
                    line.push_str(&format!(" where {filter}"));
                }
                if let Some(error) = p.error {
                    line.push_str(&format!("\n    stopped by the server: {error}"));
                }
                println!("{line}");
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_snapshot(
    config: &Path,
    table: &str,
    source: Option<&str>,
    action: Option<&str>,
    filter: Option<String>,
) -> anyhow::Result<ExitCode> {
    let cfg = crate::load(config)?;
    let (name, _) = one_source(&cfg, config, source)?;
    let admin = Admin::new(&cfg, config)?;
    runtime()?.block_on(async {
        let request = SnapshotRequest {
            table: table.to_owned(),
            action: action.map(str::to_owned),
            filter,
        };
        let answer: SnapshotStarted = admin
            .post(&format!("/admin/sources/{name}/snapshot"), &request)
            .await?;
        println!(
            "snapshot of {table} {} on source {name}; follow it with `switchyard cdc status -c {}`",
            answer.snapshot,
            config.display()
        );
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run_slots(command: SlotsCommand) -> anyhow::Result<ExitCode> {
    let (config, source) = match &command {
        SlotsCommand::List { config, source } | SlotsCommand::Drop { config, source, .. } => {
            (config, source)
        }
    };
    let cfg = crate::load(config)?;
    let (name, pg) = one_source(&cfg, config, source.as_deref())?;
    runtime()?.block_on(async {
        match &command {
            SlotsCommand::List { .. } => {
                let slots = slots::list(&pg.dsn).await?;
                if slots.is_empty() {
                    println!("the database of source {name} has no replication slots");
                }
                println!("{:<32} {:<8} {:<10} {:<14} {:>12}  wal", "slot", "active", "plugin", "confirmed", "retained");
                for s in slots {
                    let mark = if s.name == pg.slot { " (this source)" } else { "" };
                    println!(
                        "{:<32} {:<8} {:<10} {:<14} {:>12}  {}{mark}",
                        s.name,
                        if s.active { "yes" } else { "no" },
                        s.plugin.as_deref().unwrap_or("-"),
                        s.confirmed_flush_lsn.as_deref().unwrap_or("-"),
                        s.retained_bytes.map_or("-".into(), human_bytes),
                        s.wal_status.as_deref().unwrap_or("-"),
                    );
                }
            }
            SlotsCommand::Drop { slot, .. } => {
                slots::drop_slot(&pg.dsn, slot).await?;
                println!("dropped replication slot {slot}");
                if *slot == pg.slot {
                    println!(
                        "it was the slot of source {name}: its next start needs recreate_slot = true \
                         and takes a new snapshot"
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// `42 s`, `3 min 5 s`, `2 h 10 min`.
fn human_duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {} s", s / 60, s % 60),
        s => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The instance's role for a source, as `switchyard cdc status` prints it.
fn role_text(role: &str, lock_key: i64) -> String {
    match role {
        "leader" => format!("leader (holds lock {lock_key})"),
        "standby" => format!("STANDBY (another instance holds lock {lock_key} and reads the slot)"),
        "" => "unknown role".into(),
        other => other.to_owned(),
    }
}
