//! The `$upload_*` variables, as nginx-upload-module defines them. They describe the upload of
//! the current request (its [`Facts`]) and are used in the `upload_*_form_field` and
//! `upload_add_header` templates; outside an upload request they are "not found" (empty).

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_int_t, ngx_str_t,
    ngx_variable_value_t, NGX_ERROR, NGX_HTTP_VAR_CHANGEABLE, NGX_HTTP_VAR_NOCACHEABLE,
    NGX_HTTP_VAR_PREFIX, NGX_OK,
};
use ngx::http::Request;

use crate::context::{upload_ctx, Facts};
use crate::request::RequestExt;

type Getter = fn(&Facts) -> Vec<u8>;

const VARIABLES: &[(&str, Getter)] = &[
    ("upload_field_name", |f| f.file.field_name.clone()),
    ("upload_content_type", |f| f.file.content_type.clone()),
    ("upload_file_name", |f| f.file.file_name.clone()),
    ("upload_tmp_path", |f| {
        f.path.as_os_str().as_encoded_bytes().to_vec()
    }),
    ("upload_content_range", |f| {
        f.content_range.clone().into_bytes()
    }),
    ("upload_file_number", |f| {
        f.number.max(1).to_string().into_bytes()
    }),
    ("upload_file_size", |f| f.size.to_string().into_bytes()),
    ("upload_file_md5", |f| digest(f, "upload_file_md5")),
    ("upload_file_md5_uc", |f| digest(f, "upload_file_md5_uc")),
    ("upload_file_sha1", |f| digest(f, "upload_file_sha1")),
    ("upload_file_sha1_uc", |f| digest(f, "upload_file_sha1_uc")),
    ("upload_file_sha256", |f| digest(f, "upload_file_sha256")),
    ("upload_file_sha256_uc", |f| {
        digest(f, "upload_file_sha256_uc")
    }),
    ("upload_file_sha512", |f| digest(f, "upload_file_sha512")),
    ("upload_file_sha512_uc", |f| {
        digest(f, "upload_file_sha512_uc")
    }),
    ("upload_file_crc32", |f| digest(f, "upload_file_crc32")),
    ("upload_id", |f| f.id.clone()),
];

/// `$upload_metadata_<key>`: a value of the upload's metadata (tus `Upload-Metadata`).
const METADATA_PREFIX: &str = "upload_metadata_";

/// A hash of the finished file; empty until the file is complete.
fn digest(facts: &Facts, variable: &str) -> Vec<u8> {
    facts
        .digests
        .as_ref()
        .and_then(|d| d.variable(variable))
        .unwrap_or_default()
        .into_bytes()
}

/// Registers the variables; called from preconfiguration.
///
/// # Safety
/// `cf` must be the configuration being parsed.
pub unsafe fn register(cf: *mut ngx_conf_t) -> ngx_int_t {
    for (index, (name, _)) in VARIABLES.iter().enumerate() {
        let mut name = ngx_str_t {
            len: name.len(),
            data: name.as_ptr().cast_mut(),
        };
        // SAFETY: cf is valid; nginx copies the name.
        let v = unsafe {
            ngx_http_add_variable(
                cf,
                &mut name,
                (NGX_HTTP_VAR_CHANGEABLE | NGX_HTTP_VAR_NOCACHEABLE) as _,
            )
        };
        // SAFETY: v is NULL or a variable nginx owns for the configuration's lifetime.
        let Some(v) = (unsafe { v.as_mut() }) else {
            return NGX_ERROR as ngx_int_t;
        };
        v.get_handler = Some(get_variable);
        v.data = index;
    }
    let mut name = ngx_str_t {
        len: METADATA_PREFIX.len(),
        data: METADATA_PREFIX.as_ptr().cast_mut(),
    };
    // SAFETY: as above.
    let v = unsafe {
        ngx_http_add_variable(
            cf,
            &mut name,
            (NGX_HTTP_VAR_PREFIX | NGX_HTTP_VAR_NOCACHEABLE) as _,
        )
    };
    // SAFETY: as above.
    let Some(v) = (unsafe { v.as_mut() }) else {
        return NGX_ERROR as ngx_int_t;
    };
    v.get_handler = Some(get_metadata);
    NGX_OK as ngx_int_t
}

/// A prefix variable's handler gets the whole name it was asked for in `data`.
unsafe extern "C" fn get_metadata(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request, its value slot, and for a prefix variable the
    // address of the variable's name; the context is used within this call only.
    let (request, v, ctx, name) = unsafe {
        (
            Request::from_ngx_http_request(r),
            &mut *v,
            upload_ctx(r),
            (*(data as *const ngx_str_t)).as_bytes(),
        )
    };
    let key = &name[METADATA_PREFIX.len().min(name.len())..];
    let value = ctx
        .and_then(|ctx| ctx.facts.try_borrow().ok())
        .and_then(|facts| {
            facts
                .metadata
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, value)| value.clone())
        });
    set_value(request, v, value)
}

fn set_value(request: &Request, v: &mut ngx_variable_value_t, value: Option<Vec<u8>>) -> ngx_int_t {
    let Some(value) = value else {
        v.set_not_found(1);
        return NGX_OK as ngx_int_t;
    };
    let Some(s) = request.pool_str(&value) else {
        return NGX_ERROR as ngx_int_t;
    };
    v.data = s.data;
    v.set_len(s.len as _);
    v.set_valid(1);
    v.set_no_cacheable(0);
    v.set_not_found(0);
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and its variable value slot; the request's context is
    // NULL or ours, used within this call only.
    let (request, v, ctx) = unsafe { (Request::from_ngx_http_request(r), &mut *v, upload_ctx(r)) };
    // The facts are only ever borrowed mutably between template evaluations, never during one.
    let value = ctx
        .and_then(|ctx| ctx.facts.try_borrow().ok())
        .map(|facts| (VARIABLES[data].1)(&facts));
    set_value(request, v, value)
}
