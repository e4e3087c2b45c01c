//! The running source: one replication session at a time, reconnecting with backoff,
//! turning pgoutput changes into events with increasing positions, and confirming the
//! slot's flush LSN only up to fully acknowledged commits.
//!
//! Positions: every event gets the next `u64` position of this process. The runtime's
//! reader tracks them and sends back the low watermark (everything below is complete).
//! Next to the events the task keeps a queue of [`Action`]s keyed by position — "when
//! everything below position P is complete, confirm LSN L" (a commit, or an idle
//! keepalive) and "... store this snapshot progress". So the slot never moves past an
//! event that is not acknowledged, and snapshot progress never runs ahead either (the
//! checkpoint rule of `docs/design.md`, "Delivery contract").
//!
//! Snapshots run while streaming goes on (the watermark algorithm of DBLog): for each
//! chunk the task writes a low watermark into the WAL (a non-transactional logical
//! message), selects the next rows of the table in key order, writes a high watermark,
//! and — reading the stream — drops from the chunk every row that a change between the
//! two watermarks touched (the stream carries a newer state of it). At the high
//! watermark the rest of the chunk is emitted, so a row changed during a snapshot always
//! ends with its newest state last.
//!
//! The parts:
//! * this module: the public handle, the [`Task`] with its [`Positions`] (events out,
//!   completions in, the action queue) and the reconnect loop;
//! * [`session`]: one replication session — pgoutput changes to events, schema changes,
//!   slot lag;
//! * [`snapshot`]: snapshot chunks between their watermarks, and snapshot progress;
//! * [`spill`]: large transactions streamed before their commit, held in memory or in a
//!   spill file until it.

mod session;
mod snapshot;
mod spill;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use switchyard_config::PostgresCdcSourceConfig;
use switchyard_connector::Backoff;
use switchyard_event::Event;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::Client;
use tracing::{debug, error, info, warn};

use crate::change;
use crate::leader::{self, Lease};
use crate::pgoutput::Relation;
use crate::replication::FeedbackHandle;
use crate::setup::{self, CdcError, TableInfo};
use crate::state::StateFile;
use crate::values::TypeRegistry;

use self::session::SessionEnd;
pub use self::snapshot::SnapshotAction;
use self::snapshot::{Progress, Snapshots};

/// The first pause before a reconnect; pauses double up to [`RECONNECT_MAX`] with
/// jitter (the project's one backoff, `switchyard_connector::Backoff`).
const RECONNECT_MIN: std::time::Duration = std::time::Duration::from_millis(200);
const RECONNECT_MAX: std::time::Duration = std::time::Duration::from_secs(30);
/// A session that lasted longer than this starts the backoff again from the first pause.
const RESET_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// Events buffered between the replication session and the pipeline reader.
const CHANNEL: usize = 4096;

/// What a running source shows in `switchyard cdc status` and in metrics.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StatusView {
    pub slot: String,
    /// `leader` (holds the slot's lock and reads it), `standby` (another instance holds
    /// it; retried every `standby_retry`) or `starting` (the lock was not tried yet, or
    /// the database did not answer).
    pub role: &'static str,
    /// The advisory lock key of the slot (0 until known), to find the holder in
    /// `pg_locks`.
    pub lock_key: i64,
    pub connected: bool,
    /// The LSN last confirmed to the server (everything before it is acknowledged).
    pub confirmed_lsn: String,
    /// WAL the slot holds back on the server (from its restart LSN), in bytes.
    pub slot_lag_bytes: i64,
    pub events: u64,
    /// Large transactions Postgres streams before their commit, held until it.
    pub streaming_transactions: usize,
    /// Bytes of them held in memory (bounded; the rest is in spill files).
    pub streaming_buffered_bytes: usize,
    /// Bytes written to spill files since the start.
    pub spilled_bytes: u64,
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
    /// `pending`, `running`, `paused`, `cancelled`, `done`.
    pub state: &'static str,
    /// Rows emitted so far (acknowledged ones are stored as progress).
    pub rows_emitted: u64,
    pub rows_acknowledged: u64,
    /// Rows the planner expects the snapshot to read.
    pub rows_estimate: Option<u64>,
    /// Rows acknowledged per second since this process started reading the table.
    pub rows_per_second: Option<u64>,
    /// Seconds left at that rate.
    pub eta_seconds: Option<u64>,
    /// The condition of a filtered backfill.
    pub filter: Option<String>,
    /// Why the snapshot paused on its own (the server refused a chunk).
    pub error: Option<String>,
}

