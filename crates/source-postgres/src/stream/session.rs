//! One replication session: connect from the confirmed LSN, turn pgoutput changes into
//! events, record the commits to confirm, follow schema changes, measure the slot's lag,
//! and start the next snapshot chunk whenever none is open.

use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_config::SnapshotMode;
use switchyard_event::Event;
use tracing::{info, warn};

use super::snapshot::{self, WATERMARK_PREFIX};
use super::{Action, KnownRelation, Task};
use crate::change::{self, KeySpec};
use crate::pgoutput::{self, Message, Relation};
use crate::replication::{FeedbackHandle, Replication, StartOptions, WalMessage};
use crate::setup::{self, CdcError, TableInfo};
use crate::tls::Target;

/// How often the slot's retained WAL is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(10);
/// How often a slot over `max_slot_lag` is warned about.
const LAG_WARN_INTERVAL: Duration = Duration::from_secs(60);

/// The session ended; why.
pub(super) enum SessionEnd {
    /// The runtime dropped its side: stop.
    Closed,
    Error(CdcError),
}

/// The transaction being read.
pub(super) struct Txn {
    tx: change::Transaction,
    seq: u32,
    /// Already emitted by an earlier session of this process: skip it.
    skip: bool,
}

impl Txn {
    /// The sequence number of the next event of this transaction.
    fn next_seq(&mut self) -> u32 {
        let seq = self.seq;
        self.seq += 1;
        seq
    }

    /// The next event of this transaction, from a record built as a `Value`.
    fn event(&mut self, source: &str, kind: &str, key: Option<&Value>, record: &Value) -> Event {
        let seq = self.next_seq();
        change::event(
            source,
            self.tx.commit_lsn,
            seq,
            kind,
            key,
            record,
            self.tx.commit_ts_us,
        )
    }
}

impl Task {
    /// One replication session, until it fails or the runtime goes away.
    pub(super) async fn session(&mut self) -> SessionEnd {
        // Parsed per session, as each SQL connection is: a replaced CA file is read again.
        let target = match Target::parse(&self.cfg.dsn) {
            Ok(t) => t,
            Err(e) => return SessionEnd::Error(e),
        };
        // The server sends every transaction still open from its start again.
        self.streams.clear();
        let confirmed = self.positions.confirmed;
        let options = StartOptions {
            slot: &self.cfg.slot,
            publication: &self.cfg.publication,
            start_lsn: confirmed,
            session_options: &self.replication_options,
        };
        let mut conn = match Replication::start(&target, &options).await {
            Ok(c) => c,
            Err(e) => return SessionEnd::Error(classify_replication_error(&self.cfg.slot, e)),
        };
        info!(source = %self.source, slot = %self.cfg.slot,
            from = %change::lsn_string(confirmed), protocol = conn.protocol,
            "replication started");
        if conn.protocol < 2 {
            info!(source = %self.source, server_version = conn.server_version,
                "this server (before Postgres 14) sends large transactions only at their \
                 commit: it spills them to its own disk meanwhile");
        }
        self.status.update(|s| {
            s.connected = true;
            s.last_error = None;
        });
        let feedback = conn.feedback();
        let mut txn: Option<Txn> = None;
        let mut lag_tick = tokio::time::interval(LAG_INTERVAL);
        // Actions recorded while nothing was outstanding (an idle keepalive) are due at
        // once; no completion will come to trigger them.
        let mut due_tick = tokio::time::interval(Duration::from_secs(1));
        let mut last_lag_warning: Option<Instant> = None;
        loop {
            // A new snapshot chunk starts when no window is open and a table needs one.
            if self.snapshots.window.is_none()
                && txn.is_none()
                && let Err(e) = self.start_chunk().await
            {
                return SessionEnd::Error(e);
            }
            tokio::select! {
                biased;
                changed = self.positions.complete.changed() => {
                    if changed.is_err() {
                        flush_and_stop(conn, &feedback).await;
                        return SessionEnd::Closed;
                    }
                    self.apply_completions(Some(&feedback)).await;
                }
                Some(cmd) = self.commands.recv() => self.command(cmd).await,
                _ = lag_tick.tick() => {
                    self.measure_lag(&mut last_lag_warning).await;
                    if txn.is_none()
                        && let Err(end) = self.pick_up_new_tables().await
                    {
                        return end;
                    }
                }
                _ = due_tick.tick() => {
                    if feedback.is_dead() {
                        return SessionEnd::Error(CdcError::Transient(
                            "the replication connection failed while sending a status update"
                                .into(),
                        ));
                    }
                    self.apply_completions(Some(&feedback)).await;
                }
                message = conn.recv() => {
                    let message = match message {
                        Ok(m) => m,
                        Err(e) => return SessionEnd::Error(classify_replication_error(&self.cfg.slot, e)),
                    };
                    if let Err(end) = self.handle(message, &mut txn, &feedback).await {
                        return end;
                    }
                }
            }
        }
    }

