//! Small pieces of nginx plumbing the handlers share: reading request headers, adding response
//! headers, evaluating complex values, sending the short answers the module makes itself.

use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_complex_value, ngx_http_complex_value_t,
    ngx_http_output_filter, ngx_http_request_t, ngx_http_send_header, ngx_int_t, ngx_list_push,
    ngx_list_t, ngx_str_t, ngx_table_elt_t, NGX_ERROR, NGX_HTTP_OK, NGX_OK,
};

use ngx_upload_engine::state::SessionState;

use crate::conf::UploadConf;

pub const NGX_HTTP_CREATED: ngx_int_t = 201;

/// The request headers the upload protocol reads.
#[derive(Default)]
pub struct RequestHeaders<'a> {
    pub content_type: Option<&'a [u8]>,
    pub content_disposition: Option<&'a [u8]>,
    pub content_range: Option<&'a [u8]>,
    pub session_id: Option<&'a [u8]>,
    /// `content_length_n`: -1 when absent.
    pub content_length: i64,
    pub chunked: bool,
}

impl<'a> RequestHeaders<'a> {
    /// Reads them from a request. `X-Content-Range` and `X-Session-ID` win over the plain names
    /// when a client sends both.
    ///
    /// # Safety
    /// `r` must be a live request; the result borrows its header memory.
    pub unsafe fn of(r: *mut ngx_http_request_t) -> Self {
        // SAFETY: the caller guarantees r is live.
        let hin = unsafe { &(*r).headers_in };
        let mut out = RequestHeaders {
            content_length: hin.content_length_n,
            chunked: hin.chunked() != 0,
            ..Default::default()
        };
        // SAFETY: content_type is NULL or an element of the headers list.
        if let Some(ct) = unsafe { hin.content_type.as_ref() } {
            out.content_type = Some(ct.value.as_bytes());
        }
        let (mut plain_range, mut plain_session) = (None, None);
        // SAFETY: the headers list of a live request.
        for h in unsafe { list_items::<ngx_table_elt_t>(&hin.headers) } {
            let key = h.key.as_bytes();
            let value = Some(h.value.as_bytes());
            if key.eq_ignore_ascii_case(b"content-disposition") {
                out.content_disposition = value;
            } else if key.eq_ignore_ascii_case(b"x-content-range") {
                out.content_range = value;
            } else if key.eq_ignore_ascii_case(b"content-range") {
                plain_range = value;
            } else if key.eq_ignore_ascii_case(b"x-session-id") {
                out.session_id = value;
            } else if key.eq_ignore_ascii_case(b"session-id") {
                plain_session = value;
            }
        }
        out.content_range = out.content_range.or(plain_range);
        out.session_id = out.session_id.or(plain_session);
        out
    }
}

/// Every element of an `ngx_list_t`.
///
/// # Safety
/// The list must be initialised and hold elements of type `T`.
pub unsafe fn list_items<'a, T: 'a>(list: &'a ngx_list_t) -> impl Iterator<Item = &'a T> + 'a {
    let mut part = ptr::from_ref(&list.part);
    let mut i = 0usize;
    core::iter::from_fn(move || loop {
        // SAFETY: parts form a NULL-terminated chain of arrays of `nelts` elements of T.
        let p = unsafe { part.as_ref()? };
        if i < p.nelts {
            i += 1;
            // SAFETY: i - 1 < nelts.
            return Some(unsafe { &*p.elts.cast::<T>().add(i - 1) });
        }
        part = p.next;
        i = 0;
    })
}

/// Copies bytes into the request pool.
pub fn pool_str(r: *mut ngx_http_request_t, bytes: &[u8]) -> Option<ngx_str_t> {
    // SAFETY: r is a live request, so its pool is valid.
    unsafe { ngx_str_t::from_bytes((*r).pool, bytes) }
}

/// Evaluates a compiled template for a request.
pub fn evaluate(r: *mut ngx_http_request_t, cv: *mut ngx_http_complex_value_t) -> Option<Vec<u8>> {
    let mut out = ngx_str_t::empty();
    // SAFETY: cv was compiled at configuration time; r is live.
    if unsafe { ngx_http_complex_value(r, cv, &mut out) } != NGX_OK as ngx_int_t {
        return None;
    }
    Some(out.as_bytes().to_vec())
}

