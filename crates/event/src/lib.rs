//! The event model shared by every switchyard crate.
//!
//! An [`Event`] is what sources produce, plugins inspect and sinks deliver. This crate
//! knows two encodings of it:
//!
//! * the **record** encoding stored in the durable log ([`Event::encode_record`]), a
//!   versioned binary form (see `docs/decisions/0003-event-record-encoding.md`);
//! * the **wire** JSON form written by JSON sinks ([`Event::to_wire_json`]), part of the
//!   product contract (`docs/design.md`, "Event model"): payloads that are JSON stay
//!   JSON, anything else is base64.
//!
//! Architecture invariant: no IO, no async runtime.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

/// `kind` of events that come from HTTP, queues and Kafka.
pub const KIND_MESSAGE: &str = "message";

/// One event flowing through switchyard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Unique id. Deterministic for CDC (`<commit_lsn>/<seq>`); the `Idempotency-Key`
    /// or a UUIDv7 for HTTP.
    pub id: String,
    /// Name of the source in the config.
    pub source: String,
    /// `message`, or `insert`/`update`/`delete`/`truncate`/`schema` for CDC.
    pub kind: String,
    /// Partition and order key. Events with the same key reach each sink in order.
    pub key: Option<Vec<u8>>,
    /// The body.
    pub payload: Vec<u8>,
    /// e.g. `application/json`.
    pub content_type: String,
    /// Free-form metadata, in order. Names are case-sensitive.
    pub headers: Vec<(String, String)>,
    /// Event time in milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
}

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
    /// `"key_encoding":"base64"`.
    pub fn to_wire_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::with_capacity(10);
        obj.insert("id".into(), self.id.clone().into());
        obj.insert("source".into(), self.source.clone().into());
        obj.insert("kind".into(), self.kind.clone().into());
        let key = match &self.key {
            None => serde_json::Value::Null,
            Some(k) => match std::str::from_utf8(k) {
                Ok(s) => s.into(),
                Err(_) => {
                    obj.insert("key_encoding".into(), "base64".into());
                    B64.encode(k).into()
                }
            },
        };
        obj.insert("key".into(), key);
        obj.insert("timestamp_ms".into(), self.timestamp_ms.into());
        obj.insert("content_type".into(), self.content_type.clone().into());
        let headers: serde_json::Map<_, _> = self
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), serde_json::Value::from(v.clone())))
            .collect();
        obj.insert("headers".into(), headers.into());
        let payload = if is_json_content_type(&self.content_type) {
            serde_json::from_slice::<serde_json::Value>(&self.payload).ok()
        } else {
            None
        };
        match payload {
            Some(v) => {
                obj.insert("payload".into(), v);
            }
            None => {
                obj.insert("payload".into(), B64.encode(&self.payload).into());
                obj.insert("payload_encoding".into(), "base64".into());
            }
        }
        serde_json::Value::Object(obj)
    }

    /// The wire form as one line of JSON (no trailing newline).
    pub fn to_wire_line(&self) -> String {
        let mut out = Vec::with_capacity(160 + self.payload.len());
        self.write_wire_line(&mut out);
        // Serialised JSON is UTF-8.
        String::from_utf8(out).expect("JSON is UTF-8")
    }

    /// Appends [`Event::to_wire_line`] to `out`, without building a JSON tree: a JSON
    /// payload is checked and copied as it is (sinks write millions of these).
    pub fn write_wire_line(&self, out: &mut Vec<u8>) {
        let raw = if is_json_content_type(&self.content_type) {
            serde_json::from_slice::<&serde_json::value::RawValue>(&self.payload)
                .ok()
                // A payload spread over lines would break the one-line form: let the
                // tree path write it compactly.
                .filter(|r| !r.get().contains(['\n', '\r']))
        } else {
            None
        };
        let unique_headers = self
            .headers
            .iter()
            .enumerate()
            .all(|(i, (n, _))| self.headers[..i].iter().all(|(m, _)| m != n));
        let json_payload_without_raw = raw.is_none()
            && is_json_content_type(&self.content_type)
            && serde_json::from_slice::<serde::de::IgnoredAny>(&self.payload).is_ok();
        if !unique_headers || json_payload_without_raw {
            serde_json::to_writer(&mut *out, &self.to_wire_json()).expect("writing to memory");
            return;
        }
        let (key, key_encoding) = match &self.key {
            None => (None, None),
            Some(k) => match std::str::from_utf8(k) {
                Ok(s) => (Some(std::borrow::Cow::Borrowed(s)), None),
                Err(_) => (Some(std::borrow::Cow::Owned(B64.encode(k))), Some("base64")),
            },
        };
        let (payload, payload_encoding) = match raw {
            Some(r) => (WirePayload::Raw(r), None),
            None => (
                WirePayload::Base64(B64.encode(&self.payload)),
                Some("base64"),
            ),
        };
        let wire = Wire {
            id: &self.id,
            source: &self.source,
            kind: &self.kind,
            key_encoding,
            key,
            timestamp_ms: self.timestamp_ms,
            content_type: &self.content_type,
            headers: WireHeaders(&self.headers),
            payload,
            payload_encoding,
        };
        serde_json::to_writer(&mut *out, &wire).expect("writing to memory");
    }

    /// Parses the wire form back into an event (used by the CLI and tests).
    pub fn from_wire_json(value: &serde_json::Value) -> Result<Self, String> {
        let obj = value.as_object().ok_or("an event must be a JSON object")?;
        let text = |name: &str| -> Result<String, String> {
            obj.get(name)
                .and_then(|v| v.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("field `{name}` must be a string"))
        };
        let key = match obj.get("key") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => {
                if obj.get("key_encoding").and_then(|v| v.as_str()) == Some("base64") {
                    Some(B64.decode(s).map_err(|e| format!("field `key`: {e}"))?)
                } else {
                    Some(s.clone().into_bytes())
                }
            }
            Some(_) => return Err("field `key` must be a string or null".into()),
        };
        let content_type = obj
            .get("content_type")
            .and_then(|v| v.as_str())
            .unwrap_or("application/json")
            .to_owned();
        let payload = match obj.get("payload") {
            None => Vec::new(),
            Some(serde_json::Value::String(s))
                if obj.get("payload_encoding").and_then(|v| v.as_str()) == Some("base64") =>
            {
                B64.decode(s).map_err(|e| format!("field `payload`: {e}"))?
            }
            Some(v) => serde_json::to_vec(v).map_err(|e| e.to_string())?,
        };
        let headers = match obj.get("headers") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Object(m)) => m
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                    other => Ok((k.clone(), other.to_string())),
                })
                .collect::<Result<_, String>>()?,
            Some(_) => return Err("field `headers` must be an object".into()),
        };
        Ok(Event {
            id: text("id")?,
            source: obj
                .get("source")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned(),
            kind: obj
                .get("kind")
                .and_then(|v| v.as_str())
                .unwrap_or(KIND_MESSAGE)
                .to_owned(),
            key,
            payload,
            content_type,
            headers,
            timestamp_ms: obj
                .get("timestamp_ms")
                .and_then(|v| v.as_u64())
                .unwrap_or_default(),
        })
    }
}

/// `application/json`, `application/x-ndjson`-style `+json` types and `text/json`.
pub fn is_json_content_type(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence == "text/json" || essence.ends_with("+json")
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
        let mut pretty = e.clone();
        pretty.payload = b"{\n  \"a\": 1\n}".to_vec();
        let line = pretty.to_wire_line();
        assert!(!line.contains('\n'), "{line}");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&line).unwrap()["payload"]["a"],
            1
        );
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
    }
}

/// The wire form, borrowed from an event, in the field order of [`Event::to_wire_json`].
#[derive(Serialize)]
struct Wire<'a> {
    id: &'a str,
    source: &'a str,
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_encoding: Option<&'static str>,
    key: Option<std::borrow::Cow<'a, str>>,
    timestamp_ms: u64,
    content_type: &'a str,
    headers: WireHeaders<'a>,
    payload: WirePayload<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_encoding: Option<&'static str>,
}

/// Headers as a JSON object (names are unique here).
struct WireHeaders<'a>(&'a [(String, String)]);

impl Serialize for WireHeaders<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap as _;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, value) in self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum WirePayload<'a> {
    Raw(&'a serde_json::value::RawValue),
    Base64(String),
}
