//! A resumable upload session on disk: the output file that segments are written into at their
//! offsets, and the state file that records which ranges are held.
//!
//! Any number of requests, in any worker process, may work on one session at once:
//! - they serialise on an exclusive `flock` of the output file, held only while the state file
//!   is read and replaced, never while waiting for the network;
//! - each request holds an open-file-description (`F_OFD_SETLK`) write lock on the byte range
//!   it is writing, from [`SessionStore::open`] until its [`Session`] is dropped, so a segment
//!   overlapping one in flight is refused ([`SessionError::InFlight`]) instead of racing it; the
//!   kernel releases these locks when the process dies, so a crash leaves none behind;
//! - the request whose commit finds the session complete takes a lock on the byte just past
//!   the file's end, so exactly one request hands the finished file off.
//!
//! Data is written before the state that claims it, and the state file is replaced by rename,
//! so it never claims bytes not written; with [`SessionStore::durable`] both are fsynced first.

use crate::content_range::ContentRange;
use crate::disk::{self, ofd_lock, ofd_locked_anywhere, remove_if_present, FileLock};
use crate::hash_state::HashProgress;
use crate::hashing::{Algorithms, Digests};
use crate::idle_files::DataFile;
use crate::session_id::SessionId;
use crate::state::{SessionState, StateError};
use crate::state_cache::{StateCache, StateRead};
use crate::store::HashedDir;
use core::fmt;
use std::fs::{self, File};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Disjoint ranges a session may hold unless configured otherwise: enough for any real client
/// (segments in any order, many in parallel), small enough that a state file stays small.
pub const DEFAULT_MAX_RANGES: usize = 4096;

/// The session states this process read or wrote last.
static SESSION_STATES: StateCache<SessionState> = StateCache::new();

/// A state file that has grown past this by appended lines is rewritten whole (by rename).
const COMPACT_AT: usize = 32 << 10;

/// Where a location keeps its sessions, and the rules they live by.
#[derive(Debug, Clone)]
pub struct SessionStore {
    pub data: HashedDir,
    pub state: HashedDir,
    /// Mode of created files (`upload_store_access`).
    pub file_mode: u32,
    /// Sessions whose state was not written for longer are gone (`upload_state_expire`).
    pub expire_after: Option<Duration>,
    /// Most disjoint ranges a session may hold (`upload_state_max_ranges`).
    pub max_ranges: usize,
    /// Data and state are fsynced before a commit returns (`upload_state_fsync`).
    pub durable: bool,
}

#[derive(Debug)]
pub enum SessionError {
    /// The session id is shorter than the hashed levels need.
    IdTooShort {
        need: usize,
    },
    /// The segment names another total size than the session was started with.
    TotalMismatch {
        stored: u64,
        sent: u64,
    },
    /// Another request is writing bytes this segment overlaps.
    InFlight {
        first: u64,
        last: u64,
    },
    /// Recording the segment would leave the session with more disjoint ranges than allowed.
    TooManyRanges {
        max: usize,
    },
    /// The state file exists but cannot be understood.
    DamagedState(StateError),
    Io(io::Error),
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdTooShort { need } => {
                write!(
                    f,
                    "session id is shorter than the {need} characters upload_store levels need"
                )
            }
            Self::TotalMismatch { stored, sent } => {
                write!(
                    f,
                    "total size {sent} differs from the session's total size {stored}"
                )
            }
            Self::InFlight { first, last } => write!(
                f,
                "bytes {first}-{last} overlap a segment another request is still writing"
            ),
            Self::TooManyRanges { max } => write!(
                f,
                "the segment would leave more than {max} separate ranges \
                 (upload_state_max_ranges); send segments that fill the gaps"
            ),
            Self::DamagedState(e) => write!(f, "damaged state file: {e}"),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl From<io::Error> for SessionError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// An open session: the output file, the paths of both files, and this request's claim on the
/// byte range it writes.
#[derive(Debug)]
pub struct Session {
    /// Shared by the handles of [`Self::try_clone`]: the descriptor, and with it the claims,
    /// lasts until the last one is dropped (then it may be kept open for the next request).
    file: std::sync::Arc<DataFile>,
    data_path: PathBuf,
    state_path: PathBuf,
    total: u64,
    file_mode: u32,
    max_ranges: usize,
    durable: bool,
    /// The output file's identity, recorded in the state to tell it from a later file of the
    /// same name.
    file_id: String,
    /// The state as this request found it.
    opened: SessionState,
    /// The bytes this request claims: `(first, len)`.
    claimed: (u64, u64),
}

/// What a request that wrote bytes of a session has the state record.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The bytes `[start, end)` are in the output file.
    pub start: u64,
    pub end: u64,
    /// The hashes this request carried on as its bytes streamed by ([`Session::streaming_hash`]).
    pub hashes: Option<HashProgress>,
    /// Hashes the location wants; [`Algorithms::NONE`] for none.
    pub algorithms: Algorithms,
    /// The request's body is complete: hash from the file what could not be hashed as it
    /// streamed and, if the session is complete, claim its hand-off. `false` for a checkpoint
    /// of a segment still streaming (or cut short), which records nothing if the session's
    /// state is gone meanwhile (handed off, cleaned up, expired): it never brings one back.
    pub finishing: bool,
}

