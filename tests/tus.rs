//! tus 1.0 (`upload_protocol tus`) against real nginx: the real clients tuspy 1.1.0 and
//! tus-js-client 4.3.1 (tests/clients/), then raw HTTP for every status and header of the core
//! protocol and its extensions (creation, creation-with-upload, creation-defer-length,
//! expiration, checksum, termination, concatenation, concatenation-unfinished), the hand-off
//! and its failures, CORS, and a few exchanges over h2c with curl.
//!
//! Every upload that completes is checked at the backend: exactly one hand-off naming it
//! (`upload.id`), a `POST` form whose `file.path` holds the file byte for byte. Every refusal
//! is checked in error.log: a line at `[error]` or below, never `[crit]`/`[alert]`.

use ngx_upload_test_support::flaky;
use ngx_upload_test_support::tus as tus_kit;
use ngx_upload_test_support::*;
use tus_kit::*;

const TUS: (&str, &str) = ("Tus-Resumable", "1.0.0");
const STREAM: (&str, &str) = ("Content-Type", "application/offset+octet-stream");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A request on `env`; every answer but OPTIONS's must carry `Tus-Resumable: 1.0.0`.
#[track_caller]
fn tus(
    env: &UploadEnv,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Exchange {
    let x = send(env.port(), method, uri, headers, body);
    if method != "OPTIONS" {
        assert_eq!(
            x.header("Tus-Resumable"),
            Some("1.0.0"),
            "{method} {uri}: every tus answer but OPTIONS's has Tus-Resumable: 1.0.0; got\n{x}"
        );
    }
    x
}

/// A request that must be refused with `status`, the refusal logged (see
/// [`assert_refusal_logged`]); `needles` are words of the message that may stand for the
/// request line in the log.
#[track_caller]
fn refused(
    env: &UploadEnv,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    status: u16,
    needles: &[&str],
) -> Exchange {
    let offset = env.nginx.log_len();
    let x = tus(env, method, uri, headers, body);
    assert_eq!(
        x.status,
        status,
        "{method} {uri} {headers:?}: expected {status}, got\n{x}\nerror.log gained:\n{}",
        env.nginx.log_since(offset)
    );
    assert_refusal_logged(&env.nginx, offset, method, uri, needles);
    x
}

/// Creates an upload of `length` bytes (or a deferred one) with `extra` headers: 201 with a
/// `Location` under /files/ and `Upload-Offset: 0`. Returns the path of the upload.
#[track_caller]
fn create(env: &UploadEnv, length: Option<u64>, extra: &[(&str, &str)]) -> String {
    let length_text = length.map(|l| l.to_string());
    let mut headers = vec![TUS];
    match &length_text {
        Some(l) => headers.push(("Upload-Length", l)),
        None => headers.push(("Upload-Defer-Length", "1")),
    }
    headers.extend_from_slice(extra);
    let x = tus(env, "POST", "/files/", &headers, Some(b""));
    assert_eq!(x.status, 201, "creation:\n{x}\n{}", env.nginx.error_log());
    let location = x.header("Location").expect("a Location").to_string();
    let path = path_of(&location);
    assert!(path.starts_with("/files/"), "Location {location}");
    id_of(&location);
    assert_eq!(x.header("Upload-Offset"), Some("0"), "{x}");
    path
}

/// A PATCH of `body` at `offset`, with `extra` headers.
#[track_caller]
fn patch(
    env: &UploadEnv,
    path: &str,
    offset: u64,
    body: &[u8],
    extra: &[(&str, &str)],
) -> Exchange {
    let offset = offset.to_string();
    let mut headers = vec![TUS, STREAM, ("Upload-Offset", offset.as_str())];
    headers.extend_from_slice(extra);
    tus(env, "PATCH", path, &headers, Some(body))
}

#[track_caller]
fn head(env: &UploadEnv, path: &str) -> Exchange {
    tus(env, "HEAD", path, &[TUS], None)
}

/// A final upload over the parts `Upload-Concat` names (`final;…`), created with 201 (its
/// parts may be unfinished): its path.
#[track_caller]
fn create_final(env: &UploadEnv, concat: &str) -> String {
    let x = tus(
        env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Concat", concat)],
        Some(b""),
    );
    assert_eq!(x.status, 201, "{x}\n{}", env.nginx.error_log());
    path_of(x.header("Location").expect("a Location"))
}

/// A 204 to a PATCH, at offset `offset` now.
#[track_caller]
fn assert_patched(x: &Exchange, offset: u64) {
    assert_eq!(x.status, 204, "PATCH:\n{x}");
    assert_eq!(
        x.header("Upload-Offset"),
        Some(offset.to_string().as_str()),
        "{x}"
    );
    assert_expires(x);
}

/// `Upload-Expires` is an IMF-fixdate about 6 h from now (the location's
/// `upload_state_expire 6h`, counted from the last write).
#[track_caller]
fn assert_expires(x: &Exchange) {
    let value = x
        .header("Upload-Expires")
        .unwrap_or_else(|| panic!("no Upload-Expires:\n{x}"));
    let at = parse_imf_fixdate(value)
        .unwrap_or_else(|| panic!("Upload-Expires {value:?} is not an IMF-fixdate"));
    let expected = unix_now() + EXPIRE_SECS;
    assert!(
        at + 120 >= expected && at <= expected + 120,
        "Upload-Expires {value} is not about 6 h from now"
    );
}

/// The CORS headers of every answer of a location with `upload_cors_origin *`.
#[track_caller]
fn assert_cors(x: &Exchange) {
    assert_eq!(x.header("Access-Control-Allow-Origin"), Some("*"), "{x}");
    let exposed = x
        .header("Access-Control-Expose-Headers")
        .unwrap_or_else(|| panic!("no Access-Control-Expose-Headers:\n{x}"));
    for name in [
        "Location",
        "Upload-Offset",
        "Upload-Length",
        "Tus-Resumable",
        "Upload-Metadata",
        "Upload-Expires",
    ] {
        assert!(
            exposed.split(',').any(|h| h.trim() == name),
            "{name} is not exposed: {exposed}"
        );
    }
}

/// Polls `HEAD path` until it answers 404 (a handed-off upload is forgotten when its request
/// is freed, just after the answer went out).
#[track_caller]
fn assert_forgotten(env: &UploadEnv, path: &str) {
    let x = poll(5, || head(env, path), |x| x.status == 404);
    assert_eq!(
        x.status, 404,
        "{path} is not forgotten after its hand-off:\n{x}"
    );
}

/// Asserts that `x` is the backend's answer to the one hand-off of upload `path` holding
/// `data`, with `Upload-Offset: len` added.
#[track_caller]
fn assert_handed_off(env: &UploadEnv, x: &Exchange, path: &str, data: &[u8]) -> ReceivedRequest {
    assert_handed_off_to(env, &env.backend, x, path, data)
}

/// [`assert_handed_off`] where nginx hands off to `backend` (through a relay, say).
#[track_caller]
fn assert_handed_off_to(
    env: &UploadEnv,
    backend: &Backend,
    x: &Exchange,
    path: &str,
    data: &[u8],
) -> ReceivedRequest {
    assert_eq!(
        x.status,
        200,
        "expected the backend's answer:\n{x}\n{}",
        env.nginx.error_log()
    );
    let id = id_of(path);
    let req = assert_one_handoff(backend, &env.nginx.path("store"), &id, data, None);
    assert_eq!(
        x.text(),
        backend::echo_body(&req),
        "the client's answer is the backend's"
    );
    assert_eq!(
        x.header("Upload-Offset"),
        Some(data.len().to_string().as_str()),
        "a successful hand-off says the final offset:\n{x}"
    );
    req
}

fn endpoint(env: &UploadEnv) -> String {
    format!("http://127.0.0.1:{}/files/", env.port())
}

// ---------------------------------------------------------------------------------------------
// tuspy 1.1.0
// ---------------------------------------------------------------------------------------------

/// Checks a tuspy upload run: it succeeded, its URL's upload was handed off once with the file.
#[track_caller]
fn check_tuspy_upload(env: &UploadEnv, run: &Json, data: &[u8], name: &str) -> ReceivedRequest {
    assert!(run.ok(), "tuspy run failed: {run}");
    let id = id_of(run.str("url"));
    let req = assert_one_handoff(
        &env.backend,
        &env.nginx.path("store"),
        &id,
        data,
        Some(name),
    );
    assert_eq!(form_field(&req, "meta.filename"), name);
    assert_eq!(form_field(&req, "upload.id"), id);
    req
}

/// `upload_checksum=True` (sha1 on every PATCH) with chunks of 1000 B, 64 KiB, 1 MiB and the
/// whole file: four uploads, each handed off once, the client's last answer the backend's.
#[test]
fn tuspy_uploads_in_several_chunk_sizes_with_checksums() {
    let env = start_tus();
    let (file, data) = test_file("tuspy-chunks.bin", 200_003, 1);
    let out = tuspy(&endpoint(&env), &file, &["--scenario", "chunks"]);
    assert_eq!(out.code, Some(0), "{out}");
    let runs = out.run("chunks", None).get("runs").unwrap().as_array();
    assert_eq!(runs.len(), 4, "{out}");
    for (run, chunk) in runs
        .iter()
        .zip([1000u64, 65536, 1 << 20, data.len() as u64])
    {
        let req = check_tuspy_upload(&env, run, &data, "tuspy-chunks.bin");
        assert_eq!(run.get("chunkSize").and_then(Json::as_u64), Some(chunk));
        let patches = (data.len() as u64).div_ceil(chunk);
        assert_eq!(
            run.get("patches").and_then(Json::as_u64),
            Some(patches),
            "{run}"
        );
        assert_eq!(run.get("lastStatus").and_then(Json::as_u64), Some(200));
        assert_eq!(run.str("lastBody"), backend::echo_body(&req));
        // Every PATCH carried a sha1 Upload-Checksum.
        let requests = run.get("requests").unwrap().as_array();
        assert!(requests
            .iter()
            .filter(|r| r.str("method") == "PATCH")
            .all(|r| r
                .get("headers")
                .is_some_and(|h| h.str("upload-checksum").starts_with("sha1 "))));
    }
    assert_eq!(env.backend.requests().len(), 4);
}

/// `upload(stop_at=half)` then a new uploader on the URL (HEAD: the offset it stopped at), and a
/// PATCH cut off mid-body on a raw socket: the server keeps what arrived, tuspy resumes there.
#[test]
fn tuspy_resumes_after_a_stop_and_after_a_cut_patch() {
    let env = start_tus();
    let (file, data) = test_file("tuspy-resume.bin", 300_007, 2);
    let out = tuspy(
        &endpoint(&env),
        &file,
        &["--scenario", "resume", "--chunk-size", "65536"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let run = out.run("resume", None);
    check_tuspy_upload(&env, run, &data, "tuspy-resume.bin");
    let stopped = run.get("stoppedAt").and_then(Json::as_u64).unwrap();
    assert!(stopped > 0 && stopped < data.len() as u64, "{run}");
    assert_eq!(run.get("resumedAt").and_then(Json::as_u64), Some(stopped));

    let out = tuspy(
        &endpoint(&env),
        &file,
        &["--scenario", "interrupt", "--chunk-size", "65536"],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let run = out.run("interrupt", None);
    check_tuspy_upload(&env, run, &data, "tuspy-resume.bin");
    let kept = run.get("keptByServer").and_then(Json::as_u64).unwrap();
    let sent = run.get("sentBeforeCut").and_then(Json::as_u64).unwrap();
    assert!(
        kept > 0 && kept <= sent,
        "the server keeps what arrived of a cut PATCH: kept {kept} of {sent}: {run}"
    );
    assert_eq!(env.backend.requests().len(), 2);
}

/// A zero-length file: tuspy only POSTs; the upload is complete at creation and handed off by
/// the POST, whose answer (the backend's) carries the Location. With `--no-metadata` tuspy
/// sends an empty `Upload-Metadata` header.
#[test]
fn tuspy_empty_file_is_handed_off_at_creation() {
    let env = start_tus();
    let (file, _) = test_file("unused.bin", 1, 3);
    for args in [
        &["--scenario", "empty"][..],
        &["--scenario", "empty", "--no-metadata"],
    ] {
        env.backend.clear();
        let out = tuspy(&endpoint(&env), &file, args);
        assert_eq!(out.code, Some(0), "{args:?}: {out}");
        let run = out.run("empty", None);
        assert!(run.ok(), "{run}");
        assert_eq!(run.get("status").and_then(Json::as_u64), Some(200), "{run}");
        assert_eq!(run.get("patches").and_then(Json::as_u64), Some(0));
        let id = id_of(run.str("url"));
        let req = assert_one_handoff(&env.backend, &env.nginx.path("store"), &id, b"", None);
        if args.contains(&"--no-metadata") {
            assert_eq!(form_field(&req, "file.name"), "");
            assert_eq!(form_field(&req, "meta.filename"), "");
        } else {
            assert!(form_field(&req, "file.name").starts_with("tuspy-empty-"));
        }
        assert_eq!(env.backend.requests().len(), 1);
    }
}

/// A PATCH whose sha1 does not match: 460, the offset still 0, nothing handed off.
#[test]
fn tuspy_bad_checksum_is_460_and_keeps_the_offset() {
    let env = start_tus();
    let (file, _) = test_file("tuspy-bad.bin", 100_000, 4);
    let offset = env.nginx.log_len();
    let out = tuspy(&endpoint(&env), &file, &["--scenario", "bad-checksum"]);
    assert_eq!(out.code, Some(0), "{out}");
    let run = out.run("bad-checksum", None);
    assert!(run.ok(), "{run}");
    assert_eq!(run.get("status").and_then(Json::as_u64), Some(460));
    assert_eq!(run.str("offsetAfter"), "0");
    let id = id_of(run.str("url"));
    assert_refusal_logged(
        &env.nginx,
        offset,
        "PATCH",
        &format!("/files/{id}"),
        &["checksum"],
    );
    assert!(env.backend.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// tus-js-client 4.3.1
// ---------------------------------------------------------------------------------------------

/// tus-js-client's `scenario` (tests/clients/tus-js/upload.mjs) on `file` in 64 KiB chunks,
/// with `extra` arguments; it must exit 0.
#[track_caller]
fn tus_js_in_chunks(
    env: &UploadEnv,
    file: &std::path::Path,
    scenario: &str,
    extra: &[&str],
) -> ClientOutput {
    let mut args = vec!["--scenario", scenario, "--chunk-size", "65536"];
    args.extend_from_slice(extra);
    let out = tus_js(&endpoint(env), file, &args);
    assert_eq!(out.code, Some(0), "{scenario} {extra:?}: {out}");
    out
}

/// Checks a tus-js-client upload run: it succeeded, its URL's upload was handed off once with
/// the file, named by the metadata tus-js-client sends (`filename`, `filetype`).
#[track_caller]
fn check_js_upload(env: &UploadEnv, run: &Json, data: &[u8], name: &str) -> ReceivedRequest {
    assert!(run.ok(), "tus-js-client run failed: {run}");
    let id = id_of(run.str("url"));
    let req = assert_one_handoff(
        &env.backend,
        &env.nginx.path("store"),
        &id,
        data,
        Some(name),
    );
    assert_eq!(
        form_field(&req, "file.content_type"),
        "application/octet-stream"
    );
    assert_eq!(form_field(&req, "meta.filename"), name);
    // The last answer the client saw is the backend's (a PATCH's, not a HEAD's).
    if run.get("status").and_then(Json::as_u64) == Some(200) && !run.str("body").is_empty() {
        assert_eq!(run.str("body"), backend::echo_body(&req));
    }
    req
}

/// One PATCH (the default chunk size is the whole file), then 64 KiB chunks.
#[test]
fn tus_js_simple_and_chunked() {
    let env = start_tus();
    let (file, data) = test_file("js-chunked.bin", 500_001, 5);
    for scenario in ["simple", "chunked"] {
        let out = tus_js_in_chunks(&env, &file, scenario, &[]);
        let run = out.run(scenario, Some("tus-v1"));
        check_js_upload(&env, run, &data, "js-chunked.bin");
        let patches = run
            .get("requests")
            .unwrap()
            .as_array()
            .iter()
            .filter(|r| r.str("method") == "PATCH")
            .count();
        let expected = if scenario == "simple" { 1 } else { 8 };
        assert_eq!(patches, expected, "{run}");
    }
    assert_eq!(env.backend.requests().len(), 2);
}

/// `parallelUploads: 3`: three partial uploads, then `Upload-Concat: final;…`: only the final
/// upload reaches the backend, holding the parts in order.
#[test]
fn tus_js_parallel_uploads_are_concatenated() {
    let env = start_tus();
    let (file, data) = test_file("js-parallel.bin", 700_001, 6);
    let out = tus_js_in_chunks(&env, &file, "parallel", &[]);
    let run = out.run("parallel", Some("tus-v1"));
    check_js_upload(&env, run, &data, "js-parallel.bin");
    let requests = run.get("requests").unwrap().as_array();
    let partials = requests
        .iter()
        .filter(|r| {
            r.str("method") == "POST"
                && r.get("headers").map(|h| h.str("Upload-Concat")) == Some("partial")
        })
        .count();
    assert_eq!(partials, 3, "{run}");
    assert!(requests.iter().any(|r| r
        .get("headers")
        .is_some_and(|h| h.str("Upload-Concat").starts_with("final;"))));
    assert_eq!(
        env.backend.requests().len(),
        1,
        "only the final upload is handed off"
    );
}

/// `uploadLengthDeferred` with a stream: `Upload-Defer-Length: 1`, the length on the last
/// PATCH.
#[test]
fn tus_js_deferred_length() {
    let env = start_tus();
    let (file, data) = test_file("js-deferred.bin", 300_000, 7);
    let out = tus_js_in_chunks(&env, &file, "deferred", &[]);
    let run = out.run("deferred", Some("tus-v1"));
    check_js_upload(&env, run, &data, "js-deferred.bin");
    let requests = run.get("requests").unwrap().as_array();
    assert!(requests.iter().any(|r| r.str("method") == "POST"
        && r.get("headers").map(|h| h.str("Upload-Defer-Length")) == Some("1")));
    assert!(requests.iter().any(|r| r.str("method") == "PATCH"
        && r.get("headers").map(|h| h.str("Upload-Length")) == Some("300000")));
    assert_eq!(env.backend.requests().len(), 1);
}

/// Abort after the first chunk and resume the URL (HEAD: the offset the server holds), and
/// `abort(true)`: DELETE, then the URL is gone with its files.
#[test]
fn tus_js_abort_resume_and_terminate() {
    let env = start_tus();
    let (file, data) = test_file("js-abort.bin", 400_000, 8);
    let out = tus_js_in_chunks(&env, &file, "abort-resume", &[]);
    let run = out.run("abort-resume", Some("tus-v1"));
    check_js_upload(&env, run, &data, "js-abort.bin");
    let aborted = run.get("abortedAt").and_then(Json::as_u64).unwrap();
    assert!(aborted > 0, "{run}");
    assert_eq!(run.get("resumedAt").and_then(Json::as_u64), Some(aborted));
    assert_eq!(run.str("firstUrl"), run.str("url"));

    let out = tus_js_in_chunks(&env, &file, "terminate", &[]);
    let run = out.run("terminate", Some("tus-v1"));
    assert!(run.ok(), "{run}");
    let status = run.get("headAfterDelete").and_then(Json::as_u64);
    assert!(matches!(status, Some(404 | 410)), "{run}");
    let id = id_of(run.str("url"));
    assert!(handoffs_of(&env.backend, &id).is_empty());
    let left = poll(5, || files_of(&env.nginx, &id), |f| f.is_empty());
    assert!(
        left.is_empty(),
        "files of the terminated upload remain: {left:?}"
    );
    assert_eq!(env.backend.requests().len(), 1);
}

/// `overridePatchMethod` (POST + `X-HTTP-Method-Override: PATCH`) and
/// `uploadDataDuringCreation` (creation-with-upload).
#[test]
fn tus_js_method_override_and_upload_during_creation() {
    let env = start_tus();
    let (file, data) = test_file("js-override.bin", 200_000, 9);
    for flag in ["--override-patch", "--upload-during-creation"] {
        let out = tus_js_in_chunks(&env, &file, "chunked", &[flag]);
        let run = out.run("chunked", Some("tus-v1"));
        check_js_upload(&env, run, &data, "js-override.bin");
        let requests = run.get("requests").unwrap().as_array();
        if flag == "--override-patch" {
            assert!(requests.iter().all(|r| r.str("method") != "PATCH"), "{run}");
            assert!(requests.iter().any(|r| r
                .get("headers")
                .is_some_and(|h| h.str("X-HTTP-Method-Override") == "PATCH")));
        } else {
            let post = requests.iter().find(|r| r.str("method") == "POST").unwrap();
            assert_eq!(
                post.get("responseHeaders").map(|h| h.str("upload-offset")),
                Some("65536"),
                "the creation took the first chunk: {run}"
            );
        }
    }
    assert_eq!(env.backend.requests().len(), 2);
}

/// The backend fails the first hand-off (502): tus-js-client retries (HEAD), the HEAD hands the
/// upload off again, the client succeeds, and the backend got the file exactly once.
#[test]
fn tus_js_retries_a_failed_hand_off() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(502));
    let env = start_tus_via(&relay.addr());
    let (file, data) = test_file("js-retry.bin", 150_000, 10);
    let out = tus_js(
        &endpoint(&env),
        &file,
        &[
            "--scenario",
            "chunked",
            "--chunk-size",
            "65536",
            "--retry-delays",
            "0,50,100,200,400,800,1600",
        ],
    );
    assert_eq!(out.code, Some(0), "{out}");
    let run = out.run("chunked", Some("tus-v1"));
    assert!(run.ok(), "{run}");
    let id = id_of(run.str("url"));
    assert_one_handoff(
        &backend,
        &env.nginx.path("store"),
        &id,
        &data,
        Some("js-retry.bin"),
    );
    assert_eq!(relay.connections(), 2, "one failed hand-off, one that took");
    let statuses: Vec<u64> = run
        .get("requests")
        .unwrap()
        .as_array()
        .iter()
        .filter_map(|r| r.get("status").and_then(Json::as_u64))
        .collect();
    assert!(statuses.contains(&502), "{run}");
    // Before the backend accepted, no answer said "complete".
    for r in run.get("requests").unwrap().as_array() {
        if r.str("method") == "HEAD" && r.get("status").and_then(Json::as_u64) != Some(200) {
            assert!(
                r.get("responseHeaders")
                    .is_none_or(|h| h.get("upload-offset").is_none()),
                "a HEAD before the hand-off took said an offset: {r}"
            );
        }
    }
    let path = format!("/files/{id}");
    assert_forgotten(&env, &path);
    assert_eq!(backend.requests().len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Discovery, CORS, versions
// ---------------------------------------------------------------------------------------------

/// OPTIONS: 200 with the version, every extension, the maximum and the checksum algorithms,
/// without Tus-Resumable, and without needing it.
#[test]
fn options_tells_version_extensions_max_size_and_checksums() {
    let env = start_tus();
    for uri in ["/files/", "/files/abc"] {
        for headers in [&[TUS][..], &[]] {
            let x = tus(&env, "OPTIONS", uri, headers, None);
            assert_eq!(x.status, 200, "{x}");
            assert_eq!(x.header("Tus-Resumable"), None, "{x}");
            assert_eq!(x.header("Tus-Version"), Some("1.0.0"));
            let ext: Vec<&str> = x
                .header("Tus-Extension")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .collect();
            for e in [
                "creation",
                "creation-with-upload",
                "creation-defer-length",
                "expiration",
                "checksum",
                "termination",
                "concatenation",
            ] {
                assert!(ext.contains(&e), "{e} missing: {x}");
            }
            // A final upload may name parts still being written.
            assert!(ext.contains(&"concatenation-unfinished"), "{x}");
            assert_eq!(
                x.header("Tus-Max-Size"),
                Some(MAX_SIZE.to_string().as_str())
            );
            let algos = x.header("Tus-Checksum-Algorithm").unwrap_or_default();
            assert!(algos.split(',').any(|a| a.trim() == "sha1"), "{x}");
            assert_eq!(x.header("Access-Control-Allow-Origin"), Some("*"));
        }
    }
}

/// A CORS preflight is answered (methods, request headers, max age); every other answer (a
/// creation, a refusal, the backend's answer to a hand-off) exposes the tus headers.
#[test]
fn cors_preflight_and_exposed_headers() {
    let env = start_tus();
    let x = tus(
        &env,
        "OPTIONS",
        "/files/",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "PATCH"),
            (
                "Access-Control-Request-Headers",
                "tus-resumable,upload-offset,content-type",
            ),
        ],
        None,
    );
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("Access-Control-Allow-Origin"), Some("*"));
    let methods = x.header("Access-Control-Allow-Methods").unwrap_or_default();
    for m in ["POST", "PATCH", "HEAD", "DELETE", "OPTIONS"] {
        assert!(methods.split(',').any(|v| v.trim() == m), "{m}: {x}");
    }
    let allowed = x
        .header("Access-Control-Allow-Headers")
        .unwrap_or_default()
        .to_ascii_lowercase();
    for h in [
        "tus-resumable",
        "upload-offset",
        "upload-length",
        "upload-metadata",
        "upload-checksum",
        "upload-concat",
        "content-type",
        "x-http-method-override",
    ] {
        assert!(allowed.split(',').any(|v| v.trim() == h), "{h}: {x}");
    }
    assert!(x.header("Access-Control-Max-Age").is_some(), "{x}");

    let origin = ("Origin", "https://app.example");
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, origin, ("Upload-Length", "3")],
        Some(b""),
    );
    assert_eq!(x.status, 201);
    assert_cors(&x);
    let path = path_of(x.header("Location").unwrap());
    let x = tus(&env, "HEAD", &path, &[TUS, origin], None);
    assert_cors(&x);
    let x = refused(
        &env,
        "HEAD",
        "/files/nosuchupload",
        &[TUS, origin],
        None,
        404,
        &[],
    );
    assert_cors(&x);
    let x = patch(&env, &path, 0, b"abc", &[origin]);
    assert_handed_off(&env, &x, &path, b"abc");
    assert_cors(&x);
}

/// Without `Tus-Resumable: 1.0.0` (or with another version): 412 with `Tus-Version`, nothing
/// created.
#[test]
fn wrong_or_missing_version_is_412() {
    let env = start_tus();
    let before = env.snapshot();
    for version in [None, Some("0.2.2"), Some("1.0")] {
        let mut headers = vec![("Upload-Length", "5")];
        if let Some(v) = version {
            headers.push(("Tus-Resumable", v));
        }
        let x = refused(
            &env,
            "POST",
            "/files/",
            &headers,
            Some(b""),
            412,
            &["Tus-Resumable"],
        );
        assert_eq!(x.header("Tus-Version"), Some("1.0.0"), "{x}");
    }
    let path = create(&env, Some(5), &[]);
    let x = refused(
        &env,
        "HEAD",
        &path,
        &[("Tus-Resumable", "2.0.0")],
        None,
        412,
        &[],
    );
    assert_eq!(x.header("Tus-Version"), Some("1.0.0"));
    let x = refused(
        &env,
        "PATCH",
        &path,
        &[STREAM, ("Upload-Offset", "0")],
        Some(b"hello"),
        412,
        &["Tus-Resumable"],
    );
    assert_eq!(x.header("Tus-Version"), Some("1.0.0"));
    assert_eq!(head(&env, &path).header("Upload-Offset"), Some("0"));
    // Only the one upload created above exists.
    let created: Vec<_> = env
        .snapshot()
        .into_keys()
        .filter(|p| !before.contains_key(p))
        .collect();
    assert!(
        created
            .iter()
            .all(|p| p.to_string_lossy().contains(&id_of(&path))),
        "{created:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Core and creation
// ---------------------------------------------------------------------------------------------

/// Creation, HEAD, PATCHes, and the completing PATCH handed off: every header of each answer,
/// the hand-off's fields, then the upload forgotten.
#[test]
fn create_head_patch_and_hand_off() {
    let env = start_tus();
    let data = test_data(100_000, 11);
    let meta = format!(
        "filename {},filetype {}",
        b64(b"report.pdf"),
        b64(b"application/pdf")
    );
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", "100000"), ("Upload-Metadata", &meta)],
        Some(b""),
    );
    assert_eq!(x.status, 201, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some("0"));
    assert_expires(&x);
    let location = x.header("Location").unwrap().to_string();
    let path = path_of(&location);
    let id = id_of(&location);
    assert!(id.len() >= 16, "an upload id is unguessable: {id}");

    let x = head(&env, &path);
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some("0"));
    assert_eq!(x.header("Upload-Length"), Some("100000"));
    assert_eq!(x.header("Cache-Control"), Some("no-store"));
    assert_expires(&x);
    assert!(x.body.is_empty());

    assert_patched(&patch(&env, &path, 0, &data[..40_000], &[]), 40_000);
    let x = head(&env, &path);
    assert_eq!(x.header("Upload-Offset"), Some("40000"), "{x}");
    assert_eq!(x.header("Cache-Control"), Some("no-store"));
    // An empty PATCH changes nothing.
    assert_patched(&patch(&env, &path, 40_000, b"", &[]), 40_000);
    assert_patched(
        &patch(&env, &path, 40_000, &data[40_000..99_999], &[]),
        99_999,
    );
    assert!(env.backend.requests().is_empty());

    let x = patch(&env, &path, 99_999, &data[99_999..], &[]);
    let req = assert_handed_off(&env, &x, &path, &data);
    assert_eq!(form_field(&req, "file.name"), "report.pdf");
    assert_eq!(form_field(&req, "file.content_type"), "application/pdf");
    assert_eq!(form_field(&req, "meta.filename"), "report.pdf");
    assert_eq!(form_field(&req, "upload.id"), id);
    assert_eq!(
        req.path(),
        "/files/".to_string() + &id,
        "the hand-off keeps the URI"
    );

    assert_forgotten(&env, &path);
    let offset = env.nginx.log_len();
    let x = patch(&env, &path, 100_000, b"", &[]);
    assert_eq!(x.status, 404, "{x}");
    assert_refusal_logged(&env.nginx, offset, "PATCH", &path, &[]);
    assert_eq!(env.backend.requests().len(), 1);
}

/// creation-with-upload: the POST's body is the first bytes (201 with the offset reached), or
/// the whole file (handed off by the POST, `Location` and `Upload-Offset` on the backend's
/// answer). A body of another media type is not written.
#[test]
fn creation_with_upload() {
    let env = start_tus();
    let data = test_data(50_000, 12);
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, STREAM, ("Upload-Length", "50000")],
        Some(&data[..20_000]),
    );
    assert_eq!(x.status, 201, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some("20000"));
    let path = path_of(x.header("Location").unwrap());
    let x = patch(&env, &path, 20_000, &data[20_000..], &[]);
    assert_handed_off(&env, &x, &path, &data);

    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, STREAM, ("Upload-Length", "50000")],
        Some(&data),
    );
    assert_eq!(x.status, 200, "{x}");
    let location = x
        .header("Location")
        .expect("Location on the hand-off's answer");
    let path = path_of(location);
    assert_handed_off(&env, &x, &path, &data);
    assert_forgotten(&env, &path);

    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Content-Type", "text/plain"), ("Upload-Length", "5")],
        Some(b"hello"),
    );
    assert_eq!(x.status, 201, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some("0"));
    assert_eq!(env.backend.requests().len(), 2);
}

