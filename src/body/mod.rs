//! The body sink: reads a request body unbuffered and hands it to the request's [`Target`] a
//! buffer at a time, paced by `upload_limit_rate`; records a long segment's progress as it
//! streams; keeps what arrived when the body is cut short; and runs blocking disk work on the
//! thread pool while the request waits. It knows no protocol and no header: the content handler
//! sets the target up, and the context's `body_done` takes over once the body is written.
//!
//! Bytes that are only written leave the event loop: a full buffer is written behind on the
//! thread pool while nginx reads on into another ([`write_behind`]), and the last bytes with
//! the final commit ([`write_last_off_loop`]). `buffers` manages nginx's body buffers (growing,
//! moving, shrinking); `jobs` runs disk work on the thread pool.
//!
//! [`Target`]: crate::target::Target

mod buffers;
mod jobs;

use std::io::IoSlice;

use ngx::ffi::{
    ngx_add_timer, ngx_http_finalize_request, ngx_http_read_client_request_body,
    ngx_http_read_unbuffered_request_body, ngx_http_request_t, ngx_int_t, ngx_msec_t, NGX_DONE,
    NGX_ERROR, NGX_HTTP_REQUEST_TIME_OUT, NGX_HTTP_SPECIAL_RESPONSE, NGX_LOG_ERR, NGX_LOG_INFO,
};
use ngx::http::Request;
use ngx::ngx_log_error;

use ngx_upload_protocol::Failure;

use crate::context::{now_msec, upload_ctx, BlockBuffer, UploadCtx};
use crate::request::{refuse, RequestExt};
use crate::target::{CommitJob, Placement};

use buffers::{
    body_buffer_size, consume_pending, grow_body_buffer, initial_buffer_size,
    move_to_larger_buffer, next_buffer, shrink_body_buffer, unread_body,
};
use jobs::{
    commit_is_long, commit_off_loop, prepare_commit, run_beside_reading,
    run_blocking_maybe_on_lane, BodyBytes,
};
pub use jobs::{flatten, run_blocking, run_commit};

/// A long segment records its progress every this many bytes, so an interrupted one keeps
/// what arrived (the C module loses the whole segment).
const CHECKPOINT_BYTES: u64 = 8 << 20;

/// Gives the request its context (moved into the request pool, which drops it when the request
/// ends) and starts reading its body into the context's target; returns what the content
/// handler returns.
pub fn install(request: &mut Request, ctx: UploadCtx) -> ngx_int_t {
    let ctx = request.pool().allocate(ctx);
    if ctx.is_null() {
        return ngx::ffi::NGX_HTTP_INTERNAL_SERVER_ERROR as ngx_int_t;
    }
    request.set_module_ctx(
        ctx.cast(),
        <crate::Module as ngx::http::HttpModule>::module(),
    );
    // SAFETY: just allocated above, in the request pool.
    let ctx = unsafe { &*ctx };
    if ctx.yield_to.is_some() {
        arm(request, ctx.progress.watch_timer.get(), watch, WATCH_MSEC);
    }
    start(request)
}

/// How often a request that may have to yield its upload looks whether it has to.
const WATCH_MSEC: ngx_msec_t = 1000;

/// Arms one of a request's timers (in its context, which disarms them when dropped).
fn arm(
    request: &Request,
    ev: *mut ngx::ffi::ngx_event_t,
    handler: unsafe extern "C" fn(*mut ngx::ffi::ngx_event_t),
    msec: ngx_msec_t,
) {
    // SAFETY: the timer lives in the context, which lives as long as the request; the
    // context's Drop disarms it. Only this event loop touches it.
    unsafe {
        (*ev).handler = Some(handler);
        (*ev).data = request.raw().cast();
        (*ev).log = request.log();
        // Shutting down does not wait for it.
        (*ev).set_cancelable(1);
        ngx_add_timer(ev, msec);
    }
}

/// The request and context of one of its timers, while its body is still read (once it is in,
/// the request ends on its own).
///
/// # Safety
/// `ev` must be a timer armed by [`arm`]; the references are used within its handler only.
unsafe fn timer_request<'a>(
    ev: *mut ngx::ffi::ngx_event_t,
) -> Option<(&'a mut Request, &'a UploadCtx)> {
    // SAFETY: data is the request the timer was armed for; the context's Drop disarms the timer
    // before the request is freed, so both are live.
    let (request, ctx) = unsafe {
        let r = (*ev).data.cast::<ngx_http_request_t>();
        (Request::from_ngx_http_request(r), upload_ctx(r)?)
    };
    (request.as_ref().reading_body() != 0).then_some((request, ctx))
}

