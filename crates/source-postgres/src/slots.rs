//! `switchyard slots list|drop`: the replication slots of a database and the WAL each
//! holds back — a forgotten slot keeps WAL on the server's disk forever.

use serde::Serialize;

use crate::setup::{CdcError, connect, describe};

/// One replication slot of the database.
#[derive(Clone, Debug, Serialize)]
pub struct SlotInfo {
    pub name: String,
    pub plugin: Option<String>,
    pub database: Option<String>,
    pub active: bool,
    pub confirmed_flush_lsn: Option<String>,
    /// WAL kept for the slot (from its restart LSN to the server's current position).
    pub retained_bytes: Option<i64>,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: Option<String>,
}

/// Every replication slot of the server `dsn` points to.
pub async fn list(dsn: &str) -> Result<Vec<SlotInfo>, CdcError> {
    let client = connect(dsn).await?;
    let rows = client
        .query(
            "SELECT slot_name::text, plugin::text, database::text, active, \
                    confirmed_flush_lsn::text, \
                    pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status \
             FROM pg_replication_slots ORDER BY slot_name",
            &[],
        )
        .await
        .map_err(|e| CdcError::Transient(format!("listing slots: {}", describe(&e))))?;
    Ok(rows
        .iter()
        .map(|r| SlotInfo {
            name: r.get(0),
            plugin: r.get(1),
            database: r.get(2),
            active: r.get(3),
            confirmed_flush_lsn: r.get(4),
            retained_bytes: r.get(5),
            wal_status: r.get(6),
        })
        .collect())
}

/// Drops the slot `name`. An active slot (a running switchyard or another client holds
/// it) is refused: stop that reader first.
pub async fn drop_slot(dsn: &str, name: &str) -> Result<(), CdcError> {
    let client = connect(dsn).await?;
    let row = client
        .query_opt(
            "SELECT active, active_pid FROM pg_replication_slots WHERE slot_name = $1",
            &[&name],
        )
        .await
        .map_err(|e| CdcError::Transient(format!("reading slots: {}", describe(&e))))?;
    let Some(row) = row else {
        return Err(CdcError::Config(format!(
            "there is no replication slot `{name}`; `switchyard slots list` shows the slots"
        )));
    };
    let active: bool = row.get(0);
    if active {
        let pid: Option<i32> = row.get(1);
        return Err(CdcError::Config(format!(
            "slot `{name}` is in use (server process {}); stop the switchyard or client reading \
             it, then drop it",
            pid.map_or_else(|| "?".into(), |p| p.to_string())
        )));
    }
    client
        .execute("SELECT pg_drop_replication_slot($1)", &[&name])
        .await
        .map_err(|e| CdcError::Config(format!("cannot drop slot `{name}`: {}", describe(&e))))?;
    Ok(())
}
