//! The event model shared by every switchyard crate.
//!
//! An [`Event`] is what sources produce, plugins inspect and sinks deliver. This crate
//! knows two encodings of it:
//!
//! * the **record** encoding stored in the durable log ([`Event::encode_record`]), a
//!   versioned binary form (see `docs/decisions/0003-event-record-encoding.md`);
//! * the **wire** JSON form ([`Event::wire`], defined once with serde) that JSON sinks
//!   write and the HTTP API answers with, part of the product contract
//!   (`docs/design.md`, "Event model"): payloads that are JSON stay JSON, anything else
//!   is base64. It is independent of the record encoding.
//!
//! [`formats`] holds the other shapes a sink may write an event in (its `format`):
//! Debezium's change events, CloudEvents.
//!
//! Architecture invariant: no IO, no async runtime.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The text fields of an [`Event`] (id, source, kind, content type): a string that keeps
/// up to 24 bytes inline, so the common names cost no allocation per event.
pub use compact_str::{CompactString, format_compact};

pub mod formats;

/// `kind` of events that come from HTTP, queues and Kafka.
pub const KIND_MESSAGE: &str = "message";

/// One event flowing through switchyard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Event {
    /// Unique id. Deterministic for CDC (`<commit_lsn>/<seq>`); the `Idempotency-Key`
    /// or a UUIDv7 for HTTP.
    pub id: CompactString,
    /// Name of the source in the config.
    pub source: CompactString,
    /// `message`, or `insert`/`update`/`delete`/`truncate`/`schema` for CDC.
    pub kind: CompactString,
    /// Partition and order key. Events with the same key reach each sink in order.
    // Bytes, not a sequence of numbers: the same postcard encoding (a length, then the
    // bytes), written and read in one copy instead of one call per byte.
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    /// The body.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// e.g. `application/json`.
    pub content_type: CompactString,
    /// Free-form metadata, in order. Names are case-sensitive.
    pub headers: Vec<(String, String)>,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The payload is one JSON value on one line, written by the code that made this
    /// event (a CDC record): the wire form copies it as it is instead of checking it
    /// again. Set only where the payload was written, never for bytes that came from
    /// outside; everything else leaves it `false` and the payload is checked when it is
    /// written out. Not stored in records, and not part of equality.
    #[serde(skip)]
    pub payload_is_compact_json: bool,
}

/// Equal when every field but the [`Event::payload_is_compact_json`] mark is.
impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            id,
            source,
            kind,
            key,
            payload,
            content_type,
            headers,
            timestamp_ms,
            payload_is_compact_json: _,
        } = self;
        *id == other.id
            && *source == other.source
            && *kind == other.kind
            && *key == other.key
            && *payload == other.payload
            && *content_type == other.content_type
            && *headers == other.headers
            && *timestamp_ms == other.timestamp_ms
    }
}

impl Eq for Event {}

/// Version byte in front of every record so the format can evolve.
const RECORD_V1: u8 = 1;

/// Why a stored record could not be turned back into an event.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("unknown record version {0}; this switchyard is too old for its data directory")]
    UnknownVersion(u8),
    #[error("malformed record: {0}")]
    Malformed(#[from] postcard::Error),
}