/// The watch timer: a newer request for the same upload asked this one to stop. Its body ends
/// here, what arrived is kept, and the upload is free for the newer request (tusd's "lock
/// release", across workers and nodes, since the ask goes through the shared store).
unsafe extern "C" fn watch(ev: *mut ngx::ffi::ngx_event_t) {
    // SAFETY: nginx calls a timer's handler with the event [`arm`] armed.
    let Some((request, ctx)) = (unsafe { timer_request(ev) }) else {
        return;
    };
    let asked = ctx.yield_to.is_some_and(|asked| asked(ctx));
    if !asked || ctx.busy_on_disk() {
        // SAFETY: re-arming the timer that just fired.
        unsafe { ngx_add_timer(ev, WATCH_MSEC) };
        return;
    }
    ngx_log_error!(
        NGX_LOG_INFO,
        request.log(),
        "upload: a newer request for this upload asked this one to stop; {} bytes of its body \
         are kept",
        ctx.received()
    );
    let c = request.connection();
    body_cut_short(request, ctx, ngx::ffi::NGX_HTTP_CONFLICT as ngx_int_t);
    // nginx may hold the request a while yet, discarding a body that never comes: its claim on
    // the upload goes now.
    if let Ok(mut target) = ctx.target.try_borrow_mut() {
        target.release_claim();
    }
    // SAFETY: the connection outlives a request finalized above; as nginx's own handlers end.
    unsafe { ngx::ffi::ngx_http_run_posted_requests(c) };
}

/// Starts reading the body of a request whose context is set.
fn start(request: &mut Request) -> ngx_int_t {
    let r = request.raw();
    // SAFETY: r is this live request; streaming the body is how the bytes reach the file
    // without being buffered whole, and its body has not been read yet.
    let rc = unsafe {
        (*r).set_request_body_no_buffering(1);
        ngx_http_read_client_request_body(r, Some(body_started))
    };
    if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t {
        return rc;
    }
    NGX_DONE as ngx_int_t
}

/// Called once by `ngx_http_read_client_request_body` with what has arrived so far.
unsafe extern "C" fn body_started(r: *mut ngx_http_request_t) {
    // SAFETY: r is the live request whose body reading the content handler started, after it
    // set the context; both are used within this callback only.
    let (request, ctx) = unsafe { (Request::from_ngx_http_request(r), upload_ctx(r)) };
    let Some(ctx) = ctx else {
        // SAFETY: r is live.
        unsafe { ngx_http_finalize_request(r, NGX_ERROR as ngx_int_t) };
        return;
    };
    request.as_mut().read_event_handler = Some(body_readable);
    go_on(request, ctx);
}

/// Writes what waits in nginx's buffers if there is enough, then finishes the body or reads
/// on.
fn go_on(request: &mut Request, ctx: &UploadCtx) {
    if take_body_buffers(request, ctx, false).is_none() {
        return;
    }
    if request.as_ref().reading_body() == 0 {
        finish_paced(request, ctx);
    } else {
        // nginx stops reading when its buffer is full; what waits in the socket raises no new
        // event, so read on now that the buffer is free.
        read_body(request, ctx);
    }
}

/// Read event while the body streams in.
unsafe extern "C" fn body_readable(r: *mut ngx_http_request_t) {
    // SAFETY: nginx calls the read event handler with a live request, which has our context
    // while its body is read; both are used within this callback only.
    let (request, ctx) = unsafe { (Request::from_ngx_http_request(r), upload_ctx(r)) };
    if let Some(ctx) = ctx {
        read_body(request, ctx);
    }
}

