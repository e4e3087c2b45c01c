//! redact-fields — masks the listed fields of JSON payloads before they reach any sink.
//!
//! ```toml
//! [plugins.no_pii]
//! path = "plugins/target/wasm32-wasip2/release/redact_fields.wasm"
//! config = { fields = ["after.card", "after.email", "before.card", "before.email"], mask = "***" }
//! ```
//!
//! Only fields that are present (and not null) are masked; nothing is added. Events whose
//! payload is not JSON, or has none of the fields, pass byte for byte. Details in
//! `redaction.rs`; tested natively with `cargo test -p redact-fields` in `plugins/`.

mod redaction;

use switchyard_plugin_sdk::transform::Transform;
use switchyard_plugin_sdk::{Config, Event};

use crate::redaction::Redaction;

struct RedactFields {
    redaction: Redaction,
}

impl Transform for RedactFields {
    fn init(config: Config) -> Result<Self, String> {
        Ok(Self {
            redaction: Redaction::from_config(&config)?,
        })
    }

    fn transform(&self, mut event: Event) -> Vec<Event> {
        if let Some(mut json) = event.json()
            && self.redaction.apply(&mut json) > 0
        {
            event.set_json(&json);
        }
        vec![event]
    }
}

switchyard_plugin_sdk::export_transform!(RedactFields);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    fn plugin() -> RedactFields {
        let config = json!({"fields": ["after.card", "after.email"], "mask": "***"});
        RedactFields::init(Config::new(config)).expect("a valid config")
    }

    #[test]
    fn masks_present_fields_and_keeps_everything_else() {
        let change = Event {
            id: "0/16B3748/0".to_owned(),
            key: Some(br#"{"id":7}"#.to_vec()),
            ..Event::change(
                "insert",
                "public",
                "customers",
                json!(null),
                json!({"id": 7, "email": "ann@example.com", "name": "Ann"}),
            )
        };
        let out = plugin().transform(change.clone());
        assert_eq!(out.len(), 1);
        let redacted = &out[0];
        assert_eq!(
            redacted.json().expect("still JSON")["after"],
            json!({"id": 7, "email": "***", "name": "Ann"})
        );
        assert_eq!(redacted.id, change.id);
        assert_eq!(redacted.key, change.key);
        assert_eq!(redacted.kind, "insert");
    }

    #[test]
    fn events_without_the_fields_pass_byte_for_byte() {
        // Spacing a re-encoding would change: the payload must come out untouched.
        let untouched = Event::message(r#"{ "after": { "id": 1 } }"#, "application/json");
        let plain = Event::message("card=4111", "text/plain");
        let out = plugin().transform_batch(vec![untouched.clone(), plain.clone()]);
        assert_eq!(out, Ok(vec![vec![untouched], vec![plain]]));
    }
}
