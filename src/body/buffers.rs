//! nginx's body buffers of a request: the larger one a client that fills nginx's gets (in a
//! block of its own, [`blocks`]), a small body's first bytes moved into it, the second one
//! nginx reads into while a full one is written behind, and the small one a quiet client
//! shrinks back to.

use core::ptr;

use ngx::ffi::{ngx_chain_t, ngx_http_request_body_t};
use ngx::http::Request;

use ngx_upload_engine::blocks::{self, Block};

use crate::context::{BlockBuffer, UploadCtx};

/// The buffer nginx reads into while the full one is written: the spare, or a new block.
pub(super) fn next_buffer(request: &Request, ctx: &UploadCtx, size: usize) -> Option<BlockBuffer> {
    if let Some(spare) = ctx.progress.spare.take() {
        if spare.block.cap >= size {
            // SAFETY: the spare's buffer header is ours, over its block, which nothing uses.
            unsafe {
                let b = &mut *spare.buf;
                b.pos = b.start;
                b.last = b.start;
                b.end = b.start.add(size);
            }
            return Some(spare);
        }
        blocks::give(spare.block);
    }
    let block = blocks::take(size)?;
    let buf = buf_over_block(request, block, size);
    if buf.is_null() {
        blocks::give(block);
        return None;
    }
    Some(BlockBuffer { buf, block })
}

/// A buffer header from the request pool over the first `size` bytes of `block` (empty, as
/// ngx_create_temp_buf makes one); null if the pool is out of memory.
fn buf_over_block(request: &Request, block: Block, size: usize) -> *mut ngx::ffi::ngx_buf_t {
    // SAFETY: a zeroed ngx_buf_t from the request pool (ngx_calloc_buf), over the block, which
    // holds at least `size` bytes and outlives the buffer (given back only once nothing uses
    // it).
    unsafe {
        let b = ngx::ffi::ngx_pcalloc(
            request.as_ref().pool,
            core::mem::size_of::<ngx::ffi::ngx_buf_t>(),
        )
        .cast::<ngx::ffi::ngx_buf_t>();
        if !b.is_null() {
            let start = block.start as *mut u8;
            (*b).start = start;
            (*b).pos = start;
            (*b).last = start;
            (*b).end = start.add(size);
            (*b).set_temporary(1);
        }
        b
    }
}

/// Marks every body byte waiting as taken: the carried bytes, and the body buffers nginx
/// holds, consumed so that nginx reuses its buffer for the next read, their chain links given
/// back.
pub(super) fn consume_pending(
    request: &Request,
    ctx: &UploadCtx,
    rb: &mut ngx_http_request_body_t,
) {
    ctx.progress.carried.set(0);
    let pool = request.as_ref().pool;
    let mut cl = rb.bufs;
    while !cl.is_null() {
        // SAFETY: the links of rb.bufs were allocated from the request pool by nginx's save
        // filter and are ours alone: back to the pool's free list (ngx_free_chain), or a long
        // request would allocate one per read for its whole life.
        unsafe {
            let b = &mut *(*cl).buf;
            b.pos = b.last;
            let next = (*cl).next;
            (*cl).next = (*pool).chain;
            (*pool).chain = cl;
            cl = next;
        }
    }
    rb.bufs = ptr::null_mut();
}

/// A client that fills nginx's body buffer faster than it is written gets a buffer of
/// `upload_buffer_size`, so a fast upload costs one `pwritev` per `upload_buffer_size`. Every
/// request starts with nginx's `client_body_buffer_size`, so a slow client (a phone on a bad
/// network) holds no more memory than nginx's own body reading would. Over HTTP/2 the buffer
/// is the stream's window: a larger one lets a fast client send more before it waits for
/// nginx's WINDOW_UPDATE.
pub(super) fn grow_body_buffer(
    request: &Request,
    ctx: &UploadCtx,
    rb: &mut ngx_http_request_body_t,
) {
    let Some(size) = larger_buffer_size(request, ctx, rb, 0) else {
        return;
    };
    // SAFETY: the request pool outlives the request body. Every byte of the old buffer was
    // consumed by the caller, so nginx, which reads into `rb.buf` from `last` and frees its
    // consumed links on its next filter pass, goes on in the new one as if the old one had
    // been reset.
    let b = new_body_buffer(request, ctx, size);
    if !b.is_null() {
        // SAFETY: the old buffer's bytes are consumed.
        release_body_buffer(request, ctx, unsafe { &*rb.buf });
        rb.buf = b;
    }
}

