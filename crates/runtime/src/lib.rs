//! The switchyard runtime: turns a validated [`Config`] into running queues, sources,
//! pipelines and sinks, serves HTTP (ingest, ops, admin), and shuts down cleanly.
//!
//! Delivery contract (in full: `docs/design.md`, "Delivery contract"; the invariants that
//! keep it: `ARCHITECTURE.md`):
//! * HTTP ingest answers 2xx only after the events are fsync'd to the source's intake log;
//! * a pipeline's checkpoint (consumer-group offset) is the low watermark of events every
//!   routed sink acknowledged or that were dead-lettered — never "the last one read";
//! * events with the same key reach a sink in order; different keys in parallel lanes;
//! * every buffer is bounded: a slow sink slows its readers, which stop reading.

mod connectors;
mod console;
pub mod delivery;
mod listener;
pub mod metrics;
pub mod pipeline;
mod plugin_reload;
pub mod plugins;
mod server;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_config::{Config, HttpSourceConfig, QueueConfig, SourceConfig};
use switchyard_connector::{BuildContext, Source};
use switchyard_source_postgres::PostgresSource;
use switchyard_store::{FsStorage, MemoryBudget, Queue, Storage, WorkOptions};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::delivery::SinkHandle;
use crate::metrics::Metrics;
use crate::pipeline::{PipelinePlan, Reader};
use crate::plugins::{Stage, Stages};
use switchyard_plugin_host::{Compiled, HostOptions, PluginHost, PluginPool, World};
use switchyard_queue::{Broker, QueueHandle, QueueLimits};

pub use delivery::dlq_headers;
/// The feeds over switchyard's own logs (`READ_BATCH` is the CLI's default batch).
pub use switchyard_queue::feed;

/// Why the runtime could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("cannot create data directory {path}: {source}; check server.data_dir")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open queue `{name}`: {source}")]
    Queue {
        name: String,
        source: switchyard_store::LogError,
    },
    #[error("sink `{name}`: {message}")]
    Sink { name: String, message: String },
    #[error("source `{name}`: {message}")]
    Source { name: String, message: String },
    #[error("cannot listen on {addr}: {source}; is another process using it? change server.listen")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Plugin(String),
    #[error(transparent)]
    Listener(#[from] listener::ListenerError),
}

/// Everything the HTTP handlers and background tasks share.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub queues: BTreeMap<String, Arc<QueueHandle>>,
    /// Intake logs of `http` sources, by source name.
    pub intakes: BTreeMap<String, Arc<QueueHandle>>,
    pub sinks: HashMap<String, Arc<SinkHandle>>,
    /// Every source, by name (`/readyz` asks each whether it stopped).
    pub sources: BTreeMap<String, Arc<dyn Source>>,
    /// Pipeline readers that stopped themselves (`/readyz` names them).
    pub stopped_readers: Arc<pipeline::StoppedReaders>,
    /// Running Postgres sources, by source name.
    pub cdc: BTreeMap<String, CdcControl>,
    /// What the queue API and the broker's loops see: the config and the same `queues`.
    pub broker: Arc<Broker>,
    /// The sampled state and history the console reads.
    pub(crate) monitor: Arc<console::Monitor>,
    /// Held by a dead-letter replay or purge: one at a time, so that two replays (a
    /// double click, a second tab) never send the same dead letters twice, and a replay
    /// that commits its position late cannot undo a purge.
    pub(crate) dead_letter_ops: tokio::sync::Mutex<()>,
}

/// What the admin API and housekeeping see of a running Postgres source.
pub type CdcControl = switchyard_source_postgres::source::Control;

impl Shared {
    /// Any queue by its user-facing name (declared or dead-letter).
    pub fn queue(&self, name: &str) -> Option<&Arc<QueueHandle>> {
        self.queues.get(name)
    }
}

/// Where a run without `server.admin_token` keeps the token it made for itself, in the
/// data directory (which only its owner may enter), so that the console and the admin
/// API work out of the box for whoever runs switchyard — and for nobody else. The CLI's
/// admin commands read it too.
pub const RUN_ADMIN_TOKEN_FILE: &str = "admin-token";

