//! The `transform` world: rewrite, drop or split events.
//!
//! ```
//! use switchyard_plugin_sdk::{Config, Event, transform::Transform};
//!
//! struct Tag;
//!
//! impl Transform for Tag {
//!     fn init(_config: Config) -> Result<Self, String> {
//!         Ok(Tag)
//!     }
//!
//!     fn transform(&self, mut event: Event) -> Vec<Event> {
//!         event.set_header("seen-by", "tag");
//!         vec![event]
//!     }
//! }
//!
//! switchyard_plugin_sdk::export_transform!(Tag);
//! ```

use crate::{Config, Event};

/// A transform plugin. One value is built by `init` per plugin instance and serves every
/// batch that instance gets.
pub trait Transform: Sized + 'static {
    /// Builds the plugin from its config. An `Err` stops switchyard from starting and is
    /// shown to the user: say which key is wrong and why.
    fn init(config: Config) -> Result<Self, String>;

    /// The events that replace this one: none drops it, one rewrites it, several split it.
    /// Keep the `id` (or derive new ids from it) so consumers can still deduplicate.
    fn transform(&self, event: Event) -> Vec<Event>;

    /// One list of output events per input event, in order. Override it to work on the
    /// whole batch at once, or to fail it: an `Err` sends every event of the batch to
    /// `on_error`.
    fn transform_batch(&self, events: Vec<Event>) -> Result<Vec<Vec<Event>>, String> {
        Ok(events
            .into_iter()
            .map(|event| self.transform(event))
            .collect())
    }
}

/// Exports a type implementing [`Transform`] as this component's `transform` world. Call it
/// once, in a `cdylib` crate built for wasm32-wasip2. On other targets it only checks the
/// type.
#[macro_export]
macro_rules! export_transform {
    ($plugin:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__private::{Batch, Result, Slot, String, Vec, transform as bindings};
            use $crate::transform::Transform as _;

            ::std::thread_local! {
                static PLUGIN: Slot<$plugin> = const { Slot::new() };
            }

            struct Export;

            impl bindings::Guest for Export {
                fn init(config: String) -> Result<(), String> {
                    let build = <$plugin as $crate::transform::Transform>::init;
                    PLUGIN.with(|slot| slot.init(&config, build))
                }

                fn transform(events: Batch) -> Result<Vec<Vec<$crate::Event>>, String> {
                    PLUGIN.with(|slot| {
                        slot.with_owned_events(&events, |plugin, events| {
                            plugin.transform_batch(events)
                        })
                    })
                }
            }

            bindings::export! { Export with_types_in bindings }
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = $crate::__private::assert_transform::<$plugin>();
    };
}
