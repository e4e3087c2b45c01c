//! `type = "queue"`.

use super::super::walk::{Ctx, Table, check_name};
use crate::QueueSourceConfig;

/// The consumer group defaults to the source's `name`.
pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>, name: &str) -> QueueSourceConfig {
    let queue = table
        .required_string(cx, "queue", "the name of a [queues.NAME] table to read")
        .unwrap_or_default();
    let group = table
        .non_empty_string(cx, "group")
        .unwrap_or_else(|| name.to_string());
    check_name(cx, &table.child("group"), "consumer group", &group);
    QueueSourceConfig { queue, group }
}