/// [`StatusView::role`] values.
pub const ROLE_LEADER: &str = "leader";
pub const ROLE_STANDBY: &str = "standby";
pub const ROLE_STARTING: &str = "starting";

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
    /// Start (again, from its start), pause, resume or cancel the snapshot of `table`
    /// (`schema.table`).
    Snapshot {
        table: String,
        action: SnapshotAction,
        reply: oneshot::Sender<Result<(), String>>,
    },
}

/// An event as the stream hands it to the feed: its leadership term, its position, the
/// event; or why the source stopped for good.
pub type Sent = Result<(u64, u64, Event), String>;

/// The runtime's side of a running source.
pub struct CdcHandle {
    /// Events with their terms and positions, in order; closed when the source stopped
    /// for good.
    pub events: mpsc::Receiver<Sent>,
    /// The current leadership term: bumped whenever this instance loses the slot's lock.
    /// Events of an older term still queued are dropped by the feed, never reported
    /// complete: nothing from them on is confirmed, and the slot sends them again to
    /// whichever instance leads next.
    pub term: Arc<AtomicU64>,
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
    // Checked here so a bad dsn stops the start; each session parses it again (a
    // replaced CA file is read again).
    crate::tls::Target::parse(&cfg.dsn)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    let term = Arc::new(AtomicU64::new(0));
    let (complete_tx, complete_rx) = watch::channel(0);
    let (cmd_tx, cmd_rx) = mpsc::channel(8);
    let status = Arc::new(Status::default());
    status.update(|s| {
        s.slot = cfg.slot.clone();
        s.role = ROLE_STARTING;
    });
    let mut task = Task {
        source: source.to_owned(),
        cfg,
        commands: cmd_rx,
        status: status.clone(),
        positions: Positions {
            tx,
            term: term.clone(),
            fresh: None,
            complete: complete_rx,
            next: 0,
            actions: VecDeque::new(),
            confirmed: 0,
            emitted_upto: 0,
        },
        catalog: Catalog::default(),
        snapshots: Snapshots::new(state_file, stored),
        streams: spill::Streams::new(state_dir.join("spill")),
        sql: None,
        snapshot_clients: Vec::new(),
        encoder: change::ChangeEncoder::new(),
        replication_options: setup::SESSION_OPTIONS.to_owned(),
        fence: None,
        other_leader_seen: false,
        progress_term: None,
    };
    // Only the leader sets up the database: a standby checks nothing until it leads.
    let lease = match task.try_lead().await {
        Ok(lease) => lease,
        Err(e) if !e.is_transient() => return Err(e),
        Err(e) => {
            warn!(source, error = %e, "postgres is not reachable yet; retrying in the background");
            task.status.update(|s| s.last_error = Some(e.to_string()));
            None
        }
    };
    if lease.is_some() {
        match task.prepare().await {
            Ok(()) => {}
            Err(e) if e.is_transient() => {
                warn!(source, error = %e, "postgres is not reachable yet; retrying in the background");
                task.status.update(|s| s.last_error = Some(e.to_string()));
            }
            Err(e) => return Err(e),
        }
    }
    tokio::spawn(task.run(lease));
    Ok(CdcHandle {
        events: rx,
        term,
        complete: complete_tx,
        status,
        commands: cmd_tx,
    })
}

/// Done when everything below `position` is complete.
enum Action {
    Confirm(u64),
    Progress(Progress),
}

/// The events' way out and the completions' way back: positions handed out, the actions
/// waiting for them, and the LSNs confirmed and emitted so far.
struct Positions {
    tx: mpsc::Sender<Sent>,
    /// The leadership term the events sent now belong to (shared with the feed).
    term: Arc<AtomicU64>,
    /// The lease's last answered check, while leading: nothing is sent once it is stale.
    fresh: Option<leader::Freshness>,
    /// The reader's low watermark.
    complete: watch::Receiver<u64>,
    /// The position of the next event.
    next: u64,
    actions: VecDeque<(u64, Action)>,
    /// The LSN last confirmed to the server.
    confirmed: u64,
    /// End LSN of the last transaction emitted in full by this process.
    emitted_upto: u64,
}

