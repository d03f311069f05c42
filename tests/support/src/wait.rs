//! Waiting for a state another process brings about, instead of sleeping: the state is
//! checked until it holds, with a deadline and a message saying what never came.

use crate::procfs::unread_by_peer;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How long the harness waits for a state another process brings about.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `probe` until it returns `Ok`, for up to `timeout`: the value, or past the deadline
/// the last probe's `Err` (why it was not yet the state awaited).
pub fn try_wait_for<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    // Soon at first (most states come within a millisecond), then every 10 ms.
    let mut pause = Duration::from_micros(100);
    loop {
        match probe() {
            Ok(value) => return Ok(value),
            Err(why) if Instant::now() >= deadline => return Err(why),
            Err(_) => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(10));
            }
        }
    }
}

/// [`try_wait_for`] that panics past the deadline, saying what was awaited (`what`) and why
/// the last probe was not it. What tests use instead of sleeping: the state they wait for,
/// checked until it holds.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    match try_wait_for(timeout, probe) {
        Ok(value) => value,
        Err(why) => panic!("waited {timeout:?} for {what}, in vain; last: {why}"),
    }
}

/// Waits until the process at the other end of `conn` (nginx) has read every byte written to
/// it: to split what a request sends into reads of nginx's exactly where a test cuts it.
#[track_caller]
pub fn wait_consumed(conn: &TcpStream) {
    wait_for(
        "nginx to read everything sent on the connection",
        WAIT_TIMEOUT,
        || match unread_by_peer(conn) {
            Ok(Some(0)) => Ok(()),
            Ok(Some(n)) => Err(format!("{n} bytes unread")),
            Ok(None) => Err("the connection is not accepted yet".to_string()),
            Err(e) => Err(format!("cannot inspect the connection: {e}")),
        },
    )
}
