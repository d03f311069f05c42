//! Browser forms (`multipart/form-data`): several files and fields in one request, what the
//! backend receives for them, part boundaries split anywhere by the network, malformed forms,
//! the soft file size limit, the hand-off size limit, the hash variables (for forms and for
//! raw and resumable uploads) and `upload_cleanup`.

use ngx_upload_test_support::*;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Sends a form, expects the backend's 200 and returns the one hand-off it received.
#[track_caller]
fn post_form(env: &UploadEnv, content_type: &str, body: &[u8]) -> ReceivedRequest {
    env.backend.clear();
    let r = send_raw(env.port(), &form_request("/upload", content_type, body));
    assert_eq!(
        r.status,
        200,
        "expected the backend's answer, got:\n{r}\n--- error.log ---\n{}",
        env.nginx.error_log()
    );
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1, "hand-offs: {requests:#?}");
    let req = requests.into_iter().next().unwrap();
    assert_eq!(
        r.text(),
        backend::echo_body(&req),
        "the client's answer is the backend's"
    );
    let ct = req.header("content-type").unwrap_or_default();
    assert!(
        ct.starts_with("multipart/form-data; boundary="),
        "hand-off Content-Type {ct:?}"
    );
    req
}

#[track_caller]
fn fields_of(req: &ReceivedRequest) -> Vec<Field> {
    req.fields()
        .unwrap_or_else(|e| panic!("the hand-off is not a valid form ({e}): {req:?}"))
}

fn remove_all(paths: &[PathBuf]) {
    for p in paths {
        let _ = std::fs::remove_file(p);
    }
}

/// A browser form with fields before, between and after files; files named plainly, with an
/// unescaped Windows path (old Internet Explorer) and with a Unix path; an empty file; content
/// that looks like the boundary; with a quoted and with an unquoted boundary.
#[test]
fn browser_form_with_several_files_and_fields() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let store = env.nginx.path("store");
    let random = test_data(30_000, 101);
    let png = test_data(5_000, 102);
    for (boundary, content_type) in [
        (
            "----WebKitFormBoundary7MA4YWxkTrZu0gW",
            "multipart/form-data; boundary=\"----WebKitFormBoundary7MA4YWxkTrZu0gW\"",
        ),
        ("AaB03x", "multipart/form-data; boundary=AaB03x"),
    ] {
        // Almost delimiters: a CRLF and dashes before most of the boundary, the whole boundary
        // without the CRLF before it.
        let tricky = format!(
            "start\r\n--{}X not yet\r\n-\r\n--\r\nx--{boundary}\r\nend\r\n",
            &boundary[..boundary.len() - 1]
        );
        let parts = [
            Part::field("title", "Hello, world"),
            Part::field("ignored", "drop me"),
            Part::file("file1", "a.txt", "text/plain", tricky.as_bytes()),
            Part::field("desc", "first line\r\nsecond line"),
            Part::file(
                "file2",
                r"C:\dir\a.txt",
                "application/octet-stream",
                &random,
            ),
            Part::field("subtitle", "not ^title$"),
            Part::file("file3", "/x/y.txt", "image/png", &png),
            Part::file("empty", "zero.bin", "application/octet-stream", b""),
            Part::field("description", "after the files"),
            Part::field("title2", "dropped too"),
        ];
        let body = multipart_body(boundary, &parts);
        let req = post_form(&env, content_type, &body);
        assert_eq!(req.path(), "/upload");
        let paths = assert_form_fields(
            &fields_of(&req),
            &[
                Expected::Field("title", b"Hello, world"),
                Expected::File {
                    field: "file1",
                    name: "a.txt",
                    content_type: "text/plain",
                    data: tricky.as_bytes(),
                    number: 1,
                },
                Expected::Field("desc", b"first line\r\nsecond line"),
                Expected::File {
                    field: "file2",
                    name: "a.txt",
                    content_type: "application/octet-stream",
                    data: &random,
                    number: 2,
                },
                Expected::File {
                    field: "file3",
                    name: "y.txt",
                    content_type: "image/png",
                    data: &png,
                    number: 3,
                },
                Expected::File {
                    field: "empty",
                    name: "zero.bin",
                    content_type: "application/octet-stream",
                    data: b"",
                    number: 4,
                },
                Expected::Field("description", b"after the files"),
            ],
            &store,
        );
        // Exactly the form's files are in the store, nothing else.
        let mut expected = paths.clone();
        expected.sort();
        assert_eq!(files_under(&store), expected, "files in the store");
        remove_all(&paths);
    }
}

