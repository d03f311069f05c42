//! The IETF resumable-upload draft on an `upload_protocol tus` location, in the interop versions
//! it speaks (3, 5, 6 and 8), against real nginx: tus-js-client 4.3.1 with `protocol:
//! 'ietf-draft-03'` (interop version 5) and `'ietf-draft-05'` (version 6), then raw HTTP for
//! every answer of each version (the 104 interim answer, creation, offset retrieval, append,
//! cancellation, OPTIONS, the refusals), the hand-off and its failure, and h2c with curl.

use ngx_upload_test_support::flaky;
use ngx_upload_test_support::tus as tus_kit;
use ngx_upload_test_support::*;
use tus_kit::*;

const VERSIONS: [u8; 4] = [3, 5, 6, 8];
const PARTIAL_UPLOAD: (&str, &str) = ("Content-Type", "application/partial-upload");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The completion field of interop version `v` saying `complete`: v3's `Upload-Incomplete`
/// (inverted), later versions' `Upload-Complete`.
fn completion(v: u8, complete: bool) -> (&'static str, &'static str) {
    if v == 3 {
        ("Upload-Incomplete", if complete { "?0" } else { "?1" })
    } else {
        ("Upload-Complete", if complete { "?1" } else { "?0" })
    }
}

/// Asserts the answer's completion field says `complete` in version `v`.
#[track_caller]
fn assert_completion(v: u8, x: &Exchange, complete: bool) {
    let (name, value) = completion(v, complete);
    assert_eq!(
        x.header(name),
        Some(value),
        "v{v}: {name} should be {value}:\n{x}"
    );
}