/// A new random admin token (32 bytes from the system's random source, as hex), written
/// to [`RUN_ADMIN_TOKEN_FILE`] with mode 0600.
fn run_admin_token(data_dir: &std::path::Path) -> std::io::Result<String> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let path = data_dir.join(RUN_ADMIN_TOKEN_FILE);
    // A file left by an earlier run is replaced: each run has its own token.
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(token.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok(token)
}

/// The data directory holds every event: only its owner may enter it. It is created
/// 0700; an existing one that others may enter (made by an older version, or by hand) is
/// tightened to 0700 when it holds nothing but switchyard's own entries: a directory that
/// also holds other things (`data_dir = "."`, a shared path) is left alone, with a warning.
fn restrict_data_dir(data_dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt as _;
    const OWN_ENTRIES: &[&str] = &[
        "intake",
        "queues",
        "cdc",
        "nats",
        PLUGIN_CACHE_DIR,
        RUN_ADMIN_TOKEN_FILE,
    ];
    let Ok(meta) = std::fs::metadata(data_dir) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    let only_ours = std::fs::read_dir(data_dir).is_ok_and(|entries| {
        entries.into_iter().all(|entry| {
            entry.is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| OWN_ENTRIES.contains(&n))
            })
        })
    });
    if !only_ours {
        warn!(data_dir = %data_dir.display(), mode = %format!("{mode:04o}"),
            "others may enter the data directory (server.data_dir), which also holds other files: make it 0700 or point server.data_dir at a directory of its own");
        return;
    }
    match std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(mode & 0o700)) {
        Ok(()) => info!(data_dir = %data_dir.display(), from = %format!("{mode:04o}"),
            to = %format!("{:04o}", mode & 0o700), "data directory made private to its owner"),
        Err(e) => warn!(data_dir = %data_dir.display(), mode = %format!("{mode:04o}"), error = %e,
            "others may read the data directory (server.data_dir): make it 0700"),
    }
}

