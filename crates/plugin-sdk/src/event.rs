//! Helpers on [`Event`], the record the host hands to plugins (see `wit/plugin.wit`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::bindings::{Event, Header};
use crate::json::JsonPath;

/// The content type of JSON payloads, set by the constructors and [`Event::set_json`].
pub const JSON: &str = "application/json";

impl Event {
    /// An HTTP-like event (`kind` = `message`) with this payload; for tests and for
    /// transforms that create events. Id and source are empty, timestamp 0: set them with
    /// struct update syntax if they matter.
    pub fn message(payload: impl Into<Vec<u8>>, content_type: &str) -> Self {
        Self {
            id: String::new(),
            source: String::new(),
            kind: "message".to_owned(),
            key: None,
            payload: payload.into(),
            content_type: content_type.to_owned(),
            headers: Vec::new(),
            timestamp_ms: 0,
        }
    }

    /// A `message` event with a JSON payload.
    pub fn json_message(payload: &Value) -> Self {
        Self::message(payload.to_string(), JSON)
    }

    /// A Postgres change as the CDC source produces it: `kind` is the op and the payload is
    /// `{"op","schema","table","key","before","after"}`.
    pub fn change(op: &str, schema: &str, table: &str, before: Value, after: Value) -> Self {
        let payload = serde_json::json!({
            "op": op, "schema": schema, "table": table, "before": before, "after": after,
        });
        Self {
            kind: op.to_owned(),
            ..Self::json_message(&payload)
        }
    }

    /// Parses one event in switchyard's JSON wire form, the form of stdout/file sinks and
    /// of `events.jsonl` samples: `{"id","source","kind","key","timestamp_ms",
    /// "content_type","headers":{..},"payload":..}`. The payload is JSON, or a base64 string
    /// with `"payload_encoding":"base64"` (likewise `key_encoding`). Only `id` is required:
    /// `kind` defaults to `message`, `content_type` to JSON.
    pub fn from_wire_json(value: &Value) -> Result<Self, String> {
        let obj = value.as_object().ok_or("an event must be a JSON object")?;
        let text = |name: &str| obj.get(name).and_then(Value::as_str);
        let base64 = |name: &str| text(&format!("{name}_encoding")) == Some("base64");
        let decode = |name: &str, data: &str| {
            BASE64
                .decode(data)
                .map_err(|e| format!("field `{name}` is not base64: {e}"))
        };
        let key = match obj.get("key") {
            None | Some(Value::Null) => None,
            Some(Value::String(key)) if base64("key") => Some(decode("key", key)?),
            Some(Value::String(key)) => Some(key.clone().into_bytes()),
            Some(_) => return Err("field `key` must be a string or null".to_owned()),
        };
        let payload = match obj.get("payload") {
            None => Vec::new(),
            Some(Value::String(data)) if base64("payload") => decode("payload", data)?,
            Some(json) => json.to_string().into_bytes(),
        };
        let headers = match obj.get("headers") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Object(headers)) => headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_owned),
                })
                .collect(),
            Some(_) => return Err("field `headers` must be an object".to_owned()),
        };
        Ok(Self {
            id: text("id").ok_or("field `id` must be a string")?.to_owned(),
            source: text("source").unwrap_or_default().to_owned(),
            kind: text("kind").unwrap_or("message").to_owned(),
            key,
            payload,
            content_type: text("content_type").unwrap_or(JSON).to_owned(),
            headers,
            timestamp_ms: obj
                .get("timestamp_ms")
                .and_then(Value::as_u64)
                .unwrap_or_default(),
        })
    }

    /// Parses JSON lines of wire-form events (see [`Event::from_wire_json`]), skipping
    /// blank lines; an error names the line. For tests: `Event::from_jsonl(include_str!(
    /// "../events.jsonl"))`.
    pub fn from_jsonl(text: &str) -> Result<Vec<Self>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(index, line)| {
                serde_json::from_str(line)
                    .map_err(|e| e.to_string())
                    .and_then(|json| Self::from_wire_json(&json))
                    .map_err(|e| format!("line {}: {e}", index + 1))
            })
            .collect()
    }

    /// The payload parsed as JSON, whatever the content type claims; `None` if it is not
    /// JSON. Parses on every call: keep the value if you need it more than once.
    pub fn json(&self) -> Option<Value> {
        // A value starts with one of these after any whitespace: other text is refused at
        // its first byte, before the whole payload is checked (and its fuel spent).
        let first = self
            .payload
            .iter()
            .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        if !matches!(
            first,
            b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
        ) {
            return None;
        }
        // The text checked once, whole: reading from bytes checks each string on its own,
        // which costs more, in WebAssembly most of all.
        let text = std::str::from_utf8(&self.payload).ok()?;
        serde_json::from_str(text).ok()
    }

    /// The value at a dotted path (`after.status`, `items[0].sku`) of the JSON payload.
    pub fn lookup(&self, path: &JsonPath) -> Option<Value> {
        let mut json = self.json()?;
        path.get_mut(&mut json).map(Value::take)
    }

    /// Replaces the payload with this JSON and sets the content type to JSON.
    pub fn set_json(&mut self, value: &Value) {
        self.payload = value.to_string().into_bytes();
        JSON.clone_into(&mut self.content_type);
    }

    /// The payload as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.payload).ok()
    }

    /// The value of the first header with this name (names are case-sensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    /// The values of every header with this name, in order.
    pub fn header_values(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |header| header.name == name)
            .map(|header| header.value.as_str())
    }

    /// Replaces every header with this name by one with this value.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|header| header.name != name);
        self.add_header(name, value);
    }

    /// Adds a header, keeping any others with the same name.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push(Header {
            name: name.to_owned(),
            value: value.to_owned(),
        });
    }

    /// The key as text, if there is one and it is UTF-8 (CDC keys are JSON).
    pub fn key_str(&self) -> Option<&str> {
        std::str::from_utf8(self.key.as_deref()?).ok()
    }

    /// True for Postgres changes (`insert`, `update`, `delete`, `truncate`, `schema`).
    pub fn is_change(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "insert" | "update" | "delete" | "truncate" | "schema"
        )
    }

    /// The `schema` and `table` of a CDC payload; `None` for other events.
    pub fn table(&self) -> Option<Table> {
        let json = self.json()?;
        let field = |name| json.get(name)?.as_str().map(str::to_owned);
        Some(Table {
            schema: field("schema")?,
            table: field("table")?,
        })
    }
}

