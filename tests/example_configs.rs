//! The example configurations in `nginx-conf/`: every one passes `nginx -t` once its
//! placeholders are filled in, and each runs for real, unchanged: an upload end to end through
//! it (resumable, browser form, FastCGI, TLS with HTTP/2, the rate-limited public endpoint, tus
//! with a real tus client).

use conf_file::{self_signed_cert, ConfNginx, Placeholders};
use ngx_upload_test_support::conf_file;
use ngx_upload_test_support::fastcgi;
use ngx_upload_test_support::flaky;
use ngx_upload_test_support::pyclient;
use ngx_upload_test_support::tus as tus_kit;
use ngx_upload_test_support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn conf_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("nginx-conf")
}

fn example(name: &str) -> PathBuf {
    conf_dir().join(name)
}

/// Placeholders for `backend`, with a fresh self-signed certificate as `{{CERT}}`/`{{KEY}}`.
fn placeholders(backend: &str) -> Placeholders {
    let mut values = Placeholders::new(backend);
    let certs = values.prefix.join("tls");
    std::fs::create_dir_all(&certs).unwrap();
    values.cert = Some(self_signed_cert(&certs));
    values
}

/// Every `nginx-conf/*.conf` passes `nginx -t` (new files are covered as they are added). The
/// output is printed: warnings, such as nginx 1.25.1+ calling `listen … http2` deprecated,
/// are allowed.
#[test]
fn every_example_config_passes_nginx_t() {
    let mut confs: Vec<PathBuf> = std::fs::read_dir(conf_dir())
        .expect("nginx-conf/")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    confs.sort();
    assert!(!confs.is_empty(), "no nginx-conf/*.conf");
    let cert_dir = fresh_dir("example-tls");
    let cert = self_signed_cert(&cert_dir);
    let mut failures = Vec::new();
    for conf in &confs {
        let mut values = Placeholders::new(&format!("127.0.0.1:{}", free_port()));
        values.cert = Some(cert.clone());
        let name = conf.display().to_string();
        let filled = values.fill(&std::fs::read_to_string(conf).unwrap(), &name);
        let path = values.prefix.join("nginx.conf");
        std::fs::write(&path, filled).unwrap();
        let (ok, output) = nginx_t(&path);
        println!(
            "{name}: nginx -t {}\n{output}",
            if ok { "ok" } else { "FAILED" }
        );
        if ok {
            let _ = std::fs::remove_dir_all(&values.prefix);
        } else {
            failures.push(format!("{name}:\n{output}"));
        }
    }
    let _ = std::fs::remove_dir_all(cert_dir);
    assert!(
        failures.is_empty(),
        "nginx -t failed:\n{}",
        failures.join("\n")
    );
}

/// A status query (`POST` with the session id and an empty body) on `port`.
fn status_query(port: u16, id: &str) -> Response {
    send_raw(
        port,
        &build_request(
            "POST",
            "/upload",
            &[("X-Session-ID", id), ("Content-Length", "0")],
            None,
        ),
    )
}

/// The value of hand-off field `name`.
#[track_caller]
fn field(fields: &[backend::Field], name: &str) -> String {
    fields
        .iter()
        .find(|f| f.name == name)
        .map(backend::Field::value_str)
        .unwrap_or_else(|| panic!("no field {name}: {fields:#?}"))
}

