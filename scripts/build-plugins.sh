#!/usr/bin/env bash
# Builds every guest in plugins/ (test fixtures and examples) as a WebAssembly component.
# Output: plugins/target/wasm32-wasip2/release/*.wasm, where the plugin-host tests look.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target=wasm32-wasip2

if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

cd "$root/plugins"
# The plugins workspace keeps its own target dir so the output path above holds even
# when CARGO_TARGET_DIR is set for the main workspace.
unset CARGO_TARGET_DIR
cargo build --release --target "$target" "$@"
ls -1 "$root/plugins/target/$target/release/"*.wasm
