//! `type = "rabbitmq"`.

use super::super::sinks::rabbitmq::{amqp_url, ca_file};
use super::super::walk::{Ctx, Table};
use crate::RabbitmqSourceConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> RabbitmqSourceConfig {
    let prefetch = table
        .positive_u32(
            cx,
            "prefetch",
            "; the broker must be allowed to send one message",
        )
        .map_or(RabbitmqSourceConfig::DEFAULT_PREFETCH, |n| {
            u16::try_from(n).unwrap_or_else(|_| {
                cx.issue(
                    &table.child("prefetch"),
                    "prefetch is at most 65535 messages",
                );
                RabbitmqSourceConfig::DEFAULT_PREFETCH
            })
        });
    RabbitmqSourceConfig {
        url: amqp_url(cx, table),
        queue: table
            .required_string(cx, "queue", "the queue to consume, e.g. \"orders\"")
            .unwrap_or_default(),
        prefetch,
        ca_file: ca_file(cx, table),
    }
}
