//! Safe access to the request for the rest of the glue: its head as the protocols read it,
//! response headers, templates, and the answers the module sends itself. Everything here takes
//! ngx's `Request` by reference, so no other module handles a raw request pointer.

use core::ptr;

use ngx::ffi::{
    ngx_buf_t, ngx_chain_t, ngx_create_temp_buf, ngx_http_output_filter, ngx_http_request_t,
    ngx_http_send_header, ngx_int_t, ngx_list_push, ngx_list_t, ngx_str_t, ngx_table_elt_t,
    NGX_ERROR, NGX_HTTP_DELETE, NGX_HTTP_GET, NGX_HTTP_HEAD, NGX_HTTP_OPTIONS, NGX_HTTP_PATCH,
    NGX_HTTP_POST, NGX_HTTP_PUT, NGX_OK,
};
use ngx::http::Request;

use ngx_upload_protocol::{Answer, Method, Reply, RequestHead};

use crate::conf::{Compiled, UploadConf};

/// What the glue asks of a request.
pub trait RequestExt {
    /// The raw request, for nginx calls.
    fn raw(&self) -> *mut ngx_http_request_t;
    /// The head as the protocols read it; borrows the request's header memory.
    fn head(&self) -> RequestHead<'_>;
    /// Bytes copied into the request pool.
    fn pool_str(&self, bytes: &[u8]) -> Option<ngx_str_t>;
    /// A compiled template's value for this request.
    fn evaluate(&self, template: Compiled) -> Option<Vec<u8>>;
    /// Adds a response header.
    fn push_response_header(&mut self, key: &[u8], value: &[u8]) -> Option<()>;
    /// A token that differs between requests, for form boundaries and file names.
    fn unique_token(&self) -> String;
    /// Sends an answer the module makes itself; returns what the request is finalized with.
    fn send_answer(&mut self, answer: &Answer) -> ngx_int_t;
    /// `upload_add_header`: evaluated now, added when name and value are non-empty.
    fn add_configured_headers(&mut self, conf: &UploadConf);
    /// Sends the protocol's own answer with the location's `upload_add_header`s; a hand-off
    /// reply is not expected here (500).
    fn send_reply(&mut self, conf: &UploadConf, reply: Reply) -> ngx_int_t;
    /// Sends an interim (1xx) answer before the body is read: on HTTP/1.1 only (nginx has no
    /// way to send one on HTTP/2 before 1.29's early hints; the final answer says it all).
    fn send_interim(&mut self, answer: &Answer);
}

impl RequestExt for Request {
    fn send_interim(&mut self, answer: &Answer) {
        let r = self.as_ref();
        if !r.stream.is_null() || r.http_version < ngx::ffi::NGX_HTTP_VERSION_11 as usize {
            return;
        }
        let mut head = format!(
            "HTTP/1.1 {} {}\r\n",
            answer.status,
            reason_phrase(answer.status)
        )
        .into_bytes();
        for (name, value) in &answer.headers {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        let c = r.connection;
        // SAFETY: the live connection of a request whose answer has not started; nginx itself
        // sends `100 Continue` the same way. The few bytes fit in a fresh socket buffer.
        let sent = unsafe {
            match (*c).send {
                Some(send) => send(c, head.as_mut_ptr(), head.len()),
                None => -1,
            }
        };
        if sent != head.len() as isize {
            ngx::ngx_log_error!(
                ngx::ffi::NGX_LOG_INFO,
                self.log(),
                "upload: could not send the {} interim answer",
                answer.status
            );
        }
    }

    fn raw(&self) -> *mut ngx_http_request_t {
        ptr::from_ref(self.as_ref()).cast_mut()
    }

    fn head(&self) -> RequestHead<'_> {
        let r = self.as_ref();
        let hin = &r.headers_in;
        let method = match r.method as u32 {
            NGX_HTTP_GET => Method::Get,
            NGX_HTTP_HEAD => Method::Head,
            NGX_HTTP_POST => Method::Post,
            NGX_HTTP_PUT => Method::Put,
            NGX_HTTP_PATCH => Method::Patch,
            NGX_HTTP_DELETE => Method::Delete,
            NGX_HTTP_OPTIONS => Method::Options,
            _ => Method::Other,
        };
        RequestHead {
            method,
            method_name: r.method_name.as_bytes(),
            uri: r.uri.as_bytes(),
            // SAFETY: the headers list of a live request holds ngx_table_elt_t elements.
            headers: unsafe { list_items::<ngx_table_elt_t>(&hin.headers) }
                .map(|h| (h.key.as_bytes(), h.value.as_bytes()))
                .collect(),
            content_length: u64::try_from(hin.content_length_n).ok(),
            chunked: hin.chunked() != 0,
        }
    }

    fn pool_str(&self, bytes: &[u8]) -> Option<ngx_str_t> {
        // SAFETY: the request's pool is valid while the request is.
        unsafe { ngx_str_t::from_bytes(self.as_ref().pool, bytes) }
    }

    fn evaluate(&self, template: Compiled) -> Option<Vec<u8>> {
        self.get_complex_value(template.get())
            .map(|s| s.as_bytes().to_vec())
    }

    fn push_response_header(&mut self, key: &[u8], value: &[u8]) -> Option<()> {
        let r = self.raw();
        // SAFETY: r is this live request; headers_out.headers is its response header list.
        unsafe { push_header(r, &raw mut (*r).headers_out.headers, key, value).map(|_| ()) }
    }

