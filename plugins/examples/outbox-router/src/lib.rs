//! outbox-router — the outbox pattern: a row inserted into an outbox table becomes an
//! event of its aggregate type, keyed by its aggregate, carrying its payload.
//!
//! ```toml
//! [plugins.outbox]
//! path = "plugins/target/wasm32-wasip2/release/outbox_router.wasm"
//! config = { table = "public.outbox" }     # the defaults below may be left out
//!
//! [sinks.events]
//! type = "kafka"
//! brokers = "127.0.0.1:9092"
//! topic = "outbox.event.{header:aggregatetype}"   # one topic per aggregate type
//! create_topics = true
//! ```
//!
//! Like Debezium's outbox event router, for each change event:
//!
//! * an **insert** into `table` becomes a `message` event: key = the `aggregateid`
//!   column's value as text, payload = the `payload` column (a `json`/`jsonb` value byte
//!   for byte as `application/json`; text as it is, `application/json` when it parses as
//!   JSON, else `text/plain`), headers `aggregatetype` (which the sink's topic template
//!   reads) and `id` (the row's `id`, when the table has one) added to the event's own.
//!   The event id stays the change's id (stable when the change is sent again);
//! * every other change of `table` — update, delete, truncate, a snapshot row, a schema
//!   event — is dropped: only new rows are events (rows are usually deleted right after
//!   they are inserted, and rows read by a snapshot were routed when inserted);
//! * everything else passes unchanged.
//!
//! An insert without a string `aggregatetype` or without an `aggregateid` passes
//! unchanged, with a warning in the log: a sink whose topic needs the header then
//! dead-letters it, where it can be seen. Column names are configurable: `id_column`,
//! `type_column`, `key_column`, `payload_column`. Details in `outbox.rs`; tested natively
//! with `cargo test -p outbox-router` in `plugins/`.

mod outbox;

use switchyard_plugin_sdk::transform::Transform;
use switchyard_plugin_sdk::{Config, Event, log};

use crate::outbox::{Fate, Outbox};

struct OutboxRouter {
    outbox: Outbox,
}

impl Transform for OutboxRouter {
    fn init(config: Config) -> Result<Self, String> {
        Ok(Self {
            outbox: Outbox::from_config(&config)?,
        })
    }

    fn transform(&self, event: Event) -> Vec<Event> {
        match self.outbox.fate(&event) {
            Fate::Other => vec![event],
            Fate::Drop => Vec::new(),
            Fate::Route(routed) => vec![routed],
            Fate::Malformed(why) => {
                log::warn(&format!(
                    "outbox row of event {} is not routed ({why}); it passes unchanged",
                    event.id
                ));
                vec![event]
            }
        }
    }
}

switchyard_plugin_sdk::export_transform!(OutboxRouter);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    #[test]
    fn an_insert_is_routed_and_other_changes_of_the_outbox_are_dropped() {
        let router = OutboxRouter::init(Config::new(json!({}))).expect("the defaults");
        let row = json!({"id": 1, "aggregatetype": "order", "aggregateid": "o-1", "payload": {"total": 5}});
        let insert = Event::change("insert", "public", "outbox", json!(null), row.clone());
        let out = router.transform_batch(vec![
            insert,
            Event::change("update", "public", "outbox", json!(null), row.clone()),
            Event::change("delete", "public", "outbox", json!({"id": 1}), json!(null)),
            Event::change("insert", "public", "orders", json!(null), json!({"id": 1})),
        ]);
        let out = out.expect("never fails");
        assert_eq!(out.iter().map(Vec::len).collect::<Vec<_>>(), [1, 0, 0, 1]);
        let routed = &out[0][0];
        assert_eq!(routed.kind, "message");
        assert_eq!(routed.key_str(), Some("o-1"));
        assert_eq!(routed.text(), Some(r#"{"total":5}"#));
        assert_eq!(routed.header("aggregatetype"), Some("order"));
        assert_eq!(out[3][0].kind, "insert", "other tables pass unchanged");
    }
}
