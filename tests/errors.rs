//! Requests the module refuses: each gets its status, a line in error.log that names the
//! problem, and changes no stored file.

use ngx_upload_test_support::*;

/// Sends `request`, expects `status`, a new error.log line holding one of `needles`, and the
/// store and state directories unchanged.
#[track_caller]
fn expect_refusal(env: &UploadEnv, request: &[u8], status: u16, needles: &[&str]) -> Response {
    let before = env.snapshot();
    let r = env.expect_status(request, status, needles);
    // What the request's cleanup does (after its answer went out) is done once nginx has
    // freed it.
    env.nginx.wait_idle();
    assert_same_files(&before, &env.snapshot());
    assert!(
        env.backend.requests().is_empty(),
        "a refused request reached the backend"
    );
    r
}

fn segment_request(seg: &Segment<'_>) -> Vec<u8> {
    seg.to_request("/upload")
}

/// A session with its first segment stored, so refusals can be checked against real files.
fn env_with_a_session(id: &str, data: &[u8]) -> UploadEnv {
    let env = UploadEnv::start("");
    assert_progress(
        &env.post(&Segment::piece(id, data, 0, 99)),
        &format!("0-99/{}", data.len()),
    );
    assert!(env.stored_path(id).is_file());
    env
}

#[test]
fn methods_other_than_post_get_405() {
    let data = test_data(1000, 30);
    let env = env_with_a_session("method01", &data);
    expect_refusal(
        &env,
        &build_request("GET", "/upload", &[], None),
        405,
        &["method", "GET"],
    );
    let seg = Segment::piece("method01", &data, 100, 199);
    let headers = seg.headers();
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    expect_refusal(
        &env,
        &build_request("PUT", "/upload", &headers, Some(seg.body)),
        405,
        &["method", "PUT"],
    );
}

#[test]
fn malformed_multipart_gets_400_and_leaves_no_file() {
    let env = UploadEnv::start("");
    let part = b"--x\r\nContent-Disposition: form-data; name=\"a\"; filename=\"a.txt\"\r\n\r\nhi";
    for (content_type, body, mentions) in [
        ("multipart/form-data", &part[..], &["boundary"][..]),
        (
            "multipart/form-data; boundary=x",
            &part[..],
            &["multipart"][..],
        ),
        (
            "multipart/form-data; boundary=x",
            &b"garbage\r\n--y\r\n"[..],
            &["multipart"][..],
        ),
    ] {
        expect_refusal(
            &env,
            &build_request(
                "POST",
                "/upload",
                &[("Content-Type", content_type)],
                Some(body),
            ),
            400,
            mentions,
        );
    }
}

#[test]
fn bad_ranges_get_416() {
    let data = test_data(1000, 31);
    let id = "ranges01";
    let env = env_with_a_session(id, &data);
    for (range, len) in [
        ("items 100-199/1000", 100),  // unit is not bytes
        ("bytes 199-100/1000", 100),  // end before start
        ("bytes 900-1000/1000", 101), // end at total
        ("bytes 900-1099/1000", 200), // end beyond total
        ("bytes 100-199/1000", 50),   // range length is not the body length
        ("bytes 100-149/1000", 100),  // …either way
    ] {
        let seg = Segment {
            range: None,
            extra_headers: vec![("X-Content-Range", range)],
            body: &data[..len],
            ..Segment::piece(id, &data, 0, 0)
        };
        expect_refusal(&env, &segment_request(&seg), 416, &["range"]);
    }
}

#[test]
fn bad_session_ids_get_400() {
    let data = test_data(1000, 32);
    let env = env_with_a_session("sessid01", &data);
    let long = "a".repeat(129);
    for id in ["", long.as_str(), "a/b", "../x", "a.b", "a b", "sess%2f"] {
        let seg = Segment {
            session_id: None,
            extra_headers: vec![("X-Session-ID", id)],
            ..Segment::piece("unused", &data, 100, 199)
        };
        expect_refusal(&env, &segment_request(&seg), 400, &["session"]);
    }
    // 128 bytes is still fine.
    let max = "b".repeat(128);
    assert_progress(&env.post(&Segment::piece(&max, &data, 0, 9)), "0-9/1000");
}

#[test]
fn another_total_for_a_session_gets_409() {
    let data = test_data(1000, 33);
    let id = "conflict";
    let env = env_with_a_session(id, &data);
    let other = test_data(2000, 33);
    let seg = Segment::piece(id, &other, 100, 199);
    expect_refusal(&env, &segment_request(&seg), 409, &["total", "size"]);
    // The session goes on with its own total.
    assert_progress(
        &env.post(&Segment::piece(id, &data, 100, 199)),
        "0-199/1000",
    );
}

#[test]
fn a_file_larger_than_upload_max_file_size_gets_413() {
    let env = UploadEnv::start("upload_max_file_size 1k;");
    let data = test_data(2000, 34);
    expect_refusal(
        &env,
        &segment_request(&Segment::piece("toolarge", &data, 0, 99)),
        413,
        &["upload_max_file_size", "too large", "larger"],
    );
    // A raw upload too.
    let seg = Segment::whole(&data);
    expect_refusal(
        &env,
        &segment_request(&seg),
        413,
        &["upload_max_file_size", "too large", "larger"],
    );
    // Within the limit is fine.
    let small = test_data(1024, 35);
    let r = env.post(&Segment::piece("smallok1", &small, 0, 1023));
    env.assert_handed_off(
        &r,
        "f",
        "big.TXT",
        Some(&env.stored_path("smallok1")),
        &small,
    );
}

#[test]
fn an_unwritable_store_gets_500() {
    let mut env = UploadEnv::start("");
    // Where the store should be, put a regular file: no directory can be made below it.
    let store = env.nginx.path("store");
    let _ = std::fs::remove_dir_all(&store);
    std::fs::write(&store, b"not a directory").unwrap();
    // nginx logs failed file operations at [crit]; that is the point here.
    env.nginx.tolerate_log("store");
    let data = test_data(1000, 36);
    expect_refusal(
        &env,
        &segment_request(&Segment::piece("unwrite1", &data, 0, 99)),
        500,
        &["not a directory", "store", "failed", "cannot"],
    );
    assert_eq!(std::fs::read(&store).unwrap(), b"not a directory");
}

#[test]
fn malformed_content_disposition_gets_400() {
    let data = test_data(1000, 37);
    let env = env_with_a_session("dispo001", &data);
    for disposition in [
        "attachment; filename=\"open",
        "bogus; filename=\"a.txt\"",
        "attachment filename=a.txt",
        "attachment; filename",
        "; filename=a.txt",
    ] {
        let seg = Segment {
            disposition: Some(disposition),
            ..Segment::piece("dispo001", &data, 100, 199)
        };
        expect_refusal(&env, &segment_request(&seg), 400, &["disposition"]);
    }
}