/// The outcome of [`Session::commit`].
#[derive(Debug)]
pub struct Committed {
    pub state: SessionState,
    /// The whole file's hashes, once complete and when hashes are wanted.
    pub digests: Option<Digests>,
    /// The session is complete and this request, alone, is to hand it off.
    pub hand_off: bool,
}

impl SessionStore {
    pub fn new(data: HashedDir, state: HashedDir, file_mode: u32) -> Self {
        Self {
            data,
            state,
            file_mode,
            expire_after: None,
            max_ranges: DEFAULT_MAX_RANGES,
            durable: false,
        }
    }

    pub fn data_path(&self, id: &SessionId) -> Result<PathBuf, SessionError> {
        self.data
            .path_of(id.as_str())
            .ok_or(SessionError::IdTooShort {
                need: self.data.min_name_len(),
            })
    }

    pub fn state_path(&self, id: &SessionId) -> Result<PathBuf, SessionError> {
        // Levels come from the end of the whole leaf, `.state` included, as nginx-upload-module
        // does it, so state files stay where existing deployments expect them.
        self.state
            .path_of(&format!("{}.state", id.as_str()))
            .ok_or(SessionError::IdTooShort {
                need: self.state.min_name_len(),
            })
    }

    /// What a session holds, for a client asking before it resumes; `None` if there is no such
    /// session (its output file is gone, so nothing it claims is there, or it expired).
    /// Creates nothing.
    pub fn progress(&self, id: &SessionId) -> Result<Option<SessionState>, SessionError> {
        if !self.data_path(id)?.exists() {
            return Ok(None);
        }
        let state_path = self.state_path(id)?;
        if self.is_expired(&state_path) {
            return Ok(None);
        }
        // The state file is replaced by rename or appended to, so an unlocked read sees a
        // whole version, but for a last line being appended, which decoding leaves out.
        match SESSION_STATES.read(&state_path, SessionState::decode)? {
            Some(read) => read
                .map(|read| Some(read.state))
                .map_err(SessionError::DamagedState),
            None => Ok(None),
        }
    }

    /// Opens the session for a segment of `range`, creating it if it is new (or expired), and
    /// claims the segment's bytes for this request. Fails with [`SessionError::TotalMismatch`]
    /// if the session exists with another total size, [`SessionError::InFlight`] if another
    /// request is writing bytes of the range, [`SessionError::TooManyRanges`] if recording the
    /// range would exceed [`Self::max_ranges`]. A failure changes nothing on disk, but for an
    /// empty output file and state of a session it had to create.
    pub fn open(&self, id: &SessionId, range: &ContentRange) -> Result<Session, SessionError> {
        let data_path = self.data_path(id)?;
        let state_path = self.state_path(id)?;
        let (file, created) = DataFile::open(&data_path, self.file_mode)?;
        let file_id = file.id().to_owned();
        let mut session = Session {
            file: std::sync::Arc::new(file),
            file_id,
            data_path,
            state_path,
            total: range.total,
            file_mode: self.file_mode,
            max_ranges: self.max_ranges,
            durable: self.durable,
            opened: SessionState::new(range.total),
            claimed: (range.first, range.len()),
        };
        let expired = self.is_expired(&session.state_path);
        session.opened = session.start(created, expired, range)?;
        if !ofd_lock(&session.file, range.first, range.len())? {
            return Err(SessionError::InFlight {
                first: range.first,
                last: range.last,
            });
        }
        session.file.set_claimed(true);
        Ok(session)
    }

    /// Whether the state file at `path` was last written longer ago than the expiry allows.
    fn is_expired(&self, path: &Path) -> bool {
        let Some(limit) = self.expire_after else {
            return false;
        };
        fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > limit)
    }

    /// Removes every session whose state file was last written longer than
    /// [`Self::expire_after`] before `now`: its output file and its state. A session with a
    /// request writing to it is left alone. Also removes temporary state files left by a crash,
    /// and asks to yield that no request took back.
    pub fn sweep_expired(&self, now: SystemTime) -> io::Result<Sweep> {
        let mut sweep = Sweep::default();
        let Some(limit) = self.expire_after else {
            return Ok(sweep);
        };
        let expired = |path: &Path| -> bool {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > limit)
        };
        let mut dirs = vec![self.state.root.clone()];
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
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                // A temporary state left by a crash, or an ask to yield its writer never saw
                // (it ended first; crate::upload::Upload::ask_to_yield).
                let asks_to_yield = path.extension().is_some_and(|e| e == disk::YIELD_EXTENSION);
                if name.ends_with(".state.tmp") || asks_to_yield {
                    if expired(&path) {
                        remove_if_present(&path)?;
                    }
                    continue;
                }
                let Some(id) = name
                    .strip_suffix(".state")
                    .and_then(|id| SessionId::parse(id.as_bytes()).ok())
                else {
                    continue;
                };
                if !expired(&path) {
                    continue;
                }
                match self.remove_expired(&id, &path, &expired) {
                    Ok(true) => sweep.removed += 1,
                    Ok(false) => sweep.busy += 1,
                    Err(SessionError::Io(e)) => return Err(e),
                    Err(_) => sweep.busy += 1,
                }
            }
        }
        Ok(sweep)
    }

    /// Removes one expired session unless a request is writing to it; whether it was removed.
    fn remove_expired(
        &self,
        id: &SessionId,
        state_path: &Path,
        expired: &dyn Fn(&Path) -> bool,
    ) -> Result<bool, SessionError> {
        let data_path = self.data_path(id)?;
        let file = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                remove_if_present(state_path)?;
                return Ok(true);
            }
            Err(e) => return Err(e.into()),
        };
        if ofd_locked_anywhere(&file)? {
            return Ok(false);
        }
        let _lock = FileLock::exclusive(&file)?;
        // A request may have written the state since the sweep looked.
        if !expired(state_path) {
            return Ok(false);
        }
        remove_if_present(&data_path)?;
        remove_if_present(state_path)?;
        Ok(true)
    }
}