fn read_body(request: &mut Request, ctx: &UploadCtx) {
    let r = request.raw();
    ctx.progress.last_read_msec.set(now_msec());
    if ctx.progress.job_in_flight.get() {
        return; // disk work is being done for it; its continuation resumes reading
    }
    // SAFETY: the connection and its read event exist while the request does.
    let rev = unsafe { (*(*r).connection).read };
    // SAFETY: as above.
    unsafe {
        if (*rev).delayed() != 0 {
            if (*rev).timedout() == 0 {
                // An event during an upload_limit_rate pause. Over HTTP/2 it is data arriving,
                // and nginx has just replaced the pause's timer with client_body_timeout (or
                // removed it, at the end of the body): set the pause's timer again, or, if the
                // pause is over, go on without it.
                match rate_delay(ctx) {
                    Some(delay) => {
                        ngx_add_timer(rev, delay);
                        return;
                    }
                    None => {
                        if (*rev).timer_set() != 0 {
                            ngx::ffi::ngx_del_timer(rev);
                        }
                    }
                }
            }
            // The pause is over; this timeout is ours, not client_body_timeout.
            (*rev).set_timedout(0);
            (*rev).set_delayed(0);
        }
    }
    if ctx.progress.answer_paused.replace(false) {
        // The pause before answering is over (finish_paced): the body is all in, and nginx
        // must not be asked to read it again.
        finish_paced(request, ctx);
        return;
    }
    // Bytes written in this read event: one buffer's worth, then the loop serves the other
    // connections before this one goes on, as nginx's own handlers do.
    let mut handled = 0u64;
    loop {
        if let Some(delay) = rate_delay(ctx) {
            // SAFETY: pausing the read event: nginx calls body_readable again when it fires.
            unsafe {
                (*rev).set_delayed(1);
                ngx_add_timer(rev, delay);
            }
            return;
        }
        // SAFETY: r is a live request reading its body unbuffered.
        let rc = unsafe { ngx_http_read_unbuffered_request_body(r) };
        if rc >= NGX_HTTP_SPECIAL_RESPONSE as ngx_int_t || rc == NGX_ERROR as ngx_int_t {
            body_cut_short(request, ctx, rc);
            return;
        }
        let Some(consumed) = take_body_buffers(request, ctx, false) else {
            return;
        };
        if request.as_ref().reading_body() == 0 {
            if ctx.progress.writing.get().is_none() {
                finish_paced(request, ctx);
            } // else the write's continuation finishes the body
            return;
        }
        if checkpoint_due(ctx) && ctx.progress.writing.get().is_none() {
            if let Err(failure) = checkpoint(request, ctx) {
                let rc = refuse(request, &ctx.protocol, &failure);
                abort(request, ctx, rc);
                return;
            }
            if ctx.progress.job_in_flight.get() {
                return;
            }
        }
        if consumed == 0 {
            // Nothing more for now: nginx calls again when data arrives.
            watch_for_idle(request, ctx);
            return;
        }
        handled += consumed;
        // HTTP/2 streams are fed by their connection's own reading, which yields already.
        if handled >= ctx.conf.buffer_size as u64 && request.as_ref().stream.is_null() {
            // SAFETY: rev is the live read event of this request's connection; posted events
            // run after the events of this loop iteration, and call body_readable again.
            unsafe { ngx::ffi::ngx_post_event(rev, &raw mut ngx::ffi::ngx_posted_events) };
            return;
        }
    }
}

/// The client went away, timed out or sent a malformed body. Bytes of a segment that arrived
/// are real: write what waits in nginx's buffer and record them, so a resuming client is told.
fn body_cut_short(request: &mut Request, ctx: &UploadCtx, rc: ngx_int_t) {
    if ctx.progress.writing.get().is_some() {
        ctx.progress.cut_short.set(Some(rc)); // once the write is back (written_behind)
        return;
    }
    if rc == NGX_HTTP_REQUEST_TIME_OUT as ngx_int_t {
        // nginx says nothing when a body stalls: say which upload it was.
        let received = ctx.received();
        ngx_log_error!(
            NGX_LOG_INFO,
            request.log(),
            "upload: client timed out sending the body (client_body_timeout) after \
             {received} bytes were written"
        );
    }
    if take_body_buffers(request, ctx, true).is_none() {
        return;
    }
    keep_what_arrived(request, ctx);
    abort(request, ctx, rc);
}

/// `upload_limit_rate` pacing: how long to pause before reading more of the body (or, once it
/// is all in, before answering) so that the body is taken no faster than the rate.
///
/// Every byte of the body counts, those that came with the request header too, from when the
/// body started: the bytes received so far are due at `received / rate` seconds, and reading
/// waits until then, with no allowance ahead of the rate. nginx reads a whole buffer at a time,
/// so one read may run ahead; the pause after it makes up for that, and the end of the body
/// waits as well ([`finish_paced`]), so a body of `size` bytes is never answered before
/// `size / rate` seconds.
fn rate_delay(ctx: &UploadCtx) -> Option<ngx_msec_t> {
    let rate = ctx.conf.limit_rate as u64;
    if rate == 0 {
        return None;
    }
    let elapsed = now_msec().wrapping_sub(ctx.progress.started_msec) as u64;
    // When the bytes received so far are due, in ms, rounded up.
    let due = ctx.received().saturating_mul(1000).div_ceil(rate);
    (due > elapsed).then(|| (due - elapsed) as ngx_msec_t)
}