/// `upload_tame_arrays on`: file fields named `files[]` are described as `files.name` etc.;
/// ordinary fields keep their names.
#[test]
fn tame_arrays_strips_brackets_from_file_fields() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server("upload_tame_arrays on;"));
    let a = test_data(1_000, 103);
    let b = test_data(2_000, 104);
    let c = test_data(3, 105);
    let parts = [
        Part::file("files[]", "a.bin", "application/octet-stream", &a),
        Part::field("desc[]", "kept as sent"),
        Part::file("files[]", "b.bin", "application/octet-stream", &b),
        Part::file("doc", "c.txt", "text/plain", &c),
    ];
    let req = post_form(
        &env,
        "multipart/form-data; boundary=tame",
        &multipart_body("tame", &parts),
    );
    assert_form_fields(
        &fields_of(&req),
        &[
            Expected::File {
                field: "files",
                name: "a.bin",
                content_type: "application/octet-stream",
                data: &a,
                number: 1,
            },
            Expected::Field("desc[]", b"kept as sent"),
            Expected::File {
                field: "files",
                name: "b.bin",
                content_type: "application/octet-stream",
                data: &b,
                number: 2,
            },
            Expected::File {
                field: "doc",
                name: "c.txt",
                content_type: "text/plain",
                data: &c,
                number: 3,
            },
        ],
        &env.nginx.path("store"),
    );
}

/// The body arrives in two TCP writes, split at every offset in turn: wherever the network
/// cuts a delimiter, a part header or a value, the result is the same.
#[test]
fn a_form_split_at_every_offset() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let store = env.nginx.path("store");
    let content = b"0123456789\r\n--boun almost\r\n-abcdefghijklmnopqrstuvwxyz";
    let parts = [
        Part::file("up", "s.txt", "text/plain", content),
        Part::field("title", "split"),
    ];
    let body = multipart_body("bound", &parts);
    assert!(
        (180..=260).contains(&body.len()),
        "body of {} bytes",
        body.len()
    );
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=bound\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut first_echo: Option<String> = None;
    for i in 0..body.len() {
        env.backend.clear();
        let mut conn = TcpStream::connect(("127.0.0.1", env.port())).unwrap();
        conn.set_nodelay(true).unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut first = head.as_bytes().to_vec();
        first.extend_from_slice(&body[..i]);
        conn.write_all(&first).unwrap();
        conn.flush().unwrap();
        // nginx reads the first piece on its own.
        wait_consumed(&conn);
        conn.write_all(&body[i..]).unwrap();
        conn.flush().unwrap();
        let r = read_response(&mut conn).unwrap_or_else(|e| panic!("split at {i}: {e}"));
        assert_eq!(
            r.status,
            200,
            "split at {i}:\n{r}\n--- error.log ---\n{}",
            env.nginx.error_log()
        );
        let requests = env.backend.requests();
        assert_eq!(requests.len(), 1, "split at {i}");
        let paths = assert_form_fields(
            &fields_of(&requests[0]),
            &[
                Expected::File {
                    field: "up",
                    name: "s.txt",
                    content_type: "text/plain",
                    data: content,
                    number: 1,
                },
                Expected::Field("title", b"split"),
            ],
            &store,
        );
        // Every answer is the same but for the stored file's name and the hand-off's boundary.
        let boundary = requests[0].header("content-type").unwrap_or_default();
        let echo = r
            .text()
            .replace(paths[0].to_str().unwrap(), "<path>")
            .replace(boundary, "<content-type>");
        match &first_echo {
            None => first_echo = Some(echo),
            Some(first) => assert_eq!(&echo, first, "answer when split at {i}"),
        }
        remove_all(&paths);
    }
    assert!(files_under(&store).is_empty());
}