/// A request in interop version `v` (the version header first); every answer echoes the
/// version.
#[track_caller]
fn ietf(
    env: &UploadEnv,
    v: u8,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Exchange {
    let version = v.to_string();
    let mut all = vec![("Upload-Draft-Interop-Version", version.as_str())];
    all.extend_from_slice(headers);
    let x = send(env.port(), method, uri, &all, body);
    assert_eq!(
        x.header("Upload-Draft-Interop-Version"),
        Some(version.as_str()),
        "v{v} {method} {uri}: every answer echoes the interop version:\n{x}"
    );
    x
}

/// [`ietf`] for a request that must be refused with `status`, the refusal logged.
#[allow(clippy::too_many_arguments)]
#[track_caller]
fn refused(
    env: &UploadEnv,
    v: u8,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    status: u16,
    needles: &[&str],
) -> Exchange {
    let offset = env.nginx.log_len();
    let x = ietf(env, v, method, uri, headers, body);
    assert_eq!(
        x.status,
        status,
        "v{v} {method} {uri} {headers:?}: expected {status}, got\n{x}\nerror.log gained:\n{}",
        env.nginx.log_since(offset)
    );
    assert_refusal_logged(&env.nginx, offset, method, uri, needles);
    x
}

/// `Upload-Limit` of version `v` (v6 and later): the maximum, and the lifetime in seconds
/// (`expires` in v6, `max-age` later), at most `lifetime` and close to it.
#[track_caller]
fn assert_limits(v: u8, x: &Exchange, lifetime: u64) {
    if v < 6 {
        assert_eq!(
            x.header("Upload-Limit"),
            None,
            "v{v} has no Upload-Limit: {x}"
        );
        return;
    }
    let limits = sf_integers(
        x.header("Upload-Limit")
            .unwrap_or_else(|| panic!("v{v}: no Upload-Limit:\n{x}")),
    );
    let get = |k: &str| limits.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    assert_eq!(get("max-size"), Some(MAX_SIZE), "{limits:?}");
    let key = if v == 6 { "expires" } else { "max-age" };
    let secs = get(key).unwrap_or_else(|| panic!("v{v}: no {key} in {limits:?}"));
    assert!(
        secs <= lifetime && secs + 120 >= lifetime,
        "v{v}: {key}={secs}, expected about {lifetime}"
    );
}

/// The `Location` path of a 104 interim answer, checked for version `v`.
#[track_caller]
fn interim_location(v: u8, x: &Exchange) -> String {
    let interim = x
        .interim
        .iter()
        .find(|i| i.status == 104)
        .unwrap_or_else(|| panic!("v{v}: no 104 interim answer:\n{x}"));
    assert_eq!(
        interim.header("Upload-Draft-Interop-Version"),
        Some(v.to_string().as_str()),
        "{interim}"
    );
    let location = interim.header("Location").expect("104 has a Location");
    if v >= 6 {
        assert!(
            interim.header("Upload-Limit").is_some(),
            "v{v} 104: {interim}"
        );
    }
    path_of(location)
}

/// Asserts `x` is the backend's answer to the one hand-off of upload `path` with `data`, with
/// the completion field (complete) and `Upload-Offset: len`.
#[track_caller]
fn assert_handed_off(
    env: &UploadEnv,
    backend: &Backend,
    v: u8,
    x: &Exchange,
    path: &str,
    data: &[u8],
) -> ReceivedRequest {
    assert_eq!(
        x.status,
        200,
        "v{v}: expected the backend's answer:\n{x}\n{}",
        env.nginx.error_log()
    );
    let req = assert_one_handoff(backend, &env.nginx.path("store"), &id_of(path), data, None);
    assert_eq!(
        x.text(),
        backend::echo_body(&req),
        "the client's answer is the backend's"
    );
    assert_completion(v, x, true);
    assert_eq!(
        x.header("Upload-Offset"),
        Some(data.len().to_string().as_str()),
        "{x}"
    );
    req
}

/// Polls HEAD (version `v`) until the upload is forgotten (404).
#[track_caller]
fn assert_forgotten(env: &UploadEnv, v: u8, path: &str) {
    let x = poll(
        5,
        || ietf(env, v, "HEAD", path, &[], None),
        |x| x.status == 404,
    );
    assert_eq!(x.status, 404, "v{v}: {path} is not forgotten:\n{x}");
}

/// An append of `body` at `offset` in version `v`, complete or not.
fn append(
    env: &UploadEnv,
    v: u8,
    path: &str,
    offset: u64,
    body: &[u8],
    complete: bool,
) -> Exchange {
    let offset = offset.to_string();
    let mut headers = vec![("Upload-Offset", offset.as_str()), completion(v, complete)];
    if v >= 6 {
        headers.push(PARTIAL_UPLOAD);
    }
    ietf(env, v, "PATCH", path, &headers, Some(body))
}

// ---------------------------------------------------------------------------------------------
// tus-js-client 4.3.1
// ---------------------------------------------------------------------------------------------

/// `ietf-draft-03` (interop version 5) and `ietf-draft-05` (version 6): one PATCH, 64 KiB
/// chunks, abort and resume, and abort with termination; every finished upload handed off once
/// with the file.
#[test]
fn tus_js_ietf_drafts_03_and_05() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    let (file, data) = test_file("js-ietf.bin", 300_001, 31);
    let endpoint = format!("http://127.0.0.1:{}/files/", env.port());
    for (protocol, version) in [("ietf-draft-03", "5"), ("ietf-draft-05", "6")] {
        env.backend.clear();
        let out = tus_js(
            &endpoint,
            &file,
            &[
                "--scenario",
                "all",
                "--protocol",
                protocol,
                "--chunk-size",
                "65536",
            ],
        );
        assert_eq!(out.code, Some(0), "{protocol}: {out}");
        for scenario in ["simple", "chunked", "abort-resume"] {
            let run = out.run(scenario, Some(protocol));
            assert!(run.ok(), "{protocol} {scenario}: {run}");
            let id = id_of(run.str("url"));
            let req = assert_one_handoff(&env.backend, &env.nginx.path("store"), &id, &data, None);
            if !run.str("body").is_empty() {
                assert_eq!(run.str("body"), backend::echo_body(&req));
            }
            for r in run.get("requests").unwrap().as_array() {
                assert_eq!(
                    r.get("headers")
                        .map(|h| h.str("Upload-Draft-Interop-Version")),
                    Some(version),
                    "{r}"
                );
                if r.get("status").is_some() {
                    assert_eq!(
                        r.get("responseHeaders")
                            .map(|h| h.str("upload-draft-interop-version")),
                        Some(version),
                        "the answer echoes the version: {r}"
                    );
                }
            }
        }
        let run = out.run("abort-resume", Some(protocol));
        let aborted = run.get("abortedAt").and_then(Json::as_u64).unwrap();
        assert!(aborted > 0);
        assert_eq!(
            run.get("resumedAt").and_then(Json::as_u64),
            Some(aborted),
            "{run}"
        );
        let run = out.run("terminate", Some(protocol));
        assert!(run.ok(), "{run}");
        assert!(matches!(
            run.get("headAfterDelete").and_then(Json::as_u64),
            Some(404 | 410)
        ));
        let id = id_of(run.str("url"));
        assert!(handoffs_of(&env.backend, &id).is_empty());
        let left = poll(5, || files_of(&env.nginx, &id), |f| f.is_empty());
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(env.backend.requests().len(), 3, "{protocol}");
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP, every version
// ---------------------------------------------------------------------------------------------

/// A whole upload in the request that creates it: the 104 interim answer (Location, the
/// version, `Upload-Limit` from v6), then the backend's answer with the completion field and
/// `Upload-Offset`; the hand-off's variables from `Content-Disposition` and `Content-Type`.
#[test]
fn upload_in_one_request_every_version() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    for v in VERSIONS {
        let data = test_data(40_000 + usize::from(v), u64::from(v));
        let x = ietf(
            &env,
            v,
            "POST",
            "/files/",
            &[
                completion(v, true),
                ("Content-Type", "image/png"),
                ("Content-Disposition", "attachment; filename=\"photo.png\""),
            ],
            Some(&data),
        );
        let path = interim_location(v, &x);
        let req = assert_handed_off(&env, &env.backend, v, &x, &path, &data);
        assert_eq!(form_field(&req, "file.name"), "photo.png");
        assert_eq!(form_field(&req, "file.content_type"), "image/png");
        assert_eq!(form_field(&req, "upload.id"), id_of(&path));
        assert_forgotten(&env, v, &path);
        env.backend.clear();
    }
}

/// Creation without the end, offset retrieval, appends, a 409, the completing append: each
/// answer's status and headers in each version.
#[test]
fn resumable_upload_every_version() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    for v in VERSIONS {
        let data = test_data(90_000, 40 + u64::from(v));
        let mut headers = vec![completion(v, false)];
        if v >= 5 {
            headers.push(("Upload-Length", "90000"));
        }
        let x = ietf(&env, v, "POST", "/files/", &headers, Some(&data[..30_000]));
        assert_eq!(x.status, 201, "v{v}:\n{x}\n{}", env.nginx.error_log());
        let path = path_of(x.header("Location").expect("Location"));
        assert_eq!(interim_location(v, &x), path);
        assert_eq!(x.header("Upload-Offset"), Some("30000"), "{x}");
        assert_completion(v, &x, false);
        assert_limits(v, &x, EXPIRE_SECS);

        let x = ietf(&env, v, "HEAD", &path, &[], None);
        assert_eq!(x.status, 204, "v{v} HEAD:\n{x}");
        assert_eq!(x.header("Upload-Offset"), Some("30000"));
        assert_completion(v, &x, false);
        assert_eq!(x.header("Cache-Control"), Some("no-store"));
        assert_eq!(
            x.header("Upload-Length"),
            (v >= 6).then_some("90000"),
            "v{v}: Upload-Length from v6: {x}"
        );
        assert_limits(v, &x, EXPIRE_SECS);

        let x = append(&env, v, &path, 30_000, &data[30_000..60_000], false);
        assert_eq!(
            x.status,
            if v == 8 { 204 } else { 201 },
            "v{v} append:\n{x}"
        );
        assert_eq!(x.header("Upload-Offset"), Some("60000"));
        assert_completion(v, &x, false);

        // A wrong offset: 409 with the held offset (a problem document from v6), nothing
        // written.
        let before = env.snapshot();
        let mut headers = vec![("Upload-Offset", "1000"), completion(v, false)];
        if v >= 6 {
            headers.push(PARTIAL_UPLOAD);
        }
        let x = refused(
            &env,
            v,
            "PATCH",
            &path,
            &headers,
            Some(&[0xaa; 500]),
            409,
            &["offset"],
        );
        assert_eq!(x.header("Upload-Offset"), Some("60000"), "{x}");
        if v >= 6 {
            assert_eq!(
                x.header("Content-Type"),
                Some("application/problem+json"),
                "{x}"
            );
            let body = x.text();
            assert!(body.contains("mismatching-upload-offset"), "{body}");
            assert!(body.contains("\"expected-offset\":60000"), "{body}");
            assert!(body.contains("\"provided-offset\":1000"), "{body}");
        }
        assert_same_files(&before, &env.snapshot());

        let x = append(&env, v, &path, 60_000, &data[60_000..], true);
        assert_handed_off(&env, &env.backend, v, &x, &path, &data);
        assert_forgotten(&env, v, &path);
        env.backend.clear();
    }
}

