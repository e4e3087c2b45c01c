//! `[log]`.

use serde_json::Value;

use super::walk::{Ctx, Table};
use crate::LogOutputConfig;

pub(super) fn log(cx: &mut Ctx<'_>, value: &Value) -> LogOutputConfig {
    let Some(table) = Table::of::<LogOutputConfig>(cx, "log", value) else {
        return LogOutputConfig::default();
    };
    let log = LogOutputConfig {
        format: table
            .choice_of(cx, "format")
            .unwrap_or(LogOutputConfig::DEFAULT_FORMAT),
        level: table
            .non_empty_string(cx, "level")
            .unwrap_or_else(|| LogOutputConfig::DEFAULT_LEVEL.into()),
    };
    table.finish(cx);
    log
}
