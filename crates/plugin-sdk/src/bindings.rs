//! Bindings generated from `wit/` by wit-bindgen, one module per world.
//!
//! wit-bindgen generates one world per invocation. The `filter` module owns the shared
//! `types` and `host` interfaces; the other two reuse them through `with`, so there is one
//! `Event` type and one `log` import whichever world a plugin exports.
//!
//! `pub_export_macro` matters for correctness, not just visibility: with it, the custom
//! section this library carries describes only the world's *imports*, and the section with
//! the exports is emitted by the `export!` macro in the plugin's own crate. A plugin
//! therefore exports exactly the one world whose `export_*!` macro it calls, even though
//! this crate generates all three.
//!
//! The generated export functions take a `batch` as its five lists' pointers and
//! lengths, ten flat parameters: hence the `too_many_arguments` allowances.

#[allow(clippy::too_many_arguments)]
pub mod filter {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "filter",
        pub_export_macro: true,
        additional_derives: [PartialEq, Eq],
    });
}

#[allow(clippy::too_many_arguments)]
pub mod router {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "router",
        pub_export_macro: true,
        with: {
            "switchyard:plugin/types@0.2.0": crate::bindings::filter::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::bindings::filter::switchyard::plugin::host,
        },
    });
}

#[allow(clippy::too_many_arguments)]
pub mod transform {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "transform",
        pub_export_macro: true,
        with: {
            "switchyard:plugin/types@0.2.0": crate::bindings::filter::switchyard::plugin::types,
            "switchyard:plugin/host@0.2.0": crate::bindings::filter::switchyard::plugin::host,
        },
    });
}

pub use filter::switchyard::plugin::host;
pub use filter::switchyard::plugin::types::{Batch, Event, Header};