/// Where a Postgres change comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    pub schema: String,
    pub table: String,
}

impl Table {
    /// `schema.table`, the form used in switchyard's config (`public.orders`).
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn json_helpers_read_and_rewrite_the_payload() {
        let mut event = Event::json_message(&json!({"a": {"b": [1, 2]}}));
        assert_eq!(event.content_type, JSON);
        assert_eq!(event.json(), Some(json!({"a": {"b": [1, 2]}})));
        let path = JsonPath::parse("a.b[1]").unwrap();
        assert_eq!(event.lookup(&path), Some(json!(2)));
        event.set_json(&json!({"c": true}));
        assert_eq!(event.text(), Some(r#"{"c":true}"#));
        assert_eq!(event.lookup(&path), None);

        let text = Event::message("not json", "text/plain");
        assert_eq!(text.json(), None);
        assert_eq!(text.lookup(&path), None);

        // Bytes that are not UTF-8 are not JSON, inside a string or out of one; nor is a
        // lone surrogate, a byte-order mark, whitespace alone or text.
        for bytes in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":1}\xff",
            b"\xff",
            br#"{"a":"\ud800"}"#,
            b"\xef\xbb\xbf{}",
            b"",
            b" \r\n\t",
            b"hello",
            b"\x0c{}",
        ] {
            assert_eq!(Event::message(bytes, JSON).json(), None, "{bytes:?}");
        }
        for (bytes, value) in [
            (&b" \n[1]"[..], json!([1])),
            (b"-1", json!(-1)),
            (b"\"s\"", json!("s")),
            (b"true", json!(true)),
            (b"false", json!(false)),
            (b"null ", json!(null)),
            (b"0.5", json!(0.5)),
        ] {
            assert_eq!(Event::message(bytes, JSON).json(), Some(value), "{bytes:?}");
        }
        let accented = Event::message("{\"name\":\"Zoë\"}", JSON);
        assert_eq!(accented.json(), Some(json!({"name": "Zoë"})));
    }

    #[test]
    fn headers_are_case_sensitive_and_may_repeat() {
        let mut event = Event::message("", "text/plain");
        event.add_header("tag", "a");
        event.add_header("tag", "b");
        event.add_header("Tag", "c");
        assert_eq!(event.header("tag"), Some("a"));
        assert_eq!(event.header_values("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(event.header("TAG"), None);
        event.set_header("tag", "z");
        assert_eq!(event.header_values("tag").collect::<Vec<_>>(), ["z"]);
        assert_eq!(event.header("Tag"), Some("c"));
    }

    #[test]
    fn wire_form_lines_become_events() {
        let lines = r#"
{"id":"0/16B3748/0","source":"db","kind":"update","key":"{\"id\":7}","timestamp_ms":5,"content_type":"application/json","headers":{"trace":"t1","n":2},"payload":{"op":"update"}}

{"id":"b","payload":"aGk=","payload_encoding":"base64","content_type":"text/plain","key":"/w==","key_encoding":"base64"}
{"id":"c"}
"#;
        let events = Event::from_jsonl(lines).unwrap();
        assert_eq!(events.len(), 3);
        let change = &events[0];
        assert_eq!(change.kind, "update");
        assert_eq!(change.key_str(), Some(r#"{"id":7}"#));
        assert_eq!(change.json(), Some(json!({"op": "update"})));
        assert_eq!(change.header("trace"), Some("t1"));
        assert_eq!(change.header("n"), Some("2"));
        assert_eq!(change.timestamp_ms, 5);
        assert_eq!(events[1].text(), Some("hi"));
        assert_eq!(events[1].key, Some(vec![0xff]));
        assert_eq!(events[2].kind, "message");
        assert_eq!(events[2].content_type, JSON);
        assert!(events[2].payload.is_empty());

        let err = Event::from_jsonl("{\"id\":\"a\"}\n{\"kind\":\"x\"}").unwrap_err();
        assert_eq!(err, "line 2: field `id` must be a string");
        assert!(
            Event::from_jsonl("nope")
                .unwrap_err()
                .starts_with("line 1: ")
        );
        let err = Event::from_jsonl(r#"{"id":"a","payload":"!","payload_encoding":"base64"}"#);
        assert!(err.unwrap_err().contains("field `payload` is not base64"));
    }

    #[test]
    fn changes_carry_their_table() {
        let event = Event::change("insert", "public", "orders", json!(null), json!({"id": 1}));
        assert!(event.is_change());
        assert_eq!(event.kind, "insert");
        let table = event.table().unwrap();
        assert_eq!(table.qualified(), "public.orders");
        assert_eq!(
            event.lookup(&JsonPath::parse("after.id").unwrap()),
            Some(json!(1))
        );

        let message = Event::json_message(&json!({"table": "orders"}));
        assert!(!message.is_change());
        assert_eq!(message.table(), None);
        assert_eq!(message.key_str(), None);
        let keyed = Event {
            key: Some(br#"{"id":1}"#.to_vec()),
            ..message
        };
        assert_eq!(keyed.key_str(), Some(r#"{"id":1}"#));
    }
}
