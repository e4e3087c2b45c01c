//! CloudEvents 1.0 (<https://cloudevents.io>): an event's attributes beside its data, in
//! the two modes of the protocol bindings.
//!
//! * **binary**: the attributes as headers of the protocol (`ce-id`, … over HTTP,
//!   `ce_id`, … in Kafka), the data as the body with its own content type
//!   ([`binary_headers`]);
//! * **structured**: one `application/cloudevents+json` object with the attributes and
//!   the data (`data` for JSON, `data_base64` for anything else) ([`write_structured`]).
//!
//! Attributes of an event (the mapping of `docs/decisions/0029-cloudevents.md`):
//!
//! | attribute | from |
//! |---|---|
//! | `id` | header `ce-id`, else the event id (deterministic for CDC, stable across retries) |
//! | `source` | header `ce-source`, else `/switchyard/<source name>` |
//! | `type` | header `ce-type`, else `switchyard.cdc.<kind>` for changes of a Postgres source, `switchyard.<kind>` otherwise |
//! | `subject` | header `ce-subject`, else the table (`pg-table`) of a change, else the key when it is text |
//! | `time` | header `ce-time`, else the event time (RFC 3339, UTC) |
//! | `datacontenttype` | the event's content type |
//! | `partitionkey` | header `ce-partitionkey`, else the key when it is text (the Partitioning extension) |
//! | others | every other header `ce-<name>` whose name is a valid attribute name (`dataschema`, extensions) |
//!
//! The `ce-*` headers are what the `http` source keeps of a CloudEvent it receives
//! ([`parse_structured`], [`attribute_from_header`]), so a CloudEvent passes through
//! switchyard with its own attributes.
//!
//! Architecture invariant: no IO, no clock (the event time is the event's).

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use serde::Serialize;
use serde::ser::SerializeMap as _;
use serde_json::value::RawValue;

use crate::{Event, WirePayload, is_json_content_type};

/// The CloudEvents version written and accepted.
pub const SPEC_VERSION: &str = "1.0";

/// Content type of one event in structured mode.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// Content type of a batch of structured events (accepted by the `http` source).
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// Prefix of the event headers that hold CloudEvents attributes (`ce-id`, `ce-type`, …).
pub const HEADER_PREFIX: &str = "ce-";

/// Longest attribute name accepted (the specification's limit for extension names is a
/// recommendation of 20; received names get some slack, nothing more).
pub const MAX_ATTRIBUTE_NAME: usize = 64;

/// Kinds of the events a Postgres source writes for changes.
const CHANGE_KINDS: [&str; 5] = ["insert", "update", "delete", "truncate", "schema"];

/// What the encoder knows beside the event.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context {
    /// The event came from a `postgres_cdc` source (its `type` is `switchyard.cdc.<kind>`).
    /// Changes are recognised by their kind without it.
    pub from_cdc: bool,
}

/// How attributes become headers in a protocol binding's binary mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// HTTP: `ce-<name>`, values percent-encoded (space, `"`, `%` and everything outside
    /// printable ASCII), as the HTTP binding requires.
    Http,
    /// Kafka: `ce_<name>`, values as UTF-8 as they are.
    Kafka,
    /// AMQP: `cloudEvents_<name>` application properties (message headers), values as
    /// UTF-8 as they are, as the AMQP binding writes them.
    Amqp,
    /// MQTT 5: user properties named as the attributes are (`id`, `type`, …, no prefix),
    /// values as UTF-8 as they are, as the MQTT binding writes them.
    Mqtt,
}

impl Binding {
    pub const fn prefix(self) -> &'static str {
        match self {
            Binding::Http => "ce-",
            Binding::Kafka => "ce_",
            Binding::Amqp => "cloudEvents_",
            Binding::Mqtt => "",
        }
    }
}

