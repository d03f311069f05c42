//! The hand-off: the finished file is described in a generated `multipart/form-data` body (the
//! `upload_set_form_field` and `upload_aggregate_form_field` fields), which replaces the request
//! body before the request moves on to the `upload_pass` location.

use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_internal_redirect,
    ngx_http_named_location, ngx_http_request_t, ngx_int_t, ngx_str_t, ngx_uint_t,
    NGX_HTTP_INTERNAL_SERVER_ERROR,
};

use ngx_upload_engine::form::FormBody;

use crate::conf::UploadConf;
use crate::handler::{Failure, Target, UploadCtx};
use crate::ngx_glue::{evaluate, pool_str, push_header};

/// A form field's name and value.
pub type FormField = (Vec<u8>, Vec<u8>);

/// What nginx-upload-module sends when no field is configured, so the body is never empty.
const DUMMY_FIELD: &[u8] = b"<ngx_upload_module_dummy>";

fn internal_error(message: impl Into<String>) -> Failure {
    Failure::new(NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_uint_t, message)
}

/// Replaces the request body with the form and redirects to `upload_pass`. Returns what the
/// caller finalizes the request with.
pub fn pass_to_backend(
    r: *mut ngx_http_request_t,
    ctx: &mut UploadCtx,
) -> Result<ngx_int_t, Failure> {
    let body = build_form(r, ctx)?;
    // SAFETY: r is live; its body has been read completely.
    unsafe { replace_body(r, &body.0, &body.1)? };
    redirect(r, ctx)
}

/// The `upload_set_form_field` and `upload_aggregate_form_field` fields describing the file
/// the variables describe now; fields whose name evaluates empty are left out.
pub fn evaluate_fields(
    r: *mut ngx_http_request_t,
    conf: &UploadConf,
) -> Result<Vec<FormField>, Failure> {
    let templates = conf
        .set_fields
        .iter()
        .chain(conf.aggregate_fields.iter())
        .flatten();
    let mut fields = Vec::new();
    for t in templates {
        let name = evaluate(r, t.name)
            .ok_or_else(|| internal_error("evaluating an upload field name failed"))?;
        let value = evaluate(r, t.value)
            .ok_or_else(|| internal_error("evaluating an upload field value failed"))?;
        if !name.is_empty() {
            fields.push((name, value));
        }
    }
    Ok(fields)
}

/// The form body of the hand-off; returns (content type, body).
fn build_form(
    r: *mut ngx_http_request_t,
    ctx: &mut UploadCtx,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let mut form = match &mut ctx.target {
        Target::Multipart(upload) => std::mem::replace(&mut upload.form, FormBody::new("")),
        _ => {
            // The boundary only has to be absent from the values; the time and the connection
            // number make it differ from request to request.
            // SAFETY: r is live.
            let unique =
                unsafe { format!("{:x}{:x}", ngx::ffi::ngx_time(), (*(*r).connection).number) };
            let mut form = FormBody::new(&unique);
            for (name, value) in evaluate_fields(r, ctx.conf())? {
                form.add_field(&name, &value);
            }
            form
        }
    };
    if form.is_empty() {
        form.add_field(DUMMY_FIELD, b"");
    }
    let content_type = form.content_type().into_bytes();
    Ok((content_type, form.finish()))
}

/// # Safety
/// `r` must be live with its body fully read.
unsafe fn replace_body(
    r: *mut ngx_http_request_t,
    content_type: &[u8],
    body: &[u8],
) -> Result<(), Failure> {
    let oom = || internal_error("out of memory building the upload hand-off body");
    // SAFETY: r is live; the buffer is allocated from its pool and filled below.
    unsafe {
        let b: *mut ngx_buf_t = ngx_create_temp_buf((*r).pool, body.len());
        if b.is_null() {
            return Err(oom());
        }
        ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
        (*b).last = (*b).last.add(body.len());
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
        let cl = ngx::core::Pool::from_ngx_pool((*r).pool).calloc_type::<ngx_chain_t>();
        if cl.is_null() {
            return Err(oom());
        }
        (*cl).buf = b;
        (*cl).next = ptr::null_mut();

        let rb = &mut *(*r).request_body;
        rb.bufs = cl;
        rb.rest = 0;
        rb.temp_file = ptr::null_mut();
        (*r).set_request_body_no_buffering(0);

        let hin = &mut (*r).headers_in;
        hin.content_length_n = body.len() as _;
        hin.set_chunked(0);
        let length = body.len().to_string();
        set_request_header(
            r,
            &mut hin.content_length,
            b"Content-Length",
            length.as_bytes(),
        )
        .ok_or_else(oom)?;
        let hin = &mut (*r).headers_in;
        set_request_header(r, &mut hin.content_type, b"Content-Type", content_type)
            .ok_or_else(oom)?;
    }
    Ok(())
}

/// Sets the value of a request header nginx tracks by pointer, adding it if absent.
///
/// # Safety
/// `r` must be live and `slot` one of its `headers_in` header pointers.
unsafe fn set_request_header(
    r: *mut ngx_http_request_t,
    slot: *mut *mut ngx::ffi::ngx_table_elt_t,
    key: &[u8],
    value: &[u8],
) -> Option<()> {
    let value = pool_str(r, value)?;
    // SAFETY: slot points into r's headers_in; the element, if any, is in its headers list.
    unsafe {
        if let Some(h) = (*slot).as_mut() {
            h.value = value;
        } else {
            let h = push_header(r, &mut (*r).headers_in.headers, key, value.as_bytes())?;
            *slot = h;
        }
    }
    Some(())
}

fn redirect(r: *mut ngx_http_request_t, ctx: &UploadCtx) -> Result<ngx_int_t, Failure> {
    let conf = ctx.conf();
    let target = evaluate(r, conf.pass)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| internal_error("upload_pass evaluated to an empty location"))?;
    if target.starts_with(b"@") {
        let mut name = pool_str(r, &target).ok_or_else(|| internal_error("out of memory"))?;
        // SAFETY: r is live; the name lives in its pool.
        return Ok(unsafe { ngx_http_named_location(r, &mut name) });
    }
    let (path, own_args) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (&target[..], None),
    };
    let mut uri = pool_str(r, path).ok_or_else(|| internal_error("out of memory"))?;
    let mut args = match own_args {
        Some(a) => pool_str(r, a).ok_or_else(|| internal_error("out of memory"))?,
        // SAFETY: r is live.
        None if conf.pass_args == 1 => unsafe { (*r).args },
        None => ngx_str_t::empty(),
    };
    // SAFETY: r is live; uri and args live in its pool.
    Ok(unsafe { ngx_http_internal_redirect(r, &mut uri, &mut args) })
}
