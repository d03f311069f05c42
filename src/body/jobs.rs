//! Disk work for a request on the thread pool: its commits, and writes of body bytes held in
//! nginx's buffers.

use std::io::IoSlice;

use ngx::ffi::ngx_http_request_t;
use ngx::http::Request;

use ngx_upload_engine::hashing::Algorithms;
use ngx_upload_protocol::Failure;

use crate::context::{upload_ctx, UploadCtx};
use crate::offload;
use crate::request::RequestExt;
use crate::target::{CommitJob, Placement, Record};

/// The last bytes of a body, in nginx's buffers, as addresses and lengths for the thread pool.
pub(super) struct BodyBytes(Vec<(usize, usize)>);

impl BodyBytes {
    pub(super) fn of(slices: &[IoSlice<'_>]) -> Self {
        BodyBytes(
            slices
                .iter()
                .map(|s| (s.as_ptr() as usize, s.len()))
                .collect(),
        )
    }

    pub(super) fn write_at(&self, place: &Placement) -> Result<(), Failure> {
        // SAFETY: the buffers are nginx's body buffers of a request that run_blocking keeps
        // alive until this job is back; nginx has read the whole body, so nothing writes into
        // them, and they are consumed only by the job's continuation.
        let slices: Vec<IoSlice<'_>> = self
            .0
            .iter()
            .map(|&(at, len)| {
                IoSlice::new(unsafe { core::slice::from_raw_parts(at as *const u8, len) })
            })
            .collect();
        // SAFETY: the descriptor is the target's open data file, which lives in the request's
        // context, kept alive with the request; ManuallyDrop leaves it open.
        let file = core::mem::ManuallyDrop::new(unsafe {
            <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(place.fd)
        });
        ngx_upload_engine::session::write_all_at(&file, place.offset, &slices)
            .map_err(|e| Failure::io(format!("writing \"{}\" failed", place.path.display()), &e))
    }
}

/// The work of recording the bytes written so far, to run on the thread pool: it works on its
/// own handle of the upload, which shares this request's locks.
pub(super) fn prepare_commit(ctx: &UploadCtx, finishing: bool) -> Result<CommitJob, Failure> {
    ctx.target
        .borrow_mut()
        .commit_job(ctx.received(), finishing, ctx.conf.hash_algorithms())
        .unwrap_or_else(|| Err(Failure::internal("this request records no bytes")))
}

/// Records the segment bytes written so far on the thread pool while the request goes on;
/// `then` gets the result on the event loop, possibly after the request ended.
pub(super) fn commit_off_loop(
    request: &Request,
    ctx: &UploadCtx,
    finishing: bool,
    then: impl FnOnce(Result<Record, Failure>) + 'static,
) -> Result<(), Failure> {
    let job = prepare_commit(ctx, finishing)?;
    offload::run(
        offload::Pool(ctx.conf.thread_pool),
        request.log(),
        job,
        move |result| then(flatten(result)),
    );
    Ok(())
}

/// Runs a request's final commit (of the whole body), then `then` with its result: a failure
/// to prepare it too. If it already ran with the body's last write on the thread pool, `then`
/// gets that record. Here on the event loop when the commit is only a state-file append under
/// a lock (no fsync, no hash to catch up by reading the file back): nginx writes a body's temp
/// file there too, and for a small segment the round trip through the thread pool costs more
/// than the append. Otherwise on the thread pool, see [`run_blocking`].
pub fn run_commit(
    request: &mut Request,
    ctx: &UploadCtx,
    then: impl FnOnce(&mut Request, &UploadCtx, Option<Result<Record, Failure>>) + 'static,
) {
    if let Some(record) = ctx.progress.recorded_with_write.take() {
        // Already run, with the body's last write (commit_after_last_write).
        return then(request, ctx, Some(record));
    }
    let job = match prepare_commit(ctx, true) {
        Ok(job) => job,
        Err(failure) => return then(request, ctx, Some(Err(failure))),
    };
    if commit_is_long(ctx) {
        return run_blocking(request, ctx, job, then);
    }
    // A panic must not unwind into nginx: it becomes a failure, as on the thread pool.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).ok();
    then(request, ctx, result);
}

/// Whether a commit is long work (an fsync, a hash to catch up by reading the file back), for
/// nginx's pool; else it is a state-file append under a lock.
pub(super) fn commit_is_long(ctx: &UploadCtx) -> bool {
    ctx.conf.sessions().durable || ctx.conf.hash_algorithms() != Algorithms::NONE
}

/// A job's result, with a panicked job as a failure.
pub fn flatten<T>(result: Option<Result<T, Failure>>) -> Result<T, Failure> {
    result.unwrap_or_else(|| Err(Failure::internal("disk work on the thread pool failed")))
}

/// Runs blocking `work` on the thread pool while the request waits (reading paused, nginx kept
/// from finalizing it, as nginx's own thread tasks do), then `then` with its result on the
/// event loop, unless the request was terminated meanwhile.
pub fn run_blocking<R: Send + 'static>(
    request: &mut Request,
    ctx: &UploadCtx,
    work: impl FnOnce() -> R + Send + 'static,
    then: impl FnOnce(&mut Request, &UploadCtx, Option<R>) + 'static,
) {
    run_job(request, ctx, true, false, work, then);
}