/// What the HTTP binding percent-encodes in a header value (besides non-ASCII bytes).
const HEADER_UNSAFE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// An event's attributes, in the order they are written.
#[derive(Debug, PartialEq, Eq)]
pub struct Attributes<'e> {
    pub id: &'e str,
    pub source: Cow<'e, str>,
    pub type_: Cow<'e, str>,
    pub subject: Option<&'e str>,
    /// `None` for an event without a time (0).
    pub time: Option<Cow<'e, str>>,
    /// `None` when the event has no content type.
    pub datacontenttype: Option<&'e str>,
    /// `dataschema`, `partitionkey` and the extensions, by name.
    pub others: Vec<(&'e str, &'e str)>,
}

/// The attributes of `event` (see the module's table).
pub fn attributes<'e>(event: &'e Event, cx: &Context) -> Attributes<'e> {
    let mut id = None;
    let mut source = None;
    let mut type_ = None;
    let mut subject = None;
    let mut time = None;
    let mut others: Vec<(&str, &str)> = Vec::new();
    for (name, value) in &event.headers {
        let Some(attribute) = name.strip_prefix(HEADER_PREFIX) else {
            continue;
        };
        match attribute {
            "id" => id = Some(value.as_str()),
            "source" => source = Some(value.as_str()),
            "type" => type_ = Some(value.as_str()),
            "subject" => subject = Some(value.as_str()),
            "time" => time = Some(value.as_str()),
            // Written from the event itself.
            "specversion" | "datacontenttype" | "data" | "data_base64" => {}
            other if is_attribute_name(other) => {
                // A name given twice counts once, with its last value.
                match others.iter_mut().find(|(n, _)| *n == other) {
                    Some(slot) => slot.1 = value,
                    None => others.push((other, value)),
                }
            }
            _ => {}
        }
    }
    let text_key = event
        .key
        .as_deref()
        .and_then(|k| std::str::from_utf8(k).ok())
        .filter(|k| !k.is_empty());
    if !others.iter().any(|(n, _)| *n == "partitionkey")
        && let Some(key) = text_key
    {
        others.push(("partitionkey", key));
    }
    let change = cx.from_cdc || CHANGE_KINDS.contains(&event.kind.as_str());
    Attributes {
        id: id.unwrap_or(&event.id),
        source: source.map_or_else(
            || Cow::Owned(format!("/switchyard/{}", event.source)),
            Cow::Borrowed,
        ),
        type_: type_.map_or_else(
            || {
                Cow::Owned(if change {
                    format!("switchyard.cdc.{}", event.kind)
                } else {
                    format!("switchyard.{}", event.kind)
                })
            },
            Cow::Borrowed,
        ),
        subject: subject.or_else(|| {
            if change {
                event.header("pg-table")
            } else {
                text_key
            }
        }),
        time: time
            .map(Cow::Borrowed)
            .or_else(|| rfc3339_millis(event.timestamp_ms).map(Cow::Owned)),
        datacontenttype: Some(event.content_type.as_str()).filter(|c| !c.is_empty()),
        others,
    }
}

/// The headers of `event` in `binding`'s binary mode: `specversion` and every attribute
/// but `datacontenttype`, which is the message's own content type. The data is the
/// event's payload as it is.
pub fn binary_headers(event: &Event, cx: &Context, binding: Binding) -> Vec<(String, String)> {
    let a = attributes(event, cx);
    let prefix = binding.prefix();
    let encode = |value: &str| match binding {
        Binding::Http => utf8_percent_encode(value, HEADER_UNSAFE).to_string(),
        Binding::Kafka | Binding::Amqp | Binding::Mqtt => value.to_owned(),
    };
    let mut headers = Vec::with_capacity(6 + a.others.len());
    let mut push =
        |name: &str, value: &str| headers.push((format!("{prefix}{name}"), encode(value)));
    push("specversion", SPEC_VERSION);
    push("id", a.id);
    push("source", &a.source);
    push("type", &a.type_);
    if let Some(subject) = a.subject {
        push("subject", subject);
    }
    if let Some(time) = &a.time {
        push("time", time);
    }
    for (name, value) in &a.others {
        push(name, value);
    }
    headers
}

