//! `type = "postgres_cdc"`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::super::walk::{Ctx, Table, join, kind};
use crate::PostgresCdcSourceConfig;

/// The slot defaults to [`PostgresCdcSourceConfig::default_slot`] of the source's
/// `name`, the publication to the slot.
pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>, name: &str) -> PostgresCdcSourceConfig {
    let slot = table
        .non_empty_string(cx, "slot")
        .unwrap_or_else(|| PostgresCdcSourceConfig::default_slot(name));
    if !slot
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || slot.len() > 63
    {
        cx.issue(
            &table.child("slot"),
            format!("invalid replication slot name {slot:?}: Postgres allows lower-case letters, digits and `_`, at most 63 characters"),
        );
    }
    let tables = table.strings(cx, "tables").unwrap_or_default();
    for (index, entry) in tables.iter().enumerate() {
        if entry.trim().is_empty() || entry.contains(char::is_whitespace) {
            cx.issue(
                &format!("{}[{index}]", table.child("tables")),
                format!("invalid table {entry:?}: write schema.table, e.g. \"public.orders\""),
            );
        }
    }
    let snapshot = table
        .choice_of(cx, "snapshot")
        .unwrap_or(PostgresCdcSourceConfig::DEFAULT_SNAPSHOT);
    let dsn = table
        .required_string(
            cx,
            "dsn",
            "a Postgres connection string, e.g. \"postgres://user@host:5432/db\"",
        )
        .unwrap_or_default();
    if !dsn.is_empty() {
        tls(cx, &table.child("dsn"), &dsn);
    }
    let (leader_check, leader_release) = leader_timings(cx, table);
    PostgresCdcSourceConfig {
        dsn,
        publication: table
            .non_empty_string(cx, "publication")
            .unwrap_or_else(|| slot.clone()),
        slot,
        snapshot,
        snapshot_chunk: table
            .positive_u32(cx, "snapshot_chunk", "rows per snapshot chunk")
            .unwrap_or(PostgresCdcSourceConfig::DEFAULT_SNAPSHOT_CHUNK),
        snapshot_parallel: snapshot_parallel(cx, table),
        max_slot_lag: table
            .size(cx, "max_slot_lag")
            .unwrap_or(PostgresCdcSourceConfig::DEFAULT_MAX_SLOT_LAG),
        recreate_slot: table.boolean(cx, "recreate_slot").unwrap_or(false),
        key_columns: key_columns(cx, table, &tables),
        tables,
        standby_retry: table
            .duration(cx, "standby_retry", false)
            .unwrap_or(PostgresCdcSourceConfig::DEFAULT_STANDBY_RETRY),
        leader_check,
        leader_release,
    }
}

/// `leader_check` and `leader_release`: the release must leave a cut-off leader time
/// to notice and stop before the server frees its lock for another instance.
fn leader_timings(cx: &mut Ctx<'_>, table: &Table<'_>) -> (Duration, Duration) {
    let check = table
        .duration(cx, "leader_check", false)
        .unwrap_or(PostgresCdcSourceConfig::DEFAULT_LEADER_CHECK);
    let release = table
        .duration(cx, "leader_release", false)
        .unwrap_or(PostgresCdcSourceConfig::DEFAULT_LEADER_RELEASE);
    let least = check * PostgresCdcSourceConfig::LEADER_RELEASE_CHECKS;
    if release < least {
        cx.issue(
            &table.child("leader_release"),
            format!(
                "must be at least {} × leader_check ({least:?}): a leader cut off from the database stops within two checks, and the lock must not be free before; raise leader_release or lower leader_check",
                PostgresCdcSourceConfig::LEADER_RELEASE_CHECKS
            ),
        );
    }
    if release < Duration::from_secs(1) || release.subsec_millis() != 0 {
        cx.issue(
            &table.child("leader_release"),
            "must be whole seconds, at least \"1s\" (the server's TCP keepalive settings are in seconds)",
        );
    }
    (check, release)
}

