//! `type = "redis"`.

use super::super::walk::{Ctx, Table};
use super::broker;
use crate::RedisSourceConfig;

/// URL schemes of a Redis server.
pub(crate) const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://"];

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> RedisSourceConfig {
    RedisSourceConfig {
        url: broker::url(cx, table, REDIS_SCHEMES, "redis://127.0.0.1:6379"),
        stream: table
            .required_string(cx, "stream", "the stream key to read, e.g. \"events\"")
            .unwrap_or_default(),
        group: table
            .non_empty_string(cx, "group")
            .unwrap_or_else(|| RedisSourceConfig::DEFAULT_GROUP.to_string()),
        consumer: table
            .non_empty_string(cx, "consumer")
            .unwrap_or_else(|| RedisSourceConfig::DEFAULT_CONSUMER.to_string()),
        create: table.boolean(cx, "create").unwrap_or(false),
        claim_idle: table
            .duration(cx, "claim_idle", false)
            .unwrap_or(RedisSourceConfig::DEFAULT_CLAIM_IDLE),
        max_entry_bytes: table
            .size(cx, "max_entry_bytes")
            .unwrap_or(RedisSourceConfig::DEFAULT_MAX_ENTRY_BYTES),
        tls: broker::tls(cx, table),
    }
}