/// Appends the structured form of `event` to `out`: one compact JSON object on one line,
/// the data as JSON when the payload is JSON (`data`), else base64 (`data_base64`).
pub fn write_structured(event: &Event, cx: &Context, out: &mut Vec<u8>) {
    let structured = Structured {
        attributes: attributes(event, cx),
        data: event.wire_payload(),
    };
    serde_json::to_writer(out, &structured).expect("writing to memory");
}

struct Structured<'e> {
    attributes: Attributes<'e>,
    data: WirePayload<'e>,
}

impl Serialize for Structured<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let a = &self.attributes;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("specversion", SPEC_VERSION)?;
        map.serialize_entry("id", a.id)?;
        map.serialize_entry("source", &a.source)?;
        map.serialize_entry("type", &a.type_)?;
        if let Some(subject) = a.subject {
            map.serialize_entry("subject", subject)?;
        }
        if let Some(time) = &a.time {
            map.serialize_entry("time", time)?;
        }
        if let Some(content_type) = a.datacontenttype {
            map.serialize_entry("datacontenttype", content_type)?;
        }
        for (name, value) in &a.others {
            map.serialize_entry(name, value)?;
        }
        match &self.data {
            WirePayload::Base64(data) => map.serialize_entry("data_base64", data)?,
            data => map.serialize_entry("data", data)?,
        }
        map.end()
    }
}

/// Whether `name` is a CloudEvents attribute name: lowercase ASCII letters and digits.
pub fn is_attribute_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The event header holding attribute `name` (`ce-<name>`).
pub fn header_name(name: &str) -> String {
    format!("{HEADER_PREFIX}{name}")
}

/// The attribute of an HTTP header in binary mode: `Ok(Some((name, value)))` for a
/// `ce-*` header (its name lowercased, its value percent-decoded), `Ok(None)` for any
/// other header, `Err` (what is wrong, for a 400 answer) for a `ce-*` header that is not
/// a valid attribute.
pub fn attribute_from_header(name: &str, value: &str) -> Result<Option<(String, String)>, String> {
    let Some(attribute) = name
        .get(..HEADER_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(HEADER_PREFIX))
        .map(|_| name[HEADER_PREFIX.len()..].to_ascii_lowercase())
    else {
        return Ok(None);
    };
    if !is_attribute_name(&attribute) {
        return Err(format!(
            "header `{name}` does not name a CloudEvents attribute: after `ce-`, use 1 to {MAX_ATTRIBUTE_NAME} lowercase letters and digits"
        ));
    }
    let decoded = percent_decode_str(value)
        .decode_utf8()
        .map_err(|_| format!("header `{name}` is not percent-encoded UTF-8"))?;
    Ok(Some((attribute, decoded.into_owned())))
}

/// A CloudEvent received in structured mode, as an event's parts.
#[derive(Debug, PartialEq, Eq)]
pub struct Received {
    /// `data` (its JSON text, as sent) or `data_base64` decoded; empty without either.
    pub payload: Vec<u8>,
    /// `datacontenttype`, else `application/json` for `data` and
    /// `application/octet-stream` for `data_base64`.
    pub content_type: String,
    /// Every other attribute as a `ce-<name>` header (`specversion` included), in the
    /// order received. Numbers and booleans in their JSON text.
    pub headers: Vec<(String, String)>,
}

/// Checks that the binary-mode attributes `headers` (names without `ce-`) hold a
/// CloudEvent of version 1.0 with `id`, `source` and `type`.
pub fn check_required(headers: &[(String, String)]) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match get("specversion") {
        Some(SPEC_VERSION) => {}
        Some(other) => {
            return Err(format!(
                "CloudEvents specversion {other:?} is not supported; send \"{SPEC_VERSION}\""
            ));
        }
        None => return Err("a CloudEvent needs `specversion` (\"1.0\")".into()),
    }
    for required in ["id", "source", "type"] {
        if get(required).is_none_or(str::is_empty) {
            return Err(format!("a CloudEvent needs a non-empty `{required}`"));
        }
    }
    Ok(())
}

