//! The worker's write lane: one thread of its own for the short disk jobs of uploads (a body
//! buffer's `pwritev`, a segment's state-file append), in order, and an `eventfd` in nginx's
//! event loop through which their continuations come back.
//!
//! Why not nginx's thread pool: a pool of many threads has an idle one for nearly every job,
//! and waking it (`futex`, an inter-processor interrupt, dear on virtual machines) cost the
//! event loop more than the write saved; a burst of small segments woke one thread each. One
//! busy thread takes a burst one job after another, woken at most once. Long work (fsync,
//! reading a file back to hash it, assembling, removing, sweeping) stays on nginx's pool, so
//! it never holds a lane job up for long, and no lane job waits for another one.
//!
//! Without thread support, or if the lane cannot start (no `eventfd`, an event method other
//! than epoll), `offload::run_short` uses nginx's pool as before; so it does while the lane's
//! current job has run for over 2 ms (slow storage), so that one slow write does not hold up
//! the others (each request has one job at a time, so its own stay in order).

use core::ffi::c_void;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};

use ngx::ffi::{ngx_connection_t, ngx_cycle_t, ngx_event_t, ngx_log_t};

/// A job handed to the lane: type-erased pointers into a job of the offload module (which
/// uses this one, not the other way round).
pub struct Entry {
    pub data: *mut c_void,
    pub log: *mut ngx_log_t,
    /// Runs the work, on the lane's thread.
    pub work: unsafe extern "C" fn(*mut c_void, *mut ngx_log_t),
    /// Takes the job back and runs its continuation, on the event loop.
    pub finish: unsafe fn(*mut c_void, *mut ngx_log_t),
}

// SAFETY: an entry's job is touched by one thread at a time: the lane's while it works, then
// the event loop's, handed over through the lane's mutexes.
unsafe impl Send for Entry {}

struct Lane {
    /// Jobs to run, in order.
    queue: Mutex<VecDeque<Entry>>,
    wake: Condvar,
    /// Jobs submitted and not yet run; `idle` is told when it falls to 0.
    unfinished: Mutex<usize>,
    idle: Condvar,
    /// When the job now running started (CLOCK_MONOTONIC, ns), 0 while the thread waits.
    busy_since_ns: AtomicU64,
    /// Jobs run, whose continuations the event loop has yet to run.
    done: Mutex<Vec<Entry>>,
    eventfd: i32,
}

/// The lane of this worker process, once started (set once, on the event loop, at start).
static LANE: std::sync::OnceLock<Lane> = std::sync::OnceLock::new();

/// The event-loop end of the lane's eventfd: a connection and its events of our own, not
/// from the cycle's pool, as nginx's own epoll notification has them (a pooled one would be
/// reported as an open socket left behind when the worker shuts down gracefully).
static mut DONE_CONNECTION: ngx_connection_t = {
    // SAFETY: ngx_connection_t is plain C data, all-zero before use.
    unsafe { core::mem::zeroed() }
};
static mut DONE_READ: ngx_event_t = {
    // SAFETY: as above, for ngx_event_t.
    unsafe { core::mem::zeroed() }
};
/// Never active; nginx's epoll code looks at it when the read event is added.
static mut DONE_WRITE: ngx_event_t = {
    // SAFETY: as above.
    unsafe { core::mem::zeroed() }
};

/// nginx's NGX_READ_EVENT and NGX_CLEAR_EVENT for epoll (macros, not in the bindings).
const EPOLL_READ_EVENT: isize = (libc::EPOLLIN | libc::EPOLLRDHUP) as isize;
const EPOLL_CLEAR_EVENT: usize = libc::EPOLLET as u32 as usize;

/// How long one job may have been running before new ones go to nginx's pool instead: on
/// slow storage (a network filesystem) a worker's writes are not all held up behind one.
/// Writes into the page cache take tens of microseconds.
const STALLED_AFTER_NS: u64 = 2_000_000;

/// Whether the lane takes a job now: it runs in this process, and its current job (if any)
/// has not been running for [`STALLED_AFTER_NS`].
pub fn accepting() -> bool {
    let Some(lane) = LANE.get() else {
        return false;
    };
    let since = lane.busy_since_ns.load(Ordering::Relaxed);
    since == 0 || now_ns().saturating_sub(since) < STALLED_AFTER_NS
}

fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Queues `entry` for the lane; `Err(entry)` if the lane does not run.
pub fn submit(entry: Entry) -> Result<(), Entry> {
    let Some(lane) = LANE.get() else {
        return Err(entry);
    };
    *lane.unfinished.lock().unwrap_or_else(|e| e.into_inner()) += 1;
    let mut queue = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
    queue.push_back(entry);
    drop(queue);
    // Wakes nobody while the thread is busy (it looks at the queue before it waits again): a
    // `futex` call that finds no waiter, without the wake-up that costs.
    lane.wake.notify_one();
    Ok(())
}