/// A length declared at creation (`Upload-Length`) is kept: offset retrieval tells it (v6+),
/// bytes past it are refused (400, with `inconsistent-upload-length` in v8) without a byte
/// written, and completing at another length is refused too.
#[test]
fn declared_length_is_kept_and_enforced() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    for v in [5u8, 6, 8] {
        let x = ietf(
            &env,
            v,
            "POST",
            "/files/",
            &[completion(v, false), ("Upload-Length", "10")],
            Some(b"0123"),
        );
        assert_eq!(x.status, 201, "{x}");
        let path = path_of(x.header("Location").unwrap());
        if v >= 6 {
            let x = ietf(&env, v, "HEAD", &path, &[], None);
            assert_eq!(x.header("Upload-Length"), Some("10"), "v{v}:\n{x}");
        }
        let before = env.snapshot();
        let mut headers = vec![("Upload-Offset", "4"), completion(v, false)];
        if v >= 6 {
            headers.push(PARTIAL_UPLOAD);
        }
        let x = refused(
            &env,
            v,
            "PATCH",
            &path,
            &headers,
            Some(b"456789ABCD"),
            400,
            &["length"],
        );
        if v == 8 {
            assert!(x.text().contains("inconsistent-upload-length"), "{x}");
        }
        let mut headers = vec![("Upload-Offset", "4"), completion(v, true)];
        if v >= 6 {
            headers.push(PARTIAL_UPLOAD);
        }
        refused(
            &env,
            v,
            "PATCH",
            &path,
            &headers,
            Some(b"45678"),
            400,
            &["length"],
        );
        assert_same_files(&before, &env.snapshot());
        let x = append(&env, v, &path, 4, b"456789", true);
        assert_handed_off(&env, &env.backend, v, &x, &path, b"0123456789");
        assert_forgotten(&env, v, &path);
        env.backend.clear();
    }
}

