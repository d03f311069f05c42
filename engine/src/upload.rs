//! Uploads addressed by id, for protocols that create an upload first and write it later
//! (tus, the IETF resumable upload draft, Qiniu, UpYun, chunked file services): explicit
//! creation with a known or deferred length and metadata, opening by id, claims of the bytes a
//! request writes, completion, termination, expiry, and assembly of several uploads into one
//! ([`UploadStore::assemble`], in `assemble.rs`).
//!
//! An upload is the same pair of files as a [`crate::session::Session`]: a data file
//! (`data` dir) and a state file (`state` dir, [`UploadState`]), under the same hashed paths, the
//! same locks and the same expiry, so the sweep of [`SessionStore::sweep_expired`] covers both.
//! An id should be served by one of the two APIs: a session's commit rewrites the state without
//! metadata, and a session request creates what it does not find.
//!
//! # Locks
//! - Every change of the state is made under an exclusive `flock` of the data file, taken by
//!   the process only while it reads and writes the state, never while waiting for the network.
//!   Once it holds the lock, it checks that its open data file is still the one at the data
//!   path and that the state describes it (names its inode); if not, the upload it opened was
//!   terminated (or expired and replaced) meanwhile and it is [`UploadError::Gone`]. (A file
//!   kept open keeps its inode number, so no new data file can be taken for it; the state's
//!   `file` identity adds the birth time where the filesystem records one.)
//! - A [`Claim`] is an open-file-description lock (`F_OFD_SETLK`) on the bytes a request is
//!   about to write, on an open file description of its own, so that claims conflict between
//!   threads of one process as between processes, and the kernel drops them when a process
//!   dies. A claim of unknown length extends to the declared length, or while that is deferred
//!   to [`MAX_OFFSET`], so a second writer of the same bytes is refused.
//! - The commit that finds the upload complete locks the byte at its length, which no claim
//!   covers: exactly one holder hands the upload off, until it drops its claim (or upload).
//!
//! # What a crash leaves
//! Data is written before the state that claims it; the state file is appended to in one write
//! per change (a torn last line is ignored) or replaced by rename; with `durable`, both are
//! flushed first. So a state never claims bytes the data file does not hold. Creation writes
//! the state only once the data file exists and is locked (a data file without a state is not
//! an upload; the next creation of its id replaces it). Termination removes the data file
//! first, then the state (a state without its data file is not an upload either; the sweep
//! removes it). Assembly (`assemble.rs`) builds the file under a temporary name.
//!
//! Everything here is blocking disk work: run it on a thread pool, off the event loop.

use crate::content_range::MAX_OFFSET;
use crate::disk::{
    self, file_identity, ofd_lock, ofd_locked_anywhere, remove_if_present, FileLock,
};
use crate::hash_state::HashProgress;
use crate::hashing::{Algorithms, Digests};
use crate::session::{keep_longer_hash, Commit, SessionStore, Sweep};
use crate::session_id::SessionId;
use crate::state::{
    is_metadata_key, metadata_len, Metadata, SessionState, StateError, UploadState,
    MAX_METADATA_LEN,
};
use crate::state_cache::{StateCache, StateRead};
use core::fmt;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A state file that has grown past this by appended lines is rewritten whole (by rename); as
/// for sessions.
const COMPACT_AT: usize = 32 << 10;

/// The upload states this process read or wrote last.
static UPLOAD_STATES: StateCache<UploadState> = StateCache::new();

/// Unfinished final uploads one partial upload may be awaited by at once
/// ([`Upload::add_awaited_by`]).
pub const MAX_AWAITING: usize = 64;

/// Why an operation on an upload failed. Each protocol maps these to its own answers.
#[derive(Debug)]
pub enum UploadError {
    /// The id is shorter than the hashed levels of the store need.
    IdTooShort {
        need: usize,
    },
    /// An upload of this id exists (or is being handed off): it is not created again.
    AlreadyExists,
    /// No upload of this id.
    NotFound,
    /// The upload of this id had expired; its files are removed now (a later open finds
    /// nothing: [`Self::NotFound`]).
    Expired,
    /// The upload was terminated (or expired and its id taken again) while this handle or
    /// claim was open: nothing was recorded.
    Gone,
    /// The write does not start at the upload's offset (the end of its held prefix); nothing
    /// was claimed or written.
    OffsetMismatch {
        held: u64,
        requested: u64,
    },
    /// The length was declared already, as another value.
    LengthAlreadyDeclared {
        declared: u64,
        requested: u64,
    },
    /// The declared length would leave held bytes beyond the end of the upload.
    LengthBelowHeld {
        held_end: u64,
        requested: u64,
    },
    /// A length larger than a file offset can be.
    LengthTooLarge {
        requested: u64,
    },
    /// Bytes up to `end` (exclusive) lie past the upload's length (`None`: past what a deferred
    /// length may become, [`MAX_OFFSET`]).
    BeyondLength {
        end: u64,
        length: Option<u64>,
    },
    /// A commit of bytes `[start, end)` this claim does not cover.
    OutsideClaim {
        start: u64,
        end: u64,
        claimed: (u64, u64),
    },
    /// Another writer holds a claim on bytes `first..=last` (or beyond a length being declared).
    InFlight {
        first: u64,
        last: u64,
    },
    /// Recording the bytes would leave the upload with more disjoint ranges than allowed.
    TooManyRanges {
        max: usize,
    },
    /// The partial upload is awaited by as many unfinished final uploads as it may be.
    AwaitedByTooMany {
        max: usize,
    },
    /// A metadata key that is empty, too long, or not visible ASCII.
    BadMetadataKey {
        key: String,
    },
    /// More metadata than [`MAX_METADATA_LEN`] bytes.
    MetadataTooLarge {
        len: usize,
        max: usize,
    },
    /// The upload is not complete (a part of an assembly must be).
    Incomplete {
        held: u64,
        length: Option<u64>,
    },
    /// Part `index` (from 0) of an assembly failed.
    Part {
        index: usize,
        error: Box<UploadError>,
    },
    /// The state file exists but cannot be understood.
    DamagedState(StateError),
    Io(io::Error),
}

