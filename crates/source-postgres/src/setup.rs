//! Start-up checks and set-up: the server can do logical replication, the user may,
//! every table exists and can identify its rows, and the publication and slot exist.
//! Every problem is reported with the SQL that fixes it.

use std::fmt::Write as _;
use std::str::FromStr;

use switchyard_config::{PostgresCdcSourceConfig, redact};
use tokio_postgres::{Client, NoTls};
use tracing::{info, warn};

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
    #[error("{0}")]
    Transient(String),
}

impl CdcError {
    pub fn is_transient(&self) -> bool {
        matches!(self, CdcError::Transient(_))
    }
}

fn transient(context: &str, e: tokio_postgres::Error) -> CdcError {
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

/// One captured table as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub oid: u32,
    /// Columns identifying a row, in key order: the primary key, or the replica
    /// identity index.
    pub key_columns: Vec<String>,
    /// Every column in table order.
    pub columns: Vec<ColumnInfo>,
}

/// One column of a captured table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub type_oid: u32,
    /// SQL type name (`format_type`), for casts in snapshot queries.
    pub type_name: String,
}

impl TableInfo {
    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// `"schema"."table"`, quoted for SQL.
    pub fn sql_name(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
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

/// Connects for ordinary SQL; the connection runs on its own task.
pub async fn connect(dsn: &str) -> Result<Client, CdcError> {
    let mut config = tokio_postgres::Config::from_str(dsn).map_err(|e| {
        CdcError::Config(format!(
            "invalid dsn: {}; write e.g. postgres://user:password@host:5432/database",
            redact::text(&e.to_string())
        ))
    })?;
    // Values are read as text: the same output settings as the replication session's.
    config.options(SESSION_OPTIONS);
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| transient("cannot connect to Postgres", e))?;
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
    tokio_postgres::Config::from_str(dsn)
        .ok()
        .and_then(|c| c.get_user().map(str::to_owned))
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

    let entries: Vec<(String, String)> = if cfg.tables.is_empty() {
        let rows = client
            .query(
                "SELECT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = $1",
                &[&cfg.publication],
            )
            .await
            .map_err(|e| transient("reading the publication", e))?;
        if rows.is_empty() {
            problems.push(format!(
                "sources.{source}: no `tables` are listed and publication `{}` does not exist \
                 or is empty: list the tables, e.g. tables = [\"public.orders\"], or run \
                 CREATE PUBLICATION {} FOR TABLE public.orders;",
                cfg.publication,
                quote_ident(&cfg.publication)
            ));
        }
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    } else {
        cfg.tables.iter().map(|t| split_table(t)).collect()
    };

    let mut tables = Vec::new();
    for (schema, name) in &entries {
        match describe_table(&client, schema, name).await? {
            Ok(t) => tables.push(t),
            Err(problem) => problems.push(problem),
        }
    }
    if !problems.is_empty() {
        return Err(CdcError::Database(problems));
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

/// The catalog's view of one table, or the problem with it (and its fix).
pub async fn describe_table(
    client: &Client,
    schema: &str,
    name: &str,
) -> Result<Result<TableInfo, String>, CdcError> {
    let qualified = format!("{schema}.{name}");
    let Some(row) = client
        .query_opt(
            "SELECT c.oid, c.relreplident::text FROM pg_class c \
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
    let columns = client
        .query(
            "SELECT attname::text, atttypid, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| transient("reading columns", e))?
        .iter()
        .map(|r| ColumnInfo {
            name: r.get(0),
            type_oid: r.get(1),
            type_name: r.get(2),
        })
        .collect();
    // The primary key, or the index a REPLICA IDENTITY USING INDEX names.
    let key_columns: Vec<String> = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord) ON true \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = $1 AND (i.indisprimary OR (i.indisreplident AND $2 = 'i')) \
             ORDER BY i.indisprimary DESC, k.ord",
            &[&oid, &identity],
        )
        .await
        .map_err(|e| transient("reading the primary key", e))?
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let sql_name = format!("{}.{}", quote_ident(schema), quote_ident(name));
    if key_columns.is_empty() {
        return Ok(Err(format!(
            "table {qualified} has no primary key, so its updates and deletes cannot be told \
             apart: add one, e.g. ALTER TABLE {sql_name} ADD PRIMARY KEY (id); or name a unique \
             index: ALTER TABLE {sql_name} REPLICA IDENTITY USING INDEX some_unique_index;"
        )));
    }
    if identity == "n" {
        return Ok(Err(format!(
            "table {qualified} has REPLICA IDENTITY NOTHING: deletes would carry no key; run \
             ALTER TABLE {sql_name} REPLICA IDENTITY DEFAULT;"
        )));
    }
    // Keep only the key's first definition (a primary key and an identity index may both match).
    let mut seen = std::collections::HashSet::new();
    let key_columns = key_columns
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect();
    Ok(Ok(TableInfo {
        schema: schema.into(),
        name: name.into(),
        oid,
        key_columns,
        columns,
    }))
}

async fn ensure_publication(
    client: &Client,
    cfg: &PostgresCdcSourceConfig,
    tables: &[TableInfo],
) -> Result<(), CdcError> {
    let exists = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&cfg.publication],
        )
        .await
        .map_err(|e| transient("reading publications", e))?;
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
            let sql = format!("CREATE PUBLICATION {pub_name} FOR TABLE {list}");
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

/// Where the replication session connects, from the connection string.
pub fn replication_config(
    cfg: &PostgresCdcSourceConfig,
) -> Result<pgwire_replication::ReplicationConfig, CdcError> {
    let parsed = tokio_postgres::Config::from_str(&cfg.dsn).map_err(|e| {
        CdcError::Config(format!(
            "invalid dsn: {}; write e.g. postgres://user:password@host:5432/database",
            redact::text(&e.to_string())
        ))
    })?;
    let host = match parsed.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = parsed.get_ports().first().copied().unwrap_or(5432);
    let user = parsed.get_user().unwrap_or("postgres").to_owned();
    let password = parsed
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let database = parsed.get_dbname().unwrap_or(&user).to_owned();
    Ok(pgwire_replication::ReplicationConfig::new(
        host,
        user,
        password,
        database,
        cfg.slot.clone(),
        cfg.publication.clone(),
    )
    .with_port(port)
    .with_options(SESSION_OPTIONS)
    .with_application_name("switchyard"))
}