/// The whole body is in: the context's `body_done`, once `upload_limit_rate` allows it. Until
/// then the read event waits on a timer, as for a pause while reading; when it fires,
/// [`read_body`] comes back here (`answer_paused`) without reading.
fn finish_paced(request: &mut Request, ctx: &UploadCtx) {
    if let Some(delay) = rate_delay(ctx) {
        ctx.progress.answer_paused.set(true);
        // SAFETY: the connection's read event of a live request; its timer calls
        // body_readable.
        unsafe {
            let rev = (*request.connection()).read;
            (*rev).set_delayed(1);
            ngx_add_timer(rev, delay);
        }
        return;
    }
    (ctx.body_done)(request, ctx);
}

/// Writes the body buffers nginx holds to the target and marks them consumed, once there is
/// enough to write: the body is complete, nginx's body buffer is full, `upload_buffer_size`
/// bytes wait, or `force`. Until then the bytes stay in nginx's buffer, which nginx keeps
/// filling, so a fast upload costs one `pwritev` per buffer, not one per read. A full buffer
/// that can grow is not written but moved into the larger one ([`move_to_larger_buffer`]); a
/// full buffer of our own is written behind ([`write_behind`]), the last bytes of a body on the
/// thread pool too ([`write_last_off_loop`]); while a buffer is written behind nothing else is.
/// Returns the bytes taken from nginx's buffers, or `None` if the request was finalized
/// because of a failure or its last bytes are being written on the thread pool.
fn take_body_buffers(request: &mut Request, ctx: &UploadCtx, force: bool) -> Option<u64> {
    if ctx.progress.writing.get().is_some() {
        return Some(0); // bytes are written in order: the write's continuation takes these
    }
    let r = request.raw();
    // SAFETY: request_body exists once ngx_http_read_client_request_body ran.
    let rb = unsafe { &mut *(*r).request_body };
    let carried = ctx.progress.carried.get();
    let pending: usize = carried + unread_body(rb).map(<[u8]>::len).sum::<usize>();
    let req = request.as_ref();
    // SAFETY: rb.buf, when set, is nginx's body buffer.
    let buffer_full = !rb.buf.is_null() && unsafe { (*rb.buf).last == (*rb.buf).end };
    let write_now = force
        || req.reading_body() == 0
        || pending >= ctx.conf.buffer_size
        || rb.buf.is_null()
        || buffer_full
        || !req.stream.is_null();
    if !write_now || pending == 0 {
        return Some(0);
    }
    if buffer_full && !force && move_to_larger_buffer(request, ctx, rb, pending) {
        return Some((pending - carried) as u64);
    }
    let mut slices: Vec<IoSlice<'_>> = Vec::new();
    // SAFETY: the carried bytes lie at the start of nginx's live body buffer, which nginx
    // reads into only past them.
    let carried_bytes =
        (carried > 0).then(|| unsafe { core::slice::from_raw_parts((*rb.buf).start, carried) });
    for data in carried_bytes.into_iter().chain(unread_body(rb)) {
        // Successive reads into nginx's buffer are adjacent: one iovec for them.
        match slices.last_mut() {
            Some(prev) if prev.as_ptr_range().end == data.as_ptr() => {
                // SAFETY: both slices lie in the same live buffer, back to back.
                *prev = IoSlice::new(unsafe {
                    core::slice::from_raw_parts(prev.as_ptr(), prev.len() + data.len())
                });
            }
            _ => slices.push(IoSlice::new(data)),
        }
    }
    let before = ctx.received();
    if !force && write_last_off_loop(request, ctx, before, &slices) {
        return None;
    }
    if !force && write_behind(request, ctx, before, &slices) {
        return Some((pending - carried) as u64);
    }
    let written = ctx.target.borrow_mut().write(before, &slices);
    if written.is_ok() {
        ctx.progress.received.set(before + pending as u64);
    }
    drop(slices);
    consume_pending(request, ctx, rb);
    if buffer_full || !request.as_ref().stream.is_null() {
        grow_body_buffer(request, ctx, rb);
    }
    if written.is_err() {
        keep_what_arrived(request, ctx);
    }
    let written = written.and_then(|()| (ctx.body_written)(request, ctx));
    if let Err(failure) = written {
        let rc = refuse(request, &ctx.protocol, &failure);
        abort(request, ctx, rc);
        return None;
    }
    Some((pending - carried) as u64)
}

