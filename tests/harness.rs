//! The harness itself: nginx starts, serves, proxies to the echo backend and stops cleanly.
//! `harness_runs_nginx_without_the_module` and `nginx_t_*_without_the_module` need no working
//! module, so they tell a harness problem from a module problem.

use ngx_upload_test_support::*;

#[test]
fn harness_serves_a_plain_location() {
    let nginx = Nginx::start("location / { return 200 ok; }");
    let r = get(nginx.port(), "/");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text(), "ok");
    // The master logs the fork after it returns: maybe after the worker answered.
    nginx.assert_logged(0, &["start worker process"]);
}

#[test]
fn harness_runs_nginx_without_the_module() {
    let mut nginx = Nginx::builder()
        .without_module()
        .worker_processes(2)
        .http("map $uri $answer { default \"mapped\"; }")
        .start(
            "location / { return 200 \"$answer {{PREFIX}}\"; }\n\
             location /empty { add_header X-Case yes always; return 204; }",
        );
    let r = get(nginx.port(), "/x");
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text(), format!("mapped {}", nginx.prefix().display()));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    assert_eq!(r.header("CONTENT-TYPE"), r.header("content-type"));
    let r = get(nginx.port(), "/empty");
    assert_eq!(r.status, 204);
    assert_eq!(r.header("x-case"), Some("yes"));
    let conf = std::fs::read_to_string(nginx.path("nginx.conf")).unwrap();
    assert!(!conf.contains("load_module"), "{conf}");
    assert!(conf.contains("worker_processes 2;"), "{conf}");
    assert_eq!(conf.contains("user root;"), running_as_root(), "{conf}");
    // Two workers, and they go away on stop.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while nginx.worker_pids().len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let workers = nginx.worker_pids();
    assert_eq!(workers.len(), 2, "{workers:?}");
    assert!(nginx.is_running());
    assert!(nginx.stop(), "nginx did not quit on QUIT");
    assert!(!nginx.is_running());
    for pid in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
                // A pid can be reused; it must at least not be our worker any more.
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|c| !c.contains("nginx"))
                    .unwrap_or(true)
            }
        );
    }
}

#[test]
fn harness_proxies_to_the_echo_backend() {
    let backend = backend::spawn("127.0.0.1:0");
    let nginx = Nginx::builder()
        .without_module()
        .backend(&backend)
        .start("location / { proxy_pass http://{{BACKEND}}; }");
    let body = b"--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n\
                 --xx\r\nContent-Disposition: form-data; name=\"up\"; filename=\"f.bin\"\r\n\r\n\
                 \x00\x01\x02\r\n--xx--\r\n";
    let r = post_raw_headers(
        nginx.port(),
        "/path?q=1",
        &[("Content-Type", "multipart/form-data; boundary=xx")],
        body,
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.echo_value("method").as_deref(), Some("POST"));
    assert_eq!(r.echo_value("uri").as_deref(), Some("/path?q=1"));
    assert_eq!(r.echo_value("a").as_deref(), Some("1"));
    assert_eq!(r.echo_value("up").as_deref(), Some("<file f.bin, 3 bytes>"));
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].body, body);
    assert_eq!(requests[0].fields().unwrap().len(), 2);

    let r = request(nginx.port(), "PUT", "/status/409", &[], b"abc");
    assert_eq!(r.status, 409, "{r}");
    assert_eq!(r.echo_value("body-bytes").as_deref(), Some("3"));
}

#[test]
fn harness_reads_every_response_framing() {
    use std::io::Cursor;
    let chunked =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\
                    Range: 0-1/9\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n";
    let r = read_response(&mut Cursor::new(&chunked[..])).unwrap();
    assert_eq!((r.status, r.reason.as_str()), (201, "Created"));
    assert_eq!(r.header("range"), Some("0-1/9"));
    assert_eq!(r.body, b"abcde");
    let close = b"HTTP/1.0 200 OK\r\nX: y\r\n\r\nuntil close";
    assert_eq!(
        read_response(&mut Cursor::new(&close[..])).unwrap().body,
        b"until close"
    );
    let short = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc";
    assert!(read_response(&mut Cursor::new(&short[..])).is_err());
    assert!(read_response(&mut Cursor::new(&b"garbage\r\n\r\n"[..])).is_err());

    let seg = Segment::piece("sid1", b"0123456789", 2, 4);
    let raw = String::from_utf8(seg.to_request("/upload")).unwrap();
    assert_eq!(
        raw,
        "POST /upload HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 3\r\n\
         Content-Type: text/plain\r\n\
         Content-Disposition: form-data; name=\"f\"; filename=\"big.TXT\"\r\n\
         X-Content-Range: bytes 2-4/10\r\nX-Session-ID: sid1\r\n\r\n234"
    );
    let plain = Segment {
        style: HeaderStyle::Plain,
        field_name: None,
        content_type: None,
        ..seg
    };
    let raw = String::from_utf8(plain.to_request("/u")).unwrap();
    assert!(raw.contains("\r\nContent-Disposition: attachment; filename=\"big.TXT\"\r\n"));
    assert!(raw.contains("\r\nContent-Range: bytes 2-4/10\r\nSession-ID: sid1\r\n"));
    assert!(!raw.contains("Content-Type"));

    assert_eq!(segments(10, 4), [(0, 3), (4, 7), (8, 9)]);
    assert_eq!(test_data(100, 7), test_data(100, 7));
    assert_ne!(test_data(100, 7), test_data(100, 8));
}

#[test]
fn nginx_t_accepts_a_good_config_and_rejects_a_bad_one_without_the_module() {
    let builder = Nginx::builder().without_module();
    let (ok, out) = builder.test_config("location / { return 200; }");
    assert!(ok, "{out}");
    assert!(out.contains("test is successful"), "{out}");
    let (ok, out) = builder.test_config("location / { no_such_directive on; }");
    assert!(!ok, "{out}");
    assert!(
        out.contains("unknown directive \"no_such_directive\""),
        "{out}"
    );
}

#[test]
fn nginx_t_loads_the_module() {
    let (ok, out) = nginx_t_server("location / { return 200; }");
    assert!(ok, "the module does not load:\n{out}");
}

/// A failure to start names the problem and shows error.log.
#[test]
fn a_config_nginx_rejects_fails_the_start_with_the_log() {
    let result = std::panic::catch_unwind(|| {
        Nginx::builder()
            .without_module()
            .start("location / { no_such_directive; }")
    });
    let err = result.err().expect("nginx started with a bad config");
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("nginx did not start"), "{message}");
    assert!(message.contains("unknown directive"), "{message}");
}
