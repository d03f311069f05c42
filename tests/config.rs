//! Configuration: bad directive values are refused with a message naming them. (The example
//! configs in `nginx-conf/` are tested in example_configs.rs.)

use ngx_upload_test_support::*;

/// The directives of the usual location with valid values (a control for the test below).
#[test]
fn valid_directive_values_pass_nginx_t() {
    let (ok, out) = nginx_t_server(
        &upload_server(
            "upload_buffer_size 64k;\n\
         upload_max_file_size 10m;\n\
         upload_pass_args on;\n\
         upload_tame_arrays on;\n\
         upload_cleanup 400 404 499 500-505;\n\
         upload_protocol nginx-upload;\n\
         upload_add_header X-Upload-Id $upload_file_name;",
        )
        .replace("{{BACKEND}}", "127.0.0.1:9"),
    );
    assert!(ok, "{out}");
}

#[track_caller]
fn assert_refused(server_body: &str, mentions: &[&str]) {
    let (ok, out) = nginx_t_server(&server_body.replace("{{BACKEND}}", "127.0.0.1:9"));
    assert!(!ok, "nginx -t accepted:\n{out}");
    let emerg = out
        .lines()
        .find(|l| l.contains("[emerg]"))
        .unwrap_or_else(|| panic!("no [emerg] line:\n{out}"));
    assert!(
        mentions.iter().any(|m| emerg.contains(m)),
        "the error does not mention any of {mentions:?}: {emerg}\n{out}"
    );
}

#[test]
fn upload_resumable_takes_on_or_off() {
    assert_refused(
        &upload_server("").replace("upload_resumable on;", "upload_resumable maybe;"),
        &["upload_resumable", "maybe"],
    );
}

#[test]
fn upload_protocol_takes_a_known_protocol() {
    assert_refused(
        &upload_server("upload_protocol ftp;"),
        &["upload_protocol", "ftp"],
    );
}

#[test]
fn upload_buffer_size_takes_a_size() {
    assert_refused(
        &upload_server("upload_buffer_size abc;"),
        &["upload_buffer_size", "abc"],
    );
}

#[test]
fn upload_max_file_size_takes_a_size() {
    assert_refused(
        &upload_server("upload_max_file_size 12q;"),
        &["upload_max_file_size", "12q"],
    );
}

#[test]
fn upload_store_access_takes_user_group_all() {
    assert_refused(
        &upload_server("").replace(
            "upload_store_access user:rw group:r;",
            "upload_store_access bogus;",
        ),
        &["upload_store_access", "bogus"],
    );
}

#[test]
fn upload_pass_is_given_once_and_not_empty() {
    // nginx-upload-module accepts upload_pass at every level (it only takes effect in the
    // block it is written in), so configurations that put it at server level still load.
    assert_refused(
        &upload_server("upload_pass @backend;"),
        &["upload_pass", "duplicate"],
    );
    assert_refused(
        &upload_server("").replace("upload_pass @backend;", "upload_pass \"\";"),
        &["upload_pass"],
    );
}

#[test]
fn upload_cleanup_takes_http_statuses() {
    assert_refused(
        &upload_server("upload_cleanup 99;"),
        &["upload_cleanup", "99"],
    );
    assert_refused(
        &upload_server("upload_cleanup 500-abc;"),
        &["upload_cleanup", "500-abc"],
    );
}

#[test]
fn upload_pass_args_takes_on_or_off() {
    assert_refused(
        &upload_server("upload_pass_args yes;"),
        &["upload_pass_args", "yes"],
    );
}

#[test]
fn unknown_upload_directive_is_refused() {
    assert_refused(
        &upload_server("upload_frobnicate on;"),
        &["upload_frobnicate"],
    );
}

/// The module says once, at `notice` level, which version nginx loaded.
#[test]
fn the_module_logs_its_version_at_startup() {
    let nginx = Nginx::start("location / { return 200; }");
    let log = nginx.error_log();
    let wanted = format!(
        "ngx-upload {} (nginx-upload-module compatible) loaded",
        env!("CARGO_PKG_VERSION")
    );
    let hits: Vec<&str> = log.lines().filter(|l| l.contains(&wanted)).collect();
    assert!(!hits.is_empty(), "no version line in:\n{log}");
    assert!(hits.iter().all(|l| l.contains("[notice]")), "{hits:?}");
}
