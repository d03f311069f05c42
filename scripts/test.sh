#!/usr/bin/env bash
# Runs every test of ngx-upload: the engine's unit tests, and the integration tests that start
# real nginx with the module, first the vendored nginx 1.28 (then the demo pages in Chromium),
# then Debian's packaged 1.22.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

echo "== build (module, vendored nginx, backend)"
cargo build --workspace

echo "== unit and integration tests against the vendored nginx"
cargo test --workspace --no-fail-fast

echo "== the fuzz targets' checks on their committed inputs (docs/fuzzing.md; no libFuzzer run)"
cargo test --manifest-path fuzz/Cargo.toml

echo "== the demo page in headless Chromium (scripts/demo.sh with the debug build above)"
node tests/browser/demo.spec.mjs

echo "== the tus demo page (Uppy) in headless Chromium (scripts/demo.sh with the debug build above)"
node tests/browser/tus.spec.mjs

echo "== the module built for Debian's packaged nginx"
bash scripts/build-debian-module.sh
NGX_UPLOAD_NGINX=/usr/sbin/nginx \
NGX_UPLOAD_MODULE="$PWD/target/debian/release/libngx_upload.so" \
    cargo test -p ngx-upload --no-fail-fast