impl fmt::Display for UploadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::IdTooShort { need } => write!(
                f,
                "upload id is shorter than the {need} characters upload_store levels need"
            ),
            Self::AlreadyExists => f.write_str("an upload of this id exists already"),
            Self::NotFound => f.write_str("no upload of this id"),
            Self::Expired => f.write_str("the upload expired and was removed"),
            Self::Gone => f.write_str("the upload was terminated while this request was on it"),
            Self::OffsetMismatch { held, requested } => write!(
                f,
                "the write starts at offset {requested}, but the upload's offset is {held}"
            ),
            Self::LengthAlreadyDeclared {
                declared,
                requested,
            } => write!(
                f,
                "the upload's length is {declared} already; it cannot become {requested}"
            ),
            Self::LengthBelowHeld {
                held_end,
                requested,
            } => write!(
                f,
                "length {requested} is below the {held_end} bytes the upload holds already"
            ),
            Self::LengthTooLarge { requested } => write!(
                f,
                "length {requested} is larger than a file can be ({MAX_OFFSET})"
            ),
            Self::BeyondLength {
                end,
                length: Some(length),
            } => write!(
                f,
                "bytes up to offset {end} lie beyond the upload's length {length}"
            ),
            Self::BeyondLength { end, length: None } => write!(
                f,
                "bytes up to offset {end} lie beyond the largest file offset {MAX_OFFSET}"
            ),
            Self::OutsideClaim {
                start,
                end,
                claimed: (a, b),
            } => write!(
                f,
                "bytes {start}..{end} are outside this request's claim of {a}..{b}"
            ),
            Self::InFlight { first, last } => write!(
                f,
                "bytes {first}-{last} are claimed by another request still writing"
            ),
            Self::AwaitedByTooMany { max } => write!(
                f,
                "the partial upload is awaited by {max} unfinished final uploads already"
            ),
            Self::TooManyRanges { max } => write!(
                f,
                "the write would leave more than {max} separate ranges \
                 (upload_state_max_ranges); send bytes that fill the gaps"
            ),
            Self::BadMetadataKey { key } => write!(
                f,
                "metadata key {key:?} is not 1 to {} visible ASCII characters",
                crate::state::MAX_METADATA_KEY_LEN
            ),
            Self::MetadataTooLarge { len, max } => {
                write!(f, "{len} bytes of metadata are more than the {max} allowed")
            }
            Self::Incomplete {
                held,
                length: Some(length),
            } => write!(
                f,
                "the upload is not complete: {held} of {length} bytes held"
            ),
            Self::Incomplete { held, length: None } => write!(
                f,
                "the upload is not complete: {held} bytes held, length not declared"
            ),
            Self::Part { index, error } => write!(f, "part {index}: {error}"),
            Self::DamagedState(e) => write!(f, "damaged state file: {e}"),
            Self::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for UploadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            Self::Part { error, .. } => Some(&**error),
            _ => None,
        }
    }
}

impl From<io::Error> for UploadError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

/// Where a location keeps its uploads: the same directories and rules as its sessions.
#[derive(Debug, Clone)]
pub struct UploadStore {
    sessions: SessionStore,
}

/// What [`UploadStore::sweep_expired`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadSweep {
    /// Expired uploads and sessions removed, and those left because a request is writing.
    pub sessions: Sweep,
    /// Temporary files of assemblies that a crash (or a failure) left, removed.
    pub temporaries: usize,
}

/// The paths and rules of one upload.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub(crate) data_path: PathBuf,
    state_path: PathBuf,
    pub(crate) file_mode: u32,
    max_ranges: usize,
    pub(crate) durable: bool,
    expire_after: Option<Duration>,
}

/// An open file description of an upload's data file, with the identity its state must name.
#[derive(Debug)]
struct Handle {
    place: Place,
    file: File,
    file_id: String,
}

