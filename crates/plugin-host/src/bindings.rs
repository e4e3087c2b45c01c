//! Host bindings generated from `wit/` (private: the crate's API speaks
//! `switchyard_event::Event`, not the generated types).
//!
//! One `bindgen!` per world. The `filter` world generates the shared `types` and `host`
//! interfaces; `router` reuses them through `with`, so an `Event` or a `Level` is the
//! same Rust type for both. Events handed to a plugin are borrowed from switchyard's own
//! (`ownership: Borrowing`): lowering them copies each field once, into the guest,
//! instead of cloning every string on the host first. `transform` also returns events,
//! so it has its own `types` with a borrowed `EventParam` and an owned `EventResult`.

pub(crate) mod filter {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "filter",
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

pub(crate) mod router {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "router",
        ownership: Borrowing { duplicate_if_necessary: true },
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
        ownership: Borrowing { duplicate_if_necessary: true },
        with: {
            "switchyard:plugin/host": super::filter::switchyard::plugin::host,
        },
    });
}

pub(crate) use filter::switchyard::plugin::host::{self, Level};
pub(crate) use filter::switchyard::plugin::types::{self, Event, Header};
