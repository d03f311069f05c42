#!/usr/bin/env python3
"""Upload a file to an ngx-upload resumable endpoint (the protocol of nginx-upload-module).

The file goes as segments: each a POST carrying ``X-Content-Range: bytes first-last/total``,
``X-Session-ID`` and ``Content-Disposition: attachment; name=...; filename=...``. nginx answers
``201 Created`` with a ``Range`` report of every range it holds until the file is complete; the
segment that completes it is answered by the application behind nginx (the "hand-off").

What this client adds to a plain loop of POSTs:

* a stable session id derived from the file (host, real path, size, modification time), so a
  second run after a crash or a network failure resumes the same session;
* before sending anything it asks nginx what the session holds (a POST with the session id and
  an empty body: ``200`` with a ``Range`` report, or ``404``), and sends only what is missing;
* segments go over ``--parallel`` connections at once (the first segment of a new session
  goes alone: it creates the session);
* connection errors, ``5xx``, ``408``, ``409`` and ``429`` answers are retried with exponential
  backoff; before each retry it asks the server again and sends only what is still missing;
* when the file is complete on the server but the hand-off failed (the backend answered 5xx),
  it sends the last byte again, which runs the hand-off again;
* progress on stderr, the backend's answer on stdout.

Exit status: 0 the file was handed off and the backend accepted it (its body is on stdout);
1 the server or the backend refused it (4xx; the answer is on stdout); 2 bad arguments or an
unreadable file; 3 gave up after the retries (network errors, 5xx).

Only the Python standard library is used (3.8 or later).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import http.client
import mimetypes
import os
import random
import re
import socket
import ssl
import sys
import threading
import time
import urllib.parse

__all__ = [
    "RangeReportError",
    "UploadError",
    "Uploader",
    "covers",
    "disposition",
    "merge_spans",
    "missing_spans",
    "parse_header",
    "parse_range_report",
    "parse_size",
    "session_id_for",
    "split_spans",
    "valid_session_id",
]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_GAVE_UP = 3

SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,128}\Z")

# Statuses worth another try: the server or the backend may do better later. The module
# answers 409 while another request writes the same bytes or hands the file off (both pass),
# and when a segment names another total than the session has: the status query done before
# every retry tells that real mismatch (fatal) from a passing conflict.
RETRYABLE_STATUSES = frozenset({408, 409, 429})


# ------------------------------------------------------------------------------------------
# Pure helpers (unit-tested in test_ngx_upload_client.py)
# ------------------------------------------------------------------------------------------


class RangeReportError(ValueError):
    """A ``Range`` report that is not ``first-last/total[,first-last/total...]``."""


def merge_spans(spans):
    """Sorted, with overlapping and adjacent inclusive ``(first, last)`` spans merged."""
    merged = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            if last > merged[-1][1]:
                merged[-1] = (merged[-1][0], last)
        else:
            merged.append((first, last))
    return merged


def parse_range_report(text):
    """Parses the module's report of what a session holds.

    ``"0-99/1000,200-299/1000"`` gives ``([(0, 99), (200, 299)], 1000)``: the inclusive spans,
    merged, and the total. An empty report gives ``([], None)``. A ``bytes`` unit in front
    (``bytes 0-99/1000``) is tolerated.
    """
    text = text.strip()
    if text[:6].lower() in ("bytes ", "bytes="):
        text = text[6:].strip()
    if not text:
        return [], None
    spans = []
    total = None
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)-(\d+)/(\d+)\s*", item)
        if not match:
            raise RangeReportError("malformed range %r in report %r" % (item, text))
        first, last, item_total = (int(g) for g in match.groups())
        if total is None:
            total = item_total
        elif item_total != total:
            raise RangeReportError("report %r names two totals" % text)
        if first > last or last >= total:
            raise RangeReportError("range %r is outside the file" % item.strip())
        spans.append((first, last))
    return merge_spans(spans), total


def missing_spans(held, total, first=0, last=None):
    """The inclusive spans of ``first..=last`` (default: the whole file) not in ``held``."""
    if last is None:
        last = total - 1
    missing = []
    pos = first
    for a, b in merge_spans(held):
        if b < pos:
            continue
        if a > last:
            break
        if a > pos:
            missing.append((pos, min(a - 1, last)))
        pos = max(pos, b + 1)
        if pos > last:
            break
    if pos <= last:
        missing.append((pos, last))
    return missing


def covers(held, total):
    """Whether ``held`` covers every byte of a ``total``-byte file."""
    return total > 0 and not missing_spans(held, total)


def split_spans(spans, segment_size):
    """Cuts each inclusive span into pieces of at most ``segment_size`` bytes, in order."""
    if segment_size < 1:
        raise ValueError("segment size must be at least 1")
    pieces = []
    for first, last in spans:
        pos = first
        while pos <= last:
            end = min(pos + segment_size - 1, last)
            pieces.append((pos, end))
            pos = end + 1
    return pieces


def valid_session_id(session_id):
    """Whether the module accepts ``session_id`` (1 to 128 of ``[A-Za-z0-9_-]``)."""
    return bool(SESSION_ID_RE.match(session_id))


def session_id_for(path, stat=None, host=None):
    """A session id that stays the same for the same file on the same machine, and changes
    when the file does: 32 hex digits of SHA-256 over host name, real path, size and
    modification time (nanoseconds)."""
    real = os.path.realpath(path)
    stat = stat if stat is not None else os.stat(real)
    host = host if host is not None else socket.gethostname()
    key = "\0".join(["ngx-upload-client 1", host, real, str(stat.st_size), str(stat.st_mtime_ns)])
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text):
    """``"1048576"``, ``"512k"``, ``"4M"``, ``"1g"`` (binary units) as a number of bytes."""
    match = re.fullmatch(r"\s*(\d+)\s*([kKmMgG]?)(?:i?[bB])?\s*", text)
    if not match:
        raise ValueError("not a size: %r (use e.g. 1048576, 512k, 4M)" % text)
    value = int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError("size must be at least 1 byte: %r" % text)
    return value


_TOKEN_RE = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def parse_header(text):
    """``"Name: value"`` as ``(name, value)``; refuses what would break the request."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN_RE.match(name):
        raise ValueError("not a header: %r (use 'Name: value')" % text)
    if any(c in value for c in "\r\n\0"):
        raise ValueError("header value of %s holds a line break" % name)
    return name, value