/// An open upload: its data file (read it, or write it through a [`Claim`]) and its state as
/// it was when opened. Holds no lock, but the hand-off's once [`Upload::finish`] (or an
/// assembly) made this handle the one to hand the upload off.
#[derive(Debug)]
pub struct Upload {
    id: SessionId,
    handle: Handle,
    state: UploadState,
    /// When the state file was last written, as of opening.
    modified: Option<SystemTime>,
}

/// One writer's claim on bytes `[start, end)` of an upload, held until dropped: another claim
/// overlapping it, from this process or any other, is refused with [`UploadError::InFlight`].
/// Write the bytes through [`Claim::file`], then [`Claim::commit`] what was written.
#[derive(Debug)]
pub struct Claim {
    handle: Handle,
    start: u64,
    end: u64,
    /// The state when the claim was taken.
    opened: UploadState,
}

/// The outcome of [`Claim::commit`] and [`Upload::finish`].
#[derive(Debug)]
pub struct Recorded {
    pub state: UploadState,
    /// The whole upload's hashes, once complete and when hashes are wanted.
    pub digests: Option<Digests>,
    /// The upload is complete and this claim (or handle), alone, is to hand it off; it stays
    /// so until the claim (or handle) is dropped.
    pub hand_off: bool,
    /// When the upload expires unless more is written (tus `Upload-Expires`); `None` without
    /// `expire_after`.
    pub expires_at: Option<SystemTime>,
}

impl From<SessionStore> for UploadStore {
    fn from(sessions: SessionStore) -> Self {
        Self { sessions }
    }
}

impl UploadStore {
    /// The uploads of a store configured as for sessions: directories and levels, file mode,
    /// `expire_after`, `max_ranges`, `durable`.
    pub fn new(sessions: SessionStore) -> Self {
        Self { sessions }
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// The configuration, to change (`expire_after`, `max_ranges`, `durable`...).
    pub fn sessions_mut(&mut self) -> &mut SessionStore {
        &mut self.sessions
    }

    pub fn data_path(&self, id: &SessionId) -> Result<PathBuf, UploadError> {
        self.sessions
            .data_path(id)
            .map_err(|_| UploadError::IdTooShort {
                need: self.sessions.data.min_name_len(),
            })
    }

    pub fn state_path(&self, id: &SessionId) -> Result<PathBuf, UploadError> {
        self.sessions
            .state_path(id)
            .map_err(|_| UploadError::IdTooShort {
                need: self.sessions.state.min_name_len(),
            })
    }

    pub(crate) fn place(&self, id: &SessionId) -> Result<Place, UploadError> {
        Ok(Place {
            data_path: self.data_path(id)?,
            state_path: self.state_path(id)?,
            file_mode: self.sessions.file_mode,
            max_ranges: self.sessions.max_ranges,
            durable: self.sessions.durable,
            expire_after: self.sessions.expire_after,
        })
    }

    /// Creates the upload `id` of `length` bytes (`None`: deferred, declared later with
    /// [`Upload::declare_length`] or [`Claim::declare_length`]) with `metadata`.
    ///
    /// [`UploadError::AlreadyExists`] if an upload of that id exists and has not expired, or a
    /// request still writes or hands off its data file. Any number of creators, in any
    /// processes on any hosts sharing the store, may race: the data file is created with
    /// `O_EXCL`, locked, and checked to still be the one at its path; exactly one creator writes
    /// the state. A data file there without a live state of its own (left by a crash, an
    /// expired upload, or a hand-off whose backend left the file) is not an upload: it is
    /// removed and a new one created.
    pub fn create(
        &self,
        id: &SessionId,
        length: Option<u64>,
        metadata: Metadata,
    ) -> Result<Upload, UploadError> {
        if let Some(requested) = length.filter(|&n| n > MAX_OFFSET) {
            return Err(UploadError::LengthTooLarge { requested });
        }
        check_metadata(&metadata)?;
        let place = self.place(id)?;
        let mut state = UploadState {
            length,
            metadata,
            ..UploadState::default()
        };
        let file = place.install(&mut state, None)?.expect("created in place");
        Ok(Upload::installed(id, place, file, state)?)
    }

    /// Opens the upload `id`, to read its state or write it. [`UploadError::NotFound`] if
    /// there is none; [`UploadError::Expired`] if it has expired (no state written for longer
    /// than `expire_after`) and no request is writing it: its files are removed then.
    pub fn open(&self, id: &SessionId) -> Result<Upload, UploadError> {
        let place = self.place(id)?;
        loop {
            let Some(file) = disk::open_existing(&place.data_path)? else {
                return Err(UploadError::NotFound);
            };
            let lock = FileLock::exclusive(&file)?;
            let Some(meta) = disk::metadata_if_at(&file, &place.data_path)? else {
                continue; // replaced meanwhile: look again
            };
            let file_id = disk::identity_of(&meta);
            let (state, modified) = match place.read_state()? {
                Some(read) if describes(&read.state, &file_id) => {
                    let modified = read.state_modified(&place.state_path)?;
                    (read.state, modified)
                }
                // A data file without a state of its own is not an upload.
                _ => return Err(UploadError::NotFound),
            };
            if place.is_expired(modified, SystemTime::now()) && !ofd_locked_anywhere(&file)? {
                remove_if_present(&place.data_path)?;
                remove_if_present(&place.state_path)?;
                return Err(UploadError::Expired);
            }
            drop(lock);
            return Ok(Upload {
                id: id.clone(),
                handle: Handle {
                    place,
                    file,
                    file_id,
                },
                state,
                modified,
            });
        }
    }

    /// Terminates the upload `id` ([`Upload::terminate`]).
    pub fn terminate(&self, id: &SessionId) -> Result<(), UploadError> {
        self.open(id)?.terminate()
    }

    /// Removes every expired upload and session ([`SessionStore::sweep_expired`]: those a
    /// request is writing are left), and temporary files of assemblies left for longer than
    /// `expire_after` by a crash.
    pub fn sweep_expired(&self, now: SystemTime) -> io::Result<UploadSweep> {
        let sessions = self.sessions.sweep_expired(now)?;
        let temporaries = match self.sessions.expire_after {
            Some(limit) => {
                crate::assemble::sweep_temporaries(&self.sessions.data.root, now, limit)?
            }
            None => 0,
        };
        Ok(UploadSweep {
            sessions,
            temporaries,
        })
    }
}

/// Refuses metadata a state file cannot keep.
pub(crate) fn check_metadata(metadata: &Metadata) -> Result<(), UploadError> {
    if let Some(key) = metadata.keys().find(|k| !is_metadata_key(k)) {
        return Err(UploadError::BadMetadataKey { key: key.clone() });
    }
    let len = metadata_len(metadata);
    if len > MAX_METADATA_LEN {
        return Err(UploadError::MetadataTooLarge {
            len,
            max: MAX_METADATA_LEN,
        });
    }
    Ok(())
}

/// Whether `state` describes the data file of identity `file_id`: it names it, or names none
/// (a session's state from before file ids were recorded: the data file is there, trusted).
fn describes(state: &UploadState, file_id: &str) -> bool {
    state.file.as_deref().is_none_or(|f| f == file_id)
}

impl Place {
    /// Where a newer request asks the one writing the upload to yield: beside its state.
    fn yield_path(&self) -> PathBuf {
        self.state_path.with_extension(disk::YIELD_EXTENSION)
    }

