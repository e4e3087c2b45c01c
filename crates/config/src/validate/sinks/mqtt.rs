//! `type = "mqtt"`, and the URL check its source shares.

use super::super::walk::{Ctx, Table};
use super::rabbitmq::ca_file;
use super::{cloudevents_mode, format, retry};
use crate::{CloudEventsMode, MqttProtocol, MqttSinkConfig, SinkFormat, name_template, redact};

pub(super) fn read(cx: &mut Ctx<'_>, table: &Table<'_>) -> MqttSinkConfig {
    let topic = table
        .required_string(
            cx,
            "topic",
            "the topic to publish to, e.g. \"events/{source}\"",
        )
        .unwrap_or_default();
    if let Err(problem) = name_template::parse(&topic) {
        cx.issue(&table.child("topic"), format!("topic {problem}"));
    } else if topic.contains(['+', '#']) {
        cx.issue(
            &table.child("topic"),
            format!(
                "topic {topic:?} has a wildcard (+ or #): a message is published to one topic name"
            ),
        );
    }
    let inflight = table
        .positive_u32(cx, "inflight", "; at least one publish must be in flight")
        .map_or(MqttSinkConfig::DEFAULT_INFLIGHT, |n| {
            u16::try_from(n).unwrap_or_else(|_| {
                cx.issue(
                    &table.child("inflight"),
                    "at most 65535 publishes can be in flight",
                );
                MqttSinkConfig::DEFAULT_INFLIGHT
            })
        });
    let format = format(cx, table);
    let protocol = protocol(cx, table);
    let cloudevents_mode = cloudevents_mode(cx, table, format);
    if protocol == MqttProtocol::V3
        && format == SinkFormat::CloudEvents
        && table.get("cloudevents_mode").is_some()
        && cloudevents_mode == CloudEventsMode::Binary
    {
        cx.issue(
            &table.child("cloudevents_mode"),
            "cloudevents_mode = \"binary\" needs message properties, which MQTT 3.1.1 lacks: \
             set protocol = \"5\", or cloudevents_mode = \"structured\"",
        );
    }
    MqttSinkConfig {
        url: mqtt_url(cx, table),
        topic,
        client_id: client_id(cx, table),
        ca_file: ca_file(cx, table),
        inflight,
        timeout: table
            .duration(cx, "timeout", false)
            .unwrap_or(MqttSinkConfig::DEFAULT_TIMEOUT),
        concurrency: table
            .positive_usize(cx, "concurrency", "; at least one lane must deliver")
            .unwrap_or(MqttSinkConfig::DEFAULT_CONCURRENCY),
        retry: table
            .get("retry")
            .and_then(|value| retry(cx, &table.child("retry"), value)),
        format,
        cloudevents_mode,
        protocol,
    }
}

/// `protocol` of an MQTT sink or source: `"3.1.1"` (the default) or `"5"`.
pub(crate) fn protocol(cx: &mut Ctx<'_>, table: &Table<'_>) -> MqttProtocol {
    if let Some(number) = table.get("protocol").filter(|v| v.is_number()) {
        cx.issue(
            &table.child("protocol"),
            format!(
                "protocol = {number} is a number: write the MQTT version as a string, one of: \
                 \"3.1.1\", \"5\""
            ),
        );
        return MqttProtocol::default();
    }
    table.choice_of(cx, "protocol").unwrap_or_default()
}

/// `client_id` of an MQTT sink or source: 1 to 23 letters and digits are what every
/// broker must take; longer ones most brokers take too, so only emptiness and length
/// past the protocol's limit are refused.
pub(crate) fn client_id(cx: &mut Ctx<'_>, table: &Table<'_>) -> Option<String> {
    let id = table.non_empty_string(cx, "client_id")?;
    if id.len() > 65_535 {
        cx.issue(
            &table.child("client_id"),
            "client_id is longer than MQTT allows (65535 bytes)",
        );
    }
    Some(id)
}

/// `url` of an MQTT sink or source: `mqtt://` or `mqtts://` with a host and a port.
pub(crate) fn mqtt_url(cx: &mut Ctx<'_>, table: &Table<'_>) -> String {
    let url = table
        .required_string(cx, "url", "the broker, e.g. \"mqtt://127.0.0.1:1883\"")
        .unwrap_or_default();
    if url.is_empty() {
        return url;
    }
    let rest = url
        .strip_prefix("mqtt://")
        .or_else(|| url.strip_prefix("mqtts://"));
    let host_port = rest.map(|r| {
        let r = r.split(['/', '?']).next().unwrap_or_default();
        r.rsplit_once('@').map_or(r, |(_, h)| h)
    });
    let valid = host_port.is_some_and(|hp| {
        hp.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
        })
    });
    if !valid {
        cx.issue(
            &table.child("url"),
            format!(
                "invalid url {:?}: write mqtt://host:port (or mqtts://host:port for TLS), with \
                 user:password@ before the host to authenticate, e.g. \"mqtt://127.0.0.1:1883\"",
                redact::url(&url)
            ),
        );
    }
    url
}