/// creation-defer-length: HEAD says `Upload-Defer-Length: 1` until a PATCH declares the length.
#[test]
fn deferred_length() {
    let env = start_tus();
    let data = test_data(30_000, 13);
    let path = create(&env, None, &[]);
    let x = head(&env, &path);
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("Upload-Defer-Length"), Some("1"));
    assert_eq!(x.header("Upload-Length"), None);
    assert_patched(&patch(&env, &path, 0, &data[..10_000], &[]), 10_000);
    let x = head(&env, &path);
    assert_eq!(x.header("Upload-Defer-Length"), Some("1"));
    assert_eq!(x.header("Upload-Offset"), Some("10000"));
    // The length is declared with the last bytes.
    let x = patch(
        &env,
        &path,
        10_000,
        &data[10_000..],
        &[("Upload-Length", "30000")],
    );
    assert_handed_off(&env, &x, &path, &data);

    // Declared on an empty PATCH, then the bytes.
    let path = create(&env, None, &[]);
    assert_patched(&patch(&env, &path, 0, &data[..5], &[]), 5);
    assert_patched(&patch(&env, &path, 5, b"", &[("Upload-Length", "10")]), 5);
    let x = head(&env, &path);
    assert_eq!(x.header("Upload-Length"), Some("10"), "{x}");
    assert_eq!(x.header("Upload-Defer-Length"), None);
    // Another length now, or one less than the offset: refused.
    refused(
        &env,
        "PATCH",
        &path,
        &[TUS, STREAM, ("Upload-Offset", "5"), ("Upload-Length", "11")],
        Some(b""),
        400,
        &["length"],
    );
    refused(
        &env,
        "PATCH",
        &path,
        &[TUS, STREAM, ("Upload-Offset", "5"), ("Upload-Length", "4")],
        Some(b""),
        400,
        &["length"],
    );
    let x = patch(&env, &path, 5, &data[5..10], &[]);
    assert_handed_off(&env, &x, &path, &data[..10]);
}