    fn is_expired(&self, modified: Option<SystemTime>, now: SystemTime) -> bool {
        let (Some(limit), Some(modified)) = (self.expire_after, modified) else {
            return false;
        };
        now.duration_since(modified).is_ok_and(|age| age > limit)
    }

    fn expires_at(&self, modified: Option<SystemTime>) -> Option<SystemTime> {
        Some(modified? + self.expire_after?)
    }

    /// The state, the length of its file, and whether its last line is cut short.
    fn read_state(&self) -> Result<Option<StateRead<UploadState>>, UploadError> {
        UPLOAD_STATES
            .read(&self.state_path, UploadState::decode)?
            .transpose()
            .map_err(UploadError::DamagedState)
    }

    fn write_state(&self, state: &UploadState) -> io::Result<()> {
        UPLOAD_STATES.replace(
            &self.state_path,
            state,
            &state.encode(),
            self.file_mode,
            self.durable,
        )
    }

    /// Puts a new upload in place, for [`UploadStore::create`] and assembly, and records
    /// `state` for it (its `file` set to the new data file's identity).
    ///
    /// Creates the data file with `O_EXCL` and locks it; if there is one already, locks it and
    /// refuses ([`UploadError::AlreadyExists`]) if it belongs to a live upload or to a request
    /// (a claim, a hand-off), else removes it and starts over. Then, still holding the lock,
    /// renames `replacement` (a file at `.1`, whose lock the caller holds) over the new empty
    /// data file if there is one, and writes the state. Returns the new data file, `None` if it
    /// is the replacement.
    pub(crate) fn install(
        &self,
        state: &mut UploadState,
        replacement: Option<(&File, &Path)>,
    ) -> Result<Option<File>, UploadError> {
        loop {
            let (file, created) = disk::open_or_create(&self.data_path, self.file_mode)?;
            let lock = FileLock::exclusive(&file)?;
            let Some(meta) = disk::metadata_if_at(&file, &self.data_path)? else {
                continue; // removed or replaced meanwhile
            };
            if !created {
                let file_id = disk::identity_of(&meta);
                if let Some(old) = self.read_state()? {
                    let modified = old.state_modified(&self.state_path)?;
                    if describes(&old.state, &file_id)
                        && !self.is_expired(modified, SystemTime::now())
                    {
                        return Err(UploadError::AlreadyExists);
                    }
                }
                if ofd_locked_anywhere(&file)? {
                    return Err(UploadError::AlreadyExists);
                }
                // Not an upload: make room for a new data file, so that handles of whatever
                // was there see it gone.
                remove_if_present(&self.data_path)?;
                continue;
            }
            // Created by this call and locked before anyone could write a state for it: any
            // state there is left over from an earlier file.
            let kept = match replacement {
                None => &file,
                Some((new, path)) => {
                    std::fs::rename(path, &self.data_path)?;
                    crate::assemble::crash_point("assemble-renamed");
                    new
                }
            };
            if self.durable {
                disk::sync_parent(&self.data_path)?;
            }
            state.file = Some(file_identity(kept)?);
            self.write_state(state)?;
            drop(lock);
            return Ok(replacement.is_none().then_some(file));
        }
    }
}

impl Handle {
    fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            place: self.place.clone(),
            file: self.file.try_clone()?,
            file_id: self.file_id.clone(),
        })
    }

    /// The state, read with the lock held (`lock`), if the upload is still the one this handle
    /// opened: its data file still at its path and its state naming it. Else
    /// [`UploadError::Gone`].
    fn current(&self, _lock: &FileLock<'_>) -> Result<(UploadState, usize), UploadError> {
        if !disk::is_file_at(&self.file, &self.place.data_path)? {
            return Err(UploadError::Gone);
        }
        match self.place.read_state()? {
            // A last line cut short by a crash would swallow the first appended one: such a
            // state is rewritten, not appended to (a length past COMPACT_AT says so).
            Some(read) if describes(&read.state, &self.file_id) => {
                Ok((read.state, if read.torn { usize::MAX } else { read.len }))
            }
            _ => Err(UploadError::Gone),
        }
    }

    fn lock(&self) -> io::Result<FileLock<'_>> {
        FileLock::exclusive(&self.file)
    }

    fn current_state(&self) -> Result<UploadState, UploadError> {
        let lock = self.lock()?;
        Ok(self.current(&lock)?.0)
    }

    /// Reads the state under the lock, lets `change` edit it and say what changed as lines to
    /// append (empty: nothing), and records that: appended, or once the file has grown past
    /// [`COMPACT_AT`], by rewriting it. Never creates a state: a missing one is
    /// [`UploadError::Gone`]. Returns the state after.
    fn update(
        &self,
        change: impl FnOnce(&mut UploadState) -> Result<String, UploadError>,
    ) -> Result<UploadState, UploadError> {
        let lock = self.lock()?;
        let (mut state, stored_len) = self.current(&lock)?;
        let appended = change(&mut state)?;
        if appended.is_empty() {
            return Ok(state);
        }
        if stored_len.saturating_add(appended.len()) <= COMPACT_AT {
            let place = &self.place;
            UPLOAD_STATES.append(&place.state_path, &appended, place.durable, &state)?;
        } else {
            self.place.write_state(&state)?;
        }
        Ok(state)
    }

    /// See [`Upload::declare_length`].
    fn declare_length(&self, length: u64) -> Result<UploadState, UploadError> {
        if length > MAX_OFFSET {
            return Err(UploadError::LengthTooLarge { requested: length });
        }
        let lock = self.lock()?;
        let (mut state, _) = self.current(&lock)?;
        match state.length {
            Some(declared) if declared == length => return Ok(state),
            Some(declared) => {
                return Err(UploadError::LengthAlreadyDeclared {
                    declared,
                    requested: length,
                })
            }
            None => {}
        }
        if length < state.held_end() {
            return Err(UploadError::LengthBelowHeld {
                held_end: state.held_end(),
                requested: length,
            });
        }
        // Another writer's claim past the length would write bytes beyond the end.
        if let Some((first, last)) = disk::ofd_conflict(&self.file, length)? {
            return Err(UploadError::InFlight { first, last });
        }
        state.length = Some(length);
        self.place.write_state(&state)?;
        Ok(state)
    }

    /// The end of a commit or [`Upload::finish`]: for `finishing`, the hashes of what could not
    /// be hashed as it streamed, read back from the file, and if the upload is complete its
    /// digests and the hand-off.
    fn conclude(
        &self,
        mut state: UploadState,
        finishing: bool,
        algorithms: Algorithms,
    ) -> Result<Recorded, UploadError> {
        let mut digests = None;
        if finishing && algorithms != Algorithms::NONE {
            let mut progress = HashProgress::resume(state.hash.as_deref(), algorithms);
            let prefix = state.offset();
            if progress.hashed_upto() < prefix {
                // Held bytes do not change, so they are read without the lock.
                progress.catch_up(&self.file, prefix)?;
                let caught_up = progress.clone();
                state = self
                    .update(|state| Ok(keep_longer_hash(&mut state.hash, caught_up, algorithms)))?;
                progress = HashProgress::resume(state.hash.as_deref(), algorithms);
            }
            if let (true, Some(length)) = (state.is_complete(), state.length) {
                digests = progress.finish(length);
            }
        }
        let hand_off = match state.length {
            // The byte at the length, which no claim covers.
            Some(length) if finishing && state.is_complete() => ofd_lock(&self.file, length, 1)?,
            _ => false,
        };
        let expires_at = self
            .place
            .expires_at(disk::modified(&self.place.state_path)?);
        Ok(Recorded {
            state,
            digests,
            hand_off,
            expires_at,
        })
    }

    /// See [`Upload::terminate`].
    fn terminate(&self) -> Result<(), UploadError> {
        let lock = self.lock()?;
        self.current(&lock)?;
        // The data first: a state without its data file is not an upload, and swept.
        remove_if_present(&self.place.data_path)?;
        remove_if_present(&self.place.state_path)?;
        remove_if_present(&self.place.yield_path())?;
        Ok(())
    }
}

