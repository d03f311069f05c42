#!/usr/bin/env bash
# Installs what building and testing ngx-upload needs on Debian 12, as root. Sourced by
# scripts/test.sh and scripts/demo.sh; safe to run again (installs only what is missing).
set -euo pipefail

debian_packages=(
    build-essential pkg-config curl ca-certificates
    libclang-dev libpcre2-dev zlib1g-dev libssl-dev   # nginx-sys: bindgen and the vendored nginx
    nginx nginx-dev                                     # Debian's nginx 1.22 and its module tree
    strace                                              # tests/write_batching.rs counts writes
    chromium fonts-dejavu-core                          # the browser tests of the demo pages
    python3 openssl                                     # clients/python; the TLS example's test certificate
    python3-venv                                        # tuspy's venv (scripts/tus-clients.sh)
)
# The browser test runs on Node.js (the machine image has Node 20; Debian's is the fallback).
command -v npm >/dev/null 2>&1 || debian_packages+=(nodejs npm)

missing=()
for p in "${debian_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # The nginx package starts its service; this project never uses it.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if command -v systemctl >/dev/null 2>&1; then systemctl stop nginx 2>/dev/null || true; fi
fi

# playwright-core for tests/browser, at the version its package-lock.json pins.
browser_test_dir=$(dirname "${BASH_SOURCE[0]}")/../tests/browser
if [ ! -d "$browser_test_dir/node_modules/playwright-core" ]; then
    echo "setup: npm ci in tests/browser"
    (cd "$browser_test_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# Uppy's prebuilt bundle for the tus demo page (demo/tus.html), at the version demo/package-lock.json
# pins; nginx serves node_modules/uppy/dist (nginx-conf/demo.conf).
demo_dir=$(dirname "${BASH_SOURCE[0]}")/../demo
if [ ! -f "$demo_dir/node_modules/uppy/dist/uppy.min.js" ] ||
    ! grep -qs "\"version\": \"$(sed -n 's/.*"uppy": "\(.*\)".*/\1/p' "$demo_dir/package.json")\"" \
        "$demo_dir/node_modules/uppy/package.json"; then
    echo "setup: npm ci in demo"
    (cd "$demo_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi

# The real tus clients of tests/tus.rs and tests/ietf.rs: tus-js-client and tuspy, pinned.
bash "$(dirname "${BASH_SOURCE[0]}")/tus-clients.sh"

if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: installing the Rust toolchain with rustup"
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
fi
