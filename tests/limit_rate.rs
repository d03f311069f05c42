//! `upload_limit_rate`: the body is taken no faster than the rate, every byte of it counted
//! (those that came with the request header too) and no allowance ahead, so that a body of
//! `size` bytes is answered after `size / rate` seconds; with nginx timers, the worker keeps
//! serving meanwhile.
//!
//! The timing checks are a wide band computed from the configured rate, 0.85 to 1.25 times
//! `size / rate`, measured from before the client connects to its answer: the module cannot
//! answer before `size / rate` after the request reached it, later than that only by a timer's
//! lateness and the hand-off.

use ngx_upload_test_support::*;
use std::path::Path;
use std::time::{Duration, Instant};

/// Sends `request` from another thread; its answer and how long it took from before the
/// connection to the answer.
fn send_timed(port: u16, request: Vec<u8>) -> std::thread::JoinHandle<(Response, Duration)> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let r = send_raw(port, &request);
        (r, started.elapsed())
    })
}

#[track_caller]
fn assert_paced(took: Duration, size: usize, rate: usize) {
    let nominal = Duration::from_secs_f64(size as f64 / rate as f64);
    eprintln!("{size} bytes at {rate} B/s took {took:?}, nominal {nominal:?}");
    assert!(
        took >= nominal.mul_f64(0.85) && took <= nominal.mul_f64(1.25),
        "{size} bytes at {rate} B/s took {took:?}, outside 0.85..1.25 × {nominal:?}"
    );
}

/// Waits (up to `timeout`) until a file in `store` holds some but not all of `size` bytes.
fn wait_partial_file(store: &Path, size: usize, timeout: Duration) -> Option<u64> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let partial = files_under(store)
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .find(|len| *len > 0 && *len < size as u64);
        if partial.is_some() {
            return partial;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn a_single_request_upload_is_paced() {
    const RATE: usize = 32 * 1024;
    let env = UploadEnv::start(&format!("upload_limit_rate {RATE};"));
    let data = test_data(128 * 1024, 5);
    let upload = Segment {
        disposition: Some("attachment; name=\"f\"; filename=\"paced.bin\""),
        body: &data,
        ..Segment::default()
    };
    let client = send_timed(env.port(), upload.to_request("/upload"));
    // While the upload is paused mid-body, the same (single) worker answers other requests at
    // once.
    let partial = wait_partial_file(&env.nginx.path("store"), data.len(), Duration::from_secs(5));
    assert!(partial.is_some(), "no partly written file in the store");
    let probe = Instant::now();
    let r = get(env.port(), "/");
    assert!(
        probe.elapsed() < Duration::from_secs(1),
        "worker blocked: {r}"
    );
    let (r, took) = client.join().unwrap();
    assert_eq!(r.status, 200, "{r}");
    // 128 KiB at 32 KiB/s is 4 s; unpaced it takes milliseconds.
    assert_paced(took, data.len(), RATE);
    let path = r.echo_value("f.path").expect("path field");
    assert_bytes_eq(&std::fs::read(path).unwrap(), &data, "paced upload");
}

/// A body small enough for nginx to take at once (with the request header, into one body
/// buffer) is paced as well: the answer waits until the body is due.
#[test]
fn a_body_read_at_once_is_paced_too() {
    const RATE: usize = 4 * 1024;
    let env = UploadEnv::start(&format!(
        "upload_limit_rate {RATE}; client_body_buffer_size 64k;"
    ));
    let data = test_data(8 * 1024, 6);
    let upload = Segment {
        disposition: Some("attachment; name=\"f\"; filename=\"small.bin\""),
        body: &data,
        ..Segment::default()
    };
    let (r, took) = send_timed(env.port(), upload.to_request("/upload"))
        .join()
        .unwrap();
    assert_eq!(r.status, 200, "{r}");
    // 8 KiB at 4 KiB/s is 2 s.
    assert_paced(took, data.len(), RATE);
    let path = r.echo_value("f.path").expect("path field");
    assert_bytes_eq(&std::fs::read(path).unwrap(), &data, "paced upload");
}

/// A browser form is paced over its whole body, parts and delimiters included.
#[test]
fn a_form_is_paced() {
    const RATE: usize = 32 * 1024;
    let env = UploadEnv::start_server(
        Nginx::builder(),
        &form_server(&format!("upload_limit_rate {RATE};")),
    );
    let data = test_data(96 * 1024, 7);
    let body = multipart_body(
        "paced",
        &[
            Part::field("title", "slow"),
            Part::file("f", "paced.bin", "application/octet-stream", &data),
        ],
    );
    let request = form_request("/upload", "multipart/form-data; boundary=paced", &body);
    let (r, took) = send_timed(env.port(), request).join().unwrap();
    assert_eq!(r.status, 200, "{r}");
    assert_paced(took, body.len(), RATE);
    let path = r.echo_value("f.path").expect("path field");
    assert_bytes_eq(&std::fs::read(path).unwrap(), &data, "paced form file");
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

/// Over HTTP/2 too (curl, cleartext with prior knowledge): the pauses, the last one before the
/// answer included, run on the stream's timers.
#[test]
fn an_http2_upload_is_paced() {
    const RATE: usize = 32 * 1024;
    let env = UploadEnv::start_server(
        Nginx::builder().http2(),
        &upload_server(&format!("upload_limit_rate {RATE};")),
    );
    let data = test_data(96 * 1024, 8);
    let dir = fresh_dir("h2-paced");
    let file = dir.join("body");
    std::fs::write(&file, &data).unwrap();
    let started = Instant::now();
    let output = std::process::Command::new("curl")
        .args(["-sS", "--http2-prior-knowledge", "--max-time", "60"])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(["-H", "Content-Type: text/plain", "-H", "Expect:"])
        .args([
            "-H",
            "Content-Disposition: form-data; name=\"f\"; filename=\"paced.bin\"",
        ])
        .arg("--data-binary")
        .arg(format!("@{}", file.display()))
        .arg(format!("http://127.0.0.1:{}/upload", env.port()))
        .output()
        .expect("curl (scripts/setup.sh installs it)");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "curl: {}{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.ends_with("\n200 2"),
        "{stdout}\n{}",
        env.nginx.error_log()
    );
    assert_paced(took, data.len(), RATE);
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let path = requests[0].field("f.path").expect("path field");
    assert_bytes_eq(&std::fs::read(path).unwrap(), &data, "paced HTTP/2 upload");
    let _ = std::fs::remove_dir_all(dir);
}