/// Runs `config` until `shutdown` resolves, then drains in-flight deliveries (up to
/// `server.shutdown_timeout`) and stores the final checkpoints.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RuntimeError> {
    let storage: Arc<dyn Storage> = Arc::new(FsStorage::new());
    let data_dir = PathBuf::from(&config.server.data_dir);
    storage
        .create_dir_all(&data_dir)
        .map_err(|source| RuntimeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
    restrict_data_dir(&data_dir);
    if config.server.admin_token.is_none() {
        let token = run_admin_token(&data_dir).map_err(|source| RuntimeError::DataDir {
            path: data_dir.join(RUN_ADMIN_TOKEN_FILE),
            source,
        })?;
        info!(
            console = %format!("http://{}/console", config.server.listen),
            token_file = %data_dir.join(RUN_ADMIN_TOKEN_FILE).display(),
            "server.admin_token is not set: this run's admin token (for the console and the \
             admin API) is in token_file, readable by this user only; set server.admin_token \
             to choose one"
        );
        config.server.admin_token = Some(token);
    }
    let metrics = Arc::new(Metrics::new());
    let queues = open_queues(&config, &storage, &data_dir)?;
    let intakes = open_intakes(&config, &storage, &data_dir)?;
    let ctx = BuildContext::new(&config, &data_dir);
    let own = connectors::Queues {
        queues: &queues,
        intakes: &intakes,
    };
    let sinks = Arc::new(start_sinks(&config, &ctx, &own, &metrics)?);
    let sources = build_sources(&config, &ctx, &own)?;
    let (host, pools, stamps) = tokio::task::block_in_place(|| load_plugins(&config, &data_dir))?;
    // A plugin whose file changes is reloaded without a restart.
    let reloaders: Vec<_> = match &host {
        Some(host) => pools
            .iter()
            .map(|(name, pool)| {
                plugin_reload::watch(
                    host.clone(),
                    name.clone(),
                    config.plugins[name].clone(),
                    pool.clone(),
                    stamps[name],
                )
            })
            .collect(),
        None => Vec::new(),
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut readers = JoinSet::new();
    let stopped_readers = Arc::new(pipeline::StoppedReaders::default());
    for (name, p) in &config.pipelines {
        let dlq_name = p
            .dead_letter
            .clone()
            .unwrap_or_else(|| config.server.dead_letter.clone());
        let stage = |plugin: &String, world: World, role: &str| -> Result<Stage, RuntimeError> {
            let pool = &pools[plugin];
            if pool.world() != world {
                return Err(RuntimeError::Plugin(format!(
                    "pipelines.{name}.{role}: plugin `{plugin}` is a {} plugin, not a {world}",
                    pool.world()
                )));
            }
            Ok(Stage {
                name: plugin.clone(),
                pool: pool.clone(),
                on_error: config.plugins[plugin].on_error,
            })
        };
        let stages = Stages {
            filters: p
                .filters
                .iter()
                .map(|f| stage(f, World::Filter, "filters"))
                .collect::<Result<_, _>>()?,
            transforms: p
                .transforms
                .iter()
                .map(|t| stage(t, World::Transform, "transforms"))
                .collect::<Result<_, _>>()?,
            router: p
                .router
                .as_ref()
                .map(|r| stage(r, World::Router, "router"))
                .transpose()?,
        };
        let plan = Arc::new(PipelinePlan {
            name: Arc::from(name.as_str()),
            sinks: p.to.iter().map(|s| sinks[s].clone()).collect(),
            all_sinks: sinks.clone(),
            stages,
            metrics: metrics.clone(),
            dead_letter: queues[&dlq_name].clone(),
            max_in_flight: p.max_in_flight.max(1),
            stopped: stopped_readers.clone(),
        });
        for source in &p.from {
            let feeds = sources[source]
                .open(name)
                .await
                .map_err(|e| RuntimeError::Source {
                    name: source.clone(),
                    message: e.to_string(),
                })?;
            for feed in feeds {
                let reader = Reader {
                    plan: plan.clone(),
                    source: source.clone(),
                    feed,
                    metrics: metrics.clone(),
                };
                readers.spawn(reader.run(stop_rx.clone(), config.server.shutdown_timeout));
            }
        }
        info!(pipeline = %name, from = ?p.from, to = ?p.to, dead_letter = %dlq_name, "pipeline started");
    }

    // What the admin API and the metrics see of running Postgres sources.
    let cdc = sources
        .iter()
        .filter_map(|(name, source)| {
            let pg = source.as_any().downcast_ref::<PostgresSource>()?;
            Some((name.clone(), pg.control()?))
        })
        .collect();
    let broker = Arc::new(Broker {
        config: config.clone(),
        queues: queues.clone(),
    });
    let shared = Arc::new(Shared {
        config: config.clone(),
        metrics: metrics.clone(),
        queues,
        intakes,
        sinks: (*sinks).clone(),
        sources,
        stopped_readers,
        cdc,
        broker,
        monitor: console::Monitor::new(stop_rx.clone()),
        dead_letter_ops: tokio::sync::Mutex::new(()),
    });
    let housekeeping = tokio::spawn(housekeeping(shared.clone()));
    let sampler = tokio::spawn(console::sampler(shared.clone()));

    let listener = tokio::net::TcpListener::bind(&config.server.listen)
        .await
        .map_err(|source| RuntimeError::Listen {
            addr: config.server.listen.clone(),
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_or(config.server.listen.clone(), |a| a.to_string());
    info!(%addr, data_dir = %data_dir.display(), "switchyard is listening");
    let http_sources = server::http_sources(&shared);
    switchyard_queue::restore_idempotency(shared.queues.values().chain(shared.intakes.values()))
        .await;
    let dead_letters = tokio::spawn(switchyard_queue::dead_letter_loop(shared.broker.clone()));
    let idle_groups = tokio::spawn(switchyard_queue::group_expiry_loop(shared.broker.clone()));
    let app = server::router(shared.clone(), http_sources);
    let server = listener::serve(listener, app, &config.server, stop_rx.clone())?.done;

    shutdown.await;
    info!("shutting down: no new input, draining in-flight deliveries");
    let _ = stop_tx.send(true);
    if tokio::time::timeout(config.server.shutdown_timeout, server)
        .await
        .is_err()
    {
        warn!("http connections still open at the shutdown timeout");
    }
    while readers.join_next().await.is_some() {}
    housekeeping.abort();
    sampler.abort();
    dead_letters.abort();
    idle_groups.abort();
    for reloader in reloaders {
        reloader.abort();
    }
    for q in shared.queues.values().chain(shared.intakes.values()) {
        q.shutdown();
    }
    info!("stopped");
    Ok(())
}

/// Where compiled plugins are kept between starts, under `server.data_dir`.
const PLUGIN_CACHE_DIR: &str = "plugin-cache";

/// The running plugins: the host that loaded them, a pool per plugin, and the stamp of
/// each one's file when it was read (for reloading).
type LoadedPlugins = (
    Option<PluginHost>,
    HashMap<String, Arc<PluginPool>>,
    HashMap<String, plugin_reload::Stamp>,
);

/// Compiles and starts every plugin a pipeline uses (each `init` runs here: a plugin
/// that rejects its config stops the start with its own message). Compiled components
/// are kept in `DATA_DIR/plugin-cache`, so a later start of an unchanged plugin skips
/// compiling it.
fn load_plugins(
    config: &Config,
    data_dir: &std::path::Path,
) -> Result<LoadedPlugins, RuntimeError> {
    let used: std::collections::BTreeSet<&String> = config
        .pipelines
        .values()
        .flat_map(|p| p.filters.iter().chain(&p.transforms).chain(&p.router))
        .collect();
    if used.is_empty() {
        return Ok((None, HashMap::new(), HashMap::new()));
    }
    let host = PluginHost::with_options(&HostOptions {
        cache_dir: Some(data_dir.join(PLUGIN_CACHE_DIR)),
        ..HostOptions::default()
    })
    .map_err(|e| RuntimeError::Plugin(e.to_string()))?;
    let mut pools = HashMap::new();
    let mut stamps = HashMap::new();
    for name in used {
        let stamp = plugin_reload::stamp(std::path::Path::new(&config.plugins[name].path));
        stamps.insert(name.clone(), stamp);
        let plugin = host
            .load(name, &config.plugins[name])
            .map_err(|e| RuntimeError::Plugin(e.to_string()))?;
        let (compiled, took) = plugin.compiled();
        info!(plugin = %name, world = %plugin.world(),
            compiled = if compiled == Compiled::Cached { "from the cache" } else { "now" },
            compile_ms = took.as_millis() as u64, "plugin loaded");
        pools.insert(name.clone(), Arc::new(PluginPool::new(plugin, 4)));
    }
    Ok((Some(host), pools, stamps))
}

fn limits(q: &QueueConfig) -> QueueLimits {
    QueueLimits {
        partitions: q.partitions.max(1),
        max_bytes: q.max_bytes.0,
        retention: Some(q.retention),
        work: WorkOptions {
            ack_timeout_ms: u64::try_from(q.ack_timeout.as_millis()).unwrap_or(u64::MAX),
            max_deliveries: q.max_deliveries.max(1),
            lookahead: q.lookahead.max(1) as usize,
            // One budget for all work groups of this queue.
            budget: MemoryBudget::new(usize::try_from(q.work_memory.0).unwrap_or(usize::MAX)),
            ..WorkOptions::default()
        },
        max_groups: q.max_groups.max(1) as usize,
        group_idle_expiry: Some(q.group_idle_expiry).filter(|d| !d.is_zero()),
        dedup_window: q.dedup_window,
        dedup_keys: 1_000_000,
    }
}

fn open_queues(
    config: &Config,
    storage: &Arc<dyn Storage>,
    data_dir: &Path,
) -> Result<BTreeMap<String, Arc<QueueHandle>>, RuntimeError> {
    let mut wanted: BTreeMap<String, QueueConfig> = config.queues.clone();
    // Dead-letter queues that are not declared get the defaults.
    let dlqs = config
        .pipelines
        .values()
        .filter_map(|p| p.dead_letter.clone())
        .chain(config.queues.values().filter_map(|q| q.dead_letter.clone()))
        .chain(std::iter::once(config.server.dead_letter.clone()));
    for name in dlqs {
        wanted.entry(name).or_default();
    }
    wanted
        .into_iter()
        .map(|(name, q)| {
            let dir = data_dir.join("queues").join(&name);
            QueueHandle::open(storage.clone(), &dir, &name, limits(&q))
                .map(|h| (name.clone(), h))
                .map_err(|source| RuntimeError::Queue { name, source })
        })
        .collect()
}

fn open_intakes(
    config: &Config,
    storage: &Arc<dyn Storage>,
    data_dir: &Path,
) -> Result<BTreeMap<String, Arc<QueueHandle>>, RuntimeError> {
    let mut out = BTreeMap::new();
    for (name, source) in &config.sources {
        let SourceConfig::Http(http) = source else {
            continue;
        };
        let dir = data_dir.join("intake").join(name);
        let stored = || {
            Queue::stored_partitions(&**storage, &dir).map_err(|source| RuntimeError::Queue {
                name: format!("intake of source {name}"),
                source,
            })
        };
        // Not configured: keep what the intake has (an intake made with another default
        // keeps its data readable), or start a new one with the default.
        let partitions = match http.partitions {
            Some(n) => n.max(1),
            None => stored()?.unwrap_or(HttpSourceConfig::DEFAULT_PARTITIONS),
        };
        let limits = QueueLimits {
            partitions,
            max_bytes: http.max_bytes.0,
            // Intake data is removed once every pipeline has passed it, never by age.
            retention: None,
            work: WorkOptions::default(),
            // Intakes are read by pipelines (pub/sub groups), never by work groups.
            max_groups: 0,
            group_idle_expiry: None,
            // HTTP ingest's Idempotency-Key window is the intake's.
            dedup_window: http.dedup_window,
            dedup_keys: 100_000,
        };
        let handle = QueueHandle::open(storage.clone(), &dir, &format!("intake.{name}"), limits)
            .map_err(|source| RuntimeError::Queue {
                name: format!("intake of source {name}"),
                source,
            })?;
        out.insert(name.clone(), handle);
    }
    Ok(out)
}

fn start_sinks(
    config: &Config,
    ctx: &BuildContext<'_>,
    own: &connectors::Queues<'_>,
    metrics: &Arc<Metrics>,
) -> Result<HashMap<String, Arc<SinkHandle>>, RuntimeError> {
    let mut out = HashMap::new();
    for (name, cfg) in &config.sinks {
        let sink = connectors::build_sink(name, cfg, ctx, own).map_err(|e| RuntimeError::Sink {
            name: name.clone(),
            message: e.to_string(),
        })?;
        out.insert(name.clone(), SinkHandle::start(name, sink, metrics.clone()));
    }
    Ok(out)
}

/// Builds every source (none connects yet: pipelines open their feeds).
fn build_sources(
    config: &Config,
    ctx: &BuildContext<'_>,
    own: &connectors::Queues<'_>,
) -> Result<BTreeMap<String, Arc<dyn Source>>, RuntimeError> {
    config
        .sources
        .iter()
        .map(|(name, cfg)| {
            connectors::build_source(name, cfg, ctx, own)
                .map(|source| (name.clone(), Arc::from(source)))
                .map_err(|e| RuntimeError::Source {
                    name: name.clone(),
                    message: e.to_string(),
                })
        })
        .collect()
}

/// Queue gauges every second; retention every 30 seconds.
async fn housekeeping(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        for (name, q) in shared.queues.iter().chain(shared.intakes.iter()) {
            let labels = metrics::QueueLabels {
                queue: name.clone(),
            };
            shared
                .metrics
                .queue_depth
                .get_or_create(&labels)
                .set(q.depth() as i64);
            shared
                .metrics
                .queue_bytes
                .get_or_create(&labels)
                .set(q.size_bytes() as i64);
            for g in q.work_groups() {
                let stats = g.stats(switchyard_queue::now_ms());
                let labels = metrics::GroupLabels {
                    queue: name.clone(),
                    group: g.name().to_owned(),
                };
                let m = &shared.metrics;
                m.group_depth.get_or_create(&labels).set(stats.depth as i64);
                m.group_in_flight
                    .get_or_create(&labels)
                    .set(stats.in_flight as i64);
                m.group_dead_lettered
                    .get_or_create(&labels)
                    .set(stats.dead_lettered as i64);
            }
        }
        for (source, control) in &shared.cdc {
            let view = control.status.view();
            let labels = metrics::SourceLabels {
                source: source.clone(),
            };
            shared
                .metrics
                .slot_lag_bytes
                .get_or_create(&labels)
                .set(view.slot_lag_bytes);
            shared
                .metrics
                .replication_connected
                .get_or_create(&labels)
                .set(i64::from(view.connected));
            shared
                .metrics
                .cdc_leader
                .get_or_create(&labels)
                .set(i64::from(
                    view.role == switchyard_source_postgres::stream::ROLE_LEADER,
                ));
            shared
                .metrics
                .replication_streaming_bytes
                .get_or_create(&labels)
                .set(i64::try_from(view.streaming_buffered_bytes).unwrap_or(i64::MAX));
            shared
                .metrics
                .replication_spilled_bytes
                .get_or_create(&labels)
                .set(i64::try_from(view.spilled_bytes).unwrap_or(i64::MAX));
            for (table, progress) in &view.snapshot {
                let labels = metrics::TableLabels {
                    source: source.clone(),
                    table: table.clone(),
                };
                shared
                    .metrics
                    .snapshot_rows
                    .get_or_create(&labels)
                    .set(progress.rows_acknowledged as i64);
                shared
                    .metrics
                    .snapshot_pending
                    .get_or_create(&labels)
                    .set(i64::from(matches!(
                        progress.state,
                        "pending" | "running" | "paused"
                    )));
                if let Some(estimate) = progress.rows_estimate {
                    shared
                        .metrics
                        .snapshot_rows_estimate
                        .get_or_create(&labels)
                        .set(i64::try_from(estimate).unwrap_or(i64::MAX));
                }
                match progress.eta_seconds {
                    Some(eta) => {
                        shared
                            .metrics
                            .snapshot_eta_seconds
                            .get_or_create(&labels)
                            .set(i64::try_from(eta).unwrap_or(i64::MAX));
                    }
                    None => {
                        shared.metrics.snapshot_eta_seconds.remove(&labels);
                    }
                }
            }
        }
        n += 1;
        if n.is_multiple_of(30) {
            for q in shared.queues.values().chain(shared.intakes.values()) {
                let q = q.clone();
                let result = tokio::task::spawn_blocking(move || q.enforce_retention_blocking())
                    .await
                    .expect("retention task");
                if let Err(e) = result {
                    warn!(error = %e, "retention failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod data_dir_tests {
    use std::os::unix::fs::PermissionsExt as _;

    fn mode(path: &std::path::Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn an_open_data_dir_of_switchyard_alone_is_tightened_a_shared_one_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let ours = tmp.path().join("ours");
        std::fs::create_dir_all(ours.join("queues")).unwrap();
        std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o755)).unwrap();
        super::restrict_data_dir(&ours);
        assert_eq!(mode(&ours), 0o700);

        let shared = tmp.path().join("shared");
        std::fs::create_dir_all(shared.join("queues")).unwrap();
        std::fs::write(shared.join("notes.txt"), "not switchyard's").unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        super::restrict_data_dir(&shared);
        assert_eq!(mode(&shared), 0o755);
    }
}

#[cfg(test)]
mod intake_tests {
    use std::sync::Arc;

    use switchyard_store::{FsStorage, LogOptions, Queue, Storage};

    fn partitions_opened(configured: &str, data_dir: &std::path::Path) -> usize {
        let text = format!(
            "[sources.api]\ntype = \"http\"\n{configured}\n\
             [pipelines.p]\nfrom = [\"api\"]\nto = [\"out\"]\n\
             [sinks.out]\ntype = \"stdout\"\n"
        );
        let config = switchyard_config::load_str(&text, false).unwrap();
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        let intakes = super::open_intakes(&config, &storage, data_dir).unwrap();
        let n = intakes["api"].partitions().len();
        intakes["api"].shutdown();
        n
    }

    #[test]
    fn an_intake_without_a_configured_count_keeps_its_own_and_a_new_one_gets_one() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("fresh");
        assert_eq!(partitions_opened("", &fresh), 1);
        assert_eq!(partitions_opened("", &fresh), 1, "reopened");

        // Made with four partitions (an explicit count, or an older default): its data
        // stays readable when the count is left out.
        let older = tmp.path().join("older");
        let dir = older.join("intake").join("api");
        let storage: Arc<dyn Storage> = Arc::new(FsStorage);
        drop(Queue::open(storage, &dir, 4, LogOptions::default()).unwrap());
        assert_eq!(partitions_opened("", &older), 4);
        assert_eq!(partitions_opened("partitions = 4", &older), 4);

        let explicit = tmp.path().join("explicit");
        assert_eq!(partitions_opened("partitions = 3", &explicit), 3);
    }
}
