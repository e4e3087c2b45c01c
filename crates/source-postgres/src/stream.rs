//! The running source: one replication session at a time, reconnecting with backoff,
//! turning pgoutput changes into events with increasing positions, and confirming the
//! slot's flush LSN only up to fully acknowledged commits.
//!
//! Positions: every event gets the next `u64` position of this process. The runtime's
//! reader tracks them and sends back the low watermark (everything below is complete).
//! Next to the events the task keeps a queue of [`Action`]s keyed by position — "when
//! everything below position P is complete, confirm LSN L" (a commit, or an idle
//! keepalive) and "... store this snapshot progress". So the slot never moves past an
//! event that is not acknowledged, and snapshot progress never runs ahead either.
//!
//! Snapshots run while streaming goes on (the watermark algorithm of DBLog): for each
//! chunk the task writes a low watermark into the WAL (a non-transactional logical
//! message), selects the next rows of the table in key order, writes a high watermark,
//! and — reading the stream — drops from the chunk every row that a change between the
//! two watermarks touched (the stream carries a newer state of it). At the high
//! watermark the rest of the chunk is emitted, so a row changed during a snapshot always
//! ends with its newest state last.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde::Serialize;
use serde_json::{Map, Value, json};
use switchyard_config::{PostgresCdcSourceConfig, SnapshotMode};
use switchyard_event::Event;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;
use tracing::{debug, error, info, warn};

use crate::change;
use crate::pgoutput::{self, Message, Relation};
use crate::setup::{self, CdcError, TableInfo, describe, quote_ident};
use crate::state::{State, StateFile, TableProgress};
use crate::tls::Target;
use crate::values::TypeRegistry;

/// Events buffered between the replication session and the pipeline reader.
const CHANNEL: usize = 4096;
/// Prefix of the logical messages that mark snapshot windows.
const WATERMARK_PREFIX: &str = "switchyard.snapshot";
/// How often the slot's retained WAL is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);
/// How often a slot over `max_slot_lag` is warned about.
const LAG_WARN_INTERVAL: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What a running source shows in `switchyard cdc status` and in metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusView {
    pub slot: String,
    pub connected: bool,
    /// The LSN last confirmed to the server (everything before it is acknowledged).
    pub confirmed_lsn: String,
    /// WAL the slot holds back on the server (from its restart LSN), in bytes.
    pub slot_lag_bytes: i64,
    pub events: u64,
    pub last_error: Option<String>,
    /// Stopped for good (a problem the user must fix); the slot stays where it was.
    pub stopped: bool,
    pub reconnects: u64,
    /// Snapshot progress by table.
    pub snapshot: BTreeMap<String, SnapshotStatus>,
}

/// Snapshot progress of one table.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SnapshotStatus {
    /// `pending`, `running`, `done`.
    pub state: &'static str,
    /// Rows emitted so far (acknowledged ones are stored as progress).
    pub rows_emitted: u64,
    pub rows_acknowledged: u64,
}

/// Shared, cheaply readable status of a source.
#[derive(Default)]
pub struct Status(Mutex<StatusView>);

impl Status {
    pub fn view(&self) -> StatusView {
        self.0.lock().expect("status lock").clone()
    }

    fn update(&self, f: impl FnOnce(&mut StatusView)) {
        f(&mut self.0.lock().expect("status lock"));
    }
}

