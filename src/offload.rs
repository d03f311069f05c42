//! Blocking disk work off the event loop: fsync, reading a file back to hash it, sweeping
//! expired sessions. The work runs on one of nginx's thread pools (`thread_pool`, the pool
//! named "default" unless configured), and what follows it runs back on the worker's event loop,
//! as nginx's own `aio threads` does.
//!
//! Without thread support in nginx, or when the pool's queue is full, the work runs at once on
//! the event loop (slower for other requests, but never wrong), and what follows it runs as a
//! posted event: in every case after [`run`] has returned.

use core::ffi::c_void;

use ngx::ffi::{ngx_event_t, ngx_log_t, ngx_thread_pool_t};
#[cfg(ngx_feature = "threads")]
use ngx::ffi::{ngx_thread_task_post, ngx_thread_task_t, NGX_OK};

/// Where offloaded work runs: a thread pool, or NULL for "here and now".
#[derive(Clone, Copy)]
pub struct Pool(pub *mut ngx_thread_pool_t);

// SAFETY: the pool pointer is only handed to nginx's thread-pool API from the event loop.
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

/// A unit of offloaded work and what to do with its result: one allocation, the closures
/// inside it (a job runs for every segment of an upload).
struct Job<R, W, T> {
    #[cfg(ngx_feature = "threads")]
    task: ngx_thread_task_t,
    /// Completion event when the work ran on the event loop.
    inline_done: ngx_event_t,
    work: Option<W>,
    /// `None` until the work ran; stays `None` if it panicked.
    result: Option<R>,
    then: Option<T>,
}

/// Runs `work` on `pool`, then `then` with its result on the event loop (`None` if the work
/// panicked, which is logged). `then` never runs before this returns.
pub fn run<R, W, T>(pool: Pool, log: *mut ngx_log_t, work: W, then: T)
where
    R: Send + 'static,
    W: FnOnce() -> R + Send + 'static,
    T: FnOnce(Option<R>) + 'static,
{
    let job = Job::leak(work, then);
    #[cfg(ngx_feature = "threads")]
    if !pool.0.is_null() {
        // SAFETY: job is a live, leaked Box; nginx owns the task until it calls the event
        // handler, which takes the Box back. ctx and event.data both point at the job.
        unsafe {
            let task = &mut (*job).task;
            task.ctx = job.cast::<c_void>();
            task.handler = Some(work_on_thread::<R, W, T>);
            task.event.data = job.cast::<c_void>();
            task.event.handler = Some(work_finished::<R, W, T>);
            task.event.log = log;
            if ngx_thread_task_post(pool.0, task) == NGX_OK as isize {
                return;
            }
        }
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_WARN,
            log,
            "upload: thread pool queue is full, doing the disk work on the event loop"
        );
    }
    let _ = pool;
    // SAFETY: job is a live, leaked job given to nobody.
    unsafe { run_here(job, log) }
}

impl<R, W, T> Job<R, W, T> {
    /// A new job, leaked: nginx's pool, the lane or [`run_here`] holds it until [`finish`]
    /// takes it back.
    fn leak(work: W, then: T) -> *mut Self {
        Box::into_raw(Box::new(Job {
            #[cfg(ngx_feature = "threads")]
            // SAFETY: ngx_thread_task_t is plain C data; all-zero is its initial state, as
            // ngx_thread_task_alloc makes it.
            task: unsafe { core::mem::zeroed() },
            // SAFETY: as above, for ngx_event_t.
            inline_done: unsafe { core::mem::zeroed() },
            work: Some(work),
            result: None,
            then: Some(then),
        }))
    }
}

/// Runs a job's work here, and its continuation as a posted event: after the caller returns,
/// as on a pool.
///
/// # Safety
/// `job` is a live job from [`Job::leak`] that nothing else holds.
unsafe fn run_here<R, W, T>(job: *mut Job<R, W, T>, log: *mut ngx_log_t)
where
    W: FnOnce() -> R,
    T: FnOnce(Option<R>),
{
    // SAFETY: see above; the event is posted once and takes the job back (work_finished).
    unsafe {
        work_on_thread::<R, W, T>(job.cast::<c_void>(), log);
        let ev = &raw mut (*job).inline_done;
        (*ev).data = job.cast::<c_void>();
        (*ev).handler = Some(work_finished::<R, W, T>);
        (*ev).log = log;
        ngx::ffi::ngx_post_event(ev, &raw mut ngx::ffi::ngx_posted_events);
    }
}

/// [`run`] for a short job of an upload's body (a write, a state-file append): on the worker's
/// write lane ([`crate::lane`]) when it runs, else as [`run`]. Lane jobs run one after another,
/// in the order given.
pub fn run_short<R, W, T>(pool: Pool, log: *mut ngx_log_t, work: W, then: T)
where
    R: Send + 'static,
    W: FnOnce() -> R + Send + 'static,
    T: FnOnce(Option<R>) + 'static,
{
    if !crate::lane::accepting() {
        return run(pool, log, work, then);
    }
    let job = Job::leak(work, then);
    let entry = crate::lane::Entry {
        data: job.cast::<c_void>(),
        log,
        work: work_on_thread::<R, W, T>,
        finish: finish_erased::<R, W, T>,
    };
    if crate::lane::submit(entry).is_err() {
        // SAFETY: the lane did not take the job, so nothing else holds it.
        unsafe { run_here(job, log) }
    }
}

/// [`finish`] for a lane entry.
///
/// # Safety
/// As for [`finish`].
unsafe fn finish_erased<R, W, T: FnOnce(Option<R>)>(data: *mut c_void, log: *mut ngx_log_t) {
    // SAFETY: see above.
    unsafe { finish(data.cast::<Job<R, W, T>>(), log) }
}

/// The thread pool's task handler: runs the work, catching a panic so it cannot unwind into C.
unsafe extern "C" fn work_on_thread<R, W: FnOnce() -> R, T>(
    data: *mut c_void,
    _log: *mut ngx_log_t,
) {
    // SAFETY: data is the job posted by `run`; only this thread touches it until the event
    // handler runs on the event loop.
    let job = unsafe { &mut *data.cast::<Job<R, W, T>>() };
    if let Some(work) = job.work.take() {
        job.result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)).ok();
    }
}

/// The job's completion event, on the event loop.
unsafe extern "C" fn work_finished<R, W, T: FnOnce(Option<R>)>(ev: *mut ngx_event_t) {
    // SAFETY: the event belongs to the job's task; its data is the job.
    unsafe {
        let log = (*ev).log;
        finish((*ev).data.cast::<Job<R, W, T>>(), log);
    }
}

/// Takes the job back and calls its continuation.
///
/// # Safety
/// `job` must be a job leaked by `run` whose work has run.
unsafe fn finish<R, W, T: FnOnce(Option<R>)>(job: *mut Job<R, W, T>, log: *mut ngx_log_t) {
    // SAFETY: see above; the Box is taken back exactly once.
    let job = unsafe { Box::from_raw(job) };
    let Job { result, then, .. } = *job;
    if result.is_none() {
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_ALERT,
            log,
            "upload: disk work on the thread pool panicked"
        );
    }
    if let Some(then) = then {
        then(result);
    }
}
