//! Snapshots while streaming goes on: chunks between a low and a high watermark (see the
//! parent module), the cursor of each table, and the progress kept in the state file
//! once the rows before it are acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};
use switchyard_config::{PostgresCdcSourceConfig, SnapshotMode};
use tracing::{debug, info, warn};

use super::{Action, SessionEnd, SnapshotStatus, Status, Task};
use crate::change;
use crate::change::KeySpec;
use crate::setup::{CdcError, TableInfo, describe, quote_ident};
use crate::state::{State, StateFile, TableProgress};

/// Prefix of the logical messages that mark snapshot windows.
pub(super) const WATERMARK_PREFIX: &str = "switchyard.snapshot";

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
    /// Blocks per chunk of a table read by blocks, adjusted to about `snapshot_chunk` rows.
    blocks: u64,
    /// Only rows for which this SQL condition holds (a filtered backfill).
    filter: Option<String>,
    paused: bool,
    cancelled: bool,
    /// Rows the table (or the filter) is expected to have, from the planner.
    estimate: Option<u64>,
    /// When this process started reading the table, and the rows acknowledged then:
    /// the rate and the time left are measured from there.
    started: Option<(std::time::Instant, u64)>,
    /// Why the snapshot stopped on its own (the server refused a chunk).
    error: Option<String>,
}

impl Cursor {
    /// Whether a chunk of the table is to be read now.
    fn wants_chunk(&self) -> bool {
        !self.done && !self.paused && !self.cancelled
    }

    /// Rows acknowledged per second since this process started reading the table.
    fn rate(&self) -> Option<f64> {
        let (at, rows) = self.started?;
        let secs = at.elapsed().as_secs_f64();
        let done = self.rows_acknowledged.saturating_sub(rows);
        (secs >= 1.0 && done > 0).then(|| done as f64 / secs)
    }
}

/// What a user asks of a table's snapshot.
#[derive(Clone, Debug)]
pub enum SnapshotAction {
    /// Take it (again) from its start; only rows matching `filter` when given.
    Start {
        filter: Option<String>,
    },
    Pause,
    Resume,
    Cancel,
}

/// One chunk between its watermarks.
pub(super) struct Window {
    id: String,
    table: String,
    generation: u64,
    /// The low watermark was seen in the stream: changes now remove rows.
    open: bool,
    /// Rows by their key's JSON text, in key order.
    rows: Vec<(String, Value, Map<String, Value>)>,
    /// Keys (JSON text) of the rows changed while the window was open.
    removed: HashSet<Vec<u8>>,
    /// Rows of a table without a key, by the JSON of the whole row, that changes the
    /// chunk's select did not see replaced: a chunk holding one is read again.
    stale: HashSet<Vec<u8>>,
    last_key: Option<Vec<String>>,
    /// The chunk was shorter than asked: the table ends with it.
    last: bool,
    /// The transactions the chunk's select saw.
    seen: Visibility,
}

/// Which transactions a snapshot sees (`txid_current_snapshot()`: `xmin:xmax:xip,…`),
/// by the 32-bit ids the replication stream carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Visibility {
    xmax: u32,
    in_progress: Vec<u32>,
    /// Parsed; an unreadable snapshot makes no transaction invisible.
    known: bool,
}

impl Visibility {
    pub(crate) fn parse(text: &str) -> Self {
        let mut parts = text.split(':');
        let (Some(_xmin), Some(xmax), Some(xip)) = (parts.next(), parts.next(), parts.next())
        else {
            return Self::default();
        };
        let low = |x: &str| x.parse::<u64>().ok().map(|x| x as u32);
        let Some(xmax) = low(xmax) else {
            return Self::default();
        };
        Self {
            xmax,
            in_progress: xip.split(',').filter_map(low).collect(),
            known: true,
        }
    }

    /// The snapshot did not see transaction `xid`'s changes (it was running, or had
    /// not started, when the snapshot was taken).
    pub(crate) fn is_invisible(&self, xid: u32) -> bool {
        self.known && ((xid.wrapping_sub(self.xmax) as i32) >= 0 || self.in_progress.contains(&xid))
    }
}

/// The database's copy of the snapshot progress: a connection of its own (connected
/// again when it was lost), and the lock that allows writing it.
pub(super) struct SharedState {
    pub(super) client: tokio::sync::Mutex<tokio_postgres::Client>,
    pub(super) dsn: String,
    pub(super) fence: crate::state::Fence,
    /// Bound of a write (a database that stopped answering must not hold the source).
    pub(super) timeout: std::time::Duration,
}

impl SharedState {
    /// Stores `state`, on a new connection when the last one was closed.
    async fn store(&self, state: &State) -> Result<(), String> {
        let mut client = self.client.lock().await;
        if client.is_closed() {
            *client = crate::setup::connect(&self.dsn)
                .await
                .map_err(|e| e.to_string())?;
        }
        crate::state::store_shared(&client, state, self.fence).await
    }
}

/// Snapshot progress of a table to store once every event before it is complete.
pub(super) struct Progress {
    table: String,
    generation: u64,
    progress: TableProgress,
}

/// The snapshots of one source: what the state file holds, where each table is, and the
/// chunk between its watermarks.
pub(super) struct Snapshots {
    pub(super) file: StateFile,
    /// The copy in the source database, while this instance leads.
    pub(super) shared: Option<SharedState>,
    state: State,
    /// A state file existed at start: the slot is expected to exist.
    pub(super) had_state: bool,
    cursors: BTreeMap<String, Cursor>,
    /// The last generation handed to a cursor: only ever grows, so progress of an
    /// earlier pass never matches a later one.
    generations: u64,
    /// The open chunk; a lost session drops it and the chunk is redone.
    pub(super) window: Option<Window>,
    window_seq: u64,
}

impl Snapshots {
    /// Snapshots from the state stored by an earlier run (`None`: none was).
    pub(super) fn new(file: StateFile, stored: Option<State>) -> Self {
        Self {
            file,
            shared: None,
            had_state: stored.is_some(),
            state: stored.unwrap_or_default(),
            cursors: BTreeMap::new(),
            generations: 0,
            window: None,
            window_seq: 0,
        }
    }

