//! A segment cut short keeps what reached the disk: the state records it (on the disconnect,
//! and every 8 MiB while a long segment streams), a status query reports it, and the client
//! resumes from there. The C module loses the whole segment.
//!
//! Each runs with nginx's body buffer, and with `upload_buffer_size 256k`, where a fast
//! client's full buffers are written on the thread pool while nginx reads on into another.

/// The location settings each test runs with.
const BUFFERS: [&str; 2] = ["", "upload_buffer_size 256k;"];
/// With `upload_state_fsync`, checkpoints wait for the data's fsync.
const DURABLE: &str = "upload_buffer_size 256k; upload_state_fsync on;";

use ngx_upload_test_support::*;
use std::io::Write;

#[test]
fn a_dropped_segment_keeps_what_arrived_and_resumes() {
    for conf in BUFFERS.into_iter().chain([DURABLE]) {
        dropped_segment_keeps_what_arrived(conf);
    }
}

fn dropped_segment_keeps_what_arrived(conf: &str) {
    let data = test_data(2 << 20, 41);
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(conf),
    );
    let id = "dropped1";
    let sent = (1 << 20) + 12345;
    let conn = env.start_segment(&Segment::piece(id, &data, 0, data.len() - 1), sent);
    // Until at least half of what was sent is in the file.
    let stored = env.stored_path(id);
    wait_for(
        "the segment's first half to reach the file",
        WAIT_TIMEOUT,
        || match std::fs::metadata(&stored).map(|m| m.len() as usize) {
            Ok(len) if len >= sent / 2 => Ok(()),
            other => Err(format!("{}: {other:?}", stored.display())),
        },
    );
    drop(conn); // the client goes away mid-segment
    let r = env.wait_report(id, |r| !r.is_empty());
    // The state is recorded before nginx frees the request, whose claim on the bytes goes then.
    env.nginx.wait_idle();
    let (first, last) = single_range(&r);
    assert_eq!(first, 0, "{conf}: {r}");
    assert!(last < sent, "{conf}: claims bytes never sent: {r}");
    assert!(last + 1 >= sent / 2, "{conf}: kept too little: {r}");
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
    for conf in BUFFERS.into_iter().chain([DURABLE]) {
        long_segment_checkpoints(conf);
    }
}

fn long_segment_checkpoints(conf: &str) {
    let data = test_data(24 << 20, 43);
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(conf),
    );
    let id = "longseg1";
    let sent = 17 << 20;
    let mut conn = env.start_segment(&Segment::piece(id, &data, 0, data.len() - 1), sent);
    // The segment is still open: the state already holds at least the first 8 MiB.
    let r = env.wait_report(id, |r| !r.is_empty() && single_range(r).1 + 1 >= 16 << 20);
    let (first, last) = single_range(&r);
    assert_eq!(first, 0, "{conf}: {r}");
    assert!(last + 1 >= 16 << 20 && last < sent, "{conf}: {r}");
    // The segment then finishes normally and completes the upload.
    conn.write_all(&data[sent..]).unwrap();
    let r = read_response(&mut conn).unwrap();
    assert_eq!(r.status, 200, "{conf}: {r}");
    assert_bytes_eq(
        &std::fs::read(env.stored_path(id)).unwrap(),
        &data,
        &format!("uploaded file ({conf})"),
    );
}

#[test]
fn a_stalled_segment_has_what_arrived_written_out() {
    // A fast start grows the body buffer to upload_buffer_size; the client then stalls with
    // less than a buffer's worth waiting in it. Those bytes reach the file (and the buffer
    // shrinks back) while the request is still open, instead of waiting in memory.
    let data = test_data(1 << 20, 44);
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server("upload_buffer_size 256k;"),
    );
    let id = "stalled1";
    let sent = 100 << 10;
    let conn = env.start_segment(&Segment::piece(id, &data, 0, data.len() - 1), sent);
    let path = env.stored_path(id);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let stored = std::fs::read(&path).unwrap_or_default();
        if stored.len() >= sent && stored[..sent] == data[..sent] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "after 10 s only {} of the {sent} bytes sent are in the file",
            stored.len()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(conn);
    let r = env.wait_report(id, |r| !r.is_empty());
    assert_eq!(single_range(&r), (0, sent - 1), "{r}");
}

/// Eight fast segments at once, each dropped right after its client sent part of it, while
/// nginx is still reading and a buffer may be being written on the thread pool: nginx reads
/// what was sent before the end of the connection, so every session keeps all of it, intact,
/// and resumes to a complete, correct file.
#[test]
fn concurrent_fast_segments_dropped_mid_write_all_resume() {
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server("upload_buffer_size 256k;"),
    );
    let data = test_data(4 << 20, 45);
    let sent: Vec<usize> = (1..=8).map(|k| k * 300_000 + 12_345).collect();
    let ids: Vec<String> = (1..=8).map(|k| format!("dropmid{k}")).collect();
    let conns: Vec<_> = ids
        .iter()
        .zip(&sent)
        .map(|(id, &n)| env.start_segment(&Segment::piece(id, &data, 0, data.len() - 1), n))
        .collect();
    drop(conns);
    env.nginx.wait_idle();
    for (id, &n) in ids.iter().zip(&sent) {
        let report = env.report(id);
        assert_eq!(single_range(&report), (0, n - 1), "{id}: {report}");
        let stored = std::fs::read(env.stored_path(id)).unwrap();
        assert_bytes_eq(&stored[..n], &data[..n], id);
        let r = env.post(&Segment::piece(id, &data, n, data.len() - 1));
        assert_eq!(r.status, 200, "{id} resumed at {n}: {r}");
        assert_bytes_eq(&std::fs::read(env.stored_path(id)).unwrap(), &data, id);
    }
}
