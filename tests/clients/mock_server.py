#!/usr/bin/env python3
"""A throwaway in-memory tus 1.0 / IETF-draft server on loopback, only to smoke-test the client
scripts of this directory without nginx (``python3 mock_server.py 127.0.0.1 0`` prints the
port it listens on). It is not a reference: the module's behaviour is defined by the
ngx-upload-protocol crate and checked by the integration tests against real nginx.

It speaks just enough: creation (with upload, deferred length, partial and final
concatenation), HEAD, PATCH (exact offset, sha1/md5 Upload-Checksum), DELETE, OPTIONS,
X-HTTP-Method-Override; IETF interop 5 and 6 creation with Upload-Complete, appends, HEAD.
A completed upload is "handed off": the answer carries a small JSON body.
"""

import base64
import hashlib
import json
import secrets
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Lock

PREFIX = "/files/"
UPLOADS = {}
LOCK = Lock()


class Upload:
    def __init__(self, length, partial=False, parts=None, metadata=""):
        self.length = length
        self.data = bytearray()
        self.partial = partial
        self.parts = parts
        self.metadata = metadata
        self.declared_complete = False


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    # -- helpers ---------------------------------------------------------------------------
    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def ietf(self):
        return self.headers.get("Upload-Draft-Interop-Version")

    def answer(self, status, headers=(), body=b""):
        self.send_response(status)
        if not self.ietf() and self.command != "OPTIONS":
            self.send_header("Tus-Resumable", "1.0.0")
        for name, value in headers:
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def method(self):
        return self.headers.get("X-HTTP-Method-Override", self.command).upper()

    def upload_id(self):
        path = self.path.split("?")[0]
        if path.startswith(PREFIX) and len(path) > len(PREFIX):
            return path[len(PREFIX):]
        return None

    def hand_off(self, upload_id, headers):
        body = json.dumps({"handed_off": upload_id, "size": len(UPLOADS[upload_id].data)}).encode()
        self.answer(200, headers + [("Content-Type", "application/json")], body)

    # -- dispatch ----------------------------------------------------------------------------
    def do_OPTIONS(self):
        self.answer(200, [("Tus-Version", "1.0.0"),
                          ("Tus-Extension", "creation,creation-with-upload,creation-defer-length,"
                                            "termination,concatenation,checksum"),
                          ("Tus-Checksum-Algorithm", "sha1,md5")])

    def do_POST(self):
        if self.method() != "POST":
            return self.dispatch(self.method())
        self.create()

    def do_HEAD(self):
        self.dispatch("HEAD")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.create()

    def dispatch(self, method):
        upload_id = self.upload_id()
        body = self.body()
        with LOCK:
            upload = UPLOADS.get(upload_id)
            if upload is None:
                return self.answer(404)
            if method == "HEAD":
                return self.head(upload_id, upload)
            if method == "DELETE":
                del UPLOADS[upload_id]
                return self.answer(204)
            if method == "PATCH":
                return self.patch(upload_id, upload, body)
        self.answer(405)

    def create(self):
        body = self.body()
        with LOCK:
            upload_id = secrets.token_hex(8)
            concat = self.headers.get("Upload-Concat", "")
            if self.ietf():
                length = self.headers.get("Upload-Length")
                upload = Upload(int(length) if length else None)
                UPLOADS[upload_id] = upload
                upload.data += body
                location = [("Location", PREFIX + upload_id)]
                if self.headers.get("Upload-Complete") == "?1":
                    upload.declared_complete = True
                    upload.length = len(upload.data)
                    return self.hand_off(upload_id, [("Upload-Complete", "?1"),
                                                     ("Upload-Offset", len(upload.data))])
                return self.answer(201, location + [("Upload-Offset", len(upload.data)),
                                                    ("Upload-Complete", "?0")])
            if self.headers.get("Tus-Resumable") != "1.0.0":
                return self.answer(412, [("Tus-Version", "1.0.0")])
            if concat.startswith("final;"):
                parts = [u.rsplit("/", 1)[-1] for u in concat[6:].split()]
                if any(p not in UPLOADS or len(UPLOADS[p].data) != UPLOADS[p].length for p in parts):
                    return self.answer(400)
                upload = Upload(None, parts=parts, metadata=self.headers.get("Upload-Metadata", ""))
                for p in parts:
                    upload.data += UPLOADS[p].data
                upload.length = len(upload.data)
                UPLOADS[upload_id] = upload
                return self.hand_off(upload_id, [("Location", PREFIX + upload_id)])
            if self.headers.get("Upload-Defer-Length") == "1":
                length = None
            else:
                length = int(self.headers["Upload-Length"])
            upload = Upload(length, partial=concat == "partial",
                            metadata=self.headers.get("Upload-Metadata", ""))
            UPLOADS[upload_id] = upload
            if self.headers.get("Content-Type") == "application/offset+octet-stream":
                upload.data += body
            headers = [("Location", PREFIX + upload_id), ("Upload-Offset", len(upload.data))]
            if upload.length == len(upload.data) and not upload.partial:
                return self.hand_off(upload_id, headers)
            self.answer(201, headers)

    def head(self, upload_id, upload):
        headers = [("Cache-Control", "no-store"), ("Upload-Offset", len(upload.data))]
        if self.ietf():
            done = upload.declared_complete
            headers.append(("Upload-Complete", "?1" if done else "?0"))
            if upload.length is not None:
                headers.append(("Upload-Length", upload.length))
            return self.answer(204, headers)
        if upload.length is None:
            headers.append(("Upload-Defer-Length", 1))
        else:
            headers.append(("Upload-Length", upload.length))
        if upload.metadata:
            headers.append(("Upload-Metadata", upload.metadata))
        if upload.partial:
            headers.append(("Upload-Concat", "partial"))
        self.answer(200, headers)

    def patch(self, upload_id, upload, body):
        offset = int(self.headers.get("Upload-Offset", "-1"))
        if offset != len(upload.data):
            return self.answer(409, [("Upload-Offset", len(upload.data))])
        if self.ietf():
            upload.data += body
            if self.headers.get("Upload-Complete", "?1") == "?1":
                upload.declared_complete = True
                upload.length = len(upload.data)
                return self.hand_off(upload_id, [("Upload-Complete", "?1"),
                                                 ("Upload-Offset", len(upload.data))])
            return self.answer(204, [("Upload-Offset", len(upload.data)), ("Upload-Complete", "?0")])
        if self.headers.get("Content-Type") != "application/offset+octet-stream":
            return self.answer(415)
        checksum = self.headers.get("Upload-Checksum")
        if checksum:
            algo, digest = checksum.split(" ", 1)
            if algo not in ("sha1", "md5"):
                return self.answer(400)
            if hashlib.new(algo, body).digest() != base64.b64decode(digest):
                return self.answer(460)
        if self.headers.get("Upload-Length") and upload.length is None:
            upload.length = int(self.headers["Upload-Length"])
        upload.data += body
        headers = [("Upload-Offset", len(upload.data))]
        if upload.length == len(upload.data) and not upload.partial:
            return self.hand_off(upload_id, headers)
        self.answer(204, headers)


def main():
    host = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1"
    port = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    server = ThreadingHTTPServer((host, port), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
