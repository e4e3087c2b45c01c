//! `type = "mqtt"`.

use super::super::sinks::mqtt::{client_id, mqtt_url};
use super::super::sinks::rabbitmq::ca_file;
use super::super::walk::{Ctx, Table};
use crate::MqttSourceConfig;

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> MqttSourceConfig {
    let topics = table.strings(cx, "topics");
    if topics.is_none() && table.get("topics").is_none() {
        table.missing(
            cx,
            "topics",
            "the topic filters to subscribe to, e.g. [\"sensors/#\"]",
        );
    } else if topics.as_ref().is_some_and(Vec::is_empty) {
        cx.issue(
            &table.child("topics"),
            "`topics` is empty: name at least one topic filter",
        );
    }
    MqttSourceConfig {
        url: mqtt_url(cx, table),
        topics: topics.unwrap_or_default(),
        client_id: client_id(cx, table),
        ca_file: ca_file(cx, table),
    }
}
