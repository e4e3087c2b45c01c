//! {{name}} — a switchyard filter plugin: keeps the events whose JSON field equals a value
//! and drops the rest. Config: `{ "field": "after.status", "equals": "paid" }`.

use switchyard_plugin_sdk::filter::Filter;
use switchyard_plugin_sdk::json::Value;
use switchyard_plugin_sdk::{Config, Event, JsonPath, log};

struct Plugin {
    field: JsonPath,
    equals: Value,
}

impl Filter for Plugin {
    /// Runs once per instance with the `config` table of `[plugins.NAME]`. An error stops
    /// switchyard from starting and is shown as is: say which key is wrong.
    fn init(config: Config) -> Result<Self, String> {
        config.deny_unknown_keys(&["field", "equals"])?;
        let field = match config.path("field")? {
            Some(field) => field,
            None => JsonPath::parse("after.status")?,
        };
        let equals = config.get("equals").cloned().unwrap_or(Value::from("paid"));
        log::info(&format!("keeping events whose {field} is {equals}"));
        Ok(Self { field, equals })
    }

    /// `true` keeps the event. Events without the field (or not JSON) are dropped.
    fn keep(&self, event: &Event) -> bool {
        event
            .lookup(&self.field)
            .is_some_and(|value| value == self.equals)
    }
}

switchyard_plugin_sdk::export_filter!(Plugin);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    #[test]
    fn keeps_the_paid_order_of_the_sample_events() {
        let config = json!({"field": "after.status", "equals": "paid"});
        let plugin = Plugin::init(Config::new(config)).expect("a valid config");
        let events = Event::from_jsonl(include_str!("../events.jsonl")).expect("sample events");
        let kept: Vec<bool> = events.iter().map(|event| plugin.keep(event)).collect();
        assert_eq!(kept, [true, false, false, false]);
    }

    #[test]
    fn a_typo_in_the_config_is_reported() {
        let err = Plugin::init(Config::new(json!({"equal": "paid"}))).err();
        assert!(err.expect("an error").contains("unknown key `equal`"));
    }
}
