//! How bodies arrive and where hand-offs go: `Transfer-Encoding: chunked` request bodies,
//! HTTP/2 over cleartext (with curl as the client), and `upload_pass` to a FastCGI location
//! and to a location that answers by itself.

use fastcgi::{FastCgi, FcgiRequest};

use ngx_upload_test_support::fastcgi;
use ngx_upload_test_support::*;
use std::path::{Path, PathBuf};

/// Odd chunk sizes, used in turn.
const CHUNKS: &[usize] = &[1, 7, 333, 4_099, 65_537, 13, 2, 10_007];

/// A segment's request with its body in chunked framing instead of a Content-Length.
fn chunked_segment_request(seg: &Segment<'_>, body: &[u8]) -> Vec<u8> {
    let mut headers = seg.headers();
    headers.push(("Transfer-Encoding".into(), "chunked".into()));
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    build_request("POST", "/upload", &refs, Some(&chunked_body(body, CHUNKS)))
}

// ---------------------------------------------------------------------------------------------
// Transfer-Encoding: chunked
// ---------------------------------------------------------------------------------------------

#[test]
fn chunked_multipart_form() {
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &form_server(""),
    );
    let big = test_data(200_000, 201);
    let small = test_data(17, 202);
    let parts = [
        Part::field("title", "chunked"),
        Part::file("big", "big.bin", "application/octet-stream", &big),
        Part::field("other", "dropped"),
        Part::file("small", r"C:\x\small.txt", "text/plain", &small),
        Part::field("desc", "last"),
    ];
    let body = chunked_body(&multipart_body("chunky", &parts), CHUNKS);
    let r = send_raw(
        env.port(),
        &build_request(
            "POST",
            "/upload",
            &[
                ("Content-Type", "multipart/form-data; boundary=chunky"),
                ("Transfer-Encoding", "chunked"),
            ],
            Some(&body),
        ),
    );
    assert_form_fields(
        &env.single_handoff(r.status, &r.text(), &r),
        &[
            Expected::Field("title", b"chunked"),
            Expected::File {
                field: "big",
                name: "big.bin",
                content_type: "application/octet-stream",
                data: &big,
                number: 1,
            },
            Expected::File {
                field: "small",
                name: "small.txt",
                content_type: "text/plain",
                data: &small,
                number: 2,
            },
            Expected::Field("desc", b"last"),
        ],
        &env.nginx.path("store"),
    );
}

#[test]
fn chunked_resumable_segments_and_raw_upload() {
    chunked_segments_and_raw_upload("", 250_000);
}

/// With `upload_buffer_size 256k` a fast chunked body fills the larger buffer again and again:
/// full buffers are written on the thread pool while nginx parses the chunks on into the other.
#[test]
fn chunked_segments_and_raw_upload_written_behind() {
    chunked_segments_and_raw_upload("upload_buffer_size 256k;", 3_000_000);
}

fn chunked_segments_and_raw_upload(conf: &str, len: usize) {
    let env = UploadEnv::start_server(
        Nginx::builder().http("client_max_body_size 0;"),
        &upload_server(conf),
    );
    let data = test_data(len, 203);
    let id = "chunkedseg1";
    let (third, last) = (len / 3, len - 1);
    let cuts = [(0, third - 1), (third, 2 * third - 1), (2 * third, last)];
    let mut sent = Vec::new();
    for (n, &(a, b)) in cuts.iter().enumerate() {
        let seg = Segment::piece(id, &data, a, b);
        let r = send_raw(env.port(), &chunked_segment_request(&seg, seg.body));
        sent.push((a as u64, b as u64));
        if n + 1 < cuts.len() {
            assert_progress(&r, &expected_report(&sent, data.len() as u64));
        } else {
            env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
        }
    }
    // A whole file in one chunked request.
    env.backend.clear();
    let raw = Segment::whole(&data);
    let r = send_raw(env.port(), &chunked_segment_request(&raw, &data));
    env.assert_handed_off(&r, "f", "big.TXT", None, &data);
}