impl Upload {
    pub fn id(&self) -> &SessionId {
        &self.id
    }

    pub fn data_path(&self) -> &Path {
        &self.handle.place.data_path
    }

    pub fn state_path(&self) -> &Path {
        &self.handle.place.state_path
    }

    /// The data file, to read held bytes (or hand it off). Write through a [`Claim`].
    pub fn file(&self) -> &File {
        &self.handle.file
    }

    /// The state as it was when the upload was opened (or created).
    pub fn state(&self) -> &UploadState {
        &self.state
    }

    /// Asks the request writing this upload, on any worker or node sharing the store, to
    /// stop (a client that lost its connection asks again): a file beside the state,
    /// `<id>.yield`, which the writer looks for ([`Self::take_ask_to_yield`]). Removed with the
    /// state, and by the expiry sweep if the writer ended before it looked.
    pub fn ask_to_yield(&self) {
        let _ = std::fs::write(self.handle.place.yield_path(), b"");
    }

    /// Whether a newer request asked the one that claimed the upload at `claimed_at` to yield
    /// ([`Self::ask_to_yield`]; allowing for clocks of other nodes a little behind). The ask
    /// is taken back either way: answered, by yielding or by going on.
    pub fn take_ask_to_yield(&self, claimed_at: SystemTime) -> bool {
        let path = self.handle.place.yield_path();
        let asked = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|at| at + Duration::from_secs(5) >= claimed_at);
        if asked {
            let _ = std::fs::remove_file(&path);
        }
        asked
    }

    /// The state as recorded now; [`UploadError::Gone`] if the upload was terminated.
    pub fn current_state(&self) -> Result<UploadState, UploadError> {
        self.handle.current_state()
    }

    /// When the upload expires unless more is written (tus `Upload-Expires`), as of opening;
    /// `None` without `expire_after`.
    pub fn expires_at(&self) -> Option<SystemTime> {
        self.handle.place.expires_at(self.modified)
    }

    /// Claims bytes `[start, start + len)` for one writer, `len` `None` meaning "unknown": to
    /// the declared length, or while it is deferred to [`MAX_OFFSET`]. Refused with
    /// [`UploadError::InFlight`] if another claim overlaps, [`UploadError::BeyondLength`] if the
    /// bytes lie past the length, [`UploadError::TooManyRanges`] if recording them would exceed
    /// `max_ranges`, [`UploadError::Gone`] if the upload was terminated. Changes nothing on disk.
    pub fn claim(&self, start: u64, len: Option<u64>) -> Result<Claim, UploadError> {
        self.claim_where(start, len, false)
    }

    /// [`Self::claim`] for protocols whose writes must start exactly at the upload's offset
    /// (the end of its held prefix; tus `PATCH`): [`UploadError::OffsetMismatch`], carrying
    /// the current offset, if `offset` is not it. Checked and claimed under the lock, so two
    /// writers at the same offset cannot both get it.
    pub fn claim_append(&self, offset: u64, len: Option<u64>) -> Result<Claim, UploadError> {
        self.claim_where(offset, len, true)
    }

    fn claim_where(
        &self,
        start: u64,
        len: Option<u64>,
        at_offset: bool,
    ) -> Result<Claim, UploadError> {
        let place = &self.handle.place;
        // An open file description of its own, so that the claim's locks conflict with every
        // other claim's, in this process too.
        let Some(file) = disk::open_existing(&place.data_path)? else {
            return Err(UploadError::Gone);
        };
        // The file this handle opened (its identity names the inode and birth time), not a
        // later one at the path.
        if file_identity(&file)? != self.handle.file_id {
            return Err(UploadError::Gone);
        }
        let handle = Handle {
            place: place.clone(),
            file,
            file_id: self.handle.file_id.clone(),
        };
        let lock = handle.lock()?;
        let (state, _) = handle.current(&lock)?;
        if at_offset && start != state.offset() {
            return Err(UploadError::OffsetMismatch {
                held: state.offset(),
                requested: start,
            });
        }
        let limit = state.limit();
        let end = match len {
            Some(n) => start.saturating_add(n),
            None => limit.max(start),
        };
        if end > limit {
            return Err(UploadError::BeyondLength {
                end,
                length: state.length,
            });
        }
        if end > start {
            // Of all the ranges a write of unknown length may end up recording, the shortest
            // leaves the most separate ranges.
            let shortest = if len.is_some() { end } else { start + 1 };
            if state.received.len_after_insert(start, shortest) > place.max_ranges {
                return Err(UploadError::TooManyRanges {
                    max: place.max_ranges,
                });
            }
            if !ofd_lock(&handle.file, start, end - start)? {
                return Err(UploadError::InFlight {
                    first: start,
                    last: end - 1,
                });
            }
        }
        drop(lock);
        Ok(Claim {
            handle,
            start,
            end,
            opened: state,
        })
    }

    /// Declares the length of an upload created with a deferred one: once, never changed.
    /// Declaring the length it has is fine (and changes nothing); another is
    /// [`UploadError::LengthAlreadyDeclared`]. [`UploadError::LengthBelowHeld`] if bytes are
    /// held past it, [`UploadError::InFlight`] if another writer's claim reaches past it.
    /// Returns the state after.
    pub fn declare_length(&self, length: u64) -> Result<UploadState, UploadError> {
        self.handle.declare_length(length)
    }

    /// For a complete upload, what its last commit does (see [`Commit::finishing`]): the hashes
    /// (read from the file what the stored hash progress lacks) and the hand-off, which this
    /// handle holds until dropped if [`Recorded::hand_off`]. For an upload of length 0, or one
    /// whose bytes were all held when its length was declared.
    pub fn finish(&self, algorithms: Algorithms) -> Result<Recorded, UploadError> {
        let state = self.current_state()?;
        self.handle.conclude(state, true, algorithms)
    }

    /// Terminates the upload: removes its data file, then its state. A request writing it
    /// meanwhile records nothing ([`UploadError::Gone`]), and its claim does not bring the
    /// upload back. [`UploadError::Gone`] if it was terminated already.
    pub fn terminate(&self) -> Result<(), UploadError> {
        self.handle.terminate()
    }

    /// Records that final upload `final_id` awaits this (partial) upload, and returns the state
    /// after, read under the same lock as every commit: a commit that completes this upload
    /// came either before (the state returned says complete, so the final's creator assembles
    /// it) or after (and its request finds the line in the state it recorded, and assembles).
    ///
    /// A part awaited by [`MAX_AWAITING`] finals already first drops those of them for which
    /// `still_waiting` says no (assembled, handed off, terminated, expired): each final a client
    /// creates over it would otherwise add a line to its state for good. If as many are still
    /// waiting, [`UploadError::AwaitedByTooMany`], nothing changed.
    pub fn add_awaited_by(
        &self,
        final_id: &SessionId,
        still_waiting: impl Fn(&SessionId) -> bool,
    ) -> Result<UploadState, UploadError> {
        let known = &self.state.awaited_by;
        if known.len() >= MAX_AWAITING && !known.contains(final_id) {
            // Looked at before the lock: a final's state is not read under a part's lock.
            let gone: Vec<SessionId> = known
                .iter()
                .filter(|id| !still_waiting(id))
                .cloned()
                .collect();
            let lock = self.handle.lock()?;
            let (mut state, _) = self.handle.current(&lock)?;
            let before = state.awaited_by.len();
            state.awaited_by.retain(|id| !gone.contains(id));
            if state.awaited_by.len() >= MAX_AWAITING {
                return Err(UploadError::AwaitedByTooMany { max: MAX_AWAITING });
            }
            if state.awaited_by.len() != before {
                self.handle.place.write_state(&state)?;
            }
        }
        self.handle.update(|state| {
            if !state.awaited_by.contains(final_id) && state.awaited_by.len() >= MAX_AWAITING {
                return Err(UploadError::AwaitedByTooMany { max: MAX_AWAITING });
            }
            Ok(state.add_awaited_by(final_id))
        })
    }

    /// For an assembly into this upload (a final upload that awaited its parts): if it is
    /// still the upload this handle opened, renames `replacement` (at `path`, locked by the
    /// caller) over its data file and records `state`, naming the replacement. Else
    /// [`UploadError::Gone`], nothing changed. Handles on the old data file see it gone.
    pub(crate) fn replace_data(
        &self,
        state: &mut UploadState,
        replacement: &File,
        path: &Path,
    ) -> Result<(), UploadError> {
        let lock = self.handle.lock()?;
        self.handle.current(&lock)?;
        std::fs::rename(path, &self.handle.place.data_path)?;
        crate::assemble::crash_point("assemble-renamed");
        if self.handle.place.durable {
            disk::sync_parent(&self.handle.place.data_path)?;
        }
        state.file = Some(file_identity(replacement)?);
        self.handle.place.write_state(state)?;
        drop(lock);
        Ok(())
    }

    /// Removes the state only (and an ask to yield): the upload was handed off and its data
    /// file belongs to the backend now. Then the upload is no more ([`UploadError::NotFound`]).
    pub fn forget_state(&self) -> Result<(), UploadError> {
        let lock = self.handle.lock()?;
        self.handle.current(&lock)?;
        remove_if_present(&self.handle.place.state_path)?;
        remove_if_present(&self.handle.place.yield_path())?;
        Ok(())
    }

    /// A second handle on the upload, for work on another thread; it shares this one's open
    /// file description (and with it the hand-off, if it has it).
    pub fn try_clone(&self) -> io::Result<Upload> {
        Ok(Upload {
            id: self.id.clone(),
            handle: self.handle.try_clone()?,
            state: self.state.clone(),
            modified: self.modified,
        })
    }

    /// The handle of an upload just put in place by [`Place::install`].
    pub(crate) fn installed(
        id: &SessionId,
        place: Place,
        file: File,
        state: UploadState,
    ) -> io::Result<Self> {
        Ok(Upload {
            id: id.clone(),
            modified: disk::modified(&place.state_path)?,
            handle: Handle {
                file_id: state.file.clone().expect("install names the file"),
                place,
                file,
            },
            state,
        })
    }
}

