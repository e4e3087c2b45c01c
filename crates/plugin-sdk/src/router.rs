//! The `router` world: pick the sinks each event goes to.
//!
//! ```
//! use switchyard_plugin_sdk::{Config, Event, router::Router};
//!
//! struct ByKind;
//!
//! impl Router for ByKind {
//!     fn init(_config: Config) -> Result<Self, String> {
//!         Ok(ByKind)
//!     }
//!
//!     fn route(&self, event: &Event) -> Vec<String> {
//!         vec![format!("{}_topic", event.kind)]
//!     }
//! }
//!
//! switchyard_plugin_sdk::export_router!(ByKind);
//! ```

use crate::{Config, Event};

/// A router plugin. One value is built by `init` per plugin instance and serves every batch
/// that instance gets.
pub trait Router: Sized + 'static {
    /// Builds the plugin from its config. An `Err` stops switchyard from starting and is
    /// shown to the user: say which key is wrong and why.
    fn init(config: Config) -> Result<Self, String>;

    /// The names of the sinks this event goes to. An empty list drops the event; a name
    /// that is not a sink of the pipeline dead-letters it.
    fn route(&self, event: &Event) -> Vec<String>;

    /// One list of sink names per event, in order. Override it to route the whole batch at
    /// once, or to fail it: an `Err` sends every event of the batch to `on_error`.
    fn route_batch(&self, events: &[Event]) -> Result<Vec<Vec<String>>, String> {
        Ok(events.iter().map(|event| self.route(event)).collect())
    }
}

/// Exports a type implementing [`Router`] as this component's `router` world. Call it once,
/// in a `cdylib` crate built for wasm32-wasip2. On other targets it only checks the type.
#[macro_export]
macro_rules! export_router {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::{Batch, Result, Slot, String, Vec, router as bindings};
            use $crate::router::Router as _;

            ::std::thread_local! {
                static PLUGIN: Slot<$plugin> = const { Slot::new() };
            }

            struct Export;

            impl bindings::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    let build = <$plugin as $crate::router::Router>::init;
                    PLUGIN.with(|slot| slot.init(&config, build))
                }

                fn route(events: Batch) -> Result<Vec<Vec<String>>, String> {
                    PLUGIN.with(|slot| {
                        slot.with_events(&events, |plugin, events| plugin.route_batch(events))
                    })
                }
            }

            bindings::export! { Export with_types_in bindings }
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_router::<$plugin>();
    };
}
