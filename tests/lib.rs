//! End-to-end tests live in this directory; see the [[test]] targets in Cargo.toml.
