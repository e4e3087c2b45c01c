//! Start-up checks and set-up: the server can do logical replication, the user may,
//! every table exists and can identify its rows, and the publication and slot exist.
//! Every problem is reported with the SQL that fixes it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use switchyard_config::PostgresCdcSourceConfig;
use tokio_postgres::Client;
use tracing::{info, warn};

use crate::change::KeySpec;
use crate::tls::Target;
use crate::values::{TypeKind, TypeRegistry};

/// Why the source cannot start or go on. `Transient` problems are retried with backoff
/// (the server is down, the network broke); the others need the user.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("{0}")]
    Config(String),
    /// Problems in the database that the user must fix; each line says how.
    #[error("{}", .0.join("\n"))]
    Database(Vec<String>),
    #[error("{0}")]
    SlotLost(String),
    /// The slot does not exist and was not to be created.
    #[error("{0}")]
    SlotMissing(String),
    /// TLS to the server cannot work as the dsn asks (no TLS on the server, a
    /// certificate that fails the check): the message names the dsn's settings.
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Transient(String),
}

impl CdcError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CdcError::Transient(_))
    }
}

pub(crate) fn transient(context: &str, e: tokio_postgres::Error) -> CdcError {
    CdcError::Transient(format!("{context}: {}", describe(&e)))
}

/// A Postgres error with its server message, detail and hint when there is one.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_string();
            if let Some(d) = db.detail() {
                let _ = write!(s, " ({d})");
            }
            if let Some(h) = db.hint() {
                let _ = write!(s, "; hint: {h}");
            }
            s
        }
        None => e.to_string(),
    }
}

/// How a captured table tells its rows apart in the change stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A primary key, or the unique index of `REPLICA IDENTITY USING INDEX`.
    Key,
    /// `REPLICA IDENTITY FULL` without a primary key: updates and deletes carry the
    /// whole old row.
    Full,
    /// No primary key and `REPLICA IDENTITY DEFAULT` (or `NOTHING`): inserts stream;
    /// while the table is in a publication that publishes updates and deletes,
    /// Postgres refuses `UPDATE` and `DELETE` on it.
    Missing,
}

/// One captured table as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    /// How rows are told apart.
    pub identity: Identity,
    /// `pg_class.relreplident` spelled out: `default`, `full`, `index` or `nothing`.
    pub replica_identity: &'static str,
    /// Columns identifying a row, in key order: the primary key, or the replica
    /// identity index; empty when the table has neither. Snapshots read in this order.
    pub identity_columns: Vec<String>,
    /// Columns of the events' `key`: the source's `key_columns` for the table, else
    /// `identity_columns`. Empty: the key is the whole row ([`Identity::Full`]) or `null`.
    pub key_columns: Vec<String>,
    /// Every column in table order.
    pub columns: Vec<ColumnInfo>,
    /// A partitioned table: its partitions' changes are published under its name
    /// (`publish_via_partition_root`).
    pub partitioned: bool,
}

/// One column of a captured table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    /// SQL type name (`format_type`), for casts in snapshot queries.
    pub type_name: String,
    /// `atttypmod`, as pgoutput sends it (-1 when there is none).
    pub type_modifier: i32,
}