/// The same kind of form sent one byte per write.
#[test]
fn a_form_sent_byte_by_byte() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let content = b"0123456789\r\n--boun\r\n-\r\nabc";
    let parts = [
        Part::field("desc", "before"),
        Part::file("up", "t.txt", "text/plain", content),
        Part::field("title", "trickle"),
    ];
    let body = multipart_body("bound", &parts);
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=bound\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut conn = TcpStream::connect(("127.0.0.1", env.port())).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    conn.write_all(head.as_bytes()).unwrap();
    for byte in &body {
        conn.write_all(std::slice::from_ref(byte)).unwrap();
        // nginx reads each byte on its own.
        wait_consumed(&conn);
    }
    let r = read_response(&mut conn).unwrap();
    assert_eq!(r.status, 200, "{r}\n{}", env.nginx.error_log());
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    assert_form_fields(
        &fields_of(&requests[0]),
        &[
            Expected::Field("desc", b"before"),
            Expected::File {
                field: "up",
                name: "t.txt",
                content_type: "text/plain",
                data: content,
                number: 1,
            },
            Expected::Field("title", b"trickle"),
        ],
        &env.nginx.path("store"),
    );
}

/// Sends a form the module must refuse with `status`; checks the error.log line, that no file
/// is left in the store and that the backend heard nothing.
#[track_caller]
fn expect_form_refusal(env: &UploadEnv, request: &[u8], status: u16, needles: &[&str]) {
    env.backend.clear();
    env.expect_status(request, status, needles);
    // The request's cleanup removes what it stored, once nginx frees it (after the answer).
    env.nginx.wait_idle();
    let left = files_under(&env.nginx.path("store"));
    assert!(left.is_empty(), "files left in the store: {left:?}");
    assert!(
        env.backend.requests().is_empty(),
        "a refused form reached the backend"
    );
}

#[test]
fn a_part_header_over_upload_max_part_header_len_gets_400() {
    let env = UploadEnv::start_server(
        Nginx::builder(),
        &form_server("upload_max_part_header_len 64;"),
    );
    let first = test_data(5_000, 106);
    let mut body = multipart_body(
        "lim",
        &[Part {
            content_type: None,
            ..Part::file("a", "a.txt", "", &first)
        }],
    );
    // Replace the closing delimiter with a part whose Content-Disposition line is 100 bytes.
    body.truncate(body.len() - "--lim--\r\n".len());
    let prefix = "Content-Disposition: form-data; name=\"f2\"; filename=\"";
    let line = format!("{prefix}{}.txt\"", "n".repeat(100 - prefix.len() - 5));
    assert_eq!(line.len(), 100);
    body.extend_from_slice(format!("--lim\r\n{line}\r\n\r\nsecond file\r\n--lim--\r\n").as_bytes());
    expect_form_refusal(
        &env,
        &form_request("/upload", "multipart/form-data; boundary=lim", &body),
        400,
        &["part header too long"],
    );
    // The same form with short headers is fine.
    let ok = multipart_body(
        "lim",
        &[
            Part {
                content_type: None,
                ..Part::file("a", "a.txt", "", &first)
            },
            Part {
                content_type: None,
                ..Part::file("f2", "b.txt", "", b"second file")
            },
        ],
    );
    let r = send_raw(
        env.port(),
        &form_request("/upload", "multipart/form-data; boundary=lim", &ok),
    );
    assert_eq!(r.status, 200, "{r}");
}

#[test]
fn malformed_forms_get_400_and_leave_no_file() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let data = test_data(20_000, 107);
    let parts = [
        Part::field("title", "t"),
        Part::file("a", "a.bin", "application/octet-stream", &data),
    ];
    let whole = multipart_body("trunc", &parts);
    // Truncated: the closing delimiter is missing (the body ends inside the file, and right
    // after the last part's line end).
    for cut in ["--trunc--\r\n".len(), "\r\n--trunc--\r\n".len() + 100] {
        let body = &whole[..whole.len() - cut];
        expect_form_refusal(
            &env,
            &form_request("/upload", "multipart/form-data; boundary=trunc", body),
            400,
            &["closing delimiter", "multipart"],
        );
    }
    // No boundary parameter.
    expect_form_refusal(
        &env,
        &form_request("/upload", "multipart/form-data", &whole),
        400,
        &["boundary"],
    );
    expect_form_refusal(
        &env,
        &form_request("/upload", "multipart/form-data; charset=utf-8", &whole),
        400,
        &["boundary"],
    );
    // Garbage without any delimiter.
    expect_form_refusal(
        &env,
        &form_request(
            "/upload",
            "multipart/form-data; boundary=trunc",
            b"this is not a form at all\r\n--other\r\nstill not\r\n",
        ),
        400,
        &["closing delimiter", "multipart"],
    );
}

