//! `type = "mqtt"`.

use super::super::sinks::mqtt::{client_id, mqtt_url, protocol};
use super::super::sinks::rabbitmq::ca_file;
use super::super::walk::{Ctx, Table};
use crate::{MqttProtocol, MqttSourceConfig};

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
    let protocol = protocol(cx, table);
    let session_expiry = table.duration(cx, "session_expiry", false);
    if let Some(expiry) = session_expiry {
        if protocol == MqttProtocol::V3 {
            cx.warn(
                &table.child("session_expiry"),
                "session_expiry is ignored with MQTT 3.1.1 (the broker decides how long a \
                 session lives): set protocol = \"5\" or remove `session_expiry`",
            );
        } else if expiry.as_secs() > u64::from(u32::MAX - 1) {
            cx.issue(
                &table.child("session_expiry"),
                format!(
                    "session_expiry is at most {} seconds (about 136 years) in MQTT 5",
                    u32::MAX - 1
                ),
            );
        } else if expiry.as_secs() == 0 {
            cx.issue(
                &table.child("session_expiry"),
                "session_expiry must be at least 1s: a session that ends with its connection \
                 loses what a crash left unacknowledged",
            );
        }
    }
    MqttSourceConfig {
        url: mqtt_url(cx, table),
        topics: topics.unwrap_or_default(),
        client_id: client_id(cx, table),
        ca_file: ca_file(cx, table),
        protocol,
        session_expiry: session_expiry.unwrap_or(MqttSourceConfig::DEFAULT_SESSION_EXPIRY),
    }
}
