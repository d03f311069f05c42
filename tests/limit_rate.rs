//! `upload_limit_rate`: the body is read no faster than the rate (after a one-second allowance,
//! as nginx-upload-module paces it), with nginx timers: the worker keeps serving meanwhile.

use ngx_upload_test_support::*;
use std::time::{Duration, Instant};

const RATE: usize = 32 * 1024;

#[test]
fn a_single_request_upload_is_paced() {
    let env = UploadEnv::start(&format!("upload_limit_rate {RATE};"));
    let data = test_data(128 * 1024, 5);
    let upload = Segment {
        disposition: Some("attachment; name=\"f\"; filename=\"paced.bin\""),
        body: &data,
        ..Segment::default()
    };
    let port = env.port();
    let request = upload.to_request("/upload");
    let started = Instant::now();
    let client = std::thread::spawn(move || send_raw(port, &request));
    // Once the allowance of one second's worth is in the file the upload is paced (its reads
    // paused on a timer, for seconds): meanwhile the same (single) worker answers other
    // requests at once.
    let store = env.nginx.path("store");
    wait_for("the upload to use its allowance", WAIT_TIMEOUT, || {
        let sizes: Vec<u64> = files_under(&store)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .collect();
        if sizes.iter().any(|&len| len >= RATE as u64) {
            Ok(())
        } else {
            Err(format!("files in the store of {sizes:?} bytes"))
        }
    });
    let probe = Instant::now();
    let r = get(port, "/");
    assert!(
        probe.elapsed() < Duration::from_secs(1),
        "worker blocked: {r}"
    );
    assert!(
        !client.is_finished(),
        "the upload was over before the probe"
    );
    let r = client.join().unwrap();
    let took = started.elapsed();
    assert_eq!(r.status, 200, "{r}");
    // 128 KiB at 32 KiB/s with one second ahead is 3 s, less the last read (up to one body
    // buffer past the allowance); unpaced it takes milliseconds.
    assert!(took >= Duration::from_millis(2000), "not paced: {took:?}");
    assert!(took < Duration::from_secs(20), "stalled: {took:?}");
    let path = r.echo_value("f.path").expect("path field");
    assert_bytes_eq(&std::fs::read(path).unwrap(), &data, "paced upload");
}

#[test]
fn without_a_rate_the_same_upload_is_not_paced() {
    let env = UploadEnv::start("");
    let data = test_data(128 * 1024, 5);
    let upload = Segment {
        disposition: Some("attachment; name=\"f\"; filename=\"fast.bin\""),
        body: &data,
        ..Segment::default()
    };
    let started = Instant::now();
    let r = send_raw(env.port(), &upload.to_request("/upload"));
    assert_eq!(r.status, 200, "{r}");
    assert!(started.elapsed() < Duration::from_millis(2000));
}
