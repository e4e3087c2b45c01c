#!/usr/bin/env bash
# Installs the toolchains that build JavaScript and Python plugins, from the package
# registries, into .tools (gitignored), and links them into .tools/bin:
#
#   componentize-js  (npm: @bytecodealliance/componentize-js)  .tools/js/node_modules
#   componentize-py  (PyPI: componentize-py)                   .tools/python (a venv)
#
# The versions are the ones `switchyard plugin new --lang js|python` pins
# (crates/cli/src/plugin_build.rs); the tests that build JS and Python plugins put
# .tools/bin on PATH. Idempotent: a toolchain already at its version is left alone.
# Needs node with npm, and python3 with venv and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

# Read the pinned versions from the one place that defines them.
pinned() {
    sed -n "s/^pub const $1: &str = \"\\(.*\\)\";/\\1/p" crates/cli/src/plugin_build.rs
}
JS_VERSION="$(pinned COMPONENTIZE_JS)"
PY_VERSION="$(pinned COMPONENTIZE_PY)"
[[ -n "$JS_VERSION" && -n "$PY_VERSION" ]] \
    || { echo "error: cannot read the pinned versions from crates/cli/src/plugin_build.rs" >&2; exit 1; }

mkdir -p .tools/bin

installed_js="$(cat .tools/js/node_modules/@bytecodealliance/componentize-js/package.json 2>/dev/null \
    | sed -n 's/^  "version": "\(.*\)",/\1/p' || true)"
if [[ "$installed_js" != "$JS_VERSION" ]]; then
    command -v npm >/dev/null 2>&1 \
        || { echo "error: npm is needed to install componentize-js; install Node.js 20+ with npm" >&2; exit 1; }
    echo "==> installing componentize-js $JS_VERSION from npm into .tools/js (about 400 MB, a minute)"
    mkdir -p .tools/js
    [[ -f .tools/js/package.json ]] || echo '{"private": true}' > .tools/js/package.json
    npm install --prefix .tools/js --no-audit --no-fund --loglevel=error \
        "@bytecodealliance/componentize-js@$JS_VERSION" >/dev/null
fi
ln -sf ../js/node_modules/.bin/componentize-js .tools/bin/componentize-js
echo "componentize-js $JS_VERSION: .tools/bin/componentize-js"

if ! .tools/python/bin/componentize-py --version 2>/dev/null | grep -qx "componentize-py $PY_VERSION"; then
    echo "==> installing componentize-py $PY_VERSION from PyPI into .tools/python"
    python3 -m venv .tools/python
    .tools/python/bin/pip install --quiet --disable-pip-version-check "componentize-py==$PY_VERSION"
fi
ln -sf ../python/bin/componentize-py .tools/bin/componentize-py
echo "componentize-py $PY_VERSION: .tools/bin/componentize-py"
