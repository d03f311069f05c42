//! Assembly: one upload built from several uploads or part files in a given order (Qiniu and
//! UpYun blocks, chunks of a chunked file service, tus concatenation).
//!
//! The bytes do not pass through user space where the kernel can copy them: each part is
//! cloned (`ioctl(FICLONERANGE)`, a reflink, where offsets and length are block-aligned and
//! the filesystem shares blocks), else copied by `copy_file_range(2)` in a loop, one data
//! segment at a time (`SEEK_DATA`/`SEEK_HOLE`: holes of sparse parts stay holes); only if the
//! kernel refuses (`EXDEV`, `ENOSYS`, `EOPNOTSUPP`, `EINVAL`) are they read and written.
//! [`CopyReport`] says which way each byte went.
//!
//! # Crash safety
//! The file is built under a temporary name in the target's directory
//! (`<id>.<unique>.assembling`, never an upload id since ids have no `.`), flushed if the store
//! is durable, then renamed over a freshly created, locked data file of the target, and only
//! then is the target's state written, naming the new file and holding every byte. So:
//! - a crash while copying leaves a temporary file, which is no upload (the target does not
//!   exist, or is what it was), and which [`UploadStore::sweep_expired`] removes once it is
//!   older than the expiry;
//! - a crash after the rename, before the state, leaves a data file without a state of its
//!   own: no upload either ([`UploadError::NotFound`]); assembling again replaces it;
//! - the target is complete exactly when its state says so, and its state never says so of a
//!   file not wholly copied.
//!
//! [`UploadStore::assemble_awaiting`] builds the file of a final upload that exists already,
//! empty, awaiting its parts, the same way, and renames it over the empty data file (under the
//! target's lock, if the target is still the upload it opened). A crash between that rename
//! and the state leaves a data file that the target's old state does not name: the final upload
//! is no more (its parts are kept, and a new final `POST` can name them again).
//!
//! Assembly is long blocking disk work: run it on a thread pool.

use crate::content_range::MAX_OFFSET;
use crate::disk::{self, ofd_lock, ofd_locked_anywhere, remove_if_present, FileLock};
use crate::hash_state::HashProgress;
use crate::hashing::{Algorithms, Digests};
use crate::session_id::SessionId;
use crate::state::{Metadata, UploadState};
use crate::upload::{check_metadata, Upload, UploadError, UploadStore};
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

/// The suffix of an assembly's temporary file.
const TEMPORARY_SUFFIX: &str = ".assembling";

/// Bytes per `copy_file_range` call, and the buffer of the read/write fallback.
const COPY_CHUNK: u64 = 1 << 30;
const FALLBACK_BUF: usize = 1 << 20;

/// One part of an assembly.
#[derive(Debug, Clone, Copy)]
pub enum Part<'a> {
    /// An upload of the same store, which must be complete. It is claimed whole while it is
    /// copied, so no writer changes it meanwhile ([`UploadError::InFlight`] if one is writing).
    Upload(&'a SessionId),
    /// A file, copied whole, as it is.
    File(&'a Path),
}

/// How the bytes of a copy went.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyReport {
    /// Bytes of the result.
    pub bytes: u64,
    /// Bytes cloned by `FICLONERANGE` (shared blocks, no copy at all).
    pub reflinked: u64,
    /// Bytes copied by `copy_file_range(2)`, inside the kernel.
    pub copied_in_kernel: u64,
    /// Bytes read into user space and written back: 0 when the kernel did the copying.
    pub through_userspace: u64,
    /// Bytes of holes in sparse parts, left holes in the result.
    pub holes: u64,
}

/// The outcome of [`UploadStore::assemble`].
#[derive(Debug)]
pub struct Assembled {
    /// The target, a complete upload. This handle holds its hand-off until dropped.
    pub upload: Upload,
    pub report: CopyReport,
    /// The result's hashes, when hashes are wanted.
    pub digests: Option<Digests>,
    /// Bytes read back from the result to hash it (the first part's stored hash progress, if
    /// it has one, spares reading those bytes).
    pub hashed_from_file: u64,
}

