//! The `filter` world: keep or drop each event.
//!
//! ```
//! use switchyard_plugin_sdk::{Config, Event, filter::Filter};
//!
//! struct Paid;
//!
//! impl Filter for Paid {
//!     fn init(_config: Config) -> Result<Self, String> {
//!         Ok(Paid)
//!     }
//!
//!     fn keep(&self, event: &Event) -> bool {
//!         event.header("status") == Some("paid")
//!     }
//! }
//!
//! switchyard_plugin_sdk::export_filter!(Paid);
//! ```

use crate::{Config, Event};

/// A filter plugin. One value is built by `init` per plugin instance and serves every batch
/// that instance gets; instances are replaced after a failed batch, so keep no state that
/// must outlive one.
pub trait Filter: Sized + 'static {
    /// Builds the plugin from its config. An `Err` stops switchyard from starting and is
    /// shown to the user: say which key is wrong and why.
    fn init(config: Config) -> Result<Self, String>;

    /// `true` keeps the event, `false` drops it (it is acknowledged, not delivered).
    fn keep(&self, event: &Event) -> bool;

    /// One decision per event, in order. Override it to decide on the whole batch at once,
    /// or to fail it: an `Err` sends every event of the batch to the plugin's `on_error`.
    fn keep_batch(&self, events: &[Event]) -> Result<Vec<bool>, String> {
        Ok(events.iter().map(|event| self.keep(event)).collect())
    }
}

/// Exports a type implementing [`Filter`] as this component's `filter` world. Call it once,
/// in a `cdylib` crate built for wasm32-wasip2. On other targets it only checks the type,
/// so the crate's unit tests build natively.
#[macro_export]
macro_rules! export_filter {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::{Batch, Result, Slot, String, Vec, filter as bindings};
            use $crate::filter::Filter as _;

            ::std::thread_local! {
                static PLUGIN: Slot<$plugin> = const { Slot::new() };
            }

            struct Export;

            impl bindings::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    let build = <$plugin as $crate::filter::Filter>::init;
                    PLUGIN.with(|slot| slot.init(&config, build))
                }

                fn filter(events: Batch) -> Result<Vec<bool>, String> {
                    PLUGIN.with(|slot| {
                        slot.with_events(&events, |plugin, events| plugin.keep_batch(events))
                    })
                }
            }

            bindings::export! { Export with_types_in bindings }
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_filter::<$plugin>();
    };
}
