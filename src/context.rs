//! The per-request context of an upload, owned by the request pool. It is reached through
//! shared references only ([`upload_ctx`]): the variable handlers read it while templates are
//! evaluated in the middle of the upload's own work, so what changes lives in cells, and every
//! `RefCell` borrow ends before nginx is called back.

use core::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;

use ngx::ffi::{ngx_http_request_t, ngx_int_t, ngx_msec_t};
use ngx::http::{HttpModule, Request};

use ngx_upload_engine::hashing::Digests;
use ngx_upload_protocol::{FileFacts, Reply};

use crate::conf::protocol::LocationProtocol;
use crate::conf::UploadConf;
use crate::offload;
use crate::request::RequestExt;
use crate::target::{remove_quietly, Target};
use crate::Module;

/// What the `$upload_*` variables say: the file being uploaded, or the file of a form whose
/// fields are being evaluated.
#[derive(Default)]
pub struct Facts {
    pub file: FileFacts,
    pub path: PathBuf,
    pub size: u64,
    /// `$upload_file_number`: files count from 1 in a request.
    pub number: u32,
    /// `$upload_content_range`.
    pub content_range: String,
    /// Hashes of the file, once complete, when a template uses them.
    pub digests: Option<Digests>,
    /// `$upload_id`: the id of an upload created by id (tus, the IETF draft).
    pub id: Vec<u8>,
    /// `$upload_metadata_<key>`: the upload's metadata.
    pub metadata: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Facts {
    /// A whole file of `size` bytes: its range is all of it.
    pub fn whole_range(size: u64) -> String {
        match size {
            0 => "bytes 0-0/0".to_string(),
            size => format!("bytes 0-{}/{size}", size - 1),
        }
    }
}

/// What runs when the disk work a request waits for is done.
pub type Continuation = Box<dyn FnOnce(&mut Request, &UploadCtx)>;

/// A step of the upload that the body sink hands over to (set by the content handler).
pub type Step = fn(&mut Request, &UploadCtx);
/// What runs after each batch of body bytes is written (a form describes the parts that
/// ended).
pub type AfterWrite = fn(&mut Request, &UploadCtx) -> Result<(), ngx_upload_protocol::Failure>;

/// The body sink's progress through the request body.
pub struct Progress {
    /// Bytes of the body written so far.
    pub received: Cell<u64>,
    /// Length the body must have, when known in advance (Content-Length).
    pub expected: Option<u64>,
    /// When the body started, for `upload_limit_rate` (nginx's millisecond clock).
    pub started_msec: ngx_msec_t,
    /// The body is all in and the answer waits for `upload_limit_rate` (`body::finish_paced`).
    pub answer_paused: Cell<bool>,
    /// Bytes of this segment already recorded in the upload's state.
    pub recorded: Cell<u64>,
    /// Disk work for this request is running on the thread pool: reading waits for it.
    pub job_in_flight: Cell<bool>,
    /// A checkpoint is being recorded on the thread pool while reading goes on; shared with the
    /// job, which may finish after the request.
    pub checkpointing: Rc<Cell<bool>>,
    /// What to do once that work is back.
    pub job_done: RefCell<Option<Continuation>>,
    /// The final commit's record, when it ran right after the body's last write on the thread
    /// pool (`body::commit_after_last_write`); `body::run_commit` takes it.
    pub recorded_with_write:
        RefCell<Option<Result<crate::target::Record, ngx_upload_protocol::Failure>>>,
    /// The block the body buffer lies in, when it is one of its own (`body::new_body_buffer`).
    pub block: Cell<Option<ngx_upload_engine::blocks::Block>>,
    /// A body buffer being written on the thread pool while nginx reads on into another
    /// (`body::write_behind`); nothing else is written meanwhile.
    pub writing: Cell<Option<BlockBuffer>>,
    /// The buffer last written behind, for the next time nginx's buffer is full.
    pub spare: Cell<Option<BlockBuffer>>,
    /// The body ended (client gone, timeout) while a buffer was being written: what
    /// `body::body_cut_short` does waits for the write.
    pub cut_short: Cell<Option<ngx_int_t>>,
    /// Body bytes at the start of nginx's body buffer that are not written yet: moved there
    /// from a smaller buffer that filled (`body::grow_body_buffer`), not in nginx's chain.
    pub carried: Cell<usize>,
    /// When the body was last read from (nginx's clock), for [`Progress::idle_timer`].
    pub last_read_msec: Cell<ngx_msec_t>,
    /// Fires when a client holding a large body buffer goes quiet: what waits in the buffer is
    /// written and the buffer shrinks back (`body::idle_check`). nginx owns it while it is
    /// armed, hence the `UnsafeCell`.
    pub idle_timer: core::cell::UnsafeCell<ngx::ffi::ngx_event_t>,
    /// Fires every second while the body is read, for [`UploadCtx::yield_to`].
    pub watch_timer: core::cell::UnsafeCell<ngx::ffi::ngx_event_t>,
}

/// A body buffer of the request pool over a block of its own.
#[derive(Clone, Copy)]
pub struct BlockBuffer {
    pub buf: *mut ngx::ffi::ngx_buf_t,
    pub block: ngx_upload_engine::blocks::Block,
}

pub struct UploadCtx {
    /// For [`Drop`] only, which runs in a cleanup of the request's own pool.
    request: *mut ngx_http_request_t,
    pub conf: &'static UploadConf,
    pub protocol: LocationProtocol,
    /// Where the body goes.
    pub target: RefCell<Target>,
    pub facts: RefCell<Facts>,
    pub progress: Progress,
    /// What the body sink calls once the whole body is written.
    pub body_done: Step,
    /// What the body sink calls after each batch of body bytes is written.
    pub body_written: AfterWrite,
    /// Asked every second while the body is read: whether a newer request for the same upload
    /// wants this one to stop (a client that lost its connection and came back); the body
    /// sink then ends the body, keeping what arrived.
    pub yield_to: Option<fn(&UploadCtx) -> bool>,
    /// Headers the hand-off adds to the backend's answer if it is a 2xx.
    pub on_success: RefCell<Vec<(&'static str, Vec<u8>)>>,
    /// This request passed the finished file to `upload_pass`.
    pub handed_off: Cell<bool>,
}

impl UploadCtx {
    pub fn new(
        request: &Request,
        conf: &'static UploadConf,
        protocol: LocationProtocol,
        target: Target,
        facts: Facts,
        body_done: Step,
        body_written: AfterWrite,
    ) -> Self {
        let r = request.as_ref();
        let hin = &r.headers_in;
        UploadCtx {
            request: core::ptr::from_ref(r).cast_mut(),
            conf,
            protocol,
            target: RefCell::new(target),
            facts: RefCell::new(facts),
            progress: Progress {
                received: Cell::new(0),
                expected: u64::try_from(hin.content_length_n)
                    .ok()
                    .filter(|_| hin.chunked() == 0),
                started_msec: now_msec(),
                answer_paused: Cell::new(false),
                recorded: Cell::new(0),
                job_in_flight: Cell::new(false),
                checkpointing: Rc::default(),
                job_done: RefCell::new(None),
                recorded_with_write: RefCell::new(None),
                last_read_msec: Cell::new(now_msec()),
                block: Cell::new(None),
                writing: Cell::new(None),
                spare: Cell::new(None),
                cut_short: Cell::new(None),
                carried: Cell::new(0),
                // SAFETY: ngx_event_t is plain C data, all-zero before use as nginx's own
                // events are.
                idle_timer: core::cell::UnsafeCell::new(unsafe { core::mem::zeroed() }),
                // SAFETY: as above.
                watch_timer: core::cell::UnsafeCell::new(unsafe { core::mem::zeroed() }),
            },
            body_done,
            body_written,
            on_success: RefCell::default(),
            yield_to: None,
            handed_off: Cell::new(false),
        }
    }