impl Event {
    /// Encodes the event for the durable log.
    pub fn encode_record(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.payload.len() + self.id.len());
        out.push(RECORD_V1);
        // Serialising plain owned data into a Vec cannot fail.
        postcard::to_io(self, &mut out).expect("encoding an event into memory");
        out
    }

    /// Decodes a record written by [`Event::encode_record`].
    pub fn decode_record(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.first() {
            None => Err(DecodeError::Empty),
            Some(&RECORD_V1) => Ok(postcard::from_bytes(&bytes[1..])?),
            Some(&v) => Err(DecodeError::UnknownVersion(v)),
        }
    }

    /// The value of the first header called `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` to `value`, replacing an existing header of that name.
    pub fn set_header(&mut self, name: &str, value: impl Into<String>) {
        let value = value.into();
        match self.headers.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.headers.push((name.to_owned(), value)),
        }
    }

    /// Whether the payload should be treated as JSON.
    pub fn payload_is_json(&self) -> bool {
        is_json_content_type(&self.content_type)
            && serde_json::from_slice::<serde::de::IgnoredAny>(&self.payload).is_ok()
    }

    /// The JSON wire form: `{"id","source","kind","key","timestamp_ms","content_type",
    /// "headers":{…},"payload":…}`. A payload that is not JSON is a base64 string and the
    /// object gets `"payload_encoding":"base64"`; a key that is not UTF-8 likewise gets
    /// `"key_encoding":"base64"`. The same form as [`Event::wire`], as a tree.
    pub fn to_wire_json(&self) -> serde_json::Value {
        serde_json::to_value(self.wire()).expect("the wire form is JSON")
    }

    /// The wire form, borrowed from the event, for serde: the definition of the JSON wire
    /// form, which [`Event::to_wire_json`], [`Event::write_wire_line`] and answers that
    /// embed an event serialize. A JSON payload is checked here and copied as it is when
    /// compact. (`write_wire_line` has one shortcut: the same fields, with a payload
    /// marked [`Event::payload_is_compact_json`] copied unchecked.)
    pub fn wire(&self) -> WireEvent<'_> {
        let payload = self.wire_payload();
        let mut wire = self.wire_fields(Some(payload));
        wire.payload_encoding =
            matches!(wire.payload, Some(WirePayload::Base64(_))).then_some(BASE64);
        wire
    }

    /// The payload as the wire form writes it: JSON on one line when it is JSON, else
    /// base64.
    pub(crate) fn wire_payload(&self) -> WirePayload<'_> {
        let json = is_json_content_type(&self.content_type);
        match json
            .then(|| serde_json::from_slice::<&RawValue>(&self.payload).ok())
            .flatten()
        {
            // A payload spread over lines would break the one-line form. Checked JSON
            // has no raw line break inside a string, so each one is whitespace between
            // tokens and becomes a space: the value, digits and all, is unchanged. (Not
            // a `Value` round trip: that refuses JSON the check above accepts, such as
            // `1e400` or nesting past its depth limit.)
            Some(raw) if memchr::memchr2(b'\n', b'\r', raw.get().as_bytes()).is_some() => {
                let one_line = raw.get().replace(['\n', '\r'], " ");
                match RawValue::from_string(one_line) {
                    Ok(raw) => WirePayload::OneLine(raw),
                    Err(_) => WirePayload::Base64(B64.encode(&self.payload)),
                }
            }
            Some(raw) => WirePayload::Raw(raw),
            // Valid JSON that does not borrow as one raw value (escapes in a bare
            // string are fine; this is the path for anything serde_json copies).
            None if json => match serde_json::from_slice::<serde_json::Value>(&self.payload) {
                Ok(v) => WirePayload::Tree(v),
                Err(_) => WirePayload::Base64(B64.encode(&self.payload)),
            },
            None => WirePayload::Base64(B64.encode(&self.payload)),
        }
    }

    /// The wire form with `payload` as given (`None`: left out).
    fn wire_fields<'a>(&'a self, payload: Option<WirePayload<'a>>) -> WireEvent<'a> {
        let (key, key_encoding) = match &self.key {
            None => (None, None),
            Some(k) => match std::str::from_utf8(k) {
                Ok(s) => (Some(Cow::Borrowed(s)), None),
                Err(_) => (Some(Cow::Owned(B64.encode(k))), Some(BASE64)),
            },
        };
        WireEvent {
            id: &self.id,
            source: &self.source,
            kind: &self.kind,
            key_encoding,
            key,
            timestamp_ms: self.timestamp_ms,
            content_type: &self.content_type,
            headers: WireHeaders(&self.headers),
            payload,
            payload_encoding: None,
        }
    }

    /// The wire form as one line of JSON (no trailing newline).
    pub fn to_wire_line(&self) -> String {
        let mut out = Vec::with_capacity(160 + self.payload.len());
        self.write_wire_line(&mut out);
        // Serialised JSON is UTF-8.
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Appends [`Event::to_wire_line`] to `out`, without building a JSON tree: a compact
    /// JSON payload is checked and copied as it is, or copied unchecked when the event is
    /// marked [`Event::payload_is_compact_json`] (sinks write millions of these).
    pub fn write_wire_line(&self, out: &mut Vec<u8>) {
        if self.payload_is_compact_json && is_json_content_type(&self.content_type) {
            debug_assert!(
                serde_json::from_slice::<&RawValue>(&self.payload).is_ok()
                    && !self.payload.contains(&b'\n')
                    && !self.payload.contains(&b'\r'),
                "an event marked compact JSON carries something else"
            );
            // Everything but the payload, then the payload's own bytes in its place (the
            // last field: `payload_encoding` is absent for JSON).
            let head = self.wire_fields(None);
            serde_json::to_writer(&mut *out, &head).expect("writing to memory");
            debug_assert_eq!(out.last(), Some(&b'}'));
            out.pop();
            out.extend_from_slice(b",\"payload\":");
            out.extend_from_slice(&self.payload);
            out.push(b'}');
            return;
        }
        serde_json::to_writer(&mut *out, &self.wire()).expect("writing to memory");
    }

    /// Parses the wire form back into an event (used by the CLI and tests). Missing
    /// fields get defaults (`source` empty, `kind` `message`, `content_type`
    /// `application/json`, no headers, an empty payload, time 0); only `id` is required.
    pub fn from_wire_json(value: &serde_json::Value) -> Result<Self, String> {
        if !value.is_object() {
            return Err("an event must be a JSON object".into());
        }
        let wire = WireEventOwned::deserialize(value).map_err(|e| e.to_string())?;
        wire.into_event()
    }
}

