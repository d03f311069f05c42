#!/usr/bin/env bash
# The demo: nginx with ngx-upload on http://127.0.0.1:8080 in front of the echo backend on
# 127.0.0.1:8081. Ctrl-C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

listen=${DEMO_LISTEN:-127.0.0.1:8080}
backend=${DEMO_BACKEND:-127.0.0.1:8081}

cargo build --release --workspace
nginx_bin=$(ls -t target/release/build/nginx-sys-*/out/objs/nginx | head -1)
prefix=$PWD/target/demo
mkdir -p "$prefix"
sed -e "s|{{MODULE}}|$PWD/target/release/libngx_upload.so|" -e "s|{{PREFIX}}|$prefix|g" \
    -e "s|{{LISTEN}}|$listen|" -e "s|{{BACKEND}}|$backend|" nginx-conf/demo.conf >"$prefix/nginx.conf"
if [ "$(id -u)" = 0 ]; then sed -i '1i user root;' "$prefix/nginx.conf"; fi

target/release/upload-echo-backend --listen "$backend" &
backend_pid=$!
"$nginx_bin" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" &
nginx_pid=$!
trap 'kill $nginx_pid $backend_pid 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
sleep 1

cat <<MSG

ngx-upload demo: nginx $("$nginx_bin" -v 2>&1 | sed 's/.*\///') on http://$listen, backend on $backend
files land in $prefix/store, the log is $prefix/error.log

Upload a file in two segments (the first answers 201 with the ranges held, the last is
handed to the backend, which echoes the form fields it received):

  head -c 300000 /dev/urandom > /tmp/demo.bin
  curl -i http://$listen/upload -H 'X-Session-ID: demo0001' -H 'Content-Type: application/octet-stream' \\
       -H 'Content-Disposition: attachment; name="file"; filename="demo.bin"' \\
       -H 'X-Content-Range: bytes 0-149999/300000' --data-binary @<(head -c 150000 /tmp/demo.bin)
  curl -i http://$listen/upload -H 'X-Session-ID: demo0001' -H 'Content-Type: application/octet-stream' \\
       -H 'Content-Disposition: attachment; name="file"; filename="demo.bin"' \\
       -H 'X-Content-Range: bytes 150000-299999/300000' --data-binary @<(tail -c 150000 /tmp/demo.bin)

Press Ctrl-C to stop.
MSG
wait $nginx_pid
