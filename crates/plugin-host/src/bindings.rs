//! Host bindings generated from `wit/` (private: the crate's API speaks
//! `switchyard_event::Event`, not the generated types).
//!
//! One `bindgen!` per world. The `filter` world generates the shared `types` and `host`
//! interfaces; `router` and `transform` reuse them through `with`, so a `Batch` or a
//! `Level` is the same Rust type for all three. A call takes its `Batch` by reference:
//! the host packs events into the vectors of one `Batch` it keeps from call to call, and
//! lowering copies each of those vectors once, into the guest.

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
pub(crate) use filter::switchyard::plugin::types::{self, Batch, Event as WitEvent};