    async fn handle(
        &mut self,
        message: WalMessage,
        txn: &mut Option<Txn>,
        conn: &FeedbackHandle,
    ) -> Result<(), SessionEnd> {
        let data = match message {
            WalMessage::KeepAlive { wal_end, reply } => {
                if reply {
                    conn.reply_requested();
                }
                // Idle: nothing of ours is between the last commit and the server's
                // position, so it may be confirmed once everything before is complete.
                // (A streamed transaction still open is sent again whole after a
                // restart: the server decides by its commit, not by its first change.)
                if txn.is_none() && wal_end > self.positions.emitted_upto {
                    self.positions.push_action(Action::Confirm(wal_end));
                }
                return Ok(());
            }
            WalMessage::XLogData { data, .. } => data,
        };
        if self.streams.current.is_some() {
            // Inside a stream block: keep the messages until the transaction ends.
            let (xid, message) = pgoutput::decode_streamed(&data).map_err(undecodable)?;
            match (xid, message) {
                (_, Message::StreamStop) => {
                    self.streams.stop_block();
                    self.publish_streams();
                }
                (Some(subxid), _) => self
                    .streams
                    .append(subxid, &data)
                    .await
                    .map_err(SessionEnd::Error)?,
                // The origin of a replicated transaction follows its first Stream Start;
                // like a whole transaction's Origin, it changes nothing here.
                (None, Message::Origin { .. } | Message::Unknown(_)) => {}
                (None, other) => {
                    return Err(SessionEnd::Error(CdcError::Transient(format!(
                        "unexpected replication message inside a stream block: {other:?}"
                    ))));
                }
            }
            return Ok(());
        }
        let message = pgoutput::decode(&data).map_err(undecodable)?;
        match message {
            Message::Begin {
                final_lsn,
                commit_ts_us,
                xid,
            } => {
                *txn = Some(Txn {
                    tx: change::Transaction {
                        commit_lsn: final_lsn,
                        xid,
                        commit_ts_us,
                    },
                    seq: 0,
                    skip: final_lsn < self.positions.emitted_upto,
                });
            }
            Message::Commit { end_lsn, .. } => {
                if let Some(t) = txn.take()
                    && !t.skip
                {
                    self.committed(end_lsn);
                }
            }
            Message::LogicalMessage {
                transactional: false,
                lsn,
                prefix,
                content,
            } => {
                if prefix == WATERMARK_PREFIX {
                    self.watermark(&String::from_utf8_lossy(&content), lsn)
                        .await?;
                } else if lsn >= self.positions.emitted_upto {
                    // Sent as it was written, outside any transaction: its own event,
                    // confirmed with whatever comes next.
                    let record = change::message_record(&prefix, &content, lsn, None);
                    let key = Value::String(prefix);
                    let mut event = change::event(
                        &self.source,
                        lsn,
                        0,
                        "message",
                        Some(&key),
                        &record,
                        change::pg_now_us(),
                    );
                    // Its own namespace: the message's LSN (the end of its record) can be
                    // the LSN of the commit record that follows it, whose transaction's
                    // ids are `<commit LSN>/<seq>`.
                    event.id =
                        switchyard_event::format_compact!("{}/message", change::lsn_string(lsn));
                    self.emit(event).await?;
                }
            }
            Message::StreamStart { xid, first_segment } => {
                self.streams
                    .start_block(xid, first_segment)
                    .map_err(SessionEnd::Error)?;
            }
            Message::StreamAbort { xid, subxid } => {
                self.streams.abort(xid, subxid);
                self.publish_streams();
            }
            Message::StreamCommit {
                xid,
                commit_lsn,
                end_lsn,
                commit_ts_us,
                ..
            } => {
                self.stream_commit(xid, commit_lsn, end_lsn, commit_ts_us)
                    .await?;
            }
            message => self.change(message, txn).await?,
        }
        Ok(())
    }