/// resumable.conf: a status query, segments out of order with their `201` reports, then the
/// hand-off naming the stored file. A first hand-off the backend fails (503) keeps the
/// session (`upload_cleanup` spares 5xx): the last byte sent again hands the file off.
#[test]
fn resumable_conf_resumes_and_retries_a_failed_handoff() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(503));
    let mut nginx = ConfNginx::start(
        &example("resumable.conf"),
        &Placeholders::new(&relay.addr()),
    );
    let port = nginx.port;
    let data = test_data(300_001, 71);
    let total = data.len();
    let id = "example01";

    assert_eq!(status_query(port, id).status, 404);
    let r = post_segment(
        port,
        "/upload",
        &Segment::piece(id, &data, 200_000, total - 1),
    );
    assert_progress(&r, &format!("200000-300000/{total}"));
    let r = status_query(port, id);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("range"), Some(&*format!("200000-300000/{total}")));

    // The completing segment: the backend (through the relay) fails with 503.
    let r = post_segment(port, "/upload", &Segment::piece(id, &data, 0, 199_999));
    assert_eq!(r.status, 503, "{r}");
    assert!(backend.requests().is_empty());
    // The file is complete and still there; one byte runs the hand-off again. The failed
    // hand-off's claim on the session is released when its request is freed, just after the
    // 503 went out: until then the byte gets 409 ("another request is handing it off"),
    // which a client retries.
    let r = status_query(port, id);
    assert_eq!(
        r.header("range"),
        Some(&*format!("0-300000/{total}")),
        "{r}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let r = loop {
        let r = post_segment(
            port,
            "/upload",
            &Segment::piece(id, &data, total - 1, total - 1),
        );
        if r.status != 409 || std::time::Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(relay.connections(), 2);
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(r.text(), backend::echo_body(&requests[0]));
    let fields = requests[0].fields().unwrap();
    assert_eq!(field(&fields, "f.name"), "big.TXT");
    assert_eq!(field(&fields, "f.content_type"), "text/plain");
    assert_eq!(field(&fields, "f.size"), total.to_string());
    let path = PathBuf::from(field(&fields, "f.path"));
    assert_eq!(path, nginx.path("store").join("1").join(id));
    assert_bytes_eq(&std::fs::read(&path).unwrap(), &data, "the handed-off file");
    // Accepted: the session is over. The module forgets it when the request is freed, just
    // after the answer went out, so a query at once may still find it: wait for the 404.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let r = status_query(port, id);
        if r.status == 404 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session stays: {r}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nginx.stop_and_check();
}