/// A zero-length upload is complete at creation: the POST is handed off, an empty file.
#[test]
fn zero_length_upload_is_handed_off_at_creation() {
    let env = start_tus();
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[
            TUS,
            ("Upload-Length", "0"),
            (
                "Upload-Metadata",
                &format!("filename {}", b64(b"empty.txt")),
            ),
        ],
        Some(b""),
    );
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    let path = path_of(x.header("Location").expect("Location"));
    let req = assert_handed_off(&env, &x, &path, b"");
    assert_eq!(form_field(&req, "file.name"), "empty.txt");
    assert_forgotten(&env, &path);
    assert_eq!(env.backend.requests().len(), 1);
}

/// Metadata comes back on HEAD as sent (empty values included) and reaches the hand-off's
/// variables; an empty `Upload-Metadata` header is no metadata.
#[test]
fn metadata_round_trip() {
    let env = start_tus();
    let name = "r\u{e9}sum\u{e9} 2024.pdf";
    let meta = format!(
        "filename {},filetype {},is_confidential,empty ,note {}",
        b64(name.as_bytes()),
        b64(b"application/pdf"),
        b64(b"a,b c")
    );
    let path = create(&env, Some(3), &[("Upload-Metadata", &meta)]);
    let x = head(&env, &path);
    let got = x.header("Upload-Metadata").unwrap_or_else(|| panic!("{x}"));
    let pairs: Vec<(String, String)> = got
        .split(',')
        .map(|p| {
            let mut it = p.trim().splitn(2, ' ');
            (
                it.next().unwrap().to_string(),
                it.next().unwrap_or_default().trim().to_string(),
            )
        })
        .collect();
    // The pairs as sent (tus sets no order).
    let mut pairs = pairs;
    pairs.sort();
    let mut sent = vec![
        ("filename".to_string(), b64(name.as_bytes())),
        ("filetype".to_string(), b64(b"application/pdf")),
        ("is_confidential".to_string(), String::new()),
        ("empty".to_string(), String::new()),
        ("note".to_string(), b64(b"a,b c")),
    ];
    sent.sort();
    assert_eq!(pairs, sent, "{got}");
    let x = patch(&env, &path, 0, b"pdf", &[]);
    let req = assert_handed_off(&env, &x, &path, b"pdf");
    assert_eq!(form_field(&req, "file.name"), name);
    assert_eq!(form_field(&req, "meta.filename"), name);
    assert_eq!(form_field(&req, "file.content_type"), "application/pdf");

    // An empty header (tuspy sends one when it has no metadata).
    let path = create(&env, Some(2), &[("Upload-Metadata", "")]);
    let x = head(&env, &path);
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("Upload-Metadata"), None, "{x}");
    let x = patch(&env, &path, 0, b"ok", &[]);
    let req = assert_handed_off(&env, &x, &path, b"ok");
    assert_eq!(form_field(&req, "file.name"), "");
    assert_eq!(form_field(&req, "meta.filename"), "");
    assert_eq!(form_field(&req, "file.content_type"), "");
    assert_forgotten(&env, &path);

    // Malformed metadata: 400, nothing created.
    let before = env.snapshot();
    for bad in ["a YQ==,a Yg==", "a !!!", "a YQ== Yg==", "a YQ==,"] {
        refused(
            &env,
            "POST",
            "/files/",
            &[TUS, ("Upload-Length", "5"), ("Upload-Metadata", bad)],
            Some(b""),
            400,
            &["Upload-Metadata"],
        );
    }
    assert_same_files(&before, &env.snapshot());
}

