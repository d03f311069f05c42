//! Malformed and hostile requests, table-driven, against one nginx with the module: a resumable
//! location (`/upload`), a multipart-only location (`/form`) and a plain one (`/plain`).
//!
//! For every row: the status (or that nginx closed the connection without an answer), an
//! error.log line for client errors, nginx still healthy (no `[alert]`/`[crit]`/`[emerg]` or
//! "signal" line, the same worker pids, `/plain` answering), nothing written outside the
//! `store`/`state` directories, and the store changed only as the row allows. One valid session
//! with two stored segments (the "keeper") lives through the whole table: its status report and
//! stored bytes must not change, and it completes at the end.

use ngx_upload_test_support::*;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The keeper session: two segments stored before the table runs, completed after it.
const KEEPER: &str = "keeper-session_01";
const KEEPER_TOTAL: usize = 4000;
const KEEPER_HELD: [(usize, usize); 2] = [(0, 999), (2000, 2999)];
const KEEPER_MISSING: [(usize, usize); 2] = [(1000, 1999), (3000, 3999)];

/// `client_body_timeout`/`client_header_timeout` of the server: the stall rows wait this long.
const SHORT_TIMEOUT: &str = "2s";

/// How long a row may take before nginx must have answered or closed.
const ROW_TIMEOUT: Duration = Duration::from_secs(15);

