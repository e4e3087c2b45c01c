//! Which changes are outbox rows and what event each becomes: pure logic, no host calls.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::value::RawValue;
use switchyard_plugin_sdk::{Config, Event, JSON};

/// The header the row's aggregate type goes into (a Kafka sink's topic template reads it
/// with `{header:aggregatetype}`).
pub const TYPE_HEADER: &str = "aggregatetype";
/// The header the row's id goes into.
pub const ID_HEADER: &str = "id";

/// The outbox table and its columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbox {
    /// `schema.table`.
    table: String,
    id_column: String,
    type_column: String,
    key_column: String,
    payload_column: String,
}

/// What becomes of one event.
#[derive(Debug, PartialEq)]
pub enum Fate {
    /// Not a change of the outbox table: passes unchanged.
    Other,
    /// A change of the outbox table that is not a new row.
    Drop,
    /// A new outbox row, as the event it stands for.
    Route(Event),
    /// A new outbox row that cannot be routed, and why.
    Malformed(String),
}

/// The part of an insert's change record the router reads: the new row, its values raw.
#[derive(Deserialize)]
struct Insert<'a> {
    #[serde(borrow)]
    after: BTreeMap<String, &'a RawValue>,
}

impl Outbox {
    /// Reads `table` (default `public.outbox`; a bare name is in `public`) and the column
    /// names `id_column`, `type_column`, `key_column`, `payload_column` (defaults `id`,
    /// `aggregatetype`, `aggregateid`, `payload`, as in Debezium's outbox table).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        config.deny_unknown_keys(&[
            "table",
            "id_column",
            "type_column",
            "key_column",
            "payload_column",
        ])?;
        let text = |key: &str, default: &str| -> Result<String, String> {
            match config.string(key)? {
                Some(value) if value.trim().is_empty() => Err(format!(
                    "config: `{key}` is empty; leave it out for {default:?}"
                )),
                Some(value) => Ok(value.to_owned()),
                None => Ok(default.to_owned()),
            }
        };
        let table = text("table", "public.outbox")?;
        let table = if table.contains('.') {
            table
        } else {
            format!("public.{table}")
        };
        Ok(Self {
            table,
            id_column: text("id_column", "id")?,
            type_column: text("type_column", "aggregatetype")?,
            key_column: text("key_column", "aggregateid")?,
            payload_column: text("payload_column", "payload")?,
        })
    }

    /// The fate of `event` (see the crate docs).
    pub fn fate(&self, event: &Event) -> Fate {
        if !is_change(&event.kind) || !self.is_outbox(event) {
            return Fate::Other;
        }
        if event.kind != "insert" {
            return Fate::Drop;
        }
        match self.route(event) {
            Ok(routed) => Fate::Route(routed),
            Err(why) => Fate::Malformed(why),
        }
    }

    /// Whether `event` is a change of the outbox table: its `pg-table` header (set by the
    /// Postgres source), else the record's `schema` and `table`.
    fn is_outbox(&self, event: &Event) -> bool {
        match event.header("pg-table") {
            Some(table) => table == self.table,
            None => event
                .table()
                .is_some_and(|table| table.qualified() == self.table),
        }
    }

    fn route(&self, event: &Event) -> Result<Event, String> {
        let insert: Insert<'_> = serde_json::from_slice(&event.payload)
            .map_err(|e| format!("its record has no new row: {e}"))?;
        let row = &insert.after;
        let column = |name: &str| row.get(name).filter(|raw| raw.get() != "null");
        let aggregate_type = column(&self.type_column)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("`{}` is not a non-empty string", self.type_column))?;
        let key = column(&self.key_column)
            .map(|raw| text_of(raw))
            .ok_or_else(|| format!("`{}` is missing or null", self.key_column))?;
        let (payload, content_type) = match row.get(&self.payload_column) {
            None => return Err(format!("`{}` is missing", self.payload_column)),
            Some(raw) => match serde_json::from_str::<String>(raw.get()) {
                // A text column: its text; JSON when it is JSON.
                Ok(text) => {
                    let json = serde_json::from_str::<&RawValue>(&text).is_ok();
                    (text.into_bytes(), if json { JSON } else { "text/plain" })
                }
                // A json/jsonb column (or a number, a boolean, null): as it is.
                Err(_) => (raw.get().as_bytes().to_vec(), JSON),
            },
        };
        let mut routed = Event {
            kind: "message".to_owned(),
            key: Some(key.into_bytes()),
            payload,
            content_type: content_type.to_owned(),
            ..event.clone()
        };
        routed.set_header(TYPE_HEADER, &aggregate_type);
        if let Some(id) = column(&self.id_column) {
            routed.set_header(ID_HEADER, &text_of(id));
        }
        Ok(routed)
    }
}

/// `insert`, `update`, `delete`, `truncate`, `read` (a snapshot row) or `schema`.
fn is_change(kind: &str) -> bool {
    matches!(
        kind,
        "insert" | "update" | "delete" | "truncate" | "read" | "schema"
    )
}

