//! The `$upload_*` variables, as nginx-upload-module defines them. They describe the upload of
//! the current request and are used in the `upload_*_form_field` and `upload_add_header`
//! templates; outside an upload request they are "not found" (empty).

use ngx::ffi::{
    ngx_conf_t, ngx_http_add_variable, ngx_http_request_t, ngx_int_t, ngx_str_t,
    ngx_variable_value_t, NGX_ERROR, NGX_HTTP_VAR_CHANGEABLE, NGX_HTTP_VAR_NOCACHEABLE, NGX_OK,
};

use crate::handler::{ctx_of, UploadCtx};
use crate::ngx_glue::pool_str;

type Getter = fn(&UploadCtx) -> Vec<u8>;

const VARIABLES: &[(&str, Getter)] = &[
    ("upload_field_name", |ctx| ctx.field_name.clone()),
    ("upload_content_type", |ctx| ctx.content_type.clone()),
    ("upload_file_name", |ctx| ctx.file_name.clone()),
    ("upload_tmp_path", |ctx| {
        ctx.path().as_os_str().as_encoded_bytes().to_vec()
    }),
    ("upload_content_range", |ctx| {
        ctx.content_range().into_bytes()
    }),
    ("upload_file_number", |ctx| {
        ctx.file_number().to_string().into_bytes()
    }),
    ("upload_file_size", |ctx| {
        ctx.file_size().to_string().into_bytes()
    }),
    ("upload_file_md5", |ctx| digest(ctx, "upload_file_md5")),
    ("upload_file_md5_uc", |ctx| {
        digest(ctx, "upload_file_md5_uc")
    }),
    ("upload_file_sha1", |ctx| digest(ctx, "upload_file_sha1")),
    ("upload_file_sha1_uc", |ctx| {
        digest(ctx, "upload_file_sha1_uc")
    }),
    ("upload_file_sha256", |ctx| {
        digest(ctx, "upload_file_sha256")
    }),
    ("upload_file_sha256_uc", |ctx| {
        digest(ctx, "upload_file_sha256_uc")
    }),
    ("upload_file_sha512", |ctx| {
        digest(ctx, "upload_file_sha512")
    }),
    ("upload_file_sha512_uc", |ctx| {
        digest(ctx, "upload_file_sha512_uc")
    }),
    ("upload_file_crc32", |ctx| digest(ctx, "upload_file_crc32")),
];

/// A hash of the finished file; empty until the file is complete.
fn digest(ctx: &UploadCtx, variable: &str) -> Vec<u8> {
    ctx.digests
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
    NGX_OK as ngx_int_t
}

unsafe extern "C" fn get_variable(
    r: *mut ngx_http_request_t,
    v: *mut ngx_variable_value_t,
    data: usize,
) -> ngx_int_t {
    // SAFETY: nginx passes a live request and its variable value slot.
    let v = unsafe { &mut *v };
    // SAFETY: r is live; its module context is NULL or ours.
    let value = unsafe { ctx_of(r) }.map(|ctx| (VARIABLES[data].1)(ctx));
    let Some(value) = value else {
        v.set_not_found(1);
        return NGX_OK as ngx_int_t;
    };
    let Some(s) = pool_str(r, &value) else {
        return NGX_ERROR as ngx_int_t;
    };
    v.data = s.data;
    v.set_len(s.len as _);
    v.set_valid(1);
    v.set_no_cacheable(0);
    v.set_not_found(0);
    NGX_OK as ngx_int_t
}