/// The last bytes of a body are written on the thread pool when there are at least this many
/// and nothing but writing them is to be done: the event loop receives other requests' bytes
/// meanwhile. Fewer are written here, where that costs less than the round trip.
const OFF_LOOP_AT: usize = 32 << 10;

/// Where `len` bytes of the body, `before` bytes into it, can be written off the event loop:
/// over HTTP/1.x, with a thread pool, when nothing but writing them is to be done.
fn off_loop_place(
    request: &Request,
    ctx: &UploadCtx,
    before: u64,
    len: usize,
) -> Option<Placement> {
    if !request.as_ref().stream.is_null() || ctx.conf.thread_pool.is_null() {
        return None;
    }
    // A placement that fails its checks is written here, which says what is wrong.
    ctx.target
        .borrow()
        .plain_placement(before, len as u64)?
        .ok()
}

/// Counts bytes written off the event loop, up to byte `end` of the body, once the write is
/// back; on a failure the request ends, keeping what arrived before. Returns whether the body
/// goes on.
fn count_written(
    request: &mut Request,
    ctx: &UploadCtx,
    end: u64,
    written: Result<(), Failure>,
) -> bool {
    if written.is_ok() {
        ctx.progress.received.set(end);
    }
    match written.and_then(|()| (ctx.body_written)(request, ctx)) {
        Ok(()) => true,
        Err(failure) => {
            ctx.progress.cut_short.set(None);
            keep_what_arrived(request, ctx);
            let rc = refuse(request, &ctx.protocol, &failure);
            abort(request, ctx, rc);
            false
        }
    }
}

