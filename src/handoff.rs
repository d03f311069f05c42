//! The one hand-off, for every protocol: the finished file is described in a generated
//! `multipart/form-data` body (the `upload_set_form_field` and `upload_aggregate_form_field`
//! fields), which replaces the request body before the request moves on to the `upload_pass`
//! location, whose answer is the client's.

use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_internal_redirect,
    ngx_http_named_location, ngx_int_t, ngx_str_t, ngx_table_elt_t,
};
use ngx::http::Request;

use ngx_upload_engine::form::FormBody;
use ngx_upload_protocol::Failure;

use crate::conf::UploadConf;
use crate::request::{push_header, RequestExt};

/// A form field's name and value.
pub type FormField = (Vec<u8>, Vec<u8>);

/// What nginx-upload-module sends when no field is configured, so the body is never empty.
const DUMMY_FIELD: &[u8] = b"<ngx_upload_module_dummy>";

/// Replaces the request body with the hand-off form and redirects to `upload_pass`. `form` is
/// the form a multipart request built part by part; any other upload is described now, by the
/// variables. Returns what the caller finalizes the request with.
pub fn pass_to_backend(
    request: &mut Request,
    conf: &UploadConf,
    form: Option<FormBody>,
) -> Result<ngx_int_t, Failure> {
    let mut form = match form {
        Some(form) => form,
        None => {
            // The boundary only has to be absent from the values; the time and the connection
            // number make it differ from request to request.
            let mut form = FormBody::new(&request.unique_token());
            for (name, value) in evaluate_fields(request, conf)? {
                form.add_field(&name, &value);
            }
            form
        }
    };
    if form.is_empty() {
        form.add_field(DUMMY_FIELD, b"");
    }
    let content_type = form.content_type().into_bytes();
    replace_body(request, &content_type, &form.finish())?;
    redirect(request, conf)
}

/// The `upload_set_form_field` and `upload_aggregate_form_field` fields describing the file
/// the variables describe now; fields whose name evaluates empty are left out.
pub fn evaluate_fields(request: &Request, conf: &UploadConf) -> Result<Vec<FormField>, Failure> {
    let templates = conf
        .set_fields
        .iter()
        .chain(conf.aggregate_fields.iter())
        .flatten();
    let mut fields = Vec::new();
    for t in templates {
        let name = request
            .evaluate(t.name)
            .ok_or_else(|| Failure::internal("evaluating an upload field name failed"))?;
        let value = request
            .evaluate(t.value)
            .ok_or_else(|| Failure::internal("evaluating an upload field value failed"))?;
        if !name.is_empty() {
            fields.push((name, value));
        }
    }
    Ok(fields)
}

fn oom() -> Failure {
    Failure::internal("out of memory building the upload hand-off body")
}

/// Makes `body` the request body, read completely, with its length and type.
fn replace_body(request: &mut Request, content_type: &[u8], body: &[u8]) -> Result<(), Failure> {
    let r = request.raw();
    // SAFETY: r is this live request, whose body has been read completely; the buffer and the
    // chain link are allocated from its pool and filled before use.
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
    }
    let length = body.len().to_string();
    set_request_header(request, RequestSlot::ContentLength, length.as_bytes()).ok_or_else(oom)?;
    set_request_header(request, RequestSlot::ContentType, content_type).ok_or_else(oom)?;
    Ok(())
}

/// The request headers nginx tracks by pointer that the hand-off sets.
enum RequestSlot {
    ContentLength,
    ContentType,
}

/// Sets the value of a request header nginx tracks by pointer, adding it if absent.
fn set_request_header(request: &mut Request, slot: RequestSlot, value: &[u8]) -> Option<()> {
    let value = request.pool_str(value)?;
    let r = request.raw();
    // SAFETY: r is this live request; the slot is one of its headers_in pointers, NULL or an
    // element of its headers list.
    unsafe {
        let (slot, key): (*mut *mut ngx_table_elt_t, &[u8]) = match slot {
            RequestSlot::ContentLength => {
                (&raw mut (*r).headers_in.content_length, b"Content-Length")
            }
            RequestSlot::ContentType => (&raw mut (*r).headers_in.content_type, b"Content-Type"),
        };
        if let Some(h) = (*slot).as_mut() {
            h.value = value;
        } else {
            *slot = push_header(r, &raw mut (*r).headers_in.headers, key, value.as_bytes())?;
        }
    }
    Some(())
}

/// Moves the request on to `upload_pass`: a named location, or a URI (with its own arguments,
/// or the request's with `upload_pass_args on`).
fn redirect(request: &mut Request, conf: &UploadConf) -> Result<ngx_int_t, Failure> {
    let target = conf
        .pass
        .and_then(|pass| request.evaluate(pass))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Failure::internal("upload_pass evaluated to an empty location"))?;
    let r = request.raw();
    let out_of_memory = || Failure::internal("out of memory");
    if target.starts_with(b"@") {
        let mut name = request.pool_str(&target).ok_or_else(out_of_memory)?;
        // SAFETY: r is live; the name lives in its pool.
        return Ok(unsafe { ngx_http_named_location(r, &mut name) });
    }
    let (path, own_args) = match target.iter().position(|b| *b == b'?') {
        Some(q) => (&target[..q], Some(&target[q + 1..])),
        None => (&target[..], None),
    };
    let mut uri = request.pool_str(path).ok_or_else(out_of_memory)?;
    let mut args = match own_args {
        Some(a) => request.pool_str(a).ok_or_else(out_of_memory)?,
        None if conf.pass_args == 1 => request.as_ref().args,
        None => ngx_str_t::empty(),
    };
    // SAFETY: r is live; uri and args live in its pool.
    Ok(unsafe { ngx_http_internal_redirect(r, &mut uri, &mut args) })
}