/// Issue 10: a form whose last line is a delimiter without the closing `--` (the body ends with
/// `\r\n--BOUNDARY\r\n` or `\r\n--BOUNDARY`) has all its parts: it is handed off, as
/// nginx-upload-module hands it off, and the missing delimiter logged at `info`. A form that ends
/// inside the next part's headers or body is still refused, and its files go.
#[test]
fn a_form_ending_after_a_delimiter_line_is_handed_off() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let store = env.nginx.path("store");
    let content_type = "multipart/form-data; boundary=------123456789";
    let data = test_data(262_144, 120);
    let head: &[u8] = b"--------123456789\r\n\
Content-Disposition: form-data; name=\"file\"; filename=\"test.txt\"\r\n\r\n";
    let file = Expected::File {
        field: "file",
        name: "test.txt",
        content_type: "",
        data: &data,
        number: 1,
    };
    for tail in ["\r\n--------123456789\r\n", "\r\n--------123456789"] {
        let body = [head, &data, tail.as_bytes()].concat();
        let offset = env.nginx.log_len();
        let req = post_form(&env, content_type, &body);
        let paths = assert_form_fields(&fields_of(&req), &[file], &store);
        let line = env
            .nginx
            .assert_logged(offset, &["without the closing delimiter"]);
        assert!(line.contains("[info]"), "{line}");
        remove_all(&paths);
    }
    // A passed field after the file, then the delimiter line: both are handed off.
    let body = [
        head,
        &data,
        b"\r\n--------123456789\r\n\
Content-Disposition: form-data; name=\"title\"\r\n\r\nlast\r\n--------123456789\r\n",
    ]
    .concat();
    let req = post_form(&env, content_type, &body);
    let paths = assert_form_fields(
        &fields_of(&req),
        &[file, Expected::Field("title", b"last")],
        &store,
    );
    remove_all(&paths);
    // Cut inside the next part's headers, or inside its body: the first file was written, and
    // goes with the refusal.
    for tail in [
        &b"\r\n--------123456789\r\nContent-Disposition: form-data; name=\"second\""[..],
        b"\r\n--------123456789\r\nContent-Disposition: form-data; name=\"f2\"; \
filename=\"b.txt\"\r\n\r\npart of a second file",
        b"\r\n--------12345",
    ] {
        let body = [head, &data, tail].concat();
        expect_form_refusal(
            &env,
            &form_request("/upload", content_type, &body),
            400,
            &["closing delimiter"],
        );
    }
}

/// Issue 10: text after the last quoted value of a part's Content-Disposition (here `\r`, a
/// backslash and an `r`, as some clients send) is ignored, as nginx-upload-module ignores it.
#[test]
fn a_part_disposition_with_text_after_the_last_quote_is_taken() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let data = test_data(10_000, 121);
    let body = [
        &b"--q\r\nContent-Disposition: form-data; name=\"file\"; filename=\"test.txt\"\\r\r\n\
Content-Type: text/plain\r\n\r\n"[..],
        &data,
        b"\r\n--q\r\nContent-Disposition: form-data; name=\"title\" x;\r\n\r\nt\r\n--q--\r\n",
    ]
    .concat();
    let req = post_form(&env, "multipart/form-data; boundary=q", &body);
    assert_form_fields(
        &fields_of(&req),
        &[
            Expected::File {
                field: "file",
                name: "test.txt",
                content_type: "text/plain",
                data: &data,
                number: 1,
            },
            Expected::Field("title", b"t"),
        ],
        &env.nginx.path("store"),
    );
}

