//! The `mqtt` source.
