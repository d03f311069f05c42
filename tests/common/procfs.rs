//! What the kernel tells about other processes through `/proc`: the file locks they hold,
//! whether a tracer is attached. The harness waits on these instead of sleeping: each is the
//! very state a test waits for.

use std::fs;
use std::path::Path;

/// The byte ranges `(start, end inclusive; None for "to the end")` of the open-file-description
/// locks held on the file at `path` (`/proc/locks`).
pub fn ofd_locks(path: &Path) -> Vec<(u64, Option<u64>)> {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(path) else {
        return Vec::new();
    };
    let dev = meta.dev();
    let file = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let Ok(text) = fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    // "1: OFDLCK  ADVISORY  WRITE -1 08:01:1234 0 99999"; "->" marks a waiter.
    text.lines()
        .filter(|l| !l.contains("->"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 || f[1] != "OFDLCK" || f[5] != file {
                return None;
            }
            let start = f[6].parse().ok()?;
            let end = if f[7] == "EOF" {
                None
            } else {
                Some(f[7].parse().ok()?)
            };
            Some((start, end))
        })
        .collect()
}

/// The tracer (`TracerPid`) of every thread of process `pid`; empty if it is gone.
pub fn tracers(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let status = fs::read_to_string(task.path().join("status")).ok()?;
            status
                .lines()
                .find_map(|l| l.strip_prefix("TracerPid:"))
                .and_then(|p| p.trim().parse().ok())
        })
        .collect()
}
