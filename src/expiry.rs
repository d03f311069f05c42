//! `upload_state_expire`: the first worker process sweeps sessions untouched for longer than
//! configured, on a timer, with the sweep itself (directory walks, unlinks) on the thread pool.

use core::ptr::addr_of_mut;
use std::time::{Duration, SystemTime};

use ngx::ffi::{
    ngx_add_timer, ngx_cycle_t, ngx_event_t, ngx_exiting, ngx_int_t, ngx_msec_t, ngx_process,
    ngx_quit, ngx_terminate, ngx_worker, NGX_LOG_ERR, NGX_LOG_INFO, NGX_OK, NGX_PROCESS_SINGLE,
    NGX_PROCESS_WORKER,
};
use ngx::http::HttpModuleMainConf;
use ngx::ngx_log_error;

use crate::conf::MainConf;
use crate::{offload, Module};

/// The sweep timer of this worker process.
static mut SWEEP: ngx_event_t = {
    // SAFETY: ngx_event_t is plain C data, all-zero before use as nginx's own events are.
    unsafe { core::mem::zeroed() }
};

/// How often to sweep: half the shortest expiry, between one second and a minute.
fn interval(main: &MainConf) -> Duration {
    main.expiring
        .iter()
        .filter_map(|s| s.expire_after)
        .min()
        .map_or(Duration::from_secs(60), |d| d / 2)
        .clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Starts the sweep timer in the first worker.
///
/// # Safety
/// Called from the module's `init_process` with the process's cycle.
pub unsafe fn start_sweeping(cycle: *mut ngx_cycle_t) -> ngx_int_t {
    // SAFETY: nginx's process globals, set before init_process.
    let (process, worker) = unsafe { (ngx_process as u32, ngx_worker) };
    if !(process == NGX_PROCESS_WORKER && worker == 0 || process == NGX_PROCESS_SINGLE) {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: the cycle is live for the process's life.
    let Some(main) = Module::main_conf(unsafe { &*cycle }) else {
        return NGX_OK as ngx_int_t;
    };
    if main.expiring.is_empty() {
        return NGX_OK as ngx_int_t;
    }
    // SAFETY: SWEEP is only touched by this single-threaded worker's event loop.
    unsafe {
        let ev = addr_of_mut!(SWEEP);
        (*ev).handler = Some(sweep_due);
        (*ev).data = core::ptr::from_ref(main).cast_mut().cast();
        (*ev).log = (*cycle).log;
        // Shutting down does not wait for the next sweep.
        (*ev).set_cancelable(1);
        ngx_add_timer(ev, interval(main).as_millis() as ngx_msec_t);
    }
    NGX_OK as ngx_int_t
}

pub(crate) fn shutting_down() -> bool {
    // SAFETY: nginx's signal flags, read on the event loop.
    unsafe { ngx_exiting != 0 || ngx_quit != 0 || ngx_terminate != 0 }
}

/// The timer fired: sweep every store on the thread pool, then set the timer again.
unsafe extern "C" fn sweep_due(ev: *mut ngx_event_t) {
    if shutting_down() {
        return;
    }
    // SAFETY: data is the http main configuration, which lives as long as the cycle.
    let (main, log) = unsafe { (&*(*ev).data.cast::<MainConf>(), (*ev).log) };
    let stores = main.expiring.clone();
    let pool = offload::Pool(main.thread_pool);
    let next = interval(main).as_millis() as ngx_msec_t;
    offload::run(
        pool,
        log,
        move || {
            let now = SystemTime::now();
            stores
                .iter()
                .map(|s| (s.state.root.clone(), s.sweep_expired(now)))
                .collect::<Vec<_>>()
        },
        move |results| {
            for (root, result) in results.into_iter().flatten() {
                match result {
                    Ok(sweep) if sweep.removed > 0 => {
                        ngx_log_error!(
                            NGX_LOG_INFO,
                            log,
                            "upload: removed {} expired sessions from \"{}\"",
                            sweep.removed,
                            root.display()
                        );
                    }
                    Ok(_) => {}
                    Err(e) => {
                        ngx_log_error!(
                            NGX_LOG_ERR,
                            log,
                            "upload: sweeping expired sessions in \"{}\" failed: {e}",
                            root.display()
                        );
                    }
                }
            }
            if !shutting_down() {
                // SAFETY: the timer event is ours and idle (it just fired).
                unsafe { ngx_add_timer(ev, next) };
            }
        },
    );
}