/// `X-HTTP-Method-Override` turns a POST into the PATCH, HEAD or DELETE it names.
#[test]
fn method_override() {
    let env = start_tus();
    let path = create(&env, Some(6), &[]);
    let x = tus(
        &env,
        "POST",
        &path,
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("X-HTTP-Method-Override", "PATCH"),
        ],
        Some(b"abc"),
    );
    assert_patched(&x, 3);
    let x = tus(
        &env,
        "POST",
        &path,
        &[
            TUS,
            ("X-HTTP-Method-Override", "HEAD"),
            ("Content-Length", "0"),
        ],
        None,
    );
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some("3"));
    let x = tus(
        &env,
        "POST",
        &path,
        &[
            TUS,
            ("X-HTTP-Method-Override", "DELETE"),
            ("Content-Length", "0"),
        ],
        None,
    );
    assert_eq!(x.status, 204, "{x}");
    let x = poll(5, || head(&env, &path), |x| x.status == 404);
    assert_eq!(x.status, 404, "{x}");
    refused(
        &env,
        "POST",
        "/files/x1234",
        &[
            TUS,
            ("X-HTTP-Method-Override", "FROB"),
            ("Content-Length", "0"),
        ],
        None,
        405,
        &["X-HTTP-Method-Override"],
    );
}

// ---------------------------------------------------------------------------------------------
// Refusals
// ---------------------------------------------------------------------------------------------

/// 415: a PATCH without `application/offset+octet-stream`; nothing written.
#[test]
fn patch_without_the_tus_media_type_is_415() {
    let env = start_tus();
    let path = create(&env, Some(10), &[]);
    let before = env.snapshot();
    for ct in [Some("application/octet-stream"), Some("text/plain"), None] {
        let mut headers = vec![TUS, ("Upload-Offset", "0")];
        if let Some(ct) = ct {
            headers.push(("Content-Type", ct));
        }
        refused(
            &env,
            "PATCH",
            &path,
            &headers,
            Some(b"hello"),
            415,
            &["Content-Type"],
        );
    }
    assert_same_files(&before, &env.snapshot());
    assert_eq!(head(&env, &path).header("Upload-Offset"), Some("0"));
}

/// 409 with the held `Upload-Offset` when the PATCH's offset is not the upload's; not a byte
/// is written (the stored files are unchanged).
#[test]
fn offset_mismatch_is_409_and_writes_nothing() {
    let env = start_tus();
    let data = test_data(1000, 14);
    let path = create(&env, Some(1000), &[]);
    assert_patched(&patch(&env, &path, 0, &data[..500], &[]), 500);
    let before = env.snapshot();
    for offset in ["0", "499", "501", "1000"] {
        let x = refused(
            &env,
            "PATCH",
            &path,
            &[TUS, STREAM, ("Upload-Offset", offset)],
            Some(&[0xee; 100]),
            409,
            &["offset"],
        );
        assert_eq!(x.header("Upload-Offset"), Some("500"), "{x}");
    }
    assert_same_files(&before, &env.snapshot());
    let x = head(&env, &path);
    assert_eq!(x.header("Upload-Offset"), Some("500"));
    let x = patch(&env, &path, 500, &data[500..], &[]);
    assert_handed_off(&env, &x, &path, &data);
}

/// 413: a length over `upload_max_file_size` (`Tus-Max-Size`), a body past the upload's length,
/// a deferred upload's bytes past the maximum.
#[test]
fn too_large_is_413() {
    let env = start_tus();
    let over = (MAX_SIZE + 1).to_string();
    let before = env.snapshot();
    refused(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", &over)],
        Some(b""),
        413,
        &["Upload-Length"],
    );
    refused(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", "99999999999999999999999")],
        Some(b""),
        413,
        &["Upload-Length"],
    );
    refused(
        &env,
        "POST",
        "/files/",
        &[TUS, STREAM, ("Upload-Length", "5")],
        Some(b"123456"),
        413,
        &["length"],
    );
    assert_same_files(&before, &env.snapshot());
    // The maximum itself is fine.
    let max = MAX_SIZE.to_string();
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", &max)],
        Some(b""),
    );
    assert_eq!(x.status, 201, "{x}");

    let path = create(&env, Some(10), &[]);
    refused(
        &env,
        "PATCH",
        &path,
        &[TUS, STREAM, ("Upload-Offset", "0")],
        Some(b"12345678901"),
        413,
        &["length"],
    );
    assert_eq!(head(&env, &path).header("Upload-Offset"), Some("0"));
    let deferred = create(&env, None, &[]);
    refused(
        &env,
        "PATCH",
        &deferred,
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Length", &over),
        ],
        Some(b""),
        413,
        &["Upload-Length"],
    );
    let body = vec![7u8; MAX_SIZE as usize + 1];
    refused(
        &env,
        "PATCH",
        &deferred,
        &[TUS, STREAM, ("Upload-Offset", "0")],
        Some(&body),
        413,
        &["largest"],
    );
    assert_eq!(head(&env, &deferred).header("Upload-Offset"), Some("0"));
}

