//! `[queues.NAME]`.

use serde_json::Value;

use super::walk::{Ctx, Table, check_name, join};
use crate::QueueConfig;

pub(super) fn queue(cx: &mut Ctx<'_>, path: &str, value: &Value) -> Option<QueueConfig> {
    let table = Table::of::<QueueConfig>(cx, path, value)?;
    let queue = QueueConfig {
        partitions: table
            .positive_u32(cx, "partitions", "; a queue needs at least one partition")
            .unwrap_or(QueueConfig::DEFAULT_PARTITIONS),
        retention: table
            .duration(cx, "retention", false)
            .unwrap_or(QueueConfig::DEFAULT_RETENTION),
        max_bytes: table
            .size(cx, "max_bytes")
            .unwrap_or(QueueConfig::DEFAULT_MAX_BYTES),
        ack_timeout: table
            .duration(cx, "ack_timeout", false)
            .unwrap_or(QueueConfig::DEFAULT_ACK_TIMEOUT),
        max_deliveries: table
            .positive_u32(
                cx,
                "max_deliveries",
                "; every message is delivered at least once",
            )
            .unwrap_or(QueueConfig::DEFAULT_MAX_DELIVERIES),
        dead_letter: table.non_empty_string(cx, "dead_letter"),
        dedup_window: table
            .duration(cx, "dedup_window", true)
            .unwrap_or(QueueConfig::DEFAULT_DEDUP_WINDOW),
        lookahead: table
            .positive_u32(
                cx,
                "lookahead",
                "; a work group needs at least one message loaded",
            )
            .unwrap_or(QueueConfig::DEFAULT_LOOKAHEAD),
        max_groups: table
            .positive_u32(
                cx,
                "max_groups",
                "; work groups are created by receives and need room for at least one",
            )
            .unwrap_or(QueueConfig::DEFAULT_MAX_GROUPS),
        work_memory: table
            .size(cx, "work_memory")
            .unwrap_or(QueueConfig::DEFAULT_WORK_MEMORY),
        group_idle_expiry: table
            .duration(cx, "group_idle_expiry", true)
            .unwrap_or(QueueConfig::DEFAULT_GROUP_IDLE_EXPIRY),
    };
    if queue.ack_timeout > crate::MAX_QUEUE_DELAY {
        cx.issue(
            &table.child("ack_timeout"),
            "must be at most 7d (a lease longer than a week is refused); set a shorter ack_timeout, a consumer that needs longer can extend its lease",
        );
    }
    if let Some(dead_letter) = &queue.dead_letter {
        check_name(cx, &join(path, "dead_letter"), "queue", dead_letter);
    }
    table.finish(cx);
    Some(queue)
}
