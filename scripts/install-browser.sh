#!/usr/bin/env bash
# Installs what the console's browser test (tests/console.rs) needs: Debian's chromium
# (only when /usr/bin/chromium is missing) and playwright-core, pinned by
# tests/console/package-lock.json, into tests/console/node_modules (gitignored).
# No browser is downloaded by playwright: the test drives the system chromium.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"

if [[ ! -x /usr/bin/chromium ]]; then
    echo "==> installing chromium (the console's browser test)"
    apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi

if ! command -v npm >/dev/null 2>&1; then
    echo "==> installing nodejs and npm (the console's browser test)"
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi

if [[ ! -f "$root/tests/console/node_modules/playwright-core/package.json" ]]; then
    echo "==> installing playwright-core into tests/console/node_modules"
    # Playwright must not fetch browsers of its own: the system chromium is used.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$root/tests/console" \
        --no-audit --no-fund --ignore-scripts
fi
