//! `type = "postgres_cdc"`.

use super::super::walk::{Ctx, Table};
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
    PostgresCdcSourceConfig {
        dsn,
        publication: table
            .non_empty_string(cx, "publication")
            .unwrap_or_else(|| slot.clone()),
        slot,
        tables,
        snapshot,
        snapshot_chunk: table
            .positive_u32(cx, "snapshot_chunk", "rows per snapshot chunk")
            .unwrap_or(PostgresCdcSourceConfig::DEFAULT_SNAPSHOT_CHUNK),
        max_slot_lag: table
            .size(cx, "max_slot_lag")
            .unwrap_or(PostgresCdcSourceConfig::DEFAULT_MAX_SLOT_LAG),
        recreate_slot: table.boolean(cx, "recreate_slot").unwrap_or(false),
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
