#!/usr/bin/env bash
# The whole test suite: installs test-only tools, checks formatting, lints, builds once
# and runs every test (unit, property, end-to-end with the real binary) with nextest.
#
#   scripts/test.sh            # everything
#   scripts/test.sh -E 'test(kill)'   # extra arguments go to `cargo nextest run`
#   SKIP_FUZZ=1 scripts/test.sh       # without the bounded fuzzing step at the end
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { echo; echo "==> $* ($(( $(date +%s) - start ))s)"; }

step "installing test tools"
scripts/install-test-tools.sh

step "checking formatting"
cargo fmt --all -- --check

step "building (one debug profile for everything)"
cargo build --workspace --all-targets --locked

step "lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "layering: low crates know no async runtime or HTTP stack"
for crate in switchyard-event switchyard-api switchyard-ack switchyard-config switchyard-store switchyard-connector; do
    deps=$(cargo tree --locked -e normal -p "$crate" --prefix none)
    if grep -qE '^(tokio|wasmtime|rdkafka|axum|hyper|reqwest) ' <<<"$deps"; then
        echo "error: $crate depends on tokio, wasmtime, rdkafka or an HTTP stack (axum, hyper, reqwest); low crates must stay free of them (see ARCHITECTURE.md)" >&2
        exit 1
    fi
done
echo "ok"

step "layering: only the CLI and the end-to-end tests depend on the runtime"
# Connector crates (sinks, sources, the queue broker) implement switchyard-connector's
# contracts; the runtime depends on them, never the other way round.
dependents=$(cargo tree --locked --workspace -e normal,build,dev -i switchyard-runtime \
    --prefix none --depth 1 | awk '{print $1}' | sort -u)
for crate in $dependents; do
    case "$crate" in
        switchyard-runtime | switchyard-cli | switchyard-tests) ;;
        *)
            echo "error: $crate depends on switchyard-runtime; only the CLI and tests/ may (see ARCHITECTURE.md)" >&2
            exit 1
            ;;
    esac
done
echo "ok"

step "building the WebAssembly plugins (examples and test fixtures)"
scripts/build-plugins.sh --locked

step "example plugins: their logic, natively"
(cd plugins && unset CARGO_TARGET_DIR && cargo test --locked -p filter-by-field -p route-by-table -p redact-fields -p outbox-router)

step "tests"
cargo nextest run --workspace --locked --no-fail-fast "$@"

step "fuzzing the request parsers (bounded: FUZZ_SECONDS each, default 20; SKIP_FUZZ=1 skips)"
if [ -n "${SKIP_FUZZ:-}" ]; then
    echo "skipped (SKIP_FUZZ is set)"
else
    scripts/fuzz.sh
fi

step "done"
