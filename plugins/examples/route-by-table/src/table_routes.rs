//! The routing table: pure logic, no host calls. BTreeMap rather than HashMap: std's
//! RandomState would make the plugin import wasi:random, which plugins do not get.

use std::collections::BTreeMap;

use switchyard_plugin_sdk::Config;

/// Sink names by `schema.table` and by bare `table`, and the sinks for everything else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    qualified: BTreeMap<String, BTreeMap<String, Vec<String>>>,
    bare: BTreeMap<String, Vec<String>>,
    default: Vec<String>,
}

impl Routes {
    /// Reads `routes` (required: an object of table → list of sink names) and `default`
    /// (optional list; absent or empty drops unrouted events).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        config.deny_unknown_keys(&["routes", "default"])?;
        let routes = config.require("routes")?;
        let routes = routes.as_object().ok_or_else(|| {
            format!(
                "config: `routes` must map tables to lists of sink names, \
                 e.g. {{\"public.orders\": [\"orders_topic\"]}}; got {routes}"
            )
        })?;
        let mut qualified: BTreeMap<String, BTreeMap<_, _>> = BTreeMap::new();
        let mut bare = BTreeMap::new();
        for (table, sinks) in routes {
            let sinks = sink_names(&format!("routes.\"{table}\""), sinks)?;
            match table.split('.').collect::<Vec<_>>()[..] {
                [table] if !table.is_empty() => {
                    bare.insert(table.to_owned(), sinks);
                }
                [schema, table] if !schema.is_empty() && !table.is_empty() => {
                    qualified
                        .entry(schema.to_owned())
                        .or_insert_with(BTreeMap::new)
                        .insert(table.to_owned(), sinks);
                }
                _ => {
                    return Err(format!(
                        "config: `routes` key \"{table}\" must be `table` or `schema.table`"
                    ));
                }
            }
        }
        let default = match config.get("default") {
            Some(sinks) => sink_names("default", sinks)?,
            None => Vec::new(),
        };
        Ok(Self {
            qualified,
            bare,
            default,
        })
    }

    /// The sinks of a change to `schema.table`: its own route, else its table's, else the
    /// default.
    pub fn sinks(&self, schema: &str, table: &str) -> &[String] {
        self.qualified
            .get(schema)
            .and_then(|tables| tables.get(table))
            .or_else(|| self.bare.get(table))
            .unwrap_or(&self.default)
    }

    /// The sinks of events that are not table changes.
    pub fn default_sinks(&self) -> &[String] {
        &self.default
    }
}

fn sink_names(
    key: &str,
    value: &switchyard_plugin_sdk::json::Value,
) -> Result<Vec<String>, String> {
    let names = value
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .map(|item| item.as_str())
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| format!("config: `{key}` must be a list of sink names, got {value}"))?;
    if names.iter().any(|name| name.is_empty()) {
        return Err(format!("config: `{key}` holds an empty sink name"));
    }
    Ok(names.into_iter().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::{Value, json};

    use super::*;

    fn routes(config: Value) -> Routes {
        Routes::from_config(&Config::new(config)).expect("a valid config")
    }

    fn error(config: Value) -> String {
        Routes::from_config(&Config::new(config)).expect_err("an invalid config")
    }

    #[test]
    fn schema_qualified_routes_win_over_bare_table_names() {
        let routes = routes(json!({
            "routes": {"public.orders": ["orders_topic"], "orders": ["legacy"], "audit.log": []},
            "default": ["audit"],
        }));
        assert_eq!(routes.sinks("public", "orders"), ["orders_topic"]);
        assert_eq!(routes.sinks("archive", "orders"), ["legacy"]);
        assert_eq!(routes.sinks("public", "customers"), ["audit"]);
        // An empty list is a route too: it drops that table's changes.
        assert!(routes.sinks("audit", "log").is_empty());
        assert_eq!(routes.default_sinks(), ["audit"]);
    }

    #[test]
    fn default_may_be_empty_or_absent() {
        let empty = routes(json!({"routes": {}, "default": []}));
        assert!(empty.sinks("public", "orders").is_empty());
        let absent = routes(json!({"routes": {"orders": ["t"]}}));
        assert!(absent.default_sinks().is_empty());
    }

    #[test]
    fn bad_configs_name_the_problem() {
        assert_eq!(error(json!({})), "config: `routes` is required");
        assert!(
            error(json!({"routes": ["orders"]})).starts_with("config: `routes` must map tables")
        );
        assert_eq!(
            error(json!({"routes": {"orders": "orders_topic"}})),
            "config: `routes.\"orders\"` must be a list of sink names, got \"orders_topic\""
        );
        assert_eq!(
            error(json!({"routes": {"db.public.orders": ["t"]}})),
            "config: `routes` key \"db.public.orders\" must be `table` or `schema.table`"
        );
        assert!(
            error(json!({"routes": {".orders": ["t"]}}))
                .contains("must be `table` or `schema.table`")
        );
        assert_eq!(
            error(json!({"routes": {}, "default": "audit"})),
            "config: `default` must be a list of sink names, got \"audit\""
        );
        assert_eq!(
            error(json!({"routes": {"orders": [""]}})),
            "config: `routes.\"orders\"` holds an empty sink name"
        );
        assert!(error(json!({"route": {}})).starts_with("config: unknown key `route`"));
    }
}