/// `"base64"`, the value of `key_encoding` and `payload_encoding`.
const BASE64: &str = "base64";

/// The JSON wire form of an [`Event`], borrowed from it ([`Event::wire`]); serialize it
/// with serde. Field order: `id`, `source`, `kind`, (`key_encoding`), `key`,
/// `timestamp_ms`, `content_type`, `headers`, `payload`, (`payload_encoding`).
#[derive(Serialize)]
pub struct WireEvent<'a> {
    id: &'a str,
    source: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    key: Option<Cow<'a, str>>,
    timestamp_ms: u64,
    content_type: &'a str,
    headers: WireHeaders<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<WirePayload<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_encoding: Option<&'static str>,
}

/// Headers as a JSON object. A name given twice appears once, at its first place, with
/// its last value (as inserting into a JSON object does).
struct WireHeaders<'a>(&'a [(String, String)]);

impl Serialize for WireHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let headers = self.0;
        let unique = headers
            .iter()
            .enumerate()
            .all(|(i, (n, _))| headers[..i].iter().all(|(m, _)| m != n));
        let mut map = serializer.serialize_map(None)?;
        for (i, (name, value)) in headers.iter().enumerate() {
            if unique {
                map.serialize_entry(name, value)?;
            } else if headers[..i].iter().all(|(m, _)| m != name) {
                let last = headers
                    .iter()
                    .rev()
                    .find(|(m, _)| m == name)
                    .map_or(value, |(_, v)| v);
                map.serialize_entry(name, last)?;
            }
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum WirePayload<'a> {
    /// Compact JSON, copied as it is.
    Raw(&'a RawValue),
    /// JSON that spanned lines, its line breaks turned into spaces.
    OneLine(Box<RawValue>),
    /// JSON written again (serde_json could not borrow it as one raw value).
    Tree(serde_json::Value),
    Base64(String),
}

/// The wire form as read back: `id` is required, everything else has a default; values
/// of the wrong type in the optional text fields count as missing (as they always have).
#[derive(Deserialize)]
struct WireEventOwned {
    id: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "text")]
    source: Option<String>,
    #[serde(default, deserialize_with = "text")]
    kind: Option<String>,
    #[serde(default)]
    key: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "text")]
    key_encoding: Option<String>,
    #[serde(default)]
    timestamp_ms: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "text")]
    content_type: Option<String>,
    #[serde(default)]
    headers: Option<serde_json::Value>,
    /// `Some(null)` for `"payload": null` (the payload `null`), `None` when absent.
    #[serde(default, deserialize_with = "present")]
    payload: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "text")]
    payload_encoding: Option<String>,
}

/// A string, or `None` for anything else.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

/// Any value, `null` included: the field was present.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

impl WireEventOwned {
    fn into_event(self) -> Result<Event, String> {
        use serde_json::Value;
        let Some(Value::String(id)) = self.id else {
            return Err("field `id` must be a string".into());
        };
        let base64 = |e: &Option<String>| e.as_deref() == Some(BASE64);
        let key = match self.key {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if base64(&self.key_encoding) => {
                Some(B64.decode(s).map_err(|e| format!("field `key`: {e}"))?)
            }
            Some(Value::String(s)) => Some(s.into_bytes()),
            Some(_) => return Err("field `key` must be a string or null".into()),
        };
        let payload = match self.payload {
            None => Vec::new(),
            Some(Value::String(s)) if base64(&self.payload_encoding) => {
                B64.decode(s).map_err(|e| format!("field `payload`: {e}"))?
            }
            Some(v) => serde_json::to_vec(&v).map_err(|e| e.to_string())?,
        };
        let headers = match self.headers {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(m)) => m
                .into_iter()
                .map(|(k, v)| match v {
                    Value::String(s) => (k, s),
                    other => (k, other.to_string()),
                })
                .collect(),
            Some(_) => return Err("field `headers` must be an object".into()),
        };
        Ok(Event {
            id: id.into(),
            source: self.source.unwrap_or_default().into(),
            kind: self.kind.map_or_else(|| KIND_MESSAGE.into(), Into::into),
            key,
            payload,
            content_type: self
                .content_type
                .map_or_else(|| "application/json".into(), Into::into),
            headers,
            timestamp_ms: self
                .timestamp_ms
                .and_then(|v| v.as_u64())
                .unwrap_or_default(),
            payload_is_compact_json: false,
        })
    }
}

