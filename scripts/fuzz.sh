#!/usr/bin/env bash
# Runs every fuzz target for a bounded time (cargo-fuzz on the nightly toolchain, both
# installed here when missing). A crash fails the run and leaves its input under
# crates/<crate>/fuzz/artifacts/<target>/ for `cargo +nightly fuzz run <target> <file>`.
#
#   scripts/fuzz.sh            # each target for FUZZ_SECONDS (default 20)
#   FUZZ_SECONDS=600 scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"

if ! rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

# The fuzz workspaces keep their own target dirs (sanitizer builds never mix with ours).
unset CARGO_TARGET_DIR
for dir in crates/*/fuzz; do
    [ -f "$dir/Cargo.toml" ] || continue
    crate_dir="$(dirname "$dir")"
    for target in $(cd "$crate_dir" && cargo +nightly fuzz list); do
        echo "fuzzing $crate_dir: $target for ${seconds}s"
        (cd "$crate_dir" && cargo +nightly fuzz run "$target" -- \
            -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1)
    done
done
