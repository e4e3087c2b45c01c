//! Snapshot progress per table, kept in the source database (the `switchyard` schema, so
//! that whichever instance leads next resumes it) and in the data directory. The stream
//! position itself lives in the replication slot (its confirmed flush LSN).
//!
//! In the database: one row per slot in `switchyard.cdc_state`, created by set-up
//! ([`ensure_table`]), written only by the holder of the slot's leader lock
//! ([`store_shared`] checks the lock in the same statement), read by a new leader
//! ([`load_shared`]).
//!
//! In the data directory:
//! Written atomically: a temporary file, fsync, rename, fsync of the directory. It is
//! written only after every event before the recorded point was acknowledged. Like the
//! rest of the data directory it is the owner's only: the file `0600`, the directory
//! `0700` (it holds key values of snapshotted rows).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;

use crate::setup::{CdcError, describe, quote_ident};

/// Snapshot progress of one table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableProgress {
    /// Every row was emitted and acknowledged.
    pub done: bool,
    /// Text values of the key of the last acknowledged row; the next chunk starts after it.
    pub after: Option<Vec<String>>,
    /// Rows emitted and acknowledged so far.
    pub rows: u64,
    /// A filtered backfill: only rows for which this SQL condition holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Paused by the user: no chunk is read until it is resumed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Cancelled by the user: no more chunks (a new snapshot request starts over).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

/// The whole state file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The slot this progress belongs to; a state of another slot is ignored.
    pub slot: String,
    /// By `schema.table`. A table listed here and not done is (re-)snapshotted.
    pub snapshots: BTreeMap<String, TableProgress>,
}

/// The state file of one source.
#[derive(Clone, Debug)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `dir/state.json`; the directory is created when missing.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        Ok(Self {
            path: dir.join("state.json"),
        })
    }

    /// Where the state is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state, or `None` when there is none yet.
    pub fn load(&self) -> std::io::Result<Option<State>> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "{} is not a valid state file ({e}); move it away to take a new snapshot",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the stored state durably.
    pub fn store(&self, state: &State) -> std::io::Result<()> {
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// The schema of what a source keeps in its database.
pub const SCHEMA: &str = "switchyard";

/// The SQL that creates the shared state table (run by set-up; a user without `CREATE` on
/// the database can run it once instead).
pub const CREATE_SQL: &str = "CREATE SCHEMA IF NOT EXISTS switchyard; \
     CREATE TABLE IF NOT EXISTS switchyard.cdc_state (slot text PRIMARY KEY, state jsonb NOT NULL, \
     updated_at timestamptz NOT NULL DEFAULT now())";

/// The SQL that a user who may creates the shared state for `user` with: [`CREATE_SQL`]
/// and the rights `user` needs on it.
pub fn grant_sql(user: &str) -> String {
    let user = quote_ident(user);
    format!(
        "{CREATE_SQL}; GRANT USAGE ON SCHEMA switchyard TO {user}; \
         GRANT SELECT, INSERT, UPDATE ON switchyard.cdc_state TO {user};"
    )
}

/// Whether the source's user may use the shared state.
#[derive(Debug, PartialEq, Eq)]
pub enum Access<T> {
    Granted(T),
    /// Refused for lack of a privilege (SQLSTATE 42501): the server's message.
    Denied(String),
}

/// What a failed statement on the shared state means: a missing privilege is the user's
/// to grant (the progress stays local meanwhile); anything else — a dropped connection,
/// a server shutting down — is retried.
fn access_error<T>(context: &str, e: &tokio_postgres::Error) -> Result<Access<T>, CdcError> {
    if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        Ok(Access::Denied(describe(e)))
    } else {
        Err(CdcError::Transient(format!("{context}: {}", describe(e))))
    }
}

/// Another session created the schema or the table at the same moment.
fn created_concurrently(e: &tokio_postgres::Error) -> bool {
    [
        SqlState::UNIQUE_VIOLATION,
        SqlState::DUPLICATE_SCHEMA,
        SqlState::DUPLICATE_TABLE,
    ]
    .iter()
    .any(|code| e.code() == Some(code))
}