/// Up to v6 an append without the completion field is the last one.
#[test]
fn append_without_completion_field_completes_up_to_v6() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    for v in [3u8, 5, 6] {
        let x = ietf(
            &env,
            v,
            "POST",
            "/files/",
            &[completion(v, false)],
            Some(b"abc"),
        );
        assert_eq!(x.status, 201, "{x}");
        let path = path_of(x.header("Location").unwrap());
        let mut headers = vec![("Upload-Offset", "3")];
        if v >= 6 {
            headers.push(PARTIAL_UPLOAD);
        }
        let x = ietf(&env, v, "PATCH", &path, &headers, Some(b"def"));
        assert_handed_off(&env, &env.backend, v, &x, &path, b"abcdef");
        env.backend.clear();
    }
    // v8 needs the field.
    let x = ietf(
        &env,
        8,
        "POST",
        "/files/",
        &[completion(8, false)],
        Some(b"abc"),
    );
    let path = path_of(x.header("Location").unwrap());
    refused(
        &env,
        8,
        "PATCH",
        &path,
        &[("Upload-Offset", "3"), PARTIAL_UPLOAD],
        Some(b"def"),
        400,
        &["Upload-Complete"],
    );
}

/// Cancellation: DELETE answers 204; the upload is then 404 (or 410), its files gone.
#[test]
fn cancellation_every_version() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    for v in VERSIONS {
        let x = ietf(
            &env,
            v,
            "POST",
            "/files/",
            &[completion(v, false)],
            Some(&[9u8; 1000]),
        );
        assert_eq!(x.status, 201, "{x}");
        let path = path_of(x.header("Location").unwrap());
        let id = id_of(&path);
        assert!(!files_of(&env.nginx, &id).is_empty());
        let x = ietf(&env, v, "DELETE", &path, &[], None);
        assert_eq!(x.status, 204, "v{v} DELETE:\n{x}");
        let left = poll(5, || files_of(&env.nginx, &id), |f| f.is_empty());
        assert!(left.is_empty(), "v{v}: {left:?}");
        let offset = env.nginx.log_len();
        let x = ietf(&env, v, "HEAD", &path, &[], None);
        assert!(
            matches!(x.status, 404 | 410),
            "v{v} HEAD after DELETE:\n{x}"
        );
        assert_refusal_logged(&env.nginx, offset, "HEAD", &path, &[]);
    }
    assert!(env.backend.requests().is_empty());
}

