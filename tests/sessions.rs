//! Sessions under concurrency, retries and limits: a segment overlapping one in flight is
//! refused, exactly one request hands a complete session off, a failed hand-off can be retried,
//! the number of ranges is capped, untouched sessions expire, and hashes are carried in the
//! state file.

use ngx_upload_test_support::*;
use std::io::Write;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

#[test]
fn a_segment_overlapping_one_in_flight_gets_409_and_changes_nothing() {
    let data = test_data(300_000, 61);
    let env = UploadEnv::start_server(Nginx::builder().worker_processes(2), &upload_server(""));
    let id = "inflight1";
    // Bytes 0-99999 are on their way: half the body is sent, the request stays open.
    let mut held = env.start_segment(&Segment::piece(id, &data, 0, 99_999), 50_000);
    // Until its request (in either worker) has opened the session and claimed its bytes.
    env.wait_in_flight(id, 0, 99_999);
    let before = env.snapshot();
    for (a, b) in [(50_000, 149_999), (99_999, 99_999), (0, 10)] {
        env.expect_status(
            &Segment::piece(id, &data, a, b).to_request("/upload"),
            409,
            &["overlap a segment another request is still writing"],
        );
    }
    assert_same_files(&before, &env.snapshot());
    // Segments beside it are taken while it is in flight.
    assert_progress(
        &env.post(&Segment::piece(id, &data, 100_000, 199_999)),
        "100000-199999/300000",
    );
    assert_progress(
        &env.post(&Segment::piece(id, &data, 200_000, 299_999)),
        "100000-299999/300000",
    );
    // The held segment ends and completes the file.
    held.write_all(&data[50_000..100_000]).unwrap();
    let r = read_response(&mut held).unwrap();
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

#[test]
fn last_segments_finishing_together_hand_off_exactly_once() {
    let env = UploadEnv::start_server(Nginx::builder().worker_processes(2), &upload_server(""));
    let rounds = 12;
    let mut two_handoffs = 0;
    for round in 0..rounds {
        let data = test_data(64_000, 70 + round);
        let id = format!("together{round}");
        let halves = [(0, 31_999), (32_000, 63_999)];
        // Both segments are sent but for their last byte, on two connections...
        let mut conns: Vec<_> = halves
            .iter()
            .map(|&(a, b)| env.start_segment(&Segment::piece(&id, &data, a, b), b - a))
            .collect();
        // ...then both last bytes at the same moment.
        let barrier = Arc::new(Barrier::new(2));
        let answers: Vec<Response> = std::thread::scope(|scope| {
            let handles: Vec<_> = conns
                .iter_mut()
                .zip(halves)
                .map(|(conn, (_, b))| {
                    let barrier = barrier.clone();
                    let last = data[b];
                    scope.spawn(move || {
                        barrier.wait();
                        conn.write_all(&[last]).unwrap();
                        read_response(conn).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        let handed_off = answers.iter().filter(|r| r.status == 200).count();
        assert_eq!(handed_off, 1, "round {round}: {statuses:?}");
        // The other one saw the session incomplete (201), or complete and taken (409).
        assert!(
            statuses.iter().all(|s| [200, 201, 409].contains(s)),
            "round {round}: {statuses:?}"
        );
        two_handoffs += usize::from(statuses.contains(&409));
        let requests = env.backend.requests();
        env.backend.clear();
        assert_eq!(requests.len(), 1, "round {round}: {requests:#?}");
        assert_bytes_eq(
            &std::fs::read(env.stored_path(&id)).unwrap(),
            &data,
            "assembled file",
        );
    }
    eprintln!("{rounds} rounds: both segments found the file complete in {two_handoffs}");
}

/// `upload_pass` chooses the hand-off by the `to` argument: the backend, the backend answering
/// 502, or nothing listening.
fn retry_server() -> String {
    r#"
    location /upload {
        upload_pass $handoff;
        upload_resumable on;
        upload_store {{PREFIX}}/store 1;
        upload_state_store {{PREFIX}}/state 1;
        upload_set_form_field $upload_field_name.path "$upload_tmp_path";
        upload_aggregate_form_field $upload_field_name.size "$upload_file_size";
    }
    location @backend { proxy_pass http://{{BACKEND}}; }
    location /failing { internal; proxy_pass http://{{BACKEND}}/status/502; }
    location /down { internal; proxy_pass http://127.0.0.1:1; }
    "#
    .to_string()
}

#[test]
fn a_failed_hand_off_can_be_retried() {
    let env = UploadEnv::start_server(
        Nginx::builder()
            .http("map $arg_to $handoff { default @backend; failing /failing; down /down; }")
            .tolerate_log("connect() failed"),
        &retry_server(),
    );
    let data = test_data(150_000, 81);
    let id = "retry01";
    let uri = |to: &str| format!("/upload?to={to}");
    let send = |uri: &str, a, b| post_segment(env.port(), uri, &Segment::piece(id, &data, a, b));
    assert_eq!(send(&uri("failing"), 0, 99_999).status, 201);
    // The last segment completes the file but the backend fails: the session stays.
    let r = send(&uri("failing"), 100_000, 149_999);
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(env.report(id), "0-149999/150000");
    // The failed hand-off's claim on the session goes when its request is freed, just after
    // the 502 went out (until then a segment gets 409): wait for that.
    env.nginx.wait_idle();
    // Nothing listening: the session stays too.
    let r = send(&uri("down"), 100_000, 149_999);
    assert_eq!(r.status, 502, "{r}");
    assert_eq!(env.report(id), "0-149999/150000");
    env.nginx.wait_idle();
    // Retrying any segment hands the file off again, now to a working backend.
    let r = send("/upload", 0, 99_999);
    assert_eq!(r.status, 200, "{r}\n{}", env.nginx.error_log());
    let accepted: Vec<_> = env
        .backend
        .requests()
        .into_iter()
        .filter(|q| q.path() == "/upload")
        .collect();
    assert_eq!(accepted.len(), 1);
    let fields = accepted[0].fields().unwrap();
    let path = fields
        .iter()
        .find(|f| f.name == "f.path")
        .unwrap()
        .value_str();
    assert_bytes_eq(&std::fs::read(path).unwrap(), &data, "handed-off file");
    // Accepted by the backend: the session is over (its state goes once the request ends).
    let deadline = Instant::now() + Duration::from_secs(5);
    while env.status_query(id).0 != 404 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(env.status_query(id).0, 404);
}

#[test]
fn the_number_of_ranges_is_capped() {
    let env = UploadEnv::start(
        "upload_state_max_ranges 3;\n    upload_aggregate_form_field md5 $upload_file_md5;",
    );
    let data = test_data(100_000, 91);
    let id = "capped01";
    for (a, b) in [(0, 9_999), (20_000, 29_999), (40_000, 49_999)] {
        assert_eq!(env.post(&Segment::piece(id, &data, a, b)).status, 201);
    }
    let before = env.snapshot();
    env.expect_status(
        &Segment::piece(id, &data, 60_000, 69_999).to_request("/upload"),
        416,
        &["upload_state_max_ranges"],
    );
    assert_same_files(&before, &env.snapshot());
    // Segments that fill gaps or extend a range never add one.
    for (a, b) in [
        (10_000, 19_999),
        (50_000, 69_999),
        (30_000, 39_999),
        (70_000, 99_999),
    ] {
        let r = env.post(&Segment::piece(id, &data, a, b));
        assert!([200, 201].contains(&r.status), "{r}");
    }
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    let md5 = requests[0].fields().unwrap();
    let md5 = md5.iter().find(|f| f.name == "md5").unwrap().value_str();
    assert_eq!(md5, digest_of_bytes("md5sum", &data));
}

#[test]
fn untouched_sessions_expire() {
    let env = UploadEnv::start("upload_state_expire 2s;");
    let data = test_data(10_000, 101);
    for id in ["stale01", "fresh01"] {
        assert_eq!(env.post(&Segment::piece(id, &data, 0, 999)).status, 201);
    }
    let stale = env.stored_path("stale01");
    assert!(stale.exists());
    // fresh01 gets a segment every half second; stale01 nothing.
    let start = Instant::now();
    let mut next = 1000;
    while stale.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        let r = env.post(&Segment::piece("fresh01", &data, next, next + 499));
        assert_eq!(r.status, 201, "{r}");
        next += 500;
    }
    let waited = start.elapsed();
    assert!(!stale.exists(), "not swept after {waited:?}");
    assert!(
        waited >= Duration::from_secs(1),
        "swept too early: {waited:?}"
    );
    eprintln!("the stale session was swept {waited:?} after its last segment");
    assert_eq!(env.status_query("stale01").0, 404);
    assert_eq!(env.report("fresh01"), format!("0-{}/10000", next - 1));
    env.nginx
        .assert_logged(0, &["removed 1 expired sessions from"]);
}

#[test]
fn in_order_segments_carry_their_hashes_in_the_state_file() {
    let env = UploadEnv::start(
        "upload_state_fsync on;\n    upload_aggregate_form_field sha256 $upload_file_sha256;",
    );
    let data = test_data(1 << 20, 111);
    let id = "hashstate1";
    let cuts = segments(data.len(), 256 << 10);
    for &(a, b) in &cuts[..3] {
        assert_eq!(env.post(&Segment::piece(id, &data, a, b)).status, 201);
    }
    // The state file says how far the hashes got: every byte so far, hashed as it streamed.
    let state_file = env
        .nginx
        .path("state")
        .join("e")
        .join(format!("{id}.state"));
    let state = std::fs::read_to_string(&state_file).unwrap();
    assert!(
        state.contains(&format!("\nhash 1 upto={} ", 3 * (256 << 10))),
        "{state}"
    );
    let (a, b) = cuts[3];
    let r = env.post(&Segment::piece(id, &data, a, b));
    let fields = env.single_handoff(r.status, &r.text(), &r);
    let sha = fields
        .iter()
        .find(|f| f.name == "sha256")
        .unwrap()
        .value_str();
    assert_eq!(sha, digest_of_bytes("sha256sum", &data));
}