/// Appends a header to a list (request or response headers).
///
/// # Safety
/// `r` must be live and `list` one of its header lists.
pub unsafe fn push_header(
    r: *mut ngx_http_request_t,
    list: *mut ngx_list_t,
    key: &[u8],
    value: &[u8],
) -> Option<*mut ngx_table_elt_t> {
    // SAFETY: the caller guarantees the list belongs to the live request.
    let h = unsafe { ngx_list_push(list) }.cast::<ngx_table_elt_t>();
    if h.is_null() {
        return None;
    }
    // SAFETY: ngx_list_push returned room for one element; zeroing covers the fields some
    // nginx versions have (`next`) and others do not.
    unsafe {
        ptr::write_bytes(h, 0, 1);
        nginx_sys::add_to_ngx_table(h, (*r).pool, key, value)?;
    }
    Some(h)
}

/// `upload_add_header`: evaluated now, added to the response when name and value are non-empty.
pub fn add_configured_headers(r: *mut ngx_http_request_t, conf: &UploadConf) {
    for t in conf.add_headers.as_deref().unwrap_or_default() {
        let (Some(name), Some(value)) = (evaluate(r, t.name), evaluate(r, t.value)) else {
            continue;
        };
        if !name.is_empty() && !value.is_empty() {
            // SAFETY: r is live; headers_out.headers is its response header list.
            unsafe { push_header(r, &mut (*r).headers_out.headers, &name, &value) };
        }
    }
}

/// `201 Created` with the ranges held, in a `Range` header and as the body, as the seed
/// protocol and nginx-upload-module answer an incomplete upload.
pub fn answer_progress(r: *mut ngx_http_request_t, state: &SessionState) -> ngx_int_t {
    answer_report(r, NGX_HTTP_CREATED, state)
}

/// `200 OK` with the same report, for a client asking what a session holds.
pub fn answer_status(r: *mut ngx_http_request_t, state: &SessionState) -> ngx_int_t {
    answer_report(r, NGX_HTTP_OK as ngx_int_t, state)
}

fn answer_report(r: *mut ngx_http_request_t, status: ngx_int_t, state: &SessionState) -> ngx_int_t {
    let report = state.received.report(state.total).to_string();
    // SAFETY: r is live.
    unsafe {
        (*r).headers_out.status = status as _;
        if push_header(
            r,
            &mut (*r).headers_out.headers,
            b"Range",
            report.as_bytes(),
        )
        .is_none()
        {
            return NGX_ERROR as ngx_int_t;
        }
    }
    send_body(r, report.as_bytes())
}

/// `OPTIONS`: an empty 200 with the configured headers (CORS preflight setups rely on it).
pub fn answer_options(r: *mut ngx_http_request_t, conf: &UploadConf) -> ngx_int_t {
    add_configured_headers(r, conf);
    // SAFETY: r is live.
    unsafe { (*r).headers_out.status = NGX_HTTP_OK as _ };
    send_body(r, b"")
}

/// Sends the response header and a small in-memory body; returns what finalize expects.
fn send_body(r: *mut ngx_http_request_t, body: &[u8]) -> ngx_int_t {
    // SAFETY: r is live and no response has been sent yet.
    unsafe {
        (*r).headers_out.content_length_n = body.len() as _;
        if body.is_empty() {
            // An empty buffer would be a "zero size buf" to the output chain.
            (*r).set_header_only(1);
        }
        let rc = ngx_http_send_header(r);
        if rc == NGX_ERROR as ngx_int_t || rc > NGX_OK as ngx_int_t || (*r).header_only() != 0 {
            return rc;
        }
        let b: *mut ngx_buf_t = ngx_create_temp_buf((*r).pool, body.len().max(1));
        if b.is_null() {
            return NGX_ERROR as ngx_int_t;
        }
        ptr::copy_nonoverlapping(body.as_ptr(), (*b).last, body.len());
        (*b).last = (*b).last.add(body.len());
        (*b).set_last_buf(1);
        (*b).set_last_in_chain(1);
        let mut out = ngx_chain_t {
            buf: b,
            next: ptr::null_mut(),
        };
        ngx_http_output_filter(r, &mut out)
    }
}