    /// After set-up: starts over when the slot is new, plans the tables (all of them with
    /// `snapshot = "initial"`), stores the state and takes up each table where it was.
    pub(super) async fn plan(
        &mut self,
        cfg: &PostgresCdcSourceConfig,
        slot_created: bool,
        tables: &HashMap<String, TableInfo>,
    ) -> Result<(), CdcError> {
        if slot_created {
            // A new slot is a new stream: whatever was snapshotted before is stale.
            self.state = State {
                slot: cfg.slot.clone(),
                snapshots: BTreeMap::new(),
            };
        }
        self.state.slot = cfg.slot.clone();
        if cfg.snapshot == SnapshotMode::Initial {
            for table in tables.keys() {
                self.state.snapshots.entry(table.clone()).or_default();
            }
        }
        self.store().await?;
        self.had_state = true;
        // Cursors start again from the stored progress with a new generation: progress
        // of chunks read before (acknowledged from now on) is not stored over it.
        self.generations += 1;
        let generation = self.generations;
        self.cursors = self
            .state
            .snapshots
            .iter()
            .filter(|(t, _)| tables.contains_key(*t))
            .map(|(t, p)| {
                (
                    t.clone(),
                    Cursor {
                        after: p.after.clone(),
                        done: p.done,
                        generation,
                        rows_emitted: p.rows,
                        rows_acknowledged: p.rows,
                        blocks: FIRST_BLOCKS,
                        filter: p.filter.clone(),
                        paused: p.paused,
                        cancelled: p.cancelled,
                        estimate: None,
                        started: None,
                        error: None,
                    },
                )
            })
            .collect();
        Ok(())
    }

    /// Takes up the progress stored in the source database (by whichever instance led
    /// before): it replaces this instance's own.
    pub(super) fn adopt(&mut self, shared: State) {
        self.state = shared;
        self.had_state = true;
    }

    /// Forgets the progress of every table (kept locally only, it may be stale): the
    /// next plan takes the snapshots again from their start.
    pub(super) fn forget_progress(&mut self) {
        self.state.snapshots.clear();
    }