    /// A transaction was emitted in full: its end may be confirmed once it is complete.
    fn committed(&mut self, end_lsn: u64) {
        self.positions.emitted_upto = end_lsn;
        self.positions.push_action(Action::Confirm(end_lsn));
    }

    /// A streamed transaction committed: its kept messages go through the path of any
    /// other transaction's, in order.
    async fn stream_commit(
        &mut self,
        xid: u32,
        commit_lsn: u64,
        end_lsn: u64,
        commit_ts_us: i64,
    ) -> Result<(), SessionEnd> {
        let replay = self.streams.commit(xid);
        self.publish_streams();
        // Emitted in full by an earlier session of this process: its relation and type
        // descriptions still apply (the server will not send them again), its changes
        // are skipped.
        let skip = commit_lsn < self.positions.emitted_upto;
        let Some(mut replay) = replay else {
            return Err(SessionEnd::Error(CdcError::Transient(format!(
                "the server committed streamed transaction {xid} without sending its changes \
                 in this session"
            ))));
        };
        let mut txn = Some(Txn {
            tx: change::Transaction {
                commit_lsn,
                xid,
                commit_ts_us,
            },
            seq: 0,
            skip,
        });
        while let Some((subxid, data)) = replay.next().await.map_err(SessionEnd::Error)? {
            let (_, message) = pgoutput::decode_streamed(&data).map_err(undecodable)?;
            // A rolled-back subtransaction's changes are void; the relation and type
            // descriptions it carried still describe what follows.
            if replay.aborted(subxid)
                && !matches!(message, Message::Relation(_) | Message::Type { .. })
            {
                continue;
            }
            self.change(message, &mut txn).await?;
        }
        if !skip {
            self.committed(end_lsn);
        }
        Ok(())
    }

    /// Shows the open streamed transactions in the status.
    fn publish_streams(&self) {
        let (open, memory) = self.streams.open();
        let spilled = self.streams.spilled_total;
        self.status.update(|s| {
            s.streaming_transactions = open;
            s.streaming_buffered_bytes = memory;
            s.spilled_bytes = spilled;
        });
    }