/// A client that stops sending in the middle of a file (half-closes its connection) leaves no
/// file behind.
#[test]
fn a_client_going_away_mid_form_leaves_no_file() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server(""));
    let data = test_data(300_000, 109);
    let parts = [
        Part::file("a", "a.bin", "application/octet-stream", &data[..1_000]),
        Part::file("b", "b.bin", "application/octet-stream", &data),
    ];
    let body = multipart_body("gone", &parts);
    let request = form_request("/upload", "multipart/form-data; boundary=gone", &body);
    let mut conn = TcpStream::connect(("127.0.0.1", env.port())).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Everything up to the middle of the second file.
    conn.write_all(&request[..request.len() - 150_000]).unwrap();
    conn.flush().unwrap();
    let store = env.nginx.path("store");
    let deadline = Instant::now() + Duration::from_secs(3);
    while files_under(&store).len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(files_under(&store).len(), 2, "both files are being written");
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    // nginx may answer 400 or just close; either way the files go.
    let _ = read_response(&mut conn);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !files_under(&store).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        files_under(&store).is_empty(),
        "files left in the store: {:?}",
        files_under(&store)
    );
    assert!(env.backend.requests().is_empty());
}

/// `upload_max_file_size` is a soft limit for forms: the larger file is dropped, logged and
/// removed; the rest of the form goes on.
#[test]
fn a_file_over_upload_max_file_size_is_skipped_in_a_form() {
    let env = UploadEnv::start_server(Nginx::builder(), &form_server("upload_max_file_size 1k;"));
    let store = env.nginx.path("store");
    let big = test_data(2_048, 108);
    let small = b"ten bytes!";
    let parts = [
        Part::field("title", "limits"),
        Part::file("big", "big.bin", "application/octet-stream", &big),
        Part::file("small", "small.txt", "text/plain", small),
        Part::field("desc", "after"),
    ];
    let offset = env.nginx.log_len();
    let req = post_form(
        &env,
        "multipart/form-data; boundary=soft",
        &multipart_body("soft", &parts),
    );
    let paths = assert_form_fields(
        &fields_of(&req),
        &[
            Expected::Field("title", b"limits"),
            // Numbered as the second file of the request, as in nginx-upload-module.
            Expected::File {
                field: "small",
                name: "small.txt",
                content_type: "text/plain",
                data: small,
                number: 2,
            },
            Expected::Field("desc", b"after"),
        ],
        &store,
    );
    assert_eq!(files_under(&store), paths, "only the small file is stored");
    let line = env.nginx.assert_logged(offset, &["upload_max_file_size"]);
    assert!(
        line.contains("big.bin"),
        "log line does not name the file: {line}"
    );
    std::fs::remove_file(&paths[0]).unwrap();

    // A file far over the limit, spanning many body buffers, is skipped just the same.
    let huge = test_data(300_000, 116);
    let parts = [
        Part::file("huge", "huge.bin", "application/octet-stream", &huge),
        Part::field("title", "still here"),
        Part::file("small", "small.txt", "text/plain", small),
    ];
    let req = post_form(
        &env,
        "multipart/form-data; boundary=soft",
        &multipart_body("soft", &parts),
    );
    let paths = assert_form_fields(
        &fields_of(&req),
        &[
            Expected::Field("title", b"still here"),
            Expected::File {
                field: "small",
                name: "small.txt",
                content_type: "text/plain",
                data: small,
                number: 2,
            },
        ],
        &store,
    );
    assert_eq!(files_under(&store), paths, "only the small file is stored");
}

#[test]
fn a_form_over_upload_max_output_body_len_gets_413() {
    let env = UploadEnv::start_server(
        Nginx::builder(),
        &form_server("upload_max_output_body_len 200;"),
    );
    let long = "d".repeat(1024);
    let parts = [
        Part::file("a", "a.txt", "text/plain", b"small file"),
        Part::field("desc", &long),
    ];
    expect_form_refusal(
        &env,
        &form_request(
            "/upload",
            "multipart/form-data; boundary=out",
            &multipart_body("out", &parts),
        ),
        413,
        &["upload_max_output_body_len"],
    );
}

// ---------------------------------------------------------------------------------------------
// Hash variables
// ---------------------------------------------------------------------------------------------

/// (variable suffix, coreutils tool, upper case)
const DIGESTS: [(&str, &str, bool); 8] = [
    ("md5", "md5sum", false),
    ("md5_uc", "md5sum", true),
    ("sha1", "sha1sum", false),
    ("sha1_uc", "sha1sum", true),
    ("sha256", "sha256sum", false),
    ("sha256_uc", "sha256sum", true),
    ("sha512", "sha512sum", false),
    ("sha512_uc", "sha512sum", true),
];