/// OPTIONS: 200; from v6 `Accept-Patch: application/partial-upload` and `Upload-Limit` (the
/// maximum and the location's 6 h lifetime).
#[test]
fn options_every_version() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    for v in VERSIONS {
        let x = ietf(&env, v, "OPTIONS", "/files/", &[], None);
        assert_eq!(x.status, 200, "v{v}:\n{x}");
        if v >= 6 {
            assert_eq!(x.header("Accept-Patch"), Some("application/partial-upload"));
        }
        assert_limits(v, &x, EXPIRE_SECS);
        assert_eq!(x.header("Access-Control-Allow-Origin"), Some("*"));
        // A preflight.
        let x = ietf(
            &env,
            v,
            "OPTIONS",
            "/files/",
            &[
                ("Origin", "https://app.example"),
                ("Access-Control-Request-Method", "PUT"),
            ],
            None,
        );
        assert_eq!(x.status, 200);
        let methods = x.header("Access-Control-Allow-Methods").unwrap_or_default();
        assert!(methods.contains("PATCH") && methods.contains("HEAD"), "{x}");
        let allowed = x.header("Access-Control-Allow-Headers").unwrap_or_default();
        assert!(allowed.contains("Upload-Draft-Interop-Version"), "{x}");
        assert!(allowed.contains("Upload-Complete"), "{x}");
    }
}