/// The outcome of [`UploadStore::assemble_awaiting`].
#[derive(Debug)]
pub enum Settled {
    /// Assembled by this call; the handle holds the hand-off.
    Assembled(Box<Assembled>),
    /// A part is not complete yet. `length`: the sum of the parts' lengths, once every part
    /// has declared its own.
    Awaiting { length: Option<u64> },
    /// Part `index` (from 0) is no more (terminated or expired): the target can never be
    /// assembled. The target is left as it is.
    PartGone { index: usize, error: UploadError },
    /// The parts' known lengths add up to `known` bytes, more than the target may have.
    TooLarge { known: u64 },
    /// Another caller is assembling the target now, or did (or terminated it) since it was
    /// opened here.
    Elsewhere,
}

impl UploadStore {
    /// Builds the upload `target` from `parts`, in their order, with `metadata` and, if
    /// `algorithms` asks for any, the result's hashes. `target` must not be a live upload
    /// ([`UploadError::AlreadyExists`]); it becomes a complete one, whose hand-off the returned
    /// handle holds. A failing part is [`UploadError::Part`] with its index: not found,
    /// expired, [`UploadError::Incomplete`], in flight. The parts are left as they are
    /// (terminate them once the result is handed off, if the protocol wants that).
    ///
    /// Crash-safe (see the module documentation); blocking: run it on a thread pool.
    pub fn assemble(
        &self,
        target: &SessionId,
        parts: &[Part<'_>],
        metadata: Metadata,
        algorithms: Algorithms,
    ) -> Result<Assembled, UploadError> {
        check_metadata(&metadata)?;
        let place = self.place(target)?;
        // Cheap to find out now, before copying everything (checked again when installing).
        match self.open(target) {
            Ok(_) => return Err(UploadError::AlreadyExists),
            Err(UploadError::NotFound | UploadError::Expired) => {}
            Err(e) => return Err(e),
        }
        let sources = self.open_parts(parts)?;
        let (state, report, digests, hashed_from_file, temp) = build(
            &place.data_path,
            place.file_mode,
            place.durable,
            &sources,
            metadata,
            algorithms,
            |state, temp, path| place.install(state, Some((temp, path))).map(|_| ()),
        )?;
        Ok(Assembled {
            upload: Upload::installed(target, place, temp, state)?,
            report,
            digests,
            hashed_from_file,
        })
    }

    /// Assembles the final upload `target`, created earlier over `parts` some of which were not
    /// complete then (tus concatenation-unfinished), if every part is complete now and no
    /// other request is assembling it; see [`Settled`]. The result replaces the target's empty
    /// data file and keeps its metadata; the returned handle holds its hand-off.
    ///
    /// Exactly one caller assembles, however many race (on any thread, process or host
    /// sharing the store): each takes an open-file-description lock on the whole data file of
    /// the waiting target, on a descriptor of its own, waiting for it while another caller
    /// holds it, and only then reads the parts' states; one that gets the lock after a winner
    /// finds the target complete, or its old data file replaced, and backs off
    /// ([`Settled::Elsewhere`]). Waiting (not backing off at once) is what makes the last
    /// completion count: two requests completing the last two parts at once each commit
    /// before they look, so the one that looks second sees both parts complete, even while
    /// the first still holds the lock to find its sibling incomplete.
    ///
    /// The parts are not claimed while they are copied: a complete part takes no more bytes,
    /// and the request that has just completed one may still hold its claim on it. A part
    /// terminated meanwhile is still read whole through its open descriptor.
    pub fn assemble_awaiting(
        &self,
        target: &SessionId,
        parts: &[SessionId],
        max_len: u64,
        algorithms: Algorithms,
    ) -> Result<Settled, UploadError> {
        let waiting = self.open(target)?;
        if waiting.state().is_complete() {
            return Ok(Settled::Elsewhere);
        }
        // Freed when `waiting` is closed, at the return, whatever the outcome.
        ofd_lock_waiting(waiting.file())?;
        let state = match waiting.current_state() {
            Ok(state) if !state.is_complete() => state,
            Ok(_) | Err(UploadError::Gone) => return Ok(Settled::Elsewhere),
            Err(e) => return Err(e),
        };
        let mut sources: Vec<Source> = Vec::with_capacity(parts.len());
        let mut known = 0u64;
        let mut all_known = true;
        let mut all_complete = true;
        for (index, id) in parts.iter().enumerate() {
            if let Some(earlier) = parts[..index].iter().position(|p| p == id) {
                let first: &Source = &sources[earlier];
                let again = Source {
                    file: first.file.try_clone()?,
                    len: first.len,
                    hash: first.hash.clone(),
                    _claim: None,
                };
                known = known.saturating_add(again.len);
                sources.push(again);
                continue;
            }
            let opened = self.open(id).and_then(|part| {
                let state = part.current_state()?;
                Ok((part, state))
            });
            let (part, part_state) = match opened {
                Ok(opened) => opened,
                Err(error @ (UploadError::NotFound | UploadError::Expired | UploadError::Gone)) => {
                    return Ok(Settled::PartGone { index, error })
                }
                Err(error) => {
                    return Err(UploadError::Part {
                        index,
                        error: Box::new(error),
                    })
                }
            };
            match part_state.length {
                Some(n) => known = known.saturating_add(n),
                None => all_known = false,
            }
            all_complete &= part_state.is_complete();
            sources.push(Source {
                file: part.file().try_clone()?,
                len: part_state.length.unwrap_or(0),
                hash: part_state.hash.clone(),
                _claim: None,
            });
        }
        if known > max_len.min(MAX_OFFSET) {
            return Ok(Settled::TooLarge { known });
        }
        if !all_complete {
            return Ok(Settled::Awaiting {
                length: all_known.then_some(known),
            });
        }
        let place = self.place(target)?;
        let (state, report, digests, hashed_from_file, temp) = build(
            &place.data_path,
            place.file_mode,
            place.durable,
            &sources,
            state.metadata,
            algorithms,
            |state, temp, path| waiting.replace_data(state, temp, path),
        )?;
        Ok(Settled::Assembled(Box::new(Assembled {
            upload: Upload::installed(target, place, temp, state)?,
            report,
            digests,
            hashed_from_file,
        })))
    }

    /// Opens every part, checks the uploads are complete and claims them whole.
    fn open_parts(&self, parts: &[Part<'_>]) -> Result<Vec<Source>, UploadError> {
        let part_error = |index| {
            move |e| UploadError::Part {
                index,
                error: Box::new(e),
            }
        };
        let mut sources = Vec::with_capacity(parts.len());
        for (index, part) in parts.iter().enumerate() {
            let source = match part {
                Part::File(path) => {
                    let file = File::open(path).map_err(|e| part_error(index)(e.into()))?;
                    let len = file
                        .metadata()
                        .map_err(|e| part_error(index)(e.into()))?
                        .len();
                    Source {
                        file,
                        len,
                        hash: None,
                        _claim: None,
                    }
                }
                Part::Upload(id) => {
                    // A part listed again is copied again, from the same claimed file.
                    let earlier = parts[..index]
                        .iter()
                        .position(|p| matches!(p, Part::Upload(other) if other == id));
                    if let Some(earlier) = earlier {
                        let first: &Source = &sources[earlier];
                        sources.push(Source {
                            file: first
                                .file
                                .try_clone()
                                .map_err(|e| part_error(index)(e.into()))?,
                            len: first.len,
                            hash: first.hash.clone(),
                            _claim: None,
                        });
                        continue;
                    }
                    let claimed = self.open(id).and_then(|up| {
                        let state = up.state();
                        let length = match state.length {
                            Some(length) if state.is_complete() => length,
                            _ => {
                                return Err(UploadError::Incomplete {
                                    held: state.held(),
                                    length: state.length,
                                })
                            }
                        };
                        let claim = up.claim(0, Some(length))?;
                        let hash = claim.state().hash.clone();
                        Ok((up, claim, length, hash))
                    });
                    let (up, claim, len, hash) = claimed.map_err(part_error(index))?;
                    Source {
                        file: up
                            .file()
                            .try_clone()
                            .map_err(|e| part_error(index)(e.into()))?,
                        len,
                        hash,
                        _claim: Some(claim),
                    }
                }
            };
            sources.push(source);
        }
        Ok(sources)
    }
}

/// What [`build`] made: the target's state, how the bytes went, the digests, the bytes hashed
/// from the file, and the data file (holding the hand-off: a lock from its length on).
type Built = (UploadState, CopyReport, Option<Digests>, u64, File);

/// Copies `sources` into a temporary file beside `data_path`, hashes it, and has `install` put
/// it in place (rename it over the data file and write the state) while it is still locked.
fn build(
    data_path: &Path,
    file_mode: u32,
    durable: bool,
    sources: &[Source],
    metadata: Metadata,
    algorithms: Algorithms,
    install: impl FnOnce(&mut UploadState, &File, &Path) -> Result<(), UploadError>,
) -> Result<Built, UploadError> {
    let total = sources
        .iter()
        .try_fold(0u64, |sum, s| sum.checked_add(s.len))
        .filter(|&n| n <= MAX_OFFSET)
        .ok_or(UploadError::LengthTooLarge {
            requested: u64::MAX,
        })?;
    let (temp_path, temp) = create_temporary(data_path, file_mode)?;
    let result = (|| {
        // Known to nobody yet; once renamed into place, whoever opens it waits for its state.
        let lock = FileLock::exclusive(&temp)?;
        // Keeps the sweep off it while it is being built (and the hand-off, after).
        if !ofd_lock(&temp, 0, 0)? {
            return Err(io::Error::other("temporary file locked by another process").into());
        }
        let mut report = CopyReport {
            bytes: total,
            ..CopyReport::default()
        };
        let mut at = 0;
        let mut reflink = true;
        for source in sources {
            copy_part(
                &source.file,
                source.len,
                &temp,
                at,
                &mut reflink,
                &mut report,
            )?;
            at += source.len;
        }
        temp.set_len(total)?;
        crash_point("assemble-copied");
        let mut state = UploadState {
            length: Some(total),
            metadata,
            ..UploadState::default()
        };
        if total > 0 {
            state.received.insert(0, total);
        }
        let mut digests = None;
        let mut hashed_from_file = 0;
        if algorithms != Algorithms::NONE {
            let first_hash = sources.first().and_then(|s| s.hash.as_deref());
            let mut progress = HashProgress::resume(first_hash, algorithms);
            if progress.hashed_upto() > sources.first().map_or(0, |s| s.len) {
                progress = HashProgress::new(algorithms);
            }
            hashed_from_file = total - progress.hashed_upto();
            progress.catch_up(&temp, total)?;
            state.hash = Some(progress.encode());
            digests = progress.finish(total);
        }
        if durable {
            temp.sync_all()?;
        }
        install(&mut state, &temp, &temp_path)?;
        drop(lock);
        // Keep the hand-off (the byte at the length and past it); free the bytes.
        if total > 0 {
            disk::ofd_unlock(&temp, 0, total)?;
        }
        Ok((state, report, digests, hashed_from_file))
    })();
    match result {
        Ok((state, report, digests, hashed_from_file)) => {
            Ok((state, report, digests, hashed_from_file, temp))
        }
        Err(e) => {
            // Renamed into place already or not, the temporary name is not needed.
            let _ = remove_if_present(&temp_path);
            Err(e)
        }
    }
}

/// A part, opened.
struct Source {
    file: File,
    len: u64,
    /// The stored hash progress of an upload part.
    hash: Option<String>,
    /// Held while the part is copied.
    _claim: Option<crate::upload::Claim>,
}

/// Takes an open-file-description write lock on the whole of `file`, waiting while another
/// open file description holds one (the kernel drops it when its holder dies).
fn ofd_lock_waiting(file: &File) -> io::Result<()> {
    let mut lock = disk::flock_range(libc::F_WRLCK, 0, 0);
    loop {
        // SAFETY: F_OFD_SETLKW with a valid flock struct on an open descriptor.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLKW, &mut lock) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Creates the temporary file of an assembly next to `data_path` (its directories too).
fn create_temporary(data_path: &Path, file_mode: u32) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = data_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload");
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = data_path.with_file_name(format!(
            "{name}.{}-{seed:x}-{n}{TEMPORARY_SUFFIX}",
            std::process::id()
        ));
        match crate::store::create_new(&path, file_mode) {
            Ok(file) => return Ok((path, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary name after 100 tries",
    ))
}

/// Removes the temporary files of assemblies under `root` not written for longer than `limit`
/// before `now` (and not being written: an assembly holds a lock on its file); how many.
pub(crate) fn sweep_temporaries(
    root: &Path,
    now: SystemTime,
    limit: Duration,
) -> io::Result<usize> {
    let mut removed = 0;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                dirs.push(path);
                continue;
            }
            if !entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(TEMPORARY_SUFFIX))
            {
                continue;
            }
            let old = |path: &Path| -> bool {
                fs::metadata(path)
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|age| age > limit)
            };
            if !old(&path) {
                continue;
            }
            let Some(file) = disk::open_existing(&path)? else {
                continue;
            };
            if ofd_locked_anywhere(&file)? {
                continue;
            }
            remove_if_present(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Copies `len` bytes of `src` (from its start) to `dst` at `at`; see the module documentation
/// for how. `reflink`: whether to try cloning (cleared once the filesystem refuses). Counts
/// the bytes in `report` (all but `bytes`). The part must not be shorter than `len`
/// ([`io::ErrorKind::UnexpectedEof`]).
pub fn copy_part(
    src: &File,
    len: u64,
    dst: &File,
    at: u64,
    reflink: &mut bool,
    report: &mut CopyReport,
) -> io::Result<()> {
    let block = dst.metadata()?.blksize().max(1);
    let cloneable = len / block * block;
    if *reflink && at.is_multiple_of(block) && cloneable > 0 {
        match clone_range(src, 0, cloneable, dst, at) {
            Ok(()) => {
                report.reflinked += cloneable;
                return copy_data(src, cloneable, len, dst, at, report);
            }
            Err(_) => *reflink = false,
        }
    }
    copy_data(src, 0, len, dst, at, report)
}

/// Copies `[from, to)` of `src` to `dst` at `at + from`, data segment by data segment.
fn copy_data(
    src: &File,
    from: u64,
    to: u64,
    dst: &File,
    at: u64,
    report: &mut CopyReport,
) -> io::Result<()> {
    let mut pos = from;
    while pos < to {
        let (data, hole) = match next_data(src, pos)? {
            Some((data, _)) if data >= to => break,
            Some((data, hole)) => (data, hole.min(to)),
            None => break,
        };
        report.holes += data - pos;
        copy_bytes(src, data, hole - data, dst, at + data, report)?;
        pos = hole;
    }
    if pos < to {
        // Past the part's last data: a hole to its end, or a part shorter than it should be.
        if src.metadata()?.len() < to {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "part is shorter than its length",
            ));
        }
        report.holes += to - pos;
    }
    Ok(())
}

/// The next data segment of `file` at or after `pos`, as `(start, end)`; `None` if only a hole
/// follows. Without `SEEK_DATA`, everything to the end is data.
fn next_data(file: &File, pos: u64) -> io::Result<Option<(u64, u64)>> {
    let seek = |whence| {
        // SAFETY: lseek on an open descriptor; its offset is not used by the copies (which
        // give theirs).
        let r = unsafe { libc::lseek(file.as_raw_fd(), pos as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    let data = match seek(libc::SEEK_DATA) {
        Ok(data) => data,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(Some((pos, u64::MAX))),
        Err(e) => return Err(e),
    };
    let hole = {
        // SAFETY: as above.
        let r = unsafe { libc::lseek(file.as_raw_fd(), data as libc::off_t, libc::SEEK_HOLE) };
        if r < 0 {
            u64::MAX
        } else {
            r as u64
        }
    };
    Ok(Some((data, hole)))
}

/// `ioctl(FICLONERANGE)`: `dst[at..at + len]` shares the blocks of `src[from..from + len]`.
fn clone_range(src: &File, from: u64, len: u64, dst: &File, at: u64) -> io::Result<()> {
    #[cfg(test)]
    if tests::forced(tests::Force::NoReflink) {
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    let range = libc::file_clone_range {
        src_fd: src.as_raw_fd() as i64,
        src_offset: from,
        src_length: len,
        dest_offset: at,
    };
    // SAFETY: FICLONERANGE with a valid file_clone_range on open descriptors.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONERANGE, &range) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies `len` bytes at `from` of `src` to `at` of `dst` with `copy_file_range(2)`, falling
/// back to reads and writes where the kernel cannot.
fn copy_bytes(
    src: &File,
    mut from: u64,
    len: u64,
    dst: &File,
    mut at: u64,
    report: &mut CopyReport,
) -> io::Result<()> {
    let end = from + len;
    while from < end {
        let mut off_in = from as libc::off64_t;
        let mut off_out = at as libc::off64_t;
        let want = (end - from).min(COPY_CHUNK) as usize;
        #[cfg(test)]
        let forced = tests::forced(tests::Force::NoCopyFileRange);
        #[cfg(not(test))]
        let forced = false;
        let n = if forced {
            -1
        } else {
            // SAFETY: copy_file_range between open descriptors with offsets of our own.
            unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    want,
                    0,
                )
            }
        };
        if n > 0 {
            from += n as u64;
            at += n as u64;
            report.copied_in_kernel += n as u64;
            continue;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "part is shorter than its length",
            ));
        }
        let e = if forced {
            io::Error::from_raw_os_error(libc::ENOSYS)
        } else {
            io::Error::last_os_error()
        };
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EXDEV | libc::ENOSYS | libc::EOPNOTSUPP | libc::EINVAL) => {
                return copy_through_userspace(src, from, end - from, dst, at, report);
            }
            _ => return Err(e),
        }
    }
    Ok(())
}

fn copy_through_userspace(
    src: &File,
    mut from: u64,
    len: u64,
    dst: &File,
    mut at: u64,
    report: &mut CopyReport,
) -> io::Result<()> {
    let mut buf = vec![0u8; FALLBACK_BUF.min(len as usize)];
    let end = from + len;
    while from < end {
        let n = buf.len().min((end - from) as usize);
        src.read_exact_at(&mut buf[..n], from)?;
        dst.write_all_at(&buf[..n], at)?;
        from += n as u64;
        at += n as u64;
        report.through_userspace += n as u64;
    }
    Ok(())
}

/// Where a test in another process makes the assembly die, like a crash (no destructors, no
/// cleanup): when `NGX_UPLOAD_CRASH_AT` names the point. Nothing outside tests.
pub(crate) fn crash_point(_name: &str) {
    #[cfg(test)]
    if std::env::var("NGX_UPLOAD_CRASH_AT").is_ok_and(|at| at == _name) {
        // SAFETY: ends the process at once.
        unsafe { libc::_exit(7) };
    }
}

#[cfg(test)]
pub(crate) mod tests;
