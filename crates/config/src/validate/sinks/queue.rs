//! `type = "queue"`.

use super::super::walk::{Ctx, Table};
use super::format;
use crate::QueueSinkConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> QueueSinkConfig {
    QueueSinkConfig {
        queue: table
            .required_string(
                cx,
                "queue",
                "the name of a [queues.NAME] table to append to",
            )
            .unwrap_or_default(),
        format: format(cx, table),
    }
}
