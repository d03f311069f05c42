//! A resumable segment inside a browser form, as nginx-upload-module has it: a file part with
//! `Content-Range` and a session id (its own `Session-ID` part header or the request's) is
//! written at its offset in the session's file; the request answers `201` with the ranges held
//! until the file is complete, then hands it off with the form's passed fields.

use ngx_upload_test_support::*;

const BOUNDARY: &str = "----seg7MA4YWxkTrZu0gW";

fn server() -> String {
    form_server(
        "upload_resumable on;\n    upload_state_store {{PREFIX}}/state 1;\n    \
         upload_aggregate_form_field $upload_field_name.md5 $upload_file_md5;\n    \
         upload_aggregate_form_field range $upload_content_range;",
    )
}

/// A form: a `title` field, then the file part with `part_headers`.
fn form(title: &str, part_headers: &str, data: &[u8]) -> Vec<u8> {
    let mut body = format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n{title}\r\n\
         --{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"video.bin\"\r\n\
         Content-Type: application/octet-stream\r\n{part_headers}\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn post(env: &UploadEnv, body: &[u8], extra: &[(&str, &str)]) -> Response {
    let content_type = format!("multipart/form-data; boundary={BOUNDARY}");
    let mut headers = vec![("Content-Type", content_type.as_str())];
    headers.extend_from_slice(extra);
    send_raw(
        env.port(),
        &build_request("POST", "/upload", &headers, Some(body)),
    )
}

fn segment_headers(id: &str, a: usize, b: usize, total: usize) -> String {
    format!("Content-Range: bytes {a}-{b}/{total}\r\nSession-ID: {id}\r\n")
}

#[test]
fn segments_in_form_parts_assemble_and_hand_off() {
    let env = UploadEnv::start_server(Nginx::builder(), &server());
    let data = test_data(120_000, 131);
    let id = "formseg01";
    let total = data.len();
    // The second half first: segments of a form may come in any order too.
    let r = post(
        &env,
        &form(
            "part two",
            &segment_headers(id, 60_000, 119_999, total),
            &data[60_000..],
        ),
        &[],
    );
    assert_progress(&r, "60000-119999/120000");
    assert!(env.backend.requests().is_empty());
    let stored = env.nginx.path("store").join("1").join(id);
    assert!(stored.is_file(), "the session's file is named by its id");

    let r = post(
        &env,
        &form(
            "part one",
            &segment_headers(id, 0, 59_999, total),
            &data[..60_000],
        ),
        &[],
    );
    let fields = env.single_handoff(r.status, &r.text(), &r);
    let get = |name: &str| {
        fields
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no field {name}: {fields:#?}"))
            .value_str()
    };
    assert_eq!(get("title"), "part one");
    assert_eq!(get("file.name"), "video.bin");
    assert_eq!(get("file.content_type"), "application/octet-stream");
    assert_eq!(get("file.size"), total.to_string());
    assert_eq!(get("file.path"), stored.display().to_string());
    assert_eq!(get("range"), "bytes 0-59999/120000");
    assert_eq!(get("file.md5"), digest_of_bytes("md5sum", &data));
    assert_bytes_eq(&std::fs::read(&stored).unwrap(), &data, "assembled file");
}

#[test]
fn the_request_session_id_serves_a_part_without_one() {
    let env = UploadEnv::start_server(Nginx::builder(), &server());
    let data = test_data(10_000, 132);
    let id = "formseg02";
    let part = |a: usize, b: usize| format!("X-Content-Range: bytes {a}-{b}/10000\r\n");
    let r = post(
        &env,
        &form("t", &part(0, 4_999), &data[..5_000]),
        &[("X-Session-ID", id)],
    );
    assert_progress(&r, "0-4999/10000");
    let r = post(
        &env,
        &form("t", &part(5_000, 9_999), &data[5_000..]),
        &[("X-Session-ID", id)],
    );
    assert_eq!(r.status, 200, "{r}");
    assert_bytes_eq(
        &std::fs::read(env.nginx.path("store").join("2").join(id)).unwrap(),
        &data,
        "assembled file",
    );
}

#[test]
fn a_part_that_does_not_fill_its_range_is_refused() {
    let env = UploadEnv::start_server(Nginx::builder(), &server());
    let data = test_data(10_000, 133);
    let id = "formseg03";
    env.expect_status(
        &form_request(
            "/upload",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            &form("t", &segment_headers(id, 0, 4_999, 10_000), &data[..4_000]),
        ),
        416,
        &["does not fill its Content-Range"],
    );
    assert_eq!(env.report(id), "", "nothing recorded");
    // Its claim on 0-4999 goes when nginx frees it, maybe after the answer.
    env.nginx.wait_idle();
    env.expect_status(
        &form_request(
            "/upload",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            &form("t", &segment_headers(id, 0, 999, 10_000), &data[..2_000]),
        ),
        416,
        &["longer than the 1000 bytes of its Content-Range"],
    );
    env.expect_status(
        &form_request(
            "/upload",
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            &form("t", "Content-Range: bytes 0-999/10000\r\n", &data[..1_000]),
        ),
        400,
        &["needs a session id"],
    );
    assert!(env.backend.requests().is_empty());
}
