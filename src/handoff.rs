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
use crate::context::{upload_ctx, RedirectingWith, UploadCtx};
use crate::request::{push_header, RequestExt};
use crate::target::Target;
use crate::Module;

/// A form field's name and value.
pub type FormField = (Vec<u8>, Vec<u8>);

/// What nginx-upload-module sends when no field is configured, so the body is never empty.
const DUMMY_FIELD: &[u8] = b"<ngx_upload_module_dummy>";

/// Hands the finished upload off to `upload_pass`: `headers` go on the backend's answer,
/// `on_success` too if it is a 2xx (see [`header_filter`]). Returns what the request is
/// finalized with.
pub fn hand_off(
    request: &mut Request,
    ctx: &UploadCtx,
    headers: Vec<(&'static str, Vec<u8>)>,
    on_success: Vec<(&'static str, Vec<u8>)>,
) -> Result<ngx_int_t, Failure> {
    request.add_configured_headers(ctx.conf);
    for (name, value) in headers {
        request
            .push_response_header(name.as_bytes(), &value)
            .ok_or_else(|| Failure::internal("out of memory adding a header"))?;
    }
    ctx.handed_off.set(true);
    let form = match &mut *ctx.target.borrow_mut() {
        Target::Form(form) => Some(form.take_form()),
        _ => None,
    };
    *ctx.on_success.borrow_mut() = on_success;
    let rc = {
        let _reachable = RedirectingWith::new(request, ctx);
        pass_to_backend(request, ctx.conf, form)?
    };
    // The redirect cleared the module contexts; the context is still in the request pool, and
    // the backend's answer (header_filter) and the backend location's variables find it again.
    request.set_module_ctx(
        core::ptr::from_ref(ctx).cast_mut().cast(),
        <Module as ngx::http::HttpModule>::module(),
    );
    Ok(rc)
}

/// The next header filter in nginx's chain.
static mut NEXT_HEADER_FILTER: ngx::ffi::ngx_http_output_header_filter_pt = None;

/// Puts [`header_filter`] in nginx's header filter chain (postconfiguration).
///
/// # Safety
/// Called once by nginx while the configuration is read, as every filter module installs itself.
pub unsafe fn install_header_filter() {
    // SAFETY: nginx's filter chain globals, changed only during configuration.
    unsafe {
        NEXT_HEADER_FILTER = ngx::ffi::ngx_http_top_header_filter;
        ngx::ffi::ngx_http_top_header_filter = Some(header_filter);
    }
}

/// Adds a hand-off's `on_success` headers to the backend's answer when it is a 2xx: headers
/// that tell the client its upload succeeded must not reach it with a failure.
unsafe extern "C" fn header_filter(r: *mut ngx::ffi::ngx_http_request_t) -> ngx_int_t {
    // SAFETY: nginx calls header filters with a live request; the context, if any, is used
    // within this call only.
    if let Some(ctx) = unsafe { upload_ctx(r) } {
        let on_success = std::mem::take(&mut *ctx.on_success.borrow_mut());
        // SAFETY: as above.
        let request = unsafe { ngx::http::Request::from_ngx_http_request(r) };
        let status = request.as_ref().headers_out.status;
        if (200..300).contains(&status) {
            for (name, value) in on_success {
                if request
                    .push_response_header(name.as_bytes(), &value)
                    .is_none()
                {
                    return ngx::ffi::NGX_ERROR as ngx_int_t;
                }
            }
        }
    }
    // SAFETY: the next filter nginx had before this one was installed.
    match unsafe { NEXT_HEADER_FILTER } {
        Some(next) => unsafe { next(r) },
        None => ngx::ffi::NGX_OK as ngx_int_t,
    }
}

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

        // The backend gets a POST of the form whatever the client's method was (a tus PATCH, a
        // HEAD retrying a hand-off); a HEAD's client still gets no body.
        if (*r).method != ngx::ffi::NGX_HTTP_POST as usize {
            if (*r).method == ngx::ffi::NGX_HTTP_HEAD as usize {
                (*r).set_header_only(1);
            }
            (*r).method = ngx::ffi::NGX_HTTP_POST as usize;
            (*r).method_name = ngx::ngx_string!("POST");
        }
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