/// [`FORM_SERVER`] taking raw and resumable uploads too, with every hash variable.
fn hash_server() -> String {
    let mut extra = String::from("upload_resumable on;\nupload_state_store {{PREFIX}}/state 1;\n");
    for (suffix, _, _) in DIGESTS {
        extra.push_str(&format!(
            "upload_aggregate_form_field \"$upload_field_name.{suffix}\" \"$upload_file_{suffix}\";\n"
        ));
    }
    extra.push_str(
        "upload_aggregate_form_field \"$upload_field_name.crc32\" \"$upload_file_crc32\";\n",
    );
    form_server(&extra)
}

/// Checks the hash fields of `field` against coreutils (run on `data` and on the stored file)
/// and crc32fast.
#[track_caller]
fn assert_digests(fields: &[Field], field: &str, data: &[u8], stored: &Path) {
    let get = |name: &str| -> String {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(Field::value_str)
            .unwrap_or_else(|| panic!("no field {name:?} in {fields:#?}"))
    };
    for (suffix, tool, upper) in DIGESTS {
        let of_data = digest_of_bytes(tool, data);
        let of_file = digest_of_file(tool, stored);
        assert_eq!(
            of_file,
            of_data,
            "{tool} of {} vs. the data",
            stored.display()
        );
        let expected = if upper {
            of_data.to_ascii_uppercase()
        } else {
            of_data.to_ascii_lowercase()
        };
        assert_eq!(
            get(&format!("{field}.{suffix}")),
            expected,
            "$upload_file_{suffix} of {field} ({} bytes)",
            data.len()
        );
    }
    assert_eq!(
        get(&format!("{field}.crc32")),
        format!("{:08x}", crc32fast::hash(data)),
        "$upload_file_crc32 of {field} ({} bytes)",
        data.len()
    );
}

#[track_caller]
fn field_value(fields: &[Field], name: &str) -> String {
    fields
        .iter()
        .find(|f| f.name == name)
        .map(Field::value_str)
        .unwrap_or_else(|| panic!("no field {name:?} in {fields:#?}"))
}

#[test]
fn hashes_of_the_files_of_a_form() {
    let env = UploadEnv::start_server(Nginx::builder(), &hash_server());
    let one = test_data(70_001, 110);
    let two = test_data(3, 111);
    let parts = [
        Part::file("one", "one.bin", "application/octet-stream", &one),
        Part::field("title", "hashes"),
        Part::file("two", "two.bin", "application/octet-stream", &two),
        Part::file("none", "empty.bin", "application/octet-stream", b""),
    ];
    let req = post_form(
        &env,
        "multipart/form-data; boundary=hash",
        &multipart_body("hash", &parts),
    );
    let fields = fields_of(&req);
    for (field, data) in [("one", &one[..]), ("two", &two[..]), ("none", &b""[..])] {
        let path = PathBuf::from(field_value(&fields, &format!("{field}.path")));
        assert_bytes_eq(&std::fs::read(&path).unwrap(), data, "stored file");
        assert_digests(&fields, field, data, &path);
    }
}