    /// Writes the state file, and the database's copy while leading.
    pub(super) async fn store(&self) -> Result<(), CdcError> {
        let state = self.state.clone();
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || file.store(&state))
            .await
            .expect("state store task")
            .map_err(|e| {
                CdcError::Config(format!("cannot store {}: {e}", self.file.path().display()))
            })?;
        if let Some(shared) = &self.shared {
            let stored = tokio::time::timeout(shared.timeout, shared.store(&self.state))
                .await
                .unwrap_or_else(|_| Err(format!("no answer within {:?}", shared.timeout)));
            stored.map_err(|e| {
                CdcError::Transient(format!(
                    "cannot store snapshot progress in the database: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// Takes the snapshot of `table` again from its start; stores the reset progress.
    pub(super) async fn restart(
        &mut self,
        table: &str,
        filter: Option<String>,
    ) -> Result<(), CdcError> {
        self.generations += 1;
        let cursor = self.cursors.entry(table.to_owned()).or_default();
        *cursor = Cursor {
            generation: self.generations,
            filter: filter.clone(),
            ..Cursor::default()
        };
        if self.window.as_ref().is_some_and(|w| w.table == table) {
            self.window = None;
        }
        self.state.snapshots.insert(
            table.to_owned(),
            TableProgress {
                filter,
                ..TableProgress::default()
            },
        );
        self.store().await
    }

    /// The server refused a chunk of `table`: its snapshot pauses (stored, so a restart
    /// does not run into the same refusal) with the reason shown in the status.
    pub(super) async fn fail(&mut self, table: &str, reason: String) -> Result<(), CdcError> {
        if let Some(cursor) = self.cursors.get_mut(table) {
            cursor.paused = true;
            cursor.error = Some(reason);
        }
        if self.window.as_ref().is_some_and(|w| w.table == table) {
            self.window = None;
        }
        self.state
            .snapshots
            .entry(table.to_owned())
            .or_default()
            .paused = true;
        self.store().await
    }

    /// Pauses, resumes or cancels the snapshot of `table`; stores the choice, so a
    /// restart keeps it. A chunk being read when the snapshot is cancelled is dropped.
    pub(super) async fn control(
        &mut self,
        table: &str,
        action: &SnapshotAction,
    ) -> Result<(), String> {
        let Some(cursor) = self.cursors.get_mut(table) else {
            return Err(format!(
                "table {table} has no snapshot to control; start one with `switchyard \
                 snapshot {table}`"
            ));
        };
        if cursor.done {
            return Err(format!("the snapshot of {table} is complete"));
        }
        match action {
            SnapshotAction::Pause => cursor.paused = true,
            SnapshotAction::Resume => {
                if cursor.cancelled {
                    return Err(format!(
                        "the snapshot of {table} was cancelled; start it again with \
                         `switchyard snapshot {table}`"
                    ));
                }
                cursor.paused = false;
                cursor.started = None;
                cursor.error = None;
            }
            SnapshotAction::Cancel => {
                cursor.cancelled = true;
                if self.window.as_ref().is_some_and(|w| w.table == table) {
                    self.window = None;
                }
            }
            SnapshotAction::Start { .. } => {}
        }
        let (paused, cancelled) = (cursor.paused, cursor.cancelled);
        let entry = self.state.snapshots.entry(table.to_owned()).or_default();
        entry.paused = paused;
        entry.cancelled = cancelled;
        self.store().await.map_err(|e| e.to_string())
    }

    /// Takes acknowledged progress into the state (not of a pass that was restarted since);
    /// true when the state file is to be written.
    pub(super) fn acknowledge(&mut self, source: &str, acknowledged: Vec<Progress>) -> bool {
        let mut store = false;
        for Progress {
            table,
            generation,
            progress,
        } in acknowledged
        {
            let Some(cursor) = self.cursors.get_mut(&table) else {
                continue;
            };
            if cursor.generation != generation {
                continue;
            }
            cursor.rows_acknowledged = progress.rows;
            // The user's choices since the chunk was read stand.
            let progress = TableProgress {
                filter: cursor.filter.clone(),
                paused: cursor.paused,
                cancelled: cursor.cancelled,
                ..progress
            };
            if progress.done {
                info!(source = %source, %table, rows = progress.rows,
                    "snapshot of the table is complete");
            }
            self.state.snapshots.insert(table, progress);
            store = true;
        }
        store
    }

    /// A change of `table` by transaction `xid` is newer than the open chunk's rows:
    /// it came between the watermarks, or before the low one from a transaction the
    /// chunk's select could not see yet (a commit is written to the WAL a moment
    /// before other sessions see it). Such changes must be told to
    /// [`Self::changed_during_window`].
    pub(super) fn window_on(&self, table: &str, xid: u32) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.table == table && (w.open || w.seen.is_invisible(xid)))
    }

    /// A change of the row named `key` (see [`row_name`]) is newer than the chunk's
    /// (see [`Self::window_on`]): the chunk's copy of that row is stale and is left out.
    pub(super) fn changed_during_window(&mut self, table: &str, key: &[u8]) {
        if let Some(w) = self.window.as_mut()
            && w.table == table
        {
            w.removed.insert(key.to_vec());
        }
    }

    /// Whether the open chunk's select saw transaction `xid`'s changes.
    pub(super) fn chunk_saw(&self, xid: u32) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| !w.seen.is_invisible(xid))
    }

    /// A change of a table without a key that the open chunk's select did not see
    /// replaced the row named `row` (see [`changed_rows`]). Identical rows are distinct
    /// rows there and the chunk cannot tell which copy changed, so a chunk holding such
    /// a row is not emitted but read again.
    pub(super) fn replaced_during_window(&mut self, table: &str, row: &[u8]) {
        if let Some(w) = self.window.as_mut()
            && w.table == table
        {
            w.stale.insert(row.to_vec());
        }
    }

    /// Shows each table's progress in the status.
    pub(super) fn publish(&self, status: &Status) {
        let snapshot = self
            .cursors
            .iter()
            .map(|(t, c)| {
                let running = self.window.as_ref().is_some_and(|w| &w.table == t);
                let rate = c.rate();
                let eta = match (c.estimate, rate) {
                    (Some(total), Some(rate)) if !c.done && !c.paused && !c.cancelled => Some(
                        (total.saturating_sub(c.rows_acknowledged) as f64 / rate).ceil() as u64,
                    ),
                    _ => None,
                };
                (
                    t.clone(),
                    SnapshotStatus {
                        state: if c.done && c.rows_acknowledged == c.rows_emitted {
                            "done"
                        } else if c.cancelled {
                            "cancelled"
                        } else if c.paused {
                            "paused"
                        } else if running || c.rows_emitted > 0 {
                            "running"
                        } else {
                            "pending"
                        },
                        rows_emitted: c.rows_emitted,
                        rows_acknowledged: c.rows_acknowledged,
                        rows_estimate: c.estimate,
                        rows_per_second: rate.map(|r| r.round() as u64),
                        eta_seconds: eta,
                        filter: c.filter.clone(),
                        error: c.error.clone(),
                    },
                )
            })
            .collect();
        status.update(|s| s.snapshot = snapshot);
    }
}

impl Task {
    /// Starts the next snapshot chunk: low watermark, select, high watermark.
    pub(super) async fn start_chunk(&mut self) -> Result<(), CdcError> {
        let Some((table, cursor)) = self
            .snapshots
            .cursors
            .iter()
            .find(|(t, c)| c.wants_chunk() && self.catalog.tables.contains_key(*t))
            .map(|(t, c)| (t.clone(), c.clone()))
        else {
            return Ok(());
        };
        let Some(info) = self.catalog.tables.get(&table).cloned() else {
            return Ok(());
        };
        if cursor.estimate.is_none() || cursor.started.is_none() {
            let estimate = estimate_rows(self.sql().await?, &info, cursor.filter.as_deref()).await;
            if let Some(c) = self.snapshots.cursors.get_mut(&table) {
                c.estimate = c.estimate.or(estimate);
                c.started = c
                    .started
                    .or(Some((std::time::Instant::now(), c.rows_acknowledged)));
            }
        }
        self.snapshots.window_seq += 1;
        let id = window_id(process_nonce(), self.snapshots.window_seq, &table);
        let chunk = i64::from(self.cfg.snapshot_chunk.max(1));
        let emit = |edge: &str| {
            format!(
                "SELECT pg_catalog.pg_logical_emit_message(false, '{WATERMARK_PREFIX}', '{edge} {}')",
                id.replace('\'', "''")
            )
        };
        let mut parallel = i64::from(self.cfg.snapshot_parallel.max(1));
        let keyed = !info.identity_columns.is_empty();
        // A keyed table read several chunks at a time, or by a filtered backfill, is read
        // in ranges whose ends are found first (the key every `chunk` rows on): a range
        // reads at most `chunk` rows of the table however few match, and the ranges are
        // read at once over several connections sharing one snapshot.
        let ranged = keyed && (parallel > 1 || cursor.filter.is_some());
        let mut helpers = std::mem::take(&mut self.snapshot_clients);
        if ranged && parallel > 1 {
            helpers.retain(|c| !c.is_closed());
            while helpers.len() < usize::try_from(parallel - 1).unwrap_or(0) {
                match crate::setup::connect(&self.cfg.dsn).await {
                    Ok(c) => helpers.push(c),
                    Err(e) => {
                        // Fewer ranges at once rather than no snapshot.
                        warn!(source = %self.source, %table, error = %e,
                            "cannot open another connection for the snapshot; reading fewer \
                             ranges at once");
                        break;
                    }
                }
            }
            parallel = i64::try_from(helpers.len()).unwrap_or(0) + 1;
        }
        let client = self.sql().await?;
        let mut upto: Option<Vec<String>> = None;
        let mut bounds: Option<(Query, Option<Vec<String>>)> = None;
        let (queries, block_end, table_blocks) = if !keyed {
            // A table without a key is read in ranges of its blocks (`ctid`).
            let start = block_cursor(cursor.after.as_deref());
            let end = start.saturating_add(cursor.blocks.max(1));
            let blocks: i64 = client
                .query_one(
                    "SELECT (pg_relation_size($1::oid) / current_setting('block_size')::bigint)::bigint",
                    &[&info.oid],
                )
                .await
                .map_err(|e| CdcError::Transient(format!("snapshot of {table}: {}", describe(&e))))?
                .get(0);
            let query = block_query(&info, start, end, cursor.filter.as_deref());
            (vec![query], Some(end), u64::try_from(blocks).unwrap_or(0))
        } else {
            // A cursor of the other kind, or of another key (the table gained or changed
            // its key since it was stored), starts the table over.
            let after = cursor.after.as_deref().filter(|a| {
                a.len() == info.identity_columns.len()
                    && a.first().is_none_or(|f| f != BLOCK_CURSOR)
            });
            if ranged {
                // The ends are found inside the chunk's snapshot (see `select_chunk`), so
                // each range holds exactly the rows they were counted on.
                bounds = Some((
                    bounds_query(&info, after, chunk, parallel),
                    after.map(<[String]>::to_vec),
                ));
                (Vec::new(), None, 0)
            } else {
                let query = chunk_query(&info, after, None, chunk, None);
                (vec![query], None, 0)
            }
        };
        client
            .batch_execute(&emit("low"))
            .await
            .map_err(|e| CdcError::Transient(format!("snapshot watermark: {}", describe(&e))))?;
        let filter = cursor.filter.as_deref();
        let ranges = |ends: &[Vec<String>], after: Option<&[String]>| {
            let mut queries = Vec::with_capacity(ends.len() + 1);
            let mut lo = after;
            for end in ends {
                queries.push(chunk_query(&info, lo, Some(end), chunk, filter));
                lo = Some(end);
            }
            if (ends.len() as i64) < parallel {
                // Fewer rows are left than the ranges would hold: the last range reads
                // to the table's end.
                queries.push(chunk_query(&info, lo, None, chunk, filter));
            }
            queries
        };
        let selected = select_chunk(
            client,
            &helpers,
            Reads {
                fixed: queries,
                bounds: bounds.as_ref().map(|(q, after)| (q, after.as_deref())),
                key_columns: info.identity_columns.len(),
                ranges: &ranges,
            },
            cursor.filter.is_some(),
        )
        .await;
        self.snapshot_clients = helpers;
        let (seen, rows, ends) = match selected {
            Ok(s) => s,
            // The server refused the chunk (a condition that fails on some row, a type
            // that does not cast): that table's snapshot stops with the reason, the
            // stream and the other tables go on.
            Err(e) if e.as_db_error().is_some() => {
                let reason = describe(&e);
                warn!(source = %self.source, %table, error = %reason,
                    "the snapshot of the table is paused: the server refused its chunk; fix \
                     the cause, then `switchyard snapshot TABLE --resume` (or start it again)");
                self.snapshots.fail(&table, reason).await?;
                self.snapshots.publish(&self.status);
                return Ok(());
            }
            Err(e) => {
                return Err(CdcError::Transient(format!(
                    "snapshot of {table}: {}",
                    describe(&e)
                )));
            }
        };
        if bounds.is_some() && ends.len() as i64 == parallel {
            upto = ends.last().cloned();
        }
        let client = self.sql().await?;
        // A message outside a transaction is not flushed by itself: the walsender would
        // see it only at the WAL writer's next round (200 ms), once per chunk. A tiny
        // transaction with an xid commits synchronously and flushes it at once (it
        // changes nothing, so the stream carries nothing of it).
        let high = format!(
            "BEGIN; SET LOCAL synchronous_commit = local; {}; SELECT pg_catalog.txid_current(); COMMIT",
            emit("high")
        );
        client
            .batch_execute(&high)
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
                        .map_or(Value::Null, |v| self.catalog.types.to_json(col.type_oid, v)),
                );
                text.insert(&col.name, value);
            }
            let key = match info.key_spec() {
                KeySpec::Columns([]) => Value::Null,
                KeySpec::Columns(columns) => Value::Object(
                    columns
                        .iter()
                        .map(|k| (k.clone(), after.get(k).cloned().unwrap_or(Value::Null)))
                        .collect(),
                ),
                _ => Value::Object(after.clone()),
            };
            if !info.identity_columns.is_empty() {
                last_key = Some(
                    info.identity_columns
                        .iter()
                        .map(|k| text.get(k.as_str()).cloned().flatten().unwrap_or_default())
                        .collect(),
                );
            }
            out.push((row_name(&info, &after), key, after));
        }
        if let Some(end) = block_end {
            last_key = Some(vec![BLOCK_CURSOR.to_owned(), end.to_string()]);
        }
        if let Some(upto) = &upto {
            last_key = Some(upto.clone());
        }
        let last = match block_end {
            Some(end) => end >= table_blocks,
            // A filtered chunk reached the table's end when no bound was found.
            None if ranged => upto.is_none(),
            None => (out.len() as i64) < chunk,
        };

        if let Some(c) = self.snapshots.cursors.get_mut(&table)
            && block_end.is_some()
        {
            c.blocks = next_blocks(c.blocks, out.len(), chunk);
        }
        debug!(source = %self.source, %table, rows = out.len(), "snapshot chunk selected");
        self.snapshots.window = Some(Window {
            id,
            table: table.clone(),
            generation: cursor.generation,
            open: false,
            last,
            seen,
            rows: out,
            removed: HashSet::default(),
            stale: HashSet::default(),
            last_key,
        });
        self.snapshots.publish(&self.status);
        Ok(())
    }

    /// A watermark message in the stream.
    pub(super) async fn watermark(&mut self, content: &str, lsn: u64) -> Result<(), SessionEnd> {
        let Some((edge, id)) = content.split_once(' ') else {
            return Ok(());
        };
        let Some(w) = self.snapshots.window.as_mut() else {
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
        let w = self.snapshots.window.take().expect("checked above");
        let info = self.catalog.tables.get(&w.table).cloned();
        let Some(info) = info else {
            return Ok(());
        };
        let ts_us = change::pg_now_us();
        let mut emitted = 0u64;
        if !w.stale.is_empty()
            && w.rows
                .iter()
                .any(|(name, _, _)| w.stale.contains(name.as_bytes()))
        {
            // Read the chunk again, in a smaller range, once the change is visible.
            debug!(source = %self.source, table = %w.table,
                "a snapshot chunk of a table without a key was changed while it was read; reading it again");
            if let Some(cursor) = self.snapshots.cursors.get_mut(&w.table) {
                cursor.blocks = (cursor.blocks / 2).max(1);
            }
            self.snapshots.publish(&self.status);
            return Ok(());
        }
        for (n, (key_text, key, after)) in w.rows.into_iter().enumerate() {
            if w.removed.contains(key_text.as_bytes()) {
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
            event.id =
                switchyard_event::format_compact!("{}/snapshot/{n}", change::lsn_string(lsn));
            self.emit(event).await?;
            emitted += 1;
        }
        let Some(cursor) = self.snapshots.cursors.get_mut(&w.table) else {
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
            filter: cursor.filter.clone(),
            paused: cursor.paused,
            cancelled: cursor.cancelled,
        };
        let every = u64::from(self.cfg.snapshot_chunk.max(1)) * 25;
        if w.last {
            info!(source = %self.source, table = %w.table, rows = cursor.rows_emitted,
                "snapshot of the table emitted; completes when acknowledged");
        } else if cursor.rows_emitted / every != (cursor.rows_emitted - emitted) / every {
            info!(source = %self.source, table = %w.table, rows = cursor.rows_emitted,
                after = ?cursor.after, "snapshot in progress");
        }
        self.positions.push_action(Action::Progress(Progress {
            table: w.table,
            generation: w.generation,
            progress,
        }));
        self.snapshots.publish(&self.status);
        Ok(())
    }
}

/// The first element of a block cursor (`after` of a table read by blocks); a key's
/// text values never hold a NUL, so it cannot be mistaken for one.
const BLOCK_CURSOR: &str = "\0block";

/// Blocks of the first chunk of a table read by blocks.
const FIRST_BLOCKS: u64 = 8;
/// Most blocks in one chunk (8 MiB of heap with Postgres' 8 KiB blocks): a chunk after
/// a stretch of empty pages must not hold millions of rows when it meets full ones.
const MAX_BLOCKS: u64 = 1024;

/// The block a table read by blocks goes on from (0 when `after` is none, or the
/// table's key cursor of an earlier run: the table is then read again from its start).
fn block_cursor(after: Option<&[String]>) -> u64 {
    match after {
        Some([marker, block]) if marker == BLOCK_CURSOR => block.parse().unwrap_or(0),
        _ => 0,
    }
}

/// Blocks for the next chunk, so that it holds about `chunk` rows.
fn next_blocks(blocks: u64, rows: usize, chunk: i64) -> u64 {
    let blocks = blocks.max(1);
    let chunk = u64::try_from(chunk).unwrap_or(1).max(1);
    let rows = rows as u64;
    if rows == 0 {
        return (blocks * 2).min(MAX_BLOCKS);
    }
    (blocks * chunk / rows).clamp(1, (blocks * 4).min(MAX_BLOCKS))
}

/// How the chunk and the stream name a row to tell whether the stream changed it: the
/// JSON text of its identity columns, or of the whole row for a table without them.
pub(super) fn row_name(info: &TableInfo, row: &Map<String, Value>) -> String {
    if info.identity_columns.is_empty() {
        return Value::Object(row.clone()).to_string();
    }
    let key: Map<String, Value> = info
        .identity_columns
        .iter()
        .map(|k| (k.clone(), row.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Value::Object(key).to_string()
}

/// The rows of the chunk a change record makes stale, named as [`row_name`] names a
/// chunk's rows. With a key: the rows of its `before` and `after` (a key names one row,
/// the old key and the new one of an update that changed it). Without a key
/// (`identity_columns` empty): nothing when the chunk's select saw the change (the
/// chunk holds the row as the change left it: at worst a duplicate), else the `before`
/// row, which the chunk may hold as it was before the change.
pub(crate) fn changed_rows(info: &TableInfo, record: &[u8], chunk_saw: bool) -> Vec<Vec<u8>> {
    let Ok(Value::Object(record)) = serde_json::from_slice::<Value>(record) else {
        return Vec::new();
    };
    let images: &[&str] = match (info.identity_columns.is_empty(), chunk_saw) {
        (false, _) => &["before", "after"],
        (true, true) => &[],
        (true, false) => &["before"],
    };
    images
        .iter()
        .filter_map(|image| match record.get(*image) {
            Some(Value::Object(row)) => Some(row_name(info, row).into_bytes()),
            _ => None,
        })
        .collect()
}

/// Every column of the table as text, for a chunk's `SELECT`.
fn select_list(info: &TableInfo) -> String {
    info.columns
        .iter()
        .map(|c| format!("{}::text", quote_ident(&c.name)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `SELECT` of the rows in blocks `start..end` of a table without a key: every column
/// as text (a TID range scan).
fn block_query(
    info: &TableInfo,
    start: u64,
    end: u64,
    filter: Option<&str>,
) -> (String, Vec<String>) {
    let columns = select_list(info);
    let filter = filter.map(|f| format!(" AND ({f})")).unwrap_or_default();
    (
        format!(
            "SELECT {columns} FROM {} AS src WHERE src.ctid >= $1::text::tid AND src.ctid < $2::text::tid{filter}",
            info.sql_name()
        ),
        vec![format!("({start},0)"), format!("({end},0)")],
    )
}

/// `SELECT` of the next chunk: every column as text, rows after `after` (and up to
/// `upto`, inclusive) in key order.
fn chunk_query(
    info: &TableInfo,
    after: Option<&[String]>,
    upto: Option<&[String]>,
    limit: i64,
    filter: Option<&str>,
) -> (String, Vec<String>) {
    let columns = select_list(info);
    let keys = key_list(info);
    let mut sql = format!("SELECT {columns} FROM {} AS src", info.sql_name());
    let mut conditions = Vec::new();
    let mut params = Vec::new();
    if let Some(after) = after {
        conditions.push(format!("({keys}) > ({})", key_casts(info, params.len())));
        params.extend_from_slice(after);
    }
    if let Some(upto) = upto {
        conditions.push(format!("({keys}) <= ({})", key_casts(info, params.len())));
        params.extend_from_slice(upto);
    }
    if let Some(filter) = filter {
        conditions.push(format!("({filter})"));
    }
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    sql.push_str(&format!(" ORDER BY {keys} LIMIT {limit}"));
    (sql, params)
}

/// The keys ending the next `count` ranges of `limit` rows each after `after`, in key
/// order (fewer when the table ends first). It reads at most `count × limit` keys.
fn bounds_query(
    info: &TableInfo,
    after: Option<&[String]>,
    limit: i64,
    count: i64,
) -> (String, Vec<String>) {
    let keys = key_list(info);
    let names = info
        .identity_columns
        .iter()
        .map(|k| format!("b.{}::text", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ");
    let mut inner = format!(
        "SELECT {keys}, row_number() OVER (ORDER BY {keys}) AS sy_n FROM {} AS src",
        info.sql_name()
    );
    let mut params = Vec::new();
    if let Some(after) = after {
        inner.push_str(&format!(" WHERE ({keys}) > ({})", key_casts(info, 0)));
        params.extend_from_slice(after);
    }
    let limit = limit.max(1);
    inner.push_str(&format!(" ORDER BY {keys} LIMIT {}", limit * count.max(1)));
    (
        format!("SELECT {names} FROM ({inner}) AS b WHERE b.sy_n % {limit} = 0 ORDER BY b.sy_n"),
        params,
    )
}

/// A query and its text parameters.
type Query = (String, Vec<String>);

/// The queries of a chunk's ranges, from the ends found and the key before the first.
type Ranges<'a> = dyn Fn(&[Vec<String>], Option<&[String]>) -> Vec<Query> + Sync + 'a;

/// What a chunk reads: fixed queries, or ranges whose ends a query finds first.
struct Reads<'a> {
    fixed: Vec<Query>,
    /// The ends' query and the key the first range starts after.
    bounds: Option<(&'a Query, Option<&'a [String]>)>,
    key_columns: usize,
    ranges: &'a Ranges<'a>,
}

/// Reads a chunk: one transaction per connection, all on the snapshot of the first
/// (exported to the others). The ranges' ends are found in that snapshot first, so each
/// range holds exactly the rows they were counted on; then the ranges are read at once.
/// Rows in range order; the ends found.
async fn select_chunk(
    main: &tokio_postgres::Client,
    helpers: &[tokio_postgres::Client],
    reads: Reads<'_>,
    filtered: bool,
) -> Result<(Visibility, Vec<tokio_postgres::Row>, Vec<Vec<String>>), tokio_postgres::Error> {
    let opened = async {
        main.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .await?;
        let seen: String = main
            .query_one("SELECT pg_catalog.txid_current_snapshot()::text", &[])
            .await?
            .get(0);
        let (queries, ends) = match reads.bounds {
            None => (reads.fixed, Vec::new()),
            Some(((sql, params), after)) => {
                let params = sql_params(params);
                let ends: Vec<Vec<String>> = main
                    .query(sql, &params)
                    .await?
                    .iter()
                    .map(|r| {
                        (0..reads.key_columns)
                            .map(|i| r.get::<_, Option<String>>(i).unwrap_or_default())
                            .collect()
                    })
                    .collect();
                ((reads.ranges)(&ends, after), ends)
            }
        };
        let exported: Option<String> = if queries.len() > 1 {
            Some(
                main.query_one("SELECT pg_catalog.pg_export_snapshot()", &[])
                    .await?
                    .get(0),
            )
        } else {
            None
        };
        Ok::<_, tokio_postgres::Error>((seen, exported, queries, ends))
    }
    .await;
    let (seen, exported, queries, ends) = match opened {
        Ok(o) => o,
        Err(e) => {
            let _ = main.batch_execute("ROLLBACK").await;
            return Err(e);
        }
    };
    let reads = queries.iter().enumerate().map(|(i, (query, params))| {
        let client = if i == 0 { main } else { &helpers[i - 1] };
        let exported = exported.clone();
        async move {
            let params = sql_params(params);
            let read = async {
                if let (true, Some(snapshot)) = (i > 0, &exported) {
                    client
                        .batch_execute(&format!(
                            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; \
                             SET TRANSACTION SNAPSHOT '{}'",
                            snapshot.replace('\'', "''")
                        ))
                        .await?;
                }
                let rows = client.query(query, &params).await?;
                if i > 0 {
                    client.batch_execute("COMMIT").await?;
                }
                Ok::<_, tokio_postgres::Error>(rows)
            }
            .await;
            if i > 0 {
                if read.is_err() {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
                if filtered {
                    let _ = client.batch_execute("RESET ALL").await;
                }
            }
            read
        }
    });
    let results = futures::future::join_all(reads).await;
    let mut rows = Vec::new();
    let mut failed = None;
    for result in results {
        match result {
            Ok(r) => rows.extend(r),
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    if let Some(e) = failed {
        let _ = main.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    if let Err(e) = main.batch_execute("COMMIT").await {
        let _ = main.batch_execute("ROLLBACK").await;
        return Err(e);
    }
    if filtered {
        // The condition may have changed settings of the session (set_config); the
        // watermarks and the next chunk run with the session's own.
        main.batch_execute("RESET ALL").await?;
    }
    Ok((Visibility::parse(&seen), rows, ends))
}

/// The key columns, qualified: the select list's `col::text` outputs carry the column
/// names, and an unqualified ORDER BY would sort by that text.
fn key_list(info: &TableInfo) -> String {
    info.identity_columns
        .iter()
        .map(|k| format!("src.{}", quote_ident(k)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `$n::text::type, …` for the key columns, numbered after `before` parameters.
fn key_casts(info: &TableInfo, before: usize) -> String {
    info.identity_columns
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let ty = info
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map_or("text", |c| c.type_name.as_str());
            format!("${}::text::{ty}", before + i + 1)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Text parameters as tokio-postgres takes them.
fn sql_params(params: &[String]) -> Vec<&(dyn tokio_postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect()
}

/// The planner's estimate of the rows a snapshot of `info` (with `filter`) reads.
async fn estimate_rows(
    client: &tokio_postgres::Client,
    info: &TableInfo,
    filter: Option<&str>,
) -> Option<u64> {
    let filter = filter.map(|f| format!(" WHERE ({f})")).unwrap_or_default();
    let sql = format!(
        "EXPLAIN (FORMAT JSON) SELECT 1 FROM {} AS src{filter}",
        info.sql_name()
    );
    let row = client.query_one(&sql, &[]).await.ok()?;
    let plan: Value = row.try_get(0).ok()?;
    plan.get(0)?
        .get("Plan")?
        .get("Plan Rows")?
        .as_f64()
        .map(|r| r as u64)
}

/// Checks a backfill's `--where` condition before it reaches SQL: bounded, and only an
/// expression — no statement separator or comment outside quotes, and parentheses that
/// balance, so it cannot close the parenthesis it is wrapped in. Postgres checks the
/// rest (it runs in a read-only transaction).
pub(super) fn check_filter(filter: &str) -> Result<(), String> {
    const MAX: usize = 4096;
    if filter.trim().is_empty() {
        return Err("the condition is empty".into());
    }
    if filter.len() > MAX {
        return Err(format!("the condition is longer than {MAX} bytes"));
    }
    if filter.contains('\0') {
        return Err("the condition holds a NUL character".into());
    }
    // Backslashes change how strings end (E'' strings, standard_conforming_strings off,
    // continued E'' strings): without them every kind of string ends at its first
    // unpaired quote, which is what this check reads.
    if filter.contains('\\') {
        return Err("the condition holds a backslash; write strings without escapes".into());
    }
    let bytes = filter.as_bytes();
    let mut depth = 0i32;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\'' => {
                // '' is a quote inside any string (no backslashes: see above).
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("a string is not closed".into()),
                        Some(b'\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
                        Some(b'\'') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'"' => {
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return Err("a quoted name is not closed".into()),
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => break,
                        Some(_) => i += 1,
                    }
                }
            }
            b'$' => {
                // Only a dollar quote with a plain tag, $tag$ … $tag$, that does not end
                // an identifier (`a$b` is one name): anything else with `$` is refused
                // rather than guessed at.
                let after_name = i > 0
                    && (bytes[i - 1].is_ascii_alphanumeric()
                        || bytes[i - 1] == b'_'
                        || bytes[i - 1] >= 0x80);
                let rest = &filter[i + 1..];
                let tag_end = rest.find('$');
                let plain = tag_end.is_some_and(|end| {
                    rest[..end]
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || c == b'_')
                        && !rest[..end].starts_with(|c: char| c.is_ascii_digit())
                });
                let (false, true, Some(end)) = (after_name, plain, tag_end) else {
                    return Err("the condition holds a `$` that is not a plain dollar quote".into());
                };
                let tag = &filter[i..i + end + 2];
                let body = i + tag.len();
                match filter[body..].find(tag) {
                    Some(close) => i = body + close + tag.len() - 1,
                    None => return Err("a dollar-quoted string is not closed".into()),
                }
            }
            b';' => return Err("the condition holds `;`: give one expression".into()),
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                return Err("the condition holds a comment (`--`)".into());
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                return Err("the condition holds a comment (`/*`)".into());
            }
            b'(' => depth += 1,
            b')' => {
                depth -= 1;
                if depth < 0 {
                    return Err("the condition closes a parenthesis it did not open".into());
                }
            }
            _ => {}
        }
        i += 1;
    }
    if depth != 0 {
        return Err("the condition's parentheses do not balance".into());
    }
    Ok(())
}

/// A number of this process, to tell its snapshot windows from other processes' in the
/// slot's stream: the window sequence starts again in every process, and instances in
/// containers often all run as pid 1. Hashed from the process id, the clock and the
/// standard library's per-process random hash keys.
fn process_nonce() -> u64 {
    static NONCE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *NONCE.get_or_init(new_nonce)
}

fn new_nonce() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    hasher.write_u128(now.as_nanos());
    hasher.finish()
}

/// The id of a snapshot window, in its watermark messages.
fn window_id(nonce: u64, seq: u64, table: &str) -> String {
    format!("{nonce:016x}-{seq}-{table}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_ids_of_two_processes_differ_even_with_the_same_pid_and_sequence() {
        // Two processes: the same pid (1 in containers), each with its own nonce.
        let (a, b) = (new_nonce(), new_nonce());
        assert_ne!(a, b);
        assert_ne!(window_id(a, 1, "public.t"), window_id(b, 1, "public.t"));
        // Within one process the nonce is fixed: only the sequence tells windows apart.
        assert_eq!(process_nonce(), process_nonce());
        assert_ne!(
            window_id(process_nonce(), 1, "public.t"),
            window_id(process_nonce(), 2, "public.t")
        );
    }
    use crate::setup::ColumnInfo;

    fn table() -> TableInfo {
        TableInfo {
            schema: "public".into(),
            name: "orders".into(),
            oid: 1,
            identity: crate::setup::Identity::Key,
            replica_identity: "default",
            identity_columns: vec!["tenant".into(), "id".into()],
            key_columns: vec!["tenant".into(), "id".into()],
            columns: vec![
                ColumnInfo {
                    name: "tenant".into(),
                    type_oid: 25,
                    type_name: "text".into(),
                    type_modifier: -1,
                },
                ColumnInfo {
                    name: "id".into(),
                    type_oid: 20,
                    type_name: "bigint".into(),
                    type_modifier: -1,
                },
                ColumnInfo {
                    name: "note".into(),
                    type_oid: 25,
                    type_name: "text".into(),
                    type_modifier: -1,
                },
            ],
            partitioned: false,
        }
    }

    #[test]
    fn the_first_chunk_starts_at_the_beginning_in_key_order() {
        let (sql, params) = chunk_query(&table(), None, None, 1024, None);
        assert_eq!(
            sql,
            "SELECT \"tenant\"::text, \"id\"::text, \"note\"::text FROM \"public\".\"orders\" \
             AS src ORDER BY src.\"tenant\", src.\"id\" LIMIT 1024"
        );
        assert!(params.is_empty());
    }

    #[test]
    fn a_filtered_backfill_adds_its_condition_to_every_chunk() {
        let (sql, _) = chunk_query(&table(), None, None, 5, Some("note <> 'x'"));
        assert!(
            sql.ends_with("AS src WHERE (note <> 'x') ORDER BY src.\"tenant\", src.\"id\" LIMIT 5"),
            "{sql}"
        );
        let after = vec!["acme".to_string(), "42".to_string()];
        let upto = vec!["acme".to_string(), "99".to_string()];
        let (sql, params) = chunk_query(&table(), Some(&after), Some(&upto), 5, Some("id > 3"));
        assert!(
            sql.contains(
                "> ($1::text::text, $2::text::bigint) AND (src.\"tenant\", src.\"id\") <= \
                 ($3::text::text, $4::text::bigint) AND (id > 3) ORDER BY"
            ),
            "{sql}"
        );
        assert_eq!(params, ["acme", "42", "acme", "99"]);
        let (sql, params) = bounds_query(&table(), Some(&after), 5, 3);
        assert_eq!(
            sql,
            "SELECT b.\"tenant\"::text, b.\"id\"::text FROM (SELECT src.\"tenant\", src.\"id\", \
             row_number() OVER (ORDER BY src.\"tenant\", src.\"id\") AS sy_n FROM \
             \"public\".\"orders\" AS src WHERE (src.\"tenant\", src.\"id\") > \
             ($1::text::text, $2::text::bigint) ORDER BY src.\"tenant\", src.\"id\" LIMIT 15) AS b \
             WHERE b.sy_n % 5 = 0 ORDER BY b.sy_n"
        );
        assert_eq!(params, after);
        let (sql, _) = block_query(&table(), 0, 8, Some("id > 3"));
        assert!(
            sql.ends_with("src.ctid < $2::text::tid AND (id > 3)"),
            "{sql}"
        );
    }

    #[test]
    fn a_backfill_condition_is_one_expression_and_cannot_leave_its_parentheses() {
        for good in [
            "created_at > now() - interval '7 days'",
            "note = 'it''s; not -- a comment'",
            "\"odd;name\" = 1",
            "id IN (SELECT id FROM other WHERE x = $$ ) ; $$)",
            "id = ANY('{1,2}')",
        ] {
            assert_eq!(check_filter(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "true) UNION SELECT usename FROM pg_user WHERE (true",
            "1 = 1; DROP TABLE orders",
            "id > 3 -- and",
            "id > 3 /* x */",
            "(id > 3",
            "note = 'open",
            "note = $$open",
            // Backslashes and odd dollars change how Postgres ends a string.
            "id > 0 AND name'\\' <> '') OR true --'",
            "note = E'x'\n'\\'') OR true --'",
            "note = $é$ ) $é$",
            "x$t$ = 1 ) OR ($t$ = 1",
            "id = $1",
        ] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
        assert!(check_filter(&"x".repeat(5000)).is_err());
    }

    #[test]
    fn a_later_chunk_starts_after_the_last_key_with_typed_comparisons() {
        let after = vec!["acme".to_string(), "42".to_string()];
        let (sql, params) = chunk_query(&table(), Some(&after), None, 10, None);
        assert!(
            sql.ends_with(
                "WHERE (src.\"tenant\", src.\"id\") > ($1::text::text, $2::text::bigint) \
                 ORDER BY src.\"tenant\", src.\"id\" LIMIT 10"
            ),
            "{sql}"
        );
        assert_eq!(params, after);
    }

    #[test]
    fn a_table_without_a_key_is_read_by_block_ranges_sized_to_the_chunk() {
        let mut info = table();
        info.identity = crate::setup::Identity::Missing;
        info.identity_columns.clear();
        info.key_columns.clear();
        let (sql, params) = block_query(&info, 8, 24, None);
        assert_eq!(
            sql,
            "SELECT \"tenant\"::text, \"id\"::text, \"note\"::text FROM \"public\".\"orders\" AS src \
             WHERE src.ctid >= $1::text::tid AND src.ctid < $2::text::tid"
        );
        assert_eq!(params, ["(8,0)", "(24,0)"]);
        // The cursor: a block number behind a marker no key text can hold.
        assert_eq!(block_cursor(None), 0);
        assert_eq!(
            block_cursor(Some(&[BLOCK_CURSOR.to_owned(), "24".to_owned()])),
            24
        );
        assert_eq!(
            block_cursor(Some(&["acme".to_owned(), "7".to_owned()])),
            0,
            "a key cursor of an earlier run starts the table over"
        );
        // 8 blocks gave 400 rows for a chunk of 100: 2 blocks next; empty blocks grow
        // the range, but never more than fourfold at once.
        assert_eq!(next_blocks(8, 400, 100), 2);
        assert_eq!(next_blocks(8, 0, 100), 16);
        assert_eq!(next_blocks(2, 5, 1000), 8);
        assert_eq!(next_blocks(1, 100, 100), 1);
    }

    #[test]
    fn the_stream_names_changed_rows_as_the_chunk_does() {
        let mut keyed = table();
        let row: Map<String, Value> = serde_json::from_str(r#"{"tenant":"a","id":7}"#).unwrap();
        assert_eq!(row_name(&keyed, &row), r#"{"tenant":"a","id":7}"#);
        let record =
            br#"{"op":"update","before":{"tenant":"a","id":7},"after":{"tenant":"b","id":7}}"#;
        assert_eq!(
            changed_rows(&keyed, record, false),
            vec![
                br#"{"tenant":"a","id":7}"#.to_vec(),
                br#"{"tenant":"b","id":7}"#.to_vec()
            ]
        );
        // Without a key, a row is named by all its values; a change the chunk's select
        // did not see names the old row, one it saw nothing.
        keyed.identity_columns.clear();
        let full =
            br#"{"op":"update","before":{"tenant":"a","id":7.50},"after":{"tenant":"a","id":8}}"#;
        // The chunk's select did not see the change: it holds the old row.
        let names = changed_rows(&keyed, full, false);
        let chunk_row: Map<String, Value> =
            serde_json::from_str(r#"{"tenant":"a","id":7.5}"#).unwrap();
        assert_eq!(names, vec![row_name(&keyed, &chunk_row).into_bytes()]);
        assert!(changed_rows(&keyed, full, true).is_empty());
        assert_eq!(
            changed_rows(
                &keyed,
                br#"{"op":"insert","before":null,"after":null}"#,
                true
            ),
            Vec::<Vec<u8>>::new()
        );
    }

    #[test]
    fn a_snapshot_sees_what_committed_before_it_and_nothing_it_lists_as_running() {
        let seen = Visibility::parse("740:745:741,743");
        assert!(!seen.is_invisible(739));
        assert!(!seen.is_invisible(742));
        assert!(seen.is_invisible(741));
        assert!(seen.is_invisible(743));
        assert!(seen.is_invisible(745));
        assert!(seen.is_invisible(900));
        // 64-bit ids (an epoch above 0) compare by their low 32 bits, as the stream's.
        let epoch = Visibility::parse(&format!("{}:{}:", (1u64 << 32) + 5, (1u64 << 32) + 9));
        assert!(!epoch.is_invisible(8));
        assert!(epoch.is_invisible(9));
        assert!(!Visibility::parse("garbage").is_invisible(1));
    }
}