/// multipart-form.conf: the test form is served; a form with two files and three fields
/// reaches the backend as the listed fields plus each file's name, type, path, MD5 and size,
/// `files[]` tamed to `files`, the unlisted field dropped.
#[test]
fn multipart_form_conf_stores_files_and_passes_listed_fields() {
    let backend = backend::spawn("127.0.0.1:0");
    let values = Placeholders::new(&format!("127.0.0.1:{}", backend.port()));
    let mut nginx = ConfNginx::start(&example("multipart-form.conf"), &values);
    let port = nginx.port;

    let page = get(port, "/form.html");
    assert_eq!(page.status, 200, "{page}");
    assert!(
        page.text().contains(r#"enctype="multipart/form-data""#),
        "{page}"
    );

    let a = test_data(150_000, 72);
    let b = test_data(3_000, 73);
    let body = multipart_body(
        "XyZbOuNdArY",
        &[
            Part::field("title", "holiday"),
            Part::field("secret", "dropped"),
            Part::file("file", "a.txt", "text/plain", &a),
            Part::field("description", "two files"),
            Part::file("files[]", "b.bin", "application/octet-stream", &b),
        ],
    );
    let r = send_raw(
        port,
        &form_request(
            "/upload",
            "multipart/form-data; boundary=XyZbOuNdArY",
            &body,
        ),
    );
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(r.text(), backend::echo_body(&requests[0]));
    let fields = requests[0].fields().unwrap();
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert!(!names.contains(&"secret"), "{names:?}");
    assert_eq!(field(&fields, "title"), "holiday");
    assert_eq!(field(&fields, "description"), "two files");
    for (prefix, name, content_type, data) in [
        ("file", "a.txt", "text/plain", &a),
        ("files", "b.bin", "application/octet-stream", &b),
    ] {
        assert_eq!(field(&fields, &format!("{prefix}.name")), name);
        assert_eq!(
            field(&fields, &format!("{prefix}.content_type")),
            content_type
        );
        assert_eq!(
            field(&fields, &format!("{prefix}.size")),
            data.len().to_string()
        );
        assert_eq!(
            field(&fields, &format!("{prefix}.md5")),
            digest_of_bytes("md5sum", data)
        );
        let path = PathBuf::from(field(&fields, &format!("{prefix}.path")));
        assert!(path.starts_with(nginx.path("store")), "{}", path.display());
        assert_bytes_eq(&std::fs::read(&path).unwrap(), data, name);
    }
    nginx.stop_and_check();
}

/// fastcgi-php.conf: a resumable upload handed to a FastCGI responder (as PHP-FPM would get
/// it): the usual CGI params, `CONTENT_TYPE`/`CONTENT_LENGTH` describing the generated form,
/// the query string, and a form naming the stored file.
#[test]
fn fastcgi_php_conf_hands_off_to_a_fastcgi_application() {
    let fcgi = fastcgi::FastCgi::start();
    let mut nginx = ConfNginx::start(
        &example("fastcgi-php.conf"),
        &Placeholders::new(&fcgi.addr()),
    );
    let port = nginx.port;
    let data = test_data(200_000, 74);
    let id = "fastcgi01";
    let r = post_segment(
        port,
        "/upload?album=7",
        &Segment::piece(id, &data, 0, 99_999),
    );
    assert_progress(&r, "0-99999/200000");
    let r = post_segment(
        port,
        "/upload?album=7",
        &Segment::piece(id, &data, 100_000, 199_999),
    );
    assert_eq!(r.status, 200, "{r}\n{}", nginx.error_log());
    let requests = fcgi.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let req = &requests[0];
    assert!(
        r.text()
            .contains("SCRIPT_FILENAME = /var/www/app/upload.php"),
        "{r}"
    );
    assert_eq!(req.param("REQUEST_METHOD"), Some("POST"));
    assert_eq!(req.param("QUERY_STRING"), Some("album=7"));
    assert_eq!(req.param("GATEWAY_INTERFACE"), Some("CGI/1.1"));
    let content_type = req.param("CONTENT_TYPE").unwrap_or_default();
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type:?}"
    );
    assert_eq!(
        req.param("CONTENT_LENGTH"),
        Some(&*req.stdin.len().to_string())
    );
    let fields = backend::parse_multipart(content_type, &req.stdin).expect("a form");
    assert_eq!(field(&fields, "f.name"), "big.TXT");
    assert_eq!(field(&fields, "f.size"), "200000");
    let path = PathBuf::from(field(&fields, "f.path"));
    assert_eq!(path, nginx.path("store").join("1").join(id));
    assert_bytes_eq(&std::fs::read(&path).unwrap(), &data, "the handed-off file");
    nginx.stop_and_check();
}

/// Runs curl over HTTPS (HTTP/2 if it negotiates it) with the test CA: returns
/// `(http_version, status, body)`.
fn curl_tls(url: &str, cacert: &Path, headers: &[&str], body: &Path) -> (String, u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--http2", "--max-time", "60", "--cacert"])
        .arg(cacert)
        .args(["-w", "\n%{http_version} %{http_code}"]);
    for h in headers {
        cmd.args(["-H", h]);
    }
    cmd.arg("--data-binary").arg(format!("@{}", body.display()));
    let output = cmd
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "curl failed: {}\n{text}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (body, last) = text.rsplit_once('\n').unwrap();
    let (version, status) = last.split_once(' ').unwrap();
    (
        version.to_string(),
        status.parse().unwrap(),
        body.to_string(),
    )
}