/// Actions whose positions are complete, in their order.
struct Due {
    /// The last confirmation among them.
    confirm: Option<u64>,
    progress: Vec<Progress>,
}

impl Positions {
    /// Records "when every position below the next one is complete, do `action`".
    fn push_action(&mut self, action: Action) {
        let position = self.next;
        if let (Action::Confirm(lsn), Some((p, Action::Confirm(last)))) =
            (&action, self.actions.back_mut())
            && *p == position
        {
            *last = (*last).max(*lsn);
            return;
        }
        self.actions.push_back((position, action));
    }

    /// Hands `event` to the reader with the next position; `Err` when the reader is gone.
    ///
    /// Cancel-safe: the position is taken only once the channel has room, so a session
    /// dropped while waiting (its leadership lost) leaves no gap in the positions.
    ///
    /// Nothing is sent once the leader lock's last answered check is older than
    /// `leader_release − leader_check` (checked after waiting for room, too): the session
    /// ends, and the lease counts as lost.
    async fn send(&mut self, event: Event) -> Result<(), SessionEnd> {
        self.check_fresh()?;
        let permit = self.tx.reserve().await.map_err(|_| SessionEnd::Closed)?;
        self.check_fresh()?;
        let position = self.next;
        self.next += 1;
        permit.send(Ok((self.term.load(Ordering::Acquire), position, event)));
        Ok(())
    }

    fn check_fresh(&self) -> Result<(), SessionEnd> {
        match self.fresh.as_ref().map(leader::Freshness::check) {
            Some(Err(age)) => Err(SessionEnd::Error(CdcError::Transient(format!(
                "the leader lock was last confirmed {age:?} ago: stopped sending until it is \
                 confirmed again"
            )))),
            _ => Ok(()),
        }
    }

    /// The leadership was lost: a new term starts. Events of the old term still queued
    /// are dropped by the feed and never complete, so nothing waiting for them is done
    /// (no confirmation, no snapshot progress); transactions they held are read again
    /// rather than skipped as emitted.
    fn depose(&mut self) {
        self.term.fetch_add(1, Ordering::AcqRel);
        self.fresh = None;
        self.actions.clear();
        self.emitted_upto = 0;
    }

    /// Takes every action whose position is complete by now.
    fn take_due(&mut self) -> Due {
        let low = *self.complete.borrow_and_update();
        let mut due = Due {
            confirm: None,
            progress: Vec::new(),
        };
        while let Some((p, _)) = self.actions.front() {
            if *p > low {
                break;
            }
            let (_, action) = self.actions.pop_front().expect("front exists");
            match action {
                Action::Confirm(lsn) => due.confirm = Some(lsn),
                Action::Progress(progress) => due.progress.push(progress),
            }
        }
        due
    }
}

/// What the source knows of the database's tables and types.
#[derive(Default)]
struct Catalog {
    /// Captured tables by `schema.table`.
    tables: HashMap<String, TableInfo>,
    types: TypeRegistry,
    /// Relation as last seen per table, to tell schema changes.
    known_schemas: HashMap<u32, KnownRelation>,
    /// Tables of the publication that could not be captured (logged once).
    refused: std::collections::HashSet<String>,
}

/// A relation as last seen, with its `schema.table` worked out once rather than per row.
struct KnownRelation {
    relation: Relation,
    table: String,
}

struct Task {
    source: String,
    cfg: PostgresCdcSourceConfig,
    commands: mpsc::Receiver<Command>,
    status: Arc<Status>,
    positions: Positions,
    catalog: Catalog,
    snapshots: Snapshots,
    /// Large transactions streamed before their commit.
    streams: spill::Streams,
    /// Connection for ordinary SQL (snapshots, watermarks, lag).
    sql: Option<Client>,
    /// More connections for the ranges of a chunk read at once (`snapshot_parallel`).
    snapshot_clients: Vec<Client>,
    /// Writes the events of row changes, reusing its buffers from row to row.
    encoder: change::ChangeEncoder,
    /// Backend options of the replication session (with the leader's timeouts).
    replication_options: String,
    /// The leader lock held (key and holder), while leading.
    fence: Option<crate::state::Fence>,
    /// This process saw another instance hold the lock (or lost it itself): its local
    /// snapshot progress may be older than the slot's stream.
    other_leader_seen: bool,
    /// The term whose snapshot progress was taken up already (a reconnect inside one term
    /// keeps it).
    progress_term: Option<u64>,
}

