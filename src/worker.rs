//! What a worker process starts: the sweep of expired sessions ([`expiry`], first worker only)
//! and, in every worker, a timer that closes the upload files the engine keeps open between
//! requests once they have been idle a while ([`ngx_upload_engine::idle_files`]), so that a
//! quiet worker does not hold the space of files removed meanwhile.

use core::ptr::addr_of_mut;

use ngx::ffi::{
    ngx_add_timer, ngx_cycle_t, ngx_event_t, ngx_int_t, ngx_msec_t, ngx_process,
    NGX_PROCESS_SINGLE, NGX_PROCESS_WORKER,
};
use ngx_upload_engine::idle_files;

use ngx::http::HttpModuleMainConf;

use crate::conf::MainConf;
use crate::{expiry, offload, Module};

/// The timer that closes idle kept files, in this worker process.
static mut CLOSE_IDLE: ngx_event_t = {
    // SAFETY: ngx_event_t is plain C data, all-zero before use as nginx's own events are.
    unsafe { core::mem::zeroed() }
};

fn close_idle_every() -> ngx_msec_t {
    idle_files::IDLE_FOR.as_millis() as ngx_msec_t
}

/// The module's `init_process`.
///
/// # Safety
/// Called by nginx in a new process with its cycle.
pub unsafe extern "C" fn init_process(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // Only where uploads are served, and nginx's thread pools run (not in the cache manager
    // and loader, which nginx starts through init_process too).
    // SAFETY: nginx's process global, set before init_process.
    let process = unsafe { ngx_process } as u32;
    let serves = process == NGX_PROCESS_WORKER || process == NGX_PROCESS_SINGLE;
    // SAFETY: the cycle is live for the process's life.
    if let Some(main) = Module::main_conf(unsafe { &*cycle }).filter(|_| serves) {
        // SAFETY: CLOSE_IDLE is only touched by this single-threaded worker's event loop; the
        // main configuration lives as long as the cycle.
        unsafe {
            let ev = addr_of_mut!(CLOSE_IDLE);
            (*ev).handler = Some(close_idle_due);
            (*ev).data = core::ptr::from_ref(main).cast_mut().cast();
            (*ev).log = (*cycle).log;
            // Shutting down does not wait for it.
            (*ev).set_cancelable(1);
            ngx_add_timer(ev, close_idle_every());
        }
        #[cfg(ngx_feature = "threads")]
        // SAFETY: once, on this worker's event loop, with its live cycle.
        unsafe {
            crate::lane::start(cycle)
        };
    }
    // SAFETY: as for this function.
    unsafe { expiry::start_sweeping(cycle) }
}

/// The module's `exit_process`: the write lane's jobs finish before the worker is gone.
///
/// # Safety
/// Called by nginx in an exiting process with its cycle.
pub unsafe extern "C" fn exit_process(_cycle: *mut ngx_cycle_t) {
    crate::lane::drain(std::time::Duration::from_secs(10));
}

/// Closes the kept files idle too long, on the thread pool: closing the last descriptor of a
/// file the backend removed frees its blocks, which can take a while for a large one. Then
/// sets the timer again.
unsafe extern "C" fn close_idle_due(ev: *mut ngx_event_t) {
    if expiry::shutting_down() {
        return;
    }
    // SAFETY: data is the http main configuration, which lives as long as the cycle.
    let (main, log) = unsafe { (&*(*ev).data.cast::<MainConf>(), (*ev).log) };
    offload::run(
        offload::Pool(main.thread_pool),
        log,
        idle_files::close_idle,
        move |_| {
            if !expiry::shutting_down() {
                // SAFETY: the timer event is ours and idle (it fired, and is set only here).
                unsafe { ngx_add_timer(ev, close_idle_every()) };
            }
        },
    );
}
