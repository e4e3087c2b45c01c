//! `type = "nats"`.

use super::super::walk::{Ctx, Table};
use super::broker;
use crate::NatsSourceConfig;

/// URL schemes of a NATS server.
pub(crate) const NATS_SCHEMES: &[&str] = &["nats://", "tls://"];

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> NatsSourceConfig {
    NatsSourceConfig {
        url: broker::url(cx, table, NATS_SCHEMES, "nats://127.0.0.1:4222"),
        stream: table
            .required_string(
                cx,
                "stream",
                "the JetStream stream to read; create it with `nats stream add NAME --subjects 'events.>'`",
            )
            .unwrap_or_default(),
        consumer: table
            .non_empty_string(cx, "consumer")
            .unwrap_or_else(|| NatsSourceConfig::DEFAULT_CONSUMER.to_string()),
        filter_subject: table.non_empty_string(cx, "filter_subject"),
        ack_wait: table
            .duration(cx, "ack_wait", false)
            .unwrap_or(NatsSourceConfig::DEFAULT_ACK_WAIT),
        max_ack_pending: table
            .positive_u32(
                cx,
                "max_ack_pending",
                "; at least one message must be in flight",
            )
            .unwrap_or(NatsSourceConfig::DEFAULT_MAX_ACK_PENDING),
        tls: broker::tls(cx, table),
    }
}
