#!/usr/bin/env python3
"""Drives tuspy 1.1.0 (see requirements.txt) against a tus endpoint and prints one JSON object
per scenario run on stdout, so an integration test can assert on it.

    upload.py --endpoint http://127.0.0.1:8080/files/ --file big.bin
        [--scenario chunks|resume|interrupt|empty|bad-checksum|all]
        [--chunk-size 1 --chunk-size 65536 ...] [--metadata key=value ...] [--no-metadata]
        [--retries 2]

Scenarios (every upload sends Upload-Checksum: sha1, tuspy's only algorithm):
  chunks        the file once per chunk size (default: 1000, 65536, 1 MiB and the whole file)
  resume        upload(stop_at=half), then a new uploader on the same URL: HEAD, the rest
  interrupt     a PATCH cut off after half its body (raw socket), then tuspy resumes from what
                the server kept
  empty         a zero-length file: a POST only, handed off at creation
  bad-checksum  a PATCH whose Upload-Checksum does not match: 460, and the offset unchanged

Exit status: 0 when every run succeeded, 1 when one failed (its JSON says why), 2 for bad
arguments. Only --file is read; nothing is written but a temporary empty file.
"""

import argparse
import base64
import json
import os
import socket
import sys
import tempfile
from urllib.parse import urlsplit

import requests
from tusclient import client as tus_client

SCENARIOS = ["chunks", "resume", "interrupt", "empty", "bad-checksum"]
DEFAULT_CHUNKS = [1000, 65536, 1 << 20, None]  # None: the whole file in one PATCH
INTERESTING = {
    "location", "upload-offset", "upload-length", "upload-metadata", "upload-checksum",
    "upload-expires", "tus-resumable", "content-type", "content-length",
}

LOG = []
_send = requests.sessions.Session.send


def _recording_send(self, request, **kwargs):
    """Every exchange tuspy makes (it uses requests' module functions), into LOG."""
    entry = {
        "method": request.method,
        "url": request.url,
        "headers": {k: v for k, v in request.headers.items() if k.lower() in INTERESTING},
    }
    LOG.append(entry)
    response = _send(self, request, **kwargs)
    entry["status"] = response.status_code
    entry["responseHeaders"] = {
        k.lower(): v for k, v in response.headers.items() if k.lower() in INTERESTING
    }
    return response


requests.sessions.Session.send = _recording_send


def error_json(e):
    out = {"type": type(e).__name__, "message": str(e)}
    for attr in ("status_code", "response_content"):
        value = getattr(e, attr, None)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if value is not None:
            out[attr] = value
    return out


def uploader(args, path, url=None, chunk_size=None):
    c = tus_client.TusClient(args.endpoint)
    kwargs = dict(
        # --no-metadata: tuspy then sends an empty Upload-Metadata header.
        metadata={} if args.no_metadata else {"filename": os.path.basename(path), **args.metadata},
        upload_checksum=True,
        retries=args.retries,
        retry_delay=0,
    )
    if chunk_size:
        kwargs["chunk_size"] = chunk_size
    if url:
        return c.uploader(path, url=url, **kwargs)
    return c.uploader(path, **kwargs)


def run_chunks(args):
    results = []
    size = os.path.getsize(args.file)
    for chunk in args.chunk_size or DEFAULT_CHUNKS:
        LOG.clear()
        u = uploader(args, args.file, chunk_size=chunk)
        u.upload()
        results.append({
            "ok": u.offset == size,
            "chunkSize": chunk or size,
            "url": u.url,
            "offset": u.offset,
            "patches": sum(1 for e in LOG if e["method"] == "PATCH"),
            "lastStatus": u.request.status_code if u.request else None,
            "lastBody": (u.request.response_content or b"").decode("utf-8", "replace")
            if u.request else None,
            "requests": list(LOG),
        })
    return {"ok": all(r["ok"] for r in results), "runs": results}