impl Task {
    /// Runs set-up and loads the snapshot plan.
    async fn prepare(&mut self) -> Result<(), CdcError> {
        self.share_state().await?;
        let create = !self.snapshots.had_state || self.cfg.recreate_slot;
        let prepared = setup::prepare(&self.source, &self.cfg, create, self.cfg.recreate_slot)
            .await
            .map_err(|e| match e {
                CdcError::SlotMissing(msg) => CdcError::SlotLost(format!(
                    "{msg}; it existed before (see switchyard.cdc_state in the database, or {}): changes made while it was gone are \
                     lost. Set recreate_slot = true on sources.{} to create it again and take \
                     a new snapshot",
                    self.snapshots.file.path().display(),
                    self.source
                )),
                other => other,
            })?;
        self.catalog.types = prepared.types;
        self.catalog.tables = prepared
            .tables
            .into_iter()
            .map(|t| (t.qualified(), t))
            .collect();
        self.snapshots
            .plan(&self.cfg, prepared.slot_created, &self.catalog.tables)
            .await?;
        self.positions.confirmed = self.positions.confirmed.max(prepared.confirmed_flush);
        let confirmed = self.positions.confirmed;
        self.status
            .update(|s| s.confirmed_lsn = change::lsn_string(confirmed));
        self.snapshots.publish(&self.status);
        Ok(())
    }

    /// Takes up the snapshot progress the database keeps for the slot (the last leader's,
    /// which may be this instance's own) and keeps writing it there while leading.
    /// Without the privilege to create or use the `switchyard` schema (SQLSTATE 42501)
    /// the progress stays local, with a warning that gives the SQL to share it; any other
    /// failure (a lost connection) is retried.
    async fn share_state(&mut self) -> Result<(), CdcError> {
        use crate::state::Access;
        self.snapshots.shared = None;
        let Some(fence) = self.fence else {
            return Ok(());
        };
        let client = setup::connect(&self.cfg.dsn).await?;
        let denied = match crate::state::ensure_table(&client).await? {
            Access::Denied(why) => Some(why),
            Access::Granted(()) => {
                match crate::state::load_shared(&client, &self.cfg.slot).await? {
                    Access::Denied(why) => Some(why),
                    Access::Granted(shared) => {
                        if let Some(shared) = shared {
                            self.snapshots.adopt(shared);
                        }
                        None
                    }
                }
            }
        };
        let term = self.positions.term.load(Ordering::Acquire);
        let new_term = self.progress_term.replace(term) != Some(term);
        if let Some(why) = denied {
            if new_term && self.other_leader_seen {
                // Another instance may have led since this one stored its progress (and
                // started a table over, or left it undone): the local copy could skip rows.
                warn!(source = %self.source,
                    "snapshot progress is kept locally only, and another instance may have \
                     led since it was stored: snapshots of this slot start again from their \
                     start");
                self.snapshots.forget_progress();
            }
            let user: String = client
                .query_one("SELECT current_user::text", &[])
                .await
                .map_err(|e| setup::transient("reading the user's name", e))?
                .get(0);
            warn!(source = %self.source, error = %why,
                "cannot use the switchyard schema in the source database: snapshot progress \
                 stays in this instance's data directory, and another instance taking over \
                 takes the snapshot again from its start. Run once as a user who may: {}",
                crate::state::grant_sql(&user));
            return Ok(());
        }
        self.snapshots.shared = Some(snapshot::SharedState {
            client: tokio::sync::Mutex::new(client),
            dsn: self.cfg.dsn.clone(),
            fence,
            timeout: self.cfg.leader_release,
        });
        Ok(())
    }