    async fn change(
        &mut self,
        message: Message<'_>,
        txn: &mut Option<Txn>,
    ) -> Result<(), SessionEnd> {
        let Some(t) = txn.as_mut() else {
            return Ok(());
        };
        match message {
            Message::Relation(rel) => {
                let changed = self
                    .catalog
                    .known_schemas
                    .get(&rel.oid)
                    .is_none_or(|known| known.relation.columns != rel.columns);
                self.catalog.known_schemas.insert(
                    rel.oid,
                    KnownRelation {
                        relation: rel.clone(),
                        table: rel.qualified_name(),
                    },
                );
                // The source's own state table (a publication FOR ALL TABLES has it) is
                // not captured.
                let own = rel.schema() == crate::state::SCHEMA;
                if changed && !t.skip && !own {
                    // The catalog may have changed too (ALTER TABLE): read it again.
                    self.refresh_table(&rel).await?;
                    let key_columns = self
                        .catalog
                        .tables
                        .get(&rel.qualified_name())
                        .map(|t| t.key_columns.clone());
                    let record = change::schema_record(
                        &rel,
                        &self.catalog.types,
                        key_columns.as_deref(),
                        t.tx.commit_lsn,
                    );
                    let event = t.event(&self.source, "schema", None, &record);
                    self.emit(event).await?;
                }
            }
            Message::Type { oid, .. } => {
                if self.catalog.types.kind(oid).is_none()
                    && let Ok(client) = self.sql().await
                    && let Ok(types) = setup::load_types(client).await
                {
                    self.catalog.types = types;
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
                // Borrowed, not cloned: this runs for every row.
                let Some(KnownRelation {
                    relation: rel,
                    table,
                }) = self.catalog.known_schemas.get(&relation)
                else {
                    return Err(SessionEnd::Error(CdcError::Transient(format!(
                        "a change of relation {relation} came before its description"
                    ))));
                };
                if rel.schema() == crate::state::SCHEMA {
                    return Ok(());
                }
                let info = self.catalog.tables.get(table);
                let key = info.map_or(KeySpec::Identity, TableInfo::key_spec);
                let event = self
                    .encoder
                    .event(
                        &self.source,
                        rel,
                        &self.catalog.types,
                        key,
                        &tx,
                        t.next_seq(),
                        row,
                    )
                    .map_err(|e| SessionEnd::Error(CdcError::Transient(e.to_string())))?;
                if self.snapshots.window_on(table, tx.xid) {
                    // The rows this change touched, as the snapshot's chunk names them.
                    let saw = self.snapshots.chunk_saw(tx.xid);
                    let (rows, keyless) = match info {
                        Some(info) => (
                            snapshot::changed_rows(info, &event.payload, saw),
                            info.identity_columns.is_empty(),
                        ),
                        None => (Vec::new(), false),
                    };
                    let table = table.clone();
                    for row in rows {
                        if keyless {
                            self.snapshots.replaced_during_window(&table, &row);
                        } else {
                            self.snapshots.changed_during_window(&table, &row);
                        }
                    }
                }
                self.emit(event).await?;
            }
            Message::LogicalMessage {
                prefix,
                content,
                lsn,
                ..
            } => {
                if t.skip {
                    return Ok(());
                }
                let tx = t.tx;
                let record = change::message_record(&prefix, &content, lsn, Some(&tx));
                let key = Value::String(prefix);
                let event = t.event(&self.source, "message", Some(&key), &record);
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
                    let Some(rel) = self
                        .catalog
                        .known_schemas
                        .get(&oid)
                        .map(|known| known.relation.clone())
                        .filter(|rel| rel.schema() != crate::state::SCHEMA)
                    else {
                        continue;
                    };
                    let tx = t.tx;
                    let record = change::truncate_record(&rel, &tx, cascade, restart_identity);
                    let event = t.event(&self.source, "truncate", None, &record);
                    self.emit(event).await?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Reads a table's catalog entry again after its relation changed.
    async fn refresh_table(&mut self, rel: &Relation) -> Result<(), SessionEnd> {
        let name = rel.qualified_name();
        let keys = self.cfg.key_columns.clone();
        let client = self.sql().await.map_err(SessionEnd::Error)?;
        match setup::describe_table(client, rel.schema(), &rel.name, &keys).await {
            Ok(Ok(info)) => {
                let new = !self.catalog.tables.contains_key(&name);
                self.catalog.tables.insert(name.clone(), info);
                if new {
                    self.table_added(&name).await?;
                }
            }
            Ok(Err(problem)) => {
                warn!(source = %self.source, table = %name, %problem,
                    "the table changed; its events keep flowing with the key columns of the stream");
            }
            Err(e) => return Err(SessionEnd::Error(e)),
        }
        Ok(())
    }

    /// With no `tables` listed the publication decides what is captured: a table added
    /// to it while running is described, announced by a `schema` event and, with
    /// `snapshot = "initial"`, snapshotted. (Its changes stream from the moment it was
    /// added, whether or not this check has seen it yet.)
    async fn pick_up_new_tables(&mut self) -> Result<(), SessionEnd> {
        if !self.cfg.tables.is_empty() {
            return Ok(());
        }
        let publication = self.cfg.publication.clone();
        let keys = self.cfg.key_columns.clone();
        let client = self.sql().await.map_err(SessionEnd::Error)?;
        let listed = setup::publication_tables(client, &publication)
            .await
            .map_err(SessionEnd::Error)?;
        for (schema, name) in listed {
            let qualified = format!("{schema}.{name}");
            if self.catalog.tables.contains_key(&qualified)
                || self.catalog.refused.contains(&qualified)
            {
                continue;
            }
            let client = self.sql().await.map_err(SessionEnd::Error)?;
            let info = match setup::describe_table(client, &schema, &name, &keys).await {
                Ok(Ok(info)) => info,
                Ok(Err(problem)) => {
                    warn!(source = %self.source, table = %qualified, %problem,
                        "a table added to the publication cannot be fully captured: no snapshot \
                         is taken, and its changes are keyed by what the stream says of it \
                         until the problem is fixed and the source restarts");
                    self.catalog.refused.insert(qualified);
                    continue;
                }
                Err(e) => return Err(SessionEnd::Error(e)),
            };
            let lsn_row = client
                .query_one("SELECT pg_current_wal_lsn()::text", &[])
                .await
                .map_err(|e| {
                    SessionEnd::Error(CdcError::Transient(format!(
                        "reading the WAL position: {}",
                        setup::describe(&e)
                    )))
                })?;
            let lsn = change::parse_lsn(lsn_row.get(0)).unwrap_or(self.positions.emitted_upto);
            let relation = info.relation();
            let record =
                change::schema_record(&relation, &self.catalog.types, Some(&info.key_columns), lsn);
            let mut event = change::event(
                &self.source,
                lsn,
                0,
                "schema",
                None,
                &record,
                change::pg_now_us(),
            );
            event.id =
                switchyard_event::format_compact!("{}/schema/{qualified}", change::lsn_string(lsn));
            info!(source = %self.source, table = %qualified, "{}", info.explain());
            // The stream's first description of the table is then no change.
            self.catalog
                .known_schemas
                .entry(info.oid)
                .or_insert(KnownRelation {
                    relation,
                    table: qualified.clone(),
                });
            self.catalog.tables.insert(qualified.clone(), info);
            self.emit(event).await?;
            self.table_added(&qualified).await?;
        }
        Ok(())
    }

    /// A table joined the capture while running: with `snapshot = "initial"` (and the
    /// publication deciding the tables), its snapshot starts.
    async fn table_added(&mut self, table: &str) -> Result<(), SessionEnd> {
        info!(source = %self.source, %table, "a table joined the publication; capturing it");
        if self.cfg.tables.is_empty() && self.cfg.snapshot == SnapshotMode::Initial {
            self.snapshots
                .restart(table, None)
                .await
                .map_err(SessionEnd::Error)?;
            self.snapshots.publish(&self.status);
        }
        Ok(())
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
}

/// A message the decoder refused ends the session (it is read again after a reconnect).
fn undecodable(e: pgoutput::DecodeError) -> SessionEnd {
    SessionEnd::Error(CdcError::Transient(format!(
        "undecodable replication message: {e}"
    )))
}

/// Waits (a little) until the last confirmed position reached the server, then ends the
/// session: a clean stop leaves nothing to send twice.
async fn flush_and_stop(conn: Replication, feedback: &FeedbackHandle) {
    if !feedback.flush(Duration::from_secs(5)).await {
        warn!(
            "the last confirmed position was not reported before the shutdown; changes after \
             the previous report are sent again at the next start"
        );
    }
    drop(conn);
}

/// Replication errors the user must act on are not retried.
fn classify_replication_error(slot: &str, e: CdcError) -> CdcError {
    if !e.is_transient() {
        return e;
    }
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
        e
    }
}
