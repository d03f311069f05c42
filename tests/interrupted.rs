//! A segment cut short keeps what reached the disk: the state records it (on the disconnect,
//! and every 8 MiB while a long segment streams), a status query reports it, and the client
//! resumes from there. The C module loses the whole segment.

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// The session's report from a status query.
fn report(env: &UploadEnv, id: &str) -> String {
    let headers = [("X-Session-ID", id), ("Content-Length", "0")];
    let r = send_raw(
        env.port(),
        &build_request("POST", "/upload", &headers, None),
    );
    assert_eq!(r.status, 200, "{r}");
    r.header("Range").unwrap_or_default().to_string()
}

/// Polls the report until `done` accepts it.
fn wait_report(env: &UploadEnv, id: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = report(env, id);
        if done(&r) || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `first-last/total` → (first, last).
fn single_range(report: &str) -> (usize, usize) {
    let (span, _) = report.split_once('/').expect("a range");
    assert!(!report.contains(','), "one range expected: {report}");
    let (a, b) = span.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// Sends the head of a segment for all of `data` and the first `sent` bytes of its body.
fn start_segment(env: &UploadEnv, id: &str, data: &[u8], sent: usize) -> TcpStream {
    let seg = Segment::piece(id, data, 0, data.len() - 1);
    let request = seg.to_request("/upload");
    let head_len = request.len() - data.len();
    let mut conn = TcpStream::connect(("127.0.0.1", env.port())).unwrap();
    conn.set_nodelay(true).unwrap();
    conn.write_all(&request[..head_len + sent]).unwrap();
    conn
}

#[test]
fn a_dropped_segment_keeps_what_arrived_and_resumes() {
    let data = test_data(2 << 20, 41);
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(""),
    );
    let id = "dropped1";
    let sent = (1 << 20) + 12345;
    let conn = start_segment(&env, id, &data, sent);
    std::thread::sleep(Duration::from_millis(200));
    drop(conn); // the client goes away mid-segment
    let r = wait_report(&env, id, |r| !r.is_empty());
    let (first, last) = single_range(&r);
    assert_eq!(first, 0, "{r}");
    assert!(last < sent, "claims bytes never sent: {r}");
    assert!(last + 1 >= sent / 2, "kept too little: {r}");
    let stored = std::fs::read(env.stored_path(id)).unwrap();
    assert_bytes_eq(&stored[..=last], &data[..=last], "bytes the state claims");

    // Resuming from the report completes the upload.
    let rest = Segment::piece(id, &data, last + 1, data.len() - 1);
    let r = env.post(&rest);
    assert_eq!(r.status, 200, "{r}");
    assert_bytes_eq(
        &std::fs::read(env.stored_path(id)).unwrap(),
        &data,
        "resumed file",
    );
}

#[test]
fn a_long_segment_checkpoints_while_it_streams() {
    let data = test_data(24 << 20, 43);
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(""),
    );
    let id = "longseg1";
    let sent = 17 << 20;
    let mut conn = start_segment(&env, id, &data, sent);
    // The segment is still open: the state already holds at least the first 8 MiB.
    let r = wait_report(&env, id, |r| {
        !r.is_empty() && single_range(r).1 + 1 >= 16 << 20
    });
    let (first, last) = single_range(&r);
    assert_eq!(first, 0, "{r}");
    assert!(last + 1 >= 16 << 20 && last < sent, "{r}");
    // The segment then finishes normally and completes the upload.
    conn.write_all(&data[sent..]).unwrap();
    let r = read_response(&mut conn).unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_bytes_eq(
        &std::fs::read(env.stored_path(id)).unwrap(),
        &data,
        "uploaded file",
    );
}