/// A chunked segment whose body is shorter or longer than its range: 416, and the range is
/// not recorded; the session goes on.
#[test]
fn chunked_segment_of_the_wrong_length_gets_416() {
    let env = UploadEnv::start("");
    let data = test_data(1_000, 204);
    let id = "chunkedbad1";
    assert_progress(&env.post(&Segment::piece(id, &data, 0, 99)), "0-99/1000");
    let other = test_data(500, 205);
    for body in [&other[..50], &other[..150], &other[..101], &other[..99]] {
        let seg = Segment::piece(id, &data, 100, 199);
        let offset = env.nginx.log_len();
        let r = send_raw(env.port(), &chunked_segment_request(&seg, body));
        assert_eq!(
            r.status,
            416,
            "{}-byte body for 100-199:\n{r}\nerror.log gained:\n{}",
            body.len(),
            env.nginx.log_since(offset)
        );
        env.nginx.assert_logged(offset, &["Content-Range", "range"]);
        assert!(env.backend.requests().is_empty());
        // Its claim on 100-199 goes when nginx frees it, maybe after the answer.
        env.nginx.wait_idle();
    }
    // Nothing of 100-199 was recorded.
    assert_progress(
        &env.post(&Segment::piece(id, &data, 200, 299)),
        "0-99/1000,200-299/1000",
    );
    let seg = Segment::piece(id, &data, 100, 199);
    assert_progress(
        &send_raw(env.port(), &chunked_segment_request(&seg, seg.body)),
        "0-299/1000",
    );
    let r = env.post(&Segment::piece(id, &data, 300, 999));
    env.assert_handed_off(&r, "f", "big.TXT", Some(&env.stored_path(id)), &data);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 over cleartext, with curl
// ---------------------------------------------------------------------------------------------

struct CurlResponse {
    status: u16,
    http_version: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl CurlResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

impl std::fmt::Display for CurlResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "HTTP/{} {}", self.http_version, self.status)?;
        for (n, v) in &self.headers {
            writeln!(f, "{n}: {v}")?;
        }
        write!(f, "\n{}", self.text())
    }
}

/// Runs `curl --http2-prior-knowledge` against `uri` on 127.0.0.1:`port` with `args`.
fn curl_h2(port: u16, uri: &str, args: &[&str]) -> CurlResponse {
    curl_h2_stdin(port, uri, args, None)
}

/// [`curl_h2`] with standard input read from `stdin`.
fn curl_h2_stdin(port: u16, uri: &str, args: &[&str], stdin: Option<&Path>) -> CurlResponse {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let a = ngx_upload_test_support::curl::curl_h2(port, uri, &args, stdin);
    CurlResponse {
        status: a.status,
        http_version: a.http_version,
        headers: a.headers,
        body: a.body,
    }
}

/// nginx serving HTTP/2 over cleartext, with the usual upload location.
fn h2_env() -> UploadEnv {
    UploadEnv::start_server(
        Nginx::builder().http2().http("client_max_body_size 0;"),
        &format!(
            "{}\n{}",
            upload_server(""),
            form_server("")
                .replace("location /upload {", "location /form {")
                .replace("location @backend { proxy_pass http://{{BACKEND}}; }", "")
        ),
    )
}