#[test]
fn hashes_of_a_raw_single_request_upload() {
    let env = UploadEnv::start_server(Nginx::builder(), &hash_server());
    let data = test_data(150_000, 112);
    let seg = Segment::whole(&data);
    let r = env.post(&seg);
    assert_eq!(r.status, 200, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    let fields = fields_of(&requests[0]);
    let path = PathBuf::from(field_value(&fields, "f.path"));
    assert_bytes_eq(&std::fs::read(&path).unwrap(), &data, "stored file");
    assert_digests(&fields, "f", &data, &path);
}

/// Sends `data` as a resumable upload in `order` of its `cuts`; returns the hand-off.
fn resumable_upload(
    env: &UploadEnv,
    id: &str,
    data: &[u8],
    cuts: &[(usize, usize)],
    order: &[usize],
) -> ReceivedRequest {
    for (n, &i) in order.iter().enumerate() {
        let (a, b) = cuts[i];
        let r = env.post(&Segment::piece(id, data, a, b));
        if n + 1 < order.len() {
            assert_eq!(r.status, 201, "segment {a}-{b}: {r}");
        } else {
            assert_eq!(r.status, 200, "last segment {a}-{b}: {r}");
        }
    }
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    requests.into_iter().next().unwrap()
}

fn check_resumable_hashes(id: &str, order_of: impl Fn(usize) -> Vec<usize>) {
    let env = UploadEnv::start_server(Nginx::builder(), &hash_server());
    let data = test_data(300_001, 113);
    let cuts = segments(data.len(), 40_000);
    let order = order_of(cuts.len());
    let req = resumable_upload(&env, id, &data, &cuts, &order);
    let fields = fields_of(&req);
    let path = PathBuf::from(field_value(&fields, "f.path"));
    assert_eq!(field_value(&fields, "f.size"), data.len().to_string());
    assert_bytes_eq(&std::fs::read(&path).unwrap(), &data, "assembled file");
    assert_digests(&fields, "f", &data, &path);
}

#[test]
fn hashes_of_a_resumable_upload_in_order() {
    check_resumable_hashes("hashinorder", |n| (0..n).collect());
}

#[test]
fn hashes_of_a_resumable_upload_in_reverse_order() {
    check_resumable_hashes("hashreverse", |n| (0..n).rev().collect());
}

#[test]
fn hashes_of_a_resumable_upload_shuffled() {
    check_resumable_hashes("hashshuffle", |n| {
        let mut order: Vec<usize> = (0..n).collect();
        Rng::new(0xa5a5).shuffle(&mut order);
        order
    });
}

// ---------------------------------------------------------------------------------------------
// upload_cleanup
// ---------------------------------------------------------------------------------------------

/// `upload_cleanup 500;`: when the backend answers 500 the form's files are removed; when it
/// answers 200 they stay.
#[test]
fn upload_cleanup_removes_the_files_of_a_form_the_backend_refused() {
    let location = |path: &str, pass: &str| {
        FORM_SERVER
            .lines()
            .skip_while(|l| !l.starts_with("location /upload"))
            .take_while(|l| !l.starts_with("location @backend"))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("location /upload", &format!("location {path}"))
            .replace("upload_pass @backend;", &format!("upload_pass {pass};"))
            .replace("{{EXTRA}}", "upload_cleanup 500;")
    };
    let server = format!(
        "{}\n{}\nlocation /status/ {{ proxy_pass http://{{{{BACKEND}}}}; }}\n",
        location("/refused", "/status/500"),
        location("/accepted", "/status/200"),
    );
    let env = UploadEnv::start_server(Nginx::builder(), &server);
    let store = env.nginx.path("store");
    let a = test_data(10_000, 114);
    let b = test_data(77, 115);
    let body = multipart_body(
        "clean",
        &[
            Part::file("a", "a.bin", "application/octet-stream", &a),
            Part::field("title", "cleanup"),
            Part::file("b", "b.bin", "application/octet-stream", &b),
        ],
    );
    let content_type = "multipart/form-data; boundary=clean";

    // The backend answers 500: the files go.
    let r = send_raw(env.port(), &form_request("/refused", content_type, &body));
    assert_eq!(r.status, 500, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].path(), "/status/500");
    let fields = fields_of(&requests[0]);
    let refused: Vec<PathBuf> = ["a.path", "b.path"]
        .iter()
        .map(|n| PathBuf::from(field_value(&fields, n)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    while refused.iter().any(|p| p.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &refused {
        assert!(
            !p.exists(),
            "{} is still there after the backend's 500",
            p.display()
        );
    }
    assert!(files_under(&store).is_empty(), "{:?}", files_under(&store));

    // The backend answers 200: the files stay.
    env.backend.clear();
    let r = send_raw(env.port(), &form_request("/accepted", content_type, &body));
    assert_eq!(r.status, 200, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    let paths = assert_form_fields(
        &fields_of(&requests[0]),
        &[
            Expected::File {
                field: "a",
                name: "a.bin",
                content_type: "application/octet-stream",
                data: &a,
                number: 1,
            },
            Expected::Field("title", b"cleanup"),
            Expected::File {
                field: "b",
                name: "b.bin",
                content_type: "application/octet-stream",
                data: &b,
                number: 2,
            },
        ],
        &store,
    );
    // The request's cleanup, which removes the files after a 500, has run once nginx freed it.
    env.nginx.wait_idle();
    for p in &paths {
        assert!(
            p.exists(),
            "{} was removed after the backend's 200",
            p.display()
        );
    }
}