/// [`run_blocking`], on the worker's write lane ([`crate::lane`]) if the job is `short` (a
/// write, a state-file append without fsync).
pub(super) fn run_blocking_maybe_on_lane<R: Send + 'static>(
    short: bool,
    request: &mut Request,
    ctx: &UploadCtx,
    work: impl FnOnce() -> R + Send + 'static,
    then: impl FnOnce(&mut Request, &UploadCtx, Option<R>) + 'static,
) {
    run_job(request, ctx, true, short, work, then);
}

/// [`run_blocking`], with the body read on meanwhile (a buffer written behind, on the write
/// lane).
pub(super) fn run_beside_reading<R: Send + 'static>(
    request: &mut Request,
    ctx: &UploadCtx,
    work: impl FnOnce() -> R + Send + 'static,
    then: impl FnOnce(&mut Request, &UploadCtx, Option<R>) + 'static,
) {
    run_job(request, ctx, false, true, work, then);
}

fn run_job<R: Send + 'static>(
    request: &mut Request,
    ctx: &UploadCtx,
    pauses_reading: bool,
    short: bool,
    work: impl FnOnce() -> R + Send + 'static,
    then: impl FnOnce(&mut Request, &UploadCtx, Option<R>) + 'static,
) {
    let r = request.raw();
    if pauses_reading {
        ctx.progress.job_in_flight.set(true);
    }
    // SAFETY: r is live; blocking the main request keeps nginx from freeing it until the job
    // unblocks it below; nginx replaces the write event handler if it terminates the request
    // meanwhile.
    unsafe {
        let main = (*r).main;
        (*main).set_blocked((*main).blocked() + 1);
        (*r).set_aio(u32::from(pauses_reading));
        (*r).write_event_handler = Some(job_continuation);
    }
    let run = if short {
        offload::run_short
    } else {
        offload::run
    };
    run(
        offload::Pool(ctx.conf.thread_pool),
        request.log(),
        work,
        move |result| {
            // SAFETY: the request, and with it its context, was kept alive by the block above;
            // the reference is dropped before the continuation runs.
            if let Some(ctx) = unsafe { upload_ctx(r) } {
                *ctx.progress.job_done.borrow_mut() =
                    Some(Box::new(move |request: &mut Request, ctx: &UploadCtx| {
                        then(request, ctx, result)
                    }));
            }
            // SAFETY: as above; this undoes the block.
            unsafe {
                let main = (*r).main;
                (*main).set_blocked((*main).blocked() - 1);
                (*r).set_aio(0);
                let c = (*r).connection;
                // Our continuation, or nginx's finalizer if the request was terminated.
                if let Some(handler) = (*r).write_event_handler {
                    handler(r);
                }
                ngx::ffi::ngx_http_run_posted_requests(c);
            }
        },
    );
}

/// The write event handler while disk work runs: goes on once its result is in.
unsafe extern "C" fn job_continuation(r: *mut ngx_http_request_t) {
    // SAFETY: nginx (or the job's completion) calls it with the live request, which has our
    // context; both are used within this callback only.
    let (request, ctx) = unsafe { (Request::from_ngx_http_request(r), upload_ctx(r)) };
    let Some(ctx) = ctx else {
        return;
    };
    let Some(then) = ctx.progress.job_done.borrow_mut().take() else {
        return; // a write event before the work finished: nothing to do yet
    };
    ctx.progress.job_in_flight.set(false);
    request.as_mut().write_event_handler = Some(ngx::ffi::ngx_http_request_empty_handler);
    then(request, ctx);
}