def disposition(filename, field=None):
    """The segments' ``Content-Disposition``. A name that is not plain printable ASCII goes as
    RFC 5987 ``filename*`` (the module prefers it), with an ASCII ``filename`` fallback."""
    parts = ["attachment"]
    if field:
        parts.append('name="%s"' % _ascii_fallback(field))
    plain = all(0x20 <= ord(c) < 0x7F and c not in '"\\' for c in filename)
    if plain:
        parts.append('filename="%s"' % filename)
    else:
        parts.append('filename="%s"' % _ascii_fallback(filename))
        encoded = urllib.parse.quote(filename.encode("utf-8", "surrogateescape"), safe="")
        parts.append("filename*=UTF-8''%s" % encoded)
    return "; ".join(parts)


def _ascii_fallback(text):
    return "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\' else "_" for c in text)


def backoff_delay(failures, base, cap=30.0):
    """Seconds to wait before retry number ``failures`` (1, 2, ...): ``base * 2**(failures-1)``,
    capped, with up to 25% random jitter so parallel connections do not retry in step."""
    delay = min(cap, base * (2 ** (failures - 1)))
    return delay * (0.75 + random.random() * 0.25)


# ------------------------------------------------------------------------------------------
# The uploader
# ------------------------------------------------------------------------------------------


class UploadError(Exception):
    """The upload cannot go on; ``exit_code`` says why, ``response`` is the last answer."""

    def __init__(self, message, exit_code, response=None):
        super().__init__(message)
        self.exit_code = exit_code
        self.response = response


class _Retry(Exception):
    """A transient failure: a connection error or a retryable status."""

    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


