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

dir="$root/tests/console"
wanted=$(node -p "require('$dir/package.json').dependencies['playwright-core']")
installed=$(node -p "require('$dir/node_modules/playwright-core/package.json').version" 2>/dev/null || true)
if [[ "$installed" != "$wanted" ]]; then
    echo "==> installing playwright-core $wanted into tests/console/node_modules"
    # Playwright must not fetch browsers of its own: the system chromium is used.
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix "$dir" \
        --no-audit --no-fund --ignore-scripts
fi
