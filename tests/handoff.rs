//! What the backend receives when a file is complete, and what the client gets back:
//! form fields, file names, query strings, added headers, variables, raw uploads.

use ngx_upload_test_support::*;

#[test]
fn dos_and_unix_paths_are_stripped_from_the_file_name() {
    let env = UploadEnv::start("");
    let data = test_data(64, 20);
    for (id, sent, expected) in [
        ("dospath1", r"C:\\dir\\a.txt", "a.txt"),
        ("unixpath", "/home/u/b.txt", "b.txt"),
    ] {
        env.backend.clear();
        let seg = Segment {
            filename: Some(sent),
            ..Segment::piece(id, &data, 0, 63)
        };
        let r = env.post(&seg);
        env.assert_handed_off(&r, "f", expected, Some(&env.stored_path(id)), &data);
    }
}

#[test]
fn the_backends_status_is_the_clients_status() {
    let env = UploadEnv::start_server(
        Nginx::builder(),
        &UPLOAD_SERVER
            .replace("upload_pass @backend;", "upload_pass /backend/status/202;")
            .replace("{{EXTRA}}", "")
            .replace(
                "location @backend {",
                "location /backend { proxy_pass http://{{BACKEND}}; }\nlocation @unused {",
            ),
    );
    let data = test_data(10, 21);
    let r = env.post(&Segment::piece("status01", &data, 0, 9));
    assert_eq!(r.status, 202, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(r.text(), backend::echo_body(&requests[0]));
    assert_eq!(requests[0].field("f.name").as_deref(), Some("big.TXT"));
}

fn pass_args_server(setting: &str) -> String {
    format!(
        r#"
location /upload {{
    upload_pass /backend;
    upload_resumable on;
    upload_pass_args {setting};
    upload_store {{{{PREFIX}}}}/store 1;
    upload_state_store {{{{PREFIX}}}}/state 1;
    upload_set_form_field $upload_field_name.name "$upload_file_name";
}}
location /backend {{ proxy_pass http://{{{{BACKEND}}}}; }}
"#
    )
}

#[test]
fn upload_pass_args_on_passes_the_query_string() {
    let env = UploadEnv::start_server(Nginx::builder(), &pass_args_server("on"));
    let data = test_data(100, 22);
    let r = post_segment(
        env.port(),
        "/upload?user=7&tag=a%20b",
        &Segment::piece("args0001", &data, 0, 99),
    );
    assert_eq!(r.status, 200, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/backend?user=7&tag=a%20b");
    assert_eq!(
        r.echo_value("uri").as_deref(),
        Some("/backend?user=7&tag=a%20b")
    );
    assert_eq!(requests[0].field("f.name").as_deref(), Some("big.TXT"));
}

#[test]
fn upload_pass_args_off_drops_the_query_string() {
    let env = UploadEnv::start_server(Nginx::builder(), &pass_args_server("off"));
    let data = test_data(100, 23);
    let r = post_segment(
        env.port(),
        "/upload?user=7",
        &Segment::piece("args0002", &data, 0, 99),
    );
    assert_eq!(r.status, 200, "{r}");
    let requests = env.backend.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].target, "/backend");
}

#[test]
fn upload_pass_args_is_off_by_default() {
    let env = UploadEnv::start_server(
        Nginx::builder(),
        &pass_args_server("off").replace("upload_pass_args off;", ""),
    );
    let data = test_data(100, 24);
    let r = post_segment(
        env.port(),
        "/upload?x=1",
        &Segment::piece("args0003", &data, 0, 99),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(env.backend.requests()[0].target, "/backend");
}

#[test]
fn upload_add_header_appears_in_the_response() {
    let env = UploadEnv::start(
        "upload_add_header X-Upload-Id $upload_file_name;\n\
         upload_add_header X-Static fixed-value;",
    );
    let data = test_data(2_000, 25);
    let r = env.post(&Segment::piece("addhdr01", &data, 0, 999));
    assert_progress(&r, "0-999/2000");
    let r = env.post(&Segment::piece("addhdr01", &data, 1000, 1999));
    env.assert_handed_off(
        &r,
        "f",
        "big.TXT",
        Some(&env.stored_path("addhdr01")),
        &data,
    );
    assert_eq!(r.header("x-upload-id"), Some("big.TXT"), "{r}");
    assert_eq!(r.header("x-static"), Some("fixed-value"), "{r}");
}

#[test]
fn nginx_variables_work_in_form_field_names_and_values() {
    let env = UploadEnv::start(
        "set $tag hello;\n\
         upload_set_form_field \"$tag.$upload_field_name\" \"v-$tag-$request_method\";\n\
         upload_aggregate_form_field \"sum_$tag\" \"$upload_file_size bytes\";",
    );
    let data = test_data(300, 26);
    let r = env.post(&Segment::piece("vars0001", &data, 0, 299));
    let req = env.assert_handed_off(
        &r,
        "f",
        "big.TXT",
        Some(&env.stored_path("vars0001")),
        &data,
    );
    assert_eq!(req.field("hello.f").as_deref(), Some("v-hello-POST"), "{r}");
    assert_eq!(req.field("sum_hello").as_deref(), Some("300 bytes"), "{r}");
    assert_eq!(r.echo_value("hello.f").as_deref(), Some("v-hello-POST"));
}

/// A POST with a Content-Disposition but neither range nor session id is a whole file in one
/// request: stored under a new 10-digit name and handed off at once.
#[test]
fn raw_upload_without_session_gets_a_numbered_file() {
    let env = UploadEnv::start("");
    let data = test_data(150_000, 27);
    let seg = Segment::whole(&data);
    let r = env.post(&seg);
    let req = env.assert_handed_off(&r, "f", "big.TXT", None, &data);
    let path = std::path::PathBuf::from(req.field("f.path").unwrap());
    let name = path.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(name.len(), 10, "file name {name:?}");
    assert!(
        name.bytes().all(|b| b.is_ascii_digit()),
        "file name {name:?}"
    );
    assert_eq!(
        path,
        env.nginx.path("store").join(&name[9..]).join(&name),
        "stored under upload_store with its levels"
    );
    // A second raw upload gets another name.
    env.backend.clear();
    let r = env.post(&seg);
    let req = env.assert_handed_off(&r, "f", "big.TXT", None, &data);
    assert_ne!(std::path::PathBuf::from(req.field("f.path").unwrap()), path);
}

/// The backend location's own directives see the upload's variables: nginx's proxy module
/// builds the backend request during the hand-off's internal redirect, which clears the
/// module's context, so `proxy_set_header` with `$upload_file_name` sent an empty value.
#[test]
fn upload_variables_work_in_the_backend_location() {
    let server = upload_server("").replace(
        "location @backend { proxy_pass http://{{BACKEND}}; }",
        "location @backend {\n\
             proxy_set_header X-Upload-Name $upload_file_name;\n\
             proxy_set_header X-Upload-Size $upload_file_size;\n\
             proxy_pass http://{{BACKEND}};\n\
         }",
    );
    let env = UploadEnv::start_server(Nginx::builder(), &server);
    let data = test_data(1_500, 27);
    let r = env.post(&Segment::piece("backvars1", &data, 0, data.len() - 1));
    let req = env.assert_handed_off(
        &r,
        "f",
        "big.TXT",
        Some(&env.stored_path("backvars1")),
        &data,
    );
    assert_eq!(req.header("x-upload-name"), Some("big.TXT"), "{req:?}");
    assert_eq!(req.header("x-upload-size"), Some("1500"), "{req:?}");
}