/// 400 for malformed creations and PATCHes; 404 for unknown uploads and paths; 405 for methods
/// an URL does not take.
#[test]
fn malformed_requests_unknown_uploads_and_methods() {
    let env = start_tus();
    let path = create(&env, Some(10), &[]);
    let before = env.snapshot();
    for headers in [
        &[TUS][..],
        &[TUS, ("Upload-Length", "-1")],
        &[TUS, ("Upload-Length", "1e3")],
        &[TUS, ("Upload-Length", "5"), ("Upload-Defer-Length", "1")],
        &[TUS, ("Upload-Defer-Length", "0")],
        &[TUS, ("Upload-Length", "5"), ("Upload-Concat", "sideways")],
    ] {
        refused(
            &env,
            "POST",
            "/files/",
            headers,
            Some(b""),
            400,
            &["Upload-"],
        );
    }
    for headers in [
        &[TUS, STREAM][..],
        &[TUS, STREAM, ("Upload-Offset", "abc")],
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Checksum", "rot13 abcd"),
        ],
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Checksum", "sha1"),
        ],
    ] {
        refused(
            &env,
            "PATCH",
            &path,
            headers,
            Some(b"abc"),
            400,
            &["Upload-"],
        );
    }
    assert_same_files(&before, &env.snapshot());
    refused(&env, "HEAD", "/files/nosuchupload0", &[TUS], None, 404, &[]);
    refused(
        &env,
        "PATCH",
        "/files/nosuchupload0",
        &[TUS, STREAM, ("Upload-Offset", "0")],
        Some(b"abc"),
        404,
        &[],
    );
    refused(
        &env,
        "DELETE",
        "/files/nosuchupload0",
        &[TUS],
        None,
        404,
        &[],
    );
    refused(&env, "HEAD", "/files/a.b", &[TUS], None, 404, &[]);
    refused(&env, "GET", &path, &[TUS], None, 405, &["GET"]);
    refused(
        &env,
        "PATCH",
        "/files/",
        &[TUS, STREAM, ("Upload-Offset", "0")],
        Some(b"abc"),
        405,
        &["PATCH"],
    );
    refused(&env, "DELETE", "/files/", &[TUS], None, 405, &["DELETE"]);
    assert!(env.backend.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Checksum, termination, concatenation, expiration
// ---------------------------------------------------------------------------------------------

/// checksum: a matching `Upload-Checksum` is taken; a mismatch is `460 Checksum Mismatch`,
/// the offset and the stored files unchanged.
#[test]
fn checksum_mismatch_is_460_and_changes_nothing() {
    let env = start_tus();
    let data = test_data(20_000, 15);
    let path = create(&env, Some(20_000), &[]);
    let good = sha1_checksum(&data[..10_000]);
    assert_patched(
        &patch(
            &env,
            &path,
            0,
            &data[..10_000],
            &[("Upload-Checksum", &good)],
        ),
        10_000,
    );
    let before = env.snapshot();
    let wrong = sha1_checksum(b"something else");
    let x = refused(
        &env,
        "PATCH",
        &path,
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "10000"),
            ("Upload-Checksum", &wrong),
        ],
        Some(&data[10_000..]),
        460,
        &["checksum"],
    );
    assert_eq!(x.reason, "Checksum Mismatch", "{x}");
    // Nothing recorded: the state is as it was, the bytes held unchanged (the body may have
    // been staged past them; the next write goes there).
    assert_same_files(&state_files(&before), &state_files(&env.snapshot()));
    let stored = files_of(&env.nginx, &id_of(&path))
        .into_iter()
        .filter(|p| p.starts_with(env.nginx.path("store")))
        .collect::<Vec<_>>();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let content = std::fs::read(&stored[0]).unwrap();
    assert_bytes_eq(&content[..10_000], &data[..10_000], "the bytes held");
    assert_eq!(head(&env, &path).header("Upload-Offset"), Some("10000"));
    assert!(env.backend.requests().is_empty());
    // The same bytes with their own digest complete the upload.
    let good = sha1_checksum(&data[10_000..]);
    let x = patch(
        &env,
        &path,
        10_000,
        &data[10_000..],
        &[("Upload-Checksum", &good)],
    );
    assert_handed_off(&env, &x, &path, &data);
}

/// The state files of a snapshot.
fn state_files(
    snapshot: &std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    snapshot
        .iter()
        .filter(|(p, _)| p.components().any(|c| c.as_os_str() == "state"))
        .map(|(p, c)| (p.clone(), c.clone()))
        .collect()
}

/// A body refused for its checksum leaves nothing in the file handed off: a deferred upload
/// refused 10 000 bytes, then completes at 5000: the backend gets exactly those 5000.
#[test]
fn a_refused_body_leaves_nothing_in_the_handed_off_file() {
    let env = start_tus();
    let data = test_data(10_000, 22);
    let path = create(&env, None, &[]);
    let wrong = sha1_checksum(b"not this");
    refused(
        &env,
        "PATCH",
        &path,
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "0"),
            ("Upload-Checksum", &wrong),
        ],
        Some(&data),
        460,
        &["checksum"],
    );
    assert_eq!(head(&env, &path).header("Upload-Offset"), Some("0"));
    let x = patch(&env, &path, 0, &data[..5000], &[("Upload-Length", "5000")]);
    assert_handed_off(&env, &x, &path, &data[..5000]);
}

/// termination: DELETE answers 204; the upload is then 404 (or 410) and its files are gone.
#[test]
fn delete_is_204_then_404_and_the_files_are_gone() {
    let env = start_tus();
    let path = create(&env, Some(1000), &[]);
    let id = id_of(&path);
    assert_patched(&patch(&env, &path, 0, &[1u8; 400], &[]), 400);
    assert!(
        !files_of(&env.nginx, &id).is_empty(),
        "the upload has files"
    );
    let x = tus(&env, "DELETE", &path, &[TUS], None);
    assert_eq!(x.status, 204, "{x}");
    assert!(x.body.is_empty());
    let left = poll(5, || files_of(&env.nginx, &id), |f| f.is_empty());
    assert!(left.is_empty(), "files remain: {left:?}");
    for (method, body) in [("HEAD", None), ("PATCH", Some(&b"x"[..])), ("DELETE", None)] {
        let headers: &[(&str, &str)] = if method == "PATCH" {
            &[TUS, STREAM, ("Upload-Offset", "400")]
        } else {
            &[TUS]
        };
        let offset = env.nginx.log_len();
        let x = tus(&env, method, &path, headers, body);
        assert!(matches!(x.status, 404 | 410), "{method} after DELETE:\n{x}");
        assert_refusal_logged(&env.nginx, offset, method, &path, &[]);
    }
    assert!(env.backend.requests().is_empty());
}

/// A `final;URL…` POST that names this many parts, in this order.
fn final_post(parts: &[&str]) -> String {
    format!("final;{}", parts.join(" "))
}

/// The HEAD of a final upload awaiting its parts: 200, `Upload-Concat` as sent, `Upload-Length`
/// when computable, never `Upload-Offset` (nor `Upload-Defer-Length`), not cached.
#[track_caller]
fn assert_awaiting(env: &UploadEnv, fin: &str, concat: &str, length: Option<&str>) {
    let x = head(env, fin);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Concat"), Some(concat), "{x}");
    assert_eq!(x.header("Upload-Length"), length, "{x}");
    assert_eq!(x.header("Upload-Offset"), None, "not assembled yet: {x}");
    assert_eq!(x.header("Upload-Defer-Length"), None, "{x}");
    assert_eq!(x.header("Cache-Control"), Some("no-store"), "{x}");
}

/// concatenation-unfinished: the final POST before its parts are complete is 201 with
/// `Location` and `Upload-Expires` and no offset; a PATCH on it is 403; completing the parts
/// (the second one first) hands it off once, in the PATCH that completes the last one, whose
/// answer is the backend's with that part's `Upload-Offset`.
#[test]
#[rustfmt::skip]
fn a_final_upload_over_unfinished_parts_is_handed_off_by_the_last_part() {
    let env = start_tus();
    let data = test_data(30_000, 16);
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, Some(10_000), &partial);
    let b = create(&env, Some(20_000), &partial);
    assert_patched(&patch(&env, &a, 0, &data[..4000], &partial), 4000);

    let concat = final_post(&[&a, &b]);
    let metadata = format!("filename {}", b64(b"whole.bin"));
    let final_post = [TUS, ("Upload-Concat", concat.as_str()), ("Upload-Metadata", metadata.as_str())];
    let x = tus(&env, "POST", "/files/", &final_post, Some(b""));
    assert_eq!(x.status, 201, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), None, "{x}");
    assert_expires(&x);
    let fin = path_of(x.header("Location").expect("a Location"));
    assert_awaiting(&env, &fin, &concat, Some("30000"));
    let before = env.snapshot();
    let x = patch(&env, &fin, 0, b"x", &[]);
    assert_eq!(x.status, 403, "PATCH on a final upload:\n{x}");
    assert_same_files(&before, &env.snapshot());

    // The second part first: complete, still nothing to hand off.
    assert_patched(&patch(&env, &b, 0, &data[10_000..], &partial), 20_000);
    assert!(env.backend.requests().is_empty(), "{:?}", env.backend.requests());
    assert_awaiting(&env, &fin, &concat, Some("30000"));
    let x = patch(&env, &a, 4000, &data[4000..10_000], &partial);
    assert_eq!(x.status, 200, "the backend's answer:\n{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), Some("10000"), "the part's offset: {x}");
    let req = assert_one_handoff(&env.backend, &env.nginx.path("store"), &id_of(&fin), &data, Some("whole.bin"));
    assert_eq!(x.text(), backend::echo_body(&req));
    assert_eq!(req.method, "POST");
    assert_forgotten(&env, &fin);
    // The parts stay, partial, never handed off themselves.
    let x = head(&env, &a);
    assert_eq!((x.status, x.header("Upload-Concat")), (200, Some("partial")), "{x}");
    assert_eq!(env.backend.requests().len(), 1);
}