/// The curl arguments posting `file` as the segment `first-last/total` of session `id` (or, with
/// no range, as a whole file).
fn segment_args(
    file: &Path,
    id: Option<&str>,
    range: Option<(usize, usize, usize)>,
) -> Vec<String> {
    let mut args = vec![
        "-H".to_string(),
        "Content-Type: text/plain".to_string(),
        "-H".to_string(),
        "Content-Disposition: form-data; name=\"f\"; filename=\"big.TXT\"".to_string(),
        "-H".to_string(),
        "Expect:".to_string(),
    ];
    if let Some(id) = id {
        args.push("-H".into());
        args.push(format!("X-Session-ID: {id}"));
    }
    if let Some((a, b, t)) = range {
        args.push("-H".into());
        args.push(format!("X-Content-Range: bytes {a}-{b}/{t}"));
    }
    args.push("--data-binary".into());
    args.push(format!("@{}", file.display()));
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// Checks a curl response as the backend's answer to the one hand-off of the file `data`.
#[track_caller]
fn assert_h2_handoff(env: &UploadEnv, r: &CurlResponse, path: Option<&Path>, data: &[u8]) {
    assert_eq!(r.http_version, "2", "curl did not speak HTTP/2:\n{r}");
    assert_eq!(r.status, 200, "{r}\n{}", env.nginx.error_log());
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let req = &requests[0];
    assert_eq!(r.text(), backend::echo_body(req));
    assert_eq!(req.field("f.name").as_deref(), Some("big.TXT"));
    assert_eq!(req.field("f.size"), Some(data.len().to_string()));
    let stored = PathBuf::from(req.field("f.path").unwrap());
    if let Some(path) = path {
        assert_eq!(stored, path);
    }
    assert_bytes_eq(&std::fs::read(&stored).unwrap(), data, "the stored file");
}

#[test]
fn h2c_single_request_raw_upload() {
    let env = h2_env();
    let dir = fresh_dir("h2-data");
    let data = test_data(300_000, 206);
    let file = dir.join("data");
    std::fs::write(&file, &data).unwrap();
    let r = curl_h2(
        env.port(),
        "/upload",
        &strs(&segment_args(&file, None, None)),
    );
    assert_h2_handoff(&env, &r, None, &data);

    // The same streamed from standard input: no content-length, the body's end is the
    // stream's end.
    env.backend.clear();
    let mut args = segment_args(&file, None, None);
    args.truncate(args.len() - 2);
    args.extend(["-X", "POST", "-T", "-"].map(String::from));
    let r = curl_h2_stdin(env.port(), "/upload", &strs(&args), Some(&file));
    assert_h2_handoff(&env, &r, None, &data);

    // A segment without content-length whose stream is shorter than its range: 416.
    env.backend.clear();
    let mut args = segment_args(
        &file,
        Some("h2short0001"),
        Some((0, data.len(), data.len() + 1)),
    );
    args.truncate(args.len() - 2);
    args.extend(["-X", "POST", "-T", "-"].map(String::from));
    let offset = env.nginx.log_len();
    let r = curl_h2_stdin(env.port(), "/upload", &strs(&args), Some(&file));
    assert_eq!(r.http_version, "2", "{r}");
    assert_eq!(r.status, 416, "{r}\n{}", env.nginx.log_since(offset));
    env.nginx.assert_logged(offset, &["Content-Range"]);
    assert!(env.backend.requests().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn h2c_resumable_upload_in_several_requests() {
    let env = h2_env();
    let dir = fresh_dir("h2-data");
    let data = test_data(400_003, 207);
    let id = "h2segments1";
    let cuts = segments(data.len(), 100_000);
    // Out of order, one curl per segment.
    let order = [1, 0, 4, 2, 3];
    assert_eq!(order.len(), cuts.len());
    let mut sent = Vec::new();
    for (n, &i) in order.iter().enumerate() {
        let (a, b) = cuts[i];
        let file = dir.join(format!("seg{i}"));
        std::fs::write(&file, &data[a..=b]).unwrap();
        let args = segment_args(&file, Some(id), Some((a, b, data.len())));
        let r = curl_h2(env.port(), "/upload", &strs(&args));
        sent.push((a as u64, b as u64));
        if n + 1 < order.len() {
            assert_eq!(r.http_version, "2", "{r}");
            assert_eq!(r.status, 201, "{r}\n{}", env.nginx.error_log());
            let report = expected_report(&sent, data.len() as u64);
            assert_eq!(r.header("range"), Some(report.as_str()), "{r}");
            assert_eq!(r.text(), report);
        } else {
            assert_h2_handoff(&env, &r, Some(&env.stored_path(id)), &data);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fast HTTP/2 client, one that used the stream's whole window before nginx took its bytes,
/// gets a window of `upload_buffer_size` (the stream's body buffer grows, as over HTTP/1.1), so
/// its upload is not one 64 KiB round trip after another; a client that never has more than
/// one frame in flight keeps nginx's 64 KiB buffer and window. Both files arrive whole.
#[test]
fn h2c_window_grows_for_a_client_that_fills_it() {
    use ngx_upload_test_support::h2::{self, Pacing};
    let env = UploadEnv::start_server(
        Nginx::builder().http2().http("client_max_body_size 0;"),
        &upload_server("upload_buffer_size 256k;"),
    );
    let data = test_data(8 << 20, 209);
    for (pacing, id) in [
        (Pacing::WholeWindows, "h2window0001"),
        (Pacing::FrameByFrame, "h2window0002"),
    ] {
        env.backend.clear();
        let headers = [
            ("Content-Type", "text/plain".to_string()),
            (
                "Content-Disposition",
                "form-data; name=\"f\"; filename=\"big.TXT\"".to_string(),
            ),
            ("X-Session-ID", id.to_string()),
            (
                "X-Content-Range",
                format!("bytes 0-{}/{}", data.len() - 1, data.len()),
            ),
        ];
        let a = h2::upload(env.port(), "POST", "/upload", &headers, &data, pacing)
            .unwrap_or_else(|e| panic!("{pacing:?}: {e}\n{}", env.nginx.error_log()));
        assert_eq!(
            a.status,
            200,
            "{pacing:?}: {a:?}\n{}",
            env.nginx.error_log()
        );
        assert_eq!(a.sent, data.len() as u64, "{pacing:?}");
        let requests = env.backend.requests();
        assert_eq!(requests.len(), 1, "{pacing:?}: {requests:#?}");
        let stored = PathBuf::from(requests[0].field("f.path").unwrap());
        assert_eq!(stored, env.stored_path(id));
        assert_bytes_eq(&std::fs::read(&stored).unwrap(), &data, "the stored file");
        match pacing {
            Pacing::WholeWindows => assert!(
                a.largest_window > 64 << 10 && a.largest_window <= 256 << 10,
                "a client that fills its window gets upload_buffer_size: {a:?}"
            ),
            Pacing::FrameByFrame => assert_eq!(
                a.largest_window,
                64 << 10,
                "a client with one frame in flight keeps nginx's window: {a:?}"
            ),
        }
    }
    let serious = env.nginx.serious_log_lines();
    assert!(serious.is_empty(), "{serious:#?}");
}

#[test]
fn h2c_32_mib_single_segment() {
    let env = h2_env();
    let dir = fresh_dir("h2-data");
    let data = test_data(32 << 20, 208);
    let file = dir.join("big");
    std::fs::write(&file, &data).unwrap();
    let id = "h2big32mib1";
    let args = segment_args(&file, Some(id), Some((0, data.len() - 1, data.len())));
    let r = curl_h2(env.port(), "/upload", &strs(&args));
    assert_h2_handoff(&env, &r, Some(&env.stored_path(id)), &data);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn h2c_multipart_form() {
    let env = h2_env();
    let dir = fresh_dir("h2-data");
    let one = test_data(150_000, 209);
    let two = test_data(1_234, 210);
    std::fs::write(dir.join("one.bin"), &one).unwrap();
    std::fs::write(dir.join("two.txt"), &two).unwrap();
    let file_arg = |field: &str, name: &str, ct: &str| {
        format!("{field}=@{};type={ct}", dir.join(name).display())
    };
    let args = [
        "-F".to_string(),
        "title=over h2".to_string(),
        "-F".to_string(),
        file_arg("one", "one.bin", "application/octet-stream"),
        "-F".to_string(),
        "skip=me".to_string(),
        "-F".to_string(),
        file_arg("two", "two.txt", "text/plain"),
        "-F".to_string(),
        "description=end".to_string(),
        "-H".to_string(),
        "Expect:".to_string(),
    ];
    let r = curl_h2(env.port(), "/form", &strs(&args));
    assert_eq!(r.http_version, "2", "{r}");
    assert_form_fields(
        &env.single_handoff(r.status, &r.text(), &r),
        &[
            Expected::Field("title", b"over h2"),
            Expected::File {
                field: "one",
                name: "one.bin",
                content_type: "application/octet-stream",
                data: &one,
                number: 1,
            },
            Expected::File {
                field: "two",
                name: "two.txt",
                content_type: "text/plain",
                data: &two,
                number: 2,
            },
            Expected::Field("description", b"end"),
        ],
        &env.nginx.path("store"),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------------------------------------
// upload_pass to FastCGI, and to a location answering by itself
// ---------------------------------------------------------------------------------------------

/// The usual upload locations (raw/resumable at /upload, forms at /form) handing off to a
/// FastCGI location, and the same at /done-upload and /done-form handing off to
/// `return 200 "done"`.
fn fastcgi_server(fcgi_port: u16) -> String {
    let upload = |path: &str, pass: &str| {
        upload_server("upload_pass_form_field \"^title$|^desc\";")
            .replace("location @backend { proxy_pass http://{{BACKEND}}; }", "")
            .replace("location /upload {", &format!("location {path} {{"))
            .replace("upload_pass @backend;", &format!("upload_pass {pass};"))
    };
    format!(
        "{}\n{}\n\
         location /fcgi {{\n\
         \x20   internal;\n\
         \x20   fastcgi_pass 127.0.0.1:{fcgi_port};\n\
         \x20   fastcgi_param REQUEST_METHOD $request_method;\n\
         \x20   fastcgi_param REQUEST_URI $request_uri;\n\
         \x20   fastcgi_param CONTENT_TYPE $content_type;\n\
         \x20   fastcgi_param CONTENT_LENGTH $content_length;\n\
         }}\n\
         location /done {{ internal; return 200 \"done\"; }}\n",
        upload("/upload", "/fcgi"),
        upload("/done-upload", "/done"),
    )
}

#[track_caller]
fn assert_fcgi_form(r: &Response, fcgi: &FastCgi) -> (FcgiRequest, Vec<Field>) {
    assert_eq!(r.status, 200, "{r}");
    let requests = fcgi.requests();
    assert_eq!(requests.len(), 1, "FastCGI requests: {requests:#?}");
    let req = requests.into_iter().next().unwrap();
    let ct = req.param("CONTENT_TYPE").unwrap_or_default().to_string();
    assert!(
        ct.starts_with("multipart/form-data; boundary="),
        "CONTENT_TYPE {ct:?}"
    );
    assert_eq!(
        req.param("CONTENT_LENGTH"),
        Some(req.stdin.len().to_string().as_str()),
        "CONTENT_LENGTH vs. the STDIN received"
    );
    assert_eq!(req.param("REQUEST_METHOD"), Some("POST"));
    let fields = backend::parse_multipart(&ct, &req.stdin)
        .unwrap_or_else(|e| panic!("STDIN is not the hand-off form ({e}): {req:?}"));
    let text = r.text();
    assert!(
        text.starts_with(&format!(
            "content-type = {ct}\ncontent-length = {}\nstdin-bytes = {}\n",
            req.stdin.len(),
            req.stdin.len()
        )),
        "the client's answer is not the responder's: {text}"
    );
    (req, fields)
}

#[test]
fn upload_pass_to_fastcgi() {
    let fcgi = FastCgi::start();
    let env = UploadEnv::start_server(Nginx::builder(), &fastcgi_server(fcgi.port()));
    let store = env.nginx.path("store");

    // A resumable upload's completion.
    let data = test_data(20_000, 211);
    let id = "fastcgi0001";
    assert_progress(
        &env.post(&Segment::piece(id, &data, 0, 9_999)),
        "0-9999/20000",
    );
    assert!(fcgi.requests().is_empty());
    let r = env.post(&Segment::piece(id, &data, 10_000, 19_999));
    let (req, fields) = assert_fcgi_form(&r, &fcgi);
    let path = env.stored_path(id);
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "f.name",
            "f.path",
            "f.content_type",
            "f.size",
            "f.number",
            "range"
        ],
        "{req:?}"
    );
    let value = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(Field::value_str)
            .unwrap()
    };
    assert_eq!(value("f.name"), "big.TXT");
    assert_eq!(value("f.path"), path.display().to_string());
    assert_eq!(value("f.content_type"), "text/plain");
    assert_eq!(value("f.size"), "20000");
    assert_eq!(value("range"), "bytes 10000-19999/20000");
    assert_bytes_eq(&std::fs::read(&path).unwrap(), &data, "the assembled file");

    // A browser form.
    fcgi.clear();
    let file = test_data(33_333, 212);
    let parts = [
        Part::field("title", "to fastcgi"),
        Part::file("doc", "doc.bin", "application/octet-stream", &file),
        Part::field("junk", "dropped"),
    ];
    let r = send_raw(
        env.port(),
        &form_request(
            "/upload",
            "multipart/form-data; boundary=fcgi",
            &multipart_body("fcgi", &parts),
        ),
    );
    let (_, fields) = assert_fcgi_form(&r, &fcgi);
    // UPLOAD_SERVER's templates: name, path, content type, size, number, and range.
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "title",
            "doc.name",
            "doc.path",
            "doc.content_type",
            "doc.size",
            "doc.number",
            "range"
        ]
    );
    let value = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .map(Field::value_str)
            .unwrap()
    };
    assert_eq!(value("title"), "to fastcgi");
    assert_eq!(value("doc.name"), "doc.bin");
    assert_eq!(value("doc.size"), "33333");
    assert_eq!(value("doc.number"), "1");
    assert_eq!(value("range"), "bytes 0-33332/33333");
    let stored = PathBuf::from(value("doc.path"));
    assert!(stored.starts_with(&store));
    assert_bytes_eq(&std::fs::read(&stored).unwrap(), &file, "the form's file");
    assert!(
        env.backend.requests().is_empty(),
        "the HTTP backend was not configured"
    );
}

#[test]
fn upload_pass_to_a_location_that_answers_by_itself() {
    let fcgi = FastCgi::start();
    let env = UploadEnv::start_server(Nginx::builder(), &fastcgi_server(fcgi.port()));
    let data = test_data(5_000, 213);
    let id = "returndone1";
    assert_progress(
        &post_segment(
            env.port(),
            "/done-upload",
            &Segment::piece(id, &data, 0, 2_499),
        ),
        "0-2499/5000",
    );
    let r = post_segment(
        env.port(),
        "/done-upload",
        &Segment::piece(id, &data, 2_500, 4_999),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text(), "done");
    assert_bytes_eq(
        &std::fs::read(env.stored_path(id)).unwrap(),
        &data,
        "the assembled file",
    );

    let file = test_data(4_321, 214);
    let r = send_raw(
        env.port(),
        &form_request(
            "/done-upload",
            "multipart/form-data; boundary=done",
            &multipart_body("done", &[Part::file("doc", "d.bin", "text/plain", &file)]),
        ),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.text(), "done");
    assert!(fcgi.requests().is_empty());
    assert!(env.backend.requests().is_empty());
    // The form's file is stored (nothing removes it on a 200).
    let stored: Vec<_> = files_under(&env.nginx.path("store"))
        .into_iter()
        .filter(|p| p.file_name().unwrap() != id)
        .collect();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_bytes_eq(
        &std::fs::read(&stored[0]).unwrap(),
        &file,
        "the form's file",
    );
}
