//! Asking a session what it holds before resuming: `HEAD`, or a `POST` with the session id and
//! an empty body, answers `200` with the `Range` report and sends nothing to the backend.

use ngx_upload_test_support::*;

fn ask(env: &UploadEnv, method: &str, id: &str) -> Response {
    let headers = [("X-Session-ID", id), ("Content-Length", "0")];
    send(
        env,
        &build_request(method, "/upload", &headers, None),
        method == "HEAD",
    )
}

/// Sends a request; a `HEAD` answer has a Content-Length but no body, so only its head is read.
fn send(env: &UploadEnv, request: &[u8], head: bool) -> Response {
    use std::io::{Read, Write};
    if !head {
        return send_raw(env.port(), request);
    }
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", env.port())).unwrap();
    conn.write_all(request).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap() == 1 {
        raw.push(byte[0]);
    }
    // Parse the head alone with the harness: nothing after it.
    let mut text = String::from_utf8(raw).unwrap();
    text = text
        .lines()
        .filter(|l| !l.is_empty() && !l.to_ascii_lowercase().starts_with("content-length:"))
        .collect::<Vec<_>>()
        .join("\r\n");
    text.push_str("\r\nContent-Length: 0\r\n\r\n");
    read_response(&mut text.as_bytes()).unwrap()
}

#[test]
fn status_query_reports_the_ranges_held() {
    let data = test_data(1000, 7);
    let env = UploadEnv::start("");
    for (a, b) in [(0, 99), (500, 599)] {
        assert_eq!(
            env.post(&Segment::piece("status01", &data, a, b)).status,
            201
        );
    }
    let before = env.snapshot();
    for method in ["POST", "HEAD"] {
        let r = ask(&env, method, "status01");
        assert_eq!(r.status, 200, "{method}: {r}");
        assert_eq!(
            r.header("Range"),
            Some("0-99/1000,500-599/1000"),
            "{method}: {r}"
        );
        if method == "POST" {
            assert_eq!(r.text(), "0-99/1000,500-599/1000");
        } else {
            assert!(r.body.is_empty(), "HEAD has no body: {r}");
        }
    }
    assert_same_files(&before, &env.snapshot());
    assert!(
        env.backend.requests().is_empty(),
        "a status query reached the backend"
    );

    // Resuming from the report completes the upload.
    for (a, b) in [(100, 499), (600, 999)] {
        env.post(&Segment::piece("status01", &data, a, b));
    }
    assert_bytes_eq(
        &std::fs::read(env.stored_path("status01")).unwrap(),
        &data,
        "stored file",
    );
}

#[test]
fn status_query_for_an_unknown_session_is_404_and_creates_nothing() {
    let env = UploadEnv::start("");
    let before = env.snapshot();
    let offset = env.nginx.log_len();
    let r = ask(&env, "POST", "nosuch01");
    assert_eq!(r.status, 404, "{r}");
    env.nginx
        .assert_logged(offset, &["unknown session", "nosuch01"]);
    assert_eq!(ask(&env, "HEAD", "nosuch01").status, 404);
    assert_same_files(&before, &env.snapshot());
}

#[test]
fn status_query_checks_the_session_id() {
    let env = UploadEnv::start("");
    let offset = env.nginx.log_len();
    assert_eq!(ask(&env, "POST", "bad/id").status, 400);
    env.nginx.assert_logged(offset, &["session id"]);
    let r = send(&env, &build_request("HEAD", "/upload", &[], None), true);
    assert_eq!(r.status, 400, "{r}");
}
