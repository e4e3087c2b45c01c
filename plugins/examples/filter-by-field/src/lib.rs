//! filter-by-field — keeps the events whose JSON field matches a condition, drops the rest.
//!
//! ```toml
//! [plugins.paid_only]
//! path = "plugins/target/wasm32-wasip2/release/filter_by_field.wasm"
//! config = { field = "after.status", equals = "paid" }
//! ```
//!
//! Conditions (several may be given; an event is kept when all of them hold):
//! `equals = VALUE`, `in = [VALUE, ...]`, `exists = true|false`, and `gt`, `gte`, `lt`,
//! `lte = NUMBER`. Details in `rule.rs`; the logic is tested natively with
//! `cargo test -p filter-by-field` in `plugins/`.

mod rule;

use switchyard_plugin_sdk::filter::Filter;
use switchyard_plugin_sdk::{Config, Event, JsonPath};

use crate::rule::Rule;

struct FilterByField {
    field: JsonPath,
    rule: Rule,
}

impl Filter for FilterByField {
    fn init(config: Config) -> Result<Self, String> {
        let (field, rule) = rule::from_config(&config)?;
        Ok(Self { field, rule })
    }

    fn keep(&self, event: &Event) -> bool {
        let json = event.json();
        let value = json.as_ref().and_then(|json| self.field.get(json));
        self.rule.matches(value)
    }
}

switchyard_plugin_sdk::export_filter!(FilterByField);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::{Value, json};

    use super::*;

    fn filter(config: Value) -> FilterByField {
        FilterByField::init(Config::new(config)).expect("a valid config")
    }

    #[test]
    fn keeps_paid_orders_from_a_cdc_stream() {
        let paid = filter(json!({"field": "after.status", "equals": "paid"}));
        let events = [
            Event::change(
                "update",
                "public",
                "orders",
                json!(null),
                json!({"status": "paid"}),
            ),
            Event::change(
                "update",
                "public",
                "orders",
                json!(null),
                json!({"status": "new"}),
            ),
            Event::change(
                "delete",
                "public",
                "orders",
                json!({"status": "paid"}),
                json!(null),
            ),
            Event::message("status=paid", "text/plain"),
        ];
        assert_eq!(
            paid.keep_batch(&events),
            Ok(vec![true, false, false, false])
        );
    }

    #[test]
    fn numeric_strings_from_postgres_compare_as_numbers() {
        let big = filter(json!({"field": "after.total", "gte": 100}));
        let order = |total| {
            Event::change(
                "insert",
                "public",
                "orders",
                json!(null),
                json!({"total": total}),
            )
        };
        assert!(big.keep(&order(json!("100.00"))));
        assert!(big.keep(&order(json!(250))));
        assert!(!big.keep(&order(json!("99.99"))));
        assert!(!big.keep(&order(json!("n/a"))));
    }

    #[test]
    fn exists_false_keeps_events_without_the_field() {
        let untagged = filter(json!({"field": "tags[0]", "exists": false}));
        assert!(untagged.keep(&Event::json_message(&json!({"tags": []}))));
        assert!(untagged.keep(&Event::message("plain text", "text/plain")));
        assert!(!untagged.keep(&Event::json_message(&json!({"tags": ["vip"]}))));
    }

    #[test]
    fn a_bad_config_fails_init_with_the_reason() {
        let err = |config| {
            FilterByField::init(Config::new(config))
                .err()
                .expect("an error")
        };
        assert_eq!(
            err(json!({"equals": "paid"})),
            "config: `field` is required, e.g. \"after.status\""
        );
        assert!(
            err(json!({"field": "after.status", "equal": "paid"})).contains("unknown key `equal`")
        );
    }
}