class Response:
    def __init__(self, status, reason, headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers  # lower-case name -> value (last wins)
        self.body = body

    def header(self, name):
        return self.headers.get(name.lower())

    def text(self, limit=2000):
        text = self.body.decode("utf-8", "replace")
        return text if len(text) <= limit else text[:limit] + "... (%d bytes)" % len(self.body)

    def __repr__(self):
        return "<%d %s, %d bytes>" % (self.status, self.reason, len(self.body))


class _FileSlice:
    """Bytes ``first..=last`` of an open file as a readable stream, so http.client sends a
    segment without holding it in memory. ``os.pread`` leaves the shared offset alone."""

    def __init__(self, fd, first, last):
        self.fd = fd
        self.pos = first
        self.end = last + 1

    def read(self, size=-1):
        left = self.end - self.pos
        if size is None or size < 0 or size > left:
            size = left
        if size <= 0:
            return b""
        data = os.pread(self.fd, size, self.pos)
        if not data:
            raise OSError("the file shrank while it was being uploaded")
        self.pos += len(data)
        return data


class Uploader:
    """One file to one endpoint. ``run()`` returns the backend's final :class:`Response` or
    raises :class:`UploadError`."""

    def __init__(
        self,
        url,
        path,
        session_id=None,
        segment_size=1 << 20,
        parallel=4,
        retries=6,
        backoff=0.5,
        headers=(),
        filename=None,
        field="file",
        content_type=None,
        timeout=60.0,
        ssl_context=None,
        log=None,
    ):
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise UploadError("URL must be http://host[:port]/path or https://...", EXIT_USAGE)
        self.scheme = parsed.scheme
        self.host = parsed.hostname
        self.port = parsed.port
        self.target = (parsed.path or "/") + ("?" + parsed.query if parsed.query else "")
        self.path = path
        self.session_id = session_id
        if session_id is not None and not valid_session_id(session_id):
            raise UploadError(
                "session id %r: use 1 to 128 of A-Z a-z 0-9 _ -" % session_id, EXIT_USAGE
            )
        with open(path, "rb") as f:  # fails early, without leaking, if unreadable
            stat = os.fstat(f.fileno())
        self.total = stat.st_size
        if self.total == 0:
            raise UploadError(
                "%s is empty: the resumable protocol cannot express an empty file" % path,
                EXIT_USAGE,
            )
        self.session_id = session_id or session_id_for(path, stat)
        self.fd = os.open(path, os.O_RDONLY)
        self.segment_size = segment_size
        self.parallel = max(1, parallel)
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.ssl_context = ssl_context
        filename = filename or os.path.basename(path)
        self.base_headers = {
            "Content-Type": content_type
            or mimetypes.guess_type(filename)[0]
            or "application/octet-stream",
            "Content-Disposition": disposition(filename, field),
            "X-Session-ID": self.session_id,
        }
        self.extra_headers = list(headers)
        self.log = log or (lambda message: None)

        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections = []
        self.held = []  # what the server holds, as far as we know
        self.final = None  # the backend's answer, once we have it
        self._abort = None  # an UploadError that stops every worker

        # Counters for the summary line (and for tests).
        self.requests = 0
        self.retried = 0
        self.bytes_sent = 0
        self.bytes_skipped = 0
        self.last_failure = None

    # -- connections --------------------------------------------------------------------------

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.scheme == "https":
                conn = http.client.HTTPSConnection(
                    self.host,
                    self.port,
                    timeout=self.timeout,
                    context=self.ssl_context,
                    blocksize=256 * 1024,
                )
            else:
                conn = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout, blocksize=256 * 1024
                )
            self._local.conn = conn
            self._local.used = 0
            with self._lock:
                self._connections.append(conn)
        return conn

    def _drop_connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self):
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None

    def _request(self, headers, make_body, length, segment=True):
        """One POST to the endpoint; connection problems raise :class:`_Retry`.
        ``make_body()`` gives the body afresh for each try. A status query (not a
        ``segment``) carries only the session id: no disposition, nothing to store."""
        if segment:
            all_headers = dict(self.base_headers)
        else:
            all_headers = {"X-Session-ID": self.session_id}
        all_headers.update(headers)
        all_headers["Content-Length"] = str(length)
        for name, value in self.extra_headers:
            all_headers[name] = value
        # A kept-alive connection the server closed meanwhile fails at once: one fresh try,
        # not counted as a failure.
        for fresh_try in (False, True):
            conn = self._connection()
            reused = self._local.used > 0
            try:
                with self._lock:
                    self.requests += 1
                conn.request("POST", self.target, body=make_body(), headers=all_headers)
                raw = conn.getresponse()
                response = Response(
                    raw.status,
                    raw.reason,
                    {k.lower(): v for k, v in raw.getheaders()},
                    raw.read(),
                )
                # http.client reopens a connection the server closed; count from there.
                self._local.used = 0 if raw.will_close else self._local.used + 1
                return response
            except (OSError, http.client.HTTPException) as e:
                self._drop_connection()
                stale = isinstance(
                    e, (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)
                )
                if reused and stale and not fresh_try:
                    continue
                raise _Retry("%s: %s" % (type(e).__name__, e or "connection failed"))
        raise AssertionError("unreachable")

    # -- protocol steps -----------------------------------------------------------------------

    def query_status(self):
        """Asks what the session holds; replaces ``held`` with the answer. Returns the spans."""
        response = self._request({}, lambda: b"", 0, segment=False)
        if response.status == 404:
            held = []
        elif response.status == 200:
            report = response.header("range")
            if report is None:
                report = response.body.decode("ascii", "replace")
            try:
                held, total = parse_range_report(report)
            except RangeReportError as e:
                raise UploadError(
                    "the status query's answer is not a range report (%s); is %s an "
                    "ngx-upload location with upload_resumable on?" % (e, self.target),
                    EXIT_REFUSED,
                    response,
                )
            if total is not None and total != self.total:
                raise UploadError(
                    "session %s holds a file of %d bytes, this file has %d: use another "
                    "--session-id" % (self.session_id, total, self.total),
                    EXIT_REFUSED,
                    response,
                )
        else:
            self._check_failure(response, "status query")
            raise UploadError(
                "unexpected answer to the status query: %d %s\n%s"
                % (response.status, response.reason, response.text()),
                EXIT_REFUSED,
                response,
            )
        with self._lock:
            self.held = held
        return held

    def _check_failure(self, response, what):
        """Raises :class:`_Retry` for a retryable answer, :class:`UploadError` for a refusal."""
        if response.status >= 500 or response.status in RETRYABLE_STATUSES:
            retry_after = response.header("retry-after")
            try:
                retry_after = float(retry_after) if retry_after is not None else None
            except ValueError:
                retry_after = None
            raise _Retry(
                "%s: %d %s" % (what, response.status, response.reason), retry_after=retry_after
            )
        if response.status >= 400:
            raise UploadError(
                "%s refused: %d %s\n%s"
                % (what, response.status, response.reason, response.text()),
                EXIT_REFUSED,
                response,
            )

    def _progress_report(self, response):
        """The spans of a ``201`` progress answer; ``None`` if this is the backend's answer."""
        if response.status != 201:
            return None
        report = response.header("range")
        if report is None:
            return None
        try:
            held, total = parse_range_report(report)
        except RangeReportError:
            return None
        if total != self.total or covers(held, self.total):
            return None
        return held

    def _send_segment(self, first, last):
        """Sends bytes ``first..=last``; records progress or the final answer."""
        what = "segment %d-%d" % (first, last)
        length = last - first + 1
        response = self._request(
            {"X-Content-Range": "bytes %d-%d/%d" % (first, last, self.total)},
            lambda: _FileSlice(self.fd, first, last),
            length,
        )
        with self._lock:
            self.bytes_sent += length
        held = self._progress_report(response)
        if held is not None:
            with self._lock:
                self.held = merge_spans(self.held + held)
                done = sum(b - a + 1 for a, b in self.held)
            self.log(
                "sent %s: 201, server holds %d of %d bytes (%d%%)"
                % (what, done, self.total, done * 100 // self.total)
            )
            return
        self._check_failure(response, what)
        with self._lock:
            if self.final is None:
                self.final = response
        self.log("sent %s: %d %s from the backend" % (what, response.status, response.reason))

    def _missing_within(self, first, last):
        with self._lock:
            return missing_spans(self.held, self.total, first, last)

    def _stop_requested(self):
        with self._lock:
            if self._abort is not None:
                return True
            return self.final is not None

    def _send_piece(self, first, last, force=False):
        """Sends what the server lacks of ``first..=last`` (all of it if ``force``), retrying
        transient failures with backoff and a fresh status query before each retry."""
        failures = 0
        while not self._stop_requested():
            spans = [(first, last)] if force else self._missing_within(first, last)
            if not spans:
                self.log("skipped %d-%d: the server holds it" % (first, last))
                return
            try:
                for a, b in spans:
                    if self._stop_requested():
                        return
                    self._send_segment(a, b)
                return
            except _Retry as e:
                failures += 1
                if failures > self.retries:
                    raise UploadError(
                        "giving up on %d-%d after %d retries: %s"
                        % (first, last, self.retries, e),
                        EXIT_GAVE_UP,
                    )
                delay = backoff_delay(failures, self.backoff)
                if e.retry_after is not None:
                    delay = max(delay, min(e.retry_after, 300.0))
                with self._lock:
                    self.retried += 1
                    self.last_failure = str(e)
                self.log(
                    "retry %d/%d of %d-%d in %.2f s: %s"
                    % (failures, self.retries, first, last, delay, e)
                )
                time.sleep(delay)
                try:
                    self.query_status()
                except _Retry:
                    pass  # the next try finds out

    def _worker(self, first, last):
        try:
            self._send_piece(first, last)
        except UploadError as e:
            with self._lock:
                if self._abort is None:
                    self._abort = e
        except Exception as e:  # a bug or an OS error: stop everything, say what it was
            with self._lock:
                if self._abort is None:
                    self._abort = UploadError("%s: %s" % (type(e).__name__, e), EXIT_GAVE_UP)

    def _query_with_retry(self):
        failures = 0
        while True:
            try:
                return self.query_status()
            except _Retry as e:
                failures += 1
                if failures > self.retries:
                    raise UploadError(
                        "giving up on the status query after %d retries: %s" % (self.retries, e),
                        EXIT_GAVE_UP,
                    )
                delay = backoff_delay(failures, self.backoff)
                with self._lock:
                    self.retried += 1
                self.log("retry %d/%d of the status query in %.2f s: %s"
                         % (failures, self.retries, delay, e))
                time.sleep(delay)

    def run(self):
        """Uploads the file; returns the backend's answer (a status below 400)."""
        try:
            return self._run()
        finally:
            self.close()

    def _run(self):
        self.log(
            "session %s: %s, %d bytes, to %s://%s%s%s"
            % (
                self.session_id,
                self.path,
                self.total,
                self.scheme,
                self.host,
                ":%d" % self.port if self.port else "",
                self.target,
            )
        )
        stalled_rounds = 0
        best = -1  # most bytes the server held at the end of a round
        first_round = True
        while True:
            held = self._query_with_retry()
            held_bytes = sum(b - a + 1 for a, b in held)
            if first_round:
                self.bytes_skipped = held_bytes
                self.log(
                    "server holds %d of %d bytes; skipped %d bytes already uploaded"
                    % (held_bytes, self.total, held_bytes)
                    if held
                    else "server holds nothing of this session yet"
                )
            if covers(held, self.total):
                # Complete on the server but not handed off (the backend failed last time):
                # the last byte again runs the hand-off again.
                self.log("the server holds the whole file: sending the last byte to hand it off")
                self._send_piece(self.total - 1, self.total - 1, force=True)
            else:
                pieces = split_spans(missing_spans(held, self.total), self.segment_size)
                self.log(
                    "%d segment(s) of up to %d bytes to send over %d connection(s)"
                    % (len(pieces), self.segment_size, min(self.parallel, len(pieces)))
                )
                if not held:
                    # A new session: its first segment goes alone. It creates the session,
                    # and a refusal (413, 415...) arrives before N connections are opened.
                    # It also keeps clear of a module race where segments racing the one
                    # that creates the session's file can lose their recorded range.
                    self._send_piece(*pieces.pop(0))
                if pieces and not self._stop_requested():
                    with concurrent.futures.ThreadPoolExecutor(
                        max_workers=min(self.parallel, len(pieces))
                    ) as pool:
                        for future in [pool.submit(self._worker, a, b) for a, b in pieces]:
                            future.result()
            if self._abort is not None:
                raise self._abort
            if self.final is not None:
                return self._finish()
            # No segment completed the file: the hand-off failed (5xx) and is to be run again,
            # or the session was reset meanwhile (upload_cleanup removed it after a failed
            # hand-off, or another client). Ask again; give up when rounds stop getting further.
            now = sum(b - a + 1 for a, b in self.held)
            stalled_rounds = stalled_rounds + 1 if now <= best else 0
            best = max(best, now)
            if stalled_rounds > self.retries:
                raise UploadError(
                    "no hand-off after %d rounds that got no further (last failure: %s)"
                    % (stalled_rounds, self.last_failure),
                    EXIT_GAVE_UP,
                )
            first_round = False
            self.log("no answer from the backend yet: asking the server again")

    def _finish(self):
        response = self.final
        self.log(
            "done: %d %s from the backend; %d requests, %d retries, %d bytes delivered, "
            "%d bytes skipped" % (
                response.status,
                response.reason,
                self.requests,
                self.retried,
                self.bytes_sent,
                self.bytes_skipped,
            )
        )
        return response


# ------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------


def _size_arg(text):
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _header_arg(text):
    try:
        return parse_header(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="ngx_upload_client.py",
        description="Upload FILE to an ngx-upload resumable endpoint at URL, resuming what "
        "the server already holds. Progress goes to stderr, the backend's answer to stdout.",
        epilog="Exit status: 0 handed off and accepted; 1 refused (4xx); 2 bad arguments or "
        "file; 3 gave up after retries.",
    )
    parser.add_argument("url", help="the upload location, e.g. http://127.0.0.1:8080/upload")
    parser.add_argument("file", help="the file to upload")
    parser.add_argument("--session-id", help="session id (default: derived from the file)")
    parser.add_argument(
        "--segment-size", type=_size_arg, default=1 << 20,
        help="largest segment, bytes or with k/M/G (default 1M)",
    )
    parser.add_argument(
        "--parallel", type=int, default=4, help="segments in flight at once (default 4)"
    )
    parser.add_argument(
        "--retries", type=int, default=6, help="retries per segment before giving up (default 6)"
    )
    parser.add_argument(
        "--backoff", type=float, default=0.5,
        help="first retry delay in seconds, doubled each retry (default 0.5)",
    )
    parser.add_argument(
        "--header", "-H", action="append", type=_header_arg, default=[],
        metavar="'NAME: VALUE'", help="extra request header (repeatable)",
    )
    parser.add_argument("--filename", help="file name sent to the server (default: FILE's)")
    parser.add_argument(
        "--field", default="file",
        help="form field name the hand-off uses for the file (default 'file'; '' for none)",
    )
    parser.add_argument("--content-type", help="the file's type (default: from its name)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="socket timeout in seconds (default 60)"
    )
    parser.add_argument("--cacert", help="CA certificate file for https")
    parser.add_argument(
        "--insecure", "-k", action="store_true", help="do not verify the https certificate"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    args = parser.parse_args(argv)

    if args.parallel < 1 or args.retries < 0 or args.backoff < 0:
        parser.error("--parallel must be at least 1, --retries and --backoff not negative")
    if args.session_id is not None and not valid_session_id(args.session_id):
        parser.error("--session-id: use 1 to 128 of A-Z a-z 0-9 _ -")

    ssl_context = None
    if args.url.startswith("https:"):
        ssl_context = ssl.create_default_context(cafile=args.cacert)
        if args.insecure:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE

    def log(message):
        if not args.quiet:
            print("ngx-upload: " + message, file=sys.stderr, flush=True)

    try:
        uploader = Uploader(
            args.url,
            args.file,
            session_id=args.session_id,
            segment_size=args.segment_size,
            parallel=args.parallel,
            retries=args.retries,
            backoff=args.backoff,
            headers=args.header,
            filename=args.filename,
            field=args.field or None,
            content_type=args.content_type,
            timeout=args.timeout,
            ssl_context=ssl_context,
            log=log,
        )
    except OSError as e:
        print("ngx-upload: cannot read %s: %s" % (args.file, e.strerror or e), file=sys.stderr)
        return EXIT_USAGE
    except UploadError as e:
        print("ngx-upload: %s" % e, file=sys.stderr)
        return e.exit_code

    try:
        response = uploader.run()
    except UploadError as e:
        print("ngx-upload: %s" % e, file=sys.stderr)
        if e.response is not None:
            sys.stdout.buffer.write(e.response.body)
            sys.stdout.flush()
        return e.exit_code
    except KeyboardInterrupt:
        print("ngx-upload: interrupted; run again to resume", file=sys.stderr)
        return 130
    sys.stdout.buffer.write(response.body)
    sys.stdout.flush()
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