fn server_body() -> String {
    let mut body = upload_server("");
    body.push_str(
        r#"
location /form {
    upload_pass @backend;
    upload_store {{PREFIX}}/store 1;
    upload_set_form_field $upload_field_name.name "$upload_file_name";
    upload_set_form_field $upload_field_name.path "$upload_tmp_path";
    upload_aggregate_form_field $upload_field_name.size "$upload_file_size";
}
location /plain { return 200 "plain ok\n"; }
"#,
    );
    body
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

/// How a row's bytes go on the wire.
#[derive(Clone)]
enum Wire {
    /// Send everything, read until nginx closes.
    Send(Vec<u8>),
    /// Send, then close our sending side (a client giving up mid-request), read until close.
    HalfClose(Vec<u8>),
    /// Send, then send nothing more: nginx's timeout must end the request.
    Stall(Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Status(u16),
    /// nginx closed the connection without a response.
    Closed,
}

/// What a row may change in the store.
#[derive(Clone)]
enum Effect {
    /// Nothing in `store`/`state`, nothing to the backend.
    Nothing,
    /// Only the files of session `id` may change; what its state claims must be bytes of `sent`
    /// holding `data`'s content; with `report`, the status query answers exactly that.
    Session {
        id: String,
        data: Vec<u8>,
        sent: Vec<(u64, u64)>,
        report: Option<String>,
    },
    /// Session `id` gets files but no claimed bytes (a refused segment opened it); the data
    /// file may hold unclaimed bytes. `sent` = what may be claimed (usually nothing).
    Opened { id: String },
    /// One hand-off reached the backend; its `<field>.name` is `name` and `<field>.path` a file
    /// under `store`. New files may appear under `store` only.
    HandOff { name: String },
}

#[derive(Clone)]
struct Case {
    name: String,
    wire: Wire,
    answer: Answer,
    /// error.log must gain a line holding one of these (case-insensitive); empty for success.
    log: Vec<&'static str>,
    effect: Effect,
}

fn case(name: &str, wire: Wire, answer: Answer, log: &[&'static str], effect: Effect) -> Case {
    Case {
        name: name.to_string(),
        wire,
        answer,
        log: log.to_vec(),
        effect,
    }
}

fn status(code: u16) -> Answer {
    Answer::Status(code)
}

/// A POST to `uri` with these headers (plus Host, Connection: close and, unless given,
/// Content-Length) and body.
fn post(uri: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    build_request("POST", uri, headers, Some(body))
}

/// A segment with the usual disposition and content type, and these range and id headers.
fn segment(id: Option<&str>, range: Option<&str>, extra: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut headers = vec![
        ("Content-Type", "text/plain"),
        (
            "Content-Disposition",
            "form-data; name=\"f\"; filename=\"big.TXT\"",
        ),
    ];
    if let Some(range) = range {
        headers.push(("X-Content-Range", range));
    }
    if let Some(id) = id {
        headers.push(("X-Session-ID", id));
    }
    headers.extend_from_slice(extra);
    post("/upload", &headers, body)
}

/// A segment of the keeper session's range `range` with a body of `len` bytes.
fn keeper_segment(range: &str, len: usize) -> Vec<u8> {
    segment(Some(KEEPER), Some(range), &[], &vec![b'k'; len])
}

/// A segment of a fresh session with this disposition.
fn disposition_segment(id: &str, disposition: &str, data: &[u8], last: usize) -> Vec<u8> {
    let range = format!("bytes 0-{last}/{}", data.len());
    post(
        "/upload",
        &[
            ("Content-Type", "text/plain"),
            ("Content-Disposition", disposition),
            ("X-Content-Range", &range),
            ("X-Session-ID", id),
        ],
        &data[..=last],
    )
}

fn session_effect(id: &str, data: &[u8], sent: &[(u64, u64)], report: Option<&str>) -> Effect {
    Effect::Session {
        id: id.to_string(),
        data: data.to_vec(),
        sent: sent.to_vec(),
        report: report.map(str::to_string),
    }
}

fn opened(id: &str) -> Effect {
    Effect::Opened { id: id.to_string() }
}

fn form(content_type: &str, body: &[u8]) -> Vec<u8> {
    post("/form", &[("Content-Type", content_type)], body)
}

/// A form body with one file part whose part header block is `part_headers` (each line ends
/// in CRLF), then the closing delimiter.
fn raw_part(boundary: &str, part_headers: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!("--{boundary}\r\n{part_headers}\r\n").into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// Every row.
fn table() -> Vec<Case> {
    use Answer::Closed;
    use Effect::Nothing;
    use Wire::{HalfClose, Send, Stall};
    let mut rows = Vec::new();
    let range_log: &[&str] = &["range"];

    // --- Ranges, on the keeper's id: refused before the session is touched. -------------------
    for (name, range, len) in [
        ("range reversed", "bytes 5-3/10", 3),
        ("range last beyond total", "bytes 0-9/5", 10),
        ("range total zero", "bytes 0-0/0", 1),
        (
            "range overflowing u64",
            "bytes 0-18446744073709551616/18446744073709551617",
            10,
        ),
        (
            "range total above off_t",
            "bytes 0-9/9223372036854775808",
            10,
        ),
        ("range without unit", "0-9/4000", 10),
        ("range unit glued to numbers", "bytes0-9/4000", 10),
        ("range space inside a number", "bytes 0-9/4 000", 10),
        ("range star total", "bytes 0-9/*", 10),
        ("range star", "bytes */4000", 10),
        ("range negative first", "bytes -1-9/4000", 10),
        ("range negative last", "bytes 0--9/4000", 10),
        ("range negative total", "bytes 0-9/-4000", 10),
        ("range hex numbers", "bytes 0x0-0x9/4000", 10),
        ("range list", "bytes 0-9/4000, 20-29/4000", 10),
        ("range empty", "", 10),
        ("range unit only", "bytes", 10),
    ] {
        rows.push(case(
            name,
            Send(keeper_segment(range, len)),
            status(416),
            range_log,
            Nothing,
        ));
    }
    let digits = "9".repeat(5000);
    rows.push(case(
        "range 5000-digit total",
        Send(keeper_segment(&format!("bytes 0-9/{digits}"), 10)),
        status(416),
        range_log,
        Nothing,
    ));
    rows.push(case(
        "plain Content-Range reversed",
        Send(post(
            "/upload",
            &[
                ("Content-Disposition", "attachment; filename=\"a.txt\""),
                ("Content-Range", "bytes 9-0/4000"),
                ("Session-ID", KEEPER),
            ],
            &[b'k'; 10],
        )),
        status(416),
        range_log,
        Nothing,
    ));

    // --- Totals that disagree with the keeper's. --------------------------------------------
    for (name, range, len) in [
        ("total above the session's", "bytes 1000-1009/4001", 10),
        ("total below the session's", "bytes 0-9/10", 10),
        (
            "total below the session's stored ranges",
            "bytes 1000-1009/2500",
            10,
        ),
    ] {
        rows.push(case(
            name,
            Send(keeper_segment(range, len)),
            status(409),
            &["total"],
            Nothing,
        ));
    }
    rows.push(case(
        "total disagreeing, plain header names",
        Send(post(
            "/upload",
            &[
                ("Content-Disposition", "attachment; filename=\"a.txt\""),
                ("Content-Range", "bytes 1000-1009/5000"),
                ("Session-ID", KEEPER),
            ],
            &[b'k'; 10],
        )),
        status(409),
        &["total"],
        Nothing,
    ));

    // --- Session ids. -------------------------------------------------------------------------
    let long_id = "s".repeat(129);
    for (name, id) in [
        ("session id empty", ""),
        ("session id of 129 bytes", long_id.as_str()),
        ("session id ../x", "../x"),
        ("session id a/b", "a/b"),
        ("session id ..", ".."),
        ("session id with a backslash", "..\\x"),
        ("session id percent-encoded", "%2e%2e%2fx"),
        ("session id non-ASCII", "s\u{e9}ance01"),
        ("session id with a tab", "ab\tcd"),
        ("session id with a space", "keeper session"),
    ] {
        rows.push(case(
            name,
            Send(segment(
                Some(id),
                Some("bytes 1000-1009/4000"),
                &[],
                b"0123456789",
            )),
            status(400),
            &["session id"],
            Nothing,
        ));
    }
    rows.push(case(
        "session id with a NUL byte",
        Send(segment(
            Some("keeper\0x"),
            Some("bytes 1000-1009/4000"),
            &[],
            b"0123456789",
        )),
        status(400),
        &["invalid header"],
        Nothing,
    ));
    rows.push(case(
        "status query with session id ../x",
        Send(post(
            "/upload",
            &[("X-Session-ID", "../x"), ("Content-Length", "0")],
            b"",
        )),
        status(400),
        &["session id"],
        Nothing,
    ));
    rows.push(case(
        "status query (HEAD) with a 129-byte session id",
        Send(build_request(
            "HEAD",
            "/upload",
            &[("X-Session-ID", long_id.as_str())],
            None,
        )),
        status(400),
        &["session id"],
        Nothing,
    ));
    rows.push(case(
        "status query for an unknown session",
        Send(post(
            "/upload",
            &[("X-Session-ID", "never-seen-1"), ("Content-Length", "0")],
            b"",
        )),
        status(404),
        &["unknown session"],
        Nothing,
    ));

    // --- Content-Disposition: file names never choose where bytes go. -------------------------
    let small = test_data(100, 0xd15);
    for (name, id, disposition) in [
        (
            "filename ../../etc/passwd",
            "trav-01",
            "attachment; filename=\"../../etc/passwd\"",
        ),
        (
            "filename /etc/passwd",
            "trav-02",
            "attachment; filename=\"/etc/passwd\"",
        ),
        (
            "filename Windows traversal",
            "trav-03",
            "attachment; filename=\"C:\\..\\..\\Windows\\evil.txt\"",
        ),
        (
            "filename* percent-encoded traversal",
            "trav-04",
            "attachment; filename*=UTF-8''..%2F..%2Fetc%2Fpasswd",
        ),
        (
            "field name with traversal",
            "trav-05",
            "form-data; name=\"../../x\"; filename=\"../evil.txt\"",
        ),
    ] {
        rows.push(case(
            name,
            Send(disposition_segment(id, disposition, &small, 49)),
            status(201),
            &[],
            session_effect(id, &small, &[(0, 49)], Some("0-49/100")),
        ));
    }
    let long_name = format!("attachment; filename=\"{}.txt\"", "n".repeat(7000));
    rows.push(case(
        "filename of 7000 bytes",
        Send(disposition_segment("longname-1", &long_name, &small, 49)),
        status(201),
        &[],
        session_effect("longname-1", &small, &[(0, 49)], Some("0-49/100")),
    ));
    for (name, disposition, log) in [
        (
            "disposition with an unterminated quote",
            "form-data; name=\"f\"; filename=\"a.txt",
            &["disposition"][..],
        ),
        (
            "disposition with an encoded NUL",
            "attachment; filename*=UTF-8''a%00b.txt",
            &["disposition"][..],
        ),
        (
            "disposition with a raw tab in the file name",
            "attachment; filename=\"a\tb.txt\"",
            &["disposition"][..],
        ),
        ("disposition empty", "", &["disposition"][..]),
        (
            "disposition with a raw NUL",
            "attachment; filename=\"a\0b.txt\"",
            &["invalid header"][..],
        ),
    ] {
        rows.push(case(
            name,
            Send(post(
                "/upload",
                &[
                    ("Content-Disposition", disposition),
                    ("X-Content-Range", "bytes 1000-1009/4000"),
                    ("X-Session-ID", KEEPER),
                ],
                b"0123456789",
            )),
            status(400),
            log,
            Nothing,
        ));
    }
    // Text after the last quoted value (`\r` is a backslash and an `r`, as some clients send)
    // is ignored, as nginx-upload-module ignores it: the segment is judged on its range.
    let after_quote = r#"form-data; name="file"; filename="test.txt"\r"#;
    rows.push(case(
        "disposition with text after the last quote",
        Send(disposition_segment("quote-01", after_quote, &small, 49)),
        status(201),
        &[],
        session_effect("quote-01", &small, &[(0, 49)], Some("0-49/100")),
    ));
    rows.push(case(
        "disposition with text after the last quote, body shorter than the range",
        Send(post(
            "/upload",
            &[
                ("Content-Type", "text/plain"),
                ("Content-Disposition", after_quote),
                ("X-Content-Range", "bytes 1000-1099/4000"),
                ("X-Session-ID", KEEPER),
            ],
            &[b'k'; 50],
        )),
        status(416),
        &["Content-Length"],
        Nothing,
    ));
    rows.push(case(
        "disposition with text after the last quote, body longer than the range",
        Send(post(
            "/upload",
            &[
                ("Content-Type", "text/plain"),
                ("Content-Disposition", after_quote),
                ("X-Content-Range", "bytes 1000-1009/4000"),
                ("X-Session-ID", KEEPER),
            ],
            &[b'k'; 20],
        )),
        status(416),
        &["Content-Length"],
        Nothing,
    ));
    rows.push(case(
        "disposition with text after the last quote, then an unterminated one",
        Send(post(
            "/upload",
            &[
                (
                    "Content-Disposition",
                    r#"form-data; name="f"\r; filename="a.txt"#,
                ),
                ("X-Content-Range", "bytes 1000-1009/4000"),
                ("X-Session-ID", KEEPER),
            ],
            b"0123456789",
        )),
        status(400),
        &["disposition"],
        Nothing,
    ));
    rows.push(case(
        "segment without Content-Disposition",
        Send(post(
            "/upload",
            &[
                ("Content-Type", "text/plain"),
                ("X-Content-Range", "bytes 1000-1009/4000"),
                ("X-Session-ID", KEEPER),
            ],
            b"0123456789",
        )),
        status(415),
        &["Content-Disposition"],
        Nothing,
    ));

    // --- Lengths. -----------------------------------------------------------------------------
    rows.push(case(
        "Content-Length 0 with a range",
        Send(segment(
            Some(KEEPER),
            Some("bytes 1000-1099/4000"),
            &[("Content-Length", "0")],
            b"",
        )),
        status(416),
        &["Content-Length"],
        Nothing,
    ));
    rows.push(case(
        "Content-Length larger than the range",
        Send(segment(
            Some(KEEPER),
            Some("bytes 1000-1009/4000"),
            &[],
            &[b'k'; 20],
        )),
        status(416),
        &["Content-Length"],
        Nothing,
    ));
    let mid = test_data(2000, 0x5107);
    rows.push(case(
        "body shorter than Content-Length, then the client closes",
        HalfClose({
            let mut r = segment(
                Some("short-01"),
                Some("bytes 0-999/2000"),
                &[],
                &mid[..1000],
            );
            r.truncate(r.len() - 600);
            r
        }),
        Closed,
        &["prematurely closed"],
        session_effect("short-01", &mid, &[(0, 399)], None),
    ));
    rows.push(case(
        "body longer than Content-Length",
        Send({
            let mut r = segment(
                Some("long-01"),
                Some("bytes 0-99/2000"),
                &[("Content-Length", "100")],
                &mid[..100],
            );
            r.extend_from_slice(&[b'X'; 50]);
            r
        }),
        status(201),
        &[],
        session_effect("long-01", &mid, &[(0, 99)], Some("0-99/2000")),
    ));
    rows.push(case(
        "chunked body longer than the range",
        Send(segment(
            Some("chunky-01"),
            Some("bytes 0-9/2000"),
            &[("Transfer-Encoding", "chunked")],
            &chunked_body(&mid[..15], &[4]),
        )),
        status(416),
        &["longer"],
        opened("chunky-01"),
    ));
    rows.push(case(
        "chunked body shorter than the range",
        Send(segment(
            Some("chunky-02"),
            Some("bytes 0-9/2000"),
            &[("Transfer-Encoding", "chunked")],
            &chunked_body(&mid[..5], &[5]),
        )),
        status(416),
        &["does not fill"],
        opened("chunky-02"),
    ));
    rows.push(case(
        "chunked body with a bad chunk size",
        Send(segment(
            Some("chunky-03"),
            Some("bytes 0-9/2000"),
            &[("Transfer-Encoding", "chunked")],
            b"zz\r\n0123456789\r\n0\r\n\r\n",
        )),
        status(400),
        &["chunked"],
        opened("chunky-03"),
    ));
    for (name, length) in [
        ("Content-Length negative", "-1"),
        ("Content-Length not a number", "ten"),
        ("Content-Length beyond 64 bits", "99999999999999999999999"),
    ] {
        rows.push(case(
            name,
            Send(segment(
                Some(KEEPER),
                Some("bytes 1000-1009/4000"),
                &[("Content-Length", length)],
                b"0123456789",
            )),
            status(400),
            &["Content-Length"],
            Nothing,
        ));
    }
    rows.push(case(
        "Content-Length and Transfer-Encoding together",
        Send(segment(
            Some(KEEPER),
            Some("bytes 1000-1009/4000"),
            &[("Content-Length", "10"), ("Transfer-Encoding", "chunked")],
            &chunked_body(b"0123456789", &[10]),
        )),
        status(400),
        &["Transfer-Encoding"],
        Nothing,
    ));
    let big = test_data(2 << 20, 0xb16);
    rows.push(case(
        "segment over client_max_body_size (refused by nginx first)",
        Send(segment(
            Some("toobig-01"),
            Some(&format!("bytes 0-{}/{}", big.len() - 1, big.len())),
            &[],
            &big,
        )),
        status(413),
        &["too large"],
        Nothing,
    ));
    rows.push(case(
        "range at the end of the largest file offset",
        Send(segment(
            Some("hugeoff-01"),
            Some("bytes 9223372036854775797-9223372036854775806/9223372036854775807"),
            &[],
            b"0123456789",
        )),
        status(413),
        &["too large", "larger"],
        opened("hugeoff-01"),
    ));

    // --- Missing headers. ---------------------------------------------------------------------
    rows.push(case(
        "range without a session id",
        Send(segment(
            None,
            Some("bytes 1000-1009/4000"),
            &[],
            b"0123456789",
        )),
        status(400),
        &["session id"],
        Nothing,
    ));
    rows.push(case(
        "no Content-Disposition, no range, no session id",
        Send(post(
            "/upload",
            &[("Content-Type", "text/plain")],
            b"0123456789",
        )),
        status(415),
        &["Content-Disposition"],
        Nothing,
    ));
    rows.push(case(
        "empty single-request upload",
        Send(post(
            "/upload",
            &[("Content-Disposition", "attachment; filename=\"a.txt\"")],
            b"",
        )),
        status(400),
        &["non-empty"],
        Nothing,
    ));
    rows.push(case(
        "live session's id without a range (whole-file upload over it)",
        Send(segment(Some(KEEPER), None, &[], &[b'Z'; 50])),
        status(409),
        &["session"],
        Nothing,
    ));
    rows.push(case(
        "live session's id, no range, empty chunked body",
        Send(segment(
            Some(KEEPER),
            None,
            &[("Transfer-Encoding", "chunked")],
            b"0\r\n\r\n",
        )),
        // The live session is found before the body is read.
        status(409),
        &["in progress"],
        Nothing,
    ));
    rows.push(case(
        "new session id, no range, empty chunked body",
        Send(segment(
            Some("emptychunk-01"),
            None,
            &[("Transfer-Encoding", "chunked")],
            b"0\r\n\r\n",
        )),
        status(400),
        &["non-empty"],
        Nothing,
    ));

    // --- Methods. -----------------------------------------------------------------------------
    for method in ["DELETE", "PATCH", "PUT", "FROB"] {
        rows.push(case(
            &format!("method {method} with a segment of the keeper"),
            Send({
                let mut r = keeper_segment("bytes 1000-1009/4000", 10);
                let at = r.iter().position(|b| *b == b' ').unwrap();
                r.splice(..at, method.bytes());
                r
            }),
            status(405),
            &["method"],
            Nothing,
        ));
    }
    rows.push(case(
        "method GET with the keeper's id",
        Send(build_request(
            "GET",
            "/upload",
            &[("X-Session-ID", KEEPER)],
            None,
        )),
        status(405),
        &["method"],
        Nothing,
    ));
    rows.push(case(
        "method TRACE",
        Send(build_request("TRACE", "/upload", &[], None)),
        status(405),
        &["TRACE", "method"],
        Nothing,
    ));

    // --- Huge header values. ------------------------------------------------------------------
    let huge = "h".repeat(10_000);
    rows.push(case(
        "session id of 10000 bytes",
        Send(segment(
            Some(&huge),
            Some("bytes 1000-1009/4000"),
            &[],
            b"0123456789",
        )),
        status(400),
        &["too long header", "too large"],
        Nothing,
    ));
    rows.push(case(
        "range of 9000 bytes",
        Send(keeper_segment(
            &format!("bytes 1000-1009/4000{}", " ".repeat(9000)),
            10,
        )),
        status(400),
        &["too long header", "too large"],
        Nothing,
    ));
    let filler = "f".repeat(1000);
    let many: Vec<(String, String)> = (0..40)
        .map(|i| (format!("X-Filler-{i}"), filler.clone()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    rows.push(case(
        "40 KB of headers",
        Send(segment(
            Some(KEEPER),
            Some("bytes 1000-1009/4000"),
            &many,
            b"0123456789",
        )),
        status(400),
        &["too large", "too long"],
        Nothing,
    ));

    // --- Multipart (/form). -------------------------------------------------------------------
    let file_part = "Content-Disposition: form-data; name=\"up\"; filename=\"a.txt\"\r\n\
                     Content-Type: text/plain\r\n";
    let good_body = raw_part("b0undary", file_part, b"hello form");
    for (name, content_type, log) in [
        (
            "multipart with an empty boundary",
            "multipart/form-data; boundary=",
            &["boundary"][..],
        ),
        (
            "multipart with a 71-byte boundary",
            &*format!("multipart/form-data; boundary={}", "b".repeat(71)),
            &["boundary"][..],
        ),
        (
            "multipart with two boundaries",
            "multipart/form-data; boundary=b0undary; boundary=other",
            &["boundary"][..],
        ),
        (
            "multipart/mixed",
            "multipart/mixed; boundary=b0undary",
            &["multipart/form-data"][..],
        ),
    ] {
        rows.push(case(
            name,
            Send(form(content_type, &good_body)),
            status(400),
            log,
            Nothing,
        ));
    }
    let ct = "multipart/form-data; boundary=b0undary";
    let cut_in_headers = &good_body[..30];
    rows.push(case(
        "multipart truncated inside part headers",
        Send(form(ct, cut_in_headers)),
        status(400),
        &["multipart", "closing delimiter"],
        Nothing,
    ));
    rows.push(case(
        "multipart truncated by the client closing",
        HalfClose({
            let mut r = form(ct, &good_body);
            r.truncate(r.len() - 12);
            r
        }),
        Closed,
        &["prematurely closed"],
        Nothing,
    ));
    for (name, headers, log) in [
        (
            "multipart part without Content-Disposition",
            "Content-Type: text/plain\r\n",
            &["Content-Disposition"][..],
        ),
        (
            "multipart part header without a colon",
            "Content-Disposition: form-data; name=\"up\"; filename=\"a.txt\"\r\nbogus line\r\n",
            &["part header"][..],
        ),
        (
            "multipart part header over 512 bytes",
            &*format!(
                "Content-Disposition: form-data; name=\"up\"; filename=\"{}.txt\"\r\n",
                "x".repeat(600)
            ),
            &["too long"][..],
        ),
        (
            "multipart part disposition not form-data",
            "Content-Disposition: attachment; filename=\"a.txt\"\r\n",
            &["form-data"][..],
        ),
        (
            "multipart part with two dispositions",
            "Content-Disposition: form-data; name=\"a\"\r\n\
             Content-Disposition: form-data; name=\"b\"\r\n",
            &["part header"][..],
        ),
    ] {
        rows.push(case(
            name,
            Send(form(ct, &raw_part("b0undary", headers, b"hello form"))),
            status(400),
            log,
            Nothing,
        ));
    }
    rows.push(case(
        "multipart with a malformed delimiter",
        Send(form(ct, b"--b0undaryXX\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--b0undary--\r\n")),
        status(400),
        &["delimiter"],
        Nothing,
    ));
    // A body that ends right after a delimiter line, without the closing `--`: the parts all
    // ended, so the form goes on (nginx-upload-module takes it too); ending inside the next
    // part's headers is still a truncated form.
    let unclosed = {
        let mut body = raw_part("b0undary", file_part, b"hello form");
        body.truncate(body.len() - "--\r\n".len());
        body.extend_from_slice(b"\r\n");
        body
    };
    rows.push(case(
        "multipart ending after a delimiter line",
        Send(form(ct, &unclosed)),
        status(200),
        &["without the closing delimiter"],
        Effect::HandOff {
            name: "a.txt".to_string(),
        },
    ));
    rows.push(case(
        "multipart ending inside the next part's headers",
        Send(form(
            ct,
            &[&unclosed[..], b"Content-Disposition: form-data; name=\"x\""].concat(),
        )),
        status(400),
        &["closing delimiter"],
        Nothing,
    ));
    rows.push(case(
        "multipart part disposition with text after the last quote",
        Send(form(
            ct,
            &raw_part(
                "b0undary",
                "Content-Disposition: form-data; name=\"up\"; filename=\"test.txt\"\\r\r\n",
                b"hello form",
            ),
        )),
        status(200),
        &[],
        Effect::HandOff {
            name: "test.txt".to_string(),
        },
    ));
    rows.push(case(
        "multipart file named ../../etc/passwd",
        Send(form(
            ct,
            &raw_part(
                "b0undary",
                "Content-Disposition: form-data; name=\"up\"; filename=\"../../etc/passwd\"\r\n",
                b"root:x:0:0::/root:/bin/sh\n",
            ),
        )),
        status(200),
        &[],
        Effect::HandOff {
            name: "passwd".to_string(),
        },
    ));
    rows.push(case(
        "raw upload to the multipart-only location",
        Send(post(
            "/form",
            &[("Content-Disposition", "attachment; filename=\"a.txt\"")],
            b"0123456789",
        )),
        status(415),
        &["upload_resumable"],
        Nothing,
    ));
    rows.push(case(
        "status query to the multipart-only location",
        Send(post(
            "/form",
            &[("X-Session-ID", KEEPER), ("Content-Length", "0")],
            b"",
        )),
        status(405),
        &["upload_resumable"],
        Nothing,
    ));

    // --- Slowloris: stall past client_body_timeout / client_header_timeout. ------------------
    let slow = test_data(2000, 0x510);
    rows.push(case(
        "segment stalls after half its body",
        Stall({
            let mut r = segment(
                Some("slow-01"),
                Some("bytes 100-1099/2000"),
                &[],
                &slow[100..1100],
            );
            r.truncate(r.len() - 500);
            r
        }),
        Closed,
        &[],
        // 0-99 was stored before the table (see `Bench::start`).
        session_effect("slow-01", &slow, &[(0, 99), (100, 599)], None),
    ));
    push_logged_twin(&mut rows, &["timed out", "timeout"]);
    rows.push(case(
        "request head stalls",
        Stall(b"POST /upload HTTP/1.1\r\nHost: localhost\r\nX-Session-ID: keeper-sess".to_vec()),
        Closed,
        &["timed out"],
        Nothing,
    ));
    rows.push(case(
        "multipart body stalls",
        Stall({
            let mut r = form(ct, &good_body);
            r.truncate(r.len() - 20);
            r
        }),
        Closed,
        &[],
        Nothing,
    ));
    push_logged_twin(&mut rows, &["timed out", "timeout"]);
    rows
}

/// The last row again, demanding an error.log line with one of `log`.
fn push_logged_twin(rows: &mut Vec<Case>, log: &[&'static str]) {
    let mut twin = rows.last().unwrap().clone();
    twin.name.push_str(", logged");
    twin.log = log.to_vec();
    rows.push(twin);
}

/// The data of the session the "segment stalls" row continues.
fn slow_data() -> Vec<u8> {
    test_data(2000, 0x510)
}

// ---------------------------------------------------------------------------------------------
// Sending a row and reading the outcome
// ---------------------------------------------------------------------------------------------

/// Plays `wire` on a fresh connection; returns nginx's answer and what it sent.
fn exchange(port: u16, wire: &Wire) -> (Answer, Vec<u8>) {
    let mut conn = TcpStream::connect(("127.0.0.1", port)).expect("connect to nginx");
    conn.set_read_timeout(Some(ROW_TIMEOUT)).unwrap();
    conn.set_write_timeout(Some(ROW_TIMEOUT)).unwrap();
    conn.set_nodelay(true).unwrap();
    let bytes = match wire {
        Wire::Send(b) | Wire::HalfClose(b) | Wire::Stall(b) => b,
    };
    // nginx may answer and close before taking everything (413, bad headers): not an error.
    let _ = conn.write_all(bytes);
    if matches!(wire, Wire::HalfClose(_)) {
        let _ = conn.shutdown(Shutdown::Write);
    }
    let mut got = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match conn.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "nginx neither answered nor closed within {ROW_TIMEOUT:?} ({e}); got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    if got.is_empty() {
        return (Answer::Closed, got);
    }
    let line_end = got.iter().position(|b| *b == b'\r').unwrap_or(got.len());
    let line = String::from_utf8_lossy(&got[..line_end]).into_owned();
    let code = line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    (Answer::Status(code), got)
}

// ---------------------------------------------------------------------------------------------
// What may change on disk
// ---------------------------------------------------------------------------------------------

/// A file's length and, for files of reasonable size, its content.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileSig {
    len: u64,
    content: Option<Vec<u8>>,
}

/// Every path under `root` (directories too), skipping the subtrees in `skip`.
fn tree(root: &Path, skip: &[PathBuf]) -> BTreeMap<PathBuf, Option<FileSig>> {
    fn walk(path: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, Option<FileSig>>) {
        if skip.iter().any(|s| s == path) {
            return;
        }
        let Ok(meta) = fs::symlink_metadata(path) else {
            return;
        };
        if meta.is_dir() {
            out.insert(path.to_path_buf(), None);
            for entry in fs::read_dir(path).into_iter().flatten().flatten() {
                walk(&entry.path(), skip, out);
            }
        } else {
            let content = (meta.len() <= 16 << 20).then(|| fs::read(path).unwrap_or_default());
            out.insert(
                path.to_path_buf(),
                Some(FileSig {
                    len: meta.len(),
                    content,
                }),
            );
        }
    }
    let mut out = BTreeMap::new();
    walk(root, skip, &mut out);
    out
}

/// Paths that differ between two trees.
fn changed(
    before: &BTreeMap<PathBuf, Option<FileSig>>,
    after: &BTreeMap<PathBuf, Option<FileSig>>,
) -> Vec<PathBuf> {
    let keys: BTreeSet<&PathBuf> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter(|k| before.get(*k) != after.get(*k))
        .cloned()
        .collect()
}

/// Files named like what a traversal would write, anywhere in the three levels under `root`.
fn traversal_canaries(root: &Path) -> BTreeSet<PathBuf> {
    const NAMES: [&str; 2] = ["passwd", "evil.txt"];
    fn walk(path: &Path, depth: u32, out: &mut BTreeSet<PathBuf>) {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            let p = entry.path();
            let is_file = entry.file_type().is_ok_and(|t| t.is_file());
            if is_file
                && entry
                    .file_name()
                    .to_str()
                    .is_some_and(|n| NAMES.contains(&n))
            {
                out.insert(p.clone());
            }
            if depth > 0 && entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, depth - 1, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, 3, &mut out);
    out
}

// ---------------------------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------------------------

struct Bench {
    env: UploadEnv,
    keeper_data: Vec<u8>,
    keeper_report: String,
    workers: Vec<u32>,
    /// The prefix outside store/state, as it was after start-up.
    outside: BTreeMap<PathBuf, Option<FileSig>>,
    canaries: BTreeSet<PathBuf>,
    etc_passwd: Option<Vec<u8>>,
}

impl Bench {
    fn start() -> Bench {
        let env = UploadEnv::start_server(
            Nginx::builder()
                .http(&format!("client_body_timeout {SHORT_TIMEOUT};"))
                .http(&format!("client_header_timeout {SHORT_TIMEOUT};")),
            &server_body(),
        );
        let keeper_data = test_data(KEEPER_TOTAL, 0x6b65);
        let mut held = Vec::new();
        for (a, b) in KEEPER_HELD {
            held.push((a as u64, b as u64));
            let r = env.post(&Segment::piece(KEEPER, &keeper_data, a, b));
            assert_progress(&r, &expected_report(&held, KEEPER_TOTAL as u64));
        }
        let keeper_report = expected_report(&held, KEEPER_TOTAL as u64);
        // The session the "segment stalls" row continues: its first 100 bytes are stored.
        let slow = slow_data();
        assert_progress(
            &env.post(&Segment::piece("slow-01", &slow, 0, 99)),
            "0-99/2000",
        );
        let prefix = env.nginx.prefix().to_path_buf();
        let workers = env.nginx.worker_pids();
        assert!(!workers.is_empty(), "no worker processes");
        let outside = Self::outside_tree(&prefix);
        let parent = prefix.parent().unwrap().to_path_buf();
        Bench {
            keeper_data,
            keeper_report,
            workers,
            outside,
            canaries: traversal_canaries(&parent),
            etc_passwd: fs::read("/etc/passwd").ok(),
            env,
        }
    }

    fn outside_tree(prefix: &Path) -> BTreeMap<PathBuf, Option<FileSig>> {
        let mut t = tree(
            prefix,
            &[
                prefix.join("store"),
                prefix.join("state"),
                prefix.join("error.log"),
            ],
        );
        t.remove(prefix);
        t
    }

    fn store_tree(&self) -> BTreeMap<PathBuf, Option<FileSig>> {
        let mut all = tree(&self.env.nginx.path("store"), &[]);
        all.extend(tree(&self.env.nginx.path("state"), &[]));
        // Hashed level directories are created as needed and stay, as in nginx's caches.
        all.retain(|_, sig| sig.is_some());
        all
    }

    fn port(&self) -> u16 {
        self.env.port()
    }

    /// The status query's `Range` report for `id`, or the status if it is not 200.
    fn report(&self, id: &str) -> Result<String, u16> {
        let r = send_raw(
            self.port(),
            &post(
                "/upload",
                &[("X-Session-ID", id), ("Content-Length", "0")],
                b"",
            ),
        );
        if r.status != 200 {
            return Err(r.status);
        }
        let range = r.header("Range").unwrap_or_default().to_string();
        assert_eq!(r.text(), range, "status query body vs Range header");
        Ok(range)
    }

    /// Asserts that session `id`'s report claims only bytes within `allowed` whose stored
    /// content equals `data`; returns the report.
    #[track_caller]
    fn assert_claims_true(&self, id: &str, data: &[u8], allowed: &[(u64, u64)]) -> String {
        let report = match self.report(id) {
            Ok(r) => r,
            Err(404) => return String::new(),
            Err(s) => panic!("status query for {id} answered {s}"),
        };
        let stored = fs::read(self.env.stored_path(id)).unwrap_or_default();
        for (a, b, total) in parse_report(&report) {
            assert_eq!(total, data.len() as u64, "{id}: report {report}");
            for byte in a..=b {
                assert!(
                    allowed.iter().any(|(x, y)| (*x..=*y).contains(&byte)),
                    "{id}: report {report} claims byte {byte}, never sent"
                );
            }
            assert!(
                stored.len() as u64 > b,
                "{id}: report {report} claims bytes past the stored file's {} bytes",
                stored.len()
            );
            assert_bytes_eq(
                &stored[a as usize..=b as usize],
                &data[a as usize..=b as usize],
                &format!("{id}: claimed bytes {a}-{b}"),
            );
        }
        report
    }

    /// Plays one row and checks everything the module documentation promises about it;
    /// returns the report of the row's session, if it has one.
    fn run(&self, row: &Case) -> Option<String> {
        let name = &row.name;
        let log_offset = self.env.nginx.log_len();
        let before = self.store_tree();
        let handoffs = self.env.backend.requests().len();

        let (answer, raw) = exchange(self.port(), &row.wire);
        // nginx is done with the row's request once it has freed it: its claims on session
        // bytes and the files it removes go in that cleanup, maybe after the answer.
        self.env.nginx.wait_idle();
        let gained = || self.env.nginx.log_since(log_offset);
        assert_eq!(
            answer,
            row.answer,
            "[{name}] answer\n--- response ---\n{}\n--- error.log gained ---\n{}",
            String::from_utf8_lossy(&raw[..raw.len().min(1500)]),
            gained()
        );
        if !row.log.is_empty() {
            if let Err(got) = self.env.nginx.wait_log_line(log_offset, &row.log) {
                panic!(
                    "[{name}] error.log gained no line mentioning any of {:?}; it gained:\n{got}",
                    row.log
                );
            }
        }

        // The store changed only as the row allows (waiting for a request's cleanup to end).
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let problem = self.effect_problem(row, &before, handoffs);
            match problem {
                None => break,
                Some(p) if Instant::now() > deadline => {
                    panic!("[{name}] {p}\n--- error.log gained ---\n{}", gained())
                }
                Some(_) => std::thread::sleep(Duration::from_millis(25)),
            }
        }
        let report = match &row.effect {
            Effect::Session { id, data, sent, .. } => Some(self.assert_claims_true(id, data, sent)),
            _ => None,
        };

        self.assert_healthy(name);
        self.assert_keeper_intact(name);
        report
    }

    /// Why the store does not match the row's effect, if it does not.
    fn effect_problem(
        &self,
        row: &Case,
        before: &BTreeMap<PathBuf, Option<FileSig>>,
        handoffs: usize,
    ) -> Option<String> {
        let after = self.store_tree();
        let diff = changed(before, &after);
        let requests = self.env.backend.requests();
        let new_handoffs = requests.len() - handoffs;
        let session_files = |id: &str| {
            diff.iter()
                .filter(|p| {
                    let n = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    !(n == id || n == format!("{id}.state"))
                })
                .cloned()
                .collect::<Vec<_>>()
        };
        match &row.effect {
            Effect::Nothing => {
                if !diff.is_empty() {
                    return Some(format!("store/state changed: {diff:#?}"));
                }
                if new_handoffs != 0 {
                    return Some(format!("{new_handoffs} request(s) reached the backend"));
                }
            }
            Effect::Session { id, report, .. } => {
                let others = session_files(id);
                if !others.is_empty() {
                    return Some(format!("files of other sessions changed: {others:#?}"));
                }
                if new_handoffs != 0 {
                    return Some(format!("{new_handoffs} request(s) reached the backend"));
                }
                if let Some(want) = report {
                    match self.report(id) {
                        Ok(got) if &got == want => {}
                        other => return Some(format!("report of {id}: {other:?}, want {want}")),
                    }
                }
            }
            Effect::Opened { id } => {
                let others = session_files(id);
                if !others.is_empty() {
                    return Some(format!("files of other sessions changed: {others:#?}"));
                }
                if new_handoffs != 0 {
                    return Some(format!("{new_handoffs} request(s) reached the backend"));
                }
                match self.report(id) {
                    Ok(got) if got.is_empty() => {}
                    Err(404) => {}
                    other => return Some(format!("{id} claims bytes: {other:?}")),
                }
            }
            Effect::HandOff { name } => {
                if new_handoffs != 1 {
                    return Some(format!("{new_handoffs} hand-offs, expected 1"));
                }
                let store = self.env.nginx.path("store");
                if let Some(p) = diff.iter().find(|p| !p.starts_with(&store)) {
                    return Some(format!("{} changed outside store", p.display()));
                }
                let fields = requests.last().unwrap().fields().unwrap_or_default();
                let get = |suffix: &str| {
                    fields
                        .iter()
                        .find(|f| f.name.ends_with(suffix))
                        .map(|f| f.value_str())
                };
                if get(".name").as_deref() != Some(name.as_str()) {
                    return Some(format!("hand-off fields {fields:#?}: name is not {name:?}"));
                }
                let path = PathBuf::from(get(".path").unwrap_or_default());
                if !path.starts_with(&store) || !path.is_file() {
                    return Some(format!(
                        "handed-off path {} is not a file in store",
                        path.display()
                    ));
                }
            }
        }
        None
    }

    /// nginx did not crash, wrote nothing outside store/state, and still answers.
    #[track_caller]
    fn assert_healthy(&self, name: &str) {
        let nginx = &self.env.nginx;
        let serious = nginx.serious_log_lines();
        assert!(
            serious.is_empty(),
            "[{name}] serious error.log lines: {serious:#?}"
        );
        let signals: Vec<String> = nginx
            .error_log()
            .lines()
            .filter(|l| l.contains("signal") && !l.contains("[notice]"))
            .map(str::to_string)
            .collect();
        assert!(signals.is_empty(), "[{name}] a process died: {signals:#?}");
        assert_eq!(
            nginx.worker_pids(),
            self.workers,
            "[{name}] worker pids changed"
        );
        let r = get(self.port(), "/plain");
        assert_eq!(
            (r.status, r.text().as_str()),
            (200, "plain ok\n"),
            "[{name}]"
        );

        let prefix = nginx.prefix();
        let outside = Self::outside_tree(prefix);
        let diff = changed(&self.outside, &outside);
        assert!(
            diff.is_empty(),
            "[{name}] paths outside store/state changed: {diff:#?}"
        );
        let top: BTreeSet<String> = fs::read_dir(prefix)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let expected: BTreeSet<String> = [
            "nginx.conf",
            "error.log",
            "stderr.log",
            "nginx.pid",
            "store",
            "state",
            "client_body",
            "proxy",
            "proxy_temp",
            "fastcgi",
            "uwsgi",
            "scgi",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(
            top.is_subset(&expected),
            "[{name}] unexpected entries in the prefix: {:?}",
            top.difference(&expected).collect::<Vec<_>>()
        );
        let canaries = traversal_canaries(prefix.parent().unwrap());
        let new: Vec<_> = canaries.difference(&self.canaries).collect();
        assert!(
            new.is_empty(),
            "[{name}] traversal-like files appeared: {new:#?}"
        );
        assert_eq!(
            fs::read("/etc/passwd").ok(),
            self.etc_passwd,
            "[{name}] /etc/passwd changed"
        );
    }

    /// The keeper's report and held bytes are what they were.
    #[track_caller]
    fn assert_keeper_intact(&self, name: &str) {
        let report = self.report(KEEPER);
        assert_eq!(
            report.as_deref(),
            Ok(self.keeper_report.as_str()),
            "[{name}] the keeper session's report changed"
        );
        let stored = fs::read(self.env.stored_path(KEEPER)).unwrap_or_default();
        for (a, b) in KEEPER_HELD {
            assert!(
                stored.len() > b,
                "[{name}] keeper file is {} bytes",
                stored.len()
            );
            assert_bytes_eq(
                &stored[a..=b],
                &self.keeper_data[a..=b],
                &format!("[{name}] keeper bytes {a}-{b}"),
            );
        }
    }

    /// Sends the keeper's missing segments: the last one hands the whole file off.
    fn complete_keeper(&self) {
        let data = &self.keeper_data;
        let (a, b) = KEEPER_MISSING[0];
        let r = self.env.post(&Segment::piece(KEEPER, data, a, b));
        let mut held: Vec<(u64, u64)> = KEEPER_HELD
            .iter()
            .map(|&(a, b)| (a as u64, b as u64))
            .collect();
        held.push((a as u64, b as u64));
        assert_progress(&r, &expected_report(&held, KEEPER_TOTAL as u64));
        let (a, b) = KEEPER_MISSING[1];
        let before = self.env.backend.requests().len();
        let r = self.env.post(&Segment::piece(KEEPER, data, a, b));
        assert_eq!(r.status, 200, "{r}");
        let requests = self.env.backend.requests();
        assert_eq!(requests.len(), before + 1);
        let fields = requests.last().unwrap().fields().unwrap();
        let path = fields
            .iter()
            .find(|f| f.name == "f.path")
            .map(|f| PathBuf::from(f.value_str()))
            .expect("f.path field");
        assert_eq!(path, self.env.stored_path(KEEPER));
        assert_bytes_eq(
            &fs::read(&path).unwrap(),
            data,
            "the keeper's handed-off file",
        );
    }
}

/// `a-b/t,c-d/t` → [(a, b, t), (c, d, t)].
fn parse_report(report: &str) -> Vec<(u64, u64, u64)> {
    report
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|span| {
            let (range, total) = span.split_once('/').expect("a/b");
            let (a, b) = range.split_once('-').expect("a-b");
            (
                a.parse().unwrap(),
                b.parse().unwrap(),
                total.parse().unwrap(),
            )
        })
        .collect()
}

#[test]
fn malformed_requests_table() {
    let rows = table();
    let bench = Bench::start();
    let mut ran = 0;
    let mut summary = Vec::new();
    for row in &rows {
        let report = bench.run(row);
        ran += 1;
        let report = report
            .map(|r| format!(" (session holds {r:?})"))
            .unwrap_or_default();
        summary.push(format!("  {:<62} {:?}{report}", row.name, row.answer));
    }
    eprintln!("{ran} rows passed:\n{}", summary.join("\n"));
    assert!(ran >= 45, "only {ran} rows");
    bench.complete_keeper();
    bench.assert_healthy("after the table");
}

/// The consequence of the "live session's id without a range" row, end to end: a whole-file
/// request with the id of a session in progress must not change what the session holds, or at
/// least must not leave a state that claims bytes the file no longer has.
#[test]
fn a_whole_file_request_does_not_corrupt_a_live_session() {
    let env = UploadEnv::start("");
    let data = test_data(4000, 0xc10b);
    let id = "clobber-01";
    assert_progress(
        &env.post(&Segment::piece(id, &data, 0, 1999)),
        "0-1999/4000",
    );
    let offset = env.nginx.log_len();
    let r = send_raw(
        env.port(),
        &segment(Some(id), None, &[], b"not the session's bytes"),
    );
    eprintln!(
        "whole-file request over session {id}: {} (error.log gained: {:?})",
        r.status,
        env.nginx.log_since(offset)
    );
    // Whatever it answered, every byte the session still claims must be the source's ...
    let query = post(
        "/upload",
        &[("X-Session-ID", id), ("Content-Length", "0")],
        b"",
    );
    let report = send_raw(env.port(), &query);
    let stored = fs::read(env.stored_path(id)).unwrap_or_default();
    if report.status == 200 {
        for (a, b, _) in parse_report(report.header("Range").unwrap_or_default()) {
            let (a, b) = (a as usize, b as usize);
            assert!(
                stored.len() > b,
                "the report {:?} claims bytes {a}-{b}; the stored file has {} bytes",
                report.header("Range"),
                stored.len()
            );
            assert_bytes_eq(&stored[a..=b], &data[a..=b], "claimed bytes");
        }
    }
    // ... and finishing the session hands off the source.
    let before = env.backend.requests().len();
    let r = env.post(&Segment::piece(id, &data, 2000, 3999));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.backend.requests().len(), before + 1);
    assert_bytes_eq(
        &fs::read(env.stored_path(id)).unwrap(),
        &data,
        "the handed-off file",
    );
}