/// The size of the larger body buffer a client that filled its buffer gets, with `pending`
/// bytes of the body still unwritten; `None` if it keeps the one it has.
pub(super) fn larger_buffer_size(
    request: &Request,
    ctx: &UploadCtx,
    rb: &ngx_http_request_body_t,
    pending: usize,
) -> Option<usize> {
    let req = request.as_ref();
    if req.reading_body() == 0 || rb.buf.is_null() {
        return None;
    }
    // SAFETY: the connection's read event and nginx's body buffer of a live request.
    let (ready, current) = unsafe {
        let b = &*rb.buf;
        (
            // An HTTP/2 stream's buffer is its flow-control window: a client that used all of
            // it before its bytes were taken has more to send.
            if req.stream.is_null() {
                (*(*req.connection).read).ready() != 0
            } else {
                (*req.stream).recv_window == 0
            },
            b.end.offset_from(b.start) as usize,
        )
    };
    let mut size = ctx.conf.buffer_size;
    if req.headers_in.chunked() == 0 {
        // Over HTTP/2 nginx's `rest` is only 1 (more) or 0: the declared length says more.
        let rest = if req.stream.is_null() {
            rb.rest
        } else if req.headers_in.content_length_n >= 0 {
            req.headers_in.content_length_n - rb.received
        } else {
            -1
        };
        let rest = usize::try_from(rest).unwrap_or(usize::MAX);
        size = size.min(pending.saturating_add(rest));
    }
    // `ready`: the last read stopped because the buffer was full, not because the socket was
    // empty.
    (ready && size > current && size > pending).then_some(size)
}

/// A client filled nginx's body buffer and has more ready, and the rest of the body fits a
/// larger buffer: rather than written, its `pending` bytes move to the start of that buffer,
/// and nginx reads on after them. A small segment (whose first read fills
/// `client_body_buffer_size`) is then one write instead of two, for the cost of copying a few
/// KiB. A longer body is many writes anyway, and keeps the first one. Returns whether they
/// moved.
pub(super) fn move_to_larger_buffer(
    request: &Request,
    ctx: &UploadCtx,
    rb: &mut ngx_http_request_body_t,
    pending: usize,
) -> bool {
    // nginx starts an HTTP/2 stream's buffer afresh whenever its bytes are all taken: bytes
    // carried at its start would be overwritten.
    if !request.as_ref().stream.is_null() {
        return false;
    }
    let Some(size) = larger_buffer_size(request, ctx, rb, pending) else {
        return false;
    };
    let rest = usize::try_from(rb.rest).unwrap_or(usize::MAX);
    if request.as_ref().headers_in.chunked() != 0 || pending.saturating_add(rest) > size {
        return false;
    }
    let b = new_body_buffer(request, ctx, size);
    if b.is_null() {
        return false;
    }
    let carried = ctx.progress.carried.get();
    // SAFETY: the new buffer holds `size` > `pending` bytes; the carried bytes and nginx's
    // unread buffers are live and lie outside it. nginx reads on from the new buffer's `last`
    // and, with `pos` there too, counts what it still expects as before.
    unsafe {
        let mut at = (*b).start;
        core::ptr::copy_nonoverlapping((*rb.buf).start, at, carried);
        at = at.add(carried);
        for data in unread_body(rb) {
            core::ptr::copy_nonoverlapping(data.as_ptr(), at, data.len());
            at = at.add(data.len());
        }
        (*b).pos = at;
        (*b).last = at;
    }
    consume_pending(request, ctx, rb);
    // SAFETY: the old buffer's bytes were copied, and its links consumed.
    release_body_buffer(request, ctx, unsafe { &*rb.buf });
    rb.buf = b;
    ctx.progress.carried.set(pending);
    true
}