/// tls-http2.conf: segments over HTTP/2 and TLS (curl, verifying the certificate), then the
/// Python client over HTTPS/1.1 with the same CA; the backend learns the scheme.
#[test]
fn tls_http2_conf_takes_segments_over_h2_and_https() {
    let backend = backend::spawn("127.0.0.1:0");
    let values = placeholders(&format!("127.0.0.1:{}", backend.port()));
    let cacert = values.cert.clone().unwrap().0;
    let mut nginx = ConfNginx::start(&example("tls-http2.conf"), &values);
    let url = format!("https://127.0.0.1:{}/upload", nginx.port);
    let data = test_data(100_000, 75);
    let dir = fresh_dir("tls-data");
    let (first, second) = (dir.join("first"), dir.join("second"));
    std::fs::write(&first, &data[..60_000]).unwrap();
    std::fs::write(&second, &data[60_000..]).unwrap();
    let headers = |range: &str| {
        vec![
            "X-Session-ID: tls00001".to_string(),
            "Content-Type: application/octet-stream".to_string(),
            r#"Content-Disposition: attachment; name="file"; filename="t.bin""#.to_string(),
            format!("X-Content-Range: bytes {range}/100000"),
        ]
    };
    let h1 = headers("0-59999");
    let h1: Vec<&str> = h1.iter().map(String::as_str).collect();
    let (version, status, body) = curl_tls(&url, &cacert, &h1, &first);
    assert_eq!((version.as_str(), status), ("2", 201), "{body}");
    assert_eq!(body, "0-59999/100000");
    let h2 = headers("60000-99999");
    let h2: Vec<&str> = h2.iter().map(String::as_str).collect();
    let (version, status, body) = curl_tls(&url, &cacert, &h2, &second);
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(body, backend::echo_body(&requests[0]));
    let fields = requests[0].fields().unwrap();
    assert_eq!(field(&fields, "scheme"), "https");
    assert_eq!(
        requests[0].header("x-forwarded-proto"),
        Some("https"),
        "{:?}",
        requests[0].headers
    );
    let path = PathBuf::from(field(&fields, "file.path"));
    assert_bytes_eq(
        &std::fs::read(&path).unwrap(),
        &data,
        "the file sent over h2",
    );

    // The Python client verifies the certificate against the same CA.
    let file = dir.join("client.bin");
    let client_data = test_data(700_000, 76);
    std::fs::write(&file, &client_data).unwrap();
    let run = pyclient::run_client(
        &url,
        &file,
        &[
            "--cacert",
            &cacert.display().to_string(),
            "--segment-size",
            "200k",
        ],
    );
    assert_eq!(run.code, Some(0), "{run}\n{}", nginx.error_log());
    let requests = backend.requests();
    assert_eq!(requests.len(), 2);
    let fields = requests[1].fields().unwrap();
    let path = PathBuf::from(field(&fields, "file.path"));
    assert_bytes_eq(
        &std::fs::read(&path).unwrap(),
        &client_data,
        "the client's file",
    );
    // Without the CA the client refuses the self-signed certificate.
    let run = pyclient::run_client(&url, &file, &["--retries", "0"]);
    assert_ne!(run.code, Some(0), "{run}");
    assert!(run.stderr.contains("CERTIFICATE_VERIFY_FAILED"), "{run}");
    nginx.stop_and_check();
    let _ = std::fs::remove_dir_all(dir);
}

/// public-rate-limited.conf: a client within the limits (256 KiB segments) succeeds; a
/// segment over the 1 MiB cap gets 413; OPTIONS answers with the CORS headers; a burst of
/// requests beyond `limit_req`'s allowance gets 429 (40 requests back to back: the allowance
/// is 11 at once, refilled at 5 a second).
#[test]
fn public_rate_limited_conf_enforces_its_limits() {
    let backend = backend::spawn("127.0.0.1:0");
    let values = Placeholders::new(&format!("127.0.0.1:{}", backend.port()));
    let mut nginx = ConfNginx::start(&example("public-rate-limited.conf"), &values);
    let port = nginx.port;
    let url = format!("http://127.0.0.1:{port}/upload");

    let dir = fresh_dir("public-data");
    let file = dir.join("ok.bin");
    let data = test_data(1 << 20, 77);
    std::fs::write(&file, &data).unwrap();
    let run = pyclient::run_client(&url, &file, &["--segment-size", "256k", "--parallel", "2"]);
    assert_eq!(run.code, Some(0), "{run}\n{}", nginx.error_log());
    let requests = backend.requests();
    assert_eq!(requests.len(), 1);
    let fields = requests[0].fields().unwrap();
    assert_eq!(field(&fields, "client_addr"), "127.0.0.1");
    let path = PathBuf::from(field(&fields, "file.path"));
    assert_bytes_eq(&std::fs::read(&path).unwrap(), &data, "the handed-off file");

    let big = test_data((1 << 20) + 1, 78);
    let r = post_segment(
        port,
        "/upload",
        &Segment::piece("toolarge", &big, 0, big.len() - 1),
    );
    assert_eq!(r.status, 413, "{r}");

    let r = send_raw(port, &build_request("OPTIONS", "/upload", &[], None));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{r}");
    assert!(
        r.header("access-control-allow-headers")
            .is_some_and(|h| h.contains("X-Content-Range")),
        "{r}"
    );

    let statuses: Vec<u16> = (0..40)
        .map(|_| status_query(port, "burst001").status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 404 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        nginx.error_log().contains("limiting requests"),
        "the refusals are logged"
    );
    nginx.stop_and_check();
    let _ = std::fs::remove_dir_all(dir);
}