impl Claim {
    /// The data file, to write the claimed bytes at their offsets
    /// ([`crate::session::write_all_at`]).
    pub fn file(&self) -> &File {
        &self.handle.file
    }

    pub fn data_path(&self) -> &Path {
        &self.handle.place.data_path
    }

    pub fn state_path(&self) -> &Path {
        &self.handle.place.state_path
    }

    /// The first byte claimed.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The end of the claim (exclusive): the length for a claim of unknown length, or
    /// [`MAX_OFFSET`] while the length was deferred.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// The state when the claim was taken.
    pub fn state(&self) -> &UploadState {
        &self.opened
    }

    /// The hash progress a writer of the claimed bytes can carry on as they stream by: the
    /// stored one, if the hashed prefix ends inside the claim (in-order writes); `None` if the
    /// claim lies beyond it, or no hashes are wanted.
    pub fn streaming_hash(&self, algorithms: Algorithms) -> Option<HashProgress> {
        if algorithms == Algorithms::NONE {
            return None;
        }
        let progress = HashProgress::resume(self.opened.hash.as_deref(), algorithms);
        let upto = progress.hashed_upto();
        (self.start..self.end).contains(&upto).then_some(progress)
    }

    /// [`Upload::declare_length`], from the writer holding this claim (a tus `PATCH` carrying
    /// `Upload-Length`): its own claim past the length is no conflict. Its commits must still
    /// end at or before the length.
    pub fn declare_length(&self, length: u64) -> Result<UploadState, UploadError> {
        self.handle.declare_length(length)
    }

