//! {{name}} — a switchyard transform plugin: tags each Postgres change with a header naming
//! its table and, if asked, drops the `before` image from the payload.
//! Config: `{ "header": "x-table", "drop_before": true }`.

use switchyard_plugin_sdk::transform::Transform;
use switchyard_plugin_sdk::{Config, Event};

struct Plugin {
    header: String,
    drop_before: bool,
}

impl Transform for Plugin {
    /// Runs once per instance with the `config` table of `[plugins.NAME]`. An error stops
    /// switchyard from starting and is shown as is: say which key is wrong.
    fn init(config: Config) -> Result<Self, String> {
        config.deny_unknown_keys(&["header", "drop_before"])?;
        let header = config.string("header")?.unwrap_or("x-table").to_owned();
        let drop_before = config.bool("drop_before")?.unwrap_or(false);
        Ok(Self {
            header,
            drop_before,
        })
    }

    /// The events replacing this one: `vec![]` drops it, several split it. Keep the `id`
    /// so consumers can still deduplicate.
    fn transform(&self, mut event: Event) -> Vec<Event> {
        if let Some(table) = event.table() {
            event.set_header(&self.header, &table.qualified());
        }
        if self.drop_before
            && let Some(mut json) = event.json()
            && let Some(change) = json.as_object_mut()
            && change.remove("before").is_some()
        {
            event.set_json(&json);
        }
        vec![event]
    }
}

switchyard_plugin_sdk::export_transform!(Plugin);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    #[test]
    fn tags_the_sample_changes_with_their_table() {
        let config = json!({"header": "x-table", "drop_before": true});
        let plugin = Plugin::init(Config::new(config)).expect("a valid config");
        let events = Event::from_jsonl(include_str!("../events.jsonl")).expect("sample events");
        let out: Vec<Event> = events.into_iter().flat_map(|e| plugin.transform(e)).collect();
        let tables: Vec<Option<&str>> = out.iter().map(|e| e.header("x-table")).collect();
        assert_eq!(
            tables,
            [Some("public.orders"), Some("public.orders"), Some("public.customers"), None]
        );
        assert_eq!(out[0].json().expect("JSON")["before"], json!(null));
        assert_eq!(out[0].json().expect("JSON")["after"]["status"], json!("paid"));
    }
}