/// tus.conf: OPTIONS says tus 1.0 with its limits; tus-js-client uploads a file in chunks
/// through it, the backend gets it once (its fields as the example names them); the IETF
/// draft is spoken on the same location; the upload is forgotten after its hand-off.
#[test]
fn tus_conf_takes_a_tus_js_client_upload() {
    let backend = backend::spawn("127.0.0.1:0");
    let values = Placeholders::new(&format!("127.0.0.1:{}", backend.port()));
    let mut nginx = ConfNginx::start(&example("tus.conf"), &values);
    let port = nginx.port;

    let r = send_raw(port, &build_request("OPTIONS", "/files/", &[], None));
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.header("Tus-Version"), Some("1.0.0"));
    assert_eq!(r.header("Tus-Max-Size"), Some("1073741824"));
    assert!(r
        .header("Tus-Extension")
        .unwrap_or_default()
        .contains("expiration"));
    assert_eq!(r.header("Access-Control-Allow-Origin"), Some("*"));

    let (file, data) = tus_kit::test_file("example tus.bin", 250_000, 81);
    let endpoint = format!("http://127.0.0.1:{port}/files/");
    let out = tus_kit::tus_js(
        &endpoint,
        &file,
        &["--scenario", "chunked", "--chunk-size", "100000"],
    );
    assert_eq!(out.code, Some(0), "{out}\n{}", nginx.error_log());
    let run = out.run("chunked", Some("tus-v1"));
    assert!(run.ok(), "{run}");
    let id = tus_kit::id_of(run.str("url"));
    let req = tus_kit::assert_one_handoff(
        &backend,
        &nginx.path("store"),
        &id,
        &data,
        Some("example tus.bin"),
    );
    assert_eq!(tus_kit::form_field(&req, "upload.id"), id);
    assert_eq!(
        tus_kit::form_field(&req, "meta.filename"),
        "example tus.bin"
    );
    assert_eq!(
        tus_kit::form_field(&req, "file.content_type"),
        "application/octet-stream"
    );
    assert_eq!(run.str("body"), backend::echo_body(&req));
    assert_eq!(
        PathBuf::from(tus_kit::form_field(&req, "file.path")),
        nginx.path("store").join(&id[id.len() - 1..]).join(&id),
        "upload_store {{PREFIX}}/store 1: <store>/<last char of the id>/<id>"
    );

    // The IETF draft on the same location: a whole upload in its creation request.
    let x = tus_kit::exchange(
        port,
        &build_request(
            "POST",
            "/files/",
            &[
                ("Upload-Draft-Interop-Version", "8"),
                ("Upload-Complete", "?1"),
            ],
            Some(b"ietf"),
        ),
        false,
    );
    assert_eq!(x.status, 200, "{x}\n{}", nginx.error_log());
    assert_eq!(x.header("Upload-Complete"), Some("?1"));
    assert!(x.interim.iter().any(|i| i.status == 104), "{x}");
    assert_eq!(backend.requests().len(), 2);

    // Forgotten once taken.
    let path = format!("/files/{id}");
    let x = tus_kit::poll(
        5,
        || tus_kit::send(port, "HEAD", &path, &[("Tus-Resumable", "1.0.0")], None),
        |x| x.status == 404,
    );
    assert_eq!(x.status, 404, "{x}");
    nginx.stop_and_check();
}