/// A deferred-length part: the final upload has no `Upload-Length` until that part declares
/// its own; completing the last part of the list last hands it off.
#[test]
#[rustfmt::skip]
fn a_final_upload_over_a_deferred_length_part() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, None, &partial);
    let b = create(&env, Some(3), &partial);
    let concat = final_post(&[&b, &a]);
    let fin = create_final(&env, &concat);
    assert_awaiting(&env, &fin, &concat, None);
    assert_patched(&patch(&env, &b, 0, b"abc", &partial), 3);
    assert_patched(&patch(&env, &a, 0, b"12", &[("Upload-Length", "5"), partial[0]]), 2);
    assert_awaiting(&env, &fin, &concat, Some("8"));
    assert!(env.backend.requests().is_empty());
    let x = patch(&env, &a, 2, b"345", &partial);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), Some("5"), "{x}");
    assert_handed_off_once(&env, &fin, b"abc12345");
    assert_forgotten(&env, &fin);
    assert_eq!(env.backend.requests().len(), 1);
}

/// Two PATCHes complete the last two parts at the same moment: the final upload is handed off
/// exactly once, by one of them (its answer the backend's), the other answered 204.
#[test]
fn completing_the_last_two_parts_at_once_hands_off_once() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    for round in 0..4u8 {
        let (one, two) = (vec![round; 50_000], vec![round + 100; 60_000]);
        let a = create(&env, Some(50_000), &partial);
        let b = create(&env, Some(60_000), &partial);
        let concat = final_post(&[&a, &b]);
        let x = tus(
            &env,
            "POST",
            "/files/",
            &[TUS, ("Upload-Concat", &concat)],
            Some(b""),
        );
        assert_eq!(x.status, 201, "{x}\n{}", env.nginx.error_log());
        let fin = path_of(x.header("Location").expect("a Location"));
        let port = env.port();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let patches: Vec<_> = [(a.clone(), one.clone()), (b.clone(), two.clone())]
            .into_iter()
            .map(|(path, body)| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    send(
                        port,
                        "PATCH",
                        &path,
                        &[TUS, STREAM, ("Upload-Offset", "0"), partial[0]],
                        Some(&body),
                    )
                })
            })
            .collect();
        let answers: Vec<Exchange> = patches.into_iter().map(|t| t.join().unwrap()).collect();
        let mut statuses: Vec<u16> = answers.iter().map(|x| x.status).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 204], "round {round}: {answers:?}");
        assert_handed_off_once(&env, &fin, &[one, two].concat());
        assert_forgotten(&env, &fin);
    }
    assert_eq!(env.backend.requests().len(), 4);
}

/// The backend answers the eager hand-off 502: the completing PATCH gets it (no offset), the
/// final upload stays assembled, and a HEAD hands it off again, once (offset = length).
#[test]
#[rustfmt::skip]
fn a_final_upload_whose_eager_hand_off_failed_is_retried_by_head() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(502));
    let env = start_tus_via(&relay.addr());
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, Some(4), &partial);
    let b = create(&env, Some(4), &partial);
    assert_patched(&patch(&env, &a, 0, b"1234", &partial), 4);
    let concat = final_post(&[&a, &b]);
    let fin = create_final(&env, &concat);
    let x = patch(&env, &b, 0, b"5678", &partial);
    assert_eq!(x.status, 502, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), None, "a failed hand-off says no offset: {x}");
    assert!(backend.requests().is_empty());
    let x = poll(5, || head(&env, &fin), |x| x.status != 423);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!((x.header("Upload-Offset"), x.header("Upload-Length")), (Some("8"), Some("8")), "{x}");
    assert_eq!(x.header("Upload-Concat"), Some(concat.as_str()), "{x}");
    assert_one_handoff(&backend, &env.nginx.path("store"), &id_of(&fin), b"12345678", None);
    assert_forgotten(&env, &fin);
    assert_eq!(backend.requests().len(), 1);
    assert_eq!(relay.connections(), 2);
}

/// The final POST and the PATCH completing its last part at the same moment: whichever sees
/// the other, the final upload is handed off exactly once, by the POST (the backend's answer
/// with `Location`) or by the PATCH (the POST then 201).
#[test]
fn a_final_post_racing_the_last_patch_hands_off_once() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    for round in 0..10u8 {
        let (one, two) = (vec![round; 3000], vec![round + 50; 200_000]);
        let a = create(&env, Some(3000), &partial);
        let b = create(&env, Some(200_000), &partial);
        assert_patched(&patch(&env, &a, 0, &one, &partial), 3000);
        let concat = final_post(&[&a, &b]);
        let port = env.port();
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let completing = {
            let (barrier, b, two) = (barrier.clone(), b.clone(), two.clone());
            std::thread::spawn(move || {
                barrier.wait();
                send(
                    port,
                    "PATCH",
                    &b,
                    &[TUS, STREAM, ("Upload-Offset", "0"), partial[0]],
                    Some(&two),
                )
            })
        };
        barrier.wait();
        let post = tus(
            &env,
            "POST",
            "/files/",
            &[TUS, ("Upload-Concat", &concat)],
            Some(b""),
        );
        let patched = completing.join().unwrap();
        let fin = path_of(
            post.header("Location")
                .expect("a Location on the POST's answer"),
        );
        match (post.status, patched.status) {
            (200, 204) | (201, 200) => {}
            other => panic!("round {round}: {other:?}\n{post}\n{patched}"),
        }
        assert_handed_off_once(&env, &fin, &[one, two].concat());
        assert_forgotten(&env, &fin);
    }
    assert_eq!(env.backend.requests().len(), 10);
}

/// A final upload whose parts are all complete but which nobody assembled (its last part
/// completed by a worker that died before it looked at the final; here: the part's link taken
/// out of its state file): its next HEAD assembles it and hands it off, once.
#[test]
#[rustfmt::skip]
fn head_assembles_a_final_upload_whose_parts_are_all_complete() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, Some(3), &partial);
    let b = create(&env, Some(3), &partial);
    assert_patched(&patch(&env, &a, 0, b"abc", &partial), 3);
    let concat = final_post(&[&a, &b, &a]);
    let fin = create_final(&env, &concat);
    let states: Vec<_> = files_under(&env.nginx.path("state"))
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().contains(&id_of(&b))))
        .collect();
    assert_eq!(states.len(), 1, "{states:?}");
    let text = std::fs::read_to_string(&states[0]).unwrap();
    assert!(text.contains(&format!("awaited-by {}", id_of(&fin))), "{text}");
    let unlinked: String = text.lines().filter(|l| !l.starts_with("awaited-by")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&states[0], unlinked).unwrap();
    assert_patched(&patch(&env, &b, 0, b"def", &partial), 3);
    assert!(env.backend.requests().is_empty());
    let x = head(&env, &fin);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!((x.header("Upload-Offset"), x.header("Upload-Length")), (Some("9"), Some("9")), "{x}");
    assert_handed_off_once(&env, &fin, b"abcdefabc");
    assert_forgotten(&env, &fin);
    assert_eq!(env.backend.requests().len(), 1);
}

/// A part a final upload awaits is terminated: the final upload can never be whole. Its next
/// HEAD answers 410 and removes it (404 after); nothing is ever handed off, and completing its
/// other part hands nothing off either.
#[test]
#[rustfmt::skip]
fn a_terminated_part_makes_its_final_upload_gone() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, Some(3), &partial);
    let b = create(&env, Some(3), &partial);
    let concat = final_post(&[&a, &b]);
    let fin = create_final(&env, &concat);
    let x = tus(&env, "DELETE", &b, &[TUS], None);
    assert_eq!(x.status, 204, "{x}");
    refused(&env, "HEAD", &fin, &[TUS], None, 410, &["part 2", "gone"]);
    let left = poll(5, || files_of(&env.nginx, &id_of(&fin)), |f| f.is_empty());
    assert!(left.is_empty(), "the final upload's files remain: {left:?}");
    let x = head(&env, &fin);
    assert_eq!(x.status, 404, "{x}");

    // Found by the PATCH that completes the other part instead: removed just the same.
    let c = create(&env, Some(3), &partial);
    let concat = final_post(&[&a, &c]);
    let fin = create_final(&env, &concat);
    assert_eq!(tus(&env, "DELETE", &c, &[TUS], None).status, 204);
    assert_patched(&patch(&env, &a, 0, b"abc", &partial), 3);
    let x = head(&env, &fin);
    assert_eq!(x.status, 404, "{x}");
    assert!(files_of(&env.nginx, &id_of(&fin)).is_empty());
    assert!(env.backend.requests().is_empty());
}

/// concatenation of finished parts (one named twice): the POST of the final upload hands it
/// off, `Location` on the backend's answer; parts that are not partial, or unknown, are refused.
#[test]
fn concatenation_of_finished_parts() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, Some(3), &partial);
    let b = create(&env, Some(2), &partial);
    assert_patched(&patch(&env, &a, 0, b"abc", &partial), 3);
    assert_patched(&patch(&env, &b, 0, b"de", &partial), 2);
    let absolute_b = format!("http://127.0.0.1:{}{b}", env.port());
    let concat = format!("final;{a} {absolute_b} {a}");
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Concat", &concat)],
        Some(b""),
    );
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    let fin = path_of(
        x.header("Location")
            .expect("Location on the hand-off's answer"),
    );
    let req = assert_handed_off_once(&env, &fin, b"abcdeabc");
    assert_eq!(x.text(), backend::echo_body(&req));

    let single = create(&env, Some(1), &[]);
    for (list, status) in [
        (format!("final;{single}"), 400),
        (format!("final;{a} /files/nosuchpart00"), 404),
        ("final;/elsewhere/abc".to_string(), 400),
        ("final;".to_string(), 400),
    ] {
        refused(
            &env,
            "POST",
            "/files/",
            &[TUS, ("Upload-Concat", &list)],
            Some(b""),
            status,
            &["Upload-Concat", "part"],
        );
    }
    assert_eq!(env.backend.requests().len(), 1);
}

