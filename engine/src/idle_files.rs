//! Descriptors kept open between the requests of a process, so that the next segment of an
//! upload finds its files open:
//! - a session's output file ([`DataFile`]): one `statx` of the path instead of `openat`,
//!   `statx` and `close` on the event loop;
//! - a state file's descriptor opened for appending ([`take_appender`]), for the next commit's
//!   append: no `openat` and `close` on the thread pool.
//!
//! Small segments that arrive back to back (a chunked client, a keep-alive connection) spend
//! a good part of their time opening and closing files otherwise.
//!
//! A kept output file serves one request at a time, never two at once: each request's claim
//! is an open-file-description lock, and two requests sharing a description would not exclude
//! each other. So a descriptor is kept only once its request holds no lock on it ([`DataFile`]
//! tracks that), and a request takes it out of the set while it uses it.
//!
//! A descriptor is reused only while the path still names the same file (device, inode and,
//! for output files, birth time): a file handed off, moved or removed by the backend, another
//! worker or another node is never written through an old descriptor. Kept descriptors are
//! closed after [`IDLE_FOR`] unused, so a removed file's space is not held for long: on the
//! next use of the set, or by [`close_idle`], which the nginx module calls on a timer; and all
//! at once when the process runs out of descriptors ([`open_with_retry`]).

use std::fs::{self, File};
use std::io;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::disk::{self, open_or_create};

/// How long a descriptor is kept without a request using it.
pub const IDLE_FOR: Duration = Duration::from_secs(1);

/// Output files kept at most by a process; past it the oldest is closed. Few, beside the
/// worker's connections, and given up when the process runs out ([`open_with_retry`]).
const CAPACITY: usize = 32;

/// State files' appenders kept at most by a process.
const APPENDERS: usize = 16;

/// An open output file and what identifies it.
#[derive(Debug)]
struct OpenFile {
    file: File,
    path: PathBuf,
    dev: u64,
    ino: u64,
    born_ns: Option<u128>,
    /// As recorded in the session's state ([`disk::identity_of`]).
    id: String,
}

impl OpenFile {
    fn names(&self, meta: &fs::Metadata) -> bool {
        meta.dev() == self.dev && meta.ino() == self.ino && born_ns(meta) == self.born_ns
    }
}

fn born_ns(meta: &fs::Metadata) -> Option<u128> {
    let born = meta.created().ok()?;
    Some(born.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
}

struct Idle {
    open: OpenFile,
    since: Instant,
}

static IDLE: Mutex<Vec<Idle>> = Mutex::new(Vec::new());

fn idle() -> std::sync::MutexGuard<'static, Vec<Idle>> {
    lock(&IDLE)
}

/// A state file's descriptor opened for appending.
struct Appender {
    path: PathBuf,
    dev: u64,
    ino: u64,
    file: File,
    since: Instant,
}

static KEPT_APPENDERS: Mutex<Vec<Appender>> = Mutex::new(Vec::new());