/// What [`SessionStore::sweep_expired`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sweep {
    pub removed: usize,
    /// Expired sessions left because a request is writing to them.
    pub busy: usize,
}

impl Session {
    /// Checks the session's state against the segment that opened it, starting a fresh state
    /// if there is none or it is left over from an earlier output file; returns the state.
    /// `created`: this request created the output file; `expired`: the state is too old.
    fn start(
        &self,
        created: bool,
        expired: bool,
        range: &ContentRange,
    ) -> Result<SessionState, SessionError> {
        // A state describes the output file whose inode it names. Not `created` alone: a
        // request that created the file may get here after another request already started
        // this very file's state and recorded a segment in it.
        let describes = |state: &SessionState| {
            !expired
                && match &state.file {
                    Some(file) => *file == self.file_id,
                    // A state from before file ids were recorded: trusted unless the file is new.
                    None => !created,
                }
        };
        // Usually the state is there: read without the lock, as `progress` does (a state file
        // is only replaced whole or appended to), since the commit checks again under it.
        let state = match self.read_state()?.filter(describes) {
            Some(state) => state,
            None => {
                let _lock = self.lock()?;
                match self.read_state()?.filter(describes) {
                    Some(state) => state,
                    // None, or one left over from a file the backend moved away, or expired.
                    None => {
                        let state = self.new_state();
                        self.write_state(&state)?;
                        state
                    }
                }
            }
        };
        if state.total != self.total {
            return Err(SessionError::TotalMismatch {
                stored: state.total,
                sent: self.total,
            });
        }
        if state.received.len_after_insert(range.first, range.last + 1) > self.max_ranges {
            return Err(SessionError::TooManyRanges {
                max: self.max_ranges,
            });
        }
        Ok(state)
    }

    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The hash progress a request writing `range` can carry on as its bytes stream by: the
    /// stored one, if the hashed prefix ends inside the range (in-order uploads); `None` if the
    /// range lies beyond the prefix, or no hashes are wanted.
    pub fn streaming_hash(
        &self,
        range: &ContentRange,
        algorithms: Algorithms,
    ) -> Option<HashProgress> {
        if algorithms == Algorithms::NONE {
            return None;
        }
        let progress = HashProgress::resume(self.opened.hash.as_deref(), algorithms);
        let upto = progress.hashed_upto();
        (range.first..=range.last)
            .contains(&upto)
            .then_some(progress)
    }

    /// A second handle on the session, for work done on another thread. It shares this one's
    /// descriptor, and with it this request's claims (no `dup`: a small segment's commit is a
    /// handful of system calls, and this was two of them).
    pub fn try_clone(&self) -> io::Result<Session> {
        Ok(Session {
            file: std::sync::Arc::clone(&self.file),
            data_path: self.data_path.clone(),
            state_path: self.state_path.clone(),
            total: self.total,
            file_mode: self.file_mode,
            max_ranges: self.max_ranges,
            durable: self.durable,
            file_id: self.file_id.clone(),
            opened: self.opened.clone(),
            claimed: self.claimed,
        })
    }

    /// Gives up this request's claim on the bytes it wrote, once they are recorded and before
    /// it answers: a client that resends at once (on another connection, to another worker)
    /// must not find them still claimed because nginx has not freed this request yet. The
    /// claim of the hand-off, if this request holds it, stays.
    pub fn release_claim(&self) -> io::Result<()> {
        if !self.file.is_claimed() {
            return Ok(()); // given up already, by another handle of this request
        }
        let (first, len) = self.claimed;
        disk::ofd_unlock(&self.file, first, len)?;
        self.file.set_claimed(false);
        Ok(())
    }

    /// Records that `[commit.start, commit.end)` is written, with the hash progress, and
    /// returns the session's state after it. See [`Commit::finishing`] for what else a request
    /// whose body is complete gets done. Blocking disk work: run it off an event loop.
    pub fn commit(&self, commit: Commit) -> Result<Committed, SessionError> {
        let algorithms = commit.algorithms;
        if self.durable {
            self.file.sync_data()?;
        }
        let max_ranges = self.max_ranges;
        let mut state = self.update(commit.finishing, |state| {
            let mut appended = String::new();
            if !state.received.contains(commit.start, commit.end) {
                if state.received.len_after_insert(commit.start, commit.end) > max_ranges {
                    return Err(SessionError::TooManyRanges { max: max_ranges });
                }
                state.received.insert(commit.start, commit.end);
                appended.push_str(&SessionState::append_range(commit.start, commit.end));
            }
            if let Some(ours) = commit.hashes.clone() {
                appended.push_str(&keep_longer_hash(&mut state.hash, ours, algorithms));
            }
            Ok(appended)
        })?;
        let mut digests = None;
        if commit.finishing && algorithms != Algorithms::NONE {
            let mut progress = HashProgress::resume(state.hash.as_deref(), algorithms);
            let prefix = state.received.prefix_len();
            if progress.hashed_upto() < prefix {
                // Bytes that arrived out of order: hash them from the file, now that the gap
                // before them is filled. Held bytes do not change, so no lock is needed.
                progress.catch_up(&self.file, prefix)?;
                let caught_up = progress.clone();
                state = self.update(true, |state| {
                    Ok(keep_longer_hash(&mut state.hash, caught_up, algorithms))
                })?;
                progress = HashProgress::resume(state.hash.as_deref(), algorithms);
            }
            if state.is_complete() {
                digests = progress.finish(self.total);
            }
        }
        if state.is_complete() {
            // No segment is to come: its descriptors are not kept for one.
            self.file.spend();
        }
        let hand_off = commit.finishing && state.is_complete() && self.claim_hand_off()?;
        Ok(Committed {
            state,
            digests,
            hand_off,
        })
    }

