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

use crate::disk::{self, born_ns, open_or_create};

/// How long a descriptor is kept without a request using it.
pub const IDLE_FOR: Duration = Duration::from_secs(1);

/// Output files kept at most by a process; past it the oldest is closed. Few, beside the
/// worker's connections, and given up when the process runs out ([`open_with_retry`]).
const CAPACITY: usize = 32;

/// State files' appenders kept at most by a process.
const KEPT_APPENDERS: usize = 16;

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

/// One kind of kept descriptor, by path: taken out while a request uses it, closed once kept
/// for [`IDLE_FOR`] unused, or when the set is full (the oldest first).
struct KeptSet<T> {
    entries: Mutex<Vec<Kept<T>>>,
    capacity: usize,
}

struct Kept<T> {
    path: PathBuf,
    since: Instant,
    item: T,
}

impl<T> Kept<T> {
    /// Whether this is kept for `path`, byte for byte: the store builds an upload's paths the
    /// same way every time, and `Path`'s `==`, which parses both into components, cost more
    /// than the rest of a lookup.
    fn is_for(&self, path: &Path) -> bool {
        self.path.as_os_str() == path.as_os_str()
    }
}

impl<T> KeptSet<T> {
    const fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new(Vec::new()),
            capacity,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Kept<T>>> {
        // A panic elsewhere while holding it leaves nothing half-done: the set stays usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently kept item of `path` that `fits`; those of `path` it refuses, and any
    /// kept too long, are closed.
    fn take(&self, path: &Path, fits: impl Fn(&T) -> bool) -> Option<T> {
        self.take_with_path(path, fits).map(|(_, item)| item)
    }

    /// [`Self::take`], with the path it was kept under (to keep it again without a copy).
    fn take_with_path(&self, path: &Path, fits: impl Fn(&T) -> bool) -> Option<(PathBuf, T)> {
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|k| {
            now.duration_since(k.since) < IDLE_FOR && (!k.is_for(path) || fits(&k.item))
        });
        let at = entries.iter().rposition(|k| k.is_for(path))?;
        let kept = entries.remove(at);
        Some((kept.path, kept.item))
    }

    fn keep(&self, path: PathBuf, item: T) {
        let now = Instant::now();
        let mut entries = self.entries();
        entries.retain(|k| now.duration_since(k.since) < IDLE_FOR);
        if entries.len() >= self.capacity {
            entries.remove(0);
        }
        entries.push(Kept {
            path,
            since: now,
            item,
        });
    }

    /// Takes out, to be closed by the caller outside the lock, the items `gone` picks.
    fn remove_where(&self, gone: impl Fn(&Kept<T>) -> bool) -> Vec<Kept<T>> {
        let mut entries = self.entries();
        let (gone, stay) = entries.drain(..).partition(|k| gone(k));
        *entries = stay;
        gone
    }

    /// Closes every item of `path`.
    fn forget(&self, path: &Path) {
        drop(self.remove_where(|k| k.is_for(path)));
    }

    #[cfg(test)]
    fn count_of(&self, path: &Path) -> usize {
        self.entries().iter().filter(|k| k.is_for(path)).count()
    }
}

/// Output files not in use.
static FILES: KeptSet<OpenFile> = KeptSet::new(CAPACITY);

/// A state file's descriptor opened for appending, and the file it is.
struct Appender {
    dev: u64,
    ino: u64,
    file: File,
}

static APPENDERS: KeptSet<Appender> = KeptSet::new(KEPT_APPENDERS);

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
        if let Some(open) = FILES.take(path, |_| true) {
            match fs::metadata(path) {
                Ok(meta) if open.names(&meta) => return Ok((DataFile::of(open), false)),
                // Another file, or none, is there now: nothing kept of the path is of use.
                _ => FILES.forget(path),
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
        FILES.forget(&self.opened().path);
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
        FILES.keep(open.path.clone(), open);
    }
}

/// The kept appender of the state file at `path`, if it is the file `dev`/`ino` (what the
/// caller found at the path, under the writers' lock). Those of another file at the path go.
pub(crate) fn take_appender(path: &Path, dev: u64, ino: u64) -> Option<TakenAppender> {
    let (path, appender) = APPENDERS.take_with_path(path, |a| (a.dev, a.ino) == (dev, ino))?;
    Some(TakenAppender { path, appender })
}

/// A kept appender taken out for one append, to be kept again ([`TakenAppender::keep`]) or
/// closed (dropped).
pub(crate) struct TakenAppender {
    path: PathBuf,
    appender: Appender,
}

impl TakenAppender {
    pub(crate) fn file(&self) -> &File {
        &self.appender.file
    }

    /// Keeps it again, for the same file at the same path.
    pub(crate) fn keep(self) {
        if room_to_keep(&self.appender.file) {
            APPENDERS.keep(self.path, self.appender);
        }
    }
}

/// Keeps `file`, open for appending to the state file `dev`/`ino` at `path`.
pub(crate) fn keep_appender(path: &Path, dev: u64, ino: u64, file: File) {
    if room_to_keep(&file) {
        APPENDERS.keep(path.to_path_buf(), Appender { dev, ino, file });
    }
}

/// Closes the appenders of `path` (its state is removed, or forgotten).
pub(crate) fn forget_appenders(path: &Path) {
    APPENDERS.forget(path);
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
    let files = FILES.remove_where(|_| true);
    let appenders = APPENDERS.remove_where(|_| true);
    files.len() + appenders.len()
}

/// Closes the descriptors kept unused for [`IDLE_FOR`] or longer. The nginx module calls it on
/// a timer.
pub fn close_idle() {
    let now = Instant::now();
    let old = |since: Instant| now.duration_since(since) >= IDLE_FOR;
    drop(FILES.remove_where(|k| old(k.since)));
    drop(APPENDERS.remove_where(|k| old(k.since)));
}

/// How many appenders of `path` are kept (for tests).
#[cfg(test)]
pub(crate) fn appenders_of(path: &Path) -> usize {
    APPENDERS.count_of(path)
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
        assert_eq!(FILES.count_of(&path), 1);
        let (second, created) = DataFile::open(&path, 0o600).unwrap();
        assert!(!created);
        assert_eq!(std::os::fd::AsRawFd::as_raw_fd(&*second), fd);
        assert_eq!(FILES.count_of(&path), 0, "in use, so not kept");
    }

    #[test]
    fn a_claimed_or_spent_file_is_closed_not_kept() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("claimed");
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        file.set_claimed(true);
        drop(file);
        assert_eq!(FILES.count_of(&path), 0);
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        file.set_claimed(true);
        file.set_claimed(false);
        drop(file);
        assert_eq!(
            FILES.count_of(&path),
            1,
            "a released claim leaves it reusable"
        );
        let (file, _) = DataFile::open(&path, 0o600).unwrap();
        file.spend();
        drop(file);
        assert_eq!(FILES.count_of(&path), 0);
    }

    #[test]
    fn spending_one_closes_the_others_kept() {
        let tmp = crate::store::tests::tempdir();
        let path = tmp.join("spent");
        let (a, _) = DataFile::open(&path, 0o600).unwrap();
        let (b, _) = DataFile::open(&path, 0o600).unwrap();
        drop(a);
        assert_eq!(FILES.count_of(&path), 1);
        b.spend();
        assert_eq!(FILES.count_of(&path), 0);
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
        assert_eq!(FILES.count_of(&path), 1);
        for kept in FILES.entries().iter_mut().filter(|k| k.is_for(&path)) {
            kept.since -= IDLE_FOR;
        }
        close_idle();
        assert_eq!(FILES.count_of(&path), 0);
    }
}