/// Starts the lane in this worker: its eventfd in nginx's event loop, then its thread. Leaves
/// it off (nginx's pool does the work) if any of that fails, which is logged.
///
/// # Safety
/// Called once, on the worker's event loop, from init_process with its live cycle.
pub unsafe fn start(cycle: *mut ngx_cycle_t) {
    // SAFETY: the cycle is live; its log outlives the process's use of it.
    let log = unsafe { (*cycle).log };
    // SAFETY: ngx_event_flags is nginx's global, set by the event module before init_process.
    let epoll = unsafe { ngx::ffi::ngx_event_flags } & ngx::ffi::NGX_USE_EPOLL_EVENT as usize != 0;
    if !epoll {
        return;
    }
    // SAFETY: eventfd has no memory preconditions.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_WARN,
            log,
            "upload: no write lane (eventfd: {e}); writes go to the thread pool"
        );
        return;
    }
    // SAFETY: the statics are touched only here, once, and by nginx's event loop after;
    // the read event is registered edge-triggered, as ngx_epoll_notify_init does its own.
    let registered = unsafe {
        let c = &raw mut DONE_CONNECTION;
        let rev = &raw mut DONE_READ;
        let wev = &raw mut DONE_WRITE;
        (*c).fd = fd;
        (*c).read = rev;
        (*c).write = wev;
        (*c).log = log;
        (*rev).data = c.cast();
        (*rev).handler = Some(jobs_done);
        (*rev).log = log;
        (*wev).data = c.cast();
        (*wev).log = log;
        let add = ngx::ffi::ngx_event_actions.add;
        add.is_some_and(|add| {
            add(rev, EPOLL_READ_EVENT, EPOLL_CLEAR_EVENT) == ngx::ffi::NGX_OK as isize
        })
    };
    if !registered {
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_WARN,
            log,
            "upload: no write lane (its event could not be added); writes go to the thread pool"
        );
        // SAFETY: the descriptor is ours, and in no event set.
        unsafe { libc::close(fd) };
        return;
    }
    let lane = Lane {
        queue: Mutex::new(VecDeque::new()),
        wake: Condvar::new(),
        unfinished: Mutex::new(0),
        idle: Condvar::new(),
        busy_since_ns: AtomicU64::new(0),
        done: Mutex::new(Vec::new()),
        eventfd: fd,
    };
    if LANE.set(lane).is_err() {
        return;
    }
    // The thread must not take the worker's signals: it starts with all of them blocked, as
    // nginx's pool threads run.
    // SAFETY: sigset manipulation of this thread's own mask, restored right after the spawn.
    let spawned = unsafe {
        let mut all: libc::sigset_t = core::mem::zeroed();
        let mut old: libc::sigset_t = core::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let spawned = std::thread::Builder::new()
            .name("upload-lane".into())
            .spawn(run_lane);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, core::ptr::null_mut());
        spawned
    };
    if let Err(e) = spawned {
        ngx::ngx_log_error!(
            ngx::ffi::NGX_LOG_ALERT,
            log,
            "upload: the write lane's thread did not start: {e}"
        );
        // Jobs queued from now on would never run: the process cannot go on safely.
        std::process::abort();
    }
}

/// The lane's thread: runs the queued jobs in order, and tells the event loop when the first
/// of a batch of finished ones is ready (one eventfd write per batch, not per job).
fn run_lane() {
    let Some(lane) = LANE.get() else { return };
    loop {
        let entry = {
            let mut queue = lane.queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(entry) = queue.pop_front() {
                    break entry;
                }
                queue = lane.wake.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        };
        lane.busy_since_ns.store(now_ns().max(1), Ordering::Relaxed);
        // SAFETY: the entry's work function and data belong together (offload::run_short);
        // the job is this thread's until it is handed back below. The work catches its own
        // panics.
        unsafe { (entry.work)(entry.data, entry.log) };
        lane.busy_since_ns.store(0, Ordering::Relaxed);
        let first = {
            let mut done = lane.done.lock().unwrap_or_else(|e| e.into_inner());
            done.push(entry);
            done.len() == 1
        };
        if first {
            let one: u64 = 1;
            // SAFETY: writing 8 bytes from a live u64 to the lane's eventfd.
            unsafe { libc::write(lane.eventfd, (&raw const one).cast(), 8) };
        }
        let mut unfinished = lane.unfinished.lock().unwrap_or_else(|e| e.into_inner());
        *unfinished -= 1;
        if *unfinished == 0 {
            lane.idle.notify_all();
        }
    }
}

/// Waits, at most `limit`, until the jobs given to the lane have run: a worker that exits
/// lets the writes and records it started finish, as nginx lets its pool threads finish
/// their tasks. Their continuations do not run (the event loop is gone).
pub fn drain(limit: std::time::Duration) {
    let Some(lane) = LANE.get() else { return };
    let unfinished = lane.unfinished.lock().unwrap_or_else(|e| e.into_inner());
    let _ = lane
        .idle
        .wait_timeout_while(unfinished, limit, |n| *n > 0)
        .map_err(|e| e.into_inner());
}

/// The eventfd's read event, on the event loop: runs the continuations of the jobs done.
unsafe extern "C" fn jobs_done(_ev: *mut ngx_event_t) {
    let Some(lane) = LANE.get() else { return };
    let mut count: u64 = 0;
    // SAFETY: reading 8 bytes into a live u64 from the lane's non-blocking eventfd resets it.
    unsafe { libc::read(lane.eventfd, (&raw mut count).cast(), 8) };
    let done = std::mem::take(&mut *lane.done.lock().unwrap_or_else(|e| e.into_inner()));
    for entry in done {
        // SAFETY: the job's work ran and the lane let go of it; finish takes it back once.
        unsafe { (entry.finish)(entry.data, entry.log) };
    }
}