/// Creates the `switchyard` schema and its state table when missing. Another instance
/// creating them at the same moment is no error: the table is checked again and used.
pub async fn ensure_table(client: &tokio_postgres::Client) -> Result<Access<()>, CdcError> {
    const ATTEMPTS: usize = 3;
    for _ in 0..ATTEMPTS {
        let exists = match client
            .query_one(
                "SELECT to_regclass('switchyard.cdc_state') IS NOT NULL",
                &[],
            )
            .await
        {
            Ok(row) => row,
            Err(e) => return access_error("looking for switchyard.cdc_state", &e),
        };
        if exists.get(0) {
            return Ok(Access::Granted(()));
        }
        match client.batch_execute(CREATE_SQL).await {
            Ok(()) => return Ok(Access::Granted(())),
            Err(e) if created_concurrently(&e) => continue,
            Err(e) => return access_error("creating switchyard.cdc_state", &e),
        }
    }
    Err(CdcError::Transient(
        "creating switchyard.cdc_state: other sessions kept creating it at the same time".into(),
    ))
}

/// The progress stored in the database for `slot`, if any. A row that is not a valid
/// state must be fixed by the user; a failed query is retried.
pub async fn load_shared(
    client: &tokio_postgres::Client,
    slot: &str,
) -> Result<Access<Option<State>>, CdcError> {
    let row = match client
        .query_opt(
            "SELECT state::text FROM switchyard.cdc_state WHERE slot = $1",
            &[&slot],
        )
        .await
    {
        Ok(row) => row,
        Err(e) => return access_error("reading switchyard.cdc_state", &e),
    };
    let Some(row) = row else {
        return Ok(Access::Granted(None));
    };
    let text: String = row.get(0);
    serde_json::from_str(&text)
        .map(|state| Access::Granted(Some(state)))
        .map_err(|e| {
            CdcError::Config(format!(
                "switchyard.cdc_state holds no valid state for slot {slot} ({e}); delete its row \
                 (DELETE FROM switchyard.cdc_state WHERE slot = '{slot}') to take a new snapshot"
            ))
        })
}

/// Who may write the shared state: the session holding the leader lock `key`.
#[derive(Clone, Copy, Debug)]
pub struct Fence {
    pub key: i64,
    /// The backend pid of the lock session.
    pub holder: i32,
}

/// Stores `state` for its slot — only while the lock session `fence.holder` still holds
/// the lock `fence.key` (checked in the same statement), so an instance that lost the
/// leadership cannot write over its successor's progress.
pub async fn store_shared(
    client: &tokio_postgres::Client,
    state: &State,
    fence: Fence,
) -> Result<(), String> {
    let json = serde_json::to_string(state).expect("state serializes");
    let written = client
        .execute(
            "INSERT INTO switchyard.cdc_state (slot, state, updated_at) \
             SELECT $1, $2::text::jsonb, now() \
             WHERE EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted \
                 AND pid = $3 AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = $4) \
             ON CONFLICT (slot) DO UPDATE SET state = EXCLUDED.state, updated_at = now()",
            &[&state.slot, &json, &fence.holder, &fence.key],
        )
        .await
        .map_err(|e| crate::setup::describe(&e))?;
    if written == 0 {
        return Err(format!(
            "not stored in switchyard.cdc_state: this instance no longer holds the leader lock {} (its successor keeps the progress)",
            fence.key
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(&dir.path().join("db")).unwrap();
        assert_eq!(file.load().unwrap(), None);
        let mut state = State {
            slot: "s".into(),
            ..State::default()
        };
        state.snapshots.insert(
            "public.orders".into(),
            TableProgress {
                done: false,
                after: Some(vec!["42".into()]),
                rows: 42,
                filter: Some("created_at > now() - interval '7 days'".into()),
                paused: true,
                cancelled: false,
            },
        );
        file.store(&state).unwrap();
        assert_eq!(file.load().unwrap(), Some(state));
    }

    #[test]
    fn the_state_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(&dir.path().join("cdc/db")).unwrap();
        file.store(&State::default()).unwrap();
        assert_eq!(mode(file.path()), 0o600);
        assert_eq!(mode(&dir.path().join("cdc/db")), 0o700);
        assert_eq!(mode(&dir.path().join("cdc")), 0o700);
    }

    #[test]
    fn the_sql_for_an_administrator_grants_the_sources_user() {
        let sql = grant_sql("cdc user");
        assert!(sql.starts_with(CREATE_SQL), "{sql}");
        assert!(
            sql.contains("GRANT USAGE ON SCHEMA switchyard TO \"cdc user\"")
                && sql.contains(
                    "GRANT SELECT, INSERT, UPDATE ON switchyard.cdc_state TO \"cdc user\""
                ),
            "{sql}"
        );
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::new(dir.path()).unwrap();
        std::fs::write(dir.path().join("state.json"), b"{not json").unwrap();
        let err = file.load().unwrap_err().to_string();
        assert!(err.contains("move it away"), "{err}");
    }
}
