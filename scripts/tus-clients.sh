#!/usr/bin/env bash
# Installs the real tus clients the integration tests drive (tests/clients/README.md):
# tus-js-client (npm ci in tests/clients/tus-js, from its package-lock.json) and tuspy (a venv
# in target/tuspy-venv, from tests/clients/tuspy/requirements.txt). Idempotent: installs only
# what is missing or not at the pinned version. Run by scripts/setup.sh, and by tests/tus.rs and
# tests/ietf.rs on first use.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

js="$root/tests/clients/tus-js"
if ! grep -qs '"version": "4.3.1"' "$js/node_modules/tus-js-client/package.json"; then
    echo "tus-clients: npm ci in tests/clients/tus-js"
    (cd "$js" && npm ci --no-audit --no-fund --loglevel=error)
fi

venv="$root/target/tuspy-venv"
if ! "$venv/bin/python" -c \
    'import importlib.metadata as m, sys; sys.exit(m.version("tuspy") != "1.1.0")' 2>/dev/null; then
    echo "tus-clients: tuspy 1.1.0 into target/tuspy-venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        -r "$root/tests/clients/tuspy/requirements.txt"
fi