/// A body buffer of `size` bytes for the request: a block of its own ([`blocks`]), or from
/// the request pool when the request holds one already (while it moves to the new buffer).
pub(super) fn new_body_buffer(
    request: &Request,
    ctx: &UploadCtx,
    size: usize,
) -> *mut ngx::ffi::ngx_buf_t {
    let pool = request.as_ref().pool;
    let block = match ctx.progress.block.get() {
        None => blocks::take(size),
        Some(_) => None,
    };
    let Some(block) = block else {
        // SAFETY: the request pool outlives the request body.
        return unsafe { ngx::ffi::ngx_create_temp_buf(pool, size) };
    };
    // Given back by release_body_buffer or when the context is dropped.
    let b = buf_over_block(request, block, size);
    if b.is_null() {
        blocks::give(block);
    } else {
        ctx.progress.block.set(Some(block));
    }
    b
}

/// Gives back a body buffer whose bytes were all consumed.
pub(super) fn release_body_buffer(request: &Request, ctx: &UploadCtx, old: &ngx::ffi::ngx_buf_t) {
    match ctx.progress.block.get() {
        Some(block) if block.start == old.start as usize => {
            ctx.progress.block.set(None);
            blocks::give(block);
        }
        // SAFETY: ngx_pfree frees a large allocation of the request pool and leaves anything
        // else (the header buffer nginx may read a small body into) alone.
        _ => unsafe {
            ngx::ffi::ngx_pfree(request.as_ref().pool, old.start.cast());
        },
    }
}

/// The body buffer nginx starts every request with (`client_body_buffer_size`).
pub(super) fn initial_buffer_size(request: &Request) -> usize {
    use ngx::http::HttpModuleLocationConf;
    ngx::http::NgxHttpCoreModule::location_conf(request)
        .map_or(8192, |clcf| clcf.client_body_buffer_size)
}

/// The size of nginx's body buffer of a request, if it has one of its own.
pub(super) fn body_buffer_size(request: &Request) -> Option<usize> {
    let req = request.as_ref();
    // SAFETY: request_body and its buffer belong to the live request.
    unsafe {
        let rb = req.request_body.as_ref()?;
        let b = rb.buf.as_ref()?;
        Some(b.end.offset_from(b.start) as usize)
    }
}

/// Gives a grown body buffer, all of whose bytes were written, back for one of
/// `client_body_buffer_size`.
pub(super) fn shrink_body_buffer(request: &Request, ctx: &UploadCtx) {
    let small = initial_buffer_size(request);
    let req = request.as_ref();
    // SAFETY: the live request's body; its buffer's bytes were all consumed by the caller, so
    // nginx goes on in the new buffer as in a reset one (see grow_body_buffer).
    unsafe {
        let Some(rb) = req.request_body.as_mut() else {
            return;
        };
        let Some(old) = rb.buf.as_ref() else {
            return;
        };
        if (old.end.offset_from(old.start) as usize) <= small
            || !rb.bufs.is_null()
            || ctx.progress.carried.get() > 0
        {
            return;
        }
        let b = ngx::ffi::ngx_create_temp_buf(req.pool, small);
        if b.is_null() {
            return;
        }
        // A client that went quiet: its memory goes back to the system, not to the spares.
        match ctx.progress.block.get() {
            Some(block) if block.start == old.start as usize => {
                ctx.progress.block.set(None);
                blocks::release(block);
            }
            _ => release_body_buffer(request, ctx, old),
        }
        rb.buf = b;
    }
    if let Some(spare) = ctx.progress.spare.take() {
        blocks::release(spare.block);
    }
}

/// The unread bytes of the body buffers nginx holds, in order; the slices live until the
/// buffers are consumed.
pub(super) fn unread_body<'a>(rb: &ngx_http_request_body_t) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut cl: *mut ngx_chain_t = rb.bufs;
    core::iter::from_fn(move || {
        while !cl.is_null() {
            // SAFETY: the chain and its buffers belong to the live request body.
            let b = unsafe { &*(*cl).buf };
            // SAFETY: as above.
            cl = unsafe { (*cl).next };
            if !b.pos.is_null() && b.last > b.pos {
                // SAFETY: [pos, last) is the unread data of a memory buffer; with
                // request_body_no_buffering nginx never puts body data in a file.
                return Some(unsafe {
                    core::slice::from_raw_parts(b.pos, b.last.offset_from(b.pos) as usize)
                });
            }
        }
        None
    })
}