def run_resume(args):
    size = os.path.getsize(args.file)
    chunk = (args.chunk_size or [65536])[0]
    first = uploader(args, args.file, chunk_size=chunk)
    half = max(1, size // 2)
    first.upload(stop_at=half)
    stopped_at = first.offset
    # A new uploader for the same URL asks the server (HEAD) where to go on.
    second = uploader(args, args.file, url=first.url, chunk_size=chunk)
    resumed_at = second.offset
    second.upload()
    return {
        "ok": second.offset == size and resumed_at == stopped_at,
        "url": first.url,
        "stoppedAt": stopped_at,
        "resumedAt": resumed_at,
        "offset": second.offset,
        "lastStatus": second.request.status_code if second.request else None,
    }


def raw_patch_cut_short(url, data, sent):
    """PATCH `data` at offset 0 announcing all of it, send only `sent` bytes, then close."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    head = (
        f"PATCH {target} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "Tus-Resumable: 1.0.0\r\n"
        "Content-Type: application/offset+octet-stream\r\n"
        "Upload-Offset: 0\r\n"
        f"Content-Length: {len(data)}\r\n"
        "\r\n"
    ).encode()
    with socket.create_connection((parts.hostname, parts.port or 80), timeout=10) as s:
        s.sendall(head + data[:sent])
        s.shutdown(socket.SHUT_WR)
        try:
            s.recv(4096)  # whatever the server says (or nothing) before it closes
        except OSError:
            pass


def run_interrupt(args):
    size = os.path.getsize(args.file)
    with open(args.file, "rb") as f:
        data = f.read()
    u = uploader(args, args.file)
    url = u.create_url()
    cut = max(1, size // 2)
    raw_patch_cut_short(url, data, cut)
    resumed = uploader(args, args.file, url=url, chunk_size=(args.chunk_size or [65536])[0])
    kept = resumed.offset
    resumed.upload()
    return {
        "ok": resumed.offset == size and 0 <= kept <= cut,
        "url": url,
        "sentBeforeCut": cut,
        "keptByServer": kept,
        "offset": resumed.offset,
        "lastStatus": resumed.request.status_code if resumed.request else None,
    }


def run_empty(args):
    with tempfile.NamedTemporaryFile(prefix="tuspy-empty-", suffix=".bin") as f:
        u = uploader(args, f.name)
        u.upload()
        post = next((e for e in LOG if e["method"] == "POST"), {})
        return {
            "ok": bool(u.url) and 200 <= post.get("status", 0) < 300,
            "url": u.url,
            "status": post.get("status"),
            "patches": sum(1 for e in LOG if e["method"] == "PATCH"),
        }


def run_bad_checksum(args):
    with open(args.file, "rb") as f:
        data = f.read(min(65536, os.path.getsize(args.file)))
    u = uploader(args, args.file)
    url = u.create_url()
    wrong = base64.b64encode(bytes(20)).decode()
    r = requests.patch(url, data=data, headers={
        "Tus-Resumable": "1.0.0",
        "Content-Type": "application/offset+octet-stream",
        "Upload-Offset": "0",
        "Upload-Checksum": f"sha1 {wrong}",
    })
    head = requests.head(url, headers={"Tus-Resumable": "1.0.0"})
    offset = head.headers.get("Upload-Offset")
    return {
        "ok": r.status_code == 460 and offset == "0",
        "url": url,
        "status": r.status_code,
        "offsetAfter": offset,
    }


RUNS = {
    "chunks": run_chunks,
    "resume": run_resume,
    "interrupt": run_interrupt,
    "empty": run_empty,
    "bad-checksum": run_bad_checksum,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--scenario", default="chunks", choices=SCENARIOS + ["all"])
    p.add_argument("--chunk-size", type=int, action="append")
    p.add_argument("--metadata", action="append", default=[])
    p.add_argument("--no-metadata", action="store_true")
    p.add_argument("--retries", type=int, default=0)
    args = p.parse_args()
    try:
        pairs = [m.split("=", 1) for m in args.metadata]
        if any(len(pair) != 2 or not pair[0] for pair in pairs):
            raise ValueError
        args.metadata = dict(pairs)
    except ValueError:
        p.error("--metadata wants key=value")
    if not os.path.isfile(args.file):
        p.error(f"cannot read {args.file}")
    if any(c <= 0 for c in args.chunk_size or []):
        p.error("--chunk-size must be positive")

    failed = False
    for name in SCENARIOS if args.scenario == "all" else [args.scenario]:
        LOG.clear()
        try:
            result = RUNS[name](args)
        except Exception as e:  # one JSON line per run, whatever went wrong
            result = {"ok": False, "error": error_json(e)}
        result = {"scenario": name, **result}
        if "requests" not in result and "runs" not in result:
            result["requests"] = list(LOG)
        failed |= not result["ok"]
        print(json.dumps(result), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
