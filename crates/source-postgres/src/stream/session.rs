//! One replication session: connect from the confirmed LSN, turn pgoutput changes into
//! events, record the commits to confirm, follow schema changes, measure the slot's lag,
//! and start the next snapshot chunk whenever none is open.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgwire_replication::{Lsn, ReplicationClient, ReplicationEvent};
use serde_json::Value;
use switchyard_event::Event;
use tracing::{info, warn};

use super::snapshot::{self, WATERMARK_PREFIX};
use super::{Action, KnownRelation, Task};
use crate::change::{self, KeySpec};
use crate::pgoutput::{self, Message, Relation};
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
        let confirmed = self.positions.confirmed;
        let rcfg = rcfg
            .with_start_lsn(Lsn(confirmed))
            .with_ack_lsn(Lsn(confirmed))
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
            from = %change::lsn_string(confirmed), "replication started");
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
                    skip: final_lsn.0 < self.positions.emitted_upto,
                });
            }
            ReplicationEvent::Commit { end_lsn, .. } => {
                if let Some(t) = txn.take()
                    && !t.skip
                {
                    self.positions.emitted_upto = end_lsn.0;
                    self.positions.push_action(Action::Confirm(end_lsn.0));
                }
            }
            // Idle: nothing of ours is between the last commit and the server's
            // position, so it may be confirmed once everything before is complete.
            ReplicationEvent::KeepAlive { wal_end, .. }
                if txn.is_none() && wal_end.0 > self.positions.emitted_upto =>
            {
                self.positions.push_action(Action::Confirm(wal_end.0));
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
                if changed && !t.skip {
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
                self.catalog.tables.insert(name, info);
            }
            Ok(Err(problem)) => {
                warn!(source = %self.source, table = %name, %problem,
                    "the table changed; its events keep flowing with the key columns of the stream");
            }
            Err(e) => return Err(SessionEnd::Error(e)),
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