    /// Sessions one after another, with a backoff between them, until the runtime goes
    /// away or a problem the user must fix stops the source. Every session runs under
    /// the slot's leader lock: without it the source waits as a standby.
    async fn run(mut self, mut lease: Option<Lease>) {
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        let mut prepared = lease.is_some() && !self.catalog.tables.is_empty();
        loop {
            if lease.as_ref().is_none_or(Lease::is_lost) {
                if lease.take().is_some() {
                    self.positions.depose();
                    self.other_leader_seen = true;
                    prepared = false;
                }
                lease = match self.standby().await {
                    Some(l) => Some(l),
                    None => return,
                };
            }
            let held = lease.as_mut().expect("leading");
            self.positions.fresh = Some(held.freshness());
            if !prepared {
                let result = tokio::select! {
                    result = self.prepare() => result,
                    why = held.lost() => Err(lost(&self.cfg.slot, &why)),
                };
                match result {
                    Ok(()) => {}
                    Err(e) if e.is_transient() => {
                        self.note_error(&e);
                        if !lease.as_ref().is_some_and(Lease::is_lost)
                            && self.pause(&mut backoff).await
                        {
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
            // The replication connection lives inside the session: a lost lock drops it
            // at once, whatever the session was waiting for.
            let end = tokio::select! {
                end = self.session() => end,
                why = held.lost() => SessionEnd::Error(lost(&self.cfg.slot, &why)),
            };
            match end {
                SessionEnd::Closed => return,
                SessionEnd::Error(e) if e.is_transient() => {
                    self.note_error(&e);
                    self.status.update(|s| {
                        s.connected = false;
                        s.reconnects += 1;
                    });
                    if started.elapsed() > RESET_AFTER {
                        backoff.reset();
                    }
                    // A lost session loses its open snapshot window; the chunk is redone.
                    self.snapshots.window = None;
                    self.sql = None;
                    self.snapshot_clients.clear();
                    prepared = false;
                    if lease.as_ref().is_some_and(Lease::is_lost) {
                        // Straight back to standby: another instance may lead by now.
                        continue;
                    }
                    // The last leader's walsender has not ended yet (the server frees the
                    // slot within `leader_release`): try again soon, not after a long
                    // backoff.
                    let gone = if slot_busy(&e) {
                        self.wait(self.cfg.standby_retry).await
                    } else {
                        self.pause(&mut backoff).await
                    };
                    if gone {
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

    /// Tries once to take the slot's leader lock: `None` when another instance holds it.
    async fn try_lead(&mut self) -> Result<Option<Lease>, CdcError> {
        let timings = leader::Timings {
            check: self.cfg.leader_check,
            release: self.cfg.leader_release,
        };
        match Lease::try_take(&self.cfg.dsn, &self.cfg.slot, timings).await? {
            Ok(lease) => {
                info!(source = %self.source, slot = %self.cfg.slot, lock_key = lease.key,
                    "leader: this instance holds the slot's lock and reads it");
                self.replication_options = replication_options(&self.cfg, lease.server_version);
                self.fence = Some(crate::state::Fence {
                    key: lease.key,
                    holder: lease.holder,
                });
                let key = lease.key;
                self.status.update(|s| {
                    s.role = ROLE_LEADER;
                    s.lock_key = key;
                    s.last_error = None;
                });
                Ok(Some(lease))
            }
            Err(held) => {
                self.other_leader_seen = true;
                let was = self.status.view().role;
                if was != ROLE_STANDBY {
                    info!(source = %self.source, slot = %self.cfg.slot, lock_key = held.key,
                        "standby: another instance holds the slot's lock; trying again every {:?}",
                        self.cfg.standby_retry);
                }
                self.status.update(|s| {
                    s.role = ROLE_STANDBY;
                    s.lock_key = held.key;
                    s.connected = false;
                });
                Ok(None)
            }
        }
    }

    /// Waits as a standby until this instance holds the slot's lock; `None` when the
    /// runtime went away meanwhile.
    async fn standby(&mut self) -> Option<Lease> {
        // Progress is the next leader's to write now.
        self.fence = None;
        self.snapshots.shared = None;
        self.status.update(|s| {
            s.connected = false;
            if s.role == ROLE_LEADER {
                s.role = ROLE_STANDBY;
            }
        });
        // A database that does not answer is retried with the backoff, a lock held by
        // another instance every `standby_retry`.
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        loop {
            self.refuse_queued_commands();
            let delay = match self.try_lead().await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => {
                    backoff.reset();
                    self.cfg.standby_retry
                }
                Err(e) => {
                    self.note_error(&e);
                    backoff.next_delay().max(self.cfg.standby_retry)
                }
            };
            if self.wait(delay).await {
                return None;
            }
        }
    }

    /// The answer to a command sent to an instance that does not lead.
    fn not_leading(&self) -> String {
        format!(
            "standby: this instance does not read slot `{}`; send it to the leader (the \
             instance whose /readyz is 200)",
            self.cfg.slot
        )
    }

    /// Answers every command waiting, without leading: they are not kept for later.
    fn refuse_queued_commands(&mut self) {
        while let Ok(cmd) = self.commands.try_recv() {
            self.refuse(cmd);
        }
    }

    fn refuse(&self, cmd: Command) {
        match cmd {
            Command::Snapshot { reply, .. } => {
                let _ = reply.send(Err(self.not_leading()));
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
        let _ = self.positions.tx.send(Err(e.to_string())).await;
    }

    /// Waits the next backoff pause, applying completions meanwhile; true when the
    /// runtime went away.
    async fn pause(&mut self, backoff: &mut Backoff) -> bool {
        self.wait(backoff.next_delay()).await
    }

    /// Waits `delay`, applying completions meanwhile; true when the runtime went away.
    /// Without the leader lock, commands are answered at once that this instance does
    /// not lead.
    async fn wait(&mut self, delay: std::time::Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            let leading = self.fence.is_some();
            tokio::select! {
                _ = &mut sleep => return self.positions.tx.is_closed(),
                Some(cmd) = self.commands.recv(), if !leading => self.refuse(cmd),
                changed = self.positions.complete.changed() => {
                    if changed.is_err() {
                        return true;
                    }
                    self.apply_completions(None).await;
                }
            }
        }
    }

    /// The connection for ordinary SQL, connected again when it was lost.
    async fn sql(&mut self) -> Result<&Client, CdcError> {
        if self.sql.as_ref().is_none_or(Client::is_closed) {
            self.sql = Some(setup::connect(&self.cfg.dsn).await?);
        }
        Ok(self.sql.as_ref().expect("just connected"))
    }

    /// Hands `event` to the reader with the next position.
    async fn emit(&mut self, event: Event) -> Result<(), SessionEnd> {
        self.positions.send(event).await?;
        self.status.update(|s| s.events += 1);
        Ok(())
    }

    /// Applies every action whose position is now complete.
    async fn apply_completions(&mut self, client: Option<&FeedbackHandle>) {
        let due = self.positions.take_due();
        if self.snapshots.acknowledge(&self.source, due.progress) {
            if let Err(e) = self.snapshots.store().await {
                error!(source = %self.source, error = %e, "cannot store snapshot progress; it is retried with the next chunk");
            }
            self.snapshots.publish(&self.status);
        }
        if let Some(lsn) = due.confirm
            && lsn > self.positions.confirmed
        {
            self.positions.confirmed = lsn;
            if let Some(c) = client {
                c.acknowledge(lsn);
            }
            self.status
                .update(|s| s.confirmed_lsn = change::lsn_string(lsn));
            debug!(source = %self.source, lsn = %change::lsn_string(lsn), "confirmed");
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Snapshot {
                table,
                action,
                reply,
            } => {
                let table = if table.contains('.') {
                    table
                } else {
                    format!("public.{table}")
                };
                if !self.catalog.tables.contains_key(&table) {
                    let mut known: Vec<&String> = self.catalog.tables.keys().collect();
                    known.sort();
                    let _ = reply.send(Err(format!(
                        "table {table} is not captured by source {}; its tables: {known:?}",
                        self.source
                    )));
                    return;
                }
                let result = match action {
                    SnapshotAction::Start { filter } => self.start_snapshot(&table, filter).await,
                    other => self.snapshots.control(&table, &other).await,
                };
                if result.is_ok() {
                    info!(source = %self.source, %table, "snapshot request done");
                }
                self.snapshots.publish(&self.status);
                let _ = reply.send(result);
            }
        }
    }

    /// Starts the snapshot of `table` over, of the rows matching `filter` when given:
    /// the condition is checked, and tried by the planner, first.
    async fn start_snapshot(&mut self, table: &str, filter: Option<String>) -> Result<(), String> {
        if let Some(filter) = &filter {
            snapshot::check_filter(filter).map_err(|e| format!("--where {filter:?}: {e}"))?;
            let info = self
                .catalog
                .tables
                .get(table)
                .cloned()
                .ok_or("table gone")?;
            let client = self.sql().await.map_err(|e| e.to_string())?;
            let sql = format!(
                "EXPLAIN SELECT 1 FROM {} AS src WHERE ({filter})",
                info.sql_name()
            );
            let tried = async {
                client.batch_execute("BEGIN READ ONLY").await?;
                let r = client.query(&sql, &[]).await;
                client.batch_execute("ROLLBACK").await?;
                r
            }
            .await;
            if let Err(e) = tried {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(format!(
                    "--where {filter:?} is not a condition on {table}: {}",
                    setup::describe(&e)
                ));
            }
        }
        self.snapshots
            .restart(table, filter)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The slot is still read by another session (`object_in_use`, SQLSTATE 55006: the last
/// leader's walsender has not ended yet). Replication errors read `SEVERITY CODE:
/// message`; servers in another language word the message differently, the code is
/// the same.
fn slot_busy(e: &CdcError) -> bool {
    let text = e.to_string();
    text.contains(" 55006:") || text.contains("is active for PID")
}

/// The error that ends a session whose leadership was lost.
fn lost(slot: &str, why: &str) -> CdcError {
    CdcError::Transient(format!(
        "lost the leader lock of slot `{slot}` ({why}); stopped reading, back to standby"
    ))
}

/// Backend options of the replication session: the output settings, and (Postgres 12
/// and later, where a session may set it) a `wal_sender_timeout` of `leader_release`, so
/// that the server ends the session of a leader cut off from it — and frees the slot for
/// the next leader — as soon as it frees the lock.
fn replication_options(cfg: &PostgresCdcSourceConfig, server_version: u32) -> String {
    if server_version >= 120_000 {
        format!(
            "{} -c wal_sender_timeout={}",
            setup::SESSION_OPTIONS,
            cfg.leader_release.as_millis()
        )
    } else {
        setup::SESSION_OPTIONS.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions() -> (Positions, mpsc::Receiver<Sent>) {
        let (tx, rx) = mpsc::channel(16);
        let (_, complete) = watch::channel(0);
        let positions = Positions {
            tx,
            term: Arc::new(AtomicU64::new(0)),
            fresh: None,
            complete,
            next: 0,
            actions: VecDeque::new(),
            confirmed: 0,
            emitted_upto: 0,
        };
        (positions, rx)
    }

    fn event() -> Event {
        change::event("db", 1, 0, "insert", None, &serde_json::json!({}), 0)
    }

    #[tokio::test]
    async fn a_lost_lease_starts_a_new_term_and_forgets_what_waited_for_the_old_one() {
        let (mut positions, mut rx) = positions();
        positions.send(event()).await.ok().unwrap();
        positions.emitted_upto = 100;
        positions.push_action(Action::Confirm(100));
        positions.depose();
        assert!(
            positions.actions.is_empty(),
            "a confirmation of the old term is kept"
        );
        assert_eq!(
            positions.emitted_upto, 0,
            "the old term's transactions would be skipped"
        );
        positions.send(event()).await.ok().unwrap();
        let first = rx.recv().await.unwrap().unwrap();
        let second = rx.recv().await.unwrap().unwrap();
        assert_eq!((first.0, first.1), (0, 0));
        assert_eq!((second.0, second.1), (1, 1));
    }

    #[tokio::test]
    async fn nothing_is_sent_on_a_stale_lease() {
        let (mut positions, mut rx) = positions();
        let long_ago = Instant::now()
            .checked_sub(std::time::Duration::from_secs(10))
            .unwrap();
        positions.fresh = Some(leader::Freshness::at(
            long_ago,
            std::time::Duration::from_secs(4),
        ));
        let sent = positions.send(event()).await;
        assert!(
            matches!(&sent, Err(SessionEnd::Error(e)) if e.is_transient()),
            "an event was sent on a stale lease"
        );
        assert_eq!(positions.next, 0, "a position was taken");
        assert!(rx.try_recv().is_err());
        positions.fresh = Some(leader::Freshness::at(
            Instant::now(),
            std::time::Duration::from_secs(4),
        ));
        positions.send(event()).await.ok().unwrap();
        assert_eq!(rx.try_recv().unwrap().unwrap().1, 0);
    }

    #[test]
    fn a_busy_slot_is_told_by_its_sqlstate_in_any_language() {
        let english = CdcError::Transient(
            "replication: ERROR 55006: replication slot \"s\" is active for PID 42".into(),
        );
        let german = CdcError::Transient(
            "replication: FEHLER 55006: Replikations-Slot »s« ist aktiv für PID 42".into(),
        );
        assert!(slot_busy(&english));
        assert!(slot_busy(&german));
        assert!(!slot_busy(&CdcError::Transient(
            "replication: ERROR 57P01: terminating connection".into()
        )));
    }
}
