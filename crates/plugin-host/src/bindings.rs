//! Host bindings generated from `wit/` (private: the crate's API speaks
//! `switchyard_event::Event`, not the generated types).
//!
//! One `bindgen!` per world. The `filter` world generates the shared `types` and `host`
//! interfaces; the other two reuse them through `with`, so an `Event` or a `Level` is the
//! same Rust type whichever world a plugin exports.

pub(crate) mod filter {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "filter",
    });
}

pub(crate) mod router {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "router",
        with: {
            "switchyard:plugin/types": super::filter::switchyard::plugin::types,
            "switchyard:plugin/host": super::filter::switchyard::plugin::host,
        },
    });
}

pub(crate) mod transform {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "transform",
        with: {
            "switchyard:plugin/types": super::filter::switchyard::plugin::types,
            "switchyard:plugin/host": super::filter::switchyard::plugin::host,
        },
    });
}

pub(crate) use filter::switchyard::plugin::host::{self, Level};
pub(crate) use filter::switchyard::plugin::types::{self, Event, Header};