fn lock<T>(set: &'static Mutex<T>) -> std::sync::MutexGuard<'static, T> {
    // A panic elsewhere while holding it leaves nothing half-done: the set stays usable.
    set.lock().unwrap_or_else(|e| e.into_inner())
}

/// A session's output file, open for one request (and the handles it shares with its work on
/// the thread pool). Dropped without a lock on it, it is kept for the next request.
#[derive(Debug)]
pub(crate) struct DataFile {
    open: Option<OpenFile>,
    /// Holds the request's claim: the description must not serve another request.
    claimed: AtomicBool,
    /// Not to be kept: it holds the hand-off, or the upload is over or removed.
    spent: AtomicBool,
}

impl DataFile {
    /// The file at `path` (created with `mode` if missing), and whether this call created it: a
    /// kept descriptor if one still names the file there.
    pub fn open(path: &Path, mode: u32) -> io::Result<(DataFile, bool)> {
        if let Some(open) = take(path) {
            match fs::metadata(path) {
                Ok(meta) if open.names(&meta) => return Ok((DataFile::of(open), false)),
                // Another file, or none, is there now: nothing kept of the path is of use.
                _ => forget(path),
            }
        }
        let (file, created) = open_with_retry(|| open_or_create(path, mode))?;
        let meta = file.metadata()?;
        let open = OpenFile {
            dev: meta.dev(),
            ino: meta.ino(),
            born_ns: born_ns(&meta),
            id: disk::identity_of(&meta),
            path: path.to_path_buf(),
            file,
        };
        Ok((DataFile::of(open), created))
    }

    fn of(open: OpenFile) -> DataFile {
        DataFile {
            open: Some(open),
            claimed: AtomicBool::new(false),
            spent: AtomicBool::new(false),
        }
    }

    /// The file's identity, as a session's state records it.
    pub fn id(&self) -> &str {
        &self.opened().id
    }

    fn opened(&self) -> &OpenFile {
        self.open.as_ref().expect("open until dropped")
    }

    /// A claim on a range of it was taken (`true`) or given up (`false`).
    pub fn set_claimed(&self, claimed: bool) {
        self.claimed.store(claimed, Ordering::Release);
    }

    /// Whether it holds a request's claim.
    pub fn is_claimed(&self) -> bool {
        self.claimed.load(Ordering::Acquire)
    }

    /// It is not to be kept: it holds a lock that lasts, or its upload is over. Descriptors of
    /// the same file kept earlier are closed.
    pub fn spend(&self) {
        self.spent.store(true, Ordering::Release);
        forget(&self.opened().path);
    }
}

impl Deref for DataFile {
    type Target = File;

    fn deref(&self) -> &File {
        &self.opened().file
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        let Some(open) = self.open.take() else { return };
        if self.claimed.load(Ordering::Acquire)
            || self.spent.load(Ordering::Acquire)
            || !room_to_keep(&open.file)
        {
            return; // closed, which releases its locks
        }
        let now = Instant::now();
        let mut idle = idle();
        idle.retain(|kept| now.duration_since(kept.since) < IDLE_FOR);
        if idle.len() >= CAPACITY {
            idle.remove(0);
        }
        idle.push(Idle { open, since: now });
    }
}

/// Takes the most recently kept descriptor of `path` out of the set, if one is young enough.
fn take(path: &Path) -> Option<OpenFile> {
    let now = Instant::now();
    let mut idle = idle();
    idle.retain(|kept| now.duration_since(kept.since) < IDLE_FOR);
    let at = idle.iter().rposition(|kept| kept.open.path == path)?;
    Some(idle.remove(at).open)
}

/// Closes every kept descriptor of `path`.
fn forget(path: &Path) {
    let gone: Vec<Idle> = {
        let mut idle = idle();
        let (gone, kept) = idle.drain(..).partition(|kept| kept.open.path == path);
        *idle = kept;
        gone
    };
    drop(gone); // closed outside the lock
}

/// The kept appender of the state file at `path`, if it is the file `dev`/`ino` (what the
/// caller found at the path, under the writers' lock). Those of another file at the path go.
pub(crate) fn take_appender(path: &Path, dev: u64, ino: u64) -> Option<File> {
    let now = Instant::now();
    let mut kept = lock(&KEPT_APPENDERS);
    let of_another = |a: &Appender| a.path == path && (a.dev, a.ino) != (dev, ino);
    kept.retain(|a| now.duration_since(a.since) < IDLE_FOR && !of_another(a));
    let at = kept.iter().position(|a| a.path == path)?;
    Some(kept.swap_remove(at).file)
}

/// Keeps `file`, open for appending to the state file `dev`/`ino` at `path`.
pub(crate) fn keep_appender(path: &Path, dev: u64, ino: u64, file: File) {
    if !room_to_keep(&file) {
        return;
    }
    let mut kept = lock(&KEPT_APPENDERS);
    if kept.len() >= APPENDERS {
        kept.remove(0);
    }
    kept.push(Appender {
        path: path.to_path_buf(),
        dev,
        ino,
        file,
        since: Instant::now(),
    });
}

/// Closes the appenders of `path` (its state is removed, or forgotten).
pub(crate) fn forget_appenders(path: &Path) {
    let gone: Vec<Appender> = {
        let mut kept = lock(&KEPT_APPENDERS);
        let (gone, stay) = kept.drain(..).partition(|a| a.path == path);
        *kept = stay;
        gone
    };
    drop(gone); // closed outside the lock
}

/// Whether the process has room to keep `file` open: the kernel gives out the lowest free
/// descriptor number, so a number in the last quarter of the limit means the table is nearly
/// full, and the worker's connections come first.
fn room_to_keep(file: &File) -> bool {
    static LIMIT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let limit = *LIMIT.get_or_init(|| {
        // SAFETY: rlimit is plain C data; all-zero is a valid value.
        let mut rl: libc::rlimit = unsafe { core::mem::zeroed() };
        // SAFETY: getrlimit with a valid out pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } == 0 {
            rl.rlim_cur
        } else {
            1024
        }
    });
    (file.as_raw_fd() as u64) < limit / 4 * 3
}