/// A final upload whose hand-off failed is kept, assembled: a PATCH on it is 403 (it takes no
/// bytes of its own), nothing written; a HEAD hands it off again, once.
#[test]
fn patch_on_a_final_upload_is_403() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(502));
    let env = start_tus_via(&relay.addr());
    let partial = [("Upload-Concat", "partial")];
    let a = create(&env, Some(4), &partial);
    let b = create(&env, Some(4), &partial);
    assert_patched(&patch(&env, &a, 0, b"1234", &partial), 4);
    assert_patched(&patch(&env, &b, 0, b"5678", &partial), 4);
    let concat = format!("final;{a} {b}");
    let stored_before = files_under(&env.nginx.path("store"));
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Concat", &concat)],
        Some(b""),
    );
    assert_eq!(x.status, 502, "{x}\n{}", env.nginx.error_log());
    assert_eq!(
        x.header("Location"),
        None,
        "a failed hand-off says no Location: {x}"
    );
    // The final upload's URL: the id of the file its assembly added to the store.
    let new: Vec<String> = files_under(&env.nginx.path("store"))
        .into_iter()
        .filter(|p| !stored_before.contains(p))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| {
            n.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        })
        .collect();
    assert_eq!(new.len(), 1, "the assembled file: {new:?}");
    let fin = format!("/files/{}", new[0]);
    let before = env.snapshot();
    for offset in ["0", "8"] {
        let x = poll(
            5,
            || patch(&env, &fin, offset.parse().unwrap(), b"x", &[]),
            |x| x.status != 423,
        );
        assert_eq!(x.status, 403, "PATCH on a final upload:\n{x}");
    }
    assert_same_files(&before, &env.snapshot());
    let x = poll(5, || head(&env, &fin), |x| x.status != 423);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_one_handoff(
        &backend,
        &env.nginx.path("store"),
        &id_of(&fin),
        b"12345678",
        None,
    );
    assert_forgotten(&env, &fin);
    assert_eq!(backend.requests().len(), 1);
}

/// expiration: an upload not written to for longer than `upload_state_expire` answers 404 or
/// 410, and its files go.
#[test]
fn expired_uploads_are_gone() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("2s", ""));
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Length", "10")],
        Some(b""),
    );
    assert_eq!(x.status, 201, "{x}");
    let expires = parse_imf_fixdate(x.header("Upload-Expires").expect("Upload-Expires"))
        .expect("an IMF-fixdate");
    let now = unix_now();
    assert!(
        expires >= now && expires <= now + 4,
        "expires {expires}, now {now}"
    );
    let path = path_of(x.header("Location").unwrap());
    let id = id_of(&path);
    assert_patched_loosely(&patch(&env, &path, 0, b"abc", &[]), 3);
    let x = poll(15, || head(&env, &path), |x| matches!(x.status, 404 | 410));
    assert!(
        matches!(x.status, 404 | 410),
        "still there after its expiry:\n{x}"
    );
    let left = poll(15, || files_of(&env.nginx, &id), |f| f.is_empty());
    assert!(
        left.is_empty(),
        "files of an expired upload remain: {left:?}"
    );
    let offset = env.nginx.log_len();
    let x = patch(&env, &path, 3, b"defg", &[]);
    assert!(matches!(x.status, 404 | 410), "{x}");
    assert_refusal_logged(&env.nginx, offset, "PATCH", &path, &[]);
}

/// A PATCH's 204 at `offset` (Upload-Expires checked by the caller).
#[track_caller]
fn assert_patched_loosely(x: &Exchange, offset: u64) {
    assert_eq!(x.status, 204, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some(offset.to_string().as_str()));
}

// ---------------------------------------------------------------------------------------------
// The hand-off: in progress, failed, retried
// ---------------------------------------------------------------------------------------------

/// While the backend has not answered, a HEAD never says the upload is complete (423, no
/// offset) and nothing hands it off a second time; once it answers, the PATCH gets its answer.
#[test]
fn head_during_the_hand_off_never_says_complete() {
    let gated = GatedBackend::start();
    let env = start_tus_via(&gated.addr());
    let data = test_data(10_000, 17);
    let path = create(&env, Some(10_000), &[]);
    let port = env.port();
    let body = data.clone();
    let p = path.clone();
    let completing = std::thread::spawn(move || {
        send(
            port,
            "PATCH",
            &p,
            &[TUS, STREAM, ("Upload-Offset", "0")],
            Some(&body),
        )
    });
    let seen = poll(10, || gated.requests().len(), |n| *n > 0);
    assert_eq!(seen, 1, "the hand-off did not reach the backend");
    for _ in 0..3 {
        let x = head(&env, &path);
        assert_ne!(x.status / 100, 2, "HEAD during the hand-off:\n{x}");
        assert_eq!(x.header("Upload-Offset"), None, "{x}");
        assert_eq!(x.status, 423, "{x}");
        let x = patch(&env, &path, 10_000, b"", &[]);
        assert_eq!(x.status, 423, "empty PATCH during the hand-off:\n{x}");
        assert_eq!(x.header("Upload-Offset"), None, "{x}");
    }
    assert_eq!(gated.requests().len(), 1);
    gated.open();
    let x = completing.join().unwrap();
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("Upload-Offset"), Some("10000"));
    let req = &gated.requests()[0];
    assert_eq!(x.text(), backend::echo_body(req));
    assert_forgotten(&env, &path);
    assert_eq!(gated.requests().len(), 1);
}

/// The backend answers the completing PATCH 502: the client gets a 5xx without
/// `Upload-Offset`, the upload is kept, a HEAD hands it off again (200, offset = length), and
/// then it is forgotten: one hand-off reached the backend.
#[test]
fn failed_hand_off_is_retried_by_head() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(502));
    let env = start_tus_via(&relay.addr());
    let data = test_data(5000, 18);
    let path = create(&env, Some(5000), &[]);
    let x = patch(&env, &path, 0, &data, &[]);
    assert_eq!(x.status, 502, "{x}");
    assert_eq!(
        x.header("Upload-Offset"),
        None,
        "a failed hand-off says no offset: {x}"
    );
    assert!(backend.requests().is_empty());
    // The failed request's claim goes when it is freed: until then 423; never 200 early.
    let x = poll(5, || head(&env, &path), |x| x.status != 423);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), Some("5000"));
    assert_eq!(x.header("Upload-Length"), Some("5000"));
    assert_eq!(x.header("Cache-Control"), Some("no-store"));
    assert_one_handoff(
        &backend,
        &env.nginx.path("store"),
        &id_of(&path),
        &data,
        None,
    );
    assert_eq!(relay.connections(), 2);
    assert_forgotten(&env, &path);
    let x = patch(&env, &path, 5000, b"", &[]);
    assert_eq!(x.status, 404, "{x}");
    assert_eq!(backend.requests().len(), 1, "handed off once");
    assert_eq!(relay.connections(), 2);
}

/// As above, retried by tus-js-client's other way: an empty PATCH at the end.
#[test]
fn failed_hand_off_is_retried_by_an_empty_patch() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(503));
    let env = start_tus_via(&relay.addr());
    let data = test_data(7000, 19);
    let path = create(&env, Some(7000), &[]);
    assert_patched(&patch(&env, &path, 0, &data[..3000], &[]), 3000);
    let x = patch(&env, &path, 3000, &data[3000..], &[]);
    assert_eq!(x.status, 503, "{x}");
    assert_eq!(x.header("Upload-Offset"), None, "{x}");
    let x = poll(
        5,
        || patch(&env, &path, 7000, b"", &[]),
        |x| x.status != 423,
    );
    assert_handed_off_to(&env, &backend, &x, &path, &data);
    assert_forgotten(&env, &path);
    assert_eq!(backend.requests().len(), 1);
}

/// No backend at all: the completing PATCH gets nginx's 502, every HEAD meanwhile a 5xx (it
/// tries again) and never offset = length; once a backend listens, the next HEAD hands the
/// upload off, once.
#[test]
fn no_backend_then_a_backend() {
    let port = free_port();
    let env = start_tus_via(&format!("127.0.0.1:{port}"));
    let data = test_data(4000, 20);
    let path = create(&env, Some(4000), &[]);
    let x = patch(&env, &path, 0, &data, &[]);
    assert!(x.status >= 500, "{x}");
    assert_eq!(x.header("Upload-Offset"), None, "{x}");
    for _ in 0..3 {
        let x = poll(5, || head(&env, &path), |x| x.status != 423);
        assert!(x.status >= 500, "HEAD with no backend:\n{x}");
        assert_eq!(x.header("Upload-Offset"), None, "{x}");
    }
    let late = backend::try_spawn(("127.0.0.1", port)).expect("the backend's port is free");
    let x = poll(5, || head(&env, &path), |x| x.status != 423);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), Some("4000"));
    assert_one_handoff(&late, &env.nginx.path("store"), &id_of(&path), &data, None);
    assert_forgotten(&env, &path);
    assert_eq!(late.requests().len(), 1);
}

/// A backend that refuses the file (4xx) has the last word: the client gets its answer without
/// `Upload-Offset`, and the upload is never handed off again nor called complete.
#[test]
fn a_refused_hand_off_is_final() {
    let backend = backend::spawn("127.0.0.1:0");
    let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(422));
    let env = start_tus_via(&relay.addr());
    let path = create(&env, Some(3), &[]);
    let x = patch(&env, &path, 0, b"abc", &[]);
    assert_eq!(x.status, 422, "{x}");
    assert_eq!(x.header("Upload-Offset"), None, "{x}");
    let x = poll(5, || head(&env, &path), |x| x.status != 423);
    assert!(
        matches!(x.status, 404 | 410),
        "HEAD after a refused hand-off:\n{x}"
    );
    let x = patch(&env, &path, 3, b"", &[]);
    assert!(matches!(x.status, 404 | 410), "{x}");
    assert!(backend.requests().is_empty());
    assert_eq!(relay.connections(), 1);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 (h2c, curl)
// ---------------------------------------------------------------------------------------------