    /// Records that `[commit.start, commit.end)` is written, with the hash progress, and
    /// returns the state after; the bytes must lie in the claim
    /// ([`UploadError::OutsideClaim`]) and the length ([`UploadError::BeyondLength`]). With
    /// [`Commit::finishing`] (the request's body is complete), also hashes from the file what
    /// could not be hashed as it streamed and, if the upload is complete, claims its hand-off.
    /// Never brings back a terminated upload: [`UploadError::Gone`], nothing recorded.
    pub fn commit(&self, commit: Commit) -> Result<Recorded, UploadError> {
        let (start, end) = (commit.start, commit.end);
        if start > end || start < self.start || end > self.end {
            return Err(UploadError::OutsideClaim {
                start,
                end,
                claimed: (self.start, self.end),
            });
        }
        let place = &self.handle.place;
        if place.durable {
            self.handle.file.sync_data()?;
        }
        let algorithms = commit.algorithms;
        let state = self.handle.update(|state| {
            if end > state.limit() {
                return Err(UploadError::BeyondLength {
                    end,
                    length: state.length,
                });
            }
            let mut appended = String::new();
            if !state.received.contains(start, end) {
                if state.received.len_after_insert(start, end) > place.max_ranges {
                    return Err(UploadError::TooManyRanges {
                        max: place.max_ranges,
                    });
                }
                state.received.insert(start, end);
                appended.push_str(&SessionState::append_range(start, end));
            }
            if let Some(ours) = commit.hashes {
                appended.push_str(&keep_longer_hash(&mut state.hash, ours, algorithms));
            }
            Ok(appended)
        })?;
        self.handle.conclude(state, commit.finishing, algorithms)
    }

    /// The state as recorded now; [`UploadError::Gone`] if the upload was terminated.
    pub fn current_state(&self) -> Result<UploadState, UploadError> {
        self.handle.current_state()
    }

    /// A second handle on the claim, for work on another thread. It shares this one's open
    /// file description, and with it the claim.
    pub fn try_clone(&self) -> io::Result<Claim> {
        Ok(Claim {
            handle: self.handle.try_clone()?,
            start: self.start,
            end: self.end,
            opened: self.opened.clone(),
        })
    }
}

#[cfg(test)]
pub(crate) mod tests;