impl TableInfo {
    /// The table as a pgoutput relation description, for a `schema` event of a table
    /// no change has described yet.
    pub fn relation(&self) -> crate::pgoutput::Relation {
        crate::pgoutput::Relation {
            oid: self.oid,
            namespace: self.schema.clone(),
            name: self.name.clone(),
            replica_identity: match self.replica_identity {
                "full" => b'f',
                "index" => b'i',
                "nothing" => b'n',
                _ => b'd',
            },
            columns: self
                .columns
                .iter()
                .map(|c| crate::pgoutput::Column {
                    // As pgoutput flags them: every column under REPLICA IDENTITY FULL.
                    key: self.replica_identity == "full" || self.identity_columns.contains(&c.name),
                    name: c.name.clone(),
                    type_oid: c.type_oid,
                    type_modifier: c.type_modifier,
                })
                .collect(),
        }
    }

    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `"schema"."table"`, quoted for SQL.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// What the events' `key` is made of.
    pub fn key_spec(&self) -> KeySpec<'_> {
        if !self.key_columns.is_empty() {
            KeySpec::Columns(&self.key_columns)
        } else if self.identity == Identity::Full {
            KeySpec::WholeRow
        } else {
            KeySpec::Columns(&[])
        }
    }

    /// One sentence on what the table's identity gives: what updates and deletes
    /// carry, what the key is, and what that means for order.
    pub fn explain(&self) -> String {
        let key = match self.key_spec() {
            KeySpec::Columns([]) => {
                "the key is null, so its events have no order among themselves \
                 (set key_columns for the table to order them by some of its columns)"
                    .to_owned()
            }
            KeySpec::Columns(columns) if columns == self.identity_columns.as_slice() => {
                format!(
                    "the key is ({}), and changes of one row keep their order",
                    columns.join(", ")
                )
            }
            KeySpec::Columns(columns) => format!(
                "the key is ({}) from key_columns, and changes with the same values there keep their order",
                columns.join(", ")
            ),
            _ => "the key is the whole row as it was before the change (a row's insert \
                  and first update share it; later changes of the row do not: set \
                  key_columns for order per row)"
                .to_owned(),
        };
        let rows = match (self.identity, self.replica_identity) {
            (Identity::Key, "full") => format!(
                "primary key ({}), REPLICA IDENTITY FULL: updates and deletes carry the whole old row as `before`",
                self.identity_columns.join(", ")
            ),
            (Identity::Key, "index") => format!(
                "REPLICA IDENTITY USING INDEX ({}): updates and deletes carry those columns of the old row as `before`",
                self.identity_columns.join(", ")
            ),
            (Identity::Key, _) => format!(
                "primary key ({}): updates carry no old row, deletes the key's columns as `before`",
                self.identity_columns.join(", ")
            ),
            (Identity::Full, _) => "no primary key, REPLICA IDENTITY FULL: updates and deletes \
                carry the whole old row as `before`; a snapshot tells rows apart by all their values"
                .to_owned(),
            (Identity::Missing, _) if !self.identity_columns.is_empty() => format!(
                "primary key ({}), REPLICA IDENTITY NOTHING: inserts stream; Postgres refuses \
                 UPDATE and DELETE on the table while the publication publishes them (to \
                 stream those, run ALTER TABLE {} REPLICA IDENTITY DEFAULT;)",
                self.identity_columns.join(", "),
                self.sql_name()
            ),
            (Identity::Missing, identity) => format!(
                "no primary key, REPLICA IDENTITY {}: inserts stream; Postgres refuses UPDATE and \
                 DELETE on the table while the publication publishes them (to stream those, run \
                 ALTER TABLE {} REPLICA IDENTITY FULL;)",
                identity.to_uppercase(),
                self.sql_name()
            ),
        };
        format!("table {}: {rows}; {key}", self.qualified())
    }
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled.
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// What set-up found and did.
pub struct Prepared {
    pub tables: Vec<TableInfo>,
    /// The slot did not exist and was created now (a first start, or a recreated slot).
    pub slot_created: bool,
    /// The slot's confirmed flush LSN: where streaming resumes.
    pub confirmed_flush: u64,
    pub types: TypeRegistry,
}

/// Output settings of every session, so that values read as text (streamed changes and
/// snapshot rows alike) have one form: ISO dates, timestamps with time zone in UTC,
/// floats that round-trip.
pub const SESSION_OPTIONS: &str =
    "-c DateStyle=ISO -c IntervalStyle=postgres -c TimeZone=UTC -c extra_float_digits=3";

/// Connects for ordinary SQL (with the dsn's TLS settings); the connection runs on its
/// own task.
pub async fn connect(dsn: &str) -> Result<Client, CdcError> {
    let mut target = Target::parse(dsn)?;
    // Values are read as text: the same output settings as the replication session's.
    target.config.options(SESSION_OPTIONS);
    let (client, connection) = target.connect_sql().await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %describe(&e), "postgres connection closed");
        }
    });
    Ok(client)
}

/// Splits `schema.table` (a missing schema means `public`).
pub fn split_table(entry: &str) -> (String, String) {
    match entry.split_once('.') {
        Some((s, t)) => (s.trim_matches('"').into(), t.trim_matches('"').into()),
        None => ("public".into(), entry.trim_matches('"').into()),
    }
}

/// The user name of the connection string (for the SQL in messages).
fn user_of(dsn: &str) -> String {
    Target::parse(dsn)
        .ok()
        .and_then(|t| t.config.get_user().map(str::to_owned))
        .unwrap_or_else(|| "your_user".into())
}

