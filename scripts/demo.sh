#!/usr/bin/env bash
# The demo: nginx with ngx-upload on http://127.0.0.1:8080 in front of the echo backend on
# 127.0.0.1:8081, the browser page of demo/ on http://127.0.0.1:8080/ and the tus page (Uppy) on
# http://127.0.0.1:8080/tus.html. Ctrl-C stops both.
# Overrides (the browser test uses them): DEMO_LISTEN, DEMO_BACKEND, DEMO_PREFIX (nginx prefix
# directory, default target/demo), DEMO_PROFILE=debug (use the debug build instead of release).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

listen=${DEMO_LISTEN:-127.0.0.1:8080}
backend=${DEMO_BACKEND:-127.0.0.1:8081}

profile=${DEMO_PROFILE:-release}
case $profile in
    release) cargo build --release --workspace ;;
    debug) cargo build --workspace ;;
    *) echo "demo: DEMO_PROFILE must be release or debug" >&2; exit 2 ;;
esac
nginx_bin=$(ls -t target/$profile/build/nginx-sys-*/out/objs/nginx | head -1)
prefix=$(mkdir -p "${DEMO_PREFIX:-target/demo}" && cd "${DEMO_PREFIX:-target/demo}" && pwd)
sed -e "s|{{MODULE}}|$PWD/target/$profile/libngx_upload.so|" -e "s|{{PREFIX}}|$prefix|g" \
    -e "s|{{LISTEN}}|$listen|" -e "s|{{BACKEND}}|$backend|" -e "s|{{DEMO}}|$PWD/demo|" \
    nginx-conf/demo.conf >"$prefix/nginx.conf"
if [ "$(id -u)" = 0 ]; then sed -i '1i user root;' "$prefix/nginx.conf"; fi

target/$profile/upload-echo-backend --listen "$backend" &
backend_pid=$!
"$nginx_bin" -p "$prefix" -c "$prefix/nginx.conf" -e "$prefix/error.log" &
nginx_pid=$!
trap 'kill $nginx_pid $backend_pid 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
sleep 1

cat <<MSG

ngx-upload demo: nginx $("$nginx_bin" -v 2>&1 | sed 's/.*\///') on http://$listen, backend on $backend
files land in $prefix/store, the log is $prefix/error.log, one line per segment in $prefix/access.log

In a browser, open http://$listen/ (?segment=BYTES sets the segment size, ?delay=MS slows it down),
or http://$listen/tus.html for tus 1.0 with Uppy on /files/ (?chunkSize=BYTES: PATCHes of that size).

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