/// `key_columns = { "schema.table" = ["column", …] }`: every entry names a captured
/// table (one of `tables` when they are listed) and at least one column, each once.
fn key_columns(
    cx: &mut Ctx<'_>,
    table: &Table<'_>,
    tables: &[String],
) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(value) = table.get("key_columns") else {
        return out;
    };
    let path = table.child("key_columns");
    let Value::Object(map) = value else {
        cx.issue(
            &path,
            format!(
                "expected a table of column lists, e.g. key_columns = {{ \"public.history\" = [\"account_id\", \"id\"] }}, found {}",
                kind(value)
            ),
        );
        return out;
    };
    let listed: Vec<String> = tables.iter().map(|t| qualified(t)).collect();
    for (name, columns) in map {
        let entry = join(&path, name);
        let table_name = qualified(name);
        if name.trim().is_empty() || name.contains(char::is_whitespace) {
            cx.issue(
                &entry,
                format!("invalid table {name:?}: write schema.table, e.g. \"public.history\""),
            );
            continue;
        }
        if !listed.is_empty() && !listed.contains(&table_name) {
            cx.issue(
                &entry,
                format!(
                    "table {table_name} is not one of `tables` ({}): add it there, or remove its key_columns",
                    tables.join(", ")
                ),
            );
            continue;
        }
        let Value::Array(items) = columns else {
            cx.issue(
                &entry,
                format!("expected a list of column names, found {}", kind(columns)),
            );
            continue;
        };
        let mut names: Vec<String> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match item {
                Value::String(column) if !column.is_empty() && !names.contains(column) => {
                    names.push(column.clone());
                }
                Value::String(column) if column.is_empty() => {
                    cx.issue(&format!("{entry}[{index}]"), "a column name is empty");
                }
                Value::String(column) => {
                    cx.issue(
                        &format!("{entry}[{index}]"),
                        format!("column {column:?} is named twice"),
                    );
                }
                other => cx.issue(
                    &format!("{entry}[{index}]"),
                    format!("expected a column name, found {}", kind(other)),
                ),
            }
        }
        if items.is_empty() {
            cx.issue(
                &entry,
                "no columns are named: list the columns of the key, or remove the entry to use the table's own key",
            );
            continue;
        }
        if out.contains_key(&table_name) {
            cx.issue(
                &entry,
                format!("table {table_name} has key_columns twice (with and without its schema): keep one entry"),
            );
            continue;
        }
        out.insert(table_name, names);
    }
    out
}

/// `schema.table` of a `tables` entry (`public` when no schema is given), quotes removed.
fn qualified(entry: &str) -> String {
    match entry.split_once('.') {
        Some((schema, name)) => format!("{}.{}", schema.trim_matches('"'), name.trim_matches('"')),
        None => format!("public.{}", entry.trim_matches('"')),
    }
}

/// The `sslmode` and `sslrootcert` of a `postgres_cdc` source's `dsn`: a known mode,
/// and a root certificate file that exists when one is named.
fn tls(cx: &mut Ctx<'_>, path: &str, dsn: &str) {
    match crate::postgres_dsn::split_tls(dsn) {
        Err(problem) => cx.issue(path, problem),
        Ok(split) => {
            if let Some(crate::postgres_dsn::RootCert::File(file)) = &split.tls.root_cert
                && !file.is_file()
            {
                cx.issue(
                    path,
                    format!(
                        "sslrootcert={} does not exist (relative paths start at the working \
                         directory): name the PEM file of the CA that signed the server's \
                         certificate",
                        file.display()
                    ),
                );
            }
        }
    }
}

/// `snapshot_parallel`: 1 to [`PostgresCdcSourceConfig::MAX_SNAPSHOT_PARALLEL`].
fn snapshot_parallel(cx: &mut Ctx<'_>, table: &Table<'_>) -> u32 {
    let max = PostgresCdcSourceConfig::MAX_SNAPSHOT_PARALLEL;
    match table.positive_u32(cx, "snapshot_parallel", "chunks read at once") {
        Some(n) if n > max => {
            cx.issue(
                &table.child("snapshot_parallel"),
                format!(
                    "{n} is too many: at most {max} connections read a snapshot at once (each \
                     is a Postgres backend); 2 to 4 is plenty for most tables"
                ),
            );
            1
        }
        Some(n) => n,
        None => 1,
    }
}
