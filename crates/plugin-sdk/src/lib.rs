//! Write switchyard plugins in Rust.
//!
//! A plugin is a WebAssembly component (wasm32-wasip2) exporting one world of
//! `wit/plugin.wit`: `filter`, `router` or `transform`. This crate wraps the generated
//! bindings so a plugin is a type with two methods and one macro call:
//!
//! ```
//! use switchyard_plugin_sdk::{Config, Event, JsonPath, filter::Filter};
//!
//! struct Paid {
//!     status: JsonPath,
//! }
//!
//! impl Filter for Paid {
//!     fn init(config: Config) -> Result<Self, String> {
//!         let status = config.path("field")?.unwrap_or(JsonPath::parse("after.status")?);
//!         Ok(Paid { status })
//!     }
//!
//!     fn keep(&self, event: &Event) -> bool {
//!         event.lookup(&self.status).is_some_and(|status| status == "paid")
//!     }
//! }
//!
//! switchyard_plugin_sdk::export_filter!(Paid);
//! ```
//!
//! The crate needs `crate-type = ["cdylib"]` and builds with
//! `cargo build --release --target wasm32-wasip2`. The SDK unpacks each batch the host
//! hands in into [`Event`]s (reusing the previous batch's allocations for filters and
//! routers), runs the batch loop, parses the config JSON, keeps the value `init` built for
//! the calls that follow, and turns "not initialised" into an error instead of a trap.
//!
//! Everything also compiles natively: the `export_*!` macros export nothing there, and
//! [`log`] writes to stderr, so a plugin's logic is unit-tested with a plain `cargo test`.

mod batch;
mod bindings;
mod config;
mod event;
pub mod filter;
pub mod json;
pub mod log;
pub mod router;
pub mod transform;

pub use bindings::{Event, Header};
pub use config::Config;
pub use event::{JSON, Table};
pub use json::JsonPath;
pub use serde_json;

