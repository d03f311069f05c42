//! File primitives shared by sessions and uploads: the locks, file identity, creation, and
//! the state file's reads and writes. Nothing here knows what a state file says.

use crate::store;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What tells an output file from a later one of the same name: its inode number, and its
/// birth time where the filesystem records one (inode numbers are reused).
pub(crate) fn file_identity(file: &File) -> io::Result<String> {
    Ok(identity_of(&file.metadata()?))
}

/// [`file_identity`] of a file's metadata.
pub(crate) fn identity_of(meta: &fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    match born_ns(meta) {
        Some(born) => format!("{}.{born}", meta.ino()),
        None => meta.ino().to_string(),
    }
}

/// A file's birth time in nanoseconds since the epoch, where the filesystem records one.
pub(crate) fn born_ns(meta: &fs::Metadata) -> Option<u128> {
    let born = meta.created().ok()?;
    Some(born.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos())
}

/// Takes a non-blocking open-file-description write lock on `len` bytes at `start`; `false` if
/// another open file description holds a conflicting one.
pub(crate) fn ofd_lock(file: &File, start: u64, len: u64) -> io::Result<bool> {
    let mut lock = flock_range(libc::F_WRLCK, start, len);
    loop {
        // SAFETY: F_OFD_SETLK with a valid flock struct on an open descriptor.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) } == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) | Some(libc::EACCES) => return Ok(false),
            _ => return Err(e),
        }
    }
}

/// Whether any open file description holds a lock on any byte of `file` (one of its own would
/// not count, but the sweeper's descriptor holds none).
pub(crate) fn ofd_locked_anywhere(file: &File) -> io::Result<bool> {
    // l_len 0: from l_start to any offset.
    let mut lock = flock_range(libc::F_WRLCK, 0, 0);
    // SAFETY: F_OFD_GETLK with a valid flock struct on an open descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lock.l_type != libc::F_UNLCK as libc::c_short)
}

pub(crate) fn flock_range(kind: libc::c_int, start: u64, len: u64) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value, and l_pid must be 0 for OFD locks.
    let mut lock: libc::flock = unsafe { core::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start as libc::off_t;
    lock.l_len = len as libc::off_t;
    lock
}

pub(crate) fn create_truncated(path: &Path, mode: u32) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
}

pub(crate) fn open_or_create(path: &Path, mode: u32) -> io::Result<(File, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let existing = fs::OpenOptions::new().read(true).write(true).open(path);
    match existing {
        Ok(f) => Ok((f, false)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let create = || {
                fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(mode)
                    .open(path)
            };
            let created = match create() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    store::create_parents(path, mode)?;
                    create()
                }
                other => other,
            };
            match created {
                Ok(f) => Ok((f, true)),
                // Another request created it between our two opens.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((
                    fs::OpenOptions::new().read(true).write(true).open(path)?,
                    false,
                )),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// The extension of a file beside an upload's state (`<id>.yield`) by which a newer request
/// asks the one writing the upload to stop (crate::upload::Upload::ask_to_yield).
pub(crate) const YIELD_EXTENSION: &str = "yield";

pub(crate) fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// An exclusive `flock` on an open file, released on drop. `flock` locks belong to the open
/// file description, so they exclude other requests in the same worker as well as other
/// processes.
pub(crate) struct FileLock<'a>(&'a File);

impl<'a> FileLock<'a> {
    pub(crate) fn exclusive(file: &'a File) -> io::Result<Self> {
        loop {
            // SAFETY: flock on a valid open descriptor.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Self(file));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FileLock<'_> {
    fn drop(&mut self) {
        // SAFETY: unlocking a lock this descriptor holds.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Appends lines to a state file, in one write so that a crash leaves at most an unfinished
/// last line, which readers ignore.
pub(crate) fn append_state_lines(mut file: &File, lines: &str, durable: bool) -> io::Result<()> {
    file.write_all(lines.as_bytes())?;
    if durable {
        file.sync_data()?;
    }
    Ok(())
}

/// Replaces a state file atomically: a reader sees the old state or the new, never a torn one.
/// Called with the data file's lock held, so one temporary name (`<state>.tmp`) is enough.
/// Returns the new file's metadata (`None` if it could not be had), for
/// [`crate::state_cache`]: renaming keeps its inode, birth time, size and modification time.
pub(crate) fn replace_state_file(
    path: &Path,
    bytes: &[u8],
    file_mode: u32,
    durable: bool,
) -> io::Result<Option<fs::Metadata>> {
    let mut tmp = path.to_path_buf().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = match create_truncated(&tmp, file_mode) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            store::create_parents(&tmp, file_mode)?;
            create_truncated(&tmp, file_mode)
        }
        other => other,
    }?;
    file.write_all(bytes)?;
    if durable {
        file.sync_all()?;
    }
    let written = file.metadata().ok();
    drop(file);
    fs::rename(&tmp, path)?;
    if durable {
        sync_parent(path)?;
    }
    Ok(written)
}

/// Flushes the directory entry of `path` (after a rename or a creation in it).
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Whether `path` names the open `file` now (a file may have been removed, or replaced by
/// rename, since it was opened).
pub(crate) fn is_file_at(file: &File, path: &Path) -> io::Result<bool> {
    Ok(metadata_if_at(file, path)?.is_some())
}

/// The metadata of `file` (its `fstat`) if `path` names it now, else `None`.
pub(crate) fn metadata_if_at(file: &File, path: &Path) -> io::Result<Option<fs::Metadata>> {
    use std::os::unix::fs::MetadataExt;
    let ours = file.metadata()?;
    match fs::metadata(path) {
        Ok(there) if there.dev() == ours.dev() && there.ino() == ours.ino() => Ok(Some(ours)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The first byte range at or after `start` (to the end of any file) that another open file
/// description holds a lock on, as `(first, last)` inclusive; `None` if there is none.
pub(crate) fn ofd_conflict(file: &File, start: u64) -> io::Result<Option<(u64, u64)>> {
    let mut lock = flock_range(libc::F_WRLCK, start, 0);
    // SAFETY: F_OFD_GETLK with a valid flock struct on an open descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lock.l_type == libc::F_UNLCK as libc::c_short {
        return Ok(None);
    }
    let first = (lock.l_start as u64).max(start);
    let last = match lock.l_len {
        0 => i64::MAX as u64,
        n => lock.l_start as u64 + n as u64 - 1,
    };
    Ok(Some((first, last)))
}

/// Releases this open file description's locks on `len` bytes at `start` (0: to the end).
pub(crate) fn ofd_unlock(file: &File, start: u64, len: u64) -> io::Result<()> {
    let mut lock = flock_range(libc::F_UNLCK, start, len);
    // SAFETY: F_OFD_SETLK with a valid flock struct on an open descriptor.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// When the file at `path` was last modified; `None` if there is none.
pub(crate) fn modified(path: &Path) -> io::Result<Option<std::time::SystemTime>> {
    match fs::metadata(path) {
        Ok(m) => m.modified().map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens an existing file for reading and writing; `None` if there is none.
pub(crate) fn open_existing(path: &Path) -> io::Result<Option<File>> {
    match fs::OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}