/// The protocol over h2c: OPTIONS, creation with upload, HEAD, a 409, a 460, and the completing
/// PATCH handed off.
#[test]
fn tus_over_h2c() {
    let env = UploadEnv::start_server(tus_builder().http2(), &tus_server("6h", ""));
    let port = env.port();
    let data = test_data(120_000, 21);
    let x = curl_h2(port, "OPTIONS", "/files/", &[], None);
    assert_eq!((x.status, x.http_version.as_str()), (200, "2"), "{x}");
    assert_eq!(x.header("tus-version"), Some("1.0.0"));

    let x = curl_h2(
        port,
        "POST",
        "/files/",
        &[TUS, STREAM, ("Upload-Length", "120000")],
        Some(&data[..50_000]),
    );
    assert_eq!(x.status, 201, "{x}");
    assert_eq!(x.header("upload-offset"), Some("50000"));
    assert_eq!(x.header("tus-resumable"), Some("1.0.0"));
    let path = path_of(x.header("location").unwrap());

    let x = curl_h2(port, "HEAD", &path, &[TUS], None);
    assert_eq!(x.status, 200, "{x}");
    assert_eq!(x.header("upload-offset"), Some("50000"));
    assert_eq!(x.header("upload-length"), Some("120000"));
    assert_eq!(x.header("cache-control"), Some("no-store"));

    // A refusal before the body is read still gets its answer (several times: a stream
    // reset that loses the answer shows up only now and then).
    for _ in 0..8 {
        let offset = env.nginx.log_len();
        let x = curl_h2(
            port,
            "PATCH",
            &path,
            &[TUS, STREAM, ("Upload-Offset", "10")],
            Some(&data[10..20]),
        );
        assert_eq!(x.status, 409, "{x}");
        assert_eq!(x.header("upload-offset"), Some("50000"));
        assert_refusal_logged(&env.nginx, offset, "PATCH", &path, &["offset"]);
    }
    let wrong = sha1_checksum(b"nope");
    let x = curl_h2(
        port,
        "PATCH",
        &path,
        &[
            TUS,
            STREAM,
            ("Upload-Offset", "50000"),
            ("Upload-Checksum", &wrong),
        ],
        Some(&data[50_000..60_000]),
    );
    assert_eq!(x.status, 460, "{x}");
    assert_eq!(x.header("tus-resumable"), Some("1.0.0"));

    let x = curl_h2(
        port,
        "PATCH",
        &path,
        &[TUS, STREAM, ("Upload-Offset", "50000")],
        Some(&data[50_000..]),
    );
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("upload-offset"), Some("120000"));
    let req = assert_handed_off_once(&env, &path, &data);
    assert_eq!(x.text(), backend::echo_body(&req));
    assert_eq!(req.method, "POST");
}

/// A client that stops sending a PATCH without closing the connection does not lock its upload
/// out: the next request asks the stalled one to stop (whichever worker holds it), the bytes it
/// received are kept and recorded, and the upload goes on from there.
#[test]
fn a_stalled_patch_yields_to_a_newer_request() {
    let env = UploadEnv::start_server(tus_builder().worker_processes(2), &tus_server("6h", ""));
    let data = test_data(1_000_000, 23);
    let path = create(&env, Some(data.len() as u64), &[]);
    let sent = 300_000;
    let head_of_patch = format!(
        "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        data.len()
    );
    let mut stalled = std::net::TcpStream::connect(("127.0.0.1", env.port())).unwrap();
    use std::io::Write as _;
    stalled.write_all(head_of_patch.as_bytes()).unwrap();
    stalled.write_all(&data[..sent]).unwrap();
    // The stalled request holds the upload: HEADs ask it to yield until the offset shows every
    // byte it received.
    let x = poll(
        10,
        || head(&env, &path),
        |x| x.header("Upload-Offset") == Some(&sent.to_string()),
    );
    assert_eq!(
        x.header("Upload-Offset"),
        Some(sent.to_string().as_str()),
        "{x}"
    );
    assert!(
        env.nginx.error_log().contains("asked this one to stop"),
        "{}",
        env.nginx.error_log()
    );
    let x = patch(&env, &path, sent as u64, &data[sent..], &[]);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_handed_off_once(&env, &path, &data);
    drop(stalled);
}

/// The asks to yield (files beside the state) in nginx's prefix.
fn asks_to_yield(env: &UploadEnv) -> Vec<std::path::PathBuf> {
    files_under(env.nginx.prefix())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yield"))
        .collect()
}

/// A `HEAD` while a `PATCH` is being received asks the `PATCH` to yield; if the `PATCH` then
/// completes the upload before it looks, the ask goes with the upload's state, not left in
/// the store for good.
#[test]
fn an_ask_to_yield_its_writer_never_saw_goes_with_the_upload() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    let data = test_data(200_000, 24);
    let path = create(&env, Some(data.len() as u64), &[]);
    let head_of_patch = format!(
        "PATCH {path} HTTP/1.1\r\nHost: localhost\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 0\r\nContent-Type: application/offset+octet-stream\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        data.len()
    );
    let mut writing = std::net::TcpStream::connect(("127.0.0.1", env.port())).unwrap();
    use std::io::Write as _;
    writing.write_all(head_of_patch.as_bytes()).unwrap();
    writing.write_all(&data[..100_000]).unwrap();
    // A HEAD that finds the PATCH holding the upload asks it to yield.
    poll(
        10,
        || head(&env, &path),
        |_| !asks_to_yield(&env).is_empty(),
    );
    writing.write_all(&data[100_000..]).unwrap();
    let answer = read_response(&mut writing).unwrap();
    assert_eq!(answer.status, 200, "{answer}\n{}", env.nginx.error_log());
    assert_handed_off_once(&env, &path, &data);
    // The state goes once nginx has freed the request, after its answer (and the lingering
    // close this connection ends).
    drop(writing);
    let left = poll(10, || asks_to_yield(&env), Vec::is_empty);
    assert!(left.is_empty(), "asks to yield left: {left:?}");
}

/// With `lingering_close always` nginx keeps an answered request until its client closes. A
/// client that goes on at once on a new connection (to either worker) finds the upload at its
/// new offset: a retry of the same bytes gets 409 with it, a HEAD 200 with it, the next PATCH
/// 204, while every earlier request is still kept.
#[test]
fn an_answered_patch_claims_nothing_while_nginx_keeps_its_request() {
    let env = UploadEnv::start_server(
        tus_builder().worker_processes(2),
        &tus_server("6h", "lingering_close always;"),
    );
    let chunk = 4096usize;
    let chunks = 8;
    let data = test_data(chunk * chunks, 61);
    let path = create(&env, Some(data.len() as u64), &[]);
    // Every answered PATCH's connection stays open to the end: the next PATCH goes on while
    // nginx still keeps the requests before it.
    let mut held_open = Vec::new();
    for k in 0..chunks - 1 {
        let offset = k * chunk;
        let request = build_request(
            "PATCH",
            &path,
            &[TUS, STREAM, ("Upload-Offset", &offset.to_string())],
            Some(&data[offset..offset + chunk]),
        );
        // Answered, and the connection left open: nginx lingers on it, request and all.
        let mut held = std::net::TcpStream::connect(("127.0.0.1", env.port())).unwrap();
        use std::io::{Read as _, Write as _};
        held.write_all(&request).unwrap();
        let mut answer = Vec::new();
        held.read_to_end(&mut answer).unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 204"), "chunk {k}: {answer}");
        let next = offset + chunk;
        // A retry of the same bytes: 409 with the offset, not 423.
        let x = patch(&env, &path, offset as u64, &data[offset..next], &[]);
        assert_eq!(x.status, 409, "chunk {k} again:\n{x}");
        assert_eq!(x.header("Upload-Offset"), Some(next.to_string().as_str()));
        // The HEAD a client sends to resume: the offset, not 423.
        let x = head(&env, &path);
        assert_eq!(x.status, 200, "HEAD after chunk {k}:\n{x}");
        assert_eq!(x.header("Upload-Offset"), Some(next.to_string().as_str()));
        held_open.push(held);
    }
    let last = (chunks - 1) * chunk;
    let x = patch(&env, &path, last as u64, &data[last..], &[]);
    assert!(matches!(x.status, 200 | 204), "{x}");
    drop(held_open);
    assert_handed_off_once(&env, &path, &data);
}

/// A backend location that answers at once (`return`, no proxy) answers the hand-off as any
/// backend does: the client gets its status and body with the headers tus adds on success
/// (`Upload-Offset`, which tus-js-client needs on the last PATCH), and the `$upload_*`
/// variables it uses have the upload's values. Before, nginx's internal redirect had cleared
/// the module's context before such a location answered, so both were missing.
#[test]
fn a_backend_location_that_answers_at_once_gets_the_upload() {
    let server = tus_server(
        "6h",
        "upload_set_form_field file.name \"$upload_file_name\";",
    )
    .replace(
        "location @backend { proxy_pass http://{{BACKEND}}; }",
        "location @backend { return 200 \"stored $upload_file_name of $upload_file_size bytes\\n\"; }",
    );
    let env = UploadEnv::start_server(tus_builder(), &server);
    let data = test_data(5000, 26);
    // "a.txt", base64: the name tus-js-client sends in Upload-Metadata.
    let path = create(
        &env,
        Some(data.len() as u64),
        &[("Upload-Metadata", "filename YS50eHQ=")],
    );
    let x = patch(&env, &path, 0, &data[..2000], &[]);
    assert_eq!(x.status, 204, "{x}");
    let x = patch(&env, &path, 2000, &data[2000..], &[]);
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("Upload-Offset"), Some("5000"), "{x}");
    assert_eq!(x.text(), "stored a.txt of 5000 bytes\n", "{x}");
    // tus-js-client, which checks the last PATCH's Upload-Offset, finishes its upload.
    let (file, _) = test_file("js-at-once.bin", 200_000, 27);
    let out = tus_js_in_chunks(&env, &file, "chunked", &[]);
    let run = out.run("chunked", Some("tus-v1"));
    assert!(run.ok(), "tus-js-client run failed: {run}");
    assert_eq!(run.get("status").and_then(Json::as_u64), Some(200), "{run}");
    assert_eq!(
        run.str("body"),
        "stored js-at-once.bin of 200000 bytes\n",
        "{run}"
    );
}

/// Every final upload created over an unfinished part is a line in the part's state. A client
/// cannot grow it for good: past 64 finals still waiting the next is refused (400, nothing
/// stored), and finals that ended (here terminated) make room again.
#[test]
fn a_part_is_awaited_by_a_bounded_number_of_finals() {
    let env = start_tus();
    let partial = [("Upload-Concat", "partial")];
    let part = create(&env, Some(10_000), &partial);
    let concat = final_post(&[&part]);
    let finals: Vec<String> = (0..64).map(|_| create_final(&env, &concat)).collect();
    let before = env.snapshot();
    let x = tus(
        &env,
        "POST",
        "/files/",
        &[TUS, ("Upload-Concat", concat.as_str())],
        Some(b""),
    );
    assert_eq!(x.status, 400, "{x}");
    assert!(
        env.nginx
            .error_log()
            .contains("awaited by 64 unfinished final uploads"),
        "{}",
        env.nginx.error_log()
    );
    assert_same_files(&before, &env.snapshot());
    for fin in &finals[..2] {
        let x = tus(&env, "DELETE", fin, &[TUS], None);
        assert_eq!(x.status, 204, "{x}");
    }
    create_final(&env, &concat);
    let state = files_under(env.nginx.prefix())
        .into_iter()
        .find(|p| {
            p.to_string_lossy()
                .ends_with(&format!("{}.state", id_of(&part)))
        })
        .expect("the part's state");
    let lines = std::fs::read_to_string(&state).unwrap();
    assert_eq!(lines.matches("awaited-by").count(), 63, "{lines}");
}