    pub fn received(&self) -> u64 {
        self.progress.received.get()
    }

    /// Disk work for the request's body is running on the thread pool: a job it waits for, or a
    /// buffer written behind. What would end or flush the body waits for it.
    pub fn busy_on_disk(&self) -> bool {
        self.progress.job_in_flight.get() || self.progress.writing.get().is_some()
    }

    /// Answers with the protocol's own `reply` once the bytes this request wrote are recorded
    /// and nothing is handed off: the claim on them goes first, so a client that resends or
    /// goes on at once, on another connection, does not find them claimed by this request,
    /// which nginx may keep for a while after its answer (lingering close, HTTP/2).
    pub fn answer_recorded(&self, request: &mut Request, reply: Reply) -> ngx_int_t {
        self.target.borrow_mut().release_claim();
        request.send_reply(self.conf, reply)
    }

    /// Removes what a failed request stored that no upload keeps.
    pub fn discard_unfinished(&self) {
        if !self.handed_off.get() {
            if let Ok(mut target) = self.target.try_borrow_mut() {
                target.discard_unfinished();
            }
        }
    }
}

/// The upload context of a request, if it has one: from the request's module context slot,
/// set by the content handler to a context in the request pool; during the hand-off's
/// internal redirect, which clears the slot, from [`RedirectingWith`].
///
/// # Safety
/// `r` must be a live request, and the reference must not be held past the nginx callback the
/// caller runs in (the context lives as long as the request pool).
pub unsafe fn upload_ctx<'a>(r: *mut ngx_http_request_t) -> Option<&'a UploadCtx> {
    // SAFETY: r is live (the caller's promise); the slot is NULL or our context, which nothing
    // reaches mutably while the request lives.
    let slot = unsafe { *(*r).ctx.add(Module::module().ctx_index) };
    if !slot.is_null() {
        // SAFETY: as above.
        return unsafe { slot.cast::<UploadCtx>().as_ref() };
    }
    let redirecting = REDIRECTING.with(|list| {
        list.borrow()
            .iter()
            .find(|(of, _)| *of == r)
            .map(|&(_, ctx)| ctx)
    })?;
    // SAFETY: a context registered by a live RedirectingWith of this very request, which
    // borrows it for as long as it is registered.
    unsafe { redirecting.as_ref() }
}

thread_local! {
    /// Requests in the middle of the hand-off's internal redirect, with their contexts (event
    /// loop only).
    static REDIRECTING: RefCell<Vec<(*mut ngx_http_request_t, *const UploadCtx)>> =
        const { RefCell::new(Vec::new()) };
}

/// Keeps a request's context reachable through [`upload_ctx`] while the hand-off's internal
/// redirect runs: nginx clears the module context slots, and a backend location that answers
/// at once (`return 200`, before the redirect returns and the hand-off puts the context back)
/// must still find it, for the hand-off's headers on its answer and for the `$upload_*`
/// variables it may use.
pub struct RedirectingWith<'a> {
    r: *mut ngx_http_request_t,
    _ctx: core::marker::PhantomData<&'a UploadCtx>,
}

impl<'a> RedirectingWith<'a> {
    pub fn new(request: &Request, ctx: &'a UploadCtx) -> Self {
        let r = request.raw();
        REDIRECTING.with(|list| list.borrow_mut().push((r, core::ptr::from_ref(ctx))));
        RedirectingWith {
            r,
            _ctx: core::marker::PhantomData,
        }
    }
}

impl Drop for RedirectingWith<'_> {
    fn drop(&mut self) {
        let r = self.r;
        REDIRECTING.with(|list| list.borrow_mut().retain(|(of, _)| *of != r));
    }
}

