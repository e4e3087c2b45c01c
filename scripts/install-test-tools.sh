#!/usr/bin/env bash
# Installs the tools the test suite needs and that a fresh machine may lack.
# Idempotent: each tool is installed only when missing. Only package registries are used.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have cargo; then
    echo "error: cargo is not installed; install Rust 1.95+ with rustup first" >&2
    exit 1
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "==> installing cargo-nextest from crates.io (one time, a few minutes)"
    cargo install --locked cargo-nextest
fi

if ! have curl; then
    echo "==> installing curl (used by the README examples)"
    apt-get update -qq && apt-get install -y -qq curl >/dev/null
fi

# Build requirement: rdkafka's `ssl` feature links the system OpenSSL (headers and
# pkg-config file from libssl-dev). The Kafka TLS tests put a socat TLS proxy in front of
# the broker, with certificates made by the openssl command. The MQTT tests start a
# private mosquitto per test (tests/mqtt.rs).
missing=()
pkg-config --exists openssl 2>/dev/null || missing+=(libssl-dev pkg-config)
have socat || missing+=(socat)
have openssl || missing+=(openssl)
have mosquitto || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
if (( ${#missing[@]} )); then
    echo "==> installing ${missing[*]} (OpenSSL for rdkafka's TLS; the Kafka TLS tests' proxy; the MQTT tests' broker)"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Kafka-protocol broker of the Kafka tests (into .tools/bin, gitignored).
"$(dirname "$0")/install-tansu.sh"

# The toolchains that build JavaScript and Python plugins (into .tools, gitignored); the
# tests that go from `plugin new --lang js|python` to a running pipeline use them.
"$(dirname "$0")/install-plugin-toolchains.sh"

# The console's browser test: the system chromium and playwright-core (into
# tests/console/node_modules, gitignored).
"$(dirname "$0")/install-browser.sh"
