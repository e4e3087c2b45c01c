//! {{name}} — a switchyard router plugin: sends each event to the sinks listed for its
//! kind (`insert`, `update`, `delete`, `message`, ...), else to `default` (none = drop).
//! Config: `{ "routes": { "insert": ["orders_topic"], "message": ["audit"] }, "default": [] }`.

use std::collections::BTreeMap;

use switchyard_plugin_sdk::router::Router;
use switchyard_plugin_sdk::{Config, Event};

struct Plugin {
    routes: BTreeMap<String, Vec<String>>,
    default: Vec<String>,
}

impl Router for Plugin {
    /// Runs once per instance with the `config` table of `[plugins.NAME]`. An error stops
    /// switchyard from starting and is shown as is: say which key is wrong.
    fn init(config: Config) -> Result<Self, String> {
        config.deny_unknown_keys(&["routes", "default"])?;
        // `routes` maps event kinds to lists of sink names.
        let routes = config.get_as("routes")?.unwrap_or_default();
        let default = config.strings("default")?.unwrap_or_default();
        Ok(Self { routes, default })
    }

    /// The sinks this event goes to; an empty list drops it.
    fn route(&self, event: &Event) -> Vec<String> {
        self.routes
            .get(&event.kind)
            .unwrap_or(&self.default)
            .clone()
    }
}

switchyard_plugin_sdk::export_router!(Plugin);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    #[test]
    fn routes_the_sample_events_by_kind() {
        let config = json!({"routes": {"update": ["changes"], "message": ["audit"]}});
        let plugin = Plugin::init(Config::new(config)).expect("a valid config");
        let events = Event::from_jsonl(include_str!("../events.jsonl")).expect("sample events");
        let routed: Vec<Vec<String>> = events.iter().map(|event| plugin.route(event)).collect();
        assert_eq!(routed, [vec!["changes"], vec![], vec!["changes"], vec!["audit"]]);
    }

    #[test]
    fn a_bad_route_is_reported() {
        let err = Plugin::init(Config::new(json!({"routes": {"insert": "orders"}}))).err();
        assert!(err.expect("an error").starts_with("config: `routes`: invalid type"));
    }
}