/// Writes the last `slices` of a body (nginx has read it all) on the thread pool while the
/// request waits, then goes on as [`take_body_buffers`] would have. Returns whether it did;
/// if not, the caller writes them here.
fn write_last_off_loop(
    request: &mut Request,
    ctx: &UploadCtx,
    before: u64,
    slices: &[IoSlice<'_>],
) -> bool {
    let len: usize = slices.iter().map(|s| s.len()).sum();
    if request.as_ref().reading_body() != 0 || len < OFF_LOOP_AT {
        return false;
    }
    let Some(place) = off_loop_place(request, ctx, before, len) else {
        return false;
    };
    let bytes = BodyBytes::of(slices);
    let end = before + len as u64;
    let commit = commit_after_last_write(ctx, end);
    let work = move || {
        let written = bytes.write_at(&place);
        let record = written.is_ok().then(|| commit.map(|job| job())).flatten();
        (written, record)
    };
    // A fsync or a hash to catch up is long work: nginx's pool; a write and an append, the
    // write lane.
    run_blocking_maybe_on_lane(
        !commit_is_long(ctx),
        request,
        ctx,
        work,
        move |request, ctx, result| {
            // SAFETY: request_body exists once ngx_http_read_client_request_body ran.
            let rb = unsafe { &mut *request.as_ref().request_body };
            consume_pending(request, ctx, rb);
            let (written, record) = match result {
                Some((written, record)) => (written, record),
                None => (flatten(None), None),
            };
            *ctx.progress.recorded_with_write.borrow_mut() = record;
            if count_written(request, ctx, end, written) {
                finish_paced(request, ctx);
            }
        },
    );
    true
}

/// Writes a full body buffer on the thread pool while nginx reads on into another one (the
/// spare from the previous write, or a new block), so that receiving and writing overlap and
/// a read event of a fast upload costs the event loop one `recv`, not a `recv` and a
/// `pwritev`. Only a buffer of our own (a client that filled nginx's), whose bytes are only
/// written; over HTTP/1.x. Returns whether the write was started.
fn write_behind(
    request: &mut Request,
    ctx: &UploadCtx,
    before: u64,
    slices: &[IoSlice<'_>],
) -> bool {
    let req = request.as_ref();
    if req.reading_body() == 0 {
        return false;
    }
    let Some(block) = ctx.progress.block.get() else {
        return false;
    };
    // SAFETY: request_body exists once ngx_http_read_client_request_body ran.
    let rb = unsafe { &mut *req.request_body };
    let full = rb.buf;
    // SAFETY: rb.buf, when set, is nginx's body buffer.
    if full.is_null() || unsafe { (*full).start } as usize != block.start {
        return false;
    }
    let in_block = |s: &IoSlice<'_>| {
        let at = s.as_ptr() as usize;
        at >= block.start && at + s.len() <= block.start + block.cap
    };
    if !slices.iter().all(in_block) {
        return false;
    }
    let len: usize = slices.iter().map(|s| s.len()).sum();
    let Some(place) = off_loop_place(request, ctx, before, len) else {
        return false;
    };
    // SAFETY: as above.
    let size = unsafe { (*full).end.offset_from((*full).start) as usize };
    let Some(next) = next_buffer(request, ctx, size) else {
        return false;
    };
    let bytes = BodyBytes::of(slices);
    consume_pending(request, ctx, rb);
    rb.buf = next.buf;
    ctx.progress.block.set(Some(next.block));
    ctx.progress
        .writing
        .set(Some(BlockBuffer { buf: full, block }));
    let end = before + len as u64;
    run_beside_reading(
        request,
        ctx,
        move || bytes.write_at(&place),
        move |request, ctx, result| written_behind(request, ctx, end, flatten(result)),
    );
    true
}

/// A buffer written behind is back (up to byte `end` of the body): it becomes the spare, and
/// the body goes on as it would have after the write.
fn written_behind(request: &mut Request, ctx: &UploadCtx, end: u64, written: Result<(), Failure>) {
    ctx.progress.spare.set(ctx.progress.writing.take());
    if !count_written(request, ctx, end, written) {
        return;
    }
    if let Some(rc) = ctx.progress.cut_short.take() {
        return body_cut_short(request, ctx, rc);
    }
    // While buffers are written behind, reading never sees a checkpoint due: here it does.
    // Once nginx has read the whole body, the final commit records it all.
    if request.as_ref().reading_body() != 0 && checkpoint_due(ctx) {
        if let Err(failure) = checkpoint(request, ctx) {
            let rc = refuse(request, &ctx.protocol, &failure);
            return abort(request, ctx, rc);
        }
        if ctx.progress.job_in_flight.get() {
            return; // the checkpoint's continuation reads on
        }
    }
    go_on(request, ctx);
}

/// The final commit of a body whose length was known in advance, to run right after its last
/// write, in the same job: the context's `body_done` would start it next, and
/// [`run_commit`] takes its record instead. A body of unknown length is checked first.
fn commit_after_last_write(ctx: &UploadCtx, received: u64) -> Option<CommitJob> {
    ctx.progress.expected.filter(|n| *n == received)?;
    ctx.target
        .borrow_mut()
        .commit_job(received, true, ctx.conf.hash_algorithms())?
        .ok()
}

/// How long a client with a large body buffer may send nothing before the buffer is written
/// out and shrinks back.
const IDLE_MSEC: ngx_msec_t = 250;

/// Arms the idle timer of a request whose body buffer has grown.
fn watch_for_idle(request: &Request, ctx: &UploadCtx) {
    let req = request.as_ref();
    if !req.stream.is_null() || req.reading_body() == 0 {
        return;
    }
    if body_buffer_size(request).is_none_or(|size| size <= initial_buffer_size(request)) {
        return;
    }
    let ev = ctx.progress.idle_timer.get();
    // SAFETY: the timer lives in the context; only this event loop touches it.
    if unsafe { (*ev).timer_set() } == 0 {
        arm(request, ev, idle_check, IDLE_MSEC);
    }
}

/// The idle timer fired: if the client sent nothing for [`IDLE_MSEC`], what waits in its body
/// buffer is written (so it is on disk, not only in memory) and the buffer shrinks back to
/// `client_body_buffer_size`, so a thousand stalled phones do not hold a thousand large buffers.
unsafe extern "C" fn idle_check(ev: *mut ngx::ffi::ngx_event_t) {
    // SAFETY: nginx calls a timer's handler with the event [`arm`] armed.
    let Some((request, ctx)) = (unsafe { timer_request(ev) }) else {
        return;
    };
    let quiet = now_msec().wrapping_sub(ctx.progress.last_read_msec.get());
    if ctx.busy_on_disk() || quiet < IDLE_MSEC {
        // SAFETY: re-arming the timer that just fired.
        unsafe { ngx_add_timer(ev, IDLE_MSEC - quiet.min(IDLE_MSEC - 1)) };
        return;
    }
    let c = request.connection();
    if take_body_buffers(request, ctx, true).is_some() {
        shrink_body_buffer(request, ctx);
    }
    // SAFETY: the connection outlives a request finalized above; as nginx's own handlers end.
    unsafe { ngx::ffi::ngx_http_run_posted_requests(c) };
}

/// Ends a request that failed before its hand-off: files that hold no complete upload go now,
/// before the answer, rather than when nginx frees the request.
pub fn abort(request: &mut Request, ctx: &UploadCtx, rc: ngx_int_t) {
    ctx.discard_unfinished();
    // SAFETY: the request is live; finalizing ends our part in it.
    unsafe { ngx_http_finalize_request(request.raw(), rc) };
}

/// Whether enough of a long segment arrived since it was last recorded.
fn checkpoint_due(ctx: &UploadCtx) -> bool {
    ctx.target.borrow().checkpoints()
        && ctx.received() - ctx.progress.recorded.get() >= CHECKPOINT_BYTES
}

/// Records a long segment's progress on the thread pool: while reading goes on, or with
/// `upload_state_fsync`, whose record must wait for the data's fsync, while reading pauses.
fn checkpoint(request: &mut Request, ctx: &UploadCtx) -> Result<(), Failure> {
    let received = ctx.received();
    if !ctx.conf.sessions().durable {
        if ctx.progress.checkpointing.get() {
            return Ok(()); // one at a time; the next one is due at the next read
        }
        let busy = ctx.progress.checkpointing.clone();
        busy.set(true);
        // The cycle's log outlives a request that may end first.
        // SAFETY: ngx_cycle is the live cycle of this worker.
        let log = unsafe { (*ngx::ffi::ngx_cycle).log };
        commit_off_loop(request, ctx, false, move |result| {
            busy.set(false);
            if let Err(failure) = result {
                ngx_log_error!(NGX_LOG_ERR, log, "upload: {}", failure.message);
            }
        })?;
        ctx.progress.recorded.set(received);
        return Ok(());
    }
    let job = prepare_commit(ctx, false)?;
    run_blocking(
        request,
        ctx,
        job,
        move |request, ctx, result| match flatten(result) {
            Ok(_) => {
                let recorded = &ctx.progress.recorded;
                recorded.set(recorded.get().max(received));
                read_body(request, ctx);
            }
            Err(failure) => {
                let rc = refuse(request, &ctx.protocol, &failure);
                abort(request, ctx, rc);
            }
        },
    );
    // SAFETY: the connection's read event exists while the request does; client_body_timeout
    // must not run while the server is busy.
    unsafe {
        let rev = (*request.connection()).read;
        if (*rev).timer_set() != 0 {
            ngx::ffi::ngx_del_timer(rev);
        }
    }
    Ok(())
}

/// A segment cut short (client gone, timeout, bad body): records the bytes that reached the
/// file. With `upload_state_fsync` the record waits for the data's fsync on the thread pool,
/// without the request, which is ending.
fn keep_what_arrived(request: &mut Request, ctx: &UploadCtx) {
    if ctx.received() <= ctx.progress.recorded.get() || !ctx.target.borrow().has_segment() {
        return;
    }
    let result = if ctx.conf.sessions().durable {
        let log = request.log();
        commit_off_loop(request, ctx, false, move |result| {
            if let Err(failure) = result {
                ngx_log_error!(NGX_LOG_ERR, log, "upload: {}", failure.message);
            }
        })
    } else {
        checkpoint_now(ctx)
    };
    if let Err(failure) = result {
        ngx_log_error!(NGX_LOG_ERR, request.log(), "upload: {}", failure.message);
    }
}

/// Records the bytes written so far, here on the event loop: for a checkpoint of an upload that
/// is not fsynced, a state file append under a lock.
fn checkpoint_now(ctx: &UploadCtx) -> Result<(), Failure> {
    let received = ctx.received();
    if received <= ctx.progress.recorded.get() {
        return Ok(());
    }
    let job = ctx
        .target
        .borrow_mut()
        .commit_job(received, false, ctx.conf.hash_algorithms());
    if let Some(job) = job {
        job?()?;
        ctx.progress.recorded.set(received);
    }
    Ok(())
}