    /// An empty state for this session's output file.
    fn new_state(&self) -> SessionState {
        SessionState {
            file: Some(self.file_id.clone()),
            ..SessionState::new(self.total)
        }
    }

    /// Takes the lock that makes this request the one to hand the complete session off: the
    /// byte just past the file's end, which no segment claims. Held until the session is
    /// dropped; `false` if another request holds it.
    fn claim_hand_off(&self) -> io::Result<bool> {
        ofd_lock(&self.file, self.total, 1)
    }

    /// The state as recorded now.
    #[cfg(test)]
    pub fn current_state(&self) -> Result<SessionState, SessionError> {
        let _lock = self.lock()?;
        Ok(self
            .read_state()?
            .unwrap_or_else(|| SessionState::new(self.total)))
    }

    /// Removes both files (for `upload_cleanup`).
    pub fn remove(&self) -> io::Result<()> {
        self.file.spend();
        let _lock = self.lock()?;
        let data = remove_if_present(&self.data_path);
        let state = remove_if_present(&self.state_path);
        SESSION_STATES.forget(&self.state_path);
        data.and(state)
    }

    /// Removes the state file only: the upload is finished and its file belongs to the backend.
    pub fn forget_state(&self) -> io::Result<()> {
        self.file.spend();
        let _lock = self.lock()?;
        SESSION_STATES.forget(&self.state_path);
        remove_if_present(&self.state_path)
    }

    fn lock(&self) -> io::Result<FileLock<'_>> {
        FileLock::exclusive(&self.file)
    }

    /// Reads the state under the lock, lets `change` edit it and say what changed as the lines
    /// to append to the state file (empty: nothing), and records that: appended, or, once the
    /// file has grown past [`COMPACT_AT`], by rewriting it. Returns the state after. With
    /// `create` false, a missing state stays missing (and an empty one is returned).
    fn update(
        &self,
        create: bool,
        change: impl FnOnce(&mut SessionState) -> Result<String, SessionError>,
    ) -> Result<SessionState, SessionError> {
        let _lock = self.lock()?;
        let (mut state, stored_len) = match self.read_state_sized()? {
            // A last line cut short by a crash would swallow the first appended one.
            Some(read) => (read.state, (!read.torn).then_some(read.len)),
            None if create => (self.new_state(), None),
            None => return Ok(self.new_state()),
        };
        if state.total != self.total {
            return Err(SessionError::TotalMismatch {
                stored: state.total,
                sent: self.total,
            });
        }
        let appended = change(&mut state)?;
        if appended.is_empty() {
            return Ok(state);
        }
        match stored_len {
            Some(len) if len + appended.len() <= COMPACT_AT => {
                SESSION_STATES.append(&self.state_path, &appended, self.durable, &state)?;
            }
            _ => self.write_state(&state)?,
        }
        Ok(state)
    }

    fn read_state(&self) -> Result<Option<SessionState>, SessionError> {
        Ok(self.read_state_sized()?.map(|read| read.state))
    }

    /// The state, the length of its file, and whether its last line is cut short.
    fn read_state_sized(&self) -> Result<Option<StateRead<SessionState>>, SessionError> {
        SESSION_STATES
            .read(&self.state_path, SessionState::decode)?
            .transpose()
            .map_err(SessionError::DamagedState)
    }

    /// Replaces the state file atomically: a reader sees the old state or the new, never a
    /// torn one. Called with the lock held, so one temporary name is enough.
    fn write_state(&self, state: &SessionState) -> io::Result<()> {
        SESSION_STATES.replace(
            &self.state_path,
            state,
            &state.encode(),
            self.file_mode,
            self.durable,
        )
    }
}

/// Stores `ours` as the state's hash progress if it hashed more than the stored one; the line
/// to append for it, or nothing.
pub(crate) fn keep_longer_hash(
    hash: &mut Option<String>,
    ours: HashProgress,
    algorithms: Algorithms,
) -> String {
    let stored = HashProgress::resume(hash.as_deref(), algorithms);
    let before = stored.hashed_upto();
    let best = stored.merge(ours);
    if best.hashed_upto() <= before {
        return String::new();
    }
    let encoded = best.encode();
    let line = SessionState::append_hash(&encoded);
    *hash = Some(encoded);
    line
}

