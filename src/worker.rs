//! What a worker process starts: the sweep of expired sessions ([`expiry`], first worker only)
//! and, in every worker, a timer that closes the upload files the engine keeps open between
//! requests once they have been idle a while ([`ngx_upload_engine::idle_files`]), so that a
//! quiet worker does not hold the space of files removed meanwhile.

use core::ptr::addr_of_mut;

use ngx::ffi::{ngx_add_timer, ngx_cycle_t, ngx_event_t, ngx_int_t, ngx_msec_t};
use ngx_upload_engine::idle_files;

use crate::expiry;

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
    // SAFETY: CLOSE_IDLE is only touched by this single-threaded worker's event loop; the
    // cycle is live for the process's life.
    unsafe {
        let ev = addr_of_mut!(CLOSE_IDLE);
        (*ev).handler = Some(close_idle_due);
        (*ev).log = (*cycle).log;
        // Shutting down does not wait for it.
        (*ev).set_cancelable(1);
        ngx_add_timer(ev, close_idle_every());
    }
    // SAFETY: as for this function.
    unsafe { expiry::start_sweeping(cycle) }
}

/// Closes the kept files idle too long (a lock and a scan of a few dozen entries at most, and
/// `close` of those), then sets the timer again.
unsafe extern "C" fn close_idle_due(ev: *mut ngx_event_t) {
    idle_files::close_idle();
    if !expiry::shutting_down() {
        // SAFETY: the timer event is ours and idle (it just fired).
        unsafe { ngx_add_timer(ev, close_idle_every()) };
    }
}