/// Most attributes one received CloudEvent may have (the required ones, the optional
/// ones and extensions together): each becomes an event header.
pub const MAX_ATTRIBUTES: usize = 64;

/// How much memory parsing structured CloudEvents may take per byte of the request body,
/// at most: an attribute costs an event header (two strings and their pair, about 110
/// bytes) for as little as 6 bytes of JSON (`"a":0,`). The http source reserves this
/// much before it parses.
pub const STRUCTURED_EXPANSION: u64 = 20;

/// The members of one JSON object, their values as raw JSON text, read without building
/// a tree and refused past [`MAX_ATTRIBUTES`] + 2 (`data` or `data_base64` beside them).
struct Members<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some((name, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    if members.len() > MAX_ATTRIBUTES + 1 {
                        return Err(serde::de::Error::custom(format!(
                            "more than {MAX_ATTRIBUTES} attributes"
                        )));
                    }
                    members.push((name, value));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// Parses one CloudEvent in structured mode (a JSON object). Errors say what is wrong,
/// for a 400 answer. No JSON tree is built: `data` is copied as its text, attributes
/// are read one by one, at most [`MAX_ATTRIBUTES`].
pub fn parse_structured(json: &RawValue) -> Result<Received, String> {
    let Members(members) = serde_json::from_str(json.get())
        .map_err(|e| format!("a structured CloudEvent must be a JSON object: {e}"))?;
    let mut attributes: Vec<(String, String)> = Vec::with_capacity(members.len());
    let mut data: Option<&RawValue> = None;
    let mut data_base64 = None;
    let mut content_type = None;
    let text = |name: &str, raw: &RawValue| -> Result<String, String> {
        serde_json::from_str::<String>(raw.get()).map_err(|_| format!("`{name}` must be a string"))
    };
    for (name, raw) in members {
        // A name given twice counts once, with its last value (as JSON objects read).
        attributes.retain(|(n, _)| *n != name);
        match name.as_ref() {
            "data" => data = Some(raw),
            "data_base64" => {
                data_base64 = Some(
                    B64.decode(text("data_base64", raw)?)
                        .map_err(|e| format!("`data_base64` is not base64: {e}"))?,
                );
            }
            "datacontenttype" => content_type = Some(text("datacontenttype", raw)?),
            other => {
                if !is_attribute_name(other) {
                    return Err(format!(
                        "`{other}` is not a CloudEvents attribute name: use 1 to {MAX_ATTRIBUTES} lowercase letters and digits"
                    ));
                }
                let value = raw.get();
                let value = match value.as_bytes().first() {
                    Some(b'"') => text(other, raw)?,
                    // Numbers and booleans in their JSON text.
                    Some(b'-' | b'0'..=b'9' | b't' | b'f') => value.to_owned(),
                    Some(b'n') => continue,
                    _ => {
                        return Err(format!(
                            "attribute `{other}` must be a string, a number or a boolean"
                        ));
                    }
                };
                attributes.push((other.to_owned(), value));
            }
        }
    }
    check_required(&attributes)?;
    let (payload, content_type) = match (data, data_base64) {
        (Some(_), Some(_)) => {
            return Err("a CloudEvent has `data` or `data_base64`, not both".into());
        }
        (Some(data), None) => {
            // Text data of a non-JSON content type is the string itself.
            let payload = match (&content_type, serde_json::from_str::<String>(data.get())) {
                (Some(ct), Ok(text)) if !is_json_content_type(ct) => text.into_bytes(),
                _ => data.get().as_bytes().to_vec(),
            };
            (
                payload,
                content_type.unwrap_or_else(|| "application/json".into()),
            )
        }
        (None, Some(bytes)) => (
            bytes,
            content_type.unwrap_or_else(|| "application/octet-stream".into()),
        ),
        (None, None) => (
            Vec::new(),
            content_type.unwrap_or_else(|| "application/octet-stream".into()),
        ),
    };
    Ok(Received {
        payload,
        content_type,
        headers: attributes
            .into_iter()
            .map(|(name, value)| (header_name(&name), value))
            .collect(),
    })
}

/// `ms` since the Unix epoch as RFC 3339 in UTC with milliseconds; `None` for 0 (no
/// time) or a time past year 9999.
fn rfc3339_millis(ms: u64) -> Option<String> {
    if ms == 0 {
        return None;
    }
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, key: Option<&str>, payload: &str, content_type: &str) -> Event {
        Event {
            id: "0/16B3748/0".into(),
            source: "orders_db".into(),
            kind: kind.into(),
            key: key.map(|k| k.as_bytes().to_vec()),
            payload: payload.as_bytes().to_vec(),
            content_type: content_type.into(),
            headers: Vec::new(),
            timestamp_ms: 1_795_600_800_123,
            payload_is_compact_json: false,
        }
    }

    fn structured(event: &Event, cx: &Context) -> serde_json::Value {
        let mut out = Vec::new();
        write_structured(event, cx, &mut out);
        assert!(!out.contains(&b'\n'), "one line");
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn a_change_becomes_a_cdc_typed_event_about_its_table() {
        let mut e = event(
            "insert",
            Some(r#"{"id":7}"#),
            r#"{"op":"insert"}"#,
            "application/json",
        );
        e.set_header("pg-table", "public.orders");
        let v = structured(&e, &Context::default());
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "0/16B3748/0");
        assert_eq!(v["source"], "/switchyard/orders_db");
        assert_eq!(v["type"], "switchyard.cdc.insert");
        assert_eq!(v["subject"], "public.orders");
        assert_eq!(v["time"], "2026-11-25T10:00:00.123Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v["partitionkey"], r#"{"id":7}"#);
        assert_eq!(v["data"], serde_json::json!({"op": "insert"}));
        assert!(v.get("data_base64").is_none());
    }

    #[test]
    fn a_message_is_typed_by_its_kind_and_about_its_key() {
        let e = event(
            "message",
            Some("customer-9"),
            "{\n\"a\": 1}",
            "application/json",
        );
        let v = structured(&e, &Context::default());
        assert_eq!(v["type"], "switchyard.message");
        assert_eq!(v["subject"], "customer-9");
        assert_eq!(v["data"], serde_json::json!({"a": 1}));
        let from_cdc = structured(&e, &Context { from_cdc: true });
        assert_eq!(from_cdc["type"], "switchyard.cdc.message");
    }

    #[test]
    fn bytes_go_as_base64_and_a_missing_time_or_key_is_left_out() {
        let mut e = event(
            "message",
            None,
            "\u{0}\u{1}binary",
            "application/octet-stream",
        );
        e.timestamp_ms = 0;
        let v = structured(&e, &Context::default());
        assert_eq!(v["data_base64"], B64.encode(b"\x00\x01binary"));
        assert!(v.get("data").is_none());
        assert!(v.get("time").is_none());
        assert!(v.get("subject").is_none());
        assert!(v.get("partitionkey").is_none());
    }

    #[test]
    fn received_attributes_pass_through() {
        let raw: Box<RawValue> = serde_json::from_str(
            r#"{"specversion":"1.0","id":"A-1","source":"https://shop.example/orders","type":"com.example.order.paid","subject":"order 9","time":"2026-01-01T00:00:00Z","traceparent":"00-ab","sequence":42,"data":{"total":3}}"#,
        )
        .unwrap();
        let received = parse_structured(&raw).expect("a valid CloudEvent");
        assert_eq!(received.payload, br#"{"total":3}"#);
        assert_eq!(received.content_type, "application/json");
        let mut e = event("message", None, "", "");
        e.payload = received.payload;
        e.content_type = received.content_type.into();
        e.headers = received.headers;
        let v = structured(&e, &Context::default());
        assert_eq!(v["id"], "A-1");
        assert_eq!(v["source"], "https://shop.example/orders");
        assert_eq!(v["type"], "com.example.order.paid");
        assert_eq!(v["subject"], "order 9");
        assert_eq!(v["time"], "2026-01-01T00:00:00Z");
        assert_eq!(v["traceparent"], "00-ab");
        assert_eq!(v["sequence"], "42");
        assert_eq!(v["data"], serde_json::json!({"total": 3}));

        let http = binary_headers(&e, &Context::default(), Binding::Http);
        let get = |name: &str| {
            http.iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("ce-specversion"), Some("1.0"));
        assert_eq!(get("ce-subject"), Some("order%209"));
        assert_eq!(get("ce-type"), Some("com.example.order.paid"));
        assert_eq!(
            get("ce-datacontenttype"),
            None,
            "the message's content type"
        );
        let decoded = attribute_from_header("CE-Subject", get("ce-subject").unwrap()).unwrap();
        assert_eq!(decoded, Some(("subject".into(), "order 9".into())));

        let kafka = binary_headers(&e, &Context::default(), Binding::Kafka);
        assert!(kafka.contains(&("ce_subject".into(), "order 9".into())));
    }

    #[test]
    fn header_values_are_percent_encoded_only_where_http_needs_it() {
        let mut e = event("message", Some("é \"%"), "{}", "application/json");
        e.set_header("ce-source", "urn:x");
        let http = binary_headers(&e, &Context::default(), Binding::Http);
        let key = http.iter().find(|(n, _)| n == "ce-partitionkey").unwrap();
        assert_eq!(key.1, "%C3%A9%20%22%25");
        assert!(
            http.iter()
                .all(|(_, v)| v.bytes().all(|b| (0x21..0x7f).contains(&b)))
        );
        assert_eq!(
            attribute_from_header("ce-partitionkey", &key.1)
                .unwrap()
                .unwrap()
                .1,
            "é \"%"
        );
    }

    #[test]
    fn invalid_cloudevents_are_refused_with_the_reason() {
        let cases = [
            (r#"[1]"#, "JSON object"),
            (
                r#"{"specversion":"0.3","id":"1","source":"s","type":"t"}"#,
                "0.3",
            ),
            (r#"{"id":"1","source":"s","type":"t"}"#, "specversion"),
            (r#"{"specversion":"1.0","source":"s","type":"t"}"#, "`id`"),
            (
                r#"{"specversion":"1.0","id":"1","source":"","type":"t"}"#,
                "`source`",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data":1,"data_base64":"AA=="}"#,
                "not both",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","Bad-Name":"x"}"#,
                "Bad-Name",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","ext":{"a":1}}"#,
                "`ext`",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s","type":"t","data_base64":"%%"}"#,
                "base64",
            ),
        ];
        for (json, expected) in cases {
            let raw: Box<RawValue> = serde_json::from_str(json).unwrap();
            let error = parse_structured(&raw).expect_err(json);
            assert!(error.contains(expected), "{json}: {error}");
        }
        let many: String = (0..=MAX_ATTRIBUTES)
            .map(|i| format!(",\"x{i}\":1"))
            .collect();
        let raw: Box<RawValue> = serde_json::from_str(&format!(
            r#"{{"specversion":"1.0","id":"1","source":"s","type":"t"{many}}}"#
        ))
        .unwrap();
        let error = parse_structured(&raw).unwrap_err();
        assert!(error.contains("more than 64 attributes"), "{error}");
        assert!(attribute_from_header("ce-a_b", "x").is_err());
        assert!(attribute_from_header("ce-x", "%FF").is_err());
        assert_eq!(attribute_from_header("x-key", "k").unwrap(), None);
    }

    #[test]
    fn text_data_of_a_text_type_is_the_text() {
        let raw: Box<RawValue> = serde_json::from_str(
            r#"{"specversion":"1.0","id":"1","source":"s","type":"t","datacontenttype":"text/plain","data":"hello"}"#,
        )
        .unwrap();
        let received = parse_structured(&raw).unwrap();
        assert_eq!(received.payload, b"hello");
        assert_eq!(received.content_type, "text/plain");
        assert!(
            received
                .headers
                .contains(&("ce-specversion".into(), "1.0".into()))
        );
    }
}