/// Writes all of `bufs` at `offset`, with as few `pwritev` calls as the kernel allows.
pub fn write_all_at(file: &File, mut offset: u64, bufs: &[IoSlice<'_>]) -> io::Result<()> {
    let mut storage: Vec<IoSlice<'_>> = bufs.iter().filter(|b| !b.is_empty()).copied().collect();
    let mut slices = &mut storage[..];
    while !slices.is_empty() {
        let iov = slices.len().min(1024);
        // SAFETY: IoSlice is ABI-compatible with iovec; the file descriptor is open for writing
        // for the duration of the call.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                iov as libc::c_int,
                offset as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        offset += n as u64;
        IoSlice::advance_slices(&mut slices, n as usize);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::content_range;
    use std::os::unix::fs::FileExt;

    fn write_at(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    fn store(root: &Path, levels: &[usize]) -> SessionStore {
        SessionStore::new(
            HashedDir::new(root.join("data"), levels),
            HashedDir::new(root.join("state"), levels),
            0o600,
        )
    }

    /// Commits `[start, end)` as a request whose body is complete, without hashes.
    fn finish(s: &Session, start: u64, end: u64) -> Committed {
        s.commit(Commit {
            start,
            end,
            hashes: None,
            algorithms: Algorithms::NONE,
            finishing: true,
        })
        .unwrap()
    }

    /// [`finish`], keeping the state after.
    fn record(s: &Session, start: u64, end: u64) -> SessionState {
        finish(s, start, end).state
    }

    fn range(s: &str) -> ContentRange {
        content_range::parse(s.as_bytes()).unwrap()
    }

    fn id(s: &str) -> SessionId {
        SessionId::parse(s.as_bytes()).unwrap()
    }

    /// A crash in the middle of an append leaves a last line without its newline; the next
    /// record must not glue its line onto it (which would make both unreadable).
    #[test]
    fn a_state_cut_short_by_a_crash_is_rewritten_not_appended_to() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("torn1"), &range("bytes 0-9/100")).unwrap();
        record(&s, 0, 10);
        let path = st.state_path(&id("torn1")).unwrap();
        let mut torn = fs::OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut torn, b"+ 50-5").unwrap();
        drop((torn, s));
        let s = st.open(&id("torn1"), &range("bytes 10-19/100")).unwrap();
        assert_eq!(
            record(&s, 10, 20).received.iter().collect::<Vec<_>>(),
            [(0, 20)]
        );
        let on_disk = SessionState::decode(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(on_disk.received.iter().collect::<Vec<_>>(), [(0, 20)]);
        assert!(fs::read(&path).unwrap().ends_with(b"\n"));
    }

    /// What a process remembers of a state never hides what another process wrote: states
    /// appended and replaced by another store handle (as another worker would) are seen.
    #[test]
    fn writes_by_others_are_seen_through_the_remembered_state() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let a = st.open(&id("seen1"), &range("bytes 0-9/100")).unwrap();
        record(&a, 0, 10);
        // Another writer appends, without this process's cache knowing.
        let path = st.state_path(&id("seen1")).unwrap();
        let mut other = fs::OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut other, SessionState::append_range(40, 50).as_bytes()).unwrap();
        drop(other);
        let progress = st.progress(&id("seen1")).unwrap().unwrap();
        assert_eq!(
            progress.received.iter().collect::<Vec<_>>(),
            [(0, 10), (40, 50)]
        );
        // And replaces it by rename with a state of as many bytes.
        let mut replaced = progress.clone();
        replaced.received = crate::range_set::RangeSet::new();
        replaced.received.insert(0, 10);
        replaced.received.insert(70, 80);
        let bytes = replaced.encode();
        let before = fs::read(&path).unwrap();
        let mut padded = bytes.clone();
        padded.resize(before.len().max(bytes.len()), b'\n');
        let side = path.with_extension("other");
        fs::write(&side, &padded).unwrap();
        fs::rename(&side, &path).unwrap();
        let b = st.open(&id("seen1"), &range("bytes 10-19/100")).unwrap();
        assert_eq!(
            record(&b, 10, 20).received.iter().collect::<Vec<_>>(),
            [(0, 20), (70, 80)]
        );
    }

    #[test]
    fn segments_in_any_order_assemble_the_file() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1, 2]);
        let content: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let segments = [(6000, 9999), (0, 2999), (3000, 5999)];
        let mut last = None;
        for (a, b) in segments {
            let r = range(&format!("bytes {a}-{b}/10000"));
            let s = st.open(&id("abc123"), &r).unwrap();
            let (x, y) = content[a..=b].split_at(100);
            write_all_at(s.file(), a as u64, &[IoSlice::new(x), IoSlice::new(y)]).unwrap();
            last = Some(record(&s, a as u64, b as u64 + 1));
        }
        let state = last.unwrap();
        assert!(state.is_complete());
        let path = tmp.join("data/3/12/abc123");
        assert_eq!(fs::read(&path).unwrap(), content);
        assert!(tmp.join("state/e/at/abc123.state").is_file());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn another_total_is_a_conflict_and_changes_nothing() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("s1"), &range("bytes 0-9/100")).unwrap();
        write_at(s.file(), 0, b"0123456789").unwrap();
        record(&s, 0, 10);
        let before = fs::read(s.state_path()).unwrap();
        let err = st.open(&id("s1"), &range("bytes 0-9/200")).unwrap_err();
        assert!(matches!(
            err,
            SessionError::TotalMismatch {
                stored: 100,
                sent: 200
            }
        ));
        assert_eq!(fs::read(s.state_path()).unwrap(), before);
        assert_eq!(fs::read(s.data_path()).unwrap(), b"0123456789");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_vanished_output_file_restarts_the_session() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("s2"), &range("bytes 0-3/4")).unwrap();
        write_at(s.file(), 0, b"abcd").unwrap();
        assert!(record(&s, 0, 4).is_complete());
        fs::remove_file(s.data_path()).unwrap();
        // A new upload under the same id, with another size, is a new session.
        let s = st.open(&id("s2"), &range("bytes 0-1/8")).unwrap();
        let state = s.current_state().unwrap();
        assert_eq!((state.total, state.received.len()), (8, 0));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn damaged_state_is_reported_not_overwritten() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("s3"), &range("bytes 0-3/4")).unwrap();
        fs::write(s.state_path(), b"garbage").unwrap();
        assert!(matches!(
            st.open(&id("s3"), &range("bytes 0-3/4")),
            Err(SessionError::DamagedState(_))
        ));
        assert_eq!(fs::read(s.state_path()).unwrap(), b"garbage");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn progress_reports_without_creating_anything() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1]);
        assert!(st.progress(&id("none1")).unwrap().is_none());
        assert!(!tmp.join("data").exists() && !tmp.join("state").exists());
        let s = st.open(&id("some1"), &range("bytes 5-9/10")).unwrap();
        write_at(s.file(), 5, b"56789").unwrap();
        record(&s, 5, 10);
        let p = st.progress(&id("some1")).unwrap().unwrap();
        assert_eq!(p.received.report(p.total).to_string(), "5-9/10");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn short_ids_are_refused_when_levels_need_more() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[2, 2]);
        assert!(matches!(
            st.open(&id("abc"), &range("bytes 0-0/1")),
            Err(SessionError::IdTooShort { need: 4 })
        ));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn concurrent_threads_never_lose_a_range() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1]);
        let threads: Vec<_> = (0..8u64)
            .map(|t| {
                let st = st.clone();
                std::thread::spawn(move || {
                    for k in 0..25u64 {
                        let i = k * 8 + t;
                        let r = range(&format!("bytes {}-{}/2000", i * 10, i * 10 + 9));
                        let s = st.open(&id("para1"), &r).unwrap();
                        write_at(s.file(), i * 10, &[i as u8; 10]).unwrap();
                        record(&s, i * 10, i * 10 + 10);
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = st.open(&id("para1"), &range("bytes 0-0/2000")).unwrap();
        assert!(s.current_state().unwrap().is_complete());
        let data = fs::read(s.data_path()).unwrap();
        assert!(data.chunks(10).enumerate().all(|(i, c)| c == [i as u8; 10]));
        s.remove().unwrap();
        assert!(!s.data_path().exists() && !s.state_path().exists());
        fs::remove_dir_all(&tmp).unwrap();
    }

    fn reference_digests(content: &[u8], algorithms: Algorithms) -> Digests {
        let mut h = crate::hashing::MultiHasher::new(algorithms);
        h.update(content);
        h.finish()
    }

    /// Uploads `content` in segments of `size` in the given order of segment indexes, each
    /// request hashing as it streams when it can, as the nginx glue does.
    fn upload_in_order(
        st: &SessionStore,
        sid: &str,
        content: &[u8],
        size: usize,
        order: &[usize],
        algorithms: Algorithms,
    ) -> Committed {
        let total = content.len();
        let mut last = None;
        for &k in order {
            let (a, b) = (k * size, ((k + 1) * size).min(total) - 1);
            let r = range(&format!("bytes {a}-{b}/{total}"));
            let s = st.open(&id(sid), &r).unwrap();
            let mut hashes = s.streaming_hash(&r, algorithms);
            // Two buffers per segment, like a body arriving in pieces.
            let mid = a + (b - a) / 2;
            for (x, y) in [(a, mid), (mid + 1, b)] {
                let piece = &content[x..=y];
                write_all_at(s.file(), x as u64, &[IoSlice::new(piece)]).unwrap();
                if let Some(h) = &mut hashes {
                    h.advance(x as u64, piece);
                }
            }
            last = Some(
                s.commit(Commit {
                    start: a as u64,
                    end: b as u64 + 1,
                    hashes,
                    algorithms,
                    finishing: true,
                })
                .unwrap(),
            );
        }
        last.unwrap()
    }

    #[test]
    fn in_order_segments_are_hashed_as_they_stream() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let content: Vec<u8> = (0..5000u32).map(|i| (i * 13 % 256) as u8).collect();
        let all = Algorithms::ALL;
        // After three in-order segments the stored progress covers exactly their bytes, so
        // nothing had to be read back from the file.
        let partial = upload_in_order(&st, "ord1", &content, 1000, &[0, 1, 2], all);
        let hash = partial.state.hash.clone().unwrap();
        assert!(hash.starts_with("1 upto=3000 "), "{hash}");
        assert!(!partial.hand_off && partial.digests.is_none());
        let done = upload_in_order(&st, "ord1", &content, 1000, &[3, 4], all);
        assert!(done.hand_off);
        assert_eq!(done.digests.unwrap(), reference_digests(&content, all));
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn out_of_order_segments_get_the_real_hashes() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[1]);
        let content: Vec<u8> = (0..7777u32).map(|i| (i * 31 % 253) as u8).collect();
        for (n, order) in [vec![7, 6, 5, 4, 3, 2, 1, 0], vec![3, 0, 7, 1, 6, 2, 5, 4]]
            .into_iter()
            .enumerate()
        {
            let sid = format!("shuf{n}");
            let algs = Algorithms::MD5 | Algorithms::SHA256 | Algorithms::CRC32;
            let done = upload_in_order(&st, &sid, &content, 1000, &order, algs);
            assert!(done.state.is_complete() && done.hand_off);
            assert_eq!(done.digests.unwrap(), reference_digests(&content, algs));
        }
        fs::remove_dir_all(&tmp).unwrap();
    }

    /// A request that released its claim (its bytes recorded, about to answer) no longer
    /// blocks a resend of the same bytes, while it keeps the claim of the hand-off it won.
    #[test]
    fn a_released_claim_lets_a_resend_in_and_keeps_the_hand_off() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let first = st.open(&id("rel1"), &range("bytes 0-9/20")).unwrap();
        record(&first, 0, 10);
        assert!(matches!(
            st.open(&id("rel1"), &range("bytes 0-9/20")),
            Err(SessionError::InFlight { .. })
        ));
        first.release_claim().unwrap();
        let again = st.open(&id("rel1"), &range("bytes 0-9/20")).unwrap();
        drop(again);
        let last = st.open(&id("rel1"), &range("bytes 10-19/20")).unwrap();
        assert!(finish(&last, 10, 20).hand_off);
        last.release_claim().unwrap();
        let resend = st.open(&id("rel1"), &range("bytes 10-19/20")).unwrap();
        let again = finish(&resend, 10, 20);
        assert!(!again.hand_off, "the hand-off stays with the first request");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_segment_overlapping_one_in_flight_is_refused() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let writing = st.open(&id("fly1"), &range("bytes 100-199/1000")).unwrap();
        for overlapping in [
            "bytes 150-249/1000",
            "bytes 0-100/1000",
            "bytes 199-199/1000",
        ] {
            assert!(matches!(
                st.open(&id("fly1"), &range(overlapping)),
                Err(SessionError::InFlight { .. })
            ));
        }
        // Bytes next to it are free, and the refusals recorded nothing.
        let next = st.open(&id("fly1"), &range("bytes 200-299/1000")).unwrap();
        assert!(next.current_state().unwrap().received.is_empty());
        drop(writing);
        st.open(&id("fly1"), &range("bytes 150-249/1000"))
            .unwrap_err();
        drop(next);
        st.open(&id("fly1"), &range("bytes 150-249/1000")).unwrap();
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn exactly_one_request_hands_a_complete_session_off() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let a = st.open(&id("last1"), &range("bytes 0-4/10")).unwrap();
        let b = st.open(&id("last1"), &range("bytes 5-9/10")).unwrap();
        write_at(a.file(), 0, b"01234").unwrap();
        write_at(b.file(), 5, b"56789").unwrap();
        let commit = |s: &Session, start, end| {
            s.commit(Commit {
                start,
                end,
                hashes: None,
                algorithms: Algorithms::NONE,
                finishing: true,
            })
            .unwrap()
        };
        let first = commit(&a, 0, 5);
        let second = commit(&b, 5, 10);
        assert!(!first.hand_off && second.hand_off);
        // A retry while the hand-off is under way finds the session complete but not its own.
        let retry = st.open(&id("last1"), &range("bytes 0-4/10")).unwrap_err();
        assert!(matches!(retry, SessionError::InFlight { .. }), "{retry}");
        drop(a);
        let retry = st.open(&id("last1"), &range("bytes 0-4/10")).unwrap();
        let again = commit(&retry, 0, 5);
        assert!(again.state.is_complete() && !again.hand_off);
        // Once the first hand-off is over (its request gone), a retry hands off again.
        drop(b);
        assert!(commit(&retry, 0, 5).hand_off);
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_range_count_is_capped() {
        let tmp = crate::store::tests::tempdir();
        let mut st = store(&tmp, &[]);
        st.max_ranges = 2;
        for a in [0, 20] {
            let s = st
                .open(&id("cap1"), &range(&format!("bytes {a}-{}/100", a + 4)))
                .unwrap();
            record(&s, a, a + 5);
        }
        let before = fs::read(tmp.join("state/cap1.state")).unwrap();
        let err = st.open(&id("cap1"), &range("bytes 40-44/100")).unwrap_err();
        assert!(
            matches!(err, SessionError::TooManyRanges { max: 2 }),
            "{err}"
        );
        assert_eq!(fs::read(tmp.join("state/cap1.state")).unwrap(), before);
        // Filling a gap or extending a range is always possible.
        for (a, b) in [(5, 9), (25, 29), (10, 19)] {
            let s = st
                .open(&id("cap1"), &range(&format!("bytes {a}-{b}/100")))
                .unwrap();
            record(&s, a, b + 1);
        }
        let state = st.progress(&id("cap1")).unwrap().unwrap();
        assert_eq!(state.received.report(100).to_string(), "0-29/100");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn expired_sessions_are_unknown_and_swept() {
        let tmp = crate::store::tests::tempdir();
        let mut st = store(&tmp, &[1]);
        st.expire_after = Some(Duration::from_secs(3600));
        for sid in ["old1", "old2", "new1"] {
            let s = st.open(&id(sid), &range("bytes 0-1/4")).unwrap();
            write_at(s.file(), 0, b"ab").unwrap();
            record(&s, 0, 2);
        }
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        for sid in ["old1", "old2"] {
            let state = File::options()
                .write(true)
                .open(st.state_path(&id(sid)).unwrap())
                .unwrap();
            state.set_modified(two_hours_ago).unwrap();
        }
        assert!(st.progress(&id("old1")).unwrap().is_none());
        assert!(st.progress(&id("new1")).unwrap().is_some());
        // A request writing to old2 keeps it through the sweep.
        let busy = st.open(&id("old2"), &range("bytes 2-3/4")).unwrap();
        let sweep = st.sweep_expired(SystemTime::now()).unwrap();
        assert_eq!(
            sweep,
            Sweep {
                removed: 1,
                busy: 0
            }
        );
        assert!(!st.data_path(&id("old1")).unwrap().exists());
        assert!(!st.state_path(&id("old1")).unwrap().exists());
        assert!(st.data_path(&id("new1")).unwrap().exists());
        // old2 was opened afresh (it had expired), which rewrote its state: not expired now.
        assert!(st
            .progress(&id("old2"))
            .unwrap()
            .unwrap()
            .received
            .is_empty());
        drop(busy);
        // An hour and a half from now, everything has expired.
        let later = SystemTime::now() + Duration::from_secs(5400);
        assert_eq!(
            st.sweep_expired(later).unwrap(),
            Sweep {
                removed: 2,
                busy: 0
            }
        );
        assert!(
            snapshot_files(&tmp).is_empty(),
            "{:?}",
            snapshot_files(&tmp)
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_sweep_skips_a_session_being_written() {
        let tmp = crate::store::tests::tempdir();
        let mut st = store(&tmp, &[]);
        st.expire_after = Some(Duration::from_secs(60));
        let s = st.open(&id("busy1"), &range("bytes 0-1/4")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(120);
        assert_eq!(
            st.sweep_expired(later).unwrap(),
            Sweep {
                removed: 0,
                busy: 1
            }
        );
        drop(s);
        assert_eq!(
            st.sweep_expired(later).unwrap(),
            Sweep {
                removed: 1,
                busy: 0
            }
        );
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn durable_commits_record_the_same_state() {
        let tmp = crate::store::tests::tempdir();
        let mut st = store(&tmp, &[1]);
        st.durable = true;
        let s = st.open(&id("dur1"), &range("bytes 0-3/4")).unwrap();
        write_at(s.file(), 0, b"abcd").unwrap();
        assert!(record(&s, 0, 4).is_complete());
        assert_eq!(fs::read(s.data_path()).unwrap(), b"abcd");
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn the_request_that_created_the_file_keeps_a_range_recorded_before_it_looked() {
        // Two first segments race: B found the file A had just created and recorded its range
        // before A took the lock to start the state. A must keep B's range.
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let b = st.open(&id("race1"), &range("bytes 5-9/10")).unwrap();
        write_at(b.file(), 5, b"56789").unwrap();
        record(&b, 5, 10);
        let a = st.open(&id("race1"), &range("bytes 0-4/10")).unwrap();
        let seen = a.start(true, false, &range("bytes 0-4/10")).unwrap();
        assert_eq!(seen.received.report(10).to_string(), "5-9/10");
        // A state left by an earlier file of the same name (another inode) claims nothing.
        drop((a, b));
        fs::remove_file(tmp.join("data/race1")).unwrap();
        let c = st.open(&id("race1"), &range("bytes 0-4/10")).unwrap();
        assert!(c.current_state().unwrap().received.is_empty());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn a_late_checkpoint_does_not_bring_a_finished_session_back() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let s = st.open(&id("late1"), &range("bytes 0-9/10")).unwrap();
        write_at(s.file(), 0, b"0123456789").unwrap();
        assert!(record(&s, 0, 10).is_complete());
        s.forget_state().unwrap();
        let checkpoint = Commit {
            start: 0,
            end: 5,
            hashes: None,
            algorithms: Algorithms::NONE,
            finishing: false,
        };
        s.commit(checkpoint).unwrap();
        assert!(!s.state_path().exists());
        fs::remove_dir_all(&tmp).unwrap();
    }

    #[test]
    fn commits_append_to_the_state_file_and_compact_it() {
        let tmp = crate::store::tests::tempdir();
        let st = store(&tmp, &[]);
        let total = 1600u64;
        let mut order: Vec<u64> = (0..total).collect();
        // Every other byte first, then the rest: up to 800 separate ranges on the way, and
        // appends past COMPACT_AT.
        order.sort_by_key(|i| (i % 2, *i));
        let mut largest = 0;
        for (n, &i) in order.iter().enumerate() {
            let s = st
                .open(&id("journal1"), &range(&format!("bytes {i}-{i}/{total}")))
                .unwrap();
            write_at(s.file(), i, &[i as u8]).unwrap();
            let state = record(&s, i, i + 1);
            let on_disk = fs::read(s.state_path()).unwrap();
            largest = largest.max(on_disk.len());
            // What the file says is what the commit returned.
            assert_eq!(SessionState::decode(&on_disk).unwrap(), state, "after {n}");
        }
        let state = st.progress(&id("journal1")).unwrap().unwrap();
        assert!(state.is_complete());
        assert!(largest <= COMPACT_AT + 64, "state file grew to {largest}");
        fs::remove_dir_all(&tmp).unwrap();
    }

    fn snapshot_files(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in fs::read_dir(d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    dirs.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out
    }
}