/// `application/json`, `application/x-ndjson`-style `+json` types and `text/json`.
pub fn is_json_content_type(content_type: &str) -> bool {
    // Compared without allocating: this runs for every event a JSON sink writes.
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .as_bytes();
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.eq_ignore_ascii_case(b"text/json")
        || essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wire_line_is_the_wire_json_on_one_line() {
        let mut cases = Vec::new();
        let mut e = sample();
        e.content_type = "application/json".into();
        e.payload = br#"{"a":1,"b":[true,null,"x\ny"]}"#.to_vec();
        cases.push(e.clone());
        let mut binary = e.clone();
        binary.content_type = "application/octet-stream".into();
        binary.key = Some(vec![0xff, 0x00]);
        cases.push(binary);
        let mut not_json = e.clone();
        not_json.payload = b"{not json".to_vec();
        cases.push(not_json);
        let mut twice = e.clone();
        twice.headers = vec![("h".into(), "1".into()), ("h".into(), "2".into())];
        cases.push(twice);
        for case in &cases {
            let line = case.to_wire_line();
            let reparsed: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(reparsed, case.to_wire_json(), "{line}");
            assert_eq!(
                line,
                case.to_wire_json().to_string(),
                "compact payloads are copied as they are"
            );
        }
        // Line breaks anywhere in a payload, also past the first 64 bytes (the search
        // for them works on blocks).
        let pad = "x".repeat(200);
        for payload in [
            "{\n  \"a\": 1\n}".to_owned(),
            "{\"a\":\r1}".to_owned(),
            format!("{{\"pad\":\"{pad}\",\"a\":1\r\n}}"),
            format!("{{\"pad\":\"{pad}\",\r\"a\":1}}"),
        ] {
            let mut pretty = e.clone();
            pretty.payload = payload.into_bytes();
            let line = pretty.to_wire_line();
            assert!(!line.contains(['\n', '\r']), "{line}");
            assert!(pretty.to_wire_json()["payload"].is_object(), "{line}");
            assert_eq!(
                serde_json::from_str::<serde_json::Value>(&line).unwrap()["payload"]["a"],
                1
            );
        }
    }

    #[test]
    fn json_a_tree_would_refuse_is_written_on_one_line_as_it_is() {
        let deep = format!("{}\n1{}", "[".repeat(300), "]".repeat(300));
        for payload in [
            "[\n1e400]".to_owned(),
            "[\r\n123456789012345678901234567890]".to_owned(),
            "{\"s\":\n\"\\ud800\"}".to_owned(),
            deep,
        ] {
            let mut e = sample();
            e.payload = payload.clone().into_bytes();
            let line = e.to_wire_line();
            assert!(!line.contains(['\n', '\r']), "{line}");
            let one_line = payload.replace(['\n', '\r'], " ");
            assert!(
                line.ends_with(&format!(",\"payload\":{one_line}}}")),
                "{line}"
            );
        }
    }

    fn sample() -> Event {
        Event {
            id: "01JD-id".into(),
            source: "api".into(),
            kind: KIND_MESSAGE.into(),
            key: Some(b"customer-7".to_vec()),
            payload: br#"{"n":1}"#.to_vec(),
            content_type: "application/json".into(),
            headers: vec![("x-trace".into(), "abc".into())],
            timestamp_ms: 1_764_064_800_000,
            payload_is_compact_json: false,
        }
    }

    #[test]
    fn record_round_trip() {
        let e = sample();
        let bytes = e.encode_record();
        assert_eq!(bytes[0], RECORD_V1);
        assert_eq!(Event::decode_record(&bytes).unwrap(), e);
    }

    #[test]
    fn unknown_record_version_is_refused() {
        let mut bytes = sample().encode_record();
        bytes[0] = 9;
        assert!(matches!(
            Event::decode_record(&bytes),
            Err(DecodeError::UnknownVersion(9))
        ));
    }

    #[test]
    fn wire_form_keeps_json_payload_as_json() {
        let v = sample().to_wire_json();
        assert_eq!(v["payload"]["n"], 1);
        assert!(v.get("payload_encoding").is_none());
        assert_eq!(v["key"], "customer-7");
        assert_eq!(v["headers"]["x-trace"], "abc");
        assert_eq!(Event::from_wire_json(&v).unwrap(), sample());
    }

    #[test]
    fn wire_form_base64_encodes_binary_payload() {
        let mut e = sample();
        e.content_type = "application/octet-stream".into();
        e.payload = vec![0, 159, 146, 150];
        e.key = Some(vec![0xff, 0xfe]);
        let v = e.to_wire_json();
        assert_eq!(v["payload_encoding"], "base64");
        assert_eq!(v["payload"], B64.encode([0, 159, 146, 150]));
        assert_eq!(v["key_encoding"], "base64");
        assert_eq!(Event::from_wire_json(&v).unwrap(), e);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json_content_type("application/json; charset=utf-8"));
        assert!(is_json_content_type("application/cloudevents+json"));
        assert!(!is_json_content_type("text/plain"));
        assert!(is_json_content_type(" Application/JSON "));
        assert!(is_json_content_type("TEXT/Json;x=1"));
        assert!(!is_json_content_type("json"));
        assert!(!is_json_content_type("application/jsonx"));
    }

    #[test]
    fn a_payload_marked_compact_json_is_written_as_the_checked_path_writes_it() {
        let mut binary_key = sample();
        binary_key.key = Some(vec![0xff, 0x00]);
        let mut no_key = sample();
        no_key.key = None;
        no_key.headers.clear();
        let mut escapes = sample();
        escapes.payload = br#"{"s":"a\nb \u00e9 \"q\"","n":[1,2.5,null]}"#.to_vec();
        escapes.id = "id \"with\" quotes".into();
        escapes.headers.push(("x-trace".into(), "again".into()));
        let mut not_json_type = sample();
        not_json_type.content_type = "text/plain".into();
        for checked in [sample(), binary_key, no_key, escapes, not_json_type] {
            let marked = Event {
                payload_is_compact_json: true,
                ..checked.clone()
            };
            assert_eq!(marked, checked, "the mark is not part of equality");
            assert_eq!(marked.to_wire_line(), checked.to_wire_line());
            let line: serde_json::Value = serde_json::from_str(&marked.to_wire_line()).unwrap();
            assert_eq!(line["id"], checked.id.as_str());
        }
    }

    /// The record encoding as it was before `key` and `payload` were written as bytes
    /// (postcard wrote each byte of a `Vec<u8>` as an element of a sequence).
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct SequenceEncoded {
        id: String,
        source: String,
        kind: String,
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
        content_type: String,
        headers: Vec<(String, String)>,
        timestamp_ms: u64,
    }

    #[test]
    fn records_are_byte_for_byte_those_of_the_sequence_encoding() {
        let mut binary = sample();
        binary.payload = (0..=255u8).cycle().take(1000).collect();
        binary.key = Some(vec![0, 0xff, 7]);
        let mut no_key = sample();
        no_key.key = None;
        no_key.payload.clear();
        for e in [sample(), binary, no_key] {
            let old = SequenceEncoded {
                id: e.id.to_string(),
                source: e.source.to_string(),
                kind: e.kind.to_string(),
                key: e.key.clone(),
                payload: e.payload.clone(),
                content_type: e.content_type.to_string(),
                headers: e.headers.clone(),
                timestamp_ms: e.timestamp_ms,
            };
            let old_bytes = postcard::to_stdvec(&old).unwrap();
            assert_eq!(e.encode_record()[1..], old_bytes[..]);
            let mut stored = vec![RECORD_V1];
            stored.extend_from_slice(&old_bytes);
            assert_eq!(Event::decode_record(&stored).unwrap(), e);
            let back: SequenceEncoded = postcard::from_bytes(&e.encode_record()[1..]).unwrap();
            assert_eq!(back, old);
        }
    }

    #[test]
    fn the_compact_json_mark_is_not_stored() {
        let marked = Event {
            payload_is_compact_json: true,
            ..sample()
        };
        let back = Event::decode_record(&marked.encode_record()).unwrap();
        assert!(!back.payload_is_compact_json);
        assert_eq!(marked.encode_record(), sample().encode_record());
    }

    #[test]
    fn a_header_given_twice_appears_once_with_its_last_value() {
        let mut e = sample();
        e.headers = vec![
            ("h".into(), "1".into()),
            ("g".into(), "x".into()),
            ("h".into(), "2".into()),
        ];
        assert_eq!(
            e.to_wire_line(),
            r#"{"id":"01JD-id","source":"api","kind":"message","key":"customer-7","timestamp_ms":1764064800000,"content_type":"application/json","headers":{"h":"2","g":"x"},"payload":{"n":1}}"#
        );
    }
}
