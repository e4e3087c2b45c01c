//! `type = "http"`.

use super::super::server::token;
use super::super::walk::{Ctx, Table};
use crate::HttpSourceConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> HttpSourceConfig {
    HttpSourceConfig {
        token: token(cx, table, "token"),
        max_events: table
            .positive_usize(cx, "max_events", "")
            .unwrap_or(HttpSourceConfig::DEFAULT_MAX_EVENTS),
        max_body: table
            .size(cx, "max_body")
            .unwrap_or(HttpSourceConfig::DEFAULT_MAX_BODY),
        partitions: table.positive_u32(
            cx,
            "partitions",
            "; the intake log needs at least one partition",
        ),
        dedup_window: table
            .duration(cx, "dedup_window", true)
            .unwrap_or(HttpSourceConfig::DEFAULT_DEDUP_WINDOW),
        max_bytes: table
            .size(cx, "max_bytes")
            .unwrap_or(HttpSourceConfig::DEFAULT_MAX_BYTES),
    }
}
