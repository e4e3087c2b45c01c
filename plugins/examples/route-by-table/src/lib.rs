//! route-by-table — sends each Postgres change to the sinks configured for its table.
//!
//! ```toml
//! [plugins.by_table]
//! path = "plugins/target/wasm32-wasip2/release/route_by_table.wasm"
//! config = { routes = { "public.orders" = ["orders_topic"], customers = ["crm"] }, default = ["audit"] }
//! ```
//!
//! A change of `public.orders` goes to the sinks of `"public.orders"`, else of `"orders"`
//! (any schema), else of `default`; events that are not changes (HTTP, queues) go to
//! `default`. An empty or absent `default` drops them. Details in `table_routes.rs`; tested
//! natively with `cargo test -p route-by-table` in `plugins/`.

mod table_routes;

use switchyard_plugin_sdk::router::Router;
use switchyard_plugin_sdk::{Config, Event};

use crate::table_routes::Routes;

struct RouteByTable {
    routes: Routes,
}

impl Router for RouteByTable {
    fn init(config: Config) -> Result<Self, String> {
        Ok(Self {
            routes: Routes::from_config(&config)?,
        })
    }

    fn route(&self, event: &Event) -> Vec<String> {
        let table = event.table();
        let sinks = match &table {
            Some(table) => self.routes.sinks(&table.schema, &table.table),
            None => self.routes.default_sinks(),
        };
        sinks.to_vec()
    }
}

switchyard_plugin_sdk::export_router!(RouteByTable);

#[cfg(test)]
mod tests {
    use switchyard_plugin_sdk::json::json;

    use super::*;

    #[test]
    fn routes_changes_by_table_and_other_events_to_the_default() {
        let config = json!({
            "routes": {"public.orders": ["orders_topic", "audit"], "customers": ["crm"]},
            "default": ["audit"],
        });
        let router = RouteByTable::init(Config::new(config)).expect("a valid config");
        let change =
            |schema, table| Event::change("insert", schema, table, json!(null), json!({"id": 1}));
        let events = [
            change("public", "orders"),
            change("billing", "orders"),
            change("sales", "customers"),
            Event::json_message(&json!({"hello": "world"})),
            Event::message("not json", "text/plain"),
        ];
        let routed = router.route_batch(&events).expect("routing never fails");
        assert_eq!(
            routed,
            [
                vec!["orders_topic", "audit"],
                vec!["audit"],
                vec!["crm"],
                vec!["audit"],
                vec!["audit"],
            ]
        );
    }

    #[test]
    fn without_a_default_unrouted_events_are_dropped() {
        let config = json!({"routes": {"orders": ["orders_topic"]}});
        let router = RouteByTable::init(Config::new(config)).expect("a valid config");
        let other = Event::change("update", "public", "invoices", json!(null), json!({}));
        assert!(router.route(&other).is_empty());
    }
}
