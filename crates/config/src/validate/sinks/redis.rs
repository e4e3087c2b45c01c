//! `type = "redis"`.

use super::super::sources::broker;
use super::super::sources::redis::REDIS_SCHEMES;
use super::super::walk::{Ctx, Table};
use super::kafka::template_problem;
use super::{format, retry};
use crate::RedisSinkConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> RedisSinkConfig {
    let stream = table
        .required_string(
            cx,
            "stream",
            "the stream key to append to; may use {source}, {kind}, {table}, {header:NAME}",
        )
        .unwrap_or_default();
    if let Some(problem) = template_problem("stream", &stream) {
        cx.issue(&table.child("stream"), problem);
    }
    RedisSinkConfig {
        url: broker::url(cx, table, REDIS_SCHEMES, "redis://127.0.0.1:6379"),
        stream,
        maxlen: table.integer(
            cx,
            "maxlen",
            1,
            "; a stream trimmed to nothing keeps no event",
        ),
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(RedisSinkConfig::DEFAULT_TIMEOUT),
        concurrency: table
            .positive_usize(cx, "concurrency", "; at least one lane must deliver")
            .unwrap_or(RedisSinkConfig::DEFAULT_CONCURRENCY),
        retry: table
            .get("retry")
            .and_then(|value| retry(cx, &table.child("retry"), value)),
        format: format(cx, table),
        tls: broker::tls(cx, table),
    }
}