/// Runs `open`; if the process is out of descriptors, closes every kept one and runs it again.
pub(crate) fn open_with_retry<T>(open: impl Fn() -> io::Result<T>) -> io::Result<T> {
    match open() {
        Err(e)
            if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) && close_all() > 0 =>
        {
            open()
        }
        other => other,
    }
}

/// Closes every kept descriptor; returns how many.
fn close_all() -> usize {
    let files = core::mem::take(&mut *idle());
    let appenders = core::mem::take(&mut *lock(&KEPT_APPENDERS));
    files.len() + appenders.len()
}

/// Closes the descriptors kept unused for [`IDLE_FOR`] or longer; returns how many stay
/// open. The nginx module calls it on a timer.
pub fn close_idle() -> usize {
    let now = Instant::now();
    let young = |since: Instant| now.duration_since(since) < IDLE_FOR;
    let (files, appenders, left) = {
        let mut idle = idle();
        let mut kept = lock(&KEPT_APPENDERS);
        let (stay, files): (Vec<Idle>, Vec<Idle>) = idle.drain(..).partition(|k| young(k.since));
        *idle = stay;
        let (stay, appenders): (Vec<Appender>, Vec<Appender>) =
            kept.drain(..).partition(|a| young(a.since));
        *kept = stay;
        (files, appenders, idle.len() + kept.len())
    };
    drop((files, appenders)); // closed outside the locks
    left
}

/// How many appenders of `path` are kept (for tests).
#[cfg(test)]
pub(crate) fn appenders_of(path: &Path) -> usize {
    lock(&KEPT_APPENDERS)
        .iter()
        .filter(|a| a.path == path)
        .count()
}

/// How many descriptors are kept now (for tests).
#[cfg(test)]
fn kept_of(path: &Path) -> usize {
    idle().iter().filter(|kept| kept.open.path == path).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn inode(file: &File) -> u64 {
        file.metadata().unwrap().ino()
    }

    #[test]
    fn a_file_without_locks_is_reused_by_the_next_request() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("reused");
        let (first, created) = DataFile::open(&path, 0o600).unwrap();
        assert!(created);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&*first);
        drop(first);
        assert_eq!(kept_of(&path), 1);
        let (second, created) = DataFile::open(&path, 0o600).unwrap();
        assert!(!created);
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&*second), fd);
        assert_eq!(kept_of(&path), 0, "in use, so not kept");
    }

    #[test]
    fn a_claimed_or_spent_file_is_closed_not_kept() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("claimed");
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        file.set_claimed(true);
        drop(file);
        assert_eq!(kept_of(&path), 0);
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        file.set_claimed(true);
        file.set_claimed(false);
        drop(file);
        assert_eq!(kept_of(&path), 1, "a released claim leaves it reusable");
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        file.spend();
        drop(file);
        assert_eq!(kept_of(&path), 0);
    }

    #[test]
    fn spending_one_closes_the_others_kept() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("spent");
        let (a, _) = DataFile::open(&path, 0o600).unwrap();
        let (b, _) = DataFile::open(&path, 0o600).unwrap();
        drop(a);
        assert_eq!(kept_of(&path), 1);
        b.spend();
        assert_eq!(kept_of(&path), 0);
    }

    /// The backend moved the finished file away and a new upload of the same name began: its
    /// bytes must go to the new file, not through a descriptor of the old one.
    #[test]
    fn a_replaced_or_removed_file_is_opened_again() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("replaced");
        let (old, _) = DataFile::open(&path, 0o600).unwrap();
        old.write_all_at(b"old", 0).unwrap();
        let old_inode = inode(&old);
        drop(old);
        fs::rename(&path, tmp.join("moved")).unwrap();
        let (new, created) = DataFile::open(&path, 0o600).unwrap();
        assert!(created, "nothing was there: a new file");
        assert_ne!(inode(&new), old_inode);
        drop(new);
        fs::remove_file(&path).unwrap();
        fs::write(&path, b"another").unwrap();
        let (other, created) = DataFile::open(&path, 0o600).unwrap();
        assert!(!created);
        assert_eq!(inode(&other), fs::metadata(&path).unwrap().ino());
        assert_eq!(fs::read(tmp.join("moved")).unwrap(), b"old");
    }

    #[test]
    fn kept_files_are_closed_once_idle_too_long() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("idle");
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        drop(file);
        assert_eq!(kept_of(&path), 1);
        {
            let mut idle = idle();
            for kept in idle.iter_mut().filter(|k| k.open.path == path) {
                kept.since -= IDLE_FOR;
            }
        }
        close_idle();
        assert_eq!(kept_of(&path), 0);
    }
}
