//! Browser forms (`multipart/form-data`): the location that takes them, a builder for their
//! bodies, and the check of the form the module hands off.

use crate::data::assert_bytes_eq;
use crate::http::build_request;
use ngx_upload_backend::Field;
use std::fs;
use std::path::{Path, PathBuf};

/// A location taking browser forms: each file becomes its five fields, fields named `title` or
/// starting with `desc` are passed on, others dropped. `{{EXTRA}}` takes more lines.
pub const FORM_SERVER: &str = r#"
location /upload {
    upload_pass @backend;
    upload_store {{PREFIX}}/store 1;
    upload_set_form_field $upload_field_name.name "$upload_file_name";
    upload_set_form_field $upload_field_name.path "$upload_tmp_path";
    upload_set_form_field $upload_field_name.content_type "$upload_content_type";
    upload_aggregate_form_field $upload_field_name.size "$upload_file_size";
    upload_aggregate_form_field $upload_field_name.number "$upload_file_number";
    upload_pass_form_field "^title$|^desc";
    {{EXTRA}}
}
location @backend { proxy_pass http://{{BACKEND}}; }
"#;

/// [`FORM_SERVER`] with `extra` lines in `location /upload`.
pub fn form_server(extra: &str) -> String {
    FORM_SERVER.replace("{{EXTRA}}", extra)
}

/// One part of a browser form.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub name: &'a str,
    /// For a file: the `filename` parameter exactly as it goes between the quotes (nothing
    /// escaped, as old browsers sent Windows paths).
    pub filename: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub data: &'a [u8],
}

impl<'a> Part<'a> {
    pub fn field(name: &'a str, value: &'a str) -> Self {
        Part {
            name,
            filename: None,
            content_type: None,
            data: value.as_bytes(),
        }
    }

    pub fn file(name: &'a str, filename: &'a str, content_type: &'a str, data: &'a [u8]) -> Self {
        Part {
            name,
            filename: Some(filename),
            content_type: Some(content_type),
            data,
        }
    }
}

/// The body of a form with these parts, delimited by `boundary`.
pub fn multipart_body(boundary: &str, parts: &[Part<'_>]) -> Vec<u8> {
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        let mut disposition = format!("Content-Disposition: form-data; name=\"{}\"", part.name);
        if let Some(filename) = part.filename {
            disposition.push_str(&format!("; filename=\"{filename}\""));
        }
        body.extend_from_slice(disposition.as_bytes());
        body.extend_from_slice(b"\r\n");
        if let Some(ct) = part.content_type {
            body.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(part.data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// A POST of a form body with this Content-Type.
pub fn form_request(uri: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    build_request("POST", uri, &[("Content-Type", content_type)], Some(body))
}

/// What the backend should find in a hand-off, in order.
#[derive(Debug, Clone, Copy)]
pub enum Expected<'a> {
    /// A passed form field, verbatim.
    Field(&'a str, &'a [u8]),
    /// A file, as the five fields of [`FORM_SERVER`]: `.name`, `.path`, `.content_type`,
    /// `.size`, `.number`; `.path` must name a file holding `data`.
    File {
        field: &'a str,
        name: &'a str,
        content_type: &'a str,
        data: &'a [u8],
        number: u32,
    },
}

/// Checks the fields of a hand-off against `expected`: the same names in the same order, the
/// same values, every `.path` a distinct file under `store` holding the file's bytes. Returns
/// the paths.
#[track_caller]
pub fn assert_form_fields(
    fields: &[Field],
    expected: &[Expected<'_>],
    store: &Path,
) -> Vec<PathBuf> {
    // (name, value; None for a path, checked on disk)
    let mut want: Vec<(String, Option<Vec<u8>>)> = Vec::new();
    let mut files: Vec<&[u8]> = Vec::new();
    for e in expected {
        match *e {
            Expected::Field(name, value) => want.push((name.to_string(), Some(value.to_vec()))),
            Expected::File {
                field,
                name,
                content_type,
                data,
                number,
            } => {
                want.push((format!("{field}.name"), Some(name.as_bytes().to_vec())));
                want.push((format!("{field}.path"), None));
                want.push((
                    format!("{field}.content_type"),
                    Some(content_type.as_bytes().to_vec()),
                ));
                want.push((
                    format!("{field}.size"),
                    Some(data.len().to_string().into_bytes()),
                ));
                want.push((
                    format!("{field}.number"),
                    Some(number.to_string().into_bytes()),
                ));
                files.push(data);
            }
        }
    }
    let got_names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    let want_names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        got_names, want_names,
        "hand-off field names; fields: {fields:#?}"
    );
    let mut paths = Vec::new();
    for (field, (name, value)) in fields.iter().zip(&want) {
        assert!(
            field.filename.is_none(),
            "hand-off field {name} is a file part"
        );
        match value {
            Some(v) => assert_eq!(
                field.value_str(),
                String::from_utf8_lossy(v),
                "value of hand-off field {name}"
            ),
            None => paths.push(PathBuf::from(field.value_str())),
        }
    }
    for (path, data) in paths.iter().zip(&files) {
        assert!(
            path.starts_with(store),
            "{} is not under upload_store {}",
            path.display(),
            store.display()
        );
        let content = fs::read(path)
            .unwrap_or_else(|e| panic!("cannot read the stored file {}: {e}", path.display()));
        assert_bytes_eq(&content, data, &format!("stored file {}", path.display()));
    }
    let distinct: std::collections::BTreeSet<_> = paths.iter().collect();
    assert_eq!(
        distinct.len(),
        paths.len(),
        "two files share a path: {paths:?}"
    );
    paths
}