/// A value as text: a string's own text, anything else its JSON.
fn text_of(raw: &RawValue) -> String {
    serde_json::from_str::<String>(raw.get()).unwrap_or_else(|_| raw.get().to_owned())
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::{Value, json};

    use super::*;

    fn outbox(config: Value) -> Outbox {
        Outbox::from_config(&Config::new(config)).expect("a valid config")
    }

    /// A change as the Postgres source makes it, with its `pg-table` header.
    fn change(op: &str, table: &str, before: Value, after: Value) -> Event {
        let (schema, name) = table.split_once('.').unwrap();
        let mut event = Event {
            id: "0/16B3748/2".to_owned(),
            source: "db".to_owned(),
            key: Some(br#"{"id":"e-1"}"#.to_vec()),
            timestamp_ms: 1_795_600_800_000,
            ..Event::change(op, schema, name, before, after)
        };
        event.add_header("pg-table", table);
        event.add_header("pg-lsn", "0/16B3748");
        event
    }

    fn row() -> Value {
        json!({
            "id": "e-1",
            "aggregatetype": "order",
            "aggregateid": "o-42",
            "type": "OrderCreated",
            "payload": {"order": 42, "total": "9.90", "lines": [1, 2]},
        })
    }

    #[test]
    fn an_insert_becomes_its_aggregates_event() {
        let insert = change("insert", "public.outbox", json!(null), row());
        let Fate::Route(routed) = outbox(json!({})).fate(&insert) else {
            panic!("an outbox insert is routed")
        };
        assert_eq!(
            routed.id, insert.id,
            "the change's id, stable when sent again"
        );
        assert_eq!(routed.source, "db");
        assert_eq!(routed.kind, "message");
        assert_eq!(routed.key_str(), Some("o-42"));
        assert_eq!(
            routed.text(),
            Some(r#"{"lines":[1,2],"order":42,"total":"9.90"}"#),
            "the payload column as the record had it"
        );
        assert_eq!(routed.content_type, JSON);
        assert_eq!(routed.header(TYPE_HEADER), Some("order"));
        assert_eq!(routed.header(ID_HEADER), Some("e-1"));
        assert_eq!(routed.header("pg-table"), Some("public.outbox"));
        assert_eq!(routed.timestamp_ms, insert.timestamp_ms);
    }

    #[test]
    fn payloads_of_text_columns_are_their_text() {
        let mut row = row();
        row["payload"] = json!("{\"order\": 42}");
        row["aggregateid"] = json!(42);
        row["id"] = json!(7);
        let Fate::Route(routed) =
            outbox(json!({})).fate(&change("insert", "public.outbox", json!(null), row.clone()))
        else {
            panic!("routed")
        };
        assert_eq!(routed.text(), Some("{\"order\": 42}"));
        assert_eq!(routed.content_type, JSON);
        assert_eq!(routed.key_str(), Some("42"), "a number key as its digits");
        assert_eq!(routed.header(ID_HEADER), Some("7"));

        row["payload"] = json!("order 42 created");
        let Fate::Route(routed) =
            outbox(json!({})).fate(&change("insert", "public.outbox", json!(null), row))
        else {
            panic!("routed")
        };
        assert_eq!(routed.text(), Some("order 42 created"));
        assert_eq!(routed.content_type, "text/plain");
    }

    #[test]
    fn other_changes_of_the_outbox_are_dropped_and_other_events_pass() {
        let router = outbox(json!({}));
        for op in ["update", "delete", "truncate", "read", "schema"] {
            let event = change(op, "public.outbox", json!({"id": "e-1"}), json!(null));
            assert_eq!(router.fate(&event), Fate::Drop, "{op}");
        }
        let other_table = change("insert", "public.orders", json!(null), row());
        assert_eq!(router.fate(&other_table), Fate::Other);
        let message = Event::json_message(&row());
        assert_eq!(router.fate(&message), Fate::Other);
        // Without the header (an event made elsewhere), the record's table decides.
        let mut unheaded = change("insert", "public.outbox", json!(null), row());
        unheaded.headers.clear();
        assert!(matches!(router.fate(&unheaded), Fate::Route(_)));
    }

    #[test]
    fn rows_that_cannot_be_routed_say_why() {
        let router = outbox(json!({}));
        for (column, value, why) in [
            (
                "aggregatetype",
                json!(null),
                "`aggregatetype` is not a non-empty string",
            ),
            (
                "aggregatetype",
                json!(3),
                "`aggregatetype` is not a non-empty string",
            ),
            (
                "aggregateid",
                json!(null),
                "`aggregateid` is missing or null",
            ),
        ] {
            let mut row = row();
            row[column] = value;
            let event = change("insert", "public.outbox", json!(null), row);
            assert_eq!(router.fate(&event), Fate::Malformed(why.to_owned()));
        }
    }

    #[test]
    fn the_table_and_columns_are_configurable() {
        let router = outbox(json!({
            "table": "events",
            "type_column": "kind",
            "key_column": "entity",
            "payload_column": "body",
            "id_column": "event_id",
        }));
        let row = json!({"event_id": 9, "kind": "invoice", "entity": "i-1", "body": {"a": 1}});
        let Fate::Route(routed) = router.fate(&change("insert", "public.events", json!(null), row))
        else {
            panic!("routed")
        };
        assert_eq!(routed.header(TYPE_HEADER), Some("invoice"));
        assert_eq!(routed.header(ID_HEADER), Some("9"));
        assert_eq!(routed.key_str(), Some("i-1"));
        assert_eq!(routed.text(), Some(r#"{"a":1}"#));

        let error = Outbox::from_config(&Config::new(json!({"tabel": "x"}))).unwrap_err();
        assert!(error.contains("unknown key `tabel`"), "{error}");
        let error = Outbox::from_config(&Config::new(json!({"table": " "}))).unwrap_err();
        assert!(error.contains("`table` is empty"), "{error}");
    }
}