    fn unique_token(&self) -> String {
        // SAFETY: nginx's cached clock; the connection of a live request.
        unsafe {
            format!(
                "{:x}{:x}",
                ngx::ffi::ngx_time(),
                (*self.connection()).number
            )
        }
    }

    fn send_answer(&mut self, answer: &Answer) -> ngx_int_t {
        for (name, value) in &answer.headers {
            if self.push_response_header(name.as_bytes(), value).is_none() {
                return NGX_ERROR as ngx_int_t;
            }
        }
        let Some(body) = &answer.body else {
            // nginx renders its own page for the status.
            return answer.status as ngx_int_t;
        };
        // A body of our own: nginx must be done with the request's body first (over HTTP/2 a
        // refusal sent while the client still sends is otherwise lost). A no-op once the body
        // was read.
        if self.as_ref().request_body.is_null() {
            // SAFETY: the live request, its body not being read.
            let rc = unsafe { ngx::ffi::ngx_http_discard_request_body(self.raw()) };
            if rc != NGX_OK as ngx_int_t {
                return rc;
            }
        }
        self.as_mut().headers_out.status = answer.status as _;
        let reason = reason_phrase(answer.status);
        if !reason.is_empty() {
            // nginx knows no reason phrase for this status: the whole status line.
            let Some(line) = self.pool_str(format!("{} {reason}", answer.status).as_bytes()) else {
                return NGX_ERROR as ngx_int_t;
            };
            self.as_mut().headers_out.status_line = line;
        }
        if let Some(content_type) = answer.content_type {
            let Some(value) = self.pool_str(content_type.as_bytes()) else {
                return NGX_ERROR as ngx_int_t;
            };
            let out = &mut self.as_mut().headers_out;
            out.content_type = value;
            out.content_type_len = value.len;
        }
        send_body(self, body)
    }

    fn send_reply(&mut self, conf: &UploadConf, reply: Reply) -> ngx_int_t {
        match reply {
            Reply::Answer(answer) => {
                self.add_configured_headers(conf);
                self.send_answer(&answer)
            }
            Reply::HandOff { .. } | Reply::HandOffWith { .. } => {
                ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t
            }
        }
    }

    fn add_configured_headers(&mut self, conf: &UploadConf) {
        for t in conf.add_headers.as_deref().unwrap_or_default() {
            let (Some(name), Some(value)) = (self.evaluate(t.name), self.evaluate(t.value)) else {
                continue;
            };
            if !name.is_empty() && !value.is_empty() {
                self.push_response_header(&name, &value);
            }
        }
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

/// Sends the response header and a small in-memory body; returns what finalize expects.
fn send_body(request: &mut Request, body: &[u8]) -> ngx_int_t {
    let r = request.raw();
    // SAFETY: r is live and no response has been sent yet.
    unsafe {
        (*r).headers_out.content_length_n = body.len() as _;
        if body.is_empty() {
            // An empty buffer would be a "zero size buf" to the output chain.
            (*r).set_header_only(1);
        }
        let rc = send_header_with_body_to_come(r);
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

/// `ngx_http_send_header` for an answer whose (small) body follows at once: over HTTP/1.x the
/// header waits for it, so both go out in one write. nginx's write filter sends a header of
/// `postpone_output` bytes (1460 by default) or more on its own, and the seed protocol's
/// `Range` header of a fragmented upload is that long: a second write, and a second wake-up
/// of the client, for every segment.
///
/// # Safety
/// `r` is a live request whose answer has not started.
unsafe fn send_header_with_body_to_come(r: *mut ngx_http_request_t) -> ngx_int_t {
    // SAFETY: see above; the core module's location conf of a live request.
    unsafe {
        if !(*r).stream.is_null() {
            return ngx_http_send_header(r);
        }
        let clcf = (*(*r).loc_conf.add(ngx::ffi::ngx_http_core_module.ctx_index))
            .cast::<ngx::ffi::ngx_http_core_loc_conf_t>();
        // The location's setting, raised for this one call on this worker's only thread and
        // put back before anything else runs; the body's last_buf then sends all.
        let postpone = (*clcf).postpone_output;
        (*clcf).postpone_output = isize::MAX as usize; // compared as an off_t
        let rc = ngx_http_send_header(r);
        (*clcf).postpone_output = postpone;
        rc
    }
}

/// Logs why a request cannot go on and answers it in its protocol's format; returns what the
/// request is finalized with.
pub fn refuse(
    request: &mut Request,
    protocol: &dyn ngx_upload_protocol::Protocol,
    failure: &ngx_upload_protocol::Failure,
) -> ngx_int_t {
    ngx::ngx_log_error!(
        ngx::ffi::NGX_LOG_ERR,
        request.log(),
        "upload: {}",
        failure.message
    );
    request.send_answer(&protocol.refuse(failure))
}

/// The reason phrases of the statuses nginx has none for.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        104 => "Upload Resumption Supported",
        460 => "Checksum Mismatch",
        _ => "",
    }
}

/// A `debug`-level line in the request's log; the message is only built when debug logging is
/// on for it.
pub fn debug(request: &Request, message: impl FnOnce() -> String) {
    let log = request.log();
    // SAFETY: the connection's log of a live request.
    if unsafe { (*log).log_level } & ngx::ffi::NGX_LOG_DEBUG_HTTP as usize != 0 {
        ngx::ngx_log_debug!(log, "{}", message());
    }
}