/// nginx's cached clock, updated by the event loop of this (single-threaded) worker.
pub fn now_msec() -> ngx_msec_t {
    // SAFETY: a plain read of nginx's clock on the thread that updates it.
    unsafe { ngx::ffi::ngx_current_msec }
}

impl Drop for UploadCtx {
    fn drop(&mut self) {
        let progress = &self.progress;
        let behind = [progress.writing.take(), progress.spare.take()];
        for block in progress
            .block
            .take()
            .into_iter()
            .chain(behind.into_iter().flatten().map(|b| b.block))
        {
            // The request is ending (this runs in its pool's cleanup): nginx reads no more body
            // into the buffer over this block, and no disk work is writing from it (a write
            // keeps the request from ending until it is back).
            ngx_upload_engine::blocks::give(block);
        }
        for timer in [
            self.progress.idle_timer.get_mut(),
            self.progress.watch_timer.get_mut(),
        ] {
            if timer.timer_set() != 0 {
                // SAFETY: an armed timer of nginx's tree, on this worker's event loop.
                unsafe { ngx::ffi::ngx_del_timer(timer) };
            }
        }
        let target = self.target.get_mut();
        if !self.handed_off.get() {
            target.discard_unfinished();
            return;
        }
        // SAFETY: the context is dropped by a cleanup of the request's own pool, which runs
        // before the pool's memory (which holds the request) is freed.
        let status = unsafe { (*self.request).headers_out.status };
        let cleanup = self.conf.cleans_up_on(status);
        let files: Vec<PathBuf> = if cleanup {
            target.stored_files()
        } else {
            Vec::new()
        };
        if let Target::Upload(up) = target {
            // As for a session, below; the upload's files go with upload_cleanup.
            if cleanup {
                if let Ok(upload) = up.upload.try_clone() {
                    // SAFETY: ngx_cycle is the live cycle of this worker.
                    let log = unsafe { (*ngx::ffi::ngx_cycle).log };
                    offload::run(
                        offload::Pool(self.conf.thread_pool),
                        log,
                        move || {
                            let _ = upload.terminate();
                        },
                        |_| {},
                    );
                }
            } else if status < 500 {
                // A backend's answer below 500 is its verdict, final: taken (2xx, 3xx) or
                // refused (4xx). A 5xx, or no answer, keeps the upload for a retry.
                let _ = up.upload.forget_state();
            }
            return;
        }
        let session = target.session();
        // The backend has the file: the upload is over, as in the C module; its state (a small
        // file) goes at once, so a crash right after the answer cannot leave it looking alive.
        // Any other failure keeps the state, so the client can retry the hand-off. With
        // upload_cleanup the upload's files go, off the event loop.
        if !cleanup && status < 400 {
            if let Some(session) = session {
                let _ = session.forget_state();
            }
        }
        let session = session.filter(|_| cleanup).and_then(|s| s.try_clone().ok());
        if files.is_empty() && session.is_none() {
            return;
        }
        // Unlinking a large file can take a while: off the event loop. The request is gone by
        // then, so the job logs to the cycle's log.
        // SAFETY: ngx_cycle is the live cycle of this worker.
        let log = unsafe { (*ngx::ffi::ngx_cycle).log };
        offload::run(
            offload::Pool(self.conf.thread_pool),
            log,
            move || {
                files.iter().for_each(|p| remove_quietly(p));
                if let Some(session) = session {
                    let _ = session.remove();
                }
            },
            |_| {},
        );
    }
}