/// Nanoseconds from the host's monotonic clock; only differences mean something. Natively
/// (in unit tests), nanoseconds since the first call.
pub fn monotonic_now() -> u64 {
    #[cfg(target_arch = "wasm32")]
    return bindings::host::monotonic_now();
    #[cfg(not(target_arch = "wasm32"))]
    {
        use std::sync::OnceLock;
        use std::time::Instant;
        static START: OnceLock<Instant> = OnceLock::new();
        let elapsed = START.get_or_init(Instant::now).elapsed();
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Used by the `export_*!` macros; not a stable API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;

    pub use std::result::Result;
    pub use std::string::String;
    pub use std::vec::Vec;

    use crate::Config;
    pub use crate::bindings::{Batch, Event, filter, router, transform};

    /// Holds the value `init` built, for the calls that follow on the same instance, and
    /// the events of the last batch, whose allocations the next batch reuses.
    pub struct Slot<T> {
        plugin: RefCell<Option<T>>,
        events: RefCell<Vec<Event>>,
    }

    const NOT_INITIALISED: &str = "plugin called before a successful init";

    impl<T> Slot<T> {
        pub const fn new() -> Self {
            Self {
                plugin: RefCell::new(None),
                events: RefCell::new(Vec::new()),
            }
        }

        /// Parses the config, builds the plugin and keeps it (replacing any earlier one).
        pub fn init(
            &self,
            config: &str,
            build: impl FnOnce(Config) -> Result<T, String>,
        ) -> Result<(), String> {
            let plugin = build(Config::from_json(config)?)?;
            *self.plugin.borrow_mut() = Some(plugin);
            Ok(())
        }

        /// Runs `call` on the plugin; an error if `init` has not succeeded.
        pub fn with<R>(&self, call: impl FnOnce(&T) -> Result<R, String>) -> Result<R, String> {
            match self.plugin.borrow().as_ref() {
                Some(plugin) => call(plugin),
                None => Err(NOT_INITIALISED.to_owned()),
            }
        }

        /// Runs `call` on the plugin with the events of `batch`, unpacked into the events
        /// of the previous call (filters and routers only borrow them).
        pub fn with_events<R>(
            &self,
            batch: &Batch,
            call: impl FnOnce(&T, &[Event]) -> Result<R, String>,
        ) -> Result<R, String> {
            let plugin = self.plugin.borrow();
            let plugin = plugin.as_ref().ok_or(NOT_INITIALISED)?;
            let mut events = self.events.borrow_mut();
            crate::batch::unpack_into(batch, &mut events)?;
            call(plugin, &events)
        }

        /// Runs `call` on the plugin with the events of `batch`, newly unpacked (a
        /// transform takes them by value).
        pub fn with_owned_events<R>(
            &self,
            batch: &Batch,
            call: impl FnOnce(&T, Vec<Event>) -> Result<R, String>,
        ) -> Result<R, String> {
            let plugin = self.plugin.borrow();
            let plugin = plugin.as_ref().ok_or(NOT_INITIALISED)?;
            call(plugin, crate::batch::unpack(batch)?)
        }
    }

    impl<T> Default for Slot<T> {
        fn default() -> Self {
            Self::new()
        }
    }

    pub const fn assert_filter<T: crate::filter::Filter>() {}
    pub const fn assert_router<T: crate::router::Router>() {}
    pub const fn assert_transform<T: crate::transform::Transform>() {}
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::__private::Slot;
    use super::*;

    struct Threshold {
        min: f64,
    }

    impl filter::Filter for Threshold {
        fn init(config: Config) -> Result<Self, String> {
            let min = config.number("min")?.ok_or("config: `min` is required")?;
            Ok(Threshold { min })
        }

        fn keep(&self, event: &Event) -> bool {
            let total = JsonPath::parse("total").expect("a valid path");
            event
                .lookup(&total)
                .and_then(|total| total.as_f64())
                .is_some_and(|total| total >= self.min)
        }
    }

    export_filter!(Threshold);

    #[test]
    fn a_slot_runs_the_batch_on_what_init_built() {
        let slot = Slot::<Threshold>::new();
        let events = [json!({"total": 5}), json!({"total": 50}), json!("text")]
            .iter()
            .map(Event::json_message)
            .collect::<Vec<_>>();
        let run = |slot: &Slot<Threshold>| {
            slot.with(|plugin| filter::Filter::keep_batch(plugin, &events))
        };

        assert_eq!(
            run(&slot),
            Err("plugin called before a successful init".to_owned())
        );
        assert_eq!(
            slot.init(r#"{"min": "ten"}"#, <Threshold as filter::Filter>::init),
            Err("config: `min` must be a number, got \"ten\"".to_owned())
        );
        assert!(run(&slot).is_err());
        assert_eq!(
            slot.init("{min", <Threshold as filter::Filter>::init)
                .map_err(|e| e.starts_with("config is not valid JSON")),
            Err(true)
        );

        slot.init(r#"{"min": 10}"#, <Threshold as filter::Filter>::init)
            .unwrap();
        assert_eq!(run(&slot), Ok(vec![false, true, false]));
        // A second init replaces the plugin.
        slot.init(r#"{"min": 1}"#, <Threshold as filter::Filter>::init)
            .unwrap();
        assert_eq!(run(&slot), Ok(vec![true, true, false]));
    }

    #[test]
    fn a_slot_unpacks_each_batch_for_the_plugin() {
        let slot = Slot::<Threshold>::new();
        let events = [json!({"total": 50}), json!({"total": 5})]
            .iter()
            .map(Event::json_message)
            .collect::<Vec<_>>();
        let batch = crate::batch::pack(&events);
        let run = |slot: &Slot<Threshold>, batch| {
            slot.with_events(batch, |plugin, events| {
                filter::Filter::keep_batch(plugin, events)
            })
        };
        assert_eq!(
            run(&slot, &batch),
            Err("plugin called before a successful init".to_owned())
        );
        slot.init(r#"{"min": 10}"#, <Threshold as filter::Filter>::init)
            .unwrap();
        assert_eq!(run(&slot, &batch), Ok(vec![true, false]));
        // The next batch reuses the events of this one; a shorter one leaves none behind.
        let fewer = crate::batch::pack(&events[1..]);
        assert_eq!(run(&slot, &fewer), Ok(vec![false]));
        assert_eq!(
            slot.with_owned_events(&batch, |_, events| Ok(events)),
            Ok(events)
        );
    }

    #[test]
    fn the_clock_moves_forward_natively() {
        let first = monotonic_now();
        assert!(monotonic_now() >= first);
        log::info("logging natively goes to stderr");
    }
}
