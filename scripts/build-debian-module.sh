#!/usr/bin/env bash
# Builds the module for Debian's packaged nginx (bookworm: 1.22.1) from its nginx-dev tree.
# Result: target/debian/release/libngx_upload.so, loadable into /usr/sbin/nginx.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
src=$top/target/debian-nginx-src

if [ ! -f "$src/objs/ngx_auto_config.h" ] || [ /usr/share/nginx/src/conf_flags -nt "$src/objs/ngx_auto_config.h" ]; then
    rm -rf "$src"
    mkdir -p "$(dirname "$src")"
    cp -r /usr/share/nginx/src "$src"
    # conf_flags defines the bash array NGX_CONF_FLAGS: the configure arguments of the package.
    # shellcheck disable=SC1091
    source "$src/conf_flags"
    (cd "$src" && ./configure "${NGX_CONF_FLAGS[@]}" >configure.log 2>&1) || {
        tail -30 "$src/configure.log"
        exit 1
    }
fi

NGINX_SOURCE_DIR=$src NGINX_BUILD_DIR=$src/objs \
    cargo build --release --no-default-features --target-dir "$top/target/debian" -p ngx-upload
echo "built $top/target/debian/release/libngx_upload.so for $(/usr/sbin/nginx -v 2>&1)"