/// Checks everything, creates the publication (and the slot when `create_slot`), and
/// returns the tables. `recreate_lost_slot`: an invalidated slot is dropped and created
/// anew (the caller then takes a new snapshot) instead of failing.
pub async fn prepare(
    source: &str,
    cfg: &PostgresCdcSourceConfig,
    create_slot: bool,
    recreate_lost_slot: bool,
) -> Result<Prepared, CdcError> {
    let client = connect(&cfg.dsn).await?;
    let mut problems = Vec::new();

    let wal_level: String = client
        .query_one("SHOW wal_level", &[])
        .await
        .map_err(|e| transient("SHOW wal_level", e))?
        .get(0);
    if wal_level != "logical" {
        problems.push(format!(
            "wal_level is `{wal_level}`; logical replication needs `logical`: run \
             ALTER SYSTEM SET wal_level = logical; then restart Postgres"
        ));
    }
    let user = user_of(&cfg.dsn);
    let row = client
        .query_one(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(|e| transient("reading role attributes", e))?;
    if !row.get::<_, bool>(0) {
        problems.push(format!(
            "role `{user}` may not replicate: run ALTER ROLE {} WITH REPLICATION;",
            quote_ident(&user)
        ));
    }

    let entries = if cfg.tables.is_empty() {
        let rows = publication_tables(&client, &cfg.publication).await?;
        if rows.is_empty() {
            problems.push(format!(
                "sources.{source}: no `tables` are listed and publication `{}` does not exist \
                 or is empty: list the tables, e.g. tables = [\"public.orders\"], or run \
                 CREATE PUBLICATION {} FOR TABLE public.orders;",
                cfg.publication,
                quote_ident(&cfg.publication)
            ));
        }
        rows
    } else {
        cfg.tables.iter().map(|t| split_table(t)).collect()
    };

    let tables = check_tables(&client, cfg, &entries, &mut problems).await?;
    if !problems.is_empty() {
        return Err(CdcError::Database(problems));
    }
    for table in &tables {
        if table.identity == Identity::Missing {
            warn!(source, "{}", table.explain());
        } else {
            info!(source, "{}", table.explain());
        }
    }

    ensure_publication(&client, cfg, &tables).await?;
    let (slot_created, confirmed_flush) =
        ensure_slot(&client, cfg, create_slot, recreate_lost_slot).await?;
    let types = load_types(&client).await?;
    info!(source, slot = %cfg.slot, publication = %cfg.publication,
        tables = ?tables.iter().map(TableInfo::qualified).collect::<Vec<_>>(),
        slot_created, "postgres source is set up");
    Ok(Prepared {
        tables,
        slot_created,
        confirmed_flush,
        types,
    })
}

/// `(schema, table)` of every table in `publication` (none when it does not exist).
pub(crate) async fn publication_tables(
    client: &Client,
    publication: &str,
) -> Result<Vec<(String, String)>, CdcError> {
    Ok(client
        .query(
            // The source's own state table is never captured (a publication FOR ALL TABLES
            // would otherwise turn every progress write into an event).
            "SELECT schemaname::text, tablename::text FROM pg_publication_tables \
             WHERE pubname = $1 AND schemaname <> 'switchyard'",
            &[&publication],
        )
        .await
        .map_err(|e| transient("reading the publication", e))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

/// The catalog's view of `entries`; what cannot work goes to `problems`.
async fn check_tables(
    client: &Client,
    cfg: &PostgresCdcSourceConfig,
    entries: &[(String, String)],
    problems: &mut Vec<String>,
) -> Result<Vec<TableInfo>, CdcError> {
    let mut tables = Vec::new();
    for (schema, name) in entries {
        match describe_table(client, schema, name, &cfg.key_columns).await? {
            Ok(t) => tables.push(t),
            Err(problem) => problems.push(problem),
        }
    }
    for configured in cfg.key_columns.keys() {
        if !tables.iter().any(|t| &t.qualified() == configured)
            && !problems.iter().any(|p| p.contains(configured.as_str()))
        {
            problems.push(format!(
                "key_columns names table {configured}, which the source does not capture \
                 (it captures {}): fix the name, or add the table to `tables`",
                tables
                    .iter()
                    .map(TableInfo::qualified)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    let publishes = publication_publishes_changes(client, &cfg.publication).await?;
    for table in &tables {
        if table.identity != Identity::Missing || !publishes {
            continue;
        }
        if let Some(problem) = updated_without_identity(client, table, &cfg.publication).await? {
            problems.push(problem);
        }
    }
    Ok(tables)
}

/// What each listed table of the source gives (see [`TableInfo::explain`]), and the
/// problems that would stop the source, read without changing anything in the
/// database (no publication or slot is created). Needs `tables` listed, or an existing
/// publication.
pub async fn inspect(
    cfg: &PostgresCdcSourceConfig,
) -> Result<(Vec<TableInfo>, Vec<String>), CdcError> {
    let client = connect(&cfg.dsn).await?;
    let entries = if cfg.tables.is_empty() {
        publication_tables(&client, &cfg.publication).await?
    } else {
        cfg.tables.iter().map(|t| split_table(t)).collect()
    };
    let mut problems = Vec::new();
    let tables = check_tables(&client, cfg, &entries, &mut problems).await?;
    Ok((tables, problems))
}

/// The catalog's view of one table, or the problem with it (and its fix).
pub async fn describe_table(
    client: &Client,
    schema: &str,
    name: &str,
    configured_keys: &BTreeMap<String, Vec<String>>,
) -> Result<Result<TableInfo, String>, CdcError> {
    let qualified = format!("{schema}.{name}");
    let Some(row) = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text, c.relkind = 'p' FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
            &[&schema, &name],
        )
        .await
        .map_err(|e| transient("reading the catalog", e))?
    else {
        return Ok(Err(format!(
            "table {qualified} does not exist: create it, or remove it from `tables`"
        )));
    };
    let oid: u32 = row.get(0);
    let identity: String = row.get(1);
    let partitioned: bool = row.get(2);
    let columns: Vec<ColumnInfo> = client
        .query(
            "SELECT attname::text, atttypid, format_type(atttypid, atttypmod), atttypmod \
             FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped AND attgenerated = '' \
             ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| transient("reading columns", e))?
        .iter()
        .map(|r| ColumnInfo {
            name: r.get(0),
            type_oid: r.get(1),
            type_name: r.get(2),
            type_modifier: r.get(3),
        })
        .collect();
    // The index a REPLICA IDENTITY USING INDEX names, else the primary key: one index,
    // the one whose columns the stream sends as the old key.
    let key_columns: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 \
               AND CASE WHEN $2 = 'i' THEN i.indisreplident ELSE i.indisprimary END \
             ORDER BY k.ord",
            &[&oid, &identity],
        )
        .await
        .map_err(|e| transient("reading the primary key", e))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    // Keep only the key's first definition (a primary key and an identity index may both match).
    let mut seen = std::collections::HashSet::new();
    let identity_columns: Vec<String> = key_columns
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect();
    let replica_identity = match identity.as_str() {
        "f" => "full",
        "i" => "index",
        "n" => "nothing",
        _ => "default",
    };
    let table_identity = if replica_identity == "nothing" {
        Identity::Missing
    } else if !identity_columns.is_empty() {
        Identity::Key
    } else if replica_identity == "full" {
        Identity::Full
    } else {
        Identity::Missing
    };
    if partitioned && identity_columns.is_empty() {
        return Ok(Err(format!(
            "table {qualified} is partitioned and has no primary key: its partitions cannot \
             be snapshotted by block ranges through the parent yet; give it a primary key \
             (ALTER TABLE {}.{} ADD PRIMARY KEY (…), including the partition key), or \
             capture its partitions as tables of their own",
            quote_ident(schema),
            quote_ident(name)
        )));
    }
    let key_columns = match configured_keys.get(&qualified) {
        Some(configured) => {
            let unknown: Vec<&String> = configured
                .iter()
                .filter(|k| !columns.iter().any(|c: &ColumnInfo| &c.name == *k))
                .collect();
            if !unknown.is_empty() {
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                return Ok(Err(format!(
                    "key_columns of table {qualified} names {}, which the table does not have \
                     (its columns: {}): fix the names in key_columns",
                    unknown
                        .iter()
                        .map(|k| format!("`{k}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    names.join(", ")
                )));
            }
            configured.clone()
        }
        None => identity_columns.clone(),
    };
    Ok(Ok(TableInfo {
        schema: schema.into(),
        name: name.into(),
        oid,
        identity: table_identity,
        replica_identity,
        identity_columns,
        key_columns,
        columns,
        partitioned,
    }))
}

/// Whether `publication` publishes updates or deletes: true when it does not exist yet,
/// as switchyard creates it with Postgres' default (`insert, update, delete, truncate`).
async fn publication_publishes_changes(
    client: &Client,
    publication: &str,
) -> Result<bool, CdcError> {
    let row = client
        .query_opt(
            "SELECT pubupdate OR pubdelete FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await
        .map_err(|e| transient("reading the publication", e))?;
    Ok(row.is_none_or(|r| r.get::<_, bool>(0)))
}

/// The one case a table without an identity cannot work: Postgres' statistics show it
/// is updated or deleted from, and in a publication that publishes those, each such
/// statement would fail in the application.
async fn updated_without_identity(
    client: &Client,
    table: &TableInfo,
    publication: &str,
) -> Result<Option<String>, CdcError> {
    let row = client
        .query_opt(
            "SELECT n_tup_upd + n_tup_del FROM pg_stat_all_tables WHERE relid = $1",
            &[&table.oid],
        )
        .await
        .map_err(|e| transient("reading table statistics", e))?;
    let changed: i64 = row.map_or(0, |r| r.get(0));
    if changed == 0 {
        return Ok(None);
    }
    let sql_name = table.sql_name();
    let (what, fix) = if table.identity_columns.is_empty() {
        (
            "has no primary key and REPLICA IDENTITY",
            format!(
                "ALTER TABLE {sql_name} REPLICA IDENTITY FULL; (updates and deletes then carry \
                 the whole old row), or give the table a primary key"
            ),
        )
    } else {
        (
            "has a primary key but REPLICA IDENTITY",
            format!("ALTER TABLE {sql_name} REPLICA IDENTITY DEFAULT;"),
        )
    };
    Ok(Some(format!(
        "table {} {what} {}, and it is updated or deleted from ({changed} rows since the \
         statistics were reset): in publication `{publication}`, which publishes updates and \
         deletes, Postgres would refuse those statements. Run {fix}; or capture it with a \
         postgres_cdc source of its own whose publication publishes only inserts: CREATE \
         PUBLICATION p FOR TABLE {sql_name} WITH (publish = 'insert');",
        table.qualified(),
        table.replica_identity.to_uppercase(),
    )))
}

async fn ensure_publication(
    client: &Client,
    cfg: &PostgresCdcSourceConfig,
    tables: &[TableInfo],
) -> Result<(), CdcError> {
    let exists = client
        .query_opt(
            "SELECT puballtables, pubviaroot FROM pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(|e| transient("reading publications", e))?;
    if let Some(row) = &exists
        && !row.get::<_, bool>(1)
    {
        let partitioned: Vec<String> = tables
            .iter()
            .filter(|t| t.partitioned)
            .map(TableInfo::qualified)
            .collect();
        if !partitioned.is_empty() {
            return Err(CdcError::Database(vec![format!(
                "publication `{}` publishes the changes of partitioned table(s) {} under the \
                 names of their partitions, which the source does not capture: run ALTER \
                 PUBLICATION {} SET (publish_via_partition_root = true); (or list the \
                 partitions in `tables` instead of their parent)",
                cfg.publication,
                partitioned.join(", "),
                quote_ident(&cfg.publication)
            )]));
        }
    }
    let list = tables
        .iter()
        .map(TableInfo::sql_name)
        .collect::<Vec<_>>()
        .join(", ");
    let pub_name = quote_ident(&cfg.publication);
    let fix = |what: &str, sql: &str, e: tokio_postgres::Error| {
        CdcError::Database(vec![format!(
            "cannot {what} publication `{}`: {}; run as a superuser or the tables' owner: {sql}",
            cfg.publication,
            describe(&e)
        )])
    };
    match exists {
        None => {
            // Changes of a partitioned table's partitions are published under the
            // table's own name, as the config names it.
            let via_root = if tables.iter().any(|t| t.partitioned) {
                " WITH (publish_via_partition_root = true)"
            } else {
                ""
            };
            let sql = format!("CREATE PUBLICATION {pub_name} FOR TABLE {list}{via_root}");
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| fix("create", &sql, e))?;
            info!(publication = %cfg.publication, "created the publication");
        }
        Some(row) if !row.get::<_, bool>(0) => {
            let rows = client
                .query(
                    "SELECT schemaname::text || '.' || tablename::text FROM pg_publication_tables WHERE pubname = $1",
                    &[&cfg.publication],
                )
                .await
                .map_err(|e| transient("reading the publication", e))?;
            let have: std::collections::HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
            let missing: Vec<&TableInfo> = tables
                .iter()
                .filter(|t| !have.contains(&t.qualified()))
                .collect();
            if !missing.is_empty() {
                let add = missing
                    .iter()
                    .map(|t| t.sql_name())
                    .collect::<Vec<_>>()
                    .join(", ");
                let sql = format!("ALTER PUBLICATION {pub_name} ADD TABLE {add}");
                client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| fix("alter", &sql, e))?;
                info!(publication = %cfg.publication, added = %add, "added tables to the publication");
            }
        }
        Some(_) => {}
    }
    Ok(())
}

/// Creates the slot when missing; returns whether it was created and its confirmed
/// flush LSN.
async fn ensure_slot(
    client: &Client,
    cfg: &PostgresCdcSourceConfig,
    create: bool,
    recreate_lost: bool,
) -> Result<(bool, u64), CdcError> {
    let row = client
        .query_opt(
            "SELECT plugin::text, slot_type, database::text = current_database(), \
                    confirmed_flush_lsn::text, coalesce(wal_status, ''), active \
             FROM pg_replication_slots WHERE slot_name = $1",
            &[&cfg.slot],
        )
        .await
        .map_err(|e| transient("reading replication slots", e))?;
    if let Some(row) = row {
        let plugin: Option<String> = row.get(0);
        let kind: String = row.get(1);
        let same_db: Option<bool> = row.get(2);
        let flush: Option<String> = row.get(3);
        let wal_status: String = row.get(4);
        if kind != "logical" || plugin.as_deref() != Some("pgoutput") || same_db != Some(true) {
            return Err(CdcError::Database(vec![format!(
                "replication slot `{}` exists but is not a pgoutput logical slot of this \
                 database (type {kind}, plugin {plugin:?}): choose another `slot` name, or drop \
                 it: SELECT pg_drop_replication_slot('{}');",
                cfg.slot, cfg.slot
            )]));
        }
        if wal_status != "lost" {
            let flush = flush
                .as_deref()
                .and_then(crate::change::parse_lsn)
                .unwrap_or(0);
            return Ok((false, flush));
        }
        if !recreate_lost {
            return Err(CdcError::SlotLost(format!(
                "replication slot `{}` was invalidated (wal_status = lost: the server removed \
                 WAL it still needed, see max_slot_wal_keep_size); changes after its position \
                 are gone. Set recreate_slot = true on the source to create a new slot and take \
                 a new snapshot, or drop it with `switchyard slots drop {}`",
                cfg.slot, cfg.slot
            )));
        }
        warn!(slot = %cfg.slot, "the replication slot was invalidated; dropping and creating it again");
        client
            .execute("SELECT pg_drop_replication_slot($1)", &[&cfg.slot])
            .await
            .map_err(|e| transient("dropping the invalidated slot", e))?;
    } else if !create {
        return Err(CdcError::SlotMissing(format!(
            "replication slot `{}` does not exist",
            cfg.slot
        )));
    }
    let row = client
        .query_one(
            "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
            &[&cfg.slot],
        )
        .await
        .map_err(|e| {
            CdcError::Database(vec![format!(
                "cannot create replication slot `{}`: {}; check max_replication_slots and that \
                 the role may replicate",
                cfg.slot,
                describe(&e)
            )])
        })?;
    let lsn: String = row.get(0);
    info!(slot = %cfg.slot, %lsn, "created the replication slot");
    Ok((true, crate::change::parse_lsn(&lsn).unwrap_or(0)))
}

/// The user-defined types (enums, domains, arrays of them, composites) of the database.
pub async fn load_types(client: &Client) -> Result<TypeRegistry, CdcError> {
    let rows = client
        .query(
            "SELECT oid, typtype::text, typbasetype, typelem, typcategory::text, typname::text FROM pg_type \
             WHERE typtype IN ('e', 'd', 'c') OR (typcategory = 'A' AND oid >= 10000)",
            &[],
        )
        .await
        .map_err(|e| transient("reading types", e))?;
    let mut registry = TypeRegistry::default();
    for r in rows {
        let oid: u32 = r.get(0);
        let typtype: String = r.get(1);
        let base: u32 = r.get(2);
        let elem: u32 = r.get(3);
        let category: String = r.get(4);
        let name: String = r.get(5);
        let kind = match (typtype.as_str(), category.as_str()) {
            ("e", _) => TypeKind::Enum,
            ("d", _) => TypeKind::Domain { base },
            (_, "A") => TypeKind::Array { element: elem },
            ("c", _) => TypeKind::Composite,
            _ => TypeKind::Other,
        };
        registry.insert_named(oid, name, kind);
    }
    Ok(registry)
}