/// Requests to a running source.
pub enum Command {
    /// Take the snapshot of `table` (`schema.table`) again from its start.
    Snapshot {
        table: String,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// The runtime's side of a running source.
pub struct CdcHandle {
    /// Events with their positions, in order; closed when the source stopped for good.
    pub events: mpsc::Receiver<Result<(u64, Event), String>>,
    /// The reader's low watermark: every position below it is complete.
    pub complete: watch::Sender<u64>,
    pub status: Arc<Status>,
    pub commands: mpsc::Sender<Command>,
}

/// Checks and sets up the database, then starts streaming in the background.
///
/// Problems the user must fix (no primary key, wrong `wal_level`, a lost slot …) fail
/// here with the fix. A database that cannot be reached is retried in the background.
pub async fn start(
    source: &str,
    cfg: PostgresCdcSourceConfig,
    state_dir: PathBuf,
) -> Result<CdcHandle, CdcError> {
    let state_file = StateFile::new(&state_dir)
        .map_err(|e| CdcError::Config(format!("cannot use {}: {e}", state_dir.display())))?;
    let stored = state_file
        .load()
        .map_err(|e| CdcError::Config(e.to_string()))?
        .filter(|s| s.slot == cfg.slot);
    let rcfg = setup::replication_config(&cfg, &Target::parse(&cfg.dsn)?);
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (complete_tx, complete_rx) = watch::channel(0);
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let status = Arc::new(Status::default());
    status.update(|s| s.slot = cfg.slot.clone());
    let mut task = Task {
        source: source.to_owned(),
        cfg,
        rcfg,
        state_file,
        state: stored.clone().unwrap_or_default(),
        had_state: stored.is_some(),
        tx,
        complete: complete_rx,
        commands: cmd_rx,
        status: status.clone(),
        next_position: 0,
        actions: VecDeque::new(),
        confirmed: 0,
        emitted_upto: 0,
        tables: HashMap::new(),
        types: TypeRegistry::default(),
        known_schemas: HashMap::new(),
        cursors: BTreeMap::new(),
        window: None,
        window_seq: 0,
        sql: None,
    };
    match task.prepare().await {
        Ok(()) => {}
        Err(e) if e.is_transient() => {
            warn!(source, error = %e, "postgres is not reachable yet; retrying in the background");
            task.status.update(|s| s.last_error = Some(e.to_string()));
        }
        Err(e) => return Err(e),
    }
    tokio::spawn(task.run());
    Ok(CdcHandle {
        events: rx,
        complete: complete_tx,
        status,
        commands: cmd_tx,
    })
}

/// Done when everything below `position` is complete.
enum Action {
    Confirm(u64),
    Progress {
        table: String,
        generation: u64,
        progress: TableProgress,
    },
}

/// Where the snapshot of one table is, in this process.
#[derive(Clone, Debug, Default)]
struct Cursor {
    /// Key (text values) of the last row selected; the next chunk starts after it.
    after: Option<Vec<String>>,
    done: bool,
    /// Bumped by a re-snapshot, so progress of an older pass is not stored over it.
    generation: u64,
    rows_emitted: u64,
    rows_acknowledged: u64,
}

/// One chunk between its watermarks.
struct Window {
    id: String,
    table: String,
    generation: u64,
    /// The low watermark was seen in the stream: changes now remove rows.
    open: bool,
    /// Rows by their key's JSON text, in key order.
    rows: Vec<(String, Value, Map<String, Value>)>,
    removed: std::collections::HashSet<String>,
    last_key: Option<Vec<String>>,
    /// The chunk was shorter than asked: the table ends with it.
    last: bool,
}

struct Txn {
    tx: change::Transaction,
    seq: u32,
    /// Already emitted by an earlier session of this process: skip it.
    skip: bool,
}

struct Task {
    source: String,
    cfg: PostgresCdcSourceConfig,
    rcfg: pgwire_replication::ReplicationConfig,
    state_file: StateFile,
    state: State,
    /// A state file existed at start: the slot is expected to exist.
    had_state: bool,
    tx: mpsc::Sender<Result<(u64, Event), String>>,
    complete: watch::Receiver<u64>,
    commands: mpsc::Receiver<Command>,
    status: Arc<Status>,
    next_position: u64,
    actions: VecDeque<(u64, Action)>,
    confirmed: u64,
    /// End LSN of the last transaction emitted in full by this process.
    emitted_upto: u64,
    tables: HashMap<String, TableInfo>,
    types: TypeRegistry,
    /// Relation as last seen per table, to tell schema changes.
    known_schemas: HashMap<u32, Relation>,
    cursors: BTreeMap<String, Cursor>,
    window: Option<Window>,
    window_seq: u64,
    /// Connection for ordinary SQL (snapshots, watermarks, lag).
    sql: Option<Client>,
}

/// The session ended; why.
enum SessionEnd {
    /// The runtime dropped its side: stop.
    Closed,
    Error(CdcError),
}

impl Task {
    /// Runs set-up and loads the snapshot plan.
    async fn prepare(&mut self) -> Result<(), CdcError> {
        let create = !self.had_state || self.cfg.recreate_slot;
        let prepared = setup::prepare(&self.source, &self.cfg, create, self.cfg.recreate_slot)
            .await
            .map_err(|e| match e {
                CdcError::SlotMissing(msg) => CdcError::SlotLost(format!(
                    "{msg}; it existed before (see {}): changes made while it was gone are \
                     lost. Set recreate_slot = true on sources.{} to create it again and take \
                     a new snapshot",
                    self.state_file.path().display(),
                    self.source
                )),
                other => other,
            })?;
        self.types = prepared.types;
        self.tables = prepared
            .tables
            .into_iter()
            .map(|t| (t.qualified(), t))
            .collect();
        if prepared.slot_created {
            // A new slot is a new stream: whatever was snapshotted before is stale.
            self.state = State {
                slot: self.cfg.slot.clone(),
                snapshots: BTreeMap::new(),
            };
        }
        self.state.slot = self.cfg.slot.clone();
        if self.cfg.snapshot == SnapshotMode::Initial {
            for table in self.tables.keys() {
                self.state.snapshots.entry(table.clone()).or_default();
            }
        }
        self.store_state().await?;
        self.had_state = true;
        self.cursors = self
            .state
            .snapshots
            .iter()
            .filter(|(t, _)| self.tables.contains_key(*t))
            .map(|(t, p)| {
                (
                    t.clone(),
                    Cursor {
                        after: p.after.clone(),
                        done: p.done,
                        generation: 0,
                        rows_emitted: p.rows,
                        rows_acknowledged: p.rows,
                    },
                )
            })
            .collect();
        self.confirmed = self.confirmed.max(prepared.confirmed_flush);
        let confirmed = self.confirmed;
        self.status
            .update(|s| s.confirmed_lsn = change::lsn_string(confirmed));
        self.publish_snapshot_status();
        Ok(())
    }

    async fn store_state(&self) -> Result<(), CdcError> {
        let state = self.state.clone();
        let file = self.state_file.clone();
        tokio::task::spawn_blocking(move || file.store(&state))
            .await
            .expect("state store task")
            .map_err(|e| {
                CdcError::Config(format!(
                    "cannot store {}: {e}",
                    self.state_file.path().display()
                ))
            })
    }

    async fn run(mut self) {
        let mut backoff = BACKOFF_MIN;
        let mut prepared = !self.tables.is_empty();
        loop {
            if !prepared {
                match self.prepare().await {
                    Ok(()) => {}
                    Err(e) if e.is_transient() => {
                        self.note_error(&e);
                        if self.pause(&mut backoff).await {
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.fail(e).await;
                        return;
                    }
                }
            }
            let started = Instant::now();
            match self.session().await {
                SessionEnd::Closed => return,
                SessionEnd::Error(e) if e.is_transient() => {
                    self.note_error(&e);
                    self.status.update(|s| {
                        s.connected = false;
                        s.reconnects += 1;
                    });
                    if started.elapsed() > Duration::from_secs(30) {
                        backoff = BACKOFF_MIN;
                    }
                    // A lost session loses its open snapshot window; the chunk is redone.
                    self.window = None;
                    self.sql = None;
                    prepared = false;
                    if self.pause(&mut backoff).await {
                        return;
                    }
                }
                SessionEnd::Error(e) => {
                    self.fail(e).await;
                    return;
                }
            }
        }
    }

    fn note_error(&self, e: &CdcError) {
        warn!(source = %self.source, error = %e, "postgres source: retrying");
        self.status.update(|s| s.last_error = Some(e.to_string()));
    }

    /// Stops for good: the reader gets the error and stops; the slot stays where it is.
    async fn fail(&self, e: CdcError) {
        error!(source = %self.source, error = %e, "postgres source stopped");
        self.status.update(|s| {
            s.connected = false;
            s.stopped = true;
            s.last_error = Some(e.to_string());
        });
        let _ = self.tx.send(Err(e.to_string())).await;
    }

    /// Waits `backoff` (with jitter) and doubles it; true when the runtime went away.
    async fn pause(&mut self, backoff: &mut Duration) -> bool {
        let jitter = Duration::from_millis(u64::from(std::process::id() % 97));
        let sleep = tokio::time::sleep(*backoff + jitter);
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return self.tx.is_closed(),
                changed = self.complete.changed() => {
                    if changed.is_err() {
                        return true;
                    }
                    self.apply_completions(None).await;
                }
            }
        }
    }

    async fn sql(&mut self) -> Result<&Client, CdcError> {
        if self.sql.as_ref().is_none_or(Client::is_closed) {
            self.sql = Some(setup::connect(&self.cfg.dsn).await?);
        }
        Ok(self.sql.as_ref().expect("just connected"))
    }

    /// One replication session, until it fails or the runtime goes away.
    async fn session(&mut self) -> SessionEnd {
        let reported = Arc::new(tokio::sync::Notify::new());
        let observer = {
            let reported = reported.clone();
            pgwire_replication::FeedbackObserver::new(move |_| reported.notify_waiters())
        };
        let mut rcfg = self.rcfg.clone();
        // Parsed per session, as each SQL connection is: a replaced CA file is read again.
        let target = match Target::parse(&self.cfg.dsn) {
            Ok(t) => t,
            Err(e) => return SessionEnd::Error(e),
        };
        match target.replication_tunnel().await {
            Ok(Some(socket_dir)) => rcfg.host = socket_dir,
            Ok(None) => {}
            Err(e) => return SessionEnd::Error(e),
        }
        let rcfg = rcfg
            .with_start_lsn(Lsn(self.confirmed))
            .with_ack_lsn(Lsn(self.confirmed))
            .with_status_interval(Duration::from_secs(1))
            .with_feedback_observer(observer);
        let mut client = match ReplicationClient::connect(rcfg).await {
            Ok(c) => c,
            Err(e) => {
                return SessionEnd::Error(CdcError::Transient(format!(
                    "cannot start replication: {e}"
                )));
            }
        };
        if let Err(e) = client.wait_started().await {
            return SessionEnd::Error(classify_replication_error(&self.cfg.slot, e));
        }
        info!(source = %self.source, slot = %self.cfg.slot,
            from = %change::lsn_string(self.confirmed), "replication started");
        self.status.update(|s| {
            s.connected = true;
            s.last_error = None;
        });
        let mut txn: Option<Txn> = None;
        let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
        // Actions recorded while nothing was outstanding (an idle keepalive) are due at
        // once; no completion will come to trigger them.
        let mut due_tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_lag_warning: Option<Instant> = None;
        loop {
            // A new snapshot chunk starts when no window is open and a table needs one.
            if self.window.is_none()
                && txn.is_none()
                && let Err(e) = self.start_chunk().await
            {
                return SessionEnd::Error(e);
            }
            tokio::select! {
                biased;
                changed = self.complete.changed() => {
                    if changed.is_err() {
                        flush_and_stop(&client, &reported).await;
                        return SessionEnd::Closed;
                    }
                    self.apply_completions(Some(&client)).await;
                }
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                _ = lag_tick.tick() => self.measure_lag(&mut last_lag_warning).await,
                _ = due_tick.tick() => self.apply_completions(Some(&client)).await,
                event = client.recv() => {
                    let event = match event {
                        Ok(Some(e)) => e,
                        Ok(None) => {
                            return SessionEnd::Error(CdcError::Transient(
                                "the replication stream ended".into(),
                            ));
                        }
                        Err(e) => return SessionEnd::Error(classify_replication_error(&self.cfg.slot, e)),
                    };
                    if let Err(end) = self.handle(event, &mut txn).await {
                        client.stop();
                        return end;
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        event: ReplicationEvent,
        txn: &mut Option<Txn>,
    ) -> Result<(), SessionEnd> {
        match event {
            ReplicationEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => {
                *txn = Some(Txn {
                    tx: change::Transaction {
                        commit_lsn: final_lsn.0,
                        xid,
                        commit_ts_us: commit_time_micros,
                    },
                    seq: 0,
                    skip: final_lsn.0 < self.emitted_upto,
                });
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                if let Some(t) = txn.take()
                    && !t.skip
                {
                    self.emitted_upto = end_lsn.0;
                    self.push_action(Action::Confirm(end_lsn.0));
                }
            }
            // Idle: nothing of ours is between the last commit and the server's
            // position, so it may be confirmed once everything before is complete.
            ReplicationEvent::KeepAlive { wal_end, .. }
                if txn.is_none() && wal_end.0 > self.emitted_upto =>
            {
                self.push_action(Action::Confirm(wal_end.0));
            }
            ReplicationEvent::Message {
                transactional: false,
                lsn,
                prefix,
                content,
            } if prefix == WATERMARK_PREFIX => {
                self.watermark(&String::from_utf8_lossy(&content), lsn.0)
                    .await?;
            }
            ReplicationEvent::XLogData { data, .. } => {
                let message = pgoutput::decode(&data).map_err(|e| {
                    SessionEnd::Error(CdcError::Transient(format!(
                        "undecodable replication message: {e}"
                    )))
                })?;
                self.change(message, txn).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Records "when every position below the next one is complete, do `action`".
    fn push_action(&mut self, action: Action) {
        let position = self.next_position;
        if let (Action::Confirm(lsn), Some((p, Action::Confirm(last)))) =
            (&action, self.actions.back_mut())
            && *p == position
        {
            *last = (*last).max(*lsn);
            return;
        }
        self.actions.push_back((position, action));
    }

    async fn emit(&mut self, event: Event) -> Result<(), SessionEnd> {
        let position = self.next_position;
        self.next_position += 1;
        self.tx
            .send(Ok((position, event)))
            .await
            .map_err(|_| SessionEnd::Closed)?;
        self.status.update(|s| s.events += 1);
        Ok(())
    }

    async fn change(&mut self, message: Message, txn: &mut Option<Txn>) -> Result<(), SessionEnd> {
        let Some(t) = txn.as_mut() else {
            return Ok(());
        };
        match message {
            Message::Relation(rel) => {
                let changed = self
                    .known_schemas
                    .get(&rel.oid)
                    .is_none_or(|known| known.columns != rel.columns);
                self.known_schemas.insert(rel.oid, rel.clone());
                if changed && !t.skip {
                    // The catalog may have changed too (ALTER TABLE): read it again.
                    self.refresh_table(&rel).await?;
                    let key_columns = self
                        .tables
                        .get(&rel.qualified_name())
                        .map(|t| t.key_columns.clone());
                    let record = change::schema_record(
                        &rel,
                        &self.types,
                        key_columns.as_deref(),
                        t.tx.commit_lsn,
                    );
                    let event = self.event_of(t, "schema", None, &record);
                    self.emit(event).await?;
                }
            }
            Message::Type { oid, .. } => {
                if self.types.kind(oid).is_none()
                    && let Ok(client) = self.sql().await
                    && let Ok(types) = setup::load_types(client).await
                {
                    self.types = types;
                }
            }
            Message::Insert { relation, .. }
            | Message::Update { relation, .. }
            | Message::Delete { relation, .. } => {
                if t.skip {
                    return Ok(());
                }
                let tx = t.tx;
                let row = match &message {
                    Message::Insert { new, .. } => change::RowChange::Insert { new },
                    Message::Update { old, new, .. } => change::RowChange::Update {
                        old: old.as_ref(),
                        new,
                    },
                    Message::Delete { old, .. } => change::RowChange::Delete { old },
                    _ => unreachable!("matched above"),
                };
                let kind = row.op();
                // Borrowed, not cloned: this runs for every row.
                let Some(rel) = self.known_schemas.get(&relation) else {
                    return Err(SessionEnd::Error(CdcError::Transient(format!(
                        "a change of relation {relation} came before its description"
                    ))));
                };
                let table = rel.qualified_name();
                let key_columns = self.tables.get(&table).map(|t| t.key_columns.as_slice());
                let record = change::change_record(rel, &self.types, key_columns, &tx, row)
                    .map_err(|e| SessionEnd::Error(CdcError::Transient(e.to_string())))?;
                let key = record.get("key").unwrap_or(&Value::Null);
                if let Some(w) = self.window.as_mut()
                    && w.open
                    && w.table == table
                {
                    w.removed.insert(key.to_string());
                }
                let event = self.event_of(t, kind, Some(key), &record);
                self.emit(event).await?;
            }
            Message::Truncate {
                relations,
                cascade,
                restart_identity,
            } => {
                if t.skip {
                    return Ok(());
                }
                for oid in relations {
                    let Some(rel) = self.known_schemas.get(&oid).cloned() else {
                        continue;
                    };
                    let tx = t.tx;
                    let record = change::truncate_record(&rel, &tx, cascade, restart_identity);
                    let event = self.event_of(t, "truncate", None, &record);
                    self.emit(event).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn event_of(&self, t: &mut Txn, kind: &str, key: Option<&Value>, record: &Value) -> Event {
        let seq = t.seq;
        t.seq += 1;
        change::event(
            &self.source,
            t.tx.commit_lsn,
            seq,
            kind,
            key,
            record,
            t.tx.commit_ts_us,
        )
    }

    /// Reads a table's catalog entry again after its relation changed.
    async fn refresh_table(&mut self, rel: &Relation) -> Result<(), SessionEnd> {
        let name = rel.qualified_name();
        let client = self.sql().await.map_err(SessionEnd::Error)?;
        match setup::describe_table(client, rel.schema(), &rel.name).await {
            Ok(Ok(info)) => {
                self.tables.insert(name, info);
            }
            Ok(Err(problem)) => {
                warn!(source = %self.source, table = %name, %problem,
                    "the table changed; its events keep flowing with the key columns of the stream");
            }
            Err(e) => return Err(SessionEnd::Error(e)),
        }
        Ok(())
    }

    /// Applies every action whose position is now complete.
    async fn apply_completions(&mut self, client: Option<&ReplicationClient>) {
        let low = *self.complete.borrow_and_update();
        let mut confirm = None;
        let mut store = false;
        while let Some((p, _)) = self.actions.front() {
            if *p > low {
                break;
            }
            let (_, action) = self.actions.pop_front().expect("front exists");
            match action {
                Action::Confirm(lsn) => confirm = Some(lsn),
                Action::Progress {
                    table,
                    generation,
                    progress,
                } => {
                    let Some(cursor) = self.cursors.get_mut(&table) else {
                        continue;
                    };
                    if cursor.generation != generation {
                        continue;
                    }
                    cursor.rows_acknowledged = progress.rows;
                    if progress.done {
                        info!(source = %self.source, %table, rows = progress.rows,
                            "snapshot of the table is complete");
                    }
                    self.state.snapshots.insert(table, progress);
                    store = true;
                }
            }
        }
        if store {
            if let Err(e) = self.store_state().await {
                error!(source = %self.source, error = %e, "cannot store snapshot progress; it is retried with the next chunk");
            }
            self.publish_snapshot_status();
        }
        if let Some(lsn) = confirm
            && lsn > self.confirmed
        {
            self.confirmed = lsn;
            if let Some(c) = client {
                c.update_applied_lsn(Lsn(lsn));
            }
            self.status
                .update(|s| s.confirmed_lsn = change::lsn_string(lsn));
            debug!(source = %self.source, lsn = %change::lsn_string(lsn), "confirmed");
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Snapshot { table, reply } => {
                let table = if table.contains('.') {
                    table
                } else {
                    format!("public.{table}")
                };
                if !self.tables.contains_key(&table) {
                    let mut known: Vec<&String> = self.tables.keys().collect();
                    known.sort();
                    let _ = reply.send(Err(format!(
                        "table {table} is not captured by source {}; its tables: {known:?}",
                        self.source
                    )));
                    return;
                }
                let cursor = self.cursors.entry(table.clone()).or_default();
                *cursor = Cursor {
                    generation: cursor.generation + 1,
                    ..Cursor::default()
                };
                if self.window.as_ref().is_some_and(|w| w.table == table) {
                    self.window = None;
                }
                self.state
                    .snapshots
                    .insert(table.clone(), TableProgress::default());
                let stored = self.store_state().await.map_err(|e| e.to_string());
                info!(source = %self.source, %table, "snapshot requested");
                self.publish_snapshot_status();
                let _ = reply.send(stored);
            }
        }
    }

    fn publish_snapshot_status(&self) {
        let snapshot = self
            .cursors
            .iter()
            .map(|(t, c)| {
                let running = self.window.as_ref().is_some_and(|w| &w.table == t);
                (
                    t.clone(),
                    SnapshotStatus {
                        state: if c.done && c.rows_acknowledged == c.rows_emitted {
                            "done"
                        } else if running || c.rows_emitted > 0 {
                            "running"
                        } else {
                            "pending"
                        },
                        rows_emitted: c.rows_emitted,
                        rows_acknowledged: c.rows_acknowledged,
                    },
                )
            })
            .collect();
        self.status.update(|s| s.snapshot = snapshot);
    }

    async fn measure_lag(&mut self, last_warning: &mut Option<Instant>) {
        let slot = self.cfg.slot.clone();
        let Ok(client) = self.sql().await else {
            return;
        };
        let row = client
            .query_opt(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await;
        let Ok(Some(row)) = row else {
            return;
        };
        let lag: Option<i64> = row.get(0);
        let lag = lag.unwrap_or(0);
        self.status.update(|s| s.slot_lag_bytes = lag);
        let max = self.cfg.max_slot_lag.0;
        if u64::try_from(lag).unwrap_or(0) > max
            && last_warning.is_none_or(|t| t.elapsed() >= LAG_WARN_INTERVAL)
        {
            *last_warning = Some(Instant::now());
            warn!(source = %self.source, slot = %slot, lag_bytes = lag, max_slot_lag = max,
                "the replication slot holds back more WAL than max_slot_lag: a sink is slow or \
                 failing, or the pipeline is stopped; the server keeps this WAL on disk until \
                 the events are acknowledged (see `switchyard slots list`)");
        }
    }

    /// Starts the next snapshot chunk: low watermark, select, high watermark.
    async fn start_chunk(&mut self) -> Result<(), CdcError> {
        let Some((table, cursor)) = self
            .cursors
            .iter()
            .find(|(_, c)| !c.done)
            .map(|(t, c)| (t.clone(), c.clone()))
        else {
            return Ok(());
        };
        let Some(info) = self.tables.get(&table).cloned() else {
            return Ok(());
        };
        self.window_seq += 1;
        let id = format!("{}-{}-{}", std::process::id(), self.window_seq, table);
        let chunk = i64::from(self.cfg.snapshot_chunk.max(1));
        let emit = |edge: &str| {
            format!(
                "SELECT pg_logical_emit_message(false, '{WATERMARK_PREFIX}', '{edge} {}')",
                id.replace('\'', "''")
            )
        };
        let (query, params) = chunk_query(&info, cursor.after.as_deref(), chunk);
        let client = self.sql().await?;
        client
            .batch_execute(&emit("low"))
            .await
            .map_err(|e| CdcError::Transient(format!("snapshot watermark: {}", describe(&e))))?;
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params
            .iter()
            .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        let rows = client
            .query(&query, &params)
            .await
            .map_err(|e| CdcError::Transient(format!("snapshot of {table}: {}", describe(&e))))?;
        client
            .batch_execute(&emit("high"))
            .await
            .map_err(|e| CdcError::Transient(format!("snapshot watermark: {}", describe(&e))))?;
        let mut out = Vec::with_capacity(rows.len());
        let mut last_key = cursor.after.clone();
        for row in &rows {
            let mut after = Map::new();
            let mut text: HashMap<&str, Option<String>> = HashMap::new();
            for (i, col) in info.columns.iter().enumerate() {
                let value: Option<String> = row.get(i);
                after.insert(
                    col.name.clone(),
                    value
                        .as_deref()
                        .map_or(Value::Null, |v| self.types.to_json(col.type_oid, v)),
                );
                text.insert(&col.name, value);
            }
            let key: Map<String, Value> = info
                .key_columns
                .iter()
                .map(|k| (k.clone(), after.get(k).cloned().unwrap_or(Value::Null)))
                .collect();
            last_key = Some(
                info.key_columns
                    .iter()
                    .map(|k| text.get(k.as_str()).cloned().flatten().unwrap_or_default())
                    .collect(),
            );
            let key = Value::Object(key);
            out.push((key.to_string(), key, after));
        }
        debug!(source = %self.source, %table, rows = out.len(), "snapshot chunk selected");
        self.window = Some(Window {
            id,
            table: table.clone(),
            generation: cursor.generation,
            open: false,
            last: (out.len() as i64) < chunk,
            rows: out,
            removed: Default::default(),
            last_key,
        });
        self.publish_snapshot_status();
        Ok(())
    }

    /// A watermark message in the stream.
    async fn watermark(&mut self, content: &str, lsn: u64) -> Result<(), SessionEnd> {
        let Some((edge, id)) = content.split_once(' ') else {
            return Ok(());
        };
        let Some(w) = self.window.as_mut() else {
            return Ok(());
        };
        if w.id != id {
            // A window of an earlier session or process: its chunk is redone.
            return Ok(());
        }
        if edge == "low" {
            w.open = true;
            return Ok(());
        }
        if edge != "high" || !w.open {
            return Ok(());
        }
        let w = self.window.take().expect("checked above");
        let info = self.tables.get(&w.table).cloned();
        let Some(info) = info else {
            return Ok(());
        };
        let ts_us = now_pg_micros();
        let mut emitted = 0u64;
        for (n, (key_text, key, after)) in w.rows.into_iter().enumerate() {
            if w.removed.contains(&key_text) {
                continue;
            }
            let record = json!({
                "op": "read",
                "schema": info.schema,
                "table": info.name,
                "lsn": change::lsn_string(lsn),
                "xid": null,
                "commit_ts": change::pg_micros_to_rfc3339(ts_us),
                "key": key,
                "before": null,
                "after": Value::Object(after),
            });
            let mut event = change::event(&self.source, lsn, 0, "read", Some(&key), &record, ts_us);
            event.id = format!("{}/snapshot/{n}", change::lsn_string(lsn));
            self.emit(event).await?;
            emitted += 1;
        }
        let Some(cursor) = self.cursors.get_mut(&w.table) else {
            return Ok(());
        };
        if cursor.generation != w.generation {
            return Ok(());
        }
        cursor.after = w.last_key.clone();
        cursor.done = w.last;
        cursor.rows_emitted += emitted;
        let progress = TableProgress {
            done: w.last,
            after: w.last_key,
            rows: cursor.rows_emitted,
        };
        let every = u64::from(self.cfg.snapshot_chunk.max(1)) * 25;
        if w.last {
            info!(source = %self.source, table = %w.table, rows = cursor.rows_emitted,
                "snapshot of the table emitted; completes when acknowledged");
        } else if cursor.rows_emitted / every != (cursor.rows_emitted - emitted) / every {
            info!(source = %self.source, table = %w.table, rows = cursor.rows_emitted,
                after = ?cursor.after, "snapshot in progress");
        }
        self.push_action(Action::Progress {
            table: w.table,
            generation: w.generation,
            progress,
        });
        self.publish_snapshot_status();
        Ok(())
    }
}

/// Waits (a little) until the last confirmed position reached the server, then ends the
/// session: a clean stop leaves nothing to send twice.
async fn flush_and_stop(client: &ReplicationClient, reported: &tokio::sync::Notify) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while client.feedback_pending_since().is_some() {
        let notified = reported.notified();
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            warn!(
                "the last confirmed position was not reported before the shutdown; \
                   changes after the previous report are sent again at the next start"
            );
            break;
        }
    }
    client.stop();
}

/// `SELECT` of the next chunk: every column as text, rows after `after` in key order.
fn chunk_query(info: &TableInfo, after: Option<&[String]>, limit: i64) -> (String, Vec<String>) {
    let columns = info
        .columns
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ");
    // Qualified: the select list's `col::text` outputs carry the column names, and an
    // unqualified ORDER BY would sort by that text.
    let keys = info
        .key_columns
        .iter()
        .map(|k| format!("src.{}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut sql = format!("SELECT {columns} FROM {} AS src", info.sql_name());
    let mut params = Vec::new();
    if let Some(after) = after {
        let casts = info
            .key_columns
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ty = info
                    .columns
                    .iter()
                    .find(|c| &c.name == k)
                    .map_or("text", |c| c.type_name.as_str());
                format!("${}::text::{ty}", i + 1)
            })
            .collect::<Vec<_>>()
            .join(", ");
        sql.push_str(&format!(" WHERE ({keys}) > ({casts})"));
        params = after.to_vec();
    }
    sql.push_str(&format!(" ORDER BY {keys} LIMIT {limit}"));
    (sql, params)
}

/// Microseconds since 2000-01-01 (Postgres' epoch), now.
fn now_pg_micros() -> i64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64);
    unix - 946_684_800_000_000
}

/// Replication errors the user must act on are not retried.
fn classify_replication_error(slot: &str, e: pgwire_replication::PgWireError) -> CdcError {
    let text = e.to_string();
    if text.contains("does not exist") && text.contains("slot") {
        CdcError::SlotLost(format!(
            "replication slot `{slot}` no longer exists ({text}); changes made since it was \
             dropped are lost. Set recreate_slot = true on the source to create it again with a \
             new snapshot"
        ))
    } else if text.contains("can no longer get changes") || text.contains("invalidated") {
        CdcError::SlotLost(format!(
            "replication slot `{slot}` was invalidated ({text}). Set recreate_slot = true on \
             the source to create it again with a new snapshot"
        ))
    } else {
        CdcError::Transient(format!("replication: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::setup::ColumnInfo;

    fn table() -> TableInfo {
        TableInfo {
            schema: "public".into(),
            name: "orders".into(),
            oid: 1,
            key_columns: vec!["tenant".into(), "id".into()],
            columns: vec![
                ColumnInfo {
                    name: "tenant".into(),
                    type_oid: 25,
                    type_name: "text".into(),
                },
                ColumnInfo {
                    name: "id".into(),
                    type_oid: 20,
                    type_name: "bigint".into(),
                },
                ColumnInfo {
                    name: "note".into(),
                    type_oid: 25,
                    type_name: "text".into(),
                },
            ],
        }
    }

    #[test]
    fn the_first_chunk_starts_at_the_beginning_in_key_order() {
        let (sql, params) = chunk_query(&table(), None, 1024);
        assert_eq!(
            sql,
            "SELECT \"tenant\"::text, \"id\"::text, \"note\"::text FROM \"public\".\"orders\" \
             AS src ORDER BY src.\"tenant\", src.\"id\" LIMIT 1024"
        );
        assert!(params.is_empty());
    }

    #[test]
    fn a_later_chunk_starts_after_the_last_key_with_typed_comparisons() {
        let after = vec!["acme".to_string(), "42".to_string()];
        let (sql, params) = chunk_query(&table(), Some(&after), 10);
        assert!(
            sql.ends_with(
                "WHERE (src.\"tenant\", src.\"id\") > ($1::text::text, $2::text::bigint) \
                 ORDER BY src.\"tenant\", src.\"id\" LIMIT 10"
            ),
            "{sql}"
        );
        assert_eq!(params, after);
    }
}