/// The refusals of each version: malformed fields and unknown versions 400, the wrong media
/// type 415 (v6+), too large 413, an inconsistent length 400 (with its problem type in v8),
/// fields that offset retrieval must not carry 400 (up to v6), unknown uploads 404, methods 405.
#[test]
fn refusals_every_version() {
    let env = UploadEnv::start_server(tus_builder(), &tus_server("6h", ""));
    // An interop version this server does not speak: 400, without the version echoed.
    for bad in ["7", "4", "v6"] {
        let offset = env.nginx.log_len();
        let x = send(
            env.port(),
            "POST",
            "/files/",
            &[
                ("Upload-Draft-Interop-Version", bad),
                ("Upload-Complete", "?1"),
            ],
            Some(b"abc"),
        );
        assert_eq!(x.status, 400, "version {bad}:\n{x}");
        assert_refusal_logged(&env.nginx, offset, "POST", "/files/", &["Interop"]);
    }
    let over = (MAX_SIZE + 1).to_string();
    for v in VERSIONS {
        let before = env.snapshot();
        refused(
            &env,
            v,
            "POST",
            "/files/",
            &[],
            Some(b"abc"),
            400,
            &["Upload-"],
        );
        refused(&env, v, "GET", "/files/", &[], None, 405, &["GET"]);
        refused(&env, v, "HEAD", "/files/nosuchupload0", &[], None, 404, &[]);
        refused(
            &env,
            v,
            "DELETE",
            "/files/nosuchupload0",
            &[],
            None,
            404,
            &[],
        );
        if v >= 5 {
            refused(
                &env,
                v,
                "POST",
                "/files/",
                &[("Upload-Complete", "?2")],
                Some(b"abc"),
                400,
                &["Upload-Complete"],
            );
            refused(
                &env,
                v,
                "POST",
                "/files/",
                &[("Upload-Complete", "?0"), ("Upload-Length", &over)],
                Some(b""),
                413,
                &["largest"],
            );
            let x = refused(
                &env,
                v,
                "POST",
                "/files/",
                &[("Upload-Complete", "?1"), ("Upload-Length", "6")],
                Some(b"abcde"),
                400,
                &["Upload-Length"],
            );
            if v == 8 {
                assert!(x.text().contains("inconsistent-upload-length"), "{x}");
            }
        }
        assert_same_files(&before, &env.snapshot());

        let x = ietf(
            &env,
            v,
            "POST",
            "/files/",
            &[completion(v, false)],
            Some(b"abc"),
        );
        assert_eq!(x.status, 201, "{x}");
        let path = path_of(x.header("Location").unwrap());
        let snap = env.snapshot();
        if v >= 6 {
            refused(
                &env,
                v,
                "PATCH",
                &path,
                &[
                    ("Upload-Offset", "3"),
                    completion(v, false),
                    ("Content-Type", "application/octet-stream"),
                ],
                Some(b"def"),
                415,
                &["partial-upload"],
            );
        }
        if v <= 6 {
            refused(
                &env,
                v,
                "HEAD",
                &path,
                &[("Upload-Offset", "3")],
                None,
                400,
                &["Upload-Offset"],
            );
        }
        let mut headers = vec![("Upload-Offset", "x"), completion(v, false)];
        if v >= 6 {
            headers.push(PARTIAL_UPLOAD);
        }
        refused(
            &env,
            v,
            "PATCH",
            &path,
            &headers,
            Some(b"def"),
            400,
            &["Upload-Offset"],
        );
        let body = vec![1u8; MAX_SIZE as usize];
        let mut headers = vec![("Upload-Offset", "3"), completion(v, false)];
        if v >= 6 {
            headers.push(PARTIAL_UPLOAD);
        }
        refused(
            &env,
            v,
            "PATCH",
            &path,
            &headers,
            Some(&body),
            413,
            &["largest"],
        );
        assert_same_files(&snap, &env.snapshot());
        let x = ietf(&env, v, "HEAD", &path, &[], None);
        assert_eq!(x.header("Upload-Offset"), Some("3"), "{x}");
    }
    assert!(env.backend.requests().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The hand-off's failure
// ---------------------------------------------------------------------------------------------

/// The backend fails the completing request (502): the client gets a 5xx; the upload is kept;
/// offset retrieval hands it off again (the backend's 2xx, complete, `Upload-Offset`), once;
/// no answer before that says complete with a 2xx.
#[test]
fn failed_hand_off_is_retried_by_offset_retrieval() {
    for v in [5u8, 8] {
        let backend = backend::spawn("127.0.0.1:0");
        let relay = flaky::Relay::start(backend.addr(), flaky::Spoil::AnswerFirst(502));
        let env = start_tus_via(&relay.addr());
        let data = test_data(20_000, 50 + u64::from(v));
        let x = ietf(
            &env,
            v,
            "POST",
            "/files/",
            &[completion(v, false)],
            Some(&data[..5000]),
        );
        assert_eq!(x.status, 201, "{x}");
        let path = path_of(x.header("Location").unwrap());
        let x = append(&env, v, &path, 5000, &data[5000..], true);
        assert_eq!(x.status, 502, "v{v}:\n{x}");
        assert!(backend.requests().is_empty());
        let x = poll(
            5,
            || ietf(&env, v, "HEAD", &path, &[], None),
            |x| x.status != 423,
        );
        assert_eq!(
            x.status / 100,
            2,
            "v{v} HEAD retrying the hand-off:\n{x}\n{}",
            env.nginx.error_log()
        );
        assert_completion(v, &x, true);
        assert_eq!(x.header("Upload-Offset"), Some("20000"));
        assert_eq!(x.header("Cache-Control"), Some("no-store"));
        assert_one_handoff(
            &backend,
            &env.nginx.path("store"),
            &id_of(&path),
            &data,
            None,
        );
        assert_forgotten(&env, v, &path);
        assert_eq!(backend.requests().len(), 1);
        assert_eq!(relay.connections(), 2);
    }
}

/// While the backend has not answered, offset retrieval never says complete: 423.
#[test]
fn offset_retrieval_during_the_hand_off_is_423() {
    let gated = GatedBackend::start();
    let env = start_tus_via(&gated.addr());
    let data = test_data(8000, 60);
    let port = env.port();
    let body = data.clone();
    let creating = std::thread::spawn(move || {
        exchange(
            port,
            &build_request(
                "POST",
                "/files/",
                &[
                    ("Upload-Draft-Interop-Version", "8"),
                    ("Upload-Complete", "?1"),
                ],
                Some(&body),
            ),
            false,
        )
    });
    let seen = poll(10, || gated.requests().len(), |n| *n > 0);
    assert_eq!(seen, 1, "the hand-off did not reach the backend");
    let id = form_field(&gated.requests()[0], "upload.id");
    let path = format!("/files/{id}");
    let x = ietf(&env, 8, "HEAD", &path, &[], None);
    assert_eq!(x.status, 423, "HEAD during the hand-off:\n{x}");
    assert_ne!(x.header("Upload-Complete"), Some("?1"), "{x}");
    gated.open();
    let x = creating.join().unwrap();
    assert_eq!(interim_location(8, &x), path);
    assert_eq!(x.status, 200, "{x}");
    assert_completion(8, &x, true);
    assert_eq!(gated.requests().len(), 1);
    assert_forgotten(&env, 8, &path);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 (h2c, curl)
// ---------------------------------------------------------------------------------------------

/// Over h2c: a whole upload in its creation (v8), and a resumable one (v6): creation, offset
/// retrieval, the completing append.
#[test]
fn ietf_over_h2c() {
    let env = UploadEnv::start_server(tus_builder().http2(), &tus_server("6h", ""));
    let port = env.port();
    let data = test_data(70_000, 61);
    let x = curl_h2(
        port,
        "POST",
        "/files/",
        &[
            ("Upload-Draft-Interop-Version", "8"),
            ("Upload-Complete", "?1"),
        ],
        Some(&data),
    );
    assert_eq!(
        (x.status, x.http_version.as_str()),
        (200, "2"),
        "{x}\n{}",
        env.nginx.error_log()
    );
    assert_eq!(x.header("upload-complete"), Some("?1"));
    assert_eq!(x.header("upload-offset"), Some("70000"));
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    let id = form_field(&requests[0], "upload.id");
    assert_one_handoff(&env.backend, &env.nginx.path("store"), &id, &data, None);
    assert_eq!(x.text(), backend::echo_body(&requests[0]));
    env.backend.clear();

    let v6 = ("Upload-Draft-Interop-Version", "6");
    let x = curl_h2(
        port,
        "POST",
        "/files/",
        &[v6, ("Upload-Complete", "?0"), ("Upload-Length", "70000")],
        Some(&data[..30_000]),
    );
    assert_eq!(x.status, 201, "{x}");
    assert_eq!(x.header("upload-offset"), Some("30000"));
    let path = path_of(x.header("location").unwrap());
    let x = curl_h2(port, "HEAD", &path, &[v6], None);
    assert_eq!(x.status, 204, "{x}");
    assert_eq!(x.header("upload-offset"), Some("30000"));
    assert_eq!(x.header("upload-complete"), Some("?0"));
    assert_eq!(x.header("upload-length"), Some("70000"));
    let x = curl_h2(
        port,
        "PATCH",
        &path,
        &[
            v6,
            ("Upload-Offset", "30000"),
            ("Upload-Complete", "?1"),
            PARTIAL_UPLOAD,
        ],
        Some(&data[30_000..]),
    );
    assert_eq!(x.status, 200, "{x}\n{}", env.nginx.error_log());
    assert_eq!(x.header("upload-complete"), Some("?1"));
    assert_handed_off_once(&env, &path, &data);
}
